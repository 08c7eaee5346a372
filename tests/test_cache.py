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
