"""Which series of a study to score: a small rule file anchored on MONAI Deploy's series selector.

Why rules, not code: sites name their series differently (localisers, scouts, survey scans, derived maps), so
the choice is data a site can edit. A rule file holds ``selections`` of ``conditions`` on DICOM attributes (a
string is a regular expression searched in the value, a list of strings must all be present in a multi-valued
attribute such as ``ImageType``, a number must be equal, ``[min, max]`` is a range), plus ``exclude`` (the same
conditions, any one of which skips the series) and ``min_slices``. A series is kept when one selection accepts it;
every other series is reported with the reason. :data:`DEFAULT_RULES` keeps MR series and skips localisers and
scouts. A NIfTI volume carries no DICOM attributes: only ``min_slices`` applies.

Example:
    >>> rules = SeriesRules.from_dict(DEFAULT_RULES)
    >>> rules.selections[0].name
    'MR series'
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from braintumor.errors import InvalidRequestError
from braintumor.imaging.series import Series, SkippedSeries
from braintumor.imaging.types import first_line

#: The default rules: MR series, no localiser or scout (by ImageType or SeriesDescription), at least one slice.
DEFAULT_RULES: dict[str, Any] = {
    "selections": [
        {
            "name": "MR series",
            "conditions": {"Modality": "(?i)^MR$"},
            "exclude": {
                "ImageType": ["LOCALIZER"],
                "SeriesDescription": r"(?i)\b(localizer|localiser|scout|survey|3[- ]?plane|loc)\b",
            },
            "min_slices": 1,
        }
    ]
}


@dataclass(frozen=True)
class Selection:
    """One rule: every condition must hold, no exclusion may, and the series needs ``min_slices`` slices."""

    name: str
    conditions: Mapping[str, Any]
    exclude: Mapping[str, Any]
    min_slices: int = 1

    def refusal(self, series: Series) -> str | None:
        """Why this rule does not select ``series`` (None when it does)."""
        if series.kind == "dicom":
            for key, wanted in self.conditions.items():
                if not _holds(series.attributes.get(key), wanted):
                    return f"{key} {_shown(series.attributes.get(key))} does not match {_shown(wanted)}"
            for key, wanted in self.exclude.items():
                if _holds(series.attributes.get(key), wanted):
                    return f"{key} {_shown(series.attributes.get(key))} is excluded ({_shown(wanted)})"
        if len(series.slices) < self.min_slices:
            return f"{len(series.slices)} slice(s), fewer than {self.min_slices}"
        return None


@dataclass(frozen=True)
class SeriesRules:
    """Which series to score (see the module docstring); build from a dict or a JSON/YAML file."""

    selections: tuple[Selection, ...]

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> SeriesRules:
        """Read ``{"selections": [{"name", "conditions", "exclude", "min_slices"}, …]}``; a malformed rule is a
        one-line :class:`~braintumor.errors.InvalidRequestError`."""
        items = raw.get("selections") if isinstance(raw, Mapping) else None
        if not isinstance(items, list) or not items:
            raise InvalidRequestError('series rules: expected {"selections": [ … ]} with at least one selection')
        out = []
        for n, item in enumerate(items, start=1):
            if not isinstance(item, Mapping):
                raise InvalidRequestError(f"series rules: selection {n} is not an object")
            unknown = set(item) - {"name", "conditions", "exclude", "min_slices"}
            if unknown:
                raise InvalidRequestError(f"series rules: selection {n} has unknown keys {sorted(unknown)}")
            conditions, exclude = item.get("conditions", {}), item.get("exclude", {})
            if not isinstance(conditions, Mapping) or not isinstance(exclude, Mapping):
                raise InvalidRequestError(f"series rules: selection {n}: conditions and exclude must be objects")
            for value in (*conditions.values(), *exclude.values()):
                _check_condition(n, value)
            min_slices = item.get("min_slices", 1)
            if not isinstance(min_slices, int) or isinstance(min_slices, bool) or min_slices < 1:
                raise InvalidRequestError(f"series rules: selection {n}: min_slices must be a whole number ≥ 1")
            out.append(Selection(str(item.get("name", f"selection {n}")), dict(conditions), dict(exclude), min_slices))
        return cls(tuple(out))

    @classmethod
    def load(cls, path: str | Path) -> SeriesRules:
        """Read a rule file: JSON, or YAML for a ``.yaml``/``.yml`` name."""
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise InvalidRequestError(f"cannot read the series rules {path}: {exc.strerror or exc}") from exc
        try:
            if path.suffix.lower() in (".yaml", ".yml"):
                import yaml

                raw = yaml.safe_load(text)
            else:
                raw = json.loads(text)
        except Exception as exc:  # json.JSONDecodeError, yaml.YAMLError
            what = path.suffix[1:] or "JSON"
            raise InvalidRequestError(f"series rules {path}: not valid {what}: {first_line(exc)}") from exc
        return cls.from_dict(raw)

    def select(self, series: Iterable[Series]) -> tuple[list[Series], list[SkippedSeries]]:
        """The series one selection accepts, and the others with the reason the first selection gave."""
        kept: list[Series] = []
        skipped: list[SkippedSeries] = []
        for s in series:
            reasons = [(sel.name, sel.refusal(s)) for sel in self.selections]
            if any(reason is None for _, reason in reasons):
                kept.append(s)
            else:
                name, reason = reasons[0]
                skipped.append(SkippedSeries(s, f'{reason} (rule "{name}")'))
        return kept, skipped


def _check_condition(n: int, value: Any) -> None:
    if isinstance(value, str):
        try:
            re.compile(value)
        except re.error as exc:
            raise InvalidRequestError(f"series rules: selection {n}: bad regular expression {value!r}: {exc}") from exc
        return
    if isinstance(value, bool):
        raise InvalidRequestError(f"series rules: selection {n}: a condition cannot be true/false")
    if isinstance(value, int | float):
        return
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, int | float) for v in value):
        return
    raise InvalidRequestError(
        f"series rules: selection {n}: a condition is a regular expression, a number, [min, max] or a list of values"
    )


def _holds(value: Any, wanted: Any) -> bool:
    """MONAI Deploy's matching: regex searched in a string, all listed values present, equal number, range."""
    if value is None:
        return False
    if isinstance(wanted, str):
        texts = value if isinstance(value, list) else [value]
        return any(re.search(wanted, str(t)) is not None for t in texts)
    if isinstance(wanted, list) and all(isinstance(w, str) for w in wanted):
        have = {str(v).upper() for v in (value if isinstance(value, list) else [value])}
        return all(w.upper() in have for w in wanted)
    try:
        number = float(value[0] if isinstance(value, list) else value)
    except (TypeError, ValueError):
        return False
    if isinstance(wanted, list):
        return float(wanted[0]) <= number <= float(wanted[1])
    return number == float(wanted)


def _shown(value: Any) -> str:
    if value is None:
        return "(absent)"
    if isinstance(value, list):
        return "\\".join(map(str, value))
    return str(value)
