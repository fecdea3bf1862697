"""UI fixtures: one real API server for the session (``braintumor serve`` on a free loopback port, embedded
storage in a temporary data dir, a real exported model, an admin made with ``braintumor admin create``), an
``AppTest`` factory pointed at it, and small helpers that drive the app like a user.

The model is the bundled default model when this installation ships one, else the ``smoke_export`` fixture
(a real ONNX export trained on synthetic data); ``BRAINTUMOR_TEST_MODEL_DIR`` names another one.
"""

from __future__ import annotations

import io
import os
import random
import secrets
import subprocess
import sys
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from streamlit.testing.v1 import AppTest

from braintumor.ui import APP_PATH

from ..dicom_files import mr_series
from ..servers import free_port, http_ok, serving
from ..studies import real_slices

REPO_ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct-horse-battery"
ADMIN = "admin"
FAST_ENV = {
    "BRAINTUMOR_ARGON2_TIME_COST": "1",
    "BRAINTUMOR_ARGON2_MEMORY_KIB": "1024",
    "BRAINTUMOR_ARGON2_PARALLELISM": "1",
    "BRAINTUMOR_AUTH_RATE_PER_MINUTE": "100000",
    "BRAINTUMOR_INFERENCE_THREADS": "1",
}
#: A Streamlit run that talks to the API several times may take a few seconds on a loaded 2-core machine.
RUN_TIMEOUT = 60


@dataclass
class ApiServer:
    """A running API: its URL, its log, and the admin account made before it started."""

    url: str
    log: Path
    proc: subprocess.Popen[bytes]
    admin: str = ADMIN
    admin_password: str = PASSWORD

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=60)

    def user(self, prefix: str = "dr") -> str:
        """Register a fresh account (password :data:`PASSWORD`) and return its name."""
        name = f"{prefix}_{secrets.token_hex(4)}"
        with self.client() as c:
            r = c.post("/register", json={"username": name, "password": PASSWORD})
            assert r.status_code == 201, r.text
        return name

    def headers(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        with self.client() as c:
            r = c.post("/token", data={"username": username, "password": password})
            assert r.status_code == 200, r.text
            return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def upload(self, headers: dict[str, str], name: str, data: bytes) -> dict[str, Any]:
        with self.client() as c:
            r = c.post("/predict", headers=headers, files={"file": (name, data, "application/octet-stream")})
            assert r.status_code == 201, r.text
            return dict(r.json())


@pytest.fixture(scope="session")
def ui_model_dir(request: pytest.FixtureRequest) -> Path:
    """``BRAINTUMOR_TEST_MODEL_DIR`` when set (e.g. a trained export, for the README's screenshots), else the
    bundled default model when installed, else the smoke export."""
    override = os.environ.get("BRAINTUMOR_TEST_MODEL_DIR")
    if override:
        return Path(override)
    bundled = REPO_ROOT / "src" / "braintumor" / "inference" / "default_model"
    if (bundled / "ensemble.json").is_file() or (bundled / "card.json").is_file():
        return bundled
    return Path(request.getfixturevalue("smoke_export"))


@pytest.fixture(scope="session")
def api_server(tmp_path_factory: pytest.TempPathFactory, ui_model_dir: Path) -> Iterator[ApiServer]:
    """``braintumor serve`` on a free 127.0.0.1 port with its own data dir and an admin account."""
    folder = tmp_path_factory.mktemp("ui-api")
    data = folder / "data"
    env = {**{k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")}, **FAST_ENV}
    create = [sys.executable, "-m", "braintumor.cli", "admin", "create", "--username", ADMIN, "--password-stdin"]
    made = subprocess.run(
        [*create, "--data-dir", str(data)],
        input=PASSWORD + "\n",
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert made.returncode == 0, made.stderr
    port = free_port()
    log = folder / "server.log"
    cmd = [sys.executable, "-m", "braintumor.cli", "serve", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--data-dir", str(data), "--model", str(ui_model_dir)]
    url = f"http://127.0.0.1:{port}"
    with serving(cmd, log=log, ready=http_ok(url + "/health"), what="the API", timeout=90, env=env) as proc:
        yield ApiServer(url, log, proc)


class Ui:
    """Drives the app like a user: a fresh session per :meth:`app`, sign-in through the form, navigation through
    the sidebar, and the page's text for assertions."""

    def __init__(self, server: ApiServer) -> None:
        self.server = server

    def app(self) -> AppTest:
        """A fresh browser session (AppTest) on the app, after its first run."""
        return AppTest.from_file(str(APP_PATH), default_timeout=RUN_TIMEOUT).run()

    def sign_in(self, at: AppTest, username: str, password: str = PASSWORD) -> AppTest:
        at.text_input(key="login_username").input(username)
        at.text_input(key="login_password").input(password)
        at.button(key="login_submit").click()
        return at.run()

    def signed_in(self, username: str | None = None, password: str = PASSWORD) -> tuple[AppTest, str]:
        """A session signed in as ``username`` (a fresh account when ``None``)."""
        name = username or self.server.user()
        at = self.sign_in(self.app(), name, password)
        self.ok(at)
        assert at.session_state["nav"] == "Analyze", self.texts(at)
        return at, name

    def go(self, at: AppTest, page: str) -> AppTest:
        """Open ``page`` with the sidebar navigation."""
        at.sidebar.radio(key="nav").set_value(page)
        return at.run()

    def pages(self, at: AppTest) -> list[str]:
        """The page names the sidebar offers (without their icons)."""
        return [o.split(" ", 1)[-1] for o in at.sidebar.radio(key="nav").options]

    def texts(self, at: AppTest) -> str:
        """Every text the page shows (titles, markdown, captions, alerts, code, metrics), joined."""
        parts: list[str] = []
        for kind in ("title", "header", "subheader", "markdown", "caption", "error", "warning", "info", "success"):
            parts += [str(e.value) for e in at.get(kind)]
        parts += [str(e.value) for e in at.code]
        parts += [f"{m.label}: {m.value}" for m in at.metric]
        return "\n".join(parts)

    def errors(self, at: AppTest) -> list[str]:
        return [str(e.value) for e in at.error]

    def ok(self, at: AppTest) -> None:
        """No traceback and no error box on the page."""
        assert not at.exception, [e.value for e in at.exception]
        assert not at.error, self.errors(at)


@pytest.fixture
def ui(api_server: ApiServer, monkeypatch: pytest.MonkeyPatch) -> Ui:
    """A :class:`Ui` driver whose sessions talk to the test API."""
    monkeypatch.setenv("BRAINTUMOR_API_URL", api_server.url)
    return Ui(api_server)


# -- inputs ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def mri(shared_data: Path) -> Callable[[str], tuple[str, bytes]]:
    """``mri("yes/Y1.jpg")`` -> (file name, bytes) of a real MRI slice from the seed's dataset."""

    def read(relative: str) -> tuple[str, bytes]:
        path = shared_data / "brain_tumor_dataset" / relative
        return path.name, path.read_bytes()

    return read


@pytest.fixture(scope="session")
def identified_dicom(mri: Callable[[str], tuple[str, bytes]]) -> bytes:
    """A real MRI slice wrapped as an MR DICOM with a made-up patient (so an input gate accepts it)."""
    _, data = mri("yes/Y1.jpg")
    pixels = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("scan.dcm", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "MR"
    ds.BodyPartExamined = "BRAIN"
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "St. Example Hospital"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    buf = io.BytesIO()
    pydicom.dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()


#: Slices in the test study: enough for a curve, a scrubber and top slices, few enough for a 2-core machine.
STUDY_SLICES = 8


@pytest.fixture(scope="session")
def study_zip(shared_data: Path) -> tuple[str, bytes]:
    """("series.zip", bytes): an 8-slice axial MR series of real tumour slices of the seed dataset, as one zip of
    DICOM files in shuffled order with a patient's identity in every header (built in memory, never committed)."""
    series = mr_series(real_slices(shared_data, STUDY_SLICES, side=128, label="yes"))
    order = list(range(len(series)))
    random.Random(3).shuffle(order)  # file order is not slice order
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for k, i in enumerate(order):
            one = io.BytesIO()
            series[i].save_as(one, enforce_file_format=True)
            z.writestr(f"series/IM{k:03d}", one.getvalue())
    return "series.zip", buf.getvalue()


@pytest.fixture
def requests_made(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every HTTP request the app sends, as ``"METHOD /path"`` (AppTest runs the app in this process)."""
    seen: list[str] = []
    send = httpx.Client.send

    def spy(self: httpx.Client, request: httpx.Request, **kwargs: Any) -> httpx.Response:
        seen.append(f"{request.method} {request.url.path}")
        return send(self, request, **kwargs)

    monkeypatch.setattr(httpx.Client, "send", spy)
    yield seen
