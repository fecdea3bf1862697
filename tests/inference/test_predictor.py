"""The ONNX Runtime predictor: single model, ensembles, parity with the PyTorch path, no torch needed."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from braintumor.errors import BrainTumorError
from braintumor.imaging.io import load_image
from braintumor.inference.predictor import Prediction, Predictor


def _images(folder: Path, n: int = 4) -> list[Path]:
    files = sorted(folder.rglob("*.jpg"))
    return files[:: max(1, len(files) // n)][:n]


def test_single_export_predicts_with_cam(smoke_export: Path, tiny_dataset: Path) -> None:
    predictor = Predictor.load(smoke_export, threads=1)
    path = _images(tiny_dataset)[0]
    image = load_image(path)
    result = predictor.predict(image)
    assert isinstance(result, Prediction)
    assert result.outcome == result.decision.outcome(result.p_tumor)
    assert not hasattr(result, "label") and not hasattr(result, "band")
    assert 0 <= result.p_tumor <= 1
    assert result.probs["tumor"] == pytest.approx(result.p_tumor)
    assert result.cam is not None and result.cam.shape == image.pixels.shape[:2]
    assert result.members[0].cam.shape == (224, 224)
    d = result.as_dict()
    assert d["threshold"] == result.decision.threshold and json.dumps(d)
    assert d["outcome"] == result.outcome and "label" not in d and "band" not in d


def test_batch_equals_single_calls(smoke_export: Path, tiny_dataset: Path) -> None:
    predictor = Predictor.load(smoke_export, threads=1)
    images = [load_image(p) for p in _images(tiny_dataset, 5)]
    batch = predictor.predict_batch(images)
    for image, b in zip(images, batch, strict=True):
        single = predictor.predict(image)
        assert isinstance(b, Prediction)
        assert b.p_tumor == pytest.approx(single.p_tumor, abs=1e-5)


def test_ensemble_of_two_members_averages(smoke_export: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    root = tmp_path / "ens"
    shutil.copytree(smoke_export, root / "a")
    shutil.copytree(smoke_export, root / "b")
    (root / "ensemble.json").write_text(
        json.dumps(
            {
                "name": "twins",
                "version": "1",
                "members": [{"name": "a", "path": "a"}, {"name": "b", "path": "b", "weight": 2}],
            }
        )
    )
    single = Predictor.load(smoke_export, threads=1)
    ens = Predictor.load(root, threads=1)
    image = load_image(_images(tiny_dataset)[1])
    r1, r2 = single.predict(image), ens.predict(image)
    assert r2.p_tumor == pytest.approx(r1.p_tumor, abs=1e-6)
    assert [m.name for m in r2.members] == ["a", "b"]
    # members are read under the ensemble's rule, and each carries its own map at the image's size
    assert all(m.outcome == ens.decision.outcome(m.p_tumor) for m in r2.members)
    assert all(m.heatmap is not None and m.heatmap.shape == image.pixels.shape[:2] for m in r2.members)
    heatmaps = [m.heatmap for m in r2.members if m.heatmap is not None]
    small = r2.members[0].map_at((20, 10))  # straight to another size (a stored map): (width, height)
    assert small is not None and small.shape == (10, 20) and small.max() <= 1 + 1e-6
    assert np.array_equal(r2.members[0].map_at(image.meta.original_size), heatmaps[0])
    assert r2.cam is not None and np.allclose(r2.cam, np.mean(heatmaps, axis=0), atol=1e-5)
    assert r2.model_name == "twins" and r2.model_version == "1"
    assert ens.card_summary()["members"][1]["weight"] == 2


def test_members_side_by_side_answer_as_in_turn(smoke_export: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    """Members that can each have a core run at once, each session on its share of the cores, and the answer is
    the one the members give in turn; on one core they run in turn (no oversubscription)."""
    root = tmp_path / "ens"
    for name in ("a", "b"):
        shutil.copytree(smoke_export, root / name)
    members = [{"name": "a", "path": "a"}, {"name": "b", "path": "b"}]
    (root / "ensemble.json").write_text(json.dumps({"name": "pair", "version": "1", "members": members}))
    side, turn = Predictor.load(root, threads=2), Predictor.load(root, threads=1)
    assert side.side_by_side and not turn.side_by_side
    assert not Predictor.load(smoke_export, threads=2).side_by_side  # one member: nothing to run beside it
    ran_in: list[str] = []
    second = side.members[1].session

    class Recording:  # the second member's session, noting which thread runs it
        def run(self, *args: Any) -> Any:
            ran_in.append(threading.current_thread().name)
            return second.run(*args)

    side.members[1].session = Recording()
    images = [load_image(p) for p in _images(tiny_dataset, 3)]
    for a, b in zip(side.predict_batch(images), turn.predict_batch(images), strict=True):
        assert isinstance(a, Prediction) and isinstance(b, Prediction)
        assert [m.p_tumor for m in a.members] == pytest.approx([m.p_tumor for m in b.members], abs=1e-6)
        assert a.cam is not None and b.cam is not None and np.allclose(a.cam, b.cam, atol=1e-5)
    assert ran_in and all(name.startswith("member") for name in ran_in)  # the second member ran in the pool


def test_bad_model_folders_are_clear_errors(tmp_path: Path, smoke_export: Path) -> None:
    with pytest.raises(BrainTumorError, match="not a model folder"):
        Predictor.load(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(smoke_export, broken)
    (broken / "model.onnx").write_bytes(b"garbage")
    with pytest.raises(BrainTumorError, match="cannot load"):
        Predictor.load(broken)
    with pytest.raises(BrainTumorError, match="no int8 model"):
        Predictor.load(smoke_export, precision="int8")


def test_inference_never_imports_torch(smoke_export: Path, tiny_dataset: Path) -> None:
    code = (
        "import sys\n"
        "from braintumor.inference.predictor import Predictor\n"
        "from braintumor.imaging.io import load_image\n"
        f"p = Predictor.load({str(smoke_export)!r}, threads=1)\n"
        f"p.predict(load_image({str(_images(tiny_dataset)[0])!r}))\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_onnx_probabilities_match_the_torch_run(smoke_run: Path, smoke_export: Path, tiny_dataset: Path) -> None:
    from braintumor.explain.explainer import explain_image
    from braintumor.training.checkpoint import load_checkpoint

    model, _ = load_checkpoint(smoke_run / "checkpoint.pt")
    predictor = Predictor.load(smoke_export, threads=1)
    for path in _images(tiny_dataset, 3):
        image = load_image(path)
        ref = explain_image(model, model.card, image)
        got = predictor.predict(image)
        assert got.p_tumor == pytest.approx(float(ref.probs[1]), abs=1e-4)
        assert got.cam is not None
        if ref.original_map.std() > 0:
            assert np.corrcoef(got.cam.ravel(), ref.original_map.ravel())[0, 1] > 0.99


def _normalised(cam: np.ndarray) -> np.ndarray:
    top = float(cam.max())
    return (cam / top if top > 0 else cam).astype(np.float32)


def test_heatmaps_are_the_unmapped_means_of_max_normalised_maps(bundled: Predictor, shared_data: Path) -> None:
    """The definitions (each member's map divided by its maximum over the whole square, averaged, padding
    cropped off, resized to the scan), whatever the predictor skips to compute them; a heatmap is its own array."""
    files = sorted((shared_data / "br35h" / "yes").iterdir())[:3]
    for result in bundled.predict_batch([load_image(f) for f in files]):
        assert isinstance(result, Prediction) and result.cam is not None
        placement = result.members[0].placement
        assert placement is not None and all(m.placement == placement for m in result.members)
        want = placement.unmap(np.mean([_normalised(m.cam) for m in result.members], axis=0).astype(np.float32))
        assert result.cam.dtype == np.float32 and np.array_equal(result.cam, want)
        for member in result.members:
            assert member.heatmap is not None
            assert np.array_equal(member.heatmap, placement.unmap(_normalised(member.cam)))
            assert not np.shares_memory(member.heatmap, member.cam)
