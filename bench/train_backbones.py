"""Train backbones for real on the seed dataset with a grouped split and record time and accuracy.

    python bench/train_backbones.py                      # mobilenet_v2 + efficientnet_lite0, pretrained
    python bench/train_backbones.py --archs resnet50 --no-pretrained

Writes ``bench/results-train.md`` (one row per run, with the command that reproduces it). Accuracies here are
single-split figures for the training issue; intervals and cross-validation live in ``braintumor evaluate``.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many
from braintumor.data.splits import make_split, write_split
from braintumor.training.config import TrainConfig
from braintumor.training.loop import train

ROOT = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", nargs="+", default=[str(ROOT.parent / "shared" / "data" / "brain_tumor_dataset")])
    parser.add_argument("--archs", nargs="+", default=["mobilenet_v2", "efficientnet_lite0"])
    parser.add_argument("--no-pretrained", action="store_true")
    parser.add_argument("--runs", type=Path, default=ROOT / "runs" / "bench-train")
    parser.add_argument("--results", type=Path, default=ROOT / "bench" / "results-train.md")
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    args.runs.mkdir(parents=True, exist_ok=True)
    split_path = args.runs / "split.csv"
    rows = make_split(audit_records(discover_many(args.data)), seed=args.seed)
    digest = write_split(rows, split_path)
    lines = []
    for arch in args.archs:
        cfg = TrainConfig(arch=arch, pretrained=not args.no_pretrained, seed=args.seed)
        t0 = time.perf_counter()
        result = train(cfg, args.data, args.runs / arch, split=split_path)
        seconds = time.perf_counter() - t0
        val, test = result.metrics["val"], result.metrics["test"]
        epochs = len(result.history)
        lines.append(
            f"| {arch} | {'ImageNet' if cfg.pretrained else 'random'} | {seconds:.0f} | {epochs} "
            f"| {val['accuracy']:.3f} (n={val['n']}) | {test['accuracy']:.3f} (n={test['n']}) |"
        )
        print(lines[-1], flush=True)
    datasets = ", ".join(Path(d).name for d in args.data)
    header = [
        f"## Training on {datasets} (grouped split, seed {args.seed}, split sha256 {digest[:12]})",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}. Command: `python {' '.join(['bench/train_backbones.py', *sys.argv[1:]])}`",
        "",
        "| arch | init | seconds | epochs (both phases) | val accuracy | test accuracy |",
        "|---|---|---|---|---|---|",
    ]
    with args.results.open("a") as fh:
        fh.write("\n".join(header + lines) + "\n\n")
    print(f"appended to {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
