"""Checks run on every space a loader reads: fatal problems raise, the rest are listed for the summary.

Fatal (raise :class:`~core.errors.DataError` naming the file, the array and, where it applies, the row):

* a dtype that is not a real number (object, string, complex, bool, structured, ...);
* a wrong number of dimensions (a space is ``n x d`` vectors or ``n x T x d`` token sets);
* an empty array (0 rows, 0 tokens or 0 columns);
* NaN or Inf values (counted; the first offending row is named);
* a zero-variance space (every row identical);
* a mask / weights array of the wrong shape or dtype.

Non-fatal (:func:`find_problems`): zero-variance columns, all-zero rows, duplicate rows, norms that vary over
orders of magnitude, token sets without any real token.

Arrays are scanned in row chunks, so memory-mapped files are never loaded whole.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .dataset import Space
from .errors import DataError

#: Bytes of one chunk when scanning an array (rows are read in chunks of about this size).
CHUNK_BYTES = 64 << 20

#: ``find_problems`` reports "norms vary Nx" when the largest non-zero row norm is this many times the smallest.
NORM_RATIO_WARNING = 100.0


def _chunk_rows(arr: np.ndarray, chunk_bytes: int = CHUNK_BYTES) -> int:
    row_bytes = max(1, int(np.prod(arr.shape[1:], dtype=np.int64)) * max(arr.dtype.itemsize, 1))
    return max(1, chunk_bytes // row_bytes)


def is_real_number_dtype(dtype: np.dtype) -> bool:
    """True for signed / unsigned integer and floating dtypes (the only ones a space may hold)."""
    return np.dtype(dtype).kind in "iuf"


def check_dtype(arr: np.ndarray, *, file: str | None = None, array: str | None = None) -> None:
    """Raise DataError unless ``arr`` holds real numbers (integers or floats)."""
    dtype = arr.dtype
    if is_real_number_dtype(dtype):
        return
    if dtype.hasobject:
        what = "Python objects (dtype object)"
        hint = "save plain numbers, e.g. np.save(path, np.asarray(x, dtype=np.float32))"
    elif dtype.kind in "USa":
        what = f"text (dtype {dtype})"
        hint = ("text belongs in a metadata column (an .npz string array or a CSV/parquet column); "
                "a space must hold numbers")
    elif dtype.kind == "c":
        what = f"complex numbers (dtype {dtype})"
        hint = "store the real and imaginary parts as separate columns (np.concatenate([x.real, x.imag], -1))"
    elif dtype.kind == "b":
        what = "booleans"
        hint = "cast it to numbers first, e.g. x.astype(np.float32)"
    elif dtype.kind == "V":
        what = f"structured records (dtype {dtype})"
        hint = "store one plain numeric array per space"
    else:
        what = f"values of dtype {dtype}"
        hint = "cast it to float32"
    raise DataError(f"holds {what}, not numbers", file=file, array=array, hint=hint)


def check_shape(arr: np.ndarray, *, file: str | None = None, array: str | None = None) -> None:
    """Raise DataError unless ``arr`` is a non-empty ``n x d`` or ``n x T x d`` array."""
    shape = tuple(int(s) for s in arr.shape)
    if arr.ndim not in (2, 3):
        shape_text = " x ".join(map(str, shape)) if shape else "a single number"
        if arr.ndim == 0:
            found = "a 0-D scalar"
        else:
            found = f"a {arr.ndim}-D array of shape ({shape_text})"
        hint = ("a space must be 2-D (n items x d features) or 3-D (n items x T tokens x d features)")
        if arr.ndim == 1:
            hint += f"; if it is one vector per item with a single feature, reshape it to ({shape[0]}, 1)"
        elif arr.ndim > 3:
            hint += "; merge the extra axes (e.g. reshape to (n, -1) or (n, T, d))"
        raise DataError(f"found {found}, expected 2-D (n x d) or 3-D (n x T x d)",
                        file=file, array=array, hint=hint)
    labels = ("rows (items)", "tokens", "columns (features)") if arr.ndim == 3 else ("rows (items)", "columns (features)")
    for size, label in zip(shape, labels):
        if size == 0:
            raise DataError(f"is empty: shape ({' x '.join(map(str, shape))}) has 0 {label}",
                            file=file, array=array, hint="export at least one item with at least one feature")


def scan_values(arr: np.ndarray, *, file: str | None = None, array: str | None = None,
                chunk_bytes: int = CHUNK_BYTES, check_variance: bool = True) -> None:
    """Scan ``arr`` in row chunks: raise on NaN/Inf (count + first row) or when every row is identical.

    ``check_variance=False`` skips the second check (one shard of a space may well hold identical rows;
    :mod:`core.shards` checks the whole folder)."""
    n = arr.shape[0]
    is_float = arr.dtype.kind == "f"
    step = _chunk_rows(arr, chunk_bytes)
    first = np.asarray(arr[0:1])
    n_bad = 0
    n_nan = 0
    first_bad = None
    all_same = True
    for start in range(0, n, step):
        chunk = np.asarray(arr[start:start + step])
        if is_float:
            finite = np.isfinite(chunk)
            if not finite.all():
                bad = ~finite
                n_bad += int(bad.sum())
                n_nan += int(np.isnan(chunk).sum())
                if first_bad is None:
                    rows = bad.reshape(len(chunk), -1).any(axis=1)
                    first_bad = start + int(np.flatnonzero(rows)[0])
        if all_same and first_bad is None:
            all_same = bool((chunk == first).all())
    if n_bad:
        n_inf = n_bad - n_nan
        parts = []
        if n_nan:
            parts.append(f"{n_nan} NaN")
        if n_inf:
            parts.append(f"{n_inf} Inf")
        raise DataError(f"contains {' and '.join(parts)} value{'s' if n_bad > 1 else ''} "
                        f"(first in row {first_bad})", file=file, array=array, row=first_bad,
                        hint="remove or re-compute those rows (NaN usually means a failed or empty input)")
    if check_variance and all_same and n >= 2:
        raise DataError(f"has zero variance: all {n} rows are identical", file=file, array=array, row=0,
                        hint="the encoder probably received the same (or empty) input for every item")


def check_token_extras(data: np.ndarray, mask: np.ndarray | None, weights: np.ndarray | None, *,
                       file: str | None = None, array: str | None = None) -> None:
    """Raise DataError when a mask / weights array does not fit the token-set space ``data``."""
    for label, extra in (("mask", mask), ("weights", weights)):
        if extra is None:
            continue
        name = f"{array}_{label}" if array else label
        if data.ndim != 3:
            raise DataError(f"a {label} only applies to token sets (n x T x d), but '{array}' has shape "
                            f"({' x '.join(map(str, data.shape))})", file=file, array=name,
                            hint=f"drop '{name}' or store '{array}' as n x T x d")
        if tuple(extra.shape) != tuple(data.shape[:2]):
            raise DataError(f"has shape ({' x '.join(map(str, extra.shape))}), expected "
                            f"({data.shape[0]} x {data.shape[1]}) (n x T, matching '{array}')",
                            file=file, array=name)
        if label == "mask":
            if extra.dtype.kind not in "biuf":
                raise DataError(f"holds values of dtype {extra.dtype}; a mask must be boolean or 0/1",
                                file=file, array=name)
            if extra.dtype.kind != "b":
                step = _chunk_rows(extra)
                for start in range(0, extra.shape[0], step):
                    chunk = np.asarray(extra[start:start + step])
                    bad = ~np.isin(chunk, (0, 1))
                    if bad.any():
                        row = start + int(np.flatnonzero(bad.any(axis=1))[0])
                        raise DataError("holds values other than 0 and 1", file=file, array=name, row=row,
                                        hint="a mask marks real tokens with 1 (True) and padding with 0")
        else:
            check_dtype(extra, file=file, array=name)
            if extra.dtype.kind == "f":
                step = _chunk_rows(extra)
                for start in range(0, extra.shape[0], step):
                    chunk = np.asarray(extra[start:start + step])
                    bad = ~np.isfinite(chunk)
                    if bad.any():
                        row = start + int(np.flatnonzero(bad.any(axis=1))[0])
                        raise DataError(f"contains {int(bad.sum())} NaN/Inf weight(s)", file=file,
                                        array=name, row=row)


def validate_array(arr: np.ndarray, *, file: str | None = None, array: str | None = None,
                   chunk_bytes: int = CHUNK_BYTES) -> None:
    """Run every fatal check on one space's data array.

    Parameters
    ----------
    arr : the array (numpy array or memmap).
    file, array : names used in the error message (the file as the user knows it, the array inside it).
    chunk_bytes : size of the row chunks scanned at a time.

    Raises
    ------
    DataError : on a non-numeric dtype, wrong ndim, empty array, NaN/Inf, or zero variance.
    """
    check_dtype(arr, file=file, array=array)
    check_shape(arr, file=file, array=array)
    scan_values(arr, file=file, array=array, chunk_bytes=chunk_bytes)


def validate_space(space: Space, *, file: str | None = None) -> None:
    """Run every fatal check on a :class:`~core.dataset.Space` (data, mask and weights)."""
    file = file or space.source
    validate_array(space.data, file=file, array=space.name)
    check_token_extras(space.data, space.mask, space.weights, file=file, array=space.name)


@dataclass
class SpaceScan:
    """Facts gathered by one chunked pass over a space's pooled vectors (see :func:`scan_space`)."""

    n: int
    d: int
    mean_norm: float
    min_norm: float
    max_norm: float
    min_nonzero_norm: float | None
    zero_rows: int
    duplicate_rows: int
    constant_columns: int
    empty_token_sets: int = 0
    extra: list = field(default_factory=list)


def scan_space(space: Space, chunk_bytes: int = CHUNK_BYTES) -> SpaceScan:
    """One chunked pass over ``space``: norms (float64), constant columns, zero rows, duplicate rows.

    Token sets are pooled first (masked, weighted mean; see :meth:`core.dataset.Space.vectors`).
    Duplicate rows are counted exactly on the values (rows hashed with pandas' 64-bit value hash).
    """
    data = space.data
    n, d = space.n, space.dim
    step = _chunk_rows(data, chunk_bytes)
    norm_sum = 0.0
    min_norm, max_norm = np.inf, 0.0
    min_nonzero = np.inf
    zero_rows = 0
    col_min = np.full(d, np.inf)
    col_max = np.full(d, -np.inf)
    hashes = []
    empty_sets = 0
    for start in range(0, n, step):
        sl = slice(start, start + step)
        if space.kind == "tokens":
            part = Space(space.name, np.asarray(data[sl]),
                         None if space.mask is None else np.asarray(space.mask[sl]),
                         None if space.weights is None else np.asarray(space.weights[sl]))
            vec = part.vectors(dtype=np.float64)
            if space.mask is not None:
                empty_sets += int((~part.token_mask().any(axis=1)).sum())
        else:
            vec = np.asarray(data[sl], dtype=np.float64)
        norms = np.sqrt(np.einsum("ij,ij->i", vec, vec))
        norm_sum += float(norms.sum())
        min_norm = min(min_norm, float(norms.min()))
        max_norm = max(max_norm, float(norms.max()))
        nonzero = norms[norms > 0]
        if nonzero.size:
            min_nonzero = min(min_nonzero, float(nonzero.min()))
        zero_rows += int((norms == 0).sum())
        col_min = np.minimum(col_min, vec.min(axis=0))
        col_max = np.maximum(col_max, vec.max(axis=0))
        hashes.append(pd.util.hash_pandas_object(pd.DataFrame(vec), index=False).to_numpy())
    all_hashes = np.concatenate(hashes) if hashes else np.empty(0, dtype=np.uint64)
    duplicates = int(n - np.unique(all_hashes).size)
    return SpaceScan(n=n, d=d, mean_norm=norm_sum / max(n, 1), min_norm=float(min_norm),
                     max_norm=float(max_norm),
                     min_nonzero_norm=None if not np.isfinite(min_nonzero) else float(min_nonzero),
                     zero_rows=zero_rows, duplicate_rows=duplicates,
                     constant_columns=int((col_min == col_max).sum()), empty_token_sets=empty_sets)


def problems_from_scan(scan: SpaceScan) -> list[str]:
    """The human-readable problem list for a :class:`SpaceScan` (see :func:`find_problems`)."""
    out = []
    if scan.n == 1:
        out.append("only 1 row")
    if scan.constant_columns:
        out.append(f"{scan.constant_columns} zero-variance column{'s' if scan.constant_columns > 1 else ''}")
    if scan.zero_rows:
        out.append(f"{scan.zero_rows} all-zero row{'s' if scan.zero_rows > 1 else ''}")
    if scan.duplicate_rows:
        out.append(f"{scan.duplicate_rows} duplicate row{'s' if scan.duplicate_rows > 1 else ''}")
    if scan.empty_token_sets:
        out.append(f"{scan.empty_token_sets} token set{'s' if scan.empty_token_sets > 1 else ''} "
                   f"with no real token")
    if scan.min_nonzero_norm is not None and scan.min_nonzero_norm > 0:
        ratio = scan.max_norm / scan.min_nonzero_norm
        if ratio >= NORM_RATIO_WARNING:
            out.append(f"norms vary {ratio:.0f}x ({scan.min_nonzero_norm:.3g} to {scan.max_norm:.3g})")
    return out


def find_problems(space: Space) -> list[str]:
    """Non-fatal problems of a space, as short phrases for the summary table.

    Examples: ``"12 zero-variance columns"``, ``"3 all-zero rows"``, ``"37 duplicate rows"``,
    ``"norms vary 1000x (0.01 to 10)"``, ``"4 token sets with no real token"``, ``"only 1 row"``.
    Rows of token sets are their pooled vectors. Returns an empty list when nothing stands out.
    """
    return problems_from_scan(scan_space(space))
