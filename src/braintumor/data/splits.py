"""Group-aware, stratified, seeded splits.

Every duplicate group found by the audit lands on one side of a split, so no slice (or its resized,
re-encoded copy from another dataset) is in both training and test data. Within that constraint each
class keeps its share in every part (default 70/10/20 train/val/test, the seed's 176/26/51 proportions),
and the same seed gives the same split on every machine.

Example:
    >>> assignment = grouped_split(groups=[0, 0, 1, 2, 3], labels=["yes"] * 5, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import hashlib
import io
import random
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from braintumor.data.audit import AuditReport
from braintumor.errors import DatasetError

SPLIT_NAMES = ("train", "val", "test")
SPLIT_COLUMNS = ("key", "dataset", "relative_path", "label", "group", "split", "fold")


def _assign(
    groups: Sequence[int],
    labels: Sequence[str],
    bins: Sequence[str],
    fractions: Sequence[float],
    seed: int,
) -> dict[int, str]:
    """Greedy stratified assignment of whole groups to ``bins`` with target ``fractions``.

    Groups are visited largest first (ties in a seeded random order); each goes to the bin whose
    per-class counts fall furthest below target, measured for the group's own classes.
    """
    members: dict[int, list[int]] = defaultdict(list)
    for i, g in enumerate(groups):
        members[g].append(i)
    class_total = Counter(labels)
    target = {(b, c): f * class_total[c] for b, f in zip(bins, fractions, strict=True) for c in class_total}
    have: Counter[tuple[str, str]] = Counter()
    bin_size: Counter[str] = Counter()
    n_total = len(labels)
    order = list(members)
    random.Random(seed).shuffle(order)
    order.sort(key=lambda g: -len(members[g]))
    out: dict[int, str] = {}
    for g in order:
        group_classes = Counter(labels[i] for i in members[g])

        def deficit(b: str, group_classes: Counter[str] = group_classes) -> tuple[float, float]:
            need = sum((target[(b, c)] - have[(b, c)]) / max(class_total[c], 1) * k for c, k in group_classes.items())
            overall = fractions[bins.index(b)] * n_total - bin_size[b]
            return need, overall

        best = max(bins, key=deficit)
        out[g] = best
        for c, k in group_classes.items():
            have[(best, c)] += k
        bin_size[best] += len(members[g])
    return out


def grouped_split(
    groups: Sequence[int],
    labels: Sequence[str],
    *,
    val: float = 0.1,
    test: float = 0.2,
    seed: int = 42,
) -> list[str]:
    """Return ``train``/``val``/``test`` for each item; items of one group always share a split."""
    if not 0 <= val < 1 or not 0 <= test < 1 or val + test >= 1:
        raise DatasetError(f"val ({val}) and test ({test}) must be fractions that sum below 1")
    if len(groups) != len(labels):
        raise DatasetError("groups and labels must have the same length")
    bins = [b for b, f in zip(SPLIT_NAMES, (1 - val - test, val, test), strict=True) if f > 0]
    fractions = [f for f in (1 - val - test, val, test) if f > 0]
    by_group = _assign(groups, labels, bins, fractions, seed)
    return [by_group[g] for g in groups]


def grouped_kfold(groups: Sequence[int], labels: Sequence[str], *, k: int = 5, seed: int = 42) -> list[int]:
    """Return a fold index in ``0..k-1`` for each item, stratified by label, whole groups per fold."""
    if k < 2:
        raise DatasetError(f"k-fold needs k ≥ 2, got {k}")
    n_groups = len(set(groups))
    if n_groups < k:
        raise DatasetError(f"only {n_groups} duplicate groups: cannot make {k} folds")
    bins = [str(i) for i in range(k)]
    by_group = _assign(groups, labels, bins, [1.0 / k] * k, seed)
    return [int(by_group[g]) for g in groups]


@dataclass(frozen=True)
class SplitRow:
    key: str
    dataset: str
    relative_path: str
    label: str
    group: int
    split: str
    fold: int | None


def make_split(
    report: AuditReport,
    *,
    val: float = 0.1,
    test: float = 0.2,
    folds: int | None = None,
    seed: int = 42,
) -> list[SplitRow]:
    """A split of every readable audited file: train/val/test and, when ``folds`` is set, a fold index
    assigned within train+val (the test part stays untouched for the final estimate)."""
    keep = [i for i in range(len(report.records)) if i not in report.errors]
    if not keep:
        raise DatasetError("no readable images to split")
    groups = [report.group[i] for i in keep]
    labels = [report.records[i].label for i in keep]
    parts = grouped_split(groups, labels, val=val, test=test, seed=seed)
    fold_of: dict[int, int] = {}
    if folds:
        dev = [j for j, p in enumerate(parts) if p != "test"]
        fold_idx = grouped_kfold([groups[j] for j in dev], [labels[j] for j in dev], k=folds, seed=seed)
        fold_of = dict(zip(dev, fold_idx, strict=True))
    rows = []
    for j, i in enumerate(keep):
        r = report.records[i]
        rows.append(
            SplitRow(
                key=r.key,
                dataset=r.dataset,
                relative_path=r.relative_path,
                label=r.label,
                group=groups[j],
                split=parts[j],
                fold=fold_of.get(j),
            )
        )
    return rows


def write_split(rows: Iterable[SplitRow], path: str | Path) -> str:
    """Write a split CSV and return its SHA-256 (recorded in training runs)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(SPLIT_COLUMNS)
    for r in rows:
        fold = "" if r.fold is None else r.fold
        writer.writerow([r.key, r.dataset, r.relative_path, r.label, r.group, r.split, fold])
    data = buf.getvalue().encode()
    Path(path).write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def read_split(path: str | Path) -> tuple[list[SplitRow], str]:
    """Read a split CSV written by :func:`write_split`; return its rows and SHA-256."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DatasetError(f"cannot read split file {path}: {exc.strerror or exc}") from exc
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path} is not a split file: not UTF-8 text") from exc
    reader = csv.DictReader(io.StringIO(text))
    missing = set(SPLIT_COLUMNS) - set(reader.fieldnames or ())
    if missing:
        raise DatasetError(f"{path} is not a split file: missing columns {', '.join(sorted(missing))}")
    rows = []
    for n, rec in enumerate(reader, start=2):
        if rec["split"] not in SPLIT_NAMES:
            raise DatasetError(f"{path}:{n}: unknown split {rec['split']!r} (expected train, val or test)")
        try:
            group = int(rec["group"])
            fold = int(rec["fold"]) if rec["fold"] not in ("", None) else None
        except (TypeError, ValueError) as exc:
            raise DatasetError(f"{path}:{n}: group and fold must be integers") from exc
        rows.append(
            SplitRow(
                key=rec["key"],
                dataset=rec["dataset"],
                relative_path=rec["relative_path"],
                label=rec["label"],
                group=group,
                split=rec["split"],
                fold=fold,
            )
        )
    return rows, hashlib.sha256(data).hexdigest()
