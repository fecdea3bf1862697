"""Training configuration: the seed's recipe as defaults, overridable by a config file and then by flags.

The resolved configuration is saved in every run folder (``config.json``), so a run can be repeated exactly.

Example:
    >>> cfg = TrainConfig(arch="mobilenet_v2")
    >>> cfg.lr, cfg.patience, cfg.augment.rotation
    (0.0001, 4, 20.0)
"""

from __future__ import annotations

import json
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from braintumor.errors import BrainTumorError


class ConfigError(BrainTumorError):
    """A configuration file or value is invalid."""


@dataclass(frozen=True)
class AugmentConfig:
    """On-the-fly augmentation (the seed's ImageDataGenerator settings, in torchvision terms)."""

    rotation: float = 20.0  # degrees, ±
    width_shift: float = 0.1  # fraction of width, ±
    height_shift: float = 0.1  # fraction of height, ±
    shear: float = 10.0  # degrees, ±
    zoom: float = 0.1  # scale in [1 - zoom, 1 + zoom]
    horizontal_flip: bool = True
    # Intensity and resolution augmentation (off in the seed's recipe). Scanners, sequences and the datasets'
    # own re-encoding differ in brightness, contrast, gamma and sharpness; randomising them takes those cues
    # away from the network, which could otherwise tell the source (and its class mix) instead of the disease.
    brightness: float = 0.0  # brightness factor in [1 - b, 1 + b]
    contrast: float = 0.0  # contrast factor in [1 - c, 1 + c]
    gamma: float = 0.0  # gamma in [1 - g, 1 + g]
    blur: float = 0.0  # probability of a Gaussian blur (sigma 0.3–1.5 px)


@dataclass(frozen=True)
class TrainConfig:
    """Everything a training run depends on. Defaults are the seed's recipe plus a fine-tuning phase."""

    arch: str = "mobilenet_v2"
    pretrained: bool = True
    task: str = "auto"  # "binary" (tumor vs none), "multiclass" (folder classes) or "auto"
    batch_size: int = 16
    epochs: int = 30  # frozen-backbone phase, upper bound (early stopping decides)
    lr: float = 1e-4
    patience: int = 4  # early stopping on validation loss, best weights restored
    lr_patience: int = 2  # ReduceLROnPlateau
    lr_factor: float = 0.2
    min_lr: float = 1e-7
    cached_views: int = 8  # augmented views per image whose frozen activations are computed once
    # Phase 2 trains on the cached views (True), or on fresh augmentations every epoch (False: the frozen
    # lower blocks run per batch in ONNX Runtime; slower per epoch, harder to overfit).
    cache_fine_tune: bool = True
    cache_max_gb: float = 6.0  # above this the phase-2 cache is skipped (fresh augmentation instead)
    feature_engine: str = "auto"  # "auto" (ONNX Runtime when installed), "onnxruntime" or "torch"
    class_weights: bool = True  # weight the loss by inverse class frequency (with sampling = "shuffle")
    # "shuffle": every training image once per epoch. "balanced": each epoch draws as many images, with
    # probability ∝ n_cell ** -balance_power where a cell is (dataset, class): every source contributes
    # tumors and non-tumors, so no dataset's look can stand in for a class.
    sampling: str = "shuffle"
    balance_power: float = 1.0
    # "dataset": a cell is (dataset folder, class); "sources": (the datasets the image's duplicate group spans,
    # class), so images one collection borrowed from another are balanced apart from its own.
    balance_by: str = "dataset"
    # In a multi-class task, this label means "a tumor of unknown type" (the yes/no datasets' positives after
    # a label map such as yes=tumor): such images train the tumor / no-tumor decision through a partial-label
    # loss, −log(1 − p(no tumor)), and no type.
    untyped_label: str = "tumor"
    fine_tune: bool = True
    fine_tune_epochs: int = 8
    fine_tune_lr: float = 1e-5
    unfreeze_fraction: float = 0.3  # top share of the backbone trained in phase 2
    seed: int = 42
    threads: int = 0  # 0: torch's default
    channels_last: bool = True
    max_train_images: int = 0  # 0: all (smoke runs use a handful)
    # Rename folder labels before training, e.g. {"no": "notumor", "yes": ""} to train the 4-class task
    # with the yes/no datasets' negatives; "" drops the label (images of unknown tumor type).
    label_map: dict[str, str] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown config key(s): {', '.join(sorted(unknown))}")
        values = dict(values)
        if "augment" in values and isinstance(values["augment"], dict):
            aug_known = {f.name for f in fields(AugmentConfig)}
            bad = set(values["augment"]) - aug_known
            if bad:
                raise ConfigError(f"unknown augment key(s): {', '.join(sorted(bad))}")
            values["augment"] = AugmentConfig(**values["augment"])
        return cls(**values).validated()

    def merged(self, overrides: dict[str, Any]) -> TrainConfig:
        """A copy with ``overrides`` applied (``None`` values are ignored, as unset flags)."""
        clean = {k: v for k, v in overrides.items() if v is not None}
        aug = clean.pop("augment", None)
        out = replace(self, **clean)
        if aug:
            out = replace(out, augment=replace(out.augment, **aug))
        return out.validated()

    def validated(self) -> TrainConfig:
        if self.feature_engine not in ("auto", "onnxruntime", "torch"):
            raise ConfigError(f"feature_engine must be auto, onnxruntime or torch, not {self.feature_engine!r}")
        if self.sampling not in ("shuffle", "balanced"):
            raise ConfigError(f"sampling must be shuffle or balanced, not {self.sampling!r}")
        if self.balance_by not in ("dataset", "sources"):
            raise ConfigError(f"balance_by must be dataset or sources, not {self.balance_by!r}")
        if not 0 <= self.balance_power <= 1:
            raise ConfigError("balance_power must be in [0, 1]")
        if self.task not in ("auto", "binary", "multiclass"):
            raise ConfigError(f"task must be auto, binary or multiclass, not {self.task!r}")
        for name in ("batch_size", "epochs", "cached_views"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be at least 1")
        if not 0 < self.lr < 1 or not 0 < self.fine_tune_lr < 1:
            raise ConfigError("learning rates must be in (0, 1)")
        if not 0 <= self.unfreeze_fraction <= 1:
            raise ConfigError("unfreeze_fraction must be in [0, 1]")
        return self


def load_config(path: str | Path) -> TrainConfig:
    """Read a TOML or JSON config file (keys as in :class:`TrainConfig`; ``[augment]`` table)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror or exc}") from exc
    try:
        values = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"invalid config {path}: {exc}") from exc
    if not isinstance(values, dict):
        raise ConfigError(f"config {path} must hold a table of settings")
    return TrainConfig.from_dict(values)


#: The bundled default model's recipe (``bench/train_default.py``; chosen on validation data, see
#: ``bench/results-recipe.md``): every labelled image (untyped tumors through the partial-label loss),
#: sampling balanced over sources, intensity/blur augmentation, the top half of the backbone fine-tuned on
#: cached activations of 12 augmented views.
BUNDLED_RECIPE = TrainConfig(
    task="multiclass",
    label_map={"no": "notumor", "yes": "tumor"},
    sampling="balanced",
    balance_power=0.5,
    balance_by="sources",
    cached_views=12,
    epochs=30,
    lr=3e-4,
    fine_tune_epochs=15,
    fine_tune_lr=3e-5,
    unfreeze_fraction=0.5,
    augment=AugmentConfig(brightness=0.2, contrast=0.2, gamma=0.3, blur=0.3),
)
