"""Shortcut probe: how well the model's own features tell which *dataset* an image came from, within a class.

If a linear probe on the pooled features separates the sources among images of the same class (no-tumor
slices from Br35H vs the 4-class set, say), the features carry the source, and a head can use it as a proxy
for the class wherever the sources' class mixes differ — the failure the per-dataset figures exposed. The
probe is scored out of fold (grouped k-fold, so copies of one slice never sit on both sides) as balanced
accuracy and ROC AUC of the source; 0.5 is chance for two sources. Images whose duplicate group spans
several sources (the same slice published twice) are left out: their source is not a property of the image.

Lower after a change means less source information in the features; it will rarely reach chance, since
sequences and scanners really differ between collections (a good tumor detector may still see them).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> x = rng.normal(size=(200, 8)); src = np.repeat(["a", "b"], 100); x[src == "b", 0] += 3
    >>> r = source_probe(x, src, np.zeros(200, int), np.arange(200))
    >>> r[0]["class"], r[0]["balanced_accuracy"] > 0.9
    ('no_tumor', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from braintumor.evaluation.metrics import roc_auc


def _fit_logistic(x: np.ndarray, y: np.ndarray, *, l2: float = 1e-2, steps: int = 300, lr: float = 0.5) -> np.ndarray:
    """L2-regularised logistic regression by full-batch gradient descent on standardised features."""
    w = np.zeros(x.shape[1] + 1)
    xb = np.hstack([x, np.ones((len(x), 1))])
    pos = max(float(y.mean()), 1e-6)
    sw = np.where(y == 1, 0.5 / pos, 0.5 / max(1 - pos, 1e-6))  # balanced classes
    for _ in range(steps):
        z = np.clip(xb @ w, -30, 30)
        p = 1 / (1 + np.exp(-z))
        grad = xb.T @ ((p - y) * sw) / len(y) + l2 * np.r_[w[:-1], 0.0]
        w -= lr * grad
    return w


def _grouped_folds(groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    unique = np.unique(groups)
    order = np.random.default_rng(seed).permutation(len(unique))
    fold_of_group = dict(zip(unique[order].tolist(), (np.arange(len(unique)) % k).tolist(), strict=True))
    return np.array([fold_of_group[g] for g in groups.tolist()])


def source_probe(
    features: np.ndarray,
    datasets: Sequence[str],
    y_tumor: np.ndarray,
    groups: np.ndarray,
    *,
    sources: Sequence[str] | None = None,
    folds: int = 5,
    seed: int = 0,
    min_per_source: int = 20,
) -> list[dict[str, Any]]:
    """Out-of-fold source prediction within each class; one dict per class with enough images per source.

    ``sources``: the two datasets to tell apart (default: the two largest); ``groups``: duplicate groups.
    """
    feats = np.asarray(features, dtype=np.float64)
    names = np.asarray(datasets)
    y_tumor = np.asarray(y_tumor).astype(np.int64)
    groups = np.asarray(groups)
    if sources is None:
        values, counts = np.unique(names, return_counts=True)
        sources = [str(v) for v in values[np.argsort(-counts)][:2]]
    a, b = sources
    mixed = {g for g in np.unique(groups).tolist() if len(set(names[groups == g].tolist())) > 1}
    clean = np.array([g not in mixed for g in groups.tolist()])
    out = []
    for cls, label in ((0, "no_tumor"), (1, "tumor")):
        keep = clean & (y_tumor == cls) & np.isin(names, [a, b])
        src = (names[keep] == b).astype(np.int64)
        if min(int(src.sum()), int((1 - src).sum())) < min_per_source:
            continue
        x = feats[keep]
        fold = _grouped_folds(groups[keep], folds, seed)
        score = np.zeros(len(src))
        for f in range(folds):
            tr, te = fold != f, fold == f
            if not te.any() or len(np.unique(src[tr])) < 2:
                continue
            mu, sd = x[tr].mean(0), x[tr].std(0) + 1e-6
            w = _fit_logistic((x[tr] - mu) / sd, src[tr])
            score[te] = np.hstack([(x[te] - mu) / sd, np.ones((int(te.sum()), 1))]) @ w
        pred = score > 0
        recall_b = float(pred[src == 1].mean())
        recall_a = float((~pred[src == 0]).mean())
        out.append(
            {
                "class": label,
                "sources": [a, b],
                "n": {a: int((src == 0).sum()), b: int((src == 1).sum())},
                "balanced_accuracy": (recall_a + recall_b) / 2,
                "roc_auc": roc_auc(src, score),
            }
        )
    return out


def markdown_table(rows_by_model: dict[str, list[dict[str, Any]]]) -> str:
    """One line per (model, class): the probe's balanced accuracy and AUC of the source."""
    lines = [
        "| model | class | images (per source) | source balanced accuracy | source ROC AUC |",
        "|---|---|---|---|---|",
    ]
    for model, rows in rows_by_model.items():
        for r in rows:
            n = ", ".join(f"{k} {v}" for k, v in r["n"].items())
            lines.append(f"| {model} | {r['class']} | {n} | {r['balanced_accuracy']:.3f} | {r['roc_auc']:.3f} |")
    return "\n".join(lines)
