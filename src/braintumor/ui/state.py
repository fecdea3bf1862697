"""Session state in one place: the signed-in account, notes that survive a rerun, navigation and a per-session
cache.

Why: the seed kept its token in the URL. Here the token lives only on the UI server — in ``st.session_state`` and,
so that a refresh keeps the session, in :mod:`braintumor.ui.sessions` under an opaque id the browser holds in a
cookie: never in the URL, never in a log line (:class:`Auth` hides it from ``repr``). Signing out clears
the whole session, so nothing of one user's scans stays in memory for the next. The cache is per session too
(not ``st.cache_data``, which is shared by every user of the process): a rerun reuses what a page fetched, a
change (upload, delete) invalidates the scopes it affects.

Example:
    >>> pages = cached("history", ("page", 1), lambda: api().history(1))  # doctest: +SKIP
    >>> invalidate("history", "dashboard")  # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import streamlit as st

from braintumor.ui import sessions
from braintumor.ui.client import DEFAULT_API_URL, TIMEOUT_S, ApiClient, ApiError
from braintumor.ui.records import Token, User

T = TypeVar("T")

AUTH = "_auth"
NOTE = "_note"
CACHE = "_cache"
HTTP = "_http"
NAV = "nav"
NAV_REQUEST = "_nav_request"
RESTORED = "_restore_tried"
#: Seconds before the token's expiry at which the UI signs out by itself (a call must not fail half-way).
EXPIRY_MARGIN_S = 30
#: Entries kept per cache scope (oldest dropped first): bounds the memory one session can hold.
MAX_ENTRIES = 48
EXPIRED_NOTE = "Your session has expired. Please sign in again."


@dataclass
class Auth:
    """The signed-in account; ``token`` is excluded from ``repr`` so it cannot end up in a log or an error."""

    username: str
    role: str
    token: str = field(repr=False)
    expires_at: float

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"


def api_url() -> str:
    """``BRAINTUMOR_API_URL``, else the local default."""
    return (os.environ.get("BRAINTUMOR_API_URL") or DEFAULT_API_URL).rstrip("/")


def api() -> ApiClient:
    """A client for this session, signed with its token when signed in (one connection pool per session)."""
    url = api_url()
    http = st.session_state.get(HTTP)
    if not isinstance(http, httpx.Client) or str(http.base_url).rstrip("/") != url:
        http = httpx.Client(base_url=url, timeout=httpx.Timeout(TIMEOUT_S, connect=5.0))
        st.session_state[HTTP] = http
    auth = current_auth()
    return ApiClient(url, auth.token if auth else None, http=http)


# -- the account -----------------------------------------------------------------------------------------
def current_auth() -> Auth | None:
    """The signed-in account, or ``None``; an expired token signs the session out (with a note) first."""
    auth = st.session_state.get(AUTH)
    if not isinstance(auth, Auth) and not st.session_state.get(RESTORED):  # a new page load: this browser's session?
        st.session_state[RESTORED] = True
        saved = sessions.restore()
        if isinstance(saved, Auth):
            st.session_state[AUTH] = auth = saved
    if not isinstance(auth, Auth):
        return None
    if time.time() >= auth.expires_at:
        sign_out(EXPIRED_NOTE)
        return None
    return auth


def sign_in(token: Token, user: User) -> None:
    """Start a signed-in session (the previous one's data is dropped), kept for a refresh of this browser."""
    sessions.forget()
    reset_session()
    expires = time.time() + max(token.expires_in - EXPIRY_MARGIN_S, 1)
    auth = Auth(user.username, user.role, token.access_token, expires)
    st.session_state[AUTH] = auth
    st.session_state[RESTORED] = True
    sessions.remember(auth)


def replace_token(token: Token) -> None:
    """Keep the session but sign with a new token (after a password change)."""
    auth = current_auth()
    if auth is not None:
        auth.token = token.access_token
        auth.expires_at = time.time() + max(token.expires_in - EXPIRY_MARGIN_S, 1)


def update_role(role: str) -> None:
    """Record the account's role as the server now reports it."""
    auth = current_auth()
    if auth is not None:
        auth.role = role


def sign_out(note: str | None = None) -> None:
    """End the session: token, cache, results and widget values all go (and this browser's saved session);
    ``note`` is shown on the sign-in page."""
    sessions.forget()
    reset_session()
    st.session_state[RESTORED] = True
    sessions.clear_cookie()
    if note:
        set_note(note, "warning")


def reset_session() -> None:
    """Clear everything the session holds except its HTTP connection pool."""
    http = st.session_state.get(HTTP)
    for key in list(st.session_state.keys()):
        del st.session_state[key]
    if http is not None:
        st.session_state[HTTP] = http


# -- notes and navigation --------------------------------------------------------------------------------
def reason(exc: ApiError) -> str:
    """The server's reason for a refused call, for the page to show; a refused sign-in (401: the token expired or
    was revoked) is raised again instead, for the app to sign the session out."""
    if exc.unauthorized:
        raise exc
    return exc.message


def set_note(text: str, kind: str = "success") -> None:
    """A message for the next run (``kind``: success, info, warning, error), e.g. before ``st.rerun()``."""
    st.session_state[NOTE] = (kind, text)


def pop_note() -> tuple[str, str] | None:
    """The pending note, once."""
    note = st.session_state.pop(NOTE, None)
    return note if isinstance(note, tuple) else None


def go(page: str) -> None:
    """Ask for ``page`` on the next run (the navigation widget cannot change once drawn in this run)."""
    st.session_state[NAV_REQUEST] = page


def take_nav_request() -> str | None:
    """The page asked for by :func:`go`, once."""
    page = st.session_state.pop(NAV_REQUEST, None)
    return page if isinstance(page, str) else None


# -- per-session cache -----------------------------------------------------------------------------------
def cached(scope: str, key: Hashable, load: Callable[[], T], ttl: float | None = None) -> T:
    """``load()``'s result for ``(scope, key)``, reused across reruns for ``ttl`` seconds (``None``: until
    :func:`invalidate`). Errors are not cached."""
    store: dict[str, dict[Hashable, tuple[float, Any]]] = st.session_state.setdefault(CACHE, {})
    entries = store.setdefault(scope, {})
    hit = entries.get(key)
    now = time.monotonic()
    if hit is not None and (ttl is None or now - hit[0] < ttl):
        value: T = hit[1]
        return value
    value = load()
    entries.pop(key, None)
    entries[key] = (now, value)
    while len(entries) > MAX_ENTRIES:
        entries.pop(next(iter(entries)))
    return value


def put(scope: str, key: Hashable, value: T) -> T:
    """Store ``value`` as if :func:`cached` had loaded it (e.g. an upload the page already holds)."""
    return cached(scope, key, lambda: value)


def invalidate(*scopes: str) -> None:
    """Forget the cached entries of ``scopes`` (all scopes when none is given)."""
    store = st.session_state.get(CACHE)
    if not isinstance(store, dict):
        return
    for scope in scopes or tuple(store):
        store.pop(scope, None)
