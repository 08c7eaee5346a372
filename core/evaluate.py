"""Judging an alignment from a score matrix: moved to :mod:`core.evaluation.metrics`, :mod:`core.evaluation.splits`.

This module re-exports the same names so that old imports keep working (kept for one release);
import from ``core.evaluation`` in new code.
"""
from __future__ import annotations

from .evaluation.metrics import (chance_levels, DEFAULT_KS, evaluate_scores, matching_accuracy,
                                 mean_reciprocal_rank, retrieval_topk, std_over_seeds, true_ranks)  # noqa: F401
from .evaluation.splits import split_anchors_queries  # noqa: F401

__all__ = ["chance_levels", "DEFAULT_KS", "evaluate_scores", "matching_accuracy", "mean_reciprocal_rank",
           "retrieval_topk", "std_over_seeds", "true_ranks", "split_anchors_queries"]
