"""AppTest tests of the home page: uploads, bad input, privacy between sessions, URL state, forget-my-data."""
import io
import pickle

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT

APP = str(ROOT / "app.py")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    (tmp_path / "server").mkdir()
    return tmp_path


def _npz(**arrays) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


def _good_npz(n=60, seed=0) -> bytes:
    rng = np.random.default_rng(seed)
    return _npz(text=rng.normal(size=(n, 8)).astype(np.float32), image=rng.normal(size=(n, 5)).astype(np.float32),
                label=np.array(["a", "b", "c"] * (n // 3)))


def _app() -> AppTest:
    return AppTest.from_file(APP, default_timeout=120).run()


def _upload(at: AppTest, name: str, content: bytes, meta: tuple[str, bytes] | None = None) -> AppTest:
    at.file_uploader[0].upload(name, content)
    if meta is not None:
        at.file_uploader[1].upload(*meta)
    at.run()
    return at.button(key="sb_load").click().run()


def _picker(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Dataset")


def _errors(at: AppTest) -> str:
    return "\n".join(e.value for e in at.error)


def test_home_without_dataset_explains_formats(env, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    at = _app()
    assert not at.exception
    assert any(".safetensors" in m.value for m in at.markdown)
    assert at.button(key="sb_load").disabled


def test_upload_npz_shows_summary_and_map(env):
    at = _upload(_app(), "toy.npz", _good_npz())
    assert not at.exception and not at.error
    assert [m.value for m in at.metric][:2] == ["60", "2"]
    table = at.dataframe[0].value
    assert table["name"].tolist() == ["text", "image"]
    assert table["d"].tolist() == [8, 5]
    assert at.selectbox(key="url__space").value == "text"
    assert at.selectbox(key="url__color").value == "label"
    # the uploader was reset (Streamlit's in-memory copy dropped); the file lives on disk in the session folder
    assert at.file_uploader[0].key == "upl_files_1"
    spooled = list((env / "cache").glob("session-*/uploads/*.npz"))
    assert len(spooled) == 1


@pytest.mark.parametrize("case", ["nan", "pickle", "rows", "zero_variance", "corrupt"])
def test_bad_uploads_show_a_clear_error_and_are_dropped(env, case):
    rng = np.random.default_rng(1)
    if case == "nan":
        x = rng.normal(size=(10, 4)); x[3, 1] = np.nan; x[7, 0] = np.inf
        name, content, expect = "bad.npz", _npz(emb=x), ["bad.npz", "emb", "row 3"]
    elif case == "pickle":
        buf = io.BytesIO(); np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        name, content, expect = "obj.npy", buf.getvalue(), ["obj.npy", "pickle"]
    elif case == "rows":
        name, content, expect = "rows.npz", _npz(a=rng.normal(size=(10, 3)), b=rng.normal(size=(9, 3))), ["rows.npz"]
    elif case == "zero_variance":
        name, content, expect = "flat.npy", _npy(np.ones((10, 3))), ["flat.npy", "variance"]
    else:
        name, content, expect = "broken.npz", _good_npz()[:200], ["broken.npz"]
    at = _upload(_app(), name, content)
    assert not at.exception, at.exception
    msg = _errors(at)
    for word in expect:
        assert word.lower() in msg.lower(), msg
    assert "Traceback" not in msg
    # the refused bytes left Streamlit's memory (a fresh uploader) and the server's disk (no spooled file kept)
    assert at.file_uploader[0].key == "upl_files_1"
    assert not list((env / "cache").glob("session-*/uploads/*.*"))


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_pickled_upload_is_never_executed(env, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    buf = io.BytesIO()
    np.save(buf, np.array([Evil()], dtype=object), allow_pickle=True)
    at = _upload(_app(), "evil.npy", buf.getvalue())
    assert not marker.exists()
    assert "evil.npy" in _errors(at)


def test_metadata_join_and_bad_metadata(env):
    rng = np.random.default_rng(2)
    ids = np.array([f"item{i}" for i in range(12)])
    emb = _npz(id=ids, vec=rng.normal(size=(12, 4)))
    meta = "id,species\n" + "\n".join(f"item{i},{'cat' if i % 2 else 'dog'}" for i in reversed(range(12)))
    at = _upload(_app(), "emb.npz", emb, ("meta.csv", meta.encode()))
    assert not at.error, _errors(at)
    assert "species" in at.selectbox(key="url__color").options
    bad_meta = "id,species\n" + "\n".join(f"item{i},x" for i in range(11)) + "\nitem0,y\n"
    at2 = _upload(_app(), "emb.npz", emb, ("meta.csv", bad_meta.encode()))
    assert "meta.csv" in _errors(at2) and "item0" in _errors(at2)


def test_uploads_are_private_to_their_session(env):
    a = _upload(_app(), "secret.npz", _good_npz())
    assert _picker(a).value == "upload:secret"
    b = _app()
    assert all(not o.startswith("upload:") for o in (_picker(b).options
                                                      if b.selectbox else []))
    # a shared link to an upload does not open it in another session
    c = AppTest.from_file(APP, default_timeout=120)
    c.query_params["dataset"] = "upload:secret"
    c.run()
    assert any("private" in w.value for w in c.warning)
    assert all(m.value != "upload (private)" for m in c.metric)  # nothing of the other session's data
    assert all(not o.startswith("upload:") for o in _picker(c).options)


def test_forget_my_data_removes_files_and_state(env):
    at = _upload(_app(), "toy.npz", _good_npz())
    assert list((env / "cache").glob("session-*/uploads/*"))
    at.button(key="sb_forget").click().run()
    assert not list((env / "cache").glob("session-*"))
    assert not any(o.startswith("upload:") for o in (_picker(at).options
                                                     if at.selectbox else []))
    assert any("removed" in s.value for s in at.success)


def test_server_dataset_opens_by_url_with_settings(env):
    rng = np.random.default_rng(3)
    folder = env / "server" / "zoo"
    folder.mkdir()
    np.save(folder / "alpha.npy", rng.normal(size=(30, 6)).astype(np.float32))
    np.save(folder / "beta.npy", rng.normal(size=(30, 3)).astype(np.float32))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "server:zoo"
    at.query_params["space"] = "beta"
    at.run()
    assert not at.exception
    assert _picker(at).value == "server:zoo"
    assert at.selectbox(key="url__space").value == "beta"
    assert at.query_params["dataset"] == ["server:zoo"] or at.query_params["dataset"] == "server:zoo"


def test_home_opens_on_the_demo_without_upload(env):
    from core.demo import DEMO_LINE, load_demo

    demo = load_demo()
    at = _app()
    assert not at.exception, at.exception
    assert _picker(at).value == "demo"
    assert at.metric[0].value == f"{demo.n:,}"
    assert any(c.value == DEMO_LINE for c in at.caption)
    assert set(at.dataframe[0].value["name"]) == set(demo.space_names)


def test_session_memory_budget_gives_a_clear_message(env, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_SESSION_BUDGET_MB", "0.01")  # 10 KB of what cannot be memory-mapped
    buf = io.BytesIO()
    rng = np.random.default_rng(5)
    np.savez_compressed(buf, big=rng.normal(size=(400, 16)))  # compressed members are read into RAM (51 KB)
    at = _upload(_app(), "packed.npz", buf.getvalue())
    assert not at.exception
    msg = _errors(at)
    assert "budget" in msg and "memory-mapped" in msg
    # a memory-mapped .npy of the same size does not count against the budget
    at2 = _upload(_app(), "plain.npy", _npy(rng.normal(size=(400, 16))))
    assert not at2.error, _errors(at2)


def test_home_pca_map_is_a_job_shared_with_the_similarity_maps(env, monkeypatch):
    """The map's PCA fit runs as a background job; the map equals sklearn's PCA (up to sign); the Similarity
    view's side-by-side maps reuse the fit of a space already mapped on Home (one fit per space)."""
    import json

    from sklearn.decomposition import PCA

    from tests.app_jobs import finish_jobs
    from ui import cached

    fits = []
    real = cached.pca_fit
    monkeypatch.setattr(cached, "pca_fit", lambda ds, space: fits.append(space) or real(ds, space))
    rng = np.random.default_rng(11)
    folder = env / "server" / "maps"
    folder.mkdir()
    alpha = (rng.normal(size=(40, 5)) * [5, 3, 1, 0.5, 0.1]).astype(np.float32)
    np.save(folder / "alpha.npy", alpha)
    np.save(folder / "beta.npy", rng.normal(size=(40, 4)).astype(np.float32))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "server:maps"
    at.query_params["space"] = "alpha"
    finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert fits == ["alpha"]
    spec = json.loads(at.get("plotly_chart")[0].proto.spec)
    trace = spec["data"][0]
    xy = np.column_stack([_numbers(trace["x"]), _numbers(trace["y"])])
    rows = np.asarray(_numbers(trace["customdata"]), dtype=int)
    ref = PCA(2).fit(alpha.astype(np.float64)).transform(alpha.astype(np.float64))[rows]
    signs = np.sign((xy * ref).sum(0))
    assert np.allclose(xy, ref * signs, atol=1e-4)
    at.switch_page("pages/similarity.py")
    finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert sorted(fits) == ["alpha", "beta"]          # alpha's fit came from the job result, beta's is new
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("PCA of 'alpha'" in t for t in titles) and any("PCA of 'beta'" in t for t in titles)


def _numbers(value):
    if isinstance(value, dict):   # numpy arrays arrive base64-encoded
        import base64

        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=value["dtype"]).tolist()
    return list(value)


def test_home_draws_the_map_controls_before_computing_the_summary(env, monkeypatch):
    """The summary (seconds on a real study) is computed after the map's controls are sent: its table fills a
    placeholder above them, so the controls are on screen first; the page reads the same as before."""
    import streamlit as st

    from ui import cached

    seen = []
    real = cached.summary_table
    monkeypatch.setattr(cached, "summary_table",
                        lambda fp, ds: seen.append({k for k in ("url__space", "url__color", "url__proj")
                                                    if k in st.session_state}) or real(fp, ds))
    rng = np.random.default_rng(21)
    folder = env / "server" / "order"
    folder.mkdir()
    np.save(folder / "alpha.npy", rng.normal(size=(30, 4)).astype(np.float32))
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "server:order"
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert seen and seen[0] == {"url__space", "url__color", "url__proj"}
    headers = [h.value for h in at.subheader]
    assert headers[:2] == ["Spaces", "Map"]                      # the layout is unchanged: the table comes first
    assert at.dataframe[0].value["name"].tolist() == ["alpha"]


def test_every_script_run_of_the_app_is_foreground_work_for_the_job_runner(env, monkeypatch):
    """app.py runs each page inside ui.jobs.foreground(): background jobs (GCPA training) hold still meanwhile
    (core.jobs, tested in tests/test_jobs.py); the count is back to zero after the run."""
    import contextlib

    from ui import jobs as ui_jobs

    r = ui_jobs.runner()
    real, inside = r.foreground, []

    @contextlib.contextmanager
    def spy():
        with real():
            inside.append(r._foreground)
            yield

    monkeypatch.setattr(r, "foreground", spy)
    at = _app()
    assert not at.exception and inside == [1] and r._foreground == 0 and r._foreground_idle.is_set()
    # (AppTest's later runs execute the page it resolved, not app.py; the server runs app.py every time)
