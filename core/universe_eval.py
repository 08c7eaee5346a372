"""Judging a universe of M spaces (paper D): moved to :mod:`core.evaluation.universe`.

This module re-exports the same names so that old imports keep working (kept for one release);
import from ``core.evaluation`` in new code.
"""
from __future__ import annotations

from .evaluation.universe import (add_space_vs_refit, any_to_any_retrieval, clustering_scores, cycle_consistency,
                                  evaluate_universe, kmeans_scores, RETRIEVAL_METRICS, split_train_test,
                                  universe_map)  # noqa: F401

__all__ = ["add_space_vs_refit", "any_to_any_retrieval", "clustering_scores", "cycle_consistency",
           "evaluate_universe", "kmeans_scores", "RETRIEVAL_METRICS", "split_train_test", "universe_map"]
