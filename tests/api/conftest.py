"""API fixtures: apps built by the factory on either backend, the smoke model, and a small client helper."""

from __future__ import annotations

import dataclasses
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from braintumor.api import Settings, create_app
from braintumor.inference.gate import Refusal
from braintumor.inference.predictor import Predictor

from ..conftest import encode
from ..dicom_files import encoded, identified

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

    def image_refusal(self, _image: Any) -> Refusal:
        return Refusal("not_mri", "this looks like a photograph, not a brain MRI slice")

    def feature_refusals(self, features: Any, _images: Any = None) -> list[Refusal | None]:
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


@pytest.fixture
def scan_dicom() -> bytes:
    """pydicom's MR_small with a made-up patient, institution, physician and study description."""
    return encoded(identified(StudyDescription="MRI BRAIN of Jane Doe"))


def disc_png(side: int, radius: int, value: int) -> bytes:
    """A ``side``×``side`` black PNG with one centred disc of gray ``value``: the least image that decodes as a
    slice, for tests that need a valid upload and not a realistic one."""
    yy, xx = np.mgrid[:side, :side]
    centre = side // 2
    return encode(np.where((yy - centre) ** 2 + (xx - centre) ** 2 < radius**2, value, 0).astype(np.uint8), "PNG")
