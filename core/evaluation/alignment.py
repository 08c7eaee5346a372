"""Paper A's evaluation protocol: seeded anchor/query splits, several alignment methods, mean +- std with chance.

* :func:`run_protocol` - every method at one ``k`` (default: k = 50, 30,000 anchors, 500 queries, 3 seeds).
* :func:`sweep_k` - the curve over the subspace dimension ``k``.
* :func:`sweep_anchors` - the curve over the number of anchors.

Each seed draws its own anchors and queries (:func:`core.evaluation.splits.split_anchors_queries`, group-aware). Within a
seed the anchors are read once (:class:`core.align.AnchorMoments`) and everything that can be shared is fitted
once: CCA (or PCA) at the largest ``k``, then the top-``k`` columns for smaller ``k`` - valid because the top-k
canonical directions of one decomposition are nested - while the affine map / local CKA after the projection is
refitted for every ``k``. An anchor sweep grows one seeded anchor order and updates the moments incrementally.

When the dataset is smaller than ``n_anchors + n_queries``, the protocol shrinks: ``n_queries = min(n_queries,
n // 5)`` and the anchors are all remaining rows; ``k`` is capped at ``min(p, q)``. Every change is listed in
the result's ``"adjustments"``.

Results are typed (:class:`ProtocolResult`, :class:`SweepResult`: dataclasses read like dicts, ``to_dict()`` for
JSON; each metric a :class:`core.evaluation.metrics.MetricSummary`). Metrics (see :func:`core.evaluation.metrics.evaluate_scores`): ``matching_accuracy``,
``top{1,5,10}_x_to_y``, ``top{1,5,10}_y_to_x``, ``mrr_x_to_y``, ``mrr_y_to_x`` and ``mrr`` (mean of both
directions). ``x_to_y``: each X query (the source, e.g. text in paper A's Text -> 3D) ranks the Y queries.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..align import (CCA, K_METHODS, METHODS, PAPER_A_METHODS, AnchorMoments, MomentAccumulator, PairedPCA,
                    PairwiseAligner, normalize_method)
from ..errors import DataError
from ..results import ABSENT, Result
from .metrics import DEFAULT_KS, evaluate_scores, std_over_seeds, summarize_over_seeds
from .splits import resolve_sizes, split_anchors_queries, split_rows

__all__ = ["run_protocol", "sweep_k", "sweep_anchors", "METRICS", "DEFAULT_SWEEP_KS", "DEFAULT_ANCHOR_COUNTS",
           "summarize_records", "ProtocolResult", "SweepResult"]

METRICS = ("matching_accuracy", "top1_x_to_y", "top5_x_to_y", "top10_x_to_y", "top1_y_to_x", "top5_y_to_x",
           "top10_y_to_x", "mrr_x_to_y", "mrr_y_to_x", "mrr")
DEFAULT_SWEEP_KS = (8, 16, 32, 50, 64, 128, 256, 384)
DEFAULT_ANCHOR_COUNTS = (1000, 2000, 5000, 10000, 20000, 30000)
SWEEP_K_METHODS = ("pca_affine", "cca_affine", "cca_local_cka")

_SCORE_KIND = {"none": "cosine", "affine": "cosine", "pca_affine": "cosine", "procrustes": "cosine",
               "cca_affine": "cosine", "local_cka": "local CKA", "cca_local_cka": "local CKA"}


@dataclass(eq=False)
class ProtocolResult(Result):
    """What :func:`run_protocol` returns: ``settings`` (what was used), ``adjustments`` (how the protocol shrank to
    fit the data), ``results`` ({method: {metric: MetricSummary}}), ``cca`` (CCA's correlations, when a CCA method
    ran) and ``seconds``."""

    settings: dict
    adjustments: list
    results: dict
    cca: Any = ABSENT
    seconds: Any = ABSENT


@dataclass(eq=False)
class SweepResult(Result):
    """What :func:`sweep_k` / :func:`sweep_anchors` return: ``records`` (one per method, swept value, seed and
    metric) and their ``summary`` over seeds (:func:`summarize_records`)."""

    settings: dict
    adjustments: list
    records: list
    summary: list
    seconds: float


def _no_progress(iterable, total=None, desc=""):
    return iterable


_std = std_over_seeds


# ------------------------------------------------------------------------------------------------
# shared set-up
# ------------------------------------------------------------------------------------------------
def _check_inputs(X, Y, groups):
    for name, arr in (("X", X), ("Y", Y)):
        shape = tuple(getattr(arr, "shape", ()))
        if len(shape) != 2:
            raise DataError(f"{name} must be a 2-D array (n x d), got shape {shape}", array=name,
                            hint="pool token sets to one vector per item first (Space.vectors())")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"X has {X.shape[0]} rows but Y has {Y.shape[0]}",
                        hint="row i of X and row i of Y must describe the same item")
    n = int(X.shape[0])
    if groups is not None:
        groups = np.asarray(groups)
        if groups.shape != (n,):
            raise DataError(f"groups must hold one id per item ({n}), got shape {groups.shape}")
    return n, int(X.shape[1]), int(Y.shape[1]), groups


def _prepare(X, Y, groups, methods, k):
    """The checks every fixed-k protocol starts with: ``(n, p, q, groups, methods, k, adjustments)``."""
    n, p, q, groups = _check_inputs(X, Y, groups)
    methods = _check_methods(methods, p, q)
    adjustments: list[str] = []
    k = _resolve_k(k, p, q, adjustments, methods)
    return n, p, q, groups, methods, k, adjustments


def _check_methods(methods, p: int, q: int) -> list[str]:
    if isinstance(methods, str):
        methods = [methods]
    out = []
    for m in methods:
        name = normalize_method(m)
        if name == "none" and p != q:
            raise DataError(f"method 'none' (raw cosine) needs spaces of equal width, got {p} and {q}",
                            hint="drop 'none' or compare spaces of the same width")
        if name not in out:
            out.append(name)
    if not out:
        raise DataError("no alignment method given", hint=f"use some of {', '.join(METHODS)}")
    return out


def _split(n, n_anchors, n_queries, seed, groups, adjustments=None):
    if n_anchors is not None and groups is not None:
        try:
            return split_anchors_queries(n, n_anchors, n_queries, seed, groups)
        except DataError:
            # whole groups: fewer rows than requested may remain outside the query groups
            a_idx, q_idx = _split(n, None, n_queries, seed, groups)
            msg = (f"seed {seed}: only {len(a_idx)} anchors remain outside the query groups "
                   f"({n_anchors} requested); using them all")
            if adjustments is not None:
                adjustments.append(msg)
            return a_idx, q_idx
    if n_anchors is None:
        # every row outside the query groups: the queries first, then all the rest
        queries, rest = split_rows(n, [n_queries, None], seed, groups, names=("queries", "anchors"))
        return rest, queries
    return split_anchors_queries(n, n_anchors, n_queries, seed, groups)


def _resolve_k(k, p: int, q: int, adjustments: list, methods) -> int:
    if not any(m in K_METHODS for m in methods):
        return int(k) if k is not None else min(p, q)
    if k is None or int(k) < 1:
        raise DataError(f"k must be a positive integer, got {k!r}")
    k = int(k)
    if k > min(p, q):
        adjustments.append(f"k = {k} exceeds min(p, q) = {min(p, q)}; using k = {min(p, q)}")
        k = min(p, q)
    return k


def _rows(arr, idx):
    """``arr[idx]`` as an in-memory array (idx sorted, so memmaps read forward)."""
    return np.asarray(arr[np.sort(idx)]) if len(idx) else np.asarray(arr[:0])


def _all_row_moments(X, Y, device):
    """The moments of every row (one streaming pass), or False when some row is not finite (then each seed's
    anchors are read as before, and only a non-finite anchor is an error)."""
    try:
        return MomentAccumulator(device=device).update(X, Y)
    except DataError:
        return False


def _anchor_moments(X, Y, a_idx, every_row, device) -> AnchorMoments:
    """The anchors' moments. When they are most of the rows (``every_row``: the moments of all of them), the rows
    left out are taken off the all-row sums: the same moments up to rounding, for a pass over the few rows left
    out instead of over the many anchors (paper A's protocol: 30,000 of 31,000 items, for every seed)."""
    if every_row is None:
        return AnchorMoments.from_arrays(_rows(X, a_idx), _rows(Y, a_idx), device=device)
    left_out = np.setdiff1d(np.arange(X.shape[0]), a_idx)
    return every_row.without(_rows(X, left_out), _rows(Y, left_out)).moments()


def _settings(n, p, q, methods, k, n_anchors_used, n_queries, seeds, reg, ridge, groups, extra=None) -> dict:
    out = {"n_items": n, "dim_x": p, "dim_y": q, "methods": list(methods), "k": k,
           "n_anchors": n_anchors_used, "n_queries": n_queries, "seeds": [int(s) for s in seeds],
           "reg": float(reg), "ridge": float(ridge), "groups": groups is not None,
           "scores": {m: _SCORE_KIND[m] for m in methods},
           "direction": "rows = X queries (source), columns = Y queries (target)",
           "std": "sample standard deviation over seeds (ddof=1; 0 for one seed)"}
    if extra:
        out.update(extra)
    return out


def _shared_projectors(methods, k_max, moments, reg, device) -> dict:
    shared = {}
    if any(m in ("cca_affine", "cca_local_cka") for m in methods):
        shared["cca"] = CCA(k_max, reg, device).fit_moments(moments)
    if "pca_affine" in methods:
        shared["pca"] = PairedPCA(k_max, device).fit_moments(moments)
    return shared


def _projector_for(method, shared, k):
    if method in ("cca_affine", "cca_local_cka"):
        return shared["cca"].truncate(k)
    if method == "pca_affine":
        return shared["pca"].truncate(k)
    return None


# ------------------------------------------------------------------------------------------------
# one k
# ------------------------------------------------------------------------------------------------
def run_protocol(X, Y, methods=PAPER_A_METHODS, k: int = 50, n_anchors: int | None = 30000,
                 n_queries: int = 500, seeds=(0, 1, 2), groups=None, reg: float = 1e-3, ridge: float = 0.0,
                 ks=DEFAULT_KS, progress=None, device=None, moments_fn=None) -> ProtocolResult:
    """Paper A's protocol: for every seed draw anchors and queries, fit every method, judge it on the queries.

    Parameters
    ----------
    X, Y : paired spaces (n x p, n x q); numpy arrays or memmaps.
    methods : alignment methods (:data:`core.align.METHODS`; default paper A's four: affine, local_cka,
        cca_affine, cca_local_cka).
    k : subspace dimension of the ``cca_*`` and ``pca_affine`` methods (capped at ``min(p, q)``).
    n_anchors, n_queries : per seed (shrunk when the dataset is too small; ``None`` anchors = all remaining).
    seeds : one split (and one matching shuffle) per seed.
    groups : optional group id per item (true partners; see :mod:`core.evaluation.metrics`).
    reg, ridge : CCA's and the affine map's relative ridges.
    ks : retrieval cut-offs.
    progress : tqdm-like ``progress(iterable, total=None, desc="")``.
    moments_fn : optional ``moments_fn(anchor_rows) -> AnchorMoments`` replacing the in-process pass over the
        anchors (e.g. :func:`core.distributed.anchor_moments` on a Ray cluster); it must return the moments of
        exactly those rows.

    Returns
    -------
    :class:`ProtocolResult` (``to_dict()``: the JSON)::

        {"settings": {...what was used...}, "adjustments": [str, ...],
         "results": {method: {metric: {"mean", "std", "chance", "per_seed": [...]}}},
         "cca": {"reg", "canonical_correlations", "heldout_correlations"}   # when a CCA method ran
         "seconds": float}
    """
    t0 = time.perf_counter()
    progress = progress or _no_progress
    n, p, q, groups, methods, k, adjustments = _prepare(X, Y, groups, methods, k)
    n_anchors_req, n_queries = resolve_sizes(n, n_anchors, n_queries, adjustments, groups=groups)
    seeds = list(seeds)
    if not seeds:
        raise DataError("at least one seed is needed")

    per_seed = {m: {} for m in methods}
    chances = {m: {} for m in methods}
    cca_corr, cca_heldout, anchors_used = [], [], []
    every_row = None     # the moments of all rows, once, when the anchors are most of them (see _anchor_moments)
    for seed in progress(seeds, total=len(seeds), desc="seeds"):
        a_idx, q_idx = _split(n, n_anchors_req, n_queries, seed, groups, adjustments)
        anchors_used.append(len(a_idx))
        if moments_fn is not None:
            moments = moments_fn(np.sort(a_idx))
        else:
            if every_row is None and 2 * len(a_idx) > n:
                every_row = _all_row_moments(X, Y, device)
            moments = _anchor_moments(X, Y, a_idx, every_row or None, device)
        Xq, Yq = _rows(X, q_idx), _rows(Y, q_idx)
        gq = None if groups is None else groups[np.sort(q_idx)]
        shared = _shared_projectors(methods, k, moments, reg, device)
        if "cca" in shared:
            cca_corr.append(shared["cca"].canonical_correlations_)
            cca_heldout.append(shared["cca"].heldout_correlations(Xq, Yq))
        for method in progress(methods, total=len(methods), desc="methods"):
            aligner = PairwiseAligner(method, k=k, reg=reg, ridge=ridge, device=device)
            aligner.fit_moments(moments, projector=_projector_for(method, shared, k))
            ev = evaluate_scores(aligner.score_matrix(Xq, Yq), gq, ks=ks, seed=seed)
            for metric, value in ev.items():
                if isinstance(value, dict):
                    per_seed[method].setdefault(metric, []).append(value["value"])
                    chances[method].setdefault(metric, []).append(value["chance"])

    results = {m: {metric: summarize_over_seeds(v, chances[m][metric]) for metric, v in per_seed[m].items()}
               for m in methods}
    used_anchors = int(anchors_used[0]) if len(set(anchors_used)) == 1 else [int(a) for a in anchors_used]
    out = ProtocolResult(_settings(n, p, q, methods, k, used_anchors, n_queries, seeds, reg, ridge, groups),
                         adjustments, results)
    if cca_corr:
        out.cca = {"reg": float(reg), "k": k,
                      "canonical_correlations": [float(x) for x in np.mean(cca_corr, axis=0)],
                      "heldout_correlations": [float(x) for x in np.nanmean(cca_heldout, axis=0)],
                      "note": "canonical_correlations are regularised (reg > 0) and averaged over seeds; "
                              "heldout_correlations are plain correlations of the projected query pairs"}
    out.seconds = time.perf_counter() - t0
    return out


# ------------------------------------------------------------------------------------------------
# sweeps
# ------------------------------------------------------------------------------------------------
def summarize_records(records: list[dict], by: str) -> list[dict]:
    """Mean / std / chance over seeds of tidy records, grouped by (method, ``by``, metric)."""
    groups: dict = {}
    for r in records:
        groups.setdefault((r["method"], r[by], r["metric"]), []).append(r)
    out = []
    for (method, key, metric), rs in groups.items():
        values = [r["value"] for r in rs]
        out.append({"method": method, by: key, "metric": metric, "mean": float(np.mean(values)),
                    "std": _std(values), "chance": float(np.mean([r["chance"] for r in rs])),
                    "n_seeds": len(rs)})
    return out


def _records(ev: dict, method, by: str, key, seed) -> list[dict]:
    return [{"method": method, by: key, "seed": int(seed), "metric": metric, "value": v["value"],
             "chance": v["chance"]}
            for metric, v in ev.items() if isinstance(v, dict)]


def _ordered_summary(records: list[dict], by: str, methods: list[str]) -> list[dict]:
    rank = {m: i for i, m in enumerate(methods)}
    return sorted(summarize_records(records, by), key=lambda r: rank.get(r["method"], len(rank)))


def sweep_k(X, Y, k_values=DEFAULT_SWEEP_KS, methods=SWEEP_K_METHODS, n_anchors: int | None = 30000,
            n_queries: int = 500, seeds=(0, 1, 2), groups=None, reg: float = 1e-3, ridge: float = 0.0,
            ks=DEFAULT_KS, progress=None, device=None, partial=None, moments_fn=None) -> SweepResult:
    """Every method over the subspace dimensions ``k_values`` (paper A's curve over k).

    CCA and PCA are fitted once per seed at the largest k; smaller k take the leading columns (the top-k
    directions of one decomposition are nested); the affine map / local CKA on top is refitted for every k.
    ``"affine"`` is run as ``"pca_affine"`` (affine between PCA-k coordinates of each side, paper A's affine
    curve); methods that do not depend on k (local_cka, procrustes, none) are evaluated once per seed and
    recorded with ``k = None``. k values above ``min(p, q)`` are dropped (listed in ``"adjustments"``).
    ``moments_fn`` as in :func:`run_protocol`.

    The anchors of every seed are read first; then the curve is computed point by point (one k, every seed),
    smallest k first, and ``partial({"summary": [...], "records": [...]})`` is called after each point, so a
    caller can draw the curve as it fills in.

    Returns
    -------
    ``{"settings", "adjustments", "records": [{"method", "k", "seed", "metric", "value", "chance"}],
    "summary": [{"method", "k", "metric", "mean", "std", "chance", "n_seeds"}], "seconds"}``
    """
    t0 = time.perf_counter()
    progress = progress or _no_progress
    n, p, q, groups = _check_inputs(X, Y, groups)
    adjustments: list[str] = []
    methods = list(methods)
    if any(normalize_method(m) == "affine" for m in methods):
        adjustments.append("'affine' in a k sweep runs as 'pca_affine' (PCA-k per side, then affine)")
        methods = ["pca_affine" if normalize_method(m) == "affine" else m for m in methods]
    methods = _check_methods(methods, p, q)
    k_list = sorted({int(k) for k in k_values})
    if not k_list or k_list[0] < 1:
        raise DataError(f"k values must be positive integers, got {list(k_values)}")
    too_big = [k for k in k_list if k > min(p, q)]
    if too_big:
        adjustments.append(f"k values {too_big} exceed min(p, q) = {min(p, q)} and were dropped")
        k_list = [k for k in k_list if k <= min(p, q)]
        if not k_list:
            k_list = [min(p, q)]
            adjustments.append(f"using k = {min(p, q)} instead")
    n_anchors_req, n_queries = resolve_sizes(n, n_anchors, n_queries, adjustments, groups=groups)
    seeds = list(seeds)

    flat = [m for m in methods if m not in K_METHODS]
    steps = [("seed", s) for s in seeds] + ([("k", None)] if flat else []) + \
        [("k", k) for k in k_list if any(m in K_METHODS for m in methods)]
    records, anchors_used, prepared = [], [], []
    for kind, value in progress(steps, total=len(steps), desc="sweep over k"):
        if kind == "seed":
            a_idx, q_idx = _split(n, n_anchors_req, n_queries, value, groups, adjustments)
            anchors_used.append(len(a_idx))
            moments = (moments_fn(np.sort(a_idx)) if moments_fn is not None
                       else AnchorMoments.from_arrays(_rows(X, a_idx), _rows(Y, a_idx), device=device))
            gq = None if groups is None else groups[np.sort(q_idx)]
            prepared.append((value, moments, _rows(X, q_idx), _rows(Y, q_idx), gq,
                             _shared_projectors(methods, k_list[-1], moments, reg, device)))
            continue
        k = value
        for seed, moments, Xq, Yq, gq, shared in progress(prepared, total=len(prepared), desc="seeds"):
            for method in (flat if k is None else [m for m in methods if m in K_METHODS]):
                aligner = PairwiseAligner(method, k=k, reg=reg, ridge=ridge, device=device)
                aligner.fit_moments(moments, projector=_projector_for(method, shared, k) if k else None)
                ev = evaluate_scores(aligner.score_matrix(Xq, Yq), gq, ks=ks, seed=seed)
                records.extend(_records(ev, method, "k", k, seed))
        if partial is not None:
            partial({"summary": _ordered_summary(records, "k", methods), "records": list(records),
                     "adjustments": list(adjustments)})
    used = int(anchors_used[0]) if len(set(anchors_used)) == 1 else [int(a) for a in anchors_used]
    return SweepResult(_settings(n, p, q, methods, k_list, used, n_queries, seeds, reg, ridge, groups),
                       adjustments, records, _ordered_summary(records, "k", methods), time.perf_counter() - t0)


def sweep_anchors(X, Y, anchor_counts=DEFAULT_ANCHOR_COUNTS, methods=PAPER_A_METHODS, k: int = 50,
                  n_queries: int = 500, seeds=(0, 1, 2), groups=None, reg: float = 1e-3, ridge: float = 0.0,
                  ks=DEFAULT_KS, progress=None, device=None, partial=None) -> SweepResult:
    """Every method over growing anchor counts (paper A's curve over the number of anchors).

    Per seed the queries are drawn first, then one seeded order of the remaining rows; the anchors for count
    ``N`` are its first ``N`` rows (nested sets), and the moments are updated incrementally. Counts above what
    the dataset offers are replaced by the largest available count (listed in ``"adjustments"``).

    The curve is computed point by point (one count, every seed), smallest count first, and
    ``partial({"summary": [...], "records": [...]})`` is called after each point.

    Returns
    -------
    ``{"settings", "adjustments", "records": [{"method", "n_anchors", "seed", "metric", "value", "chance"}],
    "summary": [...], "seconds"}``
    """
    t0 = time.perf_counter()
    progress = progress or _no_progress
    n, p, q, groups, methods, k, adjustments = _prepare(X, Y, groups, methods, k)
    counts = sorted({int(c) for c in anchor_counts})
    if not counts or counts[0] < 2:
        raise DataError(f"anchor counts must be integers >= 2, got {list(anchor_counts)}")
    _, n_queries = resolve_sizes(n, counts[-1], n_queries, adjustments, groups=groups)
    seeds = list(seeds)

    per_seed = []
    for seed in seeds:
        pool, q_idx = _split(n, None, n_queries, seed, groups)
        order = np.random.default_rng([int(seed), 1]).permutation(pool)
        seed_counts = sorted({min(c, len(order)) for c in counts})
        if seed_counts[-1] < counts[-1]:
            msg = f"only {len(order)} anchors available outside the queries; larger counts use {len(order)}"
            if msg not in adjustments:
                adjustments.append(msg)
        gq = None if groups is None else groups[np.sort(q_idx)]
        per_seed.append({"seed": seed, "order": order, "counts": set(seed_counts), "q_idx": q_idx, "gq": gq,
                         "acc": MomentAccumulator(device=device), "done": 0, "Xq": None, "Yq": None})
    points = sorted(set().union(*(s["counts"] for s in per_seed))) if per_seed else []
    records = []
    for count in progress(points, total=len(points), desc="sweep over anchors"):
        for s in progress(per_seed, total=len(per_seed), desc="seeds"):
            if count not in s["counts"]:
                continue
            if s["Xq"] is None:
                s["Xq"], s["Yq"] = _rows(X, s["q_idx"]), _rows(Y, s["q_idx"])
            new = s["order"][s["done"]:count]
            s["acc"].update(_rows(X, new), _rows(Y, new))
            s["done"] = count
            moments = s["acc"].moments()
            shared = _shared_projectors(methods, k, moments, reg, device)
            for method in methods:
                aligner = PairwiseAligner(method, k=k, reg=reg, ridge=ridge, device=device)
                aligner.fit_moments(moments, projector=_projector_for(method, shared, k))
                ev = evaluate_scores(aligner.score_matrix(s["Xq"], s["Yq"]), s["gq"], ks=ks, seed=s["seed"])
                records.extend(_records(ev, method, "n_anchors", count, s["seed"]))
        if partial is not None:
            partial({"summary": _ordered_summary(records, "n_anchors", methods), "records": list(records),
                     "adjustments": list(adjustments)})
    return SweepResult(_settings(n, p, q, methods, k, counts, n_queries, seeds, reg, ridge, groups),
                       adjustments, records, _ordered_summary(records, "n_anchors", methods),
                       time.perf_counter() - t0)
