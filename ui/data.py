"""Datasets in the app: the built-in demo, server-side datasets, and each session's private uploads.

* The demo and datasets in the server folder ($PLATOSCOPE_DATA_DIR, default ``data/server``) are loaded once per
  server process and shared read-only; they can be opened by URL (``?dataset=demo``, ``?dataset=server:NAME``).
* Uploads are spooled to disk under the session's own cache namespace (``cache/session-<id>/uploads``), parsed from
  there (memory-mapped where the format allows), kept in that session's state only, and removed by
  :func:`ui.forget.forget_my_data`. They are never reachable by URL. As soon as a file is spooled its bytes are dropped from
  Streamlit's upload store; a refused file is deleted at once. What a load builds in RAM is charged against the
  session's and the server's budgets (core.budget) from headers, before anything is inflated; spooled files count
  against the disk cache limit ($PLATOSCOPE_CACHE_MB). Folders of ended sessions are removed
  ``server.disconnectedSessionTTL`` + $PLATOSCOPE_SESSION_GRACE_S seconds after their last activity, and at the same
  time the sweeper (:func:`ui.forget.sweep_once`) empties the ended session's state (uploads, results, budget
  reservation; :func:`ui.forget.forget_ended_sessions`): Streamlit keeps an ended session's object until its store of
  disconnected sessions next changes, which may be never.
"""
from __future__ import annotations

import hashlib
import os
import threading
import time
import uuid
import weakref
from pathlib import Path

import streamlit as st

from core import budget as core_budget
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


def _runtime_session_id() -> str | None:
    """Streamlit's own id of the session running this script (None outside a script run)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        return ctx.session_id if ctx is not None else None
    except Exception:  # noqa: BLE001
        return None


def session_namespace() -> str:
    return f"session-{session_id()}"


def cache_namespace(ds: Dataset) -> str:
    """Where results about ``ds`` may be cached: shared for demo/server data, private for uploads."""
    return "shared" if ds.origin in ("demo", "server") else session_namespace()


def session_budget_bytes() -> int:
    return core_budget.session_budget_bytes()


def max_file_bytes() -> int:
    return int(float(os.environ.get("PLATOSCOPE_MAX_FILE_MB", 2048)) * 2**20)


def max_upload_mb() -> int:
    """The per-file limit in whole MB, as the uploader widgets enforce it in the browser (before any byte is sent)."""
    return max(1, int(max_file_bytes() // 2**20))


def _apply_upload_limit() -> None:
    """Make Streamlit's server refuse bigger uploads while they stream in (not after they are in RAM)."""
    try:
        from streamlit import config

        if config.get_option("server.maxUploadSize") != max_upload_mb():
            config.set_option("server.maxUploadSize", max_upload_mb())
    except Exception:  # noqa: BLE001 - an older Streamlit: the widget's own limit still applies
        pass


def session_ttl_seconds() -> float:
    """How long an ended session's folder is kept: server.disconnectedSessionTTL + $PLATOSCOPE_SESSION_GRACE_S."""
    try:
        from streamlit import config

        ttl = float(config.get_option("server.disconnectedSessionTTL") or 0)
    except Exception:  # noqa: BLE001
        ttl = 120.0
    return ttl + float(os.environ.get("PLATOSCOPE_SESSION_GRACE_S", 300))


def _live_runtime_sessions() -> set[str] | None:
    """Ids of the sessions Streamlit's runtime still knows (connected or within their TTL); None without one."""
    try:
        from streamlit import runtime

        if not runtime.exists():
            return None
        mgr = runtime.get_instance()._session_mgr  # noqa: SLF001 - no public listing of sessions
        return {info.session.id for info in mgr.list_sessions()}
    except Exception:  # noqa: BLE001
        return None


# -- the sessions this process serves: their state, for the sweeper to empty once they end ------------------------
class _SessionHandle:
    """Kept in a session's state: the sweeper's way back to that state. Registered weakly, so the registry entry
    lives exactly as long as the session's state does (the handle and the state refer to each other)."""

    __slots__ = ("state", "runtime_id", "seen", "__weakref__")


_HANDLE_KEY = "platoscope_session_handle"
_SESSIONS_LOCK = threading.Lock()
#: namespace -> weak reference to that session's handle
_SESSIONS: dict[str, weakref.ref] = {}


def _register_session() -> None:
    """Remember this session's state, runtime id and the time of this run (per script run)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is None:
            return
        handle = st.session_state.get(_HANDLE_KEY)
        if not isinstance(handle, _SessionHandle):
            handle = _SessionHandle()
            st.session_state[_HANDLE_KEY] = handle
        handle.state, handle.runtime_id, handle.seen = ctx.session_state, ctx.session_id, time.time()
    except Exception:  # noqa: BLE001 - outside a script run
        return
    namespace = session_namespace()
    with _SESSIONS_LOCK:
        for ns in [ns for ns, ref in _SESSIONS.items() if ref() is None]:
            del _SESSIONS[ns]
        _SESSIONS[namespace] = weakref.ref(handle)


def ended_sessions(live: set[str] | None, max_idle_seconds: float, now: float | None = None) -> list[tuple]:
    """Take out the registered sessions that ended: (namespace, state) of each whose runtime id is not in
    ``live`` (the ids Streamlit still serves, connected or within their TTL) and whose last run is older than
    ``max_idle_seconds``. With ``live`` None (no runtime to ask) nothing is taken."""
    if live is None:
        return []
    now = time.time() if now is None else now
    out = []
    with _SESSIONS_LOCK:
        for ns, ref in list(_SESSIONS.items()):
            handle = ref()
            if handle is None:
                del _SESSIONS[ns]
            elif handle.runtime_id not in live and now - handle.seen > max_idle_seconds:
                del _SESSIONS[ns]
                out.append((ns, handle.state))
    return out


def sweep_once() -> list[str]:
    """Remove ended sessions' folders and apply the disk limit once (the sweeper thread, :func:`ui.forget.sweep_once`,
    does this after emptying the ended sessions' state). Returns the namespaces whose folders were removed."""
    removed = core_cache.prune_sessions(max_idle_seconds=session_ttl_seconds(), live=_live_runtime_sessions())
    core_cache.prune()
    return removed


def housekeeping() -> None:
    """Per script run: the upload limit and this session's heartbeat (:func:`ui.forget.housekeeping` adds the
    sweeper thread)."""
    _apply_upload_limit()
    if "platoscope_sid" in st.session_state:
        core_cache.touch_session(session_namespace(), _runtime_session_id())
        _register_session()


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


def release_upload(uploaded) -> None:
    """Drop an uploaded file's bytes from Streamlit's upload store (it keeps them until the session ends)."""
    file_id = getattr(uploaded, "file_id", None)
    if not file_id:
        return
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None and ctx.uploaded_file_mgr is not None:
            ctx.uploaded_file_mgr.remove_file(ctx.session_id, file_id)
    except Exception:  # noqa: BLE001
        pass


def release_all_uploads() -> None:
    """Drop every file this session has in Streamlit's upload store (Forget my data)."""
    try:
        from streamlit.runtime.scriptrunner import get_script_run_ctx

        ctx = get_script_run_ctx()
        if ctx is not None and ctx.uploaded_file_mgr is not None:
            ctx.uploaded_file_mgr.remove_session_files(ctx.session_id)
    except Exception:  # noqa: BLE001
        pass


def release_freed_memory() -> None:
    """Hand memory freed by an upload back to the OS (glibc keeps freed blocks in per-thread arenas, and every
    script run is a new thread, so without this the server's RSS creeps up by about an upload per upload)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: nothing to do
        pass


def spool_upload(uploaded, dest_dir: Path, chunk: int = 4 * 2**20) -> tuple[Path, str, int]:
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


def _scratch_path(uploaded) -> Path:
    import tempfile

    folder = Path(tempfile.gettempdir()) / f"platoscope-scratch-{os.getuid() if hasattr(os, 'getuid') else 0}"
    folder.mkdir(mode=0o700, exist_ok=True)
    tag = getattr(uploaded, "file_id", None) or uuid.uuid4().hex
    return folder / f"{hashlib.sha256(f'{session_id()}:{tag}'.encode()).hexdigest()[:32]}" \
                    f"{''.join(Path(uploaded.name).suffixes[-1:]).lower()}"


def scratch_copy(uploaded) -> Path:
    """A temporary private copy of an upload for a page that only reads it (delete with :func:`drop_scratch`).

    Unlike :func:`spool_upload` it never writes into (nor re-creates) the session's folder."""
    path = _scratch_path(uploaded)
    tmp, _, _ = spool_upload(uploaded, path.parent)
    os.replace(tmp, path)
    return path


def drop_scratch(uploaded) -> None:
    if uploaded is not None:
        _scratch_path(uploaded).unlink(missing_ok=True)


def _spooled_in_use() -> set[str]:
    """Spool files that this session's registered datasets read from (they must outlive a refused upload)."""
    used = set()
    for ds in uploads().values():
        used.update(str(p) for p in getattr(ds, "_platoscope_spool", ()))
    return used


def ingest_uploads(files, metadata=None) -> Dataset:
    """Spool the uploaded files to this session's folder and load them as one private dataset.

    Every file's size is checked before a byte of it is copied; each is dropped from Streamlit's memory once on
    disk; the disk limit counts the spooled files; the load is charged against this session's remaining budget
    and the server-wide one before anything is inflated; a refused upload's spooled files are deleted at once.
    """
    from core.io import load_dataset

    if not files:
        raise DataError("no file was uploaded", hint="choose one or more embedding files first")
    every = list(files) + ([metadata] if metadata is not None else [])
    try:
        limit = max_file_bytes()
        for f in every:
            if f.size > limit:
                raise DataError(f"the file is {f.size / 2**20:.0f} MB, over the {limit / 2**20:.0f} MB limit",
                                file=f.name, hint="raise PLATOSCOPE_MAX_FILE_MB on the server, or split the file")
        core_cache.reserve_disk(sum(int(f.size) for f in every), what=", ".join(f.name for f in every))
        dest = session_upload_dir()
        paths, names = [], {}
        spooled: list[Path] = []
        for f in files:
            path, _, _ = spool_upload(f, dest)
            release_upload(f)
            spooled.append(path)
            paths.append(path)
            names[str(path)] = f.name
        meta_path = None
        if metadata is not None:
            meta_path, _, _ = spool_upload(metadata, dest)
            release_upload(metadata)
            spooled.append(meta_path)
            names[str(meta_path)] = metadata.name
    except BaseException:
        for f in every:
            release_upload(f)
        raise
    stem = "+".join(Path(f.name).stem for f in files)
    name = stem if len(stem) <= 40 else f"{Path(files[0].name).stem}+{len(files) - 1} more"
    del every
    try:
        ds = load_dataset(paths, metadata=meta_path, name=name, display_names=names, origin="upload",
                          max_file_bytes=limit, memory=_load_budget(name))
        ds._platoscope_spool = tuple(str(p) for p in spooled)  # noqa: SLF001 - which spool files it reads
        return _register(ds)
    except BaseException:
        keep = _spooled_in_use()
        for p in spooled:
            if str(p) not in keep:
                Path(p).unlink(missing_ok=True)
        raise
    finally:
        release_freed_memory()


def session_upload_dir() -> Path:
    return core_cache.namespace_dir(session_namespace()) / "uploads"


def _session_reservation() -> core_budget.Reservation:
    """This session's share of the server-wide budget (stops counting when the session's state is dropped)."""
    res = st.session_state.get("platoscope_reservation")
    if not isinstance(res, core_budget.Reservation):
        res = core_budget.LEDGER.reservation(session_namespace())
        st.session_state["platoscope_reservation"] = res
    return res


def _held_bytes(exclude: str | None = None) -> int:
    return sum(d.resident_nbytes for k, d in uploads().items() if k != exclude)


def _load_budget(name: str) -> core_budget.MemoryBudget:
    """What one load may build in RAM: the session's remaining budget, and the server's (a fresh reservation)."""
    budget = session_budget_bytes()
    used = _held_bytes(exclude=name)
    return core_budget.MemoryBudget(
        budget - used, reservation=core_budget.LEDGER.reservation(f"{session_namespace()}-load"),
        label=(f"this session's remaining memory budget ({core_budget.fmt_bytes(budget - used)} of "
               f"{core_budget.fmt_bytes(budget)}, PLATOSCOPE_SESSION_BUDGET_MB)"),
        hint="forget an earlier upload, or use .npy / .safetensors / uncompressed .npz files (np.savez, not "
             "np.savez_compressed), which are memory-mapped from disk and do not count against the budget")


def _register(ds: Dataset) -> Dataset:
    used = _held_bytes(exclude=ds.name)
    budget = session_budget_bytes()
    if used + ds.resident_nbytes > budget:
        raise BudgetError(
            f"this dataset needs {ds.resident_nbytes / 2**20:.0f} MB of memory and the session already holds "
            f"{used / 2**20:.0f} MB; the per-session budget is {budget / 2**20:.0f} MB",
            hint="forget an earlier upload, or use .npy / .safetensors / uncompressed .npz files, which are "
                 "memory-mapped from disk and do not count against the budget")
    uploads()[ds.name] = ds
    _session_reservation().set(_held_bytes())
    _register_session()
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


#: Session-state entries that hold results or items of this session's data (dropped by Forget my data).
FORGET_STATE_KEYS = ("platoscope_results", "platoscope_drawings", "platoscope_upload_keys", "enc_result", "nb_item",
                     "nb_pending", "nb_last_pick", "query_embed_s")


def session_fingerprints() -> set[str]:
    """sha256 fingerprints of this session's uploads and their spaces (what its results are keyed by)."""
    out = set()
    for ds in uploads().values():
        out.add(ds.fingerprint)
        out.update(s.sha256 for s in ds.sources)
        for name in ds.space_names:
            try:
                out.add(ds.space_fingerprint(name))
            except Exception:  # noqa: BLE001
                pass
    return out


def holds_anything() -> bool:
    """Whether this session holds anything Forget my data would remove."""
    if uploads() or any(k in st.session_state for k in FORGET_STATE_KEYS if k != "query_embed_s"):
        return True
    return (core_cache.cache_root() / session_namespace()).exists() if "platoscope_sid" in st.session_state \
        else False


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
    """The dataset picked in the sidebar (None when nothing is picked, or when it cannot be opened: then the
    reason is shown where the view would be, e.g. which file of a server dataset is broken and why)."""
    key = selected_key()
    if key is None:
        return None
    try:
        return open_dataset(key)
    except DataError as exc:
        from ui.errors import show_error

        show_error(exc)
        return None
