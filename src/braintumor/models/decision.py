"""How a calibrated p(tumor) becomes an answer: the decision rule, and how an averaging ensemble combines rules.

Why torch-free and here: the rule is part of the model card (fitted on validation data by
:func:`braintumor.evaluation.calibration.decision_rule`, stored with the weights) and serving, evaluation and
reports all apply it. One ensemble rule serves evaluation and serving alike: members are averaged with
:func:`ensemble_weights` (one non-negative weight per member, not all zero, else an error), and an ensemble whose
own rule was not fitted takes :func:`ensemble_decision` — the weighted mean of its members' rules, or none (the
default rule, 0.5 and no band) when a member has no rule.

Example:
    >>> rule = DecisionRule(threshold=0.3, refer_low=0.1, refer_high=0.6)
    >>> rule.outcome(0.05), rule.outcome(0.4), rule.outcome(0.9)
    ('no_tumor', 'refer', 'tumor')
    >>> ensemble_weights([1, 3], 2).tolist()
    [0.25, 0.75]
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

#: The one answer a scan gets: tumor, refer for review, or no tumor.
Outcome = Literal["tumor", "refer", "no_tumor"]
OUTCOMES: tuple[Outcome, ...] = ("tumor", "refer", "no_tumor")


@dataclass(frozen=True)
class DecisionRule:
    """How a calibrated p(tumor) becomes the answer: a "refer for review" band around the operating threshold.

    p < ``refer_low`` → no tumor; p ≥ ``refer_high`` → tumor; in between → refer for review: that three-way
    :meth:`outcome` is the one answer users see. ``threshold`` (validation sensitivity target) is what evaluation
    measures sensitivity and specificity at (:meth:`above_threshold`), never shown as a second answer. Stored in
    the model card; every prediction reports it. The default (0.5, no band) is what an uncalibrated model gets.
    """

    threshold: float = 0.5
    refer_low: float = 0.5
    refer_high: float = 0.5
    target_sensitivity: float | None = None
    outside_accuracy: float | None = None  # the band's target: share of right answers outside it (validation)

    def outcome(self, p_tumor: float) -> Outcome:
        """The answer for a calibrated p(tumor)."""
        if p_tumor >= self.refer_high:
            return "tumor"
        if p_tumor < self.refer_low:
            return "no_tumor"
        return "refer"

    def above_threshold(self, p_tumor: float) -> bool:
        """The binary decision at the operating threshold: what evaluation scores, not an answer for users."""
        return p_tumor >= self.threshold

    def as_dict(self) -> dict[str, Any]:
        """The rule as stored in the card (``calibration.decision``)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> DecisionRule:
        """Read :meth:`as_dict`'s output (as stored in cards); ``None`` or ``{}`` gives the default rule."""
        if not d:
            return cls()
        return cls(
            float(d["threshold"]),
            float(d["refer_low"]),
            float(d["refer_high"]),
            d.get("target_sensitivity"),
            d.get("outside_accuracy"),
        )


def ensemble_weights(weights: Sequence[float] | None, n: int) -> np.ndarray:
    """Normalised member weights (default equal); one non-negative weight per member, not all zero."""
    w = np.asarray(weights if weights is not None else [1.0] * n, dtype=np.float64)
    if len(w) != n or (w < 0).any() or not np.isfinite(w).all() or w.sum() <= 0:
        raise ValueError("ensemble weights: one non-negative weight per member, not all zero")
    out: np.ndarray = w / w.sum()
    return out


def ensemble_decision(rules: Sequence[DecisionRule | None], weights: np.ndarray) -> DecisionRule | None:
    """The operating point of an averaging ensemble whose own rule was not fitted: the weighted mean of the
    members' rules. None when a member has no rule (the caller then uses the default rule, 0.5 and no band),
    the same for evaluation and serving."""
    if not rules or any(r is None for r in rules):
        return None
    rs = [r for r in rules if r is not None]
    return DecisionRule(
        threshold=float(np.dot(weights, [r.threshold for r in rs])),
        refer_low=float(np.dot(weights, [r.refer_low for r in rs])),
        refer_high=float(np.dot(weights, [r.refer_high for r in rs])),
        target_sensitivity=rs[0].target_sensitivity,
        outside_accuracy=rs[0].outside_accuracy,
    )
