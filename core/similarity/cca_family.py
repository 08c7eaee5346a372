"""The CCA family and Procrustes, all from the streamed covariance blocks: SVCCA, PWCCA, the orthogonal
Procrustes distance (docs/METHODS.md section 1)."""
from __future__ import annotations

import math
import warnings

import numpy as np
import torch

from ..errors import DataError
from ..numerics import sym_eig_desc
from ._common import _check_pair, _device, _moments, _undefined


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
