"""Query retrieval across spaces (paper A's live demo): text -> encoder -> fitted alignment -> top-k items.

* :class:`CrossModalRetriever` - fit an alignment once (or take a fitted :class:`core.align.PairwiseAligner`),
  index every target item once, then answer any number of queries (rows of the source space, a freshly embedded
  text or image) with the top-k items and their scores.
* :func:`embed_query_text` / :func:`check_text_encoder` - embed a typed query with the source space's text
  encoder, after checking that the encoder really produced that space (a query in a space with no text encoder
  is refused with a clear message).
* :func:`top_k` and :func:`nearest_neighbours` - exact top-k in row chunks (ties: the lower index first).
* :func:`neighbours_before_after` - an item's neighbours in the original space beside those in an aligned
  subspace (paper A: original -> geometric look-alikes, CCA subspace -> same meaning).
* :func:`cached_alignment` - fit the default alignment of two spaces once per dataset and keep it on disk
  (safetensors via :func:`core.align.save_map`, never pickle) in a :mod:`core.cache` namespace.

Scores are cosine after the map-based methods and local CKA for ``local_cka`` / ``cca_local_cka`` (higher is more
similar), computed in float64 on :func:`core.device.pick_device`.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import torch

from .align import PairwiseAligner, cosine_similarity_matrix, load_map, normalize_method, save_map
from .base import Estimator
from .device import float64_device, pick_device
from .errors import DataError

__all__ = ["top_k", "nearest_neighbours", "CrossModalRetriever", "embed_query_text", "check_text_encoder",
           "neighbours_before_after", "subspace_cca", "subspace_index_key", "cached_alignment", "text_encoder_spec",
           "DEFAULT_METHOD", "DEFAULT_K"]

DEFAULT_METHOD = "cca_affine"
DEFAULT_K = 50


def top_k(scores, k: int = 10, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` highest entries of each row of ``scores`` (Q x n), best first; ties go to the lower column.

    ``exclude`` (optional, one column index per row, -1 for none) removes that column (e.g. the query itself).
    Returns ``(indices (Q x k) int64, values (Q x k) float64)``.
    """
    S = np.array(scores, dtype=np.float64, ndmin=2)
    if S.ndim != 2:
        raise DataError(f"scores must be Q x n, got shape {S.shape}")
    Q, n = S.shape
    if exclude is not None:
        ex = np.asarray(exclude, dtype=np.int64).reshape(-1)
        if len(ex) != Q:
            raise DataError(f"exclude needs one entry per row ({Q}), got {len(ex)}")
        rows = np.flatnonzero(ex >= 0)
        S[rows, ex[rows]] = -np.inf
        n_valid = n - (1 if len(rows) else 0)
    else:
        n_valid = n
    k = int(max(0, min(k, n_valid)))
    # stable sort of -S: equal scores keep column order (lower index first)
    idx = np.argsort(-S, axis=1, kind="stable")[:, :k]
    return idx.astype(np.int64), np.take_along_axis(S, idx, 1)


_top_k = top_k


def nearest_neighbours(X, rows, k: int = 10, metric: str = "cosine", exclude_self: bool = True, device=None,
                       chunk_rows: int = 4096, index_key: str | None = None,
                       index_namespace: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest items of each query row among all rows of ``X`` (n x d).

    Parameters
    ----------
    X : the space; rows : query item indices; k : neighbours per query.
    metric : 'cosine' (distance ``1 - cos``) or 'euclidean'.
    exclude_self : leave the query item out of its own list.
    index_key, index_namespace : for ``n >= core.ann.ANN_MIN_N`` the search goes through a faiss index
        (:func:`core.ann.neighbour_index`) identified by ``index_key`` (e.g. the space's fingerprint; default: the
        sha256 of the rows) and cached on disk in ``index_namespace`` (None: in memory only). Smaller spaces use the
        exact torch search.

    Returns
    -------
    ``(indices (len(rows) x k), distances (len(rows) x k))``, nearest first (ties: lower index first on the exact
    path).
    """
    from .ann import neighbour_index, use_index

    if metric not in ("cosine", "euclidean"):
        raise DataError(f"unknown distance '{metric}'", hint="use 'cosine' or 'euclidean'")
    shape = tuple(getattr(X, "shape", np.shape(X)))
    if len(shape) != 2:
        raise DataError(f"the space must be n x d, got shape {shape}")
    rows = np.atleast_1d(np.asarray(rows, dtype=np.int64))
    n = shape[0]
    if len(rows) and (rows.min() < 0 or rows.max() >= n):
        raise DataError(f"item index out of range for {n} items")
    if use_index(n):
        index = neighbour_index(X, metric, content_key=index_key, namespace=index_namespace)
        idx, scores = index.search(np.asarray(X[np.sort(rows)])[np.argsort(np.argsort(rows))], k,
                                   exclude=rows if exclude_self else None)
        return idx, (1.0 - scores if metric == "cosine" else scores)
    arr = np.asarray(X)
    dev = float64_device(pick_device(device))
    T = torch.as_tensor(np.asarray(arr, dtype=np.float64), device=dev)
    if metric == "cosine":
        norms = T.norm(dim=1, keepdim=True)
        T = T / torch.where(norms > 0, norms, torch.ones_like(norms))
    sq = (T * T).sum(1)
    out_i, out_d = [], []
    for start in range(0, len(rows), chunk_rows):
        r = rows[start:start + chunk_rows]
        q = T[torch.as_tensor(r, device=dev)]
        if metric == "cosine":
            D = 1.0 - q @ T.T
        else:
            D = ((q * q).sum(1)[:, None] + sq[None, :] - 2.0 * (q @ T.T)).clamp_min(0.0).sqrt()
        idx, val = top_k(-D.cpu().numpy(), k, exclude=r if exclude_self else None)
        out_i.append(idx)
        out_d.append(-val)
    if not out_i:
        return np.empty((0, k), np.int64), np.empty((0, k))
    return np.concatenate(out_i), np.concatenate(out_d)


class CrossModalRetriever(Estimator):
    """Retrieve target-space items for source-space queries through a fitted alignment.

    Parameters
    ----------
    method : a :data:`core.align.METHODS` name (default ``"cca_affine"``, paper A's best with ``k`` about 50).
    k : subspace dimension of the ``pca_affine`` / ``cca_*`` methods.
    reg, ridge : CCA and affine relative ridges.
    device : torch device (default :func:`core.device.pick_device`).

    Attributes
    ----------
    aligner_ : the fitted :class:`core.align.PairwiseAligner` (source -> target).
    index_ : the target items in the coordinates the scores use (``n x k'`` float64; rows L2-normalised for the
        cosine methods).
    ann_ : for ``n >= core.ann.ANN_MIN_N`` items and a cosine method, the faiss index of ``index_`` that
        :meth:`query` searches (flat up to ``core.ann.FLAT_MAX_N``, IVF beyond; cached on disk in
        ``index_namespace``); None otherwise (exact scores).
    n_items_ : number of indexed target items.  n_anchors_ : anchors the alignment was fitted on.
    """

    def __init__(self, method: str = DEFAULT_METHOD, k: int | None = DEFAULT_K, reg: float = 1e-3,
                 ridge: float = 0.0, device=None, index_namespace: str | None = None):
        self.method = method
        self.k = k
        self.reg = reg
        self.ridge = ridge
        self.device = device
        self.index_namespace = index_namespace

    _fitted_attributes = ("aligner_", "index_")
    _fit_call = "fit(X_source, Y_target) or set_aligner(aligner, Y_target)"

    def fit(self, X_source, Y_target, anchors=None, moments=None) -> "CrossModalRetriever":
        """Fit the alignment on paired rows (``anchors``: indices; default all) and index every ``Y_target`` row.

        ``moments``: the :class:`core.align.AnchorMoments` of those anchors (source first) when already
        accumulated, e.g. shared with another fit on the same pair; the fit is then the same without a pass over
        the anchors."""
        X, Y = np.asarray(X_source), np.asarray(Y_target)
        if X.shape[0] != Y.shape[0]:
            raise DataError(f"the two spaces must pair row by row, got {X.shape[0]} and {Y.shape[0]} rows")
        if anchors is not None:
            a = np.asarray(anchors)
            Xa, Ya = X[a], Y[a]
        else:
            Xa, Ya = X, Y
        k = self.k
        if k is not None and normalize_method(self.method) in ("pca_affine", "cca_affine", "cca_local_cka"):
            k = int(min(k, X.shape[1], Y.shape[1], max(1, Xa.shape[0] - 1)))
        aligner = PairwiseAligner(self.method, k=k, reg=self.reg, ridge=self.ridge, device=self.device)
        return self.set_aligner(aligner.fit(Xa, Ya) if moments is None else aligner.fit_moments(moments), Y)

    def set_aligner(self, aligner: PairwiseAligner, Y_target) -> "CrossModalRetriever":
        """Use an already fitted aligner (e.g. :func:`core.align.load_map`) and index ``Y_target``."""
        if not isinstance(aligner, PairwiseAligner) or not aligner.is_fitted:
            raise DataError("the map is not a fitted PairwiseAligner",
                            hint="save one with `platoscope align --save` or core.align.save_map")
        Y = np.asarray(Y_target)
        if Y.ndim != 2 or Y.shape[1] != aligner.q_:
            raise DataError(f"the map expects {aligner.q_}-d target items, got shape {Y.shape}",
                            hint="the saved map was fitted on other spaces")
        self.aligner_ = aligner
        step = 65536       # in row chunks: a million target rows never sit in float64 all at once
        coords = np.concatenate([aligner.transform(Y[a:a + step], side="y") for a in range(0, max(len(Y), 1), step)])
        cosine = aligner.method_ not in ("local_cka", "cca_local_cka")
        if cosine:
            norms = np.linalg.norm(coords, axis=1, keepdims=True)
            coords = coords / np.where(norms > 0, norms, 1.0)
        self.index_ = coords
        self.n_items_ = int(Y.shape[0])
        self.n_anchors_ = int(aligner.n_anchors_)
        self.ann_ = None
        from .ann import neighbour_index, use_index
        if cosine and use_index(self.n_items_):
            self.ann_ = neighbour_index(coords, "cosine", namespace=self.index_namespace)
        return self

    @property
    def score_kind(self) -> str:
        return "local CKA" if self.aligner_.method_ in ("local_cka", "cca_local_cka") else "cosine"

    def scores(self, X_query) -> np.ndarray:
        """Scores of every query row (``Q x p`` source vectors) against every indexed item: ``Q x n`` float64."""
        self._require_fitted()
        Xq = np.array(X_query, dtype=np.float64, ndmin=2)
        if Xq.shape[1] != self.aligner_.p_:
            raise DataError(f"the query is {Xq.shape[1]}-d but the alignment expects {self.aligner_.p_}-d "
                            "source vectors", hint="embed the query with the encoder of the source space")
        x = self.aligner_.transform(Xq)
        if self.aligner_.method_ in ("local_cka", "cca_local_cka"):
            return self.aligner_.map_.score_matrix(x, self.index_)
        return cosine_similarity_matrix(x, self.index_, device=self.device)

    def query(self, X_query, top_k: int = 10, exclude=None) -> tuple[np.ndarray, np.ndarray]:
        """Top-``top_k`` items for each query row: ``(indices (Q x k), scores (Q x k))``, best first.

        Through :attr:`ann_` when the target has many items (see :mod:`core.ann`), else exact."""
        if getattr(self, "ann_", None) is not None:
            Xq = np.array(X_query, dtype=np.float64, ndmin=2)
            if Xq.shape[1] != self.aligner_.p_:
                raise DataError(f"the query is {Xq.shape[1]}-d but the alignment expects {self.aligner_.p_}-d "
                                "source vectors", hint="embed the query with the encoder of the source space")
            return self.ann_.search(self.aligner_.transform(Xq), top_k, exclude=exclude)
        return _top_k(self.scores(X_query), top_k, exclude=exclude)


def expand_query(X_query, X_source, n_neighbours: int = 10, *, index_key: str | None = None,
                 index_namespace: str | None = None) -> np.ndarray:
    """Source-side neighbour expansion: each query row becomes the mean of its ``n_neighbours`` nearest rows of
    ``X_source`` (cosine), before it goes through the alignment.

    A linear alignment fitted on one caption style maps out-of-style text poorly: on the demo, "a round bowl"
    finds 10/10 bowls among the captions in MiniLM space, but mapped through CCA + affine on its own it lands on
    shelves and tables. Its nearest captions carry the words the alignment was fitted on. ``n_neighbours = 0``
    returns the queries unchanged. Returns ``Q x p`` float64. A source of ``core.ann.ANN_MIN_N`` items or more is
    searched through its faiss index (``index_key`` / ``index_namespace`` as in :func:`nearest_neighbours`).
    """
    from .ann import neighbour_index, use_index

    Xq = np.array(X_query, dtype=np.float64, ndmin=2)
    n = int(n_neighbours)
    if n <= 0:
        return Xq
    if use_index(X_source.shape[0]) and X_source.shape[1] == Xq.shape[1]:
        idx, _ = neighbour_index(X_source, "cosine", content_key=index_key, namespace=index_namespace).search(
            Xq, min(n, X_source.shape[0]))
        return np.stack([np.asarray(X_source[np.sort(r[r >= 0])], dtype=np.float64).mean(axis=0) for r in idx])
    Xs = np.asarray(X_source, dtype=np.float64)
    if Xs.ndim != 2 or Xs.shape[1] != Xq.shape[1]:
        raise DataError(f"the query is {Xq.shape[1]}-d but the source space is {Xs.shape[-1]}-d",
                        hint="expand with the space the query was embedded in")
    idx, _ = top_k(cosine_similarity_matrix(Xq, Xs), min(n, Xs.shape[0]))
    return Xs[idx].mean(axis=1)


# ------------------------------------------------------------------------------------------------
# text queries
# ------------------------------------------------------------------------------------------------
def text_encoder_spec(space) -> str | None:
    """The text encoder that produced ``space`` ('minilm' or 'open_clip:MODEL:TAG'), read from its provenance
    (``space.info['encoder']``) or its name; None when nothing says so."""
    info = str(getattr(space, "info", {}).get("encoder", "")).lower()
    name = str(getattr(space, "name", "")).lower()
    if getattr(space, "modality", "text") not in ("text", "other"):
        return None
    if "minilm" in info or name.startswith("minilm") or name.endswith("minilm"):
        if "layer" in name or "tokens" in name:
            return None  # hidden layers / token sets are not the sentence embedding
        return "minilm"
    if info.startswith("open_clip:"):
        return info
    return None


def embed_query_text(text: str, encoder) -> np.ndarray:
    """Embed one typed query with a text encoder (``encode`` or ``encode_text``): a ``1 x d`` float array.

    An empty or blank query raises :class:`DataError`.
    """
    if text is None or not str(text).strip():
        raise DataError("the query is empty", hint="type a few words, e.g. 'a tall lamp'")
    text = str(text).strip()
    if hasattr(encoder, "encode"):
        return np.asarray(encoder.encode([text]), dtype=np.float64)
    return np.asarray(encoder.encode_text([text])["embedding"], dtype=np.float64)


def check_text_encoder(encoder, space_vectors, texts, n_check: int = 3, min_cosine: float = 0.95,
                       space_name: str = "the source space") -> float:
    """Check that ``encoder`` produced ``space_vectors`` by re-encoding the first ``n_check`` distinct ``texts``
    (their items' captions). Returns the smallest cosine; raises :class:`DataError` when it is below
    ``min_cosine`` or the widths differ (a query in that space would be meaningless)."""
    V = np.asarray(space_vectors)
    dim = getattr(encoder, "dim", None)
    if dim is not None and V.shape[1] != dim:
        raise DataError(f"{space_name} is {V.shape[1]}-d but the text encoder gives {dim}-d vectors: it has no "
                        "text encoder here", hint="query from a space made by MiniLM (or the open_clip text "
                                                  "tower you loaded), or pick an item instead of typing")
    seen, rows = set(), []
    for i, t in enumerate(texts):
        if isinstance(t, str) and t.strip() and t not in seen:
            seen.add(t)
            rows.append(i)
        if len(rows) >= n_check:
            break
    if not rows:
        raise DataError(f"the items of {space_name} have no captions to check the text encoder against",
                        hint="add a 'caption' column")
    E = np.asarray(encoder.encode([texts[i] for i in rows]) if hasattr(encoder, "encode")
                   else encoder.encode_text([texts[i] for i in rows])["embedding"], dtype=np.float64)
    if E.shape[1] != V.shape[1]:
        raise DataError(f"{space_name} is {V.shape[1]}-d but the text encoder gives {E.shape[1]}-d vectors",
                        hint="query from a space this encoder produced")
    cos = np.diag(cosine_similarity_matrix(E, np.asarray(V[rows], dtype=np.float64)))
    worst = float(cos.min())
    if worst < min_cosine:
        raise DataError(f"{space_name} was not produced by this text encoder from the captions (cosine {worst:.2f} "
                        f"between a re-encoded caption and its stored vector)",
                        hint="pick the space made by this encoder, or query by item instead of text")
    return worst


# ------------------------------------------------------------------------------------------------
# neighbours before / after alignment
# ------------------------------------------------------------------------------------------------
def subspace_cca(X, partner, dim: int = DEFAULT_K, reg: float = 1e-3, anchors=None, device=None, moments=None):
    """The :class:`core.align.CCA` of ``X`` with ``partner`` that :func:`neighbours_before_after` searches in:
    ``dim`` components (capped at the widths and the anchors), fitted on ``anchors`` (default all items).

    Fitting it once and passing it as ``cca=`` makes each further item's neighbours a search only. ``moments``:
    the :class:`core.align.AnchorMoments` of those anchors (``X`` first) when already accumulated."""
    from .align import CCA

    Xa, P = np.asarray(X), np.asarray(partner)
    a = None if anchors is None else np.asarray(anchors)
    n_a = Xa.shape[0] if a is None else len(a)
    dim = int(min(dim, Xa.shape[1], P.shape[1], max(1, n_a - 1)))
    if moments is not None:
        return CCA(dim, reg, device=device).fit_moments(moments)
    return CCA(dim, reg, device=device).fit(Xa if a is None else Xa[a], P if a is None else P[a])


def subspace_index_key(index_key: str, cca, anchors=None) -> str:
    """The name of the faiss index of a :func:`subspace_cca` subspace (its spaces' ``index_key`` and the fit)."""
    anchors_key = "all" if anchors is None else hashlib.sha256(np.ascontiguousarray(anchors, np.int64)).hexdigest()
    return f"{index_key}:cca:{int(cca.W_x_.shape[1])}:{cca.reg!r}:{anchors_key}"


def neighbours_before_after(X, partner, row: int, k: int = 8, *, dim: int = DEFAULT_K, reg: float = 1e-3,
                            metric: str = "cosine", anchors=None, cca=None, device=None, index_key: str | None = None,
                            index_namespace: str | None = None, subspace_key: str | None = None) -> dict:
    """An item's ``k`` nearest neighbours in the original space ``X`` beside those in the CCA subspace of ``X``
    fitted with ``partner`` (paper A, section 3).

    Parameters
    ----------
    X, partner : paired spaces (``n x p``, ``n x q``); the subspace is ``(X - mean) W_x`` of a
        :class:`core.align.CCA` with ``dim`` components fitted on ``anchors`` (default all items), or ``cca`` when
        given (a fitted CCA with X as its first side).
    row : the query item.  k : neighbours.  metric : 'cosine' or 'euclidean'.
    index_key, index_namespace : name and cache the faiss indexes of large spaces (see :func:`nearest_neighbours`;
        ``index_key`` should identify both spaces, e.g. their two fingerprints).
    subspace_key : with a given ``cca``, the name of its subspace's index (e.g. ``index_key`` plus the fit's
        settings; see :func:`subspace_index_key`); without one the subspace is searched without a cached index.

    Returns
    -------
    ``{"row", "original": {"rows", "distances"}, "subspace": {"rows", "distances"}, "k": dim used}``.
    """
    Xa = np.asarray(X)
    sub_key = subspace_key
    if cca is None:
        cca = subspace_cca(Xa, partner, dim=dim, reg=reg, anchors=anchors, device=device)
        if index_key is not None:
            sub_key = subspace_index_key(index_key, cca, anchors)
    step = 65536
    Z = np.concatenate([cca.transform(Xa[s:s + step]) for s in range(0, max(Xa.shape[0], 1), step)])
    keys = dict(index_namespace=index_namespace)
    oi, od = nearest_neighbours(Xa, [row], k, metric, device=device, index_key=index_key and f"{index_key}:original",
                                **keys)
    si, sd = nearest_neighbours(Z, [row], k, metric, device=device, index_key=sub_key, **keys)
    return {"row": int(row), "k": int(cca.W_x_.shape[1]),
            "original": {"rows": oi[0].tolist(), "distances": od[0].tolist()},
            "subspace": {"rows": si[0].tolist(), "distances": sd[0].tolist()}}


# ------------------------------------------------------------------------------------------------
# the default alignment, fitted once per dataset
# ------------------------------------------------------------------------------------------------
def cached_alignment(X_source, Y_target, content_key: str, *, method: str = DEFAULT_METHOD,
                     k: int | None = DEFAULT_K, reg: float = 1e-3, ridge: float = 0.0,
                     namespace: str | None = "shared", device=None) -> tuple[PairwiseAligner, bool]:
    """Fit ``method`` on every paired row once and keep it in the cache namespace's ``maps/`` folder.

    ``content_key`` identifies the two spaces (e.g. ``ds.space_fingerprint(a) + ds.space_fingerprint(b)``).
    Returns ``(aligner, loaded_from_cache)``. ``namespace=None`` fits without caching.
    """
    X, Y = np.asarray(X_source), np.asarray(Y_target)
    params = {"method": normalize_method(method), "k": k, "reg": reg, "ridge": ridge, "content": content_key,
              "shape": [list(X.shape), list(Y.shape)]}
    key = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:32]
    from .cache import namespace_file

    path = namespace_file(namespace, "maps", f"{key}.safetensors")
    if path is not None and path.exists():
        try:
            return load_map(path, device=device), True
        except DataError:
            path.unlink(missing_ok=True)
    retr = CrossModalRetriever(method, k, reg, ridge, device).fit(X, Y)
    if path is not None:
        tmp = Path(str(path) + ".tmp.safetensors")
        save_map(retr.aligner_, tmp)
        tmp.replace(path)
    return retr.aligner_, False


# ------------------------------------------------------------------------------------------------
# choosing spaces by modality
# ------------------------------------------------------------------------------------------------
def default_space(ds, modality: str, exclude: str | None = None) -> str:
    """:func:`resolve_space` for a modality, falling back to the first other vector space (for widget defaults)."""
    try:
        return resolve_space(ds, modality, exclude=exclude)
    except DataError:
        return next(n for n in ds.vector_space_names() if n != exclude)


def resolve_space(ds, want: str, exclude: str | None = None) -> str:
    """A space name of ``ds`` from a name or a modality ('text', '3d', 'image', ...).

    For a modality: the space marked ``info["primary"]`` (the dataset's learned / sentence-level space of that
    modality, e.g. a trained encoder before a hand-crafted descriptor); for 'text' then a space with a known text
    encoder; else the first space of that modality. Raises :class:`DataError` listing the spaces when nothing fits.
    """
    if want in ds.spaces:
        return want
    from .dataset import MODALITIES
    if want not in MODALITIES:
        raise DataError(f"no space or modality named '{want}'",
                        hint=f"spaces: {', '.join(ds.space_names)}; modalities: {', '.join(MODALITIES)}")
    names = [n for n in ds.vector_space_names() if ds[n].modality == want and n != exclude]
    if not names:
        raise DataError(f"the dataset has no {want} space", hint=f"spaces: {', '.join(ds.space_names)}")
    primary = [n for n in names if ds[n].info.get("primary")]
    if primary:
        return primary[0]
    if want == "text":
        with_encoder = [n for n in names if text_encoder_spec(ds[n])]
        if with_encoder:
            return with_encoder[0]
    return names[0]
