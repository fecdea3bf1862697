"""Analyze: upload one or several scans (JPEG, PNG, DICOM), one ``/predict`` call each, and read the results; or,
in the "Study" mode, one whole study (a folder's DICOM files, one zip of them, or one NIfTI volume) in one
``/studies`` call, opening the study page.

Why one call per scan: each file gets its own answer or its own readable refusal (not an MRI, unreadable,
too large), and a bad file never sinks the others. The batch's results stay on the page (session state)
until the next batch or "Clear". A study is the opposite: its files are one answer (the study rule over its
slices), so they go together, and a refusal (413 past the caps, 422 not one study) is the server's reason as given.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass

import streamlit as st

from braintumor.imaging.io import sniff_format
from braintumor.ui import components, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import Health, Scan
from braintumor.ui.views import study as study_page

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
#: The API's cap on a study upload (``BRAINTUMOR_MAX_STUDY_MB``, default 512 MB).
DEFAULT_MAX_STUDY_MB = 512.0
MODE = "analyze_mode"
SCANS, STUDY = "Images", "Study"
STUDY_UPLOADER = "analyze_study_round"
STUDY_OPEN = "analyze_study_open"
STUDY_ERROR = "analyze_study_error"


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
    """A headline and the server's reason for a file that was not analysed (a refused sign-in is raised again)."""
    text = state.reason(exc)
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
    mode = st.radio(
        "What to analyze",
        (SCANS, STUDY),
        key=MODE,
        horizontal=True,
        format_func=lambda m: {SCANS: "Single images", STUDY: "Study (a whole series)"}[m],
        help="Single images: one answer per file. Study: a folder's DICOM files, one zip or one NIfTI volume, "
        "scored slice by slice for one answer.",
    )
    if mode == STUDY:
        study_mode(status)
        return

    upload_form(
        UPLOADER,
        "Brain MRI slices",
        key="analyze_uploader",
        help="JPEG, PNG, BMP, TIFF or DICOM; the format is detected from the content, so DICOM files without an "
        "extension are fine. DICOM identifiers are removed before storage.",
        max_mb=max_upload_mb(),
        ready=status.model_loaded,
        action=lambda n: f"Analyze {n} scan{'s' if n != 1 else ''}" if n else "Analyze",
        send=analyse,
        shown=bool(st.session_state.get(RESULTS)),
        clear=lambda: st.session_state.pop(RESULTS, None),
    )
    outcomes: list[Outcome] = st.session_state.get(RESULTS) or []
    if outcomes:
        show(outcomes)


def upload_form(
    round_key: str,
    label: str,
    *,
    key: str,
    help: str,
    max_mb: int,
    ready: bool,
    action: Callable[[int], str],
    send: Callable[[list[tuple[str, bytes]]], None],
    shown: bool,
    clear: Callable[[], object],
    buttons_key: str | None = None,
) -> None:
    """An uploader (``key``, disabled unless the model is ``ready``) with its Analyze and Clear buttons: Analyze
    (labelled ``action(number of files)``) hands the files to ``send``, Clear (offered while files are chosen or
    something is ``shown``) calls ``clear``. Either empties the uploader, a new round of ``round_key`` (so the
    same files are not sent twice), and reruns the page. ``buttons_key`` names the buttons' keys."""
    round_ = int(st.session_state.get(round_key, 0))
    files = st.file_uploader(
        label,
        accept_multiple_files=True,
        key=f"{key}_{round_}",
        help=help,
        disabled=not ready,
        max_upload_size=max_mb,
    )
    left, right, _ = st.columns([1.2, 1, 3])
    go = left.button(
        action(len(files)),
        type="primary",
        disabled=not files or not ready,
        icon=":material/biotech:",
        key=None if buttons_key is None else f"{buttons_key}_go",
    )
    cleared = right.button(
        "Clear", disabled=not files and not shown, key=None if buttons_key is None else f"{buttons_key}_clear"
    )
    if cleared:
        clear()
    elif go and files:
        send([(f.name, f.getvalue()) for f in files])
    else:
        return
    st.session_state[round_key] = round_ + 1
    st.rerun()


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


# -- a whole study ---------------------------------------------------------------------------------------
def max_study_mb() -> int:
    """The per-file cap to show for a study upload, in whole MB: the study cap, within Streamlit's own."""
    try:
        value = float(os.environ.get("BRAINTUMOR_MAX_STUDY_MB") or DEFAULT_MAX_STUDY_MB)
    except ValueError:
        value = DEFAULT_MAX_STUDY_MB
    server = st.get_option("server.maxUploadSize")
    return max(1, min(math.ceil(value), int(server) if server else math.ceil(value)))


def study_refusal(exc: ApiError) -> tuple[str, str]:
    """A headline and the server's reason for a study that was not analysed (a refused sign-in is raised again)."""
    text = state.reason(exc)
    if exc.status == 415:
        return (
            "Unsupported file",
            text + ". Upload the study's DICOM files, one zip of them, or one NIfTI volume.",
        )
    if exc.status == 413:
        return "Study too large", text
    if exc.status == 422:
        return "Study not analysed", text
    if exc.status == 503:
        return "Analysis unavailable", text
    return "Study not analysed", text


def study_mode(status: Health) -> None:
    """Upload one study, send it to ``/studies`` in one call, and open its page below."""
    opened = st.session_state.get(STUDY_OPEN)
    upload_form(
        STUDY_UPLOADER,
        "One study: its DICOM files (select every file of the folder), one zip of them, or one NIfTI volume",
        key="analyze_study_uploader",
        help="DICOM files are found by content (any name) and grouped into series; the series to score are chosen "
        "by the site's rules, ordered by position. A NIfTI volume is .nii or .nii.gz. Identifiers are removed "
        "before storage.",
        max_mb=max_study_mb(),
        ready=status.model_loaded,
        action=lambda n: f"Analyze study ({n} file{'s' if n != 1 else ''})" if n else "Analyze study",
        send=send_study,
        shown=bool(opened),
        clear=close_study,
        buttons_key="analyze_study",
    )
    error = st.session_state.get(STUDY_ERROR)
    if isinstance(error, tuple):
        st.error(f"**{error[0]}.** {error[1]}", icon=":material/error:")
    if isinstance(opened, str):
        st.divider()
        study_page.page(opened, key="analyze_study", on_deleted=close_study)


def send_study(uploads: list[tuple[str, bytes]]) -> None:
    """Post the study; keep it for its page, or the server's reason for refusing it."""
    close_study()
    n = len(uploads)
    with st.spinner(f"Scoring the study slice by slice ({n} file{'s' if n != 1 else ''}) …"):
        try:
            study = state.api().upload_study(uploads)
        except ApiError as exc:
            st.session_state[STUDY_ERROR] = study_refusal(exc)
            return
    state.put("studies", study.id, study)
    state.invalidate("history", "dashboard")
    st.session_state[STUDY_OPEN] = study.id


def close_study() -> None:
    """Forget the study on screen and the last refusal."""
    st.session_state.pop(STUDY_OPEN, None)
    st.session_state.pop(STUDY_ERROR, None)
