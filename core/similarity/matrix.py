"""Similarity of two embedding spaces (METHODS.md section 1).

Every function takes two row-paired spaces ``X`` (``n x p``) and ``Y`` (``n x q``) - numpy arrays,
``numpy.memmap`` views of files, or torch tensors - and returns a plain Python ``float`` (or ``None``
where the value is undefined, always with a warning; never NaN).

Measures (names of the :data:`MEASURES` registry, used by :func:`similarity`):

``linear_cka``   linear CKA, streamed over row chunks from feature-space sums (n bounded by time, not memory)
``debiased_cka`` CKA from Song et al.'s unbiased HSIC estimator, streamed in two passes
``rbf_cka``      CKA with Gaussian kernels, median heuristic bandwidth (n x n; seeded sub-sample above ``max_n``)
``mutual_knn``   mutual k-NN alignment of Huh et al. (cosine; top-k in row chunks)
``cknna``        CKNNA of Huh et al. (unbiased HSIC restricted to mutual k-NN pairs)
``svcca``        SVCCA: PCA to ``var_explained`` of the variance, then the mean canonical correlation
``svcca_top10``  SVCCA as the Platonic Representation code: the top 10 components, then the mean correlation
``pwcca``        projection-weighted CCA (Morcos et al. 2018)
``procrustes``   orthogonal Procrustes distance of the centred, Frobenius-normalised spaces (a distance: 0 = same shape)
``rsa``          Spearman correlation of the two condensed pairwise-distance vectors (seeded sample)

``preprocess="platonic"`` (:func:`platonic_preprocess`; the paper A preset): the Platonic code's clipping at the
0.95 quantile of |x| and L2-normalised rows before any measure; with it ``rbf_cka(sigma=1)`` is that code's RBF CKA.

Chance references: :func:`permutation_test` (shuffle the rows of ``Y``) and :func:`bootstrap_interval`
(resample items). Many spaces at once: :func:`similarity_matrix` (M x M over one dataset's spaces) and
:func:`layerwise_similarity` (A x B between two lists of spaces, e.g. the layers of two encoders).

All sums are accumulated in float64 on :func:`core.device.pick_device` (CPU when MPS is the pick, as MPS
has no float64). Inputs are read chunk by chunk, so memory-mapped spaces are never loaded whole by the
streaming measures (linear and debiased CKA, Procrustes, SVCCA, PWCCA).
"""
from __future__ import annotations

import math
import sys
import warnings
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import torch

from ..device import float64_device, pick_device, pick_float64_device
from ..errors import DataError
from ..moments import StreamingMoments
from ..numerics import spearman, sym_eig_desc

__all__ = [
    "linear_cka", "debiased_cka", "rbf_cka", "mutual_knn_alignment", "cknna", "svcca", "pwcca",
    "procrustes_distance", "rsa", "similarity", "permutation_test", "bootstrap_interval",
    "similarity_matrix", "layerwise_similarity", "Measure", "MEASURES", "MEASURE_ALIASES",
    "resolve_measure", "GRAM_MAX_N", "svcca_top10", "platonic_preprocess", "PREPROCESSING",
]

#: Largest n for which :func:`linear_cka` may switch to the n x n Gram form (``method="auto"``).
GRAM_MAX_N = 4096
#: Bytes of float64 chunk data aimed at per chunk when ``chunk_rows`` is not given.
_CHUNK_BYTES = 1 << 27
#: Above this many bytes (float64, both spaces) permutation/bootstrap fast paths stream instead of
#: keeping the shifted spaces resident on the device.
_RESIDENT_BYTES = 1 << 30
_F64 = torch.float64


# ----------------------------------------------------------------------------------------------
# input handling
# ----------------------------------------------------------------------------------------------
def _as_array(X, name: str) -> np.ndarray:
    if getattr(X, "is_sharded", False):   # core.shards.ShardedArray: read in row chunks, never whole
        if X.ndim != 2:
            raise DataError(f"{name} must be a 2-D n x d array, got shape {X.shape}", array=name)
        return X
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # pragma: no cover - exotic input
            raise DataError(f"cannot read {name} as an array ({exc})", array=name) from None
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-D n x d array, got shape {X.shape}", array=name,
                        hint="pool token sets first (Space.vectors())")
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DataError(f"{name} has non-numeric dtype {X.dtype}", array=name)
    if X.shape[1] == 0:
        raise DataError(f"{name} has no columns", array=name)
    return X


def _check_pair(X, Y, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = _as_array(X, "X")
    Y = _as_array(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"the two spaces have {X.shape[0]} and {Y.shape[0]} rows; rows must pair item by item",
                        hint="give both spaces one row per item, in the same order")
    if X.shape[0] < min_n:
        raise DataError(f"this measure needs at least {min_n} items, got {X.shape[0]}",
                        hint="use more items")
    return X, Y


def _auto_chunk(chunk_rows: int | None, width: int) -> int:
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return int(chunk_rows)
    return int(min(65536, max(256, _CHUNK_BYTES // (8 * max(width, 1)))))


from ..shards import release_pages as _release_pages  # noqa: E402  (torch-free, shared with core.shards)


def _chunk(X: np.ndarray, start: int, stop: int, device: torch.device, name: str,
           rows: np.ndarray | None = None) -> torch.Tensor:
    """Rows [start, stop) of X (or rows[start:stop] when given) as a float64 tensor on ``device``."""
    if rows is None:
        block = np.array(X[start:stop], copy=True)
        _release_pages(X, start, stop)
    else:
        idx = rows[start:stop]
        order = np.argsort(idx, kind="stable")
        block = np.empty((len(idx), X.shape[1]), dtype=X.dtype)
        block[order] = X[idx[order]]          # sorted gather: sequential reads on memmaps
    t = torch.from_numpy(block).to(device=device, dtype=_F64)
    if not bool(torch.isfinite(t.sum(0)).all()):      # one cheap reduction; NaN / inf propagate into it
        bad_rows = torch.nonzero(~torch.isfinite(t).all(dim=1))
        if len(bad_rows):
            bad = int(bad_rows[0, 0])
            row = start + bad if rows is None else int(rows[start + bad])
            raise DataError("the space contains a non-finite value (NaN or inf)", array=name, row=row,
                            hint="remove or repair that row")
    return t


def _load(X: np.ndarray, device: torch.device, name: str, chunk_rows: int | None = None) -> torch.Tensor:
    """The whole array as a float64 tensor (for the measures that need all rows at once)."""
    n = X.shape[0]
    step = _auto_chunk(chunk_rows, X.shape[1])
    parts = [_chunk(X, a, min(n, a + step), device, name) for a in range(0, n, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


_device = pick_float64_device


def _undefined(measure: str, why: str) -> None:
    warnings.warn(f"{measure} is undefined here ({why}); returning None", RuntimeWarning, stacklevel=3)
    return None


def _sample_rows(n: int, max_n: int | None, seed: int, measure: str) -> np.ndarray | None:
    """Sorted seeded sample of ``max_n`` of ``n`` rows (None when n <= max_n), with a warning."""
    if max_n is None or n <= max_n:
        return None
    if max_n < 4:
        raise DataError(f"max_n must be >= 4, got {max_n}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=int(max_n), replace=False))
    warnings.warn(f"{measure}: n = {n} > max_n = {max_n}; computed on a seeded random sample of {max_n} "
                  f"items (seed={seed})", UserWarning, stacklevel=3)
    return rows


# ----------------------------------------------------------------------------------------------
# streamed moments
# ----------------------------------------------------------------------------------------------
_Moments = StreamingMoments.from_sums     # (n, shift_x, shift_y, sx, sy, xx, yy, xy, diag_only=False)


def _moments(X: np.ndarray, Y: np.ndarray, *, chunk_rows: int | None, device: torch.device,
             diag_only: bool = False, matmul_dtype: torch.dtype = _F64,
             weights: np.ndarray | None = None, progress=None) -> StreamingMoments:
    """One pass over X and Y in row chunks (:class:`core.moments.StreamingMoments`; chunks read by
    :func:`_chunk`, which checks finiteness and releases memmap pages).

    ``weights`` (length n, e.g. bootstrap counts) weights each row's contribution; ``n`` is then their sum.
    """
    acc = StreamingMoments(device, _auto_chunk(chunk_rows, X.shape[1] + Y.shape[1]), diag_only=diag_only,
                           matmul_dtype=matmul_dtype, load=_chunk)
    return acc.update(X, Y, weights=weights, progress=progress)


def _frob2(t: torch.Tensor) -> float:
    return float((t * t).sum())


def _cka_from_moments(m: StreamingMoments, xy: torch.Tensor | None = None) -> float | None:
    num = _frob2(m.cxy(xy))
    den = math.sqrt(_frob2(m.cxx())) * math.sqrt(_frob2(m.cyy()))
    if not den > 0:
        return _undefined("linear_cka", "a space has zero variance")
    return num / den


def _use_gram(n: int, p: int, q: int, method: str) -> bool:
    if method not in ("auto", "features", "gram"):
        raise DataError(f"unknown method {method!r}; use 'auto', 'features' or 'gram'")
    if method == "gram":
        return True
    if method == "features":
        return False
    return n <= GRAM_MAX_N and n * (p + q) < p * p + p * q + q * q


def _centred_gram(X: np.ndarray, device: torch.device, name: str) -> torch.Tensor:
    Xt = _load(X, device, name)
    Xt = Xt - Xt.mean(0)
    return Xt @ Xt.T


def _gram_cka(K: torch.Tensor, L: torch.Tensor) -> float | None:
    """<K, L>_F / (||K||_F ||L||_F) for centred Gram matrices."""
    den = math.sqrt(_frob2(K)) * math.sqrt(_frob2(L))
    if not den > 0:
        return _undefined("CKA", "a kernel matrix is zero after centring")
    return float((K * L).sum()) / den


def _matmul_dtype(dtype: str) -> torch.dtype:
    if dtype not in ("float64", "float32"):
        raise DataError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
    return torch.float64 if dtype == "float64" else torch.float32


# ----------------------------------------------------------------------------------------------
# CKA
# ----------------------------------------------------------------------------------------------
def linear_cka(X, Y, *, chunk_rows: int | None = None, device=None, method: str = "auto",
               dtype: str = "float64", progress=None) -> float | None:
    """Linear CKA of two row-paired spaces, streamed over row chunks.

    ``CKA = ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` with column-centred ``Xc``, ``Yc``
    (equal to ``HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L))`` for ``K = XX^T``, ``L = YY^T``).

    The feature form reads ``chunk_rows`` rows at a time, shifts every chunk by the first chunk's column
    means (no cancellation when features have a large common offset), and accumulates ``X^T Y``,
    ``X^T X``, ``Y^T Y`` and the column sums in float64: O(n p q) time, O((p + q)^2) memory.

    Parameters
    ----------
    X, Y : array (n x p), array (n x q)
        Row i of both describes the same item; numpy memmaps are read chunk by chunk.
    chunk_rows : int, optional
        Rows per chunk (default: about 128 MB of float64 per chunk).
    device : str or torch.device, optional
        Where to compute (default :func:`core.device.pick_device`).
    method : {'auto', 'features', 'gram'}
        ``'gram'`` builds the n x n centred Gram matrices instead (O(n^2 (p + q)) time, O(n^2) memory).
        ``'auto'`` uses it when ``n <= GRAM_MAX_N`` (4096) and ``n (p + q) < p^2 + p q + q^2``, i.e. when
        it is the cheaper of the two (about n < 1.5 d for equal widths).
    dtype : {'float64', 'float32'}
        Precision of the chunk products (``'float32'`` is faster on consumer GPUs; the shift and the
        accumulators stay float64).
    progress : callable, optional
        tqdm-like wrapper ``progress(iterable, total=None, desc="")`` over the chunks.

    Returns
    -------
    float or None
        In [0, 1]; None (with a warning) when a space has zero variance.
    """
    X, Y = _check_pair(X, Y)
    dev = _device(device)
    n, p = X.shape
    q = Y.shape[1]
    if _use_gram(n, p, q, method):
        return _gram_cka(_centred_gram(X, dev, "X"), _centred_gram(Y, dev, "Y"))
    m = _moments(X, Y, chunk_rows=chunk_rows, device=dev, matmul_dtype=_matmul_dtype(dtype), progress=progress)
    return _cka_from_moments(m)


def _hsic_u_from_sums(cross2: float, ab: float, sum_a: float, sum_b: float, s2x: float, s2y: float,
                      uv: float, n: int) -> float:
    """Song et al.'s unbiased HSIC from the scalar sums of the linear-kernel feature form.

    tr(K~L~) = cross2 - ab; 1^T K~ 1 = s2x - sum_a; 1^T L~ 1 = s2y - sum_b; 1^T K~ L~ 1 = uv.
    """
    tr = cross2 - ab
    one_k = s2x - sum_a
    one_l = s2y - sum_b
    return (tr + one_k * one_l / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * uv) / (n * (n - 3))


def _hsic_u_gram(K: torch.Tensor, L: torch.Tensor) -> float:
    """Unbiased HSIC (Song et al. 2012) from two n x n kernels, O(n^2)."""
    n = K.shape[0]
    Kt = K.clone()
    Lt = L.clone()
    Kt.fill_diagonal_(0)
    Lt.fill_diagonal_(0)
    tr = float((Kt * Lt.T).sum())
    one_k_l = float(Kt.sum(0) @ Lt.sum(1))          # 1^T K~ L~ 1
    return (tr + float(Kt.sum()) * float(Lt.sum()) / ((n - 1) * (n - 2)) - 2.0 / (n - 2) * one_k_l) / (n * (n - 3))


def _debiased_from_hsics(kl: float, kk: float, ll: float) -> float | None:
    if not (kk > 0 and ll > 0):
        return _undefined("debiased_cka", f"HSIC_u(K, K) = {kk:.3g}, HSIC_u(L, L) = {ll:.3g}; both must be > 0")
    value = kl / math.sqrt(kk * ll)
    if value < 0:
        warnings.warn(f"debiased_cka is negative ({value:.4g}): the unbiased estimator scatters around 0 for "
                      "unrelated spaces; reporting it as it is", RuntimeWarning, stacklevel=3)
    return value


def debiased_cka(X, Y, *, chunk_rows: int | None = None, device=None, method: str = "auto",
                 progress=None) -> float | None:
    """Debiased linear CKA (Kornblith et al. 2019) from Song et al.'s unbiased HSIC estimator.

    ``HSIC_u(K, L) = [tr(K~ L~) + (1^T K~ 1)(1^T L~ 1) / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n(n-3))``
    with ``K~`` the linear kernel of the column-centred data with its diagonal zeroed, and
    ``CKA_u = HSIC_u(K, L) / sqrt(HSIC_u(K, K) HSIC_u(L, L))``.

    Streams in two passes from feature-space sums: pass 1 gives the column means and ``Xc^T Yc``,
    ``Xc^T Xc``, ``Yc^T Yc``; pass 2 the per-row squared norms ``a_i = ||x_i||^2``, ``b_i`` and the row
    sums of the kernels ``u_i = x_i . s_x - a_i``. Then ``tr(K~L~) = ||Xc^T Yc||^2 - sum a_i b_i``,
    ``1^T K~ 1 = ||s_x||^2 - sum a_i`` and ``1^T K~ L~ 1 = sum u_i v_i``. With ``method='gram'``
    (or ``'auto'`` under the rule of :func:`linear_cka`) it uses the n x n kernels directly.

    Returns
    -------
    float or None
        Can be negative (reported as it is, with a warning); None with a warning when
        ``HSIC_u(K, K)`` or ``HSIC_u(L, L)`` is <= 0. Needs n >= 4 (else DataError).
    """
    X, Y = _check_pair(X, Y, min_n=4)
    dev = _device(device)
    n, p = X.shape
    q = Y.shape[1]
    if _use_gram(n, p, q, method):
        K = _centred_gram(X, dev, "X")
        L = _centred_gram(Y, dev, "Y")
        return _debiased_from_hsics(_hsic_u_gram(K, L), _hsic_u_gram(K, K), _hsic_u_gram(L, L))
    m = _moments(X, Y, chunk_rows=chunk_rows, device=dev, progress=progress)
    cxy, cxx, cyy = m.cxy(), m.cxx(), m.cyy()
    mean_x = m.shift_x + m.sx / n            # exact column means: centre the data in pass 2
    mean_y = m.shift_y + m.sy / n
    step = _auto_chunk(chunk_rows, p + q)
    # Pass 2 over the exactly centred rows x_i, y_i: a_i = ||x_i||^2, b_i = ||y_i||^2, the column sums
    # s_x, s_y (0 up to rounding; the exact form is kept) and the vectors sum_i b_i x_i and friends,
    # which expand sum_i u_i v_i with u_i = x_i . s_x - a_i, v_i = y_i . s_y - b_i into
    # s_x^T Cxy s_y - s_x . (sum b_i x_i) - (sum a_i y_i) . s_y + sum a_i b_i.
    acc = dict(a=0.0, b=0.0, ab=0.0, aa=0.0, bb=0.0)
    s_x = torch.zeros(p, dtype=_F64, device=dev)
    s_y = torch.zeros(q, dtype=_F64, device=dev)
    bx = torch.zeros(p, dtype=_F64, device=dev)   # sum_i b_i x_i
    ax = torch.zeros(p, dtype=_F64, device=dev)   # sum_i a_i x_i
    ay = torch.zeros(q, dtype=_F64, device=dev)   # sum_i a_i y_i
    by = torch.zeros(q, dtype=_F64, device=dev)   # sum_i b_i y_i
    for a0 in range(0, n, step):
        b0 = min(n, a0 + step)
        xc = _chunk(X, a0, b0, dev, "X") - mean_x
        yc = _chunk(Y, a0, b0, dev, "Y") - mean_y
        a = (xc * xc).sum(1)
        b = (yc * yc).sum(1)
        s_x += xc.sum(0)
        s_y += yc.sum(0)
        acc["a"] += float(a.sum())
        acc["b"] += float(b.sum())
        acc["ab"] += float((a * b).sum())
        acc["aa"] += float((a * a).sum())
        acc["bb"] += float((b * b).sum())
        bx += b @ xc
        ax += a @ xc
        ay += a @ yc
        by += b @ yc
    # sum_i x_i y_i^T of the centred rows is the centred cross product of pass 1.
    uv_xy = float(s_x @ cxy @ s_y) - float(s_x @ bx) - float(ay @ s_y) + acc["ab"]
    uv_xx = float(s_x @ cxx @ s_x) - 2 * float(s_x @ ax) + acc["aa"]
    uv_yy = float(s_y @ cyy @ s_y) - 2 * float(s_y @ by) + acc["bb"]
    s2x = float(s_x @ s_x)
    s2y = float(s_y @ s_y)
    kl = _hsic_u_from_sums(_frob2(cxy), acc["ab"], acc["a"], acc["b"], s2x, s2y, uv_xy, n)
    kk = _hsic_u_from_sums(_frob2(cxx), acc["aa"], acc["a"], acc["a"], s2x, s2x, uv_xx, n)
    ll = _hsic_u_from_sums(_frob2(cyy), acc["bb"], acc["b"], acc["b"], s2y, s2y, uv_yy, n)
    return _debiased_from_hsics(kl, kk, ll)


def _pairwise_sq_dists(Xt: torch.Tensor) -> torch.Tensor:
    Xt = Xt - Xt.mean(0)
    sq = (Xt * Xt).sum(1)
    D2 = sq[:, None] + sq[None, :] - 2.0 * (Xt @ Xt.T)
    D2.clamp_(min=0)
    D2.fill_diagonal_(0)
    return D2


def _median(v: torch.Tensor) -> float:
    """The usual median (mean of the two middle values for an even count)."""
    m = v.numel()
    if m % 2:
        return float(torch.kthvalue(v, m // 2 + 1).values)
    lo = torch.kthvalue(v, m // 2).values
    hi = torch.kthvalue(v, m // 2 + 1).values
    return float((lo + hi) / 2)


def _rbf_kernel(Xt: torch.Tensor, sigma_factor: float, sigma: float | None = None) -> torch.Tensor | None:
    D2 = _pairwise_sq_dists(Xt)
    if sigma is not None:     # a fixed bandwidth (the Platonic code: sigma = 1)
        return torch.exp(-D2 / (2.0 * float(sigma) ** 2))
    n = Xt.shape[0]
    iu = torch.triu_indices(n, n, 1, device=D2.device)
    med = _median(D2[iu[0], iu[1]].sqrt())
    del iu
    if not med > 0:
        return None
    sigma = sigma_factor * med
    return torch.exp(-D2 / (2.0 * sigma * sigma))


def _centre_kernel(K: torch.Tensor) -> torch.Tensor:
    return K - K.mean(0, keepdim=True) - K.mean(1, keepdim=True) + K.mean()


def _rbf_grams(X, Y, sigma_factor, max_n, seed, device, sigma=None):
    X, Y = _check_pair(X, Y, min_n=3)
    if not sigma_factor > 0:
        raise DataError(f"sigma_factor must be > 0, got {sigma_factor}")
    if sigma is not None and not sigma > 0:
        raise DataError(f"sigma must be > 0, got {sigma}")
    rows = _sample_rows(X.shape[0], max_n, seed, "rbf_cka")
    if rows is not None:
        X, Y = X[rows], Y[rows]
    dev = _device(device)
    K = _rbf_kernel(_load(X, dev, "X"), sigma_factor, sigma)
    L = _rbf_kernel(_load(Y, dev, "Y"), sigma_factor, sigma)
    return K, L


def rbf_cka(X, Y, *, sigma_factor: float = 0.8, max_n: int | None = 5000, seed: int = 0,
            device=None, sigma: float | None = None) -> float | None:
    """CKA with Gaussian (RBF) kernels.

    ``k(u, v) = exp(-||u - v||^2 / (2 sigma^2))`` with ``sigma = sigma_factor * median`` of the
    off-diagonal pairwise Euclidean distances, chosen per space, or the fixed ``sigma`` when given (the
    Platonic Representation code uses ``sigma = 1`` on L2-normalised rows; paper A preset);
    ``CKA = <HKH, HLH> / (||HKH|| ||HLH||)``.
    Needs the n x n kernels: above ``max_n`` items it uses a seeded random sample of ``max_n`` items
    and warns (``max_n=None`` disables the cap).

    Returns
    -------
    float or None
        In [0, 1]; None with a warning when a space has all its points identical.
    """
    K, L = _rbf_grams(X, Y, sigma_factor, max_n, seed, device, sigma)
    if K is None or L is None:
        return _undefined("rbf_cka", "all points of a space coincide (median distance 0)")
    return _gram_cka(_centre_kernel(K), _centre_kernel(L))


# ----------------------------------------------------------------------------------------------
# neighbourhoods
# ----------------------------------------------------------------------------------------------
def _normalised_rows(X: np.ndarray, device, name: str, dtype=torch.float32) -> torch.Tensor:
    Xt = _load(X, device, name)
    norms = Xt.norm(dim=1, keepdim=True)
    return (Xt / norms.clamp_min(1e-300)).to(dtype)


def _knn_indices(Xn: torch.Tensor, k: int, chunk_rows: int) -> torch.Tensor:
    """Indices (n x k) of the k largest cosine similarities of every row, itself excluded."""
    n = Xn.shape[0]
    out = torch.empty((n, k), dtype=torch.long, device=Xn.device)
    for a in range(0, n, chunk_rows):
        b = min(n, a + chunk_rows)
        S = Xn[a:b] @ Xn.T
        S[torch.arange(b - a, device=S.device), torch.arange(a, b, device=S.device)] = -math.inf
        out[a:b] = torch.topk(S, k, dim=1).indices
    return out


def _check_k(k: int, n: int) -> int:
    k = int(k)
    if k < 1 or k > n - 1:
        raise DataError(f"k must be between 1 and n - 1 = {n - 1}, got {k}",
                        hint="use a smaller k or more items")
    return k


def _mutual_overlap(ix: torch.Tensor, iy: torch.Tensor, chunk_rows: int = 8192) -> float:
    n, k = ix.shape
    total = 0
    for a in range(0, n, chunk_rows):
        total += int((ix[a:a + chunk_rows, :, None] == iy[a:a + chunk_rows, None, :]).any(-1).sum())
    return total / (n * k)


def mutual_knn_alignment(X, Y, k: int = 10, *, chunk_rows: int = 1024, device=None) -> float:
    """Mutual k-NN alignment (Huh et al. 2024, "The Platonic Representation Hypothesis").

    For each item i, ``NN_X(i)`` = its k nearest neighbours in X by cosine similarity (itself excluded),
    ``NN_Y(i)`` likewise; the score is ``mean_i |NN_X(i) ∩ NN_Y(i)| / k``. The top-k is taken over
    ``chunk_rows`` x n similarity blocks (never a full n x n sort); memory O(chunk_rows n + n d).

    Returns
    -------
    float
        In [0, 1]; chance level is about k / (n - 1).
    """
    X, Y = _check_pair(X, Y, min_n=2)
    k = _check_k(k, X.shape[0])
    dev = pick_device(device)
    ix = _knn_indices(_normalised_rows(X, float64_device(dev), "X").to(dev), k, int(chunk_rows))
    iy = _knn_indices(_normalised_rows(Y, float64_device(dev), "Y").to(dev), k, int(chunk_rows))
    return _mutual_overlap(ix, iy)


def _cknna_parts(K: torch.Tensor, L: torch.Tensor, k: int) -> float:
    """Unbiased HSIC of the kernels restricted to pairs that are k-NN in both (reference implementation)."""
    n = K.shape[0]

    def knn_mask(G):
        Gh = G.clone()
        Gh.fill_diagonal_(-math.inf)
        idx = torch.topk(Gh, k, dim=1).indices
        return torch.zeros((n, n), dtype=G.dtype, device=G.device).scatter_(1, idx, 1.0)

    mask = knn_mask(K) * knn_mask(L)
    return _hsic_u_gram(mask * K, mask * L)


def cknna(X, Y, k: int = 10, *, max_n: int | None = 5000, seed: int = 0, device=None) -> float | None:
    """CKNNA (Huh et al. 2024): CKA restricted to mutual k-nearest-neighbour pairs.

    Follows the reference implementation of the Platonic Representation Hypothesis repository
    (``metrics.AlignmentMetrics.cknna`` with ``unbiased=True`` on L2-normalised features):
    ``K = X^ X^^T``, ``L = Y^ Y^^T`` (cosine kernels of the row-normalised spaces); ``M_ij = 1`` when j is
    among the k nearest neighbours of i (self excluded) in both K and L;
    ``s(K, L) = HSIC_u(M * K, M * L)`` (Song et al.'s unbiased estimator, which centres the kernels) and
    ``CKNNA = s(K, L) / sqrt(s(K, K) s(L, L))``. Unlike the reference, no 1e-6 is added to the
    denominator. Needs n x n kernels: above ``max_n`` items a seeded sample is used (with a warning).

    Returns
    -------
    float or None
        None (with a warning) when ``s(K, K)`` or ``s(L, L)`` is <= 0.
    """
    X, Y = _check_pair(X, Y, min_n=4)
    k = _check_k(k, X.shape[0])
    rows = _sample_rows(X.shape[0], max_n, seed, "cknna")
    if rows is not None:
        X, Y = X[rows], Y[rows]
        k = _check_k(k, X.shape[0])
    dev = _device(device)
    Xn = _normalised_rows(X, dev, "X", _F64)
    Yn = _normalised_rows(Y, dev, "Y", _F64)
    K = Xn @ Xn.T
    L = Yn @ Yn.T
    kl = _cknna_parts(K, L, k)
    kk = _cknna_parts(K, K, k)
    ll = _cknna_parts(L, L, k)
    if not (kk > 0 and ll > 0):
        return _undefined("cknna", "a self-similarity term is <= 0")
    return kl / math.sqrt(kk * ll)


# ----------------------------------------------------------------------------------------------
# CCA family and Procrustes (all from the streamed covariance blocks)
# ----------------------------------------------------------------------------------------------
def _eig_desc(C: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    return sym_eig_desc(C, signs=False)    # only the spans matter here (whitening, CCA bases)


def _rank(vals: torch.Tensor, rtol: float) -> int:
    top = float(vals[0]) if vals.numel() else 0.0
    if not top > 0:
        return 0
    return int((vals > rtol * top).sum())


def _cca_whitened(Cxx, Cyy, Cxy, kx: int | None, ky: int | None, rtol: float):
    """Canonical correlations from covariance blocks.

    Each side is restricted to its leading eigen-directions (kx / ky of them, or all above ``rtol`` times
    the top eigenvalue when None); T = Lx^{-1/2} Ex^T Cxy Ey Ly^{-1/2}; its singular values are the
    canonical correlations. Returns (rho, A, B, Ex, Ey) with A, B the canonical directions in feature space
    (``Xc A`` has orthonormal columns).
    """
    lx, Ex = _eig_desc(Cxx)
    ly, Ey = _eig_desc(Cyy)
    rx, ry = _rank(lx, rtol), _rank(ly, rtol)
    kx = rx if kx is None else min(kx, rx)
    ky = ry if ky is None else min(ky, ry)
    if kx == 0 or ky == 0:
        return None
    Wx = Ex[:, :kx] / lx[:kx].sqrt()
    Wy = Ey[:, :ky] / ly[:ky].sqrt()
    T = Wx.T @ Cxy @ Wy
    U, S, Vh = torch.linalg.svd(T, full_matrices=False)
    k = min(kx, ky)
    return S[:k].clamp(max=1.0), Wx @ U[:, :k], Wy @ Vh.T[:, :k], kx, ky


def _warn_trivial_cca(measure: str, kx: int, ky: int, n: int) -> None:
    if kx + ky > n - 1:
        warnings.warn(f"{measure}: {kx} + {ky} CCA dimensions for {n} items; canonical correlations are "
                      "trivially 1 when the dimensions reach n - 1 - use more items or fewer dimensions",
                      RuntimeWarning, stacklevel=3)


def _components_for_variance(vals: torch.Tensor, var_explained: float, rank: int) -> int:
    """Smallest k whose leading eigenvalues explain more than ``var_explained`` of the total (as sklearn's PCA)."""
    v = vals.clamp(min=0)
    ratio = torch.cumsum(v, 0) / v.sum()
    k = int(np.searchsorted(ratio.cpu().numpy(), var_explained, side="right")) + 1
    return max(1, min(k, rank, vals.numel()))


def svcca(X, Y, var_explained: float = 0.99, *, chunk_rows: int | None = None, device=None,
          rtol: float = 1e-10, n_components: int | None = None) -> float | None:
    """SVCCA (Raghu et al. 2017): PCA of each centred space, then the mean canonical correlation.

    Each space keeps its leading principal components - the smallest number whose explained-variance
    ratio exceeds ``var_explained`` (scikit-learn's rule for a fractional ``n_components``), or exactly
    ``n_components`` of them when given (the Platonic code keeps 10: :func:`svcca_top10`). The canonical
    correlations of the reduced spaces are the singular values of ``Lx^{-1/2} Ex^T Cxy Ey Ly^{-1/2}``
    (E, L: eigenvectors and eigenvalues of the covariance); SVCCA is their mean over ``min(kx, ky)``.
    Computed from the streamed covariance blocks (memory O((p + q)^2)).

    Returns
    -------
    float or None
        In [0, 1]; None (with a warning) when a space has zero variance.
    """
    if not 0 < var_explained <= 1:
        raise DataError(f"var_explained must be in (0, 1], got {var_explained}")
    X, Y = _check_pair(X, Y, min_n=3)
    m = _moments(X, Y, chunk_rows=chunk_rows, device=_device(device))
    Cxx, Cyy, Cxy = m.cxx(), m.cyy(), m.cxy()
    lx, _ = _eig_desc(Cxx)
    ly, _ = _eig_desc(Cyy)
    rx, ry = _rank(lx, rtol), _rank(ly, rtol)
    if rx == 0 or ry == 0:
        return _undefined("svcca", "a space has zero variance")
    if n_components is not None:
        if int(n_components) < 1:
            raise DataError(f"n_components must be >= 1, got {n_components}")
        kx, ky = min(int(n_components), rx), min(int(n_components), ry)
    else:
        kx = _components_for_variance(lx, var_explained, rx)
        ky = _components_for_variance(ly, var_explained, ry)
    _warn_trivial_cca("svcca", kx, ky, X.shape[0])
    rho = _cca_whitened(Cxx, Cyy, Cxy, kx, ky, rtol)[0]
    return float(rho.mean())


def svcca_top10(X, Y, *, chunk_rows: int | None = None, device=None, rtol: float = 1e-10) -> float | None:
    """SVCCA as the Platonic Representation code (METHODS.md 7.1): the top 10 principal components of each space,
    then the mean canonical correlation (an exact PCA here; that code uses a randomised SVD)."""
    return svcca(X, Y, chunk_rows=chunk_rows, device=device, rtol=rtol, n_components=10)


def platonic_preprocess(X, q: float = 0.95, chunk_rows: int = 65536) -> np.ndarray:
    """The Platonic Representation code's pre-processing before every metric (METHODS.md 7.1; paper A preset).

    Clip every value to ``[-t, t]`` with ``t`` the mean over items of each item's ``q`` quantile of ``|x|``
    (that code's non-exact ``remove_outliers``), then L2-normalise the rows. Reads ``X`` in row chunks; returns a
    new float32 array (all-zero rows stay zero).
    """
    X = _as_array(X, "X")
    if X.ndim != 2:
        raise DataError(f"expected a 2-D array (n x d), got shape {X.shape}")
    if not 0 < q <= 1:
        raise DataError(f"q must be in (0, 1], got {q}")
    n = X.shape[0]
    total = 0.0
    for start in range(0, n, chunk_rows):
        part = np.abs(np.asarray(X[start:start + chunk_rows], dtype=np.float64))
        total += float(np.quantile(part, q, axis=1).sum())
    t = total / max(n, 1)
    out = np.empty(X.shape, dtype=np.float32)
    for start in range(0, n, chunk_rows):
        part = np.clip(np.asarray(X[start:start + chunk_rows], dtype=np.float64), -t, t)
        norms = np.linalg.norm(part, axis=1, keepdims=True)
        out[start:start + chunk_rows] = part / np.where(norms > 0, norms, 1.0)
    return out


#: Pre-processing applied to every space before a measure (``preprocess=`` of :func:`similarity_matrix` and
#: friends): none (the default) or the Platonic code's (:func:`platonic_preprocess`).
PREPROCESSING = ("none", "platonic")


def _preprocess(X, preprocess: str | None):
    if preprocess in (None, "none"):
        return X
    if preprocess == "platonic":
        return platonic_preprocess(X)
    raise DataError(f"unknown pre-processing {preprocess!r}", hint=f"use one of {', '.join(PREPROCESSING)}")


def pwcca(X, Y, *, chunk_rows: int | None = None, device=None, rtol: float = 1e-10) -> float | None:
    """Projection-weighted CCA (Morcos et al. 2018).

    CCA of the centred spaces (each restricted to its numerical rank: eigenvalues of the covariance
    above ``rtol`` times the largest) gives correlations ``rho_i`` and canonical variates
    ``h_i = Xc a_i`` (unit norm, mutually orthogonal) of the side with the smaller rank (X on a tie, as in
    Google's reference code). Weights ``alpha_i = sum_j |<h_i, Xc[:, j]>|`` over that side's features,
    normalised to sum 1; ``PWCCA = sum_i alpha_i rho_i``. (The reference code projects the uncentred
    activations; we use the centred ones, so the weights do not depend on feature offsets.)
    Computed from the streamed covariance blocks: ``<h_i, Xc[:, j]> = (Cxx a_i)_j``.

    Returns
    -------
    float or None
        In [0, 1]; None (with a warning) when a space has zero variance.
    """
    X, Y = _check_pair(X, Y, min_n=3)
    m = _moments(X, Y, chunk_rows=chunk_rows, device=_device(device))
    Cxx, Cyy, Cxy = m.cxx(), m.cyy(), m.cxy()
    res = _cca_whitened(Cxx, Cyy, Cxy, None, None, rtol)
    if res is None:
        return _undefined("pwcca", "a space has zero variance")
    rho, A, B, kx, ky = res
    _warn_trivial_cca("pwcca", kx, ky, X.shape[0])
    proj = (Cxx @ A) if kx <= ky else (Cyy @ B)
    alpha = proj.abs().sum(0)
    alpha = alpha / alpha.sum()
    return float((alpha * rho).sum())


def procrustes_distance(X, Y, *, chunk_rows: int | None = None, device=None) -> float | None:
    """Orthogonal Procrustes distance of the centred, Frobenius-normalised spaces.

    ``d(X, Y) = 1 - ||X~^T Y~||_*`` with ``X~ = Xc / ||Xc||_F``, ``Y~ = Yc / ||Yc||_F`` (column-centred)
    and ``||.||_*`` the nuclear norm (sum of singular values). Equivalently
    ``d = min_R ||X~ R - Y~||_F^2 / 2`` over R with orthonormal columns (the narrower space zero-padded
    when p != q). It lies in [0, 1]; it is 0 exactly when Y is a rotated / reflected, shifted and
    isotropically scaled copy of X. It is a distance: smaller means more similar.
    Computed from the streamed moments (``Xc^T Yc`` and the column sums of squares).

    Returns
    -------
    float or None
        None (with a warning) when a space has zero variance.
    """
    X, Y = _check_pair(X, Y, min_n=2)
    m = _moments(X, Y, chunk_rows=chunk_rows, device=_device(device), diag_only=True)
    nx = float(m.cxx().sum())
    ny = float(m.cyy().sum())
    if not (nx > 0 and ny > 0):
        return _undefined("procrustes_distance", "a space has zero variance")
    nuclear = float(torch.linalg.svdvals(m.cxy()).sum())
    return max(0.0, 1.0 - nuclear / math.sqrt(nx * ny))


# ----------------------------------------------------------------------------------------------
# RSA
# ----------------------------------------------------------------------------------------------
_RSA_METRICS = ("cosine", "euclidean", "correlation")


def _condensed_distances(Xt: torch.Tensor, metric: str) -> torch.Tensor:
    n = Xt.shape[0]
    if metric == "euclidean":
        # direct differences (not the Gram identity), so equal distances stay exactly equal (ties)
        return torch.pdist(Xt - Xt.mean(0), p=2)
    else:
        if metric == "correlation":
            Xt = Xt - Xt.mean(1, keepdim=True)
        Xn = Xt / Xt.norm(dim=1, keepdim=True).clamp_min(1e-300)
        D = 1.0 - Xn @ Xn.T
    iu = torch.triu_indices(n, n, 1, device=Xt.device)
    return D[iu[0], iu[1]]


def rsa(X, Y, *, metric: str = "cosine", max_n: int | None = 2000, seed: int = 0, device=None) -> float | None:
    """Representational similarity analysis: Spearman correlation of the pairwise-distance vectors.

    Distances between all pairs of items (upper triangle, i < j) in each space under ``metric``
    (``'cosine'``: 1 - cosine similarity, ``'euclidean'``, ``'correlation'``: 1 - Pearson correlation
    of the rows, as scipy's ``pdist``); RSA is the Spearman correlation of the two vectors (average ranks
    for ties). Above ``max_n`` items a seeded random sample of ``max_n`` items is used (with a warning).

    Returns
    -------
    float or None
        In [-1, 1]; None (with a warning) when one distance vector is constant.
    """
    if metric not in _RSA_METRICS:
        raise DataError(f"unknown RSA metric {metric!r}; use one of {', '.join(_RSA_METRICS)}")
    X, Y = _check_pair(X, Y, min_n=3)
    rows = _sample_rows(X.shape[0], max_n, seed, "rsa")
    if rows is not None:
        X, Y = X[rows], Y[rows]
    dev = _device(device)
    dx = _condensed_distances(_load(X, dev, "X"), metric)
    dy = _condensed_distances(_load(Y, dev, "Y"), metric)
    value = spearman(dx, dy)
    if value is None:
        return _undefined("rsa", "all pairwise distances of a space are equal")
    return value


# ----------------------------------------------------------------------------------------------
# registry and entry point
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Measure:
    """A registered similarity measure.

    ``symmetric``: f(X, Y) == f(Y, X) (a matrix computes each pair once); ``higher_is_similar``: False
    for distances (the permutation p-value then counts null values <= the observed one).
    """

    name: str
    func: Callable
    symmetric: bool
    higher_is_similar: bool
    description: str


MEASURES: dict[str, Measure] = {m.name: m for m in [
    Measure("linear_cka", linear_cka, True, True, "linear CKA (streamed)"),
    Measure("debiased_cka", debiased_cka, True, True, "debiased linear CKA (unbiased HSIC)"),
    Measure("rbf_cka", rbf_cka, True, True, "RBF-kernel CKA (median heuristic)"),
    Measure("mutual_knn", mutual_knn_alignment, True, True, "mutual k-NN alignment (cosine)"),
    Measure("cknna", cknna, False, True, "CKNNA: HSIC on mutual k-NN pairs"),
    Measure("svcca", svcca, True, True, "SVCCA, 99 % of the variance (Raghu et al.)"),
    Measure("svcca_top10", svcca_top10, True, True, "SVCCA, top-10 components (the Platonic code)"),
    Measure("pwcca", pwcca, False, True, "projection-weighted CCA"),
    Measure("procrustes", procrustes_distance, True, False, "orthogonal Procrustes distance (lower = closer)"),
    Measure("rsa", rsa, True, True, "RSA (Spearman of pairwise distances)"),
]}

#: Other accepted spellings of the measure names.
MEASURE_ALIASES = {
    "cka": "linear_cka", "linear": "linear_cka", "debiased": "debiased_cka", "unbiased_cka": "debiased_cka",
    "rbf": "rbf_cka", "mutual_knn_alignment": "mutual_knn", "knn": "mutual_knn",
    "procrustes_distance": "procrustes", "svcca_platonic": "svcca_top10", "svcca_raghu": "svcca",
}


def resolve_measure(measure: str | Measure) -> Measure:
    """The registered :class:`Measure` for a name or alias (DataError when unknown)."""
    if isinstance(measure, Measure):
        return measure
    key = str(measure).strip().lower().replace("-", "_")
    key = MEASURE_ALIASES.get(key, key)
    if key not in MEASURES:
        raise DataError(f"unknown similarity measure {measure!r}",
                        hint=f"use one of {', '.join(MEASURES)}")
    return MEASURES[key]


def _with_seed(m: Measure, kw: dict, seed: int) -> dict:
    """``kw`` plus ``seed=seed`` when the measure takes a seed (its own sub-sample) and none was given."""
    import inspect
    if "seed" in inspect.signature(m.func).parameters and "seed" not in kw:
        return {**kw, "seed": seed}
    return dict(kw)


def similarity(X, Y, measure: str = "linear_cka", preprocess: str | None = None, **kw) -> float | None:
    """``measure(X, Y, **kw)`` for a registered measure name (see :data:`MEASURES`), after ``preprocess``
    (``"platonic"``: :func:`platonic_preprocess` of both spaces)."""
    return resolve_measure(measure).func(_preprocess(X, preprocess), _preprocess(Y, preprocess), **kw)


# ----------------------------------------------------------------------------------------------
# chance references
# ----------------------------------------------------------------------------------------------
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
                     progress=None, **kw) -> dict:
    """Permutation null of a similarity: shuffle the rows of ``Y`` (seeded) ``n_permutations`` times.

    ``seed`` seeds the shuffles and, for measures that sub-sample (rbf_cka, cknna, rsa), their sample.
    ``p_value = (1 + #{null >= value}) / (1 + n_permutations)`` (``<=`` for distances such as
    ``procrustes``). Fast paths: linear CKA reuses its Gram blocks (a row shuffle of Y only changes
    ``X^T Y``; for n <= GRAM_MAX_N and n < p q it permutes the n x n centred Gram matrix instead, O(n^2)
    per shuffle); debiased CKA (same rule) and RBF CKA permute their kernels; mutual k-NN relabels the
    neighbour lists. Other measures are recomputed on each shuffled copy.

    Returns
    -------
    dict
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
        return {"value": value, "p_value": None, "null_mean": None, "null_std": None, "n_permutations": 0}
    tol = 1e-12 * max(1.0, abs(value))   # identical-by-symmetry null values count as ties, not as smaller
    extreme = (null >= value - tol) if m.higher_is_similar else (null <= value + tol)
    return {
        "value": float(value),
        "p_value": float((1 + int(extreme.sum())) / (1 + null.size)),
        "null_mean": float(null.mean()),
        "null_std": float(null.std(ddof=1)) if null.size > 1 else 0.0,
        "n_permutations": int(null.size),
    }


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
                       seed: int = 0, progress=None, **kw) -> dict:
    """Percentile bootstrap interval of a similarity over items (rows resampled with replacement, seeded).

    Linear CKA resamples the n x n Gram matrices (small n) or re-weights the streamed sums (large n).
    Note that neighbourhood measures (mutual_knn, cknna) see duplicated items as perfect neighbours,
    which biases their resamples upward.

    Returns
    -------
    dict
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
        return {"value": value, "low": None, "high": None, "std": None, "n_boot": int(boot.size), "ci": ci}
    if boot.size < n_boot:
        warnings.warn(f"{n_boot - boot.size} bootstrap resamples gave an undefined value and were dropped",
                      RuntimeWarning, stacklevel=2)
    lo, hi = np.quantile(boot, [(1 - ci) / 2, (1 + ci) / 2])
    return {"value": float(value), "low": float(lo), "high": float(hi), "std": float(boot.std(ddof=1)),
            "n_boot": int(boot.size), "ci": float(ci)}


# ----------------------------------------------------------------------------------------------
# many spaces
# ----------------------------------------------------------------------------------------------
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


def _pair_values(arrays_a, arrays_b, names_a, names_b, m: Measure, pairs, progress, n_permutations, seed, kw):
    """values[(i, j)] and p-values for the requested index pairs."""
    values: dict = {}
    pvals: dict = {}
    preps_a = preps_b = None
    if m.name == "linear_cka" and n_permutations == 0:
        n = arrays_a[0].shape[0]
        widths = [x.shape[1] for x in list(arrays_a) + list(arrays_b)]
        use_gram = kw.get("method", "auto") == "gram" or (
            kw.get("method", "auto") == "auto" and n <= min(GRAM_MAX_N, min(widths)))
        dev = _device(kw.get("device"))
        cache: dict = {}

        def prep(x, name):
            key = id(x)
            if key not in cache:
                cache[key] = _LinearPrep(x, name, kw.get("chunk_rows"), dev, use_gram)
            return cache[key]
        preps_a = [prep(x, nm) for x, nm in zip(arrays_a, names_a)]
        preps_b = [prep(x, nm) for x, nm in zip(arrays_b, names_b)]
    it = progress(pairs, total=len(pairs), desc="pairs") if progress else pairs
    for i, j in it:
        try:
            if preps_a is not None:
                values[(i, j)] = _linear_pair(preps_a[i], preps_b[j], kw.get("chunk_rows"), _device(kw.get("device")))
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
    return values, pvals


def _plain(v):
    return None if v is None else float(v)


def similarity_matrix(spaces: Mapping[str, np.ndarray], measure: str | Measure = "linear_cka", progress=None,
                      *, n_permutations: int = 0, seed: int = 0, **kw) -> dict:
    """The M x M matrix of a similarity over named spaces with paired rows (widths may differ).

    Symmetric measures are computed once per unordered pair; the diagonal is computed too (1 for CKA,
    0 for the Procrustes distance, unless a space is degenerate). Linear CKA shares each space's own
    Gram block across its pairs.

    Parameters
    ----------
    spaces : mapping name -> n x d array (token-set spaces pooled by the caller, e.g. ``Space.vectors()``).
    measure : a name of :data:`MEASURES` (or an alias).
    progress : tqdm-like wrapper over the pairs.
    n_permutations : when > 0, also a permutation p-value per off-diagonal pair (seeded with ``seed``).
    seed : seeds the permutations and the sub-samples of the measures that take a ``seed``.
    **kw : passed to the measure; ``preprocess="platonic"`` first applies :func:`platonic_preprocess` to every
        space (the paper A preset; recorded as ``"preprocess"`` in the result).

    Returns
    -------
    dict
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
    pairs = [(i, j) for i in range(M) for j in range(M) if not (m.symmetric and j < i)]
    n_permutations = int(n_permutations)
    if n_permutations < 0:
        raise DataError(f"n_permutations must be >= 0, got {n_permutations}")
    if n_permutations:
        # the diagonal needs no null; every other pair gets its own permutation test
        vals, _ = _pair_values(arrays, arrays, names, names, m, [(i, i) for i in range(M)], None, 0, seed, kw)
        off = [(i, j) for i, j in pairs if i != j]
        v2, pvals = _pair_values(arrays, arrays, names, names, m, off, progress, n_permutations, seed, kw)
        vals.update(v2)
    else:
        vals, pvals = _pair_values(arrays, arrays, names, names, m, pairs, progress, 0, seed, kw)
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
    out = {"measure": m.name, "names": names, "values": values, "symmetric": m.symmetric,
           "higher_is_similar": m.higher_is_similar, "n_items": int(n), "preprocess": preprocess or "none"}
    if n_permutations:
        out["p_values"] = pmat
        out["n_permutations"] = n_permutations
    return out


def layerwise_similarity(spaces_a: Sequence[np.ndarray], spaces_b: Sequence[np.ndarray],
                         measure: str | Measure = "linear_cka", names_a: Sequence[str] | None = None,
                         names_b: Sequence[str] | None = None, progress=None, **kw) -> dict:
    """The A x B matrix of a similarity between two lists of spaces (e.g. every layer of encoder a
    against every layer of encoder b), rows paired by item; widths may differ.

    Returns
    -------
    dict
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
    return {"measure": m.name, "names_a": names_a, "names_b": names_b, "values": values,
            "higher_is_similar": m.higher_is_similar, "n_items": int(n)}
