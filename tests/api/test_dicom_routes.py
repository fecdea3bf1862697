"""``GET /history/{id}/dicom``: a DICOM scan's SR + heatmap Secondary Capture in a zip, built from what was stored.

The zip is read back with pydicom and highdicom: the SR reports the stored outcome and p(tumor) and references the
stored (de-identified) original, the SC references it too, both sit in its study, and neither carries an identifier
the stored original lacks; they pass dciodvfy. A PNG scan has no DICOM to reference (409); a DICOM study gets one
SR per series and one SC per slice, a NIfTI study none (409); another user's scan is a 404 like a missing one, and
the model is not needed (nor run) to write them.
"""

from __future__ import annotations

import io
import json
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, SecondaryCaptureImageStorage

from braintumor.imaging.io import load_image
from braintumor.imaging.overlay import overlay

from ..conftest import make_brain
from ..dicom_files import IDENTITY, encoded, mr_series
from ..interop.conftest import dciodvfy, evaluations, evidence_uids

__all__ = ["dciodvfy"]  # dicom3tools' validator, a session fixture of tests/interop

#: Attributes that identify a patient or a visit; whatever the stored original lacks (or has empty), the results
#: must lack too.
IDENTIFYING = (
    *IDENTITY,
    "PatientAddress",
    "OtherPatientIDs",
    "StudyDescription",
    "AccessionNumber",
    "StudyDate",
    "StudyTime",
    "PerformingPhysicianName",
    "OperatorsName",
    "InstitutionAddress",
)


def _stored(api: Any, headers: dict[str, str], scan: dict[str, Any], kind: str) -> bytes:
    r = api.client.get(scan["files"][kind]["url"], headers=headers)
    assert r.status_code == 200, r.text
    return bytes(r.content)


def _results(api: Any, headers: dict[str, str], scan_id: str) -> dict[str, bytes]:
    r = api.client.get(f"/history/{scan_id}/dicom", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"] == f'attachment; filename="scan-{scan_id}-dicom.zip"'
    with zipfile.ZipFile(io.BytesIO(r.content)) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def test_a_dicom_scan_comes_back_as_sr_and_secondary_capture(api: Any, scan_dicom: bytes) -> None:
    headers = api.user("alice")
    scan = api.scan(headers, scan_dicom, "study.dcm")
    original = pydicom.dcmread(io.BytesIO(_stored(api, headers, scan, "original")))
    files = _results(api, headers, scan["id"])

    assert sorted(n[:3] for n in files) == ["SC_", "SR_"]
    (sr_name,) = [n for n in files if n.startswith("SR_")]
    (sc_name,) = [n for n in files if n.startswith("SC_")]
    sr = hd.sr.srread(io.BytesIO(files[sr_name]))
    sc = pydicom.dcmread(io.BytesIO(files[sc_name]))
    assert sr.SOPClassUID == ComprehensiveSRStorage and sc.SOPClassUID == SecondaryCaptureImageStorage
    assert sr_name == f"SR_{sr.SOPInstanceUID}.dcm" and sc_name == f"SC_{sc.SOPInstanceUID}.dcm"

    # both in the stored original's study, both referencing the stored original
    assert sr.StudyInstanceUID == sc.StudyInstanceUID == original.StudyInstanceUID
    assert evidence_uids(sr) == {original.SOPInstanceUID}
    (group,) = sr.content.get_image_measurement_groups()
    assert group.source_images[0].referenced_sop_instance_uid == original.SOPInstanceUID
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == original.SOPInstanceUID

    # the stored answer, not a new one
    assert (
        evaluations(group)["OUTCOME"] == {"tumor": "TUMOR", "refer": "REFER", "no_tumor": "NO_TUMOR"}[scan["outcome"]]
    )
    measurements = {m.name.value: m.value for m in group.get_measurements()}
    assert measurements["P_TUMOR"] == pytest.approx(scan["p_tumor"], abs=1e-6)
    assert sr.VerificationFlag == "UNVERIFIED" and "NOT FOR DIAGNOSTIC USE" in sr.SeriesDescription

    # the heatmap: the stored map over the stored original's pixels, at its size
    cam = np.load(io.BytesIO(_stored(api, headers, scan, "cam")), allow_pickle=False).astype(np.float32)
    pixels = load_image(_stored(api, headers, scan, "original")).pixels
    np.testing.assert_array_equal(sc.pixel_array, overlay(pixels, cam, alpha=api.settings.overlay_alpha))

    # de-identification holds: nothing the stored original lacks
    for ds in (sr, sc):
        assert ds.PatientIdentityRemoved == "YES"
        for keyword in IDENTIFYING:
            if not original.get(keyword):
                assert not ds.get(keyword), (ds.SOPClassUID.name, keyword)
            else:
                assert ds.get(keyword) == original.get(keyword), (ds.SOPClassUID.name, keyword)
    for data in files.values():
        for value in (*IDENTITY.values(), "Jane Doe", "Doe^Jane"):
            assert value.encode() not in data, value

    audit = [json.loads(line) for line in api.settings.audit_log_path.read_text().splitlines()]
    assert any({"action": "dicom.download", "actor": "alice", "target": scan["id"]}.items() <= e.items() for e in audit)


def test_the_files_pass_dciodvfy(
    api: Any, scan_dicom: bytes, dciodvfy: Callable[[Path, str], list[str]], tmp_path: Path
) -> None:
    headers = api.user("dicom3tools")
    scan = api.scan(headers, scan_dicom, "study.dcm")
    for name, data in _results(api, headers, scan["id"]).items():
        (tmp_path / name).write_bytes(data)
        dciodvfy(tmp_path / name, "ComprehensiveSR" if name.startswith("SR_") else "SCImage")


def test_results_are_written_from_what_was_stored_without_the_model(api: Any, scan_dicom: bytes) -> None:
    headers = api.user("bob")
    scan = api.scan(headers, scan_dicom, "study.dcm")
    api.app.state.predictor = None  # /predict would answer 503 now; the results need no model
    files = _results(api, headers, scan["id"])
    assert len(files) == 2


def test_a_scan_that_was_not_dicom_has_no_dicom_results(api: Any, scan_png: bytes) -> None:
    headers = api.user("carol")
    scan = api.scan(headers, scan_png, "slice.png")
    r = api.client.get(f"/history/{scan['id']}/dicom", headers=headers)
    assert r.status_code == 409
    detail = r.json()["detail"]
    assert "not a DICOM upload" in detail and "\n" not in detail


def test_another_users_scan_is_not_found_like_a_missing_one(api: Any, scan_dicom: bytes) -> None:
    owner = api.user("dora")
    other = api.user("eve")
    scan = api.scan(owner, scan_dicom, "study.dcm")
    theirs = api.client.get(f"/history/{scan['id']}/dicom", headers=other)
    missing = api.client.get("/history/0123456789abcdef/dicom", headers=other)
    assert theirs.status_code == missing.status_code == 404
    assert theirs.json()["detail"] == missing.json()["detail"] == "scan not found"
    assert api.client.get(f"/history/{scan['id']}/dicom").status_code == 401


def test_a_dicom_study_comes_back_as_one_sr_per_series_and_one_capture_per_slice(
    api: Any, dciodvfy: Callable[[Path, str], list[str]], tmp_path: Path
) -> None:
    headers = api.user("frida")
    series = mr_series([make_brain(seed, 96, 96).astype(np.uint8) for seed in (4, 5, 6)])
    r = api.client.post(
        "/studies", headers=headers, files=[("files", (f"IM{i}.dcm", encoded(ds))) for i, ds in enumerate(series)]
    )
    assert r.status_code == 201, r.text
    study = r.json()
    answer = api.client.get(f"/history/{study['id']}/dicom", headers=headers)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/zip", answer.text
    with zipfile.ZipFile(io.BytesIO(answer.content)) as archive:
        files = {name: archive.read(name) for name in archive.namelist()}
    assert sorted(n[:3] for n in files) == ["SC_", "SC_", "SC_", "SR_"]
    (sr_name,) = [n for n in files if n.startswith("SR_")]
    sr = hd.sr.srread(io.BytesIO(files[sr_name]))
    stored = {s["sop_instance_uid"] for s in study["slices"]}
    assert sr.StudyInstanceUID == study["study_uid"] and evidence_uids(sr) == stored
    assert not stored & {ds.SOPInstanceUID for ds in series}  # the de-identified instances, not the uploaded ones
    groups = sr.content.get_image_measurement_groups()
    assert len(groups) == 1 + 3  # the series' answer, then one per slice
    group = groups[0]
    outcome = {"tumor": "TUMOR", "refer": "REFER", "no_tumor": "NO_TUMOR"}[study["series"][0]["outcome"]]
    assert evaluations(group)["OUTCOME"] == outcome
    measurements = {m.name.value: m.value for m in group.get_measurements()}
    assert measurements["P_TUMOR"] == pytest.approx(max(s["p_tumor"] for s in study["slices"]), abs=1e-6)
    captures = [pydicom.dcmread(io.BytesIO(d)) for n, d in files.items() if n.startswith("SC_")]
    assert {c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures} == stored
    for name, data in files.items():
        for value in (*IDENTITY.values(), "Doe^Jane"):
            assert value.encode() not in data, value
        path = tmp_path / name
        path.write_bytes(data)
        dciodvfy(path, "ComprehensiveSR" if name.startswith("SR_") else "SCImage")
    assert api.client.get(f"/history/{study['id']}/dicom", headers=api.user("gina")).status_code == 404


def test_a_nifti_study_has_no_dicom_results(api: Any, tmp_path: Path) -> None:
    import nibabel as nib

    headers = api.user("frida")
    volume = np.stack([make_brain(seed, 96, 96) for seed in (4, 5)], axis=2).astype(np.int16)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), tmp_path / "v.nii.gz")
    r = api.client.post(
        "/studies", headers=headers, files=[("files", ("v.nii.gz", (tmp_path / "v.nii.gz").read_bytes()))]
    )
    assert r.status_code == 201, r.text
    answer = api.client.get(f"/history/{r.json()['id']}/dicom", headers=headers)
    assert answer.status_code == 409 and "NIfTI" in answer.json()["detail"]
