"""Chance references of a similarity: permutation test and bootstrap interval, with per-measure fast paths
that reuse what a row shuffle or resample leaves alone (docs/METHODS.md section 1)."""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..device import float64_device, pick_device
from ..errors import DataError
from ..results import Result
from ._common import GRAM_MAX_N, _F64, _auto_chunk, _check_pair, _chunk, _device, _load, _moments, _undefined
from .cka import (_centre_kernel, _centred_gram, _cka_from_moments, _debiased_from_hsics, _frob2, _gram_cka,
                  _hsic_u_gram, _rbf_grams, _use_gram, linear_cka)
from .measures import Measure, _with_seed, resolve_measure
from .neighbours import _check_k, _knn_indices, _mutual_overlap, _normalised_rows


@dataclass(eq=False)
class PermutationTest(Result):
    """What :func:`permutation_test` returns: the similarity ``value`` and its permutation null.

    ``p_value``, ``null_mean``, ``null_std`` (ddof=1) are None (and ``n_permutations`` 0) when the value or every
    null value is undefined; ``n_permutations`` counts the defined null values."""

    value: Any
    p_value: float | None
    null_mean: float | None
    null_std: float | None
    n_permutations: int


@dataclass(eq=False)
class BootstrapInterval(Result):
    """What :func:`bootstrap_interval` returns: ``value`` on all items, the percentile interval ``low`` /
    ``high`` at level ``ci``, the ``std`` of the resampled values and ``n_boot`` (defined resamples); ``low``,
    ``high``, ``std`` are None when fewer than two resamples are defined."""

    value: Any
    low: float | None
    high: float | None
    std: float | None
    n_boot: int
    ci: float

#: Above this many bytes (float64, both spaces) permutation/bootstrap fast paths stream instead of
#: keeping the shifted spaces resident on the device.
_RESIDENT_BYTES = 1 << 30


def _permutations(n: int, n_permutations: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.permutation(n) for _ in range(int(n_permutations))]


def _resampling_setup(X, Y, draws, kw, progress, desc: str):
    """What the linear-CKA null and bootstrap both start from: device, sizes and the (progress-wrapped) draws."""
    dev = _device(kw.get("device"))
    n, p = X.shape
    it = progress(draws, total=len(draws), desc=desc) if progress else draws
    return dev, n, p, Y.shape[1], it


def _linear_null(X, Y, perms, kw, progress):
    """Observed value and null values of linear CKA, reusing the parts a row shuffle of Y leaves alone."""
    dev, n, p, q, it = _resampling_setup(X, Y, perms, kw, progress, "permutations")
    if _use_gram_null(n, p, q, kw.get("method", "auto")):
        K = _centred_gram(X, dev, "X")
        L = _centred_gram(Y, dev, "Y")
        value = _gram_cka(K, L)
        if value is None:
            return None, []
        K = K / K.norm()
        L = L / L.norm()
        pt = [torch.as_tensor(pm, device=dev) for pm in it]
        return value, [float((K * L[pm][:, pm]).sum()) for pm in pt]
    m = _moments(X, Y, chunk_rows=kw.get("chunk_rows"), device=dev)
    value = _cka_from_moments(m)
    if value is None:
        return None, []
    den = math.sqrt(_frob2(m.cxx())) * math.sqrt(_frob2(m.cyy()))
    null = []
    # with rows of Y permuted only X^T Y changes (column sums and both Gram blocks stay)
    if n * (p + q) * 8 <= _RESIDENT_BYTES:
        Xs = _load(X, dev, "X") - m.shift_x
        Ys = _load(Y, dev, "Y") - m.shift_y
        for pm in it:
            null.append(_frob2(m.cxy(Xs.T @ Ys[torch.as_tensor(pm, device=dev)])) / den)
        return value, null
    step = _auto_chunk(kw.get("chunk_rows"), p + q)
    for pm in it:
        xy = torch.zeros((p, q), dtype=_F64, device=dev)
        for a in range(0, n, step):
            b = min(n, a + step)
            xy += (_chunk(X, a, b, dev, "X") - m.shift_x).T @ (_chunk(Y, a, b, dev, "Y", rows=pm) - m.shift_y)
        null.append(_frob2(m.cxy(xy)) / den)
    return value, null


def _use_gram_null(n: int, p: int, q: int, method: str) -> bool:
    """Gram form for a permutation null: each shuffle then costs O(n^2) instead of O(n p q)."""
    if method != "auto":
        return _use_gram(n, p, q, method)
    return n <= GRAM_MAX_N and n < p * q


def _debiased_null(X, Y, perms, kw, progress):
    n, p = X.shape
    q = Y.shape[1]
    if n < 4:
        raise DataError(f"this measure needs at least 4 items, got {n}", hint="use more items")
    if not _use_gram_null(n, p, q, kw.get("method", "auto")):
        return None   # use the generic path
    dev = _device(kw.get("device"))
    K = _centred_gram(X, dev, "X")
    L = _centred_gram(Y, dev, "Y")
    value = _debiased_from_hsics(_hsic_u_gram(K, L), _hsic_u_gram(K, K), _hsic_u_gram(L, L))
    if value is None:
        return None, []
    den = math.sqrt(_hsic_u_gram(K, K) * _hsic_u_gram(L, L))
    it = progress(perms, total=len(perms), desc="permutations") if progress else perms
    out = []
    for pm in it:
        pm = torch.as_tensor(pm, device=dev)
        out.append(_hsic_u_gram(K, L[pm][:, pm]) / den)
    return value, out


def _rbf_null(X, Y, perms, kw, progress):
    K, L = _rbf_grams(X, Y, kw.get("sigma_factor", 0.8), kw.get("max_n", 5000), kw.get("seed", 0),
                      kw.get("device"), kw.get("sigma"))
    if K is None or L is None:
        return _undefined("rbf_cka", "all points of a space coincide"), []
    n_used = K.shape[0]
    K, L = _centre_kernel(K), _centre_kernel(L)
    value = _gram_cka(K, L)
    if value is None:
        return None, []
    K, L = K / K.norm(), L / L.norm()
    if n_used != X.shape[0]:   # sub-sampled: permute within the sample
        rng = np.random.default_rng(kw.get("seed", 0) + 1)
        perms = [rng.permutation(n_used) for _ in perms]
    it = progress(perms, total=len(perms), desc="permutations") if progress else perms
    out = []
    for pm in it:
        pm = torch.as_tensor(pm, device=K.device)
        out.append(float((K * L[pm][:, pm]).sum()))
    return value, out


def _knn_null(X, Y, perms, kw, progress):
    X, Y = _check_pair(X, Y)
    k = _check_k(kw.get("k", 10), X.shape[0])
    chunk = int(kw.get("chunk_rows", 1024))
    dev = pick_device(kw.get("device"))
    ix = _knn_indices(_normalised_rows(X, float64_device(dev), "X").to(dev), k, chunk)
    iy = _knn_indices(_normalised_rows(Y, float64_device(dev), "Y").to(dev), k, chunk)
    value = _mutual_overlap(ix, iy)
    it = progress(perms, total=len(perms), desc="permutations") if progress else perms
    out = []
    for pm in it:
        # Y'[i] = Y[pm[i]]: NN_Y'(i) = inv[NN_Y(pm[i])]
        pm_t = torch.as_tensor(pm, device=ix.device)
        inv = torch.empty_like(pm_t)
        inv[pm_t] = torch.arange(len(pm), device=ix.device)
        out.append(_mutual_overlap(ix, inv[iy[pm_t]]))
    return value, out


_NULL_FAST_PATHS = {"linear_cka": _linear_null, "debiased_cka": _debiased_null, "rbf_cka": _rbf_null,
                    "mutual_knn": _knn_null}


def _take(X: np.ndarray, rows: np.ndarray) -> np.ndarray:
    order = np.argsort(rows, kind="stable")
    out = np.empty((len(rows), X.shape[1]), dtype=X.dtype)
    out[order] = X[rows[order]]
    return out


def permutation_test(X, Y, measure: str | Measure = "linear_cka", n_permutations: int = 100, seed: int = 0,
                     progress=None, **kw) -> PermutationTest:
    """Permutation null of a similarity: shuffle the rows of ``Y`` (seeded) ``n_permutations`` times.

    ``seed`` seeds the shuffles and, for measures that sub-sample (rbf_cka, cknna, rsa), their sample.
    ``p_value = (1 + #{null >= value}) / (1 + n_permutations)`` (``<=`` for distances such as
    ``procrustes``). Fast paths: linear CKA reuses its Gram blocks (a row shuffle of Y only changes
    ``X^T Y``; for n <= GRAM_MAX_N and n < p q it permutes the n x n centred Gram matrix instead, O(n^2)
    per shuffle); debiased CKA (same rule) and RBF CKA permute their kernels; mutual k-NN relabels the
    neighbour lists. Other measures are recomputed on each shuffled copy.

    Returns
    -------
    PermutationTest
        ``value``, ``p_value``, ``null_mean``, ``null_std`` (ddof=1), ``n_permutations`` (the number of
        defined null values); ``p_value`` etc. are None when the value itself is undefined.
    """
    m = resolve_measure(measure)
    kw = _with_seed(m, kw, seed)
    X, Y = _check_pair(X, Y)
    if int(n_permutations) < 1:
        raise DataError(f"n_permutations must be >= 1, got {n_permutations}")
    perms = _permutations(X.shape[0], n_permutations, seed)
    fast = _NULL_FAST_PATHS.get(m.name)
    res = fast(X, Y, perms, kw, progress) if fast is not None else None
    if res is not None:
        value, null = res
    else:
        value = m.func(X, Y, **kw)
        null = []
        it = progress(perms, total=len(perms), desc="permutations") if progress else perms
        if value is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")   # negative debiased values etc. are expected under the null
                for pm in it:
                    null.append(m.func(X, _take(Y, pm), **kw))
    null = np.array([v for v in null if v is not None], dtype=np.float64)
    if value is None or null.size == 0:
        return PermutationTest(value, None, None, None, 0)
    tol = 1e-12 * max(1.0, abs(value))   # identical-by-symmetry null values count as ties, not as smaller
    extreme = (null >= value - tol) if m.higher_is_similar else (null <= value + tol)
    return PermutationTest(value=float(value), p_value=float((1 + int(extreme.sum())) / (1 + null.size)),
                           null_mean=float(null.mean()),
                           null_std=float(null.std(ddof=1)) if null.size > 1 else 0.0,
                           n_permutations=int(null.size))


def _linear_boot(X, Y, draws, kw, progress):
    dev, n, p, q, it = _resampling_setup(X, Y, draws, kw, progress, "bootstrap")
    if _use_gram(n, p, q, kw.get("method", "auto")):
        Xs = _load(X, dev, "X")
        Ys = _load(Y, dev, "Y")
        Xs -= Xs.mean(0)
        Ys -= Ys.mean(0)
        K, L = Xs @ Xs.T, Ys @ Ys.T
        value = _gram_cka(K, L)
        out = []
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for idx in it:
                idx = torch.as_tensor(idx, device=dev)
                out.append(_gram_cka(_centre_kernel(K[idx][:, idx]), _centre_kernel(L[idx][:, idx])))
        return value, out
    value = linear_cka(X, Y, chunk_rows=kw.get("chunk_rows"), device=dev, method="features")
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for idx in it:
            w = np.bincount(idx, minlength=n).astype(np.float64)
            out.append(_cka_from_moments(_moments(X, Y, chunk_rows=kw.get("chunk_rows"), device=dev, weights=w)))
    return value, out


def bootstrap_interval(X, Y, measure: str | Measure = "linear_cka", n_boot: int = 200, ci: float = 0.95,
                       seed: int = 0, progress=None, **kw) -> BootstrapInterval:
    """Percentile bootstrap interval of a similarity over items (rows resampled with replacement, seeded).

    Linear CKA resamples the n x n Gram matrices (small n) or re-weights the streamed sums (large n).
    Note that neighbourhood measures (mutual_knn, cknna) see duplicated items as perfect neighbours,
    which biases their resamples upward.

    Returns
    -------
    BootstrapInterval
        ``value`` (on all items), ``low``, ``high`` (the (1 - ci)/2 and (1 + ci)/2 quantiles of the
        resampled values), ``std`` of the resampled values, ``n_boot`` (defined resamples), ``ci``.
    """
    m = resolve_measure(measure)
    kw = _with_seed(m, kw, seed)
    X, Y = _check_pair(X, Y)
    if not 0 < ci < 1:
        raise DataError(f"ci must be in (0, 1), got {ci}")
    if int(n_boot) < 2:
        raise DataError(f"n_boot must be >= 2, got {n_boot}")
    n = X.shape[0]
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, n, size=n) for _ in range(int(n_boot))]
    if m.name == "linear_cka":
        value, boot = _linear_boot(X, Y, draws, kw, progress)
    else:
        value = m.func(X, Y, **kw)
        boot = []
        it = progress(draws, total=len(draws), desc="bootstrap") if progress else draws
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for idx in it:
                boot.append(m.func(_take(X, idx), _take(Y, idx), **kw))
    boot = np.array([v for v in boot if v is not None], dtype=np.float64)
    if value is None or boot.size < 2:
        return BootstrapInterval(value, None, None, None, int(boot.size), ci)
    if boot.size < n_boot:
        warnings.warn(f"{n_boot - boot.size} bootstrap resamples gave an undefined value and were dropped",
                      RuntimeWarning, stacklevel=2)
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return BootstrapInterval(float(value), float(lo), float(hi), float(boot.std(ddof=1)), int(boot.size), float(ci))
