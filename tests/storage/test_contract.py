"""The storage contract: every backend (embedded, MongoDB on SecantusDB, a real MongoDB when configured) passes
the same tests."""

from __future__ import annotations

import datetime as dt
import hashlib
import subprocess
import sys
import threading
from typing import Any

import pytest

from braintumor.storage import (
    Blob,
    LastAdminError,
    NewScan,
    NewUser,
    ScanQuery,
    Storage,
    StorageError,
    UserExistsError,
    UserNotFoundError,
)
from braintumor.storage.base import utcnow
from braintumor.storage.stats import summarise_scans

BACKENDS = ("embedded", "secantus", "mongodb")


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, make_storage: Any) -> Storage:
    return make_storage(request.param)  # type: ignore[no-any-return]


def user(store: Storage, name: str = "alice", role: str = "user") -> Any:
    return store.create_user(NewUser(name, f"hash-{name}", f"recovery-{name}", role))  # type: ignore[arg-type]


def blobs(tag: str = "x") -> list[Blob]:
    return [
        Blob("original", f"original-{tag}".encode(), "image/png"),
        Blob("heatmap", f"heatmap-{tag}".encode(), "image/png"),
        Blob("overlay", f"overlay-{tag}".encode(), "image/png"),
    ]


def scan(store: Storage, owner: str, filename: str = "a.png", outcome: str = "tumor", **kw: Any) -> Any:
    p = {"tumor": 0.9, "refer": 0.4, "no_tumor": 0.1}[outcome]
    fields = {"p_tumor": p, "result": {"k": [1, 2]}, **kw}
    tag = kw.pop("tag", filename)
    fields.pop("tag", None)
    return store.add_scan(NewScan(owner, filename, outcome, **fields), blobs(tag))


# -- revoked tokens (sign-out, issue 13 item 8) ------------------------------------------------------------
def test_revoked_tokens_stay_revoked_until_they_expire(store: Storage) -> None:
    now = utcnow()
    assert not store.is_token_revoked("jti-1")
    store.revoke_token("jti-1", now + dt.timedelta(hours=1))
    store.revoke_token("jti-1", now + dt.timedelta(hours=1))  # revoking twice is fine
    store.revoke_token("old", now - dt.timedelta(seconds=1))
    assert store.is_token_revoked("jti-1") and not store.is_token_revoked("jti-2")
    store.revoke_token("jti-3", now + dt.timedelta(minutes=5))  # purges what has expired
    assert not store.is_token_revoked("old") and store.is_token_revoked("jti-3")


# -- users -----------------------------------------------------------------------------------------------
def test_users_are_unique_case_insensitively(store: Storage) -> None:
    alice = user(store, "Alice")
    assert alice.username == "alice" and alice.role == "user" and alice.token_version == 0
    with pytest.raises(UserExistsError):
        user(store, "ALICE")
    assert store.get_user("aLiCe") == alice
    assert store.get_user_by_id(alice.id) == alice
    assert store.get_user("bob") is None and store.get_user_by_id("nope") is None
    assert alice.created_at.tzinfo is not None


def test_credentials_update_and_token_version(store: Storage) -> None:
    alice = user(store)
    updated = store.update_credentials(alice.id, password_hash="new", bump_token_version=True)
    assert updated.password_hash == "new" and updated.recovery_hash == alice.recovery_hash
    assert updated.token_version == 1
    again = store.update_credentials(alice.id, recovery_hash="rec2")
    assert again.recovery_hash == "rec2" and again.token_version == 1
    with pytest.raises(UserNotFoundError):
        store.update_credentials("missing", password_hash="x")


def test_roles_never_leave_zero_admins(store: Storage) -> None:
    user(store, "root", "admin")
    user(store, "bob")
    with pytest.raises(LastAdminError):
        store.set_role("root", "user")
    with pytest.raises(LastAdminError):
        store.delete_user("root")
    assert store.set_role("bob", "admin").role == "admin"
    assert store.count_admins() == 2
    assert store.set_role("root", "user").role == "user"
    assert store.get_user("root").role == "user"  # type: ignore[union-attr]
    with pytest.raises(UserNotFoundError):
        store.set_role("ghost", "admin")


def test_list_users_searches_plain_text_with_counts(store: Storage) -> None:
    a = user(store, "alice")
    user(store, "bob")
    user(store, "al.ex")
    scan(store, a.id)
    scan(store, a.id, "b.png")
    page = store.list_users()
    assert [s.user.username for s in page.items] == ["al.ex", "alice", "bob"] and page.total == 3
    assert {s.user.username: s.scans for s in page.items} == {"al.ex": 0, "alice": 2, "bob": 0}
    assert [s.user.username for s in store.list_users("AL").items] == ["al.ex", "alice"]
    assert [s.user.username for s in store.list_users(".").items] == ["al.ex"]  # not a pattern
    assert store.list_users(".*").total == 0
    second = store.list_users(offset=1, limit=1)
    assert [s.user.username for s in second.items] == ["alice"] and second.total == 3


# -- scans and blobs -------------------------------------------------------------------------------------
def test_scan_round_trip_with_files(store: Storage) -> None:
    alice = user(store)
    result = {"label": "tumor", "members": [{"name": "m", "p": 0.9}], "nested": {"a": None}}
    rec = store.add_scan(NewScan(alice.id, "scan.png", "refer", 0.61, "glioma", "ens", "3", 0.55, result), blobs())
    got = store.get_scan(rec.id)
    assert got == rec
    assert got is not None and got.result == result and got.tumor_type == "glioma" and got.threshold == 0.55
    assert set(got.files) == {"original", "heatmap", "overlay"}
    f = got.files["heatmap"]
    found = store.get_file(f.id)
    assert found is not None
    record, data = found
    assert data == b"heatmap-x" and record.owner_id == alice.id and record.scan_id == rec.id
    assert record.sha256 == hashlib.sha256(data).hexdigest() and record.content_type == "image/png"
    assert store.get_scan("missing") is None and store.get_file("missing") is None
    assert store.check().ok


def test_unknown_owner_stores_nothing(store: Storage) -> None:
    with pytest.raises(UserNotFoundError):
        store.add_scan(NewScan("ghost", "a.png", "tumor", 0.9), blobs())
    report = store.check()
    assert report.ok and report.orphan_blobs == []


def test_history_is_newest_first_and_paginated(store: Storage) -> None:
    alice = user(store)
    base = utcnow() - dt.timedelta(days=10)
    ids = [scan(store, alice.id, f"s{i}.png", created_at=base + dt.timedelta(days=i)).id for i in range(5)]
    page = store.list_scans(alice.id, ScanQuery(limit=2))
    assert page.total == 5 and [s.id for s in page.items] == ids[::-1][:2]
    page = store.list_scans(alice.id, ScanQuery(offset=4, limit=2))
    assert [s.id for s in page.items] == [ids[0]]
    window = ScanQuery(date_from=base + dt.timedelta(days=1), date_to=base + dt.timedelta(days=3))
    assert [s.id for s in store.list_scans(alice.id, window).items] == ids[3:0:-1]


def test_search_is_plain_text_and_filters_combine(store: Storage) -> None:
    alice = user(store)
    scan(store, alice.id, "Brain (1).PNG", "tumor")
    scan(store, alice.id, "brain 1.png", "no_tumor")
    scan(store, alice.id, "a.*b.jpg", "refer")

    def names(q: ScanQuery) -> list[str]:
        return sorted(s.filename for s in store.list_scans(alice.id, q).items)

    assert names(ScanQuery(search="(1)")) == ["Brain (1).PNG"]
    assert names(ScanQuery(search="BRAIN")) == ["Brain (1).PNG", "brain 1.png"]
    assert names(ScanQuery(search=".*")) == ["a.*b.jpg"]
    assert names(ScanQuery(search="[")) == []
    assert names(ScanQuery(search="$where")) == []
    assert names(ScanQuery(outcome="no_tumor")) == ["brain 1.png"]
    assert names(ScanQuery(outcome="refer")) == ["a.*b.jpg"]
    assert names(ScanQuery(search="brain", outcome="tumor")) == ["Brain (1).PNG"]
    assert names(ScanQuery(search="a.", outcome="tumor")) == []


def test_studies_and_scans_share_the_history_and_filter_by_kind(store: Storage) -> None:
    alice = user(store)
    scan(store, alice.id, "one.png", "tumor")
    study = scan(store, alice.id, "series.zip", "refer", kind="study")
    assert study.kind == "study" and store.get_scan(study.id).kind == "study"  # type: ignore[union-attr]

    def names(q: ScanQuery) -> list[str]:
        return sorted(s.filename for s in store.list_scans(alice.id, q).items)

    assert names(ScanQuery()) == ["one.png", "series.zip"]
    assert names(ScanQuery(kind="study")) == ["series.zip"]
    assert names(ScanQuery(kind="scan")) == ["one.png"]
    assert names(ScanQuery(kind="study", outcome="tumor")) == []
    assert store.delete_scans(alice.id, [study.id]) == [study.id]
    assert names(ScanQuery(kind="study")) == []


def test_owners_are_isolated(store: Storage) -> None:
    alice, bob = user(store, "alice"), user(store, "bob")
    a = scan(store, alice.id)
    assert store.list_scans(bob.id, ScanQuery()).total == 0
    assert store.delete_scans(bob.id, [a.id]) == []
    assert store.get_scan(a.id) is not None


def test_delete_removes_records_and_files(store: Storage) -> None:
    alice = user(store)
    keep, gone, gone2 = scan(store, alice.id, "k.png"), scan(store, alice.id, "g.png"), scan(store, alice.id, "h.png")
    assert sorted(store.delete_scans(alice.id, [gone.id, gone2.id, "missing"])) == sorted([gone.id, gone2.id])
    assert store.get_scan(gone.id) is None
    for f in gone.files.values():
        assert store.get_file(f.id) is None
    assert store.get_file(keep.files["original"].id) is not None
    assert store.check().ok
    assert store.delete_scans(alice.id, []) == []


def test_identical_content_in_two_scans_survives_one_delete(store: Storage) -> None:
    alice, bob = user(store, "alice"), user(store, "bob")
    a = scan(store, alice.id, tag="same")
    b = scan(store, bob.id, tag="same")
    store.delete_scans(alice.id, [a.id])
    found = store.get_file(b.files["original"].id)
    assert found is not None and found[1] == b"original-same"
    assert store.get_file(a.files["original"].id) is None
    assert store.check().ok


def test_delete_user_cascades(store: Storage) -> None:
    alice, bob = user(store, "alice"), user(store, "bob")
    a = scan(store, alice.id)
    b = scan(store, bob.id, "b.png")
    assert store.delete_user("ALICE") is True
    assert store.get_user("alice") is None and store.get_scan(a.id) is None
    assert store.get_file(a.files["original"].id) is None
    assert store.get_scan(b.id) is not None
    assert store.delete_user("alice") is False
    assert store.check().ok


def test_stats(store: Storage) -> None:
    alice, bob = user(store, "alice"), user(store, "bob", "admin")
    scan(store, alice.id, "1.png", "tumor")
    scan(store, alice.id, "2.png", "no_tumor")
    scan(store, bob.id, "3.png", "refer")
    scan(store, bob.id, "old.png", "tumor", created_at=utcnow() - dt.timedelta(days=3))
    s = store.stats(days=7)
    assert (s.users, s.admins, s.scans) == (2, 1, 4)
    assert s.scans_per_user == [("bob", 2), ("alice", 2)] or s.scans_per_user == [("alice", 2), ("bob", 2)]
    assert s.outcomes == {"tumor": 2, "no_tumor": 1, "refer": 1}
    assert len(s.per_day) == 7 and s.per_day[-1] == (dt.datetime.now(dt.UTC).date().isoformat(), 3)
    assert dict(s.per_day)[(dt.datetime.now(dt.UTC).date() - dt.timedelta(days=3)).isoformat()] == 1


def test_scan_facts_are_one_users_newest_first_and_summarise_per_outcome(store: Storage) -> None:
    alice, bob = user(store, "alice"), user(store, "bob")
    old = utcnow() - dt.timedelta(days=3)
    scan(store, alice.id, "old.png", "tumor", created_at=old, model_name="m", model_version="1")
    scan(store, alice.id, "1.png", "refer", model_name="m", model_version="2", threshold=0.3)
    scan(store, alice.id, "2.png", "no_tumor", model_name="m", model_version="2", threshold=0.3)
    scan(store, bob.id, "3.png", "tumor")
    facts = store.scan_facts(alice.id)
    assert [f.outcome for f in facts][-1] == "tumor" and len(facts) == 3
    assert facts[0].created_at >= facts[-1].created_at and facts[0].model == "m v2"
    assert len(store.scan_facts(alice.id, utcnow() - dt.timedelta(days=1))) == 2
    s = summarise_scans(facts)
    assert s.scans == 3 and s.outcomes == {"tumor": 1, "refer": 1, "no_tumor": 1}
    assert s.models == [("m v2", 2), ("m v1", 1)] and s.threshold == 0.3
    assert s.histogram["tumor"][18] == 1 and s.histogram["refer"][8] == 1 and s.histogram["no_tumor"][2] == 1
    assert sum(n for _, _, n in s.per_day) == 3 and s.mean_p_tumor == pytest.approx((0.9 + 0.4 + 0.1) / 3)


def test_parallel_writers_lose_nothing(store: Storage) -> None:
    owners = [user(store, f"user{i}") for i in range(4)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for j in range(5):
                scan(store, owners[k % 4].id, f"t{k}-{j}.png", tag=f"{k}-{j}" if j % 2 else "shared")
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, owner in enumerate(owners):
        page = store.list_scans(owner.id, ScanQuery(limit=100))
        assert page.total == 10
        assert all(s.filename.startswith((f"t{i}-", f"t{i + 4}-")) for s in page.items)
    assert store.check().ok


def test_ping(store: Storage) -> None:
    assert store.ping() is True


# -- atomicity under injected failures (backend-specific hooks, same expectation) -----------------------------
def test_failure_after_some_blobs_leaves_nothing(
    request: pytest.FixtureRequest, make_storage: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    for backend in ("embedded", "secantus"):
        store = make_storage(backend)
        alice = user(store)
        if backend == "embedded":
            original = store.blobs.write
            calls = [0]

            def failing(sha: str, data: bytes, original: Any = original, calls: list[int] = calls) -> bool:
                calls[0] += 1
                if calls[0] == 3:
                    raise OSError("disk full")
                return bool(original(sha, data))

            monkeypatch.setattr(store.blobs, "write", failing)
        else:

            class Failing:
                def __init__(self, inner: Any) -> None:
                    self.inner = inner

                def insert_one(self, *_a: Any, **_k: Any) -> Any:
                    raise OSError("connection reset")

                def __getattr__(self, name: str) -> Any:
                    return getattr(self.inner, name)

            monkeypatch.setattr(store, "_history", Failing(store._history))
        # The embedded backend reports its own failures as StorageError (the API's 503), like MongoDB's driver errors.
        with pytest.raises(StorageError if backend == "embedded" else OSError):
            scan(store, alice.id)
        monkeypatch.undo()
        assert store.list_scans(alice.id, ScanQuery()).total == 0
        report = store.check()
        assert report.ok, (backend, report)


def test_collect_garbage_removes_orphans(make_storage: Any) -> None:
    emb = make_storage("embedded")
    (emb.data_dir / "blobs" / "ab").mkdir()
    (emb.data_dir / "blobs" / "ab" / ("ab" + "0" * 62)).write_bytes(b"orphan")
    assert emb.check().orphan_blobs == ["ab" + "0" * 62]
    assert emb.collect_garbage() == 1 and emb.check().ok

    mongo = make_storage("secantus", gc_grace_s=0)
    mongo._bucket.upload_from_stream_with_id("orphan", "orphan", b"x", metadata={"scan_id": "gone"})
    assert mongo.check().orphan_blobs == ["orphan"]
    assert mongo.collect_garbage() == 1 and mongo.check().ok


def test_mongo_indexes(make_storage: Any) -> None:
    store = make_storage("secantus")
    users = store._users.index_information()
    history = store._history.index_information()
    assert users["username_unique"]["unique"] is True and users["username_unique"]["key"] == [("username", 1)]
    assert history["owner_time"]["key"] == [("owner_id", 1), ("created_at", -1)]


def test_storage_imports_nothing_from_the_ml_side() -> None:
    code = (
        "import sys\n"
        "import braintumor.storage, braintumor.storage.sqlite, braintumor.storage.mongo, braintumor.storage.deid\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in ('torch', 'numpy', 'onnxruntime', 'PIL')\n"
        "       or m.startswith(('braintumor.models', 'braintumor.training', 'braintumor.inference',\n"
        "                        'braintumor.api', 'braintumor.data'))]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
