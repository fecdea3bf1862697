"""Activation caching: run the frozen part of the backbone once per augmented view, not once per epoch.

Both training phases keep the lower part of the backbone frozen: phase 1 freezes all of it, phase 2 trains only
the top blocks. So the lower blocks' output for a given (augmented) image never changes during training. We
compute it once for ``views`` augmented copies of every training image (view 0 is the plain image) and keep it
in memory as float16; each epoch then draws one view per image and runs only the top blocks and the head.

That pass — most of the network's FLOPs — runs in ONNX Runtime when it is installed (2–4× faster than PyTorch
eager on these CPUs), else in PyTorch. The trade-off: fine-tuning sees ``views`` fixed augmentations per image
instead of fresh ones every epoch (``cache_fine_tune = false`` restores fresh augmentation, at full cost).
"""

from __future__ import annotations

import math
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from braintumor.models.net import BrainTumorNet
from braintumor.training.data import augment_batch, normalise

CHUNK = 64


def split_index(model: BrainTumorNet, unfreeze_fraction: float, fine_tune: bool) -> int:
    """Number of backbone blocks that stay frozen in every phase (the cached part)."""
    n = len(model.backbone.blocks())
    if not fine_tune or unfreeze_fraction <= 0:
        return n
    return n - math.ceil(unfreeze_fraction * n)


class LowerBlocks:
    """The frozen lower blocks ``features[:split]`` as a callable on normalised images (ORT or torch)."""

    def __init__(self, model: BrainTumorNet, split: int, size: int, *, engine: str = "auto") -> None:
        self.module = nn.Sequential(*model.backbone.blocks()[:split]).eval()
        self.session: Any = None
        if engine in ("auto", "onnxruntime") and split > 0:
            self.session = _ort_session(self.module, size)
            if self.session is None and engine == "onnxruntime":
                raise RuntimeError("onnxruntime is not available for activation caching")

    @property
    def engine(self) -> str:
        return "onnxruntime" if self.session is not None else "torch"

    @torch.inference_mode()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            out = self.session.run(None, {"x": x.contiguous().numpy()})[0]
            return torch.from_numpy(out)
        return self.module(x.contiguous())  # type: ignore[no-any-return]


def _ort_session(module: nn.Module, size: int) -> Any:
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "lower.onnx"
        example = torch.zeros(2, 3, size, size)
        with warnings.catch_warnings(), torch.inference_mode():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=False,  # the TorchScript exporter: seconds, where the dynamo exporter takes tens
                opset_version=17,
                input_names=["x"],
                output_names=["y"],
                dynamic_axes={"x": {0: "n"}, "y": {0: "n"}},
            )
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads() or os.cpu_count() or 1
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # No spin-waiting after a run: training alternates ONNX Runtime with torch (augmentation, the top blocks)
        # in one process, and spinning pool threads would take the cores torch needs next (and starve any other
        # job on a small machine).
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def cache_views(
    lower: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mean: tuple[float, float, float],
    std: tuple[float, float, float],
    views: int,
    augment: Callable[[torch.Tensor], torch.Tensor] | Any,
    *,
    progress: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """``lower``'s outputs (V × N × …, float16: lower-block activations, or pooled features) for ``views`` views
    of ``images`` (uint8 N×3×S×S); view 0 is the plain image."""
    n = len(images)
    out: torch.Tensor | None = None
    for v in range(views):
        for start in range(0, n, CHUNK):
            chunk = images[start : start + CHUNK]
            if v > 0:
                chunk = augment_batch(chunk, augment)
            act = lower(normalise(chunk, mean, std))
            if out is None:
                out = torch.empty((views, n, *act.shape[1:]), dtype=torch.float16)
            out[v, start : start + len(chunk)] = act.to(torch.float16)
            if progress:
                progress(len(chunk))
    assert out is not None
    return out


def estimate_bytes(model: BrainTumorNet, split: int, size: int, n_images: int, views: int) -> int:
    """Memory the float16 cache will take (one probe image through the lower blocks)."""
    with torch.inference_mode():
        probe = nn.Sequential(*model.backbone.blocks()[:split]).eval()(torch.zeros(1, 3, size, size))
    return int(np.prod(probe.shape[1:])) * 2 * n_images * views
