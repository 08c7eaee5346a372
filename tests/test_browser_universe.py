"""Real-browser test of the Universe view's SVG charts (ui/svgchart_frontend): one heatmap per method with every
cell painted, hover texts as text (names with markup stay text), the mean / worst bars with the dashed chance line;
no plotly chart on the retrieval view."""
import json
from urllib.parse import quote

import numpy as np
import pytest

from tests.browser_util import assert_no_traceback, browser_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser


def test_universe_heatmaps_and_bars_are_svg_with_text_hovers(tmp_path):
    require_browser()
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(200, 4))
    for name, w in (("alpha", 6), ("beta", 5), ("<b>gamma", 7)):
        np.save(folder / f"{name}.npy", (z @ rng.normal(size=(4, w)) + rng.normal(size=(200, w))).astype(np.float32))
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server"),
           "PLATOSCOPE_DEMO": "0"}
    spaces, methods = quote(json.dumps(["alpha", "beta", "<b>gamma"])), quote(json.dumps(["pw", "gpa", "gcca"]))
    with streamlit_server(env) as (url, _), browser_page(height=2200) as page:
        page.goto(f"{url}/universe?dataset=server:study&spaces={spaces}&methods={methods}")
        # the charts are mounted in the page itself (components v2: no iframe)
        page.wait_for_function("() => document.querySelectorAll('.ps-svgchart[data-svgchart-painted]').length >= 4",
                               timeout=240_000)
        frames = [page.locator(".ps-svgchart").nth(k) for k in range(page.locator(".ps-svgchart").count())]
        kinds = [f.get_attribute("data-svgchart-painted") for f in frames]
        assert kinds == ["heatmap", "heatmap", "heatmap", "bars"], kinds
        gpa = frames[1]
        assert gpa.locator(".ps-svgchart-title").inner_text() == "GPA"
        assert gpa.locator("rect.cell").count() == 9
        names = gpa.locator("svg > g > text").all_text_contents()
        assert "<b>gamma" in names and gpa.locator("svg b").count() == 0        # the name as text
        order = [t for t in names if t in ("alpha", "beta", "<b>gamma")][:3]    # the rows, top to bottom
        i, j = order.index("alpha"), order.index("<b>gamma")
        gpa.locator("rect.cell").nth(i * 3 + j).hover()
        tip = gpa.locator(".ps-svgchart-tip").inner_text()
        assert tip.startswith("alpha vs <b>gamma\nHits@1 = ") and tip.endswith("GPA: alpha -> <b>gamma"), tip
        assert gpa.locator(".ps-svgchart-tip *").count() == 0
        bars = frames[3]
        assert bars.locator("rect.bar").count() == 6                            # mean and worst, 3 methods
        assert bars.locator("line.hline").count() == 1
        assert any(t.startswith("chance ") for t in bars.locator("svg text").all_text_contents())
        bars.locator("rect.bar").nth(3).hover()                                  # the worst series' first bar
        assert "\nworst: " in bars.locator(".ps-svgchart-tip").inner_text()
        screenshot(page, "universe_svg_charts")
        assert page.locator(".js-plotly-plot").count() == 0                     # no plotly chart on this view
        assert_no_traceback(page)
