"""Calibration (temperature scaling, expected calibration error) and the operating decision.

A network trained with cross-entropy on a few hundred images is over-confident; one scalar temperature
fitted on validation logits (Guo et al., 2017, "On Calibration of Modern Neural Networks") fixes most of
that without changing any ranking. The decision rule is also chosen on validation data, never on test:
the operating threshold is the best-balanced one that keeps tumor sensitivity at the target (default 0.95),
and a "refer for review" band around it marks the scans the model is unsure about — the narrowest band
outside which 98% of validation answers are right, so a "tumor" or "no tumor" answer means something.

Example:
    >>> import numpy as np
    >>> t = fit_temperature(np.array([4.0, -4.0, 3.0, -3.0]), np.array([1, 0, 0, 1]))
    >>> t > 1  # over-confident logits get softened
    True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from braintumor.models.decision import DecisionRule


def sigmoid(x: np.ndarray) -> np.ndarray:
    out: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(x, -60, 60)))
    return out


def softmax(x: np.ndarray) -> np.ndarray:
    z = x - x.max(axis=1, keepdims=True)
    e = np.exp(z)
    out: np.ndarray = e / e.sum(axis=1, keepdims=True)
    return out


def probabilities(logits: np.ndarray, temperature: float = 1.0) -> np.ndarray:
    """Binary logits (N,) or (N, 1) → p(tumor) (N,); multi-class logits (N, K) → softmax (N, K)."""
    logits = np.asarray(logits, dtype=np.float64)
    if logits.ndim == 1 or logits.shape[1] == 1:
        return sigmoid(logits.reshape(-1) / temperature)
    return softmax(logits / temperature)


def nll(logits: np.ndarray, y: np.ndarray, temperature: float = 1.0, *, negative: int | None = None) -> float:
    """Mean negative log-likelihood of labels ``y`` under tempered ``logits``.

    Multi-class labels may be ``-1`` ("a tumor of unknown type", partial label) when ``negative`` names the
    "no tumor" column: such a label's likelihood is 1 − p(no tumor).
    """
    p = probabilities(logits, temperature)
    eps = 1e-12
    if p.ndim == 1:
        return float(-np.mean(y * np.log(p + eps) + (1 - y) * np.log(1 - p + eps)))
    y = np.asarray(y, dtype=np.int64)
    untyped = y < 0
    if untyped.any() and negative is None:
        raise ValueError("partial labels (-1) need the index of the 'no tumor' class")
    liked = np.where(untyped, 1.0 - p[:, negative or 0], p[np.arange(len(y)), np.maximum(y, 0)])
    return float(-np.mean(np.log(liked + eps)))


def fit_temperature(
    logits: np.ndarray, y: np.ndarray, *, low: float = 0.05, high: float = 20.0, negative: int | None = None
) -> float:
    """Temperature minimising validation NLL (golden-section search on log T; NLL is unimodal in T)."""

    def f(log_t: float) -> float:
        return nll(logits, y, math.exp(log_t), negative=negative)

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = f(c), f(d)
    for _ in range(80):
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = f(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = f(d)
    return float(math.exp((a + b) / 2))


@dataclass(frozen=True)
class Reliability:
    """Per-bin mean confidence, accuracy and count (top-label), and the expected calibration error."""

    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray
    ece: float


def reliability(probs: np.ndarray, y: np.ndarray, *, bins: int = 10) -> Reliability:
    """Top-label reliability and ECE (weighted mean |accuracy − confidence| over equal-width bins).

    ``probs`` is p(tumor) (N,) for binary models or (N, K) for multi-class ones.
    """
    probs = np.asarray(probs, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    if probs.ndim == 1:
        pred = (probs >= 0.5).astype(np.int64)
        conf = np.where(pred == 1, probs, 1 - probs)
    else:
        pred = probs.argmax(1)
        conf = probs.max(1)
    correct = (pred == y).astype(np.float64)
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.digitize(conf, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(which, minlength=bins).astype(np.int64)
    conf_sum = np.bincount(which, weights=conf, minlength=bins)
    acc_sum = np.bincount(which, weights=correct, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        mean_acc = np.where(count > 0, acc_sum / np.maximum(count, 1), np.nan)
    ece = float(np.nansum(np.abs(mean_acc - mean_conf) * count) / max(len(y), 1))
    return Reliability(mean_conf, mean_acc, count, ece)


def choose_threshold(p_tumor: np.ndarray, y: np.ndarray, *, target_sensitivity: float = 0.95) -> float:
    """The highest threshold whose sensitivity on (validation) data is at least ``target_sensitivity``."""
    p = np.asarray(p_tumor, dtype=np.float64)
    y = np.asarray(y).astype(bool)
    positives = np.sort(p[y])
    if positives.size == 0:
        return 0.5
    # Sensitivity at threshold t is the share of positives with p >= t: the k-th smallest positive score
    # keeps (n - k) / n of them.
    k = math.floor((1 - target_sensitivity) * positives.size + 1e-9)
    return float(positives[min(k, positives.size - 1)])


def refer_band(
    p_tumor: np.ndarray, y: np.ndarray, threshold: float, *, outside_accuracy: float = 0.98
) -> tuple[float, float]:
    """The narrowest band ``[low, high)`` around ``threshold`` outside which at least ``outside_accuracy`` of
    the (validation) scans are right: p < low answered "no tumor", p ≥ high answered "tumor".

    Every pair of cut points is tried (scores on a grid of at most 1,000 quantiles), so the band is the
    smallest share of scans that must be referred for the answers given to meet the target; ties go to
    the more accurate pair. The band always contains ``threshold``.
    """
    p = np.asarray(p_tumor, dtype=np.float64)
    yb = np.asarray(y).astype(bool)
    n = p.size
    if n == 0:
        return threshold, threshold
    order = np.argsort(p, kind="stable")
    ps, ys = p[order], yb[order]
    # Cut candidates: positions 0..n in the sorted scores (a cut at i means scores ps[:i] lie below it).
    cuts = np.unique(np.concatenate([[0, n], np.searchsorted(ps, np.unique(ps), side="left")]))
    if cuts.size > 1001:
        cuts = np.unique(np.round(np.linspace(0, n, 1001)).astype(np.int64))
    t_at = int(np.searchsorted(ps, threshold, side="left"))  # scores below the threshold: ps[:t_at]
    neg_below = np.concatenate([[0], np.cumsum(~ys)])  # negatives among ps[:i]
    pos_above = np.concatenate([[0], np.cumsum(ys[::-1])])[::-1]  # positives among ps[j:] (index j)
    lows = cuts[cuts <= t_at]
    highs = cuts[cuts >= t_at]
    i, j = lows[:, None], highs[None, :]
    outside = i + (n - j)
    correct = neg_below[i] + pos_above[j]
    with np.errstate(invalid="ignore", divide="ignore"):
        acc = np.where(outside > 0, correct / np.maximum(outside, 1), 1.0)
    ok = acc >= outside_accuracy - 1e-12
    share = np.where(ok, (j - i) / n, np.inf)
    best = np.argwhere(share == share.min())
    bi, bj = max(best.tolist(), key=lambda ij: acc[ij[0], ij[1]])
    lo_i, hi_j = int(lows[bi]), int(highs[bj])

    def cut_value(k: int, fallback: float) -> float:
        if k <= 0:
            return float(min(fallback, ps[0]))
        if k >= n:
            return float(np.nextafter(max(fallback, ps[-1]), 2.0))
        return float((ps[k - 1] + ps[k]) / 2)

    low = min(cut_value(lo_i, threshold), threshold)
    high = max(cut_value(hi_j, threshold), threshold)
    return low, high


def decision_rule(
    p_tumor: np.ndarray,
    y: np.ndarray,
    *,
    target_sensitivity: float = 0.95,
    outside_accuracy: float = 0.98,
    groups: Sequence[str] | None = None,
    min_group_positives: int = 20,
) -> DecisionRule:
    """The operating point and the refer band, both from (validation) data.

    Threshold: among the thresholds keeping sensitivity ≥ ``target_sensitivity``, the one with the best
    balanced accuracy (ties: the highest). With ``groups`` (each image's dataset), the sensitivity target
    must hold in every group with at least ``min_group_positives`` tumors, and the *worst* such group's
    balanced accuracy is maximised — a pooled optimum would favour the largest dataset, and a group of a
    dozen tumors would make the choice on noise. Band: :func:`refer_band` — the
    narrowest band outside which ``outside_accuracy`` of the scans are right.
    """
    p = np.asarray(p_tumor, dtype=np.float64)
    yb = np.asarray(y).astype(bool)
    threshold = choose_threshold(p, yb, target_sensitivity=target_sensitivity)
    if yb.any() and (~yb).any():
        names = np.asarray(groups) if groups is not None else np.zeros(len(p), dtype=str)
        candidates = np.unique(p[yb])
        sens_ok = np.ones(len(candidates), bool)
        worst = np.full(len(candidates), np.inf)
        for g in np.unique(names):
            pos, neg = p[yb & (names == g)], p[~yb & (names == g)]
            sens = (pos[None, :] >= candidates[:, None]).mean(1) if pos.size else np.ones(len(candidates))
            spec = (neg[None, :] < candidates[:, None]).mean(1) if neg.size else np.ones(len(candidates))
            if pos.size < min(min_group_positives, int(yb.sum())):
                continue  # too few tumors to say anything about this group
            sens_ok &= sens >= target_sensitivity - 1e-12
            if neg.size:
                worst = np.minimum(worst, (sens + spec) / 2)
        worst[~np.isfinite(worst)] = 0.0
        if sens_ok.any():
            score = np.where(sens_ok, worst, -np.inf)
            threshold = float(candidates[np.flatnonzero(score == score.max())[-1]])
    low, high = refer_band(p, yb, threshold, outside_accuracy=outside_accuracy)
    return DecisionRule(threshold, low, high, target_sensitivity, outside_accuracy)
