import hashlib
import os
import time

import numpy as np
import pytest

from core import cache


def test_namespaces_are_separate_and_forgettable():
    a = cache.namespace_dir("session-aaa")
    b = cache.namespace_dir("session-bbb")
    (a / "x.bin").write_bytes(b"1")
    (b / "y.bin").write_bytes(b"2")
    assert cache.forget_namespace("session-aaa")
    assert not a.exists() and (b / "y.bin").exists()
    assert not cache.forget_namespace("session-aaa")
    with pytest.raises(ValueError):
        cache.forget_namespace("shared")
    with pytest.raises(ValueError):
        cache.namespace_dir("../escape")


def test_memory_caches_by_key_not_by_array():
    calls = []

    def heavy(key, X):
        calls.append(key)
        return np.asarray(X).sum()

    fn = cache.get_memory("session-ccc").cache(heavy, ignore=["X"])
    assert fn("k1", np.ones(3)) == 3
    assert fn("k1", np.zeros(3)) == 3  # same key -> from disk
    assert fn("k2", np.zeros(3)) == 0
    assert calls == ["k1", "k2"]


def test_prune_bounds_size():
    fn = cache.get_memory("session-ddd").cache(lambda key: np.ones(50_000))
    for i in range(5):
        fn(f"key{i}")
    before = cache.cache_size_bytes("session-ddd")
    cache.prune(max_bytes=before // 3, max_age_days=30, namespaces=["session-ddd"])
    assert cache.cache_size_bytes("session-ddd") <= before // 3 + 4096


def test_prune_sessions_removes_only_stale_ones():
    old = cache.namespace_dir("session-old")
    new = cache.namespace_dir("session-new")
    (old / "f").write_bytes(b"x")
    (new / "f").write_bytes(b"x")
    past = time.time() - 48 * 3600
    for p in (old / "f", old):
        os.utime(p, (past, past))
    removed = cache.prune_sessions(max_age_hours=24)
    assert "session-old" in removed and not old.exists() and new.exists()


def test_sha256_helpers_match_hashlib(tmp_path):
    p = tmp_path / "f.bin"
    data = os.urandom(10_000)
    p.write_bytes(data)
    assert cache.sha256_file(p, chunk=1000) == hashlib.sha256(data).hexdigest()
    assert cache.sha256_bytes(data) == hashlib.sha256(data).hexdigest()
    assert cache.sha256_texts(["ab", "c"]) != cache.sha256_texts(["a", "bc"])


def test_uploads_count_against_the_disk_limit(monkeypatch, tmp_path):
    from core.errors import BudgetError

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "own-cache"))  # sizes of this cache only

    up = cache.namespace_dir("session-up1") / "uploads"
    up.mkdir()
    (up / "a.npy").write_bytes(b"x" * 300_000)
    fn = cache.get_memory("session-res").cache(lambda key: np.ones(50_000))
    for i in range(4):
        fn(f"k{i}")  # ~1.6 MB of results
    monkeypatch.setenv("PLATOSCOPE_CACHE_MB", repr(1.0))  # 1 MB for results + uploads together
    cache.prune()
    assert cache.cache_size_bytes() <= (1 << 20) + 64 * 1024  # results trimmed to leave room for the upload
    assert (up / "a.npy").exists()  # spooled uploads are never trimmed by prune
    with pytest.raises(BudgetError, match=r"upload\.npy.*disk cache \(PLATOSCOPE_CACHE_MB\)"):
        cache.reserve_disk(2 << 20, what="upload.npy")
    cache.reserve_disk(100_000, what="small.npy")  # fits once results are trimmed


def test_ended_sessions_are_swept_after_ttl_plus_grace(monkeypatch, tmp_path):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "own-cache"))  # sweeps nothing of other tests
    live_dir = cache.namespace_dir("session-live")
    ended = cache.namespace_dir("session-ended")
    idle = cache.namespace_dir("session-idle-other-process")
    for d, rid in ((live_dir, "rt-live"), (ended, "rt-ended")):
        (d / "uploads").mkdir()
        (d / "uploads" / "f.npy").write_bytes(b"x" * 1000)
        cache.touch_session(d.name, rid)
    (idle / "f").write_bytes(b"x")
    (idle / ".alive").write_text("999999999 rt-x")  # a process that no longer runs
    past = time.time() - 60
    for d in (live_dir, ended, idle):
        for p in [d, *d.rglob("*")]:
            os.utime(p, (past, past))
    # idle for 60 s: with a TTL + grace of 30 s, the ended session and the dead process's folder go, the
    # session the runtime still knows stays, whatever its idle time
    removed = cache.prune_sessions(max_idle_seconds=30, live={"rt-live"})
    assert set(removed) == {"session-ended", "session-idle-other-process"}
    assert live_dir.exists() and not ended.exists() and not idle.exists()
    assert cache.prune_sessions(max_idle_seconds=3600, live=set()) == []  # within TTL + grace: kept
    cache.touch_session("session-never-created")
    assert not (cache.cache_root() / "session-never-created").exists()  # a heartbeat never creates a folder
