"""Dataset audit: exact and near duplicates, label conflicts, split leakage, unreadable files."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from braintumor.data.audit import (
    AuditReport,
    audit_records,
    fingerprint_all,
    fingerprint_bytes,
    near_pairs,
    phash,
    thumbnail,
)
from braintumor.data.datasets import discover, discover_many


def group_of(report: AuditReport, relative_path: str, dataset: str | None = None) -> int:
    [index] = [
        i
        for i, r in enumerate(report.records)
        if r.relative_path == relative_path and (dataset is None or r.dataset == dataset)
    ]
    return report.group[index]


def index_of(report: AuditReport, relative_path: str) -> int:
    return next(i for i, r in enumerate(report.records) if r.relative_path == relative_path)


def resized(pixels: np.ndarray, factor: float) -> np.ndarray:
    h, w = pixels.shape[:2]
    size = (round(w * factor), round(h * factor))
    return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.LANCZOS))


#: ``write_slices(root, {relative path: seed})``, the fixture below.
WriteSlices = Callable[[Path, dict[str, int]], Path]


@pytest.fixture
def write_slices(brain: Callable[..., np.ndarray], write_image: Callable[..., Path]) -> WriteSlices:
    """``write_slices(root, {"yes/a.png": 0, …})``: each file under ``root`` the PNG of ``brain(seed)``; returns
    ``root``."""

    def write(root: Path, seeds: dict[str, int]) -> Path:
        for relative, seed in seeds.items():
            write_image(root / relative, brain(seed), "PNG")
        return root

    return write


@pytest.fixture
def copies_dataset(
    tmp_path: Path,
    brain: Callable[..., np.ndarray],
    write_image: Callable[..., Path],
    write_slices: WriteSlices,
) -> tuple[Path, dict[str, str]]:
    """A yes/no dataset: one slice in four disguises, an exact byte copy, and five unrelated slices."""
    root = tmp_path / "synthetic"
    base = brain(0)
    contrast = np.clip(base.astype(np.float64) * 0.7 + 40, 0, 255).astype(np.uint8)
    write_image(root / "yes" / "original.png", base, "PNG")
    write_image(root / "yes" / "resized.jpg", resized(base, 0.55), "PNG")  # extension lies too
    write_image(root / "yes" / "upscaled.png", resized(base, 1.7), "PNG")
    write_image(root / "yes" / "low_quality.jpg", base, "JPEG", quality=25)
    write_image(root / "yes" / "contrast.png", contrast, "PNG")
    (root / "yes" / "exact_copy.png").write_bytes((root / "yes" / "original.png").read_bytes())
    write_slices(root, {f"no/other{seed}.png": seed for seed in range(1, 6)})
    roles = {
        "copies": "yes/original.png yes/resized.jpg yes/upscaled.png yes/low_quality.jpg yes/contrast.png "
        "yes/exact_copy.png",
        "unrelated": " ".join(f"no/other{seed}.png" for seed in range(1, 6)),
    }
    return root, roles


def test_near_copies_form_one_group_and_unrelated_slices_stay_apart(
    copies_dataset: tuple[Path, dict[str, str]],
) -> None:
    root, roles = copies_dataset
    report = audit_records(discover(root), workers=1)

    copies = roles["copies"].split()
    unrelated = roles["unrelated"].split()
    copy_groups = {group_of(report, rel) for rel in copies}
    assert len(copy_groups) == 1, "resized, re-encoded and re-contrasted copies must be one group"
    unrelated_groups = [group_of(report, rel) for rel in unrelated]
    assert len(set(unrelated_groups)) == len(unrelated), "unrelated slices must not merge"
    assert copy_groups.isdisjoint(unrelated_groups)
    members = report.members()
    assert all(len(members[g]) == 1 for g in unrelated_groups)
    assert report.errors == {}

    summary = report.summary()
    assert summary["files"] == 11
    assert summary["groups"] == 6
    assert summary["near_duplicate_groups"] == 1
    assert summary["largest_group"] == 6
    assert summary["distinct_contents"] == 10  # the byte copy is the only exact duplicate
    ds = summary["datasets"]["synthetic"]
    assert ds["exact_duplicate_files"] == 1
    assert ds["distinct_after_near_duplicates"] == 6
    assert ds["files_in_near_duplicate_groups"] == 6
    assert ds["classes"] == {"no": 5, "yes": 6}
    assert summary["conflicting_label_groups"] == 0
    assert summary["leaking_groups"] == 0
    # groups are numbered by first member
    assert report.group[0] == 0
    assert sorted(set(report.group)) == list(range(6))


def test_exact_copies_share_content(copies_dataset: tuple[Path, dict[str, str]]) -> None:
    root, _ = copies_dataset
    report = audit_records(discover(root), workers=1)
    original, copy = index_of(report, "yes/original.png"), index_of(report, "yes/exact_copy.png")
    resized_copy = index_of(report, "yes/resized.jpg")
    assert report.content[original] == report.content[copy]
    assert report.fingerprints[original].sha256 == report.fingerprints[copy].sha256
    assert report.content[resized_copy] != report.content[original]
    assert len(set(report.content)) == 10


def test_stricter_thresholds_split_the_group(copies_dataset: tuple[Path, dict[str, str]]) -> None:
    root, _ = copies_dataset
    strict = audit_records(discover(root), workers=1, max_hamming=-1)  # no near pairs at all
    assert strict.summary()["groups"] == 10  # only the exact copy remains grouped
    assert strict.summary()["parameters"] == {"max_hamming": -1, "min_correlation": 0.97}


def test_conflicting_labels_are_reported(
    tmp_path: Path, brain: Callable[..., np.ndarray], write_image: Callable[..., Path], write_slices: WriteSlices
) -> None:
    root = write_slices(tmp_path / "ds", {"yes/a.png": 0, "yes/b.png": 1, "no/c.png": 2})
    write_image(root / "no" / "a_resized.png", resized(brain(0), 0.5), "PNG")
    write_image(root / "yes" / "b_copy.jpg", brain(1), "JPEG", quality=60)

    report = audit_records(discover(root), workers=1)

    conflict = group_of(report, "yes/a.png")
    assert group_of(report, "no/a_resized.png") == conflict
    assert report.conflicting_groups() == [conflict]
    summary = report.summary()
    assert summary["conflicting_label_groups"] == 1
    assert summary["files_in_conflicting_groups"] == 2
    rows = {row["relative_path"]: row for row in report.rows()}
    assert rows["no/a_resized.png"]["conflict"] == 1
    assert rows["yes/b_copy.jpg"]["conflict"] == 0
    [group_json] = [g for g in report.groups_json() if g["conflict"]]
    assert group_json["labels"] == ["no", "yes"]


def test_tumor_type_conflicts_but_generic_yes_does_not(tmp_path: Path, write_slices: WriteSlices) -> None:
    types = write_slices(tmp_path / "types", {"glioma/a.png": 0, "meningioma/a.png": 0, "glioma/b.png": 1})
    generic = write_slices(tmp_path / "generic", {"yes/b.png": 1})

    report = audit_records(discover_many([types, generic]), workers=1)

    a_group = group_of(report, "glioma/a.png", "types")
    b_group = group_of(report, "glioma/b.png", "types")
    assert b_group == group_of(report, "yes/b.png", "generic")
    assert report.conflicting_groups() == [a_group]  # glioma vs meningioma; yes vs glioma is no conflict
    cross = report.summary()["files_with_copy_in"]
    assert cross == {"types": {"generic": 1}, "generic": {"types": 1}}


def test_groups_straddling_splits_are_leakage(
    tmp_path: Path, brain: Callable[..., np.ndarray], write_image: Callable[..., Path], write_slices: WriteSlices
) -> None:
    root = tmp_path / "mri"
    write_image(root / "Training" / "glioma" / "Tr-1.jpg", brain(0), "JPEG", quality=90)
    write_image(root / "Testing" / "glioma" / "Te-1.jpg", resized(brain(0), 0.5), "JPEG", quality=70)
    write_slices(
        root,
        {
            "Training/glioma/Tr-2.png": 1,
            "Training/notumor/Tr-3.png": 2,
            "Training/notumor/Tr-3-copy.png": 2,  # same split: fine
            "Testing/notumor/Te-2.png": 3,
        },
    )

    records = discover(root)
    report = audit_records(records, workers=1)

    leak = group_of(report, "Training/glioma/Tr-1.jpg")
    assert group_of(report, "Testing/glioma/Te-1.jpg") == leak
    assert report.straddling_groups() == [leak]
    summary = report.summary()
    assert summary["leaking_groups"] == 1
    assert summary["leaking_files_by_split"] == {"test": 1, "train": 1}
    assert summary["near_duplicate_groups"] == 2
    rows = {row["relative_path"]: row for row in report.rows()}
    assert rows["Testing/glioma/Te-1.jpg"]["leak"] == 1
    assert rows["Testing/glioma/Te-1.jpg"]["split"] == "test"
    assert rows["Training/notumor/Tr-3-copy.png"]["leak"] == 0

    # A split mapping overrides the folders: both members in train -> no leakage.
    split_of = {r.key: "train" for r in records}
    split_of["mri/Testing/notumor/Te-2.png"] = "test"
    fixed = audit_records(records, split_of=split_of, workers=1)
    assert fixed.straddling_groups() == []
    assert fixed.summary()["leaking_groups"] == 0
    # Files missing from the mapping have no split and never leak.
    partial = audit_records(records, split_of={"mri/Testing/glioma/Te-1.jpg": "test"}, workers=1)
    assert partial.straddling_groups() == []


def test_unreadable_files_are_reported_not_fatal(
    tmp_path: Path, brain: Callable[..., np.ndarray], write_slices: WriteSlices
) -> None:
    root = write_slices(tmp_path / "ds", {"yes/a.png": 0, "yes/b.png": 1})
    (root / "no").mkdir()
    (root / "no" / "broken.jpg").write_bytes(b"this is not an image at all")
    (root / "no" / "empty.png").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(brain(2)).save(jpeg, "JPEG")
    (root / "no" / "truncated.jpg").write_bytes(jpeg.getvalue()[:300])

    report = audit_records(discover(root), workers=1)

    bad = {index_of(report, rel) for rel in ("no/broken.jpg", "no/empty.png", "no/truncated.jpg")}
    assert set(report.errors) == bad
    assert all(message and "\n" not in message for message in report.errors.values())
    assert "unsupported" in report.errors[index_of(report, "no/broken.jpg")]
    assert "empty" in report.errors[index_of(report, "no/empty.png")]
    members = report.members()
    assert all(len(members[report.group[i]]) == 1 for i in bad)
    summary = report.summary()
    assert summary["unreadable"] == 3
    assert summary["datasets"]["ds"]["unreadable"] == 3
    assert summary["files"] == 5
    rows = {row["relative_path"]: row for row in report.rows()}
    assert rows["no/broken.jpg"]["error"]
    assert rows["yes/a.png"]["error"] == ""


def test_fingerprints() -> None:
    flat = np.full((40, 40), 128, np.uint8)
    fp = fingerprint_bytes(_png(flat))
    assert fp.error is None
    assert fp.thumb.shape == (32 * 32,) and fp.thumb.dtype == np.float32
    assert not fp.thumb.any()  # a flat image has no structure (and no division by zero)
    broken = fingerprint_bytes(b"nope")
    assert broken.error and broken.phash == 0
    ramp = np.tile(np.arange(64, dtype=np.uint8) * 4, (64, 1))
    fp_ramp = fingerprint_bytes(_png(ramp))
    assert float(np.linalg.norm(fp_ramp.thumb)) == pytest.approx(1.0, abs=1e-5)
    assert 0 <= fp_ramp.phash < 2**64
    # a mirrored image is a different slice for the hash
    assert phash(thumbnail(ramp)) != phash(thumbnail(ramp[:, ::-1].copy()))


def test_near_pairs_needs_both_hash_and_correlation() -> None:
    hashes = np.array([0b0, 0b1, 0xFFFF], dtype=np.uint64)
    thumbs = np.eye(3, 4, dtype=np.float32)
    thumbs[1] = thumbs[0]  # 0 and 1: close hashes, identical thumbnails
    assert near_pairs(hashes, thumbs) == [(0, 1)]
    assert near_pairs(hashes, thumbs, max_hamming=0) == []
    assert near_pairs(hashes, thumbs, max_hamming=16, min_correlation=1.5) == []
    thumbs[2] = thumbs[0]
    assert near_pairs(hashes, thumbs, max_hamming=16) == [(0, 1), (0, 2), (1, 2)]
    assert near_pairs(hashes, thumbs, max_hamming=16, chunk=1) == [(0, 1), (0, 2), (1, 2)]


def test_parallel_and_serial_fingerprints_agree(tmp_path: Path, brain: Callable[..., np.ndarray]) -> None:
    paths = []
    for i in range(70):  # >= 64 files: the process pool is used
        path = tmp_path / f"{i}.png"
        path.write_bytes(_png(brain(i % 7, 48, 40)))
        paths.append(path)
    ticks: list[int] = []
    parallel = fingerprint_all(paths, workers=2, progress=ticks.append)
    serial = fingerprint_all(paths, workers=1)
    assert len(ticks) == 70
    assert [f.sha256 for f in parallel] == [f.sha256 for f in serial]
    assert [f.phash for f in parallel] == [f.phash for f in serial]


def _png(pixels: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, "PNG")
    return buf.getvalue()


# -- the real datasets -----------------------------------------------------------------------------------


@pytest.mark.slow
def test_real_seed_dataset_duplicates(seed_audit: AuditReport, manifest: Callable[[str], list[dict[str, str]]]) -> None:
    summary: dict[str, Any] = seed_audit.summary()
    ds = summary["datasets"]["brain_tumor_dataset"]
    assert ds["files"] == summary["files"] == 253
    assert ds["distinct_contents"] == 228
    assert ds["exact_duplicate_files"] == 25
    assert summary["unreadable"] == 0
    assert ds["distinct_after_near_duplicates"] < 228  # near copies merge further
    assert summary["leaking_groups"] == 0  # no split folders
    # the audit's content hashes are the manifest's
    rows = {row["relative_path"]: row["sha256"] for row in manifest("brain_tumor_dataset")}
    assert {
        r.relative_path: fp.sha256 for r, fp in zip(seed_audit.records, seed_audit.fingerprints, strict=True)
    } == rows
    assert len(set(rows.values())) == 228


@pytest.mark.slow
def test_real_seed_dataset_is_mostly_inside_br35h(shared_data: Path) -> None:
    records = discover_many([shared_data / "brain_tumor_dataset", shared_data / "br35h"])
    summary = audit_records(records).summary()
    assert summary["files"] == 253 + 1962
    assert summary["files_with_copy_in"]["brain_tumor_dataset"]["br35h"] >= 240
    assert summary["files_with_copy_in"]["br35h"]["brain_tumor_dataset"] > 0


@pytest.mark.slow
def test_real_four_class_official_split_leaks(shared_data: Path) -> None:
    report = audit_records(discover(shared_data / "brain_tumor_mri_4class"))
    summary = report.summary()
    assert summary["files"] == 5665
    assert summary["leaking_groups"] > 0
    assert set(summary["leaking_files_by_split"]) == {"train", "test"}
    straddle = report.straddling_groups()
    members = report.members()
    for g in straddle[:20]:
        assert {report.records[i].split for i in members[g]} == {"train", "test"}
