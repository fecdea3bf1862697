"""The classifier: a pretrained convolutional trunk and the seed's small MLP head.

The forward pass is split at the feature map so that (1) a frozen backbone's features can be computed
once and cached while only the head trains, and (2) Grad-CAM can start from the feature map and run just
the head. Fine-tuning follows the usual two phases: train the head on a frozen backbone, then unfreeze
the top blocks at a low learning rate.

Example:
    >>> import torch
    >>> from braintumor.models.factory import create_model
    >>> model = create_model("mobilenet_v3_small", num_classes=1).eval()
    >>> fmap = model.forward_features(torch.zeros(1, 3, 224, 224))
    >>> fmap.shape, model.forward_head(fmap).shape
    (torch.Size([1, 576, 7, 7]), torch.Size([1, 1]))
    >>> model.freeze_backbone(); model.unfreeze_top(n_blocks=2)
    ['backbone.features.11', 'backbone.features.12']
"""

from __future__ import annotations

import math
from typing import Self

import torch
from torch import nn

from braintumor.models.card import ModelCard

HEAD_HIDDEN = 256
HEAD_DROPOUT = 0.5


class Backbone(nn.Module):
    """A wrapper whose ``features`` (one child per block, in forward order) maps images to a B×C×H×W map."""

    def __init__(self, features: nn.Sequential) -> None:
        super().__init__()
        self.features = features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.features(x)
        return out

    def block_names(self) -> list[str]:
        """Names of the blocks, first to last, as dotted paths inside :class:`BrainTumorNet`."""
        return [f"backbone.features.{name}" for name, _ in self.features.named_children()]

    def blocks(self) -> list[nn.Module]:
        """The blocks, first to last: the unit of :meth:`BrainTumorNet.unfreeze_top`."""
        return list(self.features.children())


class BrainTumorNet(nn.Module):
    """Backbone → global average pool → Linear(C, 256) → ReLU → Dropout(0.5) → Linear(256, outputs).

    One output is a binary logit (sigmoid); two or more are class logits (softmax). ``card`` says which
    and carries the preprocessing facts. Build it with :func:`braintumor.models.create_model`.
    """

    def __init__(self, features: nn.Sequential, feature_dim: int, card: ModelCard) -> None:
        super().__init__()
        self.backbone = Backbone(features)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = nn.Sequential(
            nn.Flatten(1),
            nn.Linear(feature_dim, HEAD_HIDDEN),
            nn.ReLU(inplace=True),
            nn.Dropout(HEAD_DROPOUT),
            nn.Linear(HEAD_HIDDEN, card.num_outputs),
        )
        self.feature_dim = feature_dim
        self.card = card

    @property
    def num_outputs(self) -> int:
        return self.card.num_outputs

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised images (B×3×S×S) → feature map (B×C×h×w), the output of ``card.cam_layer``."""
        out: torch.Tensor = self.backbone(x)
        return out

    def forward_head(self, fmap: torch.Tensor) -> torch.Tensor:
        """Feature map → logits (B×outputs): pool and MLP, so cached features can train the head alone."""
        out: torch.Tensor = self.head(self.pool(fmap))
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    # -- freezing ------------------------------------------------------------------------------------------
    def freeze_backbone(self) -> None:
        """Phase 1: only the head trains. Frozen blocks also stay in eval mode (see :meth:`train`)."""
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        self.train(self.training)

    def unfreeze_top(
        self, n_blocks: int | None = None, *, fraction: float | None = None, train_bn: bool = False
    ) -> list[str]:
        """Phase 2: make exactly the last ``n_blocks`` (or the last ``fraction`` of) backbone blocks trainable.

        Everything below stays frozen, whatever was trainable before. A block is a stage of the trunk
        (a VGG conv block, a ResNet layer, an Inception module, a MobileNet/EfficientNet stage); see
        ``model.backbone.block_names()``. With ``train_bn=False`` (the default) BatchNorm layers keep
        their ImageNet statistics and affine parameters even inside unfrozen blocks: with a few hundred
        images and batches of 16, per-batch statistics are noisier than ImageNet's, and updating them
        is the usual way fine-tuning collapses. Returns the names of the unfrozen blocks.

        >>> from braintumor.models.factory import create_model
        >>> create_model("resnet50", 1).unfreeze_top(fraction=0.4)
        ['backbone.features.layer3', 'backbone.features.layer4']
        """
        blocks = self.backbone.blocks()
        if (n_blocks is None) == (fraction is None):
            raise ValueError("give exactly one of n_blocks or fraction")
        if fraction is not None:
            if not 0.0 <= fraction <= 1.0:
                raise ValueError(f"fraction must be within [0, 1], got {fraction}")
            n_blocks = math.ceil(fraction * len(blocks))
        assert n_blocks is not None
        if not 0 <= n_blocks <= len(blocks):
            raise ValueError(f"n_blocks must be within [0, {len(blocks)}], got {n_blocks}")
        for p in self.backbone.parameters():
            p.requires_grad_(False)
        chosen = blocks[len(blocks) - n_blocks :]
        for block in chosen:
            for module in block.modules():
                if train_bn or not isinstance(module, nn.modules.batchnorm._BatchNorm):
                    for p in module.parameters(recurse=False):
                        p.requires_grad_(True)
        self.train(self.training)
        return self.backbone.block_names()[len(blocks) - n_blocks :]

    def train(self, mode: bool = True) -> Self:
        """Like :meth:`nn.Module.train`, but frozen parts of the backbone stay in eval mode.

        A frozen block must compute the same features in training as in evaluation (so cached features
        stay valid): its BatchNorm layers must not update their running statistics, and stochastic
        depth must not drop its residual branches. BatchNorm layers whose own parameters are frozen
        stay in eval mode even inside an otherwise trainable block.
        """
        super().train(mode)
        if mode:
            for block in self.backbone.blocks():
                if not any(p.requires_grad for p in block.parameters()):
                    block.eval()
            for module in self.backbone.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm) and not any(
                    p.requires_grad for p in module.parameters(recurse=False)
                ):
                    module.eval()
        return self
