"""Pieces several pages share: the result banner, the probability scale, the image viewer, the members
table, image and DICOM facts, and the PDF report button.

Why shared: Analyze and History show a scan the same way, so a clinician reads one layout everywhere.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Callable
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import numpy as np
import streamlit as st

from braintumor.ui import imaging, state
from braintumor.ui.client import ApiError
from braintumor.ui.records import FileLink, Record, Scan

#: How each outcome (the one answer a scan gets) reads, its colour, and what it asks of the reader.
OUTCOMES: dict[str, tuple[str, str, str]] = {
    "tumor": ("Tumor suspected", "#b71c1c", "Probability above the referral band: review urgently."),
    "refer": ("Refer for expert review", "#e65100", "Probability inside the referral band: the model is unsure."),
    "no_tumor": ("No tumor detected", "#1b5e20", "Probability below the referral band."),
}
OUTCOME_NAMES = {"tumor": "Tumor", "refer": "Refer", "no_tumor": "No tumor"}
OUTCOME_COLOURS = {"Tumor": "#c62828", "Refer": "#ef6c00", "No tumor": "#2e7d32"}
VIEW_WIDTH = 560
CSS = """
<style>
.bt-banner {border-left: 8px solid var(--bt-colour); background: color-mix(in srgb, var(--bt-colour) 9%, white);
  padding: 0.8rem 1.1rem; border-radius: 0.4rem; margin-bottom: 0.6rem;}
.bt-banner h3 {color: var(--bt-colour); margin: 0; padding: 0; font-size: 1.45rem;}
.bt-banner p {margin: 0.2rem 0 0 0; color: #333;}
.bt-scale {position: relative; height: 18px; border-radius: 9px; margin: 1.6rem 0 0.3rem 0;
  background: linear-gradient(90deg, #2e7d32 0%, #2e7d32 var(--lo), #ef6c00 var(--lo), #ef6c00 var(--hi),
  #c62828 var(--hi), #c62828 100%);}
.bt-marker {position: absolute; top: -7px; width: 4px; height: 32px; background: #111; border-radius: 2px;
  transform: translateX(-2px);}
.bt-marker span {position: absolute; top: -1.45rem; left: 50%; transform: translateX(var(--shift)); font-weight: 700;
  white-space: nowrap; font-size: 0.9rem;}
.bt-ticks {display: flex; justify-content: space-between; font-size: 0.75rem; color: #555;}
.bt-pill {display: inline-block; padding: 0.05rem 0.55rem; border-radius: 0.8rem; color: white; font-size: 0.8rem;
  font-weight: 600;}
</style>
"""


def inject_css() -> None:
    """The few styles the banner, scale and pills need (once per run)."""
    st.markdown(CSS, unsafe_allow_html=True)


def pill(outcome: str) -> str:
    """HTML for a small coloured outcome label."""
    name = OUTCOME_NAMES.get(outcome, outcome)
    return f'<span class="bt-pill" style="background:{OUTCOME_COLOURS.get(name, "#555")}">{html.escape(name)}</span>'


def percent(p: float) -> str:
    return f"{100 * p:.1f}%"


def local_time(when: dt.datetime) -> dt.datetime:
    """``when`` in the browser's time zone (UTC when the browser does not say)."""
    try:
        zone = st.context.timezone
        return when.astimezone(ZoneInfo(zone) if zone else dt.UTC)
    except (ZoneInfoNotFoundError, ValueError, RuntimeError):
        return when.astimezone(dt.UTC)


def when(moment: dt.datetime, *, zone: bool = True) -> str:
    """A timestamp in the browser's time zone, e.g. ``2026-11-27 16:43 CET`` (``zone=False``: without it)."""
    shown = local_time(moment)
    suffix = (shown.tzname() or "") if zone else ""
    return f"{shown:%Y-%m-%d %H:%M} {suffix}".strip()


def zone_name() -> str:
    """The browser's time zone abbreviation now (``UTC`` when unknown)."""
    return local_time(dt.datetime.now(dt.UTC)).tzname() or "UTC"


def result_banner(scan: Scan) -> None:
    """The answer in one glance: the outcome, calibrated probability, tumour type."""
    title, colour, hint = OUTCOMES.get(scan.outcome, (scan.outcome, "#333", ""))
    kind = f" · type: <b>{html.escape(scan.tumor_type)}</b>" if scan.tumor_type else ""
    st.markdown(
        f'<div class="bt-banner" style="--bt-colour:{colour}"><h3>{html.escape(title)}</h3>'
        f"<p>Calibrated probability of tumor <b>{percent(scan.p_tumor)}</b>{kind}</p>"
        f"<p><small>{html.escape(hint)}</small></p></div>",
        unsafe_allow_html=True,
    )


def probability_scale(scan: Scan) -> None:
    """Where the probability falls against the referral band the model was calibrated with."""
    low = scan.refer_low if scan.refer_low is not None else scan.threshold
    high = scan.refer_high if scan.refer_high is not None else scan.threshold
    shift = "-100%" if scan.p_tumor > 0.92 else "0%" if scan.p_tumor < 0.08 else "-50%"  # keep the label inside
    st.markdown(
        f'<div class="bt-scale" style="--lo:{100 * low:.2f}%;--hi:{100 * high:.2f}%">'
        f'<div class="bt-marker" style="left:{100 * scan.p_tumor:.2f}%;--shift:{shift}">'
        f"<span>{percent(scan.p_tumor)}</span></div></div>"
        '<div class="bt-ticks"><span>0%</span><span>25%</span><span>50%</span><span>75%</span><span>100%</span></div>',
        unsafe_allow_html=True,
    )
    band = f"**{percent(low)}–{percent(high)}**" if high > low else f"none (one cut at **{percent(high)}**)"
    st.caption(
        f"Below the referral band: no tumor; inside it: refer for review; above it: tumor. Referral band {band} "
        f"(set at calibration; it cannot be changed here) · model **{scan.model_name}** v{scan.model_version}"
    )


def facts(scan: Scan) -> None:
    """Numbers beside the banner: probability, the referral band, tumour type."""
    a, b, c = st.columns(3)
    a.metric("P(tumor), calibrated", percent(scan.p_tumor))
    low = scan.refer_low if scan.refer_low is not None else scan.threshold
    high = scan.refer_high if scan.refer_high is not None else scan.threshold
    b.metric("Referral band", f"{percent(low)}–{percent(high)}", help="Scans inside it are referred for review.")
    if scan.tumor_type:
        c.metric("Tumor type", scan.tumor_type.replace("_", " ").capitalize())
    elif scan.type_probs:
        c.metric("Tumor type", "—", help="A type is given only when the outcome is tumor.")
    else:
        c.metric("Tumor type", "Not estimated", help="This model tells tumor from no tumor only; it has no type head.")
    if scan.type_probs:
        ranked = sorted(scan.type_probs.items(), key=lambda kv: -kv[1])
        st.caption("Type probabilities: " + " · ".join(f"{k.replace('_', ' ')} {percent(v)}" for k, v in ranked))


def members_table(scan: Scan) -> None:
    """Each ensemble member's probability, read under the ensemble's rule (members have no answer of their own)."""
    if not scan.members:
        return
    rows = [
        {
            "Member": m.name,
            "Architecture": m.arch,
            "P(tumor)": m.p_tumor,
            "Under the ensemble's rule": OUTCOME_NAMES.get(m.outcome, m.outcome),
        }
        for m in scan.members
    ]
    st.dataframe(
        rows,
        hide_index=True,
        width="stretch",
        column_config={
            "P(tumor)": st.column_config.ProgressColumn("P(tumor)", format="percent", min_value=0.0, max_value=1.0)
        },
    )


def file_bytes(link: FileLink) -> bytes:
    """A stored file, fetched once per session (stored files never change)."""
    return state.cached("files", link.id, lambda: state.api().file(link))


def viewer(scan: Scan, key: str, original: bytes | None = None) -> tuple[np.ndarray | None, float]:
    """Original and heatmap side by side, with zoom, pan and overlay opacity applied here (no server call).

    ``original``: the uploaded bytes when the page has them (else they are fetched). Returns the decoded scan (None
    when it cannot be shown) and the chosen opacity, which the members' overlays below reuse.
    """
    link = scan.files.get("original")
    cam_link = scan.files.get("cam")
    try:
        data = original if original is not None else (file_bytes(link) if link else None)
        pixels = imaging.decode(data) if data is not None else None
    except imaging.DisplayError as exc:
        pixels = None
        st.info(f"{exc}. The server's heatmap is shown instead.")
    try:
        cam = imaging.load_cam(file_bytes(cam_link)) if cam_link else None
    except imaging.DisplayError as exc:
        cam = None
        st.info(f"{exc}; the scan is shown without it.")

    controls = st.columns([1.2, 1.2, 1.2, 1])
    zoom = controls[0].slider("Zoom", 1.0, 4.0, 1.0, 0.25, key=f"{key}_zoom", format="%.2f×")
    mode = controls[2].radio(
        "Right panel", ["Overlay", "Heatmap only"], key=f"{key}_mode", horizontal=True, disabled=cam is None
    )
    opacity = controls[1].slider(
        "Heatmap opacity",
        0.0,
        1.0,
        0.4,
        0.05,
        key=f"{key}_opacity",
        disabled=cam is None or pixels is None or mode == "Heatmap only",
        help="Applies to the overlay; the heatmap alone is drawn opaque.",
    )
    center = (0.5, 0.5)
    if zoom > 1:
        with controls[3]:
            cx = st.slider("Pan ←→", 0.0, 1.0, 0.5, 0.05, key=f"{key}_panx")
            cy = st.slider("Pan ↑↓", 0.0, 1.0, 0.5, 0.05, key=f"{key}_pany")
        center = (cx, cy)

    left, right = st.columns(2)
    if pixels is not None:
        left.image(imaging.enlarge(imaging.view(pixels, zoom, center), VIEW_WIDTH), caption="Original", width="stretch")
        if cam is not None:
            shown = imaging.blend(pixels, cam, opacity) if mode == "Overlay" else imaging.heatmap(pixels, cam)
            caption = f"Grad-CAM overlay (opacity {opacity:.2f})" if mode == "Overlay" else "Grad-CAM heatmap"
            right.image(
                imaging.enlarge(imaging.view(shown, zoom, center), VIEW_WIDTH), caption=caption, width="stretch"
            )
            right.image(imaging.colorbar(VIEW_WIDTH // 2, 10), caption="low ← model attention → high", width="content")
        else:
            right.info("No heatmap was stored for this scan.")
    else:
        for column, kind, caption in (
            (left, "overlay", "Grad-CAM overlay (server)"),
            (right, "heatmap", "Grad-CAM heatmap"),
        ):
            if kind in scan.files:
                try:
                    shown = imaging.decode(file_bytes(scan.files[kind]))
                except imaging.DisplayError as exc:
                    column.info(str(exc))
                    continue
                column.image(
                    imaging.enlarge(imaging.view(shown, zoom, center), VIEW_WIDTH), caption=caption, width="stretch"
                )
    return pixels, opacity


def member_heatmaps(scan: Scan, pixels: np.ndarray | None = None, opacity: float = 0.4) -> None:
    """Each member's overlay: its stored map (``cam.N``) blended onto ``pixels`` here, as the ensemble's is, or, for
    scans stored before maps were kept per member, the server's overlay PNG (``overlay.N``); otherwise what the
    map above is."""
    maps = [(m, scan.files[m.heatmap]) for m in scan.members if m.heatmap and m.heatmap in scan.files]
    if maps:
        columns = st.columns(min(len(maps), 3))
        for i, (member, link) in enumerate(maps):
            try:
                if link.content_type == "application/x-npy":
                    if pixels is None:
                        raise imaging.DisplayError("the scan cannot be shown, so neither can this member's map")
                    shown = imaging.blend(pixels, imaging.load_cam(file_bytes(link)), opacity)
                else:
                    shown = imaging.decode(file_bytes(link))
            except imaging.DisplayError as exc:
                columns[i % len(columns)].info(str(exc))
                continue
            caption = f"{member.name} ({member.arch}): P(tumor) {percent(member.p_tumor)}"
            columns[i % len(columns)].image(imaging.enlarge(shown, 320), caption=caption, width="stretch")
    elif len(scan.members) <= 1:
        st.caption("Single-model ensemble: the heatmap above is this member's own Grad-CAM map.")
    else:
        st.caption(
            "This server stores the ensemble's map only: the mean of the members' max-normalised Grad-CAM maps "
            f"({', '.join(m.name for m in scan.members)})."
        )


def image_facts(scan: Scan) -> None:
    """Decoded image facts and the DICOM tags kept with the scan."""
    info = scan.image
    if info:
        frames = int(info.get("frames", 1) or 1)
        line = f"{str(info.get('format', '?')).upper()} · {info.get('width', '?')}×{info.get('height', '?')} px"
        st.caption(line + (f" · {frames} frames" if frames > 1 else ""))
        for note in info.get("notes", []) or []:
            st.caption(f":material/info: {note}")
    if scan.dicom:
        badge = "de-identified" if scan.deidentified else "identifiers kept by this site"
        st.markdown(f"**DICOM information** ({badge})")
        rows = [{"Tag": k, "Value": v} for k, v in sorted(scan.dicom.items())]
        st.dataframe(rows, hide_index=True, width="stretch")


def report_button(scan: Scan, key: str) -> None:
    """Download the scan's PDF report (fetched once per session)."""
    try:
        pdf = state.cached("reports", scan.id, lambda: state.api().report(scan))
    except ApiError as exc:
        st.warning(f"The PDF report is not available: {state.reason(exc)}")
        return
    pdf_button(scan, pdf, key)


def pdf_button(record: Record, pdf: bytes, key: str) -> None:
    """The download button for a scan's or a study's PDF report, named after its file, kind and id."""
    stem = record.filename.rsplit(".", 1)[0] or record.kind
    st.download_button(
        "Download PDF report",
        pdf,
        file_name=f"report-{stem}-{record.id[:8]}.pdf",
        mime="application/pdf",
        key=f"{key}_pdf",
        icon=":material/picture_as_pdf:",
        type="primary",
        on_click="ignore",
    )


def scan_detail(scan: Scan, key: str, original: bytes | None = None) -> None:
    """Everything about one analysed scan, in reading order."""
    result_banner(scan)
    probability_scale(scan)
    facts(scan)
    pixels, opacity = viewer(scan, key, original)
    with st.expander("Ensemble members and their heatmaps", expanded=len(scan.members) > 1):
        members_table(scan)
        member_heatmaps(scan, pixels, opacity)
    with st.expander("Image and DICOM information", expanded=bool(scan.dicom)):
        image_facts(scan)
    report_button(scan, key)
    st.caption(scan.disclaimer or "Decision support, not a diagnosis: every result must be reviewed by a clinician.")


def form_ready(submitted: bool, *checks: tuple[bool, str]) -> bool:
    """Whether a form may be sent: it was submitted and every ``(ok, message)`` check holds; else ``False``, after
    showing the message of the first check that failed."""
    if not submitted:
        return False
    for ok, message in checks:
        if not ok:
            st.error(message)
            return False
    return True


def confirm(key: str, question: str, action: Callable[[], Any], *, confirm_label: str = "Yes, delete") -> bool:
    """A two-step confirmation drawn where it was asked for: returns ``True`` once ``action`` ran."""
    if not st.session_state.get(key):
        return False
    with st.container(border=True):
        st.warning(question, icon=":material/warning:")
        yes, no, _ = st.columns([1, 1, 3])
        if yes.button(confirm_label, key=f"{key}_yes", type="primary"):
            st.session_state[key] = False
            action()
            return True
        if no.button("Cancel", key=f"{key}_no"):
            st.session_state[key] = False
            st.rerun()
    return False
