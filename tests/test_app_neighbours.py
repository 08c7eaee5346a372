"""AppTest tests of the Neighbours page: a planted server dataset with point clouds, and one without geometry."""
import json

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist
from streamlit.testing.v1 import AppTest

from core.geometry import geometry_sample, subsample_clouds
from tests.app_jobs import canvas_maps, finish_jobs
from tests.conftest import ROOT

N = 90


def _kd_chamfer(a, b):
    return np.mean(cKDTree(b).query(a)[0] ** 2) + np.mean(cKDTree(a).query(b)[0] ** 2)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    rng = np.random.default_rng(0)
    scale = rng.uniform(0.3, 1.0, size=(N, 1, 3))
    clouds = (rng.normal(size=(N, 24, 3)) * scale).astype(np.float32)
    sem = rng.normal(size=(N, 3))
    shape = np.hstack([scale[:, 0] * 3, sem]) @ rng.normal(size=(6, 10))
    text = sem @ rng.normal(size=(3, 8)) + 0.05 * rng.normal(size=(N, 8))
    labels = np.where(sem[:, 0] > 0, "cup", "lamp")
    folder = tmp_path / "server" / "shapes"
    folder.mkdir(parents=True)
    np.savez(folder / "emb.npz", shape_3d=shape.astype(np.float32), text=text.astype(np.float32),
             points=clouds, label=labels, caption=np.array([f"a {l} number {i}" for i, l in enumerate(labels)]))
    flat = tmp_path / "server" / "flat"
    flat.mkdir()
    np.savez(flat / "emb.npz", shape_3d=shape.astype(np.float32), text=text.astype(np.float32), label=labels)
    return {"clouds": clouds, "shape": shape, "labels": labels, "tmp": tmp_path}


def _open(dataset, **params):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = dataset
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    finish_jobs(at.switch_page("pages/neighbours.py").run())
    return at


def test_neighbours_page_lists_and_correlations(server):
    at = _open("server:shapes", sample="40", points="24", dim="3", k="4", item="5")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="url__space").value == "shape_3d"
    assert at.selectbox(key="url__partner").value == "text"
    # neighbour lists: the original one equals a naive cosine ranking
    frames = [d.value for d in at.dataframe]
    original = frames[0]
    D = cdist(server["shape"], server["shape"], "cosine")
    ref = [str(j) for j in np.argsort(D[5], kind="stable") if j != 5][:4]
    assert original["id"].tolist() == ref
    assert set(original["same category"]) <= {"yes", "no"}
    # correlations of the original space against Chamfer distances computed independently (KD-tree)
    rows = geometry_sample(N, 40, seed=0)
    sub = subsample_clouds(server["clouds"][rows], 24, seed=0)
    G = np.array([[_kd_chamfer(a, b) for b in sub] for a in sub])
    iu = np.triu_indices(40, 1)
    E = cdist(server["shape"][rows], server["shape"][rows], "cosine")
    corr = frames[-1]
    assert corr["version"].tolist()[0].startswith("original")
    assert corr["Pearson r"].iloc[0] == pytest.approx(stats.pearsonr(E[iu], G[iu])[0], abs=2e-3)
    assert len(corr) == 4
    # thumbnails (3 scatter3d figures: two neighbour grids) and the scatter with both spaces
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    n3d = [sum(t["type"] == "scatter3d" for t in s["data"]) for s in specs]
    assert n3d.count(5) == 2          # query + 4 neighbours, twice
    assert any("Pearson r" in str(s["layout"].get("annotations")) for s in specs)
    assert any("Chamfer distances of 40" in c.value for c in at.caption)


def test_neighbours_page_without_geometry_says_what_is_missing(server):
    at = _open("server:flat", dim="3")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    infos = " ".join(i.value for i in at.info)
    assert "no geometry" in infos and "distance matrix" in infos
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert not any(t["type"] == "scatter3d" for s in specs for t in s["data"])



def test_neighbours_new_item_reuses_the_fitted_subspace(server, monkeypatch):
    """The CCA subspace is fitted once per (space, partner, dim): picking another item only searches."""
    import core.retrieval as retrieval

    calls = []
    real = retrieval.subspace_cca

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(retrieval, "subspace_cca", counting)
    at = _open("server:flat", dim="2", k="4", item="5")   # a dim no other test fits (results are server-wide)
    assert not at.exception, at.exception
    assert len(calls) == 1
    at.selectbox(key="nb_item").set_value("7")
    finish_jobs(at.run())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert len(calls) == 1, "a new query item refitted the subspace"
    frames = [d.value for d in at.dataframe]
    D = cdist(server["shape"], server["shape"], "cosine")
    assert frames[0]["id"].tolist() == [str(j) for j in np.argsort(D[7], kind="stable") if j != 7][:4]
    # the subspace list equals the one-call path (fit and search together)
    one_call = retrieval.neighbours_before_after(server["shape"].astype(np.float32),
                                                 np.load(server["tmp"] / "server" / "flat" / "emb.npz")["text"],
                                                 7, 4, dim=2)
    assert frames[1]["id"].tolist() == [str(j) for j in one_call["subspace"]["rows"]]
    assert np.allclose(frames[1]["cosine distance"], np.round(one_call["subspace"]["distances"], 4))


def test_neighbours_map_of_a_sample_of_a_large_dataset(tmp_path, monkeypatch):
    """Over 5,000 items the map draws a seeded sample of 5,000 rows, each with its own item's hover text."""
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    n = 5200
    rng = np.random.default_rng(1)
    z = rng.normal(size=(n, 3))
    folder = tmp_path / "server" / "big"
    folder.mkdir(parents=True)
    np.savez(folder / "emb.npz", a=(z @ rng.normal(size=(3, 6))).astype(np.float32),
             b=(z @ rng.normal(size=(3, 5))).astype(np.float32),
             label=np.where(z[:, 0] > 0, "cup", "lamp"), caption=np.array([f"item number {i}" for i in range(n)]))
    at = _open("server:big", dim="2", k="3")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    # 5,000 points: the canvas map (no plotly figure, so no plotly bundle in the browser for a closed expander)
    assert not [c for c in at.get("plotly_chart") if json.loads(c.proto.spec)["data"][0].get("type") == "scattergl"]
    (canvas,) = canvas_maps(at)
    hover = canvas["hover"]
    lines = [line.split("\x1f") for line in hover.decode("utf-8").split("\n")]
    rows = [int(i) for i, _ in lines]
    assert len(rows) == len(set(rows)) == 5000 and max(rows) < n
    assert [t for _, t in lines] == [f"item number {r}" for r in rows]
    # the item picker lists at most MAX_ITEM_OPTIONS items; a search narrows them (the current item stays listed)
    from ui.widgets import MAX_ITEM_OPTIONS

    picker = at.selectbox(key="nb_item")
    assert len(picker.options) == MAX_ITEM_OPTIONS and picker.value == "0"
    at.text_input(key="nb_item_search").input("NUMBER 432").run()
    picker = at.selectbox(key="nb_item")
    assert [o.split(" - ")[0] for o in picker.options] == ["0", "432"] + [str(i) for i in range(4320, 4330)]
    picker.set_value("4321")
    finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert any("4321" in m.value and "item number 4321" in m.value for m in at.markdown)
    frames = [d.value for d in at.dataframe]
    assert "4321" not in frames[0]["id"].tolist() and len(frames[0]) == 3
    # a click on a point of the map makes it the query item (the canvas sends the click in data coordinates)
    (canvas,) = canvas_maps(at)
    xy = np.frombuffer(canvas["coords"], dtype=np.float32).reshape(-1, 2)
    # the component's "selection" state as the browser sets it (the real click: tests/test_browser_map.py)
    import ui.maps

    real_map = ui.maps.canvas_map
    click = {"kind": "point", "x": float(xy[10, 0]), "y": float(xy[10, 1]), "radius": 1e-3,
             "data_key": canvas["data_key"], "seq": 1}
    monkeypatch.setattr(ui.maps, "canvas_map", lambda *a, **k: (
        real_map(*a, **k) if k.get("key") != "nb_map_canvas" else (real_map(*a, **k) or click)))
    finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="nb_item").value == str(rows[10])

