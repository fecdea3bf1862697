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
    images = subprocess.run(["pdfimages", "-list", "-"], input=r.content, capture_output=True)
    if images.returncode == 0:
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


def test_report_survives_odd_text(api: Any, scan_png: bytes, tmp_path: Path) -> None:
    headers = api.user("alice")
    scan = api.scan(headers, scan_png, "Gehirn–Schnitt ✓ 脑.png")
    r = api.client.get(scan["report_url"], headers=headers)
    assert r.status_code == 200 and "Gehirn-Schnitt" in pdf_text(r.content, tmp_path)
