"""File formats: the low-level readers and checks shared by :mod:`core.io` (one file at a time) and
:mod:`core.shards` (folders of shard files).

Size and permission checks before anything is read, ``.npy`` headers parsed without loading the data, the
decoded size of a Parquet file from its footer (charged to the memory budget before it is inflated), pyarrow list
columns to ``n x d`` arrays, the ``__spaces__`` provenance member, and the errors every reader raises (corrupt
file, pickled objects). Nothing here unpickles anything.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .budget import MemoryBudget, fmt_bytes
from .dataset import MODALITIES, SourceFile, Space
from .errors import BudgetError, DataError


#: Default size limit of one input file, in MB (overridden by $PLATOSCOPE_MAX_FILE_MB or ``max_file_bytes``).
DEFAULT_MAX_FILE_MB = 2048


_PT_RESAVE_HINT = ("re-save it with plain tensors only: torch.save({name: tensor}, path), or "
                   "safetensors.torch.save_file({name: tensor}, path)")


@dataclass
class LoadedFile:
    """What one file contributed: spaces, optional item ids and item metadata columns.

    Attributes
    ----------
    spaces : the spaces found (validated), in file order.
    ids : item ids (strings) when the file carries them, else None.
    metadata : item metadata columns (one row per item, no ``id`` column), or None.
    items : a complete items table (HierarCaps / chains CSV), or None.
    source : the file's name (as the user knows it), sha256 and size.
    """

    spaces: list[Space]
    ids: np.ndarray | None
    metadata: pd.DataFrame | None
    source: SourceFile
    items: pd.DataFrame | None = None
    n: int | None = field(default=None)

    def __post_init__(self):
        if self.n is None:
            if self.spaces:
                self.n = self.spaces[0].n
            elif self.items is not None:
                self.n = len(self.items)
            elif self.metadata is not None:
                self.n = len(self.metadata)


def default_max_file_bytes() -> int:
    """The per-file size limit: $PLATOSCOPE_MAX_FILE_MB (in MB) if set, else 2048 MB."""
    env = os.environ.get("PLATOSCOPE_MAX_FILE_MB")
    if env:
        try:
            mb = float(env)
        except ValueError:
            raise DataError(f"PLATOSCOPE_MAX_FILE_MB must be a number of megabytes, got {env!r}") from None
        return int(mb * (1 << 20))
    return DEFAULT_MAX_FILE_MB << 20


def _check_file(path: Path, display: str, max_file_bytes: int | None) -> int:
    """Existence, type and size checks; returns the size in bytes."""
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DataError("file not found", file=display, hint="check the path") from None
    except PermissionError:
        raise DataError("permission denied", file=display, hint="check the file's permissions") from None
    if path.is_dir():
        raise DataError("is a folder, not a file", file=display, hint="pass the files inside it")
    limit = default_max_file_bytes() if max_file_bytes is None else int(max_file_bytes)
    if st.st_size > limit:
        raise BudgetError(f"is {_fmt_bytes(st.st_size)} ({st.st_size} bytes), over the limit of "
                          f"{_fmt_bytes(limit)} ({limit} bytes) per file", file=display,
                          hint="raise the limit with --max-file-mb (CLI) or $PLATOSCOPE_MAX_FILE_MB, "
                               "or split the file")
    if not os.access(path, os.R_OK):
        raise DataError("permission denied", file=display, hint="check the file's permissions")
    return int(st.st_size)


def _corrupt(display: str, what: str, err: Exception | str | None = None, array: str | None = None) -> DataError:
    detail = f" ({err})" if err else ""
    return DataError(f"cannot be read as {what}: the file is corrupt or truncated{detail}", file=display,
                     array=array, hint=f"re-export the file; check that the upload or copy completed")


#: Optional member of an .npz / array dict: a 0-d string array holding JSON ``{space: {"modality", "info"}}``,
#: written by :func:`core.encode.save_encoded` so that encoded spaces keep their provenance (encoder spec, layer,
#: pooling) and modality.
SPACES_MEMBER = "__spaces__"


def _spaces_description(arr, display: str) -> dict:
    """The ``__spaces__`` member parsed and checked (a JSON object of ``{modality, info}`` objects)."""
    arr = np.asarray(arr)
    if arr.dtype.kind not in "US" or arr.size != 1 or arr.dtype.itemsize > 4 << 20:
        raise DataError("must be one JSON string (the spaces' descriptions)", file=display, array=SPACES_MEMBER)
    try:
        desc = json.loads(str(arr.reshape(()).item()))
    except json.JSONDecodeError as err:
        raise DataError(f"is not valid JSON ({err})", file=display, array=SPACES_MEMBER) from None
    if not isinstance(desc, dict) or not all(isinstance(v, dict) for v in desc.values()):
        raise DataError("must map each space name to {modality, info}", file=display, array=SPACES_MEMBER)
    for name, entry in desc.items():
        if entry.get("modality") is not None and entry["modality"] not in MODALITIES:
            raise DataError(f"gives space '{name}' the unknown modality {entry['modality']!r}", file=display,
                            array=SPACES_MEMBER, hint=f"use one of {', '.join(MODALITIES)}")
        if entry.get("info") is not None and not isinstance(entry["info"], dict):
            raise DataError(f"gives space '{name}' an info that is not an object", file=display,
                            array=SPACES_MEMBER)
    return desc


def _read_npy_header(fh, display: str, array: str | None = None):
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(fh)
        elif version == (2, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(fh)
        else:
            shape, fortran, dtype = np.lib.format._read_array_header(fh, version)  # noqa: SLF001
    except Exception as err:  # ValueError / EOFError / SyntaxError from a mangled header
        raise _corrupt(display, "a .npy array", err, array) from None
    return shape, fortran, dtype


def _pickle_error(display: str, array: str | None, fmt: str) -> DataError:
    hint = {
        "npy": "save plain numbers instead: np.save(path, np.asarray(x, dtype=np.float32))",
        "npz": "save plain numeric / string arrays instead: np.savez(path, name=np.asarray(x, dtype=np.float32))",
    }.get(fmt, _PT_RESAVE_HINT)
    return DataError("contains pickled Python objects, which Platoscope never executes", file=display,
                     array=array, hint=hint)


_PARQUET_WIDTH = {"BOOLEAN": 1, "INT32": 4, "INT64": 8, "INT96": 12, "FLOAT": 4, "DOUBLE": 8}


def parquet_decoded_bytes(path: str | os.PathLike) -> tuple[int, dict[str, int]]:
    """Total and per-column bytes a Parquet file decodes to, from its footer (nothing is decompressed).

    Fixed-width columns: values x width, exact whatever the encoding (dictionary / RLE pages of zeros decode to
    all their values); byte-array columns: their uncompressed page size plus 8 bytes of offset per value.
    """
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(path).metadata
    per_column: dict[str, int] = {}
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        for c in range(group.num_columns):
            col = group.column(c)
            name = col.path_in_schema.split(".")[0]
            width = _PARQUET_WIDTH.get(col.physical_type)
            if width is None and col.physical_type == "FIXED_LEN_BYTE_ARRAY":
                width = int(meta.schema.column(c).length or 0)
            decoded = col.num_values * width if width else int(col.total_uncompressed_size) + 8 * col.num_values
            per_column[name] = per_column.get(name, 0) + max(int(decoded), int(col.total_uncompressed_size))
    return sum(per_column.values()), per_column


def _read_parquet(path: Path, display: str, memory: MemoryBudget | None = None):
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        total, per_column = parquet_decoded_bytes(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as err:
        raise _corrupt(display, "a Parquet table", str(err).splitlines()[0][:200]) from None
    biggest = max(per_column, key=per_column.get) if per_column else None
    (memory if memory is not None else MemoryBudget()).charge(
        total, file=display, member=biggest,
        detail=f" decoded, from the Parquet footer ({len(per_column)} column(s); the largest, '{biggest}', "
               f"{fmt_bytes(per_column.get(biggest, 0))})" if biggest else " decoded, from the Parquet footer")
    try:
        return pq.read_table(path)
    except (pa.ArrowInvalid, pa.ArrowException, OSError, ValueError) as err:
        raise _corrupt(display, "a Parquet table", str(err).splitlines()[0][:200]) from None


def _is_numeric_list(typ) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        return False
    value = typ.value_type
    return pa.types.is_integer(value) or pa.types.is_floating(value)


def _is_nested_numeric_list(typ) -> bool:
    import pyarrow as pa

    if not (pa.types.is_list(typ) or pa.types.is_large_list(typ) or pa.types.is_fixed_size_list(typ)):
        return False
    return _is_numeric_list(typ.value_type)


def list_column_to_array(column, display: str, name: str) -> np.ndarray:
    """An ``n x d`` numpy array from a pyarrow list / large_list / fixed_size_list column of numbers.

    No Python loop over rows: the values are flattened and reshaped. Raises DataError on null rows, null values
    and rows of different lengths, naming the first offending row.
    """
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    if arr.null_count:
        row = int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0])
        raise DataError(f"has {arr.null_count} empty (null) row{'s' if arr.null_count > 1 else ''}",
                        file=display, column=name, row=row, hint="every item needs an embedding")
    if pa.types.is_fixed_size_list(arr.type):
        width = arr.type.list_size
        values = arr.flatten()
        starts = None
    else:
        offsets = arr.offsets.to_numpy()
        lengths = np.diff(offsets)
        width = int(lengths[0]) if n else 0
        differ = np.flatnonzero(lengths != width)
        if differ.size:
            row = int(differ[0])
            raise DataError(f"rows have different lengths: row 0 has {width} values, row {row} has "
                            f"{int(lengths[row])}", file=display, column=name, row=row,
                            hint="every embedding in a column must have the same dimension")
        values = arr.flatten()
        starts = offsets - offsets[0]
    if values.null_count:
        pos = int(np.flatnonzero(values.is_null().to_numpy(zero_copy_only=False))[0])
        row = pos // width if starts is None else int(np.searchsorted(starts, pos, side="right") - 1)
        raise DataError(f"has {values.null_count} null value{'s' if values.null_count > 1 else ''} inside "
                        f"embeddings", file=display, column=name, row=row,
                        hint="re-compute those embeddings")
    flat = values.to_numpy(zero_copy_only=False)
    return flat.reshape(n, width)


_fmt_bytes = fmt_bytes
