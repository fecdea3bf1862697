"""Explain one scan with a trained PyTorch model: prediction, raw map, map on the original, overlay.

The map is computed at the model input size, then mapped back through the letterbox placement onto the
original image, so it lines up with the scan a clinician sees.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from braintumor.errors import InvalidRequestError
from braintumor.explain.cam import METHODS
from braintumor.imaging.overlay import overlay
from braintumor.imaging.transforms import Placement, letterbox, to_rgb
from braintumor.imaging.types import LoadedImage
from braintumor.models.card import ModelCard


@dataclass(frozen=True)
class Explanation:
    class_names: tuple[str, ...]
    probs: np.ndarray  # per class (binary: [p(no tumor), p(tumor)]), calibrated when the card says how
    predicted: str
    explained: str
    raw_map: np.ndarray  # model input size, float32, ≥ 0
    original_map: np.ndarray  # original image size
    placement: Placement
    overlay: np.ndarray  # RGB uint8 at the original size


def explain_image(
    model: torch.nn.Module,
    card: ModelCard,
    image: LoadedImage,
    *,
    method: str = "gradcam",
    target: str | None = None,
    alpha: float = 0.4,
) -> Explanation:
    """Predict and explain ``image``; ``target`` is a class name (default: the predicted class)."""
    if method not in METHODS:
        raise InvalidRequestError(f"unknown CAM method {method!r}; choose from {', '.join(METHODS)}")
    names = tuple(card.class_names)
    boxed, placement = letterbox(image.pixels, card.input_size)
    x = torch.from_numpy(to_rgb(boxed).transpose(2, 0, 1).copy())[None].float().div(255)
    x = (x - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    target_index = None
    if target is not None:
        if target not in names:
            raise InvalidRequestError(f"unknown class {target!r}; the model knows {', '.join(names)}")
        target_index = names.index(target)
    with METHODS[method](model, card.cam_layer) as cam:
        result = cam(x, target_index)
    logits = result.logits[0].double() / card.temperature
    if logits.numel() == 1:
        p = float(torch.sigmoid(logits[0]))
        probs = np.array([1 - p, p])
        predicted = names[int(p >= card.decision.threshold)]
    else:
        probs = torch.softmax(logits, 0).numpy()
        predicted = names[int(np.argmax(probs))]
    raw = result.maps[0].numpy().astype(np.float32)
    original = placement.unmap(raw)
    return Explanation(
        class_names=names,
        probs=probs,
        predicted=predicted,
        explained=names[int(result.target_class[0])],
        raw_map=raw,
        original_map=original,
        placement=placement,
        overlay=overlay(image.pixels, original, alpha=alpha),
    )
