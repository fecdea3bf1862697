"""The input gate: is this a brain MRI slice at all? Reject cats, documents, noise and CTs before classifying.

A classifier trained on MRI slices answers "tumor" or "no tumor" for anything it is shown, a cat included. The
gate stops that in two stages, both fitted on the training MRI images of a split and nothing else (no
non-MRI example is needed to fit it, so no such example can be overfitted):

1. :meth:`InputGate.check_image`, before the model runs: DICOM metadata (a DICOM whose ``Modality`` is not
   ``MR``) and cheap statistics of a small gray thumbnail: size, aspect ratio, contrast (blank images),
   colourfulness (MRI is gray), neighbour correlation (noise), dark / near-white / flat-tone shares and tonal
   entropy (documents, screenshots, graphics). Each bound is the 0.1 % / 99.9 % quantile of the training
   MRIs, moved towards the statistic's natural limit by a margin (``margin = 1`` halves the distance), so
   it only fires on images no training slice resembles.
2. :meth:`InputGate.check_features`, on the pooled backbone features the ONNX graph returns anyway: novelty
   in feature space, the cosine distance of the L2-normalised features to the nearest of up to 512
   prototypes of the training MRIs (spherical k-means centroids), thresholded at the 99.5th percentile of
   MRI slices the prototypes never saw (the split's validation part). Many non-MRI images pass the cheap
   statistics (a gray photo, a chest X-ray, a CT without its DICOM header) and are caught here.

   Why prototypes and not one Gaussian: MRI slices form several clusters (planes, sequences, sites), and a
   single PCA-whitened Mahalanobis + residual score is wide enough to overlap non-MRI images. Measured with
   the bench model (``bench/results-gate.md``): with PCA(64) the highest test MRI scored 1.22× its threshold
   and the lowest non-MRI image 1.20× (overlap); with 512 prototypes, 0.95× and 1.22× (a gap).

Every rejection is one line that says what was measured against what the training data allows.

Example:
    >>> gate = fit_gate("exports/mnv2", ["data/br35h"], "split.csv", "exports/mnv2/gate.npz")  # doctest: +SKIP
    >>> gate.check_image(load_image("cat.jpg"))  # doctest: +SKIP
    'colour image (colourfulness 74 > 28): brain MRI slices are gray'
    >>> gate.check_features(features)  # doctest: +SKIP
    [None, 'does not look like a brain MRI slice (feature distance 5.3× the training range)']

No torch here: the gate is numpy and PIL, and the fit runs the exported ONNX graph.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from braintumor.errors import DatasetError, ImageError
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import to_gray
from braintumor.imaging.types import LoadedImage

if TYPE_CHECKING:
    from braintumor.inference.predictor import Member

GATE_FORMAT = "braintumor-gate-v1"
GATE_FILE = "gate.npz"

#: Fitting defaults (each fitted gate records the values it used).
DEFAULT_QUANTILES = (0.001, 0.999)  # of the training MRIs' statistics
DEFAULT_MARGIN = 1.0  # 1 = halve the distance from the quantile to the statistic's natural limit
DEFAULT_MIN_SIDE = 32  # px; smaller than any slice a scanner writes, and too small to read
DEFAULT_PROTOTYPES = 512  # spherical k-means centroids summarising the training features (≈ 2.6 MB at C = 1280)
DEFAULT_PERCENTILE = 99.5  # of the calibration MRIs' feature scores
MIN_CALIBRATION = 20  # below this many validation images, thresholds come from out-of-fold training scores

#: Definitions of the statistics (fixed, not fitted): thumbnail side, and what "dark" / "near white" mean.
THUMBNAIL = 64
HISTOGRAM_SIDE = 256
DARK_LEVEL = 0.1
BRIGHT_LEVEL = 0.9


@dataclass(frozen=True)
class Statistic:
    """One image statistic the gate bounds on one side.

    ``side`` is ``"max"`` (reject above the bound) or ``"min"`` (reject below); ``natural`` is the
    statistic's range, towards whose end on the rejecting side the fitted quantile is moved by the margin;
    ``reason`` is formatted with the measured ``value`` and the fitted ``bound``.
    """

    name: str
    side: str
    natural: tuple[float, float]
    reason: str

    def bound(self, quantile: float, margin: float) -> float:
        low, high = self.natural
        if self.side == "min":
            return low + (quantile - low) / (1 + margin)
        if math.isfinite(high):
            return high - (high - quantile) / (1 + margin)
        return low + (quantile - low) * (1 + margin)

    def violated(self, value: float, bound: float) -> bool:
        return value < bound if self.side == "min" else value > bound


#: In the order they are checked: the first violated one gives the reason.
STATISTICS = (
    Statistic("aspect", "max", (1.0, math.inf), "aspect ratio {value:.1f}:1 is not a slice's (≤ {bound:.1f}:1)"),
    Statistic("contrast", "min", (0.0, 0.5), "blank or near-constant image (contrast {value:.3f} < {bound:.3f})"),
    Statistic(
        "colourfulness", "max", (0.0, math.inf),
        "colour image (colourfulness {value:.0f} > {bound:.0f}): brain MRI slices are gray",
    ),
    Statistic(
        "smoothness", "min", (0.0, 1.0), "noise-like image (neighbour correlation {value:.2f} < {bound:.2f})"
    ),
    Statistic("dark_share", "max", (0.0, 1.0), "almost entirely black ({value:.0%} dark pixels > {bound:.0%})"),
    Statistic(
        "bright_share", "max", (0.0, 1.0),
        "mostly white ({value:.0%} near-white pixels > {bound:.0%}): looks like a document or screenshot",
    ),
    Statistic(
        "flat_share", "max", (0.0, 1.0),
        "one flat tone covers {value:.0%} of the image (> {bound:.0%}): looks like a document, screenshot or graphic",
    ),
    Statistic(
        "tonal_entropy", "min", (0.0, 5.0),
        "too few gray tones ({value:.1f} bits < {bound:.1f}): looks like a drawing, chart or document",
    ),
)  # fmt: skip


def image_statistics(image: LoadedImage) -> dict[str, float]:
    """The statistics :data:`STATISTICS` bounds, measured on small thumbnails (a few milliseconds).

    >>> from braintumor.imaging.types import ImageMeta
    >>> blank = LoadedImage(np.zeros((100, 100), np.uint8), ImageMeta("png", (100, 100), "L", 8))
    >>> image_statistics(blank)["contrast"]
    0.0
    """
    pixels = image.pixels
    height, width = pixels.shape[:2]
    gray = to_gray(pixels)
    thumb = np.asarray(Image.fromarray(gray).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), np.float64) / 255
    sample = np.asarray(Image.fromarray(gray).resize((HISTOGRAM_SIDE, HISTOGRAM_SIDE), Image.Resampling.NEAREST))
    stats = {"aspect": max(height, width) / max(min(height, width), 1), "contrast": float(sample.std() / 255)}
    stats["colourfulness"] = _colourfulness(pixels) if pixels.ndim == 3 else 0.0
    variance = float(thumb.var())
    if variance > 1e-10:
        centred = thumb - thumb.mean()
        lag1 = (np.mean(centred[:, 1:] * centred[:, :-1]) + np.mean(centred[1:] * centred[:-1])) / 2
        stats["smoothness"] = max(float(lag1 / variance), 0.0)
    else:
        stats["smoothness"] = 1.0  # constant: not noise (the contrast check speaks for it)
    stats["dark_share"] = float((thumb < DARK_LEVEL).mean())
    stats["bright_share"] = float((thumb > BRIGHT_LEVEL).mean())
    hist = np.bincount((sample // 8).ravel(), minlength=32).astype(np.float64) / sample.size
    stats["flat_share"] = float(hist.max())
    tones = hist[2:]  # the non-dark tones: a black background is normal, its share says nothing here
    if tones.sum() > 0:
        p = tones[tones > 0] / tones.sum()
        stats["tonal_entropy"] = float(-(p * np.log2(p)).sum())
    else:
        stats["tonal_entropy"] = 0.0
    return stats


def _colourfulness(rgb: np.ndarray) -> float:
    """Hasler & Süsstrunk's colourfulness (2003) on a thumbnail: 0 for gray, ≈ 15 "slightly", ≈ 60 "highly"."""
    q = np.asarray(Image.fromarray(rgb).resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), np.float64)
    rg = q[..., 0] - q[..., 1]
    yb = 0.5 * (q[..., 0] + q[..., 1]) - q[..., 2]
    return float(np.hypot(rg.std(), yb.std()) + 0.3 * np.hypot(rg.mean(), yb.mean()))


def _features_transform(features: np.ndarray) -> np.ndarray:
    """L2-normalise pooled features: novelty is about the pattern of activations, not their overall scale."""
    x = np.asarray(features, dtype=np.float64)
    norms: np.ndarray = np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    normalised: np.ndarray = x / norms
    return normalised


@dataclass(frozen=True)
class PrototypeModel:
    """Prototypes of the training MRIs' L2-normalised features: the nearest one says how familiar an input is.

    With at most ``count`` training rows every row is a prototype (exact nearest neighbour); beyond that the
    rows are summarised by spherical k-means (seeded, so a refit gives the same gate). Several prototypes,
    not one mean, because MRI slices come in clusters (planes, sequences, sites) with gaps between them.

    >>> model = PrototypeModel.fit(np.eye(3))
    >>> model.distances(np.array([[1.0, 0.0, 0.0], [1.0, 1.0, 1.0]])).round(3).tolist()
    [0.0, 0.423]
    """

    prototypes: np.ndarray  # P × C, unit rows

    @classmethod
    def fit(cls, features: np.ndarray, count: int = DEFAULT_PROTOTYPES, *, seed: int = 0) -> PrototypeModel:
        z = _features_transform(features)
        if len(z) <= count:
            return cls(z.astype(np.float32))
        rng = np.random.default_rng(seed)
        centres = z[rng.choice(len(z), count, replace=False)].copy()
        for _ in range(25):
            nearest = np.argmax(z @ centres.T, axis=1)
            sums = np.zeros_like(centres)
            np.add.at(sums, nearest, z)
            filled = np.bincount(nearest, minlength=count) > 0
            centres[filled] = sums[filled]  # empty clusters keep their previous centre
            centres = _features_transform(centres)
        return cls(centres.astype(np.float32))

    @property
    def dim(self) -> int:
        return int(self.prototypes.shape[1])

    def distances(self, features: np.ndarray) -> np.ndarray:
        """Cosine distance (0 = same direction, 2 = opposite) of each row to its nearest prototype."""
        z = _features_transform(features)
        prototypes = self.prototypes.T.astype(np.float64)
        out = np.empty(len(z))
        for start in range(0, len(z), 1024):
            out[start : start + 1024] = 1.0 - (z[start : start + 1024] @ prototypes).max(axis=1)
        return out


class InputGate:
    """Decides whether an input is a brain MRI slice (see the module docstring for how and why).

    Build one with :meth:`fit` (arrays) or :func:`fit_gate` (an export and a split), keep it with
    :meth:`save` and :meth:`load`; the predictor calls :meth:`check_image` then :meth:`check_features`.
    """

    def __init__(self, model: PrototypeModel, params: dict[str, Any]) -> None:
        self.model = model
        self.params = params

    # -- checks ----------------------------------------------------------------------------------------------
    def check_image(self, image: LoadedImage) -> str | None:
        """A one-line reason when the image cannot be a brain MRI slice, from metadata and statistics; else None.

        >>> gate.check_image(load_image("CT_small.dcm"))  # doctest: +SKIP
        'DICOM modality CT: expected MR'
        """
        meta = image.meta
        modality = (meta.modality or "").strip().upper()
        if meta.source_format == "dicom" and modality and modality != "MR":
            return f"DICOM modality {modality}: expected MR"
        height, width = image.pixels.shape[:2]
        min_side = int(self.params["image"]["min_side"])
        if min(height, width) < min_side:
            return f"image too small ({width}×{height} px): a brain MRI slice is at least {min_side} px a side"
        stats = image_statistics(image)
        bounds = self.params["image"]["bounds"]
        for statistic in STATISTICS:
            bound = bounds.get(statistic.name)
            if bound is not None and statistic.violated(stats[statistic.name], float(bound)):
                return statistic.reason.format(value=stats[statistic.name], bound=float(bound))
        return None

    def feature_scores(self, features: np.ndarray) -> np.ndarray:
        """Novelty of each row of ``features`` (N×C) in units of the threshold: above 1 means rejected."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.model.dim:
            from braintumor.inference.predictor import ModelLoadError

            raise ModelLoadError(
                f"the input gate was fitted on {self.model.dim}-dimensional features, the model gives shape "
                f"{features.shape}: refit the gate for this model"
            )
        score = self.model.distances(features) / float(self.params["features"]["threshold"])
        return np.where(np.isfinite(score), score, np.inf)

    def check_features(self, features: np.ndarray) -> list[str | None]:
        """For each row of the pooled features (member 0 of the ensemble): a reason, or None when it looks like
        the training MRIs.

        >>> gate.check_features(np.stack([mri_features, cat_features]))  # doctest: +SKIP
        [None, 'does not look like a brain MRI slice (feature distance 5.3× the training range)']
        """
        return [
            None if s <= 1.0 else f"does not look like a brain MRI slice (feature distance {s:.1f}× the training range)"
            for s in self.feature_scores(features).tolist()
        ]

    # -- fitting ---------------------------------------------------------------------------------------------
    @classmethod
    def fit(
        cls,
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

        >>> gate = InputGate.fit(train_images, train_features, calibration_features=val_features)  # doctest: +SKIP
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
        return cls(model, params)

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz``: the prototypes plus the JSON parameters (thresholds, provenance), atomically so a
        predictor loading it concurrently never sees half a file.

        >>> gate.save("exports/mnv2/gate.npz")  # doctest: +SKIP
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")  # same folder: the final rename is atomic
        try:
            with tmp.open("wb") as fh:
                np.savez(fh, prototypes=self.model.prototypes, params=np.array(json.dumps(self.params)))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)
        return path

    @classmethod
    def load(cls, path: str | Path) -> InputGate:
        """Read a gate written by :meth:`save`; a missing or damaged file is a clear :class:`ModelLoadError`.

        >>> InputGate.load("exports/mnv2/gate.npz").params["features"]["threshold"]  # doctest: +SKIP
        0.0731
        """
        from braintumor.inference.predictor import ModelLoadError

        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as npz:
                params = json.loads(str(npz["params"]))
                model = PrototypeModel(np.asarray(npz["prototypes"], np.float32))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ModelLoadError(f"cannot read the input gate {path}: {str(exc).splitlines()[0][:200]}") from exc
        if not isinstance(params, dict) or params.get("format") != GATE_FORMAT:
            raise ModelLoadError(f"{path} is not an input gate ({GATE_FORMAT})")
        return cls(model, params)

    def summary(self) -> dict[str, Any]:
        """The thresholds and provenance, JSON-ready (for reports and the API's model card)."""
        copy: dict[str, Any] = json.loads(json.dumps(self.params))
        return copy


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
    from braintumor.inference.predictor import preprocess_batch

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
    from braintumor.data.splits import read_split

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
        "arch": card.get("arch"),
        "model_sha256": card.get("extra", {}).get("export", {}).get("sha256"),
        "split_sha256": split_sha,
        "datasets": sorted({r.dataset for r in rows if r.dataset in roots}),
        "n_train": len(parts["train"]),
        "n_val": len(parts["val"]),
    }
    gate = InputGate.fit(parts["train"], train_features, calibration_features=val_features, source=source)
    gate.save(out_path)
    say(f"wrote {out_path} (sha256 {hashlib.sha256(Path(out_path).read_bytes()).hexdigest()[:12]})")
    return gate


def _member0(export_dir: Path, threads: int | None, precision: str | None) -> Member:
    """Member 0 of an export or ensemble folder, loaded without its gate (which may be the stale file we replace)."""
    from braintumor.inference.predictor import ModelLoadError, _load_member

    folder = export_dir
    if (export_dir / "ensemble.json").is_file():
        try:
            folder = export_dir / json.loads((export_dir / "ensemble.json").read_text())["members"][0]["path"]
        except (OSError, ValueError, KeyError, IndexError, TypeError) as exc:
            raise ModelLoadError(f"cannot read member 0 of {export_dir / 'ensemble.json'}: {exc}") from exc
    elif not (export_dir / "card.json").is_file():
        raise ModelLoadError(f"{export_dir} is not a model folder (no ensemble.json or card.json)")
    return _load_member(folder, None, 1.0, threads, precision)
