"""API fixtures: apps built by the factory on either backend, the smoke model, and a small client helper."""

from __future__ import annotations

import dataclasses
import io
import secrets
import struct
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file

from braintumor.api import Settings, create_app
from braintumor.inference.predictor import Predictor

PASSWORD = "correct-horse-battery"
SECRET = "tJ4nV9qXe2LwB7sKd0RzP5mYc8HgUa3FoT6iNb1EyQk"  # random: weak secrets are refused
#: Cheap argon2 for tests (production keeps pwdlib's strong defaults).
FAST = {"argon2_time_cost": 1, "argon2_memory_kib": 1024, "argon2_parallelism": 1, "auth_rate_per_minute": 100_000}
_DEFAULT: Any = object()


class Api:
    """A TestClient plus the few steps every test repeats (register, sign in, upload)."""

    def __init__(self, client: TestClient, settings: Settings) -> None:
        self.client = client
        self.settings = settings
        self.app: Any = client.app

    def register(self, username: str, password: str = PASSWORD) -> str:
        """Register ``username`` and return the recovery key."""
        r = self.client.post("/register", json={"username": username, "password": password})
        assert r.status_code == 201, r.text
        return str(r.json()["recovery_key"])

    def login(self, username: str, password: str = PASSWORD) -> dict[str, str]:
        """Authorization headers for ``username``."""
        r = self.client.post("/token", data={"username": username, "password": password})
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['access_token']}"}

    def user(self, username: str, *, admin: bool = False) -> dict[str, str]:
        """Register (promoting to admin in storage when asked) and return auth headers."""
        self.register(username)
        if admin:
            self.app.state.storage.set_role(username, "admin")
        return self.login(username)

    def upload(self, headers: dict[str, str], data: bytes, filename: str = "scan.png") -> Any:
        return self.client.post(
            "/predict", headers=headers, files={"file": (filename, data, "application/octet-stream")}
        )

    def scan(self, headers: dict[str, str], data: bytes, filename: str = "scan.png") -> dict[str, Any]:
        r = self.upload(headers, data, filename)
        assert r.status_code == 201, r.text
        return dict(r.json())

    @property
    def storage(self) -> Any:
        return self.app.state.storage


@pytest.fixture(scope="session")
def api_predictor(smoke_export: Path) -> Predictor:
    """The smoke model, loaded once for every API test. Its input gate (if an export ships one) is left out: these
    tests feed synthetic slices and test the API; the 422 path has its own gate (:class:`RejectEverything`)."""
    return dataclasses.replace(Predictor.load(smoke_export, threads=1), gate=None)


class RejectEverything:
    """An input gate that refuses every image (stands in for the real gate in tests of the 422 path)."""

    def check_image(self, _image: Any) -> str:
        return "this looks like a photograph, not a brain MRI slice"

    def check_features(self, features: Any) -> list[str | None]:
        return [None] * len(features)


@pytest.fixture
def gated_predictor(api_predictor: Predictor) -> Predictor:
    return dataclasses.replace(api_predictor, gate=RejectEverything())


@pytest.fixture
def make_api(tmp_path: Path, api_predictor: Predictor, request: pytest.FixtureRequest) -> Iterator[Callable[..., Api]]:
    """Factory ``make_api(backend="embedded", predictor=<smoke model>, **settings)`` -> :class:`Api` on a fresh
    app (``backend``: ``embedded`` in tmp_path or ``secantus`` = a fresh MongoDB database on SecantusDB)."""
    opened: list[tuple[TestClient, Any]] = []

    def make(backend: str = "embedded", predictor: Any = _DEFAULT, **overrides: Any) -> Api:
        fields: dict[str, Any] = {"secret_key": SECRET, "data_dir": tmp_path / f"data{len(opened)}", **FAST}
        mongo = None
        if backend != "embedded":
            uri = request.getfixturevalue("secantus_uri" if backend == "secantus" else "real_mongo_uri")
            mongo = (uri, f"braintumor_api_{secrets.token_hex(6)}")
            fields |= {"storage": "mongodb", "mongo_uri": mongo[0], "mongo_database": mongo[1]}
        settings = Settings(**(fields | overrides))
        app = create_app(settings, predictor=api_predictor if predictor is _DEFAULT else predictor)
        client = TestClient(app)
        client.__enter__()
        opened.append((client, mongo))
        return Api(client, settings)

    yield make
    from pymongo import MongoClient

    for client, mongo in reversed(opened):
        client.__exit__(None, None, None)
        if mongo is not None:
            mc: Any = MongoClient(mongo[0], serverSelectionTimeoutMS=2000)
            mc.drop_database(mongo[1])
            mc.close()


@pytest.fixture
def api(make_api: Callable[..., Api]) -> Api:
    """An app on the embedded backend with the smoke model."""
    return make_api()


@pytest.fixture
def scan_png(brain: Callable[..., Any], encoder: Callable[..., bytes]) -> bytes:
    """A small synthetic brain slice as PNG."""
    return encoder(brain(1, 160, 128), "PNG")


@pytest.fixture
def scan_jpeg(brain: Callable[..., Any], encoder: Callable[..., bytes]) -> bytes:
    return encoder(brain(2, 128, 160), "JPEG", quality=90)


def identified_dicom() -> bytes:
    """pydicom's MR_small with a made-up patient, institution and physician."""
    ds = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    ds.PatientName = "Doe^Jane"
    ds.PatientID = "MRN-0042"
    ds.PatientBirthDate = "19700101"
    ds.InstitutionName = "St. Example Hospital"
    ds.ReferringPhysicianName = "House^Gregory"
    ds.StudyDescription = "MRI BRAIN of Jane Doe"
    buf = io.BytesIO()
    ds.save_as(buf)
    return buf.getvalue()


@pytest.fixture
def scan_dicom() -> bytes:
    return identified_dicom()


# -- hostile uploads (issue 13): the attack files, rebuilt here so the API tests replay them end to end ---------
def _tag(group: int, element: int) -> bytes:
    return struct.pack("<HH", group, element)


def nested_dicom(depth: int = 3000, *, defined: bool = False) -> bytes:
    """MR_small with a ReferencedSeriesSequence nested ``depth`` deep (~214–262 KB for 3000)."""
    raw = Path(get_testdata_file("MR_small.dcm")).read_bytes()
    text = _tag(0x0020, 0x4000) + b"LT" + struct.pack("<H", 40) + b"Patient DOE^JOHN nested comment text...."
    seq = _tag(0x0008, 0x1115) + b"SQ\x00\x00"
    if defined:
        inner = b""
        for _ in range(depth):
            item = _tag(0xFFFE, 0xE000) + struct.pack("<I", len(text) + len(inner)) + text + inner
            inner = seq + struct.pack("<I", len(item)) + item
    else:
        opened = seq + b"\xff\xff\xff\xff" + _tag(0xFFFE, 0xE000) + b"\xff\xff\xff\xff" + text
        inner = opened * depth + (_tag(0xFFFE, 0xE00D) + bytes(4) + _tag(0xFFFE, 0xE0DD) + bytes(4)) * depth
    pos = raw.find(_tag(0x0010, 0x0010) + b"PN")
    return raw[:pos] + inner + raw[pos:]


def rle_bomb(rows: int = 6000, cols: int = 6000) -> bytes:
    """RLE Lossless MR slice of ``rows``×``cols``×16 bits, all zero: two byte planes of 128-byte runs (~1.1 MB)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate
    from pydicom.uid import MRImageStorage, RLELossless, generate_uid

    full, rest = divmod(rows * cols, 128)
    plane = bytes((0x81, 0x00)) * full + ((bytes((257 - rest, 0)) if rest > 1 else b"\x00\x00") if rest else b"")
    header = struct.pack("<16I", 2, 64, 64 + len(plane), *([0] * 13))
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = MRImageStorage, generate_uid()
    meta.TransferSyntaxUID = RLELossless
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = MRImageStorage, meta.MediaStorageSOPInstanceUID, "MR"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, cols, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = encapsulate([header + plane + plane])
    ds["PixelData"].VR = "OB"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def animated_png(frames: int, size: int = 16) -> bytes:
    """An APNG whose frames alternate black and white (every frame differs from the one before)."""
    from PIL import Image

    black, white = Image.new("L", (size, size), 0), Image.new("L", (size, size), 255)
    buf = io.BytesIO()
    black.save(buf, "PNG", save_all=True, append_images=[white if i % 2 == 0 else black for i in range(frames - 1)])
    return buf.getvalue()
