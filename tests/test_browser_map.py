"""Real-browser test of the Home map's canvas component (the renderer of large maps): it paints, hovering a point
shows its text and id (as text), a lasso lists the items the browser highlighted, a click picks one item, and
colouring by another column keeps the view."""
import re

import numpy as np
import pandas as pd
import pytest

from tests.browser_util import assert_no_traceback, browser_page, require_browser, screenshot, streamlit_server

pytestmark = pytest.mark.browser


def test_canvas_map_paints_and_lasso_lists_the_highlighted_items(tmp_path):
    require_browser()
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 5, 6000)
    np.save(folder / "emb.npy", (rng.normal(size=(5, 8))[lab] * 4 + rng.normal(size=(6000, 8))).astype(np.float32))
    pd.DataFrame({"id": [str(i) for i in range(6000)], "label": [f"<b>class {c}</b>" for c in lab],
                  "score": rng.normal(size=6000)}).to_csv(folder / "meta.csv", index=False)
    env = {"PLATOSCOPE_CACHE_DIR": str(tmp_path / "cache"), "PLATOSCOPE_DATA_DIR": str(tmp_path / "server"),
           "PLATOSCOPE_PLOTLY_MAX_POINTS": "1000", "PLATOSCOPE_DEMO": "0"}
    with streamlit_server(env) as (url, _), browser_page(height=1400) as page:
        page.goto(f"{url}/?dataset=server:study")
        # the map is mounted in the page itself (components v2: no iframe)
        page.wait_for_function("() => document.querySelector('.ps-map')?.dataset?.painted === '6000'",
                               timeout=180_000)
        frame = page.locator(".ps-map").first
        assert page.locator("iframe[title*='platoscope_map']").count() == 0
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
        legend = frame.locator(".ps-map-legend").inner_text()
        assert "<b>class 0</b>" in legend                    # user text shown as text, not markup
        box = frame.locator(".ps-map-overlay").bounding_box()
        cx, cy, r = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2, box["height"] * 0.3
        # hovering a point shows its hover text (here the label) and id, as text
        for dx, dy in [(0, 0), (5, 3), (-7, 4), (9, -6), (-4, -9), (12, 12), (-15, 2), (3, 17)]:
            page.mouse.move(cx + dx, cy + dy)
            page.wait_for_timeout(150)
            if (frame.get_attribute("data-hovered") or ""):
                break
        hovered = int(frame.get_attribute("data-hovered"))
        tip = frame.locator(".ps-map-tip").inner_text()
        assert tip.startswith("<b>class ") and f"id: {hovered}" in tip, tip
        # no markup
        assert frame.locator(".ps-map-tip b").count() == 1 and frame.locator(".ps-map-tip b b").count() == 0
        screenshot(page, "home_canvas_map_hover")
        pts = [(cx + r * np.cos(t), cy + r * np.sin(t)) for t in np.linspace(0, 2 * np.pi, 30)]
        page.mouse.move(*pts[0])
        page.mouse.down()
        for p in pts[1:]:
            page.mouse.move(*p, steps=2)
        page.mouse.up()
        line = page.wait_for_selector("text=/selected item\\(s\\)/", timeout=120_000).inner_text()
        server_count = int(line.split()[0].replace(",", ""))
        status = frame.locator(".ps-map-status").inner_text()
        browser_count = int(re.search(r"([\d,]+) selected", status).group(1).replace(",", ""))
        assert 0 < server_count < 6000 and server_count == browser_count   # numpy and JS agree on the lasso
        assert_no_traceback(page)
        screenshot(page, "home_canvas_map_lasso")
        # colour by another column: the points stay where they are, the selection too
        page.get_by_role("combobox", name="Colour by").click()
        page.get_by_role("option", name="score").click()
        page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
        page.wait_for_timeout(1000)
        assert "score = " in frame.locator(".ps-map-legend").inner_text()
        assert page.get_by_text(f"{server_count:,} selected item(s)").count() == 1
        assert_no_traceback(page)
