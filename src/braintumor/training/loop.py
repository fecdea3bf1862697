"""The training loop: the seed's transfer-learning recipe, then an optional fine-tuning phase.

Phase 1 (frozen backbone): the backbone's pooled features are computed once for ``cached_views``
augmented views of every training image (view 0 is the plain image) and for the validation images; each
epoch then trains only the head, drawing one cached view per image. That is the seed's frozen-base
training with on-the-fly augmentation, at a fraction of the cost (the backbone is not re-run per epoch).

Phase 2 (fine-tuning, on by default): the top of the backbone is unfrozen and trained end to end at a
lower rate on freshly augmented images; it keeps its weights only where validation loss improves on
phase 1.

Both phases: Adam, (binary) cross-entropy with class weights, ReduceLROnPlateau, early stopping on
validation loss restoring the best weights. The run folder receives ``checkpoint.pt`` (weights + model
card + config + split hash), ``config.json``, ``history.csv``, ``metrics.json`` and ``curves.png``.
Ctrl-C saves the best weights so far as a usable checkpoint marked ``interrupted``.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import json
import math
import platform
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from braintumor import __version__
from braintumor.data.datasets import ImageRecord
from braintumor.data.splits import SplitRow, make_split, read_split, write_split
from braintumor.errors import DatasetError
from braintumor.models import BrainTumorNet
from braintumor.training.cache import LowerBlocks, cache_views, estimate_bytes, split_index
from braintumor.training.callbacks import EarlyStopping
from braintumor.training.config import TrainConfig
from braintumor.training.data import (
    LabelledSet,
    augment_batch,
    build_augment,
    load_set,
    normalise,
    records_for_split,
    resolve_task,
)

CHECKPOINT = "checkpoint.pt"


@dataclass
class EpochLog:
    phase: str
    epoch: int
    loss: float
    accuracy: float
    val_loss: float
    val_accuracy: float
    lr: float
    seconds: float

    def postfix(self) -> dict[str, str]:
        """What the progress bar shows after each epoch."""
        return {k: f"{getattr(self, k):.3f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")}


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path
    history: list[EpochLog]
    metrics: dict[str, Any]
    interrupted: bool = False
    card: dict[str, Any] = field(default_factory=dict)


class _Criterion:
    """Loss and predictions for binary (one logit) or multi-class (K logits) heads."""

    def __init__(self, binary: bool, targets: torch.Tensor, n_classes: int, weighted: bool) -> None:
        self.binary = binary
        if binary:
            pos = float(targets.sum())
            neg = float(len(targets) - pos)
            pos_weight = torch.tensor([neg / pos]) if weighted and pos > 0 and neg > 0 else None
            self.loss_fn: nn.Module = nn.BCEWithLogitsLoss(pos_weight=pos_weight)
            self.eval_fn: nn.Module = nn.BCEWithLogitsLoss()
        else:
            counts = torch.bincount(targets, minlength=n_classes).float()
            weight = len(targets) / (n_classes * counts.clamp(min=1)) if weighted else None
            self.loss_fn = nn.CrossEntropyLoss(weight=weight)
            self.eval_fn = nn.CrossEntropyLoss()

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, *, evaluate: bool = False) -> torch.Tensor:
        fn = self.eval_fn if evaluate else self.loss_fn
        if self.binary:
            return fn(logits.squeeze(1), targets.float())  # type: ignore[no-any-return]
        return fn(logits, targets)  # type: ignore[no-any-return]

    def predict(self, logits: torch.Tensor) -> torch.Tensor:
        if self.binary:
            return (logits.squeeze(1) > 0).long()
        return logits.argmax(1)


def _accuracy(pred: torch.Tensor, targets: torch.Tensor) -> float:
    return float((pred == targets).float().mean()) if len(targets) else math.nan


def _batches(n: int, size: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    order = rng.permutation(n) if rng is not None else np.arange(n)
    return [order[i : i + size] for i in range(0, n, size)]


@torch.inference_mode()
def _pooled_features(model: Any, images: torch.Tensor, card: Any, channels_last: bool, batch: int = 32) -> torch.Tensor:
    feats = []
    for idx in _batches(len(images), batch, None):
        x = normalise(images[idx], card.mean, card.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        feats.append(model.forward_features(x).mean(dim=(2, 3)))
    return torch.cat(feats)


def _evaluate(model: Any, data: LabelledSet, crit: _Criterion, card: Any, channels_last: bool) -> tuple[float, float]:
    if len(data) == 0:
        return math.nan, math.nan
    out = torch.from_numpy(predict_logits(model, data.images, card, channels_last))
    return float(crit(out, data.targets, evaluate=True)), _accuracy(crit.predict(out), data.targets)


def relabel(records: Sequence[ImageRecord], label_map: dict[str, str]) -> list[ImageRecord]:
    """Apply a label map (``""`` drops the record); labels not in the map are kept as they are."""
    out = []
    for r in records:
        label = label_map.get(r.label, r.label)
        if label:
            out.append(dataclasses.replace(r, label=label))
    return out


def _resolve_split(
    cfg: TrainConfig, data_dirs: Sequence[str], split: str | Path | None, run_dir: Path
) -> tuple[list[SplitRow], str]:
    if split is not None:
        rows, digest = read_split(split)
        kept = run_dir / "split.csv"
        if Path(split).resolve() != kept.resolve():
            shutil.copyfile(split, kept)  # the run folder is self-contained: export and evaluation find it
        return rows, digest
    from braintumor.data.audit import audit_records
    from braintumor.data.datasets import discover_many

    rows = make_split(audit_records(discover_many(data_dirs)), seed=cfg.seed)
    digest = write_split(rows, run_dir / "split.csv")
    return rows, digest


def train(
    cfg: TrainConfig,
    data_dirs: Sequence[str],
    out_dir: str | Path,
    *,
    split: str | Path | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> RunResult:
    """Train ``cfg.arch`` on the train part of ``split`` (made grouped on the fly when omitted)."""
    from braintumor.models import create_model

    started = time.perf_counter()
    run_dir = Path(out_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)

    rows, split_sha = _resolve_split(cfg, data_dirs, split, run_dir)
    parts = records_for_split(data_dirs, rows)
    if cfg.label_map:
        parts = {k: relabel(v, cfg.label_map) for k, v in parts.items()}
    if cfg.max_train_images:
        parts = {k: v[: cfg.max_train_images] for k, v in parts.items()}
    if not parts["train"]:
        raise DatasetError("the split has no training images under the given --data folders")
    task, classes = resolve_task([r.label for r in parts["train"] + parts["val"]], cfg.task)
    binary = task == "binary"
    model = create_model(cfg.arch, 1 if binary else len(classes), pretrained=cfg.pretrained, class_names=list(classes))
    card = model.card
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)

    size = card.input_size
    log(f"loading images at {size}px: train {len(parts['train'])}, val {len(parts['val'])}, test {len(parts['test'])}")
    train_set = load_set(parts["train"], size, task, classes)
    val_set = load_set(parts["val"], size, task, classes)
    test_set = load_set(parts["test"], size, task, classes)
    crit = _Criterion(binary, train_set.targets, len(classes), cfg.class_weights)
    augment = build_augment(cfg.augment)
    history: list[EpochLog] = []
    best_loss = math.inf
    interrupted = False
    stopper: EarlyStopping | None = None
    phase1_state: dict[str, Any] | None = None

    def epochs_bar(total: int, desc: str) -> Any:
        from tqdm import tqdm

        return tqdm(range(total), desc=desc, unit="epoch", disable=not progress, leave=True)

    try:
        # -- caching: the frozen lower blocks run once per augmented view -------------------------------------
        model.freeze_backbone()
        model.eval()
        fine_tune = cfg.fine_tune and cfg.fine_tune_epochs > 0 and cfg.unfreeze_fraction > 0
        blocks = model.backbone.blocks()
        n_frozen = split_index(model, cfg.unfreeze_fraction, fine_tune)
        cache_phase2 = fine_tune and cfg.cache_fine_tune
        if (
            cache_phase2
            and estimate_bytes(model, n_frozen, size, len(train_set), cfg.cached_views) > cfg.cache_max_gb * 2**30
        ):
            log(f"activation cache would exceed {cfg.cache_max_gb} GB: fine-tuning on fresh augmentations instead")
            cache_phase2, n_frozen = False, len(blocks)
        elif not cache_phase2:
            n_frozen = len(blocks)
        lower = LowerBlocks(model, n_frozen, size, engine=cfg.feature_engine)
        upper = nn.Sequential(*blocks[n_frozen:])  # shares its modules with the model
        log(f"caching activations of {n_frozen}/{len(blocks)} backbone blocks for {cfg.cached_views} views per "
            f"training image ({lower.engine})")  # fmt: skip
        from tqdm import tqdm

        with tqdm(total=len(train_set) * cfg.cached_views, desc="caching", unit="img", disable=not progress) as cbar:
            train_low = cache_views(lower, train_set.images, card.mean, card.std, cfg.cached_views, augment,
                                    progress=cbar.update)  # fmt: skip
        val_low = cache_views(lower, val_set.images, card.mean, card.std, 1, augment)[0] if len(val_set) else None
        del lower

        @torch.inference_mode()
        def pooled(low: torch.Tensor) -> torch.Tensor:
            return torch.cat([upper(low[i : i + 64].float()).mean(dim=(2, 3)) for i in range(0, len(low), 64)])

        # -- phase 1: frozen backbone, head on cached pooled features ----------------------------------------
        feats = torch.stack([pooled(train_low[v]) for v in range(cfg.cached_views)])  # V × N × C
        val_feats = pooled(val_low) if val_low is not None else None
        head_params = [p for p in model.parameters() if p.requires_grad]
        opt = torch.optim.Adam(head_params, lr=cfg.lr)
        sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
            opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
        )
        stopper = EarlyStopping(cfg.patience)
        bar = epochs_bar(cfg.epochs, "frozen")
        # The head's ops are tiny: one thread avoids thread-pool synchronisation that costs more than the math
        # (100× slower steps measured on a loaded 2-core machine).
        threads = torch.get_num_threads()
        torch.set_num_threads(1)
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            view_of = torch.from_numpy(rng.integers(0, cfg.cached_views, len(train_set)))
            losses, correct = [], 0
            for idx in _batches(len(train_set), cfg.batch_size, rng):
                x = feats[view_of[idx], torch.from_numpy(idx)][:, :, None, None]
                y = train_set.targets[idx]
                logits = model.forward_head(x)
                loss = crit(logits, y)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                losses.append(float(loss.detach()) * len(idx))
                correct += int((crit.predict(logits.detach()) == y).sum())
            model.eval()
            if val_feats is not None:
                with torch.inference_mode():
                    vl = model.forward_head(val_feats[:, :, None, None])
                    val_loss = float(crit(vl, val_set.targets, evaluate=True))
                    val_acc = _accuracy(crit.predict(vl), val_set.targets)
            else:
                val_loss, val_acc = float(sum(losses) / len(train_set)), math.nan
            sched.step(val_loss)
            entry = EpochLog("frozen", epoch + 1, sum(losses) / len(train_set), correct / len(train_set), val_loss,
                             val_acc, opt.param_groups[0]["lr"], time.perf_counter() - t0)  # fmt: skip
            history.append(entry)
            bar.set_postfix(entry.postfix())
            if stopper.step(val_loss, model):
                break
        torch.set_num_threads(threads)
        stopper.restore(model)
        best_loss = stopper.best
        phase1_state = copy.deepcopy(model.state_dict())
        del feats
        if not cache_phase2:
            del train_low

        # -- phase 2: fine-tune the top of the backbone ---------------------------------------------------
        if fine_tune:
            unfrozen = model.unfreeze_top(fraction=cfg.unfreeze_fraction)
            if cache_phase2 and len(unfrozen) != len(blocks) - n_frozen:
                raise RuntimeError("the cached blocks and the unfrozen blocks disagree")  # a bug, not user error
            params = [p for p in model.parameters() if p.requires_grad]
            opt = torch.optim.Adam(params, lr=cfg.fine_tune_lr)
            sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
            )
            stopper = EarlyStopping(cfg.patience, best=best_loss)
            bar = epochs_bar(cfg.fine_tune_epochs, "fine-tune")
            for epoch in bar:
                t0 = time.perf_counter()
                model.train()
                losses, correct = [], 0
                view_of = torch.from_numpy(rng.integers(0, cfg.cached_views, len(train_set)))
                for idx in _batches(len(train_set), cfg.batch_size, rng):
                    y = train_set.targets[idx]
                    if cache_phase2:
                        logits = model.forward_head(upper(train_low[view_of[idx], torch.from_numpy(idx)].float()))
                    else:
                        x = normalise(augment_batch(train_set.images[idx], augment), card.mean, card.std)
                        if cfg.channels_last:
                            x = x.contiguous(memory_format=torch.channels_last)
                        logits = model(x)
                    loss = crit(logits, y)
                    opt.zero_grad()
                    loss.backward()  # type: ignore[no-untyped-call]
                    opt.step()
                    losses.append(float(loss.detach()) * len(idx))
                    correct += int((crit.predict(logits.detach()) == y).sum())
                if len(val_set) and cache_phase2 and val_low is not None:
                    model.eval()
                    with torch.inference_mode():
                        vl = model.forward_head(
                            torch.cat([upper(val_low[i : i + 64].float()) for i in range(0, len(val_low), 64)])
                        )
                    val_loss = float(crit(vl, val_set.targets, evaluate=True))
                    val_acc = _accuracy(crit.predict(vl), val_set.targets)
                elif len(val_set):
                    val_loss, val_acc = _evaluate(model, val_set, crit, card, cfg.channels_last)
                else:
                    val_loss, val_acc = sum(losses) / len(train_set), math.nan
                sched.step(val_loss)
                n = len(train_set)
                entry = EpochLog("fine-tune", epoch + 1, sum(losses) / n, correct / n, val_loss, val_acc,
                                 opt.param_groups[0]["lr"], time.perf_counter() - t0)  # fmt: skip
                history.append(entry)
                bar.set_postfix(entry.postfix())
                if stopper.step(val_loss, model):
                    break
            if stopper.restore(model):
                best_loss = stopper.best
            else:
                log("fine-tuning did not improve validation loss: keeping the frozen-phase weights")
                model.load_state_dict(phase1_state)
    except KeyboardInterrupt:
        interrupted = True
        log("interrupted: saving the best weights so far")
        if not (stopper is not None and stopper.restore(model)) and phase1_state is not None:
            model.load_state_dict(phase1_state)
    model.eval()
    metrics: dict[str, Any] = {"best_val_loss": best_loss}
    calibration: dict[str, Any] | None = None
    if not interrupted:
        for name, data in (("val", val_set), ("test", test_set)):
            part_loss, part_acc = _evaluate(model, data, crit, card, cfg.channels_last)
            metrics[name] = {"loss": part_loss, "accuracy": part_acc, "n": len(data)}
        calibration = _calibrate(model, val_set, card, binary, cfg.channels_last)
    metrics["seconds"] = time.perf_counter() - started

    card_dict = card.to_dict()
    card_dict.setdefault("extra", {})
    if calibration is not None:
        card_dict["extra"]["calibration"] = calibration
    card_dict["extra"]["training"] = {
        "task": task,
        "split_sha256": split_sha,
        "datasets": sorted({r.dataset for r in parts["train"]}),
        "counts": {k: len(v) for k, v in parts.items()},
        "config": cfg.to_dict(),
        "metrics": metrics,
        "braintumor_version": __version__,
        "torch_version": str(torch.__version__),
        "platform": platform.platform(),
    }
    ckpt = save_checkpoint(run_dir, model, card_dict, cfg, split_sha, history, metrics, interrupted)
    save_train_fingerprints(run_dir, parts["train"] + parts["val"])
    if interrupted:
        raise KeyboardInterrupt
    return RunResult(run_dir, ckpt, history, metrics, interrupted, card_dict)


@torch.inference_mode()
def predict_logits(model: Any, images: torch.Tensor, card: Any, channels_last: bool = False) -> np.ndarray:
    """Logits (N×outputs) for uint8 letterboxed images, in batches, eval mode."""
    model.eval()
    out = []
    for idx in _batches(len(images), 32, None):
        x = normalise(images[idx], card.mean, card.std)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        out.append(model(x).float())
    if not out:
        return np.zeros((0, card.num_outputs), np.float32)
    return torch.cat(out).numpy()


def _calibrate(model: Any, val_set: LabelledSet, card: Any, binary: bool, channels_last: bool) -> dict[str, Any] | None:
    """Temperature (and, for binary models, the decision rule) fitted on validation predictions."""
    from braintumor.evaluation.calibration import decision_rule, fit_temperature, probabilities, reliability

    y = val_set.targets.numpy()
    if len(y) < 4 or len(np.unique(y)) < 2:
        return None
    logits = predict_logits(model, val_set.images, card, channels_last)
    logits = logits[:, 0] if binary else logits
    temperature = fit_temperature(logits, y)
    before = reliability(probabilities(logits), y).ece
    probs = probabilities(logits, temperature)
    out: dict[str, Any] = {
        "method": "temperature",
        "temperature": temperature,
        "fitted_on": "val",
        "n": len(y),
        "val_ece_before": before,
        "val_ece_after": reliability(probs, y).ece,
    }
    if binary:
        out["decision"] = decision_rule(probs, y).as_dict()
    return out


def save_train_fingerprints(run_dir: Path, records: Sequence[Any]) -> Path:
    """Fingerprints (SHA-256, pHash, thumbnail) of the images a model saw in training and validation, so
    that an external evaluation can drop their exact and near copies (``train_fingerprints.npz``)."""
    from braintumor.data.audit import fingerprint_all

    fps = fingerprint_all([r.path for r in records])
    path = run_dir / "train_fingerprints.npz"
    np.savez_compressed(
        path,
        keys=np.array([r.key for r in records]),
        sha256=np.array([fp.sha256 for fp in fps]),
        phash=np.array([fp.phash for fp in fps], dtype=np.uint64),
        thumbs=np.stack([fp.thumb for fp in fps]).astype(np.float16) if fps else np.zeros((0, 1024), np.float16),
    )
    return path


def save_checkpoint(
    run_dir: Path,
    model: nn.Module,
    card: dict[str, Any],
    cfg: TrainConfig,
    split_sha: str,
    history: Sequence[EpochLog],
    metrics: dict[str, Any],
    interrupted: bool,
) -> Path:
    """Write the run folder's files; the checkpoint is written to a temporary name, then renamed."""
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    card = json.loads(json.dumps(card))  # plain JSON types only: the checkpoint loads with weights_only=True
    metrics = json.loads(json.dumps(metrics))
    payload = {
        "format": "braintumor-checkpoint-v1",
        "state_dict": state,
        "card": card,
        "config": cfg.to_dict(),
        "split_sha256": split_sha,
        "history": [e.__dict__ for e in history],
        "metrics": metrics,
        "interrupted": interrupted,
    }
    path = run_dir / CHECKPOINT
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2))
    (run_dir / "card.json").write_text(json.dumps(card, indent=2, default=str))
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    with (run_dir / "history.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["phase", "epoch", "loss", "accuracy", "val_loss", "val_accuracy", "lr", "seconds"])
        for e in history:
            writer.writerow([e.phase, e.epoch, e.loss, e.accuracy, e.val_loss, e.val_accuracy, e.lr, e.seconds])
    if history:
        plot_history(history, run_dir / "curves.png")
    return path


def plot_history(history: Sequence[EpochLog], path: Path) -> None:
    """Training curves (loss and accuracy, train vs validation) across both phases."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, key, title in ((axes[0], "loss", "loss"), (axes[1], "accuracy", "accuracy")):
        ax.plot(x, [getattr(e, key) for e in history], label="train")
        ax.plot(x, [getattr(e, f"val_{key}") for e in history], label="validation")
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
    switch = next((i for i, e in enumerate(history) if e.phase == "fine-tune"), None)
    if switch is not None:
        for ax in axes:
            ax.axvline(switch + 0.5, color="gray", linestyle="--", linewidth=1)
            ax.text(switch + 0.6, ax.get_ylim()[1], "fine-tune", va="top", fontsize=8, color="gray")
    axes[1].legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def load_checkpoint(path: str | Path) -> tuple[BrainTumorNet, dict[str, Any]]:
    """Rebuild the model of a checkpoint (architecture from its card, weights from the file)."""
    from braintumor.models import ModelCard, create_model_from_card

    payload = torch.load(Path(path), map_location="cpu", weights_only=True)
    model = create_model_from_card(ModelCard.from_dict(payload["card"]))
    model.load_state_dict(payload["state_dict"])
    model.eval()
    return model, payload
