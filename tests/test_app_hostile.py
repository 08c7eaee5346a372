"""User-written markup shown as text (AppTest and a real browser), and Forget my data with two sessions."""
import re
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from hostile import markup_payloads, write_markup_dataset
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


# -- the escaping helper --------------------------------------------------------------------------------------------
def test_md_leaves_no_markup():
    from markdown_it import MarkdownIt

    from ui.text import md

    parser = MarkdownIt("commonmark").enable(["table", "strikethrough"])
    for text in list(markup_payloads().values()) + ["# h", "- item", "1. item", "> quote", "www.example.org",
                                                   "mail@example.org", ":smile: :material/home:", "a\\[b](c)",
                                                   "line\nbreak", "x_y_z PLATOSCOPE_MAX_FILE_MB (row 3)"]:
        tokens = [t for t in parser.parseInline(md(text))[0].children or []]
        assert all(t.type == "text" or t.type == "softbreak" for t in tokens), (text, [t.type for t in tokens])
        block = parser.parse(md(text))
        assert [t.type for t in block] == ["paragraph_open", "inline", "paragraph_close"], (text, block)
    # GFM autolink literals (not in commonmark): the scheme's '//' and 'www.' are broken up
    assert "http://" not in md("see http://127.0.0.1:9/x") and "www." not in md("www.example.org")
    assert "l@" not in md("mail@example.org").replace("\\", "") and "mailto:" not in md("mailto:a")
    assert md("x_y_z PLATOSCOPE_MAX_FILE_MB (row 3) a.npz -> b") == "x_y_z PLATOSCOPE_MAX_FILE_MB (row 3) a.npz -> b"


def test_safe_figure_escapes_data_strings_and_keeps_templates():
    import plotly.graph_objects as go

    from ui.text import safe_figure, unplot

    fig = go.Figure(go.Heatmap(z=[[1, 2]], x=["<b>sp</b>", "b"], y=["c"], customdata=[["<br>p = 1", ""]],
                               hovertemplate="%{y} vs %{x}<br>%{customdata}<extra></extra>"))
    fig.add_trace(go.Scatter(x=[0], y=[1], text=['<img src="http://127.0.0.1:9/t.png">'], name="<i>label</i>"))
    fig.update_layout(title="<b>t</b>", legend_title_text="[x](y)")
    safe_figure(fig)
    safe_figure(fig)  # idempotent
    assert fig.data[0].x == ("&lt;b&gt;sp&lt;/b&gt;", "b")
    assert unplot(fig.data[0].x[0]) == "<b>sp</b>"
    assert fig.data[0].customdata[0][0] == "<br>p = 1" and "<br>" in fig.data[0].hovertemplate
    assert fig.data[1].text == ("&lt;img src=\"http://127.0.0.1:9/t.png\"&gt;",)
    assert fig.data[1].name == "&lt;i&gt;label&lt;/i&gt;" and fig.layout.title.text == "&lt;b&gt;t&lt;/b&gt;"


# -- the app ---------------------------------------------------------------------------------------------------------
def _markdown_sources(at) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "info", "warning", "success", "error", "subheader", "title"):
        out += [e.value for e in getattr(at, kind)]
    return out


def _assert_no_raw_payload(at, payloads):
    for src in _markdown_sources(at):
        for p in payloads.values():
            assert p not in src, (p, src)
        assert not re.search(r"(?<!\\)!?(?<!\\)\[[^\]]*(?<!\\)\]\(", src), src  # no unescaped link / image
        assert not re.search(r"(?<!\\)<(b|img|i)\b", src), src


def test_markup_in_captions_labels_ids_and_space_names_is_text(env):
    payloads = markup_payloads("http://127.0.0.1:9/track.png")
    write_markup_dataset(env / "server" / "markup.npz", "http://127.0.0.1:9/track.png")
    for page in ("home.py", "neighbours.py", "similarity.py", "query.py", "subspace.py", "universe.py"):
        at = AppTest.from_file(APP, default_timeout=300)
        at.query_params["dataset"] = "server:markup"
        at.run()
        if page != "home.py":
            at.switch_page(f"pages/{page}")
            at.run()
        assert not at.exception, (page, at.exception)
        _assert_no_raw_payload(at, payloads)


def test_markup_in_a_file_name_is_text(env):
    name = "![f](track.png) _x_.npz"
    rng = np.random.default_rng(0)
    np.save(env / "plain.npy", rng.normal(size=(10, 3)))
    at = AppTest.from_file(APP, default_timeout=120).run()
    data = (env / "plain.npy").read_bytes()
    at.file_uploader[0].set_value([(name.replace(".npz", ".npy"), data, "application/octet-stream")]).run()
    at.button(key="sb_load").click().run()
    assert not at.exception
    _assert_no_raw_payload(at, {"f": "![f](track.png)"})
    # a refused file's name in the error message is text too
    at.file_uploader[0].set_value([("![g](track.png).npy", b"not an array", "application/octet-stream")]).run()
    at.button(key="sb_load").click().run()
    errors = "\n".join(e.value for e in at.error)
    assert "track.png" in errors and "![g]" not in errors


# -- Forget my data, two sessions -------------------------------------------------------------------------------------
def _npz_bytes(seed: int) -> bytes:
    import io

    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    np.savez(buf, text=rng.normal(size=(40, 6)).astype(np.float32), image=rng.normal(size=(40, 4)).astype(np.float32),
             label=np.array(["a", "b"] * 20))
    return buf.getvalue()


def _cache_entries(cached_func) -> set:
    inner = cached_func.__wrapped__
    return set(inner._info.get_function_cache(inner._function_key).storage._mem_cache.keys())  # noqa: SLF001


def _uploaded(seed: int, name: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.file_uploader[0].set_value([(name, _npz_bytes(seed), "application/octet-stream")]).run()
    at.button(key="sb_load").click().run()
    finish_jobs(at)   # the Home map's PCA fit runs as a job
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def test_forget_my_data_forgets_this_session_only(env):
    from core import cache as core_cache
    from ui import cached

    a = _uploaded(1, "alpha.npz")
    b = _uploaded(2, "beta.npz")
    ds_a = a.session_state["platoscope_uploads"]["alpha"]
    ds_b = b.session_state["platoscope_uploads"]["beta"]
    ns_a = f"session-{a.session_state['platoscope_sid']}"
    ns_b = f"session-{b.session_state['platoscope_sid']}"
    # both sessions' summaries and maps are in the server-wide in-memory caches; each session folder on disk
    summaries, maps = _cache_entries(cached.summary_table), _cache_entries(cached.pca_map)
    calls_a = list(a.session_state["platoscope_cache_calls"])
    calls_b = list(b.session_state["platoscope_cache_calls"])
    assert calls_a and calls_b and len(summaries) >= 2 and len(maps) >= 2
    # a result of A in its session store, and one keyed by A's fingerprint in the shared store
    key_a = cached.result_key("test", ds_a.fingerprint)
    a.session_state["platoscope_results"] = cached._OrderedDict({key_a: "A's result"})  # noqa: SLF001
    a.session_state["platoscope_upload_keys"] = {key_a}
    cached._shared_results()[key_a] = "A's shared result"  # noqa: SLF001
    key_b = cached.result_key("test", ds_b.fingerprint)
    cached._shared_results()[key_b] = "B's shared result"  # noqa: SLF001
    assert (core_cache.cache_root() / ns_a / "uploads").is_dir() and (core_cache.cache_root() / ns_b).is_dir()

    a.button(key="sb_forget").click().run()
    assert not a.exception
    # A: spooled files, session folder, session results, shared entries, in-memory cache entries - gone
    assert not (core_cache.cache_root() / ns_a).exists()
    assert "platoscope_results" not in a.session_state and not a.session_state["platoscope_uploads"]
    assert key_a not in cached._shared_results()  # noqa: SLF001
    after_s, after_m = _cache_entries(cached.summary_table), _cache_entries(cached.pca_map)
    assert len(summaries - after_s) >= 1 and len(maps - after_m) >= 1
    # B: untouched (its folder, its uploads, its shared result, its cache entries)
    assert (core_cache.cache_root() / ns_b / "uploads").is_dir()
    assert key_b in cached._shared_results()  # noqa: SLF001
    assert len(after_s) == len(summaries) - len(summaries - after_s) and after_s
    b.run()
    assert not b.exception and "beta" in b.session_state["platoscope_uploads"]
    assert _cache_entries(cached.summary_table) == after_s  # B's summary came from the cache, not recomputed
    # after Forget A holds nothing: no Forget button, and the Encode page does not re-create its folder
    assert not [x for x in a.button if x.key == "sb_forget"]
    a.switch_page("pages/encode.py")
    a.run()
    assert not (core_cache.cache_root() / ns_a).exists()


def test_forget_button_when_only_the_encode_page_was_used(env):
    at = AppTest.from_file(APP, default_timeout=180).run()
    at.session_state["enc_result"] = {"res": {"ids": [], "arrays": {}, "skipped_images": [], "dropped_rows": []}}
    at.run()
    assert [x for x in at.button if x.key == "sb_forget"]
    at.button(key="sb_forget").click().run()
    assert "enc_result" not in at.session_state


# -- the browser: the DOM holds the payloads as text, and no request goes to the payload's URL ----------------------
@pytest.mark.browser
def test_browser_shows_markup_as_text_and_fetches_nothing(tmp_path):
    from tests.browser_util import SCREENSHOTS, browser_page, require_browser, streamlit_server, wait_idle

    require_browser()
    server = tmp_path / "server"
    server.mkdir()
    url_payload = "http://127.0.0.1:9/track.png"
    written = write_markup_dataset(server / "markup.npz", url_payload)
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(server), "PLATOSCOPE_DEMO": "0"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        requests = []
        page.on("request", lambda r: requests.append(r.url))
        page.goto(f"{url}/?dataset=server:markup&color=label")
        wait_idle(page, "home")
        page.screenshot(path=str(SCREENSHOTS / "hostile-home.png"))
        legend = page.eval_on_selector_all(".legendtext", "els => els.map(e => e.textContent)")
        assert written["payloads"]["html_img"] in legend, legend  # the label, as text (not an image tag)
        assert page.eval_on_selector_all(".legend img, .legend image, .legend b", "els => els.length") == 0
        page.goto(f"{url}/neighbours?dataset=server:markup")
        wait_idle(page, "neighbours", plot=False)
        page.wait_for_timeout(1500)
        page.screenshot(path=str(SCREENSHOTS / "hostile-neighbours.png"), full_page=True)
        text = page.inner_text('[data-testid="stMain"]') if page.query_selector('[data-testid="stMain"]') \
            else page.inner_text("body")
        text = text.replace("\u2060", "")  # ui.text.md's invisible word joiner inside 'http://' (no autolink)
        assert written["payloads"]["image"] in text or written["payloads"]["html_img"] in text \
            or written["payloads"]["link"] in text, text[:2000]
        # no element points at the payload (page links carry the URL-encoded settings in their query: not a target)
        to_payload = ("els => els.filter(e => { const v = e.src || e.href || e.getAttribute('xlink:href') || '';"
                      " if (!v) return false; const u = new URL(v, location.href);"
                      " return u.host !== location.host || u.pathname.endsWith('track.png'); })"
                      ".map(e => e.outerHTML.slice(0, 200))")
        assert page.eval_on_selector_all("img, a, image, source, link:not([rel~='icon'])", to_payload) == []
    assert not [r for r in requests if "track.png" in r or r.startswith("http://127.0.0.1:9")], requests


def test_generated_downloads_are_served_once():
    from streamlit.runtime.media_file_manager import MediaFileManager
    from streamlit.runtime.media_file_storage import MediaFileStorageError
    from streamlit.runtime.memory_media_file_storage import MemoryMediaFileStorage

    from ui import private_downloads

    assert private_downloads.install() and private_downloads.install()  # idempotent
    storage = MemoryMediaFileStorage("/media")
    mgr = MediaFileManager(storage)
    file_id = mgr.add_deferred(lambda: b"id,score\nsecret,1\n", "text/csv", "coords", file_name="export.csv")
    url = mgr.execute_deferred(file_id)
    name = url.rsplit("/", 1)[-1]
    assert storage.get_file(name).content == b"id,score\nsecret,1\n"  # the clicking browser's fetch
    with pytest.raises(MediaFileStorageError):
        storage.get_file(name)  # the same link, fetched again (e.g. from another browser)
    again = mgr.execute_deferred(file_id)  # a new click makes it again
    assert storage.get_file(again.rsplit("/", 1)[-1]).content.startswith(b"id,score")


def test_shared_result_is_computed_once_for_concurrent_first_requests():
    import threading

    from ui import cached

    key = cached.result_key("test-lock", np.random.default_rng().integers(1 << 60))
    calls, results = [], []
    started = threading.Event()

    def compute(progress):
        calls.append(1)
        started.set()
        release.wait(30)
        return {"value": 42}

    release = threading.Event()
    threads = [threading.Thread(target=lambda: results.append(cached.computed("shared", key, "x", compute)))
               for _ in range(3)]
    threads[0].start()
    assert started.wait(30)
    for t in threads[1:]:
        t.start()
    release.set()
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and len(results) == 3 and all(r == {"value": 42} for r in results)



def test_result_key_locks_are_dropped_when_no_one_holds_or_waits_for_them():
    """ui.cached keeps a lock per result key only while it is in use: after many computed results the table is
    back to what it was, and a lock with a holder and a waiter stays (one lock per key) until both are done."""
    import threading

    from ui import cached

    tag = np.random.default_rng().integers(1 << 60)
    keys = [cached.result_key("test-lock-prune", tag, i) for i in range(20)]
    for i, key in enumerate(keys):
        assert cached.computed("shared", key, "x", lambda progress, i=i: {"value": i}) == {"value": i}
    assert not set(keys) & set(cached._LOCKS)           # noqa: SLF001 - the table itself is what is tested

    key = cached.result_key("test-lock-prune-held", tag)
    held, release, waiting, third_waits = threading.Event(), threading.Event(), threading.Event(), threading.Event()
    inside, order = [], []

    def holder():
        with cached.key_locked(key):
            inside.append("a")
            held.set()
            release.wait(30)
            inside.remove("a")
            order.append(("a out", len(inside)))

    def waiter(name, signal):
        class Waiting:
            def __enter__(self):
                signal.set()

            def __exit__(self, *exc):
                return False

        with cached.key_locked(key, Waiting):
            order.append((f"{name} in", len(inside)))
            inside.append(name)
            if name == "b":
                third_waits.wait(30)             # c now waits for b: the entry must still be the same lock
            inside.remove(name)

    a = threading.Thread(target=holder)
    a.start()
    assert held.wait(30)
    b = threading.Thread(target=waiter, args=("b", waiting))
    b.start()
    assert waiting.wait(30)
    assert key in cached._LOCKS and cached._LOCKS[key].users == 2     # noqa: SLF001 - held and awaited: kept
    c = threading.Thread(target=waiter, args=("c", third_waits))
    c.start()
    release.set()
    for t in (a, b, c):
        t.join(30)
    assert not any(t.is_alive() for t in (a, b, c))
    # nobody was ever inside with someone else, and c waited (the lock it got was b's, not a fresh one)
    assert all(n == 0 for _, n in order) and third_waits.is_set() and [o for o, _ in order][0] == "a out"
    assert key not in cached._LOCKS                   # noqa: SLF001


def test_upload_limit_applies_before_the_file_is_read(env, monkeypatch):
    from streamlit import config

    monkeypatch.setenv("PLATOSCOPE_MAX_FILE_MB", "3")
    before = config.get_option("server.maxUploadSize")
    try:
        at = AppTest.from_file(APP, default_timeout=120).run()
        assert config.get_option("server.maxUploadSize") == 3  # the server refuses bigger uploads mid-stream
        assert at.file_uploader[0].proto.max_upload_size_mb == 3  # and the browser before sending them
    finally:
        config.set_option("server.maxUploadSize", before)
