"""History: search and filter your scans and studies, page through them, delete several at once, open one in the
viewer (a scan) or on the study page (a study, marked as such in the list).

Why a detail view instead of a pop-up: opening a scan replaces the list (with a way back that keeps the
filters and the page), so the viewer is always on screen, at full width, wherever the row was.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import streamlit as st

from braintumor.ui import components, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import Scan, ScanPage
from braintumor.ui.views import study as study_page

PAGE = "history_page"
OPEN = "history_open"
OPEN_STUDY = "history_open_study"
CONFIRM = "history_confirm"
FILTERS = "history_filters"
OUTCOME_FILTER = {"All outcomes": None, "Tumor": "tumor", "Refer": "refer", "No tumor": "no_tumor"}
KIND_FILTER = {"All kinds": None, "Scans": "scan", "Studies": "study"}
PAGE_SIZES = (10, 20, 50, 100)


def render() -> None:
    opened_study = st.session_state.get(OPEN_STUDY)
    if isinstance(opened_study, str):
        study_detail(opened_study)
        return
    opened = st.session_state.get(OPEN)
    if isinstance(opened, str):
        detail(opened)
        return
    st.title("History")
    filters = filter_bar()
    if st.session_state.get(FILTERS) != filters:  # new filters: back to page 1, nothing selected
        st.session_state[FILTERS] = filters
        st.session_state[PAGE] = 1
        clear_selection()
    size = int(filters["page_size"])
    page = int(st.session_state.get(PAGE, 1))
    if filters["date_from"] and filters["date_to"] and filters["date_from"] > filters["date_to"]:
        st.error("The 'From' date is after the 'To' date.")
        return
    result = fetch(filters, page, size)
    if result.pages and page > result.pages:  # the last page emptied by a delete
        st.session_state[PAGE] = result.pages
        st.rerun()
    if result.total == 0:
        filtered = any(filters[k] for k in ("q", "outcome", "kind", "date_from", "date_to"))
        st.info("No scan matches these filters." if filtered else "No scans yet: analyze one on the Analyze page.")
        return
    first = (page - 1) * size + 1
    st.caption(
        f"{result.total} scan{'s' if result.total != 1 else ''} · showing {first}–{first + len(result.items) - 1}"
    )
    table(result)
    bulk_delete(result)
    pager(result)


def filter_bar() -> dict[str, Any]:
    """Search, outcome, dates and page size; returns the current values."""
    a, k, b, d, e, f = st.columns([1.35, 1.1, 1.55, 1.3, 1.3, 0.9])
    q = a.text_input("Search by filename", key="history_q", placeholder="e.g. Y12 or .dcm")
    kind = k.selectbox("Kind", list(KIND_FILTER), key="history_kind", help="A study is a series scored as one")
    outcome = b.selectbox("Outcome", list(OUTCOME_FILTER), key="history_outcome")
    date_from = d.date_input("From", value=None, key="history_from", format="YYYY-MM-DD", help="First day (UTC)")
    date_to = e.date_input("To", value=None, key="history_to", format="YYYY-MM-DD", help="Last day (UTC)")
    size = f.selectbox("Per page", PAGE_SIZES, index=1, key="history_page_size")
    return {
        "q": q.strip(),
        "outcome": OUTCOME_FILTER[outcome],
        "kind": KIND_FILTER[kind],
        "date_from": date_from if isinstance(date_from, dt.date) else None,
        "date_to": date_to if isinstance(date_to, dt.date) else None,
        "page_size": int(size),
    }


def fetch(filters: dict[str, Any], page: int, size: int) -> ScanPage:
    """One page of the history, reused across reruns for a minute (or until a change)."""
    key = (tuple(sorted(filters.items())), page, size)
    return state.cached(
        "history",
        key,
        lambda: state.api().history(
            page,
            size,
            q=filters["q"] or None,
            outcome=filters["outcome"],
            date_from=filters["date_from"],
            date_to=filters["date_to"],
            kind=filters["kind"],
        ),
        ttl=60,
    )


def row_key(scan_id: str) -> str:
    return f"history_sel_{scan_id}"


def selected(result: ScanPage) -> list[str]:
    return [s.id for s in result.items if st.session_state.get(row_key(s.id))]


def clear_selection() -> None:
    for key in [k for k in st.session_state if str(k).startswith("history_sel_") or k == "history_all"]:
        del st.session_state[key]


def table(result: ScanPage) -> None:
    """The page's scans as rows with a checkbox and an Open button."""
    ids = [s.id for s in result.items]

    def select_all() -> None:
        for scan_id in ids:
            st.session_state[row_key(scan_id)] = bool(st.session_state.get("history_all"))

    widths = [0.35, 2.1, 1.7, 1.1, 1.05, 1.85, 1.35]
    with st.container(border=True):
        head = st.columns(widths, vertical_alignment="center")
        head[0].checkbox(
            "All", key="history_all", on_change=select_all, label_visibility="collapsed", help="Select this page"
        )
        for col, name in zip(
            head[1:], ("File", f"Analysed ({components.zone_name()})", "Result", "P(tumor)", "Model"), strict=False
        ):
            col.markdown(f"**{name}**")
        for scan in result.items:
            row = st.columns(widths, vertical_alignment="center")
            row[0].checkbox("Select", key=row_key(scan.id), label_visibility="collapsed")
            row[1].markdown(name_cell(scan))
            row[2].markdown(components.when(scan.created_at, zone=False))
            row[3].markdown(components.pill(scan.outcome), unsafe_allow_html=True)
            row[4].markdown(components.percent(scan.p_tumor))
            row[5].caption(f"{scan.model_name} v{scan.model_version}")
            if row[6].button("Open", key=f"history_open_{scan.id}", icon=":material/visibility:"):
                st.session_state[OPEN_STUDY if scan.kind == "study" else OPEN] = scan.id
                st.rerun()


def name_cell(scan: Scan) -> str:
    """The row's file name (Markdown-escaped); a study says it is one, so it is not read as a single slice."""
    name = scan.filename.replace("_", "\\_").replace("*", "\\*")
    if scan.kind != "study":
        return name
    count = f" · {scan.slice_count} slices" if scan.slice_count is not None else ""
    return f"{name}  \n:blue-badge[:material/stacks: Study{count}]"


def bulk_delete(result: ScanPage) -> None:
    chosen = selected(result)
    if st.button(
        f"Delete selected ({len(chosen)})", disabled=not chosen, icon=":material/delete:", key="history_delete"
    ):
        st.session_state[CONFIRM] = True

    def delete() -> None:
        try:
            done = state.api().delete_scans(chosen)
        except ApiError as exc:
            st.error(state.reason(exc))
            return
        state.invalidate("history", "dashboard", "history_scan", "reports")
        clear_selection()
        n = len(done.deleted)
        state.set_note(f"Deleted {n} scan{'s' if n != 1 else ''} with their images, heatmaps and reports.")
        st.rerun()

    if chosen:
        components.confirm(
            CONFIRM,
            f"Delete {len(chosen)} scan{'s' if len(chosen) != 1 else ''} permanently? Their images, heatmaps and "
            "reports are removed too; this cannot be undone.",
            delete,
        )


def pager(result: ScanPage) -> None:
    """Previous / next and jump to a page."""
    page, pages = result.page, max(result.pages, 1)
    prev, label, nxt, _, jump, go = st.columns([1.3, 1.5, 1.3, 1.9, 1.3, 0.7], vertical_alignment="bottom")
    if prev.button("Previous", disabled=page <= 1, icon=":material/chevron_left:", key="history_prev"):
        move(page - 1)
    label.markdown(f"Page **{page}** of **{pages}**")
    if nxt.button("Next", disabled=page >= pages, icon=":material/chevron_right:", key="history_next"):
        move(page + 1)
    target = jump.number_input(
        "Go to page", min_value=1, max_value=pages, value=page, step=1, key=f"history_jump_{page}"
    )
    if go.button("Go", key="history_go", disabled=pages <= 1):
        move(int(target))


def move(page: int) -> None:
    clear_selection()
    st.session_state[PAGE] = page
    st.rerun()


def detail(scan_id: str) -> None:
    """One scan in the viewer, with a way back to the list."""
    if st.button("Back to history", icon=":material/arrow_back:", key="history_back"):
        del st.session_state[OPEN]
        st.rerun()
    try:
        scan = state.cached("history_scan", scan_id, lambda: state.api().scan(scan_id))
    except ApiError as exc:
        st.error(f"This scan cannot be shown: {state.reason(exc)}")
        return
    st.title(scan.filename)
    st.caption(f"Analysed {components.when(scan.created_at)} · scan id {scan.id}")
    components.scan_detail(scan, key=f"history_{scan.id}")
    st.divider()
    if st.button("Delete this scan", icon=":material/delete:", key="history_delete_one"):
        st.session_state["history_confirm_one"] = True

    def delete() -> None:
        state.api().delete_scans([scan.id])
        state.invalidate("history", "dashboard", "history_scan", "reports")
        st.session_state.pop(OPEN, None)
        state.set_note(f"Deleted {scan.filename}.")
        st.rerun()

    components.confirm("history_confirm_one", f"Delete {scan.filename} permanently?", delete)


def study_detail(study_id: str) -> None:
    """One study on the study page, with a way back to the list."""

    def close() -> None:
        st.session_state.pop(OPEN_STUDY, None)

    if st.button("Back to history", icon=":material/arrow_back:", key="history_back_study"):
        close()
        st.rerun()
    study_page.page(study_id, key=f"history_study_{study_id}", on_deleted=close)
