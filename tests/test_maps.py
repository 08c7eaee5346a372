"""The Home map's selection geometry (core.projection.points_in_polygon / nearest_point) and colour coding
(ui.maps), against a naive point-by-point ray casting and hand-worked cases."""
import numpy as np
import pandas as pd
import pytest

from core.projection import nearest_point, points_in_polygon


def _naive_inside(x, y, poly):
    inside = False
    m = len(poly)
    for a in range(m):
        (xa, ya), (xb, yb) = poly[a], poly[a - 1]
        if (ya > y) != (yb > y) and x < xa + (y - ya) * (xb - xa) / (yb - ya):
            inside = not inside
    return inside


def test_square_and_triangle_by_hand():
    pts = np.array([[0.5, 0.5], [1.5, 0.5], [-0.1, 0.2], [0.9, 0.95], [0.2, 0.7]])
    square = [[0, 0], [1, 0], [1, 1], [0, 1]]
    assert points_in_polygon(pts, square).tolist() == [True, False, False, True, True]
    tri = [[0, 0], [1, 0], [0, 1]]                        # below the line x + y = 1
    assert points_in_polygon(pts, tri).tolist() == [False, False, False, False, True]


def test_random_lassos_equal_the_naive_rule(rng):
    P = rng.normal(size=(3000, 2))
    for _ in range(5):
        t = np.sort(rng.uniform(0, 2 * np.pi, 40))
        r = rng.uniform(0.3, 2.0, 40)                      # a star-shaped, non-convex lasso
        poly = np.c_[r * np.cos(t), r * np.sin(t)] + rng.normal(scale=0.3, size=2)
        got = points_in_polygon(P, poly)
        ref = np.array([_naive_inside(x, y, poly) for x, y in P])
        assert np.array_equal(got, ref)
    assert not points_in_polygon(P, [[0, 0], [1, 1]]).any()          # fewer than 3 vertices: nothing


def test_nearest_point_within_a_radius():
    P = np.array([[0.0, 0.0], [1.0, 1.0], [1.05, 1.0]])
    assert nearest_point(P, 1.04, 1.0, 0.1) == 2
    assert nearest_point(P, 5.0, 5.0, 0.1) is None


def test_colour_codes_categories_other_and_numeric():
    from ui.maps import MAX_CATEGORIES, colour_codes

    vals = pd.Series([f"c{i % 30}" for i in range(3000)] + [None])
    codes, palette, legend = colour_codes(vals, "label")
    assert codes.dtype == np.uint8 and len(codes) == 3001
    assert len(legend) == MAX_CATEGORIES + 1 and legend[-1][0].startswith("(other: 6")
    names = [n for n, _ in legend[:-1]]
    assert all(palette[codes[i]] == dict(legend)[vals[i]] for i in range(3000) if vals[i] in names)
    assert codes[-1] == len(palette) - 1                   # missing -> the grey slot
    assert all(c.startswith("#") and len(c) == 7 for c in palette)
    as_text = colour_codes(pd.Series([str(v) for v in np.linspace(0, 1, 100)]), "s")[2]
    assert as_text[0][0] == "s = 0"                        # numbers read from a CSV as text still get a ramp
    num = pd.Series(np.linspace(-1, 1, 500))
    codes, palette, legend = colour_codes(num, "x")
    assert codes[0] == 1 and codes[-1] == 255 and np.all(np.diff(codes.astype(int)) >= 0)


def test_stale_or_foreign_selection_values_are_ignored():
    from ui.maps import canvas_selection

    P = np.array([[0.0, 0.0], [2.0, 2.0]])
    box = {"kind": "box", "polygon": [[-1, -1], [1, -1], [1, 1], [-1, 1]], "data_key": "k1", "seq": 3}
    assert canvas_selection(box, P, "k1").tolist() == [0]
    assert canvas_selection(box, P, "other").tolist() == []                 # another space / projection
    assert canvas_selection({"kind": "point", "x": "bad", "data_key": "k1"}, P, "k1").tolist() == []
    assert canvas_selection("not a dict", P, "k1").tolist() == []


def test_home_uses_the_canvas_map_above_the_plotly_threshold(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.conftest import ROOT

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_PLOTLY_MAX_POINTS", "100")
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "emb.npy", rng.normal(size=(500, 6)).astype(np.float32))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["dataset"] = "server:study"
    at.run()
    assert not at.exception
    assert not at.get("plotly_chart")                     # 500 points > 100: not plotly
    assert any("Draw a lasso" in c.value for c in at.caption)
