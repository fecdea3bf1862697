"""The run folder: checkpoint (weights + model card + config + history), its side files, and reloading it.

A run folder is self-contained — ``checkpoint.pt``, ``card.json``, ``config.json``, ``metrics.json``,
``history.csv``, ``curves.png``, ``split.csv`` and ``train_fingerprints.npz`` (the images the model saw, so an
external evaluation can drop their copies) — so export and evaluation need nothing else. The checkpoint holds
plain tensors and JSON types only and loads with ``weights_only=True``; it is written to a temporary name and
renamed, so an interrupted save never leaves half a file.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from braintumor.data.datasets import ImageRecord
from braintumor.models.card import ModelCard
from braintumor.models.factory import create_model_from_card
from braintumor.models.net import BrainTumorNet
from braintumor.training.config import TrainConfig

CHECKPOINT = "checkpoint.pt"
FINGERPRINTS = "train_fingerprints.npz"


@dataclass
class EpochLog:
    phase: str
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float

    def postfix(self) -> dict[str, str]:
        """What the progress bar shows after each epoch."""
        return {k: f"{getattr(self, k):.3f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")}


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    card: dict[str, Any],
    cfg: TrainConfig,
    split_sha: str,
    history: Sequence[EpochLog],
    metrics: dict[str, Any],
    interrupted: bool,
) -> Path:
    """Write the run folder's files; the checkpoint is written to a temporary name, then renamed."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = json.loads(json.dumps(card))  # plain JSON types only: the checkpoint loads with weights_only=True
    metrics = json.loads(json.dumps(metrics))
    payload = {
        "format": "braintumor-checkpoint-v1",
        "state_dict": state,
        "card": card,
        "config": cfg.to_dict(),
        "split_sha256": split_sha,
        "history": [e.__dict__ for e in history],
        "metrics": metrics,
        "interrupted": interrupted,
    }
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (run_dir / "card.json").write_text(json.dumps(card, indent=2, default=str))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with (run_dir / "history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"])
        for e in history:
            writer.writerow([e.phase, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy, e.lr, e.seconds])
    if history:
        from braintumor.evaluation.plots import plot_history

        plot_history([e.__dict__ for e in history], run_dir / "curves.png")
    return path


def save_train_fingerprints(run_dir: Path, records: Sequence[ImageRecord]) -> Path:
    """Fingerprints of the images a model saw in training and validation (``train_fingerprints.npz``)."""
    from braintumor.data.audit import save_fingerprints

    return save_fingerprints([r.key for r in records], [r.path for r in records], run_dir / FINGERPRINTS)


def load_checkpoint(path: str | Path) -> tuple[BrainTumorNet, dict[str, Any]]:
    """Rebuild the model of a checkpoint (architecture from its card, weights from the file)."""
    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = create_model_from_card(ModelCard.from_dict(payload["card"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
