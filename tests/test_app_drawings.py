"""What the maps send to the browser, and that a drawing is built once per result (ui.maps, ui.cached.drawn).

A second visit or a second browser on a shared dataset must not rebuild a figure (building and escaping a
31,000-point plotly figure took about 0.5 s of every script run), and a large map travels as bytes (float32
coordinates, colour codes, one hover line per point) that the browser shows as text."""
import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_jobs import canvas_maps, finish_jobs
from tests.conftest import ROOT

APP = str(ROOT / "app.py")
N = 500


@pytest.fixture
def study(tmp_path, monkeypatch, request):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_PLOTLY_MAX_POINTS", "100")          # 500 points: the canvas map
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    # data of each test's own (drawings are kept server-wide, keyed on the data's sha256: no other test's match)
    rng = np.random.default_rng(list(request.node.name.encode()))
    X = (rng.normal(size=(N, 6)) * [4, 2, 1, 1, 1, 1]).astype(np.float32)
    np.save(folder / "emb.npy", X)
    np.save(folder / "other.npy", rng.normal(size=(N, 5)).astype(np.float32))
    captions = [f"<b>item</b> {i}\nsecond [line](http://example.invalid)" for i in range(N)]
    labels = [f"class {i % 3}" for i in range(N)]
    pd.DataFrame({"id": [str(i) for i in range(N)], "caption": captions, "label": labels}).to_csv(
        folder / "meta.csv", index=False)
    return {"X": X, "captions": captions}


def _open(page: str | None = None, **params) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.query_params["dataset"] = "server:study"
    for k, v in params.items():
        at.query_params[k] = v
    finish_jobs(at.run())
    if page:
        at.switch_page(page)
        finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    return at


def _canvas_args(at: AppTest) -> list[dict]:
    return canvas_maps(at)


def test_canvas_map_sends_coordinates_colours_and_hover_lines_as_bytes(study):
    from sklearn.decomposition import PCA

    at = _open(space="emb")
    (args,) = _canvas_args(at)
    xy = np.frombuffer(args["coords"], dtype=np.float32).reshape(-1, 2)
    ref = PCA(2).fit(study["X"].astype(np.float64)).transform(study["X"].astype(np.float64))
    signs = np.sign((xy * ref).sum(0))
    assert np.allclose(xy, ref * signs, atol=1e-4)       # every row, in order (500 <= the map's cap)
    lines = args["hover"].decode("utf-8").split("\n")
    assert len(lines) == N
    ident, text = lines[7].split("\x1f")
    # the caption's line break became a space; markup characters are sent as they are (the browser sets them as
    # text), nothing is escaped or dropped
    assert ident == "7" and text == study["captions"][7].replace("\n", " ")
    codes = np.frombuffer(args["codes"], dtype=np.uint8)
    names = [name for name, _ in args["legend"]]
    assert names == ["class 0", "class 1", "class 2"]
    assert [names[c] for c in codes[:6]] == ["class 0", "class 1", "class 2"] * 2
    assert args["select"] is True


def test_a_second_session_draws_the_kept_drawing_without_rebuilding(study, monkeypatch):
    from ui import maps

    builds = []
    real = maps._canvas_payload
    monkeypatch.setattr(maps, "_canvas_payload", lambda *a, **k: builds.append(1) or real(*a, **k))
    first = _canvas_args(_open(space="emb"))
    assert len(builds) == 1
    second = _canvas_args(_open(space="emb"))          # a new session (another browser) on the same dataset
    assert len(builds) == 1 and second == first
    _open(space="emb", color="(none)")                 # another drawing option: a drawing of its own
    assert len(builds) == 2


def test_similarity_side_maps_are_pan_only_canvases_with_a_sample_note(study, monkeypatch):
    import ui.maps

    monkeypatch.setattr(ui.maps, "PLOTLY_MAX_POINTS", 100)
    at = _open("pages/similarity.py")
    side = _canvas_args(at)                                     # (the heatmap is ui.svgchart's, not listed here)
    assert len(side) == 2 and all(a["select"] is False and a["legend"] == [] for a in side)
    assert {a["title"] for a in side} == {"PCA of 'emb'", "PCA of 'other'"}   # 500 of 500 rows: no sample note
    assert all(len(a["hover"].decode().split("\n")) == N for a in side)


def test_hover_bytes_one_line_per_row_in_row_order():
    from ui.maps import hover_bytes

    ids = np.array(["a", "b\nc", "d"], dtype=object)
    texts = ["x\x1fy", "two\r\nlines", "<i>z</i>"]
    got = hover_bytes(ids, texts, np.array([2, 0, 1])).decode().split("\n")
    assert got == ["d\x1f<i>z</i>", "a\x1fx y", "b c\x1ftwo  lines"]
