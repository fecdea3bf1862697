"""Class activation maps: Grad-CAM and Grad-CAM++ behind one interface.

One base class owns the hooks (registered in ``__enter__``, always removed in ``__exit__`` — even when the
forward pass raises — and never swallowing the error); each method overrides one hook, the channel
weights. "What to explain" is a small target: the raw output (logit) of the predicted class by default,
or a chosen class. For a single-logit binary model, "no tumor" is explained with the negated logit.

References: Selvaraju et al., "Grad-CAM", ICCV 2017; Chattopadhay et al., "Grad-CAM++", WACV 2018.

Example:
    >>> with GradCAM(model, "backbone.features") as cam:  # doctest: +SKIP
    ...     result = cam(batch)                            # maps: N×H×W at the input size, raw floats
"""

from __future__ import annotations

from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


@dataclass(frozen=True)
class CAMResult:
    """Raw maps (N×H×W float32 at the model input size, ≥ 0, not normalised), the logits, and which
    class each map explains."""

    maps: torch.Tensor
    logits: torch.Tensor
    target_class: torch.Tensor


class BaseCAM:
    """Hook management and the common CAM recipe; subclasses define :meth:`channel_weights`."""

    def __init__(self, model: nn.Module, target_layer: str | nn.Module) -> None:
        self.model = model
        self.layer = model.get_submodule(target_layer) if isinstance(target_layer, str) else target_layer
        self._handles: list[Any] = []
        self._activation: torch.Tensor | None = None

    # -- hooks ---------------------------------------------------------------------------------------
    def __enter__(self) -> BaseCAM:
        self._handles.append(self.layer.register_forward_hook(self._keep_activation))
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    def release(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        self._activation = None

    def _keep_activation(self, _module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        if output.requires_grad:  # a plain no-grad forward of the same model must still work inside the context
            output.retain_grad()
            self._activation = output

    # -- recipe --------------------------------------------------------------------------------------
    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def __call__(self, x: torch.Tensor, target_class: int | torch.Tensor | None = None) -> CAMResult:
        if not self._handles:
            raise RuntimeError("use the CAM as a context manager: `with GradCAM(model, layer) as cam:`")
        was_training = self.model.training
        self.model.eval()
        try:
            with torch.enable_grad():
                x = x.detach().requires_grad_(False)
                logits = self.model(x)
                target, score = _target_scores(logits, target_class)
                activation = self._activation
                if activation is None:
                    raise RuntimeError("the target layer did not run in the forward pass")
                grad = torch.autograd.grad(score.sum(), activation)[0]
                weights = self.channel_weights(activation.detach(), grad.detach())
                cam = F.relu((weights[:, :, None, None] * activation.detach()).sum(dim=1))
                maps = F.interpolate(cam[:, None], size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
        finally:
            self._activation = None
            self.model.train(was_training)
        return CAMResult(maps=maps.float(), logits=logits.detach(), target_class=target)


class GradCAM(BaseCAM):
    """Grad-CAM: channel weight = spatial mean of the gradient."""

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:  # noqa: ARG002
        return grad.mean(dim=(2, 3))


class GradCAMPlusPlus(BaseCAM):
    """Grad-CAM++: positive gradients weighted by the closed-form α of an exponential score."""

    def channel_weights(self, activation: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        g2, g3 = grad.pow(2), grad.pow(3)
        denom = 2 * g2 + (activation.sum(dim=(2, 3), keepdim=True) * g3)
        alpha = g2 / torch.where(denom != 0, denom, torch.ones_like(denom))
        return (alpha * F.relu(grad)).sum(dim=(2, 3))


METHODS: dict[str, type[BaseCAM]] = {"gradcam": GradCAM, "gradcam++": GradCAMPlusPlus}


def _target_scores(logits: torch.Tensor, target_class: int | torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample score to explain: the logit of the target class (predicted class by default)."""
    n = logits.shape[0]
    if logits.shape[1] == 1:  # binary, one logit: class 1 = tumor (+logit), class 0 = no tumor (−logit)
        predicted = (logits[:, 0] > 0).long()
        target = _as_targets(target_class, predicted, n)
        sign = target.to(logits.dtype) * 2 - 1
        return target, logits[:, 0] * sign
    predicted = logits.argmax(1)
    target = _as_targets(target_class, predicted, n)
    return target, logits.gather(1, target[:, None])[:, 0]


def _as_targets(target_class: int | torch.Tensor | None, predicted: torch.Tensor, n: int) -> torch.Tensor:
    if target_class is None:
        return predicted
    if isinstance(target_class, int):
        return torch.full((n,), target_class, dtype=torch.long)
    return target_class.long().reshape(n)
