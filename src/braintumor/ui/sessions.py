"""Sessions that survive a browser refresh: a server-side session id in a cookie, the token kept on the server.

Why: Streamlit starts a new session on every page load, so a refresh signed the user out and lost the Analyze
results. Putting the token in the URL (what the seed did) leaks it into history, logs and screenshots. Instead,
on sign-in the UI server keeps the signed-in :class:`~braintumor.ui.state.Auth` (token included) in a
process-wide registry under a random 256-bit id, and the browser holds only that id, in a ``SameSite=Strict``
cookie scoped to the UI's path. A refresh opens a new session whose first run reads the cookie (``st.context``)
and takes the account and the last results back. Signing out (or the token's expiry) drops the entry and the
cookie; restarting the UI forgets every entry. The cookie is written by a script (Streamlit cannot send
``Set-Cookie``), so it is not ``HttpOnly``: it carries the id, never the token, and the id is worth nothing once
the session is signed out or expired.

Example:
    >>> registry = Registry(capacity=2)
    >>> registry.put("a", Saved(auth=None, expires_at=1e18))
    >>> registry.get("a") is not None, registry.get("b")
    (True, None)
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import streamlit as st
import streamlit.components.v1 as components

COOKIE = "bt_session"
SID = "_sid"
#: A cookie to write on this run: the session id, or "" to clear it.
PENDING = "_sid_cookie"
#: Session keys brought back after a refresh besides the account (the page and the Analyze results).
KEPT = ("nav", "analyze_results", "analyze_selected")


@dataclass
class Saved:
    """What a refresh restores: the account (an :class:`~braintumor.ui.state.Auth`) and a few page values."""

    auth: Any
    expires_at: float
    values: dict[str, Any] = field(default_factory=dict)


class Registry:
    """Saved sessions by id, bounded (oldest dropped first) and expiring with their tokens. Thread-safe."""

    def __init__(self, capacity: int = 2000) -> None:
        self.capacity = capacity
        self._items: dict[str, Saved] = {}
        self._lock = threading.Lock()

    def put(self, sid: str, saved: Saved) -> None:
        with self._lock:
            self._items.pop(sid, None)
            self._items[sid] = saved
            while len(self._items) > self.capacity:
                self._items.pop(next(iter(self._items)))

    def get(self, sid: str | None) -> Saved | None:
        if not sid:
            return None
        with self._lock:
            saved = self._items.get(sid)
            if saved is not None and time.time() >= saved.expires_at:
                del self._items[sid]
                return None
            return saved

    def drop(self, sid: str | None) -> None:
        with self._lock:
            self._items.pop(sid or "", None)


@st.cache_resource
def registry() -> Registry:
    """The registry of this UI process (shared by its sessions; the ids are unguessable)."""
    return Registry()


def remember(auth: Any) -> None:
    """Keep the freshly signed-in account for later page loads of this browser."""
    sid = secrets.token_urlsafe(32)
    registry().put(sid, Saved(auth, float(auth.expires_at)))
    st.session_state[SID] = sid
    st.session_state[PENDING] = (sid, max(1, int(auth.expires_at - time.time())))


def forget() -> None:
    """Drop this browser's saved session (sign-out); the cookie is cleared on the next run."""
    registry().drop(st.session_state.get(SID))


def restore() -> Any | None:
    """On a new session: the account saved under this browser's cookie (its page values put back), or None."""
    try:
        sid = st.context.cookies.get(COOKIE)
    except (AttributeError, RuntimeError):  # no request context (bare script run)
        return None
    saved = registry().get(sid)
    if saved is None:
        return None
    st.session_state[SID] = sid
    for key, value in saved.values.items():
        st.session_state.setdefault(key, value)
    return saved.auth


def save_values() -> None:
    """Record this run's page values for a refresh (called at the end of every run while signed in)."""
    saved = registry().get(st.session_state.get(SID))
    if saved is not None:
        saved.expires_at = float(saved.auth.expires_at)
        saved.values = {k: st.session_state[k] for k in KEPT if k in st.session_state}


def write_cookie() -> None:
    """Write (or clear) the session cookie in the browser when a sign-in or sign-out asked for it."""
    if PENDING not in st.session_state:
        return
    sid, age = st.session_state.pop(PENDING)
    script = (
        f"<script>window.parent.document.cookie = '{COOKIE}={sid}; Path=/; Max-Age={age}; SameSite=Strict';</script>"
    )
    components.html(script, height=0)


def clear_cookie() -> None:
    """Ask the next run to clear the cookie (after the session state was reset)."""
    st.session_state[PENDING] = ("", 0)
