"""Many spaces at once: :func:`similarity_matrix` (M x M over one dataset's spaces) and
:func:`layerwise_similarity` (A x B between two lists of spaces, e.g. the layers of two encoders)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import torch

from ..errors import DataError
from ..moments import StreamingMoments
from ..numerics import gram
from ..results import ABSENT, Result
from ._common import GRAM_MAX_N, _F64, _as_array, _auto_chunk, _chunk, _device, _undefined
from .cka import _centred_gram, _frob2
from .measures import Measure, _with_seed, resolve_measure
from .nulls import permutation_test
from .preprocess import _preprocess


class _LinearPrep:
    """Per-space parts of linear CKA that a matrix of pairs can share: shift, column sums, ||Cxx||_F,
    and, for small n, the centred Gram matrix divided by its norm."""

    def __init__(self, X: np.ndarray, name: str, chunk_rows, device, use_gram: bool):
        self.X = X
        self.name = name
        n, p = X.shape
        self.gram = None
        if use_gram:
            K = _centred_gram(X, device, name)
            nrm = float(K.norm())
            self.norm = nrm
            self.gram = K / nrm if nrm > 0 else None
            return
        m = StreamingMoments(device, _auto_chunk(chunk_rows, p), load=_chunk).update(X, names=(name, None))
        self.shift, self.s = m.shift_x, m.sx
        self.norm = math.sqrt(_frob2(m.cxx()))


def _linear_pair(a: _LinearPrep, b: _LinearPrep, chunk_rows, device) -> float | None:
    if not (a.norm > 0 and b.norm > 0):
        return _undefined("linear_cka", "a space has zero variance")
    if a is b:
        return 1.0
    if a.gram is not None and b.gram is not None:
        return float((a.gram * b.gram).sum())
    if a.gram is not None or b.gram is not None:
        raise AssertionError("mixed Gram / feature preparation")  # pragma: no cover
    n, p = a.X.shape
    q = b.X.shape[1]
    step = _auto_chunk(chunk_rows, p + q)
    xy = torch.zeros((p, q), dtype=_F64, device=device)
    for s in range(0, n, step):
        e = min(n, s + step)
        xy += (_chunk(a.X, s, e, device, a.name) - a.shift).T @ (_chunk(b.X, s, e, device, b.name) - b.shift)
    xy -= torch.outer(a.s, b.s) / n
    return _frob2(xy) / (a.norm * b.norm)


#: the one-pass linear CKA of a matrix (:func:`_linear_cka_one_pass`) holds the covariance of every space at once:
#: up to this many columns in all (a 4096 x 4096 float64 matrix is 128 MB); wider sets go pair by pair
ONE_PASS_MAX_WIDTH = 4096


def _spaces_of(arrays_a, arrays_b, names_a, names_b, pairs) -> list[tuple]:
    """The ``(array, name)`` of every space the pairs use, each once, in order of first use."""
    distinct: dict = {}
    for i, j in pairs:
        distinct.setdefault(id(arrays_a[i]), (arrays_a[i], names_a[i]))
        distinct.setdefault(id(arrays_b[j]), (arrays_b[j], names_b[j]))
    return list(distinct.values())


def _linear_cka_one_pass(arrays_a, arrays_b, names_a, names_b, pairs, chunk_rows, device, progress) -> dict:
    """Linear CKA of every requested pair from one pass over the rows.

    The distinct spaces side by side, ``Z = [X_1 - s_1, ..., X_K - s_K]`` (each shifted by its first rows' mean,
    for accuracy), row piece by row piece: ``G = sum Z^T Z`` through :func:`core.numerics.gram` (syrk on the
    CPU) and the column sums ``c``; then ``C = G - c c^T / n`` holds every centred covariance block
    ``C_jk = X_j^T H X_k``, and ``CKA(j, k) = ||C_jk||_F^2 / (||C_jj||_F ||C_kk||_F)``. Each space is read and
    converted once, instead of once per pair, and the products are one symmetric rank-k update (the flops of
    the pairwise products, in one BLAS call). Values ``{(i, j): float or None}``."""
    spaces = _spaces_of(arrays_a, arrays_b, names_a, names_b, pairs)
    starts, p = {}, 0
    for x, _ in spaces:
        starts[id(x)] = p
        p += int(x.shape[1])
    n = int(spaces[0][0].shape[0])
    step = _auto_chunk(chunk_rows, p)
    G = torch.zeros((p, p), dtype=_F64, device=device)
    colsum = torch.zeros(p, dtype=_F64, device=device)
    shifts: list = [None] * len(spaces)
    piece = None
    rows = range(0, n, step)
    for s in (progress(rows, total=len(rows), desc="rows") if progress else rows):
        e = min(n, s + step)
        if piece is None or piece.shape[0] != e - s:
            piece = torch.empty((e - s, p), dtype=_F64, device=device)
        for k, (x, nm) in enumerate(spaces):
            block = _chunk(x, s, e, device, nm)
            if shifts[k] is None:
                shifts[k] = block.mean(0)
            a = starts[id(x)]
            torch.sub(block, shifts[k], out=piece[:, a:a + block.shape[1]])
        G += gram(piece)
        colsum += piece.sum(0)
    G -= torch.outer(colsum, colsum) / n

    def block_of(x, y):
        a, b = starts[id(x)], starts[id(y)]
        return G[a:a + x.shape[1], b:b + y.shape[1]]

    norms = {id(x): math.sqrt(_frob2(block_of(x, x))) for x, _ in spaces}
    values = {}
    for i, j in pairs:
        x, y = arrays_a[i], arrays_b[j]
        if not (norms[id(x)] > 0 and norms[id(y)] > 0):
            values[(i, j)] = _undefined("linear_cka", "a space has zero variance")
        elif x is y:
            values[(i, j)] = 1.0
        else:
            values[(i, j)] = _frob2(block_of(x, y)) / (norms[id(x)] * norms[id(y)])
    return values


def _pair_values(arrays_a, arrays_b, names_a, names_b, m: Measure, pairs, progress, n_permutations, seed, kw,
                 on_value=None):
    """values[(i, j)] and p-values for the requested index pairs, in the order given; ``on_value(values, pvals)``
    is called after each pair. Linear CKA over rows beyond the Gram-matrix size makes one pass over the rows for
    every pair (:func:`_linear_cka_one_pass`) when the spaces are at most ``ONE_PASS_MAX_WIDTH`` columns in all,
    else prepares each space when its first pair needs it."""
    values: dict = {}
    pvals: dict = {}
    preps_a = preps_b = None
    if m.name == "linear_cka" and n_permutations == 0:
        n = arrays_a[0].shape[0]
        widths = [x.shape[1] for x in list(arrays_a) + list(arrays_b)]
        use_gram = kw.get("method", "auto") == "gram" or (
            kw.get("method", "auto") == "auto" and n <= min(GRAM_MAX_N, min(widths)))
        dev = _device(kw.get("device"))
        total = sum(int(x.shape[1]) for x, _ in _spaces_of(arrays_a, arrays_b, names_a, names_b, pairs))
        if not use_gram and total <= ONE_PASS_MAX_WIDTH and pairs:
            # first the two spaces of the first pair between different spaces (the cheapest, ``pairs`` being in
            # order of cost: a small pass, so that the first cells come quickly), then one pass for the rest;
            # a bad value raises the DataError of _chunk, which names the space and the row
            first = next(((i, j) for i, j in pairs if arrays_a[i] is not arrays_b[j]), None)
            stages = [pairs]
            if first is not None and on_value is not None:
                pair_ids = {id(arrays_a[first[0]]), id(arrays_b[first[1]])}
                early = [(i, j) for i, j in pairs if {id(arrays_a[i]), id(arrays_b[j])} <= pair_ids]
                rest = [ij for ij in pairs if ij not in early]
                if rest:
                    stages = [early, rest]
            for k, stage in enumerate(stages):
                one = _linear_cka_one_pass(arrays_a, arrays_b, names_a, names_b, stage, kw.get("chunk_rows"), dev,
                                           progress if k == len(stages) - 1 else None)
                for ij in stage:                   # in the order given, each cell reported as it is filled in
                    values[ij] = one[ij]
                    if on_value is not None:
                        on_value(values, pvals)
            return values, pvals
        cache: dict = {}

        def prep(x, name):
            key = id(x)
            if key not in cache:
                cache[key] = _LinearPrep(x, name, kw.get("chunk_rows"), dev, use_gram)
            return cache[key]
        preps_a = [lambda x=x, nm=nm: prep(x, nm) for x, nm in zip(arrays_a, names_a)]
        preps_b = [lambda x=x, nm=nm: prep(x, nm) for x, nm in zip(arrays_b, names_b)]
    it = progress(pairs, total=len(pairs), desc="pairs") if progress else pairs
    for i, j in it:
        try:
            if preps_a is not None:
                values[(i, j)] = _linear_pair(preps_a[i](), preps_b[j](), kw.get("chunk_rows"),
                                              _device(kw.get("device")))
            elif n_permutations > 0:
                res = permutation_test(arrays_a[i], arrays_b[j], m, n_permutations=n_permutations,
                                       **{"seed": seed, **kw})
                values[(i, j)] = res["value"]
                pvals[(i, j)] = res["p_value"]
            else:
                values[(i, j)] = m.func(arrays_a[i], arrays_b[j], **kw)
        except DataError as err:
            raise DataError(f"{names_a[i]} vs {names_b[j]}: {err.message}", file=err.file, array=err.array,
                            column=err.column, row=err.row, hint=err.hint) from None
        if on_value is not None:
            on_value(values, pvals)
    return values, pvals


def _cheap_first(pairs, widths_a, widths_b):
    """Pairs in order of cost (the wider space of the pair, then both widths): the first cells of a matrix that
    fills in are the quick ones. Every value is computed the same way in any order."""
    return sorted(pairs, key=lambda ij: (max(widths_a[ij[0]], widths_b[ij[1]]), widths_a[ij[0]] + widths_b[ij[1]],
                                         ij))


def _plain(v):
    return None if v is None else float(v)


@dataclass(eq=False)
class SimilarityMatrix(Result):
    """What :func:`similarity_matrix` returns (a :class:`core.results.Result`: also the dict it replaced)."""

    measure: str
    names: list
    values: list = field()      # the matrix (as an attribute it hides dict.values; read it as res["values"] too)
    symmetric: bool = field()
    higher_is_similar: bool
    n_items: int
    preprocess: str
    p_values: Any = ABSENT
    n_permutations: Any = ABSENT
    complete: Any = ABSENT      # False in the partial matrices passed to similarity_matrix(partial=...)


@dataclass(eq=False)
class LayerwiseSimilarity(Result):
    """What :func:`layerwise_similarity` returns."""

    measure: str
    names_a: list
    names_b: list
    values: list = field()      # the matrix (hides dict.values, as in SimilarityMatrix)
    higher_is_similar: bool = field()
    n_items: int = field()


def similarity_matrix(spaces: Mapping[str, np.ndarray], measure: str | Measure = "linear_cka", progress=None,
                      *, n_permutations: int = 0, seed: int = 0, partial=None, **kw) -> SimilarityMatrix:
    """The M x M matrix of a similarity over named spaces with paired rows (widths may differ).

    Symmetric measures are computed once per unordered pair; the diagonal is computed too (1 for CKA,
    0 for the Procrustes distance, unless a space is degenerate). Linear CKA over more rows than the Gram-matrix
    form takes makes one pass over the rows for every pair at once (the covariance of all the spaces side by
    side, each space read once; up to ``ONE_PASS_MAX_WIDTH`` columns in all), else shares each space's own
    block across its pairs.

    Parameters
    ----------
    spaces : mapping name -> n x d array (token-set spaces pooled by the caller, e.g. ``Space.vectors()``).
    measure : a name of :data:`MEASURES` (or an alias).
    progress : tqdm-like wrapper over the pairs.
    n_permutations : when > 0, also a permutation p-value per off-diagonal pair (seeded with ``seed``).
    seed : seeds the permutations and the sub-samples of the measures that take a ``seed``.
    partial : optional ``partial(result)`` called after each pair with the matrix so far (the same dict as the
        return value, ``None`` in the cells not computed yet, ``"complete": False``); pairs are computed cheapest
        first (narrowest spaces), so the first cells come quickly (linear CKA's one pass: a small pass over the
        two spaces of the cheapest pair first, then one pass for the other cells, reported in that order at its
        end). The values do not depend on the order.
    **kw : passed to the measure; ``preprocess="platonic"`` first applies :func:`platonic_preprocess` to every
        space (the paper A preset; recorded as ``"preprocess"`` in the result).

    Returns
    -------
    SimilarityMatrix
        ``measure`` (resolved name), ``names``, ``values`` (M x M nested list of float or None),
        ``symmetric``, ``higher_is_similar``, ``n_items``, and ``p_values`` (M x M, None on the diagonal)
        when ``n_permutations > 0``.
    """
    m = resolve_measure(measure)
    preprocess = kw.pop("preprocess", None)
    kw = _with_seed(m, kw, seed)
    names = list(spaces)
    if not names:
        raise DataError("no spaces to compare")
    arrays = [_preprocess(_as_array(spaces[k], k), preprocess) for k in names]
    n = arrays[0].shape[0]
    if n < 2:
        raise DataError(f"similarities need at least 2 items, got {n}", hint="use more items")
    for nm, x in zip(names, arrays):
        if x.shape[0] != n:
            raise DataError(f"space '{nm}' has {x.shape[0]} rows, '{names[0]}' has {n}", array=nm,
                            hint="every space must have one row per item")
    M = len(names)
    widths = [x.shape[1] for x in arrays]
    pairs = _cheap_first([(i, j) for i in range(M) for j in range(M) if not (m.symmetric and j < i)],
                         widths, widths)
    n_permutations = int(n_permutations)
    if n_permutations < 0:
        raise DataError(f"n_permutations must be >= 0, got {n_permutations}")

    def assemble(vals, pvals, complete=True):
        return _assemble(m, names, n, preprocess, n_permutations, vals, pvals, complete)

    if n_permutations:
        # the diagonal needs no null; every other pair gets its own permutation test
        vals, _ = _pair_values(arrays, arrays, names, names, m, [(i, i) for i in range(M)], None, 0, seed, kw)
        off = [(i, j) for i, j in pairs if i != j]
        report = None if partial is None else (lambda v, p: partial(assemble({**vals, **v}, p, False)))
        v2, pvals = _pair_values(arrays, arrays, names, names, m, off, progress, n_permutations, seed, kw, report)
        vals.update(v2)
    else:
        report = None if partial is None else (lambda v, p: partial(assemble(v, p, False)))
        vals, pvals = _pair_values(arrays, arrays, names, names, m, pairs, progress, 0, seed, kw, report)
    return assemble(vals, pvals)


def _assemble(m: Measure, names, n, preprocess, n_permutations, vals, pvals, complete) -> SimilarityMatrix:
    M = len(names)
    values = [[None] * M for _ in range(M)]
    pmat = [[None] * M for _ in range(M)]
    for (i, j), v in vals.items():
        values[i][j] = _plain(v)
        if m.symmetric:
            values[j][i] = _plain(v)
    for (i, j), v in pvals.items():
        pmat[i][j] = _plain(v)
        if m.symmetric:
            pmat[j][i] = _plain(v)
    out = SimilarityMatrix(m.name, names, values, m.symmetric, m.higher_is_similar, int(n), preprocess or "none")
    if n_permutations:
        out.p_values, out.n_permutations = pmat, n_permutations
    if not complete:
        out.complete = False
    return out


def layerwise_similarity(spaces_a: Sequence[np.ndarray], spaces_b: Sequence[np.ndarray],
                         measure: str | Measure = "linear_cka", names_a: Sequence[str] | None = None,
                         names_b: Sequence[str] | None = None, progress=None, **kw) -> LayerwiseSimilarity:
    """The A x B matrix of a similarity between two lists of spaces (e.g. every layer of encoder a
    against every layer of encoder b), rows paired by item; widths may differ.

    Returns
    -------
    LayerwiseSimilarity
        ``measure``, ``names_a``, ``names_b``, ``values`` (A x B nested list), ``higher_is_similar``,
        ``n_items``.
    """
    m = resolve_measure(measure)
    spaces_a, spaces_b = list(spaces_a), list(spaces_b)
    if not spaces_a or not spaces_b:
        raise DataError("layerwise_similarity needs at least one space on each side")
    names_a = list(names_a) if names_a is not None else [f"a{i}" for i in range(len(spaces_a))]
    names_b = list(names_b) if names_b is not None else [f"b{j}" for j in range(len(spaces_b))]
    if len(names_a) != len(spaces_a) or len(names_b) != len(spaces_b):
        raise DataError("names_a / names_b must have one name per space")
    preprocess = kw.pop("preprocess", None)
    arrays_a = [_preprocess(_as_array(x, nm), preprocess) for x, nm in zip(spaces_a, names_a)]
    arrays_b = [_preprocess(_as_array(x, nm), preprocess) for x, nm in zip(spaces_b, names_b)]
    n = arrays_a[0].shape[0]
    if n < 2:
        raise DataError(f"similarities need at least 2 items, got {n}", hint="use more items")
    for nm, x in zip(names_a + names_b, arrays_a + arrays_b):
        if x.shape[0] != n:
            raise DataError(f"space '{nm}' has {x.shape[0]} rows, expected {n}", array=nm,
                            hint="every space must have one row per item")
    pairs = [(i, j) for i in range(len(arrays_a)) for j in range(len(arrays_b))]
    vals, _ = _pair_values(arrays_a, arrays_b, names_a, names_b, m, pairs, progress, 0, 0, kw)
    values = [[_plain(vals[(i, j)]) for j in range(len(arrays_b))] for i in range(len(arrays_a))]
    return LayerwiseSimilarity(m.name, names_a, names_b, values, m.higher_is_similar, int(n))
