"""Latency of ``POST /predict`` through a real server on loopback, at 1 and 8 concurrent clients.

    python bench/api_latency.py --model /path/to/export          # an export or ensemble folder
    python bench/api_latency.py                                  # the bundled model, once shipped

Starts ``braintumor serve`` on a free 127.0.0.1 port with a throw-away data directory, registers a user, warms
up, then times full requests (upload, decode, every ensemble member, heatmaps, atomic storage, response) from
the client side. Appends a section to ``bench/results-api.md`` with p50/p99, throughput, and the size of the
authorization matrix that ``tests/api/test_authz_matrix.py`` checks.
"""

from __future__ import annotations

import argparse
import importlib
import io
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "latency-check-2026"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scan(path: Path | None) -> tuple[bytes, str]:
    """A real MRI slice from the shared data when present, else a synthetic 512×512 PNG."""
    if path is not None and path.is_file():
        return path.read_bytes(), f"{path.name} ({Image.open(path).size[0]}×{Image.open(path).size[1]})"
    yy, xx = np.mgrid[:512, :512]
    img = np.where((yy - 256) ** 2 + (xx - 256) ** 2 < 200**2, 90, 0) + np.random.default_rng(0).integers(
        0, 40, (512, 512)
    )
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, "PNG")
    return buf.getvalue(), "synthetic PNG (512×512)"


def _matrix_size() -> tuple[int, int, int, int]:
    # as ``tests.api.test_authz_matrix`` (namespace packages): the tests import their helpers relatively
    sys.path.insert(0, str(ROOT))
    try:
        module = importlib.import_module("tests.api.test_authz_matrix")
    finally:
        sys.path.remove(str(ROOT))
    return len(module.MATRIX), len(module.CASES), len(module.ROLES), len(module.BACKENDS)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


#: A PNG signature and a damaged header: the isolated decoder refuses it at once (422), so its round trip is the
#: API's fixed cost around decoding (upload, sign-in check, the decoder child, the error answer) without the model.
DAMAGED_PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 40


def run(
    server: str,
    headers: dict[str, str],
    payload: bytes,
    clients: int,
    requests: int,
    pause_s: float = 0.0,
    expect: int = 201,
) -> dict[str, Any]:
    """``requests`` uploads from ``clients`` concurrent clients, each waiting ``pause_s`` before each upload (a
    reader looking at the last answer: the server is idle then, as between a radiologist's uploads); each answer
    must have status ``expect``."""
    latencies: list[float] = []

    def one(k: int) -> float:
        with httpx.Client(base_url=server, timeout=120) as client:
            time.sleep(pause_s)
            t0 = time.perf_counter()
            r = client.post("/predict", headers=headers, files={"file": (f"bench-{k}.jpg", payload)})
            elapsed = time.perf_counter() - t0
            if r.status_code != expect:
                raise RuntimeError(f"/predict answered {r.status_code}: {r.text[:200]}")
            return elapsed

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        latencies = list(pool.map(one, range(requests)))
    wall = time.perf_counter() - start
    return {
        "clients": clients,
        "pause_s": pause_s,
        "refused": expect != 201,
        "requests": requests,
        "p50_ms": _percentile(latencies, 50) * 1000,
        "p99_ms": _percentile(latencies, 99) * 1000,
        "mean_ms": statistics.fmean(latencies) * 1000,
        "throughput": requests / (wall - pause_s * requests / clients),
    }


def _paced(row: dict[str, Any]) -> str:
    if row.get("refused"):
        return " (a damaged PNG, refused by the decoder: no model)"
    return f" ({row['pause_s']:g} s between uploads)" if row["pause_s"] else ""


def in_process_ms(model: Path | None, payload: bytes, n: int = 30) -> float:
    """Median ms of ``predict(load_image(bytes))`` in this process (decode, gate, members, heatmap): the
    reference the API's single-client latency is held against. Run with the server stopped."""
    from braintumor.imaging.io import load_image
    from braintumor.inference.bundled import resolve_model_dir
    from braintumor.inference.predictor import Predictor

    predictor = Predictor.load(resolve_model_dir(model))
    for _ in range(3):
        predictor.predict(load_image(payload))
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        predictor.predict(load_image(payload))
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="model folder (default: the bundled model)")
    parser.add_argument("--image", type=Path, default=ROOT.parent / "shared" / "data" / "brain_tumor_dataset" / "yes"
                        / "Y1.jpg")  # fmt: skip
    parser.add_argument("--requests", type=int, default=60, help="timed requests per concurrency level")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--pause",
        type=float,
        default=0.5,
        help="seconds one client waits before each upload, for the 'interactive' row (0: no row)",
    )
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results-api.md")
    args = parser.parse_args(argv)

    size, cases, roles, backends = _matrix_size()
    payload, image_desc = _scan(args.image)
    reference = [in_process_ms(args.model, payload)]
    port = _free_port()
    with tempfile.TemporaryDirectory(prefix="braintumor-api-bench-") as tmp:
        env = {k: v for k, v in os.environ.items() if not k.startswith("BRAINTUMOR_")}
        cmd = [sys.executable, "-m", "braintumor.cli", "serve", "--port", str(port), "--data-dir", tmp]
        if args.model:
            cmd += ["--model", str(args.model)]
        log = Path(tmp) / "server.log"
        proc = subprocess.Popen(cmd, env=env, stdout=log.open("wb"), stderr=subprocess.STDOUT)
        server = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    health = httpx.get(server + "/health", timeout=2).json()
                    break
                except httpx.HTTPError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        print(log.read_text()[-2000:], file=sys.stderr)
                        return 1
                    time.sleep(0.3)
            if not health["model"]["loaded"]:
                print(f"no model loaded: {health['model']['reason']} (pass --model DIR)", file=sys.stderr)
                return 2
            with httpx.Client(base_url=server, timeout=60) as client:
                r = client.post("/register", json={"username": "bench", "password": PASSWORD})
                r.raise_for_status()
                token = client.post("/token", data={"username": "bench", "password": PASSWORD}).json()
            headers = {"Authorization": f"Bearer {token['access_token']}"}
            run(server, headers, payload, 1, 5)  # warm-up: ONNX Runtime's first calls allocate
            load_before = os.getloadavg()[0]
            rows = [run(server, headers, payload, c, max(args.requests, 2 * c)) for c in args.concurrency]
            if args.pause > 0:
                rows.append(run(server, headers, payload, 1, args.requests, args.pause))
            rows.append(run(server, headers, DAMAGED_PNG, 1, args.requests, expect=422))
            load_after = os.getloadavg()[0]
        finally:
            proc.terminate()
            proc.wait(30)

    reference.append(in_process_ms(args.model, payload))
    single_ms = float(np.median(reference))
    one_client = next((r for r in rows if r["clients"] == 1 and not r["pause_s"] and not r["refused"]), None)
    paced = next((r for r in rows if r["pause_s"]), None)
    card = health["model"]["card"]
    members = ", ".join(f"{m['arch']} ({m['input_size']} px, {m['precision']})" for m in card["members"])
    cpu = os.cpu_count()
    lines = [
        f"## POST /predict latency ({time.strftime('%Y-%m-%d')})",
        "",
        f"Machine: {platform.machine()}, {cpu} cores, Python {platform.python_version()}, load average "
        f"{load_before:.1f} before / {load_after:.1f} after (other work on the machine inflates every figure). "
        "Server: `braintumor serve` "
        f"on 127.0.0.1 (uvicorn, 1 worker, embedded storage, default settings: at most 2 analyses at once, ONNX "
        f"Runtime on all cores). Model: {card['name']} {card['version']}: {members}. Image: {image_desc}. "
        "Latency is measured by the client: upload, decode, every member, Grad-CAM heatmap and overlay PNGs, "
        "atomic storage, JSON response.",
        "",
        "| concurrent clients | requests | p50 ms | p99 ms | mean ms | throughput (req/s) |",
        "|---|---|---|---|---|---|",
        *(
            f"| {r['clients']}{_paced(r)} | {r['requests']} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | "
            f"{r['mean_ms']:.0f} | {r['throughput']:.1f} |"
            for r in rows
        ),
        "",
        f"In-process single scan (`predict(load_image(bytes))`, the same image and model, measured before and "
        f"after the server ran, median): {single_ms:.0f} ms"
        + (
            f"; `/predict` at 1 client p50 / in-process = {one_client['p50_ms'] / single_ms:.2f}× (goal ≤ 1.5×)"
            if one_client
            else ""
        )
        + (f"; with {paced['pause_s']:g} s between uploads {paced['p50_ms'] / single_ms:.2f}×." if paced else ".")
        + " What the API adds: the upload, decoding in an isolated child process (one started ahead, per upload), "
        "de-identification, PNG encoding of the heatmaps and overlays, atomic storage, the JSON response.",
        "",
        f"Authorization matrix (`tests/api/test_authz_matrix.py`): {size} cells = {cases} endpoint cases × "
        f"{roles} roles (anonymous, other user, owner, admin) × {backends} backends (embedded, MongoDB wire on "
        "SecantusDB).",
        "",
        f"Command: `python bench/api_latency.py{' --model ' + str(args.model) if args.model else ''}`",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    print(json.dumps(rows), file=sys.stderr)
    previous = args.results.read_text() if args.results.exists() else "# API benchmarks\n\n"
    args.results.write_text(previous.rstrip("\n") + "\n\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
