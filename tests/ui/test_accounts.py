"""Sign in, create an account (recovery key shown once), reset a password, sign out, session expiry."""

from __future__ import annotations

import logging
import time

import pytest
from streamlit.testing.v1 import AppTest

from braintumor.ui import state

PASSWORD = "correct-horse-battery"


def submit(at: AppTest, form: str, **fields: str) -> AppTest:
    """Types each of ``fields`` into the form's ``{form}_{field}`` box, then presses ``{form}_submit``."""
    for field, value in fields.items():
        at.text_input(key=f"{form}_{field}").input(value)
    at.button(key=f"{form}_submit").click()
    return at.run()


def continue_after_storing_the_key(at: AppTest) -> AppTest:
    """Ticks "I have stored my recovery key safely", then presses "Continue to sign in" (disabled until then)."""
    at.checkbox(key="key_stored").check()
    at.run()
    at.button(key="key_continue").click()
    return at.run()


def test_signed_out_session_sees_sign_in_and_about_only(ui) -> None:
    at = ui.app()
    ui.ok(at)
    assert ui.pages(at) == ["Sign in", "About"]
    assert [t.label for t in at.tabs] == ["Sign in", "Create account", "Forgot password"]
    assert "Brain MRI Tumor Detection" in ui.texts(at)


def test_register_shows_the_recovery_key_once_then_signs_in(ui) -> None:
    at = ui.app()
    name = f"new_{time.monotonic_ns() % 10**8}"
    submit(at, "register", username=name, password=PASSWORD, repeat=PASSWORD)
    ui.ok(at)
    assert "Save your recovery key now" in ui.texts(at)
    key = at.code[0].value
    assert len(key.split("-")) == 8, key
    assert at.button(key="key_continue").disabled  # not before the user says the key is stored
    continue_after_storing_the_key(at)
    assert not at.code and "Save your recovery key" not in ui.texts(at)  # shown once: gone now
    assert at.text_input(key="login_username").value == name  # prefilled
    at.text_input(key="login_password").input(PASSWORD)
    at.button(key="login_submit").click()
    at.run()
    ui.ok(at)
    assert at.session_state["nav"] == "Analyze"
    assert f"Signed in as **{name}**" in "\n".join(m.value for m in at.sidebar.markdown)


@pytest.mark.parametrize(
    ("username", "password", "repeat", "message"),
    [
        ("ab", PASSWORD, PASSWORD, "3–32 letters"),
        ("valid_name", PASSWORD, PASSWORD + "x", "The two passwords differ"),
        ("valid_name2", "short", "short", "at least 10 characters"),  # the server's policy, shown as it says
    ],
)
def test_register_refusals_are_readable(ui, username: str, password: str, repeat: str, message: str) -> None:
    at = submit(ui.app(), "register", username=username, password=password, repeat=repeat)
    assert not at.exception
    assert any(message in e for e in ui.errors(at)), ui.errors(at)


def test_taken_username_and_wrong_password(ui, api_server) -> None:
    name = api_server.user()
    at = submit(ui.app(), "register", username=name, password=PASSWORD, repeat=PASSWORD)
    assert ui.errors(at) == ["This username is taken"]
    ui.sign_in(at, name, "not-the-password")
    assert ui.errors(at) == ["Incorrect username or password"]
    assert at.session_state["nav"] == "Sign in"


def test_forgot_password_with_the_recovery_key(ui, api_server) -> None:
    name = f"forgetful_{time.monotonic_ns() % 10**8}"
    with api_server.client() as c:
        key = c.post("/register", json={"username": name, "password": PASSWORD}).json()["recovery_key"]
    new_password = "a-brand-new-passphrase"
    loose = key.lower().replace("-", " ")  # typed loosely: still accepted
    at = submit(ui.app(), "reset", username=name, key=loose, password=new_password, repeat=new_password)
    ui.ok(at)
    assert "Password changed" in ui.texts(at)
    new_key = at.code[0].value
    assert new_key != key
    continue_after_storing_the_key(at)
    ui.sign_in(at, name, new_password)
    ui.ok(at)
    assert at.session_state["nav"] == "Analyze"

    # the spent key is refused
    again = submit(ui.app(), "reset", username=name, key=key, password=new_password + "2", repeat=new_password + "2")
    assert ui.errors(again) == ["Invalid username or recovery key"]


def test_token_lives_in_the_session_only(ui, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    at, name = ui.signed_in()
    ui.go(at, "History")
    auth = at.session_state[state.AUTH]
    assert auth.username == name and len(auth.token) > 20
    assert auth.token not in repr(auth)
    assert not at.query_params
    assert all(auth.token not in r.getMessage() for r in caplog.records)
    assert auth.token not in ui.texts(at)


def test_sign_out_clears_the_session(ui) -> None:
    at, _ = ui.signed_in()
    ui.go(at, "History")
    at.sidebar.button(key="sign_out").click()
    at.run()
    assert state.AUTH not in at.session_state
    assert ui.pages(at) == ["Sign in", "About"]
    assert "You are signed out." in ui.texts(at)
    assert not any(str(k).startswith("history") for k in at.session_state)


def test_revoked_token_returns_to_sign_in_with_a_note(ui, api_server) -> None:
    at, name = ui.signed_in()
    with api_server.client() as c:  # a password change elsewhere revokes this session's token
        r = c.post(
            "/change-password",
            headers=api_server.headers(name),
            json={"current_password": PASSWORD, "new_password": "another-long-passphrase"},
        )
        assert r.status_code == 200
    ui.go(at, "History")
    assert not at.exception
    assert ui.pages(at) == ["Sign in", "About"]
    assert state.EXPIRED_NOTE in ui.texts(at)


def test_expired_token_signs_out_before_calling_the_api(ui) -> None:
    at, _ = ui.signed_in()
    at.session_state[state.AUTH].expires_at = time.time() - 1
    ui.go(at, "Dashboard")
    assert ui.pages(at) == ["Sign in", "About"]
    assert state.EXPIRED_NOTE in ui.texts(at)


def test_unreachable_api_is_a_readable_message(ui, monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("BRAINTUMOR_API_URL", f"http://127.0.0.1:{port}")
    at = ui.app()
    assert "API unreachable" in "\n".join(c.value for c in at.sidebar.caption)
    ui.sign_in(at, "someone", PASSWORD)
    assert not at.exception
    assert ui.errors(at) == [
        f"Cannot reach the analysis server at http://127.0.0.1:{port}: check that it is running (braintumor serve)"
    ]


def test_lockout_warns_first_says_the_wait_once_and_an_admin_can_unlock(ui, api_server) -> None:
    """Issue 14 item 7: a warning before the lock, the wait said once (not "15 minute(s) (retry in 899 s)"), and
    the Admin page shows the lock and clears it."""
    name = api_server.user("locked")
    at = ui.app()
    messages = []
    for _ in range(6):  # BRAINTUMOR_LOGIN_ATTEMPTS defaults to 5
        ui.sign_in(at, name, "not-the-password-1")
        messages.append(" ".join(ui.errors(at)))
    assert "one more failed attempt locks sign-in" in messages[3] and "locks" not in messages[2]
    assert "is now locked for 15 minutes" in messages[4]
    last = messages[5]
    assert "try again in about 15 minutes" in last and last.count("try again") == 1
    assert "minute(s)" not in last and " s)" not in last and "retry in" not in last
    ui.sign_in(at, name, PASSWORD)
    assert "try again in" in " ".join(ui.errors(at))  # the right password waits for the lock too

    admin, _ = ui.signed_in(api_server.admin, api_server.admin_password)
    ui.go(admin, "Admin")
    ui.ok(admin)
    assert name in ui.texts(admin)
    unlock = [b for b in admin.button if b.key and b.key.startswith("admin_unlock_") and b.key.endswith(name)]
    assert len(unlock) == 1
    unlock[0].click()
    admin.run()
    assert f"Cleared the sign-in locks of {name}." in ui.texts(admin)
    at = ui.sign_in(ui.app(), name, PASSWORD)
    ui.ok(at)
    assert at.session_state["nav"] == "Analyze"
