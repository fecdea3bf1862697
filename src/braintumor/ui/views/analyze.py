"""Analyze: upload one or several scans (JPEG, PNG, DICOM), one ``/predict`` call each, and read the results.

Why one call per scan: each file gets its own answer or its own readable refusal (not an MRI, unreadable,
too large), and a bad file never sinks the others. The batch's results stay on the page (session state)
until the next batch or "Clear".
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import streamlit as st

from braintumor.imaging.io import sniff_format
from braintumor.ui import components, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import Health, Scan

#: The API's upload cap (the same ``BRAINTUMOR_MAX_UPLOAD_MB`` setting, default 20 MB), so the uploader says it.
DEFAULT_MAX_UPLOAD_MB = 20.0
RESULTS = "analyze_results"
#: Headlines by the refusal ``code`` the API sends with a 4xx: a file that could not be read, one that cannot be a
#: brain MRI slice, and one that may be a genuine MRI but unlike those the model was validated on.
REFUSALS = {
    "unreadable": "Unreadable image",
    "not_mri": "Rejected: not a brain MRI slice",
    "out_of_scope": "Not analysed: outside the images the model was validated on",
}
UPLOADER = "analyze_uploader_round"
SELECTED = "analyze_selected"


@dataclass(frozen=True)
class Outcome:
    """What happened to one uploaded file."""

    filename: str
    scan: Scan | None = None
    title: str = ""
    message: str = ""


def health() -> Health:
    """Server and model status, re-checked at most every 30 s."""
    return state.cached("health", "health", lambda: state.api().health(), ttl=30)


def max_upload_mb() -> int:
    """The upload cap to show, in whole MB (at least 1)."""
    try:
        value = float(os.environ.get("BRAINTUMOR_MAX_UPLOAD_MB") or DEFAULT_MAX_UPLOAD_MB)
    except ValueError:
        value = DEFAULT_MAX_UPLOAD_MB
    return max(1, math.ceil(value))


def refusal(exc: ApiError) -> tuple[str, str]:
    """A headline and the server's reason for a file that was not analysed."""
    text = exc.message
    if exc.status == 415:
        return "Unsupported file", text + ". Upload a JPEG, PNG, BMP, TIFF or DICOM brain MRI slice."
    if exc.status == 413:
        return "File too large", text
    if exc.status == 422 and exc.code in REFUSALS:  # the reason says what was measured
        return REFUSALS[exc.code], text
    if exc.status == 422:
        return "Not analysed", text
    if exc.status == 503:
        return "Analysis unavailable", text
    return "Not analysed", text


def render() -> None:
    st.title("Analyze scans")
    try:
        status = health()
    except ApiError as exc:
        st.error(exc.message)
        return
    if not status.model_loaded:
        st.warning(
            f"Analysis is unavailable: {status.model_reason or 'no model is loaded on the server'}. "
            "History, reports and the dashboard still work.",
            icon=":material/block:",
        )
    else:
        st.caption(
            f"Model **{status.model_name}** v{status.model_version} · one analysis per file · results are saved "
            "to your history. Decision support, not a diagnosis."
        )

    round_ = int(st.session_state.get(UPLOADER, 0))
    files = st.file_uploader(
        "Brain MRI slices",
        accept_multiple_files=True,
        key=f"analyze_uploader_{round_}",
        help="JPEG, PNG, BMP, TIFF or DICOM; the format is detected from the content, so DICOM files without an "
        "extension are fine. DICOM identifiers are removed before storage.",
        disabled=not status.model_loaded,
        max_upload_size=max_upload_mb(),
    )
    left, right, _ = st.columns([1.2, 1, 3])
    go = left.button(
        f"Analyze {len(files)} scan{'s' if len(files) != 1 else ''}" if files else "Analyze",
        type="primary",
        disabled=not files or not status.model_loaded,
        icon=":material/biotech:",
    )
    if right.button("Clear", disabled=not files and not st.session_state.get(RESULTS)):
        st.session_state.pop(RESULTS, None)
        st.session_state[UPLOADER] = round_ + 1
        st.rerun()
    if go and files:
        analyse([(f.name, f.getvalue()) for f in files])
        st.session_state[UPLOADER] = round_ + 1  # an empty uploader: the same files are not analysed twice
        st.rerun()
    outcomes: list[Outcome] = st.session_state.get(RESULTS) or []
    if outcomes:
        show(outcomes)


def analyse(uploads: list[tuple[str, bytes]]) -> None:
    """Send each file to ``/predict`` with a progress bar; keep the outcomes for the page."""
    api = state.api()
    outcomes: list[Outcome] = []
    bar = st.progress(0.0, text="Starting …")
    for i, (name, data) in enumerate(uploads):
        bar.progress(i / len(uploads), text=f"Analyzing {i + 1} of {len(uploads)}: {name}")
        try:
            scan = api.predict(name, data)
        except ApiError as exc:
            if exc.unauthorized:
                raise
            title, message = refusal(exc)
            outcomes.append(Outcome(name, None, title, message))
            continue
        original = scan.files.get("original")
        if original is not None and sniff_format(data[:256]) != "dicom":  # stored as uploaded: no need to fetch it back
            state.put("files", original.id, data)
        outcomes.append(Outcome(name, scan))
    bar.empty()
    state.invalidate("history", "dashboard", "history_scan")
    st.session_state[RESULTS] = outcomes
    st.session_state.pop(SELECTED, None)


def show(outcomes: list[Outcome]) -> None:
    done = [o for o in outcomes if o.scan is not None]
    failed = [o for o in outcomes if o.scan is None]
    st.subheader("Results")
    summary = f"{len(done)} of {len(outcomes)} analysed"
    if failed:
        summary += f" · {len(failed)} not analysed"
    st.caption(summary)
    if len(outcomes) > 1:
        rows = [
            {
                "File": o.filename,
                "Result": components.OUTCOMES[o.scan.outcome][0] if o.scan else o.title,
                "P(tumor)": components.percent(o.scan.p_tumor) if o.scan else "—",
                "Tumor type": (o.scan.tumor_type or "—") if o.scan else "—",
            }
            for o in outcomes
        ]
        st.dataframe(rows, hide_index=True, width="stretch")
    for o in failed:
        if o.title == REFUSALS["out_of_scope"]:  # possibly a genuine MRI: not an error of the user's
            st.warning(f"**{o.filename}** — {o.title}. {o.message}", icon=":material/help:")
        else:
            st.error(f"**{o.filename}** — {o.title}. {o.message}", icon=":material/error:")
    if not done:
        return
    names = [f"{o.filename}" for o in done]
    index = 0
    if len(done) > 1:
        choice = st.selectbox("Show the details of", range(len(done)), format_func=lambda k: names[k], key=SELECTED)
        index = int(choice or 0)
    scan = done[index].scan
    assert scan is not None
    st.divider()
    st.markdown(f"#### {done[index].filename}")
    components.scan_detail(scan, key=f"analyze_{scan.id}")
