"""Training losses: (binary) cross-entropy with class weights, and a partial-label loss for untyped tumors.

The yes/no datasets say "tumor" without saying which type. Dropping those images leaves the tumor / no-tumor
decision to be learnt from the typed dataset alone — and when the "no tumor" images come mostly from another
source, the network learns the source instead of the disease. A partial label keeps them: the image is known
to be *some* tumor, so its likelihood under a softmax over (glioma, meningioma, no tumor, pituitary) is the
sum of the tumor classes' probabilities, and its loss is −log(1 − p(no tumor)) (Cour et al., 2011,
"Learning from Partial Labels"). Typed images keep the usual cross-entropy, so one softmax serves both the
binary decision and the type.

Example:
    >>> import torch
    >>> crit = Criterion(False, torch.tensor([0, 1, 2, -1]), 3, weighted=False, negative=1)
    >>> logits = torch.tensor([[4.0, 0, 0], [0, 4.0, 0], [0, 0, 4.0], [0, -4.0, 0]])
    >>> round(float(crit(logits, torch.tensor([0, 1, 2, -1]))), 3)
    0.03
"""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812

from braintumor.training.data import UNTYPED


class Criterion:
    """Loss and correctness for binary (one logit) or multi-class (K logits) heads.

    ``weighted``: inverse class frequency weights in the training loss (typed classes; an untyped tumor
    weighs 1). Validation losses (``evaluate=True``) use no class weights. ``weights`` (per image) make a
    weighted mean, e.g. the source-balanced validation loss.
    """

    def __init__(
        self, binary: bool, targets: torch.Tensor, n_classes: int, weighted: bool, negative: int | None = None
    ) -> None:
        self.binary = binary
        self.negative = negative
        self.pos_weight: float | None = None
        self.class_weight: torch.Tensor | None = None
        if binary:
            pos = float(targets.sum())
            neg = float(len(targets) - pos)
            if weighted and pos > 0 and neg > 0:
                self.pos_weight = neg / pos
        else:
            if bool((targets == UNTYPED).any()) and negative is None:
                raise ValueError("untyped tumor labels need a 'no tumor' class")
            typed = targets[targets >= 0]
            counts = torch.bincount(typed, minlength=n_classes).float()
            if weighted:
                self.class_weight = len(typed) / (n_classes * counts.clamp(min=1))

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor, *, evaluate: bool = False) -> torch.Tensor:
        """Loss of each image (N,), class-weighted unless ``evaluate``."""
        if self.binary:
            pw = None if evaluate or self.pos_weight is None else torch.tensor([self.pos_weight])
            return F.binary_cross_entropy_with_logits(
                logits.squeeze(1), targets.float(), pos_weight=pw, reduction="none"
            )
        logp = torch.log_softmax(logits, dim=1)
        untyped = targets == UNTYPED
        typed_loss = -logp.gather(1, targets.clamp(min=0)[:, None])[:, 0]
        if not bool(untyped.any()):
            return typed_loss
        assert self.negative is not None
        keep = torch.ones(logits.shape[1], dtype=torch.bool)
        keep[self.negative] = False
        untyped_loss = -torch.logsumexp(logp[:, keep], dim=1)  # −log Σ_tumor types p = −log(1 − p(no tumor))
        return torch.where(untyped, untyped_loss, typed_loss)

    def __call__(
        self,
        logits: torch.Tensor,
        targets: torch.Tensor,
        weights: torch.Tensor | None = None,
        *,
        evaluate: bool = False,
    ) -> torch.Tensor:
        losses = self.per_sample(logits, targets, evaluate=evaluate)
        w = torch.ones_like(losses) if weights is None else weights.to(losses.dtype)
        if not self.binary and self.class_weight is not None and not evaluate:
            w = w * torch.where(targets >= 0, self.class_weight[targets.clamp(min=0)], 1.0)
            return (losses * w).sum() / w.sum()
        if weights is None:
            return losses.mean()
        return (losses * w).sum() / w.sum()

    def correct(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Whether each prediction is right (an untyped tumor: any tumor class is right)."""
        if self.binary:
            return (logits.squeeze(1) > 0).long() == targets
        pred = logits.argmax(1)
        if self.negative is None:
            return pred == targets
        return torch.where(targets == UNTYPED, pred != self.negative, pred == targets)
