"""Real-browser test: start the server, upload a small .npz through the file chooser, wait for the map."""
import numpy as np
import pytest

from tests.browser_util import (assert_no_traceback, browser_page, require_browser, screenshot,
                                streamlit_server, wait_idle)

pytestmark = pytest.mark.browser


@pytest.fixture
def small_npz(tmp_path):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16)) * 4
    labels = np.repeat(np.array(["cat", "dog", "owl"]), 40)
    text = np.concatenate([c + rng.normal(size=(40, 16)) for c in centers]).astype(np.float32)
    image = (text @ rng.normal(size=(16, 24))).astype(np.float32)
    path = tmp_path / "toy_embeddings.npz"
    np.savez(path, text=text, image=image, label=labels,
             caption=np.array([f"a photo of a {l} #{i}" for i, l in enumerate(labels)]))
    return path


def test_upload_npz_and_see_the_map(tmp_path, small_npz):
    require_browser()
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server")}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(url)
        wait_idle(page, "home", plot=False)
        screenshot(page, "01_home_start")
        if not page.get_by_role("button", name="Load files").is_visible():
            page.get_by_text("Upload embeddings", exact=False).first.click()
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(small_npz))
        page.get_by_text("toy_embeddings.npz").first.wait_for()
        page.get_by_role("button", name="Load files").click()
        wait_idle(page, "home", plot=True)
        screenshot(page, "02_home_uploaded_map")
        body = page.inner_text("body")
        assert "upload (private)" in body
        assert "120" in body  # items metric
        assert "PCA of 'text'" in body or "PCA of 'image'" in body
        assert page.locator(".main-svg").count() >= 1
        assert_no_traceback(page)


def test_encode_page_with_minilm(tmp_path):
    require_browser()
    csv = tmp_path / "captions.csv"
    csv.write_text("id,caption\n" + "\n".join(f"c{i},a {w} object number {i}" for i, w in
                                             enumerate(["red", "blue", "tall", "round", "small", "wooden"])))
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server")}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(f"{url}/encode")
        wait_idle(page, "encode", plot=False)
        page.locator('[data-testid="stMain"] [data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(csv))
        page.get_by_text("6 captions read from captions.csv").wait_for()
        page.get_by_role("button", name="Encode", exact=True).click()
        page.get_by_text("6 items encoded with minilm").wait_for(timeout=180_000)
        wait_idle(page, "encode", plot=False)
        assert_no_traceback(page)
        screenshot(page, "03_encode_minilm")
        page.get_by_role("button", name="Open as a new dataset").click()
        wait_idle(page, "encode", plot=False)
        page.goto(f"{url}/")  # a new browser session: the encoded dataset (private) is not offered there
        wait_idle(page, "home", plot=True)
        assert "encoded captions" not in page.inner_text("body")


@pytest.mark.slow
def test_tour_of_the_demo(tmp_path):
    """Every view on the built-in demo renders without an error box; screenshots for a human look."""
    require_browser()
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server")}
    views = [("", "home", "home"), ("similarity", "similarity", "similarity"), ("subspace", "subspace", "subspace"),
             ("neighbours", "neighbours", "neighbours"), ("query", "query", "query"),
             ("universe", "universe", "universe"), ("hierarchy", "hierarchy", "hierarchy"),
             ("point_sets", "point-sets", "point_sets")]
    from tests.browser_util import wait_painted
    from tests.conftest import ROOT
    with streamlit_server(env) as (url, _), browser_page() as page:
        for i, (path, marker, file) in enumerate(views):
            if not (ROOT / "pages" / f"{file}.py").exists():
                continue
            page.goto(f"{url}/{path}?dataset=demo")
            # every view paints at once (a plot, or a job's progress box); fits are not waited for here
            wait_painted(page, marker)
            assert_no_traceback(page)
            errors = page.locator('[data-testid="stAlertContentError"]')
            assert errors.count() == 0, errors.first.inner_text()
            screenshot(page, f"10_tour_{i}_{marker}")


def _study(folder, n=20000, seed=0):
    """A server dataset big enough that a 20-seed anchor sweep runs for a while on any machine we test on."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 16)).astype(np.float32)
    for name, w in (("text", 512), ("shape", 384)):
        x = z @ rng.normal(size=(16, w)).astype(np.float32) + rng.normal(size=(n, w)).astype(np.float32)
        np.save(folder / f"{name}.npy", x.astype(np.float32))


def test_job_progress_reattach_and_cancel(tmp_path):
    """A long job shows its progress; leaving the view, coming back and reloading reattach; Cancel stops it."""
    require_browser()
    from urllib.parse import quote

    from tests.browser_util import job_id, wait_painted

    _study(tmp_path / "server" / "study")
    cache = tmp_path / "cache"
    env = {"PLATOSCOPE_CACHE_DIR": str(cache), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server"),
           "PLATOSCOPE_MAX_JOBS": "1"}
    with streamlit_server(env) as (url, _), browser_page() as page:
        page.goto(f"{url}/subspace?dataset=server:study&seeds=20&view={quote('Curve over anchors')}")
        wait_painted(page, "subspace")
        first = job_id(page)
        page.wait_for_function("() => /sweep over anchors|starting|queued/.test("
                               "document.querySelector('[data-testid=\"stProgress\"]')?.innerText || '')")
        assert page.get_by_role("button", name="Cancel").is_visible()
        assert page.get_by_text("elapsed").first.is_visible()
        # the bar jumps to each new value instead of sliding (ui.widgets.PAGE_STYLE: a slide repainted every poll)
        moving = page.evaluate("() => Array.from(document.querySelectorAll('[data-testid=\"stProgress\"] *'))"
                               ".map(e => getComputedStyle(e).transitionDuration).filter(d => d !== '0s')")
        assert moving == [], moving
        # the rest of the page is usable while the job runs: the controls answer
        assert page.get_by_text("Subspace dim k").first.is_visible()
        screenshot(page, "20_job_progress")
        # leave the view (sidebar menu) and come back: the same job, still running
        page.locator('[data-testid="stSidebar"]').get_by_text("Home", exact=True).first.click()
        wait_painted(page, "home")
        page.locator('[data-testid="stSidebar"]').get_by_text("Subspace", exact=True).first.click()
        wait_painted(page, "subspace")
        assert job_id(page) == first
        screenshot(page, "21_job_reattached")
        # a browser reload is a new session: a shared dataset's job is found by its key
        page.reload()
        wait_painted(page, "subspace")
        assert job_id(page) == first
        page.get_by_role("button", name="Cancel").click()
        page.get_by_text("cancelled after").first.wait_for(timeout=120_000)
        assert page.get_by_role("button", name="Run again").is_visible()
        assert_no_traceback(page)
        screenshot(page, "22_job_cancelled")
    results = cache / "shared" / "results"
    import joblib

    saved = [joblib.load(f) for f in results.glob("*")] if results.exists() else []
    # nothing half-written: the only results are the Home map's PCA (a job of its own), no sweep
    assert all(type(v).__name__ == "PCAProjection" for v in saved), [type(v).__name__ for v in saved]
