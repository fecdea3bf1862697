"""The model card: everything needed to feed, read and trust a set of weights, saved with them.

Inference, Grad-CAM and reports read the card instead of constants, so a checkpoint trained at 299 px
with Inception's normalisation cannot be served at 224 px with ImageNet's by mistake. Later stages add
thresholds, calibration, metrics and data hashes under ``extra`` without a schema change.

Example:
    >>> card = ModelCard(
    ...     arch="mobilenet_v2", num_outputs=1, input_size=224, mean=(0.485, 0.456, 0.406),
    ...     std=(0.229, 0.224, 0.225), interpolation="bilinear", cam_layer="backbone.features.18",
    ... )
    >>> card.class_names, card.activation
    (['no_tumor', 'tumor'], 'sigmoid')
    >>> ModelCard.from_dict(card.to_dict()) == card
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from braintumor.errors import ModelCardError

BINARY_CLASS_NAMES = ("no_tumor", "tumor")
PREPROCESSING = "letterbox-v1"
CARD_SCHEMA = 1


def default_class_names(num_outputs: int) -> list[str]:
    """``["no_tumor", "tumor"]`` for a binary model (one sigmoid logit or two softmax logits), else placeholders.

    >>> default_class_names(1), default_class_names(3)
    (['no_tumor', 'tumor'], ['class_0', 'class_1', 'class_2'])
    """
    if num_outputs in (1, 2):
        return list(BINARY_CLASS_NAMES)
    return [f"class_{i}" for i in range(num_outputs)]


@dataclass
class ModelCard:
    """Facts that travel with the weights (inside every checkpoint and export).

    ``num_outputs == 1`` means one logit read through a sigmoid as P(``class_names[1]``); two or more
    logits are read through a softmax, one per class name. ``preprocessing`` names the geometry
    (``letterbox-v1``: keep the aspect ratio, pad with black to a square of ``input_size``) which is
    followed by ``(x / 255 - mean) / std`` per channel.
    """

    arch: str
    num_outputs: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    cam_layer: str
    class_names: list[str] = field(default_factory=list)
    preprocessing: str = PREPROCESSING
    pretrained: str | None = None
    pretrained_sha256: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.num_outputs < 1:
            raise ModelCardError(f"num_outputs must be at least 1, got {self.num_outputs}")
        if not self.class_names:
            self.class_names = default_class_names(self.num_outputs)
        self.class_names = [str(c) for c in self.class_names]
        expected = 2 if self.num_outputs == 1 else self.num_outputs
        if len(self.class_names) != expected:
            raise ModelCardError(
                f"{self.num_outputs} output(s) need {expected} class names, got {len(self.class_names)}: "
                f"{self.class_names}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ModelCardError(f"class names must be distinct, got {self.class_names}")
        self.mean = _triple(self.mean, "mean")
        self.std = _triple(self.std, "std")
        if any(s <= 0 for s in self.std):
            raise ModelCardError(f"std must be positive, got {self.std}")

    @property
    def activation(self) -> str:
        """``"sigmoid"`` for one logit, ``"softmax"`` for several: how to turn logits into probabilities."""
        return "sigmoid" if self.num_outputs == 1 else "softmax"

    @property
    def num_classes(self) -> int:
        """Number of classes (2 for a single-logit binary model)."""
        return len(self.class_names)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists; ``extra`` is deep-copied)."""
        out = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self)}
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output; keys this version does not know are ignored.

        Ignoring unknown keys lets an older reader open a card written by a newer version.
        """
        known = {f.name for f in fields(cls)}
        kwargs = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        missing = sorted(_REQUIRED - kwargs.keys())
        if missing:
            raise ModelCardError(f"model card lacks required field(s): {', '.join(missing)}")
        try:
            return cls(**kwargs)
        except ModelCardError:
            raise
        except (TypeError, ValueError) as exc:
            raise ModelCardError(f"invalid model card: {exc}") from exc


_REQUIRED = frozenset({"arch", "num_outputs", "input_size", "mean", "std", "interpolation", "cam_layer"})


def _triple(values: Any, name: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in values)
    except (TypeError, ValueError) as exc:
        raise ModelCardError(f"{name} must be three numbers, got {values!r}") from exc
    return (a, b, c)
