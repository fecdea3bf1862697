"""The Streamlit entry script: ``streamlit run src/braintumor/ui/app.py`` (or ``braintumor ui``).

It draws the sidebar (navigation, account, server status), then the chosen page inside one guard: an
:class:`~braintumor.ui.client.ApiError` becomes a readable message, a refused token (expired, revoked)
returns to the sign-in page with a note, and any other failure shows a short apology with a reference
instead of a traceback. Importing this module draws nothing (it only runs as ``__main__``).
"""

from __future__ import annotations

import datetime as dt
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from braintumor.ui import components, sessions, state
from braintumor.ui.client import ApiError
from braintumor.ui.views import about, admin, analyze, dashboard, history, login, pacs, profile

log = logging.getLogger("braintumor.ui")


@dataclass(frozen=True)
class Page:
    """A navigation entry."""

    name: str
    icon: str
    render: Callable[[], None]


SIGNED_OUT = (Page("Sign in", ":material/login:", login.render), Page("About", ":material/info:", about.render))
SIGNED_IN = (
    Page("Analyze", ":material/biotech:", analyze.render),
    Page("History", ":material/history:", history.render),
    Page("Dashboard", ":material/monitoring:", dashboard.render),
    Page("Profile", ":material/person:", profile.render),
    Page("About", ":material/info:", about.render),
)
ADMIN = Page("Admin", ":material/admin_panel_settings:", admin.render)
#: Offered only when the API says the site configured a PACS.
PACS = Page("From PACS", ":material/cloud_download:", pacs.render)


def refresh_account() -> None:
    """Re-read the account at most once a minute, so a promotion or demotion shows up and a revoked token
    (password changed elsewhere, account deleted) ends the session even on a page that calls nothing."""
    if state.current_auth() is None:
        return
    try:
        me = state.cached("profile", "me", lambda: state.api().me(), ttl=60)
    except ApiError as exc:
        if exc.unauthorized:
            state.sign_out(state.EXPIRED_NOTE)
        return  # the server is unreachable: the page will say so
    state.update_role(me.role)


def pages() -> tuple[Page, ...]:
    """The pages this session may open."""
    auth = state.current_auth()
    if auth is None:
        return SIGNED_OUT
    signed_in = (*SIGNED_IN[:3], ADMIN, *SIGNED_IN[3:]) if auth.is_admin else SIGNED_IN
    return (*signed_in[:2], PACS, *signed_in[2:]) if pacs.configured() else signed_in


def sidebar(available: tuple[Page, ...]) -> Page:
    """Navigation, the account and the server status; returns the chosen page."""
    names = [p.name for p in available]
    wanted = state.take_nav_request()
    if wanted in names:
        st.session_state[state.NAV] = wanted
    if st.session_state.get(state.NAV) not in names:
        st.session_state[state.NAV] = names[0]
    icons = {p.name: p.icon for p in available}
    with st.sidebar:
        st.markdown("### :material/neurology: Brain MRI\nTumor detection · decision support")
        choice = st.radio(
            "Navigation", names, key=state.NAV, format_func=lambda n: f"{icons[n]} {n}", label_visibility="collapsed"
        )
        st.divider()
        auth = state.current_auth()
        if auth is not None:
            st.markdown(f"Signed in as **{auth.username}**" + (" (administrator)" if auth.is_admin else ""))
            ends = components.local_time(dt.datetime.fromtimestamp(auth.expires_at, dt.UTC))
            st.caption(f"Session ends at {ends:%H:%M}; sign in again then.")
            if st.button("Sign out", icon=":material/logout:", key="sign_out", width="stretch"):
                state.sign_out()
                state.set_note("You are signed out.", "info")
                st.rerun()
        server_status()
    return next(p for p in available if p.name == choice)


def server_status() -> None:
    """One line on the API and the model, checked at most every 30 s."""
    try:
        health = state.cached("health", "health", lambda: state.api().health(), ttl=30)
    except ApiError:
        st.caption(f":red[●] API unreachable ({state.api_url()})")
        return
    if health.status == "ok":
        st.caption(f":green[●] Online · model {health.model_name} v{health.model_version}")
    elif health.status == "degraded":
        st.caption(":orange[●] Online · no model loaded (analysis unavailable)")
    else:
        st.caption(":red[●] Storage unavailable")


def show_note() -> None:
    note = state.pop_note()
    if note is None:
        return
    kind, text = note
    {"success": st.success, "info": st.info, "warning": st.warning, "error": st.error}.get(kind, st.info)(text)


def run_page(page: Page) -> None:
    """Draw ``page``; turn API errors into messages and a refused token into the sign-in page."""
    try:
        page.render()
    except ApiError as exc:
        if exc.unauthorized:  # expired or revoked while this page ran
            state.sign_out(state.EXPIRED_NOTE)
            st.rerun()
        if exc.status == 403:  # e.g. no longer an admin: re-read the role on the next run
            state.invalidate("profile")
        st.error(exc.message, icon=":material/error:")
    except Exception:
        reference = secrets.token_hex(4)
        log.exception("UI error on page %s (reference %s)", page.name, reference)
        st.error(
            f"Something went wrong while drawing this page. Please try again; if it persists, report reference "
            f"**{reference}**.",
            icon=":material/error:",
        )


def main() -> None:
    """One run of the app."""
    st.set_page_config(page_title="Brain MRI Tumor Detection", page_icon=":material/neurology:", layout="wide")
    st.set_option("client.toolbarMode", "viewer")  # no developer menu or deploy button for clinicians
    st.set_option("client.showErrorDetails", "none")  # a last line of defence: never a traceback
    components.inject_css()
    refresh_account()
    page = sidebar(pages())
    sessions.write_cookie()
    show_note()
    run_page(page)
    sessions.save_values()


if __name__ == "__main__":
    main()
