"""The PDF report: every section is there (checked with pdftotext, else pypdf), de-identified by default."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest


def pdf_text(data: bytes, tmp_path: Path) -> str:
    path = tmp_path / "report.pdf"
    path.write_bytes(data)
    if shutil.which("pdftotext"):
        return subprocess.run(
            ["pdftotext", "-layout", str(path), "-"], capture_output=True, text=True, check=True
        ).stdout
    pypdf = pytest.importorskip("pypdf")
    return "\n".join(page.extract_text() for page in pypdf.PdfReader(path).pages)


def test_report_has_every_section(api: Any, scan_png: bytes, tmp_path: Path) -> None:
    headers = api.user("alice")
    scan = api.scan(headers, scan_png, "brain-slice.png")
    r = api.client.get(scan["report_url"], headers=headers)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf" and r.content[:5] == b"%PDF-"
    text = pdf_text(r.content, tmp_path)
    for expected in (
        "DECISION SUPPORT, NOT A DIAGNOSIS",
        scan["id"],
        "brain-slice.png",
        "Probability of tumor",
        f"{scan['threshold']:.3f}",
        "Result per model",
        "mobilenet_v3_small",
        "Ensemble",
        f"{scan['model_name']} {scan['model_version']}",
        "Heatmap (Grad-CAM)",
        "Overlay",
        "Not a DICOM upload",
        "Analysed (UTC)",
        scan["created_at"][:10],
    ):
        assert expected in text, expected
    assert text.count("Decision support, not a diagnosis") >= 1
    if shutil.which("pdfimages"):  # poppler-utils (make test installs it); pdf_text wrote the file
        images = subprocess.run(["pdfimages", "-list", str(tmp_path / "report.pdf")], capture_output=True, check=True)
        assert len(images.stdout.decode().splitlines()) - 2 >= 3  # scan, heatmap, overlay


def test_dicom_report_is_deidentified_unless_asked_and_allowed(
    make_api: Any, scan_dicom: bytes, tmp_path: Path
) -> None:
    default = make_api()
    headers = default.user("alice")
    scan = default.scan(headers, scan_dicom, "study.dcm")
    text = pdf_text(default.client.get(scan["report_url"], headers=headers).content, tmp_path)
    assert "Modality" in text and "MR" in text and "identifiers were removed at upload" in text
    assert "Doe" not in text and "St. Example" not in text
    text = pdf_text(default.client.get(scan["report_url"] + "?identifiers=true", headers=headers).content, tmp_path)
    assert "Doe" not in text  # nothing to show: removed at upload

    keeping = make_api(keep_dicom_identifiers=True)
    headers = keeping.user("alice")
    scan = keeping.scan(headers, scan_dicom, "study.dcm")
    text = pdf_text(keeping.client.get(scan["report_url"], headers=headers).content, tmp_path)
    assert "Doe" not in text and "De-identified view" in text
    text = pdf_text(keeping.client.get(scan["report_url"] + "?identifiers=true", headers=headers).content, tmp_path)
    assert "Doe^Jane" in text and "St. Example Hospital" in text and "Identified view" in text


def test_dicom_report_gives_one_outcome_and_keeps_the_images_heading_with_its_pictures(
    api: Any, scan_dicom: bytes, tmp_path: Path
) -> None:
    """Issue 14: the outcome is the one answer (no label beside it); the "Images" heading is never left alone at
    the bottom of a page (the DICOM report's tags push the pictures to page 2)."""
    pypdf = pytest.importorskip("pypdf")
    headers = api.user("alice")
    scan = api.scan(headers, scan_dicom, "study.dcm")
    path = tmp_path / "dicom.pdf"
    path.write_bytes(api.client.get(scan["report_url"], headers=headers).content)
    pages = [page.extract_text() for page in pypdf.PdfReader(path).pages]
    text = "\n".join(pages)
    assert "Outcome" in text and "label" not in text.lower() and "Band" not in text
    assert _images_heading_pages(pages) == ([len(pages) - 1], [len(pages) - 1])


def _images_heading_pages(pages: list[str]) -> tuple[list[int], list[int]]:
    heading = [i for i, t in enumerate(pages) if "\nImages\n" in f"\n{t}\n"]
    return heading, [i for i, t in enumerate(pages) if "Heatmap (Grad-CAM)" in t]


def test_the_images_heading_is_never_orphaned(tmp_path: Path, brain: Any, encoder: Any) -> None:
    """However long the study section is, "Images" lands on the page of its pictures (issue 14 item 9)."""
    import datetime as dt
    import io

    pypdf = pytest.importorskip("pypdf")
    from braintumor.api.reports import build_report
    from braintumor.storage import ScanRecord

    png = encoder(brain(1, 256, 256), "PNG")
    for n_tags in range(0, 48, 3):  # moves the pictures' start down page 1 in steps of one or two lines
        tags = {f"Tag{k:02d}": f"value {k}" for k in range(n_tags)}
        result = {"image": {"format": "dicom", "width": 256, "height": 256}, "dicom": tags, "deidentified": True}
        rec = ScanRecord("o", "a.dcm", "refer", 0.4, id="s", result=result, created_at=dt.datetime.now(dt.UTC),
                         files={})  # fmt: skip
        pdf = build_report(rec, {"original": png, "heatmap": png, "overlay": png}, identifiers=True)
        pages = [p.extract_text() for p in pypdf.PdfReader(io.BytesIO(pdf)).pages]
        heading, pictures = _images_heading_pages(pages)
        assert len(heading) == 1 and heading == pictures, (n_tags, heading, pictures)


def test_report_survives_odd_text(api: Any, scan_png: bytes, tmp_path: Path) -> None:
    headers = api.user("alice")
    scan = api.scan(headers, scan_png, "Gehirn–Schnitt ✓ 脑.png")
    r = api.client.get(scan["report_url"], headers=headers)
    assert r.status_code == 200 and "Gehirn-Schnitt" in pdf_text(r.content, tmp_path)
