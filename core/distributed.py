"""Ray as the engine beyond one machine: reductions over sharded spaces and batch encoding (optional extra).

Install with ``pip install -e '.[distributed]'`` (``ray[data]``). Everything here also runs without a cluster: with
no address, :func:`connect` starts a small local Ray instance (the embedded default); with an address (``auto``,
``HOST:PORT`` or ``ray://HOST:10001``) it joins an existing cluster (see ``docs/DISTRIBUTED.md``).

Reductions (:func:`sharded_cka_matrix`, :func:`anchor_moments`)
    Linear CKA and every alignment fit of :mod:`core.align` need the spaces only through column sums and cross
    products. The rows are cut into blocks (the shard boundaries of a :class:`core.shards.ShardedArray`, split
    further to stay under ``block_bytes``); one Ray task per block reads its rows of every space (the shard files
    themselves: tasks receive paths, never arrays; memory-mapped files likewise; in-memory arrays go through the
    object store), shifts them by a common shift (the first rows' means, so no cancellation), and returns
    ``n``, ``sum z`` and ``Z^T Z`` for the concatenated columns of all spaces (float64). The block moments are summed
    by a tree of Ray tasks, so the driver receives one ``D x D`` matrix whatever the number of blocks. The M x M CKA
    matrix and :class:`core.align.AnchorMoments` (hence CCA, affine, Procrustes, local CKA) follow exactly as in the
    single-process code; the result equals it up to float64 summation order (tests: 1e-10 relative).
    ``engine="local"`` runs the same block function in this process, one block after the other (no Ray).

Encoding (:func:`encode_captions_ray`)
    A Ray Data pipeline over the items, one row per output shard (ids and captions of ``shard_rows`` items), mapped
    by a pool of encoder actors (``num_gpus=1`` each where the cluster has GPUs, else CPU actors); each actor
    builds its encoder once with :func:`core.encoders.make_encoder`, embeds its shard with
    :func:`core.encode.encode_dataset` and writes ``part-NNNNN.parquet`` (``id``, one fixed-size list column per
    space, ``caption``) atomically. A ``manifest.json`` records the run; a rerun into the same folder skips the
    shards already written and complete, so an interrupted job resumes.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .errors import DataError

__all__ = ["connect", "shutdown", "ray_available", "sharded_cka_matrix", "anchor_moments", "block_ranges",
           "encode_captions_ray", "MANIFEST", "DEFAULT_SHARD_ROWS"]

MANIFEST = "manifest.json"
DEFAULT_SHARD_ROWS = 10_000
#: Float64 bytes of one block of all spaces together (the memory of one task).
DEFAULT_BLOCK_BYTES = 128 << 20
_SHIFT_ROWS = 4096


# ------------------------------------------------------------------------------------------------
# connecting
# ------------------------------------------------------------------------------------------------
def ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def _ray():
    try:
        import ray
    except ImportError:
        raise DataError("--ray needs Ray, which is not installed",
                        hint="pip install -e '.[distributed]' (installs ray[data])") from None
    return ray


def connect(address: str | None = None, *, num_cpus: int | None = None, object_store_mb: int = 256) -> dict:
    """Join the Ray cluster at ``address``, or start a local instance when ``address`` is None / 'local'.

    A local instance gets ``num_cpus`` CPUs (default: min(2, cores)), no dashboard, and an object store of
    ``object_store_mb`` MB (only shard paths and D x D moments travel through it). Reuses a running connection.
    Returns ``{"address", "local", "started" (whether this call started the connection), "resources"}``.
    """
    ray = _ray()
    local = address in (None, "", "local")
    started = not ray.is_initialized()
    if started:
        env = {"env_vars": {"PYTHONPATH": os.environ.get("PYTHONPATH", ""),
                            "PLATOSCOPE_DEVICE": os.environ.get("PLATOSCOPE_DEVICE", ""),
                            "PLATOSCOPE_CACHE_DIR": os.environ.get("PLATOSCOPE_CACHE_DIR", "")}}
        env["env_vars"] = {k: v for k, v in env["env_vars"].items() if v}
        try:
            if local:
                ray.init(num_cpus=int(num_cpus or min(2, os.cpu_count() or 1)), include_dashboard=False,
                         object_store_memory=int(object_store_mb) << 20, log_to_driver=False,
                         runtime_env=env or None, configure_logging=False)
            else:
                ray.init(address=address, log_to_driver=False, runtime_env=env or None, configure_logging=False)
        except ConnectionError as err:
            raise DataError(f"cannot reach a Ray cluster at {address!r} ({err})",
                            hint="start one with `ray start --head` and pass its address, e.g. --ray HOST:6379, "
                                 "or give --ray without an address for a local instance") from None
    res = ray.cluster_resources()
    return {"address": "local" if local else address, "local": local, "started": started,
            "resources": {k: float(v) for k, v in res.items() if k in ("CPU", "GPU", "memory", "object_store_memory")}}


def shutdown() -> None:
    """Disconnect from Ray (stopping a local instance this process started)."""
    if ray_available():
        import ray
        if ray.is_initialized():
            ray.shutdown()


def _unwrap(err):
    """The DataError inside a Ray task error (so the CLI prints it plainly), else the error itself."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, DataError) else err


# ------------------------------------------------------------------------------------------------
# readers: how a task opens its rows of a space
# ------------------------------------------------------------------------------------------------
def _memmap_base(arr):
    base = arr
    while isinstance(base, np.ndarray) and not isinstance(base, np.memmap):
        base = base.base
    if not isinstance(base, np.memmap) or getattr(base, "filename", None) is None:
        return None
    if base.shape != arr.shape or base.dtype != arr.dtype or base.ctypes.data != arr.ctypes.data:
        return None
    if not (base.flags.c_contiguous or base.flags.f_contiguous):
        return None
    return base


def _reader(arr, put):
    """A picklable description of how to read rows of ``arr`` in another process."""
    from .shards import is_sharded

    if is_sharded(arr):
        return ("sharded", arr.spec())
    base = _memmap_base(arr) if isinstance(arr, np.ndarray) else None
    if base is not None:
        return ("memmap", str(base.filename), int(base.offset), base.dtype.str, tuple(base.shape),
                "C" if base.flags.c_contiguous else "F")
    return ("array", put(np.ascontiguousarray(arr)))


_OPEN: dict = {}


def _open_reader(reader):
    kind = reader[0]
    if kind == "array":
        obj = reader[1]
        if not isinstance(obj, np.ndarray):
            import ray
            obj = ray.get(obj)
        return obj
    key = json.dumps(reader, default=str, sort_keys=True)
    if key not in _OPEN:
        if len(_OPEN) > 32:
            _OPEN.clear()
        if kind == "sharded":
            from .shards import ShardedArray
            _OPEN[key] = ShardedArray.from_spec(reader[1])
        else:
            _, path, offset, dtype, shape, order = reader
            _OPEN[key] = np.memmap(path, dtype=np.dtype(dtype), mode="r", offset=offset, shape=tuple(shape),
                                   order=order)
    return _OPEN[key]


def block_moments(readers, names, start: int, stop: int, shifts, rows=None) -> dict:
    """Moments of rows [start, stop) (or the global ``rows`` inside it) of every space, shifted by ``shifts``:
    ``{"n", "s": sum z (D,), "G": Z^T Z (D x D)}`` for the concatenated columns (float64)."""
    parts = []
    for reader, name, shift in zip(readers, names, shifts):
        arr = _open_reader(reader)
        block = arr[start:stop] if rows is None else arr[np.asarray(rows, dtype=np.int64)]
        z = np.array(block, dtype=np.float64) - shift
        if not np.isfinite(z).all():
            bad = int(np.flatnonzero(~np.isfinite(z).all(axis=1))[0])
            row = start + bad if rows is None else int(rows[bad])
            where = {}
            from .shards import is_sharded
            if is_sharded(arr):
                shard, local = arr.shard_at(row)
                where = {"file": shard.display, "row": local}
            raise DataError(f"contains a non-finite value (NaN or inf) at item row {row}", array=name,
                            hint="remove or repair that row", **({"row": row} | where))
        parts.append(z)
    Z = parts[0] if len(parts) == 1 else np.hstack(parts)
    return {"n": int(Z.shape[0]), "s": Z.sum(axis=0), "G": Z.T @ Z}


def _add(a: dict, b: dict) -> dict:
    return {"n": a["n"] + b["n"], "s": a["s"] + b["s"], "G": a["G"] + b["G"]}


def block_ranges(arrays: Sequence, block_bytes: int = DEFAULT_BLOCK_BYTES) -> list[tuple[int, int]]:
    """Row blocks: the shard boundaries of the sharded arrays (union), each split to at most ``block_bytes`` of
    float64 over all spaces."""
    from .shards import is_sharded

    n = int(arrays[0].shape[0])
    width = sum(int(a.shape[1]) for a in arrays)
    max_rows = max(1, int(block_bytes) // (8 * max(width, 1)))
    cuts = {0, n}
    for a in arrays:
        if is_sharded(a):
            cuts.update(s.start for s in a.shards)
    cuts = sorted(c for c in cuts if 0 <= c <= n)
    out = []
    for a, b in zip(cuts[:-1], cuts[1:]):
        pieces = max(1, math.ceil((b - a) / max_rows))
        edges = np.linspace(a, b, pieces + 1).round().astype(np.int64)
        out.extend((int(x), int(y)) for x, y in zip(edges[:-1], edges[1:]) if y > x)
    return out


def _shifts(arrays, rows=None) -> list[np.ndarray]:
    first = slice(0, _SHIFT_ROWS) if rows is None else np.sort(np.asarray(rows))[:_SHIFT_ROWS]
    out = []
    for a in arrays:
        block = np.asarray(a[first], dtype=np.float64)
        block = np.where(np.isfinite(block), block, np.nan)   # a bad row is reported by its block, not here
        with np.errstate(all="ignore"):
            import warnings
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                shift = np.nanmean(block, axis=0)
        out.append(np.where(np.isfinite(shift), shift, 0.0))
    return out


def _joint_moments(arrays: Sequence, names: Sequence[str], *, rows=None, engine: str = "ray",
                   block_bytes: int = DEFAULT_BLOCK_BYTES, progress=None) -> dict:
    """Summed block moments of ``arrays`` (all rows, or the sorted global ``rows``)."""
    if engine not in ("ray", "local"):
        raise DataError(f"unknown engine {engine!r}", hint="use 'ray' or 'local'")
    n = int(arrays[0].shape[0])
    for a, nm in zip(arrays, names):
        if len(getattr(a, "shape", ())) != 2:
            raise DataError(f"space '{nm}' must be n x d", array=nm, hint="pool token sets first")
        if int(a.shape[0]) != n:
            raise DataError(f"space '{nm}' has {a.shape[0]} rows, '{names[0]}' has {n}", array=nm,
                            hint="every space must have one row per item")
    if rows is not None:
        rows = np.unique(np.asarray(rows, dtype=np.int64))
        if rows.size and (rows[0] < 0 or rows[-1] >= n):
            raise DataError(f"row index out of range for {n} items")
    shifts = _shifts(arrays, rows)
    blocks = block_ranges(arrays, block_bytes)
    jobs = []
    for a, b in blocks:
        if rows is None:
            jobs.append((a, b, None))
        else:
            lo, hi = np.searchsorted(rows, [a, b])
            if hi > lo:
                jobs.append((a, b, rows[lo:hi]))
    if not jobs:
        raise DataError("no rows to reduce")
    if engine == "local":
        readers = [_reader(a, lambda x: x) for a in arrays]
        total = None
        it = progress(jobs, total=len(jobs), desc="blocks") if progress else jobs
        for a, b, r in it:
            m = block_moments(readers, names, a, b, shifts, r)
            total = m if total is None else _add(total, m)
    else:
        ray = _ray()
        if not ray.is_initialized():
            connect()
        readers = [_reader(a, ray.put) for a in arrays]
        readers_ref = ray.put(readers)
        task = ray.remote(num_cpus=1)(block_moments)
        add = ray.remote(num_cpus=1)(_add)
        refs = [task.remote(readers_ref, list(names), a, b, shifts, r) for a, b, r in jobs]
        try:
            while len(refs) > 1:            # tree reduce: pairs of partial sums, level by level
                refs = [add.remote(refs[i], refs[i + 1]) if i + 1 < len(refs) else refs[i]
                        for i in range(0, len(refs), 2)]
            total = ray.get(refs[0])
        except ray.exceptions.RayTaskError as err:
            raise _unwrap(err) from None
        if progress:
            for _ in progress(range(len(jobs)), total=len(jobs), desc="blocks"):
                pass
    total["shifts"] = shifts
    total["widths"] = [int(a.shape[1]) for a in arrays]
    total["n_blocks"] = len(jobs)
    return total


def _blocks(total: dict):
    edges = np.concatenate([[0], np.cumsum(total["widths"])])
    return [slice(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def sharded_cka_matrix(spaces: Mapping[str, object], *, engine: str = "ray", block_bytes: int = DEFAULT_BLOCK_BYTES,
                       progress=None) -> dict:
    """The M x M linear CKA matrix of row-paired spaces in one pass over the rows (Ray tasks per block).

    Parameters
    ----------
    spaces : name -> ``n x d`` array (:class:`core.shards.ShardedArray`, memmap or array).
    engine : 'ray' (tasks on the connected cluster, or a local instance) or 'local' (this process).
    block_bytes : float64 bytes of one block of all spaces (one task's memory).

    Returns
    -------
    The dict of :func:`core.similarity.similarity_matrix` (``measure``, ``names``, ``values``, ``symmetric``,
    ``higher_is_similar``, ``n_items``) plus ``engine`` and ``n_blocks``.
    """
    import torch

    from .similarity import _cka_from_moments, _Moments

    names = list(spaces)
    if not names:
        raise DataError("no spaces to compare")
    arrays = [spaces[k] for k in names]
    n = int(arrays[0].shape[0])
    if n < 2:
        raise DataError(f"similarities need at least 2 items, got {n}", hint="use more items")
    total = _joint_moments(arrays, names, engine=engine, block_bytes=block_bytes, progress=progress)
    G = torch.as_tensor(np.array(total["G"]))
    s = torch.as_tensor(np.array(total["s"]))
    sl = _blocks(total)
    M = len(names)
    values = [[None] * M for _ in range(M)]
    norms = []
    for i in range(M):
        c = G[sl[i], sl[i]] - torch.outer(s[sl[i]], s[sl[i]]) / total["n"]
        norms.append(float((c * c).sum()) > 0)
    for i in range(M):
        for j in range(i, M):
            if i == j:
                values[i][i] = 1.0 if norms[i] else None
                continue
            if not (norms[i] and norms[j]):
                continue
            m = _Moments(total["n"], None, None, s[sl[i]], s[sl[j]], G[sl[i], sl[i]], G[sl[j], sl[j]],
                         G[sl[i], sl[j]])
            v = _cka_from_moments(m)
            values[i][j] = values[j][i] = None if v is None else float(v)
    return {"measure": "linear_cka", "names": names, "values": values, "symmetric": True,
            "higher_is_similar": True, "n_items": n, "engine": engine, "n_blocks": int(total["n_blocks"])}


def anchor_moments(X, Y, rows=None, *, engine: str = "ray", block_bytes: int = DEFAULT_BLOCK_BYTES, device=None):
    """:class:`core.align.AnchorMoments` of the paired rows ``rows`` (default all) of ``X`` and ``Y``, reduced over
    row blocks by Ray tasks (``engine='ray'``) or in this process (``'local'``)."""
    import torch

    from .align import AnchorMoments, _device64

    total = _joint_moments([X, Y], ["X", "Y"], rows=rows, engine=engine, block_bytes=block_bytes)
    n = total["n"]
    if n < 1:
        raise DataError("no anchors: at least 2 anchor pairs are needed")
    dev = _device64(device)
    G = torch.as_tensor(np.array(total["G"])).to(dev)
    s = torch.as_tensor(np.array(total["s"])).to(dev)
    sx, sy = _blocks(total)
    mx, my = s[sx] / n, s[sy] / n
    Cxx = G[sx, sx] - n * torch.outer(mx, mx)
    Cyy = G[sy, sy] - n * torch.outer(my, my)
    Cxy = G[sx, sy] - n * torch.outer(mx, my)
    shift_x = torch.as_tensor(np.array(total["shifts"][0])).to(dev)
    shift_y = torch.as_tensor(np.array(total["shifts"][1])).to(dev)
    return AnchorMoments(n, shift_x + mx, shift_y + my, (Cxx + Cxx.T) / 2, (Cyy + Cyy.T) / 2, Cxy.contiguous())


# ------------------------------------------------------------------------------------------------
# encoding
# ------------------------------------------------------------------------------------------------
def _ids_digest(ids: Sequence[str]) -> str:
    h = hashlib.sha256()
    for i in ids:
        h.update(str(i).encode())
        h.update(b"\0")
    return h.hexdigest()


def _shard_name(i: int) -> str:
    return f"part-{i:05d}.parquet"


def _shard_done(path: Path, expected_rows: int) -> bool:
    if not path.exists():
        return False
    try:
        import pyarrow.parquet as pq
        return pq.ParquetFile(path).metadata.num_rows == expected_rows
    except Exception:
        return False


def write_shard(path: Path, ids: Sequence[str], arrays: dict, spaces: dict | None = None) -> int:
    """Write one shard (``id``, fixed-size float32 list columns per 2-D space, ``caption``) atomically;
    ``spaces`` (each space's ``{modality, info}``) goes into the schema metadata (:data:`core.shards.SPACES_KEY`)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    cols = {"id": pa.array([str(i) for i in ids], type=pa.string())}
    for name, arr in arrays.items():
        if name == "caption":
            continue
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if arr.ndim != 2:
            continue
        cols[name] = pa.FixedSizeListArray.from_arrays(pa.array(arr.reshape(-1)), arr.shape[1])
    if "caption" in arrays:
        cols["caption"] = pa.array([str(c) for c in arrays["caption"]], type=pa.string())
    from .shards import SPACES_KEY

    table = pa.table(cols)
    if spaces:
        table = table.replace_schema_metadata({SPACES_KEY: json.dumps(spaces, default=str)})
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return len(ids)


class _ShardEncoder:
    """Ray Data actor: builds the encoder once, then embeds and writes one shard per input row."""

    def __init__(self, model: str, out_dir: str, column: str, batch_size: int, device: str | None,
                 options: dict | None = None):
        from .encoders import make_encoder

        self.encoder = make_encoder(model, device=device, batch_size=batch_size,
                                    **{k: v for k, v in (options or {}).items() if v})
        self.out_dir = Path(out_dir)
        self.column = column

    def __call__(self, batch: dict) -> dict:
        import pandas as pd

        from .encode import encode_dataset

        done, rows, secs = [], [], []
        for shard, ids, texts in zip(batch["shard"], batch["ids"], batch["texts"]):
            t0 = time.perf_counter()
            ids, texts = [str(i) for i in ids], [str(t) for t in texts]
            table = pd.DataFrame({"id": ids, self.column: texts})
            res = encode_dataset(self.encoder, table, self.column)
            write_shard(self.out_dir / _shard_name(int(shard)), res["ids"], res["arrays"], res.get("spaces"))
            done.append(int(shard))
            rows.append(len(ids))
            secs.append(time.perf_counter() - t0)
        return {"shard": np.array(done), "rows": np.array(rows), "seconds": np.array(secs)}


def encode_captions_ray(table, column: str, out_dir, model: str = "minilm", *, shard_rows: int = DEFAULT_SHARD_ROWS,
                        batch_size: int = 64, actors: int | None = None, device: str | None = None,
                        encoder_options: dict | None = None, progress=None) -> dict:
    """Embed ``table[column]`` with ``model`` on the connected Ray cluster into parquet shards in ``out_dir``.

    Resumable: shards already present and complete are skipped (``manifest.json`` must describe the same run:
    model, column, shard size and item ids). ``encoder_options`` go to :func:`core.encoders.make_encoder`
    (pooling, max_length, model_kwargs). Returns ``{"output", "family", "n_items", "n_shards", "written",
    "skipped", "actors", "gpus_per_actor", "seconds"}``.
    """
    from .encoders import parse_model_spec

    family = parse_model_spec(model)[0]
    ray = _ray()
    if not ray.is_initialized():
        connect()
    t0 = time.perf_counter()
    out = Path(out_dir)
    if out.suffix.lower() in (".npz", ".npy", ".parquet"):
        raise DataError("with --ray the output is a folder of parquet shards, not a file", file=str(out),
                        hint="e.g. -o embeddings/minilm/")
    if shard_rows < 1:
        raise DataError(f"--shard-rows must be >= 1, got {shard_rows}")
    ids = table["id"].astype(str).tolist() if "id" in table.columns else [str(i) for i in range(len(table))]
    if len(set(ids)) != len(ids):
        raise DataError("the item ids are not unique", column="id", hint="ids must be unique")
    texts = table[column].astype(str).tolist()
    manifest = {"format": "platoscope-shards", "version": 1, "model": model,
                "options": {k: v for k, v in (encoder_options or {}).items() if v}, "column": column,
                "shard_rows": int(shard_rows), "n_items": len(ids), "ids_sha256": _ids_digest(ids)}
    out.mkdir(parents=True, exist_ok=True)
    mpath = out / MANIFEST
    if mpath.exists():
        try:
            old = json.loads(mpath.read_text())
        except (OSError, json.JSONDecodeError):
            old = None
        if old != manifest:
            differ = [k for k in manifest if not old or old.get(k) != manifest[k]]
            raise DataError(f"the folder holds shards of another run (different {', '.join(differ)})",
                            file=str(out), hint="write to a new folder, or delete this one to start over")
    else:
        stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if stray:
            raise DataError(f"the output folder is not empty ({', '.join(sorted(stray)[:3])} ...) and has no "
                            f"{MANIFEST}", file=str(out), hint="write the shards to a new, empty folder")
        mpath.write_text(json.dumps(manifest, indent=1))
    n_shards = max(1, math.ceil(len(ids) / shard_rows))
    pending = []
    for i in range(n_shards):
        a, b = i * shard_rows, min(len(ids), (i + 1) * shard_rows)
        if not _shard_done(out / _shard_name(i), b - a):
            pending.append({"shard": i, "ids": ids[a:b], "texts": texts[a:b]})
    gpus = float(ray.cluster_resources().get("GPU", 0))
    cpus = float(ray.cluster_resources().get("CPU", 1))
    if actors is None:
        actors = int(gpus) if gpus >= 1 else max(1, int(cpus) - 0)
    actors = max(1, min(int(actors), max(1, len(pending))))
    written = []
    if pending:
        import ray.data

        import logging
        logging.getLogger("ray.data").setLevel(logging.ERROR)
        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        ds = ray.data.from_items(pending, override_num_blocks=len(pending))
        gpu_kw = {"num_gpus": 1} if gpus >= 1 else {"num_cpus": 1}
        mapped = ds.map_batches(_ShardEncoder, batch_size=1, concurrency=actors,
                                fn_constructor_kwargs={"model": model, "out_dir": str(out.resolve()),
                                                       "column": column, "batch_size": int(batch_size),
                                                       "device": device if gpus >= 1 or device else "cpu",
                                                       "options": encoder_options},
                                **gpu_kw)
        try:
            it = mapped.iter_rows()
            if progress:
                it = progress(it, total=len(pending), desc="shards")
            written = sorted(int(r["shard"]) for r in it)
        except ray.exceptions.RayTaskError as err:
            raise _unwrap(err) from None
    return {"output": str(out), "family": family, "n_items": len(ids), "n_shards": n_shards, "written": written,
            "skipped": n_shards - len(pending), "actors": actors, "gpus_per_actor": 1 if gpus >= 1 else 0,
            "seconds": round(time.perf_counter() - t0, 3)}
