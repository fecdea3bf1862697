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

Every rejection is one line that says what was measured against what the training data allows, and is one of two
kinds (:class:`Refusal`): ``not_mri`` when the image cannot be a brain MRI slice (a DICOM of another modality;
statistics no MRI has: colour, blank, noise, documents, screenshots), and ``out_of_scope`` when it may well be one,
but unlike those the model was validated on: too small, an MR DICOM the checks find unusual, or pooled features far
from the training MRIs. Feature distance alone cannot tell an unusual MRI (a skull-stripped template slice scores
1.0–1.4× the threshold, pydicom's 64×64 ``MR_small.dcm`` 1.2×) from a gray photo (from 1.3×), so it says both.

Example:
    >>> gate = InputGate.load("exports/mnv2/gate.npz")  # fitted by gate_fit.fit_gate  # doctest: +SKIP
    >>> gate.check_image(load_image("cat.jpg"))  # doctest: +SKIP
    'colour image (colourfulness 74 > 28): brain MRI slices are gray'
    >>> gate.check_features(features)  # doctest: +SKIP
    [None, 'does not look like a brain MRI slice (feature distance 5.3× the training range)']

No torch here: the checks are numpy and PIL; fitting (:mod:`.gate_fit`) runs the exported ONNX graph.
"""

from __future__ import annotations

import functools
import io
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from PIL import Image

from braintumor.errors import ModelLoadError
from braintumor.imaging.transforms import to_gray
from braintumor.imaging.types import LoadedImage
from braintumor.models.export_dir import write_atomic

GATE_FORMAT = "braintumor-gate-v1"

RefusalKind = Literal["not_mri", "out_of_scope"]


@dataclass(frozen=True)
class Refusal:
    """Why the gate refused an image, and which kind of refusal it is (see the module docstring)."""

    kind: RefusalKind
    reason: str


#: Prototypes summarising the training features (≈ 2.6 MB at C = 1280); fitting defaults: :mod:`.gate_fit`.
DEFAULT_PROTOTYPES = 512

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
    """The statistics :data:`STATISTICS` bounds, measured on small thumbnails (well under a millisecond).

    The contrast and the tone shares come from the 256-level histogram of the nearest-neighbour sample (PIL counts
    it in one pass), not from numpy passes over its 65 536 pixels: the same numbers up to float rounding.

    >>> from braintumor.imaging.types import ImageMeta
    >>> blank = LoadedImage(np.zeros((100, 100), np.uint8), ImageMeta("png", (100, 100), "L", 8))
    >>> image_statistics(blank)["contrast"]
    0.0
    """
    pixels = image.pixels
    height, width = pixels.shape[:2]
    colour = Image.fromarray(pixels) if pixels.ndim == 3 else None
    gray = Image.fromarray(to_gray(pixels)) if colour is None else colour.convert("L")
    thumb = np.asarray(gray.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), np.float64) / 255
    levels = np.asarray(gray.resize((HISTOGRAM_SIDE, HISTOGRAM_SIDE), Image.Resampling.NEAREST).histogram(), np.float64)
    share = levels / HISTOGRAM_SIDE**2  # of each gray level 0…255 in the sample
    mean = float(share @ _LEVELS)
    stats = {
        "aspect": max(height, width) / max(min(height, width), 1),
        "contrast": math.sqrt(max(float(share @ (_LEVELS - mean) ** 2), 0.0)) / 255,
    }
    stats["colourfulness"] = _colourfulness(colour) if colour is not None else 0.0
    variance = float(thumb.var())
    if variance > 1e-10:
        centred = thumb - thumb.mean()
        lag1 = (np.mean(centred[:, 1:] * centred[:, :-1]) + np.mean(centred[1:] * centred[:-1])) / 2
        stats["smoothness"] = max(float(lag1 / variance), 0.0)
    else:
        stats["smoothness"] = 1.0  # constant: not noise (the contrast check speaks for it)
    stats["dark_share"] = float((thumb < DARK_LEVEL).mean())
    stats["bright_share"] = float((thumb > BRIGHT_LEVEL).mean())
    hist = share.reshape(32, 8).sum(axis=1)  # 32 tones of 8 gray levels
    stats["flat_share"] = float(hist.max())
    tones = hist[2:]  # the non-dark tones: a black background is normal, its share says nothing here
    if tones.sum() > 0:
        p = tones[tones > 0] / tones.sum()
        stats["tonal_entropy"] = float(-(p * np.log2(p)).sum())
    else:
        stats["tonal_entropy"] = 0.0
    return stats


_LEVELS = np.arange(256, dtype=np.float64)


def _colourfulness(rgb: Image.Image) -> float:
    """Hasler & Süsstrunk's colourfulness (2003) on a thumbnail: 0 for gray, ≈ 15 "slightly", ≈ 60 "highly"."""
    q = np.asarray(rgb.resize((THUMBNAIL, THUMBNAIL), Image.Resampling.BOX), np.float64)
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
        out = np.empty(len(z))
        for start in range(0, len(z), 1024):
            out[start : start + 1024] = 1.0 - (self._rows @ z[start : start + 1024].T).max(axis=0)
        return out

    @functools.cached_property
    def _rows(self) -> np.ndarray:
        """The prototypes in float64, converted once rather than on every call."""
        return np.ascontiguousarray(self.prototypes, dtype=np.float64)


class InputGate:
    """Decides whether an input is a brain MRI slice (see the module docstring for how and why).

    Build one with :func:`~braintumor.inference.gate_fit.fit_input_gate` (arrays) or
    :func:`~braintumor.inference.gate_fit.fit_gate` (an export and a split), keep it with
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
        refusal = self.image_refusal(image)
        return refusal.reason if refusal else None

    def image_refusal(self, image: LoadedImage) -> Refusal | None:
        """:meth:`check_image` with the refusal's kind: an MR DICOM or a too-small image is ``out_of_scope``."""
        meta = image.meta
        modality = (meta.modality or "").strip().upper()
        if meta.source_format == "dicom" and modality and modality != "MR":
            return Refusal("not_mri", f"DICOM modality {modality}: expected MR")
        height, width = image.pixels.shape[:2]
        min_side = int(self.params["image"]["min_side"])
        if min(height, width) < min_side:
            return Refusal(
                "out_of_scope",
                f"outside the images the model was validated on: too small ({width}×{height} px; the slices it was "
                f"validated on are at least {min_side} px a side)",
            )
        stats = image_statistics(image)
        bounds = self.params["image"]["bounds"]
        for statistic in STATISTICS:
            bound = bounds.get(statistic.name)
            if bound is not None and statistic.violated(stats[statistic.name], float(bound)):
                reason = statistic.reason.format(value=stats[statistic.name], bound=float(bound))
                if _is_mr_dicom(image):
                    return Refusal("out_of_scope", f"an MR image outside those the model was validated on: {reason}")
                return Refusal("not_mri", reason)
        return None

    def feature_scores(self, features: np.ndarray) -> np.ndarray:
        """Novelty of each row of ``features`` (N×C) in units of the threshold: above 1 means rejected."""
        features = np.asarray(features)
        if features.ndim != 2 or features.shape[1] != self.model.dim:
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
        return [r.reason if r else None for r in self.feature_refusals(features)]

    def feature_refusals(self, features: np.ndarray, images: list[LoadedImage] | None = None) -> list[Refusal | None]:
        """:meth:`check_features` with kinds: far features are ``out_of_scope``, worded for both things they can be
        (an MRI unlike the validated ones, or not an MRI); ``images`` (the rows' images) name an MR DICOM as such."""
        out: list[Refusal | None] = []
        for k, s in enumerate(self.feature_scores(features).tolist()):
            if s <= 1.0:
                out.append(None)
                continue
            measured = f"feature distance {s:.1f}× the training range"
            if images is not None and _is_mr_dicom(images[k]):
                reason = (
                    f"an MR image unlike the brain MRI slices the model was validated on ({measured}): e.g. another "
                    "body part, plane or sequence, a small crop, or a skull-stripped slice"
                )
            else:
                reason = (
                    f"unlike the brain MRI slices the model was validated on ({measured}): an unusual MRI "
                    "(skull-stripped, a small crop, another plane or sequence) or not an MRI at all"
                )
            out.append(Refusal("out_of_scope", reason))
        return out

    # -- persistence -----------------------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        """Write one ``.npz``: the prototypes plus the JSON parameters (thresholds, provenance), atomically so a
        predictor loading it concurrently never sees half a file.

        >>> gate.save("exports/mnv2/gate.npz")  # doctest: +SKIP
        """
        buf = io.BytesIO()
        np.savez(buf, prototypes=self.model.prototypes, params=np.array(json.dumps(self.params)))
        return write_atomic(Path(path), buf.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> InputGate:
        """Read a gate written by :meth:`save`; a missing or damaged file is a clear :class:`ModelLoadError`.

        >>> InputGate.load("exports/mnv2/gate.npz").params["features"]["threshold"]  # doctest: +SKIP
        0.0731
        """
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


def _is_mr_dicom(image: LoadedImage) -> bool:
    return image.meta.source_format == "dicom" and (image.meta.modality or "").strip().upper() == "MR"
