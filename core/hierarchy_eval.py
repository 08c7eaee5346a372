"""The hierarchy report of paper C: moved to :mod:`core.evaluation.hierarchy`.

This module re-exports the same names so that old imports keep working (kept for one release);
import from ``core.evaluation`` in new code.
"""
from __future__ import annotations

from .evaluation.hierarchy import hierarchy_report  # noqa: F401

__all__ = ["hierarchy_report"]
