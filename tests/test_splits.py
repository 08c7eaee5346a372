"""core.evaluation.splits: the one seeded splitter reproduces, row for row, the four rules it replaced.

The references below are naive reimplementations of the rules as they stood before the splitters were merged
(split_anchors_queries and split_train_test from core.evaluate / core.universe_eval, split_chains from
core.hierarchy, the size rules of core.protocol and core.pointset): Python sorting and sets instead of lexsort and
isin, written from the rules' documentation. The same seed must give the same rows, so every reported number
stays as it was.
"""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.errors import DataError
from core.evaluation import splits
from core.evaluation.splits import (resolve_sizes, split_anchors_queries, split_chains, split_rows,
                                    split_train_test)


# ------------------------------------------------------------------------------------------------
# naive references of the old rules
# ------------------------------------------------------------------------------------------------
def _naive_order(n, seed, groups):
    """The seeded row order: a permutation, or rows ordered by (drawn group position, drawn row jitter)."""
    rng = np.random.default_rng(seed)
    if groups is None:
        return [int(i) for i in rng.permutation(n)]
    values = sorted(set(groups.tolist()))
    code = {v: i for i, v in enumerate(values)}
    group_order = rng.permutation(len(values))          # group_order[k] = the group drawn k-th
    position = {int(g): k for k, g in enumerate(group_order)}
    jitter = rng.permutation(n)
    return sorted(range(n), key=lambda r: (position[code[groups[r].item()]], int(jitter[r])))


def naive_anchors_queries(n, n_anchors, n_queries, seed, groups=None):
    order = _naive_order(n, seed, groups)
    if groups is None:
        return sorted(order[n_queries:n_queries + n_anchors]), sorted(order[:n_queries])
    queries = order[:n_queries]
    query_groups = {groups[r].item() for r in queries}
    rest = [r for r in order[n_queries:] if groups[r].item() not in query_groups]
    if len(rest) < n_anchors:
        raise DataError("not enough anchors")
    return sorted(rest[:n_anchors]), sorted(queries)


def naive_train_test(n, test_size, seed, groups=None):
    n_test = int(round(test_size * n)) if float(test_size) < 1 else int(test_size)
    n_test = max(2, min(n_test, n - 3))
    if groups is None:
        return naive_anchors_queries(n, n - n_test, n_test, seed)
    _, test = naive_anchors_queries(n, 0, n_test, seed, groups)
    test_groups = {groups[r].item() for r in test}
    return [r for r in range(n) if groups[r].item() not in test_groups], test


def naive_chains(n, test_fraction, val_fraction, seed):
    perm = [int(i) for i in np.random.default_rng(seed).permutation(n)]
    n_test = min(n - 2, max(1, int(round(test_fraction * n))))
    n_val = min(n - n_test - 1, max(1, int(round(val_fraction * n))))
    return {"test": sorted(perm[:n_test]), "val": sorted(perm[n_test:n_test + n_val]),
            "train": sorted(perm[n_test + n_val:])}


def naive_protocol_sizes(n, n_anchors, n_queries, groups):
    """Paper A's protocol: a request that does not fit takes every row outside the (shrunk) queries."""
    notes = []
    if n_anchors is not None and n_anchors + n_queries <= n:
        return (n_anchors, n_queries), notes
    q = min(n_queries, n // 5)
    if q < 2:
        return "error", notes
    if q != n_queries:
        notes.append(f"queries shrunk from {n_queries} to {q} (min({n_queries}, n // 5) with n = {n} items)")
    wanted = "all" if n_anchors is None else str(n_anchors)
    notes.append(f"anchors: {wanted} requested, using every item outside the queries"
                 f"{' and their groups' if groups is not None else ''} (n = {n})")
    return (None, q), notes


def naive_pointset_sizes(n, n_anchors, n_queries):
    """The point-set comparison: explicit counts; all anchors = n - queries while the queries take half or less."""
    notes = []
    if n_anchors is not None and n_anchors + n_queries <= n:
        return (n_anchors, n_queries), notes
    if n_anchors is None and n_queries <= n // 2:
        return (n - n_queries, n_queries), notes
    q = min(n_queries, n // 5)
    if q < 2:
        return "error", notes
    if q != n_queries:
        notes.append(f"queries shrunk from {n_queries} to {q} (min({n_queries}, n // 5) with n = {n})")
    a = n - q if n_anchors is None else min(n_anchors, n - q)
    if n_anchors is not None and a != n_anchors:
        notes.append(f"anchors shrunk from {n_anchors} to {a} (every item outside the queries)")
    return (a, q), notes


def _groups(kind, n, rng):
    if kind == "none":
        return None
    if kind == "pairs":
        return np.repeat(np.arange((n + 1) // 2), 2)[:n]
    if kind == "strings":                                  # unsorted, repeated labels of uneven sizes
        return np.array([f"g{int(v)}" for v in rng.integers(0, max(2, n // 3), size=n)])
    return rng.integers(0, max(2, n // 4), size=n)


def _same(a, b):
    assert [int(v) for v in a] == [int(v) for v in b]


# ------------------------------------------------------------------------------------------------
# hand-worked cases
# ------------------------------------------------------------------------------------------------
def test_hand_worked_permutation_blocks():
    perm = np.random.default_rng(3).permutation(7)         # the documented order: default_rng(seed).permutation
    a, b, c = split_rows(7, [2, 3, None], seed=3)
    _same(a, sorted(perm[:2]))
    _same(b, sorted(perm[2:5]))
    _same(c, sorted(perm[5:]))


def test_hand_worked_groups_never_straddle():
    groups = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2, 3])
    for seed in range(20):
        q, a = split_rows(10, [2, None], seed=seed, groups=groups)
        assert set(groups[q]).isdisjoint(groups[a])
        assert len(q) == 2 and len(set(q) | set(a)) == len(q) + len(a)
        # the queries are the first two rows of the drawn order: one group, or a boundary group trimmed
        rest = set(range(10)) - set(q) - set(a)
        assert all(groups[r] in set(groups[q]) for r in rest)


# ------------------------------------------------------------------------------------------------
# the wrappers reproduce the old rules row for row
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["none", "pairs", "ints", "strings"])
def test_anchors_queries_match_the_old_rule(kind):
    rng = np.random.default_rng(0)
    for n, seed in itertools.product([6, 13, 40, 101], [0, 1, 7, 12345]):
        groups = _groups(kind, n, rng)
        for n_queries, n_anchors in [(2, 3), (n // 5, n // 2), (n // 3, n - n // 3), (0, n // 2), (n // 2, 0)]:
            try:
                ref = naive_anchors_queries(n, n_anchors, n_queries, seed, groups)
            except DataError:
                with pytest.raises(DataError):
                    split_anchors_queries(n, n_anchors, n_queries, seed, groups)
                continue
            got = split_anchors_queries(n, n_anchors, n_queries, seed, groups)
            _same(got[0], ref[0])
            _same(got[1], ref[1])
            assert got[0].dtype == np.int64 and got[1].dtype == np.int64


@pytest.mark.parametrize("kind", ["none", "pairs", "ints", "strings"])
def test_train_test_matches_the_old_rule(kind):
    rng = np.random.default_rng(1)
    for n, seed, size in itertools.product([5, 12, 57, 200], [0, 3, 99], [0.2, 0.5, 7, 0.9]):
        groups = _groups(kind, n, rng)
        train_ref, test_ref = naive_train_test(n, size, seed, groups)
        if groups is not None and len(train_ref) < 3:
            with pytest.raises(DataError, match="too few training items"):
                split_train_test(n, size, seed, groups)
            continue
        train, test = split_train_test(n, size, seed, groups)
        _same(train, train_ref)
        _same(test, test_ref)
        assert train.dtype == np.int64


def test_chains_match_the_old_rule():
    for n, seed, tf, vf in itertools.product([3, 4, 10, 61], [0, 5, 2024], [0.2, 0.5, 0.0], [0.1, 0.3, 0.0]):
        ref = naive_chains(n, tf, vf, seed)
        got = split_chains(n, tf, vf, seed)
        assert set(got) == {"train", "val", "test"}
        for part in ref:
            _same(got[part], ref[part])
    with pytest.raises(DataError, match="cannot be split"):
        split_chains(2)


def test_protocol_sizes_match_the_old_rule():
    for n, n_anchors, n_queries, grouped in itertools.product([9, 10, 37, 1000, 2016], [None, 5, 300, 30000],
                                                              [2, 40, 500], [False, True]):
        groups = np.arange(n) if grouped else None
        ref, ref_notes = naive_protocol_sizes(n, n_anchors, n_queries, groups)
        notes: list[str] = []
        if ref == "error":
            with pytest.raises(DataError, match="too few to split"):
                resolve_sizes(n, n_anchors, n_queries, notes, groups=groups)
            continue
        assert resolve_sizes(n, n_anchors, n_queries, notes, groups=groups) == ref
        assert notes == ref_notes


def test_pointset_sizes_match_the_old_rule():
    for n, n_anchors, n_queries in itertools.product([9, 10, 37, 1000, 2016, 2017], [None, 5, 300, 30000],
                                                     [2, 40, 500, 1008, 1009]):
        ref, ref_notes = naive_pointset_sizes(n, n_anchors, n_queries)
        notes: list[str] = []
        if ref == "error":
            with pytest.raises(DataError, match="the comparison needs"):
                resolve_sizes(n, n_anchors, n_queries, notes, fit_rest=False, what="the comparison")
            continue
        assert resolve_sizes(n, n_anchors, n_queries, notes, fit_rest=False, what="the comparison") == ref
        assert notes == ref_notes


def test_the_protocol_all_anchors_split_is_every_row_outside_the_query_groups():
    """Paper A with ``n_anchors=None``: queries as split_anchors_queries draws them, anchors = all the rest."""
    from core.evaluation.alignment import _split

    rng = np.random.default_rng(4)
    for kind, seed in itertools.product(["none", "pairs", "ints"], [0, 1, 2]):
        groups = _groups(kind, 50, rng)
        anchors, queries = _split(50, None, 10, seed, groups)
        _, q_ref = naive_anchors_queries(50, 0, 10, seed, groups)
        _same(queries, q_ref)
        outside = [r for r in range(50) if r not in set(q_ref)
                   and (groups is None or groups[r] not in set(groups[q_ref].tolist()))]
        _same(anchors, outside)


# ------------------------------------------------------------------------------------------------
# errors and the old import paths
# ------------------------------------------------------------------------------------------------
def test_errors_are_specific():
    with pytest.raises(DataError, match="3 anchors \\+ 5 queries need 8 rows, but there are only 6"):
        split_anchors_queries(6, 3, 5)
    with pytest.raises(DataError, match="only the last block"):
        split_rows(6, [None, 2])
    with pytest.raises(DataError, match="must be >= 0"):
        split_rows(6, [-1, 2])
    with pytest.raises(DataError, match="one id per row"):
        split_rows(6, [2, 2], groups=np.arange(5))
    with pytest.raises(DataError, match="rows remain outside the groups of the queries"):
        split_anchors_queries(6, 5, 2, groups=np.array([0, 0, 0, 1, 1, 1]))
    with pytest.raises(DataError, match="at least 5 items"):
        split_train_test(4)


def test_old_homes_are_the_same_functions():
    from core import evaluate, hierarchy, universe_eval
    from core.evaluation import universe

    assert evaluate.split_anchors_queries is splits.split_anchors_queries
    assert universe_eval.split_train_test is universe.split_train_test is splits.split_train_test
    assert hierarchy.split_chains is splits.split_chains
