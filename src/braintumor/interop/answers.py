"""The answers the DICOM writers report: one slice's (a fresh prediction, or one kept from an earlier run) and the
finding an SR states for an image, a series or a study.

Why a module of its own: :mod:`braintumor.interop.dicom_out` writes DICOM from answers, and the answers come from
three places — a prediction just made (``braintumor predict --dicom-out``), a history record's stored result
(``GET /history/{id}/dicom``: :class:`StoredAnswer`, so the files say what the user was shown without running the
model again) and a study rule's verdict over many slices (:class:`Finding`). Reading and checking them is one job;
writing datasets is another.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol, cast

import numpy as np

from braintumor.models.decision import OUTCOMES, Outcome


class SliceAnswer(Protocol):
    """What the writers read of the model's answer for one slice: a fresh
    :class:`~braintumor.inference.predictor.Prediction`, or a :class:`StoredAnswer` kept from an earlier run."""

    @property
    def outcome(self) -> Outcome: ...
    @property
    def p_tumor(self) -> float: ...
    @property
    def tumor_type(self) -> str | None: ...
    @property
    def type_probs(self) -> Mapping[str, float]: ...
    @property
    def model_name(self) -> str: ...
    @property
    def model_version(self) -> str: ...
    @property
    def cam(self) -> np.ndarray | None: ...


@dataclass(frozen=True)
class StoredAnswer:
    """A slice's answer as it was kept (``Prediction.as_dict()``) with its kept heatmap, so the SR and SC of a
    scan analysed earlier are written from what was stored, without running the model again (and so from the
    answer the user was shown, even when the model has changed since).

    >>> kept = {"outcome": "refer", "p_tumor": 0.5, "tumor_type": None, "type_probs": {}, "model": "m",
    ...         "model_version": "1"}
    >>> StoredAnswer.from_dict(kept, cam=None).outcome
    'refer'
    """

    outcome: Outcome
    p_tumor: float
    tumor_type: str | None
    type_probs: Mapping[str, float]
    model_name: str
    model_version: str
    cam: np.ndarray | None

    @classmethod
    def from_dict(cls, answer: Mapping[str, Any], *, cam: np.ndarray | None) -> StoredAnswer:
        """Read ``Prediction.as_dict()``'s output; raises ValueError when it is not one (an unknown outcome, a
        probability outside 0–1, no model name)."""
        outcome = answer.get("outcome")
        if outcome not in OUTCOMES:
            raise ValueError(f"the kept answer has no known outcome (got {str(outcome)[:40]!r})")
        try:
            p_tumor = float(answer["p_tumor"])
            type_probs = {str(k): float(v) for k, v in dict(answer.get("type_probs") or {}).items()}
        except (KeyError, TypeError, ValueError):
            raise ValueError("the kept answer's probabilities are not numbers") from None
        if not 0.0 <= p_tumor <= 1.0 or not all(0.0 <= v <= 1.0 for v in type_probs.values()):
            raise ValueError("the kept answer's probabilities are not between 0 and 1")
        model, version = str(answer.get("model") or ""), str(answer.get("model_version") or "")
        if not model:
            raise ValueError("the kept answer does not name its model")
        kind = answer.get("tumor_type")
        return cls(cast(Outcome, outcome), p_tumor, None if kind is None else str(kind), type_probs, model, version,
                   cam)  # fmt: skip


@dataclass(frozen=True)
class Finding:
    """The answer the SR reports for an image or a series: outcome, p(tumor), tumor type and its probability."""

    outcome: Outcome
    p_tumor: float
    tumor_type: str | None = None
    type_probability: float | None = None

    @classmethod
    def of(cls, prediction: SliceAnswer) -> Finding:
        kind = prediction.tumor_type
        p_type = prediction.type_probs.get(kind) if kind is not None else None
        return cls(prediction.outcome, prediction.p_tumor, kind, p_type)
