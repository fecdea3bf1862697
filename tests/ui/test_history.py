"""History: search, filters, pagination with jump-to-page, bulk delete with confirmation, the viewer, and
no refetch on reruns."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import httpx
import pytest
from streamlit.testing.v1 import AppTest

from braintumor.ui import state
from braintumor.ui.records import ScanPage
from braintumor.ui.views import history


@pytest.fixture
def with_scans(api_server, mri: Callable[[str], tuple[str, bytes]]) -> Callable[[int], str]:
    """``with_scans(n)`` -> a new user with ``n`` scans (``scan-00.jpg`` …, alternating real tumour / healthy)."""

    def make(n: int) -> str:
        name = api_server.user()
        headers = api_server.headers(name)
        images = [mri("yes/Y1.jpg")[1], mri("no/1 no.jpeg")[1]]
        for i in range(n):
            api_server.upload(headers, f"scan-{i:02d}.jpg", images[i % 2])
        return name

    return make


@pytest.fixture
def on_history(ui, with_scans: Callable[[int], str]) -> Callable[[int], tuple[AppTest, str]]:
    """``on_history(n)`` -> a session of a new user with ``n`` scans, signed in and on the History page, and the
    user's name."""

    def open_page(n: int) -> tuple[AppTest, str]:
        at, name = ui.signed_in(with_scans(n))
        ui.go(at, "History")
        return at, name

    return open_page


def rows(at: AppTest) -> list[str]:
    """The ids of the scans listed on the page, in order (from their Open buttons)."""
    return [b.key.removeprefix("history_open_") for b in at.button if (b.key or "").startswith("history_open_")]


def current(at: AppTest) -> ScanPage:
    """The page of the history the app is showing (from its per-session cache)."""
    filters = at.session_state[history.FILTERS]
    key = (tuple(sorted(filters.items())), at.session_state[history.PAGE], filters["page_size"])
    return at.session_state[state.CACHE]["history"][key][1]


def listed(at: AppTest) -> list[str]:
    return [s.filename for s in current(at).items]


def open_row(at: AppTest, index: int) -> str:
    """Opens the ``index``-th listed scan in the viewer; returns its id."""
    target = rows(at)[index]
    at.button(key=f"history_open_{target}").click()
    at.run()
    return target


def test_search_filters_and_pagination(ui, on_history) -> None:
    at, _ = on_history(12)
    ui.ok(at)
    assert "12 scans · showing 1–12" in ui.texts(at)
    assert len(rows(at)) == 12

    at.selectbox(key="history_page_size").set_value(10)
    at.run()
    assert "showing 1–10" in ui.texts(at) and "Page **1** of **2**" in ui.texts(at)
    assert listed(at)[0] == "scan-11.jpg"  # newest first
    at.button(key="history_next").click()
    at.run()
    assert listed(at) == ["scan-01.jpg", "scan-00.jpg"]
    at.button(key="history_prev").click()
    at.run()
    at.number_input(key="history_jump_1").set_value(2)
    at.button(key="history_go").click()
    at.run()
    assert at.session_state[history.PAGE] == 2 and "showing 11–12" in ui.texts(at)

    at.text_input(key="history_q").input("scan-0")
    at.run()
    assert at.session_state[history.PAGE] == 1  # new filters start at page 1
    assert "10 scans" in ui.texts(at)
    at.text_input(key="history_q").input("")
    at.run()
    first = rows(at)
    scans = {s.id: s for s in current(at).items}
    outcome = scans[first[0]].outcome
    names = {"tumor": "Tumor", "refer": "Refer", "no_tumor": "No tumor"}
    at.selectbox(key="history_outcome").set_value(names[outcome])
    at.run()
    assert current(at).items and all(s.outcome == outcome for s in current(at).items)
    assert [o for o in at.selectbox(key="history_outcome").options] == ["All outcomes", *names.values()]
    at.selectbox(key="history_outcome").set_value("All outcomes")
    tomorrow = dt.datetime.now(dt.UTC).date() + dt.timedelta(days=1)
    at.date_input(key="history_from").set_value(tomorrow)
    at.run()
    assert "No scan matches these filters." in ui.texts(at)
    at.date_input(key="history_to").set_value(tomorrow - dt.timedelta(days=3))
    at.run()
    assert "The 'From' date is after the 'To' date." in ui.errors(at)


def test_bulk_delete_asks_first(ui, on_history, api_server) -> None:
    at, name = on_history(4)
    ids = rows(at)
    assert at.button(key="history_delete").disabled
    at.checkbox(key=f"history_sel_{ids[0]}").check()
    at.checkbox(key=f"history_sel_{ids[1]}").check()
    at.run()
    assert at.button(key="history_delete").label == "Delete selected (2)"
    at.button(key="history_delete").click()
    at.run()
    assert "Delete 2 scans permanently?" in ui.texts(at)
    at.button(key=f"{history.CONFIRM}_no").click()  # cancel: nothing deleted
    at.run()
    assert len(rows(at)) == 4
    at.button(key="history_delete").click()
    at.run()
    at.button(key=f"{history.CONFIRM}_yes").click()
    at.run()
    ui.ok(at)
    assert "Deleted 2 scans" in ui.texts(at)
    assert rows(at) == ids[2:]
    with httpx.Client(base_url=api_server.url) as c:
        assert c.get("/history", headers=api_server.headers(name)).json()["total"] == 2


def test_select_all_on_the_page(on_history) -> None:
    at, _ = on_history(3)
    at.checkbox(key="history_all").check()
    at.run()
    assert at.button(key="history_delete").label == "Delete selected (3)"


def test_viewer_shows_original_heatmap_and_report(ui, on_history) -> None:
    at, _ = on_history(2)
    target = open_row(at, 1)
    ui.ok(at)
    assert at.title[0].value == "scan-00.jpg"
    assert len(at.image) >= 2
    assert at.download_button[0].label == "Download PDF report"
    at.slider(key=f"history_{target}_zoom").set_value(3.0)
    at.run()
    ui.ok(at)
    at.button(key="history_back").click()
    at.run()
    assert len(rows(at)) == 2


def test_delete_from_the_viewer(ui, on_history) -> None:
    at, _ = on_history(2)
    target = open_row(at, 0)
    at.button(key="history_delete_one").click()
    at.run()
    at.button(key="history_confirm_one_yes").click()
    at.run()
    ui.ok(at)
    assert "Deleted scan-01.jpg." in ui.texts(at)
    assert target not in rows(at) and len(rows(at)) == 1


def test_reruns_do_not_refetch(ui, with_scans, requests_made: list[str]) -> None:
    at, _ = ui.signed_in(with_scans(2))
    seen = requests_made
    seen.clear()
    ui.go(at, "History")
    ids = rows(at)
    for _ in range(3):  # ticking boxes reruns the script
        at.checkbox(key=f"history_sel_{ids[0]}").check()
        at.run()
        at.checkbox(key=f"history_sel_{ids[0]}").uncheck()
        at.run()
    ui.go(at, "Dashboard")
    ui.go(at, "History")
    ui.go(at, "Dashboard")
    # one page of the list, one stats call for the dashboard (never paging through the history)
    assert (seen.count("GET /history"), seen.count("GET /history/stats")) == (1, 1), seen


def test_times_are_shown_in_the_browsers_time_zone(ui, with_scans) -> None:
    import zoneinfo

    name = with_scans(1)
    at = ui.app()
    at.context = {"timezone": "Asia/Tokyo"}
    ui.sign_in(at, name)
    ui.go(at, "History")
    scan = current(at).items[0]
    tokyo = scan.created_at.astimezone(zoneinfo.ZoneInfo("Asia/Tokyo"))
    page = ui.texts(at)
    assert "**Analysed (JST)**" in page
    assert tokyo.strftime("%Y-%m-%d %H:%M") in page
