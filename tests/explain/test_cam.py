from __future__ import annotations

import gc

import numpy as np
import pytest
import torch
from torch import nn

from braintumor.explain.cam import GradCAM, GradCAMPlusPlus


class SpotDetector(nn.Module):
    """A model whose evidence is known: feature = image brightness, logit = mean feature − bias."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 1, kernel_size=1, bias=False)
        nn.init.constant_(self.features.weight, 1 / 3)
        self.head = nn.Linear(1, 1)
        nn.init.constant_(self.head.weight, 10.0)
        nn.init.constant_(self.head.bias, -0.05)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.relu(self.features(x)).mean(dim=(2, 3)))


def _image_with_spot(cy: int, cx: int, size: int = 64) -> torch.Tensor:
    x = torch.zeros(1, 3, size, size)
    x[:, :, cy - 4 : cy + 4, cx - 4 : cx + 4] = 1.0
    return x


@pytest.mark.parametrize("method", [GradCAM, GradCAMPlusPlus])
def test_map_moves_with_the_evidence(method: type[GradCAM]) -> None:
    model = SpotDetector()
    for cy, cx in [(12, 12), (50, 20), (30, 52)]:
        with method(model, "features") as cam:
            result = cam(_image_with_spot(cy, cx))
        peak = np.unravel_index(int(result.maps[0].argmax()), result.maps[0].shape)
        assert abs(peak[0] - cy) <= 4 and abs(peak[1] - cx) <= 4
        assert int(result.target_class[0]) == 1  # the spot makes the logit positive: "tumor"
        assert result.maps.shape == (1, 64, 64) and float(result.maps.min()) >= 0


def test_negative_class_target_explains_the_opposite() -> None:
    model = SpotDetector()
    with GradCAM(model, "features") as cam:
        result = cam(_image_with_spot(32, 32), target_class=0)
    assert float(result.maps.max()) == 0.0  # brightness is evidence *for* tumor, never against it


def test_hooks_are_released_even_when_the_forward_fails() -> None:
    model = SpotDetector()
    layer = model.features
    with pytest.raises(RuntimeError, match=r"channels|expected"), GradCAM(model, "features") as cam:
        cam(torch.zeros(1, 5, 8, 8))  # wrong channel count: the forward pass raises
    assert not layer._forward_hooks
    with pytest.raises(RuntimeError, match="context manager"):
        GradCAM(model, "features")(torch.zeros(1, 3, 8, 8))


def test_no_memory_growth_over_many_calls() -> None:
    from braintumor.models.factory import create_model

    model = create_model("mobilenet_v3_small", 1, pretrained=False).eval()
    x = torch.randn(2, 3, 96, 96)
    layer = model.get_submodule(model.card.cam_layer)

    def run(n: int) -> None:
        for _ in range(n):
            with GradCAM(model, model.card.cam_layer) as cam:
                cam(x)

    run(3)
    gc.collect()
    before = len(gc.get_objects())
    run(30)
    gc.collect()
    after = len(gc.get_objects())
    assert after - before < 200
    assert not layer._forward_hooks and not layer._backward_hooks
    assert all(p.grad is None for p in model.parameters())
