"""Streamed first and second moments of one array or of two row-paired arrays (the one implementation).

Every method that needs only means and (cross-)covariances - linear CKA and its permutation / bootstrap nulls,
SVCCA / PWCCA / Procrustes distance, the pairwise aligners, PCA maps - reads its data once through
:class:`StreamingMoments`:

* rows arrive in chunks (``chunk_rows``), so an ``n x d`` memmap is never loaded whole;
* sums are float64 on a device with float64 (:func:`core.device.pick_float64_device`);
* every chunk is shifted by the first chunk's column means ``s`` before it is accumulated (a fixed shift changes
  nothing mathematically and avoids cancellation when features have large means): with ``x' = x - s``,
  ``sx = sum x'``, ``xx = sum x' x'^T`` (or only its diagonal, ``diag_only``), likewise for y, ``xy = sum x' y'^T``;
* centred products follow as ``Cxx = xx - sx sx^T / n`` (:meth:`StreamingMoments.cxx`);
* optional row weights (e.g. bootstrap counts) weight each row's contribution, ``n`` being their sum;
* :meth:`StreamingMoments.update` may be called again with more rows (anchor-count sweeps);
  :meth:`StreamingMoments.without` takes rows off again (all rows but a few, in one pass over the few).
"""
from __future__ import annotations

import copy
from typing import Callable

import numpy as np
import torch

from .device import as_float64, pick_float64_device
from .numerics import gram

__all__ = ["StreamingMoments"]

_F64 = torch.float64


def _default_load(X, start: int, stop: int, device: torch.device, name: str) -> torch.Tensor:
    return as_float64(X[start:stop], device, copy=True)


class StreamingMoments:
    """Shifted float64 sums of one array (``Y=None``) or of two row-paired arrays, accumulated over row chunks.

    Parameters
    ----------
    device : where the sums live (default :func:`core.device.pick_float64_device`).
    chunk_rows : rows per chunk.
    diag_only : keep only the diagonals of ``xx`` / ``yy`` (variances, not covariances).
    matmul_dtype : dtype of the chunk GEMMs (float64 by default; the sums stay float64).
    load : ``load(X, start, stop, device, name) -> float64 tensor`` reading rows ``[start, stop)`` (default: a
        float64 copy; callers pass their own to check finiteness or release memmap pages).
    after_chunk : optional ``after_chunk(self, x_raw, y_raw, start)`` called after each chunk is accumulated
        (e.g. to check the sums stayed finite).

    Attributes
    ----------
    n : rows (or the sum of the weights) seen so far.  shift_x, shift_y : the shifts.
    sx, sy, xx, yy, xy : the shifted sums (``sy``, ``yy``, ``xy`` are None for one array).
    """

    def __init__(self, device=None, chunk_rows: int = 8192, diag_only: bool = False,
                 matmul_dtype: torch.dtype = _F64, load: Callable | None = None,
                 after_chunk: Callable | None = None):
        self.device = pick_float64_device(device)
        self.chunk_rows = int(chunk_rows)
        self.diag_only = diag_only
        self.matmul_dtype = matmul_dtype
        self.load = load or _default_load
        self.after_chunk = after_chunk
        self.n = 0
        self.shift_x = self.shift_y = None
        self.sx = self.sy = self.xx = self.yy = self.xy = None

    @classmethod
    def from_sums(cls, n, shift_x, shift_y, sx, sy, xx, yy, xy, diag_only: bool = False) -> "StreamingMoments":
        """Moments from sums accumulated elsewhere (e.g. reduced over workers), same meaning as the attributes."""
        out = cls(sx.device, diag_only=diag_only)
        out.n, out.shift_x, out.shift_y = n, shift_x, shift_y
        out.sx, out.sy, out.xx, out.yy, out.xy = sx, sy, xx, yy, xy
        return out

    # -- accumulation ------------------------------------------------------------------------------
    def _zeros(self, *shape) -> torch.Tensor:
        return torch.zeros(*shape, dtype=_F64, device=self.device)

    def _gram(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if a is b:             # a space's own block: core.numerics.gram (syrk on the CPU: half the flops)
            return gram(a if self.matmul_dtype == _F64 else a.to(self.matmul_dtype)).to(_F64)
        if self.matmul_dtype == _F64:
            return a.T @ b
        return (a.T.to(self.matmul_dtype) @ b.to(self.matmul_dtype)).to(_F64)

    def update(self, X, Y=None, weights=None, progress=None, names: tuple[str, str] = ("X", "Y")
               ) -> "StreamingMoments":
        """Accumulate the rows of ``X`` (and the paired rows of ``Y``); ``weights`` (length n) weight the rows;
        ``names`` name the arrays in errors raised by ``load``."""
        n, p = X.shape
        q = None if Y is None else Y.shape[1]
        starts = range(0, n, self.chunk_rows)
        if progress is not None:
            starts = progress(starts, total=len(starts), desc="rows")
        for a in starts:
            b = min(n, a + self.chunk_rows)
            x_raw = self.load(X, a, b, self.device, names[0])
            y_raw = None if Y is None else self.load(Y, a, b, self.device, names[1])
            if self.shift_x is None:
                self.shift_x = x_raw.mean(0)
                self.sx = self._zeros(p)
                self.xx = self._zeros(p) if self.diag_only else self._zeros(p, p)
                if y_raw is not None:
                    self.shift_y = y_raw.mean(0)
                    self.sy = self._zeros(q)
                    self.yy = self._zeros(q) if self.diag_only else self._zeros(q, q)
                    self.xy = self._zeros(p, q)
            x = x_raw - self.shift_x
            y = None if y_raw is None else y_raw - self.shift_y
            if weights is not None:
                w = torch.as_tensor(np.asarray(weights[a:b], dtype=np.float64), device=self.device)
                xw = x * w[:, None]
                yw = None if y is None else y * w[:, None]
            else:
                xw, yw = x, y
            self.sx += xw.sum(0)
            self.xx += (xw * x).sum(0) if self.diag_only else self._gram(xw, x)
            if y is not None:
                self.sy += yw.sum(0)
                self.yy += (yw * y).sum(0) if self.diag_only else self._gram(yw, y)
                self.xy += self._gram(xw, y)
            self.n += float(w.sum()) if weights is not None else x.shape[0]
            if self.after_chunk is not None:
                self.after_chunk(self, x_raw, y_raw, a)
        return self

    def without(self, X, Y=None) -> "StreamingMoments":
        """The moments of the rows seen so far less the rows ``X`` (and the paired ``Y``), which must be among them.

        The removed rows' sums are accumulated with the same shifts and taken off (an exact identity, equal to the
        moments of the remaining rows up to rounding), so a large subset costs one pass over the rows it leaves
        out, not over the rows it keeps (e.g. anchors = all rows but a few held-out queries). A new object; this
        one is unchanged."""
        if self.shift_x is None:
            raise ValueError("no rows accumulated yet")
        part = copy.copy(self)
        part.n = 0
        part.sx, part.xx = torch.zeros_like(self.sx), torch.zeros_like(self.xx)
        if self.sy is not None:
            part.sy, part.yy, part.xy = (torch.zeros_like(self.sy), torch.zeros_like(self.yy),
                                         torch.zeros_like(self.xy))
        if X.shape[0]:
            if Y is None:
                part.update(X)
            else:
                part.update(X, Y)
        rest = copy.copy(self)
        rest.n = self.n - part.n
        rest.sx, rest.xx = self.sx - part.sx, self.xx - part.xx
        if self.sy is not None:
            rest.sy, rest.yy, rest.xy = self.sy - part.sy, self.yy - part.yy, self.xy - part.xy
        return rest

    # -- centred products --------------------------------------------------------------------------
    def cxx(self) -> torch.Tensor:
        """``sum (x - mean)(x - mean)^T`` (the diagonal only with ``diag_only``)."""
        if self.diag_only:
            return self.xx - self.sx * self.sx / self.n
        return self.xx - torch.outer(self.sx, self.sx) / self.n

    def cyy(self) -> torch.Tensor:
        if self.diag_only:
            return self.yy - self.sy * self.sy / self.n
        return self.yy - torch.outer(self.sy, self.sy) / self.n

    def cxy(self, xy: torch.Tensor | None = None) -> torch.Tensor:
        """``sum (x - mean_x)(y - mean_y)^T``; ``xy`` replaces the accumulated shifted cross sum (permutations)."""
        return (self.xy if xy is None else xy) - torch.outer(self.sx, self.sy) / self.n

    def mean_x(self) -> torch.Tensor:
        return self.shift_x + self.sx / self.n

    def mean_y(self) -> torch.Tensor:
        return self.shift_y + self.sy / self.n
