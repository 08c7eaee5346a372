"""Real-browser test of Similarity's SVG heatmap component (ui/svgchart_frontend): it paints every cell with its
value, hovering a cell shows its text (names with markup stay text), and a click on a cell picks that pair for the
side-by-side maps. No plotly figure is on the page for the matrix."""
import numpy as np
import pytest

from tests.browser_util import assert_no_traceback, browser_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser


def test_heatmap_paints_hovers_as_text_and_a_click_picks_the_pair(tmp_path):
    require_browser()
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 4))
    for name, w in (("alpha", 6), ("beta", 5), ("<b>gamma", 7)):
        np.save(folder / f"{name}.npy", (z @ rng.normal(size=(4, w)) + rng.normal(size=(300, w))).astype(np.float32))
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server"),
           "PLATOSCOPE_DEMO": "0"}
    with streamlit_server(env) as (url, _), browser_page(height=1600) as page:
        page.goto(f"{url}/similarity?dataset=server:study")
        # the chart is mounted in the page itself (components v2: no iframe)
        page.wait_for_function("() => { const c = document.querySelector('.ps-svgchart'); return !!c && "
                               "c.dataset.svgchartPainted === 'heatmap' && "
                               "!c.querySelector('.ps-svgchart-title').textContent.includes('filling in') }",
                               timeout=180_000)
        frame = page.locator(".ps-svgchart").first
        assert page.locator("iframe[title*='platoscope_svgchart']").count() == 0
        assert frame.locator("rect.cell").count() == 9
        names = frame.locator("svg > g > text").all_text_contents()
        assert "<b>gamma" in names and frame.locator("svg b").count() == 0      # the name as text
        assert "1.00" in names                                                       # a diagonal cell's value
        # hovering the cell (row alpha, column <b>gamma) shows its text, as text
        order = [t for t in names if t in ("alpha", "beta", "<b>gamma")][:3]     # the rows, top to bottom
        i, j = order.index("alpha"), order.index("<b>gamma")
        cell = frame.locator("rect.cell").nth(i * 3 + j)
        cell.hover()
        tip = frame.locator(".ps-svgchart-tip").inner_text()
        assert tip.startswith("alpha vs <b>gamma\nLinear CKA = "), tip
        assert frame.locator(".ps-svgchart-tip *").count() == 0
        screenshot(page, "similarity_heatmap_hover")
        cell.click()
        page.wait_for_function("() => (document.querySelector('[data-testid=\"stMain\"]')?.innerText || '')"
                               ".includes('Cell clicked: alpha vs <b>gamma')", timeout=60_000)
        boxes = page.locator('[data-testid="stSelectbox"]')
        picked = {side: boxes.filter(has_text=side).first.locator("input").input_value(timeout=10_000)
                  for side in ("Left", "Right")}
        assert picked == {"Left": "alpha", "Right": "<b>gamma"}, picked
        assert not page.locator(".main-svg .heatmaplayer").count()                 # no plotly heatmap
        assert_no_traceback(page)
