"""``braintumor data``: decode and describe images, audit datasets for duplicates and leakage, make grouped
splits."""

from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path
from typing import Any

from braintumor.cli.common import Handler, command, group, progress
from braintumor.errors import BrainTumorError


def _cmd_data_info(args: argparse.Namespace) -> int:
    """decode images and print their metadata as JSON lines"""
    from braintumor.imaging.io import describe, load_image

    status = 0
    for path in args.images:
        try:
            info = {"path": str(path), **describe(load_image(path))}
        except BrainTumorError as exc:
            info = {"path": str(path), "error": str(exc)}
            status = 2
        print(json.dumps(info))
    return status


def _run_audit(args: argparse.Namespace) -> Any:
    from braintumor.data.audit import audit_records
    from braintumor.data.datasets import discover_many
    from braintumor.data.splits import read_split

    records = discover_many(args.dirs)
    split_of = None
    if getattr(args, "split", None):
        rows, _ = read_split(args.split)
        split_of = {r.key: r.split for r in rows}
    with progress(len(records), "fingerprinting") as bar:
        return audit_records(
            records,
            split_of=split_of,
            max_hamming=args.max_hamming,
            min_correlation=args.min_correlation,
            workers=args.workers,
            progress=bar.update,
        )


def _cmd_data_audit(args: argparse.Namespace) -> int:
    """find exact/near duplicates, label conflicts and split leakage

    Find exact and near duplicates across all given folders, duplicate groups with conflicting labels, and groups
    that straddle splits (leakage).
    """
    start = time.perf_counter()
    report = _run_audit(args)
    elapsed = time.perf_counter() - start
    summary = report.summary()
    if args.out:
        rows = report.rows()
        with Path(args.out).open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    if args.format == "json":
        print(json.dumps({"summary": summary, "groups": report.groups_json()}, indent=2))
    else:
        print(format_audit(summary, elapsed))
        if args.out:
            print(f"\nGroups written to {args.out} (one row per file).")
    return 0


def format_audit(summary: dict[str, Any], elapsed: float | None = None) -> str:
    """Human-readable audit summary (the default output of ``braintumor data audit``)."""
    took = f" in {elapsed:.1f} s" if elapsed is not None else ""
    lines = [f"Audited {summary['files']} files in {len(summary['datasets'])} folder(s){took}.", ""]
    header = f"{'dataset':<28}{'files':>7}{'distinct':>10}{'exact dup':>11}{'groups':>8}{'after near-dup':>16}"
    lines += [header, "-" * len(header)]
    for name, d in summary["datasets"].items():
        lines.append(
            f"{name:<28}{d['files']:>7}{d['distinct_contents']:>10}{d['exact_duplicate_files']:>11}"
            f"{d['near_duplicate_groups']:>8}{d['distinct_after_near_duplicates']:>16}"
        )
    lines.append("")
    lines.append("(distinct = distinct contents; groups = near-duplicate groups with 2+ files;")
    lines.append(" after near-dup = distinct slices once near-copies are merged)")
    cross = summary["files_with_copy_in"]
    if any(cross.values()):
        lines.append("")
        lines.append("Files with a copy (exact or near) in another folder:")
        for a, row in cross.items():
            for b, n in row.items():
                total = summary["datasets"][a]["files"]
                lines.append(f"  {a} → {b}: {n} of {total}")
    lines.append("")
    lines.append(
        f"Label conflicts: {summary['conflicting_label_groups']} group(s) "
        f"({summary['files_in_conflicting_groups']} files) carry contradicting labels."
    )
    leak = summary["leaking_files_by_split"]
    if summary["leaking_groups"]:
        per = ", ".join(f"{n} in {s}" for s, n in leak.items())
        lines.append(f"Leakage: {summary['leaking_groups']} group(s) straddle splits ({per}).")
    else:
        lines.append("Leakage: no duplicate group straddles splits.")
    if summary["unreadable"]:
        lines.append(f"Unreadable files: {summary['unreadable']} (see the CSV's error column).")
    p = summary["parameters"]
    lines.append(f"Near-duplicate rule: pHash ≤ {p['max_hamming']} bits and thumbnail r ≥ {p['min_correlation']}.")
    return "\n".join(lines)


def _cmd_data_split(args: argparse.Namespace) -> int:
    """stratified train/val/test (+ k folds) keeping duplicate groups together

    Make a seeded, stratified train/val/test split in which every duplicate group (across all given folders) stays
    on one side.
    """
    from braintumor.data.splits import make_split, write_split

    report = _run_audit(args)
    rows = make_split(report, val=args.val, test=args.test, folds=args.folds, seed=args.seed)
    digest = write_split(rows, args.out)
    counts: dict[str, dict[str, int]] = {}
    for r in rows:
        counts.setdefault(r.split, {}).setdefault(r.label, 0)
        counts[r.split][r.label] += 1
    for split in ("train", "val", "test"):
        if split in counts:
            total = sum(counts[split].values())
            detail = ", ".join(f"{k} {v}" for k, v in sorted(counts[split].items()))
            print(f"{split:<6}{total:>6}  ({detail})")
    if args.folds:
        print(f"folds: {args.folds} over train+val (column 'fold')")
    print(f"wrote {args.out} (sha256 {digest[:12]}…); every duplicate group is on one side")
    return 0


def _audit_command(sub: Any, name: str, handler: Handler) -> argparse.ArgumentParser:
    """A subcommand that audits its folders first (``audit``, ``split``), with the audit's options."""
    from braintumor.data.audit import DEFAULT_MAX_HAMMING, DEFAULT_MIN_CORRELATION

    p = command(sub, name, handler)
    p.add_argument("dirs", nargs="+", type=Path, metavar="DIR", help="dataset folders, audited together")
    p.add_argument("--max-hamming", type=int, default=DEFAULT_MAX_HAMMING, help="pHash distance for candidates")
    p.add_argument(
        "--min-correlation",
        type=float,
        default=DEFAULT_MIN_CORRELATION,
        help="thumbnail correlation that confirms a near duplicate",
    )
    p.add_argument("--workers", type=int, default=None, help="decoding processes (default: all cores)")
    return p


def add_parser(sub: Any) -> None:
    data = group(sub, "data", "inspect, audit and split datasets", "Dataset tools.")
    info = command(data, "info", _cmd_data_info)
    info.add_argument("images", nargs="+", type=Path, metavar="IMAGE")

    audit = _audit_command(data, "audit", _cmd_data_audit)
    audit.add_argument("--out", type=Path, help="write one CSV row per file with its duplicate group")
    audit.add_argument("--format", choices=("text", "json"), default="text", help="output format (stdout)")
    audit.add_argument("--split", type=Path, help="check this split file for leakage instead of folder splits")

    split = _audit_command(data, "split", _cmd_data_split)
    split.add_argument("--out", type=Path, required=True, help="split CSV to write")
    split.add_argument("--val", type=float, default=0.1, help="validation fraction (default 0.1)")
    split.add_argument("--test", type=float, default=0.2, help="test fraction (default 0.2)")
    split.add_argument("--folds", type=int, default=None, help="also assign K cross-validation folds")
    split.add_argument("--seed", type=int, default=42)
