"""Typed results: small dataclasses for what the evaluation protocols return, with ``to_dict()`` for JSON.

A :class:`Result` is a dataclass that also reads like the dict it replaced (``res["key"]``, ``res.get``, ``in``,
``{**res}``, iteration over its keys), so code written against the dicts keeps working. ``to_dict()`` is the JSON
form (through :func:`core.export.json_safe`, the project's one conversion): what the CLI's ``--json`` prints.

* A field whose value is :data:`ABSENT` is a key the result does not have (left out of the keys and of the JSON),
  e.g. a GPA-only fact on a GCCA result.
* ``_aliases`` maps a deprecated key to its new name: reading the old key warns (``DeprecationWarning``) and
  returns the new one; ``to_dict()`` emits both for one release (README: "Renamed JSON keys").
* ``_not_json`` names fields left out of ``to_dict()`` (e.g. fitted models kept for the app).
"""
from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Mapping
from typing import Any, ClassVar

from .export import json_safe

__all__ = ["ABSENT", "Result", "with_aliases"]


class _Absent:
    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "ABSENT"

    def __reduce__(self):
        return (_Absent, ())

    def __deepcopy__(self, memo):
        return self


#: The value of a field the result does not have.
ABSENT: Any = _Absent()


def with_aliases(values: dict, aliases: Mapping[str, str]) -> dict:
    """``values`` with each deprecated key of ``aliases`` (old -> new) added beside its new key, same value."""
    out = {}
    back = {new: old for old, new in aliases.items()}
    for key, value in values.items():
        out[key] = value
        if key in back:
            out[back[key]] = value
    return out


class Result(Mapping):
    """Base of the typed results (subclass it with ``@dataclass(eq=False)``)."""

    _aliases: ClassVar[dict[str, str]] = {}
    _not_json: ClassVar[tuple[str, ...]] = ()

    # -- the dict view -----------------------------------------------------------------------------
    def _field_names(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self)]

    def _resolve(self, key: str) -> str:
        if key in self._aliases:
            new = self._aliases[key]
            warnings.warn(f"the result key '{key}' is deprecated; use '{new}'", DeprecationWarning, stacklevel=3)
            return new
        return key

    def __getitem__(self, key: str) -> Any:
        key = self._resolve(key)
        if key not in self._field_names():
            raise KeyError(key)
        value = getattr(self, key)
        if value is ABSENT:
            raise KeyError(key)
        return value

    def __setitem__(self, key: str, value: Any) -> None:
        key = self._resolve(key)
        if key not in self._field_names():
            raise KeyError(f"{type(self).__name__} has no field '{key}'")
        setattr(self, key, value)

    def __iter__(self):
        return iter([k for k in self._field_names() if getattr(self, k) is not ABSENT])

    def __len__(self) -> int:
        return sum(1 for _ in self)

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON-ready dict (deprecated keys emitted beside their new names)."""
        values = {k: json_safe(getattr(self, k)) for k in self if k not in self._not_json}
        return with_aliases(values, self._aliases)
