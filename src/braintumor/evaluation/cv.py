"""Repeated, stratified, group-aware k-fold cross-validation of the training recipe.

One 51-image test set cannot tell two backbones apart (its accuracy interval is about ±6 points). Here
every image is tested exactly once per repeat: fold ``f`` is the test part, fold ``f + 1`` the validation
part (early stopping, calibration, threshold), the rest trains. Duplicate groups never straddle folds.
The summary gives, per metric, the mean over the k × repeats folds with a 95% t-interval, and the pooled
out-of-fold value.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from braintumor.data.audit import audit_records
from braintumor.data.datasets import discover_many
from braintumor.data.splits import SplitRow, grouped_kfold, write_split
from braintumor.evaluation.evaluate import evaluate_runs
from braintumor.evaluation.metrics import binary_metrics, multiclass_metrics
from braintumor.training.config import TrainConfig

# Two-sided 95% Student t quantiles by degrees of freedom (1.96 beyond the table).
_T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
        11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
        20: 2.086, 24: 2.064, 29: 2.045}  # fmt: skip


def t95(df: int) -> float:
    if df <= 0:
        return float("nan")
    best = max((k for k in _T95 if k <= df), default=1)
    return _T95[best] if df <= 29 else 1.96


@dataclass
class CVResult:
    arch: str
    k: int
    repeats: int
    folds: list[dict[str, float]] = field(default_factory=list)
    pooled: list[dict[str, float]] = field(default_factory=list)
    task: str = "binary"
    seconds: float = 0.0  # training and testing time summed over folds, kept folds included

    def summary(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for metric in self.folds[0] if self.folds else []:
            values = np.array([f[metric] for f in self.folds], dtype=np.float64)
            values = values[np.isfinite(values)]
            n = len(values)
            mean = float(values.mean()) if n else float("nan")
            sd = float(values.std(ddof=1)) if n > 1 else float("nan")
            half = t95(n - 1) * sd / math.sqrt(n) if n > 1 else float("nan")
            pooled = float(np.mean([p.get(metric, np.nan) for p in self.pooled])) if self.pooled else float("nan")
            # every metric here lives in [0, 1]; a t-interval over few folds can overshoot it
            low, high = (max(0.0, mean - half), min(1.0, mean + half)) if math.isfinite(half) else (half, half)
            out[metric] = {"mean": mean, "sd": sd, "low": low, "high": high, "pooled": pooled, "n": n}
        return out

    def table_row(self, label: str, metrics: Sequence[str]) -> str:
        s = self.summary()
        cells = [f"{s[m]['mean']:.3f} [{s[m]['low']:.3f}–{s[m]['high']:.3f}]" for m in metrics]
        return f"| {label} | " + " | ".join(cells) + " |"


@dataclass(frozen=True)
class FoldOutcome:
    """What one fold leaves behind: its test metrics and its out-of-fold labels and scores."""

    metrics: dict[str, float]
    task: str
    threshold: float
    y: np.ndarray
    p: np.ndarray
    seconds: float


def _fold_path(outcomes: str | Path | None, cfg: TrainConfig, split: Path, r: int, f: int) -> Path | None:
    if outcomes is None:
        return None
    digest = hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True, default=str).encode())
    digest.update(split.read_bytes())
    return Path(outcomes) / f"r{r}-f{f}-{digest.hexdigest()[:12]}.json"


def _read_outcome(path: Path | None) -> FoldOutcome | None:
    if path is None or not path.is_file():
        return None
    d = json.loads(path.read_text())
    return FoldOutcome(d["metrics"], d["task"], d["threshold"], np.asarray(d["y"]), np.asarray(d["p"]), d["seconds"])


def _write_outcome(path: Path, o: FoldOutcome) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    body = {"metrics": o.metrics, "task": o.task, "threshold": o.threshold,
            "y": o.y.tolist(), "p": np.round(o.p.astype(np.float64), 6).tolist(), "seconds": o.seconds}  # fmt: skip
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(body) + "\n")
    tmp.replace(path)


def cross_validate(
    cfg: TrainConfig,
    data_dirs: Sequence[str],
    out_dir: str | Path,
    *,
    k: int = 5,
    repeats: int = 1,
    seed: int = 42,
    extra_train: Sequence[str] = (),
    progress: bool = True,
    log: Callable[[str], None] = print,
    outcomes: str | Path | None = None,
) -> CVResult:
    """Train and test ``cfg`` on every fold; write per-fold runs, ``cv.json`` and ``cv.md``.

    ``extra_train`` folders add training images to every fold (never validation or test images): the
    audit runs over all folders together, and an extra image whose duplicate group reaches the fold's
    test or validation images is left out, so nothing leaks.

    ``outcomes`` is a folder that keeps each finished fold's result (metrics and out-of-fold scores, a few
    kilobytes) under a key of the recipe and the fold's split: a later call with the same recipe and data
    reads a fold back instead of training it again, so a CV that takes longer than one sitting can go on
    where it stopped.
    """
    from braintumor.training.loop import train

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_dirs = [*data_dirs, *extra_train]
    report = audit_records(discover_many(all_dirs))
    extra_names = {r.dataset for r in discover_many(extra_train)} if extra_train else set()
    readable = [i for i in range(len(report.records)) if i not in report.errors]
    keep = [i for i in readable if report.records[i].dataset not in extra_names]
    extra = [i for i in readable if report.records[i].dataset in extra_names]
    groups = [report.group[i] for i in keep]
    labels = [report.records[i].label for i in keep]
    result = CVResult(cfg.arch, k, repeats)
    for r in range(repeats):
        folds = grouped_kfold(groups, labels, k=k, seed=seed + r)
        oof_y: list[np.ndarray] = []
        oof_p: list[np.ndarray] = []
        last: FoldOutcome | None = None
        for f in range(k):
            rows = []
            for j, i in enumerate(keep):
                rec = report.records[i]
                part = "test" if folds[j] == f else "val" if folds[j] == (f + 1) % k else "train"
                rows.append(SplitRow(rec.key, rec.dataset, rec.relative_path, rec.label, groups[j], part, folds[j]))
            held_out = {g for g, part in zip(groups, (row.split for row in rows), strict=True) if part != "train"}
            for i in extra:
                rec = report.records[i]
                if report.group[i] not in held_out:
                    rows.append(
                        SplitRow(rec.key, rec.dataset, rec.relative_path, rec.label, report.group[i], "train", None)
                    )
            fold_dir = out / f"r{r}-f{f}"
            fold_dir.mkdir(parents=True, exist_ok=True)
            split_path = fold_dir / "split.csv"
            write_split(rows, split_path)
            fold_cfg = cfg.merged({"seed": seed + 1000 * r + f})
            kept = _fold_path(outcomes, fold_cfg, split_path, r, f)
            outcome = _read_outcome(kept)
            if outcome is None:
                log(f"repeat {r + 1}/{repeats}, fold {f + 1}/{k}")
                t0 = time.perf_counter()
                train(fold_cfg, all_dirs, fold_dir, split=split_path, progress=progress, log=log)
                ev = evaluate_runs([fold_dir], all_dirs, split=split_path, part="test", n_boot=1)
                name = next(iter(ev.results))
                outcome = FoldOutcome(
                    metrics={m: e.value for m, e in ev.results[name].items()} | {"ece": ev.ece[name]},
                    task=ev.task,
                    threshold=ev.decision.threshold if ev.decision else 0.5,
                    y=ev.y,
                    p=ev.scored()[name],
                    seconds=time.perf_counter() - t0,
                )
                if kept is not None:
                    _write_outcome(kept, outcome)
            else:
                log(f"repeat {r + 1}/{repeats}, fold {f + 1}/{k}: kept outcome {kept}")
            result.folds.append(outcome.metrics)
            result.seconds += outcome.seconds
            result.task = outcome.task
            oof_y.append(outcome.y)
            oof_p.append(outcome.p)
            last = outcome
        y, p = np.concatenate(oof_y), np.concatenate(oof_p)
        if last is not None and last.task == "binary":
            result.pooled.append(binary_metrics(y, p, last.threshold))
        else:
            result.pooled.append(multiclass_metrics(y, p))
    (out / "cv.json").write_text(
        json.dumps(
            {"arch": cfg.arch, "k": k, "repeats": repeats, "folds": result.folds, "summary": result.summary()}, indent=2
        )
    )
    metrics = [m for m in result.summary() if m != "ece"] + ["ece"]
    md = [f"# {k}-fold × {repeats} cross-validation: {cfg.arch}", "",
          "Mean over folds with a 95% t-interval.", "",
          "| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|",
          result.table_row(cfg.arch, metrics), ""]  # fmt: skip
    (out / "cv.md").write_text("\n".join(md))
    return result
