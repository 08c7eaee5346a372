"""Judging an alignment from a score matrix (docs/METHODS.md section 3).

Every function takes a ``Q x Q`` score matrix ``S``: row ``i`` is source query ``i`` (the X side), column ``j``
is target query ``j`` (the Y side), and the true pair of row ``i`` is column ``i`` (the diagonal). Higher scores
mean more similar.

Groups
------
Items may carry a group id (``groups``, one per query, e.g. five captions of one image share a group): every
member of the true item's group is a true partner.

* Retrieval: the rank of a query is the rank of its *best-ranked* true partner, counting only non-partners
  that score at least as high: ``rank = 1 + #{non-partners j : S[i, j] >= max_partners S[i, :]}``. Ties count
  against the true item. Without groups this is ``1 + #{j != i : S[i, j] >= S[i, i]}``.
* Matching: the one-to-one assignment is still solved over all ``Q`` columns (linear_sum_assignment,
  maximising the total score); a row is a hit when its assigned column belongs to its group.

Chance levels (the expected value under a uniformly random ranking / assignment) come beside every number:
``1/Q`` for matching and top-1, ``k/Q`` for top-k, ``H_Q / Q`` for MRR; with groups, a row whose group has ``g``
members among the queries has chance ``g/Q`` (matching, top-1), ``1 - C(Q-g, k) / C(Q, k)`` (top-k) and
``sum_r C(Q-r, g-1) / C(Q, g) / r`` (MRR), averaged over rows.
"""
from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import gammaln

from dataclasses import dataclass
from typing import Any

from ..errors import DataError
from ..results import ABSENT, Result

__all__ = [
    "matching_accuracy", "true_ranks", "cosine_true_ranks", "topk_from_ranks", "mrr_from_ranks", "retrieval_topk",
    "mean_reciprocal_rank", "chance_levels",
    "evaluate_scores", "DEFAULT_KS", "std_over_seeds", "MetricSummary", "summarize_over_seeds",
    "ValueWithChance", "ScoreEvaluation"]

DEFAULT_KS = (1, 5, 10)


def _check_scores(S) -> np.ndarray:
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2 or S.shape[0] != S.shape[1]:
        raise DataError(f"a score matrix must be square (Q x Q, true pairs on the diagonal), got shape {S.shape}")
    if S.shape[0] < 1:
        raise DataError("the score matrix is empty")
    if not np.isfinite(S).all():
        row = int(np.flatnonzero(~np.isfinite(S).all(axis=1))[0])
        raise DataError("the score matrix contains NaN or infinite values", row=row,
                        hint="check the embeddings for zero or missing vectors")
    return S


def _check_groups(groups, Q: int) -> np.ndarray | None:
    if groups is None:
        return None
    g = np.asarray(groups)
    if g.shape != (Q,):
        raise DataError(f"groups must hold one id per query ({Q}), got shape {g.shape}")
    _, codes = np.unique(g, return_inverse=True)
    return codes.reshape(-1)


def _partners(codes: np.ndarray | None, Q: int) -> np.ndarray:
    """Q x Q boolean: column j is a true partner of row i."""
    if codes is None:
        return np.eye(Q, dtype=bool)
    return codes[:, None] == codes[None, :]


def _group_sizes(codes: np.ndarray | None, Q: int) -> np.ndarray:
    if codes is None:
        return np.ones(Q, dtype=np.int64)
    return np.bincount(codes)[codes]


# ------------------------------------------------------------------------------------------------
# matching
# ------------------------------------------------------------------------------------------------
def matching_accuracy(S, groups=None, seed: int = 0) -> float:
    """Fraction of rows that a maximum-score one-to-one assignment gives their true column.

    The columns are shuffled with ``seed`` first (so ties are not resolved in favour of the diagonal), then
    :func:`scipy.optimize.linear_sum_assignment` (``maximize=True``) is solved. With ``groups``, a row is a hit
    when its assigned column is any member of its group.

    Parameters
    ----------
    S : Q x Q scores (row = source query, column = target query, true pairs on the diagonal).
    groups : optional group id per query.
    seed : seed of the column shuffle.

    Returns
    -------
    float in [0, 1]; chance is ``1/Q`` (``mean g/Q`` with groups, see :func:`chance_levels`).
    """
    S = _check_scores(S)
    Q = S.shape[0]
    codes = _check_groups(groups, Q)
    perm = np.random.default_rng(seed).permutation(Q)
    rows, cols = linear_sum_assignment(S[:, perm], maximize=True)
    assigned = perm[cols]
    if codes is None:
        hits = assigned == rows
    else:
        hits = codes[assigned] == codes[rows]
    return float(hits.mean())


# ------------------------------------------------------------------------------------------------
# retrieval
# ------------------------------------------------------------------------------------------------
def true_ranks(S, groups=None, axis: int = 1) -> np.ndarray:
    """Rank (1 = best) of each query's true partner, ties counting against it.

    ``axis=1``: every row (X query) ranks the columns (X -> Y retrieval); ``axis=0``: every column (Y query)
    ranks the rows (Y -> X). ``rank = 1 + #{non-partners scoring >= the best true partner}``.
    Returns an int64 array of length Q.
    """
    S = _check_scores(S)
    if axis == 0:
        S = S.T
    elif axis != 1:
        raise ValueError(f"axis must be 0 or 1, got {axis}")
    Q = S.shape[0]
    codes = _check_groups(groups, Q)
    if codes is None:
        # one partner, on the diagonal: rank = #{j : S_ij >= S_ii} (the diagonal counts itself once, the "1 +")
        return (S >= np.diagonal(S)[:, None]).sum(axis=1).astype(np.int64)
    partners = _partners(codes, Q)
    best = np.where(partners, S, -np.inf).max(axis=1)
    ahead = (S >= best[:, None]) & ~partners
    return 1 + ahead.sum(axis=1).astype(np.int64)


def cosine_true_ranks(X, Y, groups=None, *, chunk_rows: int = 512, device=None) -> tuple[np.ndarray, np.ndarray]:
    """:func:`true_ranks` of ``S = cosine_similarity_matrix(X, Y)`` in both directions (``axis=1`` and ``axis=0``),
    exactly, at the cost of a float32 product.

    ``S`` is screened in float32, row blocks at a time (the float64 ``Q x Q`` matrix is never held): for unit
    rows in ``d`` dimensions a float32 dot product is within ``delta = 2 (d + 3) 2^-24`` of the float64 one
    (the rounding of the inputs plus the standard bound ``gamma_d`` of a summation, doubled for safety), so a
    score further than ``delta`` from a query's threshold (its true partner's score) is on the same side of it
    in both precisions. The few scores within ``delta`` (about ``2 delta Q / spread`` per query), and the
    thresholds themselves, are computed as float64 dot products of the float64-normalised rows, and compared
    exactly; ties count against the true item as in :func:`true_ranks`. With groups whose partner pairs
    exceed ``64 Q`` this falls back to the float64 matrix. Where the CPU multiplies bfloat16 fast (checked
    once per process; ``PLATOSCOPE_BF16_SCREEN=0`` turns it off), each block of rows is first screened in
    bfloat16 with the band its rounding allows (about 0.024 for unit rows: the inputs' rounding, float32
    accumulation and the rounded result, doubled); a block with more than 8 scores per row in that band is
    screened in float32 as above. Either way the ranks are exact.

    Returns ``(ranks_x_to_y, ranks_y_to_x)``, int64 arrays of length Q.
    """
    import torch

    from ..align import _row_normalize, cosine_similarity_matrix
    from ..device import pick_float64_device, to_numpy

    A64 = torch.as_tensor(np.asarray(X), dtype=torch.float64)
    B64 = torch.as_tensor(np.asarray(Y), dtype=torch.float64)
    if A64.ndim != 2 or A64.shape != B64.shape:
        raise DataError(f"cosine ranks need two Q x d arrays of one shape, got {tuple(A64.shape)} and "
                        f"{tuple(B64.shape)}")
    Q, d = A64.shape
    codes = _check_groups(groups, Q)
    if codes is not None and int((np.bincount(codes) ** 2).sum()) > 64 * Q:
        S = cosine_similarity_matrix(X, Y)
        return true_ranks(S, groups, 1), true_ranks(S, groups, 0)
    dev = pick_float64_device(device)
    if not (np.isfinite(np.asarray(X)).all() and np.isfinite(np.asarray(Y)).all()):   # (numpy: one fast pass)
        raise DataError("the embeddings contain NaN or infinite values", hint="check for missing vectors")
    A64, B64 = _row_normalize(A64.to(dev)), _row_normalize(B64.to(dev))
    A32, B32 = A64.float(), B64.float()
    delta = 2.0 * (d + 3) * 2.0 ** -24

    def exact(i, j):                                       # float64 cosine of row pairs (i, j)
        return (A64[i] * B64[j]).sum(dim=1)

    # thresholds: the true partner's score (the best one with groups), exactly
    if codes is None:
        row_t = col_t = torch.linalg.vecdot(A64, B64)                    # exact(i, i) without the gathers
    else:
        order = np.argsort(codes, kind="stable")
        starts = np.r_[0, np.cumsum(np.bincount(codes))]
        pi, pj = [], []
        for g in range(len(starts) - 1):
            members = order[starts[g]:starts[g + 1]]
            pi.append(np.repeat(members, len(members)))
            pj.append(np.tile(members, len(members)))
        pi_t = torch.as_tensor(np.concatenate(pi), device=dev)
        pj_t = torch.as_tensor(np.concatenate(pj), device=dev)
        vals = exact(pi_t, pj_t)
        neg = torch.full((Q,), -torch.inf, dtype=torch.float64, device=dev)
        row_t = neg.scatter_reduce(0, pi_t, vals, reduce="amax")        # best partner of X query i
        col_t = neg.clone().scatter_reduce(0, pj_t, vals, reduce="amax")  # best partner of Y query j
    # float32 bounds of each threshold's band: t - delta and t + delta, widened by the float32 rounding
    # (|t| <= 1) so that "S32 >= hi" is certain and "S32 < lo" is certain
    pad = delta + 2.0 ** -23
    row_thr, col_thr = to_numpy(row_t), to_numpy(col_t)
    bounds = {axis: (to_numpy((t - pad).float()), to_numpy((t + pad).float())) for axis, t in ((1, row_t), (0, col_t))}
    # a first screen in bfloat16 where the CPU multiplies it fast (_bf16_screen_ok): rounding the unit rows to
    # bfloat16 moves a dot product by at most (2u + u^2) |a| |b| (u = 2^-8), the float32 accumulation by
    # d 2^-24 and the bfloat16 result by u |s|; twice that is the band. Chunks with more than a few scores in
    # that wider band go through the float32 screen instead.
    use16 = dev.type == "cpu" and _bf16_screen_ok()
    if use16:
        pad16 = _bf16_band(d)
        bounds16 = {axis: (to_numpy((t - pad16).float()), to_numpy((t + pad16).float()))
                    for axis, t in ((1, row_t), (0, col_t))}
        A16, B16 = A64.to(torch.bfloat16), B64.to(torch.bfloat16)
    ahead = {1: np.zeros(Q, dtype=np.int64), 0: np.zeros(Q, dtype=np.int64)}
    Qp = -(-Q // 8) * 8                          # mask rows padded to whole 8-byte words (the pad stays False)
    masks = {(axis, kind): np.zeros((min(Q, int(chunk_rows)), Qp), dtype=bool)
             for axis in (1, 0) for kind in ("sure", "band")}

    def screen(S, bnds, start, stop, budget=None):
        """Counts (per axis: the queries' sure scores), the band masks of both axes and the entries in either
        band (rows, cols) of one block of rows; None when a band holds more than ``budget`` scores. Masks are
        reused buffers, counted as bytes and scanned for the band by 8-byte words (numpy's per-element
        ``count_nonzero(axis=...)`` and ``nonzero`` cost several times the comparisons)."""
        B = stop - start
        not_partner = None if codes is None else codes[start:stop, None] != codes[None, :]
        diag = np.arange(B)                                                 # (start + i, start + i): true pairs
        counts, bands = {}, {}
        for axis in (1, 0):
            lo, hi = bnds[axis]
            lo = lo[start:stop, None] if axis == 1 else lo[None, :]
            hi = hi[start:stop, None] if axis == 1 else hi[None, :]
            sure_p, band_p = masks[axis, "sure"][:B], masks[axis, "band"][:B]
            sure, band = sure_p[:, :Q], band_p[:, :Q]
            np.greater_equal(S, hi, out=sure)
            np.greater_equal(S, lo, out=band)
            band ^= sure                                                    # lo <= S < hi (hi > lo)
            if not_partner is not None:                                     # partners never count
                sure &= not_partner
                band &= not_partner
            else:
                # the true item's own score is its threshold: it counts (S_ii >= S_ii), without recomputing it
                sure[diag, diag + start] = True
                band[diag, diag + start] = False
            if budget is not None and np.count_nonzero(band_p) > budget:
                return None
            bytes_ = sure_p.view(np.uint8)
            counts[axis] = (bytes_.sum(axis=1, dtype=np.int64) if axis == 1 else
                            bytes_[:, :Q].sum(axis=0, dtype=np.uint16 if B < 2 ** 16 else np.int64))
            bands[axis] = band_p
        either = bands[1] | bands[0]
        words = either.view(np.uint64)                                      # B x Qp / 8
        wr, wc = np.nonzero(words)
        if len(wr) == 0:
            return counts, bands, None
        k, b = np.nonzero(either.view(np.uint8).reshape(B, -1, 8)[wr, wc])
        return counts, bands, (wr[k], wc[k] * 8 + b)

    for start in range(0, Q, int(chunk_rows)):
        stop = min(Q, start + int(chunk_rows))
        res = None
        if use16:                                                           # rows start..stop, all columns
            res = screen(to_numpy((A16[start:stop] @ B16.T).float()), bounds16, start, stop,
                         budget=8 * (stop - start))
        _SCREENS["bfloat16" if res is not None else "float32"] += 1
        if res is None:
            res = screen(to_numpy(A32[start:stop] @ B32.T), bounds, start, stop)
        counts, bands, entries = res
        ahead[1][start:stop] += counts[1]
        ahead[0] += counts[0]
        if entries is None:
            continue
        r, c = entries                                                      # the scores in a band: row, column
        rows = r + start
        ex = to_numpy(exact(torch.as_tensor(rows, device=dev), torch.as_tensor(c, device=dev)))  # once, both axes
        for axis, who, thr in ((1, rows, row_thr), (0, c, col_thr)):        # whose threshold (the query)
            hit = bands[axis][r, c] & (ex >= thr[who])
            np.add.at(ahead[axis], who[hit], 1)
    if codes is None:            # the query's own partner is among those counted (S_ii >= S_ii): rank = count
        return ahead[1], ahead[0]
    return 1 + ahead[1], 1 + ahead[0]


def _bf16_band(d: int) -> float:
    """The half-width of the band around a threshold that a bfloat16 score of two unit rows of width ``d`` can
    fall in: the rows' rounding ``(2u + u^2)(1 + u)`` (u = 2^-8), the float32 accumulation ``(d + 2) 2^-24`` and
    the rounded result ``u``, doubled."""
    u = 2.0 ** -8
    return 2.0 * ((2 * u + u * u) * (1 + u) + (d + 2) * 2.0 ** -24 + u)


_BF16_OK: list = []
_SCREENS = {"bfloat16": 0, "float32": 0}       # blocks screened each way (for tests and benchmarks)


def _bf16_screen_ok() -> bool:
    """Whether bfloat16 products are worth a first screen here, and behave as the bound assumes: checked once
    per process on random unit rows (a product at least twice as fast as float32's, and its error against
    float64 within a quarter of the band). Where not, the screen is float32 only."""
    if not _BF16_OK:
        import os
        import time

        import torch

        ok = os.environ.get("PLATOSCOPE_BF16_SCREEN", "1") != "0"
        if ok:
            try:
                g = torch.Generator().manual_seed(0)
                A = torch.nn.functional.normalize(torch.randn(512, 384, dtype=torch.float64, generator=g), dim=1)
                B = torch.nn.functional.normalize(torch.randn(1024, 384, dtype=torch.float64, generator=g), dim=1)
                A16, B16, A32, B32 = A.bfloat16(), B.bfloat16(), A.float(), B.float()
                err = float(((A16 @ B16.T).double() - A @ B.T).abs().max())
                pad16 = _bf16_band(384)

                def best(f):
                    ts = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        f()
                        ts.append(time.perf_counter() - t0)
                    return min(ts)

                ok = err <= pad16 / 4 and 2 * best(lambda: A16 @ B16.T) < best(lambda: A32 @ B32.T)
            except Exception:  # noqa: BLE001 - no bfloat16 here: float32 only
                ok = False
        _BF16_OK.append(bool(ok))
    return _BF16_OK[0]


def topk_from_ranks(ranks, ks=DEFAULT_KS) -> dict[int, float]:
    """Fraction of queries whose true partner's rank (:func:`true_ranks`) is <= k, for each ``k``."""
    ranks = np.asarray(ranks)
    return {int(k): float((ranks <= k).mean()) for k in ks}


def mrr_from_ranks(ranks) -> float:
    """Mean of ``1 / rank`` over queries (ranks from :func:`true_ranks`)."""
    return float((1.0 / np.asarray(ranks, dtype=np.float64)).mean())


def retrieval_topk(S, ks=DEFAULT_KS, groups=None, axis: int = 1) -> dict[int, float]:
    """Top-k retrieval accuracy for each ``k`` in ``ks``: fraction of queries whose true partner ranks <= k.

    ``axis=1`` is X -> Y (rows rank columns), ``axis=0`` is Y -> X. Ties count against the true item; with
    ``groups`` a hit is any member of the true group. Returns ``{k: accuracy}``.
    """
    return topk_from_ranks(true_ranks(S, groups, axis), ks)


def mean_reciprocal_rank(S, groups=None, axis: int = 1) -> float:
    """Mean of ``1 / rank`` of the true partner (see :func:`true_ranks`) over queries."""
    return mrr_from_ranks(true_ranks(S, groups, axis))


def _log_comb(n, k):
    n = np.asarray(n, dtype=np.float64)
    k = np.asarray(k, dtype=np.float64)
    return gammaln(n + 1) - gammaln(k + 1) - gammaln(n - k + 1)


def chance_levels(Q: int, groups=None, ks=DEFAULT_KS) -> dict:
    """Expected metrics under random scores, for ``Q`` queries (and their ``groups``).

    Returns ``{"matching_accuracy", "top{k}" for k in ks, "mrr"}``. Without groups: ``1/Q``, ``min(k, Q)/Q``,
    ``H_Q / Q``. With groups, per row with ``g`` partners: ``g/Q``, ``1 - C(Q-g, k)/C(Q, k)``,
    ``sum_{r=1}^{Q-g+1} C(Q-r, g-1)/C(Q, g) / r``; averaged over rows.
    """
    Q = int(Q)
    codes = _check_groups(groups, Q)
    sizes = _group_sizes(codes, Q)
    out = {"matching_accuracy": float((sizes / Q).mean())}
    for k in ks:
        k = int(k)
        if k >= Q:
            out[f"top{k}"] = 1.0
            continue
        miss = np.where(Q - sizes >= k, np.exp(_log_comb(Q - sizes, k) - _log_comb(Q, k)), 0.0)
        out[f"top{k}"] = float((1.0 - miss).mean())
    mrr = []
    for g in np.unique(sizes):
        r = np.arange(1, Q - g + 2)
        p = np.exp(_log_comb(Q - r, g - 1) - _log_comb(Q, g))
        mrr.append((float((p / r).sum()), int((sizes == g).sum())))
    out["mrr"] = float(sum(v * c for v, c in mrr) / Q)
    return out


# ------------------------------------------------------------------------------------------------
# all metrics
# ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class ValueWithChance(Result):
    """One metric of one score matrix and its chance level (:func:`chance_levels`)."""

    value: float
    chance: float


@dataclass(eq=False)
class ScoreEvaluation(Result):
    """What :func:`evaluate_scores` returns: ``n_queries`` and a :class:`ValueWithChance` per metric, in the order
    ``matching_accuracy``, ``top{k}_x_to_y`` (one key per k, not fields), ``mrr_x_to_y``, ``top{k}_y_to_x``,
    ``mrr_y_to_x``, ``mrr`` (the mean of the two directions)."""

    n_queries: int
    matching_accuracy: ValueWithChance
    mrr_x_to_y: Any = ABSENT
    mrr_y_to_x: Any = ABSENT
    mrr: Any = ABSENT


def evaluate_scores(S, groups=None, ks=DEFAULT_KS, seed: int = 0) -> ScoreEvaluation:
    """Every metric of METHODS.md section 3 from one score matrix, each with its chance level.

    Returns a :class:`ScoreEvaluation` (a dict)::

        {"n_queries": Q,
         "matching_accuracy": {"value": .., "chance": ..},
         "top1_x_to_y": {...}, "top5_x_to_y": ..., "top10_x_to_y": ..., "top1_y_to_x": ..., ...,
         "mrr_x_to_y": {...}, "mrr_y_to_x": {...},
         "mrr": {...}}          # the mean of the two directions

    ``x_to_y`` = rows (X queries) rank the columns; ``y_to_x`` = columns rank the rows.
    """
    S = _check_scores(S)
    Q = S.shape[0]
    chance = chance_levels(Q, groups, ks)
    out = ScoreEvaluation(Q, ValueWithChance(matching_accuracy(S, groups, seed), chance["matching_accuracy"]))
    mrr = {}
    for axis, direction in ((1, "x_to_y"), (0, "y_to_x")):
        ranks = true_ranks(S, groups, axis)
        for k in ks:
            out[f"top{int(k)}_{direction}"] = ValueWithChance(float((ranks <= k).mean()), chance[f"top{int(k)}"])
        mrr[direction] = float((1.0 / ranks).mean())
        out[f"mrr_{direction}"] = ValueWithChance(mrr[direction], chance["mrr"])
    out["mrr"] = ValueWithChance((mrr["x_to_y"] + mrr["y_to_x"]) / 2, chance["mrr"])
    return out


# ------------------------------------------------------------------------------------------------
# spread over seeds
# ------------------------------------------------------------------------------------------------
def std_over_seeds(values) -> float:
    """The spread reported beside every mean over seeds: the sample standard deviation (ddof=1), 0 for one seed.

    The one ddof of the project (protocols, point sets, universes, clustering)."""
    v = np.asarray(values, dtype=np.float64)
    return float(v.std(ddof=1)) if len(v) > 1 else 0.0


@dataclass(eq=False)
class MetricSummary(Result):
    """One metric over seeds: ``mean``, ``std`` (:func:`std_over_seeds`), ``chance`` (mean over seeds) and the
    ``per_seed`` values, as every protocol reports it."""

    mean: float
    std: float
    chance: float
    per_seed: list


def summarize_over_seeds(values, chances) -> MetricSummary:
    """:class:`MetricSummary` of one metric's per-seed ``values`` and chance levels (a number or one per seed)."""
    return MetricSummary(float(np.mean(values)), std_over_seeds(values), float(np.mean(chances)),
                         [float(v) for v in values])
