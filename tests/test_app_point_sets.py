"""AppTest tests of the Point sets page on small planted token-set data."""
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.evaluate import split_anchors_queries
from tests.app_jobs import finish_jobs
from tests.conftest import ROOT

N, T, D = 120, 5, 6


def _planted():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N, D))
    A = (z[:, None, :] + 0.9 * rng.normal(size=(N, T, D))).astype(np.float32)
    B = (z[:, None, :] + 0.9 * rng.normal(size=(N, T + 2, D))).astype(np.float32)
    mask = np.ones((N, T), bool)
    mask[:, -1] = rng.random(N) < 0.5
    return A, B, mask


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEVICE", "cpu")
    folder = tmp_path / "server" / "sets"
    folder.mkdir(parents=True)
    A, B, mask = _planted()
    np.savez(folder / "sets.npz", text_tokens=A, text_tokens_mask=mask, points_3d=B)
    return tmp_path


def _open(params):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:sets"
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    finish_jobs(at.switch_page("pages/point_sets.py").run())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    return at


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def test_point_sets_numbers_match_direct_computation(server):
    at = _open({"kernel": "linear", "train": "false", "queries": "30", "seeds": "2"})
    assert at.selectbox(key="url__a").value == "text_tokens"
    assert at.selectbox(key="url__b").value == "points_3d"
    table = at.dataframe[0].value
    A, B, mask = _planted()
    tops = {"cosine": [], "linear": []}
    for seed in (0, 1):
        _, q = split_anchors_queries(N, N - 30, 30, seed)
        pooled_a = np.stack([A[i][mask[i]].mean(0) for i in q])
        tops["cosine"].append(np.mean(np.argmax(_unit(pooled_a) @ _unit(B[q].mean(1)).T, 1) == np.arange(30)))
        # linear kernel with its linear part normalised: cosine of the means of unit tokens
        set_a = np.stack([_unit(A[i][mask[i]]).mean(0) for i in q])
        tops["linear"].append(np.mean(np.argmax(set_a @ _unit(_unit(B[q]).mean(1)).T, 1) == np.arange(30)))
    for label, key in (("cosine of mean-pooled vectors", "cosine"), ("point set, uniform weights", "linear")):
        cell = table.loc[label, "top-1 (A -> B)"]
        assert float(cell.split(" +- ")[0]) == pytest.approx(np.mean(tops[key]), abs=5e-4)
        assert float(cell.split("chance ")[1].rstrip(")")) == pytest.approx(1 / 30, abs=5e-4)
    assert "point set, learned weights" not in table.index
    charts = at.get("plotly_chart")
    bars = json.loads(charts[0].proto.spec)
    assert [t["name"] for t in bars["data"]][:2] == ["cosine of mean-pooled vectors", "point set, uniform weights"]
    spectra = json.loads(charts[1].proto.spec)
    assert any("d + 1 = 7" in a.get("text", "") for a in spectra["layout"].get("annotations", []))
    assert any("Turn on" in i.value for i in at.info)


def test_point_sets_training_and_item_view(server):
    at = _open({"kernel": "gauss", "D": "256", "train": "true", "epochs": "2", "queries": "20", "seeds": "1"})
    table = at.dataframe[0].value
    assert "point set, learned weights" in table.index
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    types = [t["type"] for c in charts for t in c["data"]]
    assert "scatter3d" in types            # points of B coloured by weight
    bar_titles = [c["layout"]["title"]["text"] for c in charts]
    assert any("learned weight per token" in t for t in bar_titles)
    assert any("Loss per epoch" in t for t in bar_titles)
    assert any("ps-token-weights" in h.proto.body for h in at.get("html"))
    # the width note says no projection was needed (equal widths)
    assert any("Projection: none" in c.value for c in at.caption)


def test_demo_token_sets_are_on_demand_spaces_computed_by_a_job(tmp_path, monkeypatch):
    # the demo's per-point features are a lazy space of the demo Dataset: listed with its token sets, computed by a
    # background job the first time (never in the script thread), then read from the cache
    from core.demo import demo_token_space_files
    from ui.jobs import runner

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEVICE", "cpu")
    (tmp_path / "server").mkdir()
    (points_file,) = demo_token_space_files("pointnet_points")
    assert not points_file.exists()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "demo"
    for k, v in {"a": "point_clouds", "b": "pointnet_points", "kernel": "linear", "train": "false",
                 "queries": "40", "seeds": "1", "k": "3"}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/point_sets.py").run()
    assert not at.exception, at.exception
    options = at.selectbox(key="url__a").options
    assert {"minilm_tokens", "pointnet_points", "point_clouds"} <= set(options)
    labels = [j.label for j in runner().jobs()]
    assert any("token set pointnet_points" in label for label in labels), labels
    finish_jobs(at)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert points_file.exists()
    table = at.dataframe[0].value
    assert "cosine of mean-pooled vectors" in table.index
    assert any("2016 x 256 x 128" in c.value for c in at.caption)
