"""Evaluate trained runs (or an averaging ensemble of them) on labelled images.

The evaluation set is either the ``test`` part of a split file, or every image under some folders
(external validation). In the external case the images the model saw in training — and their exact and
near copies, found with the audit's rule — are dropped first, because the public datasets share slices.

Label sets may differ from the model's: a binary model on 4-class data scores tumor = any tumor class;
a multi-class model on yes/no data scores p(tumor) = 1 − p(no tumor). The result says so.

Example:
    >>> result = evaluate_runs(["runs/mnv2"], ["../shared/data/br35h"])  # doctest: +SKIP
    >>> result.table()  # doctest: +SKIP
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.datasets import BINARY_CLASSES, ImageRecord, discover_many, is_tumor_label, negative_index
from braintumor.errors import DatasetError
from braintumor.evaluation.by_dataset import DatasetFigures, figures_by_dataset, markdown_table
from braintumor.evaluation.calibration import probabilities, reliability
from braintumor.evaluation.metrics import Estimate, binary_metrics, bootstrap, confusion, multiclass_metrics
from braintumor.models.card import ModelCard, Task
from braintumor.models.decision import DecisionRule, ensemble_decision, ensemble_weights


@dataclass
class MemberPrediction:
    """One model's calibrated output on the evaluation images."""

    name: str
    card: ModelCard
    probs: np.ndarray  # (N,) p(tumor) for binary cards, (N, K) for multi-class cards


@dataclass
class Evaluation:
    """Metrics (with 95% bootstrap intervals) of each member and of the ensemble, on one image set."""

    task: Task
    class_names: tuple[str, ...]
    y: np.ndarray
    keys: list[str]
    members: list[MemberPrediction]
    ensemble_probs: np.ndarray
    decision: DecisionRule | None
    notes: list[str] = field(default_factory=list)
    excluded: int = 0
    results: dict[str, dict[str, Estimate]] = field(default_factory=dict)
    ece: dict[str, float] = field(default_factory=dict)
    datasets: list[str] = field(default_factory=list)
    by_dataset: list[DatasetFigures] = field(default_factory=list)  # the main model, tumor vs no tumor

    @property
    def main(self) -> str:
        """The model the report is about: the ensemble, or the only member."""
        return "ensemble" if len(self.members) > 1 else self.members[0].name

    def binary_view(self) -> tuple[np.ndarray, np.ndarray] | None:
        """(y, p(tumor)) of the main model, whatever the task; None without a "no tumor" class."""
        probs = self.scored()[self.main]
        if self.task == "binary":
            return self.y, probs
        neg = negative_index(self.class_names)
        if neg is None:
            return None
        return (self.y != neg).astype(np.int64), 1.0 - probs[:, neg]

    def scored(self) -> dict[str, np.ndarray]:
        """Probabilities in the evaluation's label space, per member and for the ensemble."""
        out = {m.name: self._view(m) for m in self.members}
        if len(self.members) > 1:
            out["ensemble"] = self.ensemble_probs
        return out

    def _view(self, member: MemberPrediction) -> np.ndarray:
        return _to_task(member.probs, member.card.class_names, self.task)

    def confusion(self, name: str = "ensemble") -> np.ndarray:
        probs = self.scored().get(name, self.ensemble_probs)
        if self.task == "binary":
            threshold = self.decision.threshold if self.decision else 0.5
            return confusion(self.y, (probs >= threshold).astype(int), 2)
        return confusion(self.y, probs.argmax(1), len(self.class_names))

    def table(self) -> str:
        """Markdown table: one row per member and the ensemble, each metric with its interval."""
        if not self.results:
            return ""
        names = list(self.results)
        metrics = list(next(iter(self.results.values())))
        lines = ["| model | " + " | ".join(metrics) + " | ECE |", "|---" * (len(metrics) + 2) + "|"]
        for name in names:
            cells = [_fmt(self.results[name][m]) for m in metrics]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {self.ece.get(name, float('nan')):.3f} |")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "task": self.task,
            "class_names": list(self.class_names),
            "n": len(self.y),
            "class_counts": {c: int((self.y == i).sum()) for i, c in enumerate(self.class_names)},
            "excluded_as_training_duplicates": self.excluded,
            "decision": self.decision.as_dict() if self.decision else None,
            "notes": self.notes,
            "metrics": {n: {k: v.as_dict() for k, v in r.items()} for n, r in self.results.items()},
            "ece": self.ece,
            "confusion": self.confusion().tolist(),
            "by_dataset": {"model": self.main, "rows": [r.as_dict() for r in self.by_dataset]},
        }


def _fmt(e: Estimate) -> str:
    return f"{e.value:.3f} [{e.low:.3f}–{e.high:.3f}]"


def _to_task(probs: np.ndarray, class_names: Sequence[str], task: Task) -> np.ndarray:
    if task == "binary":
        if probs.ndim == 1:
            return probs
        neg = negative_index(class_names)
        if neg is None:
            raise DatasetError("a multi-class model without a 'no tumor' class cannot be scored as binary")
        return 1.0 - probs[:, neg]
    return probs


def resolve_labels(
    records: Sequence[ImageRecord], class_names: Sequence[str], num_outputs: int
) -> tuple[Task, tuple[str, ...], np.ndarray, list[str]]:
    """Choose the evaluation task and integer labels for ``records`` given a model's classes and outputs."""
    labels = [r.label for r in records]
    model_classes = list(class_names)
    binary_model = num_outputs == 1
    notes: list[str] = []
    if not binary_model and set(labels) <= set(model_classes):
        return "multiclass", tuple(model_classes), np.array([model_classes.index(x) for x in labels]), notes
    if binary_model and not {x.lower() for x in labels} <= {"yes", "no"}:
        notes.append(f"binary model on labels {sorted(set(labels))}: tumor = any tumor class")
    if not binary_model:
        notes.append(f"{len(model_classes)}-class model on labels {sorted(set(labels))}: p(tumor) = 1 − p(no tumor)")
    return "binary", BINARY_CLASSES, np.array([int(is_tumor_label(x)) for x in labels]), notes


def drop_training_duplicates(records: Sequence[ImageRecord], run_dirs: Sequence[Path]) -> tuple[list[ImageRecord], int]:
    """Remove records that are exact or near copies of any image the runs were trained or validated on."""
    from braintumor.data.audit import fingerprint_all, load_fingerprints
    from braintumor.training.checkpoint import FINGERPRINTS

    files = [d / FINGERPRINTS for d in run_dirs if (d / FINGERPRINTS).is_file()]
    if not files:
        return list(records), 0
    seen = load_fingerprints(files)
    fps = fingerprint_all([r.path for r in records])
    keep = [record for record, fp in zip(records, fps, strict=True) if not seen.holds_copy_of(fp)]
    return keep, len(records) - len(keep)


def predict_run(run_dir: Path, records: Sequence[ImageRecord]) -> MemberPrediction:
    """Calibrated probabilities of one training run on ``records`` (PyTorch path)."""
    from braintumor.training.calibrate import predict_logits
    from braintumor.training.checkpoint import load_checkpoint
    from braintumor.training.data import load_set

    model, _ = load_checkpoint(run_dir / "checkpoint.pt")
    card = model.card
    data = load_set(records, card.input_size, "binary", BINARY_CLASSES)
    logits = predict_logits(model, data.images, card)
    logits = logits[:, 0] if card.num_outputs == 1 else logits
    return MemberPrediction(run_dir.name, card, probabilities(logits, card.temperature))


def evaluate_runs(
    run_dirs: Sequence[str | Path],
    data_dirs: Sequence[str | Path],
    *,
    split: str | Path | None = None,
    part: str = "test",
    weights: Sequence[float] | None = None,
    exclude_training_duplicates: bool = True,
    n_boot: int = 2000,
    seed: int = 0,
) -> Evaluation:
    """Evaluate each run and their (weighted) average on the chosen images."""
    runs = [Path(r) for r in run_dirs]
    if not runs:
        raise DatasetError("give at least one run")
    records = discover_many(data_dirs)
    notes: list[str] = []
    excluded = 0
    if split is not None:
        from braintumor.data.splits import read_split

        rows, _ = read_split(split)
        wanted = {r.key for r in rows if r.split == part}
        records = [r for r in records if r.key in wanted]
        notes.append(f"images: the '{part}' part of {Path(split).name}")
    elif exclude_training_duplicates:
        records, excluded = drop_training_duplicates(records, runs)
        if excluded:
            notes.append(f"{excluded} image(s) dropped as exact/near copies of training or validation images")
    if not records:
        raise DatasetError("no images to evaluate")
    members = [predict_run(r, records) for r in runs]
    task, class_names, y, label_notes = resolve_labels(records, members[0].card.class_names,
                                                       members[0].card.num_outputs)  # fmt: skip
    notes += label_notes
    for m in members[1:]:
        t, names, _, _ = resolve_labels(records, m.card.class_names, m.card.num_outputs)
        if (t, names) != (task, class_names):
            task, class_names, y, _ = resolve_labels(records, BINARY_CLASSES, 1)
            notes.append("ensemble members disagree on classes: evaluated as tumor / no tumor")
            break
    try:
        w = ensemble_weights(weights, len(members))
    except ValueError as exc:
        raise DatasetError(str(exc)) from exc
    views = [_to_task(m.probs, m.card.class_names, task) for m in members]
    ensemble = np.tensordot(w, np.stack(views), axes=1)
    # The ensemble averages calibrated probabilities; its operating point averages the members' rules.
    decision = ensemble_decision([m.card.fitted_decision for m in members], w)
    ev = Evaluation(task, class_names, y, [r.key for r in records], members, ensemble, decision, notes, excluded,
                    datasets=[r.dataset for r in records])  # fmt: skip
    score(ev, n_boot=n_boot, seed=seed)
    return ev


def score(ev: Evaluation, *, n_boot: int = 2000, seed: int = 0) -> None:
    """Fill ``ev.results`` and ``ev.ece`` for every member and the ensemble."""
    threshold = ev.decision.threshold if ev.decision else 0.5
    for name, probs in ev.scored().items():
        if ev.task == "binary":
            ev.results[name] = bootstrap(lambda y, p: binary_metrics(y, p, threshold), ev.y, probs, n=n_boot, seed=seed)
        else:
            ev.results[name] = bootstrap(multiclass_metrics, ev.y, probs, n=n_boot, seed=seed)
        ev.ece[name] = reliability(probs, ev.y).ece
    view = ev.binary_view()
    if view is not None and ev.datasets:
        ev.by_dataset = figures_by_dataset(ev.datasets, *view, ev.decision or DecisionRule(), n_boot=n_boot, seed=seed)


def write_evaluation(ev: Evaluation, out_dir: str | Path, *, title: str = "Evaluation") -> Path:
    """Write ``results.json``, the plots and ``report.md`` (which embeds them) into ``out_dir``."""
    from braintumor.evaluation.plots import plot_confusion, plot_pr, plot_reliability, plot_roc

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(ev.to_json(), indent=2))
    scored = ev.scored()
    plot_roc(ev.y, scored, ev.task, ev.class_names, out / "roc.png")
    plot_pr(ev.y, scored, ev.task, ev.class_names, out / "pr.png")
    plot_confusion(ev.confusion(), ev.class_names, out / "confusion.png")
    main = "ensemble" if "ensemble" in scored else next(iter(scored))
    plot_reliability(scored[main], ev.y, out / "calibration.png")
    counts = ", ".join(f"{c} {int((ev.y == i).sum())}" for i, c in enumerate(ev.class_names))
    lines = [
        f"# {title}",
        "",
        f"{len(ev.y)} images ({counts}); task: {ev.task}. Intervals: 95% stratified bootstrap.",
    ]
    if ev.decision:
        d = ev.decision
        lines.append(
            f"Operating threshold {d.threshold:.3f} (chosen on validation for sensitivity ≥ "
            f"{d.target_sensitivity:.2f}); refer-for-review band [{d.refer_low:.3f}, {d.refer_high:.3f})."
        )
    lines += [f"- {n}" for n in ev.notes]
    lines += ["", ev.table(), ""]
    if ev.by_dataset:
        lines += [
            f"Per dataset ({ev.main}, tumor vs no tumor; refer share and the accuracy of the answers outside the "
            "band use the refer band; ECE of p(tumor)):",
            "",
            markdown_table(ev.by_dataset),
            "",
        ]
    lines += ["![ROC](roc.png) ![PR](pr.png)", "", "![confusion](confusion.png) ![calibration](calibration.png)", ""]
    report = out / "report.md"
    report.write_text("\n".join(lines))
    return report
