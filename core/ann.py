"""Nearest-neighbour indexes (faiss) for the Query and Neighbours views when a space has many items.

Exact top-k in torch (:func:`core.retrieval.top_k` over a full ``Q x n`` score block) is right for the demo and
for studies of a few 10^4 items. At 10^6 items it holds the whole space in float64 per call and sorts a million
scores per query; the views then use a faiss index, built once per space and cached on disk:

* ``n < ANN_MIN_N`` (100,000): no index; the exact torch path of :mod:`core.retrieval`, unchanged;
* ``ANN_MIN_N <= n <= FLAT_MAX_N`` (300,000): ``IndexFlatIP`` / ``IndexFlatL2`` - exact, faster than torch on CPU;
* ``n > FLAT_MAX_N``: ``IndexIVFFlat`` (inverted lists over a k-means coarse quantiser, full vectors in the lists),
  ``nlist = 4 sqrt(n)`` clusters trained on a seeded sample of ``min(n, 64 nlist)`` rows, ``nprobe = 48`` lists
  searched per query; ``bench/bench_scale.py`` reports its recall@10 against the exact search.

Cosine: rows are L2-normalised (float32) and searched by inner product; scores are cosines. Euclidean: L2,
distances are returned (not squared). Indexes are written with ``faiss.write_index`` to
``<cache>/<namespace>/ann/<key>.faiss`` where ``key`` hashes the space's sha256 (``content_key``, e.g.
:meth:`core.dataset.Dataset.space_fingerprint`) and the index parameters; faiss files are our own cache, never
user input. A process keeps the last few loaded indexes in memory.
"""
from __future__ import annotations

import hashlib
import json
import math
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np

from .errors import DataError

__all__ = ["NeighbourIndex", "neighbour_index", "use_index", "ANN_MIN_N", "FLAT_MAX_N", "DEFAULT_NPROBE"]

#: Below this many items the views keep the exact torch search (no index).
ANN_MIN_N = 100_000
#: Up to this many items the index is exact (flat); beyond, IVF.
FLAT_MAX_N = 300_000
#: Inverted lists probed per query by the IVF index.
DEFAULT_NPROBE = 48
_METRICS = ("cosine", "ip", "euclidean")
_ADD_CHUNK = 65536
_MEMORY: "OrderedDict[str, NeighbourIndex]" = OrderedDict()
_MEMORY_MAX = 4
_LOCK = threading.Lock()


def use_index(n: int) -> bool:
    """Whether a space of ``n`` items is searched through a faiss index (``n >= ANN_MIN_N``)."""
    return int(n) >= ANN_MIN_N


def _faiss():
    try:
        import faiss
    except ImportError:  # pragma: no cover - faiss-cpu is a dependency
        raise DataError("nearest-neighbour search over many items needs faiss",
                        hint="pip install faiss-cpu") from None
    return faiss


def _rows_f32(X, start: int, stop: int, normalise: bool) -> np.ndarray:
    block = np.array(X[start:stop], dtype=np.float32, order="C", copy=True)   # never normalise the caller's rows
    if not np.isfinite(block).all():
        bad = int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        raise DataError("the space contains a non-finite value (NaN or inf)", row=start + bad,
                        hint="remove or repair that row")
    if normalise:
        norms = np.linalg.norm(block, axis=1, keepdims=True)
        block /= np.where(norms > 0, norms, 1.0)
    return block


class NeighbourIndex:
    """A faiss index over the rows of one space.

    Parameters
    ----------
    metric : 'cosine' (normalised inner product; scores are cosines), 'ip' (raw inner product) or 'euclidean'.
    kind : 'auto' (flat up to :data:`FLAT_MAX_N` rows, IVF beyond), 'flat' or 'ivf'.
    nlist : IVF clusters (default ``4 sqrt(n)``).  nprobe : lists searched per query (default 48).
    random_state : seeds the IVF training sample and k-means.

    Attributes
    ----------
    index_ : the faiss index.  n_ : rows indexed.  dim_ : width.  kind_ : 'flat' or 'ivf'.
    """

    def __init__(self, metric: str = "cosine", kind: str = "auto", nlist: int | None = None,
                 nprobe: int = DEFAULT_NPROBE, random_state: int = 0):
        self.metric = metric
        self.kind = kind
        self.nlist = nlist
        self.nprobe = nprobe
        self.random_state = random_state

    def get_params(self, deep: bool = True) -> dict:
        return {"metric": self.metric, "kind": self.kind, "nlist": self.nlist, "nprobe": self.nprobe,
                "random_state": self.random_state}

    def set_params(self, **params) -> "NeighbourIndex":
        for k, v in params.items():
            setattr(self, k, v)
        return self

    def _check(self):
        if self.metric not in _METRICS:
            raise DataError(f"unknown metric '{self.metric}'", hint=f"use one of {', '.join(_METRICS)}")
        if self.kind not in ("auto", "flat", "ivf"):
            raise DataError(f"unknown index kind '{self.kind}'", hint="use 'auto', 'flat' or 'ivf'")

    def _resolved_kind(self, n: int) -> str:
        return ("flat" if n <= FLAT_MAX_N else "ivf") if self.kind == "auto" else self.kind

    def fit(self, X, y=None) -> "NeighbourIndex":
        """Index every row of ``X`` (``n x d``; numpy, memmap or :class:`core.shards.ShardedArray`)."""
        self._check()
        faiss = _faiss()
        shape = tuple(getattr(X, "shape", ()))
        if len(shape) != 2 or shape[0] < 1 or shape[1] < 1:
            raise DataError(f"an index needs an n x d space, got shape {shape}")
        n, d = int(shape[0]), int(shape[1])
        norm = self.metric == "cosine"
        l2 = self.metric == "euclidean"
        kind = self._resolved_kind(n)
        if kind == "flat":
            index = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
        else:
            nlist = int(self.nlist or max(1, min(n // 39, round(4 * math.sqrt(n)))))
            quantizer = faiss.IndexFlatL2(d) if l2 else faiss.IndexFlatIP(d)
            index = faiss.IndexIVFFlat(quantizer, d, nlist,
                                       faiss.METRIC_L2 if l2 else faiss.METRIC_INNER_PRODUCT)
            index.cp.seed = int(self.random_state)
            n_train = int(min(n, 64 * nlist))
            rows = np.sort(np.random.default_rng(self.random_state).choice(n, size=n_train, replace=False))
            train = np.concatenate([_rows_f32(X[rows[a:a + _ADD_CHUNK]], 0, None, norm)
                                    for a in range(0, n_train, _ADD_CHUNK)])
            index.train(train)
            del train
            index.nprobe = int(min(self.nprobe, nlist))
        for a in range(0, n, _ADD_CHUNK):
            index.add(_rows_f32(X, a, min(n, a + _ADD_CHUNK), norm))
        self.index_, self.n_, self.dim_, self.kind_ = index, n, d, kind
        return self

    def search(self, Q, k: int = 10, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` best rows per query: ``(indices (Q x k) int64, scores (Q x k) float64)``, best first.

        Scores are cosines / inner products (higher first) or Euclidean distances (lower first). ``exclude`` (one
        row index per query, -1 for none) leaves that row out (e.g. the query item itself). Fewer than ``k``
        results (an IVF probe that found too few rows) are padded with index -1.
        """
        if not hasattr(self, "index_"):
            raise RuntimeError("NeighbourIndex is not fitted; call fit(X) first")
        Qa = np.array(Q, dtype=np.float32, ndmin=2)
        if Qa.shape[1] != self.dim_:
            raise DataError(f"the query is {Qa.shape[1]}-d but the index holds {self.dim_}-d rows")
        Qa = _rows_f32(Qa, 0, None, self.metric == "cosine")
        k = int(max(0, min(k, self.n_ - (1 if exclude is not None else 0))))
        extra = 1 if exclude is not None else 0
        scores, idx = self.index_.search(Qa, k + extra)
        idx = idx.astype(np.int64)
        scores = scores.astype(np.float64)
        if self.metric == "euclidean":
            scores = np.sqrt(np.maximum(scores, 0.0))
        if exclude is not None:
            ex = np.asarray(exclude, dtype=np.int64).reshape(-1, 1)
            keep = idx != ex
            out_i = np.full((len(idx), k), -1, np.int64)
            out_s = np.full((len(idx), k), np.nan)
            for r in range(len(idx)):
                row_i, row_s = idx[r][keep[r]][:k], scores[r][keep[r]][:k]
                out_i[r, :len(row_i)], out_s[r, :len(row_s)] = row_i, row_s
            idx, scores = out_i, out_s
        return idx, scores

    # -- persistence -------------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write the index (faiss format) to ``path`` atomically."""
        faiss = _faiss()
        path = Path(path)
        tmp = path.with_suffix(path.suffix + ".tmp")
        faiss.write_index(self.index_, str(tmp))
        tmp.replace(path)
        return path

    @classmethod
    def load(cls, path, metric: str, kind: str) -> "NeighbourIndex":
        faiss = _faiss()
        index = faiss.read_index(str(path))
        obj = cls(metric=metric, kind=kind)
        obj.index_, obj.n_, obj.dim_, obj.kind_ = index, int(index.ntotal), int(index.d), kind
        if kind == "ivf":
            obj.nprobe = int(faiss.extract_index_ivf(index).nprobe)
        return obj


def _index_key(content_key: str, n: int, d: int, params: dict) -> str:
    text = json.dumps({"content": content_key, "n": n, "d": d, **params}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:40]


def neighbour_index(X, metric: str = "cosine", *, content_key: str | None = None, namespace: str | None = "shared",
                    kind: str = "auto", nprobe: int = DEFAULT_NPROBE, random_state: int = 0) -> NeighbourIndex:
    """The index of ``X`` for ``metric``: from this process's memory, else from the disk cache, else built.

    ``content_key`` identifies the rows of ``X`` (e.g. the space's sha256 fingerprint); without it the array's
    bytes are hashed (:func:`core.dataset.array_sha256`, one pass). ``namespace=None`` keeps the index in memory
    only (nothing written to disk).
    """
    n, d = (int(s) for s in X.shape)
    if content_key is None:
        from .dataset import array_sha256
        content_key = array_sha256(X)
    probe = NeighbourIndex(metric, kind, nprobe=nprobe, random_state=random_state)
    probe._check()
    resolved = probe._resolved_kind(n)
    key = _index_key(content_key, n, d, {"metric": metric, "kind": resolved, "nprobe": nprobe,
                                         "seed": random_state, "v": 1})
    with _LOCK:
        if key in _MEMORY:
            _MEMORY.move_to_end(key)
            return _MEMORY[key]
    from .cache import namespace_file

    index = None
    path = namespace_file(namespace, "ann", f"{key}.faiss")
    if path is not None and path.exists():
        try:
            index = NeighbourIndex.load(path, metric, resolved)
            if (index.n_, index.dim_) != (n, d):
                index = None
        except Exception:  # a damaged cache file: rebuild it
            index = None
    if index is None:
        index = probe.fit(X)
        if path is not None:
            index.save(path)
    with _LOCK:
        _MEMORY[key] = index
        while len(_MEMORY) > _MEMORY_MAX:
            _MEMORY.popitem(last=False)
    return index
