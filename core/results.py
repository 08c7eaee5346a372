"""Typed results: small dataclasses for what the evaluation protocols return, with ``to_dict()`` for JSON.

A :class:`Result` is a dataclass that is also the dict it replaced (``res["key"]``, ``res.get``, ``in``,
``{**res}``, ``json.dumps(res)``), so code written against the dicts keeps working. ``to_dict()`` is the JSON
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


class Result(dict):
    """Base of the typed results (subclass it with ``@dataclass(eq=False)``).

    The fields are the source of truth and the dict holds the present ones (same order), so a result is also a
    plain dict to ``json.dumps``, ``isinstance(res, dict)`` and ``res == {...}``; setting an attribute or a key
    updates both. Keys that are not fields may be added (kept in the dict and in :meth:`to_dict`).
    """

    _aliases: ClassVar[dict[str, str]] = {}
    _not_json: ClassVar[tuple[str, ...]] = ()

    def _is_field(self, name: str) -> bool:
        return name in type(self).__dataclass_fields__

    def _resolve(self, key):
        if key in self._aliases:
            new = self._aliases[key]
            warnings.warn(f"the result key '{key}' is deprecated; use '{new}'", DeprecationWarning, stacklevel=3)
            return new
        return key

    # -- attributes and keys stay in step ------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        object.__setattr__(self, name, value)
        if self._is_field(name):
            if value is ABSENT:
                dict.pop(self, name, None)
            else:
                dict.__setitem__(self, name, value)

    def __missing__(self, key):
        new = self._resolve(key)
        if new != key:
            return self[new]
        raise KeyError(key)

    def __contains__(self, key) -> bool:
        return dict.__contains__(self, key) or (key in self._aliases and dict.__contains__(self, self._aliases[key]))

    def get(self, key, default=None):
        return self[key] if key in self else default

    def __setitem__(self, key, value) -> None:
        key = self._resolve(key)
        if self._is_field(key):
            setattr(self, key, value)
        else:
            dict.__setitem__(self, key, value)

    def __delitem__(self, key) -> None:
        key = self._resolve(key)
        if self._is_field(key):
            if key not in self:
                raise KeyError(key)
            setattr(self, key, ABSENT)
        else:
            dict.__delitem__(self, key)

    def update(self, *args, **kwargs) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def pop(self, key, *default):
        if key in self:
            value = self[key]
            del self[key]
            return value
        if default:
            return default[0]
        raise KeyError(key)

    def setdefault(self, key, default=None):
        if key not in self:
            self[key] = default
        return self[key]

    def __reduce__(self):
        # rebuilt from the fields (dict's default pickling would bypass __init__ and the field / key sync)
        import copyreg
        return (copyreg._reconstructor, (type(self), dict, {}), dict(self.__dict__), None, iter(dict.items(self)))

    # -- JSON ---------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The JSON-ready dict (deprecated keys emitted beside their new names, private fields left out)."""
        values = {k: json_safe(v) for k, v in dict.items(self) if k not in self._not_json}
        return with_aliases(values, self._aliases)
