"""Neighbourhood measures of Huh et al.: mutual k-NN alignment and CKNNA (docs/METHODS.md section 1)."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..device import float64_device, pick_device
from ..errors import DataError
from ._common import _F64, _check_pair, _device, _load, _sample_rows, _undefined
from .cka import _hsic_u_gram


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
