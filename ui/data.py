"""Datasets in the app: the built-in demo, server-side datasets, and each session's private uploads.

* The demo and datasets in the server folder ($PLATOSCOPE_DATA_DIR, default ``data/server``) are loaded once per
  server process and shared read-only; they can be opened by URL (``?dataset=demo``, ``?dataset=server:NAME``).
* Uploads are spooled to disk under the session's own cache namespace (``cache/session-<id>/uploads``), parsed from
  there (memory-mapped where the format allows), kept in that session's state only, and removed by
  :func:`forget_my_data`. They are never reachable by URL.
"""
from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import streamlit as st

from core import cache as core_cache
from core.dataset import Dataset, Space
from core.errors import BudgetError, DataError

ROOT = Path(__file__).resolve().parents[1]
UPLOAD_TYPES = ["npy", "npz", "safetensors", "pt", "pth", "parquet", "csv"]
METADATA_TYPES = ["csv", "parquet"]
_STATE_UPLOADS = "platoscope_uploads"
_STATE_KEY = "platoscope_dataset_key"


# -- session identity ------------------------------------------------------------------------------
def session_id() -> str:
    if "platoscope_sid" not in st.session_state:
        st.session_state["platoscope_sid"] = uuid.uuid4().hex
    return st.session_state["platoscope_sid"]


def session_namespace() -> str:
    return f"session-{session_id()}"


def cache_namespace(ds: Dataset) -> str:
    """Where results about ``ds`` may be cached: shared for demo/server data, private for uploads."""
    return "shared" if ds.origin in ("demo", "server") else session_namespace()


def session_budget_bytes() -> int:
    return int(float(os.environ.get("PLATOSCOPE_SESSION_BUDGET_MB", 4096)) * 2**20)


def max_file_bytes() -> int:
    return int(float(os.environ.get("PLATOSCOPE_MAX_FILE_MB", 2048)) * 2**20)


@st.cache_resource(ttl=3600, show_spinner=False)
def housekeeping() -> bool:
    """Once an hour per server process: apply the cache's size/age limits and drop stale session folders."""
    core_cache.prune()
    core_cache.prune_sessions()
    return True


# -- shared datasets -------------------------------------------------------------------------------
def server_data_dir() -> Path:
    return Path(os.environ.get("PLATOSCOPE_DATA_DIR", ROOT / "data" / "server"))


def server_dataset_names() -> list[str]:
    folder = server_data_dir()
    if not folder.is_dir():
        return []
    names = []
    for p in sorted(folder.iterdir()):
        if p.name.startswith(".") or p.name.lower().startswith("readme"):
            continue
        if p.is_dir() or p.suffix.lower().lstrip(".") in UPLOAD_TYPES:
            names.append(p.stem if p.is_file() else p.name)
    return names


@st.cache_resource(show_spinner="Loading the built-in demo ...")
def _demo_dataset() -> Dataset | None:
    try:
        from core.demo import load_demo
    except ImportError:
        return None
    try:
        return load_demo()
    except (FileNotFoundError, DataError):
        return None


def demo_enabled() -> bool:
    """The built-in demo is offered unless $PLATOSCOPE_DEMO is 0 (e.g. a server only for private uploads)."""
    return os.environ.get("PLATOSCOPE_DEMO", "1") != "0"


def demo_available() -> bool:
    return demo_enabled() and _demo_dataset() is not None


def _shard_folders(target: Path) -> list[Path]:
    """Sub-folders of a server dataset that hold the shards of one space each (core.shards)."""
    from core.shards import is_shard_folder

    return sorted(p for p in target.iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
                  and is_shard_folder(p))


@st.cache_resource(show_spinner="Loading the server-side dataset ...", max_entries=16)
def _server_dataset(name: str, stamp: float) -> Dataset:
    from core.io import load_dataset

    folder = server_data_dir()
    target = folder / name
    if target.is_dir():
        files = sorted(p for p in target.iterdir() if p.is_file() and not p.name.startswith("."))
        meta = [p for p in files if p.stem.lower() in ("meta", "metadata", "items")]
        data = [p for p in files if p not in meta and p.suffix.lower().lstrip(".") in UPLOAD_TYPES]
        data += _shard_folders(target)
        return load_dataset(data, metadata=meta[0] if meta else None, name=name, origin="server")
    matches = [p for p in folder.iterdir() if p.is_file() and p.stem == name]
    if not matches:
        raise DataError(f"no server-side dataset named '{name}'",
                        hint=f"available: {', '.join(server_dataset_names()) or '(none)'}")
    return load_dataset([matches[0]], name=name, origin="server")


# -- uploads ---------------------------------------------------------------------------------------
def uploads() -> dict[str, Dataset]:
    return st.session_state.setdefault(_STATE_UPLOADS, {})


def spool_upload(uploaded, dest_dir: Path, chunk: int = 16 * 2**20) -> tuple[Path, str, int]:
    """Write an uploaded file to disk in chunks, hashing as it goes. Returns (path, sha256, size)."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    suffix = "".join(Path(uploaded.name).suffixes[-1:]).lower()
    h = hashlib.sha256()
    tmp = dest_dir / f".incoming-{uuid.uuid4().hex}{suffix}"
    size = 0
    uploaded.seek(0)
    with open(tmp, "wb") as fh:
        while True:
            block = uploaded.read(chunk)
            if not block:
                break
            h.update(block)
            fh.write(block)
            size += len(block)
    digest = h.hexdigest()
    final = dest_dir / f"{digest[:24]}{suffix}"
    os.replace(tmp, final)
    return final, digest, size


def ingest_uploads(files, metadata=None) -> Dataset:
    """Spool the uploaded files to this session's folder and load them as one private dataset."""
    from core.io import load_dataset

    if not files:
        raise DataError("no file was uploaded", hint="choose one or more embedding files first")
    limit = max_file_bytes()
    for f in list(files) + ([metadata] if metadata is not None else []):
        if f.size > limit:
            raise DataError(f"the file is {f.size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit",
                            file=f.name, hint="raise PLATOSCOPE_MAX_FILE_MB on the server, or split the file")
    dest = session_upload_dir()
    paths, names = [], {}
    for f in files:
        path, _, _ = spool_upload(f, dest)
        paths.append(path)
        names[str(path)] = f.name
    meta_path = None
    if metadata is not None:
        meta_path, _, _ = spool_upload(metadata, dest)
        names[str(meta_path)] = metadata.name
    stem = "+".join(Path(f.name).stem for f in files)
    name = stem if len(stem) <= 40 else f"{Path(files[0].name).stem}+{len(files) - 1} more"
    ds = load_dataset(paths, metadata=meta_path, name=name, display_names=names, origin="upload",
                      max_file_bytes=limit)
    return _register(ds)


def session_upload_dir() -> Path:
    return core_cache.namespace_dir(session_namespace()) / "uploads"


def _register(ds: Dataset) -> Dataset:
    used = sum(d.resident_nbytes for k, d in uploads().items() if k != ds.name)
    budget = session_budget_bytes()
    if used + ds.resident_nbytes > budget:
        raise BudgetError(
            f"this dataset needs {ds.resident_nbytes / 2**20:.0f} MB of memory and the session already holds "
            f"{used / 2**20:.0f} MB; the per-session budget is {budget / 2**20:.0f} MB",
            hint="forget an earlier upload, or use .npy / .safetensors / uncompressed .npz files, which are "
                 "memory-mapped from disk and do not count against the budget")
    uploads()[ds.name] = ds
    return ds


def _arrays_to_file(ids, arrays: dict) -> Path:
    import io as _io

    import numpy as np

    buf = _io.BytesIO()
    np.savez(buf, id=np.array([str(i) for i in ids], dtype=str), **arrays)
    buf.seek(0)
    buf.name = "encoded.npz"
    path, _, _ = spool_upload(buf, session_upload_dir())
    return path


def dataset_from_arrays(ids, arrays: dict, name: str) -> Dataset:
    """A private dataset from freshly encoded arrays (written to the session folder, loaded and validated)."""
    from core.io import load_dataset

    path = _arrays_to_file(ids, arrays)
    ds = load_dataset([path], name=name, display_names={str(path): f"{name}.npz"}, origin="upload")
    return _register(ds)


def dataset_with_spaces(base: Dataset, ids, arrays: dict) -> Dataset:
    """A private copy of ``base`` (arrays shared, not copied) with the encoded spaces added, paired by id."""
    import numpy as np

    from core.io import load_dataset

    path = _arrays_to_file(ids, arrays)
    new = load_dataset([path], name="encoded", display_names={str(path): "encoded.npz"}, origin="upload")
    position = {i: k for k, i in enumerate(new.ids)}
    order = np.array([position[i] for i in base.ids])
    spaces = list(base.spaces.values())
    for sp in new.spaces.values():
        name = sp.name if sp.name not in base.spaces else f"{sp.name}_encoded"
        spaces.append(Space(name, np.asarray(sp.data)[order],
                            None if sp.mask is None else np.asarray(sp.mask)[order],
                            None if sp.weights is None else np.asarray(sp.weights)[order],
                            sp.modality, sp.source, dict(sp.info)))
    name = f"{base.name} + encoded"
    ds = Dataset(base.items, spaces, name=name, origin="upload", sources=base.sources + new.sources)
    return _register(ds)


def forget_my_data() -> bool:
    """Remove this session's uploads, spooled files and cached results."""
    from ui import jobs

    jobs.cancel_namespace(session_namespace())     # this session's private jobs stop; they write nothing
    had = bool(uploads())
    st.session_state[_STATE_UPLOADS] = {}
    if str(st.session_state.get(_STATE_KEY, "")).startswith("upload:"):
        st.session_state.pop(_STATE_KEY, None)
    removed = core_cache.forget_namespace(session_namespace())
    st.cache_data.clear()
    return had or removed


# -- choosing --------------------------------------------------------------------------------------
def dataset_options() -> dict[str, str]:
    """key -> label for every dataset this session may open."""
    opts = {}
    if demo_available():
        opts["demo"] = "Built-in demo (synthetic 3D objects + MiniLM)"
    for name in server_dataset_names():
        opts[f"server:{name}"] = f"Server: {name}"
    for name in uploads():
        opts[f"upload:{name}"] = f"My upload: {name}"
    return opts


def open_dataset(key: str) -> Dataset:
    if key == "demo":
        ds = _demo_dataset() if demo_enabled() else None
        if ds is None:
            raise DataError("the built-in demo is not available in this installation",
                            hint="run `make demo-data` to build it")
        return ds
    if key.startswith("server:"):
        name = key.split(":", 1)[1]
        folder = server_data_dir()
        if "/" in name or "\\" in name or name.startswith("."):
            raise DataError(f"invalid dataset name '{name}'")
        target = folder / name
        stamp = target.stat().st_mtime if target.exists() else 0.0
        return _server_dataset(name, stamp)
    if key.startswith("upload:"):
        name = key.split(":", 1)[1]
        if name not in uploads():
            raise DataError("this upload is not part of your session (uploads are private to the browser "
                            "session that made them)", hint="upload the files again")
        return uploads()[name]
    raise DataError(f"unknown dataset '{key}'", hint="pick a dataset in the sidebar")


def selected_key() -> str | None:
    return st.session_state.get(_STATE_KEY)


def select(key: str | None) -> None:
    """Make ``key`` the current dataset (the sidebar's picker follows on the next run)."""
    if key is None:
        st.session_state.pop(_STATE_KEY, None)
    else:
        st.session_state[_STATE_KEY] = key


def current_dataset() -> Dataset | None:
    """The dataset picked in the sidebar (None when nothing is picked)."""
    key = selected_key()
    if key is None:
        return None
    try:
        return open_dataset(key)
    except DataError:
        return None
