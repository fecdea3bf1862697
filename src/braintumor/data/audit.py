"""Dataset audit: exact and near duplicates, label conflicts and split leakage.

Brain-MRI datasets on the web are copies of copies: the same slice re-saved, resized, re-encoded or
re-contrasted, within a dataset and across datasets. A test set that shares a slice with its training set
measures memory, not skill. The audit finds:

* **exact duplicates** — identical bytes (SHA-256);
* **near duplicates** — a 64-bit DCT perceptual hash (pHash) of the whole slice at 32×32 gray proposes
  pairs within ``max_hamming`` bits; a pixel-level check confirms them: the Pearson correlation of the two
  32×32 gray thumbnails must reach ``min_correlation`` (invariant to brightness and contrast changes);
* **groups** — connected components of those pairs (union–find), across all folders audited together;
* **conflicts** — groups whose members disagree on tumor / no tumor (or on the tumor class);
* **leakage** — groups whose members sit in different splits (a dataset's own ``Training/``/``Testing/``
  folders, or a split file).

Example:
    >>> from braintumor.data import discover, audit_records
    >>> report = audit_records(discover("../shared/data/brain_tumor_dataset"))  # doctest: +SKIP
    >>> report.summary()["datasets"]["brain_tumor_dataset"]["distinct_contents"]  # doctest: +SKIP
    228
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from braintumor.data.datasets import ImageRecord
from braintumor.errors import ImageError
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import to_gray

THUMB = 32
DEFAULT_MAX_HAMMING = 10
DEFAULT_MIN_CORRELATION = 0.97
#: Labels that say "tumor" without naming a type (the seed's ``yes``).
GENERIC_POSITIVE = frozenset({"yes", "tumor", "positive"})
_DCT = np.cos(np.pi * (2 * np.arange(THUMB)[None, :] + 1) * np.arange(THUMB)[:, None] / (2 * THUMB))


@dataclass(frozen=True)
class Fingerprint:
    """What the audit keeps of one file: its content hash, perceptual hash and thumbnail."""

    sha256: str
    phash: int
    thumb: np.ndarray  # (THUMB*THUMB,) float32, zero mean, unit norm
    error: str | None = None


def thumbnail(pixels: np.ndarray) -> np.ndarray:
    """32×32 gray thumbnail (whole image, aspect not kept: a resized copy maps onto the same grid)."""
    gray = Image.fromarray(to_gray(pixels))
    return np.asarray(gray.resize((THUMB, THUMB), Image.Resampling.BILINEAR), dtype=np.float64)


def phash(thumb: np.ndarray) -> int:
    """64-bit DCT perceptual hash: signs of the 8×8 lowest frequencies against their median (DC excluded)."""
    coeffs = (_DCT @ thumb @ _DCT.T)[:8, :8].ravel()
    bits = coeffs > np.median(coeffs[1:])
    return int(np.packbits(bits).view(">u8")[0])


def fingerprint_bytes(data: bytes) -> Fingerprint:
    sha = hashlib.sha256(data).hexdigest()
    try:
        thumb = thumbnail(load_image(data).pixels)
    except ImageError as exc:
        return Fingerprint(sha, 0, np.zeros(THUMB * THUMB, np.float32), error=str(exc))
    centred = thumb.ravel() - thumb.mean()
    norm = float(np.linalg.norm(centred))
    unit = (centred / norm if norm > 0 else centred).astype(np.float32)
    return Fingerprint(sha, phash(thumb), unit)


def fingerprint_file(path: str | os.PathLike[str]) -> Fingerprint:
    """Fingerprint one file; a file that cannot be read is reported (``error``), not raised."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        digest = hashlib.sha256(f"unreadable:{path}".encode()).hexdigest()
        return Fingerprint(digest, 0, np.zeros(THUMB * THUMB, np.float32), error=f"cannot read: {exc.strerror or exc}")
    return fingerprint_bytes(data)


def fingerprint_all(
    paths: Sequence[str | os.PathLike[str]],
    *,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> list[Fingerprint]:
    """Fingerprint many files, decoding in ``workers`` processes (default: all cores)."""
    workers = workers or os.cpu_count() or 1
    if workers <= 1 or len(paths) < 64:
        out = []
        for p in paths:
            out.append(fingerprint_file(p))
            if progress:
                progress(1)
        return out
    results: list[Fingerprint] = []
    with ProcessPoolExecutor(max_workers=workers) as pool:
        for fp in pool.map(fingerprint_file, paths, chunksize=32):
            results.append(fp)
            if progress:
                progress(1)
    return results


def near_pairs(
    hashes: np.ndarray,
    thumbs: np.ndarray,
    *,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    chunk: int = 1024,
) -> list[tuple[int, int]]:
    """Index pairs ``(i, j)``, ``i < j``, whose hashes are within ``max_hamming`` bits and whose thumbnails
    correlate at ``min_correlation`` or more. Brute force in chunks: ~1 s for 10 000 images."""
    n = len(hashes)
    pairs: list[tuple[int, int]] = []
    for start in range(0, n, chunk):
        block = hashes[start : start + chunk]
        distance = np.bitwise_count(block[:, None] ^ hashes[None, :])
        rows, cols = np.nonzero(distance <= max_hamming)
        rows = rows + start
        keep = cols > rows
        rows, cols = rows[keep], cols[keep]
        if rows.size == 0:
            continue
        corr = np.einsum("ij,ij->i", thumbs[rows], thumbs[cols])
        ok = corr >= min_correlation
        pairs.extend(zip(rows[ok].tolist(), cols[ok].tolist(), strict=True))
    return pairs


class _UnionFind:
    def __init__(self, n: int) -> None:
        self.parent = list(range(n))

    def find(self, x: int) -> int:
        parent = self.parent
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


@dataclass
class AuditReport:
    """The audit's findings. ``group[i]`` is the duplicate group of ``records[i]`` (0-based, ordered by
    first member); ``content[i]`` the exact-content group. Unreadable files are in ``errors`` and form
    singleton groups."""

    records: list[ImageRecord]
    fingerprints: list[Fingerprint]
    group: list[int]
    content: list[int]
    splits: list[str | None]
    max_hamming: int
    min_correlation: float
    errors: dict[int, str] = field(default_factory=dict)

    # -- derived views -------------------------------------------------------------------------------
    def members(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = defaultdict(list)
        for i, g in enumerate(self.group):
            out[g].append(i)
        return dict(out)

    def conflicting_groups(self) -> list[int]:
        """Groups whose members disagree on tumor / no tumor, or name different tumor types."""
        bad = []
        for g, idx in self.members().items():
            if len(idx) < 2:
                continue
            binary = {self.records[i].is_tumor for i in idx}
            types = {
                self.records[i].label.lower()
                for i in idx
                if self.records[i].is_tumor and self.records[i].label.lower() not in GENERIC_POSITIVE
            }
            if len(binary) > 1 or len(types) > 1:
                bad.append(g)
        return sorted(bad)

    def straddling_groups(self) -> list[int]:
        """Groups with members in more than one split (leakage)."""
        out = []
        for g, idx in self.members().items():
            splits = {self.splits[i] for i in idx if self.splits[i] is not None}
            if len(splits) > 1:
                out.append(g)
        return sorted(out)

    def summary(self) -> dict[str, Any]:
        """JSON-ready summary: per dataset, across datasets, conflicts and leakage."""
        members = self.members()
        by_ds: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(self.records):
            by_ds[r.dataset].append(i)
        datasets: dict[str, Any] = {}
        for name, idx in by_ds.items():
            groups = Counter(self.group[i] for i in idx)
            datasets[name] = {
                "files": len(idx),
                "unreadable": sum(1 for i in idx if i in self.errors),
                "distinct_contents": len({self.fingerprints[i].sha256 for i in idx}),
                "exact_duplicate_files": len(idx) - len({self.fingerprints[i].sha256 for i in idx}),
                "distinct_after_near_duplicates": len(groups),
                "near_duplicate_groups": sum(1 for c in groups.values() if c > 1),
                "files_in_near_duplicate_groups": sum(c for c in groups.values() if c > 1),
                "classes": dict(sorted(Counter(self.records[i].label for i in idx).items())),
            }
        datasets_of_group: dict[int, set[str]] = defaultdict(set)
        for i, r in enumerate(self.records):
            datasets_of_group[self.group[i]].add(r.dataset)
        cross = {
            a: {b: sum(1 for i in idx if b in datasets_of_group[self.group[i]]) for b in by_ds if b != a}
            for a, idx in by_ds.items()
        }
        straddle = self.straddling_groups()
        leak_files: Counter[str] = Counter()
        for g in straddle:
            for i in members[g]:
                if self.splits[i] is not None:
                    leak_files[self.splits[i] or ""] += 1
        conflicts = self.conflicting_groups()
        return {
            "files": len(self.records),
            "unreadable": len(self.errors),
            "distinct_contents": len({fp.sha256 for fp in self.fingerprints}),
            "groups": len(members),
            "near_duplicate_groups": sum(1 for idx in members.values() if len(idx) > 1),
            "largest_group": max((len(v) for v in members.values()), default=0),
            "conflicting_label_groups": len(conflicts),
            "files_in_conflicting_groups": sum(len(members[g]) for g in conflicts),
            "leaking_groups": len(straddle),
            "leaking_files_by_split": dict(sorted(leak_files.items())),
            "datasets": datasets,
            "files_with_copy_in": cross,
            "parameters": {"max_hamming": self.max_hamming, "min_correlation": self.min_correlation},
        }

    def rows(self) -> list[dict[str, Any]]:
        """One row per file, ordered by group (the CSV written by ``braintumor data audit --out``)."""
        members = self.members()
        conflicts = set(self.conflicting_groups())
        straddle = set(self.straddling_groups())
        out = []
        for g in sorted(members):
            for i in members[g]:
                r, fp = self.records[i], self.fingerprints[i]
                out.append(
                    {
                        "group": g,
                        "group_size": len(members[g]),
                        "dataset": r.dataset,
                        "relative_path": r.relative_path,
                        "label": r.label,
                        "split": self.splits[i] or "",
                        "sha256": fp.sha256,
                        "content": self.content[i],
                        "phash": f"{fp.phash:016x}",
                        "conflict": int(g in conflicts),
                        "leak": int(g in straddle),
                        "error": self.errors.get(i, ""),
                    }
                )
        return out

    def groups_json(self) -> list[dict[str, Any]]:
        members = self.members()
        conflicts = set(self.conflicting_groups())
        straddle = set(self.straddling_groups())
        return [
            {
                "group": g,
                "members": [self.records[i].key for i in idx],
                "labels": sorted({self.records[i].label for i in idx}),
                "splits": sorted({s for i in idx if (s := self.splits[i])}),
                "conflict": g in conflicts,
                "leak": g in straddle,
            }
            for g, idx in sorted(members.items())
            if len(idx) > 1
        ]


def audit_records(
    records: Sequence[ImageRecord],
    *,
    split_of: Mapping[str, str] | None = None,
    max_hamming: int = DEFAULT_MAX_HAMMING,
    min_correlation: float = DEFAULT_MIN_CORRELATION,
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
    fingerprints: Sequence[Fingerprint] | None = None,
) -> AuditReport:
    """Audit ``records`` together (duplicates are looked for across all of them).

    ``split_of`` maps a record's :attr:`~ImageRecord.key` to a split name and overrides the datasets'
    own ``Training/``/``Testing/`` folders (use it to check a split file).
    """
    records = list(records)
    fps = (
        list(fingerprints)
        if fingerprints is not None
        else fingerprint_all([r.path for r in records], workers=workers, progress=progress)
    )
    n = len(records)
    uf = _UnionFind(n)
    first_of_sha: dict[str, int] = {}
    errors = {i: fp.error for i, fp in enumerate(fps) if fp.error}
    for i, fp in enumerate(fps):
        j = first_of_sha.setdefault(fp.sha256, i)
        if j != i:
            uf.union(i, j)
    readable = [i for i in range(n) if i not in errors]
    if readable:
        hashes = np.array([fps[i].phash for i in readable], dtype=np.uint64)
        thumbs = np.stack([fps[i].thumb for i in readable])
        for a, b in near_pairs(hashes, thumbs, max_hamming=max_hamming, min_correlation=min_correlation):
            uf.union(readable[a], readable[b])
    roots = [uf.find(i) for i in range(n)]
    renumber: dict[int, int] = {}
    group = [renumber.setdefault(r, len(renumber)) for r in roots]
    content_ids: dict[str, int] = {}
    content = [content_ids.setdefault(fp.sha256, len(content_ids)) for fp in fps]
    splits = [(split_of.get(r.key) if split_of is not None else r.split) for r in records]
    return AuditReport(
        records=records,
        fingerprints=fps,
        group=group,
        content=content,
        splits=splits,
        max_hamming=max_hamming,
        min_correlation=min_correlation,
        errors={i: e for i, e in errors.items() if e},
    )


@dataclass(frozen=True)
class FingerprintSet:
    """Fingerprints of a set of images (a model's training + validation images), to find their copies."""

    sha256: frozenset[str]
    phash: np.ndarray  # uint64
    thumbs: np.ndarray  # float32 N×1024, normalised

    def holds_copy_of(self, fp: Fingerprint) -> bool:
        """True when ``fp`` is an exact or near copy (the audit's rule) of one of these images."""
        if fp.sha256 in self.sha256:
            return True
        if fp.error is not None or not len(self.phash):
            return False
        close = np.bitwise_count(self.phash ^ np.uint64(fp.phash)) <= DEFAULT_MAX_HAMMING
        return bool(close.any()) and float((self.thumbs[close] @ fp.thumb).max()) >= DEFAULT_MIN_CORRELATION


def save_fingerprints(keys: Sequence[str], paths: Sequence[str | os.PathLike[str]], out: str | Path) -> Path:
    """Write the fingerprints (SHA-256, pHash, thumbnail) of ``paths`` to an ``.npz`` file."""
    fps = fingerprint_all(paths)
    np.savez_compressed(
        out,
        keys=np.array(list(keys)),
        sha256=np.array([fp.sha256 for fp in fps]),
        phash=np.array([fp.phash for fp in fps], dtype=np.uint64),
        thumbs=np.stack([fp.thumb for fp in fps]).astype(np.float16) if fps else np.zeros((0, 1024), np.float16),
    )
    return Path(out)


def load_fingerprints(files: Sequence[str | os.PathLike[str]]) -> FingerprintSet:
    """Merge fingerprint files written by :func:`save_fingerprints`."""
    prints = [np.load(f) for f in files]
    if not prints:
        return FingerprintSet(frozenset(), np.zeros(0, np.uint64), np.zeros((0, THUMB * THUMB), np.float32))
    return FingerprintSet(
        frozenset(np.concatenate([p["sha256"] for p in prints]).tolist()),
        np.concatenate([p["phash"] for p in prints]).astype(np.uint64),
        np.concatenate([p["thumbs"] for p in prints]).astype(np.float32),
    )
