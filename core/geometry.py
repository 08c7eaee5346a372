"""Geometry versus semantics (paper A, section 3; METHODS.md section 3).

Does an embedding space arrange items by their *shape* or by their *meaning*? For items that carry a geometric
ground truth we compare the space's pairwise distances with geometric ones, before and after alignment.

* :func:`chamfer_distance` / :func:`chamfer_matrix` - exact Chamfer distance between point clouds (mean
  nearest-neighbour *squared* distance, both directions summed), chunked torch, GPU when present.
* :func:`check_distance_matrix` / :func:`load_distance_matrix` - a pluggable ground truth: any ``n x n`` matrix
  (square, symmetric, non-negative, finite, one row per item).
* :func:`geometry_sample` / :func:`subsample_clouds` / :func:`sample_geometric_distances` - the seeded sample
  (default 300 items, clouds subsampled to 256 points) whose Chamfer matrix is computed once and cached
  (:mod:`core.cache`), with its cost (seconds, pairs, device) reported.
* :func:`embedding_distances` (cosine by default, Euclidean on request) and :func:`distance_correlation`
  (Pearson and Spearman over the ``n (n - 1) / 2`` pairs).
* :func:`geometry_vs_semantics` - the whole analysis: correlations of the original space, its CCA subspace
  (fitted with a partner space on items outside the sample) and its affine map into the partner space, plus a
  neighbour summary (category agreement and geometric distance of each item's nearest neighbours).

All of the exact pairwise work runs in torch (float32 for the Chamfer GEMMs unless asked, float64 for
correlations); inputs are numpy arrays (memmaps included), outputs numpy arrays and plain floats.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .device import float64_device, pick_device
from .errors import DataError
from .numerics import pearson, spearman
from .results import ABSENT, Result

__all__ = [
    "chamfer_distance", "chamfer_matrix", "subsample_clouds", "geometry_sample", "check_distance_matrix",
    "load_distance_matrix", "check_point_clouds", "sample_geometric_distances", "embedding_distances",
    "distance_correlation", "neighbour_summary", "geometry_vs_semantics", "DEFAULT_SAMPLE", "DEFAULT_POINTS",
    "DISTANCE_METRICS", "item_point_clouds", "load_geometry", "dataset_geometry_vs_semantics",
    "GeometryVersion", "GeometryVsSemantics",
]

#: Items in the default geometric sample, and points kept per cloud.
DEFAULT_SAMPLE = 300
DEFAULT_POINTS = 256
DISTANCE_METRICS = ("cosine", "euclidean")
_BLOCK_ENTRIES = 1 << 25  # float entries of one (bi*P) x (bj*Q) distance block (128 MB in float32)


def _no_progress(iterable, total=None, desc=""):
    return iterable


# ------------------------------------------------------------------------------------------------
# point clouds and Chamfer distance
# ------------------------------------------------------------------------------------------------
def check_point_clouds(clouds, name: str = "point clouds") -> np.ndarray:
    """``clouds`` as an ``n x P x 3`` float array, or a :class:`DataError` saying what is wrong."""
    arr = np.asarray(clouds)
    if arr.ndim != 3 or arr.shape[-1] != 3:
        raise DataError(f"{name} must be n x P x 3 (P points of x, y, z per item), got shape {arr.shape}",
                        array=name, hint="one cloud per item, all with the same number of points")
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise DataError(f"{name} are empty (shape {arr.shape})", array=name)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"{name} must be numbers, got dtype {arr.dtype}", array=name)
    if not np.isfinite(arr).all():
        bad = int(np.flatnonzero(~np.isfinite(arr).reshape(arr.shape[0], -1).all(axis=1))[0])
        raise DataError(f"{name} hold NaN or infinite coordinates", array=name, row=bad,
                        hint="drop or repair the items with missing points")
    return arr


def _augment(C: torch.Tensor, side: str) -> torch.Tensor:
    """Rows ``[p, |p|^2, 1]`` (side 'a') or ``[-2p, 1, |p|^2]`` (side 'b'): their products are squared distances,
    so one GEMM gives a whole block of them."""
    f = C.reshape(-1, 3)
    sq = (f * f).sum(1, keepdim=True)
    one = torch.ones_like(sq)
    return torch.cat([f, sq, one], 1) if side == "a" else torch.cat([-2.0 * f, one, sq], 1)


def _pair_block(A: torch.Tensor, B: torch.Tensor, Aa: torch.Tensor | None = None) -> torch.Tensor:
    """Chamfer distances between every cloud of ``A`` (a x P x 3) and of ``B`` (b x Q x 3): an a x b tensor."""
    a, P, _ = A.shape
    b, Q, _ = B.shape
    Aa = _augment(A, "a") if Aa is None else Aa
    d2 = (Aa @ _augment(B, "b").T).view(a, P, b, Q)
    ab = d2.amin(dim=3).clamp_min_(0.0).mean(dim=1)                    # a x b: A's points to their nearest in B
    ba = d2.permute(0, 2, 1, 3).amin(dim=2).clamp_min_(0.0).mean(dim=2)  # a x b: B's points to their nearest in A
    return ab + ba


def chamfer_distance(a, b, dtype=torch.float64, device=None) -> float:
    """Chamfer distance of two point clouds (``P x 3`` and ``Q x 3``).

    ``mean_i min_j ||a_i - b_j||^2 + mean_j min_i ||a_i - b_j||^2`` (exact nearest neighbours, squared Euclidean
    distances, both directions). Returns a Python float.
    """
    A = check_point_clouds(np.asarray(a)[None], "cloud a")
    B = check_point_clouds(np.asarray(b)[None], "cloud b")
    dev = pick_device(device) if dtype != torch.float64 else float64_device(pick_device(device))
    ta = torch.as_tensor(A, dtype=dtype, device=dev)
    tb = torch.as_tensor(B, dtype=dtype, device=dev)
    return float(_pair_block(ta, tb)[0, 0])


def chamfer_matrix(clouds, clouds_b=None, *, dtype=torch.float32, device=None, block_entries: int = _BLOCK_ENTRIES,
                   progress=None) -> np.ndarray:
    """Exact Chamfer distances between every pair of point clouds, in chunked torch (GPU when present).

    Parameters
    ----------
    clouds : ``n x P x 3`` array.
    clouds_b : optional ``m x Q x 3`` array; when given the result is ``n x m`` (clouds against clouds_b),
        otherwise the symmetric ``n x n`` matrix (only the upper triangle is computed; zero diagonal).
    dtype : torch dtype of the distance GEMMs (float32 by default; float64 for reference-grade values).
    device : torch device (default :func:`core.device.pick_device`).
    block_entries : how many point-to-point distances one block may hold (bounds memory).
    progress : tqdm-like ``progress(iterable, total=None, desc="")``.

    Returns
    -------
    float64 numpy array of Chamfer distances (mean nearest-neighbour squared distance, both ways summed).
    """
    progress = progress or _no_progress
    A = check_point_clouds(clouds, "point clouds")
    sym = clouds_b is None
    B = A if sym else check_point_clouds(clouds_b, "point clouds (second set)")
    dev = pick_device(device)
    if dtype == torch.float64:
        dev = float64_device(dev)
    n, P, _ = A.shape
    m, Q, _ = B.shape
    # blocks of bi x bj clouds with bi * P * bj * Q <= block_entries (at least one pair per block)
    side = max(1, int(np.sqrt(block_entries / (P * Q))))
    bi = min(n, side)
    bj = min(m, max(1, block_entries // (bi * P * Q)))
    blocks = [(i, j) for i in range(0, n, bi) for j in range(0, m, bj) if not sym or j + bj > i]
    out = np.zeros((n, m), dtype=np.float64)
    cache_i: dict = {}
    with torch.inference_mode():
        for i, j in progress(blocks, total=len(blocks), desc="Chamfer blocks"):
            if i not in cache_i:
                cache_i.clear()
                ta = torch.as_tensor(np.asarray(A[i:i + bi]), dtype=dtype, device=dev)
                cache_i[i] = (ta, _augment(ta, "a"))
            ta, aug = cache_i[i]
            tb = torch.as_tensor(np.asarray(B[j:j + bj]), dtype=dtype, device=dev)
            out[i:i + bi, j:j + bj] = _pair_block(ta, tb, aug).double().cpu().numpy()
    if sym:
        upper = np.triu(out, 1)
        out = upper + upper.T
    return out


def subsample_clouds(clouds, n_points: int = DEFAULT_POINTS, seed: int = 0) -> np.ndarray:
    """Each cloud reduced to ``n_points`` points drawn without replacement (one seeded draw per cloud).

    Clouds with at most ``n_points`` points are returned whole. Returns an in-memory float32 array.
    """
    arr = check_point_clouds(clouds)
    n, P, _ = arr.shape
    n_points = int(n_points)
    if n_points < 1:
        raise DataError(f"the number of points per cloud must be >= 1, got {n_points}")
    if n_points >= P:
        return np.asarray(arr, dtype=np.float32)
    rng = np.random.default_rng(seed)
    idx = np.stack([rng.choice(P, n_points, replace=False) for _ in range(n)])
    return np.take_along_axis(np.asarray(arr, dtype=np.float32), idx[:, :, None], axis=1)


def geometry_sample(n: int, n_items: int | None = DEFAULT_SAMPLE, seed: int = 0) -> np.ndarray:
    """Sorted indices of a seeded sample of ``n_items`` of ``n`` items (all of them when ``n_items`` is None or
    at least ``n``)."""
    if n < 2:
        raise DataError(f"geometry needs at least 2 items, got {n}")
    if n_items is None or n_items >= n:
        return np.arange(n)
    if n_items < 3:
        raise DataError(f"the geometric sample needs at least 3 items, got {n_items}")
    return np.sort(np.random.default_rng(seed).choice(n, int(n_items), replace=False))


def _clouds_key(clouds: np.ndarray) -> str:
    from .dataset import array_sha256
    return array_sha256(np.asarray(clouds))


def _chamfer_entry(content_key, rows_key, n_points, seed, *, clouds, rows, device, progress):  # noqa: ARG001
    t0 = time.perf_counter()
    sub = subsample_clouds(np.asarray(clouds[rows]), n_points, seed)
    D = chamfer_matrix(sub, device=device, progress=progress)
    return {"distances": D, "seconds": time.perf_counter() - t0, "device": str(pick_device(device))}


def sample_geometric_distances(clouds, rows=None, *, n_points: int = DEFAULT_POINTS, seed: int = 0,
                               content_key: str | None = None, namespace: str | None = "shared", device=None,
                               progress=None) -> dict:
    """Chamfer distances between the sampled items' clouds, computed once and cached on disk.

    Parameters
    ----------
    clouds : ``N x P x 3`` clouds (row ``r`` of the sample uses ``clouds[rows[r]]``).
    rows : indices into ``clouds`` (e.g. from :func:`geometry_sample`); None = all.
    n_points : points kept per cloud (seeded subsample; the exact Chamfer distance of the subsampled clouds).
    seed : seed of the point subsample.
    content_key : a sha256 standing for ``clouds`` (computed from the bytes when None).
    namespace : :mod:`core.cache` namespace ('shared' for demo / server data, 'session-<id>' for uploads);
        None computes without caching.

    Returns
    -------
    ``{"distances": s x s float64, "rows", "n_points", "seed", "n_pairs", "seconds" (of the computation),
    "device", "cached": whether it came from the cache}``.
    """
    arr = check_point_clouds(clouds)
    rows = np.arange(arr.shape[0]) if rows is None else np.asarray(rows, dtype=np.int64)
    if rows.ndim != 1 or len(rows) < 2:
        raise DataError("the geometric sample needs at least 2 items")
    if rows.min() < 0 or rows.max() >= arr.shape[0]:
        raise DataError(f"sample rows out of range for {arr.shape[0]} clouds")
    content_key = content_key or _clouds_key(arr)
    rows_key = hashlib.sha256(rows.tobytes()).hexdigest()
    args = (content_key, rows_key, int(n_points), int(seed))
    kwargs = dict(clouds=arr, rows=rows, device=device, progress=progress)
    if namespace is None:
        res, cached = _chamfer_entry(*args, **kwargs), False
    else:
        from .cache import get_memory
        func = get_memory(namespace).cache(_chamfer_entry, ignore=["clouds", "rows", "device", "progress"])
        cached = bool(func.check_call_in_cache(*args, **kwargs))
        res = func(*args, **kwargs)
    s = len(rows)
    return {**res, "rows": rows, "n_points": int(min(n_points, arr.shape[1])), "seed": int(seed),
            "n_pairs": s * (s - 1) // 2, "cached": cached}


# ------------------------------------------------------------------------------------------------
# a user-given ground truth
# ------------------------------------------------------------------------------------------------
def check_distance_matrix(D, n: int | None = None, *, name: str = "distance matrix", atol: float = 1e-6,
                          rtol: float = 1e-5) -> np.ndarray:
    """A ground-truth distance matrix, checked: 2-D, square, ``n x n`` (when ``n`` is given), finite,
    non-negative, symmetric (within ``atol + rtol * max|D|``). The diagonal is set to zero.

    Returns a float64 copy; raises :class:`DataError` naming the first problem.
    """
    arr = np.asarray(D)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"the {name} must hold numbers, got dtype {arr.dtype}", array=name)
    if arr.ndim != 2:
        raise DataError(f"the {name} must be 2-D (n x n), got shape {arr.shape}", array=name,
                        hint="one row and one column per item")
    if arr.shape[0] != arr.shape[1]:
        raise DataError(f"the {name} must be square, got {arr.shape[0]} x {arr.shape[1]}", array=name,
                        hint="one row and one column per item, in the dataset's order")
    if n is not None and arr.shape[0] != n:
        raise DataError(f"the {name} is {arr.shape[0]} x {arr.shape[1]} but the dataset has {n} items",
                        array=name, hint="give one row and one column per item, in the dataset's order")
    arr = arr.astype(np.float64)
    if not np.isfinite(arr).all():
        r, c = np.argwhere(~np.isfinite(arr))[0]
        raise DataError(f"the {name} holds NaN or infinite values (e.g. at row {r}, column {c})", array=name,
                        row=int(r))
    if (arr < 0).any():
        r, c = np.argwhere(arr < 0)[0]
        raise DataError(f"the {name} has negative distances (e.g. {arr[r, c]:.4g} at row {r}, column {c})",
                        array=name, row=int(r), hint="distances must be >= 0")
    diff = np.abs(arr - arr.T)
    tol = atol + rtol * float(np.abs(arr).max(initial=0.0))
    if (diff > tol).any():
        r, c = np.unravel_index(int(np.argmax(diff)), diff.shape)
        raise DataError(f"the {name} is not symmetric (row {r}, column {c} holds {arr[r, c]:.6g} but row {c}, "
                        f"column {r} holds {arr[c, r]:.6g})", array=name, row=int(r),
                        hint="a distance must not depend on the order of the two items; symmetrise it, "
                             "e.g. (D + D.T) / 2")
    arr = (arr + arr.T) / 2.0
    np.fill_diagonal(arr, 0.0)
    return arr


def load_distance_matrix(path, n: int | None = None) -> np.ndarray:
    """Read an ``n x n`` distance matrix from ``.npy``, ``.npz`` (one array), ``.csv`` or ``.safetensors``
    (never unpickled) and check it with :func:`check_distance_matrix`."""
    path = Path(path)
    name = path.name
    suffix = path.suffix.lower()
    if not path.exists():
        raise DataError("file not found", file=name)
    try:
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as z:
                if len(z.files) != 1:
                    raise DataError(f"the .npz holds {len(z.files)} arrays ({', '.join(z.files)}); expected one "
                                    "n x n distance matrix", file=name)
                arr = z[z.files[0]]
        elif suffix == ".csv":
            arr = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=2)
        elif suffix == ".safetensors":
            from safetensors.numpy import load_file
            tensors = load_file(str(path))
            if len(tensors) != 1:
                raise DataError(f"the file holds {len(tensors)} tensors; expected one n x n matrix", file=name)
            arr = next(iter(tensors.values()))
        else:
            raise DataError(f"unsupported distance-matrix format '{suffix}'", file=name,
                            hint="use .npy, .npz, .csv or .safetensors")
    except DataError:
        raise
    except (ValueError, OSError) as exc:
        raise DataError(f"could not read the distance matrix ({exc})", file=name) from None
    try:
        return check_distance_matrix(arr, n)
    except DataError as err:
        err.file = name
        raise


# ------------------------------------------------------------------------------------------------
# embedding distances and correlations
# ------------------------------------------------------------------------------------------------
def embedding_distances(X, metric: str = "cosine", device=None) -> np.ndarray:
    """Pairwise distances between the rows of ``X`` (n x d): ``1 - cos`` (default) or Euclidean. float64 n x n.

    A zero row has cosine 0 with everything (distance 1).
    """
    if metric not in DISTANCE_METRICS:
        raise DataError(f"unknown distance '{metric}'", hint=f"use one of {', '.join(DISTANCE_METRICS)}")
    arr = np.asarray(X)
    if arr.ndim != 2:
        raise DataError(f"embeddings must be n x d, got shape {arr.shape}")
    dev = float64_device(pick_device(device))
    t = torch.as_tensor(np.asarray(arr, dtype=np.float64), device=dev)
    if metric == "cosine":
        norms = t.norm(dim=1, keepdim=True)
        u = t / torch.where(norms > 0, norms, torch.ones_like(norms))
        D = (1.0 - u @ u.T).clamp_min_(0.0)
    else:
        sq = (t * t).sum(1)
        D = (sq[:, None] + sq[None, :] - 2.0 * (t @ t.T)).clamp_min_(0.0).sqrt_()
    D.fill_diagonal_(0.0)
    return D.cpu().numpy()


def _upper(D) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(D, dtype=np.float64))
    iu = torch.triu_indices(t.shape[0], t.shape[0], offset=1)
    return t[iu[0], iu[1]]


def distance_correlation(D_a, D_b) -> dict:
    """Pearson and Spearman correlation between two ``n x n`` distance matrices over the ``n (n-1) / 2`` pairs
    ``i < j`` (the upper triangles).

    Returns ``{"pearson", "spearman", "n_pairs"}``; a correlation is None when one side is constant.
    """
    A, B = np.asarray(D_a), np.asarray(D_b)
    if A.shape != B.shape or A.ndim != 2 or A.shape[0] != A.shape[1]:
        raise DataError(f"the two distance matrices must be n x n of the same n, got {A.shape} and {B.shape}")
    if A.shape[0] < 3:
        raise DataError("correlating distances needs at least 3 items")
    a, b = _upper(A), _upper(B)
    return {"pearson": pearson(a, b), "spearman": spearman(a, b),
            "n_pairs": int(a.numel())}


def neighbour_summary(D_embed, D_geo, labels=None, k: int = 5) -> dict:
    """How each item's ``k`` nearest neighbours (by ``D_embed``, itself excluded, ties by index) look:

    ``{"k", "geometric_distance": mean D_geo to those neighbours, "geometric_distance_best": the same for the
    k geometrically nearest (the floor), "geometric_distance_random": mean D_geo over all pairs (chance),
    "label_agreement": fraction of neighbours sharing the item's label (None without labels),
    "label_chance": the same for a random other item}``.
    """
    E = np.asarray(D_embed, dtype=np.float64)
    G = np.asarray(D_geo, dtype=np.float64)
    n = E.shape[0]
    if E.shape != G.shape or n < 2:
        raise DataError(f"neighbour summary needs two n x n matrices, got {E.shape} and {G.shape}")
    k = int(min(max(1, k), n - 1))
    big = np.where(np.eye(n, dtype=bool), np.inf, 0.0)
    idx = np.argsort(E + big, axis=1, kind="stable")[:, :k]
    best = np.sort(G + big, axis=1)[:, :k]
    off = ~np.eye(n, dtype=bool)
    out = {"k": k, "geometric_distance": float(np.take_along_axis(G, idx, 1).mean()),
           "geometric_distance_best": float(best.mean()), "geometric_distance_random": float(G[off].mean()),
           "label_agreement": None, "label_chance": None}
    if labels is not None:
        lab = np.asarray(labels).astype(str)
        same = lab[:, None] == lab[None, :]
        out["label_agreement"] = float(np.take_along_axis(same, idx, 1).mean())
        out["label_chance"] = float(same[off].mean())
    return out


# ------------------------------------------------------------------------------------------------
# the analysis
# ------------------------------------------------------------------------------------------------
@dataclass(eq=False)
class GeometryVersion(Result):
    """One version of the space in :class:`GeometryVsSemantics`: :func:`distance_correlation` of its distances
    with the geometric ones, its :func:`neighbour_summary` and the ``s x s`` ``distances`` themselves."""

    pearson: float | None
    spearman: float | None
    n_pairs: int
    neighbours: dict
    distances: Any


@dataclass(eq=False)
class GeometryVsSemantics(Result):
    """What :func:`geometry_vs_semantics` returns (``versions``: {name: :class:`GeometryVersion`}), and with
    :func:`dataset_geometry_vs_semantics` also the sampled ``rows``, the ``space``, ``partner``, ``geometry``
    record and the ``geometric_distances``."""

    metric: str
    n_sample: int
    n_anchors: int
    k: int | None
    reg: float | None
    versions: dict
    rows: Any = ABSENT
    space: Any = ABSENT
    partner: Any = ABSENT
    geometry: Any = ABSENT
    geometric_distances: Any = ABSENT


def geometry_vs_semantics(X, D_geo, rows, *, partner=None, labels=None, metric: str = "cosine", k: int = 50,
                          reg: float = 1e-3, n_neighbours: int = 5, device=None) -> GeometryVsSemantics:
    """Correlate a space's pairwise distances with geometric ones, before and after alignment.

    Parameters
    ----------
    X : the space (``N x p``, e.g. a 3D encoder's embeddings of all items).
    D_geo : ``s x s`` geometric distances between the sampled items ``rows`` (e.g. Chamfer).
    rows : the ``s`` sampled item indices into ``X``.
    partner : optional paired space (``N x q``, e.g. text). When given, a :class:`core.align.CCA` of ``X`` with it
        is fitted on the items *outside* the sample (so the sampled items are held out) and two more versions of
        ``X`` are judged: ``"cca_subspace"`` (``X`` projected to ``k`` CCA dimensions) and ``"affine_mapped"``
        (``X`` mapped into the partner's space by an :class:`core.align.AffineMap`); the partner itself is
        reported as ``"partner"`` (a purely semantic reference when it is a text space).
    labels : optional per-item categories (length ``N``) for the neighbour summary.
    metric : embedding distance, 'cosine' (default) or 'euclidean'.
    k, reg : CCA dimension and relative ridge.
    n_neighbours : neighbours per item in the neighbour summary.

    Returns
    -------
    :class:`GeometryVsSemantics`: ``{"metric", "n_sample", "n_anchors", "k", "reg", "versions": {name: {"pearson", "spearman", "n_pairs",
    "neighbours": neighbour_summary(...)}}}`` with versions ``original`` (+ ``cca_subspace``,
    ``affine_mapped``, ``partner`` with a partner). Each version also carries ``"distances"`` (``s x s``).
    """
    from .align import AffineMap, CCA

    rows = np.asarray(rows, dtype=np.int64)
    s = len(rows)
    D_geo = check_distance_matrix(D_geo, s, name="geometric distance matrix")
    Xa = np.asarray(X)
    if Xa.ndim != 2:
        raise DataError(f"the space must be n x d vectors, got shape {Xa.shape}")
    lab = None if labels is None else np.asarray(labels)[rows]
    versions: dict[str, np.ndarray] = {"original": np.asarray(Xa[rows], dtype=np.float64)}
    n_anchors = 0
    k_used = None
    if partner is not None:
        Ya = np.asarray(partner)
        if Ya.shape[0] != Xa.shape[0]:
            raise DataError(f"the partner space has {Ya.shape[0]} rows, the space {Xa.shape[0]}")
        mask = np.ones(Xa.shape[0], dtype=bool)
        mask[rows] = False
        n_anchors = int(mask.sum())
        if n_anchors < 3:
            raise DataError(f"only {n_anchors} items lie outside the geometric sample; the alignment needs them as "
                            "anchors", hint="use a smaller sample")
        k_used = int(min(k, Xa.shape[1], Ya.shape[1], n_anchors - 1))
        XA, YA = np.asarray(Xa[mask]), np.asarray(Ya[mask])
        cca = CCA(k_used, reg, device=device).fit(XA, YA)
        versions["cca_subspace"] = cca.transform(Xa[rows])
        aff = AffineMap(device=device).fit(XA, YA)
        versions["affine_mapped"] = aff.transform(Xa[rows])
        versions["partner"] = np.asarray(Ya[rows], dtype=np.float64)
    out = GeometryVsSemantics(metric=metric, n_sample=s, n_anchors=n_anchors, k=k_used,
                              reg=reg if partner is not None else None, versions={})
    for name, V in versions.items():
        D = embedding_distances(V, metric, device=device)
        out.versions[name] = GeometryVersion(**distance_correlation(D, D_geo),
                                             neighbours=neighbour_summary(D, D_geo, lab, n_neighbours), distances=D)
    return out


# ------------------------------------------------------------------------------------------------
# where a dataset's geometry comes from
# ------------------------------------------------------------------------------------------------
def item_point_clouds(ds) -> np.ndarray | None:
    """The point cloud of every item of ``ds`` (``n x P x 3``, row ``i`` = item ``i``), or None when it has none.

    Clouds are a token-set space of width 3 (``n x P x 3``; the first one, an on-demand space included, which is
    computed or read here).
    """
    for name in ds.token_space_names():
        if ds[name].dim == 3:
            return ds[name].data
    return None


def load_geometry(path, n: int) -> tuple[str, np.ndarray]:
    """Read per-item geometry from a file: ``("matrix", n x n distances)`` or ``("clouds", n x P x 3 points)``,
    told apart by the shape (``.npy`` / ``.npz`` with one array / ``.csv`` / ``.safetensors``; never unpickled)."""
    path = Path(path)
    if path.suffix.lower() in (".npy", ".npz") and path.exists():
        try:
            if path.suffix.lower() == ".npy":
                arr = np.load(path, allow_pickle=False, mmap_mode="r")
            else:
                with np.load(path, allow_pickle=False) as z:
                    arr = z[z.files[0]] if len(z.files) == 1 else None
        except ValueError as exc:
            raise DataError(f"could not read the geometry ({exc})", file=path.name) from None
        if arr is not None and arr.ndim == 3:
            if arr.shape[0] != n:
                raise DataError(f"the file holds {arr.shape[0]} point clouds but the dataset has {n} items",
                                file=path.name, hint="one cloud per item, in the dataset's order")
            try:
                return "clouds", check_point_clouds(arr)
            except DataError as err:
                err.file = path.name
                raise
    return "matrix", load_distance_matrix(path, n)


def dataset_geometry_vs_semantics(ds, space: str, partner: str | None = None, *, geometry=None,
                                  n_sample: int | None = DEFAULT_SAMPLE, n_points: int = DEFAULT_POINTS,
                                  seed: int = 0, metric: str = "cosine", k: int = 50, reg: float = 1e-3,
                                  n_neighbours: int = 5, namespace: str | None = "shared", device=None,
                                  progress=None) -> dict:
    """:func:`geometry_vs_semantics` on a :class:`core.dataset.Dataset`, geometry included.

    Parameters
    ----------
    ds : the dataset; space : the space judged (e.g. 'pointnet'); partner : the paired space the alignment is
        fitted with (e.g. 'minilm'; None = no alignment).
    geometry : None (the items' own point clouds, :func:`item_point_clouds`), ``("clouds", n x P x 3)`` or
        ``("matrix", n x n distances)``, e.g. from :func:`load_geometry`.
    n_sample, n_points, seed : the seeded sample of items and of points per cloud.
    namespace : :mod:`core.cache` namespace of the Chamfer matrix (None: not cached).

    Returns
    -------
    :func:`geometry_vs_semantics`'s result plus ``"rows"`` (the sampled items), ``"space"``, ``"partner"`` and
    ``"geometry": {"kind" ('chamfer' or 'matrix'), "n_sample", "n_points", "seed", "n_pairs", "seconds",
    "device", "cached"}``.
    """
    if geometry is None:
        clouds = item_point_clouds(ds)
        if clouds is None:
            raise DataError("the items carry no geometry (no point clouds)",
                            hint="add the clouds as an n x P x 3 array, or give an n x n distance matrix")
        geometry = ("clouds", clouds)
        content_key = f"{ds.fingerprint}-clouds"
    else:
        content_key = None
    kind, arr = geometry
    rows = geometry_sample(ds.n, n_sample, seed)
    if kind == "clouds":
        if arr.shape[0] != ds.n:
            raise DataError(f"there are {arr.shape[0]} point clouds but the dataset has {ds.n} items")
        geo = sample_geometric_distances(arr, rows, n_points=n_points, seed=seed, content_key=content_key,
                                         namespace=namespace, device=device, progress=progress)
        D = geo.pop("distances")
        geo = {"kind": "chamfer", **{k_: v for k_, v in geo.items() if k_ != "rows"}}
    elif kind == "matrix":
        D_full = check_distance_matrix(arr, ds.n)
        D = D_full[np.ix_(rows, rows)]
        s = len(rows)
        geo = {"kind": "matrix", "n_points": None, "seed": int(seed), "n_pairs": s * (s - 1) // 2,
               "seconds": 0.0, "device": None, "cached": False}
    else:
        raise DataError(f"unknown geometry kind '{kind}'", hint="'clouds' or 'matrix'")
    geo["n_sample"] = int(len(rows))
    X = ds[space].vectors()
    P = None if partner is None else ds[partner].vectors()
    labels = ds.items["label"].to_numpy() if "label" in ds.items.columns else None
    res = geometry_vs_semantics(X, D, rows, partner=P, labels=labels, metric=metric, k=k, reg=reg,
                                n_neighbours=n_neighbours, device=device)
    res.update({"rows": rows, "space": space, "partner": partner, "geometry": geo, "geometric_distances": D})
    return res
