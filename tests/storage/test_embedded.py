"""Embedded backend specifics: crash recovery on open, the cross-process lock, backup and restore."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Callable
from pathlib import Path

from braintumor.storage import Blob, NewScan, NewUser, ScanQuery
from braintumor.storage.backup import backup
from braintumor.storage.database import SCHEMA_VERSION
from braintumor.storage.sqlite import EmbeddedStorage

Filler = Callable[[EmbeddedStorage], tuple[str, str]]


def test_data_dir_is_private(tmp_path: Path, fill: Filler) -> None:
    store = EmbeddedStorage(tmp_path / "data")
    fill(store)
    assert stat.S_IMODE((tmp_path / "data").stat().st_mode) == 0o700
    blob = next((tmp_path / "data" / "blobs").glob("*/*"))
    assert stat.S_IMODE(blob.stat().st_mode) == 0o600
    store.close()


def test_reopen_rolls_interrupted_work_back(tmp_path: Path, fill: Filler) -> None:
    data = tmp_path / "data"
    store = EmbeddedStorage(data)
    _, scan_id = fill(store)
    rec = store.get_scan(scan_id)
    assert rec is not None
    store.close()
    # The states a SIGKILL can leave: a staged file, an unreferenced blob (killed before the commit) and a blob
    # of a live record moved to trash (killed inside a delete that then rolled back).
    (data / "tmp" / "deadbeef.1").write_bytes(b"staged")
    (data / "blobs" / "ff").mkdir()
    (data / "blobs" / "ff" / ("ff" * 32)).write_bytes(b"orphan")
    sha = rec.files["original"].sha256
    (data / "blobs" / sha[:2] / sha).replace(data / "trash" / f"{sha}.abc")
    store = EmbeddedStorage(data)
    assert store.check().ok
    assert not any((data / "tmp").iterdir()) and not any((data / "trash").iterdir())
    found = store.get_file(rec.files["original"].id)
    assert found is not None and found[1] == b"original bytes"
    store.close()


def test_no_cleanup_while_another_process_has_the_store_open(tmp_path: Path) -> None:
    data = tmp_path / "data"
    first = EmbeddedStorage(data)
    (data / "blobs" / "ff").mkdir()
    (data / "blobs" / "ff" / ("ff" * 32)).write_bytes(b"maybe in flight")
    second = EmbeddedStorage(data)  # a second open file description: the exclusive lock is refused
    assert second.check().orphan_blobs == ["ff" * 32]
    second.close()
    first.close()
    third = EmbeddedStorage(data)
    assert third.check().ok
    third.close()


def test_database_files_are_private(tmp_path: Path, fill: Filler) -> None:
    """Issue 13 item 8: braintumor.db, -wal and -shm were created 0644 (readable by every local account)."""
    data = tmp_path / "data"
    store = EmbeddedStorage(data)
    fill(store)
    files = [data / "braintumor.db", data / "braintumor.db-wal", data / "braintumor.db-shm", data / "storage.lock"]
    assert all(path.exists() for path in files)
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in files} == {path.name: 0o600 for path in files}
    archive = tmp_path / "backup.tar.gz"
    backup(store, archive)
    assert stat.S_IMODE(archive.stat().st_mode) == 0o600
    store.close()
    (data / "braintumor.db").chmod(0o644)  # made by an older version
    EmbeddedStorage(data).close()
    assert stat.S_IMODE((data / "braintumor.db").stat().st_mode) == 0o600


def test_a_deleted_scan_leaves_no_trace_in_the_database_files(tmp_path: Path) -> None:
    """Issue 13 item 8: a deleted scan's filename lingered in the write-ahead log (and free pages)."""
    data = tmp_path / "data"
    store = EmbeddedStorage(data)
    alice = store.create_user(NewUser("alice", "h", "r"))
    secret = "DOE^JOHN-MRN-777-brain.png"
    rec = store.add_scan(NewScan(alice.id, secret, "tumor", 0.9), [Blob("original", b"x", "image/png")])
    store.add_scan(NewScan(alice.id, "kept.png", "tumor", 0.9), [Blob("original", b"y", "image/png")])
    on_disk = b"".join(p.read_bytes() for p in data.glob("braintumor.db*"))
    assert secret.encode() in on_disk
    assert store.delete_scans(alice.id, [rec.id]) == [rec.id]
    on_disk = b"".join(p.read_bytes() for p in data.glob("braintumor.db*"))
    assert secret.encode() not in on_disk and b"kept.png" in on_disk
    assert store.list_scans(alice.id, ScanQuery()).total == 1
    store.close()


def test_a_version_1_database_keeps_its_scans_with_the_band_as_the_outcome(tmp_path: Path) -> None:
    """Version 1 stored a threshold label beside the band; opening it keeps the band as the one outcome."""
    data = tmp_path / "data"
    store = EmbeddedStorage(data)
    alice = store.create_user(NewUser("alice", "h", "r"))
    store.close()
    conn = sqlite3.connect(data / "braintumor.db", isolation_level=None)
    conn.executescript(
        "DROP TABLE files; DROP TABLE scans;"
        "CREATE TABLE scans (id TEXT PRIMARY KEY, owner_id TEXT NOT NULL REFERENCES users(id), filename TEXT NOT NULL,"
        " label TEXT NOT NULL, band TEXT NOT NULL, p_tumor REAL NOT NULL, tumor_type TEXT, model_name TEXT NOT NULL,"
        " model_version TEXT NOT NULL, threshold REAL NOT NULL, result TEXT NOT NULL, created_at TEXT NOT NULL);"
        "CREATE TABLE files (id TEXT PRIMARY KEY, scan_id TEXT NOT NULL REFERENCES scans(id) ON DELETE CASCADE,"
        " kind TEXT NOT NULL, content_type TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,"
        " UNIQUE (scan_id, kind));"
        "UPDATE meta SET value = '1' WHERE key = 'schema_version';"
    )
    conn.execute(
        "INSERT INTO scans VALUES ('s1', ?, 'old.png', 'tumor', 'refer', 0.45, NULL, 'm', '1', 0.4, '{}',"
        " '2026-01-01T00:00:00.000000+00:00')",
        (alice.id,),
    )
    conn.close()
    store = EmbeddedStorage(data)
    rec = store.get_scan("s1")
    assert rec is not None and rec.outcome == "refer" and not hasattr(rec, "label") and rec.kind == "scan"
    assert [s.id for s in store.list_scans(alice.id, ScanQuery(outcome="refer")).items] == ["s1"]
    assert store.stats().outcomes == {"refer": 1}
    store.close()
    version = sqlite3.connect(data / "braintumor.db").execute("SELECT value FROM meta WHERE key = 'schema_version'")
    assert version.fetchone()[0] == str(SCHEMA_VERSION)
