"""One way to build a model: :func:`create_model` by registered name (timm's ``create_model``, our head).

Example:
    >>> from braintumor.models.factory import create_model
    >>> names = ["glioma", "meningioma", "no_tumor", "pituitary"]
    >>> model = create_model("efficientnet_b0", num_classes=4, class_names=names)
    >>> model.card.activation, model.card.cam_layer
    ('softmax', 'backbone.features.8')
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from braintumor.models.card import ModelCard
from braintumor.models.net import BrainTumorNet
from braintumor.models.registry import get_spec
from braintumor.models.weights import classifier_with_provenance


def create_model(
    name: str,
    num_classes: int,
    pretrained: bool = False,
    weights_file: str | os.PathLike[str] | None = None,
    *,
    class_names: Sequence[str] | None = None,
) -> BrainTumorNet:
    """Build ``name``'s backbone with the seed's head; ``num_classes == 1`` means one sigmoid logit.

    ``pretrained=True`` loads the ImageNet weights from the torch hub cache and raises
    :class:`~braintumor.errors.WeightsNotAvailableError` (naming the file and the install command) when
    they are not there; it never downloads and never falls back to random weights. ``weights_file``
    loads ImageNet weights for the stock classifier from that file instead (it implies pretrained; its
    SHA-256 goes on the card). ``class_names`` default to ``["no_tumor", "tumor"]`` for binary models.
    """
    spec = get_spec(name)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}")
    card = ModelCard(
        arch=spec.name,
        num_outputs=num_classes,
        class_names=list(class_names) if class_names is not None else [],
        input_size=spec.input_size,
        mean=spec.mean,
        std=spec.std,
        interpolation=spec.interpolation,
        cam_layer=spec.cam_layer,
    )
    classifier, card.pretrained, card.pretrained_sha256 = classifier_with_provenance(
        spec, pretrained=pretrained, weights_file=weights_file
    )
    return BrainTumorNet(spec.trunk(classifier), spec.feature_dim, card)


def create_model_from_card(card: ModelCard) -> BrainTumorNet:
    """The architecture a saved card describes, randomly initialised, carrying that very card.

    Use it to rebuild a trained model before ``load_state_dict``: no ImageNet file is needed, because
    the checkpoint holds every weight.

    >>> from braintumor.models.factory import create_model
    >>> card = create_model("mobilenet_v3_small", 1).card
    >>> create_model_from_card(card).card is card
    True
    """
    spec = get_spec(card.arch)
    model = BrainTumorNet(spec.trunk(spec.builder()), spec.feature_dim, card)
    return model
