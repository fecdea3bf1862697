"""Shared fixtures: where the real datasets live, and small deterministic synthetic images.

Real images are never copied into the repository: tests read them from ``../shared/data`` (beside the
clone; override with ``BRAINTUMOR_SHARED_DATA``) or build tiny synthetic inputs in ``tmp_path``.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from braintumor.data.datasets import is_tumor_label

from .missing import missing
from .servers import free_port, serving

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


# -- real data -------------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The shared datasets folder; fails on CI when missing, skips (with the reason) elsewhere."""
    override = os.environ.get("BRAINTUMOR_SHARED_DATA")
    path = Path(override).expanduser().resolve() if override else DEFAULT_SHARED_DATA
    if not (path / "brain_tumor_dataset").is_dir():
        reason = (
            f"shared datasets not found at {path} (expected brain_tumor_dataset/ inside); "
            "put them at ../shared/data beside the clone or set BRAINTUMOR_SHARED_DATA"
        )
        missing(reason)
    return path


def read_manifest(root: Path) -> list[dict[str, str]]:
    with (root / "MANIFEST.csv").open(newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="session")
def manifest(shared_data: Path) -> Callable[[str], list[dict[str, str]]]:
    """``manifest("br35h")`` -> the rows of that dataset's MANIFEST.csv."""
    cache: dict[str, list[dict[str, str]]] = {}

    def load(name: str) -> list[dict[str, str]]:
        if name not in cache:
            cache[name] = read_manifest(shared_data / name)
        return cache[name]

    return load


@pytest.fixture(scope="session")
def seed_audit(shared_data: Path) -> Any:
    """The audit of the seed's ``brain_tumor_dataset`` alone (shared by audit, split and CLI tests)."""
    from braintumor.data.audit import audit_records
    from braintumor.data.datasets import discover

    return audit_records(discover(shared_data / "brain_tumor_dataset"))


# -- synthetic images ------------------------------------------------------------------------------------
def make_brain(seed: int = 0, width: int = 256, height: int = 224) -> np.ndarray:
    """A deterministic gray "axial slice": a bright skull ring, darker brain, a few seeded blobs.

    Different seeds give images that the audit must not call near duplicates (thumbnail r < 0.92).
    """
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64)
    cx = width * (0.5 + rng.uniform(-0.06, 0.06))
    cy = height * (0.5 + rng.uniform(-0.06, 0.06))
    ax = width * rng.uniform(0.3, 0.42)
    ay = height * rng.uniform(0.32, 0.44)
    r = np.hypot((xx - cx) / ax, (yy - cy) / ay)
    img = np.where(r <= 1.0, 70.0, 0.0)
    img += np.where((r > 0.88) & (r <= 1.0), 130.0, 0.0)
    for _ in range(10):
        bx = cx + rng.uniform(-0.6, 0.6) * ax
        by = cy + rng.uniform(-0.6, 0.6) * ay
        s = rng.uniform(0.1, 0.25) * min(ax, ay)
        amp = rng.uniform(-70, 150)
        img += amp * np.exp(-((xx - bx) ** 2 + (yy - by) ** 2) / (2 * s * s)) * (r < 0.88)
    return np.clip(np.rint(img), 0, 255).astype(np.uint8)


def encode(pixels: np.ndarray | Image.Image, fmt: str, **save_kwargs: Any) -> bytes:
    """Encode an array or PIL image with PIL (``fmt``: "PNG", "JPEG", "BMP", "TIFF" …)."""
    im = pixels if isinstance(pixels, Image.Image) else Image.fromarray(pixels)
    buf = io.BytesIO()
    im.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


@pytest.fixture
def brain() -> Callable[..., np.ndarray]:
    """Factory: ``brain(seed=0, width=256, height=224)`` -> uint8 ``(H, W)`` synthetic slice."""
    return make_brain


@pytest.fixture
def brain_gray() -> np.ndarray:
    """One synthetic gray slice, 256×224 (W×H)."""
    return make_brain(0)


@pytest.fixture
def encoder() -> Callable[..., bytes]:
    """``encoder(array_or_pil, "PNG", **save_kwargs)`` -> encoded bytes."""
    return encode


@pytest.fixture
def write_image() -> Callable[..., Path]:
    """``write_image(path, array_or_pil, fmt, **save_kwargs)``: encode with ``fmt`` whatever the suffix says."""

    def write(path: Path, pixels: np.ndarray | Image.Image, fmt: str = "PNG", **save_kwargs: Any) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(encode(pixels, fmt, **save_kwargs))
        return path

    return write


# -- tiny labelled dataset and a trained smoke run ---------------------------------------------------------
def make_labelled_slice(seed: int, tumor: bool, size: int = 96) -> np.ndarray:
    """A distinct synthetic slice (:func:`make_brain`); tumor slices carry one bright disc inside the brain."""
    img = make_brain(seed, size, size)
    if tumor:
        rng = np.random.default_rng(10_000 + seed)
        yy, xx = np.mgrid[:size, :size]
        cy, cx = rng.integers(size * 2 // 5, size * 3 // 5, 2)
        img = img.copy()
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 9) ** 2] = 235
    return img


def _write_slices(root: Path, counts: dict[str, tuple[int, int]], suffix: str) -> Path:
    """``root/<label>/<label><i><suffix>`` synthetic slices: ``counts[label] = (how many, first seed)``."""
    for label, (n, first_seed) in counts.items():
        (root / label).mkdir(parents=True)
        for i in range(n):
            pixels = make_labelled_slice(first_seed + i, is_tumor_label(label))
            Image.fromarray(pixels).save(
                root / label / f"{label}{i}{suffix}", **({"quality": 95} if suffix == ".jpg" else {})
            )
    return root


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``tiny/yes`` and ``tiny/no`` with 20 synthetic JPEG slices each."""
    return _write_slices(tmp_path_factory.mktemp("data") / "tiny", {"yes": (20, 0), "no": (20, 100)}, ".jpg")


@pytest.fixture(scope="session")
def tiny_typed_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``typed/glioma`` and ``typed/notumor`` (16 synthetic slices each): a second source with tumor types."""
    return _write_slices(tmp_path_factory.mktemp("data") / "typed", {"glioma": (16, 500), "notumor": (16, 600)}, ".png")


@pytest.fixture(scope="session")
def smoke_config() -> Any:
    """A training config that runs the whole loop in seconds (random init, tiny backbone)."""
    from braintumor.training.config import TrainConfig

    return TrainConfig(
        arch="mobilenet_v3_small",
        pretrained=False,
        epochs=2,
        cached_views=2,
        fine_tune_epochs=1,
        batch_size=4,
        threads=1,
    )


@pytest.fixture(scope="session")
def smoke_run(tiny_dataset: Path, smoke_config: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A trained run folder (checkpoint, card, split, fingerprints) on ``tiny_dataset``."""
    from braintumor.training.loop import train

    out = tmp_path_factory.mktemp("runs") / "smoke"
    train(smoke_config, [str(tiny_dataset)], out, progress=False, log=lambda _: None)
    return out


@pytest.fixture(scope="session")
def smoke_export(smoke_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``smoke_run`` exported to ONNX (model.onnx + card.json)."""
    from braintumor.export.onnx import export_run

    return export_run(smoke_run, tmp_path_factory.mktemp("exports") / "smoke")


# -- storage backends: SecantusDB (a MongoDB-wire server) started for the session ---------------------------
@pytest.fixture(scope="session")
def secantus_uri(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """URI of a SecantusDB server on a free 127.0.0.1 port with a temporary data folder, stopped at the end.

    Skips (fails on CI) when ``secantusd-py`` is not installed (``pip install secantusdb``).
    """
    import shutil
    import sys

    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(exe).is_file():
        reason = "SecantusDB is not installed (pip install secantusdb): MongoDB backend tests need it"
        missing(reason)
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    port = free_port()
    folder = tmp_path_factory.mktemp("secantus")
    uri = f"mongodb://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            MongoClient(uri, serverSelectionTimeoutMS=500).admin.command("ping")
            return True
        except PyMongoError:
            return False

    cmd = [exe, "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(folder / "db"), "--standalone"]
    with serving(cmd, log=folder / "server.log", ready=answers, what="SecantusDB", timeout=30):
        yield uri


@pytest.fixture(scope="session")
def real_mongo_uri() -> str:
    """``BRAINTUMOR_TEST_MONGO_URI`` (a real MongoDB), or skip."""
    uri = os.environ.get("BRAINTUMOR_TEST_MONGO_URI")
    if not uri:
        pytest.skip("set BRAINTUMOR_TEST_MONGO_URI to also run the MongoDB tests against a real MongoDB")
    return uri


STORAGE_BACKENDS = ("embedded", "secantus", "mongodb")


@pytest.fixture
def make_storage(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    """Factory ``make_storage(backend)`` -> an empty store (``embedded`` in tmp_path, or a fresh MongoDB database on
    SecantusDB / the real MongoDB), closed (and the database dropped) at the end of the test."""
    import secrets

    opened: list[tuple[Any, Any]] = []

    def make(backend: str, **kwargs: Any) -> Any:
        if backend == "embedded":
            from braintumor.storage.sqlite import EmbeddedStorage

            store = EmbeddedStorage(kwargs.pop("data_dir", tmp_path / "data"), **kwargs)
            opened.append((store, None))
            return store
        from braintumor.storage.mongo import MongoStorage

        uri = request.getfixturevalue("secantus_uri" if backend == "secantus" else "real_mongo_uri")
        name = kwargs.pop("database", f"braintumor_test_{secrets.token_hex(6)}")
        store = MongoStorage(uri, name, **kwargs)
        opened.append((store, (uri, name)))
        return store

    yield make
    from pymongo import MongoClient

    for store, mongo in reversed(opened):
        store.close()
        if mongo is not None:
            client: Any = MongoClient(mongo[0], serverSelectionTimeoutMS=2000)
            client.drop_database(mongo[1])
            client.close()
