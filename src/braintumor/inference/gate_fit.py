"""Fitting the input gate on the training MRIs of a split (the checks themselves are :mod:`.gate`).

Why apart from the checks: serving only loads a fitted gate and applies it; fitting runs the exported graph over
a split's images (to get the pooled features member 0 computes) and sets every bound from the training images
alone, thresholds from the validation part (see the :mod:`.gate` docstring for what is measured and why).

Example:
    >>> gate = fit_gate("exports/mnv2", ["data/br35h"], "split.csv", "exports/mnv2/gate.npz")  # doctest: +SKIP
    >>> gate.params["features"]["calibration"]  # doctest: +SKIP
    '201 validation images'
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.splits import read_split
from braintumor.errors import DatasetError, ImageError
from braintumor.imaging.io import load_image
from braintumor.imaging.types import LoadedImage
from braintumor.inference.gate import (
    DEFAULT_PROTOTYPES,
    GATE_FORMAT,
    STATISTICS,
    InputGate,
    PrototypeModel,
    image_statistics,
)
from braintumor.inference.members import Member, load_member, preprocess_batch
from braintumor.models.export_dir import ExportDir

#: Fitting defaults (each fitted gate records the values it used).
DEFAULT_QUANTILES = (0.001, 0.999)  # of the training MRIs' statistics
DEFAULT_MARGIN = 1.0  # 1 = halve the distance from the quantile to the statistic's natural limit
DEFAULT_MIN_SIDE = 32  # px; smaller than any slice a scanner writes, and too small to read
DEFAULT_PERCENTILE = 99.5  # of the calibration MRIs' feature scores
MIN_CALIBRATION = 20  # below this many validation images, thresholds come from out-of-fold training scores


def fit_input_gate(
    images: Sequence[LoadedImage],
    features: np.ndarray,
    *,
    calibration_features: np.ndarray | None = None,
    quantiles: tuple[float, float] = DEFAULT_QUANTILES,
    margin: float = DEFAULT_MARGIN,
    min_side: int = DEFAULT_MIN_SIDE,
    prototypes: int = DEFAULT_PROTOTYPES,
    percentile: float = DEFAULT_PERCENTILE,
    source: dict[str, Any] | None = None,
) -> InputGate:
    """Fit both stages on training MRIs: ``images`` and their pooled ``features`` (same order).

    The feature threshold comes from ``calibration_features`` (MRIs the prototypes do not summarise: a
    validation part)
    when there are at least :data:`MIN_CALIBRATION` of them, else from out-of-fold scores of the training
    features. Never pass test images here.

    >>> gate = fit_input_gate(train_images, train_features, calibration_features=val_features)  # doctest: +SKIP
    """
    features = np.asarray(features, dtype=np.float64)
    if len(images) != len(features):
        raise ValueError(f"{len(images)} images but {len(features)} feature rows")
    if len(images) < 3:
        raise DatasetError(f"cannot fit an input gate on {len(images)} images: need at least 3")
    table = [image_statistics(im) for im in images]
    bounds, observed = {}, {}
    for statistic in STATISTICS:
        values = np.array([row[statistic.name] for row in table])
        q_low, q_high = (float(v) for v in np.quantile(values, quantiles))
        quantile = q_low if statistic.side == "min" else q_high
        bounds[statistic.name] = statistic.bound(quantile, margin)
        observed[statistic.name] = {"min": float(values.min()), "q_low": q_low, "q_high": q_high,
                                    "max": float(values.max())}  # fmt: skip
    model = PrototypeModel.fit(features, prototypes)
    if calibration_features is not None and len(calibration_features) >= MIN_CALIBRATION:
        distances = model.distances(np.asarray(calibration_features, dtype=np.float64))
        calibration = f"{len(calibration_features)} validation images"
    else:
        distances = _out_of_fold_distances(features, prototypes)
        calibration = f"out-of-fold scores of {len(features)} training images"
    params: dict[str, Any] = {
        "format": GATE_FORMAT,
        "image": {
            "bounds": bounds,
            "min_side": int(min_side),
            "quantiles": list(quantiles),
            "margin": margin,
            "observed": observed,
        },
        "features": {
            "transform": "l2",
            "distance": "cosine to the nearest prototype",
            "prototypes": int(model.prototypes.shape[0]),
            "dim": model.dim,
            "percentile": percentile,
            "threshold": max(float(np.percentile(distances, percentile)), 1e-12),
            "calibration": calibration,
            "calibration_max": float(distances.max()),
        },
        "n_fit": len(images),
        "source": source or {},
    }
    return InputGate(model, params)


def _out_of_fold_distances(features: np.ndarray, prototypes: int, folds: int = 5) -> np.ndarray:
    """Distance of each training row to prototypes fitted without its fold (an honest stand-in for validation)."""
    n = len(features)
    folds = max(2, min(folds, n))
    fold = np.arange(n) % folds
    distances = np.empty(n)
    for k in range(folds):
        held = fold == k
        distances[held] = PrototypeModel.fit(features[~held], prototypes).distances(features[held])
    return distances


# -- fitting from an export and a split ------------------------------------------------------------------------
def extract_features(
    export_dir: str | Path,
    images: Sequence[LoadedImage],
    *,
    batch_size: int = 32,
    threads: int | None = None,
    precision: str | None = None,
) -> np.ndarray:
    """Pooled features (N×C) of member 0 of ``export_dir``, exactly as the predictor computes them.

    >>> extract_features("exports/mnv2", [load_image("scan.png")]).shape  # doctest: +SKIP
    (1, 1280)
    """
    member = _member0(Path(export_dir), threads, precision)
    out = []
    for start in range(0, len(images), batch_size):
        boxed, _ = preprocess_batch(images[start : start + batch_size], member.size)
        out.append(np.asarray(member.session.run(["features"], {"image": boxed})[0], dtype=np.float32))
    if not out:
        return np.empty((0, 0), np.float32)
    return np.concatenate(out)


def fit_gate(
    export_dir: str | Path,
    data_dirs: Sequence[str | Path],
    split_csv: str | Path,
    out_path: str | Path,
    *,
    max_images: int | None = None,
    threads: int | None = None,
    precision: str | None = None,
    log: Callable[[str], None] | None = None,
) -> InputGate:
    """Fit the gate for ``export_dir`` on the *train* part of ``split_csv`` (thresholds on its *val* part),
    reading images from ``data_dirs`` (dataset roots named as in the split), and save it to ``out_path``.

    Save it as ``gate.npz`` beside ``card.json`` (or name it in ``ensemble.json``'s ``"gate"``) and
    :class:`~braintumor.inference.predictor.Predictor` uses it. ``max_images`` subsamples each part evenly.

    >>> fit_gate("exports/mnv2", ["data/br35h"], "runs/x/split.csv", "exports/mnv2/gate.npz")  # doctest: +SKIP
    """
    say = log or (lambda _msg: None)
    rows, split_sha = read_split(split_csv)
    roots = {Path(d).resolve().name: Path(d) for d in data_dirs}
    missing = sorted({r.dataset for r in rows} - set(roots))
    parts: dict[str, list[LoadedImage]] = {"train": [], "val": []}
    for part in parts:
        chosen = [r for r in rows if r.split == part and r.dataset in roots]
        if max_images and len(chosen) > max_images:
            chosen = [chosen[int(i)] for i in np.linspace(0, len(chosen) - 1, max_images)]
        for r in chosen:
            try:
                parts[part].append(load_image(roots[r.dataset] / r.relative_path))
            except ImageError as exc:
                say(f"skipped {r.key}: {exc}")
    if not parts["train"]:
        raise DatasetError(f"{split_csv} has no readable train images under {', '.join(map(str, data_dirs))}")
    if missing:
        say(f"split datasets not given in data_dirs (ignored): {', '.join(missing)}")
    say(f"features of {len(parts['train'])} train and {len(parts['val'])} val images …")
    train_features = extract_features(export_dir, parts["train"], threads=threads, precision=precision)
    val_features = (
        extract_features(export_dir, parts["val"], threads=threads, precision=precision) if parts["val"] else None
    )
    card = _member0(Path(export_dir), threads, precision).card
    source = {
        "export": str(export_dir),
        "arch": card.arch,
        "model_sha256": card.export.sha256 if card.export else None,
        "split_sha256": split_sha,
        "datasets": sorted({r.dataset for r in rows if r.dataset in roots}),
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
    }
    gate = fit_input_gate(parts["train"], train_features, calibration_features=val_features, source=source)
    gate.save(out_path)
    say(f"wrote {out_path} (sha256 {hashlib.sha256(Path(out_path).read_bytes()).hexdigest()[:12]})")
    return gate


def _member0(export_dir: Path, threads: int | None, precision: str | None) -> Member:
    """Member 0 of an export or ensemble folder, loaded without its gate (which may be the stale file we replace)."""
    _, folder = ExportDir(export_dir).member_dirs()[0]
    return load_member(folder, None, 1.0, threads, precision)
