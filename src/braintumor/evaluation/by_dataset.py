"""Figures per dataset beside the pooled ones: the check that a pooled number does not hide a failure.

The public MRI collections differ in scanner, sequence, framing and class mix, and a network can score well
on the pooled test set by recognising the *source* (whose class mix it learnt) instead of the disease. So
every evaluation reports, for each dataset and pooled, the operating figures a user meets: sensitivity and
specificity at the validation-chosen threshold, ROC AUC, the share of scans referred for review, the
accuracy of the answers given outside that band, and the calibration error of p(tumor) — each with a 95%
stratified bootstrap interval.

Example:
    >>> import numpy as np
    >>> from braintumor.models.decision import DecisionRule
    >>> y, p = np.array([0, 0, 1, 1, 0, 1]), np.array([0.1, 0.2, 0.9, 0.8, 0.6, 0.4])
    >>> figs = figures_by_dataset(["a", "a", "a", "a", "b", "b"], y, p, DecisionRule(), n_boot=50)
    >>> [(f.dataset, f.n, round(f.metrics["sensitivity"].value, 2)) for f in figs]
    [('a', 4, 1.0), ('b', 2, 0.0), ('pooled', 6, 0.67)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from braintumor.evaluation.calibration import reliability
from braintumor.evaluation.metrics import Estimate, binary_metrics, bootstrap
from braintumor.models.decision import DecisionRule

POOLED = "pooled"
COLUMNS = ("sensitivity", "specificity", "roc_auc", "refer_share", "outside_accuracy", "ece")


def operating_metrics(y: np.ndarray, p_tumor: np.ndarray, rule: DecisionRule) -> dict[str, float]:
    """Binary metrics at ``rule.threshold``, the refer share, the accuracy outside the band and the ECE."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p_tumor, dtype=np.float64)
    out = binary_metrics(y, p, rule.threshold)
    refer = (p >= rule.refer_low) & (p < rule.refer_high)
    answered = ~refer
    said_tumor = p >= rule.refer_high
    out["refer_share"] = float(refer.mean()) if len(p) else float("nan")
    out["outside_accuracy"] = float((said_tumor[answered] == (y[answered] == 1)).mean()) if answered.any() else 1.0
    out["ece"] = reliability(p, y).ece if len(p) else float("nan")
    return out


@dataclass(frozen=True)
class DatasetFigures:
    """One row: a dataset (or ``pooled``), its counts and its figures with intervals."""

    dataset: str
    n: int
    n_tumor: int
    metrics: dict[str, Estimate]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "n": self.n,
            "n_tumor": self.n_tumor,
            "metrics": {k: v.as_dict() for k, v in self.metrics.items()},
        }


def figures_by_dataset(
    datasets: Sequence[str],
    y: np.ndarray,
    p_tumor: np.ndarray,
    rule: DecisionRule,
    *,
    n_boot: int = 2000,
    seed: int = 0,
) -> list[DatasetFigures]:
    """:func:`operating_metrics` with intervals for each dataset (sorted by name), then pooled."""
    names = np.asarray(datasets)
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p_tumor, dtype=np.float64)
    rows = []
    for name in [*sorted(set(names.tolist())), POOLED]:
        keep = np.ones(len(y), bool) if name == POOLED else names == name
        est = bootstrap(lambda yy, pp: operating_metrics(yy, pp, rule), y[keep], p[keep], n=n_boot, seed=seed)
        rows.append(DatasetFigures(name, int(keep.sum()), int(y[keep].sum()), est))
    return rows


def _cell(e: Estimate) -> str:
    if not np.isfinite(e.value):
        return "–"
    return f"{e.value:.3f} [{e.low:.3f}–{e.high:.3f}]"


def markdown_table(rows: Sequence[DatasetFigures]) -> str:
    """The rows as a markdown table (one line per dataset, pooled last)."""
    head = (
        "| dataset | n (tumor / no tumor) | sensitivity | specificity | ROC AUC | refer share "
        "| accuracy outside band | ECE |"
    )
    lines = [head, "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        cells = " | ".join(_cell(r.metrics[c]) for c in COLUMNS)
        name = f"**{r.dataset}**" if r.dataset == POOLED else r.dataset
        lines.append(f"| {name} | {r.n} ({r.n_tumor} / {r.n - r.n_tumor}) | {cells} |")
    return "\n".join(lines)
