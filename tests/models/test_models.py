"""Every registered backbone builds, splits at the feature map, trains only what is unfrozen."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from braintumor.errors import UnknownModelError
from braintumor.models.factory import create_model, create_model_from_card
from braintumor.models.net import BrainTumorNet
from braintumor.models.registry import get_spec, list_models

ARCHS = list_models()
BIG = {"vgg16", "resnet50", "inception_v3"}


def batch_size(arch: str) -> int:
    return 1 if arch in BIG else 2


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)


def test_registry_lists_the_eight_backbones() -> None:
    assert ARCHS == [
        "efficientnet_b0",
        "efficientnet_lite0",
        "inception_v3",
        "mobilenet_v2",
        "mobilenet_v3_large",
        "mobilenet_v3_small",
        "resnet50",
        "vgg16",
    ]
    assert get_spec("inception_v3").input_size == 299
    assert get_spec("efficientnet_lite0").mean == pytest.approx((0.498,) * 3, abs=1e-3)
    assert get_spec("efficientnet_lite0").std == pytest.approx((0.502,) * 3, abs=1e-3)


def test_unknown_model_names_the_choices() -> None:
    with pytest.raises(UnknownModelError, match="resnet50"):
        create_model("resnet51", 1)


@pytest.mark.parametrize("num_classes", [1, 4])
@pytest.mark.parametrize("arch", ARCHS)
def test_forward_shapes_split_and_cam_layer(arch: str, num_classes: int) -> None:
    spec = get_spec(arch)
    model = create_model(arch, num_classes).eval()
    assert isinstance(model, BrainTumorNet)
    assert model.card.num_outputs == num_classes and model.card.arch == arch
    assert not any(isinstance(m, nn.Linear) for m in model.backbone.modules()), "classifier left in the backbone"
    x = torch.randn(batch_size(arch), 3, spec.input_size, spec.input_size)
    captured: list[torch.Tensor] = []
    hook = model.get_submodule(model.card.cam_layer).register_forward_hook(lambda _m, _i, out: captured.append(out))
    with torch.no_grad():
        logits = model(x)
        fmap = model.forward_features(x)
        split = model.forward_head(fmap)
    hook.remove()
    assert logits.shape == (x.shape[0], num_classes)
    assert fmap.ndim == 4 and fmap.shape[:2] == (x.shape[0], spec.feature_dim)
    torch.testing.assert_close(split, logits)
    # the CAM layer's output is the feature map the head starts from
    torch.testing.assert_close(captured[0], fmap)
    # head on pooled, cached features (what phase-1 training does) gives the same logits
    torch.testing.assert_close(model.forward_head(fmap.mean(dim=(2, 3))[:, :, None, None]), logits)


STOCK_HEADS: dict[str, Callable[[nn.Module, torch.Tensor], torch.Tensor]] = {
    "vgg16": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "resnet50": lambda m, f: m.fc(torch.flatten(m.avgpool(f), 1)),
    "inception_v3": lambda m, f: m.fc(torch.flatten(m.avgpool(f), 1)),
    "efficientnet_b0": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "mobilenet_v3_large": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "mobilenet_v3_small": lambda m, f: m.classifier(torch.flatten(m.avgpool(f), 1)),
    "mobilenet_v2": lambda m, f: m.classifier(torch.flatten(F.adaptive_avg_pool2d(f, 1), 1)),
    "efficientnet_lite0": lambda m, f: m.forward_head(f),
}


@pytest.mark.parametrize("arch", ARCHS)
def test_trunk_is_the_stock_network_without_its_classifier(arch: str) -> None:
    """No layer dropped, reordered or duplicated: trunk + stock head reproduces the stock classifier."""
    spec = get_spec(arch)
    stock = spec.builder().eval()
    trunk = spec.trunk(stock)
    size = 96 if arch == "inception_v3" else 64  # any size works; small keeps it fast
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        torch.testing.assert_close(STOCK_HEADS[arch](stock, trunk(x)), stock(x))


@pytest.mark.parametrize("arch", ARCHS)
def test_adam_step_on_frozen_backbone_changes_only_the_head(arch: str) -> None:
    spec = get_spec(arch)
    model = create_model(arch, 1)
    model.freeze_backbone()
    model.train()
    assert all(not p.requires_grad for p in model.backbone.parameters())
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable == list(model.head.parameters())
    backbone_before = {k: v.clone() for k, v in model.backbone.state_dict().items()}  # incl. BN statistics
    head_before = {k: v.clone() for k, v in model.head.state_dict().items()}
    optimizer = torch.optim.Adam(trainable, lr=1e-3)
    x = torch.randn(batch_size(arch), 3, spec.input_size, spec.input_size)
    # a loss whose gradient cannot vanish: a random-init Inception with frozen (eval) BatchNorm gives
    # logits of ~1e9, where BCE saturates
    loss = model(x).sum()
    loss.backward()
    optimizer.step()
    for k, v in model.head.state_dict().items():
        assert not torch.equal(v, head_before[k]), f"head tensor {k} did not change"
    for k, v in model.backbone.state_dict().items():
        assert torch.equal(v, backbone_before[k]), f"frozen backbone tensor {k} changed"
    assert all(p.grad is None for p in model.backbone.parameters())


def test_frozen_backbone_computes_the_same_features_in_train_mode() -> None:
    """BatchNorm statistics and stochastic depth must not act inside frozen blocks (cached features)."""
    model = create_model("efficientnet_b0", 1)
    model.freeze_backbone()
    x = torch.randn(2, 3, 96, 96)
    with torch.no_grad():
        model.train()
        in_train = model.forward_features(x)
        model.eval()
        in_eval = model.forward_features(x)
    torch.testing.assert_close(in_train, in_eval)
    assert model.head.training is False
    model.train()
    assert model.head.training and not model.backbone.features[0].training


def batchnorms(module: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def test_unfreeze_top_blocks() -> None:
    model = create_model("resnet50", 1)
    assert model.backbone.block_names() == [
        f"backbone.features.{n}" for n in ("stem", *(f"layer{i}" for i in range(1, 5)))
    ]
    assert model.unfreeze_top(n_blocks=1) == ["backbone.features.layer4"]
    model.train()
    layer3, layer4 = model.backbone.features.layer3, model.backbone.features.layer4
    assert all(not p.requires_grad for p in layer3.parameters())
    convs = [m for m in layer4.modules() if isinstance(m, nn.Conv2d)]
    assert convs and all(m.weight.requires_grad for m in convs)
    # BatchNorm keeps ImageNet statistics by default, even inside the unfrozen block
    assert all(not bn.training and not bn.weight.requires_grad for bn in batchnorms(layer4))
    assert not layer3.training and layer4.training and model.head.training

    assert model.unfreeze_top(fraction=0.4, train_bn=True) == ["backbone.features.layer3", "backbone.features.layer4"]
    model.train()
    assert all(bn.training and bn.weight.requires_grad for bn in batchnorms(layer3))
    assert not model.backbone.features.layer2.training
    # unfreezing is "exactly the top n": fewer blocks re-freeze the rest
    model.unfreeze_top(n_blocks=0)
    assert all(not p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.head.parameters())
    with pytest.raises(ValueError, match="exactly one"):
        model.unfreeze_top()
    with pytest.raises(ValueError, match="n_blocks"):
        model.unfreeze_top(n_blocks=6)


@pytest.mark.parametrize(("arch", "blocks", "cam"), [("vgg16", 5, "block5"), ("inception_v3", 12, "Mixed_7c")])
def test_block_structure(arch: str, blocks: int, cam: str) -> None:
    model = create_model(arch, 1)
    names = model.backbone.block_names()
    assert len(names) == blocks and names[-1] == model.card.cam_layer == f"backbone.features.{cam}"


def test_num_classes_and_class_names() -> None:
    binary = create_model("mobilenet_v3_small", 1)
    assert binary.card.class_names == ["no_tumor", "tumor"] and binary.card.activation == "sigmoid"
    names = ["glioma", "meningioma", "no_tumor", "pituitary"]
    multi = create_model("mobilenet_v3_small", 4, class_names=names)
    assert multi.card.class_names == names and multi.card.activation == "softmax"
    with pytest.raises(ValueError, match="class names"):
        create_model("mobilenet_v3_small", 4, class_names=["a", "b"])
    with pytest.raises(ValueError, match="num_classes"):
        create_model("mobilenet_v3_small", 0)


def test_rebuild_from_card_loads_the_checkpoint() -> None:
    model = create_model("mobilenet_v3_small", 4).eval()
    model.card.extra["threshold"] = 0.3
    rebuilt = create_model_from_card(model.card).eval()
    rebuilt.load_state_dict(model.state_dict())
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), model(x))
    assert rebuilt.card.extra == {"threshold": 0.3}
