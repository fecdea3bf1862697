"""Static int8 quantization (QDQ, per-channel) of an exported model, kept only where it holds accuracy.

Dynamic quantization makes CNNs slower on CPUs (it re-quantizes activations per call); static QDQ with
per-channel weights, calibrated on real training images, runs the convolutions in int8 (VNNI). What is
quantized is the **backbone** — the nodes the pooled ``features`` output depends on — with its activations
(ReLU/ReLU6 ``Clip``) and residual ``Add`` nodes as well as the convolutions: quantizing the convolutions alone
leaves a DequantizeLinear → activation → QuantizeLinear round trip around every activation, which made the
depthwise nets (MobileNetV2, EfficientNet-Lite) no faster than fp32 (``bench/results.md``, section 2b). The head,
temperature scaling and the in-graph Grad-CAM stay in fp32, so probabilities and maps keep their meaning.

Calibration images are drawn from every (dataset, label) cell of the training part (:func:`stratified`): the
datasets differ in contrast, and ranges calibrated on one of them clip another's activations.

The int8 model becomes the member's default precision only when, on validation data, its tumor / no-tumor
accuracy under the member's decision rule and its tumor-type accuracy are both within ``max_drop`` (0.5 points)
of the fp32 model's; the figures go on the card. ``bench/int8.py`` compares the recipes on the bundled model.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from braintumor.data.datasets import ImageRecord, is_tumor_label
from braintumor.imaging.io import load_image
from braintumor.imaging.transforms import letterbox, to_rgb
from braintumor.models.card import Precision
from braintumor.models.decision import DecisionRule
from braintumor.models.export_dir import ExportDir

CalibrationName = Literal["MinMax", "Entropy", "Percentile"]


@dataclass(frozen=True)
class QuantRecipe:
    """How one member is quantized. ``scope``: ``backbone`` (the nodes the pooled features depend on) or
    ``conv`` (only Conv nodes, anywhere: the recipe before issue 17). ``activations``: ``U8`` (QUInt8, ONNX
    Runtime's fast path on x86) or ``S8``. ``fp32_first_convs``: how many of the backbone's first convolutions
    stay in fp32 (the stem sees raw intensities, often the most sensitive layer); ``exclude``: node names kept in
    fp32."""

    ops: tuple[str, ...] = ("Conv", "Clip", "Relu", "Add")
    scope: Literal["backbone", "conv"] = "backbone"
    method: CalibrationName = "Percentile"
    percentile: float = 99.999
    activations: Literal["U8", "S8"] = "U8"
    reduce_range: bool = False
    fp32_first_convs: int = 1
    exclude: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}


#: What held for both bundled members (``bench/results-int8.md``): the backbone with its activations and residual
#: Adds, Percentile 99.999 calibration, the stem convolution (raw intensities in) kept in fp32 — which also made
#: int8 faster, not only more accurate (1.8–2.1× fp32 against 1.2–1.8× with the stem quantized).
DEFAULT_RECIPE = QuantRecipe()


def letterboxed(records: Sequence[ImageRecord], size: int) -> np.ndarray:
    """``records`` decoded and letterboxed to uint8 N×S×S×3, the serving graph's input."""
    return np.stack([to_rgb(letterbox(load_image(r.path).pixels, size)[0]) for r in records])


def _batches(records: Sequence[ImageRecord], size: int, batch: int = 16) -> Iterator[np.ndarray]:
    for start in range(0, len(records), batch):
        yield letterboxed(records[start : start + batch], size)


class _Reader:
    """onnxruntime CalibrationDataReader over letterboxed uint8 batches."""

    def __init__(self, records: Sequence[ImageRecord], size: int) -> None:
        self._it = _batches(records, size, batch=8)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._it, None)
        return None if batch is None else {"image": batch}


def stratified(records: Sequence[ImageRecord], n: int, *, seed: int = 0) -> list[ImageRecord]:
    """About ``n`` records drawn evenly from every (dataset, label) cell, in a seeded order.

    >>> from pathlib import Path
    >>> rs = [ImageRecord(Path(f"{d}{i}"), lab, d) for d in "ab" for lab in ("yes", "no") for i in range(10)]
    >>> sorted({(r.dataset, r.label) for r in stratified(rs, 8)})
    [('a', 'no'), ('a', 'yes'), ('b', 'no'), ('b', 'yes')]
    """
    cells: dict[tuple[str, str], list[ImageRecord]] = defaultdict(list)
    for r in records:
        cells[(r.dataset, r.label)].append(r)
    rng = random.Random(seed)
    per_cell = max(1, -(-n // max(len(cells), 1)))
    picked = [r for key in sorted(cells) for r in rng.sample(cells[key], min(per_cell, len(cells[key])))]
    rng.shuffle(picked)
    return picked


def backbone_nodes(model: Any, ops: Sequence[str]) -> list[str]:
    """Names of the nodes of type ``ops`` that the ``features`` output depends on (the backbone)."""
    made_by = {out: node for node in model.graph.node for out in node.output}
    seen: set[str] = set()
    todo = ["features"]
    while todo:
        node = made_by.get(todo.pop())
        if node is None or node.name in seen:
            continue
        seen.add(node.name)
        todo.extend(node.input)
    return [n.name for n in model.graph.node if n.name in seen and n.op_type in ops]


def quantize_export(
    export_dir: str | Path, calibration: Sequence[ImageRecord], recipe: QuantRecipe = DEFAULT_RECIPE
) -> Path:
    """Write ``model.int8.onnx`` beside ``model.onnx``, calibrated on ``calibration`` images."""
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folder = ExportDir(export_dir)
    size = folder.read_card().input_size
    with tempfile.TemporaryDirectory() as tmp:
        prepped = Path(tmp) / "prepped.onnx"
        quant_pre_process(str(folder.model_file("fp32")), str(prepped), skip_symbolic_shape=True)
        graph = onnx.load(str(prepped))
        kept = set(recipe.exclude) | set(backbone_nodes(graph, ["Conv"])[: recipe.fp32_first_convs])
        if recipe.scope == "backbone":
            nodes = [n for n in backbone_nodes(graph, recipe.ops) if n not in kept]
            options: dict[str, Any] = {"nodes_to_quantize": nodes, "op_types_to_quantize": list(recipe.ops)}
        else:
            options = {"op_types_to_quantize": ["Conv"], "nodes_to_exclude": sorted(kept)}
        out = folder.model_file("int8")
        quantize_static(
            str(prepped),
            str(out),
            _Reader(list(calibration), size),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            reduce_range=recipe.reduce_range,
            activation_type=QuantType.QUInt8 if recipe.activations == "U8" else QuantType.QInt8,
            weight_type=QuantType.QInt8,
            calibrate_method=getattr(CalibrationMethod, recipe.method),
            extra_options={"CalibPercentile": recipe.percentile} if recipe.method == "Percentile" else {},
            **options,
        )
    return out


def probabilities(session: Any, images: np.ndarray, batch: int = 32) -> np.ndarray:
    """``probs`` of an ONNX session for letterboxed ``images``, batch by batch."""
    return np.concatenate([session.run(["probs"], {"image": images[i : i + batch]})[0]
                           for i in range(0, len(images), batch)])  # fmt: skip


def agreement(
    probs: np.ndarray, records: Sequence[ImageRecord], class_names: Sequence[str], rule: DecisionRule
) -> dict[str, float | None]:
    """Tumor / no-tumor accuracy under ``rule`` on every record, and (for a typed model) tumor-type accuracy
    on the records whose label is one of its tumor classes; p(tumor) is 1 − p(no tumor)."""
    names = list(class_names)
    negative = next(i for i, name in enumerate(names) if not is_tumor_label(name))
    p_tumor = 1.0 - probs[:, negative]
    truth = np.array([is_tumor_label(r.label) for r in records])
    binary = float(np.mean((p_tumor >= rule.threshold) == truth)) if len(records) else 0.0
    typed = [i for i, r in enumerate(records) if len(names) > 2 and r.label in names and is_tumor_label(r.label)]
    hits = [names[int(np.argmax(probs[i]))] == records[i].label for i in typed]
    return {"binary": binary, "type": float(np.mean(hits)) if hits else None}


def quantize_if_it_holds(
    export_dir: str | Path,
    calibration: Sequence[ImageRecord],
    validation: Sequence[ImageRecord],
    *,
    recipe: QuantRecipe = DEFAULT_RECIPE,
    max_drop: float = 0.005,
) -> dict[str, Any]:
    """Quantize, compare validation accuracy with fp32, and record the verdict on the card."""
    import onnxruntime as ort

    folder = ExportDir(export_dir)
    quantize_export(folder.root, calibration, recipe)
    card = folder.read_card()
    images = letterboxed(validation, card.input_size)
    figures: dict[str, dict[str, float | None]] = {}
    for precision in ("fp32", "int8"):
        session = ort.InferenceSession(str(folder.model_file(precision)), providers=["CPUExecutionProvider"])
        figures[precision] = agreement(probabilities(session, images), validation, card.class_names, card.decision)
    pairs = [(figures["fp32"][k], figures["int8"][k]) for k in ("binary", "type")]
    drops = [a - b for a, b in pairs if a is not None and b is not None]
    verdict = {
        "fp32_val_accuracy": figures["fp32"]["binary"],
        "int8_val_accuracy": figures["int8"]["binary"],
        "fp32_val_type_accuracy": figures["fp32"]["type"],
        "int8_val_type_accuracy": figures["int8"]["type"],
        "n_val": len(validation),
        "n_calibration": len(calibration),
        "recipe": recipe.as_dict(),
        "max_drop": max_drop,
        "int8_default": all(d <= max_drop + 1e-12 for d in drops),
    }
    set_default_precision(folder, "int8" if verdict["int8_default"] else "fp32", quantization=verdict)
    return verdict


def set_default_precision(
    folder: ExportDir, precision: Precision, *, quantization: dict[str, Any] | None = None
) -> None:
    """Record on the card which graph serving loads by default (and the quantization verdict, when given)."""
    card = folder.read_card()
    if card.export is None:
        raise ValueError(f"{folder.root} holds no exported model card")
    if quantization is not None:
        card.export.quantization = quantization
    card.export.default_precision = precision
    folder.write_card(card)
