"""2-D maps of a space: PCA (exact, streaming, instant) and UMAP (on request, cached on disk).

``PCAProjection`` accumulates the mean and the d x d covariance in float64 over row chunks, so memory-mapped
spaces of any length project without being loaded whole. Signs are fixed (the largest-magnitude loading of each
component is positive) so maps do not flip between runs.
"""
from __future__ import annotations

import numpy as np
import torch

from .base import Estimator
from .device import pick_float64_device, to_numpy
from .moments import StreamingMoments
from .numerics import pca_components


class PCAProjection(Estimator):
    """Principal component projection (exact, via the eigendecomposition of the covariance).

    Parameters
    ----------
    n_components : number of components kept.
    chunk_rows : rows per chunk when accumulating the covariance and projecting.
    device : torch device (default: :func:`core.device.pick_device`).

    Attributes
    ----------
    mean_ : (d,) column means.
    components_ : (n_components, d) principal axes, unit norm.
    explained_variance_ : (n_components,) variances along the axes (divided by n - 1).
    explained_variance_ratio_ : (n_components,) share of the total variance.
    """

    def __init__(self, n_components: int = 2, chunk_rows: int = 65536, device=None):
        self.n_components = n_components
        self.chunk_rows = chunk_rows
        self.device = device

    _fitted_attributes = ("components_",)
    _fit_call = "fit(X)"

    def fit(self, X, y=None) -> "PCAProjection":
        n, d = X.shape
        if n < 2:
            raise ValueError("PCA needs at least 2 rows")
        k = min(self.n_components, d)
        m = StreamingMoments(pick_float64_device(self.device), self.chunk_rows).update(X)
        cov = m.cxx() / (n - 1)
        evals, comps = pca_components(cov)          # descending, signs fixed (largest loading positive)
        evals, comps = evals.clamp_min(0), comps[:k]
        total = torch.clamp(evals.sum(), min=1e-300)
        self.mean_ = to_numpy(m.mean_x())
        self.components_ = to_numpy(comps)
        self.explained_variance_ = to_numpy(evals[:k])
        self.explained_variance_ratio_ = to_numpy(evals[:k] / total)
        return self

    def transform(self, X) -> np.ndarray:
        self._require_fitted()
        out = np.empty((X.shape[0], self.components_.shape[0]), dtype=np.float64)
        for start in range(0, X.shape[0], self.chunk_rows):
            block = np.asarray(X[start:start + self.chunk_rows], dtype=np.float64) - self.mean_
            out[start:start + self.chunk_rows] = block @ self.components_.T
        return out

    def fit_transform(self, X, y=None) -> np.ndarray:
        return self.fit(X).transform(X)


def sample_rows(n: int, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of at most ``max_rows`` of ``n`` rows (all rows when n <= max_rows)."""
    if max_rows is None or n <= max_rows:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))


def umap_embedding(X, *, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                   seed: int = 0) -> np.ndarray:
    """2-D UMAP coordinates of ``X`` (umap-learn; seeded, so repeatable on one machine).

    The first call in a process compiles numba code (about a minute); use :func:`cached_umap_embedding`.
    """
    import umap  # imported lazily: numba compilation is slow

    X = np.asarray(X, dtype=np.float32)
    n_neighbors = int(max(2, min(n_neighbors, X.shape[0] - 1)))
    reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                        random_state=seed, n_jobs=1)
    return reducer.fit_transform(X).astype(np.float64)


def _umap_for_key(key: str, n_neighbors: int, min_dist: float, metric: str, seed: int, X) -> np.ndarray:
    # ``key`` (sha256 of the input bytes) identifies X in the cache; X itself is excluded from the hash.
    return umap_embedding(X, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric, seed=seed)


def cached_umap_embedding(X, key: str, *, namespace: str = "shared", n_neighbors: int = 15,
                          min_dist: float = 0.1, metric: str = "cosine", seed: int = 0) -> np.ndarray:
    """:func:`umap_embedding` cached on disk under ``namespace``, keyed by ``key`` + the parameters.

    ``key`` must identify the bytes of ``X`` (e.g. ``Dataset.space_fingerprint(name)`` plus the row sample).
    """
    from .cache import get_memory

    fn = get_memory(namespace).cache(_umap_for_key, ignore=["X"])
    return fn(key, n_neighbors, min_dist, metric, seed, X)


def is_umap_cached(key: str, *, namespace: str = "shared", n_neighbors: int = 15, min_dist: float = 0.1,
                   metric: str = "cosine", seed: int = 0) -> bool:
    """Whether :func:`cached_umap_embedding` would answer from disk (so the app can skip the progress UI)."""
    from .cache import get_memory

    fn = get_memory(namespace).cache(_umap_for_key, ignore=["X"])
    return fn.check_call_in_cache(key, n_neighbors, min_dist, metric, seed, None)


def points_in_polygon(coords, polygon) -> np.ndarray:
    """Boolean mask of the 2-D ``coords`` (n x 2) inside ``polygon`` (m x 2 vertices, closed implicitly).

    Even-odd rule (a point on the boundary may fall either way); points outside the polygon's bounding box are
    discarded first, so a small lasso over a million points costs one pass over the coordinates. This is the rule
    the map component applies in the browser to highlight the same points.
    """
    P = np.asarray(coords, dtype=np.float64)
    V = np.asarray(polygon, dtype=np.float64)
    if P.ndim != 2 or P.shape[1] != 2:
        raise ValueError(f"coords must be n x 2, got shape {P.shape}")
    if V.ndim != 2 or V.shape[1] != 2 or len(V) < 3 or not np.isfinite(V).all():
        return np.zeros(len(P), dtype=bool)
    lo, hi = V.min(axis=0), V.max(axis=0)
    cand = np.flatnonzero((P[:, 0] >= lo[0]) & (P[:, 0] <= hi[0]) & (P[:, 1] >= lo[1]) & (P[:, 1] <= hi[1]))
    x, y = P[cand, 0], P[cand, 1]
    inside = np.zeros(len(cand), dtype=bool)
    xa, ya = V[:, 0], V[:, 1]
    xb, yb = np.roll(xa, 1), np.roll(ya, 1)
    for i in range(len(V)):
        crosses = (ya[i] > y) != (yb[i] > y)
        if not crosses.any():
            continue
        with np.errstate(divide="ignore", invalid="ignore"):
            xc = xa[i] + (y - ya[i]) * (xb[i] - xa[i]) / (yb[i] - ya[i])
        inside ^= crosses & (x < xc)
    out = np.zeros(len(P), dtype=bool)
    out[cand[inside]] = True
    return out


def nearest_point(coords, x: float, y: float, radius: float) -> int | None:
    """Index of the point of ``coords`` (n x 2) nearest to ``(x, y)`` within ``radius``, or None."""
    P = np.asarray(coords, dtype=np.float64)
    if not len(P) or not all(np.isfinite(v) for v in (x, y, radius)):
        return None
    d2 = (P[:, 0] - x) ** 2 + (P[:, 1] - y) ** 2
    i = int(np.argmin(d2))
    return i if d2[i] <= radius * radius else None
