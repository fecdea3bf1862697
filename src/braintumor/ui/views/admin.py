"""Administration (admins only): site totals, activity per user and per day, and account management.

Why these limits: administrators manage accounts and see aggregate numbers, never other users' scans (the API
enforces it); they cannot demote or delete themselves here, and the server refuses to leave zero admins.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

from braintumor.ui import charts, components, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import User, UserPage

PAGE = "admin_page"
QUERY = "admin_query"
PAGE_SIZE = 10
TOP_USERS = 15


def render() -> None:
    auth = state.current_auth()
    st.title("Administration")
    if auth is None or not auth.is_admin:
        st.error("This page is for administrators only.")
        return
    days = st.segmented_control(
        "Activity period", [7, 30, 90, 365], default=30, key="admin_days", format_func=lambda d: f"{d} days"
    )
    stats = state.cached("admin", ("stats", days), lambda: state.api().admin_stats(int(days or 30)), ttl=60)

    a, b, c, d = st.columns(4)
    a.metric("Users", stats.users, border=True)
    b.metric("Administrators", stats.admins, border=True)
    c.metric("Scans", stats.scans, border=True)
    tumor = stats.outcomes.get("tumor", 0)
    d.metric("Outcome tumor", components.percent(tumor / stats.scans) if stats.scans else "—", border=True)

    left, right = st.columns([3, 2])
    with left, st.container(border=True):
        st.markdown(f"**Activity per user** (top {TOP_USERS}, all time)")
        top = list(stats.scans_per_user[:TOP_USERS])
        if top:
            st.altair_chart(charts.ranking(top, "Scans"), width="stretch")
        else:
            st.caption("No scans yet.")
    with right, st.container(border=True):
        st.markdown("**Outcome mix** (all time)")
        if stats.outcomes:
            st.altair_chart(charts.outcome_mix(stats.outcomes), width="stretch")
        else:
            st.caption("No scans yet.")
        with st.expander(f"Scans per user: all {len(stats.scans_per_user)} active users"):
            st.dataframe(
                [{"User": u, "Scans": n} for u, n in stats.scans_per_user], hide_index=True, width="stretch", height=260
            )
    with st.container(border=True):
        st.markdown(f"**Scans per day** (last {days} days, all users)")
        st.altair_chart(charts.counts_per_day(list(stats.per_day)), width="stretch")

    st.subheader("Sign-in locks")
    locks_section()
    st.subheader("Users")
    users_section(auth.username)


def locks_section() -> None:
    """Running locks and failure counts; an account's can be cleared (a user locked out by someone's guesses)."""
    locks = state.cached("admin", ("locks",), lambda: state.api().admin_locks(), ttl=30)
    if not locks:
        st.caption("No account is locked and no recent failed sign-ins are being counted.")
        return
    widths = [2.2, 1.6, 1.0, 1.6, 1.2]
    with st.container(border=True):
        head = st.columns(widths)
        for col, name in zip(head, ("Account", "From", "Failures", "Locked for"), strict=False):
            col.markdown(f"**{name}**")
        shown: set[str] = set()  # one Unlock per account: it clears the account's locks from every address
        for i, lock in enumerate(locks):
            row = st.columns(widths, vertical_alignment="center")
            known = not lock.username.startswith("unknown:") and lock.username not in shown
            shown.add(lock.username)
            row[0].markdown("(not an account)" if lock.username.startswith("unknown:") else lock.username)
            row[1].markdown(lock.client or "all addresses")
            row[2].markdown(str(lock.failures))
            row[3].markdown(_wait(lock.locked_for_s) if lock.locked_for_s > 0 else "not locked (counting)")
            if known and row[4].button("Unlock", key=f"admin_unlock_{i}_{lock.username}", icon=":material/lock_open:"):
                unlock(lock.username)
    st.caption("A lock holds one account from one address; failures from elsewhere never lock its owner out.")


def unlock(username: str) -> None:
    act(lambda: state.api().clear_locks(username), f"Cleared the sign-in locks of {username}.")


def _wait(seconds: float) -> str:
    return f"{max(1, round(seconds / 60))} min" if seconds >= 60 else f"{int(seconds) + 1} s"


def users_section(me: str) -> None:
    query, _ = st.columns([2, 3])
    q = query.text_input("Search users", key="admin_q", placeholder="part of a username").strip()
    if st.session_state.get(QUERY) != q:
        st.session_state[QUERY] = q
        st.session_state[PAGE] = 1
    page = int(st.session_state.get(PAGE, 1))
    result = state.cached(
        "admin", ("users", q, page), lambda: state.api().admin_users(q or None, page, PAGE_SIZE), ttl=60
    )
    if result.total == 0:
        st.info("No user matches this search.")
        return
    widths = [2.2, 1.1, 1.6, 0.8, 1.3, 1.1]
    with st.container(border=True):
        head = st.columns(widths)
        for col, name in zip(head, ("User", "Role", "Created", "Scans"), strict=False):
            col.markdown(f"**{name}**")
        for user in result.items:
            user_row(user, me, widths)
    pager(result)


def user_row(user: User, me: str, widths: list[float]) -> None:
    row = st.columns(widths, vertical_alignment="center")
    row[0].markdown(user.username + (" (you)" if user.username == me else ""))
    row[1].markdown("Admin" if user.is_admin else "User")
    row[2].markdown(user.created_at.strftime("%Y-%m-%d"))
    row[3].markdown(str(user.scans or 0))
    own = user.username == me
    role = "user" if user.is_admin else "admin"
    if row[4].button(
        "Demote" if user.is_admin else "Promote",
        key=f"admin_role_{user.username}",
        disabled=own,
        icon=":material/arrow_downward:" if user.is_admin else ":material/arrow_upward:",
        help="You cannot change your own role" if own else None,
    ):
        act(
            lambda: state.api().set_role(user.username, role),
            f"{user.username} is now {'an admin' if role == 'admin' else 'a user'}.",
        )
    confirm_key = f"admin_confirm_{user.username}"
    if row[5].button("Delete", key=f"admin_delete_{user.username}", disabled=own, icon=":material/delete:"):
        st.session_state[confirm_key] = True
    components.confirm(
        confirm_key,
        f"Delete the account **{user.username}** with all of its {user.scans or 0} scans? This cannot be undone.",
        lambda: act(lambda: state.api().delete_user(user.username), f"Deleted the account {user.username}."),
    )


def act(call: Callable[[], object], done: str) -> None:
    """Run an admin action; report its outcome and refresh the admin data."""
    try:
        call()
    except ApiError as exc:
        state.set_note(state.reason(exc), "error")
    else:
        state.set_note(done)
    state.invalidate("admin")
    st.rerun()


def pager(result: UserPage) -> None:
    page, pages = result.page, max(result.pages, 1)
    prev, label, nxt, _, jump, go = st.columns([1.3, 2.2, 1.3, 1.1, 1.3, 0.7], vertical_alignment="bottom")
    prev.button(
        "Previous",
        disabled=page <= 1,
        key="admin_prev",
        icon=":material/chevron_left:",
        on_click=move,
        args=(page - 1,),
    )
    label.markdown(f"Page **{page}** of **{pages}** · {result.total} users")
    nxt.button(
        "Next",
        disabled=page >= pages,
        key="admin_next",
        icon=":material/chevron_right:",
        on_click=move,
        args=(page + 1,),
    )
    jump_key = f"admin_jump_{page}"
    jump.number_input("Go to page", min_value=1, max_value=pages, value=page, step=1, key=jump_key)
    go.button("Go", key="admin_go", disabled=pages <= 1, on_click=lambda: move(int(st.session_state[jump_key])))


def move(page: int) -> None:
    """Show ``page`` (a button callback)."""
    st.session_state[PAGE] = page
