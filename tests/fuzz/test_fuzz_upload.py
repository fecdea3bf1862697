"""Fuzzing the whole upload path: mutated files through ``POST /predict`` (decoding and de-identification in the
isolated child, then the model). Every answer is 201 or a 4xx with a reason; no 500, no decoder crash or untyped
error in the server log, and a refused upload stores nothing."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings

from braintumor.api import Settings, create_app
from braintumor.inference.predictor import Predictor

from .conftest import UPLOADS
from .test_fuzz_decoders import mutated, save_failure

PASSWORD = "correct-horse-battery"
SECRET = "fZ8kQ2wL5xR9vN3cT7bY1hM4dG6pJ0sAeUoIiXtEwKn"


class _Errors(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture(scope="module")
def upload(smoke_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    predictor = dataclasses.replace(Predictor.load(smoke_export, threads=1), gate=None)
    app_settings = Settings(
        secret_key=SECRET,
        data_dir=tmp_path_factory.mktemp("fuzz-upload"),
        argon2_time_cost=1,
        argon2_memory_kib=1024,
        argon2_parallelism=1,
        auth_rate_per_minute=100_000,
    )
    errors = _Errors()
    logging.getLogger("braintumor").addHandler(errors)
    with TestClient(create_app(app_settings, predictor=predictor)) as client:
        assert client.post("/register", json={"username": "fuzzer", "password": PASSWORD}).status_code == 201
        token = client.post("/token", data={"username": "fuzzer", "password": PASSWORD}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}

        def post(data: bytes) -> tuple[int, Any, list[logging.LogRecord]]:
            errors.records.clear()
            r = client.post("/predict", headers=headers, files={"file": ("x", data, "application/octet-stream")})
            return r.status_code, r.json(), list(errors.records)

        yield post
    logging.getLogger("braintumor").removeHandler(errors)


@settings(max_examples=UPLOADS)
@given(mutated())
def test_upload_answers_201_or_a_4xx(upload: Any, data: bytes) -> None:
    status, body, logged = upload(data)
    try:
        assert status in (201, 413, 415, 422), (status, body)
        if status != 201:
            assert isinstance(body["detail"], str) and body["detail"]
        assert not logged, [r.getMessage() for r in logged]
    except AssertionError:
        save_failure(data)
        raise
