"""Reading an API answer (JSON) into one of the UI's frozen dataclasses (:mod:`.records`), by its fields' types.

Why one reader, driven by the fields: every record mirrors a response schema field by field, so how a field is
read follows from its declared type alone, and one rule per type replaces a hand-written reader per record.
``str``, ``int``, ``float`` and ``bool`` are converted; ``X | None`` keeps a null; ``tuple[X, ...]`` and
``dict[K, V]`` are read element by element; a ``datetime`` from ISO 8601 (a trailing ``Z`` too); a nested record
by its own ``from_json`` when it has one (what a type cannot say, e.g. a scan's ``kind``), else by this reader.

A field the answer leaves out or sends as null takes, in this order: the ``fallback`` given for it, its default,
``None`` when it is optional, the empty text, ``False``, ``()`` or ``{}``; a missing number or date is an error
(``KeyError``), as it would be for the server's own schema.

Example:
    >>> from dataclasses import dataclass
    >>> @dataclass(frozen=True)
    ... class Point:
    ...     name: str
    ...     xy: tuple[float, ...]
    ...     weight: int | None = None
    >>> read(Point, {"name": None, "xy": [1, 2]})
    Point(name='', xy=(1.0, 2.0), weight=None)
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import types
import typing
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

R = TypeVar("R", bound="DataclassInstance")


def read(cls: type[R], data: Mapping[str, Any], **fallback: Any) -> R:
    """``cls`` with each field read from ``data[field]`` by the field's type (see the module's rules)."""
    hints = _hints(cls)
    values: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        raw = data.get(f.name)
        if raw is not None:
            values[f.name] = _convert(hints[f.name], raw)
        elif f.name in fallback:
            values[f.name] = fallback[f.name]
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            values[f.name] = _empty(f.name, hints[f.name])
    return cls(**values)


@functools.cache
def _hints(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _optional(hint: Any) -> Any | None:
    """``X`` for ``X | None``, else ``None``."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1:
            return inner[0]
    return None


def _empty(name: str, hint: Any) -> Any:
    if _optional(hint) is not None:
        return None
    origin = typing.get_origin(hint) or hint
    if origin in (str, bool, tuple, dict):
        return origin()
    raise KeyError(name)


def _convert(hint: Any, value: Any) -> Any:
    if hint is Any:
        return value
    if (inner := _optional(hint)) is not None:
        return None if value is None else _convert(inner, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and args[1:] == (...,):
        return tuple(_convert(args[0], v) for v in value)
    if origin is dict:
        return {_convert(args[0], k): _convert(args[1], v) for k, v in value.items()}
    if hint is dt.datetime:
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        own = getattr(hint, "from_json", None)
        return own(value) if own is not None else read(hint, value)
    return hint(value)
