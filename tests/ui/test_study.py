"""Studies in the UI against the real API: the client's ``upload_study`` / ``study`` / ``delete_study`` records (a
zipped DICOM series of real slices and a NIfTI volume of them), the Analyze page's Study mode (upload a zipped
series, the study page opens), the study page (outcome with its reason, rule and validation note, the slice
scrubber with each slice's own answer, the p(tumor) curve, top slices that move the scrubber, delete with
confirmation), refusals shown as the API words them, and History marking, filtering and opening a study."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from braintumor.ui import state
from braintumor.ui.client import ApiClient, ApiError
from braintumor.ui.records import Study
from braintumor.ui.views import analyze, history

from ..studies import nifti_volume, real_slices
from .conftest import PASSWORD, STUDY_SLICES

KEY = "analyze_study"


def client_for(api_server: Any, username: str) -> ApiClient:
    api = ApiClient(api_server.url)
    return api.with_token(api.login(username, PASSWORD).access_token)


def test_the_client_uploads_reads_and_deletes_a_study(api_server: Any, study_zip: tuple[str, bytes]) -> None:
    api = client_for(api_server, api_server.user())
    study = api.upload_study([study_zip])
    assert isinstance(study, Study) and study.kind == "study" and study.url == f"/studies/{study.id}"
    assert study.filename == "series.zip" and study.source_kind == "dicom" and study.deidentified
    assert study.outcome in ("tumor", "refer", "no_tumor") and study.reason
    assert "2-D slices" in study.note and study.rule["consecutive"] >= 1
    assert study.refer_low <= study.threshold <= study.refer_high
    assert len(study.slices) == STUDY_SLICES and [s.index for s in study.slices] == list(range(STUDY_SLICES))
    positions = [s.position for s in study.slices]
    assert positions == sorted(positions)  # slice order, not the zip's shuffled file order
    (series,) = study.series
    assert series.slices == STUDY_SLICES and series.p_tumor_curve == tuple(s.p_tumor for s in study.slices)
    assessed = [s for s in study.slices if s.status == "ok"]
    assert assessed and all(s.p_tumor is not None and s.image_url and s.overlay_url for s in assessed)
    assert study.top_slices and study.top_slices[0].p_tumor == max(s.p_tumor or 0 for s in assessed)
    assert study.report_url == f"/studies/{study.id}/report.pdf"

    assert api.study(study.id) == study  # the stored study reads back as it was answered
    png = api.fetch(assessed[0].image_url or "")
    assert png.startswith(b"\x89PNG")
    with pytest.raises(ApiError) as elsewhere:
        api.fetch("https://example.org/steal")  # the token goes to the API's own paths only
    assert elsewhere.value.status == 0

    listed = api.history()
    assert [(s.id, s.kind, s.url) for s in listed.items] == [(study.id, "study", study.url)]
    with pytest.raises(ApiError) as other:
        client_for(api_server, api_server.user()).study(study.id)  # owner-only
    assert other.value.status == 404

    api.delete_study(study.id)
    with pytest.raises(ApiError) as gone:
        api.study(study.id)
    assert gone.value.status == 404
    assert api.history().total == 0


def test_the_client_gives_the_servers_reason_for_a_refused_study(api_server: Any) -> None:
    api = client_for(api_server, api_server.user())
    with pytest.raises(ApiError) as refused:
        api.upload_study([("notes.txt", b"not a study at all"), ("more.txt", b"nor is this")])
    assert refused.value.status in (415, 422) and refused.value.message
    assert "Traceback" not in refused.value.message


def open_study_mode(ui: Any) -> AppTest:
    at, _ = ui.signed_in()
    at.radio(key=analyze.MODE).set_value(analyze.STUDY)
    at.run()
    ui.ok(at)
    return at


def send(at: AppTest, files: list[tuple[str, bytes]]) -> AppTest:
    at.file_uploader[0].set_value([(name, data, "application/octet-stream") for name, data in files])
    at.run()
    at.button(key="analyze_study_go").click()
    return at.run()


def test_a_zipped_series_opens_the_study_page_and_the_scrubber_moves(ui: Any, study_zip: tuple[str, bytes]) -> None:
    at = open_study_mode(ui)
    assert at.button(key="analyze_study_go").disabled  # nothing to send yet
    send(at, [study_zip])
    ui.ok(at)
    study_id = at.session_state[analyze.STUDY_OPEN]
    study: Study = at.session_state[state.CACHE]["studies"][study_id][1]
    page = ui.texts(at)
    title = {"tumor": "Tumor suspected", "refer": "Refer for expert review", "no_tumor": "No tumor detected"}
    assert title[study.outcome] in page and study.reason in page
    assert "Study rule: tumor when" in page and study.note in page and study.disclaimer in page
    assert f"Study · {STUDY_SLICES} slices in 1 series" in page
    assert len(at.get("vega_lite_chart")) == 1  # p(tumor) per slice

    (series,) = study.series
    slider = at.slider(key=f"{KEY}_slice_{series.series_uid}")
    assert (slider.min, slider.max) == (0, STUDY_SLICES - 1)  # numbered as the study's reason numbers slices
    assert slider.value == series.top_slices[0]  # it starts on the most suspicious slice

    def shown() -> tuple[str, str]:
        metrics = {m.label: m.value for m in at.metric}
        return metrics["Slice P(tumor)"], metrics["Slice outcome"]

    for k in (0, STUDY_SLICES - 1):
        at.slider(key=f"{KEY}_slice_{series.series_uid}").set_value(k)
        at.run()
        ui.ok(at)
        item = study.slices[k]
        assert f"slice {k} of 0–{STUDY_SLICES - 1}" in ui.texts(at)
        assert shown() == (
            f"{100 * item.p_tumor:.1f}%",
            {"tumor": "Tumor", "refer": "Refer", "no_tumor": "No tumor"}[item.outcome or ""],
        )
        assert len(at.image) >= 3  # the slice, its overlay, the colour bar (+ thumbnails)

    # a top slice's thumbnail button moves the scrubber to it
    target = series.top_slices[-1]
    at.button(key=f"{KEY}_top_{series.series_uid}_{target}").click()
    at.run()
    assert at.slider(key=f"{KEY}_slice_{series.series_uid}").value == target

    # the report: a download, or while the server has none, its address
    if at.download_button:
        assert at.download_button[0].label == "Download PDF report"
    else:
        assert study.report_url in ui.texts(at)

    # delete, after a confirmation: the page closes and the study is gone from the server
    at.button(key=f"{KEY}_delete").click()
    at.run()
    assert "permanently" in "\n".join(str(w.value) for w in at.warning)
    at.button(key=f"{KEY}_confirm_delete_yes").click()
    at.run()
    ui.ok(at)
    assert analyze.STUDY_OPEN not in at.session_state
    assert f"Deleted the study {study.filename}" in ui.texts(at)
    with pytest.raises(ApiError) as gone:
        client_for(ui.server, at.session_state[state.AUTH].username).study(study_id)
    assert gone.value.status == 404


def test_a_refused_study_shows_the_servers_reason(ui: Any) -> None:
    at = open_study_mode(ui)
    send(at, [("notes.txt", b"not a study at all")])
    assert not at.exception
    errors = ui.errors(at)
    assert len(errors) == 1 and "Traceback" not in errors[0]
    assert errors[0].startswith(("**Unsupported file.**", "**Study not analysed.**")), errors
    assert analyze.STUDY_OPEN not in at.session_state
    at.radio(key=analyze.MODE).set_value(analyze.SCANS)  # single-image analysis is unchanged
    at.run()
    assert at.file_uploader[0].label == "Brain MRI slices"


def test_history_marks_a_study_and_opens_it_on_the_study_page(
    ui: Any, api_server: Any, study_zip: tuple[str, bytes], mri: Any
) -> None:
    name = api_server.user()
    headers = api_server.headers(name)
    api_server.upload(headers, "single.jpg", mri("yes/Y1.jpg")[1])
    study = client_for(api_server, name).upload_study([study_zip])
    at, _ = ui.signed_in(name)
    ui.go(at, "History")
    ui.ok(at)
    cells = [str(m.value) for m in at.markdown]
    assert any("series.zip" in c and f"Study · {len(study.slices)} slices" in c for c in cells)
    assert not any("single.jpg" in c and "Study" in c for c in cells)
    at.selectbox(key="history_kind").set_value("Studies")
    at.run()
    assert "1 scan · showing 1–1" in ui.texts(at) and any("series.zip" in str(m.value) for m in at.markdown)
    at.selectbox(key="history_kind").set_value("Scans")
    at.run()
    assert not any("series.zip" in str(m.value) for m in at.markdown)
    at.selectbox(key="history_kind").set_value("All kinds")
    at.run()
    at.button(key=f"history_open_{study.id}").click()
    at.run()
    ui.ok(at)
    assert at.session_state[history.OPEN_STUDY] == study.id and history.OPEN not in at.session_state
    assert study.reason in ui.texts(at) and "Study rule: tumor when" in ui.texts(at)
    at.button(key="history_back_study").click()
    at.run()
    assert "2 scans · showing 1–2" in ui.texts(at)


def test_the_client_uploads_a_nifti_volume_as_a_study(api_server: Any, shared_data: Path, tmp_path: Path) -> None:
    api = client_for(api_server, api_server.user())
    volume = nifti_volume(real_slices(shared_data, 5, side=128, label="yes"), np.diag([0.5, 0.5, 5.0, 1.0]),
                          tmp_path / "brain.nii.gz")  # fmt: skip
    study = api.upload_study([("brain.nii.gz", volume.read_bytes())])
    assert study.source_kind == "nifti" and study.filename == "brain.nii.gz" and not study.study_uid
    assert len(study.slices) == 5 and len(study.series) == 1 and study.series[0].kind
    api.delete_study(study.id)
