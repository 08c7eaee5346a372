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
        expander = page.get_by_text("Upload embeddings", exact=False).first
        if page.locator('[data-testid="stFileUploaderDropzoneInput"]').count() == 0:
            expander.click()
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
