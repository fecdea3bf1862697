"""``/studies``: a whole series in (DICOM files, one zip, or a NIfTI volume), one result per slice and a study
outcome out; owner-only, de-identified, atomic, in the history; limits answered 413/422 with a reason.

The studies are built from real slices of ``../shared/data`` (tests/studies.py); the model is the smoke export
(its gate left out, as in every API test), so every slice is assessed.
"""

from __future__ import annotations

import io
import itertools
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest

from braintumor.storage import ScanQuery

from ..dicom_files import IDENTITY, mr_series
from ..studies import nifti_volume, real_slices


def _encode(ds: Any) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _zip(files: list[tuple[str, bytes]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("study/", b"")  # a folder entry: left out
        for name, data in files:
            z.writestr(name, data)
    return buf.getvalue()


@pytest.fixture(scope="module")
def series12(shared_data: Path) -> list[Any]:
    """A 12-slice axial MR series of real slices, with a patient's identity in every header."""
    return mr_series(real_slices(shared_data, 12, side=96, label="yes"))


@pytest.fixture(scope="module")
def zipped12(series12: list[Any]) -> bytes:
    order = [7, 2, 11, 0, 5, 9, 1, 4, 10, 3, 8, 6]  # file order is not slice order
    return _zip([(f"study/IM{k:03d}.dcm", _encode(series12[i])) for k, i in enumerate(order)])


def _post(api: Any, headers: dict[str, str], files: list[tuple[str, bytes]]) -> Any:
    return api.client.post("/studies", headers=headers, files=[("files", (n, d)) for n, d in files])


@pytest.mark.parametrize("backend", ["embedded", "secantus"])
def test_a_zipped_12_slice_series_gives_12_slice_results_and_a_study_outcome(
    make_api: Any, backend: str, zipped12: bytes, series12: list[Any]
) -> None:
    api = make_api(backend)
    alice, bob = api.user("alice"), api.user("bob")
    r = _post(api, alice, [("series.zip", zipped12)])
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/studies/{body['id']}" and body["kind"] == "study"
    assert body["outcome"] in ("tumor", "refer", "no_tumor") and body["reason"]
    assert body["filename"] == "series.zip" and body["source_kind"] == "dicom"
    assert len(body["slices"]) == 12 and [s["index"] for s in body["slices"]] == list(range(12))
    positions = [s["position"] for s in body["slices"]]
    assert positions == sorted(positions) == [5.0 * n for n in range(1, 13)]  # slice order, not file order
    assert all(s["status"] == "ok" and 0 <= s["p_tumor"] <= 1 for s in body["slices"])
    assert body["p_tumor"] == pytest.approx(max(s["p_tumor"] for s in body["slices"]))
    assert body["series"][0]["p_tumor_curve"] == [s["p_tumor"] for s in body["slices"]]
    assert body["rule"] == {"consecutive": 2, "min_coverage": 0.5} and "2-D slices" in body["note"]
    assert body["top_slices"][0]["p_tumor"] == max(s["p_tumor"] for s in body["slices"])
    assert body["refer_low"] <= body["threshold"] <= body["refer_high"]
    outcomes = [s["outcome"] for s in body["slices"]]
    tumor_run = any(a == b == "tumor" for a, b in itertools.pairwise(outcomes))
    assert (body["outcome"] == "tumor") == tumor_run

    # each slice's views are served to the owner only
    first = body["slices"][0]
    view = api.client.get(first["image_url"], headers=alice)
    assert view.status_code == 200 and view.headers["content-type"] == "image/png"
    assert api.client.get(first["overlay_url"], headers=alice).status_code == 200
    assert api.client.get(first["image_url"], headers=bob).status_code == 404

    # owner-only, exactly like a missing id
    assert api.client.get(f"/studies/{body['id']}", headers=alice).json() == body
    for method in ("get", "delete"):
        other = getattr(api.client, method)(f"/studies/{body['id']}", headers=bob)
        missing = getattr(api.client, method)("/studies/" + "0" * 32, headers=bob)
        assert other.status_code == missing.status_code == 404 and other.json() == missing.json()

    # in the history, beside scans, with a kind filter; /history/{id} says where a study is
    rows = api.client.get("/history", headers=alice).json()["items"]
    assert [(x["id"], x["kind"], x["url"], x["slice_count"]) for x in rows] == [
        (body["id"], "study", f"/studies/{body['id']}", 12)
    ]
    assert body["slice_count"] == 12
    assert api.client.get("/history?kind=scan", headers=alice).json()["total"] == 0
    assert api.client.get("/history?kind=study", headers=alice).json()["total"] == 1
    as_scan = api.client.get(f"/history/{body['id']}", headers=alice)
    assert as_scan.status_code == 404 and f"/studies/{body['id']}" in as_scan.json()["detail"]
    assert api.client.get("/history/stats", headers=alice).json()["scans"] == 1

    # delete removes the record and every file
    assert api.client.delete(f"/studies/{body['id']}", headers=alice).status_code == 204
    assert api.client.get(f"/studies/{body['id']}", headers=alice).status_code == 404
    assert api.client.get(first["image_url"], headers=alice).status_code == 404
    report = api.storage.check()
    assert report.ok and not report.orphan_blobs


def test_a_study_is_stored_de_identified(api: Any, zipped12: bytes, series12: list[Any]) -> None:
    alice = api.user("alice")
    body = _post(api, alice, [("series.zip", zipped12)]).json()
    assert body["deidentified"] is True
    original_uids = {series12[0].StudyInstanceUID, series12[0].SeriesInstanceUID} | {d.SOPInstanceUID for d in series12}
    assert body["study_uid"] and body["study_uid"] not in original_uids
    assert not {s["sop_instance_uid"] for s in body["slices"]} & original_uids
    rec = api.storage.get_scan(body["id"])
    text = json.dumps(rec.result)
    sources = [api.storage.get_file(f.id)[1] for kind, f in rec.files.items() if kind.startswith("source.")]
    assert len(sources) == 12
    for value in (*IDENTITY.values(), "ACC-7", *original_uids):
        assert value not in text
        assert all(value.encode() not in data for data in sources), value
    stored = pydicom.dcmread(io.BytesIO(sources[0]))
    assert stored.PatientIdentityRemoved == "YES" and stored.StudyInstanceUID == body["study_uid"]


def test_separate_files_and_a_zip_give_the_same_study(api: Any, zipped12: bytes, series12: list[Any]) -> None:
    alice = api.user("alice")
    from_zip = _post(api, alice, [("series.zip", zipped12)]).json()
    loose = _post(api, alice, [(f"IM{i}.dcm", _encode(d)) for i, d in reversed(list(enumerate(series12)))])
    assert loose.status_code == 201, loose.text
    body = loose.json()
    assert body["filename"] == "12 files" and body["study_uid"] == from_zip["study_uid"]  # the same salted UIDs
    assert [s["p_tumor"] for s in body["slices"]] == pytest.approx([s["p_tumor"] for s in from_zip["slices"]])


def test_a_nifti_volume_is_a_study_without_stored_headers(api: Any, shared_data: Path, tmp_path: Path) -> None:
    alice = api.user("alice")
    path = nifti_volume(real_slices(shared_data, 6, side=96), np.diag([0.5, 0.5, 5.0, 1.0]), tmp_path / "v.nii.gz")
    r = _post(api, alice, [("brain.nii.gz", path.read_bytes())])
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["source_kind"] == "nifti" and body["study_uid"] == "" and len(body["slices"]) == 6
    rec = api.storage.get_scan(body["id"])
    assert not [k for k in rec.files if k.startswith("source.")]
    assert {k.rsplit(".", 1)[-1] for k in rec.files} == {"image", "overlay", "cam"}


def test_a_scout_and_a_non_mr_series_are_skipped_with_their_reasons(
    api: Any, series12: list[Any], shared_data: Path
) -> None:
    alice = api.user("alice")
    scout = mr_series(real_slices(shared_data, 1, side=96), description="LOCALIZER")
    scout[0].StudyInstanceUID = series12[0].StudyInstanceUID
    scout[0].ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    files = [(f"IM{i}.dcm", _encode(d)) for i, d in enumerate(series12[:4])] + [("scout.dcm", _encode(scout[0]))]
    files.append(("notes.txt", b"not a dicom file at all"))
    body = _post(api, alice, files).json()
    assert len(body["slices"]) == 4 and len(body["series"]) == 1
    assert [s["reason"] for s in body["skipped_series"]] and "LOCALIZER" in body["skipped_series"][0]["reason"]
    assert body["problems"] == [{"source": "notes.txt", "reason": "not a DICOM file (decided by content)"}]


@pytest.mark.parametrize(
    ("overrides", "status", "words"),
    [
        ({"max_study_files": 3}, 413, "too many files"),
        ({"max_study_slices": 5}, 413, "too many slices"),
        ({"max_study_mb": 0.05}, 413, "too large"),
    ],
)
def test_limits_are_413_and_store_nothing(
    make_api: Any, series12: list[Any], overrides: dict[str, Any], status: int, words: str
) -> None:
    api = make_api(**overrides)
    alice = api.user("alice")
    r = _post(api, alice, [(f"IM{i}.dcm", _encode(d)) for i, d in enumerate(series12[:6])])
    assert r.status_code == status and words in r.json()["detail"], r.text
    assert api.storage.list_scans(api.storage.get_user("alice").id, ScanQuery()).total == 0
    assert api.storage.check().ok


def test_a_zip_that_declares_more_than_the_cap_is_413_before_inflating(make_api: Any) -> None:
    api = make_api(max_study_mb=1)
    alice = api.user("alice")
    bomb = _zip([("zeros.dcm", b"\0" * (3 << 20))])  # 3 MB of zeros deflate to a few KB
    r = _post(api, alice, [("bomb.zip", bomb)])
    assert r.status_code == 413 and "inflates" in r.json()["detail"]


@pytest.mark.parametrize(
    ("case", "words"),
    [
        ("two studies", "2 studies"),
        ("zip and files", "not both"),
        ("nothing dicom", "no DICOM series"),
        ("zip in zip", "itself a zip"),
        ("broken zip", "not a readable zip"),
    ],
)
def test_uploads_that_are_not_one_study_are_422_with_the_reason(
    api: Any, series12: list[Any], shared_data: Path, case: str, words: str
) -> None:
    alice = api.user("alice")
    files = [(f"IM{i}.dcm", _encode(d)) for i, d in enumerate(series12[:3])]
    if case == "two studies":
        files += [("other.dcm", _encode(mr_series(real_slices(shared_data, 1, side=96))[0]))]
    elif case == "zip and files":
        files += [("more.zip", _zip(files[:1]))]
    elif case == "nothing dicom":
        files = [("a.txt", b"hello"), ("b.bin", b"\x00" * 500)]
    elif case == "zip in zip":
        files = [("outer.zip", _zip([("inner.zip", _zip(files))]))]
    else:
        files = [("broken.zip", _zip(files)[:200])]
    r = _post(api, alice, files)
    assert r.status_code == 422 and words in r.json()["detail"], r.text
    assert api.client.get("/history", headers=alice).json()["total"] == 0


def test_a_study_nothing_of_which_can_be_assessed_is_422(
    make_api: Any, gated_predictor: Any, series12: list[Any]
) -> None:
    api = make_api(predictor=gated_predictor)
    alice = api.user("alice")
    r = _post(api, alice, [(f"IM{i}.dcm", _encode(d)) for i, d in enumerate(series12[:3])])
    assert r.status_code == 422 and "no slice of the study could be assessed" in r.json()["detail"]
    assert "photograph" in r.json()["detail"]  # the gate's own reason
    assert api.storage.check().ok


def test_studies_need_a_token(api: Any, zipped12: bytes) -> None:
    assert api.client.post("/studies", files=[("files", ("s.zip", zipped12))]).status_code == 401
    assert api.client.get("/studies/" + "0" * 32).status_code == 401


def test_the_study_report_has_the_outcome_rule_note_series_curve_and_top_slices(
    api: Any, zipped12: bytes, tmp_path: Path
) -> None:
    from .test_report import pdf_text

    alice, bob = api.user("alice"), api.user("bob")
    body = _post(api, alice, [("series.zip", zipped12)]).json()
    r = api.client.get(body["report_url"], headers=alice)
    assert r.status_code == 200 and r.headers["content-type"] == "application/pdf" and r.content[:5] == b"%PDF-"
    text = " ".join(pdf_text(r.content, tmp_path).split())
    outcome = {"tumor": "tumor", "refer": "refer for review", "no_tumor": "no tumor"}[body["outcome"]]
    for expected in (
        "Brain MRI study report",
        "DECISION SUPPORT, NOT A DIAGNOSIS",
        f"Study outcome {outcome}",
        "2 consecutive assessed slices are tumor",
        "validated on 2-D slices, not on studies",
        "12 scored in 1 series, 12 assessable",
        "p(tumor) per slice",
        "most suspicious slices",
        f"slice {body['top_slices'][0]['index']}",
        body["model_name"],
    ):
        assert expected in text, expected
    assert body["study_uid"] in text and "Doe" not in text and "MRN-0042" not in text
    assert api.client.get(body["report_url"], headers=bob).status_code == 404
    scan_report = api.client.get(f"/history/{body['id']}/report.pdf", headers=alice)
    assert scan_report.status_code == 404 and "/studies/" in scan_report.json()["detail"]
