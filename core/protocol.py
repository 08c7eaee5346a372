"""Paper A's evaluation protocol: moved to :mod:`core.evaluation.alignment`.

This module re-exports the same names so that old imports keep working (kept for one release);
import from ``core.evaluation`` in new code.
"""
from __future__ import annotations

from .evaluation.alignment import (DEFAULT_ANCHOR_COUNTS, DEFAULT_SWEEP_KS, METRICS, run_protocol,
                                   summarize_records, sweep_anchors, sweep_k, SWEEP_K_METHODS)  # noqa: F401

__all__ = ["DEFAULT_ANCHOR_COUNTS", "DEFAULT_SWEEP_KS", "METRICS", "run_protocol", "summarize_records",
           "sweep_anchors", "sweep_k", "SWEEP_K_METHODS"]
