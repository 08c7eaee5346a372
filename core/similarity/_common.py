"""Input handling shared by the similarity measures: array checks, chunked float64 loading (finiteness checked,
memmap pages released), seeded row samples and the streamed moments of two spaces."""
from __future__ import annotations

import warnings

import numpy as np
import torch

from ..device import pick_float64_device
from ..errors import DataError
from ..moments import StreamingMoments
from ..shards import release_pages as _release_pages  # torch-free, shared with core.shards

#: Largest n for which :func:`linear_cka` may switch to the n x n Gram form (``method="auto"``).
GRAM_MAX_N = 4096
#: Bytes of float64 chunk data aimed at per chunk when ``chunk_rows`` is not given.
_CHUNK_BYTES = 1 << 27
_F64 = torch.float64


def _as_array(X, name: str) -> np.ndarray:
    if getattr(X, "is_sharded", False):   # core.shards.ShardedArray: read in row chunks, never whole
        if X.ndim != 2:
            raise DataError(f"{name} must be a 2-D n x d array, got shape {X.shape}", array=name)
        return X
    if isinstance(X, torch.Tensor):
        X = X.detach().cpu().numpy()
    if not isinstance(X, np.ndarray):
        try:
            X = np.asarray(X)
        except Exception as exc:  # pragma: no cover - exotic input
            raise DataError(f"cannot read {name} as an array ({exc})", array=name) from None
    if X.ndim != 2:
        raise DataError(f"{name} must be a 2-D n x d array, got shape {X.shape}", array=name,
                        hint="pool token sets first (Space.vectors())")
    if X.dtype == object or not (np.issubdtype(X.dtype, np.number) or X.dtype == bool):
        raise DataError(f"{name} has non-numeric dtype {X.dtype}", array=name)
    if X.shape[1] == 0:
        raise DataError(f"{name} has no columns", array=name)
    return X


def _check_pair(X, Y, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
    X = _as_array(X, "X")
    Y = _as_array(Y, "Y")
    if X.shape[0] != Y.shape[0]:
        raise DataError(f"the two spaces have {X.shape[0]} and {Y.shape[0]} rows; rows must pair item by item",
                        hint="give both spaces one row per item, in the same order")
    if X.shape[0] < min_n:
        raise DataError(f"this measure needs at least {min_n} items, got {X.shape[0]}",
                        hint="use more items")
    return X, Y


def _auto_chunk(chunk_rows: int | None, width: int) -> int:
    if chunk_rows is not None:
        if int(chunk_rows) < 1:
            raise DataError(f"chunk_rows must be >= 1, got {chunk_rows}")
        return int(chunk_rows)
    return int(min(65536, max(256, _CHUNK_BYTES // (8 * max(width, 1)))))


def _chunk(X: np.ndarray, start: int, stop: int, device: torch.device, name: str,
           rows: np.ndarray | None = None) -> torch.Tensor:
    """Rows [start, stop) of X (or rows[start:stop] when given) as a float64 tensor on ``device``."""
    if rows is None:
        block = np.array(X[start:stop], copy=True)
        _release_pages(X, start, stop)
    else:
        idx = rows[start:stop]
        order = np.argsort(idx, kind="stable")
        block = np.empty((len(idx), X.shape[1]), dtype=X.dtype)
        block[order] = X[idx[order]]          # sorted gather: sequential reads on memmaps
    t = torch.from_numpy(block).to(device=device, dtype=_F64)
    if not bool(torch.isfinite(t.sum(0)).all()):      # one cheap reduction; NaN / inf propagate into it
        bad_rows = torch.nonzero(~torch.isfinite(t).all(dim=1))
        if len(bad_rows):
            bad = int(bad_rows[0, 0])
            row = start + bad if rows is None else int(rows[start + bad])
            raise DataError("the space contains a non-finite value (NaN or inf)", array=name, row=row,
                            hint="remove or repair that row")
    return t


def _load(X: np.ndarray, device: torch.device, name: str, chunk_rows: int | None = None) -> torch.Tensor:
    """The whole array as a float64 tensor (for the measures that need all rows at once)."""
    n = X.shape[0]
    step = _auto_chunk(chunk_rows, X.shape[1])
    parts = [_chunk(X, a, min(n, a + step), device, name) for a in range(0, n, step)]
    return parts[0] if len(parts) == 1 else torch.cat(parts)


_device = pick_float64_device


def _undefined(measure: str, why: str) -> None:
    warnings.warn(f"{measure} is undefined here ({why}); returning None", RuntimeWarning, stacklevel=3)
    return None


def _sample_rows(n: int, max_n: int | None, seed: int, measure: str) -> np.ndarray | None:
    """Sorted seeded sample of ``max_n`` of ``n`` rows (None when n <= max_n), with a warning."""
    if max_n is None or n <= max_n:
        return None
    if max_n < 4:
        raise DataError(f"max_n must be >= 4, got {max_n}")
    rows = np.sort(np.random.default_rng(seed).choice(n, size=int(max_n), replace=False))
    warnings.warn(f"{measure}: n = {n} > max_n = {max_n}; computed on a seeded random sample of {max_n} "
                  f"items (seed={seed})", UserWarning, stacklevel=3)
    return rows


_Moments = StreamingMoments.from_sums     # (n, shift_x, shift_y, sx, sy, xx, yy, xy, diag_only=False)


def _moments(X: np.ndarray, Y: np.ndarray, *, chunk_rows: int | None, device: torch.device,
             diag_only: bool = False, matmul_dtype: torch.dtype = _F64,
             weights: np.ndarray | None = None, progress=None) -> StreamingMoments:
    """One pass over X and Y in row chunks (:class:`core.moments.StreamingMoments`; chunks read by
    :func:`_chunk`, which checks finiteness and releases memmap pages).

    ``weights`` (length n, e.g. bootstrap counts) weights each row's contribution; ``n`` is then their sum.
    """
    acc = StreamingMoments(device, _auto_chunk(chunk_rows, X.shape[1] + Y.shape[1]), diag_only=diag_only,
                           matmul_dtype=matmul_dtype, load=_chunk)
    return acc.update(X, Y, weights=weights, progress=progress)
