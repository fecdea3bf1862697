"""Evaluation of real (smoke-trained) runs: split part, external data, ensembles, label mapping, CV, CLI."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from braintumor.cli import main
from braintumor.data.splits import read_split
from braintumor.evaluation.cv import cross_validate
from braintumor.evaluation.evaluate import evaluate_runs, write_evaluation


def test_evaluate_test_part_of_the_split(smoke_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    rows, _ = read_split(smoke_run / "split.csv")
    n_test = sum(r.split == "test" for r in rows)
    ev = evaluate_runs([smoke_run], [tiny_dataset], split=smoke_run / "split.csv", part="test", n_boot=200)
    assert len(ev.y) == n_test and ev.task == "binary"
    m = ev.results["smoke"]
    for name in ("accuracy", "sensitivity", "specificity", "precision", "f1", "roc_auc", "balanced_accuracy"):
        assert name in m
    acc = m["accuracy"]
    assert acc.low <= acc.value <= acc.high
    assert ev.decision is not None  # the run's calibrated threshold is used
    report = write_evaluation(ev, tmp_path / "eval")
    text = report.read_text()
    assert "| smoke |" in text and "95% stratified bootstrap" in text
    for png in ("roc.png", "pr.png", "confusion.png", "calibration.png"):
        assert Image.open(tmp_path / "eval" / png).size[0] > 200
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["n"] == n_test and sum(map(sum, saved["confusion"])) == n_test


def test_external_evaluation_drops_training_copies(smoke_run: Path, tiny_dataset: Path) -> None:
    rows, _ = read_split(smoke_run / "split.csv")
    seen = sum(r.split in ("train", "val") for r in rows)
    ev = evaluate_runs([smoke_run], [tiny_dataset], n_boot=50)
    assert ev.excluded == seen
    assert len(ev.y) == len(rows) - seen
    assert any("dropped" in n for n in ev.notes)
    everything = evaluate_runs([smoke_run], [tiny_dataset], exclude_training_duplicates=False, n_boot=50)
    assert len(everything.y) == len(rows)


def test_weighted_ensemble_lists_members_and_averages(smoke_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    twin = tmp_path / "twin"
    shutil.copytree(smoke_run, twin)
    ev = evaluate_runs([smoke_run, twin], [tiny_dataset], split=smoke_run / "split.csv", weights=[1, 3], n_boot=50)
    assert set(ev.results) == {"smoke", "twin", "ensemble"}
    np.testing.assert_allclose(ev.ensemble_probs, ev.scored()["smoke"], atol=1e-12)
    assert ev.table().count("\n") == 4  # header, rule, 2 members, ensemble
    with pytest.raises(Exception, match="weights"):
        evaluate_runs([smoke_run, twin], [tiny_dataset], weights=[1.0], n_boot=10)


def test_binary_model_on_multiclass_labels(smoke_run: Path, tiny_dataset: Path, tmp_path: Path) -> None:
    four = tmp_path / "fourclass"
    for src, dst in (("yes", "glioma"), ("no", "notumor")):
        (four / dst).mkdir(parents=True)
        for p in sorted((tiny_dataset / src).iterdir())[:5]:
            shutil.copy(p, four / dst / p.name)
    ev = evaluate_runs([smoke_run], [four], exclude_training_duplicates=False, n_boot=20)
    assert ev.task == "binary" and ev.y.sum() == 5
    assert any("tumor = any tumor class" in n for n in ev.notes)


def test_cross_validation_tests_every_image_once(
    smoke_config: Any, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = smoke_config.merged({"fine_tune": False, "epochs": 1, "cached_views": 1})
    kept = tmp_path / "kept"
    result = cross_validate(
        cfg, [str(tiny_dataset)], tmp_path / "cv", k=3, repeats=1, progress=False, log=lambda _: None, outcomes=kept
    )
    assert len(result.folds) == 3
    tested: list[str] = []
    for f in range(3):
        rows, _ = read_split(tmp_path / "cv" / f"r0-f{f}" / "split.csv")
        tested += [r.key for r in rows if r.split == "test"]
        val = {r.group for r in rows if r.split == "val"}
        test = {r.group for r in rows if r.split == "test"}
        train = {r.group for r in rows if r.split == "train"}
        assert not (val & test) and not (train & test) and not (train & val)
    assert len(tested) == len(set(tested)) == 40
    s = result.summary()["accuracy"]
    assert s["n"] == 3 and s["low"] <= s["mean"] <= s["high"]
    assert (tmp_path / "cv" / "cv.md").read_text().count("| mobilenet_v3_small |") == 1
    # a later call with the same recipe and data reads every fold back instead of training it again
    assert len(list(kept.glob("r0-f*-*.json"))) == 3

    def no_training(*_: Any, **__: Any) -> None:
        raise AssertionError("a kept fold was trained again")

    monkeypatch.setattr("braintumor.training.loop.train", no_training)
    again = cross_validate(
        cfg, [str(tiny_dataset)], tmp_path / "cv2", k=3, repeats=1, progress=False, log=lambda _: None, outcomes=kept
    )
    kept_means = [again.summary()[m]["mean"] for m in result.summary()]
    assert np.allclose(kept_means, [s["mean"] for s in result.summary().values()], atol=1e-6, equal_nan=True)
    assert again.seconds == pytest.approx(result.seconds)
    with pytest.raises(AssertionError, match="trained again"):  # another recipe is another key
        cross_validate(cfg.merged({"epochs": 2}), [str(tiny_dataset)], tmp_path / "cv3", k=3, progress=False,
                       log=lambda _: None, outcomes=kept)  # fmt: skip


def test_cli_evaluate_and_explain(
    smoke_run: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["evaluate", "--run", str(smoke_run), "--data", str(tiny_dataset), "--split",
                 str(smoke_run / "split.csv"), "--out", str(tmp_path / "ev")])  # fmt: skip
    assert code == 0 and (tmp_path / "ev" / "report.md").is_file()
    image = sorted((tiny_dataset / "yes").iterdir())[0]
    out = tmp_path / "heat.png"
    capsys.readouterr()
    assert (
        main(["explain", str(image), "--run", str(smoke_run), "--out", str(out), "--raw", str(tmp_path / "m.npy")]) == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["prediction"] in ("tumor", "no_tumor")
    assert Image.open(out).size == Image.open(image).size
    assert np.load(tmp_path / "m.npy").shape == (224, 224)
    assert main(["explain", str(image), "--run", str(smoke_run), "--out", str(out), "--target", "cat"]) == 2
    assert "unknown class 'cat'" in capsys.readouterr().err
    assert main(["evaluate", "--data", str(tiny_dataset), "--out", str(tmp_path / "x")]) == 2


def test_cross_validation_extra_training_data_never_leaks(
    smoke_config: Any, tiny_dataset: Path, tmp_path: Path
) -> None:
    extra = tmp_path / "extra"
    for label in ("yes", "no"):
        (extra / label).mkdir(parents=True)
        for p in sorted((tiny_dataset / label).iterdir())[:6]:
            shutil.copy(p, extra / label / f"copy_{p.name}")  # exact copies of tiny images
    cfg = smoke_config.merged({"fine_tune": False, "epochs": 1, "cached_views": 1})
    cross_validate(cfg, [str(tiny_dataset)], tmp_path / "cv", k=3, extra_train=[str(extra)], progress=False,
                   log=lambda _: None)  # fmt: skip
    used = 0
    for f in range(3):
        rows, _ = read_split(tmp_path / "cv" / f"r0-f{f}" / "split.csv")
        held_out = {r.group for r in rows if r.split != "train"}
        extra_rows = [r for r in rows if r.dataset == "extra"]
        assert all(r.split == "train" and r.group not in held_out for r in extra_rows)
        assert all(r.dataset == "tiny" for r in rows if r.split == "test")
        used += len(extra_rows)
    assert 0 < used < 3 * 12  # each copy is used in the folds where its original trains, and only there
