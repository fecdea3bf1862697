"""Profile: the account, a password change, and deleting the account with everything in it."""

from __future__ import annotations

import streamlit as st

from braintumor.ui import components, state
from braintumor.ui.client import ApiError


def render() -> None:
    st.title("Profile")
    me = state.cached("profile", "me", lambda: state.api().me(), ttl=60)
    with st.container(border=True):
        a, b, c = st.columns(3)
        a.metric("Username", me.username)
        b.metric("Role", "Administrator" if me.is_admin else "User")
        c.metric("Member since", me.created_at.strftime("%Y-%m-%d"))

    left, right = st.columns(2)
    with left, st.container(border=True):
        change_password()
    with right, st.container(border=True):
        delete_account(me.username)


def change_password() -> None:
    st.subheader("Change password")
    with st.form("change_password", clear_on_submit=True, border=False):
        current = st.text_input("Current password", type="password", autocomplete="current-password", key="pw_current")
        new = st.text_input(
            "New password", type="password", autocomplete="new-password", help="At least 10 characters", key="pw_new"
        )
        repeat = st.text_input("Repeat the new password", type="password", autocomplete="new-password", key="pw_repeat")
        submitted = st.form_submit_button("Change password", type="primary", key="pw_submit")
    if not components.form_ready(
        submitted,
        (bool(current and new), "Enter your current and your new password."),
        (new == repeat, "The two new passwords differ."),
    ):
        return
    try:
        token = state.api().change_password(current, new)
    except ApiError as exc:
        st.error(state.reason(exc))
        return
    state.replace_token(token)
    st.success("Password changed. Your other sessions were signed out; this one continues.")


def delete_account(username: str) -> None:
    st.subheader("Delete account")
    st.caption("Deletes your account with all of your scans, images, heatmaps and reports. This cannot be undone.")
    with st.form("delete_account", border=False):
        password = st.text_input("Password", type="password", autocomplete="current-password", key="delete_password")
        sure = st.checkbox(
            f"I understand that **{username}** and all of its scans will be deleted permanently", key="delete_sure"
        )
        submitted = st.form_submit_button("Delete my account", icon=":material/delete_forever:", key="delete_submit")
    if not components.form_ready(
        submitted, (bool(sure and password), "Enter your password and tick the box to confirm.")
    ):
        return
    try:
        state.api().delete_account(password)
    except ApiError as exc:
        st.error(state.reason(exc))
        return
    state.sign_out()
    state.set_note("Your account and all of its scans were deleted.", "info")
    st.rerun()
