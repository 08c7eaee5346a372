"""What the server keeps of a session's uploads, counted in objects (not RSS): repeated uploads in one session hold
one dataset; an ended session's state is emptied by the sweeper (ui.forget.forget_ended_sessions) even while
Streamlit still holds the ended session's object, and no other session loses anything.

bench/bench_upload_memory.py measures the same on a real server and browser (RSS, heap, live objects)."""
import gc
import io
import weakref

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_jobs import finish_jobs
from tests.conftest import ROOT

APP = str(ROOT / "app.py")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    (tmp_path / "server").mkdir()
    return tmp_path


def _npz(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    # compressed: read into RAM (charged to the session's budget), not memory-mapped
    np.savez_compressed(buf, text=rng.normal(size=(90, 8)).astype(np.float32),
                        image=rng.normal(size=(90, 6)).astype(np.float32), label=np.array(["a", "b", "c"] * 30))
    return buf.getvalue()


def _upload(at: AppTest, name: str, content: bytes) -> AppTest:
    at.file_uploader[0].set_value([(name, content, "application/octet-stream")]).run()
    at.button(key="sb_load").click().run()
    finish_jobs(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _session(seed: int, name: str) -> AppTest:
    return _upload(AppTest.from_file(APP, default_timeout=180).run(), name, _npz(seed))


def _cache_entries(cached_func) -> set:
    inner = cached_func.__wrapped__
    return set(inner._info.get_function_cache(inner._function_key).storage._mem_cache.keys())  # noqa: SLF001


def _runtime_id(at: AppTest) -> str:
    """The runtime id the sweeper knows this session by (AppTest gives every session the same one: make it
    unique, as Streamlit's runtime does)."""
    from ui import data

    ns = f"session-{at.session_state['platoscope_sid']}"
    handle = data._SESSIONS[ns]()  # noqa: SLF001
    if handle.runtime_id == "test session id":
        handle.runtime_id = f"runtime-{ns}"
    return handle.runtime_id


def _held(namespace: str) -> int:
    from core import budget

    return sum(r.nbytes for r in list(budget.LEDGER._live) if r.owner == namespace)  # noqa: SLF001


def test_repeated_uploads_of_one_file_hold_one_dataset(env):
    at = AppTest.from_file(APP, default_timeout=180).run()
    content = _npz(0)
    alive = []
    for _ in range(4):
        _upload(at, "same.npz", content)
        alive.append(weakref.ref(at.session_state["platoscope_uploads"]["same"]))
    gc.collect()
    assert sum(r() is not None for r in alive) == 1 and alive[-1]() is not None
    assert list(at.session_state["platoscope_uploads"]) == ["same"]
    assert len(list((env / "cache").glob("session-*/uploads/*"))) == 1          # one spooled copy
    assert len(at.session_state["platoscope_cache_calls"]) <= 3                  # same entries, not one per upload


def test_an_ended_session_is_emptied_and_others_keep_theirs(env, monkeypatch):
    from core import cache as core_cache
    from ui import cached, data, forget

    a = _session(1, "alpha.npz")
    b = _session(2, "beta.npz")
    ns_a = f"session-{a.session_state['platoscope_sid']}"
    ns_b = f"session-{b.session_state['platoscope_sid']}"
    ds_a = weakref.ref(a.session_state["platoscope_uploads"]["alpha"])
    ds_b = b.session_state["platoscope_uploads"]["beta"]
    assert _held(ns_a) > 0 and _held(ns_b) > 0                 # both charged to the server-wide budget
    summaries = _cache_entries(cached.summary_table)
    # every session this process registered (other tests' too) counts as served, unless the test ends it
    id_a, id_b = _runtime_id(a), _runtime_id(b)
    live = {id_a, id_b} | {ref().runtime_id for ref in list(data._SESSIONS.values()) if ref() is not None}  # noqa: SLF001

    # both still served (connected, or within their TTL): nothing is taken, whatever the idle time
    assert forget.forget_ended_sessions(live, 0.0) == []
    assert forget.forget_ended_sessions(None, 0.0) == []       # no runtime to ask: nothing either
    # A ended (the runtime no longer lists it) but is within the grace: kept
    assert forget.forget_ended_sessions(live - {id_a}, 3600.0) == []
    assert ds_a() is not None

    # the sweeper's pass (ui.forget.sweep_once) asks the runtime which sessions it still serves
    monkeypatch.setattr(data, "_live_runtime_sessions", lambda: (live - {id_a}) | {"test session id"})
    monkeypatch.setattr(data, "session_ttl_seconds", lambda: 0.0)
    forget.sweep_once()
    # A's state is empty although the AppTest (like Streamlit's store of ended sessions) still holds it
    assert "platoscope_uploads" not in a.session_state and "platoscope_cache_calls" not in a.session_state
    gc.collect()
    assert ds_a() is None                                      # the upload itself is gone from memory
    assert _held(ns_a) == 0                                    # and from the server-wide budget
    after = _cache_entries(cached.summary_table)
    assert summaries - after and after                         # A's cache entries went, B's stayed
    assert forget.forget_ended_sessions(live - {id_a}, 0.0) == []   # once
    assert (core_cache.cache_root() / ns_b / "uploads").is_dir()   # (A's folder: core.cache.prune_sessions)

    # B: untouched, and served from the cache it had
    assert b.session_state["platoscope_uploads"]["beta"] is ds_b and _held(ns_b) > 0
    b.run()
    assert not b.exception and "beta" in b.session_state["platoscope_uploads"]
    assert _cache_entries(cached.summary_table) == after
    assert ns_b in data._SESSIONS  # noqa: SLF001
