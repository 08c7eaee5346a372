"""Lazy package exports (PEP 562): names a package lists but imports from its sub-modules only on first use."""
from __future__ import annotations

import importlib
from typing import Callable


def lazy_exports(package: str, table: dict[str, str], namespace: dict) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package``: ``table[name]`` names the sub-module (relative to the package) that
    defines ``name``; the value is imported on first access and kept in ``namespace`` (the package's globals)."""
    def __getattr__(name: str):
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f".{module}", package), name)
        namespace[name] = value
        return value

    return __getattr__
