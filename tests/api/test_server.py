"""A real uvicorn server (``braintumor serve``) on 127.0.0.1: parallel predictions from several users, and a SIGKILL
under load followed by a restart — every acknowledged scan must be there with its files, and no orphan blob."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.integration
PASSWORD = "correct-horse-battery"


@dataclass
class Server:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@pytest.fixture
def start_server(tmp_path: Path, smoke_export: Path) -> Iterator[Callable[..., Server]]:
    """``start_server(data_dir, **env)`` runs ``braintumor serve`` on a free loopback port and waits for /health."""

    servers: list[Server] = []

    def start(data_dir: Path, port: int | None = None, **env: str) -> Server:
        import socket

        if port is None:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = int(s.getsockname()[1])
        log = tmp_path / f"server-{len(servers)}.log"
        environ = {
            **{k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")},
            "BRAINTUMOR_ARGON2_TIME_COST": "1",
            "BRAINTUMOR_ARGON2_MEMORY_KIB": "1024",
            "BRAINTUMOR_ARGON2_PARALLELISM": "1",
            "BRAINTUMOR_AUTH_RATE_PER_MINUTE": "100000",
            "BRAINTUMOR_INFERENCE_THREADS": "1",
            **env,
        }
        cmd = [
            sys.executable,
            "-m",
            "braintumor.cli",
            "serve",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--data-dir",
            str(data_dir),
            "--model",
            str(smoke_export),
        ]
        proc = subprocess.Popen(cmd, env=environ, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        server = Server(f"http://127.0.0.1:{port}", proc, log)
        servers.append(server)
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(server.url + "/health", timeout=1).status_code == 200:
                    return server
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"server did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)

    yield start
    for server in servers:
        server.stop()


def _png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :112]
    img = np.where((yy - 48) ** 2 + (xx - 56) ** 2 < 40**2, 80, 0) + rng.integers(0, 60, (96, 112))
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue()


def _login(client: httpx.Client, name: str) -> dict[str, str]:
    assert client.post("/register", json={"username": name, "password": PASSWORD}).status_code == 201
    token = client.post("/token", data={"username": name, "password": PASSWORD}).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("backend", ["embedded", "secantus"])
def test_parallel_predictions_from_several_users(
    start_server: Callable[..., Server], tmp_path: Path, backend: str, request: pytest.FixtureRequest
) -> None:
    env: dict[str, str] = {}
    if backend == "secantus":
        import secrets

        env = {
            "BRAINTUMOR_STORAGE": "mongodb",
            "BRAINTUMOR_MONGO_URI": request.getfixturevalue("secantus_uri"),
            "BRAINTUMOR_MONGO_DATABASE": f"braintumor_srv_{secrets.token_hex(4)}",
        }
    server = start_server(tmp_path / "data", **env)
    assert (tmp_path / "data" / "secret.key").stat().st_mode & 0o077 == 0  # generated on first start, private
    with httpx.Client(base_url=server.url, timeout=60) as client:
        users = {f"user{i}": _login(client, f"user{i}") for i in range(4)}
        jobs = [(name, k) for k in range(6) for name in users]
        payloads = {(name, k): _png(hash((name, k)) % 10_000) for name, k in jobs}

        def upload(job: tuple[str, int]) -> tuple[tuple[str, int], dict[str, Any]]:
            name, k = job
            r = client.post(
                "/predict", headers=users[name], files={"file": (f"{name}-{k}.png", payloads[job], "image/png")}
            )
            assert r.status_code == 201, r.text
            return job, r.json()

        with ThreadPoolExecutor(8) as pool:
            results = dict(pool.map(upload, jobs))
        assert len({r["id"] for r in results.values()}) == len(jobs)
        for name, headers in users.items():
            history = client.get("/history", headers=headers, params={"page_size": 100}).json()
            assert history["total"] == 6
            assert sorted(i["filename"] for i in history["items"]) == sorted(f"{name}-{k}.png" for k in range(6))
        for (name, k), body in results.items():
            original = client.get(body["files"]["original"]["url"], headers=users[name])
            assert original.content == payloads[(name, k)], "an upload was mixed up with another"
            other = next(n for n in users if n != name)
            assert client.get(f"/history/{body['id']}", headers=users[other]).status_code == 404


def test_sigkill_under_load_loses_no_acknowledged_scan(start_server: Callable[..., Server], tmp_path: Path) -> None:
    data = tmp_path / "data"
    server = start_server(data)
    acknowledged: list[tuple[dict[str, str], dict[str, Any], bytes]] = []
    errors: list[str] = []
    stop = threading.Event()
    with httpx.Client(base_url=server.url, timeout=30) as client:
        users = [_login(client, f"user{i}") for i in range(3)]

    def hammer(worker: int) -> None:
        headers = users[worker % len(users)]
        with httpx.Client(base_url=server.url, timeout=30) as c:
            k = 0
            while not stop.is_set():
                payload = _png(worker * 1000 + k)
                k += 1
                try:
                    r = c.post("/predict", headers=headers, files={"file": (f"w{worker}-{k}.png", payload)})
                except httpx.HTTPError:
                    return  # the server died mid-request: not acknowledged
                if r.status_code == 201:
                    acknowledged.append((headers, r.json(), payload))
                else:
                    errors.append(r.text)

    threads = [threading.Thread(target=hammer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while len(acknowledged) < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stop(signal.SIGKILL)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors and len(acknowledged) >= 12
    assert server.proc.returncode == -signal.SIGKILL

    restarted = start_server(data)
    with httpx.Client(base_url=restarted.url, timeout=30) as client:
        for headers, body, payload in acknowledged:  # tokens survive: the secret was kept in the data dir
            r = client.get(f"/history/{body['id']}", headers=headers)
            assert r.status_code == 200, r.text
            for kind, f in body["files"].items():
                got = client.get(f["url"], headers=headers)
                assert got.status_code == 200, kind
                if kind == "original":
                    assert got.content == payload
    from braintumor.storage.sqlite import EmbeddedStorage

    store = EmbeddedStorage(data)  # the server keeps it open: this handle only reads
    report = store.check()
    store.close()
    assert report.missing_blobs == [] and report.orphan_blobs == [], report
    assert not any((data / "tmp").iterdir()) and not any((data / "trash").iterdir())


def _zipped_series(shared_data: Path, n: int) -> bytes:
    import zipfile

    from ..dicom_files import mr_series
    from ..studies import real_slices

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for i, ds in enumerate(mr_series(real_slices(shared_data, n, side=128, label="yes"))):
            one = io.BytesIO()
            ds.save_as(one, enforce_file_format=True)
            z.writestr(f"IM{i:03d}.dcm", one.getvalue())
    return buf.getvalue()


def test_a_killed_study_upload_leaves_no_half_record(
    start_server: Callable[..., Server], tmp_path: Path, shared_data: Path
) -> None:
    """A client that dies mid-upload stores nothing; a server SIGKILLed while it analyses or stores a study comes
    back with the study whole (every file) or absent, and no orphan or staged blob."""
    import socket
    from urllib.parse import urlsplit

    data = tmp_path / "data"
    server = start_server(data)
    zipped = _zipped_series(shared_data, 30)
    with httpx.Client(base_url=server.url, timeout=60) as client:
        headers = _login(client, "alice")
        request = client.build_request("POST", "/studies", headers=headers, files=[("files", ("s.zip", zipped))])
        body = request.read()
        head = "POST /studies HTTP/1.1\r\nHost: 127.0.0.1\r\n" + "".join(
            f"{k}: {v}\r\n" for k, v in request.headers.items() if k.lower() not in ("host", "content-length")
        )
        parts = urlsplit(server.url)
        with socket.create_connection((parts.hostname, parts.port)) as raw:  # the client dies half-way
            raw.sendall(f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body[: len(body) // 2])
        time.sleep(1.0)
        assert client.get("/history", headers=headers).json()["total"] == 0

        done: list[Any] = []

        def upload() -> None:
            try:
                done.append(client.post("/studies", headers=headers, files=[("files", ("s.zip", zipped))]))
            except httpx.HTTPError:
                done.append(None)  # the server died first: not acknowledged

        t = threading.Thread(target=upload)
        t.start()
        time.sleep(1.5)  # inside the analysis of 30 slices (or, on a fast machine, storing it)
        server.stop(signal.SIGKILL)
        t.join(60)

    restarted = start_server(data)
    with httpx.Client(base_url=restarted.url, timeout=60) as client:
        rows = client.get("/history", headers=headers).json()["items"]
        acknowledged = bool(done) and done[0] is not None and done[0].status_code == 201
        assert len(rows) <= 1  # a study the server never answered for may have been committed, or not
        if acknowledged:
            assert len(rows) == 1
        for row in rows:  # a study that is there is whole
            study = client.get(row["url"], headers=headers).json()
            assert len(study["slices"]) == 30
            for s in study["slices"]:
                assert client.get(s["image_url"], headers=headers).status_code == 200
    from braintumor.storage.sqlite import EmbeddedStorage

    store = EmbeddedStorage(data)
    report = store.check()
    store.close()
    assert report.missing_blobs == [] and report.orphan_blobs == [], report
    assert not any((data / "tmp").iterdir()) and not any((data / "trash").iterdir())
