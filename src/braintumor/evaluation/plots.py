"""PNG plots for reports: ROC, precision–recall, confusion matrix, reliability diagram."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.evaluation.calibration import reliability
from braintumor.evaluation.metrics import roc_auc


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ranked(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """True positives and ranks at every distinct threshold, highest score first (the steps of both curves), and
    the labels in that order."""
    order = np.argsort(-np.asarray(score), kind="mergesort")
    s, t = np.asarray(score)[order], np.asarray(y).astype(bool)[order]
    distinct = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]
    return np.cumsum(t)[distinct], distinct + 1, t


def roc_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """False- and true-positive rates at every distinct threshold (from (0, 0) to (1, 1))."""
    tps, ranked, t = _ranked(y, score)
    fps = ranked - tps
    tpr = np.r_[0, tps / max(t.sum(), 1)]
    fpr = np.r_[0, fps / max((~t).sum(), 1)]
    return fpr, tpr


def pr_curve(y: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Recall and precision at every distinct threshold."""
    tps, ranked, t = _ranked(y, score)
    precision = tps / ranked
    recall = tps / max(t.sum(), 1)
    return np.r_[0, recall], np.r_[1, precision]


def _curves(
    y: np.ndarray, scored: Mapping[str, np.ndarray], task: str, class_names: Sequence[str]
) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, y_binary, score) per curve: every model for binary tasks, every class of the main model
    (ensemble if present) one-vs-rest for multi-class tasks."""
    if task == "binary":
        return [(name, y, p) for name, p in scored.items()]
    main = "ensemble" if "ensemble" in scored else next(iter(scored))
    probs = scored[main]
    return [(f"{main}: {c}", (y == i).astype(int), probs[:, i]) for i, c in enumerate(class_names)]


def plot_roc(y: np.ndarray, scored: Mapping[str, np.ndarray], task: str, classes: Sequence[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for label, yb, s in _curves(y, scored, task, classes):
        fpr, tpr = roc_curve(yb, s)
        ax.plot(fpr, tpr, label=f"{label} (AUC {roc_auc(yb, s):.3f})")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", linewidth=1)
    ax.set(xlabel="1 − specificity", ylabel="sensitivity", title="ROC", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_pr(y: np.ndarray, scored: Mapping[str, np.ndarray], task: str, classes: Sequence[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    for label, yb, s in _curves(y, scored, task, classes):
        recall, precision = pr_curve(yb, s)
        ax.plot(recall, precision, label=label)
    ax.set(xlabel="recall (sensitivity)", ylabel="precision", title="Precision–recall", xlim=(0, 1), ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_confusion(matrix: np.ndarray, classes: Sequence[str], path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(1.2 * len(classes) + 2.4, 1.1 * len(classes) + 2))
    ax.imshow(matrix, cmap="Blues")
    ax.set_xticks(range(len(classes)), classes, rotation=30, ha="right")
    ax.set_yticks(range(len(classes)), classes)
    top = matrix.max() if matrix.size else 0
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            color = "white" if matrix[i, j] > top / 2 else "black"
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", color=color)
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_reliability(probs: np.ndarray, y: np.ndarray, path: Path, *, bins: int = 10) -> None:
    plt = _plt()
    rel = reliability(probs, y, bins=bins)
    centers = (np.arange(bins) + 0.5) / bins
    fig, ax = plt.subplots(figsize=(4.8, 4.4))
    ok = rel.count > 0
    ax.bar(centers[ok], rel.accuracy[ok], width=1 / bins, edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([0, 1], [0, 1], color="gray", linestyle=":", label="perfect calibration")
    ax.plot(rel.confidence[ok], rel.accuracy[ok], "o", color="C3", markersize=4, label="bin mean confidence")
    ax.set(xlabel="confidence", ylabel="accuracy", title=f"Reliability (ECE {rel.ece:.3f})", xlim=(0, 1), ylim=(0, 1))
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: Sequence[Mapping[str, Any]], path: Path) -> None:
    """Training curves (loss and accuracy, train vs validation) across both phases of a run."""
    plt = _plt()
    x = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key in ((axes[0], "loss"), (axes[1], "accuracy")):
        ax.plot(x, [e[key] for e in history], label="train")
        ax.plot(x, [e[f"val_{key}"] for e in history], label="validation")
        ax.set_title(key)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    switch = next((i for i, e in enumerate(history) if e["phase"] == "fine-tune"), None)
    if switch is not None:
        for ax in axes:
            ax.axvline(switch + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.text(switch + 0.6, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8, color="gray")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
