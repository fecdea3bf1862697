"""Static int8: what the recipe quantizes, that the fp32 parts stay fp32, and the verdict the card records."""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from braintumor.data.datasets import discover
from braintumor.export.quantize import (
    QuantRecipe,
    backbone_nodes,
    letterboxed,
    quantize_export,
    quantize_if_it_holds,
    stratified,
)
from braintumor.inference.predictor import Predictor
from braintumor.models.export_dir import ExportDir


@pytest.fixture
def export_copy(smoke_export: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(smoke_export, tmp_path / "export"))


def _runtime_ops(path: Path, tmp: Path) -> Counter[str]:
    """The ops ONNX Runtime runs for ``path`` after its graph optimizations (QLinearConv, QuantizeLinear, …)."""
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.optimized_model_filepath = str(tmp / f"{path.stem}.optimized.onnx")
    ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    return Counter(n.op_type for n in onnx.load(opts.optimized_model_filepath).graph.node)


def test_backbone_recipe_runs_the_backbone_in_int8_and_leaves_head_and_cam_in_fp32(
    export_copy: Path, tiny_dataset: Path, tmp_path: Path
) -> None:
    records = discover(tiny_dataset)
    conv_only = Path(shutil.copytree(export_copy, tmp_path / "conv-only"))
    quantize_export(conv_only, stratified(records, 16), QuantRecipe(scope="conv"))
    out = quantize_export(export_copy, stratified(records, 16))
    ops, before = _runtime_ops(out, tmp_path), _runtime_ops(conv_only / "model.int8.onnx", tmp_path)
    assert ops["QLinearConv"] > 0 and before["QLinearConv"] > 0
    assert not {"QGemm", "QLinearMatMul", "MatMulInteger"} & set(ops)  # the head stays fp32
    round_trips, before_trips = (c["QuantizeLinear"] + c["DequantizeLinear"] for c in (ops, before))
    assert round_trips < before_trips  # activations stay int8 between convolutions instead of fp32 round trips
    images = letterboxed(records[::5], 224)
    fp32 = ort.InferenceSession(str(export_copy / "model.onnx"), providers=["CPUExecutionProvider"])
    int8 = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    (p32, cam32), (p8, cam8) = (s.run(["probs", "cam"], {"image": images}) for s in (fp32, int8))
    assert p8.shape == p32.shape and cam8.shape == cam32.shape
    assert np.abs(p8 - p32).max() < 0.1
    np.testing.assert_allclose(p8.sum(axis=1), 1.0, atol=1e-5)  # still a distribution: softmax in fp32


def test_backbone_is_what_the_pooled_features_depend_on(smoke_export: Path) -> None:
    model = onnx.load(str(smoke_export / "model.onnx"))
    convs = backbone_nodes(model, ["Conv"])
    assert convs and len(convs) == sum(n.op_type == "Conv" for n in model.graph.node)  # every Conv is backbone
    assert backbone_nodes(model, ["Gemm", "Softmax"]) == []


def test_stratified_draws_every_cell_and_is_seeded(tiny_dataset: Path, tiny_typed_dataset: Path) -> None:
    records = discover(tiny_dataset) + discover(tiny_typed_dataset)
    picked = stratified(records, 12)
    assert {(r.dataset, r.label) for r in picked} == {(r.dataset, r.label) for r in records}
    assert len(picked) == 12
    assert picked == stratified(records, 12) and picked != stratified(records, 12, seed=1)


def test_verdict_goes_on_the_card_and_decides_what_serving_loads(export_copy: Path, tiny_dataset: Path) -> None:
    records = discover(tiny_dataset)
    verdict = quantize_if_it_holds(export_copy, stratified(records, 8), records, max_drop=1.0)
    assert verdict["int8_default"] and verdict["n_val"] == len(records)
    assert 0.0 <= verdict["int8_val_accuracy"] <= 1.0 and verdict["recipe"]["scope"] == "backbone"
    card = ExportDir(export_copy).read_card()
    assert card.export is not None and card.export.quantization == verdict
    assert card.default_precision == "int8"
    assert [m.precision for m in Predictor.load(export_copy).members] == ["int8"]
    strict = quantize_if_it_holds(export_copy, stratified(records, 8), records, max_drop=-1.0)
    assert not strict["int8_default"]
    assert [m.precision for m in Predictor.load(export_copy).members] == ["fp32"]


def test_the_stem_convolution_can_stay_in_fp32(export_copy: Path, tiny_dataset: Path) -> None:
    stem = backbone_nodes(onnx.load(str(export_copy / "model.onnx")), ["Conv"])[0]
    out = quantize_export(export_copy, discover(tiny_dataset)[:8], QuantRecipe(method="MinMax", fp32_first_convs=1))
    graph = onnx.load(str(out)).graph
    dequantized = {o for n in graph.node if n.op_type == "DequantizeLinear" for o in n.output}
    convs = {n.name: n for n in graph.node if n.op_type == "Conv"}
    assert stem in convs and convs[stem].input[1] not in dequantized  # its weights stay float
    assert any(c.input[1] in dequantized for name, c in convs.items() if name != stem)  # the others are int8
