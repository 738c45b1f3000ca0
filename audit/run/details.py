"""Typed details: what a family records beside its findings, as dataclasses that map one-to-one
to JSON.

A family's details class subclasses :class:`Details`; its fields use plain types (``int``,
``float``, ``str``, ``bool``), ``list[...]``, ``dict[str, ...]``, ``X | None`` and other
:class:`Details` classes. From those annotations come :meth:`Details.to_dict`,
:meth:`Details.from_dict` and :meth:`Details.json_schema`, so a field is declared once and the
writer, the readers and the published schema cannot drift apart.

Two JSON conventions hold throughout: a ``float`` that is not finite is written as ``null``
(and read back as NaN), and a field marked :func:`optional` is left out of the JSON when it is
``None`` (and read back as ``None`` when absent).
"""

from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Self, Union

__all__ = ["Details", "Estimate", "optional"]

_OMIT = "scrutiny_omit_if_none"
_SCALARS = {int: "integer", float: "number", str: "string", bool: "boolean"}


def optional(**kwargs) -> Any:
    """A field that is absent from the JSON when it is ``None`` (default ``None``)."""
    return dataclasses.field(default=None, metadata={_OMIT: True}, **kwargs)


class Details:
    """Base class of a family's typed details (subclasses are dataclasses)."""

    def to_dict(self) -> dict:
        """The details as plain JSON-ready values."""
        return _dump(self)

    @classmethod
    def from_dict(cls, data: dict) -> Self:
        """The details read back from :meth:`to_dict`'s output (or its JSON).

        Raises:
            ValueError: ``data`` does not have the fields and types of ``cls``; the message
                names the field.
        """
        return _load(cls, data, cls.__name__)

    @classmethod
    def upgrade(cls, data: dict) -> dict:
        """``data`` as written by an earlier scrutiny, brought to this class's fields (a run folder
        keeps its format; new fields are derived when it is read). Default: unchanged."""
        return data

    @classmethod
    def json_schema(cls) -> dict:
        """The JSON schema (draft 2020-12) that :meth:`to_dict`'s output satisfies."""
        return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": cls.__name__,
                **_schema(cls)}


@dataclasses.dataclass
class Estimate(Details):
    """A point estimate with its confidence interval."""

    value: float
    low: float
    high: float


_HINTS: dict[type, dict[str, Any]] = {}


def _hints(cls: type) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _dump(value):
    if isinstance(value, Details):
        out = {}
        for f in dataclasses.fields(value):  # type: ignore[arg-type]
            item = getattr(value, f.name)
            if item is None and f.metadata.get(_OMIT):
                continue
            out[f.name] = _dump(item)
        return out
    if isinstance(value, dict):
        return {k: _dump(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_dump(v) for v in value]
    return value


def _load(tp, data, where: str):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        if data is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        for candidate in inner:  # the first that reads it (for scalar unions: int | float | str | bool)
            try:
                return _load(candidate, data, where)
            except ValueError:
                continue
        raise ValueError(f"{where}: {_shown(data)} is none of {', '.join(_name(a) for a in args)}")
    if isinstance(tp, type) and issubclass(tp, Details):
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {_shown(data)}")
        fields = {f.name: f for f in dataclasses.fields(tp)}  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(fields))
        if unknown:
            raise ValueError(f"{where}: unexpected key {unknown[0]!r}")
        hints, values = _hints(tp), {}
        for name, f in fields.items():
            if name not in data:
                if f.metadata.get(_OMIT):
                    continue
                raise ValueError(f"{where}: missing key {name!r}")
            values[name] = _load(hints[name], data[name], f"{where}.{name}")
        return tp(**values)
    if origin is list:
        if not isinstance(data, list):
            raise ValueError(f"{where}: expected a list, got {_shown(data)}")
        return [_load(args[0], v, f"{where}[{i}]") for i, v in enumerate(data)]
    if origin is dict:
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {_shown(data)}")
        return {k: _load(args[1], v, f"{where}[{k!r}]") for k, v in data.items()}
    if tp is float:
        if data is None:
            return math.nan
        if isinstance(data, (int, float)) and not isinstance(data, bool):
            return float(data)
    elif tp is int:
        if isinstance(data, int) and not isinstance(data, bool):
            return data
    elif tp in (str, bool):
        if isinstance(data, tp):
            return data
    elif tp is Any:
        return data
    else:
        raise TypeError(f"{where}: no JSON form for the type {tp!r}")
    raise ValueError(f"{where}: expected {_name(tp)}, got {_shown(data)}")


def _schema(tp) -> dict:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema(a) for a in args]}
    if tp is type(None):
        return {"type": "null"}
    if isinstance(tp, type) and issubclass(tp, Details):
        fields = dataclasses.fields(tp)  # type: ignore[arg-type]
        hints = _hints(tp)
        return {"type": "object", "additionalProperties": False,
                "required": [f.name for f in fields if not f.metadata.get(_OMIT)],
                "properties": {f.name: _schema(hints[f.name]) for f in fields}}
    if origin is list:
        return {"type": "array", "items": _schema(args[0])}
    if origin is dict:
        return {"type": "object", "additionalProperties": _schema(args[1])}
    if tp is float:
        return {"type": ["number", "null"]}  # null: not finite
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    if tp is Any:
        return {}
    raise TypeError(f"no JSON schema for the type {tp!r}")


def _name(tp) -> str:
    return "null" if tp is type(None) else getattr(tp, "__name__", str(tp))


def _shown(data) -> str:
    text = repr(data)
    return text if len(text) <= 60 else text[:57] + "..."
