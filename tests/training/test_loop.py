"""Smoke training on tiny synthetic data: the whole loop, the run folder, the checkpoint, Ctrl-C."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from braintumor.cli import main
from braintumor.training import loop as loop_module
from braintumor.training.callbacks import EarlyStopping
from braintumor.training.checkpoint import load_checkpoint
from braintumor.training.config import ConfigError, TrainConfig, load_config
from braintumor.training.loop import train


def test_train_writes_a_complete_run_folder(smoke_run: Path) -> None:
    run = smoke_run
    for name in (
        "checkpoint.pt",
        "config.json",
        "card.json",
        "metrics.json",
        "history.csv",
        "curves.png",
        "split.csv",
        "train_fingerprints.npz",
    ):
        assert (run / name).is_file(), name
    _, payload = load_checkpoint(run / "checkpoint.pt")
    phases = [e["phase"] for e in payload["history"]]
    assert phases[0] == "frozen" and "fine-tune" in phases
    assert all(np.isfinite(e["loss"]) for e in payload["history"])
    card = json.loads((run / "card.json").read_text())
    assert card == payload["card"]
    assert card["arch"] == "mobilenet_v3_small"
    assert card["class_names"] == ["no_tumor", "tumor"]
    training = card["extra"]["training"]
    assert training["task"] == "binary" and len(training["split_sha256"]) == 64
    assert sum(training["counts"].values()) == 40
    assert payload["metrics"]["test"]["n"] == training["counts"]["test"]
    calibration = card["extra"]["calibration"]
    assert calibration["temperature"] > 0 and calibration["fitted_on"] == "val"
    decision = calibration["decision"]
    assert decision["refer_low"] <= decision["threshold"] <= decision["refer_high"]
    assert json.loads((run / "config.json").read_text())["arch"] == "mobilenet_v3_small"


def test_checkpoint_reloads_to_identical_predictions(smoke_run: Path) -> None:
    from braintumor.models.factory import create_model

    model, payload = load_checkpoint(smoke_run / "checkpoint.pt")
    fresh = create_model("mobilenet_v3_small", 1, pretrained=False)
    fresh.load_state_dict(payload["state_dict"])
    fresh.eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        assert torch.allclose(model(x), fresh(x), atol=1e-6)
        assert not torch.allclose(model(x), create_model("mobilenet_v3_small", 1).eval()(x))


def test_training_is_seeded(smoke_config: TrainConfig, tiny_dataset: Path, tmp_path: Path) -> None:
    cfg = TrainConfig.from_dict({**smoke_config.to_dict(), "fine_tune": False})
    a = train(cfg, [str(tiny_dataset)], tmp_path / "a", progress=False, log=lambda _: None)
    b = train(cfg, [str(tiny_dataset)], tmp_path / "b", progress=False, log=lambda _: None)
    assert [e.loss for e in a.history] == pytest.approx([e.loss for e in b.history], rel=1e-5)


def test_ctrl_c_leaves_a_usable_checkpoint(
    smoke_config: TrainConfig, tiny_dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class InterruptedInFineTuning(EarlyStopping):
        def step(self, loss: float, module: torch.nn.Module) -> bool:
            if math.isfinite(self.start):  # the phase-2 stopper starts from phase 1's best loss
                raise KeyboardInterrupt
            return super().step(loss, module)

        def __init__(self, patience: int, **kwargs: float) -> None:
            super().__init__(patience, **kwargs)
            self.start = self.best

    monkeypatch.setattr(loop_module, "EarlyStopping", InterruptedInFineTuning)
    with pytest.raises(KeyboardInterrupt):
        train(smoke_config, [str(tiny_dataset)], tmp_path / "run", progress=False, log=lambda _: None)
    model, payload = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert payload["interrupted"] is True
    assert [e["phase"] for e in payload["history"]][-1] == "fine-tune"  # it was interrupted in phase 2
    with torch.inference_mode():
        assert torch.isfinite(model(torch.randn(1, 3, 224, 224))).all()


def test_cached_fine_tuning_matches_a_full_forward(smoke_run: Path) -> None:
    """The cached lower-block activations are exactly what the frozen blocks compute (ORT vs torch)."""
    from braintumor.training.cache import LowerBlocks

    model, _ = load_checkpoint(smoke_run / "checkpoint.pt")
    x = torch.randn(3, 3, 224, 224)
    split = len(model.backbone.blocks()) - 2
    ort_lower = LowerBlocks(model, split, 224, engine="onnxruntime")
    torch_lower = LowerBlocks(model, split, 224, engine="torch")
    assert ort_lower.engine == "onnxruntime" and torch_lower.engine == "torch"
    torch.testing.assert_close(ort_lower(x), torch_lower(x), atol=1e-4, rtol=1e-4)
    upper = torch.nn.Sequential(*model.backbone.blocks()[split:])
    with torch.inference_mode():
        torch.testing.assert_close(model.forward_head(upper(ort_lower(x))), model(x), atol=1e-4, rtol=1e-4)


def test_config_file_then_flags(smoke_config: TrainConfig, tiny_dataset: Path, tmp_path: Path) -> None:
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


def test_every_labelled_image_trains_with_balanced_sampling_and_fresh_fine_tuning(
    smoke_config: TrainConfig, tiny_dataset: Path, tiny_typed_dataset: Path, tmp_path: Path
) -> None:
    """yes/no tumors without a type join a typed dataset as partial labels; phase 2 on fresh augmentations."""
    cfg = TrainConfig.from_dict(
        {
            **smoke_config.to_dict(),
            "task": "multiclass",
            "label_map": {"no": "notumor", "yes": "tumor"},
            "sampling": "balanced",
            "cache_fine_tune": False,
            "augment": {**smoke_config.augment.__dict__, "brightness": 0.2, "gamma": 0.2, "blur": 0.5},
        }
    )
    result = train(cfg, [str(tiny_dataset), str(tiny_typed_dataset)], tmp_path / "run", progress=False,
                   log=lambda _: None)  # fmt: skip
    card = result.card
    assert card["class_names"] == ["glioma", "notumor"]  # "tumor" (untyped) is no class of its own
    training = card["extra"]["training"]
    assert training["untyped_tumors"] > 0 and training["datasets"] == ["tiny", "typed"]
    assert [e.phase for e in result.history][-1] == "fine-tune"
    assert all(math.isfinite(e.loss) and math.isfinite(e.val_loss) for e in result.history)
    calibration = card["extra"]["calibration"]
    assert calibration["ece_of"] == "p_tumor" and "decision" in calibration
