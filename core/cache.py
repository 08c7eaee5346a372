"""The on-disk cache (``cache/`` by default; ``$PLATOSCOPE_CACHE_DIR`` overrides).

Built on :class:`joblib.Memory`. Results are keyed by a sha256 of the *input bytes* plus the parameters:
callers pass a content key (e.g. :attr:`core.Dataset.fingerprint`) and keep the big arrays out of the hash with
``ignore=[...]``, so a 2 GB upload is hashed once, when it is read, not on every call.

Namespaces keep sessions apart: ``"shared"`` holds results of the built-in demo and of server-side datasets, and
each app session's uploads get ``"session-<id>"``; :func:`forget_namespace` removes one (the app's
"forget my data" button). Every file in the cache is written by Platoscope itself; nothing a user uploaded is ever
unpickled (uploads are parsed with allow_pickle=False / weights_only=True / safetensors).

Size is bounded: :func:`prune` applies a byte limit (``$PLATOSCOPE_CACHE_MB``, default 4096) to results *and*
spooled uploads together (results are trimmed, least recently used first, to leave room for the uploads) and an
age limit (``$PLATOSCOPE_CACHE_DAYS``, default 30); :func:`reserve_disk` refuses an upload that would not fit.
:func:`prune_sessions` removes ended sessions' folders (see :func:`touch_session` for the heartbeat it reads).
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
import re
import shutil
from pathlib import Path
from typing import Iterable

import joblib

_SAFE = re.compile(r"^[A-Za-z0-9_.-]{1,80}$")


def cache_root() -> Path:
    """Root folder of the cache (created on first use)."""
    root = os.environ.get("PLATOSCOPE_CACHE_DIR")
    path = Path(root) if root else Path(__file__).resolve().parents[1] / "cache"
    path.mkdir(parents=True, exist_ok=True)
    return path


def namespace_dir(namespace: str = "shared") -> Path:
    """Folder of one namespace ('shared' or 'session-<id>')."""
    if not _SAFE.match(namespace) or namespace in (".", ".."):
        raise ValueError(f"invalid cache namespace {namespace!r}")
    path = cache_root() / namespace
    path.mkdir(parents=True, exist_ok=True)
    return path


def namespace_file(namespace: str | None, folder: str, name: str) -> Path | None:
    """Path of the cache file ``name`` in the namespace's sub-folder ``folder`` (created); None without a namespace
    (nothing is cached)."""
    if namespace is None:
        return None
    path = namespace_dir(namespace) / folder
    path.mkdir(parents=True, exist_ok=True)
    return path / name


def get_memory(namespace: str = "shared") -> joblib.Memory:
    """A joblib.Memory writing under the namespace's folder."""
    return joblib.Memory(location=str(namespace_dir(namespace) / "joblib"), verbose=0)


def forget_namespace(namespace: str) -> bool:
    """Delete everything cached (and spooled) under ``namespace``. Returns whether anything was there."""
    if namespace == "shared":
        raise ValueError("refusing to forget the shared namespace; use prune() or clean the cache folder")
    path = cache_root() / namespace
    if not _SAFE.match(namespace) or not path.exists():
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def _tree_bytes(root: Path) -> int:
    total = 0
    for f in root.rglob("*"):
        try:
            if f.is_file():
                total += f.stat().st_size
        except OSError:  # removed meanwhile
            pass
    return total


def cache_size_bytes(namespace: str | None = None) -> int:
    root = cache_root() if namespace is None else namespace_dir(namespace)
    return _tree_bytes(root)


def max_cache_bytes() -> int:
    """The disk limit of results + spooled uploads: $PLATOSCOPE_CACHE_MB (default 4096 MB)."""
    return int(float(os.environ.get("PLATOSCOPE_CACHE_MB", 4096)) * 2**20)


def uploads_size_bytes() -> int:
    """Bytes of every session's spooled uploads."""
    return sum(_tree_bytes(p / "uploads") for p in cache_root().glob("session-*") if (p / "uploads").is_dir())


def prune(max_bytes: int | None = None, max_age_days: float | None = None,
          namespaces: Iterable[str] | None = None) -> None:
    """Apply the size and age limits: results (joblib stores) are trimmed, least recently used first, until
    results + spooled uploads fit in ``max_bytes`` (default :func:`max_cache_bytes`)."""
    if max_bytes is None:
        max_bytes = max_cache_bytes()
    if max_age_days is None:
        max_age_days = float(os.environ.get("PLATOSCOPE_CACHE_DAYS", 30))
    root = cache_root()
    names = list(namespaces) if namespaces is not None else [p.name for p in root.iterdir() if p.is_dir()]
    stores = [n for n in names if (root / n / "joblib").exists()]
    sizes = {n: _tree_bytes(root / n / "joblib") for n in stores}
    room = max(0, max_bytes - (uploads_size_bytes() if namespaces is None else 0))
    excess = sum(sizes.values()) - room
    for name in sorted(stores, key=sizes.get, reverse=True):
        limit = max_bytes if excess <= 0 else max(0, sizes[name] - excess)
        get_memory(name).reduce_size(bytes_limit=min(limit, max_bytes),
                                     age_limit=_dt.timedelta(days=max_age_days))
        after = _tree_bytes(root / name / "joblib")
        excess -= sizes[name] - after


def reserve_disk(nbytes: int, what: str = "the upload") -> None:
    """Make room for ``nbytes`` of new uploads within :func:`max_cache_bytes` (trimming results first), or raise
    BudgetError before anything is written."""
    from .budget import fmt_bytes
    from .errors import BudgetError

    limit = max_cache_bytes()
    if cache_size_bytes() + nbytes <= limit:
        return
    prune(max_bytes=max(0, limit - nbytes))
    used = cache_size_bytes()
    if used + nbytes > limit:
        raise BudgetError(f"needs {fmt_bytes(nbytes)} of disk; the server's uploads and cached results already "
                          f"use {fmt_bytes(used)} of the {fmt_bytes(limit)} disk cache (PLATOSCOPE_CACHE_MB)",
                          file=what, hint="forget earlier uploads (Forget my data), try later, or ask the operator "
                                          "to raise PLATOSCOPE_CACHE_MB")


_HEARTBEAT = ".alive"


def touch_session(namespace: str, runtime_id: str | None = None) -> None:
    """Record that ``namespace``'s session is alive (only if its folder exists: this never creates it)."""
    path = cache_root() / namespace
    if not _SAFE.match(namespace) or not path.is_dir():
        return
    beat = path / _HEARTBEAT
    text = f"{os.getpid()} {runtime_id or ''}"
    try:
        if not beat.exists() or beat.read_text() != text:
            beat.write_text(text)
        os.utime(beat)
    except OSError:  # removed meanwhile (forget)
        pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def prune_sessions(max_age_hours: float | None = None, *, max_idle_seconds: float | None = None,
                   live: set[str] | None = None) -> list[str]:
    """Remove the folders of sessions that ended; returns the removed namespaces.

    A folder whose heartbeat (:func:`touch_session`) names a session of this process is removed once that
    session is no longer in ``live`` (the runtime forgets a session ``server.disconnectedSessionTTL`` after it
    disconnects) and its last activity is older than ``max_idle_seconds``; one of a process that no longer runs,
    after ``max_idle_seconds`` of inactivity. Folders of another running process, and any folder when
    ``max_idle_seconds`` is not given, are removed after ``max_age_hours`` ($PLATOSCOPE_SESSION_TTL_HOURS,
    default 24) untouched.
    """
    import time

    if max_age_hours is None:
        max_age_hours = float(os.environ.get("PLATOSCOPE_SESSION_TTL_HOURS", 24))
    now = time.time()
    removed = []
    for path in cache_root().glob("session-*"):
        try:
            newest = max([path.stat().st_mtime] + [f.stat().st_mtime for f in path.rglob("*")])
        except OSError:
            continue
        idle = now - newest
        cutoff = max_age_hours * 3600
        if max_idle_seconds is not None:
            beat = path / _HEARTBEAT
            try:
                pid_text, _, runtime_id = beat.read_text().partition(" ")
                pid = int(pid_text)
            except (OSError, ValueError):
                pid, runtime_id = None, ""
            if pid == os.getpid():
                if live is not None and runtime_id and runtime_id in live:
                    continue  # the runtime still knows this session (connected, or within its TTL)
                cutoff = max_idle_seconds
            elif pid is None or not _pid_alive(pid):
                cutoff = max_idle_seconds
        if idle > cutoff:
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 22) -> str:
    """sha256 of a file's bytes, read in 4 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while True:
            block = fh.read(chunk)
            if not block:
                break
            h.update(block)
    return h.hexdigest()


def sha256_texts(texts: Iterable[str]) -> str:
    """sha256 of a sequence of strings (order matters)."""
    h = hashlib.sha256()
    for t in texts:
        b = str(t).encode("utf-8", "surrogatepass")
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
