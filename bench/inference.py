"""Inference benchmark: what a scan costs on this CPU, from the raw matmul peak to the `braintumor predict` CLI.

    .venv/bin/python bench/inference.py            # full run (~15 min on 2 idle cores), writes bench/results.md
    .venv/bin/python bench/inference.py --quick    # mobilenet_v2 and resnet50 only, fewer repeats (~5 min)

What it measures, and why:

1. **sgemm peak.** A 2048² float32 matmul in numpy (OpenBLAS, its own core detection) and in torch, best of
   several. numpy's figure is the FP32 GFLOP/s ceiling that the networks below are compared with, so "share of
   peak" says how well each runtime uses the machine instead of restating that the machine is slow or busy.
2. **Backbones.** Every registered seed backbone (random init: speed does not depend on the weights) at batch 1
   and 16, in three runtimes: PyTorch eager (``model(x)``, backbone + head, on the normalised float batch); the
   project's ``ServingGraph`` (uint8 NHWC in; probs, logits, Grad-CAM and features out) exported to ONNX and run
   by ONNX Runtime in fp32; and that export quantized to static int8 QDQ by the project's own
   ``quantize_export`` (calibrated on 32 real letterboxed scans). GFLOP per image come from ``FlopCounterMode``
   (2 × multiply-adds of the convolutions and matrix products of backbone + head).
   2b. A what-if for MobileNetV2 and ResNet50: the same static int8 with ReLU/ReLU6 and residual Adds quantized
   too (the project quantizes only Conv nodes, which leaves fp32 round trips around every activation).
3. **Grad-CAM cost.** The in-graph Grad-CAM (closed-form channel weights from the head) against the same
   network exported without the CAM branch, and PyTorch's autograd ``GradCAM`` against a plain PyTorch
   forward. Goal: in-graph Grad-CAM ≤ 1.1× a plain forward.
4. **`braintumor predict` end to end** on 256 real JPEGs (Br35H "yes", copied to a temporary folder), with
   and without heatmaps, with the bundled default model when this checkout carries one; plus an in-process
   run of the same code (``iter_scores``) and a per-stage cost breakdown (decode, letterbox, ONNX Runtime,
   post-processing, heatmap overlay). Goal: ≥ 100 scans/s.
5. **Single-scan latency** of ``Predictor.predict(load_image(path))`` (decode → label + heatmap) over 50 scans:
   median and p90, split into decode + letterbox, ONNX Runtime and post-processing (CAM unmapping). Goal:
   ≤ 25 ms per scan.
6. **Our code around the models**: one scan end to end and ``iter_scores`` over 64 files (no heatmaps)
   against the members' bare ONNX Runtime sessions on the same scans already letterboxed, interleaved (issue
   17). Goals: ≤ 1.15× single, ≤ 1.10× batch. Then each step of the single-scan path timed on its own (decode,
   gate, letterbox, models, post-processing), so the ratio's extra time has names. ``--overhead`` runs this
   section alone.

The machine is shared and noisy, so contenders are timed in interleaved rounds (A B C, C B A, …) and every
ratio is the median of per-round ratios, measured in the same run; times are medians of the rounds. Torch and
ONNX Runtime both use 2 threads. Nothing is downloaded, and no image is written inside the repository.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import ctypes
import dataclasses
import datetime as dt
import functools
import gc
import io
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from PIL import Image
from torch import nn

from braintumor.data.datasets import ImageRecord
from braintumor.errors import BrainTumorError
from braintumor.explain.cam import GradCAM
from braintumor.export.onnx import ServingGraph, export_model
from braintumor.export.onnx import export_onnx as onnx_export
from braintumor.export.quantize import quantize_export
from braintumor.imaging.io import load_image
from braintumor.imaging.overlay import overlay
from braintumor.imaging.transforms import letterbox, to_rgb
from braintumor.imaging.types import LoadedImage
from braintumor.inference.batch import iter_scores
from braintumor.inference.bundled import bundled_model_dir
from braintumor.inference.members import load_members, preprocess_batch, single_threaded_blas
from braintumor.inference.members import session as member_session
from braintumor.inference.predictor import Predictor, Rejection
from braintumor.models.export_dir import INT8_FILE, MODEL_FILE, ExportDir
from braintumor.models.factory import create_model
from braintumor.models.net import BrainTumorNet

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CALIBRATION_DATA = DATA / "brain_tumor_dataset"
SCAN_DATA = DATA / "br35h" / "yes"
RESULTS = ROOT / "bench" / "results.md"

THREADS = 2
BACKBONES = (
    "vgg16",
    "resnet50",
    "inception_v3",
    "efficientnet_b0",
    "mobilenet_v3_large",
    "mobilenet_v2",
    "efficientnet_lite0",
)
QUICK_BACKBONES = ("mobilenet_v2", "resnet50")
CAM_BACKBONES = ("mobilenet_v2", "resnet50")
BATCHES = (1, 16)
N_CALIBRATION = 32
N_SCANS = 256
N_LATENCY = 50
RUNTIMES = ("torch eager", "ORT fp32", "ORT int8")
# Grad-CAM contenders (section 3).
CAM_FULL = "ORT full graph (probs + in-graph CAM)"
CAM_PLAIN = "ORT without CAM branch (probs only)"
CAM_AUTOGRAD = "torch autograd GradCAM"
CAM_FORWARD = "torch plain forward"
# braintumor predict modes (section 4).
NO_CAM = "without heatmaps (--no-cam)"
WITH_CAM = "with heatmaps (--cam-dir)"

# Goals this benchmark checks.
GOAL_CAM_RATIO = 1.1
GOAL_BATCH_SCANS_PER_S = 100.0
GOAL_SCAN_MS = 25.0
GOAL_INT8_SPEEDUP = 3.0


@dataclass(frozen=True)
class Settings:
    """How long to spend: each timed group gets ``budget_s`` of interleaved rounds, within the repeat bounds."""

    quick: bool
    budget_s: float
    min_repeats: int
    max_repeats: int
    sgemm_repeats: int
    cli_repeats: int

    @classmethod
    def make(cls, quick: bool) -> Settings:
        if quick:
            return cls(quick, budget_s=3.0, min_repeats=3, max_repeats=30, sgemm_repeats=5, cli_repeats=2)
        return cls(quick, budget_s=6.0, min_repeats=3, max_repeats=60, sgemm_repeats=10, cli_repeats=3)


# -- timing ------------------------------------------------------------------------------------------------
@dataclass
class Timing:
    """Seconds per call over the timed rounds (warm-up excluded)."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def p90(self) -> float:
        return float(np.percentile(self.samples, 90))

    @property
    def n(self) -> int:
        return len(self.samples)

    def ratio(self, other: Timing) -> float:
        """Median of the per-round ratios self / other (paired rounds, so shared load bursts cancel)."""
        return statistics.median(a / b for a, b in zip(self.samples, other.samples, strict=True))


def _time_call(fn: Callable[[], object]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    fns: Mapping[str, Callable[[], object]], settings: Settings, *, repeats: int | None = None
) -> dict[str, Timing]:
    """Warm every contender up, then time them in interleaved rounds (A B C, C B A, …).

    Unless ``repeats`` is given, the number of rounds fills ``settings.budget_s`` within the repeat bounds, so
    slow models (VGG16, Inception) get fewer rounds than fast ones.
    """
    round_s = sum(_time_call(fn) for fn in fns.values())
    if round_s < 1.0:  # cheap calls: a second warm-up round lets allocators and caches settle
        round_s = sum(_time_call(fn) for fn in fns.values())
    if repeats is None:
        fit = int(settings.budget_s / max(round_s, 1e-9))
        repeats = max(settings.min_repeats, min(settings.max_repeats, fit))
    timings = {name: Timing() for name in fns}
    order = list(fns)
    for k in range(repeats):
        for name in order if k % 2 == 0 else reversed(order):  # alternate the order: no contender always goes first
            timings[name].samples.append(_time_call(fns[name]))
    return timings


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silence the exporter's and the quantizer's progress chatter (they print and log on both streams)."""
    sink = io.StringIO()
    with warnings.catch_warnings(), contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        warnings.simplefilter("ignore")
        yield


def log(message: str, start: float) -> None:
    print(f"[{time.perf_counter() - start:6.0f} s] {message}", flush=True)


def load_average() -> str:
    return "/".join(f"{x:.1f}" for x in os.getloadavg())


# -- machine -----------------------------------------------------------------------------------------------
def _openblas_core() -> str:
    """OpenBLAS's own CPU detection (which kernels numpy's sgemm uses), read from the bundled library."""
    libs = sorted((Path(np.__file__).parent.parent / "numpy.libs").glob("libscipy_openblas*.so"))
    if not libs:
        return "unknown"
    try:
        lib = ctypes.CDLL(str(libs[0]))
        corename = lib.scipy_openblas_get_corename64_
        corename.restype = ctypes.c_char_p
        threads = lib.scipy_openblas_get_num_threads64_()
        return f"{corename().decode()} kernels, {threads} threads"
    except (OSError, AttributeError):
        return "unknown"


def machine_info() -> list[tuple[str, str]]:
    cpuinfo = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set(fields.get("flags", "").split())
    simd = [f for f in ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile") if f in flags]
    cpu = (
        f"{fields.get('model name', platform.processor())} (family {fields.get('cpu family', '?')}, model "
        f"{fields.get('model', '?')}); {', '.join(simd)}"
    )
    import onnx
    import onnxscript
    import PIL

    versions = (
        f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, onnxruntime "
        f"{ort.__version__}, onnx {onnx.__version__}, onnxscript {onnxscript.__version__}, Pillow {PIL.__version__}"
    )
    env = ", ".join(
        f"{k}={os.environ.get(k, '(unset)')}" for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
    )
    return [
        ("CPU", cpu),
        ("cores", f"{os.cpu_count()} logical, {len(os.sched_getaffinity(0))} usable by this process"),
        ("threads", f"torch {torch.get_num_threads()} intra-op, ONNX Runtime {THREADS} intra-op / 1 inter-op"),
        ("numpy BLAS", f"OpenBLAS ({_openblas_core()}); environment: {env}"),
        (
            "torch CPU",
            f"oneDNN {'available' if torch.backends.mkldnn.is_available() else 'absent'}, "  # type: ignore[no-untyped-call]
            f"capability {torch.backends.cpu.get_cpu_capability()}",
        ),
        ("ORT providers", ", ".join(ort.get_available_providers())),
        ("versions", versions),
        ("platform", platform.platform()),
    ]


# -- 1. sgemm ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Sgemm:
    n: int
    numpy: Timing
    torch: Timing

    def gflops(self, seconds: float) -> float:
        return 2 * self.n**3 / seconds / 1e9

    @property
    def peak(self) -> float:
        """The FP32 peak estimate the rest of the benchmark divides by: numpy's best sgemm."""
        return self.gflops(self.numpy.best)


def sgemm_section(settings: Settings, n: int = 2048) -> Sgemm:
    rng = np.random.default_rng(0)
    a = rng.standard_normal((n, n), dtype=np.float32)
    b = rng.standard_normal((n, n), dtype=np.float32)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    timings = interleaved(
        {"numpy": functools.partial(np.matmul, a, b), "torch": functools.partial(torch.matmul, ta, tb)},
        settings,
        repeats=settings.sgemm_repeats,
    )
    return Sgemm(n, timings["numpy"], timings["torch"])


# -- shared helpers: data, export, sessions ----------------------------------------------------------------
def calibration_records(n: int = N_CALIBRATION) -> list[ImageRecord]:
    """``n`` decodable scans from the seed dataset, alternating tumor / no tumor."""
    by_label = {
        label: sorted(p for p in (CALIBRATION_DATA / label).iterdir() if p.is_file()) for label in ("yes", "no")
    }
    records: list[ImageRecord] = []
    for pair in zip(by_label["yes"], by_label["no"], strict=False):
        for path in pair:
            try:
                load_image(path)
            except BrainTumorError:
                continue
            records.append(ImageRecord(path, "tumor" if path.parent.name == "yes" else "no_tumor", "seed"))
    return records[:n]


def letterboxed_batch(records: Sequence[ImageRecord], size: int, batch: int) -> np.ndarray:
    """A uint8 N×S×S×3 batch of real letterboxed scans (repeated when there are fewer than ``batch``)."""
    images = [to_rgb(letterbox(load_image(r.path).pixels, size)[0]) for r in records[:batch]]
    return np.stack([images[k % len(images)] for k in range(batch)])


def normalised(x: np.ndarray, model: BrainTumorNet) -> torch.Tensor:
    """What PyTorch code feeds the model: float N×3×S×S, contiguous, scaled by the card's mean and std."""
    mean = torch.tensor(model.card.mean).view(1, 3, 1, 1)
    std = torch.tensor(model.card.std).view(1, 3, 1, 1)
    return ((torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255 - mean) / std).contiguous()


def export_onnx(module: nn.Module, path: Path, size: int, output_names: Sequence[str]) -> None:
    """The project's own export (dynamo, :data:`OPSET`, dynamic batch), without its progress chatter."""
    with quiet():
        onnx_export(module, path, size, output_names)


def export_serving(model: BrainTumorNet, folder: Path) -> None:
    """``folder/model.onnx`` (the full ServingGraph) and its card, exactly as ``braintumor export`` writes them."""
    with quiet():
        export_model(model, folder, source_run="bench/inference.py (random init)")


def session(path: Path) -> ort.InferenceSession:
    """The predictor's own session (all graph optimizations, :data:`THREADS` intra-op, 1 inter-op thread)."""
    return member_session(path, THREADS)


def count_gflop(model: nn.Module, size: int) -> float:
    """GFLOP per image (2 × multiply-adds) of backbone + head at batch 1."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(torch.zeros(1, 3, size, size))
    return counter.get_total_flops() / 1e9


def _torch_call(module: nn.Module, x: torch.Tensor) -> None:
    with torch.inference_mode():
        module(x)


def _ort_call(sess: ort.InferenceSession, x: np.ndarray, outputs: list[str] | None = None) -> None:
    sess.run(outputs, {"image": x})


def _opset(path: Path) -> int:
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return max(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


# -- 2. backbones ------------------------------------------------------------------------------------------
@dataclass
class BackboneResult:
    name: str
    size: int
    gflop: float
    export_s: float
    quantize_s: float | None
    quantize_error: str | None
    opset: int
    # batch → runtime → timing; ORT fp32 and int8 come from their own interleaved pair
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)
    # batch → ORT fp32 speed-up over torch eager, from the (torch eager, ORT fp32) pair
    ort_over_torch: dict[int, float] = field(default_factory=dict)

    def speedup(self, batch: int, runtime: str) -> float:
        """How many times faster than ORT fp32 ``runtime`` ran (median of paired per-round ratios)."""
        t = self.timings[batch]
        if runtime == "torch eager":
            return 1 / self.ort_over_torch[batch]
        return t["ORT fp32"].ratio(t[runtime])


def backbone_section(
    names: Sequence[str],
    calibration: Sequence[ImageRecord],
    work: Path,
    settings: Settings,
    start: float,
    keep: Sequence[str],
) -> tuple[list[BackboneResult], dict[str, tuple[BrainTumorNet, Path]]]:
    """Time every backbone in three runtimes; keep the models named in ``keep`` (and their export folders)."""
    results: list[BackboneResult] = []
    kept: dict[str, tuple[BrainTumorNet, Path]] = {}
    for name in names:
        model = create_model(name, 1, pretrained=False).eval()
        size = model.card.input_size
        folder = work / name
        t0 = time.perf_counter()
        export_serving(model, folder)
        export_s = time.perf_counter() - t0
        quantize_s, quantize_error = None, None
        t0 = time.perf_counter()
        try:
            with quiet():
                quantize_export(folder, calibration)
            quantize_s = time.perf_counter() - t0
        except Exception as exc:  # report it in the table, keep going with fp32
            quantize_error = f"{type(exc).__name__}: {str(exc).splitlines()[0][:120]}"
        result = BackboneResult(
            name, size, count_gflop(model, size), export_s, quantize_s, quantize_error, _opset(folder / MODEL_FILE)
        )
        log(f"{name}: export {export_s:.0f} s, quantize {quantize_s or float('nan'):.0f} s", start)
        sessions = {"ORT fp32": session(folder / MODEL_FILE)}
        if quantize_error is None:
            sessions["ORT int8"] = session(folder / INT8_FILE)
        for batch in BATCHES:
            # Two interleaved pairs rather than one triple: the cheap ONNX Runtime pair (the int8 goal) gets many
            # rounds instead of the few that slow PyTorch calls leave, and no ORT int8/fp32 call follows a torch
            # call, whose OpenMP threads keep spinning for a while after it returns.
            x = letterboxed_batch(calibration, size, batch)
            ort_fns = {k: functools.partial(_ort_call, s, x) for k, s in sessions.items()}
            result.timings[batch] = interleaved(ort_fns, settings)
            pair = interleaved(
                {
                    "torch eager": functools.partial(_torch_call, model, normalised(x, model)),
                    "ORT fp32": ort_fns["ORT fp32"],
                },
                settings,
            )
            result.timings[batch]["torch eager"] = pair["torch eager"]
            result.ort_over_torch[batch] = pair["torch eager"].ratio(pair["ORT fp32"])
            summary = ", ".join(
                f"{k} {result.timings[batch][k].median * 1e3:.1f} ms" for k in RUNTIMES if k in result.timings[batch]
            )
            n = "/".join(str(result.timings[batch][k].n) for k in RUNTIMES if k in result.timings[batch])
            log(f"{name} batch {batch}: {summary} (n={n}, load {load_average()})", start)
        results.append(result)
        if name in keep:
            kept[name] = (model, folder)
        del sessions, model
        gc.collect()
    return results, kept


# -- 2b. int8 what-if: quantize the activations too ---------------------------------------------------------
VARIANT_OPS = ("Conv", "Clip", "Relu", "Add")
INT8_VARIANT = "ORT int8, Conv+Clip+Relu+Add (what-if)"


def quantize_variant(folder: Path, calibration: Sequence[ImageRecord], size: int) -> Path:
    """``quantize_export``'s exact settings, except that ReLU/ReLU6 (Clip) and residual Adds are quantized too,
    which lets ONNX Runtime fold each activation into its QLinearConv instead of leaving a DequantizeLinear →
    activation → QuantizeLinear round trip in fp32 after every convolution."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    from braintumor.export.quantize import _Reader

    prepped, out = folder / "variant-prepped.onnx", folder / "model.int8-variant.onnx"
    with quiet():
        quant_pre_process(str(folder / MODEL_FILE), str(prepped), skip_symbolic_shape=True)
        quantize_static(
            str(prepped),
            str(out),
            _Reader(list(calibration), size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=list(VARIANT_OPS),
            calibrate_method=CalibrationMethod.Percentile,
            extra_options={"CalibPercentile": 99.99},
        )
    return out


def optimized_op_counts(path: Path) -> dict[str, int]:
    """Node types of the graph ONNX Runtime actually runs (after its graph optimizations)."""
    import onnx

    with tempfile.TemporaryDirectory() as tmp:
        opts = ort.SessionOptions()
        opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        opts.optimized_model_filepath = str(Path(tmp) / "optimized.onnx")
        ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        graph = onnx.load(opts.optimized_model_filepath).graph
    counts: dict[str, int] = {}
    for node in graph.node:
        counts[node.op_type] = counts.get(node.op_type, 0) + 1
    return counts


@dataclass
class VariantResult:
    name: str
    ops: dict[str, dict[str, int]]  # runtime → optimized op counts
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)
    max_prob_diff: float = 0.0  # |p(tumor) variant − fp32|, max over the calibration batch


def int8_variant_section(
    kept: dict[str, tuple[BrainTumorNet, Path]],
    calibration: Sequence[ImageRecord],
    settings: Settings,
    start: float,
) -> list[VariantResult]:
    results = []
    for name, (model, folder) in kept.items():
        size = model.card.input_size
        paths = {"ORT fp32": folder / MODEL_FILE, "ORT int8": folder / INT8_FILE}
        if not paths["ORT int8"].is_file():
            continue
        paths[INT8_VARIANT] = quantize_variant(folder, calibration, size)
        sessions = {k: session(v) for k, v in paths.items()}
        result = VariantResult(name, {k: optimized_op_counts(v) for k, v in paths.items()})
        x = letterboxed_batch(calibration, size, 16)
        p32 = sessions["ORT fp32"].run(["probs"], {"image": x})[0]
        p8 = sessions[INT8_VARIANT].run(["probs"], {"image": x})[0]
        result.max_prob_diff = float(np.abs(p32[:, 1] - p8[:, 1]).max())
        for batch in BATCHES:
            xb = x[:batch]
            result.timings[batch] = interleaved(
                {k: functools.partial(_ort_call, v, xb) for k, v in sessions.items()}, settings
            )
            t = result.timings[batch]
            log(
                f"int8 what-if {name} batch {batch}: project int8 {t['ORT fp32'].ratio(t['ORT int8']):.2f}×, "
                f"variant {t['ORT fp32'].ratio(t[INT8_VARIANT]):.2f}× over fp32",
                start,
            )
        results.append(result)
        del sessions
        gc.collect()
    return results


# -- 3. Grad-CAM cost --------------------------------------------------------------------------------------
class ProbsOnly(nn.Module):
    """The serving graph without its Grad-CAM branch: same normalisation, backbone, pooling, head and
    calibration, returning only ``probs`` (binary models)."""

    def __init__(self, graph: ServingGraph) -> None:
        super().__init__()
        if not graph.binary:
            raise ValueError("ProbsOnly is written for single-logit models")
        self.serving = graph

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        g = self.serving
        x = (image.permute(0, 3, 1, 2).float() - g.mean) / g.std
        pooled = g.model.forward_features(x).mean(dim=(2, 3))
        logits = g.fc2(torch.relu(g.fc1(pooled)))
        p = torch.sigmoid(logits[:, 0] / g.temperature)
        return torch.stack([1 - p, p], dim=1)


@dataclass
class CamResult:
    name: str
    timings: dict[int, dict[str, Timing]] = field(default_factory=dict)


def _gradcam_call(model: BrainTumorNet, x: torch.Tensor) -> None:
    # The hook lives only for this call (registering it costs microseconds): while it is registered, a plain
    # inference-mode forward of the same model would fail in its retain_grad().
    with GradCAM(model, model.card.cam_layer) as cam:
        cam(x)


def cam_section(
    kept: dict[str, tuple[BrainTumorNet, Path]],
    calibration: Sequence[ImageRecord],
    work: Path,
    settings: Settings,
    start: float,
) -> list[CamResult]:
    results = []
    for name, (model, folder) in kept.items():
        size = model.card.input_size
        plain_path = work / f"{name}-probs-only.onnx"
        export_onnx(ProbsOnly(ServingGraph(model, 1.0).eval()), plain_path, size, ["probs"])
        full, plain = session(folder / MODEL_FILE), session(plain_path)
        result = CamResult(name)
        for batch in BATCHES:
            x = letterboxed_batch(calibration, size, batch)
            # Two pairs, each interleaved on its own (see backbone_section): ORT with/without CAM, torch with/without.
            t = result.timings[batch] = interleaved(
                {
                    CAM_FULL: functools.partial(_ort_call, full, x, None),
                    CAM_PLAIN: functools.partial(_ort_call, plain, x, ["probs"]),
                },
                settings,
            )
            xt = normalised(x, model)
            t |= interleaved(
                {
                    CAM_AUTOGRAD: functools.partial(_gradcam_call, model, xt),
                    CAM_FORWARD: functools.partial(_torch_call, model, xt),
                },
                settings,
            )
            in_graph, autograd = t[CAM_FULL].ratio(t[CAM_PLAIN]), t[CAM_AUTOGRAD].ratio(t[CAM_FORWARD])
            log(f"Grad-CAM {name} batch {batch}: in-graph {in_graph:.2f}×, autograd {autograd:.2f}×", start)
        results.append(result)
        del full, plain
        gc.collect()
    return results


# -- 4. braintumor predict end to end ----------------------------------------------------------------------
def copy_scans(target: Path, n: int = N_SCANS) -> list[Path]:
    """The first ``n`` Br35H "yes" files (sorted), copied into ``target`` (a temporary folder)."""
    target.mkdir(parents=True, exist_ok=True)
    sources = sorted(p for p in SCAN_DATA.iterdir() if p.is_file() and not p.name.startswith("."))[:n]
    return [Path(shutil.copy2(p, target / p.name)) for p in sources]


def serving_model(kept: dict[str, tuple[BrainTumorNet, Path]], work: Path) -> tuple[Path, str]:
    """The bundled default model if this checkout has one, else the fp32 MobileNetV2 export made above."""
    bundled = bundled_model_dir()
    if bundled is not None:
        shown = bundled.relative_to(ROOT) if bundled.is_relative_to(ROOT) else bundled
        return bundled, f"the bundled default model (`{shown}`)"
    if "mobilenet_v2" in kept:
        folder = kept["mobilenet_v2"][1]
    else:
        folder = work / "fallback-mobilenet_v2"
        export_serving(create_model("mobilenet_v2", 1, pretrained=False).eval(), folder)
    return folder, (
        "**no bundled default model in this checkout** (`src/braintumor/inference/default_model/` is absent): "
        "a stand-in made by this script, MobileNetV2 (random init, 1 logit, fp32 export with in-graph CAM, "
        "no input gate) — one member, where the default model may be an ensemble with a gate"
    )


def _cli(args: Sequence[str]) -> list[str]:
    exe = Path(sys.executable).parent / "braintumor"
    prefix = (
        [str(exe)]
        if exe.exists()
        else [sys.executable, "-c", "import sys; from braintumor.cli import main; sys.exit(main())"]
    )
    return [*prefix, *args]


def _run_cli(args: Sequence[str]) -> float:
    start = time.perf_counter()
    done = subprocess.run(_cli(args), capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"braintumor {' '.join(args)} failed ({done.returncode}): {done.stderr[-500:]}")
    return elapsed


def _statuses(csv_path: Path) -> dict[str, int]:
    with csv_path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    out: dict[str, int] = {}
    for row in rows:
        out[row["status"]] = out.get(row["status"], 0) + 1
    return out


@dataclass
class StageCosts:
    """Per-image milliseconds of each step of batch scoring, each timed on its own, single-threaded Python."""

    ms: dict[str, float]
    sizes: str
    decoded_mb: float


def stage_breakdown(predictor: Predictor, files: Sequence[Path], work: Path, batch_size: int = 16) -> StageCosts:
    """Re-run the steps of ``iter_scores`` / ``predict_batch`` / ``_save_overlay`` one at a time, timing each."""
    totals: dict[str, float] = {}

    def add(key: str, seconds: float) -> None:
        totals[key] = totals.get(key, 0.0) + seconds

    members = len(predictor.members)
    cams = work / "stage-cams"
    cams.mkdir(exist_ok=True)
    pixels: list[int] = []
    decoded_bytes = 0
    for begin in range(0, len(files), batch_size):
        chunk = files[begin : begin + batch_size]
        t0 = time.perf_counter()
        images = [load_image(p) for p in chunk]
        add("decode (load_image)", time.perf_counter() - t0)
        pixels += [img.meta.original_size[0] * img.meta.original_size[1] for img in images]
        decoded_bytes += sum(img.pixels.nbytes for img in images)
        if predictor.gate is not None:
            t0 = time.perf_counter()
            for img in images:
                predictor.gate.check_image(img)
            add("input gate, image statistics", time.perf_counter() - t0)
        per_member = []
        for member in predictor.members:
            t0 = time.perf_counter()
            boxed, placements = preprocess_batch(images, member.size)
            add(f"letterbox + to_rgb (done once per member: {members})", time.perf_counter() - t0)
            t0 = time.perf_counter()
            probs, _logits, maps, features = member.session.run(None, {"image": boxed})
            add(f"ONNX Runtime, batch {batch_size} ({members} member(s))", time.perf_counter() - t0)
            per_member.append((member, probs, maps, features, placements))
        if predictor.gate is not None:
            t0 = time.perf_counter()
            predictor.gate.check_features(per_member[0][3])
            add("input gate, features", time.perf_counter() - t0)
        t0 = time.perf_counter()
        for k, img in enumerate(images):
            predictor._combine(k, img, per_member, False)
        add("combine, no heatmap", time.perf_counter() - t0)
        t0 = time.perf_counter()
        predictions = [predictor._combine(k, img, per_member, True) for k, img in enumerate(images)]
        add("combine + CAM unmapping (heatmap)", time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _member, _probs, maps, _f, placements in per_member:
            for k in range(len(images)):
                placements[k].unmap(maps[k])
        add("  of which Placement.unmap", time.perf_counter() - t0)
        # _save_overlay: decodes the source file again, blends, writes a PNG.
        for path, pred in zip(chunk, predictions, strict=True):
            t0 = time.perf_counter()
            again = load_image(path)
            add("heatmap: second decode of the source (_save_overlay)", time.perf_counter() - t0)
            t0 = time.perf_counter()
            assert pred.cam is not None
            blended = overlay(again.pixels, pred.cam)
            add("heatmap: overlay()", time.perf_counter() - t0)
            t0 = time.perf_counter()
            Image.fromarray(blended).save(cams / f"{path.name}.png")
            add("heatmap: PNG encode + write", time.perf_counter() - t0)
            t0 = time.perf_counter()
            Image.fromarray(blended).save(cams / f"{path.name}.fast.png", compress_level=1)
            add("(alternative, not in the code: PNG with compress_level=1)", time.perf_counter() - t0)
    megapixels = np.array(pixels) / 1e6
    sizes = (
        f"decoded sizes: median {np.median(megapixels):.2f} MP, p90 {np.percentile(megapixels, 90):.2f} MP, "
        f"max {megapixels.max():.2f} MP; decoded pixels {decoded_bytes / len(files) / 1e3:.0f} kB per scan on average"
    )
    return StageCosts({k: v / len(files) * 1e3 for k, v in totals.items()}, sizes, decoded_bytes / 1e6)


@dataclass
class PredictResult:
    model_note: str
    members: list[dict[str, Any]]
    n_files: int
    cli: dict[str, Timing]
    cli_startup: Timing
    inprocess: dict[str, Timing]
    statuses: dict[str, int]
    stages: StageCosts
    first_row_s: float
    traced_at_first_row_mb: float
    traced_peak_mb: float


def predict_section(
    model_dir: Path, model_note: str, scans: Sequence[Path], work: Path, settings: Settings, start: float
) -> PredictResult:
    folder = scans[0].parent
    out_csv = work / "predict.csv"
    modes = {NO_CAM: ["--no-cam"], WITH_CAM: ["--cam-dir", str(work / "cams")]}
    cli = {mode: Timing() for mode in modes}
    startup = Timing()
    for _ in range(settings.cli_repeats):
        for mode, extra in modes.items():
            cli[mode].samples.append(
                _run_cli(["predict", str(folder), "--model", str(model_dir), "--out", str(out_csv), *extra])
            )
        startup.samples.append(
            _run_cli(["predict", str(scans[0]), "--model", str(model_dir), "--out", str(work / "one.csv"), "--no-cam"])
        )
    statuses = _statuses(out_csv)
    log(
        f"CLI: {', '.join(f'{m} {len(scans) / t.median:.0f}/s' for m, t in cli.items())}, start-up "
        f"{startup.median:.1f} s",
        start,
    )

    predictor = Predictor.load(model_dir, threads=THREADS)
    variants: dict[str, tuple[Path | None, int | None]] = {  # cam_dir, decode workers (None: all cores)
        NO_CAM: (None, None),
        WITH_CAM: (work / "cams-inprocess", None),
        "without heatmaps, 1 decode thread (workers=1)": (None, 1),
    }
    inprocess = {mode: Timing() for mode in variants}
    for _ in range(settings.cli_repeats):
        for mode, (cam_dir, workers) in variants.items():
            t0 = time.perf_counter()
            for _row in iter_scores(predictor, scans, cam_dir=cam_dir, workers=workers):
                pass
            inprocess[mode].samples.append(time.perf_counter() - t0)
    log(f"in-process: {', '.join(f'{m} {len(scans) / t.median:.0f}/s' for m, t in inprocess.items())}", start)
    stages = stage_breakdown(predictor, scans, work)
    first_row_s, at_first_mb, peak_mb = read_ahead(predictor, scans)
    members = predictor.card_summary()["members"]
    return PredictResult(
        model_note, members, len(scans), cli, startup, inprocess, statuses, stages, first_row_s, at_first_mb, peak_mb
    )


def read_ahead(predictor: Predictor, scans: Sequence[Path]) -> tuple[float, float, float]:
    """How much ``iter_scores`` holds in memory: traced allocations (numpy pixel buffers included) when the
    first row comes out and at the peak, to compare with the decoded size of the whole folder."""
    import tracemalloc

    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        rows = iter_scores(predictor, scans)
        next(rows)
        first_row_s = time.perf_counter() - t0
        at_first, _ = tracemalloc.get_traced_memory()
        for _row in rows:
            pass
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return first_row_s, at_first / 1e6, peak / 1e6


# -- 5. single-scan latency --------------------------------------------------------------------------------
@dataclass
class LatencyResult:
    total: Timing
    parts: dict[str, Timing]


def _predict_path(predictor: Predictor, path: Path) -> None:
    predictor.predict(load_image(path))


def latency_section(model_dir: Path, scans: Sequence[Path], start: float) -> LatencyResult:
    """``predict(load_image(path))`` per scan, and in the same loop the same steps timed one by one."""
    predictor = Predictor.load(model_dir, threads=THREADS)
    for path in scans[:3]:
        predictor.predict(load_image(path))
    total = Timing()
    parts: dict[str, Timing] = {}

    def add(key: str, seconds: float) -> None:
        parts.setdefault(key, Timing()).samples.append(seconds)

    for path in scans[:N_LATENCY]:
        total.samples.append(_time_call(functools.partial(_predict_path, predictor, path)))
        t0 = time.perf_counter()
        image: LoadedImage = load_image(path)
        decode = time.perf_counter() - t0
        gate = 0.0
        if predictor.gate is not None:
            t0 = time.perf_counter()
            predictor.gate.check_image(image)
            gate += time.perf_counter() - t0
        prep, run, per_member = 0.0, 0.0, []
        for member in predictor.members:
            t0 = time.perf_counter()
            boxed, placements = preprocess_batch([image], member.size)
            prep += time.perf_counter() - t0
            t0 = time.perf_counter()
            probs, _logits, maps, features = member.session.run(None, {"image": boxed})
            run += time.perf_counter() - t0
            per_member.append((member, probs, maps, features, placements))
        if predictor.gate is not None:
            t0 = time.perf_counter()
            predictor.gate.check_features(per_member[0][3])
            gate += time.perf_counter() - t0
        t0 = time.perf_counter()
        predictor._combine(0, image, per_member, True)
        post = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _m, _p, maps, _f, placements in per_member:
            placements[0].unmap(maps[0])
        unmap = time.perf_counter() - t0
        add("decode (load_image)", decode)
        add("letterbox + to_rgb", prep)
        add("decode + letterbox", decode + prep)
        if predictor.gate is not None:
            add("input gate (image statistics + features)", gate)
        add("ONNX Runtime (all members)", run)
        add("post-processing (_combine: probabilities, CAM unmapping)", post)
        add("  of which Placement.unmap", unmap)
        add("sum of the steps", decode + prep + gate + run + post)
    log(f"single scan: median {total.median * 1e3:.1f} ms, p90 {total.p90 * 1e3:.1f} ms", start)
    return LatencyResult(total, parts)


# -- 6. our code around the models ------------------------------------------------------------------------
GOAL_SINGLE_OVERHEAD = 1.15
GOAL_BATCH_OVERHEAD = 1.10


def _predict_paths(predictor: Predictor, files: Sequence[Path]) -> None:
    for path in files:
        _predict_path(predictor, path)


def _bare_members(predictor: Predictor, size: int, batches: Sequence[np.ndarray]) -> None:
    for boxed in batches:
        predictor.run_members({size: boxed})


def in_turn(predictor: Predictor, model_dir: Path) -> Predictor:
    """The same model with its members one after another, each session on all the cores: the schedule before
    members ran side by side, for the model-time comparison."""
    members = load_members(ExportDir(model_dir), threads=THREADS)
    return dataclasses.replace(predictor, members=members, side_by_side=False)


def overhead_section(model_dir: Path, scans: Sequence[Path], settings: Settings, start: float) -> dict[str, Any]:
    """Our path against the members' bare ONNX Runtime calls on the same scans, interleaved: one scan end to end
    (``predict(load_image(path))``: decode, gate, every member, heatmap) against every member's session on the
    scan already letterboxed; and ``iter_scores`` over 64 files without heatmaps (decoding in its thread pool)
    against every member's session on the same 64 scans letterboxed, in batches of 16. The bare calls fetch
    every output and run the members as the predictor does (``Predictor.run_members``: side by side when they
    share the cores); the same bare calls with the members in turn on all cores are timed in the same rounds."""
    predictor = Predictor.load(model_dir, threads=THREADS)
    decoded = [(p, load_image(p)) for p in scans]
    verdicts = predictor.predict_batch([im for _, im in decoded], cam=False)
    kept = [(p, im) for (p, im), v in zip(decoded, verdicts, strict=True) if not isinstance(v, Rejection)]
    single_files, batch_files = [p for p, _ in kept[:16]], [p for p, _ in kept[:64]]
    sizes = {m.size for m in predictor.members}
    if len(sizes) != 1:
        raise SystemExit("the overhead section assumes members of one input size")
    size = sizes.pop()
    turn = in_turn(predictor, model_dir)
    one_by_one = [preprocess_batch([im], size)[0] for _, im in kept[:16]]
    boxed64, _ = preprocess_batch([im for _, im in kept[:64]], size)
    batches = [boxed64[i : i + 16] for i in range(0, len(boxed64), 16)]
    single = interleaved({
        "ours": functools.partial(_predict_paths, predictor, single_files),
        "bare": functools.partial(_bare_members, predictor, size, one_by_one),
        "bare in turn": functools.partial(_bare_members, turn, size, one_by_one),
    }, settings)  # fmt: skip
    batch = interleaved({
        "ours": functools.partial(lambda fs: list(iter_scores(predictor, fs, batch_size=16)), batch_files),
        "bare": functools.partial(_bare_members, predictor, size, batches),
        "bare in turn": functools.partial(_bare_members, turn, size, batches),
    }, settings)  # fmt: skip
    ratios = single["ours"].ratio(single["bare"]), batch["ours"].ratio(batch["bare"])
    log(f"overhead: single {ratios[0]:.2f}×, batch {ratios[1]:.2f}×", start)
    members = ", ".join(f"{m.name} ({m.precision})" for m in predictor.members)
    parts = overhead_parts(predictor, single_files)
    return {"single": single, "batch": batch, "members": members, "left_out": len(decoded) - len(kept), "parts": parts,
            "side_by_side": predictor.side_by_side}  # fmt: skip


@single_threaded_blas
def overhead_parts(predictor: Predictor, files: Sequence[Path], passes: int = 5) -> dict[str, float]:
    """Milliseconds per scan of each step of ``predict(load_image(path))`` with heatmap, timed one by one on the
    single-scan files (median of ``passes`` passes): what the single-scan ratio's extra time is made of. BLAS on
    one thread, as in ``predict_batch``."""
    samples: dict[str, list[float]] = {}
    for _ in range(passes):
        totals: dict[str, float] = {}

        def add(key: str, t0: float, totals: dict[str, float] = totals) -> None:
            totals[key] = totals.get(key, 0.0) + time.perf_counter() - t0

        for path in files:
            t0 = time.perf_counter()
            image = load_image(path)
            add("decode (`load_image`)", t0)
            t0 = time.perf_counter()
            if predictor.gate is not None:
                predictor.gate.image_refusal(image)
            add("input gate, image statistics", t0)
            t0 = time.perf_counter()
            boxed, placements = preprocess_batch([image], predictor.members[0].size)
            add("letterbox into the batch (once for all members)", t0)
            t0 = time.perf_counter()
            outputs = predictor.run_members({boxed.shape[1]: boxed})
            add("ONNX Runtime, every member (the bare side's work)", t0)
            per_member = [(m, o[0], o[2], o[3], placements) for m, o in zip(predictor.members, outputs, strict=True)]
            t0 = time.perf_counter()
            if predictor.gate is not None:
                predictor.gate.feature_refusals(per_member[0][3], [image])
            add("input gate, features", t0)
            t0 = time.perf_counter()
            predictor._combine(0, image, per_member, True)
            add("ensemble, calibration, Prediction + heatmap unmapping", t0)
        for key, seconds in totals.items():
            samples.setdefault(key, []).append(seconds / len(files) * 1e3)
    return {key: statistics.median(values) for key, values in samples.items()}


def report_overhead(result: dict[str, Any]) -> list[str]:
    single, batch = result["single"], result["batch"]
    rows = [
        ("one scan end to end (16 scans, heatmaps)", single, 16, GOAL_SINGLE_OVERHEAD),
        ("batch of 64 files, no heatmaps (`iter_scores`)", batch, 64, GOAL_BATCH_OVERHEAD),
    ]
    lines = [
        "## 6. Our code around the models",
        "",
        f"Members: {result['members']}; {THREADS} ONNX Runtime threads. 'bare' = every member's ONNX Runtime "
        "session on the scans already letterboxed (all outputs fetched, as the predictor does); 'ours' = the "
        "project's path from the file (decode, input gate, members, ensemble, heatmap where asked). Ratio: median "
        f"of per-round ratios of interleaved rounds. {result['left_out']} scan(s) the gate refuses left out.",
        "",
        "| workload | ours ms/scan | bare ms/scan | ours / bare | goal | n |",
        "|---|---|---|---|---|---|",
    ]
    for name, t, n, goal in rows:
        ratio = t["ours"].ratio(t["bare"])
        lines.append(f"| {name} | {t['ours'].median / n * 1e3:.1f} | {t['bare'].median / n * 1e3:.1f} | "
                     f"{ratio:.2f}× | ≤ {goal:.2f}×: {_verdict(ratio <= goal)} | {t['ours'].n} |")  # fmt: skip
    schedule = "side by side, each session on its share of the cores" if result.get("side_by_side") else "in turn"
    lines += [
        "",
        f"Members side by side: the bare model time as the predictor schedules the members ({schedule}) against "
        f"the members one after another, each session on all {THREADS} cores (the schedule before), in the same "
        "rounds:",
        "",
        "| workload | bare ms/scan | bare in turn ms/scan | side by side / in turn |",
        "|---|---|---|---|",
        *(f"| {name} | {t['bare'].median / n * 1e3:.1f} | {t['bare in turn'].median / n * 1e3:.1f} | "
          f"{t['bare'].ratio(t['bare in turn']):.2f}× |" for name, t, n, _ in rows if "bare in turn" in t),
    ]  # fmt: skip
    parts: dict[str, float] = result.get("parts", {})
    if parts:
        model = next((v for k, v in parts.items() if k.startswith("ONNX Runtime")), 0.0)
        extra = sum(v for k, v in parts.items() if not k.startswith("ONNX Runtime"))
        lines += [
            "",
            "Where the single-scan extra time goes: each step of the 'ours' side timed on its own, on the same 16 "
            "scans (median of 5 passes; the machine's load moves these as it moves the table above).",
            "",
            *_table(
                ["step", "ms/scan", "share of the model's time"],
                [[k, f"{v:.2f}", f"{v / model:.0%}" if model else ""] for k, v in parts.items()],
            ),
            "",
            f"Steps besides the model: {extra:.2f} ms/scan, {extra / model:.0%} of the model's {model:.2f} ms"
            if model
            else "",
        ]
    return [*lines, ""]


def compare_section(
    models: dict[str, Path], scans: Sequence[Path], settings: Settings, start: float
) -> dict[str, dict[str, Timing]]:
    """Two (or more) model folders side by side, interleaved in the same rounds: one scan end to end
    (``predict(load_image(path))`` with the heatmap) and a batch of 64 decoded scans without heatmaps."""
    predictors = {name: Predictor.load(folder, threads=THREADS) for name, folder in models.items()}
    # Only scans every model's gate accepts: a refused scan skips the members and would flatter its model.
    decoded = [(p, load_image(p)) for p in scans]
    verdicts = {name: pr.predict_batch([im for _, im in decoded], cam=False) for name, pr in predictors.items()}
    kept = [i for i in range(len(decoded)) if not any(isinstance(v[i], Rejection) for v in verdicts.values())]
    log(f"{len(decoded) - len(kept)} of {len(decoded)} scans left out: refused by a model's input gate", start)
    scans = [decoded[i][0] for i in kept]
    images = [decoded[i][1] for i in kept][:64]
    if len(scans) < 64:
        raise SystemExit(f"only {len(scans)} scans pass every model's gate; the comparison needs 64")
    single = interleaved(
        {name: functools.partial(_predict_paths, pr, scans[:16])
         for name, pr in predictors.items()}, settings)  # fmt: skip
    batch = interleaved(
        {name: functools.partial(pr.predict_batch, images, cam=False) for name, pr in predictors.items()}, settings
    )
    for name in models:
        log(f"{name}: {single[name].median / 16 * 1e3:.1f} ms/scan single, {batch[name].median / 64 * 1e3:.1f} "
            "ms/scan batch", start)  # fmt: skip
    return {"single scan (16 scans, heatmaps)": single, "batch of 64 (no heatmaps)": batch}


def report_compare(models: dict[str, Path], result: dict[str, dict[str, Timing]], command: str) -> list[str]:
    names = list(models)
    base = names[0]
    lines = [
        "# Serving cost: models side by side",
        "",
        f"Command: `{command}`. Interleaved rounds in one run (ratios are medians of per-round ratios against "
        f"`{base}`); {THREADS} ONNX Runtime threads; real Br35H scans; the input gate of each model included "
        "(scans any model's gate refuses are left out).",
        "",
        "| workload | "
        + " | ".join(f"{n} ms/scan" for n in names)
        + " | "
        + " | ".join(f"{n} / {base}" for n in names[1:])
        + " |",
        "|---|" + "---|" * (2 * len(names) - 1),
    ]
    per = {"single scan (16 scans, heatmaps)": 16, "batch of 64 (no heatmaps)": 64}
    for workload, timings in result.items():
        cells = [f"{timings[n].median / per[workload] * 1e3:.1f}" for n in names]
        ratios = [f"{timings[n].ratio(timings[base]):.2f}×" for n in names[1:]]
        lines.append(f"| {workload} | " + " | ".join(cells + ratios) + " |")
    shown = {n: models[n].resolve().relative_to(ROOT) if models[n].resolve().is_relative_to(ROOT) else models[n]
             for n in names}  # fmt: skip
    lines += ["", "Folders: " + "; ".join(f"{n} = `{shown[n]}`" for n in names), ""]
    return lines


# -- report ------------------------------------------------------------------------------------------------
def _verdict(ok: bool) -> str:
    return "**met**" if ok else "**not met**"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def report_machine(
    command: str, started: dt.datetime, info: list[tuple[str, str]], loads: dict[str, str], total_s: float, quick: bool
) -> list[str]:
    lines = [
        "# Inference benchmark",
        "",
        f"Written by `bench/inference.py` (every figure below comes from one run of it). Command: `{command}`"
        + (" (quick mode: two backbones, fewer repeats)." if quick else "."),
        f"Started {started.isoformat(timespec='seconds')}, took {total_s / 60:.1f} min.",
        "",
    ]
    lines += [f"- **{k}**: {v}" for k, v in info]
    lines += [
        "- **load average (1/5/15 min)** at the start of each section: "
        + "; ".join(f"{k}: {v}" for k, v in loads.items()),
        "",
        "The machine is shared: other processes may have run during the measurement (see the load averages; this "
        "benchmark alone keeps about 2 cores busy). Contenders are timed in interleaved rounds and every ratio is "
        "the median of per-round ratios from this run; times are medians over the rounds (n = rounds).",
        "",
    ]
    busiest = max(float(v.split("/")[0]) for v in loads.values())
    cores = os.cpu_count() or 1
    if busiest > cores + 1:
        lines += [
            f"> **Warning: the machine was busy during this run** (1-minute load average up to {busiest:.1f} on "
            f"{cores} cores, of which this benchmark accounts for about {THREADS}). Absolute times, images/s, shares "
            "of peak and therefore the goal verdicts are not representative of the hardware; PyTorch's OpenMP "
            "threads suffer most from stolen cores. Rerun on an idle machine for figures to quote.",
            "",
        ]
    return lines


def report_sgemm(runs: dict[str, Sgemm]) -> list[str]:
    rows = []
    for when, s in runs.items():
        for label, t in (("numpy `a @ b` (OpenBLAS)", s.numpy), ("torch.matmul", s.torch)):
            rows.append(
                [
                    when,
                    label,
                    f"{t.best * 1e3:.1f}",
                    f"{t.median * 1e3:.1f}",
                    f"{s.gflops(t.best):.0f}",
                    f"{s.gflops(t.median):.0f}",
                    str(t.n),
                ]
            )
    peak = max(s.peak for s in runs.values())
    torch_best = max(s.gflops(s.torch.best) for s in runs.values())
    n = next(iter(runs.values())).n
    return [
        "## 1. FP32 peak: sgemm",
        "",
        f"float32 {n}×{n} @ {n}×{n} ({2 * n**3 / 1e9:.1f} GFLOP per call), 2 threads, OPENBLAS_* variables as "
        "found; measured at the start and again at the end of the run, to catch a busy moment.",
        "",
        *_table(["when", "matmul", "best ms", "median ms", "best GFLOP/s", "median GFLOP/s", "n"], rows),
        "",
        f"**Peak estimate used below: {peak:.0f} GFLOP/s** (numpy's best of both). torch.matmul's best reaches "
        f"{torch_best / peak:.0%} of it.",
        "",
    ]


def report_backbones(results: Sequence[BackboneResult], peak: float) -> list[str]:
    rows = []
    for r in results:
        for batch, timings in r.timings.items():
            for runtime in RUNTIMES:
                if runtime not in timings:
                    failed = f"quantization failed: {r.quantize_error}"
                    rows.append([f"{r.name} ({r.size})", str(batch), runtime, failed, *[""] * 7])
                    continue
                t = timings[runtime]
                ips = batch / t.median
                gflops = r.gflop * ips
                rows.append(
                    [
                        f"{r.name} ({r.size})",
                        str(batch),
                        runtime,
                        f"{t.median * 1e3:.1f}",
                        f"{t.best * 1e3:.1f}",
                        f"{ips:.1f}",
                        f"{r.gflop:.2f}",
                        f"{gflops:.0f}",
                        f"{gflops / peak:.0%}",
                        f"{r.speedup(batch, runtime):.2f}×",
                        str(t.n),
                    ]
                )
    summary = []
    for r in results:
        cells = [f"{r.name} ({r.size})", f"{r.gflop:.2f}"]
        for batch in BATCHES:
            cells.append(f"{r.ort_over_torch[batch]:.2f}×")
            cells.append(f"{r.speedup(batch, 'ORT int8'):.2f}×" if "ORT int8" in r.timings[batch] else "—")
        q = f"{r.quantize_s:.0f} s" if r.quantize_s is not None else "failed"
        cells += [f"{r.export_s:.0f} s / {q}", str(r.opset)]
        summary.append(cells)
    return [
        "## 2. Backbones: PyTorch eager vs ONNX Runtime fp32 vs ONNX Runtime int8",
        "",
        "Random init, 1 logit, real letterboxed scans as input. PyTorch eager: `model(x)` (backbone + head) under "
        "`torch.inference_mode()` on the normalised float NCHW batch. ONNX Runtime: the project's `ServingGraph` "
        "(uint8 NHWC in; normalisation, backbone, head, in-graph Grad-CAM and pooled features: slightly *more* work "
        "than the torch column, see section 3) exported as `export_run` does (dynamo), all graph optimizations; "
        "int8: that export quantized by "
        f"`braintumor.export.quantize.quantize_export` (static QDQ, per-channel, Conv only, Percentile 99.99, "
        f"{N_CALIBRATION} real letterboxed scans from brain_tumor_dataset). "
        "GFLOP/img: FlopCounterMode on backbone + head at batch 1 (2 × multiply-adds). '% of peak' = achieved "
        "GFLOP/s ÷ the sgemm peak above (for int8 an *effective* figure: the same FLOPs done in int8). "
        "'speed-up vs ORT fp32' = ORT fp32 time ÷ this runtime's time, the median of per-round ratios of two "
        "interleaved pairs: (ORT fp32, ORT int8), whose times the ORT rows show, and (torch eager, ORT fp32).",
        "",
        *_table(
            [
                "model (input px)",
                "batch",
                "runtime",
                "ms/batch (median)",
                "ms/batch (best)",
                "images/s",
                "GFLOP/img",
                "GFLOP/s",
                "% of peak",
                "speed-up vs ORT fp32",
                "n",
            ],
            rows,
        ),
        "",
        "Summary (ratios of per-round times):",
        "",
        *_table(
            [
                "model",
                "GFLOP/img",
                "ORT fp32 over torch, b1",
                "int8 over fp32, b1",
                "ORT fp32 over torch, b16",
                "int8 over fp32, b16",
                "export / quantize time",
                "opset in file",
            ],
            summary,
        ),
        "",
    ]


def report_variants(results: Sequence[VariantResult]) -> list[str]:
    rows = []
    for r in results:
        for batch, t in r.timings.items():
            for runtime, timing in t.items():
                ops = r.ops[runtime]
                rows.append(
                    [
                        r.name,
                        str(batch),
                        runtime,
                        f"{timing.median * 1e3:.1f}",
                        f"{t['ORT fp32'].ratio(timing):.2f}×",
                        str(ops.get("QuantizeLinear", 0)),
                        str(ops.get("DequantizeLinear", 0)),
                        str(timing.n),
                    ]
                )
    diffs = ", ".join(f"{r.name} {r.max_prob_diff:.3f}" for r in results)
    return [
        "## 2b. int8 what-if: quantizing the activations too (not the project's code)",
        "",
        "`quantize_export` quantizes only `Conv` nodes, so every ReLU / ReLU6 (Clip) after a convolution, and the "
        "residual Adds, stay in fp32: ONNX Runtime keeps a DequantizeLinear → activation → QuantizeLinear round trip "
        "around each of them (counts below, in the graph ONNX Runtime runs after its optimizations). The what-if "
        f"row quantizes `{', '.join(VARIANT_OPS)}` with otherwise identical settings; the activations then fold into "
        "the QLinearConv nodes. Random-init weights: this measures speed only (max |Δp(tumor)| vs fp32 on 16 scans: "
        f"{diffs}); accuracy must be checked on trained models (what `quantize_if_it_holds` does).",
        "",
        *_table(
            [
                "model",
                "batch",
                "runtime",
                "ms/batch (median)",
                "speed-up vs ORT fp32",
                "QuantizeLinear left",
                "DequantizeLinear left",
                "n",
            ],
            rows,
        ),
        "",
    ]


def report_cam(results: Sequence[CamResult]) -> list[str]:
    rows, verdicts = [], []
    full, plain, grad, fwd = CAM_FULL, CAM_PLAIN, CAM_AUTOGRAD, CAM_FORWARD
    for r in results:
        for batch, t in r.timings.items():
            in_graph = t[full].ratio(t[plain])
            autograd = t[grad].ratio(t[fwd])
            rows.append(
                [
                    r.name,
                    str(batch),
                    f"{t[plain].median * 1e3:.1f}",
                    f"{t[full].median * 1e3:.1f}",
                    f"**{in_graph:.2f}×**",
                    f"{t[fwd].median * 1e3:.1f}",
                    f"{t[grad].median * 1e3:.1f}",
                    f"{autograd:.2f}×",
                    f"{t[full].n}/{t[grad].n}",
                ]
            )
            verdicts.append(in_graph <= GOAL_CAM_RATIO)
    return [
        "## 3. Grad-CAM cost",
        "",
        "In-graph Grad-CAM: the full serving graph (all four outputs, as the predictor fetches them) vs the same "
        "network exported without the CAM branch (a wrapper returning only `probs`), both in ONNX Runtime fp32. "
        "Autograd Grad-CAM: `braintumor.explain.cam.GradCAM` on the card's `cam_layer` vs a plain "
        "`torch.inference_mode()` forward, both in PyTorch eager on the same normalised float input.",
        "",
        *_table(
            [
                "model",
                "batch",
                "ORT probs only ms",
                "ORT + in-graph CAM ms",
                "in-graph CAM / plain",
                "torch forward ms",
                "torch GradCAM ms",
                "autograd CAM / plain",
                "n (ORT/torch)",
            ],
            rows,
        ),
        "",
        f"Goal in-graph Grad-CAM ≤ {GOAL_CAM_RATIO}× a plain forward: {_verdict(all(verdicts))}"
        + ("" if all(verdicts) else " (see the rows above)")
        + ".",
        "",
    ]


def report_predict(p: PredictResult) -> list[str]:
    n = p.n_files
    rows = []
    for mode, inproc in p.inprocess.items():
        cli = p.cli.get(mode)
        cli_cells = ["—", "—", "—"]
        if cli is not None:
            steady = (n - 1) / max(cli.median - p.cli_startup.median, 1e-9)
            cli_cells = [f"{cli.median:.2f}", f"{n / cli.median:.0f}", f"{steady:.0f}"]
        rows.append([mode, *cli_cells, f"{inproc.median:.2f}", f"{n / inproc.median:.0f}", str(inproc.n)])
    no_cam, cli_no_cam = p.inprocess[NO_CAM], p.cli[NO_CAM]
    members = ", ".join(f"{m['name']} ({m['arch']}, {m['input_size']} px, {m['precision']})" for m in p.members)
    stage_rows = [[k, f"{v:.2f}", f"{1e3 / v:.0f}" if v > 0 else "—"] for k, v in p.stages.ms.items()]
    goal_ok = n / no_cam.median >= GOAL_BATCH_SCANS_PER_S
    return [
        "## 4. `braintumor predict` end to end",
        "",
        f"Model: {p.model_note}. Members: {members}.",
        f"{n} real JPEGs (the first {n} of `br35h/yes`, copied to a temporary folder); statuses of the last CLI run: "
        + ", ".join(f"{k} {v}" for k, v in sorted(p.statuses.items()))
        + ". CLI = `braintumor predict DIR --model M --out CSV [--no-cam | --cam-dir D]` in a fresh process "
        "(default batch 16, ONNX Runtime threads = all cores = 2, decoding in a thread pool); its wall time includes "
        f"start-up (imports, model load), measured alone on a single file: {p.cli_startup.median:.2f} s (median). "
        "In-process = `iter_scores` with the predictor already loaded.",
        "",
        *_table(
            [
                "mode",
                "CLI wall s",
                "CLI scans/s",
                "CLI scans/s excl. start-up",
                "in-process s",
                "in-process scans/s",
                "n",
            ],
            rows,
        ),
        "",
        f"Goal ≥ {GOAL_BATCH_SCANS_PER_S:.0f} scans/s in batch (in-process, without heatmaps): "
        f"{_verdict(goal_ok)} ({n / no_cam.median:.0f} scans/s; the CLI with its start-up: "
        f"{n / cli_no_cam.median:.0f} scans/s).",
        "",
        "Where the time goes: each step of batch scoring re-run on its own in this process, single-threaded Python "
        f"(ONNX Runtime on 2 threads), milliseconds per image over the {n} files ({p.stages.sizes}):",
        "",
        *_table(["step", "ms / image", "images/s if alone"], stage_rows),
        "",
        f"Read-ahead: during one more in-process run (no heatmaps) under `tracemalloc`, the first row came out after "
        f"{p.first_row_s:.2f} s, when {p.traced_at_first_row_mb:.0f} MB were allocated; the peak was "
        f"{p.traced_peak_mb:.0f} MB, against {p.stages.decoded_mb:.0f} MB of decoded pixels for the whole folder "
        f"({p.stages.decoded_mb / n * 1e3:.0f} kB per scan). `iter_scores` submits every file to its decode pool at "
        "once (`pool.map`), so a peak close to the folder's decoded size means memory grows with the folder.",
        "",
    ]


def report_latency(lat: LatencyResult) -> list[str]:
    rows = [["`predict(load_image(path))`, measured", f"{lat.total.median * 1e3:.2f}", f"{lat.total.p90 * 1e3:.2f}"]]
    rows += [[k, f"{t.median * 1e3:.2f}", f"{t.p90 * 1e3:.2f}"] for k, t in lat.parts.items()]
    ok = lat.total.median * 1e3 <= GOAL_SCAN_MS
    return [
        "## 5. Single-scan latency (decode → label + heatmap)",
        "",
        f"{lat.total.n} different scans from the same folder, one call each (after 3 warm-up calls); in the same "
        "loop the same steps are timed one by one (same code paths as `predict_batch`).",
        "",
        *_table(["step", "median ms", "p90 ms"], rows),
        "",
        f"Goal ≤ {GOAL_SCAN_MS:.0f} ms per scan (median): {_verdict(ok)} ({lat.total.median * 1e3:.1f} ms).",
        "",
    ]


def report_goals(
    backbones: Sequence[BackboneResult], cams: Sequence[CamResult], p: PredictResult, lat: LatencyResult
) -> list[str]:
    lines = ["## Goals", ""]
    resnet = next((r for r in backbones if r.name == "resnet50"), None)
    if resnet is not None and all("ORT int8" in resnet.timings[b] for b in BATCHES):
        s = {b: resnet.timings[b]["ORT fp32"].ratio(resnet.timings[b]["ORT int8"]) for b in BATCHES}
        ok = all(v >= GOAL_INT8_SPEEDUP for v in s.values())
        lines.append(
            f"- int8 ≥ {GOAL_INT8_SPEEDUP:.0f}× fp32 on ResNet50: {_verdict(ok)} "
            f"(batch 1: {s[1]:.2f}×, batch 16: {s[16]:.2f}×)"
        )
    full, plain = CAM_FULL, CAM_PLAIN
    ratios = [f"{c.name} b{b} {t[full].ratio(t[plain]):.2f}×" for c in cams for b, t in c.timings.items()]
    ok = all(t[full].ratio(t[plain]) <= GOAL_CAM_RATIO for c in cams for t in c.timings.values())
    lines.append(f"- in-graph Grad-CAM ≤ {GOAL_CAM_RATIO}× a plain forward: {_verdict(ok)} ({', '.join(ratios)})")
    rates = {m: p.n_files / t.median for m, t in p.inprocess.items()}
    ok = rates[NO_CAM] >= GOAL_BATCH_SCANS_PER_S
    lines.append(
        f"- default model ≥ {GOAL_BATCH_SCANS_PER_S:.0f} scans/s in batch: {_verdict(ok)} (in-process "
        + ", ".join(f"{m} {v:.0f}/s" for m, v in rates.items())
        + "; CLI incl. start-up "
        + ", ".join(f"{m} {p.n_files / t.median:.0f}/s" for m, t in p.cli.items())
        + ")"
    )
    ms = lat.total.median * 1e3
    lines.append(
        f"- default model ≤ {GOAL_SCAN_MS:.0f} ms per single scan: {_verdict(ms <= GOAL_SCAN_MS)} "
        f"(median {ms:.1f} ms, p90 {lat.total.p90 * 1e3:.1f} ms)"
    )
    if "stand-in" in p.model_note:
        lines.append("- the two default-model goals were measured on the stand-in model (no bundled model here)")
    return [*lines, ""]


# -- main --------------------------------------------------------------------------------------------------
def _command() -> str:
    exe = Path(sys.executable)
    with contextlib.suppress(ValueError):
        exe = exe.relative_to(Path.cwd())
    script = Path(sys.argv[0]).resolve()
    with contextlib.suppress(ValueError):
        script = script.relative_to(Path.cwd())
    return shlex.join([str(exe), str(script), *sys.argv[1:]])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="mobilenet_v2 and resnet50 only, fewer repeats")
    parser.add_argument("--out", type=Path, default=RESULTS, help="results file (default: bench/results.md)")
    parser.add_argument("--compare", nargs="+", type=Path, metavar="MODEL_DIR",
                        help="only compare the serving cost of the bundled model with these model folders (the first "
                        "is the base; writes bench/results-serving.md unless --out is given)")  # fmt: skip
    parser.add_argument("--overhead", action="store_true",
                        help="only section 6, our code against bare ONNX Runtime (writes bench/results-overhead.md "
                        "unless --out is given)")  # fmt: skip
    args = parser.parse_args(argv)
    settings = Settings.make(args.quick)
    start = time.perf_counter()
    if args.overhead:
        bundled = bundled_model_dir()
        if bundled is None:
            raise SystemExit("--overhead needs the bundled default model in this checkout")
        with tempfile.TemporaryDirectory(prefix="braintumor-bench-") as tmp:
            result = overhead_section(bundled, copy_scans(Path(tmp) / "scans"), settings, start)
        out = args.out if args.out != RESULTS else RESULTS.with_name("results-overhead.md")
        out.write_text("\n".join([f"Command: `{_command()}`; load average {load_average()}.", "",
                                   *report_overhead(result)]))  # fmt: skip
        log(f"wrote {out}", start)
        return 0
    if args.compare:
        bundled = bundled_model_dir()
        if bundled is None:
            raise SystemExit("--compare needs the bundled default model in this checkout")
        models = {**{folder.name: folder for folder in args.compare}, "bundled": bundled}  # the first is the base
        with tempfile.TemporaryDirectory(prefix="braintumor-bench-") as tmp:
            scans = copy_scans(Path(tmp) / "scans")
            result = compare_section(models, scans, settings, start)
        out = args.out if args.out != RESULTS else RESULTS.with_name("results-serving.md")
        out.write_text("\n".join(report_compare(models, result, _command())))
        log(f"wrote {out}", start)
        return 0
    started = dt.datetime.now().astimezone()
    torch.set_num_threads(THREADS)
    command = _command()
    info = machine_info()
    loads: dict[str, str] = {}

    loads["sgemm"] = load_average()
    sgemm = {"start": sgemm_section(settings)}
    log(f"sgemm: numpy {sgemm['start'].peak:.0f} GFLOP/s", start)

    with tempfile.TemporaryDirectory(prefix="braintumor-bench-") as tmp:
        work = Path(tmp)
        calibration = calibration_records()
        names = QUICK_BACKBONES if args.quick else BACKBONES
        loads["backbones"] = load_average()
        backbones, kept = backbone_section(names, calibration, work / "exports", settings, start, CAM_BACKBONES)
        loads["Grad-CAM"] = load_average()
        cams = cam_section(kept, calibration, work, settings, start)
        loads["int8 what-if"] = load_average()
        variants = int8_variant_section(kept, calibration, settings, start)
        loads["predict"] = load_average()
        scans = copy_scans(work / "scans")
        model_dir, model_note = serving_model(kept, work / "exports")
        predicted = predict_section(model_dir, model_note, scans, work, settings, start)
        loads["latency"] = load_average()
        latency = latency_section(model_dir, scans, start)
        loads["overhead"] = load_average()
        overhead = overhead_section(model_dir, scans, settings, start)
        loads["end"] = load_average()
    sgemm["end"] = sgemm_section(settings)
    log(f"sgemm again: numpy {sgemm['end'].peak:.0f} GFLOP/s", start)

    total_s = time.perf_counter() - start
    lines = [
        *report_machine(command, started, info, loads, total_s, args.quick),
        *report_goals(backbones, cams, predicted, latency),
        *report_sgemm(sgemm),
        *report_backbones(backbones, max(s.peak for s in sgemm.values())),
        *report_variants(variants),
        *report_cam(cams),
        *report_predict(predicted),
        *report_latency(latency),
        *report_overhead(overhead),
    ]
    args.out.write_text("\n".join(lines))
    log(f"wrote {args.out}", start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
