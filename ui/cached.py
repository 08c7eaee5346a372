"""Cached wrappers around core for the pages.

Keys are content hashes (``Dataset.fingerprint`` = sha256 of the input bytes) plus parameters; the arrays
themselves travel as underscore-prefixed, unhashed arguments (Streamlit would otherwise sample them).
Expensive results also go to the on-disk cache (core.cache) in the dataset's namespace.

Forgetting is per session: :func:`forgettable` records which entries of the in-memory caches a session's uploads
created, :func:`result_key` which result keys name its uploads' fingerprints, and :func:`forget_session_results`
removes exactly those (never a whole cache other sessions use). Shared results are computed once: a lock per
result key makes concurrent first requests wait for one computation.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
import threading

import numpy as np
import pandas as pd
import streamlit as st

from core.dataset import Dataset
from core import projection
from ui.text import md

_CALLS_KEY = "platoscope_cache_calls"


def _is_private(bound: inspect.BoundArguments) -> bool:
    for name, value in bound.arguments.items():
        if isinstance(value, Dataset) and value.origin not in ("demo", "server"):
            return True
        if name == "namespace" and isinstance(value, str) and value.startswith("session-"):
            return True
    return False


def forgettable(cached_func):
    """Wrap an ``st.cache_data`` function so that entries made for this session's uploads can be forgotten
    one by one (``cached_func.clear(*args)`` with the same hashed arguments), not with a global clear."""
    signature = inspect.signature(cached_func.__wrapped__ if hasattr(cached_func, "__wrapped__") else cached_func)

    @functools.wraps(cached_func)
    def wrapper(*args, **kwargs):
        try:
            bound = signature.bind(*args, **kwargs)
        except TypeError:
            return cached_func(*args, **kwargs)
        if _is_private(bound):
            # the call exactly as Streamlit hashes it (positional names, keyword order), big arrays left out
            names = list(signature.parameters)
            masked_args = tuple(None if i < len(names) and names[i].startswith("_") else a
                                for i, a in enumerate(args))
            masked_kwargs = {k: (None if k.startswith("_") else v) for k, v in kwargs.items()}
            calls = st.session_state.setdefault(_CALLS_KEY, [])
            if not any(f is cached_func and a == masked_args and k == masked_kwargs for f, a, k in calls):
                calls.append((cached_func, masked_args, masked_kwargs))
        return cached_func(*args, **kwargs)

    wrapper.clear = cached_func.clear
    return wrapper

MAX_MAP_POINTS = 50_000
MAX_UMAP_POINTS = 20_000


@forgettable
@st.cache_data(show_spinner="Summarising spaces ...", max_entries=64)
def summary_table(fingerprint: str, _ds: Dataset) -> pd.DataFrame:
    from core.summary import summarize_dataset

    return summarize_dataset(_ds)


def _rows(ds: Dataset, cap: int) -> np.ndarray:
    return projection.sample_rows(ds.n, cap, seed=0)


def pca_fit(ds: Dataset, space: str) -> projection.PCAProjection:
    """The 2-component PCA of every row of ``space`` (streaming); safe to call from a job thread."""
    sp = ds[space]
    return projection.PCAProjection(2).fit(sp.vectors() if sp.kind == "tokens" else sp.data)


@forgettable
@st.cache_data(show_spinner="Projecting with PCA ...", max_entries=64)
def pca_map(fingerprint: str, space: str, max_points: int, _ds: Dataset, _pca=None) -> dict:
    """PCA fitted on every row (streaming); coordinates of a seeded sample of at most ``max_points`` rows.

    ``_pca``: the :func:`pca_fit` of this space when already fitted (e.g. by a job, see
    :func:`ui.maps.pca_map_or_progress`); the map is the same either way."""
    sp = _ds[space]
    X = sp.vectors() if sp.kind == "tokens" else sp.data
    pca = _pca if _pca is not None else pca_fit(_ds, space)
    rows = _rows(_ds, max_points)
    coords = pca.transform(np.asarray(X[rows]) if sp.kind == "vectors" else X[rows])
    return {"rows": rows, "coords": coords, "explained": pca.explained_variance_ratio_.tolist(),
            "method": "PCA", "n_total": _ds.n}


def umap_is_cached(ds: Dataset, space: str, namespace: str, max_points: int, **params) -> bool:
    return projection.is_umap_cached(_umap_key(ds, space, max_points), namespace=namespace, **params)


def _umap_key(ds: Dataset, space: str, max_points: int) -> str:
    return f"{ds.space_fingerprint(space)}-rows{min(ds.n, max_points)}"


def umap_result(ds: Dataset, space: str, max_points: int, namespace: str, n_neighbors: int,
                min_dist: float) -> dict:
    """UMAP of a seeded sample of rows (disk-cached by core.projection); safe to call from a job thread."""
    sp = ds[space]
    rows = _rows(ds, max_points)
    X = sp.vectors()[rows] if sp.kind == "tokens" else np.asarray(sp.data[rows], dtype=np.float32)
    coords = projection.cached_umap_embedding(X, _umap_key(ds, space, max_points), namespace=namespace,
                                              n_neighbors=n_neighbors, min_dist=min_dist)
    return {"rows": rows, "coords": coords, "explained": None, "method": "UMAP", "n_total": ds.n}


@forgettable
@st.cache_data(show_spinner=False, max_entries=32)
def umap_map(fingerprint: str, space: str, max_points: int, namespace: str, n_neighbors: int,
             min_dist: float, _ds: Dataset) -> dict:
    return umap_result(_ds, space, max_points, namespace, n_neighbors, min_dist)


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


_KEYS_KEY = "platoscope_upload_keys"


def result_key(*parts) -> str:
    """sha256 of the parts; a key naming one of this session's uploads' fingerprints is remembered for Forget."""
    text = _json.dumps(parts, sort_keys=True, default=str)
    key = _hashlib.sha256(text.encode()).hexdigest()
    try:
        from ui.data import session_fingerprints

        if any(fp and fp in text for fp in session_fingerprints()):
            keys = st.session_state.setdefault(_KEYS_KEY, set())
            keys.add(key)
    except Exception:  # noqa: BLE001 - outside a session
        pass
    return key


class _KeyLock:
    """One result key's lock and how many callers hold it or wait for it (guarded by ``_LOCKS_GUARD``)."""

    __slots__ = ("lock", "users")

    def __init__(self):
        self.lock = threading.Lock()
        self.users = 0


#: the locks of result keys being computed now, shared by every session of the process; an entry goes when its
#: last holder or waiter is done (``users`` counts both), so the table holds only keys in use
_LOCKS: dict[str, _KeyLock] = {}
_LOCKS_GUARD = threading.Lock()


@contextlib.contextmanager
def key_locked(key: str, on_wait=None):
    """Hold the lock of one result key (created on first use); ``on_wait()``, a context manager, is entered
    while waiting for another holder (e.g. a spinner). The entry is removed once nobody holds it or waits for
    it: a waiter counts from before it asks for the lock, so no lock is dropped while held or awaited, and
    callers of one key always share one lock."""
    with _LOCKS_GUARD:
        entry = _LOCKS.get(key)
        if entry is None:
            entry = _LOCKS[key] = _KeyLock()
        entry.users += 1
    try:
        if not entry.lock.acquire(blocking=False):
            with (on_wait() if on_wait is not None else contextlib.nullcontext()):
                entry.lock.acquire()
        try:
            yield
        finally:
            entry.lock.release()
    finally:
        with _LOCKS_GUARD:
            entry.users -= 1
            if entry.users == 0 and _LOCKS.get(key) is entry:
                del _LOCKS[key]


def _pop(state, key, default=None):
    """``state.pop(key, default)`` for st.session_state and for a session's own state object (which has no pop)."""
    if key in state:
        value = state[key]
        del state[key]
        return value
    return default


def forget_session_results(fingerprints: set[str] | None = None, state=None) -> int:
    """Remove this session's results: its result store, shared-store entries keyed by its uploads, and the
    in-memory cache entries its uploads created. Returns how many entries were removed.

    ``state``: the session state to read them from (default this script run's ``st.session_state``; the sweeper
    passes an ended session's own)."""
    state = st.session_state if state is None else state
    removed = 0
    own = _pop(state, "platoscope_results")
    removed += len(own or ())
    removed += len(_pop(state, _DRAWINGS_KEY) or ())
    keys = _pop(state, _KEYS_KEY, set())
    shared = _shared_results()
    for key in keys:
        if shared.pop(key, None) is not None:
            removed += 1
        try:  # the shared on-disk result store (background jobs) too
            from core import cache as core_cache

            path = core_cache.cache_root() / "shared" / "results" / f"{key}.joblib"
            if path.exists():
                path.unlink()
                removed += 1
        except OSError:
            pass
    for cached_func, args, kwargs in _pop(state, _CALLS_KEY, []):
        try:
            cached_func.clear(*args, **kwargs)
            removed += 1
        except Exception:  # noqa: BLE001 - an entry already evicted
            pass
    return removed


# -- drawings kept across reruns and sessions -------------------------------------------------------
#: Built figures and map payloads kept per store (server-wide for shared data, per session for uploads).
MAX_DRAWINGS = 24
_DRAWINGS_KEY = "platoscope_drawings"
_DRAWINGS_LOCK = threading.Lock()


@st.cache_resource(show_spinner=False)
def _shared_drawings() -> "_OrderedDict[str, object]":
    return _OrderedDict()


def drawn(namespace: str, key: str, build):
    """``build()`` once per ``key`` (a :func:`result_key` of the result's own key and every drawing option): a
    built, escaped figure, or a map's compact payload, kept so that a rerun, a second visit or a second browser
    on the same shared dataset draws without rebuilding (building and escaping a 31,000-point figure took about
    0.5 s of every script run). Shared datasets' drawings are kept server-wide; uploads' only in the session
    (dropped by "forget my data" and with the session). The kept object is shared: callers must not change it."""
    shared = namespace == "shared"
    store = _shared_drawings() if shared else st.session_state.setdefault(_DRAWINGS_KEY, _OrderedDict())
    with _DRAWINGS_LOCK:
        if key in store:
            store.move_to_end(key)
            return store[key]
    value = build()
    with _DRAWINGS_LOCK:
        store[key] = value
        store.move_to_end(key)
        while len(store) > MAX_DRAWINGS:
            store.popitem(last=False)
    return value


def hover_texts(ds: Dataset) -> list[str]:
    """``ds.hover_text()`` (one short text per item), built once per dataset (see :func:`drawn`)."""
    from ui.data import cache_namespace

    return drawn(cache_namespace(ds), result_key("hover_text", ds.fingerprint), ds.hover_text)


def label_columns(ds: Dataset, max_levels: int = 200) -> list[str]:
    """Metadata columns that can label items (e.g. for clustering): 2 to ``max_levels`` distinct values, and fewer
    distinct values than items; found once per dataset (see :func:`drawn`), not on every script run (one
    ``nunique`` per column over 31,000 rows took 0.17 s of each Universe run)."""
    from ui.data import cache_namespace

    def labels_items(column: str) -> bool:
        levels = ds.items[column].nunique(dropna=True)
        return 2 <= levels <= max_levels and levels < ds.n

    def find() -> list[str]:
        return [c for c in ds.metadata_columns() if labels_items(c)]

    return list(drawn(cache_namespace(ds), result_key("label_columns", ds.fingerprint, max_levels), find))


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
    if namespace != "shared":
        return _compute_into(store, key, label, compute)
    with key_locked(key, lambda: st.spinner(f"{md(label)}: another session is computing this result; "
                                            "waiting for it ...")):
        if key in store:  # computed meanwhile by the session we waited for
            store.move_to_end(key)
            return store[key]
        return _compute_into(store, key, label, compute)


def _compute_into(store, key: str, label: str, compute):
    with st.status(md(label), expanded=True) as status:
        bar = st.progress(0.0, text=md(label))

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
                    bar.progress(min(1.0, (i + 1) / total), text=f"{md(desc or label)} {i + 1}/{total}")

        result = compute(progress)
        bar.progress(1.0, text="done")
        status.update(label=f"{md(label)}: done", state="complete", expanded=False)
    store[key] = result
    while len(store) > _MAX_RESULTS:
        store.popitem(last=False)
    return result
