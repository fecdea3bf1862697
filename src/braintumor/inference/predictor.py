"""Serve exported models with ONNX Runtime: load once, predict many times, no torch.

A model folder is either one export (``model.onnx`` + ``card.json``, from ``braintumor export``) or an
ensemble (``ensemble.json`` naming member folders, their weights, the ensemble's decision rule and its
input gate). Each call decodes, letterboxes and runs every member once; the graph itself returns the
calibrated probabilities and the Grad-CAM map, so a heatmap costs next to nothing.

Example:
    >>> predictor = Predictor.load("path/to/model")  # doctest: +SKIP
    >>> result = predictor.predict(load_image("scan.dcm"))  # doctest: +SKIP
    >>> result.band, round(result.p_tumor, 3), result.tumor_type  # doctest: +SKIP
    ('tumor', 0.981, 'glioma')
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from braintumor.data.datasets import NEGATIVE_LABELS
from braintumor.errors import BrainTumorError, NotAnMRIError
from braintumor.evaluation.calibration import DecisionRule, ensemble_decision, ensemble_weights
from braintumor.imaging.transforms import Placement, letterbox, to_rgb
from braintumor.imaging.types import ImageMeta, LoadedImage

BINARY_CLASSES = ("no_tumor", "tumor")


class ModelLoadError(BrainTumorError):
    """A model folder is missing, incomplete or inconsistent."""


@dataclass
class Member:
    """One exported network and its card, with an ONNX Runtime session."""

    name: str
    card: dict[str, Any]
    session: Any
    weight: float = 1.0

    @property
    def size(self) -> int:
        return int(self.card["input_size"])

    @property
    def class_names(self) -> list[str]:
        return list(self.card["class_names"])

    @property
    def decision(self) -> DecisionRule | None:
        d = self.card.get("extra", {}).get("calibration", {}).get("decision")
        return DecisionRule.from_dict(d) if d else None

    def p_tumor(self, probs: np.ndarray) -> np.ndarray:
        return tumor_probability(probs, self.class_names)


def tumor_probability(probs: np.ndarray, class_names: Sequence[str]) -> np.ndarray:
    """p(tumor) = 1 − p(no tumor class); for a binary export the 'tumor' column."""
    names = [c.lower() for c in class_names]
    if "tumor" in names and len(names) == 2:
        return probs[:, names.index("tumor")]
    for i, c in enumerate(names):
        if c in NEGATIVE_LABELS or c == "no_tumor":
            return 1.0 - probs[:, i]
    raise ModelLoadError(f"cannot tell tumor from no tumor with classes {list(class_names)}")


@dataclass(frozen=True)
class MemberResult:
    name: str
    arch: str
    probs: dict[str, float]
    p_tumor: float
    label: str
    cam: np.ndarray  # raw, member input size


@dataclass(frozen=True)
class Prediction:
    """The ensemble's answer for one image, with everything a report needs."""

    label: str  # "tumor" | "no_tumor" (by the threshold)
    band: str  # "tumor" | "refer" | "no_tumor" (by the refer band)
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
        """JSON-ready summary (no arrays)."""
        return {
            "label": self.label,
            "band": self.band,
            "p_tumor": self.p_tumor,
            "probs": self.probs,
            "tumor_type": self.tumor_type,
            "type_probs": self.type_probs,
            "threshold": self.decision.threshold,
            "refer_low": self.decision.refer_low,
            "refer_high": self.decision.refer_high,
            "members": [
                {"name": m.name, "arch": m.arch, "probs": m.probs, "p_tumor": m.p_tumor, "label": m.label}
                for m in self.members
            ],
            "model": self.model_name,
            "model_version": self.model_version,
        }


@dataclass(frozen=True)
class Rejection:
    """The input gate's verdict for an image that is not a brain MRI slice."""

    reason: str
    meta: ImageMeta


@dataclass
class Predictor:
    """An exported model or ensemble, loaded once. Thread-safe for concurrent ``predict`` calls."""

    members: list[Member]
    name: str = "model"
    version: str = "0"
    decision: DecisionRule = field(default_factory=DecisionRule)
    class_names: tuple[str, ...] = BINARY_CLASSES
    gate: Any = None
    root: Path | None = None

    # -- loading -----------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, threads: int | None = None, precision: str | None = None) -> Predictor:
        """Load ``path`` (an export folder or an ensemble folder). ``threads``: ONNX Runtime intra-op threads
        (default: all cores); ``precision``: "fp32" or "int8" (default: what each card recommends)."""
        root = Path(path)
        if (root / "ensemble.json").is_file():
            spec = _read_json(root / "ensemble.json")
            members = [
                _load_member(root / m["path"], m.get("name"), float(m.get("weight", 1.0)), threads, precision)
                for m in spec["members"]
            ]
            name, version = spec.get("name", root.name), str(spec.get("version", "0"))
            decision_dict = spec.get("decision")
        elif (root / "card.json").is_file():
            members = [_load_member(root, None, 1.0, threads, precision)]
            name, version, decision_dict = root.name, str(members[0].card.get("version", "0")), None
            spec = {"gate": "gate.npz"} if (root / "gate.npz").is_file() else {}  # an input gate beside card.json
        else:
            raise ModelLoadError(f"{root} is not a model folder (no ensemble.json or card.json)")
        if not members:
            raise ModelLoadError(f"{root}: the ensemble has no members")
        try:
            weights = ensemble_weights([m.weight for m in members], len(members))
        except ValueError as exc:
            raise ModelLoadError(f"{root}: {exc}") from exc
        decision = DecisionRule.from_dict(decision_dict) if decision_dict else None
        decision = decision or ensemble_decision([m.decision for m in members], weights) or DecisionRule()
        class_names = _ensemble_classes(members)
        gate = None
        if spec.get("gate"):
            from braintumor.inference.gate import InputGate

            gate = InputGate.load(root / spec["gate"])
        return cls(members, name, version, decision, class_names, gate, root)

    # -- prediction --------------------------------------------------------------------------------------
    def predict(self, image: LoadedImage, *, cam: bool = True) -> Prediction:
        """Predict one image; raises :class:`~braintumor.errors.NotAnMRIError` when the gate rejects it."""
        result = self.predict_batch([image], cam=cam)[0]
        if isinstance(result, Rejection):
            raise NotAnMRIError(result.reason)
        return result

    def predict_batch(self, images: Sequence[LoadedImage], *, cam: bool = True) -> list[Prediction | Rejection]:
        """Predict a batch of decoded images (one ONNX Runtime call per member); rejected images get a
        :class:`Rejection` with the gate's reason instead of a prediction."""
        if not images:
            return []
        reasons: list[str | None] = [None] * len(images)
        if self.gate is not None:
            reasons = [self.gate.check_image(img) for img in images]
        todo = [i for i, r in enumerate(reasons) if r is None]
        out_by_index: dict[int, Prediction | Rejection] = {
            i: Rejection(r, images[i].meta) for i, r in enumerate(reasons) if r is not None
        }
        if todo:
            batch = [images[i] for i in todo]
            per_member = []
            prepared: dict[int, tuple[np.ndarray, list[Placement]]] = {}
            for member in self.members:
                if member.size not in prepared:  # members of one input size share the letterboxed batch
                    prepared[member.size] = preprocess_batch(batch, member.size)
                boxed, placements = prepared[member.size]
                probs, _logits, maps, features = member.session.run(None, {"image": boxed})
                per_member.append((member, probs, maps, features, placements))
            feature_reasons: list[str | None] = [None] * len(batch)
            if self.gate is not None:
                feature_reasons = self.gate.check_features(per_member[0][3])
            for k, i in enumerate(todo):
                reason = feature_reasons[k]
                out_by_index[i] = (
                    Rejection(reason, images[i].meta) if reason else self._combine(k, images[i], per_member, cam)
                )
        return [out_by_index[i] for i in range(len(images))]

    def _combine(self, i: int, image: LoadedImage, per_member: list[Any], with_cam: bool) -> Prediction:
        weights = np.array([m.weight for m in self.members], dtype=np.float64)
        weights = weights / weights.sum()
        results = []
        p_tumors = []
        class_vectors = []
        maps = []
        for member, probs, cams, _feat, placements in per_member:
            p = probs[i].astype(np.float64)
            pt = float(member.p_tumor(p[None])[0])
            p_tumors.append(pt)
            names = member.class_names
            if tuple(names) == self.class_names:
                class_vectors.append(p)
            label = "tumor" if pt >= (member.decision or DecisionRule()).threshold else "no_tumor"
            results.append(
                MemberResult(member.name, member.card["arch"], dict(zip(names, map(float, p), strict=True)), pt,
                             label, cams[i])
            )  # fmt: skip
            if with_cam:
                top = float(cams[i].max())
                unmapped = placements[i].unmap(cams[i])
                maps.append(unmapped / top if top > 0 else unmapped)
        p_tumor = float(np.dot(weights, p_tumors))
        if len(class_vectors) == len(self.members):
            class_p = np.tensordot(weights, np.stack(class_vectors), axes=1)
        else:
            class_p = np.array([1 - p_tumor, p_tumor])
        names = list(self.class_names) if len(class_vectors) == len(self.members) else list(BINARY_CLASSES)
        probs = dict(zip(names, map(float, class_p), strict=True))
        type_probs = {n: p for n, p in probs.items() if n.lower() not in NEGATIVE_LABELS and n != "no_tumor"}
        if set(type_probs) == {"tumor"}:
            type_probs = {}
        label = "tumor" if p_tumor >= self.decision.threshold else "no_tumor"
        tumor_type = max(type_probs, key=lambda k: type_probs[k]) if type_probs and label == "tumor" else None
        ensemble_map = np.mean(maps, axis=0).astype(np.float32) if maps else None
        return Prediction(
            label=label,
            band=self.decision.band(p_tumor),
            p_tumor=p_tumor,
            probs=probs,
            tumor_type=tumor_type,
            type_probs=type_probs,
            decision=self.decision,
            members=tuple(results),
            cam=ensemble_map,
            meta=image.meta,
            model_name=self.name,
            model_version=self.version,
        )

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
                    "arch": m.card["arch"],
                    "input_size": m.size,
                    "precision": m.card.get("extra", {}).get("export", {}).get("loaded_precision", "fp32"),
                    "weight": m.weight,
                }
                for m in self.members
            ],
            "gate": self.gate is not None,
        }


def preprocess_batch(images: Sequence[LoadedImage], size: int) -> tuple[np.ndarray, list[Placement]]:
    """Letterbox every image to ``size`` and stack as the graph's uint8 NHWC input."""
    out = np.empty((len(images), size, size, 3), dtype=np.uint8)
    placements = []
    for k, image in enumerate(images):
        boxed, placement = letterbox(image.pixels, size)
        out[k] = to_rgb(boxed)
        placements.append(placement)
    return out, placements


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ModelLoadError(f"{path} must hold a JSON object")
    return data


def _session(path: Path, threads: int | None) -> Any:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types
        raise ModelLoadError(f"cannot load {path}: {str(exc).splitlines()[0][:200]}") from exc


def _load_member(folder: Path, name: str | None, weight: float, threads: int | None, precision: str | None) -> Member:
    card = _read_json(folder / "card.json")
    export = card.get("extra", {}).get("export", {})
    wanted = precision or export.get("default_precision", "fp32")
    candidates = {"int8": folder / "model.int8.onnx", "fp32": folder / "model.onnx"}
    if wanted not in candidates:
        raise ModelLoadError(f"precision must be fp32 or int8, not {wanted!r}")
    path = candidates[wanted]
    if not path.is_file():
        if precision is not None:
            raise ModelLoadError(f"{folder} has no {wanted} model ({path.name})")
        path, wanted = candidates["fp32"], "fp32"
    if not path.is_file():
        raise ModelLoadError(f"{folder} has no model.onnx")
    export["loaded_precision"] = wanted
    card.setdefault("extra", {})["export"] = export
    return Member(name or folder.name, card, _session(path, threads), weight)


def _ensemble_classes(members: Sequence[Member]) -> tuple[str, ...]:
    first = tuple(members[0].class_names)
    if all(tuple(m.class_names) == first for m in members):
        return first
    return BINARY_CLASSES
