"""The UI's one JSON reader (``braintumor.ui.reading.read``) reads each record by its fields' types, as the
hand-written readers it replaced did: nulls to empty text, optional fields kept null, nested records (a scan's
own ``from_json``) and pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from braintumor.ui.reading import read
from braintumor.ui.records import PacsStudy, RefusedFile, Scan, ScanPage, Study, StudySeries, User

SUMMARY: dict[str, Any] = {
    "id": "s1",
    "filename": "Y1.jpg",
    "created_at": "2026-01-02T03:04:05Z",
    "outcome": "tumor",
    "p_tumor": 0.9,
    "tumor_type": None,
    "model_name": "m",
    "model_version": "1",
    "threshold": 0.5,
    "files": {"original": {"id": "f1", "url": "/files/f1", "content_type": "image/png", "size": 12}},
    "report_url": "/r",
    "url": "/history/s1",
    "slice_count": None,
}


def test_a_listed_scan_and_a_page_of_them() -> None:
    page = read(ScanPage, {"items": [SUMMARY], "total": 1, "page": 1, "page_size": 20, "pages": 1})
    (scan,) = page.items
    assert (page.total, page.pages) == (1, 1)
    assert scan.created_at == dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    assert scan.kind == "scan" and not scan.detailed and scan.probs == {} and scan.members == ()
    assert scan.files["original"].size == 12 and scan.slice_count is None


def test_a_detailed_scan_with_members() -> None:
    member = {"name": "a", "arch": "r18", "p_tumor": 0.8, "outcome": "tumor", "probs": {"tumor": 0.8}}
    scan = Scan.from_json({**SUMMARY, "members": [member], "refer_low": 0.3, "dicom": {"Modality": "MR"}})
    assert scan.detailed and scan.members[0].probs == {"tumor": 0.8} and scan.members[0].heatmap is None
    assert (scan.refer_low, scan.refer_high, scan.dicom) == (0.3, None, {"Modality": "MR"})


def test_nulls_and_missing_fields() -> None:
    series = {"series_uid": "1.2", "kind": "t1", "description": None, "slices": 2, "assessed": 1}
    read_series = read(StudySeries, {**series, "p_tumor_curve": [0.7, None]})
    assert read_series.description == "" and read_series.modality is None and read_series.notes == ()
    assert read_series.p_tumor_curve == (0.7, None)
    study = Study.from_json({**SUMMARY, "refer_low": 0.3, "refer_high": 0.7, "series": [series]})
    assert (study.kind, study.source_kind, study.rule, study.deidentified) == ("study", "dicom", {}, False)
    pacs = read(PacsStudy, {"study_uid": "1", "patient_name": None, "modalities": ["MR"], "series": 2})
    assert (pacs.patient_name, pacs.modalities, pacs.series, pacs.instances) == ("", ("MR",), 2, None)
    assert read(User, {"username": "a", "role": "user", "created_at": "2026-01-01T00:00:00+00:00"}).scans is None
    assert read(RefusedFile, {"source": "x.txt", "reason": "not DICOM"}) == RefusedFile("x.txt", "not DICOM")
    with pytest.raises(KeyError, match="refer_low"):  # a number the schema always sends
        Study.from_json(SUMMARY)
