"""Paper B's evaluation protocol (docs/METHODS.md section 6): :func:`compare_pointset_similarities` - cosine of
pooled vectors, uniform and learned point-set similarities on held-out pairs, mean and std over seeds, with the
similarity spectrum (:func:`similarity_spectrum`, :func:`numerical_rank`) as the rank diagnostic.

The code lives in :mod:`core.pointset`, beside the estimators it drives: ``core.pointset`` is the import path the
CLI, the pages and user code have used, and moving the protocol here would make that old path import this module
back (an import cycle). This module is the protocol's place in the per-paper layout of :mod:`core.evaluation`.
"""
from __future__ import annotations

from ..pointset import SIMILARITIES, compare_pointset_similarities, numerical_rank, similarity_spectrum

__all__ = ["compare_pointset_similarities", "similarity_spectrum", "numerical_rank", "SIMILARITIES"]
