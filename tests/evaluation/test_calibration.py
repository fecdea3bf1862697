from __future__ import annotations

import numpy as np
import pytest

from braintumor.evaluation.calibration import (
    choose_threshold,
    decision_rule,
    fit_temperature,
    nll,
    probabilities,
    reliability,
)


def test_temperature_recovers_known_overconfidence() -> None:
    rng = np.random.default_rng(0)
    z = rng.normal(0, 2, 20000)
    y = (rng.uniform(size=z.size) < 1 / (1 + np.exp(-z))).astype(int)
    logits = 3.0 * z  # a model three times too confident
    t = fit_temperature(logits, y)
    assert t == pytest.approx(3.0, rel=0.08)
    assert nll(logits, y, t) < nll(logits, y, 1.0)
    before = reliability(probabilities(logits), y).ece
    after = reliability(probabilities(logits, t), y).ece
    assert after < 0.02 < before


def test_temperature_multiclass() -> None:
    rng = np.random.default_rng(1)
    true = rng.normal(0, 1.5, (5000, 4))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    y = np.array([rng.choice(4, p=row) for row in p])
    t = fit_temperature(true * 0.5, y)  # under-confident by 2×
    assert t == pytest.approx(0.5, rel=0.1)


def test_ece_of_calibrated_probabilities_is_small() -> None:
    rng = np.random.default_rng(2)
    p = rng.uniform(size=50000)
    y = (rng.uniform(size=p.size) < p).astype(int)
    rel = reliability(p, y, bins=10)
    assert rel.ece < 0.01
    assert rel.count.sum() == p.size


def test_threshold_keeps_target_sensitivity_and_is_the_highest_such() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, 400), 0, 1)
    t = choose_threshold(p, y, target_sensitivity=0.95)
    assert (p[y == 1] >= t).mean() >= 0.95
    higher = np.nextafter(t, 1.0)
    assert (p[y == 1] >= higher).mean() < 0.95


def test_decision_rule_band_surrounds_threshold() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, 300), 0, 1)
    rule = decision_rule(p, y)
    assert rule.refer_low <= rule.threshold <= rule.refer_high
    assert rule.outcome(0.0) == "no_tumor" and rule.outcome(1.0) == "tumor"
    if rule.refer_high > rule.refer_low:
        assert rule.outcome((rule.refer_low + rule.refer_high) / 2) == "refer"


def test_partial_label_nll_uses_one_minus_p_no_tumor() -> None:
    logits = np.array([[2.0, 0.0, 1.0], [0.0, 3.0, 0.0]])
    p = probabilities(logits)
    # row 0: typed class 0; row 1: untyped tumor (-1) with "no tumor" at index 1
    expected = -(np.log(p[0, 0]) + np.log(1 - p[1, 1])) / 2
    assert nll(logits, np.array([0, -1]), negative=1) == pytest.approx(expected)
    with pytest.raises(ValueError, match="no tumor"):
        nll(logits, np.array([0, -1]))


def test_temperature_with_untyped_labels_recovers_overconfidence() -> None:
    rng = np.random.default_rng(5)
    true = rng.normal(0, 1.5, (6000, 3))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    y[(y != 1) & (rng.uniform(size=y.size) < 0.5)] = -1  # half the tumors lose their type
    assert fit_temperature(true * 2.0, y, negative=1) == pytest.approx(2.0, rel=0.1)


def _outside(p: np.ndarray, y: np.ndarray, low: float, high: float) -> tuple[float, float]:
    answered = (p < low) | (p >= high)
    acc = float(((p >= high)[answered] == y[answered].astype(bool)).mean()) if answered.any() else 1.0
    return acc, 1 - float(answered.mean())


def test_refer_band_is_the_narrowest_meeting_the_accuracy_target() -> None:
    rng = np.random.default_rng(6)
    y = rng.integers(0, 2, 600)
    p = np.clip(0.4 * y + rng.uniform(0, 0.6, 600), 0, 1)
    rule = decision_rule(p, y, outside_accuracy=0.98)
    acc, share = _outside(p, y, rule.refer_low, rule.refer_high)
    assert acc >= 0.98 and rule.refer_low <= rule.threshold <= rule.refer_high
    # no narrower band around the threshold meets the target (checked on a grid of cut pairs)
    cuts = np.quantile(p, np.linspace(0, 1, 121))
    for lo in cuts[cuts <= rule.threshold]:
        for hi in cuts[cuts > rule.threshold]:
            a, s = _outside(p, y, lo, hi)
            assert not (a >= 0.98 and s < share - 1e-9)
    # a perfectly separated set needs no band at all
    sep = np.where(y == 1, 0.9, 0.1)
    rule = decision_rule(sep, y)
    assert _outside(sep, y, rule.refer_low, rule.refer_high) == (1.0, 0.0)


def test_threshold_keeps_sensitivity_and_balances_errors() -> None:
    rng = np.random.default_rng(7)
    y = rng.integers(0, 2, 500)
    p = np.clip(0.5 * y + rng.uniform(0, 0.5, 500) + rng.normal(0, 0.1, 500), 0, 1)
    rule = decision_rule(p, y, target_sensitivity=0.95)
    assert (p[y == 1] >= rule.threshold).mean() >= 0.95
    assert rule.threshold <= choose_threshold(p, y, target_sensitivity=0.95)
