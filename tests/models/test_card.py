"""The model card survives JSON and tolerates cards written by newer versions."""

from __future__ import annotations

import json
from typing import Any

import pytest

from braintumor.errors import ModelCardError
from braintumor.models.card import ModelCard
from braintumor.models.factory import create_model


def card_kwargs(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "arch": "resnet50",
        "num_outputs": 1,
        "input_size": 224,
        "mean": (0.485, 0.456, 0.406),
        "std": (0.229, 0.224, 0.225),
        "interpolation": "bilinear",
        "cam_layer": "backbone.features.layer4",
    }
    return {**base, **overrides}


def test_json_round_trip_keeps_everything() -> None:
    card = create_model("mobilenet_v3_small", 4, class_names=["glioma", "meningioma", "no_tumor", "pituitary"]).card
    card.extra.update({"thresholds": {"tumor": 0.42}, "metrics": {"auc": [0.9, 0.95]}, "data_sha256": "ab" * 32})
    restored = ModelCard.from_dict(json.loads(json.dumps(card.to_dict())))
    assert restored == card
    assert isinstance(restored.mean, tuple) and restored.preprocessing == "letterbox-v1"
    assert restored.pretrained is None and restored.pretrained_sha256 is None


def test_unknown_keys_are_ignored_and_input_is_not_aliased() -> None:
    data = {**ModelCard(**card_kwargs()).to_dict(), "added_in_v9": {"x": 1}}
    card = ModelCard.from_dict(data)
    assert card == ModelCard(**card_kwargs())
    card.extra["t"] = 1
    assert data["extra"] == {}


def test_defaults_and_validation() -> None:
    assert ModelCard(**card_kwargs()).class_names == ["no_tumor", "tumor"]
    assert ModelCard(**card_kwargs(num_outputs=2)).class_names == ["no_tumor", "tumor"]
    assert ModelCard(**card_kwargs(num_outputs=3)).class_names == ["class_0", "class_1", "class_2"]
    with pytest.raises(ModelCardError, match="need 2 class names"):
        ModelCard(**card_kwargs(class_names=["tumor"]))
    with pytest.raises(ModelCardError, match="distinct"):
        ModelCard(**card_kwargs(class_names=["a", "a"]))
    with pytest.raises(ModelCardError, match="lacks required field"):
        ModelCard.from_dict({"arch": "resnet50"})
    with pytest.raises(ModelCardError, match="mean must be three numbers"):
        ModelCard.from_dict(card_kwargs(mean=[0.5]))
