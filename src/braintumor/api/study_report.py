"""The PDF report of one study: its outcome under the stated rule, every series, the p(tumor) curve, the top slices.

Why its own module beside :mod:`braintumor.api.reports` (whose :class:`~braintumor.api.reports.Page` it writes
on): a study's printout must say what a scan's cannot — which rule turned slice answers into the study's, that
the slice model was validated on 2-D slices and not on studies, which series were scored and which were skipped
(and why), and where along the stack the model saw a tumor (the curve, with the decision band) — and show the
most suspicious slices with their overlays, not one image.

Example:
    >>> pdf = build_study_report(study, {0: (slice_png, overlay_png)})  # doctest: +SKIP
    >>> pdf[:5]  # doctest: +SKIP
    b'%PDF-'
"""

from __future__ import annotations

import datetime as dt

from braintumor.api.reports import Page, latin1
from braintumor.api.schemas import StudyPublic, StudySeries

_OUTCOME = {"tumor": "tumor", "refer": "refer for review (uncertain)", "no_tumor": "no tumor", None: "not assessable"}
_CURVE_H = 38.0  # mm of the p(tumor) chart
_TOP = 4  # top slices shown


def build_study_report(study: StudyPublic, views: dict[tuple[str, int], tuple[bytes | None, bytes | None]]) -> bytes:
    """Render ``study``'s report; ``views`` maps a slice (series uid, index) to its stored image and overlay PNGs
    (the top slices; a missing view is left out)."""
    page = Page("Brain MRI study report")
    line = page.line
    assessed = sum(s.status == "ok" for s in study.slices)

    page.heading("Study")
    line("Study id", study.id)
    line("Upload", study.filename)
    line("Source", "NIfTI volume" if study.source_kind == "nifti" else "DICOM series")
    if study.study_uid:
        line("Study UID", study.study_uid + (" (de-identified)" if study.deidentified else ""))
    line("Analysed (UTC)", study.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    line("Report generated (UTC)", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    line("Slices", f"{len(study.slices)} scored in {len(study.series)} series, {assessed} assessable")

    page.heading("Result")
    line("Study outcome", _OUTCOME.get(study.outcome, study.outcome))
    line("Why", study.reason)
    rule = study.rule
    line(
        "Study rule",
        f"tumor when {rule.get('consecutive', 2)} consecutive assessed slices are tumor; refer when any slice is "
        f"tumor or in the band, or fewer than {float(rule.get('min_coverage', 0.5)):.0%} of the slices could be "
        "assessed; else no tumor. Several series: the most severe.",
    )
    page.band_rule(study.refer_low, study.refer_high, study.threshold)
    line("Highest p(tumor)", f"{study.p_tumor:.1%} (calibrated, one slice)")
    if study.tumor_type:
        line("Tumor type (top slice)", study.tumor_type)
    line("Model", f"{study.model_name} {study.model_version}")
    page.pdf.set_text_color(150, 0, 0)
    page.note(study.note, size=9)
    page.pdf.set_text_color(0, 0, 0)

    page.heading("Series")
    with page.pdf.table(col_widths=(50, 16, 18, 24, 72), text_align="LEFT", line_height=5) as table:
        table.row(["Series", "Slices", "Assessed", "Outcome", "Why"])
        for s in study.series:
            cells = [_short(s.description or s.series_uid, 40), str(s.slices), str(s.assessed),
                     _OUTCOME.get(s.outcome, str(s.outcome)), _short(s.reason, 90)]  # fmt: skip
            table.row([latin1(c) for c in cells])
    for skipped in study.skipped_series:
        line("Skipped", f"{skipped.description or skipped.series_uid}: {skipped.reason}")
    for problem in study.problems[:10]:
        line("Refused file", f"{problem.source}: {problem.reason}")
    if len(study.problems) > 10:
        line("Refused files", f"and {len(study.problems) - 10} more")

    page.heading("p(tumor) per slice")
    for s in study.series:
        _curve(page, s, study.refer_low, study.refer_high, study.threshold)

    top = study.top_slices[:_TOP]
    pictures: list[tuple[str, bytes]] = []
    for sl in top:
        image, overlay = views.get((sl.series_uid, sl.index), (None, None))
        label = f"slice {sl.index}" + (f" at {sl.position:g} mm" if sl.position is not None else "")
        p = f"p={sl.p_tumor:.3f}" if sl.p_tumor is not None else ""
        pictures += [(f"{label}, {p}", data) for data in (image,) if data]
        pictures += [(f"{label}: overlay", data) for data in (overlay,) if data]
    if pictures:
        page.pictures(pictures, heading=f"The {len(top)} most suspicious slices", columns=4)
    return page.output()


def _curve(page: Page, series: StudySeries, low: float, high: float, threshold: float) -> None:
    """One series' p(tumor) per slice as a line chart, with the referral band shaded and the threshold drawn;
    a gap where a slice was not assessed."""
    pdf = page.pdf
    if pdf.get_y() + _CURVE_H + 12 > pdf.h - 18:
        pdf.add_page()
    pdf.set_font("Helvetica", "", 8)
    title = f"{series.description or series.series_uid} ({series.slices} slices)"
    pdf.cell(0, 5, latin1(title), new_x="LMARGIN", new_y="NEXT")
    x0, y0, w, h = pdf.l_margin + 8, pdf.get_y(), page.width - 8, _CURVE_H
    values = series.p_tumor_curve

    def x(i: int) -> float:
        return x0 + (w * i / max(1, len(values) - 1) if len(values) > 1 else w / 2)

    def y(p: float) -> float:
        return y0 + h * (1 - p)

    pdf.set_fill_color(255, 243, 205)
    pdf.rect(x0, y(high), w, max(0.3, y(low) - y(high)), style="F")
    pdf.set_draw_color(120, 120, 120)
    pdf.rect(x0, y0, w, h)
    pdf.set_draw_color(200, 0, 0)
    pdf.set_dash_pattern(dash=1, gap=1)
    pdf.line(x0, y(threshold), x0 + w, y(threshold))
    pdf.set_dash_pattern()
    pdf.set_draw_color(30, 70, 160)
    pdf.set_line_width(0.4)
    for i in range(len(values) - 1):
        a, b = values[i], values[i + 1]
        if a is not None and b is not None:
            pdf.line(x(i), y(a), x(i + 1), y(b))
    pdf.set_fill_color(30, 70, 160)
    for i, v in enumerate(values):
        if v is not None:
            pdf.ellipse(x(i) - 0.6, y(v) - 0.6, 1.2, 1.2, style="F")
    pdf.set_line_width(0.2)
    pdf.set_draw_color(120, 120, 120)
    pdf.set_font("Helvetica", "", 6)
    for p in (0.0, 0.5, 1.0):
        pdf.set_xy(pdf.l_margin, y(p) - 2)
        pdf.cell(7, 4, f"{p:g}", align="R")
    pdf.set_xy(x0, y0 + h)
    pdf.cell(w, 4, f"slice 0 ... {len(values) - 1}  (shaded: refer band; dashed: threshold)", align="C",
             new_x="LMARGIN", new_y="NEXT")  # fmt: skip


def _short(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 3] + "..."
