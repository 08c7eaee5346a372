"""Representational similarity analysis (docs/METHODS.md section 1)."""
from __future__ import annotations

import torch

from ..errors import DataError
from ..numerics import spearman
from ._common import _check_pair, _device, _load, _sample_rows, _undefined


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
