"""Cached wrappers around core for the pages.

Keys are content hashes (``Dataset.fingerprint`` = sha256 of the input bytes) plus parameters; the arrays
themselves travel as underscore-prefixed, unhashed arguments (Streamlit would otherwise sample them).
Expensive results also go to the on-disk cache (core.cache) in the dataset's namespace.
"""
from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.dataset import Dataset
from core import projection

MAX_MAP_POINTS = 50_000
MAX_UMAP_POINTS = 20_000


@st.cache_data(show_spinner="Summarising spaces ...", max_entries=64)
def summary_table(fingerprint: str, _ds: Dataset) -> pd.DataFrame:
    from core.summary import summarize_dataset

    return summarize_dataset(_ds)


def _rows(ds: Dataset, cap: int) -> np.ndarray:
    return projection.sample_rows(ds.n, cap, seed=0)


@st.cache_data(show_spinner="Projecting with PCA ...", max_entries=64)
def pca_map(fingerprint: str, space: str, max_points: int, _ds: Dataset) -> dict:
    """PCA fitted on every row (streaming); coordinates of a seeded sample of at most ``max_points`` rows."""
    sp = _ds[space]
    X = sp.vectors() if sp.kind == "tokens" else sp.data
    pca = projection.PCAProjection(2).fit(X)
    rows = _rows(_ds, max_points)
    coords = pca.transform(np.asarray(X[rows]) if sp.kind == "vectors" else X[rows])
    return {"rows": rows, "coords": coords, "explained": pca.explained_variance_ratio_.tolist(),
            "method": "PCA", "n_total": _ds.n}


def umap_is_cached(ds: Dataset, space: str, namespace: str, max_points: int, **params) -> bool:
    return projection.is_umap_cached(_umap_key(ds, space, max_points), namespace=namespace, **params)


def _umap_key(ds: Dataset, space: str, max_points: int) -> str:
    return f"{ds.space_fingerprint(space)}-rows{min(ds.n, max_points)}"


@st.cache_data(show_spinner=False, max_entries=32)
def umap_map(fingerprint: str, space: str, max_points: int, namespace: str, n_neighbors: int,
             min_dist: float, _ds: Dataset) -> dict:
    sp = _ds[space]
    rows = _rows(_ds, max_points)
    X = sp.vectors()[rows] if sp.kind == "tokens" else np.asarray(sp.data[rows], dtype=np.float32)
    coords = projection.cached_umap_embedding(X, _umap_key(_ds, space, max_points), namespace=namespace,
                                              n_neighbors=n_neighbors, min_dist=min_dist)
    return {"rows": rows, "coords": coords, "explained": None, "method": "UMAP", "n_total": _ds.n}
