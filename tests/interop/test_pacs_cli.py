"""``braintumor pacs search|pull|analyze`` against a real Orthanc (the ``orthanc`` fixture of ``conftest.py``).

A synthetic study of real slices (two the model calls tumor, then one it calls no tumor) is stored, found by
``pacs search``, downloaded by ``pacs pull`` and scored by ``pacs analyze --push``; Orthanc is then asked what the
study holds and the SR it serves is read back. Every failure is an exit code other than 0 with one line on stderr.
"""

from __future__ import annotations

import io
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pydicom
import pytest
from pydicom.uid import ComprehensiveSRStorage, MRImageStorage, SecondaryCaptureImageStorage

from braintumor.cli import main

from ..dicom_files import IDENTITY, mr_series
from ..servers import free_port
from .conftest import USER, Orthanc, evaluations, evidence_uids, served_sr


@pytest.fixture(scope="module")
def stored_study(orthanc: Orthanc, real_slices: list[np.ndarray]) -> list[Any]:
    """A study of the real slices, stored on the module's Orthanc."""
    study = mr_series(real_slices, description="T1 AX PACS CLI")
    assert not orthanc.client().store(study).failed
    return study


@pytest.fixture(scope="module")
def study_uid(stored_study: list[Any]) -> str:
    return str(stored_study[0].StudyInstanceUID)


@pytest.fixture
def password_env(orthanc: Orthanc, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRAINTUMOR_PACS_PASSWORD", orthanc.password)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """``braintumor ARGV`` in this process: exit code, stdout, stderr."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


#: ``pacs_cli(command, *args)`` -> exit code, stdout, stderr (the fixture below).
PacsCli = Callable[..., tuple[int, str, str]]


@pytest.fixture
def pacs_cli(orthanc: Orthanc, password_env: None, capsys: pytest.CaptureFixture[str]) -> PacsCli:
    """``pacs_cli("pull", *args)``: :func:`run` of ``braintumor pacs pull --url ORTHANC --username USER *args`` on
    the module's Orthanc, the password in the environment."""

    def call(command: str, *args: str) -> tuple[int, str, str]:
        return run(["pacs", command, "--url", orthanc.url, "--username", USER, *args], capsys)

    return call


Test = TypeVar("Test", bound=Callable[..., None])


def needs_orthanc(test: Test) -> Test:
    """Marks a test of the module's Orthanc: ``pacs`` and ``integration`` (``pytest -m pacs`` runs them)."""
    return pytest.mark.pacs(pytest.mark.integration(test))


def one_line_error(code: int, err: str) -> str:
    """Asserts a failed command said why in one line, without a traceback; returns the line."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("braintumor: error: ")
    return lines[0]


@needs_orthanc
def test_search_finds_the_study_as_json_and_text(
    orthanc: Orthanc, study_uid: str, pacs_cli: PacsCli, monkeypatch: pytest.MonkeyPatch
) -> None:
    patient = ["--patient-id", IDENTITY["PatientID"]]
    code, out, _ = pacs_cli("search", *patient, "--format", "json")
    assert code == 0
    (line,) = out.splitlines()
    found = json.loads(line)
    assert found["study_uid"] == study_uid and found["patient_name"] == IDENTITY["PatientName"]
    assert found["modalities"] == ["MR"] and found["instances"] == 3 and found["series"] == 1

    # the password from stdin instead of the environment; text: one tab-separated line per study
    monkeypatch.delenv("BRAINTUMOR_PACS_PASSWORD")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"{orthanc.password}\n"))
    code, out, _ = pacs_cli("search", *patient, "--password-stdin")
    assert code == 0
    (line,) = out.splitlines()
    fields = line.split("\t")
    assert fields[:5] == [study_uid, IDENTITY["PatientID"], IDENTITY["PatientName"], "20240229", "ACC-7"]
    assert fields[5:] == ["MR", "1", "3", "MRI BRAIN"]

    monkeypatch.setattr(sys, "stdin", io.StringIO(orthanc.password))
    code, out, err = pacs_cli("search", "--patient-id", "nobody", "--password-stdin")
    assert code == 0 and out == "" and "no study matched" in err


@needs_orthanc
def test_pull_writes_the_instances(stored_study: list[Any], study_uid: str, pacs_cli: PacsCli, tmp_path: Path) -> None:
    code, out, _ = pacs_cli("pull", "--study", study_uid, "--out", str(tmp_path / "pulled"))
    assert code == 0 and out.strip() == f"pulled 3 instance(s) of study {study_uid} into {tmp_path / 'pulled'}"
    read = {p.name: pydicom.dcmread(p) for p in (tmp_path / "pulled").iterdir()}
    assert sorted(read) == sorted(f"{ds.SOPInstanceUID}.dcm" for ds in stored_study)
    for original in stored_study:
        np.testing.assert_array_equal(read[f"{original.SOPInstanceUID}.dcm"].pixel_array, original.pixel_array)


@needs_orthanc
def test_analyze_push_files_the_sr_and_captures_in_the_study(
    orthanc: Orthanc, stored_study: list[Any], study_uid: str, pacs_cli: PacsCli, tmp_path: Path
) -> None:
    mr_uids = [str(ds.SOPInstanceUID) for ds in stored_study]
    argv = ["--study", study_uid, "--threads", "1"]
    code, out, _ = pacs_cli("analyze", *argv, "--out", str(tmp_path / "out"), "--push")
    assert code == 0
    (line,) = out.splitlines()
    # two adjacent tumor slices: the study rule says tumor
    assert line.startswith(f"study {study_uid}: tumor (2 consecutive tumor slices (slices 0–1)); ")
    assert "3 of 3 slice(s) scored in 1 series" in line
    assert line.endswith(f"wrote SR + 3 SC to {tmp_path / 'out'}; pushed 4 of 4 to the PACS")
    written = sorted(p.name[:3] for p in (tmp_path / "out").iterdir())
    assert written == ["SC_", "SC_", "SC_", "SR_"]

    # Orthanc files them in the study
    pacs = orthanc.client()
    classes = sorted(i.sop_class_uid for i in pacs.search_instances(study_uid))
    assert classes == sorted([MRImageStorage] * 3 + [ComprehensiveSRStorage] + [SecondaryCaptureImageStorage] * 3)

    # the SR it serves carries the study outcome and references the analysed instances
    sr, back = served_sr(pacs, study_uid)
    assert sr.PatientID == IDENTITY["PatientID"] and sr.StudyInstanceUID == study_uid
    assert evidence_uids(sr) == set(mr_uids)
    groups = {g.tracking_identifier: g for g in sr.content.get_image_measurement_groups()}
    assert evaluations(groups["Result"])["OUTCOME"] == "TUMOR"
    assert groups["Result"].source_images[0].referenced_sop_instance_uid in mr_uids[:2]
    for number, uid in enumerate(mr_uids, start=1):
        assert [s.referenced_sop_instance_uid for s in groups[f"Slice {number}"].source_images] == [uid]
    assert [evaluations(groups[f"Slice {n}"])["OUTCOME"] for n in (1, 2, 3)] == ["TUMOR", "TUMOR", "NO_TUMOR"]
    captures = sorted(
        (ds for ds in back if ds.SOPClassUID == SecondaryCaptureImageStorage), key=lambda d: d.InstanceNumber
    )
    assert [str(ds.SourceImageSequence[0].ReferencedSOPInstanceUID) for ds in captures] == mr_uids

    # analysed again: its own SR is passed over and its captures (not MR) are a skipped series
    code, out, err = pacs_cli("analyze", *argv, "--out", str(tmp_path / "again"))
    assert code == 0 and "1 non-image instance(s) passed over" in out and "skipped series" in err
    assert "pushed" not in out


@needs_orthanc
def test_an_unknown_study_or_wrong_password_is_a_one_line_error(
    pacs_cli: PacsCli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    code, _, err = pacs_cli("analyze", "--study", "1.2.3.4.5.6.7.8.9", "--push")
    assert "cannot retrieve study 1.2.3.4.5.6.7.8.9" in one_line_error(code, err)
    code, _, err = pacs_cli("pull", "--study", "1.2.3.4.5.6.7.8.9", "--out", str(tmp_path))
    assert "1.2.3.4.5.6.7.8.9" in one_line_error(code, err)
    code, _, err = pacs_cli("pull", "--study", "../../etc", "--out", str(tmp_path))
    assert "not a DICOM UID" in one_line_error(code, err)

    monkeypatch.setenv("BRAINTUMOR_PACS_PASSWORD", "wrong")
    code, _, err = pacs_cli("search")
    line = one_line_error(code, err)
    assert "refused the credentials" in line and "wrong" not in line


# -- without a server --------------------------------------------------------------------------------------------
def test_an_unreachable_pacs_is_a_one_line_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BRAINTUMOR_PACS_URL", f"http://127.0.0.1:{free_port()}/dicom-web")
    monkeypatch.setenv("BRAINTUMOR_PACS_PASSWORD", "secret")
    code, _, err = run(["pacs", "search", "--username", USER, "--timeout", "2"], capsys)
    line = one_line_error(code, err)
    assert "unreachable" in line and "secret" not in line
    code, _, err = run(["pacs", "analyze", "--username", USER, "--study", "1.2.3", "--push"], capsys)
    assert "unreachable" in one_line_error(code, err)


def test_credentials_are_asked_for_consistently(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BRAINTUMOR_PACS_URL", raising=False)
    monkeypatch.delenv("BRAINTUMOR_PACS_PASSWORD", raising=False)
    monkeypatch.delenv("BRAINTUMOR_PACS_USERNAME", raising=False)
    code, _, err = run(["pacs", "search"], capsys)
    assert "BRAINTUMOR_PACS_URL" in one_line_error(code, err)
    url = ["--url", "http://127.0.0.1:8042/dicom-web"]
    code, _, err = run(["pacs", "search", *url, "--username", USER], capsys)
    assert "needs a password" in one_line_error(code, err)
    monkeypatch.setenv("BRAINTUMOR_PACS_PASSWORD", "secret")
    code, _, err = run(["pacs", "search", *url], capsys)
    assert "needs a --username" in one_line_error(code, err)
    code, _, err = run(["pacs", "analyze", *url, "--username", USER, "--study", "1.2.3"], capsys)
    assert "--out DIR, --push" in one_line_error(code, err)
    with pytest.raises(SystemExit):  # argparse: a password is no flag
        main(["pacs", "search", *url, "--password", "secret"])
