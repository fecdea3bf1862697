"""Grouped, stratified, seeded splits and k folds; split files."""

from __future__ import annotations

import hashlib
import random
from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

import pytest

from braintumor.data.audit import AuditReport
from braintumor.data.splits import (
    SPLIT_COLUMNS,
    SplitRow,
    grouped_kfold,
    grouped_split,
    make_split,
    read_split,
    write_split,
)
from braintumor.errors import DatasetError


def synthetic_items(seed: int, n: int = 400, classes: Sequence[str] = ("yes", "yes", "no", "glioma")) -> tuple:
    """Groups of 1–5 items (mostly singletons, like real duplicate groups), one label per group."""
    rng = random.Random(seed)
    groups: list[int] = []
    labels: list[str] = []
    group = 0
    while len(groups) < n:
        size = rng.choice([1, 1, 1, 1, 2, 2, 3, 5])
        label = rng.choice(classes)
        groups += [group] * size
        labels += [label] * size
        group += 1
    order = list(range(len(groups)))
    rng.shuffle(order)  # members of a group are not adjacent
    return [groups[i] for i in order], [labels[i] for i in order]


def sides_of_groups(groups: Sequence[int], parts: Sequence[object]) -> dict[int, set[object]]:
    sides: dict[int, set[object]] = defaultdict(set)
    for g, p in zip(groups, parts, strict=True):
        sides[g].add(p)
    return sides


@pytest.mark.parametrize("seed", range(8))
def test_grouped_split_keeps_every_group_on_one_side(seed: int) -> None:
    rng = random.Random(1000 + seed)
    n = rng.randint(20, 300)
    groups = [rng.randint(0, n // 2) for _ in range(n)]  # arbitrary, possibly mixed-label groups
    labels = [rng.choice(["a", "b", "c"]) for _ in range(n)]
    parts = grouped_split(groups, labels, seed=seed)
    assert len(parts) == n
    assert set(parts) <= {"train", "val", "test"}
    assert all(len(s) == 1 for s in sides_of_groups(groups, parts).values())


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_grouped_split_proportions_per_class(seed: int) -> None:
    groups, labels = synthetic_items(seed)
    parts = grouped_split(groups, labels, seed=seed)
    totals = Counter(labels)
    for label, total in totals.items():
        counts = Counter(p for p, lab in zip(parts, labels, strict=True) if lab == label)
        for split, target in (("train", 0.7), ("val", 0.1), ("test", 0.2)):
            assert abs(counts[split] / total - target) < 0.03, (label, split, counts, total)
    overall = Counter(parts)
    assert abs(overall["test"] / len(parts) - 0.2) < 0.02


def test_grouped_split_custom_fractions() -> None:
    groups, labels = synthetic_items(5)
    parts = grouped_split(groups, labels, val=0.0, test=0.5, seed=1)
    assert set(parts) == {"train", "test"}
    assert abs(Counter(parts)["test"] / len(parts) - 0.5) < 0.03


def test_grouped_split_is_seeded() -> None:
    groups, labels = synthetic_items(3)
    first = grouped_split(groups, labels, seed=11)
    assert grouped_split(groups, labels, seed=11) == first
    assert grouped_split(groups, labels, seed=12) != first


@pytest.mark.parametrize(
    ("val", "test"), [(-0.1, 0.2), (0.1, -0.2), (1.0, 0.0), (0.0, 1.0), (0.5, 0.5), (0.6, 0.6), (float("nan"), 0.2)]
)
def test_grouped_split_rejects_bad_fractions(val: float, test: float) -> None:
    with pytest.raises(DatasetError):
        grouped_split([0, 1, 2], ["a", "a", "b"], val=val, test=test)


def test_grouped_split_rejects_mismatched_lengths() -> None:
    with pytest.raises(DatasetError, match="same length"):
        grouped_split([0, 1, 2], ["a", "b"])


@pytest.mark.parametrize("seed", range(4))
def test_grouped_kfold_whole_groups_and_balance(seed: int) -> None:
    groups, labels = synthetic_items(seed, n=300)
    k = 5
    folds = grouped_kfold(groups, labels, k=k, seed=seed)
    assert set(folds) == set(range(k))
    assert all(len(s) == 1 for s in sides_of_groups(groups, folds).values())
    sizes = Counter(folds)
    assert max(sizes.values()) - min(sizes.values()) <= 5  # the largest group has 5 items
    for label in set(labels):
        per_fold = Counter(f for f, lab in zip(folds, labels, strict=True) if lab == label)
        assert max(per_fold.values()) - min(per_fold.values()) <= 5, (label, per_fold)
    assert grouped_kfold(groups, labels, k=k, seed=seed) == folds
    assert grouped_kfold(groups, labels, k=k, seed=seed + 100) != folds


def test_grouped_kfold_rejects_bad_k() -> None:
    with pytest.raises(DatasetError, match="k"):
        grouped_kfold([0, 1, 2, 3], ["a"] * 4, k=1)
    with pytest.raises(DatasetError):
        grouped_kfold([0, 1, 2, 3], ["a"] * 4, k=0)
    with pytest.raises(DatasetError, match="groups"):
        grouped_kfold([0, 0, 1, 1], ["a"] * 4, k=3)  # only 2 groups


# -- on a real audit -------------------------------------------------------------------------------------


def test_make_split_on_the_seed_dataset(seed_audit: AuditReport) -> None:
    rows = make_split(seed_audit, folds=5, seed=42)

    assert len(rows) == 253
    assert len({r.key for r in rows}) == 253
    assert {r.key for r in rows} == {r.key for r in seed_audit.records}
    assert all(len(s) == 1 for s in sides_of_groups([r.group for r in rows], [r.split for r in rows]).values())
    counts = Counter(r.split for r in rows)
    assert abs(counts["test"] - 51) <= 6
    assert abs(counts["val"] - 25) <= 6
    for label in ("yes", "no"):
        total = sum(1 for r in rows if r.label == label)
        test = sum(1 for r in rows if r.label == label and r.split == "test")
        assert abs(test / total - 0.2) < 0.05
    # folds only within train+val, whole groups per fold
    assert all(r.fold is None for r in rows if r.split == "test")
    assert all(r.fold in range(5) for r in rows if r.split != "test")
    dev = [r for r in rows if r.split != "test"]
    assert all(len(s) == 1 for s in sides_of_groups([r.group for r in dev], [r.fold for r in dev]).values())
    # group ids are the audit's
    group_of_key = {rec.key: g for rec, g in zip(seed_audit.records, seed_audit.group, strict=True)}
    assert all(r.group == group_of_key[r.key] for r in rows)
    # seeded
    assert make_split(seed_audit, folds=5, seed=42) == rows
    assert make_split(seed_audit, folds=5, seed=43) != rows
    assert all(r.fold is None for r in make_split(seed_audit, seed=42))


def test_write_read_round_trip_and_stable_sha(seed_audit: AuditReport, tmp_path: Path) -> None:
    rows = make_split(seed_audit, folds=5, seed=42)
    first = tmp_path / "a.csv"
    second = tmp_path / "b.csv"

    digest = write_split(rows, first)
    assert write_split(make_split(seed_audit, folds=5, seed=42), second) == digest
    assert first.read_bytes() == second.read_bytes()
    assert digest == hashlib.sha256(first.read_bytes()).hexdigest()

    back, back_digest = read_split(first)
    assert back == rows
    assert back_digest == digest
    header = first.read_text().splitlines()[0]
    assert header == ",".join(SPLIT_COLUMNS)


def test_round_trip_of_awkward_values(tmp_path: Path) -> None:
    rows = [
        SplitRow('ds/yes/a, "b".jpg', "ds", 'yes/a, "b".jpg', "yes", 0, "train", 0),
        SplitRow("ds/no/ünï cödé.jpg", "ds", "no/ünï cödé.jpg", "no", 1, "test", None),
    ]
    digest = write_split(rows, tmp_path / "s.csv")
    assert read_split(tmp_path / "s.csv") == (rows, digest)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("key,dataset,relative_path,label,group,split\nds/yes/a.jpg,ds,yes/a.jpg,yes,0,train\n", "fold"),
        ("key,dataset,relative_path,label,group,split,fold\nds/yes/a.jpg,ds,yes/a.jpg,yes,0,holdout,\n", "holdout"),
        ("key,dataset,relative_path,label,group,split,fold\nds/yes/a.jpg,ds,yes/a.jpg,yes,0,Train,\n", "Train"),
        ("key,dataset,relative_path,label,group,split,fold\nds/yes/a.jpg,ds,yes/a.jpg,yes,x,train,\n", "integer"),
        ("key,dataset,relative_path,label,group,split,fold\nds/yes/a.jpg,ds,yes/a.jpg,yes,0,train,one\n", "integer"),
        ("", "missing columns"),
        ("just some text\n", "missing columns"),
    ],
    ids=["missing-column", "unknown-split", "wrong-case-split", "bad-group", "bad-fold", "empty", "text"],
)
def test_malformed_split_files(content: str, match: str, tmp_path: Path) -> None:
    path = tmp_path / "split.csv"
    path.write_text(content)
    with pytest.raises(DatasetError, match=match) as info:
        read_split(path)
    assert "\n" not in str(info.value)


def test_unreadable_split_files(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="cannot read"):
        read_split(tmp_path / "missing.csv")
    with pytest.raises(DatasetError):
        read_split(tmp_path)  # a folder
    binary = tmp_path / "image.csv"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x00")
    with pytest.raises(DatasetError):
        read_split(binary)
