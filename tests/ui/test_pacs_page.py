"""The "From PACS" page: offered only when the API has a PACS, it searches the PACS and analyses a study from it.

Without a PACS (the session's API server) the page is not in the navigation. With one, a second real API
(``braintumor serve`` with ``BRAINTUMOR_PACS_URL``/``_USERNAME``/``_PASSWORD`` naming ``tests/interop``'s Orthanc)
serves the page: a search by patient id lists the stored study, and "Analyse" scores it and opens the study page.
"""

from __future__ import annotations

import datetime as dt
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from braintumor.ui.views import pacs

from ..dicom_files import IDENTITY, mr_series
from ..interop.conftest import USER, Orthanc, orthanc
from ..servers import free_port, http_ok, serving
from ..studies import real_slices
from .conftest import FAST_ENV, ApiServer, Ui

__all__ = ["orthanc"]  # the module-scoped Orthanc fixture of tests/interop


def test_without_a_pacs_the_page_is_not_offered(ui: Ui) -> None:
    at, _ = ui.signed_in()
    assert "From PACS" not in ui.pages(at)
    assert "Analyze" in ui.pages(at)


def test_study_dates_become_dicom_ranges() -> None:
    day, later = dt.date(2024, 2, 1), dt.date(2024, 2, 29)
    assert pacs.study_dates(day, later) == "20240201-20240229"
    assert pacs.study_dates(day, day) == "20240201"
    assert pacs.study_dates(None, later) == "-20240229"
    assert pacs.study_dates(day, None) == "20240201-"
    assert pacs.study_dates(None, None) is None


@pytest.fixture(scope="module")
def pacs_server(tmp_path_factory: pytest.TempPathFactory, ui_model_dir: Path, orthanc: Orthanc) -> Iterator[ApiServer]:
    """``braintumor serve`` whose settings name the module's Orthanc."""
    folder = tmp_path_factory.mktemp("ui-pacs-api")
    pacs_env = {"BRAINTUMOR_PACS_URL": orthanc.url, "BRAINTUMOR_PACS_USERNAME": USER,
                "BRAINTUMOR_PACS_PASSWORD": orthanc.password}  # fmt: skip
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")}, **FAST_ENV, **pacs_env}
    port = free_port()
    log = folder / "server.log"
    cmd = [sys.executable, "-m", "braintumor.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(folder / "data"), "--model", str(ui_model_dir)]
    url = f"http://127.0.0.1:{port}"
    with serving(cmd, log=log, ready=http_ok(url + "/health"), what="the API", timeout=90, env=env) as proc:
        yield ApiServer(url, log, proc)


@pytest.fixture(scope="module")
def pacs_study(orthanc: Orthanc, shared_data: Path) -> list[Any]:
    study = mr_series(real_slices(shared_data, 3, side=96, label="yes"), description="T1 AX UI")
    assert not orthanc.client().store(study).failed
    return study


@pytest.fixture
def pacs_ui(pacs_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> Ui:
    monkeypatch.setenv("BRAINTUMOR_API_URL", pacs_server.url)
    return Ui(pacs_server)


@pytest.mark.pacs
@pytest.mark.integration
def test_search_the_pacs_and_analyse_a_study(pacs_ui: Ui, pacs_study: list[Any]) -> None:
    at, name = pacs_ui.signed_in()
    assert pacs_ui.pages(at)[:3] == ["Analyze", "History", "From PACS"]
    pacs_ui.go(at, "From PACS")
    pacs_ui.ok(at)
    assert "From PACS" in pacs_ui.texts(at)

    at.text_input(key="pacs_patient_id").input(IDENTITY["PatientID"])
    next(b for b in at.button if b.label == "Search").click()
    at.run()
    pacs_ui.ok(at)
    uid = str(pacs_study[0].StudyInstanceUID)
    assert "Doe Jane" in pacs_ui.texts(at)
    analyse = [b for b in at.button if (b.key or "") == f"pacs_analyze_{uid}"]
    assert len(analyse) == 1

    analyse[0].click()
    at.run()
    pacs_ui.ok(at)
    opened = at.session_state[pacs.OPEN]
    assert isinstance(opened, str) and opened
    assert any((b.key or "") == "pacs_back" for b in at.button)
    with pacs_ui.server.client() as c:  # the study is in the user's history, scored like an upload
        r = c.get(f"/studies/{opened}", headers=pacs_ui.server.headers(name))
    assert r.status_code == 200 and r.json()["filename"] == "PACS study" and len(r.json()["slices"]) == 3

    next(b for b in at.button if (b.key or "") == "pacs_back").click()
    at.run()
    pacs_ui.ok(at)
    assert pacs.OPEN not in at.session_state


@pytest.mark.pacs
@pytest.mark.integration
def test_an_unknown_name_lists_nothing(pacs_ui: Ui, pacs_study: list[Any]) -> None:
    at, _ = pacs_ui.signed_in()
    pacs_ui.go(at, "From PACS")
    at.text_input(key="pacs_patient_name").input("Nobody*")
    next(b for b in at.button if b.label == "Search").click()
    at.run()
    pacs_ui.ok(at)
    assert "No study on the PACS matches this search." in pacs_ui.texts(at)
