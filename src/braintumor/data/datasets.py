"""Discover labelled images in the folder layouts our data uses.

Supported layouts (class folder names are kept as written, matched case-insensitively to splits):

* ``ROOT/yes/``, ``ROOT/no/`` — the seed's binary layout;
* ``ROOT/<class>/`` — any set of class folders (``glioma/``, ``meningioma/``, ``notumor/`` …);
* ``ROOT/Training|Testing|Validation/<class>/`` — a dataset that ships its own split.

Extensions are matched in any case (``.jpg``, ``.JPG``, ``.jpeg``, ``.png``, ``.dcm`` …); the content
still decides the format when the image is read.

Example:
    >>> records = discover("../shared/data/brain_tumor_dataset")  # doctest: +SKIP
    >>> records[0].label, records[0].is_tumor  # doctest: +SKIP
    ('no', False)
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from braintumor.errors import DatasetError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".dcm", ".dicom"})

#: Folder names that mean "this is a split, the class folders are inside".
SPLIT_ALIASES = {
    "train": "train",
    "training": "train",
    "val": "val",
    "valid": "val",
    "validation": "val",
    "test": "test",
    "testing": "test",
}
#: Class names that mean "no tumor" (binary view of any label set).
NEGATIVE_LABELS = frozenset({"no", "notumor", "no_tumor", "no-tumor", "normal", "healthy", "negative"})
#: The classes of the binary task, in the order every binary model and export uses.
BINARY_CLASSES = ("no_tumor", "tumor")


@dataclass(frozen=True)
class ImageRecord:
    """One labelled image file. ``split`` is the dataset's own split (``train``/``val``/``test``) or None."""

    path: Path
    label: str
    dataset: str
    split: str | None = None

    @property
    def is_tumor(self) -> bool:
        """Binary view: any tumor class is a tumor."""
        return is_tumor_label(self.label)

    @property
    def relative_path(self) -> str:
        """Path relative to the dataset root, with forward slashes (stable across machines)."""
        parts = self.path.parts
        idx = len(parts) - 2 - (1 if self.split is not None else 0)
        return "/".join(parts[idx:])

    @property
    def key(self) -> str:
        """Identifier unique across datasets: ``dataset/relative_path``."""
        return f"{self.dataset}/{self.relative_path}"


def is_tumor_label(label: str) -> bool:
    """The one negative-label test: any label that is not a "no tumor" name is a tumor.

    >>> is_tumor_label("glioma"), is_tumor_label("No"), is_tumor_label("notumor")
    (True, False, False)
    """
    return label.strip().lower() not in NEGATIVE_LABELS


def negative_index(classes: Sequence[str]) -> int | None:
    """Index of the "no tumor" class among ``classes``, or None.

    >>> negative_index(["glioma", "notumor", "pituitary"]), negative_index(["glioma", "pituitary"])
    (1, None)
    """
    return next((i for i, c in enumerate(classes) if not is_tumor_label(c)), None)


def is_image_file(path: Path) -> bool:
    return path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith(".")


def discover(root: str | Path, *, dataset: str | None = None) -> list[ImageRecord]:
    """List every labelled image under ``root``, sorted by path (deterministic across machines)."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    name = dataset or root.resolve().name
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    split_dirs = [d for d in subdirs if d.name.lower() in SPLIT_ALIASES]
    records: list[ImageRecord] = []
    if split_dirs:
        for split_dir in split_dirs:
            split = SPLIT_ALIASES[split_dir.name.lower()]
            for class_dir in sorted(p for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
                records.extend(_scan_class(class_dir, name, split))
    else:
        for class_dir in subdirs:
            records.extend(_scan_class(class_dir, name, None))
    if not records:
        raise DatasetError(
            f"no labelled images under {root}: expected class folders (yes/ no/, <class>/) "
            "or Training/ and Testing/ folders holding them"
        )
    return records


def discover_many(roots: Iterable[str | Path]) -> list[ImageRecord]:
    """Discover several dataset roots; dataset names must be distinct."""
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for root in roots:
        found = discover(root)
        if found[0].dataset in seen:
            raise DatasetError(f"two datasets are named {found[0].dataset!r}: give folders distinct names")
        seen.add(found[0].dataset)
        records.extend(found)
    return records


def _scan_class(class_dir: Path, dataset: str, split: str | None) -> list[ImageRecord]:
    files = sorted(p for p in class_dir.iterdir() if is_image_file(p))
    return [ImageRecord(path=p, label=class_dir.name, dataset=dataset, split=split) for p in files]


def class_counts(records: Sequence[ImageRecord]) -> dict[str, int]:
    return dict(sorted(Counter(r.label for r in records).items()))


def load_seed_layout(root: str | Path, *, seed: int = 42) -> list[ImageRecord]:
    """The seed's loader behaviour: ``yes/`` + ``no/`` folders, shuffled with a fixed seed.

    Kept for comparison with the original notebook; real training uses grouped splits
    (:mod:`braintumor.data.splits`), because shuffling files ignores duplicates.
    """
    records = [r for r in discover(root) if r.label.lower() in ("yes", "no")]
    if not records:
        raise DatasetError(f"{root} has no yes/ or no/ folders (the seed's layout)")
    random.Random(seed).shuffle(records)
    return records
