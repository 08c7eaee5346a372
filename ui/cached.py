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


# -- results computed with progress ----------------------------------------------------------------
import hashlib as _hashlib
import json as _json
from collections import OrderedDict as _OrderedDict

_MAX_RESULTS = 64


@st.cache_resource(show_spinner=False)
def _shared_results() -> "_OrderedDict[str, object]":
    """Server-wide results for the demo and server-side datasets (keys include the data's sha256)."""
    return _OrderedDict()


def _results_store(namespace: str) -> "_OrderedDict[str, object]":
    if namespace == "shared":
        return _shared_results()
    return st.session_state.setdefault("platoscope_results", _OrderedDict())


def result_key(*parts) -> str:
    return _hashlib.sha256(_json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


def has_result(namespace: str, key: str) -> bool:
    return key in _results_store(namespace)


def remember(namespace: str, key: str, value) -> None:
    """Keep a finished result in memory (server-wide for shared data, in the session for uploads)."""
    store = _results_store(namespace)
    store[key] = value
    store.move_to_end(key)
    while len(store) > _MAX_RESULTS:
        store.popitem(last=False)


def computed(namespace: str, key: str, label: str, compute):
    """Run ``compute(progress)`` once per ``key`` (a sha256 of data fingerprint + parameters), with progress.

    Results of shared datasets are kept server-wide; those of uploads only in the session (so "forget my
    data" and the session's end drop them). ``progress`` is a tqdm-like wrapper ``progress(iterable,
    total=None, desc="")`` that drives an ``st.progress`` bar inside an ``st.status`` box.
    """
    store = _results_store(namespace)
    if key in store:
        store.move_to_end(key)
        return store[key]
    with st.status(label, expanded=True) as status:
        bar = st.progress(0.0, text=label)

        def progress(iterable, total=None, desc=""):
            items = iterable
            if total is None:
                try:
                    total = len(iterable)
                except TypeError:
                    total = None
            for i, item in enumerate(items):
                yield item
                if total:
                    bar.progress(min(1.0, (i + 1) / total), text=f"{desc or label} {i + 1}/{total}")

        result = compute(progress)
        bar.progress(1.0, text="done")
        status.update(label=f"{label}: done", state="complete", expanded=False)
    store[key] = result
    while len(store) > _MAX_RESULTS:
        store.popitem(last=False)
    return result
