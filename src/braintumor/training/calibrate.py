"""After training: logits on held-out images, and the calibration and decision rule fitted on validation.

One temperature is fitted on the validation images of every source together (typed images by their class,
untyped tumors by p(tumor), see :mod:`braintumor.training.loss`), so the probability a user sees means the
same whichever dataset a scan resembles. Any model with a "no tumor" output also gets the decision rule
(threshold + refer band, :func:`braintumor.evaluation.calibration.decision_rule`) on its validation p(tumor),
with the sensitivity target held on each validation dataset.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from braintumor.data.datasets import negative_index
from braintumor.models.card import Calibration, ModelCard
from braintumor.models.net import BrainTumorNet
from braintumor.training.data import LabelledSet, normalise


@torch.inference_mode()
def predict_logits(
    model: BrainTumorNet, images: torch.Tensor, card: ModelCard, channels_last: bool = False
) -> np.ndarray:
    """Logits (N×outputs) for uint8 letterboxed images, in batches of 32, eval mode."""
    model.eval()
    out = []
    for start in range(0, len(images), 32):
        x = normalise(images[start : start + 32], card.mean, card.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float())
    if not out:
        return np.zeros((0, card.num_outputs), np.float32)
    return torch.cat(out).numpy()


def tumor_targets(targets: np.ndarray, binary: bool, negative: int | None) -> np.ndarray | None:
    """Tumor (1) / no tumor (0) of each target, or None when the classes have no "no tumor" class."""
    if binary:
        out: np.ndarray = targets.astype(np.int64)
        return out
    if negative is None:
        return None
    return np.asarray(targets != negative, dtype=np.int64)


def calibrate(
    logits: np.ndarray,
    targets: np.ndarray,
    class_names: list[str],
    binary: bool,
    datasets: list[str] | None = None,
) -> Calibration | None:
    """Temperature, ECE before/after (of p(tumor) where there is one) and the decision rule, from
    validation ``logits`` and ``targets`` (−1 = untyped tumor)."""
    from braintumor.evaluation.calibration import decision_rule, fit_temperature, probabilities, reliability

    y = np.asarray(targets)
    if len(y) < 4 or len(np.unique(y)) < 2:
        return None
    negative = None if binary else negative_index(class_names)
    logits = logits[:, 0] if binary else logits
    temperature = fit_temperature(logits, y, negative=negative)
    y_tumor = tumor_targets(y, binary, negative)

    def view(t: float) -> tuple[np.ndarray, np.ndarray]:
        p = probabilities(logits, t)
        if binary:
            return p, y
        if y_tumor is not None:
            return 1.0 - p[:, negative], y_tumor
        return p, y

    out: dict[str, Any] = {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": "val",
        "n": len(y),
        "ece_of": "p_tumor" if (binary or y_tumor is not None) else "top_label",
        "val_ece_before": reliability(*view(1.0)).ece,
        "val_ece_after": reliability(*view(temperature)).ece,
    }
    if y_tumor is not None and len(np.unique(y_tumor)) == 2:
        out["decision"] = decision_rule(*view(temperature), groups=datasets).as_dict()
    return Calibration.from_dict(out)


def calibrate_set(
    model: BrainTumorNet, data: LabelledSet, card: ModelCard, binary: bool, channels_last: bool
) -> Calibration | None:
    """:func:`calibrate` on a model's validation set."""
    if len(data) < 4:
        return None
    logits = predict_logits(model, data.images, card, channels_last)
    return calibrate(logits, data.targets.numpy(), list(card.class_names), binary, data.datasets)
