from __future__ import annotations

import numpy as np

from braintumor.evaluation.shortcut import markdown_table, source_probe


def test_probe_finds_a_source_cue_and_not_a_missing_one() -> None:
    rng = np.random.default_rng(1)
    n = 400
    src = np.where(np.arange(n) % 2 == 0, "a", "b")
    y = (np.arange(n) // 2) % 2
    x = rng.normal(size=(n, 16))
    x[:, 1] += 2.0 * y  # the class is visible
    groups = np.arange(n)
    clean = source_probe(x, src, y, groups, sources=["a", "b"])
    assert {r["class"] for r in clean} == {"no_tumor", "tumor"}
    assert all(0.35 < r["balanced_accuracy"] < 0.65 for r in clean)  # chance: no source cue
    x[src == "b", 0] += 2.5  # now the source is visible too
    cued = source_probe(x, src, y, groups, sources=["a", "b"])
    assert all(r["balanced_accuracy"] > 0.85 and r["roc_auc"] > 0.9 for r in cued)
    assert "| cued | tumor |" in markdown_table({"cued": cued})


def test_probe_leaves_out_groups_shared_by_two_sources() -> None:
    rng = np.random.default_rng(2)
    src = np.array(["a"] * 60 + ["b"] * 60)
    groups = np.arange(120)
    groups[60:90] = np.arange(30)  # 30 images of b are copies of images of a
    rows = source_probe(rng.normal(size=(120, 4)), src, np.zeros(120, int), groups, sources=["a", "b"])
    assert rows[0]["n"] == {"a": 30, "b": 30}
