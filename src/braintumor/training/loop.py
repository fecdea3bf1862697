"""The training loop: the seed's transfer-learning recipe, then an optional fine-tuning phase.

Phase 1 (frozen backbone): the backbone's pooled features are computed once for ``cached_views``
augmented views of every training image (view 0 is the plain image) and for the validation images; each
epoch then trains only the head, drawing one cached view per image. That is the seed's frozen-base
training with on-the-fly augmentation, at a fraction of the cost (the backbone is not re-run per epoch).

Phase 2 (fine-tuning, on by default): the top of the backbone is unfrozen and trained end to end at a
lower rate, on the cached lower-block activations of the same views, or — ``cache_fine_tune = false`` — on
a fresh augmentation of every image each epoch, the frozen lower blocks run by the same engine (ONNX
Runtime) without autograd: costlier per epoch, but the top blocks cannot memorise a few fixed views. It keeps
its weights only where validation loss improves on phase 1.

Both phases run the same loop (:func:`_run_phase`): Adam, (binary) cross-entropy with class weights or
source-balanced sampling, untyped tumors through the partial-label loss (:mod:`~braintumor.training.loss`),
ReduceLROnPlateau, early stopping on validation loss restoring the best weights. With balanced sampling the
validation loss is balanced the same way, so early stopping weighs every source alike. The run folder is
written by :mod:`~braintumor.training.checkpoint`; Ctrl-C saves the best weights so far as a usable
checkpoint marked ``interrupted``.
"""

from __future__ import annotations

import copy
import dataclasses
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
from braintumor.data.datasets import ImageRecord, negative_index
from braintumor.data.splits import SplitRow, make_split, read_split, write_split
from braintumor.errors import DatasetError
from braintumor.models.card import Calibration, ModelCard, TrainingInfo
from braintumor.models.net import BrainTumorNet
from braintumor.training.cache import LowerBlocks, cache_views, estimate_bytes, split_index
from braintumor.training.calibrate import calibrate_set, predict_logits
from braintumor.training.callbacks import EarlyStopping
from braintumor.training.checkpoint import EpochLog, save_checkpoint, save_train_fingerprints
from braintumor.training.config import TrainConfig
from braintumor.training.data import (
    UNTYPED,
    LabelledSet,
    augment_batch,
    build_augment,
    load_set,
    normalise,
    records_for_split,
    resolve_task,
    sampling_weights,
)
from braintumor.training.loss import Criterion


@dataclass
class RunResult:
    run_dir: Path
    checkpoint: Path
    history: list[EpochLog]
    metrics: dict[str, Any]
    interrupted: bool = False
    card: dict[str, Any] = field(default_factory=dict)


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


def _sources_by_key(rows: Sequence[SplitRow]) -> dict[str, str]:
    """Each image's *sources*: the datasets its duplicate group spans ("br35h+brain_tumor_mri_4class" for a
    slice both collections published). Balancing over sources rather than folders gives the few images that
    exist in one collection only their own share, instead of letting a folder's borrowed majority stand for
    the folder."""
    spans: dict[int, set[str]] = {}
    for row in rows:
        spans.setdefault(row.group, set()).add(row.dataset)
    return {row.key: "+".join(sorted(spans[row.group])) for row in rows}


@dataclass
class _Phase:
    """One training phase: which parameters learn, and how a batch and the validation set are scored."""

    name: str
    epochs: int
    lr: float
    params: list[nn.Parameter]
    logits: Callable[[np.ndarray, torch.Tensor], torch.Tensor]  # (image indices, their views) → logits
    val_logits: Callable[[], torch.Tensor | None]
    threads: int | None = None


@dataclass
class _Fit:
    """What both phases share: the model, the loss, targets, draws and the history."""

    model: nn.Module
    crit: Criterion
    cfg: TrainConfig
    train_targets: torch.Tensor
    val_targets: torch.Tensor
    val_weights: torch.Tensor | None
    draw_probs: np.ndarray | None
    rng: np.random.Generator
    progress: bool
    history: list[EpochLog] = field(default_factory=list)

    def batches(self) -> list[np.ndarray]:
        n = len(self.train_targets)
        draws = self.draw_probs
        order = self.rng.permutation(n) if draws is None else self.rng.choice(n, size=n, p=draws)
        return [order[i : i + self.cfg.batch_size] for i in range(0, n, self.cfg.batch_size)]


def _run_phase(fit: _Fit, phase: _Phase, stopper: EarlyStopping) -> EarlyStopping:
    """Train ``phase.params`` for up to ``phase.epochs`` epochs with early stopping on validation loss."""
    from tqdm import tqdm

    cfg, crit, model = fit.cfg, fit.crit, fit.model
    opt = torch.optim.Adam(phase.params, lr=phase.lr)
    sched = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_factor, patience=cfg.lr_patience, min_lr=cfg.min_lr
    )
    threads = torch.get_num_threads()
    if phase.threads:
        torch.set_num_threads(phase.threads)
    try:
        bar = tqdm(range(phase.epochs), desc=phase.name, unit="epoch", disable=not fit.progress, leave=True)
        for epoch in bar:
            t0 = time.perf_counter()
            model.train()
            view_of = torch.from_numpy(fit.rng.integers(0, cfg.cached_views, len(fit.train_targets)))
            loss_sum, correct, seen = 0.0, 0, 0
            for idx in fit.batches():
                y = fit.train_targets[idx]
                logits = phase.logits(idx, view_of[idx])
                loss = crit(logits, y)
                opt.zero_grad()
                loss.backward()  # type: ignore[no-untyped-call]
                opt.step()
                loss_sum += float(loss.detach()) * len(idx)
                correct += int(crit.correct(logits.detach(), y).sum())
                seen += len(idx)
            model.eval()
            with torch.inference_mode():
                vl = phase.val_logits()
            if vl is not None:
                val_loss = float(crit(vl, fit.val_targets, fit.val_weights, evaluate=True))
                val_acc = float(crit.correct(vl, fit.val_targets).float().mean())
            else:
                val_loss, val_acc = loss_sum / seen, math.nan
            sched.step(val_loss)
            entry = EpochLog(phase.name, epoch + 1, loss_sum / seen, correct / seen, val_loss, val_acc,
                             opt.param_groups[0]["lr"], time.perf_counter() - t0)  # fmt: skip
            fit.history.append(entry)
            bar.set_postfix(entry.postfix())
            if stopper.step(val_loss, model):
                break
    finally:
        torch.set_num_threads(threads)
    return stopper


def _chunked(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, size: int = 64) -> torch.Tensor:
    return torch.cat([fn(x[i : i + size]) for i in range(0, len(x), size)])


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
    from braintumor.models.factory import create_model

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
    task, classes = resolve_task([r.label for r in parts["train"] + parts["val"]], cfg.task, cfg.untyped_label)
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
    negative = None if binary else negative_index(classes)
    untyped = int((train_set.targets == UNTYPED).sum())
    if untyped:
        log(f"{untyped} training image(s) of untyped tumors train the tumor / no-tumor decision (partial labels)")
    balanced = cfg.sampling == "balanced"
    crit = Criterion(binary, train_set.targets, len(classes), cfg.class_weights and not balanced, negative)
    draw_probs, val_weights = None, None
    if balanced:
        source = _sources_by_key(rows) if cfg.balance_by == "sources" else {}
        cells = [[source.get(r.key, r.dataset) for r in s.records] for s in (train_set, val_set)]
        draw_probs = sampling_weights(cells[0], train_set.targets.tolist(), cfg.balance_power)
        if len(val_set):
            w = sampling_weights(cells[1], val_set.targets.tolist(), cfg.balance_power)
            val_weights = torch.from_numpy(w * len(w)).float()
    fit = _Fit(model, crit, cfg, train_set.targets, val_set.targets, val_weights, draw_probs, rng, progress)
    augment = build_augment(cfg.augment)
    best_loss = math.inf
    interrupted = False
    stopper: EarlyStopping | None = None
    phase1_state: dict[str, Any] | None = None

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
            cache_phase2 = False
        lower = LowerBlocks(model, n_frozen, size, engine=cfg.feature_engine)
        upper = nn.Sequential(*blocks[n_frozen:])  # shares its modules with the model
        from tqdm import tqdm

        def pooled(low: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return _chunked(lambda a: upper(a.float()).mean(dim=(2, 3)), low)

        train_low = torch.empty(0)
        what = "activations" if cache_phase2 else "pooled features"
        log(f"caching {what} of {n_frozen}/{len(blocks)} frozen backbone blocks ({lower.engine}) for "
            f"{cfg.cached_views} views per training image")  # fmt: skip
        with tqdm(total=len(train_set) * cfg.cached_views, desc="caching", unit="img", disable=not progress) as cbar:
            if cache_phase2:
                train_low = cache_views(lower, train_set.images, card.mean, card.std, cfg.cached_views, augment,
                                        progress=cbar.update)  # fmt: skip
                feats = torch.stack([pooled(train_low[v]) for v in range(cfg.cached_views)])  # V × N × C
            else:  # only the pooled features are kept; phase 2 runs the lower blocks on fresh augmentations
                feats = cache_views(lambda x: pooled(lower(x)), train_set.images, card.mean, card.std,
                                    cfg.cached_views, augment, progress=cbar.update)  # fmt: skip
        val_low = cache_views(lower, val_set.images, card.mean, card.std, 1, augment)[0] if len(val_set) else None

        # -- phase 1: frozen backbone, head on cached pooled features ----------------------------------------
        val_feats = pooled(val_low) if val_low is not None else None
        frozen = _Phase(
            "frozen",
            cfg.epochs,
            cfg.lr,
            [p for p in model.parameters() if p.requires_grad],
            lambda idx, views: model.forward_head(feats[views, torch.from_numpy(idx)].float()[:, :, None, None]),
            lambda: model.forward_head(val_feats[:, :, None, None]) if val_feats is not None else None,
            # The head's ops are tiny: one thread avoids thread-pool synchronisation that costs more than the
            # math (100× slower steps measured on a loaded 2-core machine).
            threads=1,
        )
        stopper = _run_phase(fit, frozen, EarlyStopping(cfg.patience))
        stopper.restore(model)
        best_loss = stopper.best
        phase1_state = copy.deepcopy(model.state_dict())
        feats = torch.empty(0)  # free the pooled cache

        # -- phase 2: fine-tune the top of the backbone ---------------------------------------------------
        if fine_tune:
            unfrozen = model.unfreeze_top(fraction=cfg.unfreeze_fraction)
            if len(unfrozen) != len(blocks) - n_frozen:
                raise RuntimeError("the frozen blocks and the unfrozen blocks disagree")  # a bug, not user error

            def step_logits(idx: np.ndarray, views: torch.Tensor) -> torch.Tensor:
                if cache_phase2:
                    low = train_low[views, torch.from_numpy(idx)].float()
                else:  # a fresh augmentation of every image, every epoch; the frozen part runs without autograd
                    x = normalise(augment_batch(train_set.images[idx], augment), card.mean, card.std)
                    low = lower(x).clone()  # a normal tensor: autograd saves it for the first unfrozen block
                return model.forward_head(upper(low))

            def val_logits() -> torch.Tensor | None:
                if val_low is None:
                    return None
                return model.forward_head(_chunked(lambda a: upper(a.float()), val_low))

            tune = _Phase("fine-tune", cfg.fine_tune_epochs, cfg.fine_tune_lr,
                          [p for p in model.parameters() if p.requires_grad], step_logits, val_logits)  # fmt: skip
            stopper = _run_phase(fit, tune, EarlyStopping(cfg.patience, best=best_loss))
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
    calibration: Calibration | None = None
    if not interrupted:
        for name, data in (("val", val_set), ("test", test_set)):
            metrics[name] = _part_metrics(model, data, crit, card, cfg.channels_last)
        calibration = calibrate_set(model, val_set, card, binary, cfg.channels_last)
    metrics["seconds"] = time.perf_counter() - started

    card.calibration = calibration
    card.training = TrainingInfo(
        task=task,
        split_sha256=split_sha,
        datasets=sorted({r.dataset for r in parts["train"]}),
        counts={k: len(v) for k, v in parts.items()},
        untyped_tumors=untyped,
        config=cfg.to_dict(),
        metrics=metrics,
        braintumor_version=__version__,
        torch_version=str(torch.__version__),
        platform=platform.platform(),
    )
    card_dict = card.to_dict()
    ckpt = save_checkpoint(run_dir, model, card_dict, cfg, split_sha, fit.history, metrics, interrupted)
    save_train_fingerprints(run_dir, parts["train"] + parts["val"])
    if interrupted:
        raise KeyboardInterrupt
    return RunResult(run_dir, ckpt, fit.history, metrics, interrupted, card_dict)


def _part_metrics(
    model: BrainTumorNet, data: LabelledSet, crit: Criterion, card: ModelCard, channels_last: bool
) -> dict[str, Any]:
    if len(data) == 0:
        return {"loss": math.nan, "accuracy": math.nan, "n": 0}
    out = torch.from_numpy(predict_logits(model, data.images, card, channels_last))
    loss = float(crit(out, data.targets, evaluate=True))
    return {"loss": loss, "accuracy": float(crit.correct(out, data.targets).float().mean()), "n": len(data)}
