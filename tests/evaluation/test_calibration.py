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
    assert rule.band(0.0) == "no_tumor" and rule.band(1.0) == "tumor"
    if rule.refer_high > rule.refer_low:
        assert rule.band((rule.refer_low + rule.refer_high) / 2) == "refer"
