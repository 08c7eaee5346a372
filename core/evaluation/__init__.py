"""Judging representations and alignments: shared metrics, seeded splits, and one protocol module per paper.

=========================  ===========================================================================================
module                     what it holds
=========================  ===========================================================================================
:mod:`.metrics`            matching accuracy, top-k retrieval, MRR, true ranks, chance levels, ``std_over_seeds``
                           (the one ddof), all group-aware (docs/METHODS.md section 3)
:mod:`.splits`             ``split_rows``: the one seeded, group-aware splitter of rows into fit and evaluation
                           sets (wrappers ``split_anchors_queries``, ``split_train_test``, ``split_chains``), and
                           ``resolve_sizes``
:mod:`.alignment`          paper A: ``run_protocol``, ``sweep_k``, ``sweep_anchors`` (estimators in :mod:`core.align`)
:mod:`.pointsets`          paper B: ``compare_pointset_similarities`` (estimators in :mod:`core.pointset`)
:mod:`.hierarchy`          paper C: ``hierarchy_report`` (measures in :mod:`core.hierarchy`, fine-tuners in
                           :mod:`core.radial`)
:mod:`.universe`           paper D: ``evaluate_universe`` and its parts (estimators in :mod:`core.universe`)
=========================  ===========================================================================================

The metrics and splits are imported here directly; the protocols (which pull in torch and the estimators) on
first use. The old modules ``core.evaluate``, ``core.protocol``, ``core.hierarchy_eval`` and
``core.universe_eval`` re-export the same names for one release.
"""
from .._lazy import lazy_exports
from .metrics import (DEFAULT_KS, chance_levels, evaluate_scores, matching_accuracy, mean_reciprocal_rank,
                      retrieval_topk, std_over_seeds, true_ranks)
from .splits import resolve_sizes, split_anchors_queries, split_chains, split_rows, split_train_test

_LAZY = {
    "run_protocol": "alignment", "sweep_k": "alignment", "sweep_anchors": "alignment",
    "summarize_records": "alignment",
    "compare_pointset_similarities": "pointsets", "similarity_spectrum": "pointsets", "numerical_rank": "pointsets",
    "hierarchy_report": "hierarchy",
    "evaluate_universe": "universe", "any_to_any_retrieval": "universe", "cycle_consistency": "universe",
    "clustering_scores": "universe", "kmeans_scores": "universe", "add_space_vs_refit": "universe",
    "universe_map": "universe",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["DEFAULT_KS", "chance_levels", "evaluate_scores", "matching_accuracy", "mean_reciprocal_rank",
           "retrieval_topk", "std_over_seeds", "true_ranks", "split_rows", "split_anchors_queries", "split_train_test", "split_chains", "resolve_sizes",
           *_LAZY]
