"""Serve exported models with ONNX Runtime: load once, predict many times, no torch.

A model folder is either one export (``model.onnx`` + ``card.json``, from ``braintumor export``) or an
ensemble (``ensemble.json`` naming member folders, their weights, the ensemble's decision rule and its
input gate). Each call decodes, letterboxes and runs every member once; the graph itself returns the
calibrated probabilities and the Grad-CAM map, so a heatmap costs next to nothing.

Example:
    >>> predictor = Predictor.load("path/to/model")  # doctest: +SKIP
    >>> result = predictor.predict(load_image("scan.dcm"))  # doctest: +SKIP
    >>> result.outcome, round(result.p_tumor, 3), result.tumor_type  # doctest: +SKIP
    ('tumor', 0.981, 'glioma')
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.datasets import BINARY_CLASSES, is_tumor_label, negative_index
from braintumor.errors import ModelLoadError, NotAnMRIError, OutOfScopeError
from braintumor.imaging.pools import thread_pool
from braintumor.imaging.transforms import Placement, resize_float
from braintumor.imaging.types import ImageMeta, LoadedImage
from braintumor.inference.gate import InputGate, Refusal, RefusalKind
from braintumor.inference.members import (
    Member,
    load_members,
    preprocess_batch,
    runs_side_by_side,
    single_threaded_blas,
)
from braintumor.models.decision import DecisionRule, Outcome, ensemble_decision, ensemble_weights
from braintumor.models.export_dir import ExportDir


def tumor_probability(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """p(tumor) = 1 − p(no tumor class); for a binary export the 'tumor' column."""
    names = [c.lower() for c in class_names]
    if "tumor" in names and len(names) == 2:
        return probs[:, names.index("tumor")]
    negative = negative_index(names)
    if negative is None:
        raise ModelLoadError(f"cannot tell tumor from no tumor with classes {list(class_names)}")
    return 1.0 - probs[:, negative]


#: What one member's graph returned for a batch: the member, probs, Grad-CAM maps, pooled features, placements.
_MemberOutput = tuple[Member, np.ndarray, np.ndarray, np.ndarray, list[Placement]]


@dataclass(frozen=True)
class MemberResult:
    """One member's output. ``outcome`` is its p(tumor) read under the *ensemble's* rule (what this member alone
    would have led the ensemble to say), so a member never shows an answer of its own beside the ensemble's."""

    name: str
    arch: str
    probs: dict[str, float]
    p_tumor: float
    outcome: Outcome
    cam: np.ndarray  # raw, member input size
    placement: Placement | None = None  # where the image sits in the member's input (when CAMs are asked for)

    @functools.cached_property
    def heatmap(self) -> np.ndarray | None:
        """The max-normalised map at the original image size, made on first use (the ensemble's own map does
        not need the members' unmapped: a scan scored without per-member overlays skips one resize a member)."""
        if self.placement is None:
            return None
        return _unmapped_mean(self.placement, [self.cam])

    def map_at(self, size: tuple[int, int]) -> np.ndarray | None:
        """The max-normalised map resized straight to ``size`` (width, height), e.g. the small map a scan stores:
        one resize from the member's input, not one to the original size and another down from there."""
        if self.placement is None:
            return None
        return _unmapped_mean(self.placement, [self.cam], size)


def _unmapped_mean(placement: Placement, cams: Sequence[np.ndarray], size: tuple[int, int] | None = None) -> np.ndarray:
    """``placement.unmap`` of the mean of the max-normalised ``cams`` (one placement's maps; ``size``: another
    size than the original's to resize to). Each map is
    divided by its maximum over the whole square, but only its part inside the content box is divided, averaged
    and copied: the padding is cropped off by the unmapping anyway, and on a wide or tall scan it is up to half
    the square."""
    crops = []
    for cam in cams:
        top = float(cam.max())
        crop = placement.crop(cam)
        scaled = crop / top if top > 0 else crop.copy()  # a copy: the heatmap must not alias the graph's output
        crops.append(scaled.astype(np.float32, copy=False))
    mean = crops[0] if len(crops) == 1 else np.mean(crops, axis=0, dtype=np.float32)
    return resize_float(np.ascontiguousarray(mean, dtype=np.float32), size or placement.original_size)


@dataclass(frozen=True)
class Prediction:
    """The ensemble's answer for one image, with everything a report needs. ``outcome`` is the one answer;
    ``decision.above_threshold(p_tumor)`` is the binary decision evaluation scores."""

    outcome: Outcome
    p_tumor: float
    probs: dict[str, float]  # in the ensemble's class space
    tumor_type: str | None
    type_probs: dict[str, float]
    decision: DecisionRule
    members: tuple[MemberResult, ...]
    cam: np.ndarray | None  # ensemble map at the original image size (mean of max-normalised member maps)
    meta: ImageMeta
    model_name: str
    model_version: str
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready summary (no arrays): what the API stores with a scan (``StoredPrediction``)."""
        answer = {name: getattr(self, name) for name in ("outcome", "p_tumor", "probs", "tumor_type", "type_probs")}
        rule = {name: getattr(self.decision, name) for name in ("threshold", "refer_low", "refer_high")}
        members = [
            {name: getattr(m, name) for name in ("name", "arch", "probs", "p_tumor", "outcome")} for m in self.members
        ]
        return {**answer, **rule, "members": members, "model": self.model_name, "model_version": self.model_version}


@dataclass(frozen=True)
class Rejection:
    """The input gate's verdict for an image it refused: ``kind`` ``not_mri`` (cannot be a brain MRI slice) or
    ``out_of_scope`` (unlike the slices the model was validated on), with the reason."""

    reason: str
    meta: ImageMeta
    kind: RefusalKind = "not_mri"


def _ensemble_map(maps: list[tuple[Placement, np.ndarray]], results: list[MemberResult]) -> np.ndarray | None:
    """The mean of the members' max-normalised maps at the original size. Members that share a placement (one
    input size) are averaged in their input space and unmapped once: cropping and bilinear resizing are linear,
    so this is the same map for one resize instead of one a member."""
    if not maps:
        return None
    if all(placement == maps[0][0] for placement, _ in maps):
        return _unmapped_mean(maps[0][0], [cam for _, cam in maps])
    mean: np.ndarray = np.mean([r.heatmap for r in results if r.heatmap is not None], axis=0).astype(np.float32)
    return mean


@dataclass
class Predictor:
    """An exported model or ensemble, loaded once. Thread-safe for concurrent ``predict`` calls."""

    members: list[Member]
    name: str = "model"
    version: str = "0"
    decision: DecisionRule = field(default_factory=DecisionRule)
    class_names: tuple[str, ...] = BINARY_CLASSES
    gate: InputGate | None = None
    root: Path | None = None
    side_by_side: bool = False  # members run at once, each session on its share of the cores (see load)

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None, precision: str | None = None) -> Predictor:
        """Load ``path`` (an export folder or an ensemble folder). ``threads``: the cores ONNX Runtime may use
        (default: all); an ensemble whose members can each have one runs them side by side, each on its share
        (:func:`~braintumor.inference.members.runs_side_by_side`). ``precision``: "fp32" or "int8" (default: what
        each card recommends)."""
        root = ExportDir(path)
        side_by_side = runs_side_by_side(threads, len(root.member_dirs()))
        members = load_members(root, threads=threads, precision=precision, side_by_side=side_by_side)
        spec = root.read_ensemble() if root.is_ensemble else None
        if not members:
            raise ModelLoadError(f"{root.root}: the ensemble has no members")
        try:
            weights = ensemble_weights([m.weight for m in members], len(members))
        except ValueError as exc:
            raise ModelLoadError(f"{root.root}: {exc}") from exc
        fitted = spec.decision if spec is not None else None
        decision = fitted or ensemble_decision([m.card.fitted_decision for m in members], weights) or DecisionRule()
        gate_path = root.gate_file()
        gate = InputGate.load(gate_path) if gate_path is not None else None
        name = (spec.name if spec is not None else None) or root.name
        version = (spec.version if spec is not None else None) or "0"
        return cls(members, name, version, decision, _ensemble_classes(members), gate, root.root, side_by_side)

    # -- prediction --------------------------------------------------------------------------------------
    def predict(self, image: LoadedImage, *, cam: bool = True) -> Prediction:
        """Predict one image; raises :class:`~braintumor.errors.NotAnMRIError` when the gate rejects it (its
        subclass :class:`~braintumor.errors.OutOfScopeError` for an image unlike the validated ones)."""
        result = self.predict_batch([image], cam=cam)[0]
        if isinstance(result, Rejection):
            raise (OutOfScopeError if result.kind == "out_of_scope" else NotAnMRIError)(result.reason)
        return result

    @single_threaded_blas
    def predict_batch(self, images: Sequence[LoadedImage], *, cam: bool = True) -> list[Prediction | Rejection]:
        """Predict a batch of decoded images (one ONNX Runtime call per member); rejected images get a
        :class:`Rejection` with the gate's reason instead of a prediction."""
        if not images:
            return []
        refusals: list[Refusal | None] = [None] * len(images)
        if self.gate is not None:
            refusals = [self.gate.image_refusal(img) for img in images]
        todo = [i for i, r in enumerate(refusals) if r is None]
        out_by_index: dict[int, Prediction | Rejection] = {
            i: Rejection(r.reason, images[i].meta, r.kind) for i, r in enumerate(refusals) if r is not None
        }
        if todo:
            batch = [images[i] for i in todo]
            # members of one input size share the letterboxed batch
            prepared = {size: preprocess_batch(batch, size) for size in dict.fromkeys(m.size for m in self.members)}
            outputs = self.run_members({size: boxed for size, (boxed, _) in prepared.items()})
            per_member: list[_MemberOutput] = [
                (member, probs, maps, features, prepared[member.size][1])
                for member, (probs, _logits, maps, features) in zip(self.members, outputs, strict=True)
            ]
            feature_refusals: list[Refusal | None] = [None] * len(batch)
            if self.gate is not None:
                feature_refusals = self.gate.feature_refusals(per_member[0][3], batch)
            for k, i in enumerate(todo):
                refusal = feature_refusals[k]
                out_by_index[i] = (
                    Rejection(refusal.reason, images[i].meta, refusal.kind)
                    if refusal
                    else self._combine(k, images[i], per_member, cam)
                )
        return [out_by_index[i] for i in range(len(images))]

    def run_members(self, boxed: dict[int, np.ndarray]) -> list[list[np.ndarray]]:
        """Every member's graph on the letterboxed batch of its input size (``boxed[size]``), all outputs, in
        member order: side by side in threads when the members were loaded to share the cores (ONNX Runtime
        releases the GIL while it runs), else one after another. The bare model time the benches compare to."""
        calls = [functools.partial(m.session.run, None, {"image": boxed[m.size]}) for m in self.members]
        if not self.side_by_side or len(calls) < 2:
            return [call() for call in calls]
        pool = thread_pool("member", len(calls) - 1)
        futures = [pool.submit(call) for call in calls[1:]]
        first = calls[0]()  # this thread runs one member itself: one hand-over fewer
        return [first, *(f.result() for f in futures)]

    def _combine(self, i: int, image: LoadedImage, per_member: list[_MemberOutput], with_cam: bool) -> Prediction:
        weights = self._weights
        results = []
        p_tumors = []
        class_vectors = []
        maps = []
        for member, probs, cams, _feat, placements in per_member:
            p = probs[i].astype(np.float64)
            pt = float(tumor_probability(p[None], member.class_names)[0])
            p_tumors.append(pt)
            names = member.class_names
            if tuple(names) == self.class_names:
                class_vectors.append(p)
            result = MemberResult(member.name, member.card.arch, dict(zip(names, map(float, p), strict=True)), pt,
                                  self.decision.outcome(pt), cams[i], placements[i] if with_cam else None)  # fmt: skip
            results.append(result)
            if with_cam:
                maps.append((placements[i], cams[i]))
        p_tumor = float(np.dot(weights, p_tumors))
        if len(class_vectors) == len(self.members):
            class_p = np.tensordot(weights, np.stack(class_vectors), axes=1)
        else:
            class_p = np.array([1 - p_tumor, p_tumor])
        names = list(self.class_names) if len(class_vectors) == len(self.members) else list(BINARY_CLASSES)
        combined = dict(zip(names, map(float, class_p), strict=True))
        type_probs = {n: v for n, v in combined.items() if is_tumor_label(n)}
        if set(type_probs) == {"tumor"}:
            type_probs = {}
        outcome = self.decision.outcome(p_tumor)
        tumor_type = max(type_probs, key=lambda k: type_probs[k]) if type_probs and outcome == "tumor" else None
        ensemble_map = _ensemble_map(maps, results)
        return Prediction(
            outcome=outcome,
            p_tumor=p_tumor,
            probs=combined,
            tumor_type=tumor_type,
            type_probs=type_probs,
            decision=self.decision,
            members=tuple(results),
            cam=ensemble_map,
            meta=image.meta,
            model_name=self.name,
            model_version=self.version,
        )

    @functools.cached_property
    def _weights(self) -> np.ndarray:
        """The members' normalised weights, computed once (validated at load)."""
        return ensemble_weights([m.weight for m in self.members], len(self.members))

    def card_summary(self) -> dict[str, Any]:
        """What the API's /health and the report show about the loaded model."""
        return {
            "name": self.name,
            "version": self.version,
            "classes": list(self.class_names),
            "decision": self.decision.as_dict(),
            "members": [
                {
                    "name": m.name,
                    "arch": m.card.arch,
                    "input_size": m.size,
                    "precision": m.precision,
                    "weight": m.weight,
                }
                for m in self.members
            ],
            "gate": self.gate is not None,
        }


def _ensemble_classes(members: Sequence[Member]) -> tuple[str, ...]:
    first = tuple(members[0].class_names)
    if all(tuple(m.class_names) == first for m in members):
        return first
    return BINARY_CLASSES
