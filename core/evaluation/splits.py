"""Splitting rows into fit and evaluation sets, seeded and group-aware (docs/METHODS.md section 3).

One rule underlies every split of the project: :func:`split_rows` cuts a seeded order of the rows into
consecutive blocks. Without groups the order is ``numpy.random.default_rng(seed).permutation(n)``; with groups
(one id per row) whole groups are drawn in a seeded order (rows within a group shuffled too), each block takes
the next rows whose group no earlier block has touched, and the group at a block's boundary is trimmed (its
other rows are used nowhere).

The protocols call it through thin wrappers that keep their historical signatures (same rows for the same seed):

* :func:`split_anchors_queries` - paper A and B: queries first, then anchors.
* :func:`split_train_test` - paper D: test items first, then every other row for training.
* :func:`split_chains` - paper C: test, validation, then training chains.

:func:`resolve_sizes` shrinks the requested fit / evaluation counts to a dataset too small for them and records
each change in ``adjustments``.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import DataError

__all__ = ["split_rows", "split_anchors_queries", "split_train_test", "split_chains", "resolve_sizes"]


def _seeded_order(n: int, rng: np.random.Generator, groups) -> tuple[np.ndarray, np.ndarray | None]:
    """Rows in their seeded order, and each row's group code (None without groups)."""
    if groups is None:
        return rng.permutation(n), None
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
    return np.lexsort((jitter, position[codes])), codes


def split_rows(n: int, sizes: Sequence[int | None], seed: int = 0, groups=None,
               names: Sequence[str] | None = None) -> list[np.ndarray]:
    """Disjoint blocks of rows, cut in turn from one seeded order of ``range(n)``.

    Parameters
    ----------
    n : number of rows.
    sizes : the row count of each block, in the order they are cut; the last may be ``None``: every row left
        (outside the groups of the earlier blocks).
    seed : seeds the order (``numpy.random.default_rng(seed)``).
    groups : optional group id per row; no group then straddles two blocks.
    names : what the blocks are called in error messages (default ``block 1``, ``block 2``, ...).

    Returns
    -------
    list of sorted int64 arrays, one per block. Raises :class:`DataError` when the rows (or whole groups) do
    not suffice.
    """
    n = int(n)
    sizes = [None if s is None else int(s) for s in sizes]
    names = list(names) if names is not None else [f"block {i + 1}" for i in range(len(sizes))]
    if any(s is None for s in sizes[:-1]):
        raise DataError("only the last block may take every remaining row (size None)")
    if any(s is not None and s < 0 for s in sizes):
        raise DataError(f"{' and '.join(names)} counts must be >= 0")
    rng = np.random.default_rng(seed)
    rows, codes = _seeded_order(n, rng, groups)
    if codes is None:
        wanted = sum(s for s in sizes if s is not None)
        if wanted > n:
            raise DataError(f"{' + '.join(f'{s} {nm}' for s, nm in zip(sizes, names) if s is not None)} need "
                            f"{wanted} rows, but there are only {n}", hint=f"use fewer {' or '.join(names)}")
    blocks, start = [], 0
    used = np.array([], dtype=np.int64)
    for i, (size, name) in enumerate(zip(sizes, names)):
        if codes is None:
            stop = n if size is None else start + size
            blocks.append(np.sort(rows[start:stop]))
            start = stop
            continue
        if used.size:
            rows = rows[~np.isin(codes[rows], used)]
        take = rows if size is None else rows[:size]
        if size is not None and len(take) < size:
            if i == 0:
                raise DataError(f"{size} {name} requested but there are only {n} rows")
            raise DataError(f"{size} {name} requested, but only {len(take)} rows remain outside the groups of the "
                            f"{' and '.join(names[:i])}", hint=f"use fewer {' or '.join(names)}")
        blocks.append(np.sort(take))
        if len(take):
            used = np.union1d(used, codes[take])
        rows = rows[len(take):]
    return blocks


def split_anchors_queries(n: int, n_anchors: int, n_queries: int, seed: int = 0, groups=None):
    """Draw disjoint anchor and query rows, seeded and group-aware (:func:`split_rows`, queries cut first).

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
    if groups is None and n_anchors + n_queries > n:
        raise DataError(f"{n_anchors} anchors + {n_queries} queries need {n_anchors + n_queries} rows, "
                        f"but there are only {n}", hint="use fewer anchors or queries")
    queries, anchors = split_rows(n, [n_queries, n_anchors], seed, groups, names=("queries", "anchors"))
    return anchors, queries


def split_train_test(n: int, test_size: float | int = 0.2, seed: int = 0, groups=None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of ``n`` items into training and test rows (whole groups on one side; :func:`split_rows`,
    test rows cut first, then every other row outside their groups for training).

    ``test_size`` is a fraction (< 1) or a count (clipped to ``[2, n - 3]``). Returns sorted int64 arrays
    ``(train_rows, test_rows)``.
    """
    n = int(n)
    n_test = int(round(test_size * n)) if float(test_size) < 1 else int(test_size)
    n_test = max(2, min(n_test, n - 3))
    if n < 5:
        raise DataError(f"at least 5 items are needed to hold some out, got {n}")
    test, train = split_rows(n, [n_test, None], seed, groups, names=("test items", "training items"))
    if groups is not None and len(train) < 3:
        raise DataError("too few training items remain outside the test groups", hint="lower the test fraction")
    return train.astype(np.int64), test


def split_chains(n_chains: int, test_fraction: float = 0.2, val_fraction: float = 0.1, seed: int = 0
                 ) -> dict[str, np.ndarray]:
    """Seeded split of chain indices into 'train', 'val' (early stopping) and 'test' (held out for reporting):
    :func:`split_rows`, test chains cut first, then validation, then the rest for training.

    At least one chain goes to each part (so at least 3 chains are needed).
    """
    if n_chains < 3:
        raise DataError(f"{n_chains} chains cannot be split into train / validation / test",
                        hint="give at least 3 chains (many more for a meaningful result)")
    n_test = min(n_chains - 2, max(1, int(round(test_fraction * n_chains))))
    n_val = min(n_chains - n_test - 1, max(1, int(round(val_fraction * n_chains))))
    test, val, train = split_rows(n_chains, [n_test, n_val, None], seed, names=("test", "validation", "training"))
    return {"test": test, "val": val, "train": train}


def resolve_sizes(n: int, n_fit: int | None, n_eval: int, adjustments: list, *, fit_rest: bool = True,
                  groups=None, what: str = "the protocol") -> tuple[int | None, int]:
    """Fit (anchor) and evaluation (query) counts that fit a dataset of ``n`` rows.

    A request that fits (``n_fit + n_eval <= n``) is kept. Otherwise the evaluation rows shrink to
    ``min(n_eval, n // 5)`` (at least 2, else :class:`DataError`), and the fit rows become

    * ``fit_rest=True`` (paper A's protocol): every row outside the evaluation rows and their groups, returned as
      ``None`` (``split_rows(..., [n_eval, None])``);
    * ``fit_rest=False`` (the point-set comparison): the count ``min(n_fit, n - n_eval)``, or ``n - n_eval`` for
      ``n_fit=None``; there ``n_fit=None`` with ``n_eval <= n // 2`` keeps ``n_eval`` as asked.

    Every change is appended to ``adjustments`` (a list of human-readable notes that the results carry).
    """
    n_eval = int(n_eval)
    if n_fit is not None and int(n_fit) + n_eval <= n:
        return int(n_fit), n_eval
    if not fit_rest and n_fit is None and n_eval <= n // 2:
        return n - n_eval, n_eval
    q = min(n_eval, n // 5)
    if q < 2:
        raise DataError(f"only {n} items: too few to split into anchors and at least 2 queries",
                        hint=f"{what} needs about 10 items or more")
    if q != n_eval:
        adjustments.append(f"queries shrunk from {n_eval} to {q} (min({n_eval}, n // 5) with n = {n}"
                           f"{' items' if fit_rest else ''})")
    if fit_rest:
        wanted = "all" if n_fit is None else str(int(n_fit))
        adjustments.append(f"anchors: {wanted} requested, using every item outside the queries"
                           f"{' and their groups' if groups is not None else ''} (n = {n})")
        return None, q
    a = n - q if n_fit is None else min(int(n_fit), n - q)
    if n_fit is not None and a != int(n_fit):
        adjustments.append(f"anchors shrunk from {int(n_fit)} to {a} (every item outside the queries)")
    return a, q
