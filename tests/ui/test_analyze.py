"""Analyze: several uploads at once, the result with its band, probability, members and threshold, the
viewer (opacity and zoom without a server call), DICOM de-identification, readable refusals, the PDF."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from braintumor.ui import state
from braintumor.ui.views import analyze


def upload(ui: Any, at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    at.button[0].click()  # "Analyze N scans"
    return at.run()


def test_batch_with_good_and_bad_files(ui, mri: Callable[[str], tuple[str, bytes]]) -> None:
    at, _ = ui.signed_in()
    tumor, healthy = mri("yes/Y1.jpg"), mri("no/1 no.jpeg")
    truncated = ("broken.jpg", tumor[1][:300])
    text = ("notes.txt", b"not an image at all")
    upload(ui, at, [tumor, healthy, truncated, text])
    assert not at.exception
    outcomes = at.session_state[analyze.RESULTS]
    assert [o.filename for o in outcomes] == ["Y1.jpg", "1 no.jpeg", "broken.jpg", "notes.txt"]
    assert [o.scan is not None for o in outcomes] == [True, True, False, False]
    errors = ui.errors(at)
    assert len(errors) == 2
    assert "broken.jpg" in errors[0] and "Unreadable image" in errors[0]
    assert "notes.txt" in errors[1] and "Unsupported file" in errors[1] and "BMP, TIFF and DICOM" in errors[1]
    assert "Traceback" not in "\n".join(errors)
    table = at.dataframe[0].value
    assert list(table["File"]) == ["Y1.jpg", "1 no.jpeg", "broken.jpg", "notes.txt"]

    scan = outcomes[0].scan
    page = ui.texts(at)
    title = {"tumor": "Tumor suspected", "refer": "Refer for expert review", "no_tumor": "No tumor detected"}
    assert title[scan.outcome] in page
    assert sum(t in page for t in title.values()) == 1  # one answer per scan: no second label beside it
    assert "label" not in page.lower()
    assert f"{100 * scan.p_tumor:.1f}%" in page
    metrics = {m.label: m.value for m in at.metric}
    assert "Threshold used" not in metrics
    assert metrics["Referral band"] == f"{100 * scan.refer_low:.1f}%–{100 * scan.refer_high:.1f}%"
    assert metrics["P(tumor), calibrated"] == f"{100 * scan.p_tumor:.1f}%"
    members = at.dataframe[1].value
    assert list(members["Member"]) == [m.name for m in scan.members]
    assert "Label" not in members.columns  # members are read under the ensemble's rule, with no answer of their own
    assert list(members["Under the ensemble's rule"]) == [
        {"tumor": "Tumor", "refer": "Refer", "no_tumor": "No tumor"}[m.outcome] for m in scan.members
    ]
    assert len(at.image) >= 2  # original, overlay (+ colour bar)
    if len(scan.members) > 1:  # each member's stored map, blended onto the scan here (its caption names it)
        assert [m.heatmap for m in scan.members] == [f"cam.{i}" for i in range(len(scan.members))]
        assert len(at.image) == 3 + len(scan.members)  # original, overlay, colour bar, one overlay a member
        assert not at.info, [i.value for i in at.info]  # no map failed to draw
    assert at.download_button[0].label == "Download PDF report"

    at.selectbox(key=analyze.SELECTED).set_value(1)  # the second result's details
    at.run()
    assert "#### 1 no.jpeg" in ui.texts(at)
    assert at.slider(key=f"analyze_{outcomes[1].scan.id}_zoom").value == 1.0
    key = f"analyze_{outcomes[1].scan.id}"
    assert not at.slider(key=f"{key}_opacity").disabled
    at.radio(key=f"{key}_mode").set_value("Heatmap only")
    at.run()
    assert at.slider(key=f"{key}_opacity").disabled  # the heatmap alone has no opacity to set (issue 14 item 9)


def test_opacity_and_zoom_are_drawn_here(ui, mri, requests_made: list[str]) -> None:
    at, _ = ui.signed_in()
    upload(ui, at, [mri("yes/Y1.jpg")])
    scan = at.session_state[analyze.RESULTS][0].scan
    key = f"analyze_{scan.id}"

    def images() -> list[str]:
        return [img.value[0] for img in at.image]

    before = images()
    requests_made.clear()
    at.slider(key=f"{key}_opacity").set_value(0.9)
    at.run()
    after_opacity = images()
    at.slider(key=f"{key}_zoom").set_value(2.5)
    at.run()
    assert at.slider(key=f"{key}_panx") is not None  # panning appears once zoomed in
    at.radio(key=f"{key}_mode").set_value("Heatmap only")
    at.run()
    assert not at.exception
    assert after_opacity[1] != before[1]  # the overlay changed …
    assert after_opacity[0] == before[0]  # … the original did not
    assert images()[0] != before[0]  # zoomed
    assert not [r for r in requests_made if not r.endswith("/health")], requests_made  # nothing refetched


def test_dicom_is_shown_deidentified(ui, identified_dicom: bytes) -> None:
    at, _ = ui.signed_in()
    upload(ui, at, [("IM0001", identified_dicom)])  # no extension, as PACS exports often are
    ui.ok(at)
    scan = at.session_state[analyze.RESULTS][0].scan
    assert scan.deidentified and scan.image["format"] == "dicom"
    page = ui.texts(at)
    assert "DICOM information** (de-identified)" in page
    tags = at.dataframe[-1].value
    shown = " ".join(f"{t} {v}" for t, v in zip(tags["Tag"], tags["Value"], strict=True))
    assert "Modality MR" in shown
    for secret in ("Doe^Jane", "MRN-0042", "19700101", "St. Example Hospital"):
        assert secret not in shown and secret not in page
    assert len(at.image) >= 2  # the DICOM original was decoded here for the viewer


def test_rejected_upload_message_names_the_reason() -> None:
    """A 422 reads by the refusal code the server sends (not by its wording), never as a crash; the message is the
    server's."""
    from braintumor.ui.client import ApiError

    for code, title in (
        ("not_mri", "Rejected: not a brain MRI slice"),
        ("out_of_scope", "Not analysed: outside the images the model was validated on"),
        ("unreadable", "Unreadable image"),
    ):
        assert analyze.refusal(ApiError(422, "the reason", code=code)) == (title, "the reason")
    assert analyze.refusal(ApiError(422, "something else"))[0] == "Not analysed"
    assert analyze.refusal(ApiError(413, "Upload too large"))[0] == "File too large"
    assert analyze.refusal(ApiError(503, "No model"))[0] == "Analysis unavailable"


def test_pdf_report_downloads(ui, mri) -> None:
    at, _ = ui.signed_in()
    upload(ui, at, [mri("yes/Y1.jpg")])
    scan = at.session_state[analyze.RESULTS][0].scan
    cache = at.session_state[state.CACHE]["reports"]
    pdf = cache[scan.id][1]
    assert pdf.startswith(b"%PDF")


def test_clear_empties_the_page(ui, mri) -> None:
    at, _ = ui.signed_in()
    upload(ui, at, [mri("no/1 no.jpeg")])
    at.button[1].click()  # Clear
    at.run()
    assert analyze.RESULTS not in at.session_state
    assert not at.image


def test_blend_matches_the_servers_overlay() -> None:
    """The slider's default reproduces the server's overlay formula exactly."""
    from braintumor.imaging.overlay import overlay
    from braintumor.ui import imaging

    rng = np.random.default_rng(0)
    scan = rng.integers(0, 255, (90, 70), dtype=np.uint8)
    cam = rng.random((45, 35)).astype(np.float32)
    assert np.abs(imaging.blend(scan, cam, 0.4).astype(int) - overlay(scan, cam, alpha=0.4).astype(int)).max() <= 1


def test_a_photograph_is_rejected_with_the_gates_reason(ui, api_server) -> None:
    """Runs when the model under test carries an input gate (the bundled model, or BRAINTUMOR_TEST_MODEL_DIR)."""
    import io

    from PIL import Image
    from skimage.data import chelsea

    with httpx.Client(base_url=api_server.url) as c:
        if not c.get("/health").json()["model"]["card"].get("gate"):
            pytest.skip("the model under test has no input gate (the smoke export has none)")
    buf = io.BytesIO()
    Image.fromarray(chelsea()).save(buf, "PNG")
    at, _ = ui.signed_in()
    upload(ui, at, [("cat.png", buf.getvalue())])
    assert not at.exception
    [error] = ui.errors(at)
    assert error.startswith("**cat.png** — Rejected: not a brain MRI slice.") and "gray" in error


def test_an_unusual_mri_is_shown_apart_from_non_mri_and_unreadable(ui, api_server) -> None:
    """Issue 14 item 8: pydicom's MR_small.dcm is a real MRI the model was not validated on: a warning of its own,
    not "not a brain MRI slice" and not "unreadable"."""
    from pydicom.data import get_testdata_file

    with httpx.Client(base_url=api_server.url) as c:
        if not c.get("/health").json()["model"]["card"].get("gate"):
            pytest.skip("the model under test has no input gate (the smoke export has none)")
    at, _ = ui.signed_in()
    mr_small = Path(str(get_testdata_file("MR_small.dcm"))).read_bytes()
    upload(ui, at, [("MR_small.dcm", mr_small), ("cut.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)])
    assert not at.exception
    warnings = [str(w.value) for w in at.warning]
    assert any(w.startswith("**MR_small.dcm** — Not analysed: outside the images the model was validated on")
               and "MR image" in w for w in warnings), warnings  # fmt: skip
    [error] = ui.errors(at)
    assert error.startswith("**cut.png** — Unreadable image")
    assert not any("not a brain MRI slice" in w for w in warnings)
