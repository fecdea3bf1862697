"""Training data: labelled records → letterboxed uint8 tensors in memory, augmented on the fly.

MRI training sets here are small (hundreds to a few thousand slices), so every image is decoded and
letterboxed once, in parallel, and kept as uint8 (150 kB per 224-px image). Augmentation runs on those
tensors per batch, and normalisation (the model card's mean/std) happens last.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torchvision.transforms import v2

from braintumor.data.datasets import BINARY_CLASSES, ImageRecord, discover_many, is_tumor_label, negative_index
from braintumor.data.splits import SplitRow
from braintumor.errors import DatasetError
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import letterbox, to_rgb
from braintumor.models.card import Task
from braintumor.training.config import AugmentConfig

#: Target of an image whose label says "tumor" but not which type (multi-class task, partial label).
UNTYPED = -1


@dataclass(frozen=True)
class LabelledSet:
    """Images (uint8, N×3×S×S) with integer targets and the records they came from."""

    images: torch.Tensor
    targets: torch.Tensor
    records: tuple[ImageRecord, ...]

    def __len__(self) -> int:
        return int(self.images.shape[0])

    @property
    def datasets(self) -> list[str]:
        return [r.dataset for r in self.records]


def resolve_task(labels: Sequence[str], task: str, untyped_label: str = "") -> tuple[Task, tuple[str, ...]]:
    """Decide binary vs multi-class and the class names (sorted folder names for multi-class).

    In a multi-class task, ``untyped_label`` ("a tumor of unknown type") is not a class of its own when the
    other labels hold a "no tumor" class and at least one tumor type: those images get :data:`UNTYPED`.

    >>> resolve_task(["glioma", "notumor", "tumor", "pituitary"], "multiclass", "tumor")
    ('multiclass', ('glioma', 'notumor', 'pituitary'))
    """
    names = sorted({label for label in labels})
    if task == "auto":
        task = "binary" if {n.lower() for n in names} <= {"yes", "no"} else "multiclass"
    if task == "binary":
        return "binary", BINARY_CLASSES
    typed = [n for n in names if n != untyped_label]
    if untyped_label in names and len(typed) >= 2 and negative_index(typed) is not None:
        names = typed
    if len(names) < 2:
        raise DatasetError(f"multi-class training needs at least 2 classes, found {names}")
    return "multiclass", tuple(names)


def target_of(label: str, task: str, classes: Sequence[str]) -> int:
    if task == "binary":
        return int(is_tumor_label(label))
    if label not in classes and is_tumor_label(label) and negative_index(classes) is not None:
        return UNTYPED
    return classes.index(label)


def sampling_weights(datasets: Sequence[str], targets: Sequence[int], power: float) -> np.ndarray:
    """Per-image draw probabilities ∝ n_cell ** -power, a cell being (dataset, target); they sum to 1.

    ``power = 1`` gives every cell the same share of the draws, ``0`` the natural frequencies.

    >>> sampling_weights(["a", "a", "a", "b"], [0, 0, 1, 1], 1.0).round(3).tolist()
    [0.167, 0.167, 0.333, 0.333]
    """
    cells = list(zip(datasets, (int(t) for t in targets), strict=True))
    counts = Counter(cells)
    w = np.array([counts[c] ** -power for c in cells], dtype=np.float64)
    out: np.ndarray = w / w.sum()
    return out


def load_set(
    records: Sequence[ImageRecord], size: int, task: str, classes: Sequence[str], *, workers: int | None = None
) -> LabelledSet:
    """Decode and letterbox ``records`` to ``size`` (threads: PIL releases the GIL while decoding)."""

    def one(record: ImageRecord) -> np.ndarray:
        boxed, _ = letterbox(load_image(record.path).pixels, size)
        return to_rgb(boxed).transpose(2, 0, 1)

    if not records:
        return LabelledSet(torch.zeros(0, 3, size, size, dtype=torch.uint8), torch.zeros(0), ())
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        arrays = list(pool.map(one, records))
    images = torch.from_numpy(np.stack(arrays))
    targets = torch.tensor([target_of(r.label, task, classes) for r in records], dtype=torch.long)
    return LabelledSet(images, targets, tuple(records))


def records_for_split(data_dirs: Sequence[str], rows: Sequence[SplitRow]) -> dict[str, list[ImageRecord]]:
    """Join a split file's rows with the images found under ``data_dirs`` (by ``dataset/relative_path``)."""
    found = {r.key: r for r in discover_many(data_dirs)}
    out: dict[str, list[ImageRecord]] = {"train": [], "val": [], "test": []}
    missing = [row.key for row in rows if row.key not in found]
    if missing:
        raise DatasetError(
            f"{len(missing)} file(s) of the split are not under the given --data folders (first: {missing[0]})"
        )
    for row in rows:
        out[row.split].append(found[row.key])
    return out


class RandomIntensity(torch.nn.Module):
    """Random gamma, contrast and brightness on a uint8 image, leaving black (letterbox padding) black.

    torchvision's contrast blends towards the mean gray, which would lift the padding that serving never
    shows; this keeps every zero pixel zero and works around the foreground's mean.
    """

    def __init__(self, brightness: float, contrast: float, gamma: float) -> None:
        super().__init__()
        self.brightness, self.contrast, self.gamma = brightness, contrast, gamma

    def _factor(self, spread: float) -> float:
        return 1.0 + (float(torch.rand(())) * 2 - 1) * spread if spread > 0 else 1.0

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        mask = image > 0
        x = image.float() / 255.0
        x = x ** self._factor(self.gamma)
        if self.contrast > 0 and bool(mask.any()):
            m = x[mask].mean()
            x = (x - m) * self._factor(self.contrast) + m
        x = (x * self._factor(self.brightness)).clamp_(0.0, 1.0)
        return torch.where(mask, (x * 255.0).round_(), 0.0).to(torch.uint8)


def build_augment(cfg: AugmentConfig) -> v2.Compose:
    """The seed's augmentation: rotation, shifts, shear, zoom, horizontal flip; black fill like letterbox.
    Optionally intensity (gamma, contrast, brightness) and blur, which hide per-scanner / per-dataset cues."""
    steps: list[Any] = [
        v2.RandomAffine(
            degrees=cfg.rotation,
            translate=(cfg.width_shift, cfg.height_shift),
            scale=(1 - cfg.zoom, 1 + cfg.zoom),
            shear=(-cfg.shear, cfg.shear),
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=0,
        )
    ]
    if cfg.horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    if cfg.brightness > 0 or cfg.contrast > 0 or cfg.gamma > 0:
        steps.append(RandomIntensity(cfg.brightness, cfg.contrast, cfg.gamma))
    if cfg.blur > 0:
        steps.append(v2.RandomApply([v2.GaussianBlur(kernel_size=5, sigma=(0.3, 1.5))], p=cfg.blur))
    return v2.Compose(steps)


def augment_batch(images: torch.Tensor, transform: v2.Compose) -> torch.Tensor:
    """Apply ``transform`` with independent random parameters to each uint8 image of a batch."""
    return torch.stack([transform(img) for img in images])


def normalise(images: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 N×3×H×W → float32, scaled to 0–1, then per-channel (x − mean) / std (from the model card)."""
    m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
    return (images.float().div_(255.0) - m) / s
