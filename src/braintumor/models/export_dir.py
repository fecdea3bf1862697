"""The export format: one folder per exported model, and the only code that knows its file names.

A model folder is either one export — ``card.json`` (the :class:`~braintumor.models.card.ModelCard`),
``model.onnx`` and, where quantization held accuracy, ``model.int8.onnx``, optionally an input gate ``gate.npz``
beside them — or an ensemble: ``ensemble.json`` (an :class:`EnsembleSpec`: name, version, member folders with
their weights, the ensemble's decision rule, its gate, and a free-form ``metrics`` block the bench scripts write)
and one export folder per member. :class:`ExportDir` reads and writes these files, each atomically (a temporary
file in the same folder, then a rename), so a server loading a folder never sees half a file.

Example:
    >>> import tempfile
    >>> folder = ExportDir(tempfile.mkdtemp())
    >>> folder.write_ensemble(EnsembleSpec("demo", [EnsembleMember("a", "a", 2.0)])).name
    'ensemble.json'
    >>> folder.is_ensemble, folder.read_ensemble().members[0].weight
    (True, 2.0)
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from braintumor.errors import ModelCardError, ModelLoadError
from braintumor.models.card import ModelCard, Precision
from braintumor.models.decision import DecisionRule

CARD_FILE = "card.json"
MODEL_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
ENSEMBLE_FILE = "ensemble.json"
GATE_FILE = "gate.npz"
MODEL_FILES: dict[Precision, str] = {"fp32": MODEL_FILE, "int8": INT8_FILE}


@dataclass(frozen=True)
class EnsembleMember:
    """One member of an ensemble: its name, its folder (relative to the ensemble's) and its weight."""

    name: str
    path: str
    weight: float = 1.0


@dataclass
class EnsembleSpec:
    """``ensemble.json``. ``other`` keeps the keys this reader does not type (``classes``, ``split_sha256``, the
    free-form ``metrics`` …) so the file is written back with exactly the keys it had."""

    name: str | None
    members: list[EnsembleMember]
    version: str | None = None
    decision: DecisionRule | None = None
    gate: str | None = None
    other: dict[str, Any] = field(default_factory=dict)

    KEYS = ("name", "members", "version", "decision", "gate")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EnsembleSpec:
        members = [
            EnsembleMember(str(m.get("name") or Path(m["path"]).name), str(m["path"]), float(m.get("weight", 1.0)))
            for m in d["members"]
        ]
        version = d.get("version")
        return cls(
            name=d.get("name"),
            members=members,
            version=None if version is None else str(version),
            decision=DecisionRule.from_dict(d["decision"]) if d.get("decision") else None,
            gate=d.get("gate"),
            other={k: copy.deepcopy(v) for k, v in d.items() if k not in cls.KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": self.name,
            "members": [{"name": m.name, "path": m.path, "weight": m.weight} for m in self.members],
            "version": self.version,
            "decision": self.decision.as_dict() if self.decision else None,
            "gate": self.gate,
        }
        return {**{k: v for k, v in out.items() if v is not None}, **copy.deepcopy(self.other)}


def write_atomic(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


class ExportDir:
    """A model folder (an export or an ensemble, see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"ExportDir({str(self.root)!r})"

    @property
    def name(self) -> str:
        return self.root.name

    @property
    def is_ensemble(self) -> bool:
        return (self.root / ENSEMBLE_FILE).is_file()

    @property
    def is_export(self) -> bool:
        return (self.root / CARD_FILE).is_file()

    def model_file(self, precision: Precision = "fp32") -> Path:
        """The ONNX file of ``precision`` (it may not exist: int8 is shipped only where it held accuracy)."""
        return self.root / MODEL_FILES[precision]

    def gate_file(self) -> Path | None:
        """The input gate this folder names (ensemble) or holds beside its card (export), else None."""
        if self.is_ensemble:
            gate = self.read_ensemble().gate
            return self.root / gate if gate else None
        path = self.root / GATE_FILE
        return path if path.is_file() else None

    def member_dirs(self) -> list[tuple[EnsembleMember, ExportDir]]:
        """The export folders to load: each member of an ensemble, or this folder as the only member."""
        if self.is_ensemble:
            return [(m, ExportDir(self.root / m.path)) for m in self.read_ensemble().members]
        if self.is_export:
            return [(EnsembleMember(self.name, "."), self)]
        raise ModelLoadError(f"{self.root} is not a model folder (no {ENSEMBLE_FILE} or {CARD_FILE})")

    # -- the files -----------------------------------------------------------------------------------------
    def read_card(self) -> ModelCard:
        try:
            return ModelCard.from_dict(self._read_json(CARD_FILE))
        except ModelCardError as exc:
            raise ModelLoadError(f"{self.root / CARD_FILE}: {exc}") from exc

    def write_card(self, card: ModelCard) -> Path:
        return write_atomic(self.root / CARD_FILE, json.dumps(card.to_dict(), indent=2).encode())

    def read_ensemble(self) -> EnsembleSpec:
        try:
            return EnsembleSpec.from_dict(self._read_json(ENSEMBLE_FILE))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelLoadError(f"{self.root / ENSEMBLE_FILE} is not a valid ensemble: {exc}") from exc

    def write_ensemble(self, spec: EnsembleSpec) -> Path:
        return write_atomic(self.root / ENSEMBLE_FILE, json.dumps(spec.to_dict(), indent=2).encode())

    def _read_json(self, name: str) -> dict[str, Any]:
        path = self.root / name
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ModelLoadError(f"cannot read {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ModelLoadError(f"{path} must hold a JSON object")
        return data
