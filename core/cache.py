"""The on-disk cache (``cache/`` by default; ``$PLATOSCOPE_CACHE_DIR`` overrides).

Built on :class:`joblib.Memory`. Results are keyed by a sha256 of the *input bytes* plus the parameters:
callers pass a content key (e.g. :attr:`core.Dataset.fingerprint`) and keep the big arrays out of the hash with
``ignore=[...]``, so a 2 GB upload is hashed once, when it is read, not on every call.

Namespaces keep sessions apart: ``"shared"`` holds results of the built-in demo and of server-side datasets, and
each app session's uploads get ``"session-<id>"``; :func:`forget_namespace` removes one (the app's
"forget my data" button). Every file in the cache is written by Platoscope itself; nothing a user uploaded is ever
unpickled (uploads are parsed with allow_pickle=False / weights_only=True / safetensors).

Size is bounded: :func:`prune` applies a byte limit (``$PLATOSCOPE_CACHE_MB``, default 4096) and an age limit
(``$PLATOSCOPE_CACHE_DAYS``, default 30), oldest-accessed first.
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


def cache_size_bytes(namespace: str | None = None) -> int:
    root = cache_root() if namespace is None else namespace_dir(namespace)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file())


def prune(max_bytes: int | None = None, max_age_days: float | None = None,
          namespaces: Iterable[str] | None = None) -> None:
    """Apply the size and age limits to every namespace's joblib store (least recently used first)."""
    if max_bytes is None:
        max_bytes = int(float(os.environ.get("PLATOSCOPE_CACHE_MB", 4096)) * 2**20)
    if max_age_days is None:
        max_age_days = float(os.environ.get("PLATOSCOPE_CACHE_DAYS", 30))
    root = cache_root()
    names = list(namespaces) if namespaces is not None else [p.name for p in root.iterdir() if p.is_dir()]
    for name in names:
        if (root / name / "joblib").exists():
            get_memory(name).reduce_size(bytes_limit=max_bytes,
                                         age_limit=_dt.timedelta(days=max_age_days))


def prune_sessions(max_age_hours: float | None = None) -> list[str]:
    """Remove session namespaces untouched for ``max_age_hours`` ($PLATOSCOPE_SESSION_TTL_HOURS, default 24).

    Sessions that ended without "forget my data" leave their spooled uploads behind; this bounds how long.
    Returns the removed namespaces.
    """
    import time

    if max_age_hours is None:
        max_age_hours = float(os.environ.get("PLATOSCOPE_SESSION_TTL_HOURS", 24))
    cutoff = time.time() - max_age_hours * 3600
    removed = []
    for path in cache_root().glob("session-*"):
        newest = max([path.stat().st_mtime] + [f.stat().st_mtime for f in path.rglob("*")])
        if newest < cutoff:
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
