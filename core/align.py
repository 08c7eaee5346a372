"""Pairwise alignment of two embedding spaces (METHODS.md section 2, paper A).

Every estimator here is fitted on *anchors* - paired rows ``X_A`` (n x p) and ``Y_A`` (n x q), row ``i`` of
both describing the same item - and then applied to anything else (held-out *queries*). Estimators follow
scikit-learn habits: hyper-parameters in ``__init__``, ``fit(X, Y)`` returns ``self``, fitted state lives in
attributes ending in ``_``.

All of them need the anchors only through their means and centred second moments
(``Xc^T Xc``, ``Yc^T Yc``, ``Xc^T Yc``), which :class:`AnchorMoments` accumulates in one streaming pass
(row chunks, float64 accumulators, every chunk shifted by the first chunk's means). Each estimator therefore
also has ``fit_moments(moments)``, so that one pass over the anchors serves several methods
(see :mod:`core.evaluation.alignment`).

Estimators
----------
:class:`AffineMap`      ``T(x) = x R + b`` by least squares (optional relative ridge).
:class:`ProcrustesMap`  orthogonal Procrustes (PCA of both sides to a common width first when ``p != q``).
:class:`PairedPCA`      PCA of each side to ``k`` components (the "affine on PCA-k" baseline).
:class:`CCA`            closed-form regularised CCA (whitening by eigendecomposition, SVD).
:class:`LocalCKA`       closed-form local CKA score matrix (float64, ``O(Q p q + Q^2)``).
:class:`PairwiseAligner` one of paper A's methods end to end: fit once, score many query sets.

:func:`score_matrix` is the one-call version; :func:`save_map` / :func:`load_map` store fitted objects as
safetensors (tensors) with JSON in the safetensors metadata (class name, hyper-parameters, version) - never pickle.

Computation runs in torch float64 on :func:`core.device.pick_device` (CUDA when present; MPS falls back to CPU
because it has no float64). Inputs may be numpy arrays (memmaps included) or tensors; outputs are numpy float64
arrays and plain Python floats.
"""
from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .base import Estimator, outside_stacklevel
from .device import as_float64 as _f64
from .device import pick_float64_device as _device64
from .device import to_numpy as _np
from .errors import DataError
from .moments import StreamingMoments
from .numerics import fix_signs as _fix_signs
from .numerics import pca_components

__all__ = [
    "AnchorMoments", "AffineMap", "ProcrustesMap", "PairedPCA", "CCA", "LocalCKA", "PairwiseAligner",
    "score_matrix", "cosine_similarity_matrix", "save_map", "load_map", "METHODS", "PAPER_A_METHODS",
    "normalize_method",
]

#: Every method :class:`PairwiseAligner` knows.
METHODS = ("none", "affine", "pca_affine", "procrustes", "local_cka", "cca_affine", "cca_local_cka")
#: The four methods paper A compares.
PAPER_A_METHODS = ("affine", "local_cka", "cca_affine", "cca_local_cka")
#: Methods whose result depends on ``k``.
K_METHODS = ("pca_affine", "cca_affine", "cca_local_cka")

_FORMAT = "platoscope-map"
_FORMAT_VERSION = 2     # 2: PCA components stored k x d (scikit-learn's layout); 1 stored them d x k
_CHUNK_ROWS = 8192


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def _check_2d(x, name: str):
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 2:
        hint = "pool token sets to one vector per item first (Space.vectors())" if len(shape) == 3 else None
        raise DataError(f"{name} must be a 2-D array (n x d), got shape {shape}", array=name, hint=hint)
    return shape


def _check_pair(X, Y, what: str):
    sx, sy = _check_2d(X, f"X {what}"), _check_2d(Y, f"Y {what}")
    if sx[0] != sy[0]:
        raise DataError(f"X and Y {what} must have the same number of rows (pairs), got {sx[0]} and {sy[0]}",
                        hint="row i of X and row i of Y must describe the same item")
    return sx, sy


def _check_side(side: str) -> str:
    key = str(side).lower()
    if key not in ("x", "y"):
        raise DataError(f"side must be 'x' or 'y', got {side!r}")
    return key


def _check_width(x, expected: int, name: str):
    shape = _check_2d(x, name)
    if shape[1] != expected:
        raise DataError(f"{name} has {shape[1]} columns but the map was fitted on {expected}", array=name)


def _row_normalize(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=1, keepdim=True).clamp_min(1e-300)


def _cosine_t(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return _row_normalize(a) @ _row_normalize(b).T


def cosine_similarity_matrix(X, Y, device=None) -> np.ndarray:
    """Cosine similarity of every row of ``X`` (Q_x x d) with every row of ``Y`` (Q_y x d).

    Computed in float64; a zero row has cosine 0 with everything. Returns a ``Q_x x Q_y`` float64 array.
    """
    sx, sy = _check_2d(X, "X"), _check_2d(Y, "Y")
    if sx[1] != sy[1]:
        raise DataError(f"cosine needs equal widths, got {sx[1]} and {sy[1]}",
                        hint="align the spaces first (e.g. method 'cca_affine')")
    dev = _device64(device)
    return _np(_cosine_t(_f64(X, dev), _f64(Y, dev)))


# ------------------------------------------------------------------------------------------------
# anchor moments
# ------------------------------------------------------------------------------------------------
@dataclass
class AnchorMoments:
    """Means and centred second moments of paired anchors, everything the estimators need.

    Attributes
    ----------
    n : number of anchor pairs.
    mean_x, mean_y : column means (float64 tensors, p and q).
    Cxx, Cyy, Cxy : centred sums of products ``Xc^T Xc`` (p x p), ``Yc^T Yc`` (q x q), ``Xc^T Yc`` (p x q)
        - sums, not divided by ``n - 1``.
    """

    n: int
    mean_x: torch.Tensor
    mean_y: torch.Tensor
    Cxx: torch.Tensor
    Cyy: torch.Tensor
    Cxy: torch.Tensor

    @property
    def p(self) -> int:
        return int(self.Cxx.shape[0])

    @property
    def q(self) -> int:
        return int(self.Cyy.shape[0])

    @property
    def device(self) -> torch.device:
        return self.Cxx.device

    @classmethod
    def from_arrays(cls, X, Y, device=None, chunk_rows: int = _CHUNK_ROWS) -> "AnchorMoments":
        """Accumulate the moments of paired anchors ``X`` (n x p), ``Y`` (n x q) in one streaming pass."""
        acc = MomentAccumulator(device=device, chunk_rows=chunk_rows)
        acc.update(X, Y)
        return acc.moments()

    def swapped(self) -> "AnchorMoments":
        """The moments of the same anchors with the sides exchanged (``Y`` first, ``X`` second)."""
        return AnchorMoments(self.n, self.mean_y, self.mean_x, self.Cyy, self.Cxx, self.Cxy.T)

    def project(self, Px: torch.Tensor | None, Py: torch.Tensor | None) -> "AnchorMoments":
        """The moments of the projected anchors ``(X - mean_x) Px``, ``(Y - mean_y) Py`` (means are 0).

        ``None`` leaves a side centred but unprojected.
        """
        Px = Px if Px is not None else torch.eye(self.p, dtype=torch.float64, device=self.device)
        Py = Py if Py is not None else torch.eye(self.q, dtype=torch.float64, device=self.device)
        return AnchorMoments(self.n, torch.zeros(Px.shape[1], dtype=torch.float64, device=self.device),
                             torch.zeros(Py.shape[1], dtype=torch.float64, device=self.device),
                             Px.T @ self.Cxx @ Px, Py.T @ self.Cyy @ Py, Px.T @ self.Cxy @ Py)


class MomentAccumulator(StreamingMoments):
    """Streaming accumulator of :class:`AnchorMoments`: :class:`core.moments.StreamingMoments` of the paired
    anchors (float64 sums, shifted by the first chunk's means), with a finiteness check per chunk.

    ``update(X, Y)`` may be called repeatedly (e.g. growing anchor sets for an anchor-count sweep);
    ``moments()`` returns a snapshot of everything seen so far.
    """

    def __init__(self, device=None, chunk_rows: int = _CHUNK_ROWS):
        super().__init__(_device64(device), chunk_rows, after_chunk=MomentAccumulator._check_chunk)

    def update(self, X, Y) -> "MomentAccumulator":
        (n, p), (_, q) = _check_pair(X, Y, "anchors")
        if self.shift_x is not None and (p, q) != (self.sx.shape[0], self.sy.shape[0]):
            raise DataError(f"anchor widths changed from {(self.sx.shape[0], self.sy.shape[0])} to {(p, q)}")
        return super().update(X, Y)

    @staticmethod
    def _check_chunk(acc, raw_x, raw_y, start):
        # NaN / inf anywhere in the chunk reaches the diagonal of the Gram sums: one cheap check per chunk
        if not (torch.isfinite(acc.xx.diagonal()).all() and torch.isfinite(acc.yy.diagonal()).all()):
            MomentAccumulator._raise_not_finite(raw_x, raw_y, start)

    @staticmethod
    def _raise_not_finite(x, y, start):
        for side, arr in (("X", x), ("Y", y)):
            bad = torch.nonzero(~torch.isfinite(arr).all(dim=1))
            if len(bad):
                raise DataError(f"{side} anchors contain NaN or infinite values", array=side,
                                row=int(bad[0, 0]) + start,
                                hint="remove or repair the rows with missing embeddings")
        raise DataError("the anchors' sums overflow (values too large for float64)",
                        hint="rescale the embeddings")

    def moments(self) -> AnchorMoments:
        if self.n == 0:
            raise DataError("no anchors: at least 2 anchor pairs are needed")
        Cxx, Cyy = self.cxx(), self.cyy()
        return AnchorMoments(self.n, self.mean_x(), self.mean_y(), (Cxx + Cxx.T) / 2, (Cyy + Cyy.T) / 2,
                             self.cxy())


def _moments_of(X, Y, device) -> AnchorMoments:
    return AnchorMoments.from_arrays(X, Y, device=device)


# ------------------------------------------------------------------------------------------------
# base class: fitted-state plumbing shared by every estimator
# ------------------------------------------------------------------------------------------------
class _Fitted(Estimator):
    """Shared plumbing of the pairwise estimators: fit from moments, fitted check, save/load state."""

    _tensors: tuple = ()       # fitted tensor attributes (saved); None allowed
    _scalars: tuple = ()       # fitted JSON-able attributes (saved)
    _fit_call = "fit(X, Y)"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "_fitted_attributes" not in cls.__dict__:
            cls._fitted_attributes = cls._tensors + cls._scalars

    def _dev(self) -> torch.device:
        return _device64(getattr(self, "device", None))

    def fit(self, X, Y):
        """Fit on anchors ``X`` (n x p) and ``Y`` (n x q); returns ``self``."""
        return self.fit_moments(_moments_of(X, Y, self._dev()))

    def fit_moments(self, moments: AnchorMoments):  # pragma: no cover - abstract
        raise NotImplementedError

    # -- the pairwise convention: transform(X) for the X side, transform(Y, side="y") for the Y side ----------
    def _widths(self) -> tuple[int, int]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _transform_target_t(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def transform(self, X, side: str = "x") -> np.ndarray:
        """Rows of one side in the coordinates this map lands in (m x k, float64).

        ``side="x"`` (default): rows of X, mapped; ``side="y"``: rows of Y in the same coordinates (what X rows
        are compared with).
        """
        side = _check_side(side)
        self._require_fitted()
        width = self._widths()[0 if side == "x" else 1]
        _check_width(X, width, side.upper())
        t = _f64(X, self._dev())
        return _np(self._transform_t(t) if side == "x" else self._transform_target_t(t))

    def transform_target(self, Y) -> np.ndarray:
        """Deprecated alias of ``transform(Y, side="y")``."""
        warnings.warn(f"{type(self).__name__}.transform_target(Y) is deprecated; use transform(Y, side='y')",
                      DeprecationWarning, stacklevel=2)
        return self.transform(Y, side="y")

    # state for save/load: (tensors as numpy, JSON-able scalars)
    def _state(self):
        self._require_fitted()
        tensors = {}
        for name in self._tensors:
            value = getattr(self, name)
            if value is not None:
                tensors[name] = np.ascontiguousarray(value)
        return tensors, {name: getattr(self, name) for name in self._scalars}

    def _set_state(self, tensors: dict, scalars: dict):
        for name in self._tensors:
            setattr(self, name, tensors.get(name))
        for name in self._scalars:
            setattr(self, name, scalars[name])
        return self


# ------------------------------------------------------------------------------------------------
# affine map
# ------------------------------------------------------------------------------------------------
class AffineMap(_Fitted):
    """Affine map ``T(x) = x R + b`` fitted by (ridge) least squares on anchor pairs.

    Minimises ``||X R + 1 b^T - Y||_F^2 + alpha ||R||_F^2`` with ``alpha = ridge * tr(Xc^T Xc) / p``: the
    ridge is *relative* to the anchors' average variance (times ``n``), like the CCA regulariser, so one value
    suits spaces of any scale. The absolute penalty used is stored in ``alpha_`` (this is scikit-learn's
    ``Ridge(alpha=alpha_)``). ``ridge=0`` is ordinary least squares (minimum-norm when the anchors do not
    determine ``R``, with a warning).

    Parameters
    ----------
    ridge : relative ridge strength (>= 0).
    device : torch device (default: :func:`core.device.pick_device`).

    Attributes
    ----------
    R_ : (p, q) float64 array.  b_ : (q,) float64 array.  alpha_ : absolute ridge penalty.
    n_anchors_ : number of anchor pairs.
    """

    _tensors = ("R_", "b_")
    _scalars = ("alpha_", "n_anchors_")

    def __init__(self, ridge: float = 0.0, device=None):
        self.ridge = ridge
        self.device = device

    def fit_moments(self, moments: AnchorMoments) -> "AffineMap":
        """Fit from precomputed :class:`AnchorMoments`; returns ``self``."""
        if self.ridge < 0:
            raise DataError(f"ridge must be >= 0, got {self.ridge}")
        m = moments
        p = m.p
        alpha = float(self.ridge) * float(torch.trace(m.Cxx)) / p
        R = _ridge_solve(m.Cxx, m.Cxy, alpha, what="affine map")
        self.R_ = _np(R)
        self.b_ = _np(m.mean_y - m.mean_x @ R)
        self.alpha_ = alpha
        self.n_anchors_ = int(m.n)
        return self

    def _transform_t(self, x: torch.Tensor) -> torch.Tensor:
        dev = x.device
        return x @ torch.as_tensor(self.R_, device=dev) + torch.as_tensor(self.b_, device=dev)

    def _widths(self):
        return self.R_.shape[0], self.R_.shape[1]

    # transform(X): X R + b in Y's space (m x q); transform(Y, side="y"): Y rows as they are


def _ridge_solve(G: torch.Tensor, B: torch.Tensor, alpha: float, what: str) -> torch.Tensor:
    """Solve ``(G + alpha I) R = B`` for symmetric PSD ``G``; minimum-norm (pseudo-inverse) if singular."""
    p = G.shape[0]
    A = G + alpha * torch.eye(p, dtype=G.dtype, device=G.device)
    L, info = torch.linalg.cholesky_ex(A)
    if int(info) == 0:
        R = torch.cholesky_solve(B, L)
        # one step of iterative refinement keeps the normal-equation solution at lstsq accuracy
        R = R + torch.cholesky_solve(B - A @ R, L)
        vals = torch.linalg.eigvalsh(A) if p <= 4096 else None
        if vals is None or float(vals[0]) > float(vals[-1]) * p * 1e-13:
            return R
    vals, vecs = torch.linalg.eigh(A)
    cutoff = float(vals[-1]) * p * torch.finfo(torch.float64).eps
    keep = vals > cutoff
    warnings.warn(f"the anchors do not determine the {what} (rank {int(keep.sum())} < {p} features); "
                  "using the minimum-norm least-squares solution - use more anchors or ridge > 0",
                  RuntimeWarning, stacklevel=outside_stacklevel())
    inv = torch.where(keep, 1.0 / vals.clamp_min(cutoff), torch.zeros_like(vals))
    return vecs @ (inv[:, None] * (vecs.T @ B))


# ------------------------------------------------------------------------------------------------
# PCA on both sides
# ------------------------------------------------------------------------------------------------
class PairedPCA(_Fitted):
    """PCA of each side of the anchors to ``n_components`` (centred with the anchors' means).

    ``transform(X) = (X - mean_x) components_x_^T`` and ``transform(Y, side="y") = (Y - mean_y) components_y_^T``
    (:func:`core.numerics.pca_components`; components in rows, scikit-learn's layout). Component signs are fixed
    (largest-magnitude loading positive) so fits are reproducible.
    The top-``k`` components of a fit are nested: :meth:`truncate` gives the fit for a smaller ``k``.

    Attributes
    ----------
    mean_x_, mean_y_, components_x_ (k x p), components_y_ (k x q), explained_variance_x_, explained_variance_y_.
    """

    _tensors = ("mean_x_", "mean_y_", "components_x_", "components_y_",
                "explained_variance_x_", "explained_variance_y_")
    _scalars = ("n_anchors_",)

    def __init__(self, n_components: int = 50, device=None):
        self.n_components = n_components
        self.device = device

    def fit_moments(self, moments: AnchorMoments) -> "PairedPCA":
        m = moments
        k = _check_k(self.n_components, m.p, m.q, "PCA")
        vx, Px = pca_components(m.Cxx, k)
        vy, Py = pca_components(m.Cyy, k)
        denom = max(m.n - 1, 1)
        self.mean_x_, self.mean_y_ = _np(m.mean_x), _np(m.mean_y)
        self.components_x_, self.components_y_ = _np(Px), _np(Py)
        self.explained_variance_x_, self.explained_variance_y_ = _np(vx / denom), _np(vy / denom)
        self.n_anchors_ = int(m.n)
        return self

    def truncate(self, k: int) -> "PairedPCA":
        """The same fit keeping only the first ``k`` components (a new object)."""
        self._require_fitted()
        k = _check_k(k, self.components_x_.shape[0], self.components_y_.shape[0], "PCA")
        out = PairedPCA(k, self.device)
        out.mean_x_, out.mean_y_ = self.mean_x_, self.mean_y_
        out.components_x_, out.components_y_ = self.components_x_[:k], self.components_y_[:k]
        out.explained_variance_x_ = self.explained_variance_x_[:k]
        out.explained_variance_y_ = self.explained_variance_y_[:k]
        out.n_anchors_ = self.n_anchors_
        return out

    def _bases_t(self, dev):
        return _basis_t(self.components_x_, dev), _basis_t(self.components_y_, dev)

    def project_moments(self, moments: AnchorMoments) -> AnchorMoments:
        """Moments of the projected anchors (needs the moments the fit came from)."""
        Px, Py = self._bases_t(moments.device)
        return moments.project(Px, Py)

    def _transform_t(self, x):
        return (x - torch.as_tensor(self.mean_x_, device=x.device)) @ _basis_t(self.components_x_, x.device)

    def _transform_target_t(self, y):
        return (y - torch.as_tensor(self.mean_y_, device=y.device)) @ _basis_t(self.components_y_, y.device)

    def _widths(self):
        return self.components_x_.shape[1], self.components_y_.shape[1]


def _basis_t(components, dev):
    """``d x k`` contiguous basis (columns = axes) of ``k x d`` components, for ``(x - mean) @ basis``."""
    return torch.as_tensor(components, device=dev).T.contiguous()


def _check_k(k, p: int, q: int, what: str) -> int:
    if k is None:
        return min(p, q)
    if int(k) != k or k < 1:
        raise DataError(f"{what} needs a positive integer number of components, got {k!r}")
    k = int(k)
    if k > min(p, q):
        raise DataError(f"{what} with k={k} components is impossible: k must be <= min(p, q) = {min(p, q)} "
                        f"(p={p}, q={q})", hint=f"choose k <= {min(p, q)}")
    return k


# ------------------------------------------------------------------------------------------------
# orthogonal Procrustes
# ------------------------------------------------------------------------------------------------
class ProcrustesMap(_Fitted):
    """Orthogonal Procrustes map between two spaces, after centring with the anchors' means.

    ``R = U V^T`` from the SVD of ``Xr^T Yr`` where ``Xr``, ``Yr`` are the centred anchors. When ``p != q`` (or
    ``dim`` is given and smaller), *both sides are first reduced by PCA* to ``dim`` (default ``min(p, q)``)
    components; the PCA components are stored in ``components_x_`` / ``components_y_`` (``dim x p`` / ``dim x q``,
    scikit-learn's layout; ``None`` when no reduction was needed). ``transform(X) = (X - mean_x) components_x_^T R``
    lands in Y's (centred, possibly reduced) coordinates, which ``transform(Y, side="y") = (Y - mean_y)
    components_y_^T`` gives for Y rows.

    Parameters
    ----------
    dim : common width; ``None`` = ``min(p, q)`` (no reduction when ``p == q``).

    Attributes
    ----------
    R_ (d x d orthogonal), mean_x_, mean_y_, components_x_, components_y_, dim_, n_anchors_.
    """

    _tensors = ("R_", "mean_x_", "mean_y_", "components_x_", "components_y_")
    _scalars = ("dim_", "n_anchors_")

    def __init__(self, dim: int | None = None, device=None):
        self.dim = dim
        self.device = device

    def fit_moments(self, moments: AnchorMoments) -> "ProcrustesMap":
        m = moments
        d = _check_k(self.dim, m.p, m.q, "Procrustes")
        Px = Py = None
        if d != m.p or d != m.q:
            _, Px = pca_components(m.Cxx, d)
            _, Py = pca_components(m.Cyy, d)
        M = m.project(None if Px is None else Px.T, None if Py is None else Py.T).Cxy
        U, _, Vh = torch.linalg.svd(M)
        self.R_ = _np(U @ Vh)
        self.mean_x_, self.mean_y_ = _np(m.mean_x), _np(m.mean_y)
        self.components_x_ = None if Px is None else _np(Px)
        self.components_y_ = None if Py is None else _np(Py)
        self.dim_ = d
        self.n_anchors_ = int(m.n)
        return self

    _fitted_attributes = ("R_",)

    def _transform_t(self, x):
        dev = x.device
        x = x - torch.as_tensor(self.mean_x_, device=dev)
        if self.components_x_ is not None:
            x = x @ _basis_t(self.components_x_, dev)
        return x @ torch.as_tensor(self.R_, device=dev)

    def _transform_target_t(self, y):
        dev = y.device
        y = y - torch.as_tensor(self.mean_y_, device=dev)
        if self.components_y_ is not None:
            y = y @ _basis_t(self.components_y_, dev)
        return y

    def _widths(self):
        return self.mean_x_.shape[0], self.mean_y_.shape[0]


# ------------------------------------------------------------------------------------------------
# CCA
# ------------------------------------------------------------------------------------------------
class CCA(_Fitted):
    """Closed-form regularised canonical correlation analysis (METHODS.md section 2), float64 inside.

    On the anchors (centred with their means, which every transform reuses)::

        Sxx = Xc^T Xc / (n-1) + reg * (tr(Sxx) / p) I      (likewise Syy; the ridge is relative)
        Sxy = Xc^T Yc / (n-1)
        T = Sxx^{-1/2} Sxy Syy^{-1/2} = U S V^T              (inverse square roots by eigendecomposition)
        W_x = Sxx^{-1/2} U[:, :k],  W_y = Syy^{-1/2} V[:, :k],  canonical_correlations_ = S[:k]

    The projections are ``transform(X)`` (X side) and ``transform(Y, side="y")`` (Y side). With ``reg > 0`` the
    canonical correlations are *regularised*; :meth:`heldout_correlations` gives the plain correlation of each
    projected pair of columns on other rows. The top-``k`` directions of one decomposition are nested, so
    :meth:`truncate` returns the fit for a smaller ``k`` without refitting. Signs are fixed (the largest entry
    of each column of ``U`` is positive).

    Parameters
    ----------
    n_components : k, at most ``min(p, q)``.
    reg : relative ridge r >= 0. ``reg=0`` needs many more anchors than features (a warning says so when
        ``n_anchors < 10 max(p, q)``; a singular covariance raises :class:`DataError`).
    device : torch device (default :func:`core.device.pick_device`; MPS falls back to CPU for float64).

    Attributes
    ----------
    mean_x_, mean_y_, W_x_ (p x k), W_y_ (q x k), canonical_correlations_ (k,), n_anchors_.
    """

    _tensors = ("mean_x_", "mean_y_", "W_x_", "W_y_", "canonical_correlations_")
    _scalars = ("n_anchors_",)

    def __init__(self, n_components: int = 50, reg: float = 1e-3, device=None):
        self.n_components = n_components
        self.reg = reg
        self.device = device

    def fit_moments(self, moments: AnchorMoments) -> "CCA":
        m = moments
        k = _check_k(self.n_components, m.p, m.q, "CCA")
        if self.reg < 0:
            raise DataError(f"reg must be >= 0, got {self.reg}")
        if m.n < 2:
            raise DataError(f"CCA needs at least 2 anchor pairs, got {m.n}")
        if self.reg == 0 and m.n < 10 * max(m.p, m.q):
            warnings.warn(f"CCA with reg=0 on {m.n} anchors for {m.p} x {m.q} features: the covariances are "
                          "poorly estimated (or singular); use reg > 0 (e.g. 1e-3)", RuntimeWarning,
                          stacklevel=outside_stacklevel())
        Sxx, Syy, Sxy = (C / (m.n - 1) for C in (m.Cxx, m.Cyy, m.Cxy))
        Kx = _inv_sqrt(Sxx, self.reg, "X")
        Ky = _inv_sqrt(Syy, self.reg, "Y")
        U, S, Vh = torch.linalg.svd(Kx @ Sxy @ Ky, full_matrices=False)
        U, V = _fix_signs(U[:, :k], Vh[:k].T)
        self.W_x_ = _np(Kx @ U)
        self.W_y_ = _np(Ky @ V)
        self.canonical_correlations_ = _np(S[:k])
        self.mean_x_, self.mean_y_ = _np(m.mean_x), _np(m.mean_y)
        self.n_anchors_ = int(m.n)
        return self

    def truncate(self, k: int) -> "CCA":
        """The same fit keeping only the first ``k`` canonical directions (a new object)."""
        self._require_fitted()
        k = _check_k(k, self.W_x_.shape[1], self.W_y_.shape[1], "CCA")
        out = CCA(k, self.reg, self.device)
        out.W_x_, out.W_y_ = self.W_x_[:, :k], self.W_y_[:, :k]
        out.canonical_correlations_ = self.canonical_correlations_[:k]
        out.mean_x_, out.mean_y_, out.n_anchors_ = self.mean_x_, self.mean_y_, self.n_anchors_
        return out

    def project_moments(self, moments: AnchorMoments) -> AnchorMoments:
        """Moments of the projected anchors (needs the moments the fit came from)."""
        dev = moments.device
        return moments.project(torch.as_tensor(self.W_x_, device=dev), torch.as_tensor(self.W_y_, device=dev))

    def _transform_t(self, x):
        dev = x.device
        return (x - torch.as_tensor(self.mean_x_, device=dev)) @ torch.as_tensor(self.W_x_, device=dev)

    def _transform_target_t(self, y):
        dev = y.device
        return (y - torch.as_tensor(self.mean_y_, device=dev)) @ torch.as_tensor(self.W_y_, device=dev)

    def _widths(self):
        return self.W_x_.shape[0], self.W_y_.shape[0]

    def heldout_correlations(self, X, Y) -> np.ndarray:
        """Plain Pearson correlation of each projected column pair on (held-out) paired rows ``X``, ``Y``.

        Returns a (k,) float64 array (NaN where a projected column is constant).
        """
        self._require_fitted()
        _check_pair(X, Y, "rows")
        dev = self._dev()
        xr = self._transform_t(_f64(X, dev))
        yr = self._transform_target_t(_f64(Y, dev))
        xr = xr - xr.mean(0)
        yr = yr - yr.mean(0)
        den = xr.norm(dim=0) * yr.norm(dim=0)
        corr = (xr * yr).sum(0) / den
        corr[den == 0] = float("nan")
        return _np(corr)


def _inv_sqrt(S: torch.Tensor, reg: float, side: str) -> torch.Tensor:
    """``(S + reg tr(S)/p I)^{-1/2}`` by eigendecomposition; DataError if singular."""
    p = S.shape[0]
    S = S + float(reg) * (torch.trace(S) / p) * torch.eye(p, dtype=S.dtype, device=S.device)
    vals, vecs = torch.linalg.eigh(S)
    top = float(vals[-1])
    if top <= 0 or float(vals[0]) <= top * p * torch.finfo(torch.float64).eps * 10:
        raise DataError(f"the anchor covariance of {side} is singular (smallest eigenvalue {float(vals[0]):.3g}, "
                        f"largest {top:.3g}); CCA cannot whiten it",
                        hint="use a regularisation reg > 0 (e.g. 1e-3) or more anchors than features")
    return (vecs * vals.rsqrt()) @ vecs.T


# ------------------------------------------------------------------------------------------------
# local CKA
# ------------------------------------------------------------------------------------------------
class LocalCKA(_Fitted):
    """Local CKA (Maniparambil et al. 2024; paper A) by its linear-kernel closed form, in float64.

    ``score(x, y) = CKA([X_A; x], [Y_A; y])``: linear CKA of the anchors with one candidate pair appended.
    With anchors and candidates centred by the anchors' means, ``n = n_A``, ``c = n / (n + 1)``,
    ``A = X_A^T Y_A``, ``Gx = X_A^T X_A``, ``Gy = Y_A^T Y_A``::

        numerator = ||A||^2 + 2c x^T A y + c^2 ||x||^2 ||y||^2
        den_x = sqrt(||Gx||^2 + 2c x^T Gx x + c^2 ||x||^4)     (den_y likewise)
        score = numerator / (den_x den_y)

    :meth:`score_matrix` costs ``O(Q p q + Q^2)`` after the ``O(n_A p q)`` fit, always in float64 (float32
    rounding at 30k anchors exceeds the spread of the scores).

    Attributes
    ----------
    mean_x_, mean_y_, A_ (p x q), Gx_ (p x p), Gy_ (q x q), A_norm2_, Gx_norm2_, Gy_norm2_ (squared Frobenius
    norms, floats), n_anchors_.
    """

    _tensors = ("mean_x_", "mean_y_", "A_", "Gx_", "Gy_")
    _scalars = ("A_norm2_", "Gx_norm2_", "Gy_norm2_", "n_anchors_")

    def __init__(self, device=None):
        self.device = device

    def fit_moments(self, moments: AnchorMoments) -> "LocalCKA":
        m = moments
        self.mean_x_, self.mean_y_ = _np(m.mean_x), _np(m.mean_y)
        self.A_, self.Gx_, self.Gy_ = _np(m.Cxy), _np(m.Cxx), _np(m.Cyy)
        self.A_norm2_ = float((m.Cxy ** 2).sum())
        self.Gx_norm2_ = float((m.Cxx ** 2).sum())
        self.Gy_norm2_ = float((m.Cyy ** 2).sum())
        self.n_anchors_ = int(m.n)
        return self

    def _widths(self):
        return self.A_.shape[0], self.A_.shape[1]

    def _transform_t(self, x: torch.Tensor) -> torch.Tensor:
        return x      # local CKA scores raw rows: both sides' coordinates are the rows themselves

    def _score_t(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        dev = x.device
        t = lambda a: torch.as_tensor(a, device=dev)  # noqa: E731
        x = x - t(self.mean_x_)
        y = y - t(self.mean_y_)
        n = self.n_anchors_
        c = n / (n + 1.0)
        nx = (x * x).sum(1)
        ny = (y * y).sum(1)
        num = self.A_norm2_ + 2 * c * ((x @ t(self.A_)) @ y.T) + (c * c) * torch.outer(nx, ny)
        dx = torch.sqrt(self.Gx_norm2_ + 2 * c * ((x @ t(self.Gx_)) * x).sum(1) + (c * c) * nx * nx)
        dy = torch.sqrt(self.Gy_norm2_ + 2 * c * ((y @ t(self.Gy_)) * y).sum(1) + (c * c) * ny * ny)
        return num / torch.outer(dx, dy)

    def score_matrix(self, X_query, Y_query) -> np.ndarray:
        """Local CKA of every X query (row) with every Y query (column): ``Q_x x Q_y`` float64 array."""
        self._require_fitted()
        _check_width(X_query, self.A_.shape[0], "X queries")
        _check_width(Y_query, self.A_.shape[1], "Y queries")
        dev = self._dev()
        return _np(self._score_t(_f64(X_query, dev), _f64(Y_query, dev)))


# ------------------------------------------------------------------------------------------------
# the composed methods of paper A
# ------------------------------------------------------------------------------------------------
_ALIASES = {"cca+affine": "cca_affine", "cca+local_cka": "cca_local_cka", "localcka": "local_cka",
            "pca+affine": "pca_affine", "cosine": "none", "raw": "none"}


def normalize_method(method: str) -> str:
    """Canonical method name: lower case, '-' -> '_' (``cca-affine`` -> ``cca_affine``)."""
    name = str(method).strip().lower().replace("-", "_")
    name = _ALIASES.get(name, name)
    if name not in METHODS:
        raise DataError(f"unknown alignment method {method!r}", hint=f"use one of {', '.join(METHODS)}")
    return name


class PairwiseAligner(_Fitted):
    """One of paper A's alignment methods, fitted once on anchors and reusable on any query sets.

    Methods (rows of the score matrix are X queries, columns Y queries; X is the source, as paper A's
    Text -> 3D direction):

    ``"none"``          cosine in the raw spaces (needs ``p == q``; nothing is fitted).
    ``"affine"``        :class:`AffineMap` X -> Y on the full spaces; cosine of ``T(x)`` with raw ``y``.
    ``"pca_affine"``    PCA of each side to ``k`` (:class:`PairedPCA`), affine map between the PCA coordinates,
                        cosine there ("affine on PCA-k", the curve over ``k`` of paper A's affine baseline).
    ``"procrustes"``    :class:`ProcrustesMap` (PCA of both sides to ``min(p, q)`` when ``p != q``); cosine.
    ``"local_cka"``     :class:`LocalCKA` on the full spaces.
    ``"cca_affine"``    :class:`CCA` to ``k``, then an affine map in the subspace; cosine.
    ``"cca_local_cka"`` :class:`CCA` to ``k``, then local CKA in the subspace.

    Parameters
    ----------
    method : one of :data:`METHODS` ('-' and '_' are interchangeable).
    k : subspace dimension for ``pca_affine`` and the ``cca_*`` methods (ignored by the others).
    reg : CCA's relative ridge.  ridge : the affine map's relative ridge.

    Attributes
    ----------
    method_ : canonical method name.  projector_ : fitted :class:`CCA` / :class:`PairedPCA` or None.
    map_ : fitted :class:`AffineMap` / :class:`ProcrustesMap` / :class:`LocalCKA` or None.
    p_, q_ : input widths.  n_anchors_.
    """

    _scalars = ("method_", "p_", "q_", "n_anchors_")

    def __init__(self, method: str = "cca_affine", k: int | None = 50, reg: float = 1e-3, ridge: float = 0.0,
                 device=None):
        self.method = method
        self.k = k
        self.reg = reg
        self.ridge = ridge
        self.device = device

    _fitted_attributes = ("method_",)

    @property
    def uses_k(self) -> bool:
        return normalize_method(self.method) in K_METHODS

    def fit_moments(self, moments: AnchorMoments, projector=None) -> "PairwiseAligner":
        """Fit from :class:`AnchorMoments`. ``projector`` may pass an already fitted CCA / PairedPCA (fitted on
        the same moments, e.g. ``cca.truncate(k)``) to skip refitting it."""
        method = normalize_method(self.method)
        m = moments
        self.projector_ = None
        self.map_ = None
        if method == "none":
            if m.p != m.q:
                raise DataError(f"'none' compares raw spaces by cosine and needs equal widths, got p={m.p}, "
                                f"q={m.q}", hint="pick an alignment method, e.g. cca_affine")
        elif method in ("affine", "local_cka"):
            self.map_ = (AffineMap(self.ridge, self.device) if method == "affine"
                         else LocalCKA(self.device)).fit_moments(m)
        elif method == "procrustes":
            self.map_ = ProcrustesMap(None, self.device).fit_moments(m)
        else:
            if projector is None:
                projector = (PairedPCA(self.k, self.device) if method == "pca_affine"
                             else CCA(self.k, self.reg, self.device)).fit_moments(m)
            pm = projector.project_moments(m)
            self.projector_ = projector
            self.map_ = (LocalCKA(self.device) if method == "cca_local_cka"
                         else AffineMap(self.ridge, self.device)).fit_moments(pm)
        self.method_ = method
        self.p_, self.q_ = m.p, m.q
        self.n_anchors_ = int(m.n)
        return self

    # -- the coordinates scores are computed in ---------------------------------------------------
    def _coords_t(self, x: torch.Tensor | None, y: torch.Tensor | None):
        method = self.method_
        if self.projector_ is not None:
            x = None if x is None else self.projector_._transform_t(x)
            y = None if y is None else self.projector_._transform_target_t(y)
        if method in ("affine", "pca_affine", "cca_affine") and x is not None:
            x = self.map_._transform_t(x)
        if method == "procrustes":
            x = None if x is None else self.map_._transform_t(x)
            y = None if y is None else self.map_._transform_target_t(y)
        return x, y

    def _widths(self):
        return self.p_, self.q_

    def transform(self, X, side: str = "x") -> np.ndarray:
        """Rows of one side in the coordinates the scores use: ``side="x"`` (default) X rows mapped into Y's space
        / the common subspace, ``side="y"`` Y rows there. For ``local_cka`` these are the raw rows, for
        ``cca_local_cka`` the CCA coordinates."""
        side = _check_side(side)
        self._require_fitted()
        _check_width(X, self._widths()[0 if side == "x" else 1], side.upper())
        t = _f64(X, self._dev())
        x, y = self._coords_t(t, None) if side == "x" else self._coords_t(None, t)
        return _np(x if side == "x" else y)

    def score_matrix(self, X_query, Y_query) -> np.ndarray:
        """Scores of every X query (rows) against every Y query (columns), ``Q_x x Q_y`` float64 array.

        Cosine for the map-based methods, local CKA for ``local_cka`` / ``cca_local_cka``.
        """
        self._require_fitted()
        _check_width(X_query, self.p_, "X queries")
        _check_width(Y_query, self.q_, "Y queries")
        dev = self._dev()
        x, y = self._coords_t(_f64(X_query, dev), _f64(Y_query, dev))
        if self.method_ in ("local_cka", "cca_local_cka"):
            return _np(self.map_._score_t(x, y))
        return _np(_cosine_t(x, y))

    # save/load of the nested parts
    def _state(self):
        self._require_fitted()
        tensors, parts = {}, {}
        for role in ("projector_", "map_"):
            part = getattr(self, role)
            if part is None:
                parts[role] = None
                continue
            t, s = part._state()
            tensors.update({f"{role}.{name}": v for name, v in t.items()})
            parts[role] = {"class": type(part).__name__, "params": _json_params(part), "state": s}
        scalars = {name: getattr(self, name) for name in self._scalars}
        scalars["parts"] = parts
        return tensors, scalars

    def _set_state(self, tensors: dict, scalars: dict):
        for name in self._scalars:
            setattr(self, name, scalars[name])
        for role, info in scalars["parts"].items():
            if info is None:
                setattr(self, role, None)
                continue
            sub = {name[len(role) + 1:]: v for name, v in tensors.items() if name.startswith(role + ".")}
            setattr(self, role, _build(info["class"], info["params"], sub, info["state"], self.device))
        return self


def score_matrix(method: str, X_anchor, Y_anchor, X_query, Y_query, k: int | None = 50, reg: float = 1e-3,
                 ridge: float = 0.0, device=None) -> np.ndarray:
    """Fit ``method`` on the anchors and score every X query against every Y query.

    Parameters
    ----------
    method : one of :data:`METHODS` (see :class:`PairwiseAligner`).
    X_anchor, Y_anchor : paired anchors (n x p, n x q).
    X_query, Y_query : queries (Q_x x p, Q_y x q); row i of each is the true pair when Q_x == Q_y.
    k : subspace dimension (``pca_affine``, ``cca_affine``, ``cca_local_cka``).
    reg, ridge : CCA and affine relative ridges.

    Returns
    -------
    ``Q_x x Q_y`` float64 array; row = X query (source), column = Y query (target).
    """
    return PairwiseAligner(method, k=k, reg=reg, ridge=ridge, device=device).fit(
        X_anchor, Y_anchor).score_matrix(X_query, Y_query)


# ------------------------------------------------------------------------------------------------
# save / load (safetensors + JSON metadata; never pickle)
# ------------------------------------------------------------------------------------------------
_CLASSES = {cls.__name__: cls for cls in (AffineMap, ProcrustesMap, PairedPCA, CCA, LocalCKA, PairwiseAligner)}


def _json_params(obj) -> dict:
    params = obj.get_params(deep=False)
    params.pop("device", None)
    return params


def _build(class_name: str, params: dict, tensors: dict, scalars: dict, device=None):
    cls = _CLASSES.get(class_name)
    if cls is None:
        raise DataError(f"unknown map class {class_name!r} in a saved map",
                        hint=f"known classes: {', '.join(_CLASSES)}")
    obj = cls(**params, device=device)
    return obj._set_state(tensors, scalars)


def save_map(obj, path) -> Path:
    """Save a fitted map (any estimator of this module) to ``path`` as safetensors.

    Tensors are stored as float64 arrays; the class name, hyper-parameters, scalar fitted attributes and the
    format version go into the safetensors metadata as JSON. Returns the path written.
    """
    from safetensors.numpy import save_file

    from . import __version__
    from .export import json_safe

    if type(obj).__name__ not in _CLASSES:
        raise TypeError(f"cannot save a {type(obj).__name__}; expected one of {', '.join(_CLASSES)}")
    tensors, scalars = obj._state()
    meta = {"format": _FORMAT, "format_version": str(_FORMAT_VERSION), "platoscope_version": __version__,
            "class": type(obj).__name__, "params": json.dumps(json_safe(_json_params(obj))),
            "state": json.dumps(json_safe(scalars))}
    path = Path(path)
    save_file({name: np.ascontiguousarray(v) for name, v in tensors.items()}, str(path), metadata=meta)
    return path


def load_map(path, device=None):
    """Load a map written by :func:`save_map` (no unpickling). Raises :class:`DataError` on a foreign file."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except FileNotFoundError:
        raise DataError("file not found", file=path.name) from None
    except Exception as exc:  # safetensors raises its own error types for malformed files
        raise DataError(f"not a readable safetensors file ({exc})", file=path.name) from None
    if meta.get("format") != _FORMAT:
        raise DataError("this safetensors file is not a Platoscope map (no 'format' metadata)", file=path.name,
                        hint="save maps with core.align.save_map or `platoscope align --save`")
    if int(meta.get("format_version", "0")) > _FORMAT_VERSION:
        raise DataError(f"map format version {meta['format_version']} is newer than this Platoscope "
                        f"understands ({_FORMAT_VERSION})", file=path.name, hint="upgrade Platoscope")
    if int(meta.get("format_version", "0")) < 2:    # version 1 kept PCA bases d x k (columns)
        tensors = {name: (v.T if name in ("components_x_", "components_y_") else v) for name, v in tensors.items()}
    return _build(meta["class"], json.loads(meta["params"]), tensors, json.loads(meta["state"]), device)
