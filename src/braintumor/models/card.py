"""The model card: everything needed to feed, read and trust a set of weights, saved with them (no torch).

Inference, Grad-CAM and reports read the card instead of constants, so a checkpoint trained at 299 px with
Inception's normalisation cannot be served at 224 px with ImageNet's by mistake. Like timm's ``PretrainedCfg``,
the card is typed: the facts to feed the network at the top, and under ``extra`` three typed sections written by
the stages that know them — ``calibration`` (training: temperature and :class:`DecisionRule`), ``training``
(training: task, split, data, recipe, metrics) and ``export`` (export: format, hash, precision, quantization).
Keys a section does not know are kept as they are (``other``), and so are unknown ``extra`` keys (``extra``), so
a card read and written again holds exactly the keys it held.

Example:
    >>> card = ModelCard(
    ...     arch="mobilenet_v2", num_outputs=1, input_size=224, mean=(0.485, 0.456, 0.406),
    ...     std=(0.229, 0.224, 0.225), interpolation="bilinear", cam_layer="backbone.features.18",
    ... )
    >>> card.class_names, card.activation, card.temperature, card.decision.threshold
    (['no_tumor', 'tumor'], 'sigmoid', 1.0, 0.5)
    >>> ModelCard.from_dict(card.to_dict()) == card
    True
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal, cast

from braintumor.data.datasets import BINARY_CLASSES
from braintumor.errors import ModelCardError
from braintumor.models.decision import DecisionRule

PREPROCESSING = "letterbox-v1"
CARD_SCHEMA = 1
Precision = Literal["fp32", "int8"]
Task = Literal["binary", "multiclass"]
PRECISIONS: tuple[Precision, ...] = ("fp32", "int8")


def default_class_names(num_outputs: int) -> list[str]:
    """``["no_tumor", "tumor"]`` for a binary model (one sigmoid logit or two softmax logits), else placeholders.

    >>> default_class_names(1), default_class_names(3)
    (['no_tumor', 'tumor'], ['class_0', 'class_1', 'class_2'])
    """
    if num_outputs in (1, 2):
        return list(BINARY_CLASSES)
    return [f"class_{i}" for i in range(num_outputs)]


def _section(data: Mapping[str, Any], known: tuple[str, ...]) -> dict[str, Any]:
    """The keys of ``data`` a section does not type, deep-copied (kept for the round trip)."""
    return {k: copy.deepcopy(v) for k, v in data.items() if k not in known}


def _written(values: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A section as JSON: its typed values that are set, then the keys it does not know."""
    return {**{k: v for k, v in values.items() if v is not None}, **copy.deepcopy(other)}


@dataclass
class Calibration:
    """``extra.calibration``: the temperature applied to the logits and the decision rule, both fitted on
    validation data after training (:func:`braintumor.training.calibrate.calibrate`)."""

    temperature: float = 1.0
    decision: DecisionRule | None = None
    method: str | None = "temperature"
    fitted_on: str | None = None
    n: int | None = None
    ece_of: str | None = None
    val_ece_before: float | None = None
    val_ece_after: float | None = None
    other: dict[str, Any] = field(default_factory=dict)

    KEYS = ("method", "temperature", "fitted_on", "n", "ece_of", "val_ece_before", "val_ece_after", "decision")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Calibration:
        decision = d.get("decision")
        return cls(
            temperature=float(d.get("temperature", 1.0)),
            decision=DecisionRule.from_dict(decision) if decision else None,
            method=d.get("method"),
            fitted_on=d.get("fitted_on"),
            n=d.get("n"),
            ece_of=d.get("ece_of"),
            val_ece_before=d.get("val_ece_before"),
            val_ece_after=d.get("val_ece_after"),
            other=_section(d, cls.KEYS),
        )

    def to_dict(self) -> dict[str, Any]:
        values = {k: getattr(self, k) for k in self.KEYS}
        values["decision"] = self.decision.as_dict() if self.decision else None
        return _written(values, self.other)


@dataclass
class TrainingInfo:
    """``extra.training``: what the weights were trained on and how (the run's recipe and metrics are JSON as the
    training loop writes them)."""

    task: Task
    split_sha256: str
    datasets: list[str]
    counts: dict[str, int]
    config: dict[str, Any]
    metrics: dict[str, Any]
    untyped_tumors: int | None = None
    braintumor_version: str | None = None
    torch_version: str | None = None
    platform: str | None = None
    other: dict[str, Any] = field(default_factory=dict)

    KEYS = ("task", "split_sha256", "datasets", "counts", "untyped_tumors", "config", "metrics",
            "braintumor_version", "torch_version", "platform")  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TrainingInfo:
        values: dict[str, Any] = {k: copy.deepcopy(d.get(k)) for k in cls.KEYS}
        return cls(**values, other=_section(d, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({k: copy.deepcopy(getattr(self, k)) for k in self.KEYS}, self.other)


@dataclass
class ExportInfo:
    """``extra.export``: the ONNX file's contract and hash, and which precision serving loads by default."""

    opset: int
    sha256: str
    temperature: float
    probs_classes: list[str]
    input: dict[str, Any]
    outputs: dict[str, str]
    source_run: str
    format: str = "onnx"
    precision: Precision = "fp32"
    quantization: dict[str, Any] | None = None
    default_precision: Precision | None = None
    other: dict[str, Any] = field(default_factory=dict)

    KEYS = ("format", "opset", "input", "outputs", "probs_classes", "temperature", "precision", "sha256",
            "source_run", "quantization", "default_precision")  # fmt: skip

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExportInfo:
        values = {k: copy.deepcopy(d[k]) for k in cls.KEYS if k in d}
        return cls(**values, other=_section(d, cls.KEYS))

    def to_dict(self) -> dict[str, Any]:
        return _written({k: copy.deepcopy(getattr(self, k)) for k in self.KEYS}, self.other)


@dataclass
class ModelCard:
    """Facts that travel with the weights (inside every checkpoint and export).

    ``num_outputs == 1`` means one logit read through a sigmoid as P(``class_names[1]``); two or more
    logits are read through a softmax, one per class name. ``preprocessing`` names the geometry
    (``letterbox-v1``: keep the aspect ratio, pad with black to a square of ``input_size``) which is
    followed by ``(x / 255 - mean) / std`` per channel. ``extra`` holds the keys of the card's ``extra`` that no
    typed section owns.
    """

    arch: str
    num_outputs: int
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str
    cam_layer: str
    class_names: list[str] = field(default_factory=list)
    preprocessing: str = PREPROCESSING
    pretrained: str | None = None
    pretrained_sha256: str | None = None
    calibration: Calibration | None = None
    training: TrainingInfo | None = None
    export: ExportInfo | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    schema: int = CARD_SCHEMA

    def __post_init__(self) -> None:
        if self.num_outputs < 1:
            raise ModelCardError(f"num_outputs must be at least 1, got {self.num_outputs}")
        if not self.class_names:
            self.class_names = default_class_names(self.num_outputs)
        self.class_names = [str(c) for c in self.class_names]
        expected = 2 if self.num_outputs == 1 else self.num_outputs
        if len(self.class_names) != expected:
            raise ModelCardError(
                f"{self.num_outputs} output(s) need {expected} class names, got {len(self.class_names)}: "
                f"{self.class_names}"
            )
        if len(set(self.class_names)) != len(self.class_names):
            raise ModelCardError(f"class names must be distinct, got {self.class_names}")
        self.mean = _triple(self.mean, "mean")
        self.std = _triple(self.std, "std")
        if any(s <= 0 for s in self.std):
            raise ModelCardError(f"std must be positive, got {self.std}")

    @property
    def activation(self) -> Literal["sigmoid", "softmax"]:
        """``"sigmoid"`` for one logit, ``"softmax"`` for several: how to turn logits into probabilities."""
        return "sigmoid" if self.num_outputs == 1 else "softmax"

    @property
    def num_classes(self) -> int:
        """Number of classes (2 for a single-logit binary model)."""
        return len(self.class_names)

    @property
    def temperature(self) -> float:
        """The calibration temperature (1 for an uncalibrated model)."""
        return self.calibration.temperature if self.calibration else 1.0

    @property
    def fitted_decision(self) -> DecisionRule | None:
        """The decision rule fitted on the member's validation data, if any (an ensemble needs to know)."""
        return self.calibration.decision if self.calibration else None

    @property
    def decision(self) -> DecisionRule:
        """The rule to apply: the fitted one, else the default (0.5, no band)."""
        return self.fitted_decision or DecisionRule()

    @property
    def default_precision(self) -> Precision:
        """What serving loads when not told: int8 only where quantization held validation accuracy."""
        return (self.export.default_precision if self.export else None) or "fp32"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (tuples become lists; the typed sections go under ``extra``)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            if f.name in ("calibration", "training", "export"):
                continue
            out[f.name] = copy.deepcopy(getattr(self, f.name))
        out["mean"] = list(self.mean)
        out["std"] = list(self.std)
        sections = {"calibration": self.calibration, "training": self.training, "export": self.export}
        out["extra"] = {**{k: s.to_dict() for k, s in sections.items() if s is not None}, **out["extra"]}
        out["schema"] = out.pop("schema")
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ModelCard:
        """Rebuild a card from :meth:`to_dict` output; keys this version does not know are ignored.

        Ignoring unknown keys lets an older reader open a card written by a newer version.
        """
        known = {f.name for f in fields(cls)} - {"calibration", "training", "export"}
        kwargs: dict[str, Any] = {k: copy.deepcopy(v) for k, v in data.items() if k in known}
        missing = sorted(_REQUIRED - kwargs.keys())
        if missing:
            raise ModelCardError(f"model card lacks required field(s): {', '.join(missing)}")
        extra = dict(kwargs.pop("extra", None) or {})
        try:
            calibration = extra.pop("calibration", None)
            training = extra.pop("training", None)
            export = extra.pop("export", None)
            return cls(
                **kwargs,
                calibration=Calibration.from_dict(calibration) if calibration else None,
                training=TrainingInfo.from_dict(training) if training else None,
                export=ExportInfo.from_dict(export) if export else None,
                extra=extra,
            )
        except ModelCardError:
            raise
        except (TypeError, ValueError, KeyError) as exc:
            raise ModelCardError(f"invalid model card: {exc}") from exc


_REQUIRED = frozenset({"arch", "num_outputs", "input_size", "mean", "std", "interpolation", "cam_layer"})


def _triple(values: object, name: str) -> tuple[float, float, float]:
    try:
        a, b, c = (float(v) for v in cast("list[float]", values))
    except (TypeError, ValueError) as exc:
        raise ModelCardError(f"{name} must be three numbers, got {values!r}") from exc
    return (a, b, c)
