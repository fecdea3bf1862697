from __future__ import annotations

import itertools

import numpy as np
import pytest

from braintumor.evaluation.metrics import binary_metrics, bootstrap, confusion, multiclass_metrics, roc_auc


def _auc_bruteforce(y: np.ndarray, s: np.ndarray) -> float:
    pos, neg = s[y == 1], s[y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def test_roc_auc_matches_pairwise_definition_with_ties() -> None:
    rng = np.random.default_rng(0)
    for _ in range(20):
        y = rng.integers(0, 2, 40)
        s = rng.integers(0, 6, 40) / 5  # many ties
        if y.min() == y.max():
            continue
        assert roc_auc(y, s) == pytest.approx(_auc_bruteforce(y, s))
    assert np.isnan(roc_auc(np.ones(5), np.linspace(0, 1, 5)))


def test_binary_metrics_by_hand() -> None:
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.7, 0.2, 0.6, 0.1, 0.1, 0.1, 0.1, 0.1])
    m = binary_metrics(y, p, threshold=0.5)  # tp 3, fn 1, fp 1, tn 5
    assert m["accuracy"] == pytest.approx(0.8)
    assert m["sensitivity"] == pytest.approx(0.75)
    assert m["specificity"] == pytest.approx(5 / 6)
    assert m["precision"] == pytest.approx(0.75)
    assert m["f1"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 5 / 6) / 2)


def test_multiclass_metrics_and_confusion() -> None:
    y = np.array([0, 1, 2, 2])
    probs = np.array([[0.8, 0.1, 0.1], [0.1, 0.8, 0.1], [0.1, 0.2, 0.7], [0.6, 0.2, 0.2]])
    m = multiclass_metrics(y, probs)
    assert m["accuracy"] == pytest.approx(0.75)
    assert m["balanced_accuracy"] == pytest.approx((1 + 1 + 0.5) / 3)
    assert confusion(y, probs.argmax(1), 3).tolist() == [[1, 0, 0], [0, 1, 0], [1, 0, 1]]


def test_bootstrap_interval_brackets_the_estimate_and_narrows_with_more_data() -> None:
    rng = np.random.default_rng(1)

    def interval(n: int) -> tuple[float, float, float]:
        y = rng.integers(0, 2, n)
        p = np.clip(y * 0.3 + rng.uniform(0, 0.7, n), 0, 1)
        est = bootstrap(binary_metrics, y, p, n=300, seed=0)["accuracy"]
        return est.low, est.value, est.high

    lo, v, hi = interval(50)
    assert lo <= v <= hi and hi - lo > 0.05
    lo2, v2, hi2 = interval(2000)
    assert lo2 <= v2 <= hi2
    assert hi2 - lo2 < (hi - lo) / 3
