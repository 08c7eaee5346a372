"""Pre-processing applied to every space before a measure (the Platonic Representation code's; paper A preset)."""
from __future__ import annotations

import numpy as np

from ..errors import DataError
from ._common import _as_array


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
