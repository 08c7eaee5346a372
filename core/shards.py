"""Sharded spaces: a folder of ``.npy`` or ``.parquet`` shards that opens as one space, read shard by shard.

A study of 10^6 items from several encoders is rarely one file per space: batch encoders (``platoscope encode
--ray``, Spark, Ray Data) write a folder of shards. Such a folder opens like a single file, wherever a file is
accepted (``load_dataset`` / the CLI / a server-folder dataset: a sub-folder of ``data/server/NAME/``):

* **``.npy`` shards** - every shard is ``n_i x d`` (same ``d`` and dtype family), rows in shard order; the folder
  is one space named after the folder; the items are numbered 0..n-1 (or take the ids of another file given
  alongside).
* **``.parquet`` shards** - an ``id`` column (optional) and list columns of numbers (the vectors); other columns
  are item metadata (e.g. ``caption``). One vector column: a space named after the folder; several: one space
  per column, named after the column.

Shards are ordered by their file names in natural order (``part-2`` before ``part-10``); hidden files,
``_SUCCESS`` markers and ``*.json`` / ``*.crc`` side files are ignored. Every shard is checked as a single file
would be (size limit, header, dtype, shape, NaN / Inf) and every error names the shard and its row.

The space's data is a :class:`ShardedArray`: a read-only, array-like view (``shape``, ``dtype``, row slicing,
fancy indexing) that reads only the shards a request touches, so the streamed computations (linear CKA, the
alignment moments, PCA) run in memory bounded by one shard (``.npy`` shards are memory-mapped; a ``.parquet``
shard is decoded once and kept until another is needed). ``np.asarray(sharded)`` loads the whole space, and
refuses (:class:`~core.errors.BudgetError`) when it is larger than :func:`max_materialize_bytes`.
:meth:`ShardedArray.iter_shards` hands the shards out one at a time (what :mod:`core.distributed` sends to its
Ray tasks: the shard paths, never the data).
"""
from __future__ import annotations

import hashlib
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import pandas as pd

from .dataset import SourceFile, Space, guess_modality
from .budget import MemoryBudget
from .cache import sha256_file as file_sha256
from .errors import BudgetError, DataError
from .formats import (LoadedFile, _check_file, _corrupt, _is_nested_numeric_list, _is_numeric_list, _pickle_error,
                      _read_npy_header, _read_parquet, _spaces_description, default_max_file_bytes,
                      list_column_to_array, parquet_decoded_bytes)

__all__ = ["SHARD_EXTENSIONS", "ShardedArray", "Shard", "shard_files", "is_shard_folder", "load_shard_folder",
           "open_sharded_space", "is_sharded", "max_materialize_bytes", "release_pages"]

SHARD_EXTENSIONS = (".npy", ".parquet")
#: Parquet schema-metadata key of a shard holding JSON ``{column: {"modality", "info"}}`` (written by
#: ``platoscope encode --ray``), the provenance the ``__spaces__`` member carries in an ``.npz``.
SPACES_KEY = "platoscope.spaces"
_IGNORED_SUFFIXES = (".json", ".crc", ".txt", ".md", ".tmp")


def is_sharded(arr) -> bool:
    """True for a :class:`ShardedArray` (or anything that says it is sharded)."""
    return bool(getattr(arr, "is_sharded", False))


def max_materialize_bytes() -> int:
    """Largest sharded space ``np.asarray`` may load whole: $PLATOSCOPE_MAX_FILE_MB (the per-file limit), else
    2048 MB. The streamed computations never need it."""

    return default_max_file_bytes()


def _natural_key(name: str):
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name)]


def shard_files(folder: str | os.PathLike) -> list[Path]:
    """The shard files of ``folder`` in natural name order (side files ignored)."""
    folder = Path(folder)
    out = []
    for p in folder.iterdir():
        name = p.name
        if name.startswith((".", "_")) or p.is_dir() or name.lower().endswith(_IGNORED_SUFFIXES):
            continue
        out.append(p)
    return sorted(out, key=lambda p: _natural_key(p.name))


def is_shard_folder(path: str | os.PathLike) -> bool:
    """True when ``path`` is a folder whose files are all ``.npy`` or all ``.parquet`` (at least one)."""
    path = Path(path)
    if not path.is_dir():
        return False
    try:
        files = shard_files(path)
    except OSError:
        return False
    exts = {p.suffix.lower() for p in files}
    return len(files) > 0 and len(exts) == 1 and exts <= set(SHARD_EXTENSIONS)


_LIBC = None


def release_pages(arr: np.ndarray, start: int, stop: int) -> None:
    """Drop the pages of rows [start, stop) of a read-only memmap from this process (Linux, best effort).

    Reading a memmap maps its pages into the process, and they count as resident memory until the
    mapping goes away; for a 3 GB file read once that is misleading and can crowd other work.
    ``madvise(MADV_DONTNEED)`` on a read-only shared file mapping only unmaps pages; the data stays
    in the file (and the page cache), and a later read faults it back in.
    """
    global _LIBC
    if not isinstance(arr, np.ndarray) or not sys.platform.startswith("linux") or not arr.flags.c_contiguous:
        return
    base = arr                       # a memmap, or a plain view of one (e.g. np.asarray(memmap))
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    if not isinstance(base, np.memmap) or getattr(base, "mode", None) != "r":
        return
    try:
        import ctypes
        import mmap
        if _LIBC is None:
            _LIBC = ctypes.CDLL(None, use_errno=True)
        row_bytes = arr.strides[0]
        page = mmap.PAGESIZE
        begin = arr.ctypes.data + start * row_bytes
        end = arr.ctypes.data + stop * row_bytes
        begin_aligned = -(-begin // page) * page       # only whole pages inside the range
        end_aligned = (end // page) * page
        if end_aligned > begin_aligned:
            _LIBC.madvise(ctypes.c_void_p(begin_aligned), ctypes.c_size_t(end_aligned - begin_aligned), 4)
    except Exception:  # pragma: no cover - never fail a computation over this
        pass


# ----------------------------------------------------------------------------------------------
# the array
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Shard:
    """One shard: its file, the name the user knows it by, its first global row and its row count."""

    path: str
    display: str
    start: int
    n: int
    column: str | None = None     # the vector column of a parquet shard (None for .npy)

    @property
    def stop(self) -> int:
        return self.start + self.n


def _read_parquet_vectors(path: str, display: str, column: str) -> np.ndarray:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        total, per_column = parquet_decoded_bytes(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError):
        total, per_column = 0, {}
    # the shard's decoded size from its footer, checked before it is read (a compressed shard can be a bomb)
    MemoryBudget().charge(per_column.get(column, total), file=display, member=column,
                          detail=" decoded, from the Parquet shard's footer")
    try:
        table = pq.read_table(path, columns=[column])
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError, KeyError):
        table = _read_parquet(Path(path), display)   # raises the single-file error
        if column not in table.column_names:
            raise DataError("has no such column", file=display, column=column,
                            hint="every shard must have the same columns") from None
    return list_column_to_array(table.column(column), display, column)


class ShardedArray:
    """A read-only ``n x d`` array-like over shard files (see the module docstring).

    Indexing: ``a[i]`` (one row), ``a[start:stop]`` (contiguous rows, step 1), ``a[rows]`` (an integer or
    boolean index array); each returns a new numpy array. ``len(a)``, ``a.shape``, ``a.ndim``, ``a.dtype``,
    ``a.nbytes`` (of the whole space, on disk) behave as for numpy. ``astype(dtype)`` is a lazy view that converts
    what is read.
    """

    is_sharded = True

    def __init__(self, shards: list[Shard], width: int, dtype, name: str = "space", kind: str = "npy"):
        if not shards:
            raise DataError("a sharded space needs at least one shard", array=name)
        self.shards = tuple(shards)
        self.width = int(width)
        self.dtype = np.dtype(dtype)
        self.name = name
        self.kind = kind
        self._starts = np.array([s.start for s in self.shards], dtype=np.int64)
        self._cache: tuple[int, np.ndarray] | None = None

    # -- numpy-like facts -------------------------------------------------------------------
    @property
    def n(self) -> int:
        return int(self.shards[-1].stop)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.width)

    @property
    def ndim(self) -> int:
        return 2

    @property
    def nbytes(self) -> int:
        return self.n * self.width * self.dtype.itemsize

    @property
    def n_shards(self) -> int:
        return len(self.shards)

    def __len__(self) -> int:
        return self.n

    def __repr__(self) -> str:
        return (f"ShardedArray({self.name!r}, shape={self.shape}, dtype={self.dtype}, "
                f"{self.n_shards} {self.kind} shards)")

    def astype(self, dtype, copy: bool = True) -> "ShardedArray":
        """A view that converts rows to ``dtype`` as they are read (no data is read now)."""
        return ShardedArray(list(self.shards), self.width, dtype, self.name, self.kind)

    # -- reading ----------------------------------------------------------------------------
    def read_shard(self, i: int) -> np.ndarray:
        """Shard ``i`` as an ``n_i x d`` array (a memmap for .npy; decoded once for .parquet, kept until the next
        shard is read)."""
        if self._cache is not None and self._cache[0] == i:
            return self._cache[1]
        s = self.shards[i]
        if self.kind == "npy":
            arr = np.load(s.path, mmap_mode="r", allow_pickle=False)
        else:
            arr = _read_parquet_vectors(s.path, s.display, s.column)
        if arr.shape != (s.n, self.width):
            raise DataError(f"shard changed on disk: shape {arr.shape}, expected {(s.n, self.width)}",
                            file=s.display, hint="reopen the dataset")
        if self.kind == "parquet":
            self._cache = (i, arr)
        return arr

    def _convert(self, block: np.ndarray) -> np.ndarray:
        return block if block.dtype == self.dtype else block.astype(self.dtype)

    def _rows(self, start: int, stop: int) -> np.ndarray:
        out = np.empty((max(0, stop - start), self.width), dtype=self.dtype)
        if stop <= start:
            return out
        first = int(np.searchsorted(self._starts, start, side="right") - 1)
        pos = 0
        for i in range(first, self.n_shards):
            s = self.shards[i]
            if s.start >= stop:
                break
            a, b = max(start, s.start) - s.start, min(stop, s.stop) - s.start
            if b <= a:
                continue
            data = self.read_shard(i)
            out[pos:pos + b - a] = data[a:b]
            pos += b - a
            if isinstance(data, np.memmap):
                release_pages(data, a, b)
        return out

    def _take(self, rows: np.ndarray) -> np.ndarray:
        rows = np.asarray(rows)
        if rows.dtype == bool:
            if rows.shape != (self.n,):
                raise IndexError(f"boolean index of shape {rows.shape} for {self.n} rows")
            rows = np.flatnonzero(rows)
        rows = rows.astype(np.int64).reshape(-1)
        rows = np.where(rows < 0, rows + self.n, rows)
        if rows.size and (rows.min() < 0 or rows.max() >= self.n):
            raise IndexError(f"row index out of range for {self.n} rows")
        out = np.empty((rows.size, self.width), dtype=self.dtype)
        order = np.argsort(rows, kind="stable")
        sorted_rows = rows[order]
        shard_of = np.searchsorted(self._starts, sorted_rows, side="right") - 1
        bounds = np.flatnonzero(np.diff(shard_of)) + 1
        for part in np.split(np.arange(rows.size), bounds) if rows.size else []:
            i = int(shard_of[part[0]])
            data = self.read_shard(i)
            out[order[part]] = data[sorted_rows[part] - self.shards[i].start]
        return out

    def __getitem__(self, key):
        if isinstance(key, tuple):
            if len(key) == 0:
                return self[:]
            rows = self[key[0]]
            return rows[(slice(None),) + tuple(key[1:])] if np.ndim(rows) == 2 else rows[key[1:]]
        if isinstance(key, (int, np.integer)):
            i = int(key) + (self.n if key < 0 else 0)
            if not 0 <= i < self.n:
                raise IndexError(f"row {key} out of range for {self.n} rows")
            return self._rows(i, i + 1)[0]
        if isinstance(key, slice):
            start, stop, step = key.indices(self.n)
            if step == 1:
                return self._rows(start, stop)
            return self._take(np.arange(start, stop, step))
        return self._take(np.asarray(key))

    def __array__(self, dtype=None, copy=None):
        limit = max_materialize_bytes()
        if self.nbytes > limit:
            raise BudgetError(f"is a sharded space of {self.nbytes / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB "
                              f"that may be loaded whole", array=self.name,
                              hint="this view needs the whole space in memory: use a sample of the items, "
                                   "or raise $PLATOSCOPE_MAX_FILE_MB")
        arr = self._rows(0, self.n)
        return arr if dtype is None else arr.astype(dtype, copy=False)

    def iter_shards(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(first global row, rows of the shard)`` for every shard in order; one shard in memory at a time."""
        for i, s in enumerate(self.shards):
            yield s.start, self._convert(np.asarray(self.read_shard(i)))

    def shard_at(self, row: int) -> tuple[Shard, int]:
        """The shard holding global ``row`` and the row's index inside it."""
        i = int(np.searchsorted(self._starts, row, side="right") - 1)
        return self.shards[i], int(row - self.shards[i].start)

    def spec(self) -> dict:
        """What a remote worker needs to read the shards (paths, row ranges, column): plain JSON-able data."""
        return {"kind": self.kind, "width": self.width, "dtype": self.dtype.str, "name": self.name,
                "shards": [[s.path, s.display, s.start, s.n, s.column] for s in self.shards]}

    @classmethod
    def from_spec(cls, spec: dict) -> "ShardedArray":
        shards = [Shard(p, d, int(a), int(n), c) for p, d, a, n, c in spec["shards"]]
        return cls(shards, spec["width"], np.dtype(spec["dtype"]), spec["name"], spec["kind"])


# ----------------------------------------------------------------------------------------------
# opening a folder
# ----------------------------------------------------------------------------------------------
def _shard_error(err: DataError, display: str) -> DataError:
    """``err`` naming the shard file (keeps array / column / row)."""
    return type(err)(err.message, file=display, array=err.array, column=err.column, row=err.row, hint=err.hint)


def _validate_shard(arr: np.ndarray, display: str, name: str) -> tuple[bool, np.ndarray | None]:
    """Single-file checks on one shard (dtype, shape, NaN / Inf naming the shard's row). Returns (every row
    identical, first row) so that the folder can run the zero-variance check over all shards."""
    from .validate import check_dtype, check_shape, scan_values

    check_dtype(arr, file=display, array=name)
    if arr.ndim == 3:
        raise DataError(f"is a token-set array (n x T x d, shape {arr.shape}); sharded spaces hold n x d "
                        "vectors", file=display, array=name,
                        hint="pool the token sets, or store them as one .npy / .npz / .safetensors file")
    check_shape(arr, file=display, array=name)
    scan_values(arr, file=display, array=name, check_variance=False)
    first = np.array(arr[0])          # a copy: a view would keep the whole shard (or its mapped pages) alive
    same = True
    step = max(1, (64 << 20) // max(1, arr.shape[1] * arr.dtype.itemsize))
    for a in range(0, arr.shape[0], step):
        if not (np.asarray(arr[a:a + step]) == first).all():
            same = False
            break
    return same, first


def _check_variance(flags: list[tuple[bool, np.ndarray]], n: int, display: str, name: str) -> None:
    if n < 2 or not all(same for same, _ in flags):
        return
    first = flags[0][1]
    if all(np.array_equal(row, first) for _, row in flags):
        raise DataError(f"has zero variance: all {n} rows are identical", file=display, array=name, row=0,
                        hint="the encoder probably received the same (or empty) input for every item")


def _npy_shards(files: list[Path], folder_display: str, name: str, max_file_bytes) -> tuple[ShardedArray, list]:

    shards, flags = [], []
    width = dtype = None
    start = 0
    for path in files:
        display = f"{folder_display}/{path.name}"
        _check_file(path, display, max_file_bytes)
        with open(path, "rb") as fh:
            shape, _fortran, dt = _read_npy_header(fh, display, name)
        if dt.hasobject:
            raise _pickle_error(display, name, "npy")
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as err:
            raise _corrupt(display, "a .npy array", err) from None
        flags.append(_validate_shard(arr, display, name))
        if width is None:
            width, dtype = arr.shape[1], arr.dtype
        elif arr.shape[1] != width:
            raise DataError(f"has {arr.shape[1]} columns but the first shard has {width}", file=display,
                            array=name, hint="every shard of a space must have the same width")
        elif arr.dtype != dtype:
            dtype = np.promote_types(dtype, arr.dtype)
        shards.append(Shard(str(path), display, start, int(arr.shape[0])))
        start += int(arr.shape[0])
        del arr
    _check_variance(flags, start, folder_display, name)
    return ShardedArray(shards, width, dtype, name, "npy"), []


def _parquet_shards(files: list[Path], folder_display: str, folder_name: str, max_file_bytes):
    """ShardedArrays (one per vector column), ids and metadata of a folder of parquet shards."""

    vector_cols: list[str] | None = None
    meta_cols: list[str] = []
    shards: dict[str, list[Shard]] = {}
    flags: dict[str, list] = {}
    widths: dict[str, int] = {}
    dtypes: dict[str, np.dtype] = {}
    ids_parts, meta_parts = [], []
    has_ids = None
    described: dict = {}
    start = 0
    for path in files:
        display = f"{folder_display}/{path.name}"
        _check_file(path, display, max_file_bytes)
        table = _read_parquet(path, display)
        if vector_cols is None and table.schema.metadata and SPACES_KEY.encode() in table.schema.metadata:
            raw = table.schema.metadata[SPACES_KEY.encode()].decode("utf-8", "replace")
            described = _spaces_description(np.array(raw), display)
        cols = [c for c in table.column_names if _is_numeric_list(table.column(c).type)]
        for c in table.column_names:
            if _is_nested_numeric_list(table.column(c).type):
                raise DataError("holds nested lists (token sets); Parquet token sets are not supported",
                                file=display, column=c,
                                hint="save token sets (n x T x d) as .npy, .npz or .safetensors")
        if vector_cols is None:
            if not cols:
                raise DataError("has no embedding columns (list columns of numbers)", file=display,
                                hint="a parquet shard needs an 'id' column and a vector column")
            vector_cols = cols
            meta_cols = [c for c in table.column_names if c not in cols and c != "id"]
            has_ids = "id" in table.column_names
        elif cols != vector_cols:
            raise DataError(f"has vector columns {cols}, but the first shard has {vector_cols}", file=display,
                            hint="every shard must have the same columns")
        if ("id" in table.column_names) != has_ids:
            raise DataError("has " + ("no 'id' column" if has_ids else "an 'id' column") + " unlike the first "
                            "shard", file=display, column="id", hint="every shard must have the same columns")
        n_rows = table.num_rows
        for c in vector_cols:
            space = folder_name if len(vector_cols) == 1 else c
            arr = list_column_to_array(table.column(c), display, c)
            if arr.shape[0] == 0:
                raise DataError("is an empty shard (0 rows)", file=display, hint="remove the file")
            flags.setdefault(c, []).append(_validate_shard(arr, display, space))
            if c not in widths:
                widths[c], dtypes[c] = arr.shape[1], arr.dtype
            elif arr.shape[1] != widths[c]:
                raise DataError(f"has {arr.shape[1]}-d vectors but the first shard has {widths[c]}-d",
                                file=display, column=c, hint="every shard of a space must have the same width")
            else:
                dtypes[c] = np.promote_types(dtypes[c], arr.dtype)
            shards.setdefault(c, []).append(Shard(str(path), display, start, n_rows, c))
            del arr
        if has_ids:
            values = table.column("id").to_pandas()
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise DataError("an item has an empty id", file=display, column="id", row=row)
            ids_parts.append(values.astype(str).to_numpy(dtype=object))
        present = [c for c in meta_cols if c in table.column_names]
        if present != meta_cols:
            missing = sorted(set(meta_cols) - set(present))
            raise DataError(f"lacks the column(s) {', '.join(missing)} of the first shard", file=display,
                            hint="every shard must have the same columns")
        if meta_cols:
            meta_parts.append(table.select(meta_cols).to_pandas())
        start += n_rows
        del table
    arrays = []
    for c in vector_cols:
        space = folder_name if len(vector_cols) == 1 else c
        _check_variance(flags[c], start, folder_display, space)
        arrays.append(ShardedArray(shards[c], widths[c], dtypes[c], space, "parquet"))
    ids = np.concatenate(ids_parts) if has_ids else None
    if ids is not None:
        dup = pd.Series(ids).duplicated(keep=False).to_numpy()
        if dup.any():
            rows = np.flatnonzero(dup)
            shard, local = arrays[0].shard_at(int(rows[0]))
            raise DataError(f"id '{ids[rows[0]]}' appears more than once (item rows "
                            f"{', '.join(map(str, rows[:5]))} of the folder)", file=shard.display, column="id",
                            row=local, hint="ids must be unique across all shards")
    metadata = pd.concat(meta_parts, ignore_index=True) if meta_parts else None
    return arrays, ids, metadata, described


def load_shard_folder(path: str | os.PathLike, display: str | None = None, *, max_file_bytes: int | None = None):
    """Open a folder of shards as :class:`core.io.LoadedFile` (spaces backed by :class:`ShardedArray`).

    Raises :class:`~core.errors.DataError` naming the shard file and its row for any problem a single file would
    raise for, plus mixed formats, differing widths / columns across shards and an empty folder.
    """

    path = Path(path)
    display = display or path.name
    try:
        files = shard_files(path)
    except PermissionError:
        raise DataError("permission denied", file=display, hint="check the folder's permissions") from None
    if not files:
        raise DataError("is an empty folder (no shard files)", file=display,
                        hint="a sharded space is a folder of .npy or .parquet files")
    exts = sorted({p.suffix.lower() for p in files})
    if len(exts) > 1 or exts[0] not in SHARD_EXTENSIONS:
        odd = next(p for p in files if p.suffix.lower() not in SHARD_EXTENSIONS or p.suffix.lower() != exts[0])
        raise DataError(f"mixes shard formats ({', '.join(e or '(no extension)' for e in exts)})",
                        file=f"{display}/{odd.name}",
                        hint="a sharded space is a folder of only .npy or only .parquet files")
    name = Path(display).name or path.name
    if exts[0] == ".npy":
        arr, _ = _npy_shards(files, display, name, max_file_bytes)
        arrays, ids, metadata, described = [arr], None, None, {}
    else:
        arrays, ids, metadata, described = _parquet_shards(files, display, name, max_file_bytes)
    h = hashlib.sha256()
    size = 0
    for f in files:
        h.update(f"{f.name}\0{file_sha256(f)}\0".encode())
        size += f.stat().st_size
    source = SourceFile(display, h.hexdigest(), int(size))
    spaces = []
    for a in arrays:
        desc = described.get(a.shards[0].column or a.name) or described.get(a.name) or {}
        info = {**(desc.get("info") or {}), "shards": a.n_shards, "shard_format": a.kind}
        spaces.append(Space(a.name, a, modality=desc.get("modality") or guess_modality(a.name), source=display,
                            info=info))
    return LoadedFile(spaces=spaces, ids=ids, metadata=metadata, source=source, n=arrays[0].n)


def open_sharded_space(path: str | os.PathLike, name: str | None = None, **kw) -> Space:
    """The (first) space of a shard folder, e.g. ``open_sharded_space("emb/minilm")``."""
    loaded = load_shard_folder(path, **kw)
    if name is None:
        return loaded.spaces[0]
    for s in loaded.spaces:
        if s.name == name:
            return s
    raise DataError(f"no space named '{name}'", file=str(path),
                    hint=f"spaces: {', '.join(s.name for s in loaded.spaces)}")
