"""Sign in, create an account, or reset a forgotten password with the recovery key.

Why the recovery-key panel: the key is the only way back into an account without an administrator, and the
server shows it once; so the UI shows it alone, with a copy button and a warning, and moves on only once the
user says it is stored.
"""

from __future__ import annotations

import re

import streamlit as st

from braintumor.ui import components, state
from braintumor.ui.client import ApiError

USERNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{2,31}$")
KEY_PANEL = "_recovery_key"
PREFILL = "_login_prefill"


def render() -> None:
    """The signed-out landing page."""
    _, middle, _ = st.columns([1, 2, 1])
    with middle:
        st.title(":material/neurology: Brain MRI Tumor Detection")
        st.caption("Decision support for clinicians: every result must be reviewed by a qualified clinician.")
        panel = st.session_state.get(KEY_PANEL)
        if isinstance(panel, tuple):
            recovery_key_panel(*panel)
            return
        sign_in_tab, register_tab, forgot_tab = st.tabs(["Sign in", "Create account", "Forgot password"])
        with sign_in_tab:
            sign_in_form()
        with register_tab:
            register_form()
        with forgot_tab:
            reset_form()


def sign_in_form() -> None:
    with st.form("sign_in", border=False):
        username = st.text_input(
            "Username", value=st.session_state.get(PREFILL, ""), autocomplete="username", key="login_username"
        )
        password = st.text_input("Password", type="password", autocomplete="current-password", key="login_password")
        submitted = st.form_submit_button("Sign in", type="primary", width="stretch", key="login_submit")
    if not components.form_ready(submitted, (bool(username.strip() and password), "Enter your username and password.")):
        return
    api = state.api()
    try:
        token = api.login(username.strip(), password)
        user = api.with_token(token.access_token).me()
    except ApiError as exc:
        st.error(exc.message)
        return
    state.sign_in(token, user)
    state.put("profile", "me", user)
    state.go("Analyze")
    st.rerun()


def register_form() -> None:
    with st.form("register", border=False):
        username = st.text_input(
            "Username", help="3–32 letters, digits, '.', '_' or '-'", autocomplete="username", key="register_username"
        )
        password = st.text_input(
            "Password",
            type="password",
            help="At least 10 characters; a passphrase is best. It must not contain the username.",
            autocomplete="new-password",
            key="register_password",
        )
        repeat = st.text_input(
            "Repeat the password", type="password", autocomplete="new-password", key="register_repeat"
        )
        submitted = st.form_submit_button("Create account", type="primary", width="stretch", key="register_submit")
    name = username.strip()
    if not components.form_ready(
        submitted,
        (
            bool(USERNAME.match(name)),
            "The username must be 3–32 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        ),
        (password == repeat, "The two passwords differ."),
    ):
        return
    try:
        user, key = state.api().register(name, password)
    except ApiError as exc:
        st.error(exc.message)
        return
    st.session_state[KEY_PANEL] = (user.username, key, "Account created.")
    st.rerun()


def reset_form() -> None:
    st.caption("Use the recovery key you were shown when you created the account.")
    with st.form("reset", border=False):
        username = st.text_input("Username", key="reset_username", autocomplete="username")
        key = st.text_input("Recovery key", key="reset_key", help="Like ABCD-EFGH-…; case and dashes do not matter")
        password = st.text_input("New password", type="password", key="reset_password", autocomplete="new-password")
        repeat = st.text_input(
            "Repeat the new password", type="password", key="reset_repeat", autocomplete="new-password"
        )
        submitted = st.form_submit_button("Reset password", type="primary", width="stretch", key="reset_submit")
    if not components.form_ready(
        submitted,
        (bool(username.strip() and key.strip()), "Enter your username and your recovery key."),
        (password == repeat, "The two passwords differ."),
    ):
        return
    try:
        new_key = state.api().reset_password(username.strip(), key.strip(), password)
    except ApiError as exc:
        st.error(exc.message)
        return
    st.session_state[KEY_PANEL] = (
        username.strip().lower(),
        new_key,
        "Password changed, and other sessions were signed out. The recovery key you used no longer works.",
    )
    st.rerun()


def recovery_key_panel(username: str, key: str, headline: str) -> None:
    """Show a recovery key once, then forget it."""
    st.success(headline)
    st.warning(
        "**Save your recovery key now.** It is shown only this once and is the only way to reset a forgotten "
        "password. Store it in a password manager or another safe place; do not share it.",
        icon=":material/key:",
    )
    # Streamlit shows a code block's copy button only on hover; the instruction below needs it always there.
    st.markdown(
        "<style>.st-key-recovery_key [data-testid='stCode'] button {opacity: 1 !important; "
        "visibility: visible !important;}</style>",
        unsafe_allow_html=True,
    )
    with st.container(key="recovery_key"):
        st.code(key, language=None)
    st.caption("Use the copy button at the right of the key.")
    stored = st.checkbox("I have stored my recovery key safely", key="key_stored")
    if st.button("Continue to sign in", type="primary", disabled=not stored, width="stretch", key="key_continue"):
        del st.session_state[KEY_PANEL]
        st.session_state.pop("key_stored", None)
        st.session_state[PREFILL] = username
        st.rerun()
