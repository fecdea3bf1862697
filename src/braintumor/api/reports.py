"""The PDF report of one scan (fpdf2: pure Python, no browser, no LaTeX).

Why each section: a clinician reading the printout must see, without the app, what was analysed (the scan and
where the model looked), what each model and the ensemble said with the threshold used, which model version
said it (and its card), the study facts DICOM provided (de-identified by default), when — and, unmissably, that
it is decision support, not a diagnosis.

Example:
    >>> pdf = build_report(record, {"original": png, "heatmap": png, "overlay": png})  # doctest: +SKIP
    >>> pdf[:5]  # doctest: +SKIP
    b'%PDF-'
"""

from __future__ import annotations

import datetime as dt
import io

from fpdf import FPDF
from fpdf.enums import XPos, YPos
from PIL import Image

from braintumor.api.analysis import DISCLAIMER
from braintumor.api.schemas import StoredResult
from braintumor.errors import ImageError
from braintumor.imaging.io import load_image
from braintumor.storage import ScanRecord
from braintumor.storage.deid import deidentified_tags

_BAND_TEXT = {"tumor": "tumor", "refer": "refer for review (uncertain)", "no_tumor": "no tumor"}
_OUTCOME_SHORT = {"tumor": "tumor", "refer": "refer", "no_tumor": "no tumor"}
_HEADING_H = 9.0  # mm a section heading takes (its gap and line)


def latin1(text: object) -> str:
    """Core PDF fonts speak Latin-1: replace what they cannot draw instead of failing."""
    out = str(text).replace("\u2013", "-").replace("\u2014", "-").replace("\u00d7", "x").replace("\u2026", "...")
    return out.encode("latin-1", "replace").decode("latin-1")


class _Report(FPDF):
    def footer(self) -> None:
        self.set_y(-14)
        self.set_font("Helvetica", "I", 7)
        self.set_text_color(90, 90, 90)
        self.cell(0, 4, latin1(DISCLAIMER), align="C", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        self.cell(0, 4, f"page {self.page_no()}/{{nb}}", align="C")


def _scan_png(original: bytes, max_pixels: int) -> bytes | None:
    try:
        image = load_image(original, max_pixels=max_pixels)
    except ImageError:
        return None
    im = Image.fromarray(image.pixels)
    im.thumbnail((1024, 1024))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


class Page:
    """A report being written: the A4 document, its text width, and the two kinds of line every report uses."""

    def __init__(self, title: str) -> None:
        pdf = self.pdf = _Report(format="A4")
        pdf.set_title(title)
        pdf.set_creator("braintumor")
        pdf.alias_nb_pages()
        pdf.set_auto_page_break(True, margin=18)
        pdf.add_page()
        self.width = pdf.w - pdf.l_margin - pdf.r_margin
        pdf.set_font("Helvetica", "B", 16)
        pdf.cell(0, 10, title, new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        _disclaimer_box(pdf, self.width)

    def heading(self, text: str) -> None:
        pdf = self.pdf
        pdf.ln(2)
        pdf.set_font("Helvetica", "B", 11)
        pdf.set_text_color(0, 0, 0)
        pdf.cell(0, 7, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)
        pdf.set_font("Helvetica", "", 9)

    def line(self, label: str, value: object) -> None:
        pdf = self.pdf
        pdf.set_font("Helvetica", "B", 9)
        pdf.cell(48, 5, latin1(label))
        pdf.set_font("Helvetica", "", 9)
        pdf.multi_cell(self.width - 48, 5, latin1(value), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def note(self, text: str, size: float = 8) -> None:
        self.pdf.set_font("Helvetica", "I", size)
        self.pdf.multi_cell(self.width, 4, latin1(text), new_x=XPos.LMARGIN, new_y=YPos.NEXT)

    def band_rule(self, low: float, high: float, threshold: float) -> None:
        self.line(
            "Decision rule",
            f"no tumor below {low:.3f}, tumor from {high:.3f}, refer for review in between "
            f"(a band around the operating threshold {threshold:.3f})",
        )

    def pictures(self, pictures: list[tuple[str, bytes]], *, heading: str | None = None, columns: int = 0) -> None:
        """PNGs side by side, each under its title, in ``columns`` (default: all in one row); a ``heading`` goes
        with its pictures onto the next page rather than stay alone at the bottom of this one."""
        pdf, gap = self.pdf, 4.0
        n = columns or len(pictures)
        w = (self.width - gap * (n - 1)) / n
        heights = []
        for _, data in pictures[:n]:
            with Image.open(io.BytesIO(data)) as im:
                heights.append(w * im.height / im.width)
        h = max(heights)
        if pdf.get_y() + (_HEADING_H if heading else 0) + h + 8 > pdf.h - 18:
            pdf.add_page()
        if heading:
            self.heading(heading)
        top = pdf.get_y()
        pdf.set_font("Helvetica", "", 8)
        for k, (title, data) in enumerate(pictures[:n]):
            x = pdf.l_margin + k * (w + gap)
            pdf.set_xy(x, top)
            pdf.cell(w, 5, latin1(title))
            pdf.image(io.BytesIO(data), x=x, y=top + 5, w=w)
        pdf.set_y(top + 5 + h + 2)
        if len(pictures) > n:
            self.pictures(pictures[n:], columns=n)

    def output(self) -> bytes:
        return bytes(self.pdf.output())


def _disclaimer_box(pdf: FPDF, width: float) -> None:
    pdf.set_fill_color(255, 235, 235)
    pdf.set_draw_color(200, 0, 0)
    pdf.set_text_color(150, 0, 0)
    pdf.set_font("Helvetica", "B", 10)
    pdf.multi_cell(
        width,
        6,
        "DECISION SUPPORT, NOT A DIAGNOSIS. Every result must be reviewed by a qualified clinician.",
        border=1,
        fill=True,
        new_x=XPos.LMARGIN,
        new_y=YPos.NEXT,
    )
    pdf.set_text_color(0, 0, 0)
    pdf.set_draw_color(120, 120, 120)


def build_report(
    rec: ScanRecord, images: dict[str, bytes], *, identifiers: bool = False, max_pixels: int = 40_000_000
) -> bytes:
    """Render the report of ``rec``; ``images`` maps ``original`` / ``heatmap`` / ``overlay`` to stored bytes."""
    stored = StoredResult.model_validate(rec.result)
    pred, card = stored.prediction, stored.model_card
    page = Page("Brain MRI analysis report")
    pdf, width, heading, line = page.pdf, page.width, page.heading, page.line

    heading("Scan")
    line("Scan id", rec.id)
    line("File", rec.filename)
    line("Analysed (UTC)", rec.created_at.strftime("%Y-%m-%d %H:%M:%S"))
    line("Report generated (UTC)", dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S"))
    image = stored.image
    if "image" in rec.result:
        line("Image", f"{image.format.upper()}, {image.width} x {image.height} px")

    heading("Result")
    line("Outcome", _BAND_TEXT.get(rec.outcome, rec.outcome))
    line("Probability of tumor", f"{rec.p_tumor:.1%} (calibrated)")
    low = rec.threshold if pred.refer_low is None else pred.refer_low
    high = rec.threshold if pred.refer_high is None else pred.refer_high
    page.band_rule(low, high, rec.threshold)
    if rec.tumor_type:
        probs = pred.type_probs
        detail = ", ".join(f"{k} {v:.1%}" for k, v in sorted(probs.items(), key=lambda kv: -kv[1]))
        line("Tumor type", f"{rec.tumor_type} ({detail})" if detail else rec.tumor_type)

    heading("Result per model")
    members = pred.members
    with pdf.table(col_widths=(40, 40, 30, 30), text_align="LEFT", line_height=5) as table:
        table.row(["Model", "Architecture", "p(tumor)", "Under the ensemble's rule"])
        for m in members:
            table.row([latin1(m.name), latin1(m.arch), f"{m.p_tumor:.3f}", _OUTCOME_SHORT.get(m.outcome, m.outcome)])
        ensemble = _OUTCOME_SHORT.get(rec.outcome, rec.outcome)
        table.row(["Ensemble", f"{len(members)} member(s)", f"{rec.p_tumor:.3f}", ensemble])

    heading("Model")
    line("Name and version", f"{rec.model_name} {rec.model_version}")
    if card:
        decision = card.get("decision", {})
        line("Classes", ", ".join(map(str, card.get("classes", []))))
        for m in card.get("members", []):
            line(
                f"Member {m.get('name', '')}",
                f"{m.get('arch', '')}, input {m.get('input_size', '?')} px, {m.get('precision', 'fp32')}, "
                f"weight {m.get('weight', 1)}",
            )
        if decision.get("target_sensitivity"):
            line("Threshold chosen for", f"sensitivity {decision['target_sensitivity']}")
        line("Input gate", "yes (non-MRI inputs are refused)" if card.get("gate") else "no")

    heading("Study")
    tags = stored.dicom
    if image.format != "dicom":
        pdf.multi_cell(width, 5, "Not a DICOM upload: no study or patient fields.", new_x=XPos.LMARGIN, new_y=YPos.NEXT)
    else:
        shown = tags if identifiers else deidentified_tags(tags)
        for key, value in sorted(shown.items()):
            line(key, value)
        if stored.deidentified:
            note = "Patient and study identifiers were removed at upload (DICOM PS3.15 basic profile)."
        elif identifiers:
            note = "Identified view: patient fields shown as stored (this site keeps DICOM identifiers)."
        else:
            note = "De-identified view: patient fields hidden (ask for the identified view if you are allowed)."
        page.note(note)

    pictures = []
    if "original" in images and (png := _scan_png(images["original"], max_pixels)) is not None:
        pictures.append(("Scan", png))
    pictures += [
        (title, images[kind])
        for title, kind in (("Heatmap (Grad-CAM)", "heatmap"), ("Overlay", "overlay"))
        if kind in images
    ]
    if pictures:
        page.pictures(pictures, heading="Images")
    notes = image.notes
    if notes:
        page.note("Notes: " + "; ".join(notes))
    return page.output()
