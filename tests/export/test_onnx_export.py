"""ONNX export parity with PyTorch: probabilities within 1e-4, Grad-CAM maps highly correlated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from braintumor.export.onnx import export_run, torch_reference
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import letterbox, to_rgb


def _batch(folder: Path, size: int, n: int = 6) -> np.ndarray:
    paths = sorted(folder.rglob("*.jpg"))[:: max(1, len(sorted(folder.rglob("*.jpg"))) // n)][:n]
    return np.stack([to_rgb(letterbox(load_image(p).pixels, size)[0]) for p in paths])


def test_export_matches_pytorch(smoke_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    out = export_run(smoke_run, tmp_path / "onnx")
    card = json.loads((out / "card.json").read_text())
    assert card["extra"]["export"]["input"] == {
        "name": "image",
        "dtype": "uint8",
        "layout": "NHWC",
        "size": 224,
        "preprocessing": "letterbox-v1",
    }
    images = _batch(tiny_dataset, 224)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    probs, _logits, cam, features = session.run(None, {"image": images})
    assert features.shape == (len(images), 576)
    ref_probs, ref_maps = torch_reference(smoke_run, images)
    np.testing.assert_allclose(probs, ref_probs, atol=1e-4)
    assert cam.shape == ref_maps.shape == (len(images), 224, 224)
    for a, b in zip(cam, ref_maps, strict=True):
        if b.std() > 0:
            assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.99
        else:
            assert a.max() < 1e-5
    np.testing.assert_allclose(probs.sum(axis=1), 1, atol=1e-5)
