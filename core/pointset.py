"""Weighted point-cloud (set) similarity of token-set spaces (METHODS.md section 6, paper B).

An item is a set of ``M`` (weight, vector) pairs ``{(w_i, v_i)}`` - the token outputs of a text encoder, the
per-point features of a 3D encoder, the patch features of a vision encoder. The similarity of two sets is::

    s = (1 / (M M')) sum_i sum_j w_i w'_j [a1 <v^_i, v^'_j> + a2 k(v^_i, v^'_j)],     v^ = v / ||v||

with ``M`` the number of unmasked tokens, ``(a1, a2) = (0.667, 0.333)`` and ``k`` a Gaussian kernel
``exp(-||u - v||^2 / (2 sigma^2))`` (sigma = 0.5) or the inverse multiquadric ``c / sqrt(c^2 + ||u - v||^2)``
(c = 0.5). Kernel ``"linear"`` drops the kernel term (``(a1, a2) = (1, 0)`` unless given).

It is computed through one feature vector per set, ``f = [sqrt(a1) mean_i w_i v^_i, sqrt(a2) mean_i w_i phi(v^_i)]``
so that ``s = f . f'``, with random Fourier features ``phi(v) = sqrt(2/D) cos(W v + b)`` drawn once per seed and
shared by both sides (:class:`RandomFourierFeatures`). :func:`exact_pointset_similarity` is the exact double sum
(no RFF) for small sets of items, to measure the approximation error.

* :func:`pooled_vectors` - masked mean of each token set (the cosine-of-mean-pooled baseline's vectors);
* :func:`kernel_matrix` - the exact kernel between two sets of points;
* :class:`RandomFourierFeatures` - the seeded RFF map for the Gaussian / IMQ kernel;
* :func:`pointset_features` / :func:`exact_pointset_similarity` - feature-space and exact similarities;
* :func:`weight_head` / :func:`info_nce_loss` - the learned weights' squashing and the symmetric InfoNCE loss;
* :class:`PointSetSimilarity` - the estimator: projections (CCA on the anchors when the widths differ), RFF, and
  uniform or learned (trained) weights; ``score_matrix`` gives query x query similarities;
* :func:`similarity_spectrum` - singular values of a similarity matrix (the rank diagnostic);
* :func:`compare_pointset_similarities` - cosine of mean-pooled vectors vs uniform-weight vs learned-weight point-set
  similarity on held-out pairs, mean +- std over seeds (judged with :func:`core.evaluation.metrics.evaluate_scores`).

Feature computations run in torch (float32, GPU when present) in chunks of items, so memory-mapped ``n x T x d``
arrays never need to fit in memory; the exact path and the spectra run in float64.
"""
from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .align import CCA
from .base import Estimator, init_linear_, numpy_rng, torch_generator
from .dataset import Space, pool_token_sets
from .device import float64_device, pick_device
from .errors import DataError
from .numerics import pool_coefficients
from .training import EarlyStopping
from .evaluation.metrics import DEFAULT_KS, evaluate_scores, std_over_seeds, summarize_over_seeds
from .results import ABSENT, Result
from .evaluation.splits import resolve_sizes, split_anchors_queries

__all__ = [
    "KERNELS", "DEFAULT_A1", "DEFAULT_A2", "LOGIT_SCALE_INIT", "LOGIT_SCALE_MIN", "LOGIT_SCALE_MAX",
    "resolve_mixture", "pooled_vectors", "kernel_matrix", "RandomFourierFeatures", "pointset_features",
    "exact_pointset_similarity", "weight_head", "info_nce_loss", "PointSetSimilarity", "similarity_spectrum",
    "numerical_rank", "compare_pointset_similarities", "SIMILARITIES",
]

KERNELS = ("gauss", "imq", "linear")
DEFAULT_A1, DEFAULT_A2 = 0.667, 0.333
LOGIT_SCALE_INIT = 14.29
LOGIT_SCALE_MIN, LOGIT_SCALE_MAX = 1.0, 100.0
WEIGHT_BOUND = 100.0
#: The similarities :func:`compare_pointset_similarities` reports, in display order.
SIMILARITIES = ("cosine_pooled", "pointset_uniform", "pointset_learned")
_FEATURE_BUDGET = 1 << 24   # floats per chunk of B x T x D intermediates (64 MB in float32)


def _no_progress(iterable, total=None, desc=""):
    return iterable


# ------------------------------------------------------------------------------------------------
# inputs
# ------------------------------------------------------------------------------------------------
def _tokens(x, mask=None, name: str = "A"):
    """(data n x T x d, mask n x T bool or None) from a token-set Space or an array (+ mask)."""
    if isinstance(x, Space):
        if x.kind != "tokens":
            raise DataError(f"space '{x.name}' holds vectors (n x d), not token sets (n x T x d)", array=x.name,
                            hint="pick a token-set space (e.g. per-token or per-point outputs)")
        return x.data, (x.mask if mask is None else mask), x.name
    shape = tuple(getattr(x, "shape", ()))
    if len(shape) != 3:
        raise DataError(f"{name} must be token sets (n x T x d), got shape {shape}", array=name,
                        hint="a point-set similarity needs one set of vectors per item")
    if mask is not None and tuple(np.shape(mask)) != shape[:2]:
        raise DataError(f"the mask of {name} has shape {tuple(np.shape(mask))}, expected {shape[:2]} (n x T)",
                        array=name)
    return x, mask, name


def _mask_rows(mask, rows_or_slice, n_tokens: int, count: int) -> np.ndarray:
    if mask is None:
        return np.ones((count, n_tokens), dtype=bool)
    return np.asarray(mask[rows_or_slice]).astype(bool)


def _chunk_items(n_tokens: int, width: int) -> int:
    return max(1, min(4096, _FEATURE_BUDGET // max(1, n_tokens * width)))


def resolve_mixture(kernel: str, a1: float | None = None, a2: float | None = None) -> tuple[float, float]:
    """The (a1, a2) mixture of a kernel: the paper's (0.667, 0.333) for 'gauss' / 'imq', (1, 0) for 'linear'."""
    kernel = _check_kernel(kernel)
    if kernel == "linear":
        return (1.0 if a1 is None else float(a1)), 0.0
    a1 = DEFAULT_A1 if a1 is None else float(a1)
    a2 = DEFAULT_A2 if a2 is None else float(a2)
    if a1 < 0 or a2 < 0:
        raise DataError(f"a1 and a2 must be >= 0, got {a1} and {a2}")
    return a1, a2


def _check_kernel(kernel: str) -> str:
    k = str(kernel).lower()
    k = {"gaussian": "gauss", "rbf": "gauss", "inverse_multiquadric": "imq"}.get(k, k)
    if k not in KERNELS:
        raise DataError(f"unknown kernel {kernel!r}", hint=f"use one of {', '.join(KERNELS)}")
    return k


def pooled_vectors(tokens, mask=None, chunk: int = 4096) -> np.ndarray:
    """Masked (unweighted) mean of each token set: ``n x d`` float32 (a set with no tokens gives zeros); the
    uniform-weight case of :func:`core.dataset.pool_token_sets` (paper B's mean-pooled baseline).

    Parameters
    ----------
    tokens : n x T x d array (memmap fine) or a token-set :class:`~core.dataset.Space` (its mask is used).
    mask : optional n x T bool (True = real token).
    chunk : items per chunk.
    """
    data, mask, _ = _tokens(tokens, mask)
    return pool_token_sets(data, mask, chunk=chunk)


# ------------------------------------------------------------------------------------------------
# kernels and random Fourier features
# ------------------------------------------------------------------------------------------------
def _kernel_of_sqdist(d2: torch.Tensor, kernel: str, sigma: float, c: float) -> torch.Tensor:
    d2 = d2.clamp_min(0)
    if kernel == "gauss":
        return torch.exp(-d2 / (2 * sigma ** 2))
    if kernel == "imq":
        return c / torch.sqrt(c ** 2 + d2)
    return torch.zeros_like(d2)


def kernel_matrix(U, V, kernel: str = "gauss", sigma: float = 0.5, c: float = 0.5, device=None) -> np.ndarray:
    """Exact kernel between the rows of ``U`` (m x d) and ``V`` (k x d), float64.

    ``gauss``: ``exp(-||u - v||^2 / (2 sigma^2))``; ``imq``: ``c / sqrt(c^2 + ||u - v||^2)``; ``linear``: ``<u, v>``.
    The points are used as given (the point-set similarity L2-normalises them first).
    """
    kernel = _check_kernel(kernel)
    dev = float64_device(pick_device(device))
    u = torch.as_tensor(np.asarray(U, dtype=np.float64), device=dev)
    v = torch.as_tensor(np.asarray(V, dtype=np.float64), device=dev)
    if u.ndim != 2 or v.ndim != 2 or u.shape[1] != v.shape[1]:
        raise DataError(f"kernel_matrix needs two 2-D arrays of equal width, got {tuple(u.shape)} and "
                        f"{tuple(v.shape)}")
    if kernel == "linear":
        return (u @ v.T).cpu().numpy()
    d2 = (u * u).sum(1)[:, None] + (v * v).sum(1)[None, :] - 2 * u @ v.T
    return _kernel_of_sqdist(d2, kernel, sigma, c).cpu().numpy()


class RandomFourierFeatures(Estimator):
    """Random Fourier features ``phi(v) = sqrt(2/D) cos(v W + b)`` of a Gaussian or IMQ kernel, so that
    ``phi(u) . phi(v) ~ k(u, v)`` (METHODS.md section 6).

    ``b ~ U[0, 2 pi)``. Gaussian: the columns of ``W`` are ``N(0, I / sigma^2)``. IMQ (a scale mixture of Gaussians):
    per column ``t ~ Gamma(shape 1/2, rate c^2)``, drawn as ``t = z'^2 / (2 c^2)`` with ``z' ~ N(0, 1)`` (the same
    law), then ``sqrt(2 t) z`` with ``z ~ N(0, I)``. Drawn once from ``random_state`` with local generators (on
    the CPU, float64, so the draw is the same on every device) and shared by both sides.

    Parameters
    ----------
    n_features : D (default 1024).
    kernel : 'gauss' or 'imq'.
    sigma : Gaussian bandwidth (default 0.5).
    c : IMQ scale (default 0.5).
    random_state : seed of the draw (int, None or a numpy Generator).
    device : torch device for :meth:`transform` (default :func:`core.device.pick_device`).

    Attributes
    ----------
    W_ : d x D float64 array; b_ : (D,) float64 array; dim_ : d.
    """

    def __init__(self, n_features: int = 1024, kernel: str = "gauss", sigma: float = 0.5, c: float = 0.5,
                 random_state=0, device=None):
        self.n_features = n_features
        self.kernel = kernel
        self.sigma = sigma
        self.c = c
        self.random_state = random_state
        self.device = device

    _fitted_attributes = ("W_", "b_")
    _fit_call = "fit(dim=d)"

    def fit(self, X=None, dim: int | None = None) -> "RandomFourierFeatures":
        """Draw ``W_`` and ``b_`` for points of width ``dim`` (or ``X.shape[-1]``). Returns self."""
        kernel = _check_kernel(self.kernel)
        if kernel == "linear":
            raise DataError("the linear kernel has no random Fourier features")
        if dim is None:
            if X is None:
                raise DataError("RandomFourierFeatures.fit needs X or dim")
            dim = int(np.shape(X)[-1])
        D = int(self.n_features)
        if D < 1 or dim < 1:
            raise DataError(f"n_features and the width must be >= 1, got {D} and {dim}")
        if self.sigma <= 0 or self.c <= 0:
            raise DataError(f"sigma and c must be > 0, got {self.sigma} and {self.c}")
        seed = self._seed()
        gen = torch_generator(seed)
        z = torch.randn(dim, D, generator=gen, dtype=torch.float64)
        if kernel == "gauss":
            W = z / float(self.sigma)
        else:   # t ~ Gamma(1/2, rate c^2) is z'^2 / (2 c^2), z' ~ N(0, 1): drawn from its own local generator
            t = torch.randn(D, generator=torch_generator(seed + 1), dtype=torch.float64) ** 2 / (2 * float(self.c) ** 2)
            W = z * torch.sqrt(2 * t)[None, :]
        b = torch.rand(D, generator=gen, dtype=torch.float64) * (2 * math.pi)
        self.W_, self.b_, self.dim_ = W.numpy(), b.numpy(), int(dim)
        return self

    def _require(self):
        self._require_fitted()

    def features_t(self, v: torch.Tensor) -> torch.Tensor:
        """phi of a tensor ``(..., d)`` -> ``(..., D)`` on ``v``'s device and dtype (differentiable)."""
        self._require()
        W = torch.as_tensor(self.W_, device=v.device, dtype=v.dtype)
        b = torch.as_tensor(self.b_, device=v.device, dtype=v.dtype)
        return math.sqrt(2.0 / W.shape[1]) * torch.cos(v @ W + b)

    def transform(self, X) -> np.ndarray:
        """phi of the rows of ``X`` (n x d) -> n x D float64."""
        self._require()
        dev = float64_device(pick_device(self.device))
        x = torch.as_tensor(np.asarray(X, dtype=np.float64), device=dev)
        if x.shape[-1] != self.dim_:
            raise DataError(f"the features were drawn for width {self.dim_}, got {x.shape[-1]}")
        return self.features_t(x).cpu().numpy()


# ------------------------------------------------------------------------------------------------
# set features and the exact double sum
# ------------------------------------------------------------------------------------------------
def _set_features_t(v: torch.Tensor, m: torch.Tensor, w: torch.Tensor, rff: RandomFourierFeatures | None,
                    a1: float, a2: float, normalize_linear: bool = False) -> torch.Tensor:
    """f = [sqrt(a1) mean_i w_i v^_i, sqrt(a2) mean_i w_i phi(v^_i)] for a batch (B x T x d, B x T, B x T)."""
    vh = torch.nn.functional.normalize(v, dim=-1)
    wm = pool_coefficients(m, w)          # the one pooling: (1/M) sum_i m_i w_i (.)
    lin = torch.einsum("bt,btd->bd", wm, vh)
    if normalize_linear:
        lin = torch.nn.functional.normalize(lin, dim=-1)
    parts = [math.sqrt(a1) * lin]
    if rff is not None and a2 > 0:
        parts.append(math.sqrt(a2) * torch.einsum("bt,btk->bk", wm, rff.features_t(vh)))
    return torch.cat(parts, dim=-1)


def pointset_features(tokens, mask=None, weights=None, *, kernel: str = "gauss", rff: RandomFourierFeatures |
                      None = None, n_features: int = 1024, sigma: float = 0.5, c: float = 0.5, seed: int = 0,
                      a1: float | None = None, a2: float | None = None, normalize_linear: bool = False,
                      device=None, progress=None) -> np.ndarray:
    """Set features ``f`` of every item, so that the point-set similarity of two items is ``f . f'``.

    Parameters
    ----------
    tokens : n x T x d array (memmap fine) or a token-set Space (its mask is used).
    mask : n x T bool (True = real token); default all tokens.
    weights : n x T weights ``w_i``; default uniform (1 for every real token).
    kernel : 'gauss', 'imq' or 'linear' (no kernel part).
    rff : a fitted :class:`RandomFourierFeatures` (share one between the two sides!); default: drawn from
        ``n_features``, ``sigma``, ``c``, ``seed``.
    a1, a2 : mixture weights (default :func:`resolve_mixture`).
    normalize_linear : L2-normalise the linear part (the paper's code may; default False).
    device : torch device (default :func:`core.device.pick_device`).
    progress : tqdm-like ``progress(iterable, total=None, desc="")``.

    Returns
    -------
    n x (d + D) float32 array (n x d for the linear kernel).
    """
    kernel = _check_kernel(kernel)
    a1, a2 = resolve_mixture(kernel, a1, a2)
    data, mask, name = _tokens(tokens, mask)
    n, T, d = data.shape
    if weights is not None and tuple(np.shape(weights)) != (n, T):
        raise DataError(f"weights have shape {tuple(np.shape(weights))}, expected {(n, T)} (n x T)", array=name)
    if kernel != "linear" and a2 > 0 and rff is None:
        rff = RandomFourierFeatures(n_features, kernel, sigma, c, seed).fit(dim=d)
    if kernel == "linear":
        rff = None
    dev = pick_device(device)
    chunk = _chunk_items(T, max(d, rff.W_.shape[1] if rff is not None else d))
    width = d + (rff.W_.shape[1] if rff is not None and a2 > 0 else 0)
    out = np.empty((n, width), dtype=np.float32)
    starts = range(0, n, chunk)
    with torch.no_grad():
        for start in (progress or _no_progress)(starts, total=len(starts), desc="set features"):
            sl = slice(start, min(n, start + chunk))
            v = torch.as_tensor(np.asarray(data[sl], dtype=np.float32), device=dev)
            m = torch.as_tensor(_mask_rows(mask, sl, T, v.shape[0]), device=dev).float()
            w = (torch.ones_like(m) if weights is None
                 else torch.as_tensor(np.asarray(weights[sl], dtype=np.float32), device=dev))
            out[sl] = _set_features_t(v, m, w, rff, a1, a2, normalize_linear).cpu().numpy()
    return out


def exact_pointset_similarity(tokens_a, tokens_b, mask_a=None, mask_b=None, weights_a=None, weights_b=None, *,
                              kernel: str = "gauss", sigma: float = 0.5, c: float = 0.5, a1: float | None = None,
                              a2: float | None = None, normalize_linear: bool = False, device=None,
                              progress=None) -> np.ndarray:
    """The exact double sum (no random features), float64: for small numbers of items.

    ``S[i, j] = (1/(M_i M_j)) sum_s sum_t w_s w'_t [a1 <v^_s, v^'_t> + a2 k(v^_s, v^'_t)]`` over the real tokens of
    item ``i`` of ``tokens_a`` and item ``j`` of ``tokens_b`` (both n x T x d with the same d). With
    ``normalize_linear`` the linear double sum is divided by ``||mean_s w_s v^_s|| ||mean_t w'_t v^'_t||`` (the
    feature path's normalised linear part). Cost
    ``O(n_a n_b T T' d)``; intermediates are chunked to about 128 MB.

    Returns
    -------
    n_a x n_b float64 array.
    """
    kernel = _check_kernel(kernel)
    a1, a2 = resolve_mixture(kernel, a1, a2)
    A, mask_a, _ = _tokens(tokens_a, mask_a, "A")
    B, mask_b, _ = _tokens(tokens_b, mask_b, "B")
    if A.shape[2] != B.shape[2]:
        raise DataError(f"the two sides have widths {A.shape[2]} and {B.shape[2]}",
                        hint="project them to a common width first")
    dev = float64_device(pick_device(device))

    def prep(data, mask, weights):
        n, T, _ = data.shape
        v = torch.nn.functional.normalize(torch.as_tensor(np.asarray(data, dtype=np.float64), device=dev), dim=-1)
        m = torch.as_tensor(_mask_rows(mask, slice(None), T, n), device=dev).double()
        w = torch.ones_like(m) if weights is None else torch.as_tensor(np.asarray(weights, np.float64), device=dev)
        return v, w * m / m.sum(1).clamp_min(1)[:, None]

    va, wa = prep(A, mask_a, weights_a)
    vb, wb = prep(B, mask_b, weights_b)
    na, Ta, _ = va.shape
    nb, Tb, _ = vb.shape
    out = torch.empty(na, nb, dtype=torch.float64, device=dev)
    # ||mean_s w_s v^_s||^2 = sum_s sum_t w_s w_t <v^_s, v^_t>: the norm of the weighted mean (0 stays 0)
    norm_a = torch.einsum("is,isd->id", wa, va).norm(dim=1).clamp_min(1e-12)
    norm_b = torch.einsum("jt,jtd->jd", wb, vb).norm(dim=1).clamp_min(1e-12)
    chunk = max(1, _FEATURE_BUDGET // max(1, nb * Ta * Tb))
    starts = range(0, na, chunk)
    for start in (progress or _no_progress)(starts, total=len(starts), desc="exact double sum"):
        sl = slice(start, min(na, start + chunk))
        G = torch.einsum("isd,jtd->ijst", va[sl], vb)            # cosines of every pair of points
        lin = torch.einsum("is,jt,ijst->ij", wa[sl], wb, G)
        if normalize_linear:
            lin = lin / (norm_a[sl, None] * norm_b[None, :])
        out[sl] = a1 * lin
        if a2 > 0:
            na2 = (va[sl] ** 2).sum(-1)[:, None, :, None] + (vb ** 2).sum(-1)[None, :, None, :] - 2 * G
            out[sl] += a2 * torch.einsum("is,jt,ijst->ij", wa[sl], wb, _kernel_of_sqdist(na2, kernel, sigma, c))
    return out.cpu().numpy()


# ------------------------------------------------------------------------------------------------
# learned weights: squashing and loss
# ------------------------------------------------------------------------------------------------
def weight_head(x):
    """``w = 100 tanh(x / 100)``: the learned weights' squashing (may be negative; torch or numpy in, same out)."""
    if isinstance(x, torch.Tensor):
        return WEIGHT_BOUND * torch.tanh(x / WEIGHT_BOUND)
    return WEIGHT_BOUND * np.tanh(np.asarray(x, dtype=np.float64) / WEIGHT_BOUND)


def clamp_logit_scale(scale):
    """The logit scale clamped to [1, 100] (torch or float)."""
    if isinstance(scale, torch.Tensor):
        return scale.clamp(LOGIT_SCALE_MIN, LOGIT_SCALE_MAX)
    return float(min(max(float(scale), LOGIT_SCALE_MIN), LOGIT_SCALE_MAX))


def info_nce_loss(Fa: torch.Tensor, Fb: torch.Tensor, logit_scale) -> torch.Tensor:
    """Symmetric InfoNCE on paired rows: ``0.5 [CE(s Fa Fb^T) + CE(s Fb Fa^T)]`` with the true pair on the diagonal.

    ``s`` is ``logit_scale`` clamped to [1, 100]. Returns a scalar tensor (differentiable).
    """
    s = clamp_logit_scale(torch.as_tensor(logit_scale, dtype=Fa.dtype, device=Fa.device))
    logits = s * Fa @ Fb.T
    target = torch.arange(Fa.shape[0], device=Fa.device)
    ce = torch.nn.functional.cross_entropy
    return 0.5 * (ce(logits, target) + ce(logits.T, target))


_SIDE_KEYS = {"x": "a", "y": "b", "a": "a", "b": "b"}


def _side_key(side) -> str:
    """'x' / 'y' (the pairwise convention) or the older 'a' / 'b' -> 'a' / 'b'."""
    return _SIDE_KEYS.get(str(side).lower(), str(side))


class _Side(torch.nn.Module):
    """One side: affine projection (fixed or trained) and a linear weight head on standardised raw tokens."""

    def __init__(self, dim_in: int, proj: np.ndarray | None, proj_bias: np.ndarray | None, token_mean, token_std,
                 learn: bool, train_projection: bool, head_bias: bool = True,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("token_mean", torch.as_tensor(token_mean, dtype=torch.float32))
        self.register_buffer("token_std", torch.as_tensor(token_std, dtype=torch.float32))
        self.rotation = None
        if proj is None:
            self.proj = None
        else:
            self.register_buffer("proj", torch.as_tensor(proj, dtype=torch.float32))
            self.register_buffer("proj_bias", torch.as_tensor(proj_bias, dtype=torch.float32))
            if train_projection:
                # trained as a k x k map on top of the (whitened) CCA coordinates, started at the identity: the
                # step sizes of the optimiser then match the coordinates' unit scale
                k = self.proj.shape[1]
                self.rotation = torch.nn.Parameter(torch.eye(k))
                self.shift = torch.nn.Parameter(torch.zeros(k))
        self.learn = learn
        self.head = torch.nn.Linear(dim_in, 1, bias=head_bias)
        if head_bias:
            with torch.no_grad():   # start from uniform weights: 100 tanh(x/100) = 1 exactly at x = 100 atanh(1/100)
                self.head.weight.zero_()
                self.head.bias.fill_(WEIGHT_BOUND * math.atanh(1.0 / WEIGHT_BOUND))
        elif generator is not None:
            # without a bias (the authors' head) the weight keeps torch's random initialisation, drawn from the
            # caller's local generator
            init_linear_(self.head, generator)
        self.head.requires_grad_(learn)

    def project(self, v: torch.Tensor) -> torch.Tensor:
        if self.proj is None:
            return v
        out = v @ self.proj + self.proj_bias
        return out if self.rotation is None else out @ self.rotation + self.shift

    def weights(self, v: torch.Tensor) -> torch.Tensor:
        if not self.learn:
            return torch.ones(v.shape[:2], dtype=v.dtype, device=v.device)
        x = self.head((v - self.token_mean) / self.token_std).squeeze(-1)
        return weight_head(x)


# ------------------------------------------------------------------------------------------------
# the estimator
# ------------------------------------------------------------------------------------------------
class PointSetSimilarity(Estimator):
    """Point-set similarity of two token-set spaces, with uniform or learned weights (paper B).

    ``fit`` on anchor pairs (row ``i`` of ``A`` and of ``B`` describe the same item):

    1. projection: when ``projection='auto'`` and the widths differ (or ``projection='cca'``), a CCA
       (:class:`core.align.CCA`, ``n_components``, ridge ``reg``) is fitted on the mean-pooled anchors and applied to
       every token (``(v - mean) W``), so both sides live in one ``k``-dim space; otherwise the tokens are used as
       they are (equal widths needed);
    2. random Fourier features drawn once from ``seed`` for the common width, shared by both sides;
    3. ``weights='learned'``: a linear weight head per side on the standardised raw tokens,
       ``w = 100 tanh(x / 100)`` (started at ``w = 1``, the uniform baseline), and - where a projection is used -
       a ``k x k`` linear map (plus shift) per side on top of the CCA coordinates (started at the identity),
       trained with symmetric InfoNCE (:func:`info_nce_loss`, logit scale started at 14.29 and clamped to
       [1, 100]) by AdamW on mini-batches of anchor pairs, seeded;
       ``val_fraction`` of the anchors are held out and the state with the lowest held-out loss (epoch 0 = the
       untrained start included) is kept, stopping after ``patience`` epochs without improvement.

    Parameters
    ----------
    kernel : 'gauss' (default), 'imq' or 'linear'.
    n_features : RFF dimension D (default 1024).
    sigma, c : Gaussian bandwidth and IMQ scale (default 0.5 each).
    a1, a2 : mixture (default (0.667, 0.333); (1, 0) for 'linear').
    weights : 'uniform' (the baseline, no training) or 'learned'.
    projection : 'auto', 'cca' or 'none'.
    n_components : CCA dimension k (capped at min(p, q, anchors - 1)).
    reg : CCA relative ridge.
    train_projection : also train the projections (when there are any; default True).
    normalize_linear : L2-normalise the linear part of ``f`` (default True; METHODS.md allows it). Without it the
        features are small (a mean of unit vectors pointing many ways), InfoNCE at logit scale 14.29 sits in its
        near-linear regime, and training lowers the loss by inflating the norms of some items' features, which
        makes hubs and lowers retrieval (measured on the demo: top-1 0.08 -> 0.03; with it 0.08 -> 0.19).
    max_epochs, batch_size, lr, weight_decay, patience, val_fraction : training settings.
    logit_scale_init : initial logit scale (14.29; the authors' 1 / 0.07 = 14.2857 under ``logit_scale_param=
        "direct"`` when left at the default).
    scale_lr_factor : learning rate of the logit scale relative to ``lr`` (default 1).
    rff_redraw : draw fresh random features (W, b) at every training step, as the authors' code (METHODS.md 7.5;
        paper B preset); the validation loss, :meth:`transform` and :meth:`score_matrix` always use the one seeded
        draw ``rff_``. Default False: the seeded draw throughout.
    head_bias : the weight head has a bias and starts at uniform weights (default True); False: the authors'
        head without bias, randomly initialised (seeded).
    logit_scale_param : ``"log"`` (default: the parameter is log s) or ``"direct"`` (the authors': s itself is
        the parameter); both clamped to [1, 100].
    random_state : seeds the RFF draw, the validation split, the head's random start and the batches (int, None
        or a numpy Generator).
    device : torch device (default :func:`core.device.pick_device`).

    Attributes
    ----------
    rff_ : the shared :class:`RandomFourierFeatures` (None for 'linear'); cca_ : the fitted CCA or None;
    dim_a_, dim_b_, common_dim_ : widths; a1_, a2_ : mixture used; projected_ : bool;
    logit_scale_ : final (clamped) logit scale; history_ : list of {"epoch", "train_loss", "val_loss"};
    best_epoch_, n_epochs_ : early-stopping bookkeeping; fit_seconds_ : training wall time;
    n_anchors_, n_train_, n_val_ : pair counts.
    """

    def __init__(self, kernel: str = "gauss", n_features: int = 1024, sigma: float = 0.5, c: float = 0.5,
                 a1: float | None = None, a2: float | None = None, weights: str = "uniform",
                 projection: str = "auto", n_components: int = 50, reg: float = 1e-3, train_projection: bool = True,
                 normalize_linear: bool = True, max_epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                 weight_decay: float = 1e-4, patience: int = 5, val_fraction: float = 0.1,
                 logit_scale_init: float = LOGIT_SCALE_INIT, scale_lr_factor: float = 1.0, random_state=0,
                 device=None, rff_redraw: bool = False, head_bias: bool = True, logit_scale_param: str = "log"):
        self.rff_redraw = rff_redraw
        self.head_bias = head_bias
        self.logit_scale_param = logit_scale_param
        self.kernel = kernel
        self.n_features = n_features
        self.sigma = sigma
        self.c = c
        self.a1 = a1
        self.a2 = a2
        self.weights = weights
        self.projection = projection
        self.n_components = n_components
        self.reg = reg
        self.train_projection = train_projection
        self.normalize_linear = normalize_linear
        self.max_epochs = max_epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.patience = patience
        self.val_fraction = val_fraction
        self.logit_scale_init = logit_scale_init
        self.scale_lr_factor = scale_lr_factor
        self.random_state = random_state
        self.device = device

    _fitted_attributes = ("side_a_", "side_b_")
    _fit_call = "fit(A, B)"

    # -- fitting ---------------------------------------------------------------------------------
    def fit(self, A, B, mask_a=None, mask_b=None, progress=None) -> "PointSetSimilarity":
        """Fit on anchor pairs ``A`` (n x T x p) and ``B`` (n x T' x q) (arrays or token-set Spaces). Returns self."""
        kernel = _check_kernel(self.kernel)
        if self.weights not in ("uniform", "learned"):
            raise DataError(f"weights must be 'uniform' or 'learned', got {self.weights!r}")
        if self.projection not in ("auto", "cca", "none"):
            raise DataError(f"projection must be 'auto', 'cca' or 'none', got {self.projection!r}")
        A, mask_a, name_a = _tokens(A, mask_a, "A")
        B, mask_b, name_b = _tokens(B, mask_b, "B")
        if A.shape[0] != B.shape[0]:
            raise DataError(f"A has {A.shape[0]} anchor items but B has {B.shape[0]}",
                            hint="row i of A and row i of B must describe the same item")
        n = int(A.shape[0])
        if n < 2:
            raise DataError(f"at least 2 anchor pairs are needed, got {n}")
        self.a1_, self.a2_ = resolve_mixture(kernel, self.a1, self.a2)
        self.dim_a_, self.dim_b_ = int(A.shape[2]), int(B.shape[2])
        dev = pick_device(self.device)
        progress = progress or _no_progress
        seed = self._seed()

        self.projected_ = self.projection == "cca" or (self.projection == "auto" and self.dim_a_ != self.dim_b_)
        self.cca_ = None
        if self.projected_:
            k = int(min(self.n_components, self.dim_a_, self.dim_b_, n - 1))
            if k < 1:
                raise DataError("too few anchors for a CCA projection", hint="use more anchor pairs")
            pa, pb = pooled_vectors(A, mask_a), pooled_vectors(B, mask_b)
            self.cca_ = CCA(k, reg=self.reg, device=self.device).fit(pa, pb)
            self.common_dim_ = k
        elif self.dim_a_ != self.dim_b_:
            raise DataError(f"the two sides have widths {self.dim_a_} and {self.dim_b_}; projection='none' needs "
                            "equal widths", hint="use projection='auto' (a CCA fitted on the anchors)")
        else:
            self.common_dim_ = self.dim_a_
        self.rff_ = None
        if kernel != "linear" and self.a2_ > 0:
            self.rff_ = RandomFourierFeatures(self.n_features, kernel, self.sigma, self.c, seed,
                                              self.device).fit(dim=self.common_dim_)
        learn = self.weights == "learned"
        if self.logit_scale_param not in ("log", "direct"):
            raise DataError(f"logit_scale_param must be 'log' or 'direct', got {self.logit_scale_param!r}")
        head_gen = torch_generator(seed)   # the random head start (head_bias=False): one local stream, a then b
        self.side_a_ = self._make_side(A, mask_a, "a", learn, seed, head_gen).to(dev)
        self.side_b_ = self._make_side(B, mask_b, "b", learn, seed, head_gen).to(dev)
        init = float(self.logit_scale_init)
        if self.logit_scale_param == "direct":
            if init == LOGIT_SCALE_INIT:
                init = 1.0 / 0.07
            self.log_scale_ = torch.nn.Parameter(torch.tensor(init, device=dev))   # holds s itself
        else:
            self.log_scale_ = torch.nn.Parameter(torch.tensor(math.log(init), device=dev))
        self.history_, self.best_epoch_, self.n_epochs_ = [], 0, 0
        self.n_anchors_, self.n_train_, self.n_val_ = n, n, 0
        t0 = time.perf_counter()
        if learn:
            self._train(A, B, mask_a, mask_b, dev, progress, seed)
        self.fit_seconds_ = time.perf_counter() - t0
        self.logit_scale_ = float(clamp_logit_scale(self._scale().detach()).item())
        return self

    def _scale(self) -> torch.Tensor:
        """The logit scale (before the clamp of :func:`info_nce_loss`)."""
        return self.log_scale_ if self.logit_scale_param == "direct" else self.log_scale_.exp()

    def _train_rff(self, rng) -> "RandomFourierFeatures | None":
        """The random features of one training step: a fresh draw with ``rff_redraw``, else the seeded ``rff_``."""
        if self.rff_ is None or not self.rff_redraw:
            return self.rff_
        return RandomFourierFeatures(self.n_features, self.kernel, self.sigma, self.c, int(rng.integers(2 ** 31)),
                                     self.device).fit(dim=self.common_dim_)

    def _make_side(self, X, mask, side: str, learn: bool, seed: int, generator: torch.Generator) -> _Side:
        n, T, d = X.shape
        proj = bias = None
        if self.cca_ is not None:
            W = self.cca_.W_x_ if side == "a" else self.cca_.W_y_
            mean = self.cca_.mean_x_ if side == "a" else self.cca_.mean_y_
            proj, bias = W, -(mean @ W)
        mean, std = _token_moments(X, mask, min(n, 2048), seed)
        return _Side(d, proj, bias, mean, std, learn, bool(self.train_projection) and learn,
                     head_bias=bool(self.head_bias), generator=generator)

    def _features_t(self, side: _Side, v: torch.Tensor, m: torch.Tensor, rff=None) -> torch.Tensor:
        w = side.weights(v)
        return _set_features_t(side.project(v), m, w, self.rff_ if rff is None else rff, self.a1_, self.a2_,
                               self.normalize_linear)

    def _batch(self, X, mask, rows, dev):
        rows = np.sort(np.asarray(rows))
        v = torch.as_tensor(np.asarray(X[rows], dtype=np.float32), device=dev)
        m = torch.as_tensor(_mask_rows(mask, rows, X.shape[1], len(rows)), device=dev).float()
        return v, m

    def _train(self, A, B, mask_a, mask_b, dev, progress, seed: int):
        n = A.shape[0]
        rng = numpy_rng(seed)
        perm = rng.permutation(n)
        n_val = int(round(self.val_fraction * n)) if n >= 20 else 0
        val_rows, train_rows = np.sort(perm[:n_val]), perm[n_val:]
        self.n_train_, self.n_val_ = int(len(train_rows)), int(n_val)
        params = [p for p in list(self.side_a_.parameters()) + list(self.side_b_.parameters()) if p.requires_grad]
        opt = torch.optim.AdamW([{"params": params},
                                 {"params": [self.log_scale_], "lr": self.lr * self.scale_lr_factor,
                                  "weight_decay": 0.0}], lr=self.lr, weight_decay=self.weight_decay)
        bs = int(max(2, min(self.batch_size, len(train_rows))))
        draw_rng = np.random.default_rng([int(seed), 7])   # seeds of the per-step random features

        def val_loss():
            if n_val < 2:
                return None
            with torch.no_grad():
                fa, fb = [], []
                step = _chunk_items(max(A.shape[1], B.shape[1]), max(self.common_dim_, self.n_features))
                for s in range(0, n_val, step):
                    rows = val_rows[s:s + step]
                    fa.append(self._features_t(self.side_a_, *self._batch(A, mask_a, rows, dev)))
                    fb.append(self._features_t(self.side_b_, *self._batch(B, mask_b, rows, dev)))
                return float(info_nce_loss(torch.cat(fa), torch.cat(fb), self._scale()).item())

        stopper = EarlyStopping(self.patience, 1e-6, self._state_copy).start(val_loss(), 0)
        self.history_.append({"epoch": 0, "train_loss": None, "val_loss": stopper.best})
        for epoch in progress(range(1, int(self.max_epochs) + 1), total=int(self.max_epochs),
                              desc="training weights"):
            order = train_rows[rng.permutation(len(train_rows))]
            losses = []
            for s in range(0, len(order) - 1, bs):
                rows = order[s:s + bs]
                if len(rows) < 2:
                    continue
                rows = np.sort(rows)   # same order on both sides: pairs stay on the diagonal
                rff = self._train_rff(draw_rng)      # one draw shared by both sides of the step
                fa = self._features_t(self.side_a_, *self._batch(A, mask_a, rows, dev), rff=rff)
                fb = self._features_t(self.side_b_, *self._batch(B, mask_b, rows, dev), rff=rff)
                loss = info_nce_loss(fa, fb, self._scale())
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                with torch.no_grad():   # keep the parameter itself inside the clamp's range
                    if self.logit_scale_param == "direct":
                        self.log_scale_.clamp_(LOGIT_SCALE_MIN, LOGIT_SCALE_MAX)
                    else:
                        self.log_scale_.clamp_(math.log(LOGIT_SCALE_MIN), math.log(LOGIT_SCALE_MAX))
                losses.append(float(loss.item()))
            vl = val_loss()
            self.history_.append({"epoch": epoch, "train_loss": float(np.mean(losses)) if losses else None,
                                  "val_loss": vl})
            self.n_epochs_ = epoch
            if vl is None:          # nothing held out: keep the latest state
                stopper.take(None, epoch)
                self.best_epoch_ = epoch
                continue
            stop = stopper.update(vl, epoch)
            self.best_epoch_ = stopper.best_at
            if stop:
                break
        self._load_state(stopper.best_state)

    def _state_copy(self):
        return (copy.deepcopy(self.side_a_.state_dict()), copy.deepcopy(self.side_b_.state_dict()),
                self.log_scale_.detach().clone())

    def _load_state(self, state):
        self.side_a_.load_state_dict(state[0])
        self.side_b_.load_state_dict(state[1])
        with torch.no_grad():
            self.log_scale_.copy_(state[2])

    # -- using the fit ---------------------------------------------------------------------------
    def _require(self):
        self._require_fitted()

    def _side(self, side: str, X):
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'x' or 'y' (or 'a' / 'b'), got {side!r}")
        module = self.side_a_ if side == "a" else self.side_b_
        want = self.dim_a_ if side == "a" else self.dim_b_
        if X.shape[2] != want:
            raise DataError(f"side {side.upper()} was fitted on width {want}, got {X.shape[2]}")
        return module

    def transform(self, X, mask=None, side: str = "a", progress=None) -> np.ndarray:
        """Set features ``f`` of the items of one side: n x F float32 (chunked). ``side="x"`` (default; also
        ``"a"``) for A's items, ``side="y"`` (also ``"b"``) for B's - the pairwise convention."""
        side = _side_key(side)
        self._require()
        X, mask, _ = _tokens(X, mask, side.upper())
        module = self._side(side, X)
        dev = next(module.buffers()).device
        n, T, _ = X.shape
        step = _chunk_items(T, max(self.common_dim_, self.n_features if self.rff_ is not None else 1, X.shape[2]))
        out = []
        starts = range(0, n, step)
        with torch.no_grad():
            for s in (progress or _no_progress)(starts, total=len(starts), desc=f"set features {side.upper()}"):
                rows = np.arange(s, min(n, s + step))
                out.append(self._features_t(module, *self._batch(X, mask, rows, dev)).cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, 0), np.float32)

    def token_weights(self, X, mask=None, side: str = "a") -> np.ndarray:
        """The weight of every token (n x T float32; 1 everywhere for uniform weights, 0 on masked tokens)."""
        side = _side_key(side)
        self._require()
        X, mask, _ = _tokens(X, mask, side.upper())
        module = self._side(side, X)
        dev = next(module.buffers()).device
        out = []
        with torch.no_grad():
            for s in range(0, X.shape[0], 1024):
                v, m = self._batch(X, mask, np.arange(s, min(X.shape[0], s + 1024)), dev)
                out.append((module.weights(v) * m).cpu().numpy())
        return np.concatenate(out)

    def projected_tokens(self, X, side: str = "a") -> np.ndarray:
        """Tokens in the common space (after the projection; unnormalised): n x T x k float32."""
        side = _side_key(side)
        self._require()
        X, _, _ = _tokens(X, None, side.upper())
        module = self._side(side, X)
        dev = next(module.buffers()).device
        with torch.no_grad():
            return module.project(torch.as_tensor(np.asarray(X, np.float32), device=dev)).cpu().numpy()

    def score_matrix(self, A, B, mask_a=None, mask_b=None, exact: bool = False, progress=None) -> np.ndarray:
        """Similarity of every item of ``A`` with every item of ``B``: ``f_a . f_b`` (n_a x n_b float64).

        ``exact=True`` computes the double sum without random features (:func:`exact_pointset_similarity`, float64,
        small n only) from the projected tokens and the (learned or uniform) weights.
        """
        self._require()
        if not exact:
            Fa = self.transform(A, mask_a, "a", progress)
            Fb = self.transform(B, mask_b, "b", progress)
            return Fa.astype(np.float64) @ Fb.astype(np.float64).T
        A, mask_a, _ = _tokens(A, mask_a, "A")
        B, mask_b, _ = _tokens(B, mask_b, "B")
        return exact_pointset_similarity(
            self.projected_tokens(A, "a"), self.projected_tokens(B, "b"), mask_a, mask_b,
            self.token_weights(A, mask_a, "a"), self.token_weights(B, mask_b, "b"), kernel=self.kernel,
            sigma=self.sigma, c=self.c, a1=self.a1_, a2=self.a2_, normalize_linear=self.normalize_linear,
            device=self.device, progress=progress)


def _token_moments(X, mask, max_items: int, seed: int):
    """Per-feature mean and std of the real tokens of (a seeded sample of) items (std floored)."""
    n, T, d = X.shape
    rows = np.sort(np.random.default_rng(seed).choice(n, size=min(n, max_items), replace=False))
    s = np.zeros(d)
    s2 = np.zeros(d)
    cnt = 0.0
    for start in range(0, len(rows), 256):
        r = rows[start:start + 256]
        x = np.asarray(X[r], dtype=np.float64)
        m = _mask_rows(mask, r, T, len(r))
        sel = x[m]
        s += sel.sum(0)
        s2 += (sel ** 2).sum(0)
        cnt += sel.shape[0]
    cnt = max(cnt, 1.0)
    mean = s / cnt
    std = np.sqrt(np.maximum(s2 / cnt - mean ** 2, 0.0))
    std = np.maximum(std, 1e-6 * max(float(std.max()) if std.size else 1.0, 1e-12))
    return mean.astype(np.float32), std.astype(np.float32)


# ------------------------------------------------------------------------------------------------
# diagnostics
# ------------------------------------------------------------------------------------------------
def similarity_spectrum(S, device=None) -> np.ndarray:
    """Singular values of a similarity matrix (descending, float64)."""
    S = np.asarray(S, dtype=np.float64)
    if S.ndim != 2:
        raise DataError(f"a similarity matrix must be 2-D, got shape {S.shape}")
    dev = float64_device(pick_device(device))
    return torch.linalg.svdvals(torch.as_tensor(S, device=dev)).cpu().numpy()


def numerical_rank(singular_values, rtol: float = 1e-8) -> int:
    """Number of singular values above ``rtol`` times the largest."""
    sv = np.asarray(singular_values, dtype=np.float64)
    if sv.size == 0 or sv[0] <= 0:
        return 0
    return int((sv > rtol * sv[0]).sum())


# ------------------------------------------------------------------------------------------------
# the comparison on held-out pairs
# ------------------------------------------------------------------------------------------------
_std = std_over_seeds


@dataclass(eq=False)
class PointSetComparison(Result):
    """What :func:`compare_pointset_similarities` returns (``models`` is kept out of JSON)."""

    settings: dict
    adjustments: list
    projection: str
    results: dict
    spectra: dict
    training: list
    rff_error: Any
    query_rows: Any
    seconds: float
    models: Any = ABSENT

    _not_json = ("models",)


def compare_pointset_similarities(A, B, mask_a=None, mask_b=None, *, kernel: str = "gauss", train: bool = True,
                                  n_anchors: int | None = None, n_queries: int = 500, seeds=(0, 1, 2),
                                  groups=None, n_features: int = 1024, sigma: float = 0.5, c: float = 0.5,
                                  projection: str = "auto", n_components: int = 50, reg: float = 1e-3,
                                  max_epochs: int = 30, batch_size: int = 128, lr: float = 1e-3,
                                  patience: int = 5, normalize_linear: bool = True, exact_check: int = 100,
                                  ks=DEFAULT_KS, device=None,
                                  progress=None, keep_models: bool = False, rff_redraw: bool = False,
                                  head_bias: bool = True, logit_scale_param: str = "log") -> "PointSetComparison":
    """Cosine of mean-pooled vectors vs uniform-weight vs learned-weight point-set similarity, on held-out pairs.

    For every seed: disjoint anchors and queries (:func:`core.evaluation.splits.split_anchors_queries`, group-aware); on the
    anchors a projection when needed (see :class:`PointSetSimilarity`; the cosine baseline uses the same CCA on the
    pooled vectors), RFF drawn from the seed; then the three ``Q x Q`` score matrices of the queries, each judged with
    :func:`core.evaluation.metrics.evaluate_scores`. With ``train=False`` the learned similarity is skipped.

    Parameters
    ----------
    A, B : token sets (n x T x p, n x T' x q arrays or token-set Spaces), rows paired by item.
    mask_a, mask_b : optional n x T masks (a Space's own mask is used otherwise).
    kernel : 'gauss', 'imq' or 'linear'.
    train : also fit learned weights.
    n_anchors : anchors per seed (None = every item outside the queries); shrinks to fit, noted in
        ``"adjustments"``.
    n_queries : queries per seed (shrinks to ``n // 5`` when needed).
    seeds : the seeds (each draws its own split, RFF and training order).
    groups : optional group id per item (true partners).
    exact_check : on the first seed, compare the RFF similarity of the first ``exact_check`` queries with the exact
        double sum (0 = skip).
    keep_models : keep the first seed's fitted estimators in ``"models"`` (not JSON-able; for the app).
    rff_redraw, head_bias, logit_scale_param : the learned similarity's training choices (the paper B preset:
        True, False, "direct"; see :class:`PointSetSimilarity`).
    Other parameters: see :class:`PointSetSimilarity`.

    Returns
    -------
    :class:`PointSetComparison` (read like a dict; ``to_dict()`` for JSON) with ``"settings"``, ``"adjustments"``,
    ``"results"`` ({similarity: {metric: MetricSummary {"mean", "std", "chance", "per_seed"}}}, similarities in :data:`SIMILARITIES`), ``"spectra"`` (first seed: {"cosine_pooled",
    "pointset_uniform", "pointset_learned"}: singular values; ``"common_dim"``, ``"rank_bound"`` = common_dim + 1,
    ``"numerical_rank"``), ``"training"`` (per seed: seconds, epochs, best epoch, logit scale, history),
    ``"rff_error"`` (first seed: max and mean absolute error, relative Frobenius error vs the exact double sum),
    ``"projection"`` (text saying which projection was used), ``"query_rows"`` (first seed) and ``"seconds"``.
    """
    t_start = time.perf_counter()
    kernel = _check_kernel(kernel)
    data_a, mask_a, name_a = _tokens(A, mask_a, "A")
    data_b, mask_b, name_b = _tokens(B, mask_b, "B")
    n = int(data_a.shape[0])
    if data_b.shape[0] != n:
        raise DataError(f"A has {n} items but B has {data_b.shape[0]}",
                        hint="row i of A and row i of B must describe the same item")
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise DataError("at least one seed is needed")
    progress = progress or _no_progress
    adjustments: list[str] = []
    n_anc, n_q = resolve_sizes(n, n_anchors, n_queries, adjustments, fit_rest=False, what="the comparison")
    if groups is not None:
        groups = np.asarray(groups)
    pooled_a, pooled_b = pooled_vectors(data_a, mask_a), pooled_vectors(data_b, mask_b)
    names = ["cosine_pooled", "pointset_uniform"] + (["pointset_learned"] if train else [])
    per_seed: dict[str, list[dict]] = {s: [] for s in names}
    training, out_models = [], {}
    spectra = rff_error = query_rows = None
    projection_text = ""
    common = dict(kernel=kernel, n_features=n_features, sigma=sigma, c=c, projection=projection,
                  n_components=n_components, reg=reg, normalize_linear=normalize_linear, device=device)
    for i, seed in enumerate(progress(seeds, total=len(seeds), desc="seeds")):
        a_idx, q_idx = split_anchors_queries(n, n_anc, n_q, seed, groups)
        if len(a_idx) < 2:
            raise DataError("fewer than 2 anchors remain outside the queries", hint="use fewer queries")
        g_q = None if groups is None else groups[q_idx]
        Aa, Ba = _RowView(data_a, a_idx), _RowView(data_b, a_idx)   # read in chunks, never all at once
        Aq, Bq = _RowView(data_a, q_idx), _RowView(data_b, q_idx)
        ma_a, mb_a = _rows(mask_a, a_idx), _rows(mask_b, a_idx)
        ma_q, mb_q = _rows(mask_a, q_idx), _rows(mask_b, q_idx)
        uniform = PointSetSimilarity(weights="uniform", random_state=seed, **common).fit(Aa, Ba, ma_a, mb_a)
        # cosine of mean-pooled vectors, through the same CCA when there is one
        xa, xb = pooled_a[q_idx], pooled_b[q_idx]
        if uniform.cca_ is not None:
            xa, xb = uniform.cca_.transform(xa), uniform.cca_.transform(xb, side="y")
            projection_text = (f"CCA (k = {uniform.common_dim_}, ridge {reg:g}) fitted on the mean-pooled anchors, "
                               f"applied to the pooled vectors and to every token")
        else:
            projection_text = "none (both sides share one width and are used as they are)"
        from .align import cosine_similarity_matrix
        scores = {"cosine_pooled": cosine_similarity_matrix(xa, xb, device=device),
                  "pointset_uniform": uniform.score_matrix(Aq, Bq, ma_q, mb_q)}
        models = {"pointset_uniform": uniform}
        if train:
            learned = PointSetSimilarity(weights="learned", max_epochs=max_epochs, batch_size=batch_size, lr=lr,
                                         patience=patience, random_state=seed, rff_redraw=rff_redraw, head_bias=head_bias,
                                         logit_scale_param=logit_scale_param, **common)
            learned.fit(Aa, Ba, ma_a, mb_a, progress=progress)
            scores["pointset_learned"] = learned.score_matrix(Aq, Bq, ma_q, mb_q)
            models["pointset_learned"] = learned
            # "epochs" is the deprecated alias of "epochs_run" (one release; README, "Renamed JSON keys")
            training.append({"seed": seed, "seconds": learned.fit_seconds_, "epochs_run": learned.n_epochs_,
                             "epochs": learned.n_epochs_, "best_epoch": learned.best_epoch_, "logit_scale": learned.logit_scale_,
                             "n_train": learned.n_train_, "n_val": learned.n_val_, "history": learned.history_})
        for name, S in scores.items():
            ev = evaluate_scores(S, g_q, ks, seed)
            per_seed[name].append(ev)
        if i == 0:
            query_rows = q_idx
            sv = {name: similarity_spectrum(S) for name, S in scores.items()}
            spectra = {name: v.tolist() for name, v in sv.items()}
            spectra["common_dim"] = int(uniform.common_dim_)
            spectra["rank_bound"] = int(uniform.common_dim_) + 1
            spectra["numerical_rank"] = {name: numerical_rank(v) for name, v in sv.items()}
            if exact_check and kernel != "linear":
                m = min(int(exact_check), len(q_idx))
                approx = scores["pointset_uniform"][:m, :m]
                exact = uniform.score_matrix(Aq[:m], Bq[:m], _rows(ma_q, slice(0, m)), _rows(mb_q, slice(0, m)),
                                             exact=True, progress=progress)
                diff = approx - exact
                rff_error = {"n_items": m, "n_features": int(n_features),
                             "max_abs_error": float(np.abs(diff).max()),
                             "mean_abs_error": float(np.abs(diff).mean()),
                             "relative_frobenius_error": float(np.linalg.norm(diff) / max(np.linalg.norm(exact),
                                                                                          1e-300))}
            if keep_models:
                out_models = models
    results = {}
    for name in names:
        evs = per_seed[name]
        metrics = {}
        for key in evs[0]:
            if key == "n_queries":
                continue
            vals = [ev[key]["value"] for ev in evs]
            metrics[key] = summarize_over_seeds(vals, evs[0][key]["chance"])
        results[name] = metrics
    settings = {"n_items": n, "n_anchors": int(n_anc), "n_queries": int(n_q), "seeds": seeds,
                "kernel": kernel, "n_features": int(n_features), "sigma": float(sigma), "c": float(c),
                "a1": resolve_mixture(kernel)[0], "a2": resolve_mixture(kernel)[1],
                "projection": projection, "n_components": int(n_components), "reg": float(reg),
                "train": bool(train), "max_epochs": int(max_epochs), "batch_size": int(batch_size),
                "lr": float(lr), "patience": int(patience), "normalize_linear": bool(normalize_linear),
                "rff_redraw": bool(rff_redraw), "head_bias": bool(head_bias),
                "logit_scale_param": str(logit_scale_param),
                "groups": groups is not None,
                "dims": [int(data_a.shape[2]), int(data_b.shape[2])],
                "tokens": [int(data_a.shape[1]), int(data_b.shape[1])]}
    return PointSetComparison(settings, adjustments, projection_text, results, spectra, training, rff_error,
                              None if query_rows is None else [int(r) for r in query_rows],
                              time.perf_counter() - t_start, out_models if keep_models else ABSENT)


def _rows(arr, idx):
    if arr is None:
        return None
    return np.asarray(arr[idx])


class _RowView:
    """Rows ``idx`` of a (memory-mapped) array, read only when indexed: ``view[rows] = arr[idx[rows]]``."""

    def __init__(self, arr, idx):
        self.arr, self.idx = arr, np.asarray(idx)
        self.shape = (len(self.idx),) + tuple(arr.shape[1:])
        self.dtype = arr.dtype
        self.ndim = len(self.shape)

    def __len__(self):
        return self.shape[0]

    def __getitem__(self, rows):
        return np.asarray(self.arr[self.idx[rows]])

    def __array__(self, dtype=None, copy=None):
        out = np.asarray(self.arr[self.idx])
        return out if dtype is None else out.astype(dtype)
