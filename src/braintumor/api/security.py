"""Passwords (argon2 via pwdlib), signed tokens (JWT, HS256, with expiry), recovery keys and login throttling.

Why each choice:

* argon2id is memory-hard; the cost comes from settings so tests can be fast while production stays strong, and
  a hash made with weaker parameters is upgraded on the next successful login. Being memory-hard, it is also a
  lever: 20 concurrent sign-ins for unknown users took a server from 247 MB to 1.5 GB. At most
  ``max_concurrent_hashes`` hashes run at once (a semaphore), at most ``hash_queue`` more wait for a slot, and the
  rest get 503 with ``Retry-After``: memory stays flat at slots × ``argon2_memory_kib``. Unknown users take the same
  path (one verification against a dummy hash, through the same slots), so timing tells nothing.
* Tokens name the user by id (not by name, which can be re-registered after a deletion) and carry the user's
  ``token_version``: changing or resetting a password bumps it, which revokes every token issued before.
* The recovery key replaces the seed's "security answer": 160 random bits shown once, stored only as a hash,
  replaced by a new one every time it is used.
* :class:`LoginGuard` limits requests per client address, and counts failed sign-ins per (account, client): the
  pair is locked for ``lockout_minutes`` after ``login_attempts`` failures, with a warning one attempt before.
  Failures from other addresses cannot lock the owner out; across all addresses an account only gets an
  exponential back-off (1 s, 2 s, 4 s … at most ``account_backoff_max_s``) once ``account_backoff_after``
  failures pile up, which slows a distributed guesser to one try per back-off and the owner by seconds. Unknown
  usernames are counted the same way, so a lock reveals nothing. The recovery-key reset is never locked (160 random
  bits cannot be guessed; the per-client rate limit bounds its cost) and a successful reset clears the account's
  locks; admins list and clear locks (``/admin/locks``).

Example:
    >>> from braintumor.api.config import Settings
    >>> key = "Zr4T9qLm2XbV7nKp1sWc8HdYf3GjUe6A0oIuQyRtEw5"
    >>> sec = Security(Settings(secret_key=key, argon2_time_cost=1, argon2_memory_kib=1024, argon2_parallelism=1))
    >>> h = sec.hash_password("correct horse battery")
    >>> sec.verify_password("correct horse battery", h)[0]
    True
    >>> token, _ = sec.create_token("user-id", 0)
    >>> sec.decode_token(token)["sub"]
    'user-id'
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import hmac
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import jwt
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from braintumor.api.config import Settings
from braintumor.errors import ServiceBusyError

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


class HashSlots:
    """At most ``slots`` password hashes at once and at most ``queue`` callers waiting; the others are refused."""

    def __init__(self, slots: int, queue: int, wait_s: float) -> None:
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self._semaphore = threading.BoundedSemaphore(slots)
        self._lock = threading.Lock()
        self._waiting = 0
        self.running = 0
        self.peak = 0  # the most hashes seen running at once
        self.total = 0  # hashes run since start

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        if not self._semaphore.acquire(blocking=False):
            with self._lock:
                if self._waiting >= self.queue:
                    raise ServiceBusyError("the server is busy checking passwords; try again in a few seconds")
                self._waiting += 1
            try:
                acquired = self._semaphore.acquire(timeout=self.wait_s)
            finally:
                with self._lock:
                    self._waiting -= 1
            if not acquired:
                raise ServiceBusyError("the server is busy checking passwords; try again in a few seconds")
        with self._lock:
            self.running += 1
            self.total += 1
            self.peak = max(self.peak, self.running)
        try:
            yield
        finally:
            with self._lock:
                self.running -= 1
            self._semaphore.release()


class Security:
    """Hashing and tokens configured from :class:`~braintumor.api.config.Settings`."""

    def __init__(self, settings: Settings) -> None:
        if settings.secret_key is None:
            raise ValueError("a signing secret is required")
        self._secret = settings.secret_key.get_secret_value()
        self.token_minutes = settings.token_minutes
        self._hasher = password_hasher(settings)
        self.slots = HashSlots(settings.max_concurrent_hashes, settings.hash_queue, settings.hash_wait_s)
        # Verifying against this when a user does not exist keeps the response time the same.
        self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))

    def hash_password(self, password: str) -> str:
        with self.slots.hold():
            return self._hasher.hash(password)

    def verify_password(self, password: str, hashed: str | None) -> tuple[bool, str | None]:
        """``(matches, new_hash_or_None)``; with ``hashed=None`` burns the same time and returns False."""
        with self.slots.hold():
            if hashed is None:
                self._hasher.verify(password, self._dummy_hash)
                return False, None
            try:
                return self._hasher.verify_and_update(password, hashed)
            except Exception:  # a malformed stored hash must not become a 500
                return False, None

    def audit_name(self, username: str, known: bool) -> str:
        """What the audit log may say about a name someone typed: the name when it is an account, else a keyed
        hash (people type passwords into the username field; the hash still lets an operator group attempts)."""
        if known:
            return username
        digest = hmac.new(self._secret.encode(), b"audit-username\x00" + username.encode(), hashlib.sha256)
        return "unknown:" + digest.hexdigest()[:16]

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
            token, self._secret, algorithms=[ALGORITHM], options={"require": ["exp", "iat", "sub", "jti"]}
        )
        if claims.get("typ") != "access" or not isinstance(claims.get("tv"), int):
            raise jwt.InvalidTokenError("not an access token")
        return claims


@dataclass
class _Failures:
    times: deque[float]
    locked_until: float = 0.0


@dataclass(frozen=True)
class LockInfo:
    """One entry of :meth:`LoginGuard.locks`: ``client`` is ``None`` for the account-wide back-off."""

    username: str
    client: str | None
    failures: int
    locked_for_s: float


class LoginGuard:
    """In-memory attempt limits (see the module docstring): ``rate`` requests per minute per client; per (account,
    client) a lockout of ``lockout_s`` after ``attempts`` failures within that window; per account an exponential
    back-off once ``backoff_after`` failures (from any client) are in the window. Thread-safe; bounded in size.

    One process keeps its own counts (the server runs one worker); a restart forgets them.
    """

    MAX_KEYS = 100_000

    def __init__(
        self,
        *,
        rate_per_minute: int,
        attempts: int,
        lockout_s: float,
        backoff_after: int | None = None,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.rate = rate_per_minute
        self.attempts = attempts
        self.lockout_s = lockout_s
        self.backoff_after = backoff_after if backoff_after is not None else 2 * attempts
        self.backoff_max_s = backoff_max_s
        self._hits: dict[str, deque[float]] = {}
        self._failures: dict[tuple[str, str], _Failures] = {}
        self._accounts: dict[str, _Failures] = {}
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

    def locked_for(self, username: str, client: str = "-", now: float | None = None) -> float:
        """Seconds before ``username`` may try again from ``client`` (0 when it may): the pair's lock or the
        account's back-off, whichever ends later."""
        now = time.monotonic() if now is None else now
        with self._lock:
            pair = self._failures.get((username, client))
            account = self._accounts.get(username)
            waits = [entry.locked_until - now for entry in (pair, account) if entry is not None]
            return max([0.0, *waits])

    def failure(self, username: str, client: str = "-", now: float | None = None) -> int:
        """Count a failed attempt; returns how many attempts the pair has left before it is locked (0: now locked)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._prune(self._failures, now)
            self._prune(self._accounts, now)
            entry = self._failures.setdefault((username, client), _Failures(deque()))
            _expire(entry, now - self.lockout_s)
            entry.times.append(now)
            left = self.attempts - len(entry.times)
            if left <= 0:
                entry.locked_until = now + self.lockout_s
                entry.times.clear()
                left = 0
            account = self._accounts.setdefault(username, _Failures(deque()))
            _expire(account, now - self.lockout_s)
            account.times.append(now)
            excess = len(account.times) - self.backoff_after
            if excess >= 0:
                account.locked_until = max(account.locked_until, now + min(self.backoff_max_s, 2.0**excess))
            return left

    def success(self, username: str, client: str | None = None) -> None:
        """A successful sign-in from ``client`` clears that pair and the account's back-off; ``client=None`` (a
        password reset, an admin) clears every lock of the account."""
        with self._lock:
            self._accounts.pop(username, None)
            if client is not None:
                self._failures.pop((username, client), None)
            else:
                for key in [k for k in self._failures if k[0] == username]:
                    del self._failures[key]

    def clear(self, username: str) -> int:
        """Remove every lock and count of ``username`` (the admin action); returns how many entries went."""
        with self._lock:
            keys = [k for k in self._failures if k[0] == username]
            for key in keys:
                del self._failures[key]
            return len(keys) + (self._accounts.pop(username, None) is not None)

    def locks(self, now: float | None = None) -> list[LockInfo]:
        """Every account and (account, client) pair with failures in the window or a lock still running."""
        now = time.monotonic() if now is None else now
        out = []
        with self._lock:
            for (username, client), entry in self._failures.items():
                _expire(entry, now - self.lockout_s)
                if entry.times or entry.locked_until > now:
                    out.append(LockInfo(username, client, len(entry.times), max(0.0, entry.locked_until - now)))
            for username, entry in self._accounts.items():
                _expire(entry, now - self.lockout_s)
                if entry.times or entry.locked_until > now:
                    out.append(LockInfo(username, None, len(entry.times), max(0.0, entry.locked_until - now)))
        return sorted(out, key=lambda lock: (-lock.locked_for_s, lock.username, lock.client or ""))

    def _prune(self, table: dict[Any, Any], now: float) -> None:
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


def _expire(entry: _Failures, horizon: float) -> None:
    while entry.times and entry.times[0] <= horizon:
        entry.times.popleft()
