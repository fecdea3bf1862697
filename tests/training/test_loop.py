"""Smoke training on tiny synthetic data: the whole loop, the run folder, the checkpoint, Ctrl-C."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from braintumor.cli import main
from braintumor.training import loop as loop_module
from braintumor.training.config import ConfigError, TrainConfig, load_config
from braintumor.training.loop import load_checkpoint, train


def _slice(rng: np.random.Generator, tumor: bool, size: int = 96) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size]
    img = np.zeros((size, size), np.float64)
    brain = ((yy - size / 2) / (size * 0.4)) ** 2 + ((xx - size / 2) / (size * 0.32)) ** 2 <= 1
    img[brain] = 90 + rng.normal(0, 12, brain.sum())
    if tumor:
        cy, cx = rng.integers(size // 3, 2 * size // 3, 2)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 <= (size // 10) ** 2] = 230
    return np.clip(img, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "tiny"
    rng = np.random.default_rng(0)
    for label in ("yes", "no"):
        (root / label).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(_slice(rng, label == "yes")).save(root / label / f"{label}{i}.jpg", quality=95)
    return root


SMOKE = TrainConfig(
    arch="mobilenet_v3_small",
    pretrained=False,
    epochs=2,
    cached_views=2,
    fine_tune_epochs=1,
    batch_size=4,
    threads=1,
)


def test_train_writes_a_complete_run_folder(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(SMOKE, [str(tiny_dataset)], tmp_path / "run", progress=False, log=lambda _: None)
    run = tmp_path / "run"
    for name in ("checkpoint.pt", "config.json", "card.json", "metrics.json", "history.csv", "curves.png", "split.csv"):
        assert (run / name).is_file(), name
    phases = [e.phase for e in result.history]
    assert phases[0] == "frozen" and "fine-tune" in phases
    assert all(np.isfinite(e.loss) for e in result.history)
    card = json.loads((run / "card.json").read_text())
    assert card["arch"] == "mobilenet_v3_small"
    assert card["class_names"] == ["no_tumor", "tumor"]
    training = card["extra"]["training"]
    assert training["task"] == "binary" and len(training["split_sha256"]) == 64
    assert sum(training["counts"].values()) == 20
    assert result.metrics["test"]["n"] == training["counts"]["test"]
    assert json.loads((run / "config.json").read_text())["arch"] == "mobilenet_v3_small"


def test_checkpoint_reloads_to_identical_predictions(tiny_dataset: Path, tmp_path: Path) -> None:
    result = train(SMOKE, [str(tiny_dataset)], tmp_path / "run", progress=False, log=lambda _: None)
    model, payload = load_checkpoint(result.checkpoint)
    assert payload["card"]["arch"] == "mobilenet_v3_small"
    assert payload["split_sha256"] == result.card["extra"]["training"]["split_sha256"]
    x = torch.randn(2, 3, 224, 224)
    state = torch.load(result.checkpoint, weights_only=True)["state_dict"]
    from braintumor.models import create_model

    fresh = create_model("mobilenet_v3_small", 1, pretrained=False)
    fresh.load_state_dict(state)
    fresh.eval()
    with torch.inference_mode():
        assert torch.allclose(model(x), fresh(x), atol=1e-6)


def test_training_is_seeded(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({**SMOKE.to_dict(), "fine_tune": False})
    a = train(cfg, [str(tiny_dataset)], tmp_path / "a", progress=False, log=lambda _: None)
    b = train(cfg, [str(tiny_dataset)], tmp_path / "b", progress=False, log=lambda _: None)
    assert [e.loss for e in a.history] == pytest.approx([e.loss for e in b.history], rel=1e-5)


def test_ctrl_c_leaves_a_usable_checkpoint(tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = {"n": 0}
    real = loop_module.augment_batch

    def interrupt_in_fine_tuning(images: torch.Tensor, transform: object) -> torch.Tensor:
        calls["n"] += 1
        if calls["n"] > SMOKE.cached_views:  # the cached views are done: we are in phase 2
            raise KeyboardInterrupt
        return real(images, transform)  # type: ignore[arg-type]

    monkeypatch.setattr(loop_module, "augment_batch", interrupt_in_fine_tuning)
    with pytest.raises(KeyboardInterrupt):
        train(SMOKE, [str(tiny_dataset)], tmp_path / "run", progress=False, log=lambda _: None)
    model, payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["interrupted"] is True
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, 224, 224))).all()


def test_config_file_then_flags(tiny_dataset: Path, tmp_path: Path) -> None:
    cfg_file = tmp_path / "cfg.toml"
    cfg_file.write_text(
        'arch = "mobilenet_v3_small"\npretrained = false\nepochs = 1\ncached_views = 1\n'
        "fine_tune = false\nbatch_size = 4\nthreads = 1\n[augment]\nrotation = 5.0\n"
    )
    assert load_config(cfg_file).augment.rotation == 5.0
    code = main(
        [
            "train",
            "--data",
            str(tiny_dataset),
            "--out",
            str(tmp_path / "run"),
            "--config",
            str(cfg_file),
            "--epochs",
            "2",
            "--seed",
            "7",
        ]
    )
    assert code == 0
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["epochs"] == 2 and saved["seed"] == 7 and saved["augment"]["rotation"] == 5.0


def test_bad_config_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("learning_rate = 3\n")
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config(bad)
    assert main(["train", "--data", str(tmp_path), "--out", str(tmp_path / "r"), "--config", str(bad)]) == 2
