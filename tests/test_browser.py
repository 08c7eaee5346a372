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
    from tests.conftest import ROOT
    with streamlit_server(env) as (url, _), browser_page() as page:
        for i, (path, marker, file) in enumerate(views):
            if not (ROOT / "pages" / f"{file}.py").exists():
                continue
            page.goto(f"{url}/{path}?dataset=demo")
            wait_idle(page, marker, plot=file != "query", timeout=300_000)  # the Query page waits for a query
            assert_no_traceback(page)
            errors = page.locator('[data-testid="stAlertContentError"]')
            assert errors.count() == 0, errors.first.inner_text()
            screenshot(page, f"10_tour_{i}_{marker}")
