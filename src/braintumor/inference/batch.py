"""Batch scoring of files and folders: parallel decoding, batched inference, one status per file.

A bad or rejected file gets its status and a one-line reason, and the run goes on. The same rows come out
whether the work runs in this process or across a Dask cluster (``--dask``), in input order.

Example:
    >>> rows = score_paths(Predictor.load(model_dir), ["archive/"])  # doctest: +SKIP
    >>> rows[0]["status"], rows[0]["outcome"]  # doctest: +SKIP
    ('ok', 'tumor')
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.errors import BrainTumorError
from braintumor.imaging.io import load_image
from braintumor.imaging.types import LoadedImage
from braintumor.inference.predictor import Prediction, Predictor, Rejection
from braintumor.models.decision import OUTCOMES

Row = dict[str, Any]
BASE_COLUMNS = ("path", "status", "reason", "outcome", "p_tumor")
TAIL_COLUMNS = ("tumor_type", "threshold", "model", "model_version", "heatmap")
#: Filled for slices of DICOM series and NIfTI volumes (empty for single images): see inference/study.py.
SERIES_COLUMNS = ("study_uid", "series_uid", "slice", "slice_position")


def columns(class_names: Sequence[str]) -> list[str]:
    """CSV columns: path, status, reason, outcome, p_tumor, one p_<class> per class, then the rest."""
    per_class = [f"p_{c}" for c in class_names if f"p_{c}" not in BASE_COLUMNS]  # binary: p_tumor is there
    return [*BASE_COLUMNS, *per_class, *TAIL_COLUMNS, *SERIES_COLUMNS]


def expand_paths(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, folders walked recursively (hidden entries skipped), sorted for a stable order.

    Files in folders are taken whatever their extension (DICOM archives often have none); what is not an
    image is reported per file, not silently skipped.
    """
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            for root, dirs, files in os.walk(p):
                dirs[:] = sorted(d for d in dirs if not d.startswith("."))
                out.extend(Path(root) / f for f in sorted(files) if not f.startswith("."))
        else:
            out.append(p)
    return out


def _decode(path: Path) -> LoadedImage | str:
    try:
        return load_image(path)
    except BrainTumorError as exc:
        return str(exc)


def heatmap_name(path: Path) -> str:
    """A flat, safe PNG file name for a source path (``a/b/c.dcm`` → ``a__b__c.dcm.png``)."""
    text = "__".join(part for part in path.parts if part not in ("/", "..", "."))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text)[-200:] + ".png"


def _row(
    path: Path,
    result: Prediction | Rejection | str,
    predictor: Predictor,
    cam_dir: Path | None,
    image: LoadedImage | None = None,
) -> Row:
    row: Row = dict.fromkeys(columns(predictor.class_names), "")
    row["path"] = str(path)
    if isinstance(result, str):
        row.update(status="error", reason=result)
        return row
    if isinstance(result, Rejection):
        row.update(status="rejected" if result.kind == "not_mri" else "out_of_scope", reason=result.reason)
        return row
    row.update(
        status="ok",
        outcome=result.outcome,
        p_tumor=round(result.p_tumor, 6),
        tumor_type=result.tumor_type or "",
        threshold=round(result.decision.threshold, 6),
        model=result.model_name,
        model_version=result.model_version,
    )
    for name, p in result.probs.items():
        row[f"p_{name}"] = round(p, 6)
    if cam_dir is not None and result.cam is not None and image is not None:
        row["heatmap"] = str(_save_overlay(cam_dir / heatmap_name(path), image, result))
    return row


def _save_overlay(target: Path, image: LoadedImage, result: Prediction) -> Path:
    from PIL import Image

    from braintumor.imaging.overlay import overlay

    assert result.cam is not None
    # compress_level 1: 4× faster than PIL's default for a file that is read once by a person.
    Image.fromarray(overlay(image.pixels, result.cam)).save(target, compress_level=1)
    return target


def score_paths(
    predictor: Predictor,
    paths: Sequence[str | Path],
    *,
    cam_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Row]:
    """Score every file under ``paths`` in order; never raises for a bad file."""
    files = expand_paths(paths)
    return list(iter_scores(predictor, files, cam_dir=cam_dir, batch_size=batch_size, workers=workers,
                            progress=progress))  # fmt: skip


def iter_scores(
    predictor: Predictor,
    files: Sequence[Path],
    *,
    cam_dir: str | Path | None = None,
    batch_size: int = 16,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> Iterator[Row]:
    """Yield one row per file, in order: decode in a thread pool, predict in batches."""
    cam_path = Path(cam_dir) if cam_dir is not None else None
    if cam_path is not None:
        cam_path.mkdir(parents=True, exist_ok=True)
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        # A bounded read-ahead (two batches) keeps memory flat on archives of any size.
        window = 2 * batch_size
        futures = [pool.submit(_decode, f) for f in files[:window]]
        pending: list[tuple[Path, LoadedImage | str]] = []
        for k, path in enumerate(files):
            item = futures[k].result()
            futures[k] = None  # type: ignore[call-overload]
            if k + window < len(files):
                futures.append(pool.submit(_decode, files[k + window]))
            pending.append((path, item))
            if len(pending) >= batch_size:
                yield from _flush(predictor, pending, cam_path, progress)
                pending = []
        if pending:
            yield from _flush(predictor, pending, cam_path, progress)


def _flush(
    predictor: Predictor,
    pending: list[tuple[Path, LoadedImage | str]],
    cam_dir: Path | None,
    progress: Callable[[int], None] | None,
) -> Iterator[Row]:
    images = [item for _, item in pending if not isinstance(item, str)]
    try:
        results = iter(predictor.predict_batch(images, cam=cam_dir is not None))
    except BrainTumorError as exc:  # a model-level failure: report it per file, keep going
        results = iter([str(exc)] * len(images))  # type: ignore[list-item]
    for path, item in pending:
        result: Prediction | Rejection | str = item if isinstance(item, str) else next(results)
        yield _row(path, result, predictor, cam_dir, None if isinstance(item, str) else item)
        if progress:
            progress(1)


# -- Dask ------------------------------------------------------------------------------------------------
_WORKER_PREDICTORS: dict[tuple[str, int | None], Predictor] = {}


def _score_chunk(model_dir: str, files: list[str], cam_dir: str | None, threads: int | None) -> list[Row]:
    """Runs on a Dask worker: load the model once per worker process, then score the chunk."""
    key = (model_dir, threads)
    if key not in _WORKER_PREDICTORS:
        _WORKER_PREDICTORS[key] = Predictor.load(model_dir, threads=threads)
    predictor = _WORKER_PREDICTORS[key]
    return list(iter_scores(predictor, [Path(f) for f in files], cam_dir=cam_dir, workers=1))


def score_with_dask(
    model_dir: str | Path,
    paths: Sequence[str | Path],
    address: str,
    *,
    cam_dir: str | Path | None = None,
    chunk: int = 64,
    threads_per_task: int | None = 1,
    progress: Callable[[int], None] | None = None,
) -> list[Row]:
    """Score across a Dask cluster (``address`` = scheduler address, or ``local`` for a LocalCluster on
    127.0.0.1). Rows come back in input order, identical to :func:`score_paths`."""
    from dask.distributed import Client, LocalCluster, as_completed

    files = [str(p) for p in expand_paths(paths)]
    chunks = [files[i : i + chunk] for i in range(0, len(files), chunk)]
    cluster = None
    if address == "local":
        cluster = LocalCluster(  # type: ignore[no-untyped-call]
            host="127.0.0.1", dashboard_address=None, processes=True, threads_per_worker=1
        )
        client = Client(cluster)  # type: ignore[no-untyped-call]
    else:
        client = Client(address)  # type: ignore[no-untyped-call]
    try:
        futures = [
            client.submit(
                _score_chunk, str(model_dir), c, str(cam_dir) if cam_dir else None, threads_per_task, pure=False
            )
            for c in chunks
        ]
        index = {f.key: n for n, f in enumerate(futures)}
        results: list[list[Row]] = [[] for _ in chunks]
        for future in as_completed(futures):  # type: ignore[no-untyped-call]
            rows = future.result()
            results[index[future.key]] = rows
            if progress:
                progress(len(rows))
    finally:
        client.close()  # type: ignore[no-untyped-call]
        if cluster is not None:
            cluster.close()
    return [row for rows in results for row in rows]


def summarize(rows: Sequence[Row]) -> dict[str, Any]:
    statuses = [r["status"] for r in rows]
    ok = [r for r in rows if r["status"] == "ok"]
    return {
        "files": len(rows),
        "ok": statuses.count("ok"),
        "rejected": statuses.count("rejected"),
        "out_of_scope": statuses.count("out_of_scope"),
        "error": statuses.count("error"),
        **{outcome: sum(1 for r in ok if r["outcome"] == outcome) for outcome in OUTCOMES},
        "mean_p_tumor": float(np.mean([r["p_tumor"] for r in ok])) if ok else None,
    }
