"""The one heatmap renderer: hot regions turn red, cold regions leave the scan as it was."""

from __future__ import annotations

import numpy as np
import pytest

from braintumor.imaging.overlay import colorize, normalise_map, overlay


def test_overlay_renders_hot_region() -> None:
    scan = np.full((50, 80), 60, np.uint8)
    cam = np.zeros((10, 16), np.float32)
    cam[4:6, 7:9] = 5.0
    out = overlay(scan, cam, alpha=0.5)
    assert out.shape == (50, 80, 3)
    hot = out[22:28, 37:43].astype(int)
    cold = out[2:6, 2:6].astype(int)
    assert (hot[..., 0] - hot[..., 2]).mean() > 50  # jet: hot is red
    assert np.abs(cold - 60).max() <= 1  # cold regions leave the scan as it was
    assert normalise_map(np.zeros((3, 3))).max() == 0
    assert colorize(np.array([[0.0, 1.0]])).shape == (1, 2, 3)
    with pytest.raises(ValueError, match="alpha"):
        overlay(scan, cam, alpha=2)
