"""Hierarchies in a text space (paper C, "Radial Embeddings"; METHODS.md section 4).

A *chain* is a list of captions ordered generic -> specific (``animal => goat => a goat on grass``), of any length
>= 2. Every measure works on L2-normalised embeddings and a *root* ``r``: the normalised embedding of the empty
string by the same text encoder (:func:`root_embedding`), or, when no encoder is known, a user-chosen vector or the
normalised mean embedding (:func:`mean_root`, a stated fallback).

* :func:`genericness` - ``d_r(e) = ||e - r||`` (generic texts lie closer to the root);
* :func:`exterior_angles` / :func:`exterior_angle_matrix` - ``Xi_r(e, e') = arccos(<e - r, e' - e> /
  (||e - r|| ||e' - e||))``, small when ``e'`` continues outward from ``e``. Undefined when ``e' = e`` or
  ``e = r``: such pairs are skipped (``valid`` False, angle 0) and counted, never NaN;
* :func:`kendall_tau_tiers` / :func:`radial_order` - tau_d, the Kendall tau (tau-b) between a chain's radii and
  its tier order, averaged over chains (with a bootstrap interval, the share of chains whose radii increase
  strictly, and the median radius per tier);
* :func:`hierarchical_retrieval` - the paper's precision / recall over 50 radius thresholds.

:class:`Chains` holds the texts, their embeddings, the root, optional same-tier negatives and an optional image
side; :func:`chains_from_dataset` builds it from a :class:`~core.dataset.Dataset` in either layout:

* *long* (HierarCaps / chains CSV, :func:`core.io.load_hierarcaps`): one item per (chain, tier) with columns
  ``chain``, ``tier``, ``caption`` (optional ``negative``: a same-tier contradicting text);
* *wide* (the demo): one item per chain with columns ``tier_0 .. tier_K`` (optional ``neg_tier_0 ..``) and spaces
  ``<prefix>_tier0 .. <prefix>_tierK``.

The RE fine-tuning (loss and adapter) lives in :mod:`core.radial`; the whole report (split, tau_d, retrieval,
fine-tuning) in :mod:`core.evaluation.hierarchy`.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd
import torch

from .dataset import Dataset
from .device import as_float64, pick_float64_device
from .errors import DataError
from .evaluation.splits import split_chains
from .results import ABSENT, Result

__all__ = [
    "Chains", "N_THRESHOLDS", "normalize_rows", "root_embedding", "text_space_encoder", "text_space_layer",
    "mean_root", "genericness", "exterior_angles",
    "exterior_angle_matrix", "kendall_tau_tiers", "radial_order", "hierarchical_retrieval", "chains_from_dataset",
    "chain_layout", "make_negatives", "split_chains", "fit_image_side", "chain_table",
    "contradicting_chain", "chain_pca", "wide_tier_spaces", "kendall_tau_argsort", "hierarchical_retrieval_by_image",
    "TAU_METHODS", "RETRIEVAL_POOLS", "RadialOrder", "HierarchicalRetrieval",
]

#: The paper's number of radius thresholds for hierarchical retrieval.
N_THRESHOLDS = 50
#: Below this distance two normalised embeddings count as the same point (exterior angle undefined).
DEGENERATE_EPS = 1e-6


@dataclass(eq=False)
class RadialOrder(Result):
    """What :func:`radial_order` returns: tau_d (and its interval, ``tau_d_ci`` at level ``confidence``), the
    tau of each chain and the radial picture (``radii``, ``median_radius_per_tier``, ``share_monotone``)."""

    tau_d: float | None
    tau_method: str
    tau_d_by_method: dict
    n_chains_with_ties: int
    tau_d_ci: list
    confidence: float
    per_chain_tau: list
    n_chains: int
    n_undefined: int
    share_monotone: float
    median_radius_per_tier: list
    radii: list


@dataclass(eq=False)
class HierarchicalRetrieval(Result):
    """What :func:`hierarchical_retrieval` and :func:`hierarchical_retrieval_by_image` return: mean and
    per-query ``precision`` / ``recall`` over the radius ``thresholds``, the pool (``pool``: "per-chain" or
    "all-chains") and, when asked, the ``predictions``."""

    precision: float
    recall: float
    per_image_precision: list
    per_image_recall: list
    n_images: int
    n_query_chains: int
    n_pool: int
    n_pool_distinct: int
    pool: str
    n_thresholds: int
    thresholds: list
    mean_predictions: float
    predictions: Any = ABSENT


_dev = pick_float64_device
_t64 = as_float64


def normalize_rows(X) -> np.ndarray:
    """Rows of ``X`` scaled to unit L2 norm (float32; all-zero rows stay zero)."""
    X = np.asarray(X, dtype=np.float64)
    norms = np.linalg.norm(X, axis=-1, keepdims=True)
    norms[norms == 0] = 1.0
    return (X / norms).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# the root
# ---------------------------------------------------------------------------------------------
def root_embedding(encoder, layer: int | None = None) -> np.ndarray:
    """The root: the normalised embedding of the empty string ``""`` by ``encoder`` (a :mod:`core.encoders` encoder).

    Parameters
    ----------
    encoder : any text encoder of :func:`core.encoders.make_encoder` (MiniLM, ``hf:``, ``st:``, ``open_clip:``,
        a ``python:`` text module): its ``embed_empty_string()`` runs the same pipeline (tokeniser, pooling) as its
        embeddings, on ``""`` (``encode`` itself refuses empty texts).
    layer : for a per-layer space (``<space>_layerK``), the empty string's pooled output at that layer.

    Returns
    -------
    (d,) float32 unit vector.
    """
    if hasattr(encoder, "embed_empty_string"):
        vec = encoder.embed_empty_string(layer) if layer is not None else encoder.embed_empty_string()
    else:
        raise DataError(f"cannot embed the empty string with {type(encoder).__name__}",
                        hint="give a root vector, or use the mean embedding as the root")
    return normalize_rows(np.asarray(vec)[None])[0]


def mean_root(embeddings) -> np.ndarray:
    """Fallback root: the normalised mean of the (normalised) embeddings. Say so wherever it is used."""
    E = normalize_rows(embeddings).astype(np.float64)
    m = E.mean(axis=0)
    if np.linalg.norm(m) < 1e-12:
        raise DataError("the mean embedding is zero, so it cannot serve as the root", hint="give a root vector")
    return normalize_rows(m[None])[0]


# ---------------------------------------------------------------------------------------------
# genericness and exterior angles
# ---------------------------------------------------------------------------------------------
def genericness(embeddings, root, device=None) -> np.ndarray:
    """Genericness ``d_r(e) = ||e - r||`` of each row (rows and root L2-normalised first).

    Parameters
    ----------
    embeddings : (n, d) array.  root : (d,) array.  device : torch device (default: pick_device).

    Returns
    -------
    (n,) float64 array of distances in [0, 2].
    """
    dev = _dev(device)
    E = _t64(normalize_rows(embeddings), dev)
    r = _t64(normalize_rows(np.asarray(root)[None])[0], dev)
    return (E - r).norm(dim=-1).cpu().numpy()


def exterior_angles(e_from, e_to, root, eps: float = DEGENERATE_EPS, device=None) -> tuple[np.ndarray, np.ndarray]:
    """Exterior angles ``Xi_r(e, e')`` of paired rows ``e = e_from[i]``, ``e' = e_to[i]`` (radians).

    ``Xi_r(e, e') = arccos(<e - r, e' - e> / (||e - r|| ||e' - e||))`` with the cosine clipped to [-1, 1]; small
    when ``e'`` continues outward from ``e`` along the ray from the root (``e'`` entails ``e``).

    Parameters
    ----------
    e_from, e_to : (n, d) arrays (L2-normalised here).  root : (d,).
    eps : pairs with ``||e - r|| < eps`` or ``||e' - e|| < eps`` (identical texts, or the root itself) are
        undefined: they are skipped, never NaN.

    Returns
    -------
    angles : (n,) float64, 0.0 where undefined.  valid : (n,) bool, False for skipped pairs
    (count them with ``(~valid).sum()``).
    """
    dev = _dev(device)
    a = _t64(normalize_rows(e_from), dev)
    b = _t64(normalize_rows(e_to), dev)
    if a.shape != b.shape:
        raise DataError(f"exterior angles need paired rows, got shapes {tuple(a.shape)} and {tuple(b.shape)}")
    r = _t64(normalize_rows(np.asarray(root)[None])[0], dev)
    u = a - r
    v = b - a
    nu, nv = u.norm(dim=-1), v.norm(dim=-1)
    valid = (nu >= eps) & (nv >= eps)
    cos = (u * v).sum(-1) / (nu.clamp_min(eps) * nv.clamp_min(eps))
    ang = torch.where(valid, torch.arccos(cos.clamp(-1.0, 1.0)), torch.zeros_like(cos))
    return ang.cpu().numpy(), valid.cpu().numpy()


def exterior_angle_matrix(E_from, E_to, root, eps: float = DEGENERATE_EPS) -> tuple[np.ndarray, np.ndarray]:
    """All exterior angles ``M[i, j] = Xi_r(E_from[i], E_to[j])`` (radians) and their validity mask.

    Pass the same array twice for the angles between a chain's own tiers (the diagonal is undefined).
    Undefined cells hold 0.0 with ``valid`` False.
    """
    A = np.asarray(E_from)
    B = np.asarray(E_to)
    ii, jj = np.meshgrid(np.arange(len(A)), np.arange(len(B)), indexing="ij")
    ang, valid = exterior_angles(A[ii.ravel()], B[jj.ravel()], root, eps=eps)
    return ang.reshape(len(A), len(B)), valid.reshape(len(A), len(B))


# ---------------------------------------------------------------------------------------------
# chains
# ---------------------------------------------------------------------------------------------
@dataclass
class Chains:
    """Caption chains with their embeddings (flat, chain after chain, each generic -> specific).

    Attributes
    ----------
    ids : (C,) chain ids (str).
    offsets : (C + 1,) int; chain ``c`` is rows ``offsets[c]:offsets[c + 1]`` of the flat arrays.
    texts : (M,) object array of captions.
    embeddings : (M, d) float32, L2-normalised.
    root : (d,) float32 unit vector.  root_source : how the root was made (shown to users).
    neg_texts : (M,) object array of same-tier contradicting texts ('' where none), or None.
    neg_embeddings : (M, d) float32 (zeros where none), or None.
    images : (C, p) image-side vectors (one per chain), or None.
    image_in_text_space : True when ``images`` already live in the text space (same model, e.g. open_clip);
        False when a map must be fitted (:func:`fit_image_side`).
    image_source : description of the image side.
    """

    ids: np.ndarray
    offsets: np.ndarray
    texts: np.ndarray
    embeddings: np.ndarray
    root: np.ndarray
    root_source: str = "given"
    neg_texts: np.ndarray | None = None
    neg_embeddings: np.ndarray | None = None
    images: np.ndarray | None = None
    image_in_text_space: bool = True
    image_source: str | None = None

    def __post_init__(self):
        self.offsets = np.asarray(self.offsets, dtype=np.int64)
        lengths = np.diff(self.offsets)
        if len(lengths) == 0:
            raise DataError("there are no chains", hint="a chain needs at least 2 tiers")
        if (lengths < 2).any():
            c = int(np.flatnonzero(lengths < 2)[0])
            raise DataError(f"chain '{self.ids[c]}' has {int(lengths[c])} tier; a chain needs at least 2",
                            column="chain")
        M = int(self.offsets[-1])
        if len(self.texts) != M or len(self.embeddings) != M:
            raise DataError(f"{len(self.texts)} texts and {len(self.embeddings)} embeddings for {M} chain tiers")

    # -- shape -------------------------------------------------------------------------------------
    @property
    def n_chains(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    @property
    def max_length(self) -> int:
        return int(self.lengths.max())

    @property
    def chain_of(self) -> np.ndarray:
        """(M,) chain index of each flat row."""
        return np.repeat(np.arange(self.n_chains), self.lengths)

    @property
    def tiers(self) -> np.ndarray:
        """(M,) tier of each flat row (0 = most generic)."""
        return np.arange(int(self.offsets[-1])) - np.repeat(self.offsets[:-1], self.lengths)

    def padded_index(self) -> np.ndarray:
        """(C, L_max) flat row index of tier ``k`` of chain ``c``; -1 where a chain is shorter."""
        out = np.full((self.n_chains, self.max_length), -1, dtype=np.int64)
        out[self.chain_of, self.tiers] = np.arange(int(self.offsets[-1]))
        return out

    def chain_rows(self, c: int) -> slice:
        return slice(int(self.offsets[c]), int(self.offsets[c + 1]))

    @property
    def has_negatives(self) -> bool:
        return self.neg_embeddings is not None and self.neg_texts is not None

    # -- values ------------------------------------------------------------------------------------
    def radii(self) -> np.ndarray:
        """(M,) genericness d_r of every text."""
        return genericness(self.embeddings, self.root)

    def subset(self, chain_indices) -> "Chains":
        """The chains ``chain_indices`` (in that order) as a new Chains."""
        idx = np.asarray(chain_indices, dtype=np.int64)
        rows = np.concatenate([np.arange(self.offsets[c], self.offsets[c + 1]) for c in idx]) if len(idx) else \
            np.zeros(0, np.int64)
        lengths = self.lengths[idx]
        return replace(self, ids=self.ids[idx], offsets=np.concatenate([[0], np.cumsum(lengths)]),
                       texts=self.texts[rows], embeddings=self.embeddings[rows],
                       neg_texts=None if self.neg_texts is None else self.neg_texts[rows],
                       neg_embeddings=None if self.neg_embeddings is None else self.neg_embeddings[rows],
                       images=None if self.images is None else self.images[idx])

    def with_embeddings(self, embeddings, root, neg_embeddings=None, images=None) -> "Chains":
        """A copy with new text embeddings (e.g. after a fine-tuned adapter); texts and ids unchanged."""
        neg = self.neg_embeddings if neg_embeddings is None else normalize_rows(neg_embeddings)
        if self.neg_embeddings is not None and neg_embeddings is not None:
            neg = np.where(self._neg_present()[:, None], neg, 0.0).astype(np.float32)
        return replace(self, embeddings=normalize_rows(embeddings), root=normalize_rows(np.asarray(root)[None])[0],
                       neg_embeddings=neg, images=self.images if images is None else images)

    def _neg_present(self) -> np.ndarray:
        if self.neg_texts is None:
            return np.zeros(len(self.texts), bool)
        return np.array([bool(t) for t in self.neg_texts])


def chain_table(chains: Chains, c: int) -> pd.DataFrame:
    """One chain as a table: tier, text, radius d_r, and (when present) its negative and the negative's radius."""
    rows = chains.chain_rows(c)
    out = pd.DataFrame({"tier": np.arange(rows.stop - rows.start), "text": chains.texts[rows],
                        "radius": genericness(chains.embeddings[rows], chains.root)})
    if chains.has_negatives:
        neg = chains.neg_texts[rows]
        radius = genericness(chains.neg_embeddings[rows], chains.root)
        out["negative"] = neg
        out["negative_radius"] = [float(r) if t else None for t, r in zip(neg, radius)]
    return out


# ---------------------------------------------------------------------------------------------
# tau_d and friends
# ---------------------------------------------------------------------------------------------
def kendall_tau_tiers(radii) -> tuple[np.ndarray, np.ndarray]:
    """Kendall tau-b between each row of ``radii`` and the tier order 0, 1, ..., L-1.

    Parameters
    ----------
    radii : (C, L) array (one chain per row; a chain shorter than L may be padded with NaN at its end).

    Returns
    -------
    tau : (C,) float64, 0.0 where undefined.  valid : (C,) bool, False when every radius of the chain is equal
    (tau-b is then 0/0) or the chain has fewer than 2 tiers.

    Notes
    -----
    The tier order has no ties, so tau-b = S / sqrt(n0 (n0 - t)) with S = sum_{i<j} sign(r_j - r_i),
    n0 = L(L-1)/2 pairs and t the number of tied radius pairs (scipy.stats.kendalltau's default variant).
    """
    R = np.asarray(radii, dtype=np.float64)
    if R.ndim == 1:
        R = R[None]
    present = ~np.isnan(R)
    L = present.sum(axis=1)
    i, j = np.triu_indices(R.shape[1], k=1)
    both = present[:, i] & present[:, j]
    diff = np.where(both, R[:, j] - R[:, i], 0.0)
    S = np.sign(diff).sum(axis=1)
    ties = (both & (diff == 0)).sum(axis=1)
    n0 = L * (L - 1) / 2
    denom = n0 * (n0 - ties)
    valid = (L >= 2) & (denom > 0)
    tau = np.where(valid, S / np.sqrt(np.where(valid, denom, 1.0)), 0.0)
    return tau, valid


#: tau_d tie handling: Kendall tau-b of the radii (default) or the authors' Kendall tau of argsort(radii).
TAU_METHODS = ("tau-b", "argsort")


def kendall_tau_argsort(radii) -> tuple[np.ndarray, np.ndarray]:
    """tau_d per chain as the authors' code (METHODS.md 7.3): Kendall tau between ``argsort(radii)`` and the tier
    order, ``scipy.stats.kendalltau(np.argsort(r), [1, 2, 3, 4])``.

    ``argsort`` is stable, so tied radii keep their tier order (a tie counts as concordant; tau-b counts it as
    neither). Without ties this equals :func:`kendall_tau_tiers`. Rows as in :func:`kendall_tau_tiers` (NaN
    padding at the end); valid where the chain has at least 2 tiers.
    """
    R = np.asarray(radii, dtype=np.float64)
    if R.ndim == 1:
        R = R[None]
    present = ~np.isnan(R)
    L = present.sum(axis=1)
    perm = np.argsort(np.where(present, R, np.inf), axis=1, kind="stable")   # padding sorts last
    i, j = np.triu_indices(R.shape[1], k=1)
    both = (j[None, :] < L[:, None])
    S = np.where(both, np.sign(perm[:, j] - perm[:, i]), 0).sum(axis=1)
    n0 = L * (L - 1) / 2
    valid = L >= 2
    tau = np.where(valid, S / np.where(valid, n0, 1.0), 0.0)
    return tau, valid


def _padded_radii(chains: Chains, radii: np.ndarray | None = None) -> np.ndarray:
    radii = chains.radii() if radii is None else radii
    idx = chains.padded_index()
    return np.where(idx >= 0, radii[np.clip(idx, 0, None)], np.nan)


def radial_order(chains: Chains, n_boot: int = 1000, confidence: float = 0.95, seed: int = 0,
                 tau: str = "tau-b") -> RadialOrder:
    """tau_d and the radial picture of a set of chains (METHODS.md section 4).

    Parameters
    ----------
    chains : the chains (embeddings and root).
    n_boot : bootstrap resamples of the chains for the interval of tau_d (0: none).
    confidence : level of the percentile interval.  seed : seed of the resampling.
    tau : ``"tau-b"`` (default: Kendall tau-b of the radii) or ``"argsort"`` (the authors' code: tau of
        ``argsort(radii)``, ties broken by tier order; the paper C preset).

    Returns
    -------
    :class:`RadialOrder` with ``tau_d`` (mean Kendall tau over chains where it is defined), ``tau_method``, ``tau_d_by_method``
    (``{"tau-b": .., "argsort": ..}``: they differ only when radii tie), ``n_chains_with_ties``, ``tau_d_ci``,
    ``per_chain_tau`` (list, None where undefined), ``n_chains``, ``n_undefined`` (chains whose radii are all
    equal: skipped and counted), ``share_monotone`` (fraction of chains whose radii increase strictly from tier
    to tier), ``median_radius_per_tier`` (list over tiers 0..L_max-1), ``radii`` (C x L_max list, None-padded),
    ``n_thresholds`` absent (see :func:`hierarchical_retrieval`).
    """
    if tau not in TAU_METHODS:
        raise DataError(f"unknown tau_d tie handling {tau!r}", hint=f"use one of {', '.join(TAU_METHODS)}")
    R = _padded_radii(chains)
    tau_b, valid_b = kendall_tau_tiers(R)
    tau_a, valid_a = kendall_tau_argsort(R)
    by_method = {"tau-b": float(tau_b[valid_b].mean()) if valid_b.any() else None,
                 "argsort": float(tau_a[valid_a].mean()) if valid_a.any() else None}
    i, j = np.triu_indices(R.shape[1], k=1)
    with np.errstate(invalid="ignore"):
        tied = ((R[:, j] == R[:, i]) & ~np.isnan(R[:, i]) & ~np.isnan(R[:, j])).any(axis=1)
    method = tau
    tau, valid = (tau_a, valid_a) if method == "argsort" else (tau_b, valid_b)
    d = np.diff(R, axis=1)
    monotone = np.all(np.isnan(d) | (d > 0), axis=1)
    ci = [None, None]
    tv = tau[valid]
    if n_boot and len(tv) > 1:
        rng = np.random.default_rng(seed)
        means = np.empty(n_boot)
        for start in range(0, n_boot, 100):
            stop = min(n_boot, start + 100)
            means[start:stop] = tv[rng.integers(len(tv), size=(stop - start, len(tv)))].mean(axis=1)
        alpha = (1 - confidence) / 2
        ci = [float(np.quantile(means, alpha)), float(np.quantile(means, 1 - alpha))]
    med = [float(np.nanmedian(R[:, k])) for k in range(R.shape[1])]
    return RadialOrder(
        tau_d=float(tv.mean()) if len(tv) else None,
        tau_method=method,
        tau_d_by_method=by_method,
        n_chains_with_ties=int(tied.sum()),
        tau_d_ci=ci,
        confidence=confidence,
        per_chain_tau=[float(t) if v else None for t, v in zip(tau, valid)],
        n_chains=chains.n_chains,
        n_undefined=int((~valid).sum()),
        share_monotone=float(monotone.mean()),
        median_radius_per_tier=med,
        radii=[[None if np.isnan(x) else float(x) for x in row] for row in R],
    )


# ---------------------------------------------------------------------------------------------
# hierarchical retrieval
# ---------------------------------------------------------------------------------------------
def _pool(chains: Chains) -> tuple[list[str], np.ndarray, np.ndarray]:
    """De-duplicated text pool: the strings, their embeddings, and each flat row's pool index."""
    codes, uniques = pd.factorize(pd.Series(chains.texts, dtype=object), sort=False)
    first = np.zeros(len(uniques), dtype=np.int64)
    seen = np.full(len(uniques), -1, dtype=np.int64)
    rows = np.arange(len(codes))
    seen[codes[::-1]] = rows[::-1]  # first occurrence of each string
    first[:] = seen
    return list(uniques), chains.embeddings[first], codes.astype(np.int64)


def _threshold_predictor(chains: Chains, n_thresholds: int, dev):
    """The pool of ``chains``' texts and a function ``predict(images) -> (pred, new)``: for each image the pool
    code of the best-cosine text among texts with radius <= each of ``n_thresholds`` thresholds (linspace of the
    pool's radii), and the mask of predictions that differ from the previous threshold's (torch, (B, T))."""
    pool_texts, pool_emb, codes = _pool(chains)
    radii = genericness(pool_emb, chains.root, device=dev)
    order = np.argsort(radii, kind="stable")
    thresholds = np.linspace(radii.min(), radii.max(), n_thresholds)
    # number of pool texts with radius <= t, for each threshold (>= 1: the first threshold is the minimum)
    counts = np.searchsorted(radii[order], thresholds, side="right")
    counts[-1] = len(order)  # the largest threshold admits every text (guards against rounding in linspace)
    P = _t64(pool_emb[order], dev)
    idx_t = torch.as_tensor(counts - 1, device=dev)
    order_t = torch.as_tensor(order, device=dev)

    def predict(images_chunk):
        S = _t64(images_chunk, dev) @ P.T                             # (B, P) cosine (unit vectors)
        _, arg = torch.cummax(S, dim=1)                                # best among the first k by radius
        pred = order_t[arg[:, idx_t]]                                  # (B, T) pool codes
        new = torch.ones_like(pred, dtype=torch.bool)
        new[:, 1:] = pred[:, 1:] != pred[:, :-1]
        return pred, new

    return pool_texts, codes, thresholds, predict


def _check_images(chains: Chains, images) -> np.ndarray:
    if images is None:
        if chains.images is None:
            raise DataError("hierarchical retrieval needs an image side (one image embedding per chain)",
                            hint="add image embeddings of the same model, or map another modality into the "
                                 "text space with a fitted alignment")
        if not chains.image_in_text_space:
            raise DataError("the image side is not in the text space yet", hint="fit a map with fit_image_side")
        images = chains.images
    images = normalize_rows(images)
    if images.shape != (chains.n_chains, chains.embeddings.shape[1]):
        raise DataError(f"need one {chains.embeddings.shape[1]}-d image embedding per chain "
                        f"({chains.n_chains}), got shape {images.shape}")
    return images


#: Hierarchical retrieval protocols: the held-out chains' own pool, one query per chain (default), or the
#: authors' pool of every chain's texts with one query per unique image (METHODS.md 7.3).
RETRIEVAL_POOLS = ("heldout", "all-chains")


def hierarchical_retrieval_by_image(chains: Chains, images=None, query_chains=None,
                                    n_thresholds: int = N_THRESHOLDS, device=None,
                                    chunk: int = 2048) -> HierarchicalRetrieval:
    """Hierarchical retrieval as the authors' evaluation code (METHODS.md 7.3): per unique image.

    The pool is every tier text of every chain of ``chains`` (the evaluation file; not de-duplicated: identical
    strings have identical embeddings and a hit is string equality, so a repeated text changes no prediction);
    50 thresholds ``linspace(min, max)`` of the pool's radii; at each threshold the best-cosine text among pool
    texts with radius <= threshold; consecutive duplicates dropped. The queries are the unique image vectors of
    the chains ``query_chains`` (default: all; e.g. only held-out chains when the image side was mapped by a fit
    on the others); an image's true texts are the union of its chains (among ``query_chains``). Precision =
    |predictions in the truth| / |predictions|; recall = mean over tiers of "some chain of the image has that
    tier's text among the predictions".

    Returns
    -------
    :class:`HierarchicalRetrieval` with ``precision``, ``recall``, ``per_image_precision``, ``per_image_recall``,
    ``n_images`` (unique
    images), ``n_query_chains``, ``n_pool`` (texts in the pool, repeats included), ``n_pool_distinct``,
    ``pool`` ("all-chains"), ``n_thresholds``, ``thresholds``, ``mean_predictions``.
    """
    images = _check_images(chains, images)
    if n_thresholds < 1:
        raise DataError(f"n_thresholds must be >= 1, got {n_thresholds}")
    q = np.arange(chains.n_chains) if query_chains is None else np.asarray(query_chains, dtype=np.int64)
    if len(q) == 0:
        raise DataError("no chains to query")
    dev = _dev(device)
    pool_texts, codes, thresholds, predict = _threshold_predictor(chains, n_thresholds, dev)
    uniq, img_of = np.unique(images[q], axis=0, return_inverse=True)
    img_of = np.asarray(img_of).reshape(-1)
    chain_idx = chains.padded_index()
    L = chain_idx.shape[1]
    truth = [set() for _ in range(len(uniq))]
    tier_truth = [[set() for _ in range(L)] for _ in range(len(uniq))]
    for c, u in zip(q, img_of):
        for t in range(L):
            row = chain_idx[c, t]
            if row >= 0:
                truth[u].add(int(codes[row]))
                tier_truth[u][t].add(int(codes[row]))
    prec = np.empty(len(uniq))
    rec = np.empty(len(uniq))
    n_pred = np.empty(len(uniq))
    for start in range(0, len(uniq), chunk):
        pred, new = predict(uniq[start:start + chunk])
        pred, new = pred.cpu().numpy(), new.cpu().numpy()
        for b in range(pred.shape[0]):
            u = start + b
            preds = set(int(x) for x in pred[b][new[b]])
            prec[u] = len(preds & truth[u]) / len(preds)
            tiers = [ts for ts in tier_truth[u] if ts]
            rec[u] = float(np.mean([bool(ts & preds) for ts in tiers]))
            n_pred[u] = len(preds)
    return HierarchicalRetrieval(
        precision=float(prec.mean()), recall=float(rec.mean()), per_image_precision=prec.tolist(),
        per_image_recall=rec.tolist(), n_images=int(len(uniq)), n_query_chains=int(len(q)),
        n_pool=int(len(chains.texts)), n_pool_distinct=int(len(pool_texts)), pool="all-chains",
        n_thresholds=int(n_thresholds), thresholds=thresholds.tolist(), mean_predictions=float(n_pred.mean()))


def hierarchical_retrieval(chains: Chains, images=None, n_thresholds: int = N_THRESHOLDS, device=None,
                           chunk: int = 2048, return_predictions: bool = False) -> HierarchicalRetrieval:
    """The paper's hierarchical retrieval precision / recall, one image per chain.

    Pool all tier texts of ``chains`` (de-duplicated strings; a hit is string equality); take ``n_thresholds``
    radius thresholds linearly spaced from the pool's smallest to largest radius d_r; for each threshold predict
    the text with the highest cosine to the image among pool texts with radius <= threshold; drop consecutive
    duplicates; precision = |predicted in the true chain| / |predicted|; recall = fraction of the chain's tiers
    whose text is predicted; both averaged over images.

    Parameters
    ----------
    chains : the chains; row ``c`` of ``images`` belongs to chain ``c``.
    images : (C, d) image embeddings in the text space (default ``chains.images``, which must then be in the
        text space; see :func:`fit_image_side`).
    n_thresholds : number of thresholds (50 in the paper).
    return_predictions : also return, per image, the predicted texts (pool indices -> strings).

    Returns
    -------
    :class:`HierarchicalRetrieval` with ``precision``, ``recall`` (means), ``per_image_precision``, ``per_image_recall``, ``n_images``,
    ``n_pool`` (distinct texts), ``n_thresholds``, ``thresholds`` (list), ``mean_predictions`` (average number of
    distinct predictions) and, if asked, ``predictions`` (list of lists of strings).
    """
    images = _check_images(chains, images)
    if n_thresholds < 1:
        raise DataError(f"n_thresholds must be >= 1, got {n_thresholds}")
    dev = _dev(device)
    pool_texts, codes, thresholds, predict = _threshold_predictor(chains, n_thresholds, dev)
    chain_idx = chains.padded_index()
    true = np.where(chain_idx >= 0, codes[np.clip(chain_idx, 0, None)], -1)   # (C, L) pool codes of each chain
    true_t = torch.as_tensor(true, device=dev)
    prec = np.empty(chains.n_chains)
    rec = np.empty(chains.n_chains)
    n_pred = np.empty(chains.n_chains)
    preds_out = []
    for start in range(0, chains.n_chains, chunk):
        stop = min(chains.n_chains, start + chunk)
        pred, new = predict(images[start:stop])
        tr = true_t[start:stop]                                        # (B, L)
        member = (pred[:, :, None] == tr[:, None, :]).any(-1)          # prediction in the true chain
        prec[start:stop] = ((new & member).sum(1) / new.sum(1)).cpu().numpy()
        found = (tr[:, :, None] == torch.where(new, pred, -2)[:, None, :]).any(-1)  # tier predicted
        tier_ok = tr >= 0
        rec[start:stop] = ((found & tier_ok).sum(1) / tier_ok.sum(1)).cpu().numpy()
        n_pred[start:stop] = new.sum(1).cpu().numpy()
        if return_predictions:
            for row, keep in zip(pred.cpu().numpy(), new.cpu().numpy()):
                preds_out.append([pool_texts[k] for k in row[keep]])
    return HierarchicalRetrieval(
        precision=float(prec.mean()), recall=float(rec.mean()), per_image_precision=prec.tolist(),
        per_image_recall=rec.tolist(), n_images=chains.n_chains, n_query_chains=chains.n_chains,
        n_pool=len(pool_texts), n_pool_distinct=len(pool_texts), pool="per-chain", n_thresholds=int(n_thresholds),
        thresholds=thresholds.tolist(), mean_predictions=float(n_pred.mean()),
        predictions=preds_out if return_predictions else ABSENT)


# ---------------------------------------------------------------------------------------------
# building chains from a Dataset
# ---------------------------------------------------------------------------------------------
_WIDE = re.compile(r"^tier_(\d+)$")


def chain_layout(ds: Dataset) -> str | None:
    """'long' (items with chain, tier, caption), 'wide' (items with tier_0..tier_K), or None."""
    cols = set(ds.items.columns)
    if {"chain", "tier", "caption"} <= cols:
        return "long"
    tiers = sorted(int(m.group(1)) for c in cols if (m := _WIDE.match(str(c))))
    if len(tiers) >= 2 and tiers == list(range(len(tiers))):
        return "wide"
    return None


def wide_tier_spaces(ds: Dataset) -> dict[str, list[str]]:
    """For a wide dataset: {prefix: [space of tier 0, ..., tier K]} for every prefix with all K+1 tier spaces."""
    K = sum(1 for c in ds.items.columns if _WIDE.match(str(c)))
    out = {}
    for name in ds.space_names:
        m = re.match(r"^(.*)_tier0$", name)
        if m and all(f"{m.group(1)}_tier{k}" in ds for k in range(K)):
            out[m.group(1)] = [f"{m.group(1)}_tier{k}" for k in range(K)]
    return out


def _encode_unique(encoder, texts: Sequence[str], progress=None) -> np.ndarray:
    codes, uniques = pd.factorize(pd.Series(list(texts), dtype=object), sort=False)
    if hasattr(encoder, "encode"):
        emb = encoder.encode(list(uniques), progress=progress)
    else:  # open_clip: encode_text -> {"embedding": ...}
        emb = encoder.encode_text(list(uniques), progress=progress)["embedding"]
    return normalize_rows(np.asarray(emb))[codes]


def text_space_layer(ds: Dataset, text_space: str | None) -> int | None:
    """The encoder layer a text space holds (``info['layer']`` of a ``<space>_layerK`` space, or of the first tier
    space ``<prefix>_tier0`` in the wide layout), or None for a final embedding / no space."""
    if text_space is None:
        return None
    name = text_space if text_space in ds.spaces else f"{text_space}_tier0"
    if name not in ds.spaces:
        return None
    layer = ds[name].info.get("layer")
    return int(layer) if isinstance(layer, (int, np.integer)) and not isinstance(layer, bool) else None


def text_space_encoder(ds: Dataset, text_space: str | None) -> dict | None:
    """How to rebuild the encoder of a text space from its info: ``{"spec", "pooling", "layer"}``, or None when
    the space does not say (MiniLM spaces without a spec, e.g. the demo's, are recognised by name)."""
    if text_space is None:
        return None
    name = text_space if text_space in ds.spaces else f"{text_space}_tier0"
    if name not in ds.spaces:
        return None
    info = ds[name].info
    spec = info.get("spec")
    if not spec and ("minilm" in str(info.get("encoder", "")).lower() or "minilm" in name.lower()):
        spec = "minilm"
    if not isinstance(spec, str) or not spec:
        return None
    return {"spec": spec, "pooling": info.get("pooling") if info.get("pooling") in ("mean", "cls", "last", "max")
            else "mean", "layer": text_space_layer(ds, text_space)}


def chains_from_dataset(ds: Dataset, *, text_space: str | None = None, encoder=None, root="auto",
                        image_space: str | None = None, negatives: str = "auto", seed: int = 0,
                        progress: Callable | None = None) -> Chains:
    """Build :class:`Chains` from a dataset in the long or wide layout (see the module docstring).

    Parameters
    ----------
    ds : the dataset.
    text_space : long layout: a text space with one row per item; wide layout: the prefix of the tier spaces
        (``minilm`` for ``minilm_tier0..``). None: encode the captions with ``encoder``.
    encoder : a :mod:`core.encoders` encoder: embeds the captions when ``text_space`` is None, the negatives when
        they have no embeddings, and the root (the empty string). Must be the model behind ``text_space``.
    root : 'auto' (the encoder's empty string when an encoder is given, else the mean fallback), 'encoder',
        'mean', or a (d,) vector.
    image_space : a space giving one image-side vector per chain (long layout: the vector of the chain's last
        tier row). When its width equals the text width and its modality is 'image' it is taken as already in
        the text space (same model); otherwise a map must be fitted (:func:`fit_image_side`).
    negatives : 'auto' (given negatives - long ``negative`` column, wide ``neg_tier_k`` columns - embedded with
        ``encoder``; else none), 'none', or 'sample' (:func:`make_negatives`, needed for fine-tuning).
    seed : seed of sampled negatives.  progress : encoder progress callback ``progress(done, total)``.
    """
    layout = chain_layout(ds)
    if layout is None:
        raise DataError("the dataset has no caption chains",
                        hint="items need columns chain, tier and caption (a chains / HierarCaps CSV), or "
                             "tier_0, tier_1, ... (one chain per item)")
    items = ds.items
    neg_texts = None
    if layout == "long":
        order = np.lexsort((items["tier"].astype(int).to_numpy(), pd.factorize(items["chain"].astype(str))[0]))
        table = items.iloc[order]
        ids, starts = np.unique(pd.factorize(table["chain"].astype(str))[0], return_index=True)
        chain_ids = table["chain"].astype(str).to_numpy()[starts]
        lengths = np.diff(np.append(starts, len(table)))
        texts = table["caption"].astype(str).to_numpy(dtype=object)
        if text_space is not None:
            E = normalize_rows(ds[text_space].vectors()[order])
        elif encoder is not None:
            E = _encode_unique(encoder, texts, progress)
        else:
            raise DataError("the captions have no embeddings", hint="choose a text space or an encoder")
        if "negative" in items.columns:
            neg_texts = table["negative"].fillna("").astype(str).to_numpy(dtype=object)
        image_rows = order[starts + lengths - 1]
    else:
        K = sum(1 for c in items.columns if _WIDE.match(str(c)))
        n = len(items)
        chain_ids = items["id"].astype(str).to_numpy()
        lengths = np.full(n, K)
        texts = items[[f"tier_{k}" for k in range(K)]].astype(str).to_numpy(dtype=object).reshape(-1)
        if text_space is not None:
            spaces = wide_tier_spaces(ds).get(text_space)
            if spaces is None:
                raise DataError(f"no tier spaces {text_space}_tier0..{text_space}_tier{K - 1}",
                                hint=f"available prefixes: {', '.join(wide_tier_spaces(ds)) or '(none)'}")
            E = np.stack([normalize_rows(ds[s].vectors()) for s in spaces], axis=1).reshape(n * K, -1)
        elif encoder is not None:
            E = _encode_unique(encoder, texts, progress)
        else:
            raise DataError("the tier captions have no embeddings", hint="choose a text space or an encoder")
        neg_cols = [f"neg_tier_{k}" for k in range(K)]
        if all(c in items.columns for c in neg_cols):
            neg_texts = items[neg_cols].fillna("").astype(str).to_numpy(dtype=object).reshape(-1)
        image_rows = np.arange(n)
    offsets = np.concatenate([[0], np.cumsum(lengths)])

    # root
    if isinstance(root, str):
        if root == "auto":
            root = "encoder" if encoder is not None else "mean"
        if root == "encoder":
            if encoder is None:
                raise DataError("the root needs the text encoder (to embed the empty string)",
                                hint="choose an encoder, or the mean embedding as the root")
            layer = text_space_layer(ds, text_space)
            r = root_embedding(encoder, layer=layer)
            source = (f"embedding of the empty string by {getattr(encoder, 'spec', None) or getattr(encoder, 'name', 'the encoder')}"
                      + (f" (layer {layer})" if layer is not None else ""))
        elif root == "mean":
            r, source = mean_root(E), "mean embedding (fallback: no encoder for the empty string)"
        else:
            raise DataError(f"unknown root option {root!r}", hint="use 'auto', 'encoder', 'mean' or a vector")
    else:
        r = np.asarray(root, dtype=np.float64).reshape(-1)
        if r.shape != (E.shape[1],):
            raise DataError(f"the root has {r.size} values, the text space {E.shape[1]}")
        r, source = normalize_rows(r[None])[0], "user-chosen vector"

    chains = Chains(ids=chain_ids, offsets=offsets, texts=texts, embeddings=E, root=r, root_source=source)

    # negatives
    if negatives not in ("auto", "none", "sample"):
        raise DataError(f"unknown negatives option {negatives!r}", hint="use 'auto', 'none' or 'sample'")
    if negatives != "none" and neg_texts is not None:
        # a per-layer text space: the encoder's final embedding would not match it, so only reuse chain texts
        chains = _with_given_negatives(chains, neg_texts, encoder if text_space_layer(ds, text_space) is None
                                       else None, progress)
    if negatives == "sample":
        chains = make_negatives(chains, seed=seed)

    # image side
    if image_space is not None:
        sp = ds[image_space]
        X = sp.vectors()[image_rows]
        same = sp.dim == E.shape[1] and sp.modality == "image"
        chains = replace(chains, images=normalize_rows(X) if same else np.asarray(X, dtype=np.float32),
                         image_in_text_space=same,
                         image_source=(f"'{image_space}' (same model as the text)" if same else
                                       f"'{image_space}' mapped into the text space by an affine map fitted on "
                                       f"training chains"))
    return chains


def _with_given_negatives(chains: Chains, neg_texts: np.ndarray, encoder=None, progress=None) -> Chains:
    """Embed given negative texts: reuse the embedding of an identical chain text, encode the rest with
    ``encoder`` (negatives that cannot be embedded are dropped: '' and a zero vector)."""
    known = {t: k for k, t in enumerate(chains.texts)}
    present = np.array([bool(str(t).strip()) for t in neg_texts])
    neg = np.zeros_like(chains.embeddings)
    missing = []
    for k in np.flatnonzero(present):
        j = known.get(neg_texts[k])
        if j is None:
            missing.append(k)
        else:
            neg[k] = chains.embeddings[j]
    if missing:
        if encoder is None:
            present[missing] = False
        else:
            neg[missing] = _encode_unique(encoder, [neg_texts[k] for k in missing], progress)
    clean = np.array([t if p else "" for t, p in zip(neg_texts, present)], dtype=object)
    return replace(chains, neg_texts=clean, neg_embeddings=neg)


def make_negatives(chains: Chains, seed: int = 0) -> Chains:
    """Sample a same-tier negative for every (chain, tier) that has no given one.

    For tier ``i`` of chain ``c`` the negative is the tier-``i`` text of another chain whose tier ``i - 1`` text
    equals ours (a sibling: it entails our parent but is a different text), when one exists; otherwise a random
    different tier-``i`` text (for tier 0 always a random different tier-0 text). Seeded. Tiers with no
    different same-tier text get none ('' and a zero vector).
    """
    rng = np.random.default_rng(seed)
    tiers = chains.tiers
    texts = chains.texts
    M = len(texts)
    parent = np.array([texts[k - 1] if tiers[k] > 0 else "" for k in range(M)], dtype=object)
    neg_texts = chains.neg_texts.copy() if chains.neg_texts is not None else np.full(M, "", dtype=object)
    neg_emb = chains.neg_embeddings.copy() if chains.neg_embeddings is not None else \
        np.zeros_like(chains.embeddings)
    by_tier: dict[int, np.ndarray] = {t: np.flatnonzero(tiers == t) for t in np.unique(tiers)}
    by_parent: dict[tuple, list[int]] = {}
    for k in range(M):
        by_parent.setdefault((int(tiers[k]), parent[k]), []).append(k)
    for k in range(M):
        if neg_texts[k]:
            continue
        cand = [j for j in by_parent.get((int(tiers[k]), parent[k]), []) if texts[j] != texts[k]] \
            if tiers[k] > 0 else []
        if not cand:
            pool = by_tier[int(tiers[k])]
            choice = None
            for _ in range(20):   # a few random tries, then a scan
                j = int(pool[rng.integers(len(pool))])
                if texts[j] != texts[k]:
                    choice = j
                    break
            if choice is None:
                diff = [j for j in pool if texts[j] != texts[k]]
                if not diff:
                    continue
                choice = int(diff[rng.integers(len(diff))])
            cand = [choice]
        j = cand[int(rng.integers(len(cand)))]
        neg_texts[k] = texts[j]
        neg_emb[k] = chains.embeddings[j]
    return replace(chains, neg_texts=neg_texts, neg_embeddings=neg_emb)


def fit_image_side(chains: Chains, fit_chains, ridge: float = 1e-2) -> tuple[np.ndarray, dict]:
    """Image-side vectors of every chain in the text space.

    When ``chains.images`` are already in the text space they are returned (normalised). Otherwise an
    :class:`core.align.AffineMap` (relative ridge ``ridge``) is fitted on the chains ``fit_chains`` only, mapping
    each chain's image-side vector to the embedding of its most specific tier; apply it to every chain and judge
    only chains outside ``fit_chains``.

    Returns
    -------
    (C, d) float32 normalised vectors and a dict describing the map (``method``, ``n_fit``, ``ridge``).
    """
    if chains.images is None:
        raise DataError("there is no image side", hint="choose an image / 3D space")
    if chains.image_in_text_space:
        return normalize_rows(chains.images), {"method": "none (same model as the text)"}
    from .align import AffineMap
    fit_chains = np.asarray(fit_chains)
    last = chains.offsets[1:] - 1
    amap = AffineMap(ridge=ridge).fit(chains.images[fit_chains], chains.embeddings[last[fit_chains]])
    return normalize_rows(amap.transform(chains.images)), {"method": "affine", "n_fit": int(len(fit_chains)),
                                                           "ridge": ridge}


def contradicting_chain(chains: Chains, c: int) -> tuple[np.ndarray, np.ndarray, str]:
    """Texts and embeddings to contrast chain ``c`` with: its same-tier negatives when it has them all, else the
    chain that shares the most leading tiers with it while differing after (a sibling), else the next chain.

    Returns (texts, embeddings, description).
    """
    rows = chains.chain_rows(c)
    if chains.has_negatives and all(bool(t) for t in chains.neg_texts[rows]):
        return chains.neg_texts[rows], chains.neg_embeddings[rows], "its same-tier negatives"
    mine = list(chains.texts[rows])
    best, best_shared = (c + 1) % chains.n_chains, -1
    for j in range(chains.n_chains):
        if j == c:
            continue
        other = list(chains.texts[chains.chain_rows(j)])
        shared = 0
        for a, b in zip(mine, other):
            if a != b:
                break
            shared += 1
        if shared < min(len(mine), len(other)) and shared > best_shared:
            best, best_shared = j, shared
    r = chains.chain_rows(best)
    return chains.texts[r], chains.embeddings[r], f"chain '{chains.ids[best]}' (shares {max(best_shared, 0)} tiers)"


def chain_pca(embeddings, root) -> np.ndarray:
    """2-D PCA coordinates of ``[root; embeddings]`` (row 0 is the root), centred on their mean."""
    from .projection import PCAProjection

    X = np.vstack([normalize_rows(np.asarray(root)[None]), normalize_rows(embeddings)]).astype(np.float64)
    coords = PCAProjection(2, device="cpu").fit_transform(X)     # the one PCA (signs fixed)
    if coords.shape[1] < 2:
        coords = np.hstack([coords, np.zeros((len(coords), 2 - coords.shape[1]))])
    return coords
