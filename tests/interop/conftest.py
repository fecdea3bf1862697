"""Fixtures of the DICOM interop tests: the bundled model, real slices wrapped as an MR series, ``dciodvfy``, and
a real Orthanc PACS (``orthanc``: one per test module, started under ``unshare -n``, see ``netns.py``).

Debian binaries the tests need (``dciodvfy`` from dicom3tools, Orthanc and its DICOMweb plugin) skip the tests
with the reason when missing, and fail them on CI (``CI`` set), as the SecantusDB fixture does.
"""

from __future__ import annotations

import dataclasses
import json
import secrets
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from braintumor.imaging.io import load_image
from braintumor.inference.bundled import bundled_model_dir
from braintumor.inference.predictor import Prediction, Predictor
from braintumor.interop.dicom_out import AnalysedSlice
from braintumor.interop.pacs import PacsClient
from braintumor.storage.deid import deidentify

from ..dicom_files import encoded, mr_series
from ..missing import missing
from ..servers import free_port, http_ok, serving
from .netns import tcp_to_unix

SALT = b"interop test salt"


def need_binary(name: str, package: str) -> str:
    """The path of Debian's ``name``; skips (fails on CI) when ``package`` is not installed."""
    path = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).is_file()), None)
    if path is None:
        reason = f"{name} not found: install the Debian package {package} (apt-get install -y {package})"
        missing(reason)
    return path


@pytest.fixture(scope="session")
def dciodvfy() -> Callable[[Path, str], list[str]]:
    """``dciodvfy(path, iod)``: validate a file with dicom3tools' dciodvfy; asserts it read ``iod`` (e.g.
    "ComprehensiveSR") and reported no error; returns its warnings (allowed)."""
    exe = need_binary("dciodvfy", "dicom3tools")

    def check(path: Path, iod: str) -> list[str]:
        run = subprocess.run([exe, str(path)], capture_output=True, text=True, timeout=60, check=False)
        lines = (run.stdout + run.stderr).splitlines()
        errors = [line for line in lines if "Error -" in line]
        assert not errors, f"dciodvfy found errors in {path.name}:\n" + "\n".join(lines)
        assert run.returncode == 0, "\n".join(lines)
        assert iod in [line.strip() for line in lines], f"dciodvfy did not recognise a {iod}:\n" + "\n".join(lines)
        return [line for line in lines if "Warning -" in line]

    return check


@pytest.fixture(scope="session")
def predictor() -> Predictor:
    """The bundled model (torch-free ONNX Runtime), one thread."""
    folder = bundled_model_dir()
    assert folder is not None, "this checkout carries no bundled model"
    return Predictor.load(folder, threads=1)


@pytest.fixture(scope="session")
def ungated(predictor: Predictor) -> Predictor:
    """The bundled model without its input gate: the gate refuses pydicom's 64×64 MR_small (a head slice unlike
    the training data), and the writers must still be tested on that real file with a real prediction."""
    return dataclasses.replace(predictor, gate=None)


def analyse(data: bytes, predictor: Predictor) -> AnalysedSlice:
    """Decode a DICOM file, predict it (with its heatmap) and keep its header: what ``--dicom-out`` will do."""
    image = load_image(data)
    return AnalysedSlice.from_bytes(data, image, predictor.predict(image))


@pytest.fixture(scope="session")
def real_slices(shared_data: Path, predictor: Predictor) -> list[np.ndarray]:
    """Three real slices of the seed dataset the gate accepts: two tumors (the first ones the model calls tumor),
    then one the model calls no tumor, as 8-bit gray arrays."""
    picked: dict[str, list[np.ndarray]] = {"tumor": [], "no_tumor": []}
    for label, outcome, wanted in (("yes", "tumor", 2), ("no", "no_tumor", 1)):
        for path in sorted((shared_data / "brain_tumor_dataset" / label).iterdir()):
            image = load_image(path)
            result = predictor.predict_batch([image])[0]
            if isinstance(result, Prediction) and result.outcome == outcome:
                pixels = image.pixels if image.pixels.ndim == 2 else image.pixels.mean(axis=2).round()
                picked[outcome].append(np.asarray(pixels, dtype=np.uint8))
            if len(picked[outcome]) == wanted:
                break
    assert len(picked["tumor"]) == 2 and len(picked["no_tumor"]) == 1, "too few usable slices in the seed dataset"
    return [*picked["tumor"], *picked["no_tumor"]]


@pytest.fixture(scope="session")
def identified_series(real_slices: list[np.ndarray]) -> list[Any]:
    """The real slices as one identified MR series (tests/dicom_files.py ``mr_series``)."""
    return mr_series(real_slices)


@pytest.fixture(scope="session")
def deidentified_series(identified_series: list[Any]) -> list[bytes]:
    """The series as storage keeps it by default: each file de-identified (PS3.15 basic profile, salted UIDs)."""
    return [deidentify(encoded(ds), salt=SALT).data for ds in identified_series]


@pytest.fixture(scope="session")
def analysed_series(deidentified_series: list[bytes], predictor: Predictor) -> list[AnalysedSlice]:
    """The de-identified series, each slice predicted by the bundled model."""
    return [analyse(data, predictor) for data in deidentified_series]


# -- a real PACS ---------------------------------------------------------------------------------------------
NETNS = Path(__file__).with_name("netns.py")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER = "braintumor"


def orthanc_config(folder: Path, port: int, password: str) -> dict[str, Any]:
    """A test Orthanc: DICOMweb on, DIMSE off, a password, storage in ``folder``."""
    return {
        "Name": "braintumor-test",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "index"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": True,
        "RegisteredUsers": {USER: password},
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
    }


class Orthanc:
    """A running test Orthanc: its DICOMweb URL on 127.0.0.1, credentials, process and inner port."""

    def __init__(self, port: int, inner_port: int, password: str, proc: subprocess.Popen[bytes]) -> None:
        self.port, self.inner_port, self.password, self.proc = port, inner_port, password, proc
        self.url = f"http://127.0.0.1:{port}/dicom-web"

    def client(self, password: str | None = None) -> PacsClient:
        return PacsClient(self.url, username=USER, password=password or self.password, timeout=30)


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Orthanc]:
    """Orthanc under ``unshare -n`` for this module; skips (fails on CI) without orthanc, its DICOMweb plugin or
    the right to create a network namespace."""
    exe = need_binary("Orthanc", "orthanc")
    if not DICOMWEB_PLUGIN.is_file():
        missing("Orthanc's DICOMweb plugin not found: install the Debian package orthanc-dicomweb")
    unshare = need_binary("unshare", "util-linux")
    probe = subprocess.run([unshare, "-n", "true"], capture_output=True, text=True, check=False)
    if probe.returncode != 0:
        missing(f"cannot create a network namespace for Orthanc (unshare -n: {probe.stderr.strip()})")
    folder = tmp_path_factory.mktemp("orthanc")
    inner_port = free_port()  # free here too, so that a refused connection below means "not reachable"
    password = secrets.token_urlsafe(16)
    config = folder / "orthanc.json"
    config.write_text(json.dumps(orthanc_config(folder, inner_port, password)))
    sock = str(folder / "orthanc.sock")
    cmd = [unshare, "-n", sys.executable, str(NETNS), "--unix", sock, "--port", str(inner_port), "--", exe, str(config)]
    with tcp_to_unix(sock) as port:
        ready = http_ok(f"http://{USER}:{password}@127.0.0.1:{port}/system")
        with serving(cmd, log=folder / "orthanc.log", ready=ready, what="Orthanc", timeout=60) as proc:
            yield Orthanc(port, inner_port, password, proc)


# -- reading back what we wrote (the DICOM-output and PACS tests) --------------------------------------------------
def evaluations(group: Any) -> dict[str, str]:
    """An SR measurement group's qualitative evaluations, by concept name."""
    return {q.name.value: q.value.value for q in group.get_qualitative_evaluations()}


def evidence_uids(sr: Any) -> set[str]:
    """Every SOP Instance UID an SR's evidence sequence references."""
    return {
        str(sop.ReferencedSOPInstanceUID)
        for study in sr.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for sop in series.ReferencedSOPSequence
    }


def served_sr(pacs: PacsClient, study_uid: str) -> tuple[Any, list[Any]]:
    """The study's one Comprehensive SR as the PACS serves it, read by highdicom, and every instance retrieved."""
    import io

    import highdicom as hd
    from pydicom.uid import ComprehensiveSRStorage

    back = pacs.retrieve_study(study_uid)
    (sr_ds,) = [ds for ds in back if ds.SOPClassUID == ComprehensiveSRStorage]
    buf = io.BytesIO()
    sr_ds.save_as(buf, enforce_file_format=True)
    return hd.sr.srread(io.BytesIO(buf.getvalue())), back
