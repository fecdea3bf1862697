"""Scans: /predict on PNG, JPEG and DICOM (de-identified), history, files, deletes, the gate and no-model paths."""

from __future__ import annotations

import datetime as dt
import io
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image

from braintumor.imaging.overlay import JET


def test_predict_png_returns_the_full_result(api: Any, scan_png: bytes) -> None:
    headers = api.user("alice")
    r = api.upload(headers, scan_png, "..\\..\\etc/Brain (1).png")
    assert r.status_code == 201, r.text
    body = r.json()
    assert r.headers["location"] == f"/history/{body['id']}"
    assert body["filename"] == "Brain (1).png"
    assert body["outcome"] in ("tumor", "refer", "no_tumor") and "label" not in body and "band" not in body
    assert body["outcome"] == body["result"]["outcome"]
    assert 0 <= body["p_tumor"] <= 1 and body["threshold"] == pytest.approx(body["result"]["threshold"])
    assert body["model_name"] and body["model_version"] == body["result"]["model_version"]
    assert [m["arch"] for m in body["members"]] == ["mobilenet_v3_small"]
    assert set(body["files"]) == {"original", "heatmap", "overlay", "cam"}
    preview = np.array(body["heatmap"]["values"])
    assert preview.shape == (32, 32) and preview.min() >= 0 and preview.max() <= 1
    assert body["image"] == {"format": "png", "width": 160, "height": 128, "frames": 1, "notes": []}
    assert "not a diagnosis" in body["disclaimer"] and body["dicom"] == {} and body["deidentified"] is False
    assert body["result"]["members"][0]["p_tumor"] == pytest.approx(body["p_tumor"])

    original = api.client.get(body["files"]["original"]["url"], headers=headers)
    assert original.status_code == 200 and original.content == scan_png
    assert original.headers["content-type"] == "image/png" and original.headers["cache-control"] == "no-store"
    for kind in ("heatmap", "overlay"):
        got = api.client.get(body["files"][kind]["url"], headers=headers)
        assert Image.open(io.BytesIO(got.content)).size == (160, 128)
    # the heatmap is a palette PNG of the jet table: decoded, every pixel is one of the table's colours
    heat = Image.open(io.BytesIO(api.client.get(body["files"]["heatmap"]["url"], headers=headers).content))
    colours = np.asarray(heat.convert("RGB")).reshape(-1, 3)
    assert heat.mode == "P" and len(np.unique(colours, axis=0)) > 1
    assert (colours[:, None, :] == JET[None, :, :]).all(axis=2).any(axis=1).all()
    cam = api.client.get(body["files"]["cam"]["url"], headers=headers)
    arr = np.load(io.BytesIO(cam.content), allow_pickle=False)
    assert arr.dtype == np.float16 and arr.shape == (128, 160)
    assert "attachment" in cam.headers["content-disposition"]
    again = api.client.get(f"/history/{body['id']}", headers=headers).json()
    assert again == body


def test_predict_jpeg_and_dicom(api: Any, scan_jpeg: bytes, scan_dicom: bytes) -> None:
    headers = api.user("alice")
    jpeg = api.scan(headers, scan_jpeg, "slice.JPG")
    assert jpeg["image"]["format"] == "jpeg" and jpeg["files"]["original"]["content_type"] == "image/jpeg"
    dcm = api.scan(headers, scan_dicom, "study.dcm")
    assert dcm["image"]["format"] == "dicom" and dcm["deidentified"] is True
    assert dcm["dicom"]["Modality"] == "MR" and "PatientName" not in dcm["dicom"]
    assert "StudyDescription" not in dcm["dicom"]
    stored = api.client.get(dcm["files"]["original"]["url"], headers=headers)
    assert stored.headers["content-type"] == "application/dicom"
    for secret in (b"Doe^Jane", b"MRN-0042", b"19700101", b"St. Example", b"House^Gregory", b"Jane Doe"):
        assert secret not in stored.content
        assert secret.decode() not in str(api.client.get(f"/history/{dcm['id']}", headers=headers).json())
    ds = pydicom.dcmread(io.BytesIO(stored.content))
    assert ds.PatientIdentityRemoved == "YES"


@pytest.mark.parametrize("fmt", ["BMP", "TIFF"])
def test_bmp_and_tiff_are_analysed_and_stored_as_png(api: Any, brain: Any, encoder: Any, fmt: str) -> None:
    """The API takes what the reader reads (issue 14 item 3); the stored copy is a PNG of the pixels (TIFF tags may
    hold identifiers), and its report renders."""
    headers = api.user("alice")
    data = encoder(brain(3, 150, 120), fmt)
    body = api.scan(headers, data, f"scan.{fmt.lower()}")
    assert body["image"]["format"] == fmt.lower() and (body["image"]["width"], body["image"]["height"]) == (150, 120)
    assert body["files"]["original"]["content_type"] == "image/png"
    stored = api.client.get(body["files"]["original"]["url"], headers=headers).content
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(stored)).convert("L")),
                          np.asarray(Image.open(io.BytesIO(data)).convert("L")))  # fmt: skip
    assert api.client.get(body["report_url"], headers=headers).status_code == 200


def test_history_stats_count_one_outcome_per_scan(api: Any, brain: Any, encoder: Any) -> None:
    """The Dashboard's numbers come from one call (issue 14 item 9) and add up to the scans (item 1)."""
    headers = api.user("alice")
    made = [api.scan(headers, encoder(brain(seed, 128, 128), "PNG"), f"{seed}.png") for seed in range(4)]
    other = api.user("bob")
    api.scan(other, encoder(brain(9, 128, 128), "PNG"))
    stats = api.client.get("/history/stats", headers=headers).json()
    assert stats["scans"] == 4 and sum(stats["outcomes"].values()) == 4
    assert stats["outcomes"] == {o: sum(m["outcome"] == o for m in made) for o in {m["outcome"] for m in made}}
    assert stats["mean_p_tumor"] == pytest.approx(sum(m["p_tumor"] for m in made) / 4)
    assert stats["models"] == [{"model": f"{made[0]['model_name']} v{made[0]['model_version']}", "scans": 4}]
    assert sum(sum(v) for v in stats["histogram"].values()) == 4 and stats["threshold"] == made[-1]["threshold"]
    today = dt.datetime.now(dt.UTC).date()
    assert sum(d["scans"] for d in stats["per_day"] if d["date"] == today.isoformat()) == 4
    later = {"date_from": (today + dt.timedelta(days=2)).isoformat()}
    assert api.client.get("/history/stats", headers=headers, params=later).json()["scans"] == 0
    bad = api.client.get("/history/stats", headers=headers, params={"utc_offset_minutes": 5000})
    assert bad.status_code == 422


def test_an_ensemble_stores_and_serves_one_overlay_per_member(
    make_api: Any, smoke_export: Any, tmp_path: Any, scan_png: bytes
) -> None:
    """Per-member heatmaps (issue 14 item 9): each member's Grad-CAM map is a file of the scan, named by its member
    (float16 .npy at most 256 px a side, as the ensemble's; the viewer blends it), and the ensemble's map is their
    mean."""
    import dataclasses
    import json
    import shutil

    from braintumor.inference.predictor import Predictor

    root = tmp_path / "ens"
    shutil.copytree(smoke_export, root / "a")
    shutil.copytree(smoke_export, root / "b")
    members = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    (root / "ensemble.json").write_text(json.dumps({"name": "pair", "version": "2", "members": members}))
    ensemble = Predictor.load(root, threads=1)
    api = make_api(predictor=dataclasses.replace(ensemble, gate=None))
    headers = api.user("alice")
    body = api.scan(headers, scan_png)
    kinds = [m["heatmap"] for m in body["members"]]
    assert kinds == ["cam.0", "cam.1"] and set(kinds) <= set(body["files"])
    maps = []
    for m in [*body["members"], {"heatmap": "cam"}]:
        got = api.client.get(body["files"][m["heatmap"]]["url"], headers=headers)
        assert got.status_code == 200 and got.headers["content-type"] == "application/x-npy"
        maps.append(np.load(io.BytesIO(got.content), allow_pickle=False))
        assert maps[-1].dtype == np.float16 and maps[-1].shape == (128, 160)  # the scan's 160×128, under 256
        assert m.get("outcome", "tumor") in ("tumor", "refer", "no_tumor")
    members = [m.astype(np.float32) for m in maps[:2]]
    assert np.allclose(maps[2].astype(np.float32), np.mean(members, axis=0), atol=2e-3)


def test_sites_may_keep_dicom_identifiers(make_api: Any, scan_dicom: bytes) -> None:
    api = make_api(keep_dicom_identifiers=True)
    headers = api.user("alice")
    dcm = api.scan(headers, scan_dicom, "study.dcm")
    assert dcm["deidentified"] is False and dcm["dicom"]["PatientName"] == "Doe^Jane"
    stored = api.client.get(dcm["files"]["original"]["url"], headers=headers)
    assert stored.content == scan_dicom


def test_not_an_mri_is_422_and_nothing_is_stored(make_api: Any, gated_predictor: Any, scan_png: bytes) -> None:
    api = make_api(predictor=gated_predictor)
    headers = api.user("alice")
    r = api.upload(headers, scan_png)
    assert r.status_code == 422 and "not a brain MRI" in r.json()["detail"] and r.json()["code"] == "not_mri"
    assert api.client.get("/history", headers=headers).json()["total"] == 0
    assert api.storage.check().ok and not api.storage.check().orphan_blobs
    assert not any((api.settings.data_dir / "blobs").glob("*/*"))


def test_refusals_name_their_kind(make_api: Any, scan_png: bytes) -> None:
    """Issue 14 item 8: an unusual but genuine MRI (pydicom's MR_small.dcm) is ``out_of_scope``, apart from
    ``not_mri`` (a colour photo) and ``unreadable`` (a truncated file); nothing is stored for any of them."""
    from pydicom.data import get_testdata_file

    from braintumor.inference.bundled import bundled_model_dir
    from braintumor.inference.predictor import Predictor

    found = bundled_model_dir()
    if found is None:
        pytest.skip("this installation carries no bundled model (its gate is what is tested)")
    api = make_api(predictor=Predictor.load(found, threads=1))
    headers = api.user("alice")
    from skimage.data import chelsea

    photo = io.BytesIO()
    Image.fromarray(chelsea()).save(photo, "PNG")
    cases = {
        "out_of_scope": (Path(str(get_testdata_file("MR_small.dcm"))).read_bytes(), "validated on"),
        "not_mri": (photo.getvalue(), "colour image"),
        "unreadable": (scan_png[:100], "PNG"),
    }
    for code, (data, words) in cases.items():
        r = api.upload(headers, data)
        assert r.status_code == 422 and r.json()["code"] == code and words in r.json()["detail"], (code, r.text)
    assert api.client.get("/history", headers=headers).json()["total"] == 0


def test_without_a_model_predict_is_503_and_health_says_why(
    make_api: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any, scan_png: bytes
) -> None:
    import braintumor.api.app as app_module

    monkeypatch.setattr(app_module, "BUNDLED_MODEL", tmp_path / "nowhere")
    api = make_api(predictor=None)
    health = api.client.get("/health").json()
    assert health["status"] == "degraded" and health["model"]["loaded"] is False
    assert "BRAINTUMOR_MODEL_DIR" in health["model"]["reason"]
    headers = api.user("alice")
    r = api.upload(headers, scan_png)
    assert r.status_code == 503 and "BRAINTUMOR_MODEL_DIR" in r.json()["detail"]
    assert api.client.get("/history", headers=headers).status_code == 200


def test_a_broken_model_dir_is_reported_without_paths(make_api: Any, tmp_path: Any) -> None:
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "card.json").write_text("{not json")
    api = make_api(predictor=None, model_dir=broken)
    model = api.client.get("/health").json()["model"]
    assert model["loaded"] is False and str(tmp_path) not in model["reason"]


def test_health_with_model(api: Any) -> None:
    r = api.client.get("/health")
    body = r.json()
    assert r.status_code == 200 and body["status"] == "ok"
    assert body["model"]["loaded"] and body["model"]["card"]["members"][0]["arch"] == "mobilenet_v3_small"
    assert body["storage"] == {"backend": "embedded", "reachable": True}
    assert r.headers["x-request-id"]


def test_history_pagination_search_filters(api: Any, scan_png: bytes, brain: Any, encoder: Any) -> None:
    headers = api.user("alice")
    made = []
    for i, name in enumerate(["a (1).png", "b.png", "A.*.png", "c.png", "d.png"]):
        made.append(api.scan(headers, encoder(brain(i, 96, 96), "PNG"), name))
    page = api.client.get("/history", headers=headers, params={"page_size": 2}).json()
    assert page["total"] == 5 and page["pages"] == 3 and len(page["items"]) == 2
    assert [i["id"] for i in page["items"]] == [made[4]["id"], made[3]["id"]]  # newest first
    last = api.client.get("/history", headers=headers, params={"page_size": 2, "page": 3}).json()
    assert [i["id"] for i in last["items"]] == [made[0]["id"]]

    def search(q: str) -> list[str]:
        return [i["filename"] for i in api.client.get("/history", headers=headers, params={"q": q}).json()["items"]]

    assert search("(1)") == ["a (1).png"]
    assert search(".*") == ["A.*.png"]
    assert sorted(search("A")) == ["A.*.png", "a (1).png"]
    assert search("^") == [] and search("$regex") == []
    outcome = made[0]["outcome"]
    by_outcome = api.client.get("/history", headers=headers, params={"outcome": outcome}).json()
    assert by_outcome["total"] == sum(m["outcome"] == outcome for m in made)
    assert {i["outcome"] for i in by_outcome["items"]} == {outcome}
    today = dt.datetime.now(dt.UTC).date()
    window = {"date_from": today.isoformat(), "date_to": today.isoformat()}
    assert api.client.get("/history", headers=headers, params=window).json()["total"] == 5
    past = {"date_to": (today - dt.timedelta(days=1)).isoformat()}
    assert api.client.get("/history", headers=headers, params=past).json()["total"] == 0
    swapped = {"date_from": today.isoformat(), "date_to": (today - dt.timedelta(days=1)).isoformat()}
    assert api.client.get("/history", headers=headers, params=swapped).status_code == 400
    for bad in ({"page": 0}, {"page_size": 1000}, {"outcome": "maybe"}, {"date_from": "yesterday"}):
        assert api.client.get("/history", headers=headers, params=bad).status_code == 422


def test_delete_one_and_bulk(api: Any, scan_png: bytes, scan_jpeg: bytes) -> None:
    headers = api.user("alice")
    bob = api.user("bob")
    a, b, c = (api.scan(headers, d) for d in (scan_png, scan_jpeg, scan_png))
    theirs = api.scan(bob, scan_png)
    assert api.client.delete(f"/history/{a['id']}", headers=headers).status_code == 204
    assert api.client.get(f"/history/{a['id']}", headers=headers).status_code == 404
    assert api.client.get(a["files"]["heatmap"]["url"], headers=headers).status_code == 404
    assert api.client.delete(f"/history/{a['id']}", headers=headers).status_code == 404
    r = api.client.post("/history/delete", headers=headers, json={"ids": [b["id"], c["id"], theirs["id"], "nope"]})
    assert r.status_code == 200
    assert sorted(r.json()["deleted"]) == sorted([b["id"], c["id"]])
    assert r.json()["not_found"] == [theirs["id"], "nope"]
    assert api.client.get("/history", headers=headers).json()["total"] == 0
    assert api.client.get(theirs["files"]["original"]["url"], headers=bob).status_code == 200
    assert api.storage.check().ok
    assert api.client.post("/history/delete", headers=headers, json={"ids": []}).status_code == 422


def test_audit_log_records_who_did_what_without_patient_data(api: Any, scan_dicom: bytes) -> None:
    headers = api.user("alice")
    scan = api.scan(headers, scan_dicom, "Doe_Jane.dcm")
    api.client.get(f"/history/{scan['id']}", headers=headers)
    api.client.get(scan["files"]["original"]["url"], headers=headers)
    api.client.get(scan["report_url"], headers=headers)
    api.client.delete(f"/history/{scan['id']}", headers=headers)
    import json

    lines = [json.loads(x) for x in api.settings.audit_log_path.read_text().splitlines()]
    seen = {(e["actor"], e["action"], e["target"]) for e in lines}
    for action in ("scan.create", "scan.view", "report.download", "scan.delete"):
        assert ("alice", action, scan["id"]) in seen, action
    assert ("alice", "file.download", scan["files"]["original"]["id"]) in seen
    text = api.settings.audit_log_path.read_text()
    assert "Doe" not in text and "correct-horse" not in text and "Bearer" not in text
    assert all(e["request_id"] != "-" for e in lines)
    import stat

    assert stat.S_IMODE(api.settings.audit_log_path.stat().st_mode) == 0o600


def test_clean_filename() -> None:
    from braintumor.api.analysis import clean_filename

    assert clean_filename("C:\\scans\\a\x00b\n.png") == "ab.png"
    assert clean_filename("") == clean_filename(None) == "upload"
    assert len(clean_filename("x" * 500)) == 200
