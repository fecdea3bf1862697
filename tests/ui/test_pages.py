"""Dashboard, Admin, Profile and About against the real API."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx
from streamlit.testing.v1 import AppTest

from braintumor.ui import state

PASSWORD = "correct-horse-battery"


def _scans(api_server: Any, mri: Callable[[str], tuple[str, bytes]], name: str, n: int) -> list[dict[str, Any]]:
    headers = api_server.headers(name)
    images = [mri("yes/Y1.jpg")[1], mri("no/1 no.jpeg")[1]]
    return [api_server.upload(headers, f"s{i}.jpg", images[i % 2]) for i in range(n)]


def charts(at: AppTest) -> int:
    return len(at.get("vega_lite_chart"))


def test_dashboard_numbers_and_plots(ui, api_server, mri) -> None:
    name = api_server.user()
    made = _scans(api_server, mri, name, 4)
    at, _ = ui.signed_in(name)
    ui.go(at, "Dashboard")
    ui.ok(at)
    metrics = {m.label: m.value for m in at.metric}
    count = {o: sum(s["outcome"] == o for s in made) for o in ("tumor", "refer", "no_tumor")}
    mean = sum(float(s["p_tumor"]) for s in made) / 4
    assert metrics["Scans"] == "4"
    # one outcome per scan: the three counts add up to the scans (issue 14 item 1)
    assert (metrics["Tumor"], metrics["Refer for review"], metrics["No tumor"]) == tuple(map(str, count.values()))
    assert "With tumor" not in metrics
    assert f"Mean calibrated P(tumor) {100 * mean:.1f}%." in ui.texts(at)
    assert charts(at) == 4  # outcome mix, histogram, per day, per model
    at.segmented_control(key="dashboard_period").set_value("All time")
    at.run()
    ui.ok(at)
    assert {m.label: m.value for m in at.metric}["Scans"] == "4"


def test_dashboard_without_scans(ui) -> None:
    at, _ = ui.signed_in()
    ui.go(at, "Dashboard")
    assert "No scans in this period yet" in ui.texts(at)


def test_admin_is_for_admins_only(ui, api_server) -> None:
    at, _ = ui.signed_in()
    assert "Admin" not in ui.pages(at)
    at, _ = ui.signed_in(api_server.admin, api_server.admin_password)
    assert ui.pages(at) == ["Analyze", "History", "Dashboard", "Admin", "Profile", "About"]


def test_admin_stats_search_roles_and_delete(ui, api_server, mri) -> None:
    busy = api_server.user("busy")
    _scans(api_server, mri, busy, 2)
    at, _ = ui.signed_in(api_server.admin, api_server.admin_password)
    ui.go(at, "Admin")
    ui.ok(at)
    metrics = {m.label: m.value for m in at.metric}
    with httpx.Client(base_url=api_server.url) as c:
        stats = c.get("/admin/stats", headers=api_server.headers(api_server.admin)).json()
    assert metrics["Users"] == str(stats["users"]) and metrics["Scans"] == str(stats["scans"])
    assert charts(at) == 3  # top users, result mix, per day
    per_user = at.dataframe[0].value
    assert busy in list(per_user["User"])

    at.text_input(key="admin_q").input(busy)
    at.run()
    assert f"admin_role_{busy}" in [b.key for b in at.button]
    at.button(key=f"admin_role_{busy}").click()
    at.run()
    assert f"{busy} is now an admin." in ui.texts(at)
    assert at.button(key=f"admin_role_{busy}").label == "Demote"
    at.button(key=f"admin_role_{busy}").click()
    at.run()
    assert f"{busy} is now a user." in ui.texts(at)

    at.button(key=f"admin_delete_{busy}").click()
    at.run()
    assert f"Delete the account **{busy}** with all of its 2 scans?" in ui.texts(at)
    at.button(key=f"admin_confirm_{busy}_yes").click()
    at.run()
    ui.ok(at)
    assert f"Deleted the account {busy}." in ui.texts(at)
    assert "No user matches this search." in ui.texts(at)


def test_admin_cannot_change_or_delete_themselves(ui, api_server) -> None:
    at, _ = ui.signed_in(api_server.admin, api_server.admin_password)
    ui.go(at, "Admin")
    at.text_input(key="admin_q").input(api_server.admin)
    at.run()
    assert at.button(key=f"admin_role_{api_server.admin}").disabled
    assert at.button(key=f"admin_delete_{api_server.admin}").disabled


def test_admin_user_pagination(ui, api_server) -> None:
    for _ in range(11):
        api_server.user("page")
    at, _ = ui.signed_in(api_server.admin, api_server.admin_password)
    ui.go(at, "Admin")
    at.text_input(key="admin_q").input("page_")
    at.run()
    assert "Page **1** of **2**" in ui.texts(at)
    at.button(key="admin_next").click()
    at.run()
    assert "Page **2** of **2**" in ui.texts(at)
    at.number_input(key="admin_jump_2").set_value(1)
    at.button(key="admin_go").click()
    at.run()
    assert "Page **1** of **2**" in ui.texts(at)


def test_profile_change_password(ui, api_server) -> None:
    at, name = ui.signed_in()
    ui.go(at, "Profile")
    ui.ok(at)
    assert {m.label: m.value for m in at.metric}["Username"] == name
    at.text_input(key="pw_current").input("wrong-password-here")
    at.text_input(key="pw_new").input("another-long-passphrase")
    at.text_input(key="pw_repeat").input("another-long-passphrase")
    at.button(key="pw_submit").click()
    at.run()
    assert ui.errors(at) == ["The current password is not correct"]
    old_token = at.session_state[state.AUTH].token
    at.text_input(key="pw_current").input(PASSWORD)
    at.text_input(key="pw_new").input("another-long-passphrase")
    at.text_input(key="pw_repeat").input("another-long-passphrase")
    at.button(key="pw_submit").click()
    at.run()
    assert "Password changed" in ui.texts(at)
    assert at.session_state[state.AUTH].token != old_token
    ui.go(at, "History")  # the session goes on with the new token
    ui.ok(at)
    assert ui.pages(at)[0] == "Analyze"
    with httpx.Client(base_url=api_server.url) as c:
        assert c.post("/token", data={"username": name, "password": PASSWORD}).status_code == 401


def test_profile_delete_account(ui, api_server) -> None:
    at, name = ui.signed_in()
    ui.go(at, "Profile")
    at.text_input(key="delete_password").input(PASSWORD)
    at.button(key="delete_submit").click()
    at.run()
    assert ui.errors(at) == ["Enter your password and tick the box to confirm."]
    at.text_input(key="delete_password").input(PASSWORD)
    at.checkbox(key="delete_sure").check()
    at.button(key="delete_submit").click()
    at.run()
    assert not at.exception
    assert ui.pages(at) == ["Sign in", "About"]
    assert "Your account and all of its scans were deleted." in ui.texts(at)
    with httpx.Client(base_url=api_server.url) as c:
        assert c.post("/token", data={"username": name, "password": PASSWORD}).status_code == 401


def test_about_shows_the_model_card(ui, api_server) -> None:
    at = ui.app()
    ui.go(at, "About")
    ui.ok(at)
    with httpx.Client(base_url=api_server.url) as c:
        card = c.get("/health").json()["model"]["card"]
    page = ui.texts(at)
    assert f"Name **{card['name']}**" in page
    assert "Intended use." in page and "Not a medical device" in page
    for member in card["members"]:
        assert f"- **{member['name']}**: {member['arch']}, {member['input_size']} px input" in page
