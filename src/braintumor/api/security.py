"""Passwords (argon2 via pwdlib), signed tokens (JWT, HS256, with expiry), recovery keys and login throttling.

Why each choice:

* argon2id is memory-hard; the cost comes from settings so tests can be fast while production stays strong, and
  a hash made with weaker parameters is upgraded on the next successful login.
* Tokens name the user by id (not by name, which can be re-registered after a deletion) and carry the user's
  ``token_version``: changing or resetting a password bumps it, which revokes every token issued before.
* The recovery key replaces the seed's "security answer": 160 random bits shown once, stored only as a hash,
  replaced by a new one every time it is used.
* :class:`LoginGuard` limits attempts per client address and locks a username for a while after repeated
  failures, whether or not that user exists (so the lockout reveals nothing).

Example:
    >>> from braintumor.api.config import Settings
    >>> sec = Security(Settings(secret_key="k" * 40, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1))
    >>> h = sec.hash_password("correct horse battery")
    >>> sec.verify_password("correct horse battery", h)[0]
    True
    >>> token, _ = sec.create_token("user-id", 0)
    >>> sec.decode_token(token)["sub"]
    'user-id'
"""

from __future__ import annotations

import base64
import datetime as dt
import secrets
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from braintumor.api.config import Settings

ALGORITHM = "HS256"
_COMMON_PASSWORDS = frozenset(
    {
        "password",
        "password1",
        "password12",
        "password123",
        "password1234",
        "1234567890",
        "12345678910",
        "0123456789",
        "qwertyuiop",
        "qwerty12345",
        "iloveyou123",
        "letmein123",
        "welcome123",
        "admin12345",
        "administrator",
        "changeme123",
        "trustno1234",
        "abc123456789",
        "football123",
        "monkey12345",
        "1q2w3e4r5t",
        "q1w2e3r4t5",
        "passw0rd123",
        "correcthorsebatterystaple",
    }
)


class PolicyError(ValueError):
    """A password or username that the policy refuses (the message says why)."""


def check_password_policy(password: str, username: str, min_length: int) -> None:
    """Length and blocklist rules in the spirit of NIST SP 800-63B (no composition rules).

    >>> check_password_policy("tumour-board-2026", "alice", 10)
    >>> check_password_policy("short", "alice", 10)
    Traceback (most recent call last):
    ...
    braintumor.api.security.PolicyError: the password must have at least 10 characters
    """
    if len(password) < min_length:
        raise PolicyError(f"the password must have at least {min_length} characters")
    if len(password) > 128:
        raise PolicyError("the password must have at most 128 characters")
    lowered = password.lower()
    if lowered in _COMMON_PASSWORDS or lowered.rstrip("!.1") in _COMMON_PASSWORDS:
        raise PolicyError("this password is too common; choose another")
    if username and username.lower() in lowered:
        raise PolicyError("the password must not contain the username")
    if len(set(password)) < 5:
        raise PolicyError("the password must use at least 5 different characters")


def new_recovery_key() -> str:
    """160 random bits as 8 groups of 4 base32 characters, e.g. ``ABCD-EFGH-…`` (easy to copy and read)."""
    raw = base64.b32encode(secrets.token_bytes(20)).decode()
    return "-".join(raw[i : i + 4] for i in range(0, 32, 4))


def normalise_recovery_key(key: str) -> str:
    """Accept a recovery key typed in lower case, with spaces or without dashes."""
    compact = "".join(ch for ch in key.upper() if ch.isalnum())
    return "-".join(compact[i : i + 4] for i in range(0, len(compact), 4))


def password_hasher(settings: Settings) -> PasswordHash:
    """argon2id with the cost the settings give (also used by ``braintumor admin create``)."""
    return PasswordHash(
        (
            Argon2Hasher(
                time_cost=settings.argon2_time_cost,
                memory_cost=settings.argon2_memory_kib,
                parallelism=settings.argon2_parallelism,
            ),
        )
    )


class Security:
    """Hashing and tokens configured from :class:`~braintumor.api.config.Settings`."""

    def __init__(self, settings: Settings) -> None:
        if settings.secret_key is None:
            raise ValueError("a signing secret is required")
        self._secret = settings.secret_key.get_secret_value()
        self.token_minutes = settings.token_minutes
        self._hasher = password_hasher(settings)
        # Verifying against this when a user does not exist keeps the response time the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash_password(self, password: str) -> str:
        return self._hasher.hash(password)

    def verify_password(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """``(matches, new_hash_or_None)``; with ``hashed=None`` burns the same time and returns False."""
        if hashed is None:
            self._hasher.verify(password, self._dummy_hash)
            return False, None
        try:
            return self._hasher.verify_and_update(password, hashed)
        except Exception:  # a malformed stored hash must not become a 500
            return False, None

    def create_token(self, user_id: str, token_version: int) -> tuple[str, int]:
        """A signed access token and its lifetime in seconds."""
        now = dt.datetime.now(dt.UTC)
        lifetime = self.token_minutes * 60
        claims = {
            "sub": user_id,
            "tv": token_version,
            "iat": now,
            "exp": now + dt.timedelta(seconds=lifetime),
            "jti": secrets.token_hex(8),
            "typ": "access",
        }
        return jwt.encode(claims, self._secret, algorithm=ALGORITHM), lifetime

    def decode_token(self, token: str) -> dict[str, Any]:
        """Verified claims; raises :class:`jwt.InvalidTokenError` for a bad signature, expiry or shape."""
        claims: dict[str, Any] = jwt.decode(
            token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub"]}
        )
        if claims.get("typ") != "access" or not isinstance(claims.get("tv"), int):
            raise jwt.InvalidTokenError("not an access token")
        return claims


@dataclass
class _Failures:
    times: deque[float]
    locked_until: float = 0.0


class LoginGuard:
    """In-memory attempt limits: ``rate`` requests per minute per client, and a lockout of ``lockout_s`` after
    ``attempts`` failures (within that window) for one username. Thread-safe; bounded in size.

    One process keeps its own counts (the server runs one worker); a restart forgets them.
    """

    MAX_KEYS = 100_000

    def __init__(self, *, rate_per_minute: int, attempts: int, lockout_s: float) -> None:
        self.rate = rate_per_minute
        self.attempts = attempts
        self.lockout_s = lockout_s
        self._hits: dict[str, deque[float]] = {}
        self._failures: dict[str, _Failures] = {}
        self._lock = threading.Lock()

    def hit(self, client: str, now: float | None = None) -> float:
        """Count one request from ``client``; returns 0 when allowed, else the seconds to wait."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(self._hits, now)
            window = self._hits.setdefault(client, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.rate:
                return max(1.0, 60 - (now - window[0]))
            window.append(now)
            return 0.0

    def locked_for(self, username: str, now: float | None = None) -> float:
        """Seconds ``username`` stays locked (0 when not locked)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            entry = self._failures.get(username)
            return max(0.0, entry.locked_until - now) if entry else 0.0

    def failure(self, username: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(self._failures, now)
            entry = self._failures.setdefault(username, _Failures(deque()))
            while entry.times and entry.times[0] <= now - self.lockout_s:
                entry.times.popleft()
            entry.times.append(now)
            if len(entry.times) >= self.attempts:
                entry.locked_until = now + self.lockout_s
                entry.times.clear()

    def success(self, username: str) -> None:
        with self._lock:
            self._failures.pop(username, None)

    def _prune(self, table: dict[str, Any], now: float) -> None:
        if len(table) < self.MAX_KEYS:
            return
        horizon = max(60.0, self.lockout_s)
        for key in list(table):
            value = table[key]
            times = value if isinstance(value, deque) else value.times
            locked = 0.0 if isinstance(value, deque) else value.locked_until
            if (not times or times[-1] <= now - horizon) and locked <= now:
                del table[key]
        if len(table) >= self.MAX_KEYS:  # still full of live entries: forget the oldest half
            for key in list(table)[: self.MAX_KEYS // 2]:
                del table[key]
