"""Point clouds to encode: ``.npz`` / ``.npy`` arrays, or a folder / zip / upload of ``.ply``, ``.xyz``, ``.npy`` files.

:func:`read_point_clouds` returns :class:`PointClouds`: one ``P_i x 3`` float32 array per item (clouds may differ in
size), the item names (ids), and the files it skipped with the reason. Accepted layouts:

* ``.npz`` - one ``n x P x 3`` array (``clouds``, ``points``, or the only 3-D array), or one ``P_i x 3`` array per
  item (the member names are the ids); a string array ``id`` / ``ids`` gives the ids of an ``n x P x 3`` array;
* ``.npy`` - ``n x P x 3`` (or a single ``P x 3`` cloud);
* a folder, a ``.zip``, or a list of ``(name, bytes)`` of ``.ply`` (ASCII or binary, the ``vertex`` element's
  x, y, z), ``.xyz`` / ``.txt`` (whitespace- or comma-separated, the first three columns) and ``.npy`` files, one
  cloud per file, named by its relative path (sorted).

Nothing is unpickled (``allow_pickle=False``), and sizes are checked from headers before anything is read into
memory: ``max_bytes`` (default ``$PLATOSCOPE_MAX_FILE_MB``, 2048 MB) bounds the decoded float32 total.
"""
from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Sequence

import numpy as np

from .errors import BudgetError, DataError

CLOUD_EXTENSIONS = (".ply", ".xyz", ".txt", ".npy")
_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


@dataclass
class PointClouds:
    """Clouds (each ``P_i x 3`` float32), their names, where they came from, and the files skipped."""

    names: list[str]
    clouds: list[np.ndarray]
    source: str
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.clouds)

    def content_key(self) -> str:
        h = hashlib.sha256()
        for name, c in zip(self.names, self.clouds):
            h.update(name.encode("utf-8", "surrogatepass") + b"\0")
            h.update(str(c.shape).encode())
            h.update(np.ascontiguousarray(c, np.float32).tobytes())
        return h.hexdigest()


def _budget(max_bytes: int | None) -> int:
    if max_bytes is not None:
        return int(max_bytes)
    return int(float(os.environ.get("PLATOSCOPE_MAX_FILE_MB", 2048)) * 2**20)


def _check_cloud(arr: np.ndarray, name: str, source: str) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise DataError(f"holds {arr.dtype} values, not numbers", file=source, array=name)
    if arr.ndim != 2 or arr.shape[1] < 3:
        raise DataError(f"a point cloud must be P x 3 (x, y, z), got shape {arr.shape}", file=source, array=name)
    if arr.shape[0] == 0:
        raise DataError("the point cloud has no points", file=source, array=name)
    out = np.ascontiguousarray(arr[:, :3], dtype=np.float32)
    if not np.isfinite(out).all():
        row = int(np.flatnonzero(~np.isfinite(out).all(1))[0])
        raise DataError("has a NaN or infinite coordinate", file=source, array=name, row=row,
                        hint="drop or repair the points with missing coordinates")
    return out


def _npy_header(fh, source: str, name: str):
    try:
        version = np.lib.format.read_magic(fh)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(fh)
        else:
            shape, _, dtype = np.lib.format.read_array_header_2_0(fh)
    except Exception as err:  # noqa: BLE001
        raise DataError(f"is not a readable .npy array ({err})", file=source, array=name) from None
    if dtype.hasobject:
        raise DataError("contains pickled Python objects, which Platoscope never executes", file=source,
                        array=name, hint="save plain numbers: np.save(path, np.asarray(x, dtype=np.float32))")
    return tuple(shape), dtype


def _split(arr: np.ndarray, name: str, source: str) -> list[np.ndarray]:
    if arr.ndim == 3:
        return [_check_cloud(a, f"{name}[{i}]", source) for i, a in enumerate(arr)]
    return [_check_cloud(arr, name, source)]


def _from_npz(data, source: str, budget: int) -> PointClouds:
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"is not a readable .npz archive ({err})", file=source) from None
    with zf:
        infos = [i for i in zf.infolist() if not i.is_dir()]
        total = sum(i.file_size for i in infos)
        if total * 2 > budget:  # float16 -> float32 at most doubles
            raise BudgetError(f"would take {total * 2 / 2**20:.0f} MB once decoded, over the "
                              f"{budget / 2**20:.0f} MB limit", file=source,
                              hint="encode fewer clouds at a time, or fewer points per cloud")
        headers = {}
        for info in infos:
            if not info.filename.endswith(".npy"):
                raise DataError(f"member '{info.filename}' is not a .npy array", file=source)
            with zf.open(info) as fh:
                headers[info.filename[:-4]] = _npy_header(fh, source, info.filename[:-4])

        def read(name):
            with zf.open(name + ".npy") as fh:
                try:
                    return np.lib.format.read_array(fh, allow_pickle=False)
                except ValueError as err:
                    raise DataError(f"member '{name}' is not readable ({err})", file=source) from None

        ids = next((k for k in ("id", "ids") if k in headers and len(headers[k][0]) == 1), None)
        three_d = [k for k, (shape, dt) in headers.items() if len(shape) == 3 and dt.kind in "fiu"]
        main = next((k for k in ("clouds", "points") if k in three_d), three_d[0] if len(three_d) == 1 else None)
        if main is not None:
            clouds = _split(read(main), main, source)
            if ids is not None:
                names = [str(v) for v in read(ids).tolist()]
                if len(names) != len(clouds):
                    raise DataError(f"has {len(names)} ids but {len(clouds)} clouds", file=source, array=ids)
            else:
                names = [str(i) for i in range(len(clouds))]
            return PointClouds(names, clouds, source)
        if len(three_d) > 1:
            raise DataError(f"has several n x P x 3 arrays ({', '.join(three_d)})", file=source,
                            hint="name the one to encode 'clouds'")
        names, clouds = [], []
        for name, (shape, dt) in headers.items():
            if name in ("id", "ids"):
                continue
            if len(shape) != 2:
                raise DataError(f"member '{name}' has shape {shape}: expected one P x 3 cloud per member, or a "
                                f"single n x P x 3 array", file=source, array=name)
            names.append(name)
            clouds.append(_check_cloud(read(name), name, source))
        if not clouds:
            raise DataError("holds no point clouds", file=source, hint="save an n x P x 3 array named 'clouds'")
        return PointClouds(names, clouds, source)


def _from_npy_bytes(data: bytes, name: str, source: str) -> list[np.ndarray]:
    fh = io.BytesIO(data)
    shape, dtype = _npy_header(fh, source, name)
    fh.seek(0)
    try:
        arr = np.lib.format.read_array(fh, allow_pickle=False)
    except ValueError as err:
        raise DataError(f"is not readable ({err})", file=source, array=name) from None
    return _split(arr, name, source)


def parse_xyz(data: bytes, name: str) -> np.ndarray:
    """Points of an ``.xyz`` / ``.txt`` file: one point per line, the first 3 numbers (spaces or commas)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"is not UTF-8 text (byte offset {err.start})", file=name) from None
    rows = []
    for k, line in enumerate(text.splitlines()):
        line = line.strip()
        if not line or line.startswith(("#", "//")):
            continue
        parts = line.replace(",", " ").split()
        try:
            rows.append([float(p) for p in parts[:3]])
        except ValueError:
            raise DataError(f"line {k + 1} is not numbers: {line[:60]!r}", file=name, row=k) from None
        if len(parts) < 3:
            raise DataError(f"line {k + 1} has {len(parts)} values, not x y z", file=name, row=k)
    return _check_cloud(np.array(rows, np.float64).reshape(-1, 3), name, name)


def parse_ply(data: bytes, name: str) -> np.ndarray:
    """x, y, z of the ``vertex`` element of a PLY file (ascii, binary_little_endian or binary_big_endian)."""
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataError("is not a PLY file (no 'ply' ... 'end_header' header)", file=name)
    header = data[:end].decode("ascii", errors="replace").splitlines()
    body_start = data.index(b"\n", end) + 1
    fmt, elements = None, []
    for line in header[1:]:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format":
            fmt = parts[1] if len(parts) > 1 else None
        elif parts[0] == "element" and len(parts) == 3:
            elements.append({"name": parts[1], "count": int(parts[2]), "props": []})
        elif parts[0] == "property" and elements:
            if parts[1] == "list":
                elements[-1]["props"].append(("list", parts[2], parts[3], parts[4]))
            elif len(parts) == 3:
                elements[-1]["props"].append(("scalar", parts[1], parts[2]))
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataError(f"has an unknown PLY format {fmt!r}", file=name)
    vi = next((i for i, e in enumerate(elements) if e["name"] == "vertex"), None)
    if vi is None:
        raise DataError("has no 'vertex' element", file=name)
    vertex = elements[vi]
    pnames = [p[-1] for p in vertex["props"]]
    if not {"x", "y", "z"} <= set(pnames) or any(p[0] == "list" for p in vertex["props"]):
        raise DataError("its vertex element has no plain x, y, z properties", file=name)
    if any(e["props"] and any(p[0] == "list" for p in e["props"]) for e in elements[:vi]):
        raise DataError("the vertex element comes after an element with list properties (not supported)",
                        file=name, hint="write the vertices first (most tools do)")
    count = vertex["count"]
    if fmt == "ascii":
        lines = data[body_start:].decode("ascii", errors="replace").splitlines()
        skip = sum(e["count"] for e in elements[:vi])
        rows = lines[skip:skip + count]
        if len(rows) < count:
            raise DataError(f"declares {count} vertices but has {len(rows)} lines", file=name)
        cols = [pnames.index(c) for c in ("x", "y", "z")]
        try:
            arr = np.array([[float(r.split()[c]) for c in cols] for r in rows], np.float64)
        except (ValueError, IndexError):
            raise DataError("has a vertex line that is not numbers", file=name) from None
        return _check_cloud(arr.reshape(-1, 3), name, name)
    order = "<" if fmt == "binary_little_endian" else ">"
    for p in vertex["props"]:
        if p[1] not in _PLY_TYPES:
            raise DataError(f"has an unknown PLY property type {p[1]!r}", file=name)
    offset = body_start + sum(e["count"] * np.dtype([(p[2], order + _PLY_TYPES[p[1]]) for p in e["props"]]).itemsize
                              for e in elements[:vi])
    dtype = np.dtype([(p[2], order + _PLY_TYPES[p[1]]) for p in vertex["props"]])
    if offset + count * dtype.itemsize > len(data):
        raise DataError(f"declares {count} vertices but the file is too short for them", file=name)
    rec = np.frombuffer(data, dtype=dtype, count=count, offset=offset)
    return _check_cloud(np.stack([rec["x"], rec["y"], rec["z"]], 1).astype(np.float64), name, name)


def _from_files(entries: Sequence[tuple[str, int, callable]], source: str, budget: int) -> PointClouds:
    """Clouds of ``(name, size, read)`` entries (sorted by name), skipping files of other kinds."""
    names, clouds, skipped = [], [], []
    total = 0
    from .archive import unsafe_member_name
    for name, size, read in sorted(entries, key=lambda e: e[0]):
        unsafe = unsafe_member_name(name)
        if unsafe:
            skipped.append((name, unsafe))
            continue
        base = PurePosixPath(name)
        if any(p.startswith(".") or p == "__MACOSX" for p in base.parts):
            continue
        suffix = base.suffix.lower()
        if suffix not in CLOUD_EXTENSIONS:
            skipped.append((name, "not a point-cloud file extension"))
            continue
        total += size * (4 if suffix in (".ply", ".npy") else 1)
        if total > budget:
            raise BudgetError(f"the point clouds exceed the {budget / 2**20:.0f} MB limit", file=source,
                              hint="encode fewer or smaller clouds at a time")
        data = read()
        try:
            if suffix == ".ply":
                found = [parse_ply(data, name)]
            elif suffix == ".npy":
                found = _from_npy_bytes(data, name, name)
            else:
                found = [parse_xyz(data, name)]
        except DataError as err:
            skipped.append((name, err.message if hasattr(err, "message") else str(err)))
            continue
        if len(found) == 1:
            names.append(name)
            clouds.append(found[0])
        else:
            names += [f"{name}[{i}]" for i in range(len(found))]
            clouds += found
    if not clouds:
        first = f" (e.g. {skipped[0][0]}: {skipped[0][1]})" if skipped else ""
        raise DataError(f"no readable point clouds found{first}", file=source,
                        hint=f"point-cloud files: {', '.join(CLOUD_EXTENSIONS)}, or an .npz / .npy array n x P x 3")
    return PointClouds(names, clouds, source, skipped)


def _zip_entries(zf: zipfile.ZipFile):
    return [(i.filename, i.file_size, (lambda i=i: zf.read(i))) for i in zf.infolist() if not i.is_dir()]


def read_point_clouds(path, max_bytes: int | None = None, display_name: str | None = None) -> PointClouds:
    """Point clouds from an ``.npz``, an ``.npy``, a folder, a ``.zip`` or a list of ``(name, bytes)`` uploads."""
    budget = _budget(max_bytes)
    if isinstance(path, (list, tuple)):
        items = [(str(n), bytes(b)) for n, b in path]
        if len(items) == 1 and items[0][0].lower().endswith((".npz", ".zip", ".npy")):
            name, data = items[0]
            if name.lower().endswith(".npz"):
                return _from_npz(io.BytesIO(data), name, budget)
            if name.lower().endswith(".npy"):
                return PointClouds(*_npy_clouds(data, name, budget), name)
            return _from_zip(io.BytesIO(data), name, budget)
        if any(name.lower().endswith((".zip", ".npz")) for name, _ in items):
            raise DataError("upload either one .zip / .npz, or loose point-cloud files, not both",
                            file="uploaded files")
        entries = [(name, len(data), (lambda d=data: d)) for name, data in items]
        return _from_files(entries, "uploaded files", budget)
    p = Path(path)
    display = display_name or p.name
    if not p.exists():
        raise DataError("the point-cloud file or folder does not exist", file=str(path))
    if p.is_dir():
        entries = [(f.relative_to(p).as_posix(), f.stat().st_size, (lambda f=f: f.read_bytes()))
                   for f in p.rglob("*") if f.is_file()]
        return _from_files(entries, display, budget)
    suffix = p.suffix.lower()
    if suffix == ".npz":
        return _from_npz(p, display, budget)
    if suffix == ".zip":
        return _from_zip(p, display, budget)
    if suffix == ".npy":
        if p.stat().st_size * 2 > budget:
            raise BudgetError(f"is {p.stat().st_size / 2**20:.0f} MB, over the {budget / 2**20:.0f} MB limit",
                              file=display)
        return PointClouds(*_npy_clouds(p.read_bytes(), display, budget), display)
    if suffix in (".ply", ".xyz", ".txt"):
        return _from_files([(p.name, p.stat().st_size, p.read_bytes)], display, budget)
    raise DataError("is not a point-cloud file", file=display,
                    hint="give an .npz / .npy (n x P x 3), or a folder or .zip of .ply / .xyz / .npy files")


def _npy_clouds(data: bytes, name: str, budget: int):
    shape, dtype = _npy_header(io.BytesIO(data), name, name)
    need = int(np.prod(shape, dtype=np.int64)) * 4
    if need > budget:
        raise BudgetError(f"would take {need / 2**20:.0f} MB, over the {budget / 2**20:.0f} MB limit", file=name)
    clouds = _from_npy_bytes(data, name, name)
    return [str(i) for i in range(len(clouds))] if len(clouds) > 1 else [Path(name).stem], clouds


def _from_zip(data, source: str, budget: int) -> PointClouds:
    try:
        zf = zipfile.ZipFile(data)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(f"is not a readable zip file ({err})", file=source) from None
    with zf:
        declared = sum(i.file_size for i in zf.infolist())
        if declared > budget:
            raise BudgetError(f"would inflate to {declared / 2**20:.0f} MB, over the {budget / 2**20:.0f} MB limit",
                              file=source, hint="split the zip, or encode fewer clouds at a time")
        return _from_files(_zip_entries(zf), source, budget)
