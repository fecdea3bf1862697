from __future__ import annotations

import numpy as np

from braintumor.evaluation.by_dataset import POOLED, figures_by_dataset, markdown_table, operating_metrics
from braintumor.models.decision import DecisionRule


def test_a_pooled_figure_cannot_hide_a_failing_dataset() -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    ds = np.where(np.arange(400) < 300, "big", "small")
    p = np.where(y == 1, 0.9, 0.1).astype(float)
    p[(ds == "small") & (y == 1)] = 0.2  # every tumor of the small dataset missed
    rows = {r.dataset: r for r in figures_by_dataset(ds.tolist(), y, p, DecisionRule(), n_boot=100)}
    assert list(rows) == ["big", "small", POOLED]
    assert rows["big"].metrics["sensitivity"].value == 1.0
    assert rows["small"].metrics["sensitivity"].value == 0.0
    assert 0.6 < rows[POOLED].metrics["sensitivity"].value < 0.9
    assert rows["small"].n == 100 and rows["small"].n_tumor == int(y[300:].sum())
    table = markdown_table(list(rows.values()))
    assert table.count("\n") == 4 and "**pooled**" in table


def test_operating_metrics_refer_share_and_outside_accuracy() -> None:
    y = np.array([0, 0, 1, 1, 1])
    p = np.array([0.05, 0.5, 0.55, 0.95, 0.02])
    m = operating_metrics(y, p, DecisionRule(0.5, 0.1, 0.9))
    assert m["refer_share"] == 0.4  # 0.5 and 0.55 are referred
    assert m["outside_accuracy"] == 2 / 3  # 0.05 right, 0.95 right, 0.02 a missed tumor
