"""ONNX export parity with PyTorch: probabilities within 1e-4, Grad-CAM maps highly correlated."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from braintumor.explain.cam import GradCAM
from braintumor.export.onnx import export_run
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import letterbox, to_rgb
from braintumor.training.checkpoint import load_checkpoint


def torch_reference(run_dir: str | Path, images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities and Grad-CAM maps of the PyTorch model (autograd), what the ONNX graph must reproduce."""
    model, _ = load_checkpoint(Path(run_dir) / "checkpoint.pt")
    card = model.card
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
    x = (x - torch.tensor(card.mean).view(1, 3, 1, 1)) / torch.tensor(card.std).view(1, 3, 1, 1)
    with GradCAM(model, card.cam_layer) as cam:
        result = cam(x)
    logits = result.logits.double() / card.temperature
    if logits.shape[1] == 1:
        p = torch.sigmoid(logits[:, 0])
        probs = torch.stack([1 - p, p], dim=1)
    else:
        probs = torch.softmax(logits, dim=1)
    return probs.numpy(), result.maps.numpy()


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
