"""Splitting rows into fit and evaluation sets, seeded (docs/METHODS.md section 3).

:func:`split_anchors_queries` draws disjoint anchor (fit) and query (evaluation) rows, whole groups on one side.
"""
from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["split_anchors_queries"]


def split_anchors_queries(n: int, n_anchors: int, n_queries: int, seed: int = 0, groups=None):
    """Draw disjoint anchor and query rows, seeded and group-aware.

    Without groups: a seeded permutation of ``range(n)``; the first ``n_queries`` are the queries, the next
    ``n_anchors`` the anchors. With ``groups`` (one id per row), whole groups are drawn in a seeded order: rows of
    the first groups become queries until ``n_queries`` rows are reached (the group at the boundary is trimmed and
    its remaining rows are used nowhere), and anchors come only from later groups, so no group straddles anchors
    and queries.

    Returns
    -------
    (anchor_rows, query_rows): sorted int64 arrays of lengths ``n_anchors`` and ``n_queries``.
    Raises :class:`DataError` when there are not enough rows (or whole groups).
    """
    n, n_anchors, n_queries = int(n), int(n_anchors), int(n_queries)
    if n_anchors < 0 or n_queries < 0:
        raise DataError("anchor and query counts must be >= 0")
    rng = np.random.default_rng(seed)
    if groups is None:
        if n_anchors + n_queries > n:
            raise DataError(f"{n_anchors} anchors + {n_queries} queries need {n_anchors + n_queries} rows, "
                            f"but there are only {n}", hint="use fewer anchors or queries")
        perm = rng.permutation(n)
        return np.sort(perm[n_queries:n_queries + n_anchors]), np.sort(perm[:n_queries])
    g = np.asarray(groups)
    if g.shape != (n,):
        raise DataError(f"groups must hold one id per row ({n}), got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    codes = codes.reshape(-1)
    n_groups = int(codes.max()) + 1 if n else 0
    order = rng.permutation(n_groups)
    position = np.empty(n_groups, dtype=np.int64)
    position[order] = np.arange(n_groups)
    # rows sorted by their group's drawn position (rows within a group shuffled too)
    jitter = rng.permutation(n)
    rows = np.lexsort((jitter, position[codes]))
    queries = rows[:n_queries]
    if len(queries) < n_queries:
        raise DataError(f"{n_queries} queries requested but there are only {n} rows")
    used_groups = np.unique(codes[queries]) if n_queries else np.array([], dtype=np.int64)
    rest = rows[n_queries:]
    rest = rest[~np.isin(codes[rest], used_groups)]
    if len(rest) < n_anchors:
        raise DataError(f"{n_anchors} anchors requested, but only {len(rest)} rows remain outside the query "
                        f"groups", hint="use fewer anchors or queries")
    return np.sort(rest[:n_anchors]), np.sort(queries)
