"""The decision rule and the one ensemble rule that evaluation and serving share."""

from __future__ import annotations

import pytest

from braintumor.models.decision import DecisionRule, ensemble_decision, ensemble_weights


def test_ensemble_rule_is_shared_and_refuses_bad_weights() -> None:
    w = ensemble_weights([1, 3], 2)
    assert w.tolist() == [0.25, 0.75]
    a, b = DecisionRule(0.2, 0.1, 0.4, 0.95, 0.98), DecisionRule(0.6, 0.5, 0.8, 0.95, 0.98)
    rule = ensemble_decision([a, b], w)
    assert rule is not None and rule.threshold == pytest.approx(0.5) and rule.refer_high == pytest.approx(0.7)
    assert ensemble_decision([a, None], w) is None  # a member without a rule: no averaged rule
    for bad in ([0, 0], [1, -1], [1], [float("nan"), 1]):
        with pytest.raises(ValueError, match="weights"):
            ensemble_weights(bad, 2)
