"""Loaders: embedding files of every supported format -> one :class:`~core.dataset.Dataset`.

Supported inputs (see :func:`load_dataset`):

* ``.npy`` - one space per file, named after the file stem (memory-mapped);
* ``.npz`` - one space per array (members stored uncompressed are memory-mapped, compressed ones read into RAM);
  a string array ``id``/``ids`` gives the item ids, ``<name>_mask`` / ``<name>_weights`` (n x T) attach to the
  token-set space ``<name>``, other string arrays are item metadata columns;
* ``.safetensors`` - one space per tensor (header parsed here, data memory-mapped; BF16 converted to float32),
  same ``_mask`` / ``_weights`` / ``id`` conventions;
* ``.pt`` / ``.pth`` - a tensor or a (nested) dict of tensors, read with ``weights_only=True``;
* ``.parquet`` - every list column of numbers is a space, other columns are item metadata, ``id`` gives ids;
* ``.csv`` - a HierarCaps file (columns id, captions, image_url) or a chains table (chain, tier, caption).

A separate metadata table (``.csv`` / ``.parquet`` with an ``id`` column) is joined on ``id``.
Nothing a user gives is ever unpickled. Every problem raises :class:`~core.errors.DataError` naming the file by the
name the user knows (``display_names``), the array, and the row.
"""
from __future__ import annotations

import json
import io
import os
import pickle
import pickletools
import re
import struct
import zipfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np
import pandas as pd

from .dataset import Dataset, SourceFile, Space, guess_modality
from .cache import sha256_file
from .budget import MemoryBudget, fmt_bytes
from .errors import BudgetError, DataError
from .formats import (DEFAULT_MAX_FILE_MB, SPACES_MEMBER, LoadedFile, _check_file, _corrupt, _fmt_bytes,  # noqa: F401
                      _is_nested_numeric_list, _is_numeric_list, _pickle_error, _PT_RESAVE_HINT, _read_npy_header,
                      _read_parquet, _spaces_description, default_max_file_bytes, list_column_to_array,
                      parquet_decoded_bytes)
from .shards import load_shard_folder
from .validate import check_token_extras, validate_array


EMBEDDING_EXTENSIONS = (".npy", ".npz", ".safetensors", ".pt", ".pth", ".parquet", ".csv")
METADATA_EXTENSIONS = (".csv", ".parquet")
HIERARCAPS_COLUMNS = ("id", "captions", "image_url")
CHAINS_COLUMNS = ("chain", "tier", "caption")
HIERARCAPS_SEPARATOR = " => "
HIERARCAPS_TIERS = 4

_ID_NAMES = ("id", "ids")
# 1-D integer arrays with these names are item metadata, not (1-D, hence invalid) spaces.
_NUMERIC_METADATA = ("label", "tier", "group", "chain")
_EXTRA_SUFFIXES = ("_mask", "_weights")


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------
file_sha256 = sha256_file  # sha256 of a file's bytes, read in chunks (core.cache)


def _display(path, display_name: str | None, display_names: Mapping | None = None) -> str:
    if display_name:
        return str(display_name)
    if display_names:
        for key in (path, str(path), os.fspath(path), Path(path), str(Path(path).resolve())):
            try:
                if key in display_names:
                    return str(display_names[key])
            except TypeError:
                continue
    return Path(path).name


def _ids_from_array(arr: np.ndarray, display: str, name: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim != 1:
        raise DataError(f"item ids must be 1-D, found shape {arr.shape}", file=display, array=name)
    if arr.dtype.kind not in "USiu":
        raise DataError(f"item ids must be strings or integers, found dtype {arr.dtype}", file=display,
                        array=name)
    return np.array([str(v.decode() if isinstance(v, bytes) else v) for v in arr.tolist()], dtype=object)


def _assemble(display: str, arrays: dict[str, np.ndarray], *, strings_as_metadata: bool,
              source: SourceFile) -> LoadedFile:
    """Sort one file's named arrays into ids, metadata, spaces and their masks / weights; validate."""
    arrays = dict(arrays)
    described = _spaces_description(arrays.pop(SPACES_MEMBER), display) if SPACES_MEMBER in arrays else {}
    ids = None
    meta = {}
    numeric: dict[str, np.ndarray] = {}
    for name, arr in arrays.items():
        if name in _ID_NAMES and getattr(arr, "ndim", 0) == 1 and arr.dtype.kind in "USiu":
            if ids is not None:
                raise DataError("has both 'id' and 'ids' arrays", file=display, array=name,
                                hint="keep one of them")
            ids = _ids_from_array(arr, display, name)
        elif strings_as_metadata and arr.dtype.kind in "US" and arr.ndim == 1:
            meta[name] = np.array([v.decode() if isinstance(v, bytes) else str(v) for v in arr.tolist()],
                                  dtype=object)
        elif (name in _NUMERIC_METADATA and getattr(arr, "ndim", 0) == 1 and arr.dtype.kind in "iu"):
            meta[name] = np.asarray(arr)
        else:
            numeric[name] = arr
    extras: dict[str, dict[str, np.ndarray]] = {}
    spaces_raw: dict[str, np.ndarray] = {}
    for name, arr in numeric.items():
        for suffix in _EXTRA_SUFFIXES:
            base = name[: -len(suffix)]
            if name.endswith(suffix) and base and base in numeric:
                extras.setdefault(base, {})[suffix[1:]] = arr
                break
        else:
            spaces_raw[name] = arr
    spaces = []
    for name, arr in spaces_raw.items():
        validate_array(arr, file=display, array=name)
        ex = extras.get(name, {})
        mask, weights = ex.get("mask"), ex.get("weights")
        check_token_extras(arr, mask, weights, file=display, array=name)
        if mask is not None and mask.dtype.kind != "b":
            mask = np.asarray(mask) != 0
        desc = described.get(name, {})
        spaces.append(Space(name, arr, mask=mask, weights=weights,
                            modality=desc.get("modality") or guess_modality(name), source=display,
                            info=dict(desc.get("info") or {})))
    n_values = {s.n for s in spaces}
    if len(n_values) > 1:
        counts = ", ".join(f"'{s.name}': {s.n}" for s in spaces)
        raise DataError(f"its arrays have different numbers of rows ({counts})", file=display,
                        hint="every array must have one row per item")
    n = spaces[0].n if spaces else None
    for label, arr in ([("id", ids)] if ids is not None else []) + list(meta.items()):
        if n is not None and len(arr) != n:
            raise DataError(f"has {len(arr)} entries but the spaces have {n} rows", file=display,
                            array=label, hint="give one entry per item")
    metadata = pd.DataFrame(meta) if meta else None
    if not spaces and metadata is None:
        raise DataError("holds no embedding arrays", file=display,
                        hint="a space is a numeric array of shape n x d or n x T x d")
    return LoadedFile(spaces=spaces, ids=ids, metadata=metadata, source=source, n=n)


# ----------------------------------------------------------------------------------------------
# .npy
# ----------------------------------------------------------------------------------------------
def _load_npy(path: Path, display: str, source: SourceFile, memory: MemoryBudget) -> LoadedFile:
    with open(path, "rb") as fh:
        shape, fortran, dtype = _read_npy_header(fh, display)
    name = Path(display).stem if Path(display).suffix.lower() == ".npy" else path.stem
    if dtype.hasobject:
        raise _pickle_error(display, name, "npy")
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as err:
        raise _corrupt(display, "a .npy array", err) from None
    except OSError as err:
        raise _corrupt(display, "a .npy array", err) from None
    return _assemble(display, {name: arr}, strings_as_metadata=False, source=source)


# ----------------------------------------------------------------------------------------------
# .npz
# ----------------------------------------------------------------------------------------------
def _npz_member_memmap(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo, display: str, name: str):
    """np.memmap of an uncompressed (ZIP_STORED) .npy member, or the dtype-object marker."""
    with open(path, "rb") as fh:
        fh.seek(info.header_offset)
        local = fh.read(30)
        if len(local) != 30 or local[:4] != b"PK\x03\x04":
            raise _corrupt(display, "an .npz archive", "bad local file header", name)
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        data_start = info.header_offset + 30 + name_len + extra_len
        fh.seek(data_start)
        shape, fortran, dtype = _read_npy_header(fh, display, name)
        offset = fh.tell()
    if dtype.hasobject:
        raise _pickle_error(display, name, "npz")
    count = int(np.prod(shape, dtype=np.int64))
    nbytes = count * dtype.itemsize
    header_len = offset - data_start
    if header_len + nbytes != info.file_size or offset + nbytes > path.stat().st_size:
        raise _corrupt(display, "an .npz archive", "member size does not match its header", name)
    if nbytes == 0:
        return np.empty(shape, dtype=dtype, order="F" if fortran else "C")
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=tuple(shape),
                     order="F" if fortran else "C")


def _load_npz(path: Path, display: str, source: SourceFile, memory: MemoryBudget) -> LoadedFile:
    arrays: dict[str, np.ndarray] = {}
    try:
        with zipfile.ZipFile(path) as zf:
            infos = zf.infolist()
            for info in infos:
                member = info.filename
                name = member[:-4] if member.endswith(".npy") else member
                if info.is_dir():
                    continue
                if not member.endswith(".npy"):
                    raise DataError(f"member '{member}' is not a .npy array", file=display,
                                    hint="an .npz file should be written by np.savez / np.savez_compressed")
                if info.compress_type == zipfile.ZIP_STORED:
                    arrays[name] = _npz_member_memmap(path, zf, info, display, name)
                else:
                    with zf.open(info) as fh:
                        shape, fortran, dtype = _read_npy_header(fh, display, name)
                        header_len = fh.tell()
                    if dtype.hasobject:
                        raise _pickle_error(display, name, "npz")
                    # The size comes from the headers (zip directory + .npy header), before anything is inflated.
                    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                    if header_len + nbytes != info.file_size:
                        raise _corrupt(display, "an .npz archive",
                                       f"member '{member}' declares {info.file_size} bytes but its .npy header "
                                       f"(shape {tuple(shape)}, {dtype}) needs {header_len + nbytes}", name)
                    memory.charge(nbytes, file=display, member=member,
                                  detail=f" (compressed member of {fmt_bytes(info.compress_size)}, shape "
                                         f"{tuple(shape)} of {dtype})")
                    with zf.open(info) as fh:
                        try:
                            arrays[name] = np.lib.format.read_array(fh, allow_pickle=False)
                        except ValueError as err:
                            if "allow_pickle" in str(err) or "object" in str(err).lower():
                                raise _pickle_error(display, name, "npz") from None
                            raise _corrupt(display, "an .npz archive", err, name) from None
    except DataError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, KeyError,
            struct.error, NotImplementedError) as err:
        raise _corrupt(display, "an .npz archive", err) from None
    if not arrays:
        raise DataError("is an empty .npz archive (no arrays)", file=display)
    return _assemble(display, arrays, strings_as_metadata=True, source=source)


# ----------------------------------------------------------------------------------------------
# .safetensors
# ----------------------------------------------------------------------------------------------
_SAFETENSORS_DTYPES = {
    "F16": "<f2", "F32": "<f4", "F64": "<f8", "BF16": "<u2",
    "I8": "i1", "I16": "<i2", "I32": "<i4", "I64": "<i8",
    "U8": "u1", "U16": "<u2", "U32": "<u4", "U64": "<u8", "BOOL": "?",
}


def _bf16_to_float32(raw: np.ndarray, chunk_rows: int = 1 << 16) -> np.ndarray:
    """Convert a uint16 array holding bfloat16 bits to float32 (via torch, in row chunks)."""
    import torch

    out = np.empty(raw.shape, dtype=np.float32)
    if raw.ndim == 0 or raw.shape[0] == 0:
        return out
    for start in range(0, raw.shape[0], chunk_rows):
        block = np.array(raw[start:start + chunk_rows], dtype=np.uint16)  # a writable copy
        t = torch.from_numpy(block.view(np.int16)).view(torch.bfloat16)
        out[start:start + chunk_rows] = t.float().numpy()
    return out


def read_safetensors_header(path: str | os.PathLike, display: str | None = None) -> tuple[dict, int]:
    """Parse a .safetensors header: returns ({name: {dtype, shape, data_offsets}}, data_start_byte).

    Validates the header length, the JSON, every dtype, shape and offset against the file size.
    """
    path = Path(path)
    display = display or path.name
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise _corrupt(display, "a .safetensors file", "shorter than its 8-byte header length")
        (header_len,) = struct.unpack("<Q", head)
        if header_len == 0 or header_len > size - 8 or header_len > 100 << 20:
            raise _corrupt(display, "a .safetensors file",
                           f"header length {header_len} does not fit the file size {size}")
        raw = fh.read(header_len)
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise _corrupt(display, "a .safetensors file", f"bad JSON header: {err}") from None
    except RecursionError:
        raise DataError(f"its JSON header ({header_len} bytes) is nested too deeply to be a safetensors header "
                        "(a flat object of tensor entries)", file=display,
                        hint="this is not a file written by safetensors; re-export it with "
                             "safetensors.torch.save_file({name: tensor}, path)") from None
    if not isinstance(header, dict):
        raise _corrupt(display, "a .safetensors file", "the header is not a JSON object")
    data_start = 8 + header_len
    data_size = size - data_start
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise _corrupt(display, "a .safetensors file", "malformed tensor entry", name)
        dtype = entry["dtype"]
        if dtype not in _SAFETENSORS_DTYPES:
            raise DataError(f"has unsupported dtype {dtype}", file=display, array=name,
                            hint="convert it to float32, float16 or bfloat16")
        shape = entry["shape"]
        offsets = entry["data_offsets"]
        if (not isinstance(shape, list) or not all(isinstance(s, int) and s >= 0 for s in shape)
                or not isinstance(offsets, list) or len(offsets) != 2
                or not all(isinstance(o, int) for o in offsets)):
            raise _corrupt(display, "a .safetensors file", "malformed shape or offsets", name)
        begin, end = offsets
        expected = int(np.prod(shape, dtype=np.int64)) * np.dtype(_SAFETENSORS_DTYPES[dtype]).itemsize
        if not 0 <= begin <= end or end > data_size:
            raise _corrupt(display, "a .safetensors file",
                           f"data offsets [{begin}, {end}] lie outside the {data_size} data bytes", name)
        if end - begin != expected:
            raise _corrupt(display, "a .safetensors file",
                           f"data offsets span {end - begin} bytes, but shape {shape} of {dtype} needs "
                           f"{expected}", name)
        tensors[name] = {"dtype": dtype, "shape": tuple(shape), "data_offsets": (begin, end)}
    return tensors, data_start


def _load_safetensors(path: Path, display: str, source: SourceFile, memory: MemoryBudget) -> LoadedFile:
    tensors, data_start = read_safetensors_header(path, display)
    arrays = {}
    for name, entry in tensors.items():
        np_dtype = np.dtype(_SAFETENSORS_DTYPES[entry["dtype"]])
        shape = entry["shape"]
        begin, end = entry["data_offsets"]
        if end == begin:
            arr = np.empty(shape, dtype=np_dtype)
        else:
            arr = np.memmap(path, dtype=np_dtype, mode="r", offset=data_start + begin, shape=shape)
        if entry["dtype"] == "BF16":
            memory.charge(arr.size * 4, file=display, member=name, what="needs",
                          detail=" (bfloat16 converted to float32)")
            arr = _bf16_to_float32(arr)
        arrays[name] = arr
    if not arrays:
        raise DataError("holds no tensors", file=display)
    return _assemble(display, arrays, strings_as_metadata=False, source=source)


# ----------------------------------------------------------------------------------------------
# .pt / .pth
# ----------------------------------------------------------------------------------------------
def _plain_pickle_error(display: str) -> DataError:
    return DataError("holds pickled content (a plain Python pickle, not a PyTorch tensor file), which Platoscope "
                     "never executes", file=display, hint=_PT_RESAVE_HINT)


def _flatten_torch(obj, display: str, prefix: str = "") -> dict:
    import torch

    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix or "tensor"] = obj
        return out
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            name = f"{prefix}.{key}" if prefix else str(key)
            if isinstance(value, (torch.Tensor, Mapping)):
                out.update(_flatten_torch(value, display, name))
            elif str(key) in _ID_NAMES and isinstance(value, (list, tuple)) and all(
                    isinstance(v, (str, int)) for v in value):
                out[name] = np.array([str(v) for v in value], dtype=str)
            else:
                raise DataError(f"holds a {type(value).__name__}, not a tensor", file=display, array=name,
                                hint=_PT_RESAVE_HINT)
        return out
    raise DataError(f"holds a {type(obj).__name__}; expected a tensor or a dict of tensors", file=display,
                    hint=_PT_RESAVE_HINT)


_TORCH_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


def _is_plain_pickle(path: Path) -> bool:
    """Whether a (non-zip) file is a pickle stream that is not a legacy torch.save file (opcodes parsed, not run)."""
    with open(path, "rb") as fh:
        head = fh.read(4096)
    if not head.startswith(b"\x80"):
        return False
    values = []
    try:
        for op, arg, _ in pickletools.genops(io.BytesIO(head)):
            if op.name in ("PROTO", "FRAME"):
                continue
            values.append(arg if op.name in ("LONG1", "LONG4", "LONG", "INT", "BININT") else op.name)
            break
    except Exception:  # noqa: BLE001 - not a pickle after all
        return False
    return bool(values) and values[0] != _TORCH_LEGACY_MAGIC


def _pt_inflated_bytes(path: Path, display: str) -> tuple[int, str | None]:
    """RAM torch.load will need: the whole file (legacy format) or the compressed zip entries' sizes."""
    if not zipfile.is_zipfile(path):
        return path.stat().st_size, None
    total, biggest = 0, None
    with zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                total += info.file_size
                if biggest is None or info.file_size > biggest[1]:
                    biggest = (info.filename, info.file_size)
    return total, biggest[0] if biggest else None


def _load_pt(path: Path, display: str, source: SourceFile, memory: MemoryBudget) -> LoadedFile:
    import torch

    use_mmap = zipfile.is_zipfile(path)
    try:
        need, member = _pt_inflated_bytes(path, display)
    except (zipfile.BadZipFile, OSError, ValueError) as err:
        raise _corrupt(display, "a PyTorch file", err) from None
    memory.charge(need, file=display, member=member, what="needs" if member is None else "would inflate to",
                  detail="" if member is None else " (compressed entries of a PyTorch zip)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True, mmap=use_mmap)
    except pickle.UnpicklingError as err:
        text = str(err)
        found = re.search(r"GLOBAL\s+(\S+)", text)
        if found or "unsupported global" in text.lower():
            error = _pickle_error(display, None, "pt")
            if found:
                error.hint = f"it refers to the Python object {found.group(1)}; " + error.hint
            raise DataError(error.message, file=display, hint=error.hint) from None
        if not use_mmap and _is_plain_pickle(path):
            raise _plain_pickle_error(display) from None
        detail = re.search(r"WeightsUnpickler error:\s*(.+?)\s*(\n|$)", text)
        raise _corrupt(display, "a PyTorch file",
                       detail.group(1)[:200] if detail else text.splitlines()[0][:200]) from None
    except Exception as err:  # corrupt zip / truncated stream / bad magic: RuntimeError, EOFError, KeyError
        if not use_mmap and _is_plain_pickle(path):
            raise _plain_pickle_error(display) from None
        msg = str(err).splitlines()[0][:200] if str(err) else type(err).__name__
        raise _corrupt(display, "a PyTorch file", msg) from None
    flat = _flatten_torch(obj, display, "" if not isinstance(obj, torch.Tensor) else Path(display).stem)
    arrays = {}
    for name, value in flat.items():
        if isinstance(value, np.ndarray):
            arrays[name] = value
            continue
        t = value.detach()
        if t.is_complex():
            arrays[name] = t.resolve_conj().numpy()  # rejected by validation with a clear message
        elif t.dtype == torch.bfloat16 or "float8" in str(t.dtype):
            memory.charge(t.numel() * 4, file=display, member=name, what="needs",
                          detail=f" ({t.dtype} converted to float32)")
            arrays[name] = t.float().numpy()
        else:
            try:
                arrays[name] = t.numpy()
            except (TypeError, RuntimeError) as err:
                raise DataError(f"has unsupported dtype {t.dtype} ({err})", file=display, array=name,
                                hint="convert it to float32") from None
    if not arrays:
        raise DataError("holds no tensors", file=display, hint=_PT_RESAVE_HINT)
    return _assemble(display, arrays, strings_as_metadata=False, source=source)


# ----------------------------------------------------------------------------------------------
# .parquet
# ----------------------------------------------------------------------------------------------
def _load_parquet(path: Path, display: str, source: SourceFile, memory: MemoryBudget) -> LoadedFile:
    table = _read_parquet(path, display, memory)
    arrays = {}
    meta_cols = []
    ids = None
    for name in table.column_names:
        column = table.column(name)
        if _is_numeric_list(column.type):
            arrays[name] = list_column_to_array(column, display, name)
        elif _is_nested_numeric_list(column.type):
            raise DataError("holds nested lists (token sets); Parquet token sets are not supported",
                            file=display, column=name,
                            hint="save token sets (n x T x d) as .npy, .npz or .safetensors")
        elif name == "id":
            values = column.to_pandas()
            if values.isna().any():
                row = int(np.flatnonzero(values.isna().to_numpy())[0])
                raise DataError("an item has an empty id", file=display, column="id", row=row)
            ids = values.astype(str).to_numpy(dtype=object)
        else:
            meta_cols.append(name)
    metadata = table.select(meta_cols).to_pandas() if meta_cols else None
    spaces = []
    for name, arr in arrays.items():
        validate_array(arr, file=display, array=name)
        spaces.append(Space(name, arr, modality=guess_modality(name), source=display))
    if not spaces:
        raise DataError("has no embedding columns (list columns of numbers)", file=display,
                        hint="if it is a metadata table, pass it with --meta")
    return LoadedFile(spaces=spaces, ids=ids, metadata=metadata, source=source)


# ----------------------------------------------------------------------------------------------
# tables: metadata, HierarCaps, chains
# ----------------------------------------------------------------------------------------------
def _read_table(path: Path, display: str) -> pd.DataFrame:
    ext = path.suffix.lower()
    if ext == ".parquet":
        return _read_parquet(path, display).to_pandas()
    if ext == ".csv":
        try:
            return pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
        except pd.errors.EmptyDataError:
            raise DataError("is an empty CSV file", file=display) from None
        except (pd.errors.ParserError, UnicodeDecodeError, ValueError) as err:
            raise _corrupt(display, "a CSV table", str(err).splitlines()[0][:200]) from None
    raise DataError(f"unknown table format '{path.suffix}'", file=display, hint="use .csv or .parquet")


def load_metadata(path: str | os.PathLike, display_name: str | None = None, *,
                  max_file_bytes: int | None = None) -> pd.DataFrame:
    """Read a metadata table (.csv or .parquet) with a unique ``id`` column.

    Returns a DataFrame with ``id`` as str. Raises DataError when the ``id`` column is missing, empty somewhere,
    or duplicated (naming the id and its rows).
    """
    path = Path(path)
    display = _display(path, display_name)
    _check_file(path, display, max_file_bytes)
    try:
        return _metadata_table(path, display)
    except DataError as err:
        raise _scrub(err, path, display) from None


def _metadata_table(path: Path, display: str) -> pd.DataFrame:
    table = _read_table(path, display)
    if "id" not in table.columns:
        raise DataError("has no 'id' column", file=display, column="id",
                        hint=f"add a column named 'id' matching the embeddings' ids "
                             f"(columns found: {', '.join(map(str, table.columns[:10]))})")
    ids = table["id"]
    if ids.isna().any():
        row = int(np.flatnonzero(ids.isna().to_numpy())[0])
        raise DataError("an item has an empty id", file=display, column="id", row=row)
    table = table.copy()
    table["id"] = ids.astype(str)
    dup = table["id"].duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        first = table["id"].iloc[rows[0]]
        same = np.flatnonzero((table["id"] == first).to_numpy())
        n_dup = int(table["id"][dup].nunique())
        raise DataError(f"id '{first}' appears more than once (rows {', '.join(map(str, same[:5]))}); "
                        f"{n_dup} id{'s are' if n_dup > 1 else ' is'} duplicated", file=display,
                        column="id", row=int(rows[0]), hint="ids must be unique")
    return table.reset_index(drop=True)


def _is_hierarcaps(columns) -> bool:
    return set(HIERARCAPS_COLUMNS) <= set(columns)


def _is_chains(columns) -> bool:
    return set(CHAINS_COLUMNS) <= set(columns)


def _hierarcaps_items(table: pd.DataFrame, display: str) -> pd.DataFrame:
    table = table.reset_index(drop=True)
    for col in ("id", "captions"):
        missing = table[col].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"an empty '{col}' value", file=display, column=col, row=row)
    split = table["captions"].astype(str).str.split(HIERARCAPS_SEPARATOR, regex=False)
    counts = split.str.len().to_numpy()
    bad = np.flatnonzero(counts != HIERARCAPS_TIERS)
    if bad.size:
        row = int(bad[0])
        raise DataError(f"row with id '{table['id'].iloc[row]}' has {int(counts[row])} tier"
                        f"{'s' if counts[row] != 1 else ''}, expected {HIERARCAPS_TIERS} "
                        f"({bad.size} such row{'s' if bad.size > 1 else ''})", file=display,
                        column="captions", row=row,
                        hint=f"join the {HIERARCAPS_TIERS} captions, generic -> specific, with '"
                             f"{HIERARCAPS_SEPARATOR.strip()}' (spaces around it)")
    tiers = np.stack(split.to_numpy())
    tiers = np.char.strip(tiers.astype(str))
    empty = np.argwhere(tiers == "")
    if empty.size:
        row = int(empty[0, 0])
        raise DataError(f"tier {int(empty[0, 1])} of row with id '{table['id'].iloc[row]}' is empty",
                        file=display, column="captions", row=row)
    n_rows = len(table)
    chain = np.repeat(table["id"].astype(str).to_numpy(), HIERARCAPS_TIERS)
    tier = np.tile(np.arange(HIERARCAPS_TIERS), n_rows)
    url = table["image_url"].fillna("").astype(str).to_numpy()
    items = pd.DataFrame({
        "id": [f"{c}:{t}" for c, t in zip(chain, tier)],
        "chain": chain,
        "tier": tier.astype(np.int64),
        "caption": tiers.reshape(-1),
        "image_url": np.repeat(url, HIERARCAPS_TIERS),
    })
    dup = table["id"].astype(str).duplicated(keep=False).to_numpy()
    if dup.any():
        rows = np.flatnonzero(dup)
        raise DataError(f"id '{table['id'].iloc[rows[0]]}' appears in rows {', '.join(map(str, rows[:5]))}",
                        file=display, column="id", row=int(rows[0]), hint="ids must be unique")
    return items


def _chains_items(table: pd.DataFrame, display: str) -> pd.DataFrame:
    table = table.reset_index(drop=True).copy()
    for col in CHAINS_COLUMNS:
        missing = table[col].isna().to_numpy()
        if missing.any():
            row = int(np.flatnonzero(missing)[0])
            raise DataError(f"an empty '{col}' value", file=display, column=col, row=row)
    tier = pd.to_numeric(table["tier"], errors="coerce")
    bad = tier.isna() | (tier != tier.round()) | (tier < 0)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise DataError(f"tier {table['tier'].iloc[row]!r} is not a whole number >= 0", file=display,
                        column="tier", row=row)
    table["tier"] = tier.astype(np.int64)
    table["chain"] = table["chain"].astype(str)
    table["caption"] = table["caption"].astype(str)
    dup = table.duplicated(["chain", "tier"], keep=False).to_numpy()
    if dup.any():
        row = int(np.flatnonzero(dup)[0])
        raise DataError(f"chain '{table['chain'].iloc[row]}' has tier {table['tier'].iloc[row]} more than once",
                        file=display, column="tier", row=row)
    sizes = table.groupby("chain", sort=False)["tier"].agg(["size", "min", "max"])
    short = sizes[sizes["size"] < 2]
    if len(short):
        chain = short.index[0]
        row = int(np.flatnonzero((table["chain"] == chain).to_numpy())[0])
        raise DataError(f"chain '{chain}' has only one tier; a chain needs at least 2", file=display,
                        column="chain", row=row)
    gaps = sizes[(sizes["min"] != 0) | (sizes["max"] != sizes["size"] - 1)]
    if len(gaps):
        chain = gaps.index[0]
        row = int(np.flatnonzero((table["chain"] == chain).to_numpy())[0])
        raise DataError(f"chain '{chain}' has tiers {sorted(table.loc[table['chain'] == chain, 'tier'])}; "
                        f"expected 0..{int(gaps['size'].iloc[0]) - 1}", file=display, column="tier", row=row,
                        hint="number each chain's tiers 0, 1, 2, ... from generic to specific")
    if "id" not in table.columns:
        table.insert(0, "id", [f"{c}:{t}" for c, t in zip(table["chain"], table["tier"])])
    else:
        table["id"] = table["id"].astype(str)
    return table


def _chain_table_items(table: pd.DataFrame, display: str) -> pd.DataFrame | None:
    """The items of a HierarCaps file or a chains table; None when the table is neither."""
    if _is_hierarcaps(table.columns):
        return _hierarcaps_items(table, display)
    if _is_chains(table.columns):
        return _chains_items(table, display)
    return None


def _table_source(path: Path, display: str, size: int) -> SourceFile:
    return SourceFile(display, file_sha256(path), size)


def load_hierarcaps(path: str | os.PathLike, display_name: str | None = None, *,
                    max_file_bytes: int | None = None, name: str | None = None) -> Dataset:
    """Read a HierarCaps CSV (id, captions, image_url) or a chains table (chain, tier, caption).

    HierarCaps: ``captions`` holds 4 tiers, generic -> specific, joined by ``" => "``; each (row, tier) becomes
    one item with columns ``id`` (``"<row id>:<tier>"``), ``chain`` (the row id), ``tier`` (0..3), ``caption``
    and ``image_url``. A chains table lists one tier per row (chains of any length >= 2, tiers 0..L-1).
    The dataset has no spaces yet (the texts get encoded later).

    Raises DataError naming the row for a wrong number of tiers, empty captions or duplicated ids.
    """
    path = Path(path)
    display = _display(path, display_name)
    size = _check_file(path, display, max_file_bytes)
    try:
        table = _read_table(path, display)
        items = _chain_table_items(table, display)
        if items is None:
            raise DataError("is neither a HierarCaps file (columns id, captions, image_url) nor a chains table "
                            "(columns chain, tier, caption)", file=display,
                            hint=f"columns found: {', '.join(map(str, table.columns[:10]))}")
        return Dataset(items, [], name=name or Path(display).stem, origin="files",
                       sources=[_table_source(path, display, size)])
    except DataError as err:
        raise _scrub(err, path, display) from None


# ----------------------------------------------------------------------------------------------
# public entry points
# ----------------------------------------------------------------------------------------------
def _load_chains_file(path: Path, display: str, size: int) -> LoadedFile:
    items = _chain_table_items(_read_table(path, display), display)
    if items is None:
        raise DataError("a CSV file among the embedding files must be a HierarCaps file (columns id, "
                        "captions, image_url) or a chains table (chain, tier, caption)", file=display,
                        hint="pass a metadata table with --meta")
    return LoadedFile(spaces=[], ids=items["id"].to_numpy(dtype=object), metadata=None,
                      source=_table_source(path, display, size), items=items)


_LOADERS = {
    ".npy": _load_npy,
    ".npz": _load_npz,
    ".safetensors": _load_safetensors,
    ".pt": _load_pt,
    ".pth": _load_pt,
    ".parquet": _load_parquet,
}


def _extension(path: Path, display: str) -> str:
    ext = Path(display).suffix.lower() or path.suffix.lower()
    if ext not in _LOADERS and path.suffix.lower() in _LOADERS:
        ext = path.suffix.lower()
    return ext


def load_file(path: str | os.PathLike, display_name: str | None = None, *,
              max_file_bytes: int | None = None, memory: MemoryBudget | None = None) -> LoadedFile:
    """Read one file: the spaces, item ids and item metadata it holds (all validated).

    Parameters
    ----------
    path : the file on disk (.npy, .npz, .safetensors, .pt, .pth, .parquet, or a HierarCaps / chains .csv), or a
        folder of .npy / .parquet shards (:mod:`core.shards`).
    display_name : the name the user knows the file by (used in every message); defaults to the file name.
        Its extension, when it has one, decides the format (uploads may be spooled under other names).
    max_file_bytes : size limit (default: :func:`default_max_file_bytes`); a bigger file is refused unread.
    memory : the :class:`~core.budget.MemoryBudget` this read may use (default: a fresh one with
        :func:`~core.budget.default_load_limit`). Every array built in RAM (compressed npz members, Parquet
        columns, converted bfloat16 tensors) is charged from its header size *before* it is inflated; memory-mapped
        arrays cost nothing. Exceeding it raises BudgetError naming the file, the member and the sizes.

    Returns
    -------
    LoadedFile
    """
    path = Path(path)
    display = _display(path, display_name)
    if path.is_dir():  # a folder of .npy / .parquet shards: one space, read shard by shard (core.shards)
        return load_shard_folder(path, display, max_file_bytes=max_file_bytes)
    size = _check_file(path, display, max_file_bytes)
    ext = _extension(path, display)
    memory = MemoryBudget() if memory is None else memory
    try:
        if ext == ".csv":
            return _load_chains_file(path, display, size)
        loader = _LOADERS.get(ext)
        if loader is None:
            raise DataError(f"unknown file type '{ext or '(no extension)'}'", file=display,
                            hint="supported: " + ", ".join(EMBEDDING_EXTENSIONS))
        return loader(path, display, _table_source(path, display, size), memory)
    except DataError as err:
        raise _scrub(err, path, display) from None
    except MemoryError:
        raise BudgetError("does not fit in memory", file=display,
                          hint="use an uncompressed format that can be memory-mapped (.npy, .safetensors)") from None


def _scrub(err: DataError, path: Path, display: str) -> DataError:
    """The error naming ``display`` instead of the on-disk path (which may be a spool file)."""
    texts = {str(path), os.fspath(path)}
    try:
        texts.add(str(path.resolve()))
    except OSError:  # pragma: no cover
        pass
    message, hint = err.message, err.hint
    for text in sorted(texts, key=len, reverse=True):
        if text and text != display:
            message = message.replace(text, display)
            hint = hint.replace(text, display) if hint else hint
    file = display if not err.file or err.file in texts else err.file
    return type(err)(message, file=file, array=err.array, column=err.column, row=err.row, hint=hint)


def _merge_metadata(base: pd.DataFrame, extra: pd.DataFrame, display: str) -> pd.DataFrame:
    for col in extra.columns:
        if col == "id":
            continue
        if col in base.columns:
            same = base[col].astype(str).to_numpy() == extra[col].astype(str).to_numpy()
            if not same.all():
                row = int(np.flatnonzero(~same)[0])
                raise DataError(f"metadata column '{col}' differs from the one read from another file",
                                file=display, column=col, row=row, hint="rename one of the columns")
            continue
        base[col] = extra[col].to_numpy()
    return base


def _examples(values: Iterable, k: int = 3) -> str:
    values = list(values)
    text = ", ".join(f"'{v}'" for v in values[:k])
    return text + (", ..." if len(values) > k else "")


def _join_metadata(items: pd.DataFrame, meta: pd.DataFrame, display: str, ids_given: bool) -> pd.DataFrame:
    index = pd.Index(meta["id"])
    pos = index.get_indexer(items["id"])
    missing = np.flatnonzero(pos < 0)
    if missing.size:
        missing_ids = items["id"].iloc[missing]
        unused = np.setdiff1d(np.arange(len(meta)), pos[pos >= 0])
        hint = "the metadata table must have one row per item, with the embeddings' ids"
        if not ids_given:
            hint += ("; the embeddings carry no ids, so they are numbered 0..n-1: add an 'id' array "
                     "(npz / safetensors / pt) or column (parquet)")
        raise DataError(f"{missing.size} of {len(items)} item ids are not in the metadata table (e.g. "
                        f"{_examples(missing_ids)}); {len(unused)} of its {len(meta)} ids match no item "
                        f"(e.g. {_examples(meta['id'].iloc[unused])})", file=display, column="id",
                        hint=hint)
    joined = meta.iloc[pos].reset_index(drop=True)
    out = items.copy()
    for col in joined.columns:
        if col == "id":
            continue
        out[col] = joined[col].to_numpy()
    return out


def load_dataset(paths, metadata=None, *, name: str | None = None,
                 display_names: Mapping | None = None, max_file_bytes: int | None = None,
                 origin: str = "files", memory: MemoryBudget | None = None) -> Dataset:
    """Load embedding files (and an optional metadata table) into one :class:`~core.dataset.Dataset`.

    Parameters
    ----------
    paths : one path or a list of paths (.npy, .npz, .safetensors, .pt, .pth, .parquet; a HierarCaps or
        chains .csv gives the items table).
    metadata : optional .csv / .parquet table with an ``id`` column, joined on ``id`` (it may list the items
        in another order and hold extra rows, but must cover every item).
    name : the dataset's display name (default: the first file's stem).
    display_names : maps a path to the name the user knows it by (uploads are spooled under hashed names);
        every message uses these names.
    max_file_bytes : per-file size limit (default $PLATOSCOPE_MAX_FILE_MB, else 2048 MB).
    origin : 'files', 'upload', 'server' or 'demo'.
    memory : the :class:`~core.budget.MemoryBudget` shared by all the files (see :func:`load_file`).

    Returns
    -------
    Dataset whose items carry ids (from an ``id`` array/column, else "0".."n-1") and metadata columns, and
    whose spaces are validated (memory-mapped where the format allows).

    Raises
    ------
    DataError : on any problem with the input, naming the file, array / column and row.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = list(paths)
    if not paths:
        raise DataError("no input files given", hint="pass at least one embedding file")
    memory = MemoryBudget() if memory is None else memory
    loaded: list[LoadedFile] = []
    for path in paths:
        loaded.append(load_file(path, _display(path, None, display_names), max_file_bytes=max_file_bytes,
                                memory=memory))

    # row counts must agree
    counted = [lf for lf in loaded if lf.n is not None]
    if len({lf.n for lf in counted}) > 1:
        parts = []
        for lf in counted:
            what = ", ".join(f"'{s.name}'" for s in lf.spaces) or "items table"
            parts.append(f"{lf.source.name} ({what}): {lf.n}")
        raise DataError("the files have different numbers of rows: " + "; ".join(parts),
                        hint="every space must have one row per item, in the same order")
    n = counted[0].n if counted else 0

    # ids: the first file that has them fixes the order; others are reordered to it
    reference = next((lf for lf in loaded if lf.ids is not None), None)
    ids_given = reference is not None
    ids = reference.ids if ids_given else np.array([str(i) for i in range(n)], dtype=object)
    if ids_given:
        dup = pd.Series(ids).duplicated(keep=False).to_numpy()
        if dup.any():
            rows = np.flatnonzero(dup)
            raise DataError(f"id '{ids[rows[0]]}' appears more than once (rows "
                            f"{', '.join(map(str, rows[:5]))})", file=reference.source.name,
                            array="id", row=int(rows[0]), hint="ids must be unique")
    items = pd.DataFrame({"id": ids})
    spaces: list[Space] = []
    seen: dict[str, str] = {}
    for lf in loaded:
        display = lf.source.name
        order = None
        if lf.ids is not None and lf is not reference and not np.array_equal(lf.ids, ids):
            pos = pd.Index(lf.ids).get_indexer(ids)
            if (pos < 0).any() or len(set(lf.ids)) != len(lf.ids):
                missing = ids[pos < 0]
                raise DataError(f"its item ids differ from those of {reference.source.name} ({int((pos < 0).sum())} "
                                f"of {n} missing, e.g. {_examples(missing)})", file=display, array="id",
                                hint="all files must describe the same items")
            order = pos
        if lf.items is not None:
            table = lf.items if order is None else lf.items.iloc[order].reset_index(drop=True)
            items = _merge_metadata(items, table, display)
        if lf.metadata is not None:
            table = lf.metadata if order is None else lf.metadata.iloc[order].reset_index(drop=True)
            items = _merge_metadata(items, table, display)
        for space in lf.spaces:
            if space.name in seen:
                raise DataError(f"a space named '{space.name}' was already read from {seen[space.name]}",
                                file=display, array=space.name,
                                hint="rename one of the arrays or files so that every space has its own name")
            seen[space.name] = display
            if order is not None:
                memory.charge(sum(a.nbytes for a in (space.data, space.mask, space.weights) if a is not None),
                              file=display, member=space.name, what="needs",
                              detail=" (rows reordered to the first file's ids)")
                space = Space(space.name, np.asarray(space.data)[order],
                              None if space.mask is None else np.asarray(space.mask)[order],
                              None if space.weights is None else np.asarray(space.weights)[order],
                              space.modality, space.source, dict(space.info))
            spaces.append(space)

    sources = [lf.source for lf in loaded]
    if metadata is not None:
        meta_display = _display(metadata, None, display_names)
        meta = load_metadata(metadata, meta_display, max_file_bytes=max_file_bytes)
        items = _join_metadata(items, meta, meta_display, ids_given)
        size = Path(metadata).stat().st_size
        sources.append(SourceFile(meta_display, file_sha256(metadata), int(size)))
    ds_name = name or Path(loaded[0].source.name).stem
    return Dataset(items, spaces, name=ds_name, origin=origin, sources=sources)
