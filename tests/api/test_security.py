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
