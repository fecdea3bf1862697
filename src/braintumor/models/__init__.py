"""Backbones, the classifier and its card, and ImageNet weights that work offline.

Example:
    >>> from braintumor.models import create_model, list_models
    >>> "resnet50" in list_models()
    True
    >>> model = create_model("mobilenet_v2", num_classes=1)  # pretrained=True needs the cached weights
    >>> model.card.input_size, model.card.class_names
    (224, ['no_tumor', 'tumor'])
"""

from braintumor.models.card import ModelCard, default_class_names
from braintumor.models.factory import create_model, create_model_from_card
from braintumor.models.net import Backbone, BrainTumorNet
from braintumor.models.registry import ModelSpec, get_spec, list_models, register_model
from braintumor.models.weights import (
    KNOWN_SHA256,
    InstallResult,
    WeightsStatus,
    cache_path,
    create_imagenet_classifier,
    hub_checkpoint_dir,
    install_file,
    install_offline,
    sha256_file,
    weights_status,
)

__all__ = [
    "KNOWN_SHA256",
    "Backbone",
    "BrainTumorNet",
    "InstallResult",
    "ModelCard",
    "ModelSpec",
    "WeightsStatus",
    "cache_path",
    "create_imagenet_classifier",
    "create_model",
    "create_model_from_card",
    "default_class_names",
    "get_spec",
    "hub_checkpoint_dir",
    "install_file",
    "install_offline",
    "list_models",
    "register_model",
    "sha256_file",
    "weights_status",
]
