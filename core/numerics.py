"""Small numerical routines every module shares (each exists once, here).

* :func:`fix_signs` - the sign convention of every decomposition: each column's largest-magnitude entry is positive.
* :func:`sym_eig_desc` - eigendecomposition of a symmetric matrix, eigenvalues descending, signs fixed.
* :func:`pca_components` - PCA from a covariance (or scatter) matrix: variances and ``k x d`` components.
* :func:`average_ranks`, :func:`pearson`, :func:`spearman` - rank correlation on torch vectors (float64).
* :func:`pool_coefficients`, :func:`pool_tokens` - the one pooling of token sets: ``(1/M) sum_t m_t w_t v_t``.

Torch in, torch out, on the input's device; callers convert with :mod:`core.device`.
"""
from __future__ import annotations

import math

import torch

__all__ = ["fix_signs", "sym_eig_desc", "pca_components", "average_ranks", "pearson", "spearman", "pool_coefficients", "pool_tokens"]

_F64 = torch.float64


def fix_signs(U: torch.Tensor, V: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Flip the columns of ``U`` so that each one's largest-magnitude entry is positive (and ``V``'s alike).

    The one sign convention of the project (PCA components, CCA directions, GCCA bases): fits are reproducible
    and comparable across runs and devices.
    """
    idx = U.abs().argmax(dim=0)
    signs = torch.sign(U[idx, torch.arange(U.shape[1], device=U.device)])
    signs[signs == 0] = 1
    return U * signs, None if V is None else V * signs


def sym_eig_desc(C: torch.Tensor, k: int | None = None, signs: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Eigenvalues (descending) and eigenvectors (columns) of the symmetric matrix ``C``.

    ``C`` is symmetrised first (``(C + C^T) / 2``: ``eigh`` reads one triangle only, and a Gram matrix summed by
    GEMMs can be asymmetric in the last bit). ``k`` keeps the top ``k``; ``signs`` applies :func:`fix_signs`
    (pass False where only the span matters, e.g. whitening).
    """
    vals, vecs = torch.linalg.eigh((C + C.T) / 2)
    vals, vecs = vals.flip(0), vecs.flip(1)
    if k is not None:
        vals, vecs = vals[:k], vecs[:, :k]
    if signs:
        vecs, _ = fix_signs(vecs)
    return vals, vecs


def pca_components(C: torch.Tensor, k: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The one PCA: principal variances (descending) and components of the covariance (or scatter) matrix ``C``.

    Returns ``(variances, components)`` with ``components`` ``k x d`` (scikit-learn's layout: row ``j`` is the
    ``j``-th unit axis; signs fixed by :func:`fix_signs`), so that ``(x - mean) @ components.T`` projects. The
    variances are ``C``'s eigenvalues: pass ``Cxx / (n - 1)`` for sample variances. ``k`` keeps the top ``k``.
    """
    vals, vecs = sym_eig_desc(C, k)
    return vals, vecs.T


def average_ranks(v: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a vector, ties given their average rank (``scipy.stats.rankdata(method='average')``)."""
    sorted_v, order = torch.sort(v)
    _, inverse, counts = torch.unique_consecutive(sorted_v, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).to(_F64)
    avg = ends - (counts.to(_F64) - 1) / 2
    ranks = torch.empty_like(v, dtype=_F64)
    ranks[order] = avg[inverse]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Pearson correlation of two vectors; None when one of them is constant."""
    a = a - a.mean()
    b = b - b.mean()
    den = math.sqrt(float(a @ a)) * math.sqrt(float(b @ b))
    if not den > 0:
        return None
    return float(a @ b) / den


def spearman(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Spearman correlation: :func:`pearson` of the :func:`average_ranks`; None when one side is constant."""
    return pearson(average_ranks(a), average_ranks(b))


def pool_coefficients(mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """The coefficients ``m_t w_t / M`` of the pooled mean of token sets (``B x T``; ``M`` = the number of real
    tokens of the set, at least 1; ``w = 1`` without weights).

    The one definition of pooling (paper B's ``mean_i w_i v_i`` over the ``M`` unmasked tokens): without weights the
    masked mean, with weights their sum over the real tokens divided by the token count (not by ``sum w``: the
    weights' scale is part of the pooled vector, as in the point-set features); a set with no real token pools to 0.
    """
    m = mask.to(weights.dtype if weights is not None else torch.float64)
    M = m.sum(1).clamp_min(1.0)
    return (m if weights is None else weights * m) / M[:, None]


def pool_tokens(tokens: torch.Tensor, mask: torch.Tensor, weights: torch.Tensor | None = None) -> torch.Tensor:
    """Pooled vectors ``(1/M) sum_t m_t w_t v_t`` of a batch of token sets (``B x T x d`` -> ``B x d``), see
    :func:`pool_coefficients`."""
    return torch.einsum("bt,btd->bd", pool_coefficients(mask, weights).to(tokens.dtype), tokens)
