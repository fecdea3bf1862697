"""Export a trained run to ONNX with calibrated probabilities and Grad-CAM computed inside the graph.

The serving graph takes letterboxed ``uint8`` images (N×S×S×3, what the decoder produces) and does the
rest itself: scaling, normalisation, the backbone, the head, temperature scaling, and the Grad-CAM map of
the predicted class. No backward pass is needed: with the head GAP → Linear(W1) → ReLU → Linear(W2), the
gradient of a logit with respect to the feature map is known in closed form,

    ∂y_c / ∂A_k,ij = (1 / hw) · Σ_u W2[c, u] · 1[h_u > 0] · W1[u, k],

so the Grad-CAM channel weights are one masked matrix product of the head's weights — exactly what
autograd would give, at the cost of a few small matrix products (≈1.0× a plain forward).

Outputs: ``probs`` (N×K calibrated probabilities; K = 2 for binary models: [p(no tumor), p(tumor)]),
``logits`` (N×outputs, raw), ``cam`` (N×S×S raw Grad-CAM of the predicted class, ≥ 0) and ``features``
(N×C pooled backbone features, which the input gate compares with the training data).
"""

from __future__ import annotations

import copy
import hashlib
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn

from braintumor.models.card import ExportInfo
from braintumor.models.export_dir import EnsembleMember, EnsembleSpec, ExportDir
from braintumor.models.net import BrainTumorNet

OPSET = 18  # what the dynamo exporter writes (it cannot down-convert these graphs)
OUTPUTS = ("probs", "logits", "cam", "features")


class ServingGraph(nn.Module):
    """Wraps a :class:`~braintumor.models.BrainTumorNet` into the serving contract above."""

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, model: BrainTumorNet, temperature: float = 1.0) -> None:
        super().__init__()
        # Training may leave weights channels-last; exporting them so adds layout transposes to the graph.
        self.model = model.to(memory_format=torch.contiguous_format).eval()
        card = model.card
        self.binary = card.num_outputs == 1
        self.register_buffer("mean", torch.tensor(card.mean, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(card.std, dtype=torch.float32).view(1, 3, 1, 1) * 255.0)
        self.temperature = float(temperature)
        linears = [m for m in model.head.modules() if isinstance(m, nn.Linear)]
        if len(linears) != 2:
            raise ValueError("in-graph Grad-CAM expects the head GAP → Linear → ReLU → Dropout → Linear")
        self.fc1, self.fc2 = linears
        self.size = card.input_size

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        x = (image.permute(0, 3, 1, 2).float() - self.mean) / self.std
        fmap = self.model.forward_features(x)  # N×C×h×w
        pooled = fmap.mean(dim=(2, 3))
        hidden = self.fc1(pooled)
        mask = (hidden > 0).to(fmap.dtype)
        logits = self.fc2(torch.relu(hidden))
        w2 = self.fc2.weight  # outputs × U
        if self.binary:
            sign = (logits[:, :1] > 0).to(fmap.dtype) * 2 - 1  # explain "tumor" (+) or "no tumor" (−)
            row = sign * w2[0]  # N×U
            p = torch.sigmoid(logits[:, 0] / self.temperature)
            probs = torch.stack([1 - p, p], dim=1)
        else:
            row = w2[logits.argmax(dim=1)]  # N×U
            probs = torch.softmax(logits / self.temperature, dim=1)
        hw = fmap.shape[2] * fmap.shape[3]
        weights = (row * mask) @ self.fc1.weight / hw  # N×C: Grad-CAM channel weights
        cam = torch.relu((weights[:, :, None, None] * fmap).sum(dim=1, keepdim=True))
        cam = F.interpolate(cam, size=(self.size, self.size), mode="bilinear", align_corners=False)[:, 0]
        return probs, logits, cam, pooled


def export_onnx(module: nn.Module, path: Path, size: int, outputs: Sequence[str] = OUTPUTS) -> Path:
    """Export ``module`` (uint8 N×S×S×3 ``image`` in) to ``path`` with a dynamic batch, written to a temporary
    name and renamed; the dynamo exporter at :data:`OPSET`."""
    example = torch.zeros(2, size, size, 3, dtype=torch.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with torch.inference_mode():
        torch.onnx.export(
            module,
            (example,),
            str(tmp),
            dynamo=True,
            external_data=False,
            opset_version=OPSET,
            input_names=["image"],
            output_names=list(outputs),
            dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=4096)},),
        )
    tmp.replace(path)
    return path


def export_run(run_dir: str | Path, out_dir: str | Path, *, check: bool = True) -> Path:
    """Export one training run to ``out_dir/model.onnx`` + ``card.json``; returns ``out_dir``.

    The card gains an ``export`` section (opset, input/output contract, SHA-256 of the ONNX file) and keeps
    the calibration (temperature, decision rule) that the graph and the predictor apply.
    """
    from braintumor.training.checkpoint import load_checkpoint

    run = Path(run_dir)
    model, _ = load_checkpoint(run / "checkpoint.pt")
    return export_model(model, out_dir, source_run=run.name, check=check)


def export_model(model: BrainTumorNet, out_dir: str | Path, *, source_run: str, check: bool = True) -> Path:
    """Export a model in memory the way :func:`export_run` exports a run (``source_run`` names where it came
    from in the card); the benchmarks export random-init backbones through it."""
    card = copy.deepcopy(model.card)
    graph = ServingGraph(model, card.temperature).eval()
    size = card.input_size
    out = ExportDir(out_dir)
    out.root.mkdir(parents=True, exist_ok=True)
    onnx_path = export_onnx(graph, out.model_file("fp32"), size)
    if check:
        import onnx

        onnx.checker.check_model(str(onnx_path))
    card.export = ExportInfo(
        opset=OPSET,
        input={"name": "image", "dtype": "uint8", "layout": "NHWC", "size": size, "preprocessing": "letterbox-v1"},
        outputs={
            "probs": f"N×{max(len(card.class_names), 2)} calibrated probabilities",
            "logits": "raw logits",
            "cam": "N×S×S raw Grad-CAM of the predicted class",
            "features": "N×C pooled backbone features (input gate)",
        },
        probs_classes=list(card.class_names),
        temperature=card.temperature,
        sha256=hashlib.sha256(onnx_path.read_bytes()).hexdigest(),
        source_run=source_run,
    )
    out.write_card(card)
    return Path(out.root)


def export_runs(run_dirs: Sequence[str | Path], out_dir: str | Path, *, name: str = "ensemble") -> Path:
    """Export several runs as an averaging ensemble: one sub-folder per member and an ``ensemble.json``."""
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    members = []
    for run in run_dirs:
        member = Path(run).name
        export_run(run, out / member)
        members.append(EnsembleMember(member, member, 1.0))
    ExportDir(out).write_ensemble(EnsembleSpec(name, members))
    return out
