"""From PACS: find a study on the hospital's PACS and analyse it as a study, without downloading any file.

Why a page of its own: the images are already in the PACS, so the clinician searches for the patient there (by
id, name, study date, modality) instead of exporting a folder to upload. "Analyse" asks the API to retrieve the
study and score it exactly like an uploaded one (``POST /pacs/studies/{uid}/analyze``); the result opens on the
study page and is in the history. The page is offered only when the API says the site configured a PACS
(:func:`configured`); the PACS's address and account are the server's, never the browser's.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import streamlit as st

from braintumor.ui import state
from braintumor.ui.client import ApiError
from braintumor.ui.records import PacsStudy, PacsStudyPage
from braintumor.ui.views import study as study_page

FILTERS = "pacs_filters"
PAGE = "pacs_page"
OPEN = "pacs_open"
ERROR = "pacs_error"
PAGE_SIZE = 20
MODALITIES = {"MR": "MR", "Any": None}


def configured() -> bool:
    """Whether the API has a PACS configured (asked at most once a minute; False when it cannot be asked)."""
    if state.current_auth() is None:
        return False
    try:
        return bool(state.cached("pacs", "configured", lambda: state.api().pacs_configured(), ttl=60))
    except ApiError:
        return False


def render() -> None:
    opened = st.session_state.get(OPEN)
    if isinstance(opened, str):
        if st.button("Back to the PACS search", icon=":material/arrow_back:", key="pacs_back"):
            close()
            st.rerun()
        study_page.page(opened, key="pacs_study", on_deleted=close)
        return
    st.title("From PACS")
    st.caption("Find a study on the hospital's PACS and analyse it slice by slice. Decision support, not a diagnosis.")
    filters = search_form()
    if filters is None:
        return
    if st.session_state.get(FILTERS) != filters:
        st.session_state[FILTERS] = filters
        st.session_state[PAGE] = 1
    page = int(st.session_state.get(PAGE, 1))
    error = st.session_state.pop(ERROR, None)
    if isinstance(error, str):
        st.error(error, icon=":material/error:")
    result = search(filters, page)
    if not result.items:
        st.info("No study on the PACS matches this search." if page == 1 else "No more studies.")
    else:
        first = (page - 1) * PAGE_SIZE + 1
        more = " (more on the next page)" if result.more else ""
        st.caption(f"Studies {first}–{first + len(result.items) - 1}{more}")
        table(result)
    pager(result)


def search_form() -> dict[str, Any] | None:
    """Patient id, name, study dates and modality; returns the filters, or None while a date range is reversed."""
    with st.form("pacs_search", border=True):
        a, b, c, d, e = st.columns([1.3, 1.6, 1.1, 1.1, 0.9])
        patient_id = a.text_input("Patient ID", key="pacs_patient_id")
        name = b.text_input("Patient name", key="pacs_patient_name", placeholder="e.g. Doe* (* matches anything)")
        first = c.date_input("From", value=None, key="pacs_from", format="YYYY-MM-DD", help="First study day")
        last = d.date_input("To", value=None, key="pacs_to", format="YYYY-MM-DD", help="Last study day")
        modality = e.selectbox("Modality", list(MODALITIES), key="pacs_modality")
        st.form_submit_button("Search", icon=":material/search:", type="primary")
    first = first if isinstance(first, dt.date) else None
    last = last if isinstance(last, dt.date) else None
    if first and last and first > last:
        st.error("The 'From' date is after the 'To' date.")
        return None
    return {
        "patient_id": patient_id.strip() or None,
        "patient_name": name.strip() or None,
        "study_date": study_dates(first, last),
        "modality": MODALITIES[modality],
    }


def study_dates(first: dt.date | None, last: dt.date | None) -> str | None:
    """A DICOM date or date range (``YYYYMMDD``, ``YYYYMMDD-``, ``-YYYYMMDD``, ``YYYYMMDD-YYYYMMDD``).

    >>> study_dates(dt.date(2024, 2, 1), None), study_dates(None, None)
    ('20240201-', None)
    """
    if first is None and last is None:
        return None
    if first == last:
        return f"{first:%Y%m%d}"
    return f"{first:%Y%m%d}-" if last is None else f"{first:%Y%m%d}-{last:%Y%m%d}" if first else f"-{last:%Y%m%d}"


def search(filters: dict[str, Any], page: int) -> PacsStudyPage:
    """One page of matching studies, reused across reruns for a minute."""
    key = (tuple(sorted(filters.items())), page)
    return state.cached("pacs", key, lambda: state.api().pacs_studies(page, PAGE_SIZE, **filters), ttl=60)


def table(result: PacsStudyPage) -> None:
    """The studies as rows with an Analyse button each."""
    widths = [1.7, 1.2, 1.0, 1.0, 2.0, 0.9, 1.1]
    with st.container(border=True):
        head = st.columns(widths)
        for col, title in zip(head, ("Patient", "Patient ID", "Date", "Accession", "Description", "Images", ""),
                              strict=True):  # fmt: skip
            col.markdown(f"**{title}**" if title else "")
        for item in result.items:
            row = st.columns(widths, vertical_alignment="center")
            row[0].markdown(_text(item.patient_name.replace("^", " ")) or "–")
            row[1].markdown(_text(item.patient_id) or "–")
            row[2].markdown(_date(item.study_date))
            row[3].markdown(_text(item.accession_number) or "–")
            row[4].markdown(_text(item.description) or "–")
            row[5].markdown(_images(item))
            if row[6].button("Analyse", key=f"pacs_analyze_{item.study_uid}", icon=":material/biotech:",
                             help="Retrieve this study from the PACS and score it slice by slice"):  # fmt: skip
                analyse(item)


def analyse(item: PacsStudy) -> None:
    """Ask the API to retrieve and score the study; open it, or keep the server's reason."""
    with st.spinner("Retrieving the study from the PACS and scoring it slice by slice …"):
        try:
            study = state.api().analyze_pacs_study(item.study_uid)
        except ApiError as exc:
            st.session_state[ERROR] = f"The study could not be analysed: {state.reason(exc)}"
            st.rerun()
    state.put("studies", study.id, study)
    state.invalidate("history", "dashboard")
    st.session_state[OPEN] = study.id
    st.rerun()


def pager(result: PacsStudyPage) -> None:
    left, _, right = st.columns([1, 4, 1])
    if result.page > 1 and left.button("Previous", icon=":material/chevron_left:", key="pacs_prev"):
        st.session_state[PAGE] = result.page - 1
        st.rerun()
    if result.more and right.button("Next", icon=":material/chevron_right:", key="pacs_next"):
        st.session_state[PAGE] = result.page + 1
        st.rerun()


def close() -> None:
    st.session_state.pop(OPEN, None)


def _text(value: str) -> str:
    """Plain text for markdown: what the PACS sends is shown, never interpreted."""
    return "".join(f"\\{ch}" if ch in "\\`*_{}[]()#+-.!|<>~$" else ch for ch in value)


def _date(value: str) -> str:
    try:
        return f"{dt.datetime.strptime(value, '%Y%m%d').date():%Y-%m-%d}"
    except ValueError:
        return _text(value) or "–"


def _images(item: PacsStudy) -> str:
    modalities = "/".join(item.modalities) or "?"
    return f"{modalities} · {item.instances}" if item.instances is not None else modalities
