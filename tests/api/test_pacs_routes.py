"""``GET /pacs``, ``GET /pacs/studies`` and ``POST /pacs/studies/{uid}/analyze`` against a real Orthanc
(``tests/interop``'s ``orthanc`` fixture: Debian ``orthanc`` + ``orthanc-dicomweb`` under ``unshare -n``),
configured the only way there is: the settings.

Without a PACS the answer is a clear 404; an unreachable PACS is a 503 and refused credentials a 502, each one
line that never holds the password; bad filters are 422s; the search is audited without its values. A study
analysed from the PACS is stored exactly as the same instances uploaded to ``POST /studies`` are (the same salted
UIDs, the same scores), de-identified.
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pydantic import ValidationError

from braintumor.api import Settings
from braintumor.storage import ScanQuery

from ..conftest import make_brain
from ..dicom_files import IDENTITY, mr_series
from ..interop.conftest import USER, Orthanc, orthanc
from ..servers import free_port
from ..studies import real_slices

__all__ = ["orthanc"]  # the module-scoped Orthanc fixture, used by the tests below


@pytest.fixture(scope="module")
def stored_study(orthanc: Orthanc) -> list[Any]:
    """Two synthetic slices as one identified MR study, stored on the module's Orthanc."""
    slices = [make_brain(seed, 96, 96).astype(np.uint8) for seed in (1, 2)]
    study = mr_series(slices, description="T1 AX API")
    assert not orthanc.client().store(study).failed
    return study


@pytest.fixture
def pacs_api(make_api: Callable[..., Any], orthanc: Orthanc) -> Any:
    """An app whose settings name the module's Orthanc and its account."""
    return make_api(pacs_url=orthanc.url, pacs_username=USER, pacs_password=orthanc.password)


def _one_line(r: Any, status: int, *, hidden: str | None = None) -> str:
    assert r.status_code == status, r.text
    detail = r.json()["detail"]
    assert isinstance(detail, str) and "\n" not in detail and "Traceback" not in detail
    if hidden is not None:
        assert hidden not in r.text
    return detail


def test_without_a_configured_pacs_the_answer_is_a_clear_404(api: Any) -> None:
    headers = api.user("alice")
    assert api.client.get("/pacs", headers=headers).json() == {"configured": False}
    detail = _one_line(api.client.get("/pacs/studies", headers=headers), 404)
    assert detail.startswith("no PACS is configured")
    assert api.client.get("/pacs/studies").status_code == 401
    assert api.client.get("/pacs").status_code == 401


def test_an_unreachable_pacs_is_a_503_without_the_password(make_api: Callable[..., Any]) -> None:
    secret = "Unreachable-PACS-password-7"
    api = make_api(pacs_url=f"http://127.0.0.1:{free_port()}/dicom-web", pacs_username=USER, pacs_password=secret)
    headers = api.user("bob")
    assert api.client.get("/pacs", headers=headers).json() == {"configured": True}
    detail = _one_line(api.client.get("/pacs/studies", headers=headers), 503, hidden=secret)
    assert "unreachable" in detail


def test_bad_filters_are_refused_before_the_pacs_is_asked(make_api: Callable[..., Any]) -> None:
    api = make_api(pacs_url=f"http://127.0.0.1:{free_port()}/dicom-web")
    headers = api.user("carol")
    for query in ("modality=mr", "study_date=2024-02-29", "patient_id=a%0Ab", "page_size=1000", "page=0"):
        assert api.client.get(f"/pacs/studies?{query}", headers=headers).status_code == 422, query


def test_the_pacs_comes_only_from_the_settings() -> None:
    key = "tJ4nV9qXe2LwB7sKd0RzP5mYc8HgUa3FoT6iNb1EyQk"
    with pytest.raises(ValidationError, match="not in the URL"):
        Settings(secret_key=key, pacs_url="http://user:pw@pacs.example/dicom-web")
    with pytest.raises(ValidationError, match="DICOMweb root"):
        Settings(secret_key=key, pacs_url="ftp://pacs.example/")
    with pytest.raises(ValidationError, match="without BRAINTUMOR_PACS_USERNAME"):
        Settings(secret_key=key, pacs_url="http://pacs.example/dicom-web", pacs_password="a-password")
    assert Settings(secret_key=key, pacs_url="").pacs_url is None
    assert "a-password" not in repr(Settings(secret_key=key, pacs_username="u", pacs_password="a-password"))


@pytest.mark.pacs
@pytest.mark.integration
def test_search_finds_the_study_by_each_filter(pacs_api: Any, stored_study: list[Any]) -> None:
    headers = pacs_api.user("dora")
    study_uid = str(stored_study[0].StudyInstanceUID)
    assert pacs_api.client.get("/pacs", headers=headers).json() == {"configured": True}

    def search(**params: Any) -> dict[str, Any]:
        r = pacs_api.client.get("/pacs/studies", params=params, headers=headers)
        assert r.status_code == 200, r.text
        return dict(r.json())

    found = search(patient_id=IDENTITY["PatientID"])
    assert found["page"] == 1 and found["more"] is False
    (study,) = found["items"]
    assert study == {
        "study_uid": study_uid,
        "patient_id": IDENTITY["PatientID"],
        "patient_name": IDENTITY["PatientName"],
        "study_date": "20240229",
        "accession_number": "ACC-7",
        "description": "MRI BRAIN",
        "modalities": ["MR"],
        "series": 1,
        "instances": 2,
    }
    for params in ({"patient_name": "Doe*"}, {"patient_name": "D?e*"}, {"modality": "MR"},
                   {"study_date": "20240201-20240301"},
                   {"accession_number": "ACC-7", "patient_id": IDENTITY["PatientID"]}):  # fmt: skip
        assert study_uid in [s["study_uid"] for s in search(**params)["items"]], params
    assert search(patient_id="nobody")["items"] == []
    assert search(study_date="19990101")["items"] == []

    # the audit log says who searched and with which filters, never their values
    log = pacs_api.settings.audit_log_path.read_text()
    entries = [json.loads(line) for line in log.splitlines() if '"pacs.search"' in line]
    assert entries[0]["actor"] == "dora" and entries[0]["filters"] == ["patient_id"] and entries[0]["studies"] == 1
    assert IDENTITY["PatientID"] not in log and "Doe" not in log


@pytest.mark.pacs
@pytest.mark.integration
def test_search_pages_through_the_pacs(pacs_api: Any, orthanc: Orthanc, stored_study: list[Any]) -> None:
    other = mr_series([make_brain(3, 96, 96).astype(np.uint8)], description="T1 AX API 2")
    assert not orthanc.client().store(other).failed
    headers = pacs_api.user("erin")
    first = pacs_api.client.get("/pacs/studies", params={"page_size": 1, "modality": "MR"}, headers=headers).json()
    assert len(first["items"]) == 1 and first["more"] is True
    uids = {first["items"][0]["study_uid"]}
    page = 2
    while True:
        r = pacs_api.client.get("/pacs/studies", params={"page_size": 1, "page": page, "modality": "MR"},
                                headers=headers).json()  # fmt: skip
        uids |= {s["study_uid"] for s in r["items"]}
        if not r["more"]:
            break
        page += 1
    assert {str(stored_study[0].StudyInstanceUID), str(other[0].StudyInstanceUID)} <= uids


@pytest.mark.pacs
@pytest.mark.integration
def test_refused_credentials_are_a_502_without_the_password(
    make_api: Callable[..., Any], orthanc: Orthanc, stored_study: list[Any]
) -> None:
    wrong = "Not-the-PACS-password-42"
    api = make_api(pacs_url=orthanc.url, pacs_username=USER, pacs_password=wrong)
    headers = api.user("frank")
    detail = _one_line(api.client.get("/pacs/studies", headers=headers), 502, hidden=wrong)
    assert "refused the credentials" in detail and "HTTP 401" in detail
    assert orthanc.password not in detail


def _encode(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def real_study(orthanc: Orthanc, shared_data: Path) -> list[Any]:
    """Four real slices as one identified MR study, stored on the module's Orthanc."""
    study = mr_series(real_slices(shared_data, 4, side=96, label="yes"), description="T1 AX API analyze")
    assert not orthanc.client().store(study).failed
    return study


@pytest.mark.pacs
@pytest.mark.integration
def test_a_pacs_study_is_analysed_and_stored_like_an_uploaded_one(pacs_api: Any, real_study: list[Any]) -> None:
    headers = pacs_api.user("gina")
    study_uid = str(real_study[0].StudyInstanceUID)
    r = pacs_api.client.post(f"/pacs/studies/{study_uid}/analyze", headers=headers)
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/studies/{body['id']}"
    assert body["kind"] == "study" and body["filename"] == "PACS study" and len(body["slices"]) == 4
    assert body["deidentified"] is True and body["study_uid"] and body["study_uid"] != study_uid

    uploaded = pacs_api.client.post(
        "/studies", headers=headers, files=[("files", (f"IM{i}.dcm", _encode(ds))) for i, ds in enumerate(real_study)]
    )
    assert uploaded.status_code == 201, uploaded.text
    same = uploaded.json()
    assert body["study_uid"] == same["study_uid"] and body["outcome"] == same["outcome"]
    assert [s["p_tumor"] for s in body["slices"]] == pytest.approx([s["p_tumor"] for s in same["slices"]])

    # de-identified as stored: neither the identity nor the PACS's UIDs
    rec = pacs_api.storage.get_scan(body["id"])
    sources = [pacs_api.storage.get_file(f.id)[1] for kind, f in rec.files.items() if kind.startswith("source.")]
    assert len(sources) == 4
    original_uids = {study_uid, str(real_study[0].SeriesInstanceUID)} | {str(d.SOPInstanceUID) for d in real_study}
    text = json.dumps(rec.result)
    for value in (*IDENTITY.values(), "ACC-7", *original_uids):
        assert value not in text, value
        assert all(value.encode() not in data for data in sources), value
    assert pacs_api.client.get(f"/studies/{body['id']}", headers=headers).status_code == 200
    assert pacs_api.client.get(f"/studies/{body['id']}", headers=pacs_api.user("hal")).status_code == 404
    audit = [json.loads(line) for line in pacs_api.settings.audit_log_path.read_text().splitlines()]
    assert any(e["action"] == "pacs.analyze" and e["target"] == body["id"] and e["instances"] == 4 for e in audit)
    assert study_uid not in pacs_api.settings.audit_log_path.read_text()


@pytest.mark.pacs
@pytest.mark.integration
def test_analyze_answers_unknown_studies_bad_uids_and_refused_credentials(
    pacs_api: Any, make_api: Callable[..., Any], orthanc: Orthanc, real_study: list[Any]
) -> None:
    headers = pacs_api.user("ivan")
    detail = _one_line(pacs_api.client.post("/pacs/studies/1.2.3.4.5/analyze", headers=headers), 404)
    assert detail == "study 1.2.3.4.5 is not on the PACS"
    for bad in ("1.2.abc", "1..2", "9" * 65):
        assert pacs_api.client.post(f"/pacs/studies/{bad}/analyze", headers=headers).status_code == 422, bad
    assert pacs_api.client.post("/pacs/studies/1.2.3/analyze").status_code == 401

    wrong = "Not-the-PACS-password-43"
    refused = make_api(pacs_url=orthanc.url, pacs_username=USER, pacs_password=wrong)
    uid = str(real_study[0].StudyInstanceUID)
    _one_line(refused.client.post(f"/pacs/studies/{uid}/analyze", headers=refused.user("joan")), 502, hidden=wrong)
    few = make_api(pacs_url=orthanc.url, pacs_username=USER, pacs_password=orthanc.password, max_study_files=3)
    detail = _one_line(few.client.post(f"/pacs/studies/{uid}/analyze", headers=few.user("kimi")), 413)
    assert "4 instances" in detail
    assert few.storage.list_scans(few.storage.get_user("kimi").id, ScanQuery()).total == 0


def test_analyze_without_a_configured_pacs_is_a_404(api: Any) -> None:
    detail = _one_line(api.client.post("/pacs/studies/1.2.3/analyze", headers=api.user("lea")), 404)
    assert detail.startswith("no PACS is configured")
