"""CKA: linear (streamed), debiased (Song et al.'s unbiased HSIC) and RBF-kernel (docs/METHODS.md section 1)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import DataError
from ..moments import StreamingMoments
from ._common import (GRAM_MAX_N, _F64, _auto_chunk, _check_pair, _chunk, _device, _load, _moments,
                      _sample_rows, _undefined)


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
