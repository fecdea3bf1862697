"""Unit tests of the security helpers: throttling windows, lockout expiry, recovery keys, token shape."""

from __future__ import annotations

import jwt
import pytest

from braintumor.api.config import Settings
from braintumor.api.security import LoginGuard, Security, new_recovery_key, normalise_recovery_key

SECRET = "sK2mW8qZ4xR7vN1cT5bY9hL3dG6fJ0pAeUoIiQtEwBn"


def test_rate_window_slides() -> None:
    guard = LoginGuard(rate_per_minute=2, attempts=3, lockout_s=60)
    assert guard.hit("ip", now=0) == 0 and guard.hit("ip", now=1) == 0
    assert guard.hit("ip", now=2) == pytest.approx(58)
    assert guard.hit("other", now=2) == 0
    assert guard.hit("ip", now=60.5) == 0  # the first hit left the window


def test_lockout_expires_and_success_resets() -> None:
    guard = LoginGuard(rate_per_minute=100, attempts=3, lockout_s=600)
    guard.failure("alice", now=0)
    guard.failure("alice", now=1)
    guard.success("alice")
    guard.failure("alice", now=2)
    guard.failure("alice", now=3)
    assert guard.locked_for("alice", now=3) == 0
    guard.failure("alice", now=4)
    assert guard.locked_for("alice", now=5) == pytest.approx(599)
    assert guard.locked_for("alice", now=605) == 0
    guard.failure("bob", now=0)
    guard.failure("bob", now=700)  # old failures fall out of the window
    guard.failure("bob", now=701)
    assert guard.locked_for("bob", now=702) == 0


def test_guard_memory_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(LoginGuard, "MAX_KEYS", 100)
    guard = LoginGuard(rate_per_minute=5, attempts=3, lockout_s=60)
    for i in range(1000):
        guard.hit(f"ip{i}", now=float(i))
        guard.failure(f"user{i}", now=float(i))
    assert len(guard._hits) <= 100 and len(guard._failures) <= 100


def test_recovery_keys() -> None:
    keys = {new_recovery_key() for _ in range(100)}
    assert len(keys) == 100
    key = keys.pop()
    assert len(key.replace("-", "")) == 32  # 160 bits in base32
    assert normalise_recovery_key(key.lower().replace("-", " ")) == key


def test_tokens_need_the_access_type_and_a_version() -> None:
    settings = Settings(secret_key=SECRET, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
    sec = Security(settings)
    token, lifetime = sec.create_token("uid", 3)
    claims = sec.decode_token(token)
    assert claims["sub"] == "uid" and claims["tv"] == 3 and lifetime == 3600
    other = jwt.encode(
        {"sub": "uid", "tv": 3, "iat": claims["iat"], "exp": claims["exp"], "typ": "refresh"},
        SECRET,
        algorithm="HS256",
    )
    with pytest.raises(jwt.InvalidTokenError):
        sec.decode_token(other)
    assert sec.verify_password("x", "not-a-hash") == (False, None)
    assert sec.verify_password("x", None) == (False, None)


# -- issue 13 items 3 and 5 ------------------------------------------------------------------------------------
def test_hash_slots_bound_running_and_waiting_hashes() -> None:
    import threading

    from braintumor.api.security import HashSlots
    from braintumor.errors import ServiceBusyError

    slots = HashSlots(slots=1, queue=1, wait_s=5)
    release, inside = threading.Event(), threading.Event()

    def hold() -> None:
        with slots.hold():
            inside.set()
            release.wait(5)

    first = threading.Thread(target=hold)
    first.start()
    assert inside.wait(5)

    def queue() -> None:
        with slots.hold():
            pass

    second = threading.Thread(target=queue)  # waits for the slot: the queue (1) is now full
    second.start()
    for _ in range(500):
        if slots._waiting:
            break
        threading.Event().wait(0.01)
    with pytest.raises(ServiceBusyError, match="busy checking passwords"), slots.hold():
        pass
    release.set()
    first.join(5)
    second.join(5)
    assert slots.peak == 1


def test_unknown_and_known_users_cost_one_hash_each() -> None:
    settings = Settings(secret_key=SECRET, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1)
    sec = Security(settings)
    known = sec.hash_password("correct horse battery")
    before = sec.slots.total
    assert sec.verify_password("wrong password here", None) == (False, None)
    after_unknown = sec.slots.total
    assert sec.verify_password("wrong password here", known)[0] is False
    assert after_unknown - before == sec.slots.total - after_unknown == 1


def test_failures_lock_the_pair_not_the_account() -> None:
    guard = LoginGuard(rate_per_minute=100, attempts=5, lockout_s=900, backoff_after=10, backoff_max_s=60)
    lefts = [guard.failure("victim1", "attacker", now=float(t)) for t in range(5)]
    assert lefts == [4, 3, 2, 1, 0]
    assert guard.locked_for("victim1", "attacker", now=5) == pytest.approx(899)
    assert guard.locked_for("victim1", "owner", now=5) == 0


def test_many_addresses_only_slow_an_account_down() -> None:
    guard = LoginGuard(rate_per_minute=100, attempts=5, lockout_s=900, backoff_after=10, backoff_max_s=60)
    for i in range(9):
        guard.failure("victim1", f"bot{i}", now=100.0)
    assert guard.locked_for("victim1", "owner", now=100) == 0
    guard.failure("victim1", "bot9", now=100.0)
    assert guard.locked_for("victim1", "owner", now=100) == pytest.approx(1)  # back-off: 1 s, 2 s, 4 s …
    for k in range(1, 12):
        guard.failure("victim1", f"bot{9 + k}", now=200.0 + k)
    wait = guard.locked_for("victim1", "owner", now=211)
    assert wait == pytest.approx(60)  # capped: never the 15-minute lock
    guard.success("victim1", "owner")
    assert guard.locked_for("victim1", "owner", now=211) == 0
    assert guard.locked_for("victim1", "bot20", now=211) == 0  # one failure from each bot: no pair is locked


def test_locks_are_listed_and_cleared() -> None:
    guard = LoginGuard(rate_per_minute=100, attempts=2, lockout_s=600)
    guard.failure("victim1", "a", now=0)
    guard.failure("victim1", "a", now=1)
    guard.failure("ghost", "b", now=1)
    listed = {(lock.username, lock.client): lock for lock in guard.locks(now=2)}
    assert listed[("victim1", "a")].locked_for_s == pytest.approx(599)
    assert listed[("ghost", "b")].failures == 1 and ("victim1", None) in listed
    assert guard.clear("victim1") == 2
    assert guard.locked_for("victim1", "a", now=2) == 0
    assert {lock.username for lock in guard.locks(now=2)} == {"ghost"}
