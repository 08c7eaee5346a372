"""AppTest tests of the Similarity page on a small server-side dataset."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_jobs import finish_jobs, pending_jobs, svgcharts
from tests.conftest import ROOT


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "layers"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    base = rng.normal(size=(80, 6))
    for i in range(1, 4):
        np.save(folder / f"enc_layer{i}.npy", (base @ rng.normal(size=(6, 10)) + 0.3 * i * rng.normal(size=(80, 10))))
    np.save(folder / "noise.npy", rng.normal(size=(80, 7)))
    return tmp_path


def _open(page_params: dict) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["dataset"] = "server:layers"
    for k, v in page_params.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/similarity.py")
    return finish_jobs(at.run())


def _independent_cka(X, Y):
    X = X - X.mean(0); Y = Y - Y.mean(0)
    return np.linalg.norm(X.T @ Y) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))


def _decode(z):
    """plotly serialises numpy arrays as base64 typed arrays ({dtype, bdata, shape}) (the layer-by-layer heatmap is
    plotly; tests/test_app_encode.py reads it)."""
    if isinstance(z, dict) and "bdata" in z:
        import base64
        arr = np.frombuffer(base64.b64decode(z["bdata"]), dtype=np.dtype(z["dtype"]))
        shape = [int(s) for s in str(z.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(z, dtype=float)


def _heatmap(at) -> dict:
    """The arguments of the page's heatmap component (ui.svgchart): names, values, colours, hover texts."""
    (args,) = svgcharts(at, "heatmap")
    return args


def test_similarity_heatmap_values_match_reference(server, monkeypatch):
    at = _open({})
    assert not at.exception, at.exception
    assert at.selectbox(key="url__measure").value == "linear_cka"
    # the exported table holds the same numbers the heatmap shows
    folder = server / "server" / "layers"
    X = np.load(folder / "enc_layer1.npy"); Y = np.load(folder / "noise.npy")
    ref = _independent_cka(X, Y)
    heat = _heatmap(at)
    z = heat["z"]; names = heat["x"]
    i, j = names.index("enc_layer1"), names.index("noise")
    assert abs(z[i][j] - ref) < 1e-6
    assert heat["text"][i][j] == f"{ref:.2f}"
    assert heat["hover"][i][j] == f"enc_layer1 vs noise\nLinear CKA = {ref:.2f}"
    # no plotly figure on the page: the browser does not load plotly's bundle for this matrix
    import json

    assert not [t for c in at.get("plotly_chart") for t in json.loads(c.proto.spec)["data"] if t["type"] == "heatmap"]
    # a click on a cell (row enc_layer1, column noise) picks that pair for the maps below: the component's "cell"
    # trigger, in the one run the click starts (the real click in a browser: tests/test_browser_heatmap.py)
    import ui.svgchart

    real_mount, clicks = ui.svgchart._mount, [{"kind": "cell", "row": i, "col": j, "data_key": heat["data_key"]}]
    monkeypatch.setattr(ui.svgchart, "_mount", lambda args, key: (
        {"cell": clicks.pop()} if key == "sim_heatmap" and clicks else real_mount(args, key)))
    finish_jobs(at.run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert (at.selectbox(key="sim_left").value, at.selectbox(key="sim_right").value) == ("enc_layer1", "noise")
    # the click is applied once: a pair picked afterwards stays
    at.selectbox(key="sim_left").set_value("enc_layer3")
    finish_jobs(at.run())
    assert at.selectbox(key="sim_left").value == "enc_layer3"


def test_similarity_second_session_sends_the_kept_heatmap_without_rebuilding(server, monkeypatch):
    """A new session on the same shared dataset (a second visit, another browser): the result and its drawing
    are reused; nothing is recomputed or rebuilt."""
    import core.similarity
    import ui.svgchart

    builds, computes = [], []
    real_args, real_matrix = ui.svgchart.heatmap_args, core.similarity.similarity_matrix
    monkeypatch.setattr(ui.svgchart, "heatmap_args", lambda *a, **k: builds.append(1) or real_args(*a, **k))
    monkeypatch.setattr(core.similarity, "similarity_matrix",
                        lambda *a, **k: computes.append(1) or real_matrix(*a, **k))
    first = _heatmap(_open({"measure": "rsa"}))           # a measure no other test of this module computes
    assert len(computes) == 1 and len(builds) >= 1
    built = len(builds)
    second = _heatmap(_open({"measure": "rsa"}))
    assert second == first
    assert len(computes) == 1 and len(builds) == built


def test_similarity_measure_from_url_and_layer_tab(server):
    at = _open({"measure": "mutual_knn", "k": "5"})
    assert not at.exception, at.exception
    assert at.selectbox(key="url__measure").value == "mutual_knn"
    assert at.number_input(key="url__k").value == 5
    # the layer-by-layer view computes nothing until it is opened
    assert not [w for w in at.multiselect if w.key == "layers_a"]
    at.segmented_control(key="url__view").set_value("Layer by layer").run()
    finish_jobs(at)
    assert not at.exception and not at.error and not pending_jobs()
    assert at.multiselect(key="layers_a").value == ["enc_layer1", "enc_layer2", "enc_layer3"]
    titles = [__import__("json").loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any("layer by layer" in t for t in titles)


def test_similarity_needs_two_spaces(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    (tmp_path / "server").mkdir()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    at.switch_page("pages/similarity.py").run()
    assert not at.exception
    assert any("at least two spaces" in i.value for i in at.info)


def test_similarity_under_the_paper_a_preset_uses_the_platonic_conventions(server):
    from core.similarity import platonic_preprocess, svcca_top10

    at = _open({"preset": "paper_a", "measure": "svcca"})
    assert not at.exception, at.exception
    assert at.session_state["platoscope_current_preset"]["name"] == "paper_a"
    folder = server / "server" / "layers"
    X = np.load(folder / "enc_layer1.npy"); Y = np.load(folder / "enc_layer2.npy")
    ref = svcca_top10(platonic_preprocess(X), platonic_preprocess(Y))
    heat = _heatmap(at)
    z = heat["z"]; names = heat["x"]
    assert abs(z[names.index("enc_layer1")][names.index("enc_layer2")] - ref) < 1e-6
    text = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "the project's default instead: SVCCA keeps 99 % of the variance" in text
