"""AppTest tests of the Universe page on a planted multi-view dataset."""
import json

import numpy as np
import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_jobs import finish_jobs, pending_jobs, svgcharts
from tests.conftest import ROOT


def _decode(v):
    if isinstance(v, dict) and "bdata" in v:
        import base64
        arr = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        shape = [int(x) for x in str(v.get("shape", len(arr))).split(",")]
        return arr.reshape(shape)
    return np.asarray(v, dtype=float)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "views"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    n = 240
    lab = rng.integers(0, 3, n)
    z = rng.normal(size=(n, 5))
    z[:, :3] += 5 * np.eye(3)[lab]
    spaces = {}
    for name, w in (("text", 12), ("shape_3d", 10), ("image", 9), ("extra_text", 11)):
        spaces[name] = z @ rng.normal(size=(5, w)) + 0.4 * rng.normal(size=(n, w))
        np.save(folder / f"{name}.npy", spaces[name].astype(np.float32))
    pd.DataFrame({"id": [str(i) for i in range(n)], "label": [f"c{v}" for v in lab]}).to_csv(
        folder / "meta.csv", index=False)
    return spaces, lab


def _open(query: dict | None = None) -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:views"
    at.query_params["spaces"] = json.dumps(["text", "shape_3d", "image"])
    at.query_params["epochs"] = "5"
    for k, v in (query or {}).items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/universe.py").run()
    return finish_jobs(at)


def _specs(at):
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    return specs, [s["layout"].get("title", {}).get("text", "") for s in specs]


def _svg(at, kind):
    """The arguments of the page's SVG charts (ui.svgchart) of one kind ("heatmap" / "bars"), in page order."""
    return svgcharts(at, kind)


def _z(args):
    return np.array([[np.nan if v is None else v for v in row] for row in args["z"]], dtype=float)


def _rgb(colour):
    colour = colour.strip()
    if colour.startswith("#"):
        return np.array([int(colour[k:k + 2], 16) for k in (1, 3, 5)], dtype=float)
    return np.array([float(v) for v in colour[colour.index("(") + 1:colour.index(")")].split(",")[:3]])


def _gpa_top1(spaces, names, train, test):
    """Hits@1 of every ordered pair of ``names``, from GPA fitted on ``train`` (row = query space; the diagonal,
    a space against itself, is not a pair: nan)."""
    from core.universe import GPA

    gpa = GPA().fit({k: spaces[k].astype(np.float32)[train] for k in names})
    U = {k: gpa.to_universe(k, spaces[k].astype(np.float32)[test]) for k in names}
    U = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in U.items()}
    return gpa, np.array([[np.nan if a == b else float(((U[a] @ U[b].T).argmax(1) == np.arange(len(test))).mean())
                           for b in names] for a in names])


def _view(at, name):
    at.segmented_control(key="url__view").set_value(name).run()
    return finish_jobs(at)


def test_universe_page_shows_methods_and_numbers(server):
    spaces, lab = server
    at = _open()
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    # the retrieval view draws no plotly chart (no plotly bundle in the browser): SVG heatmaps and bars
    assert not at.get("plotly_chart")
    heats = _svg(at, "heatmap")
    assert len(heats) == 4                                             # one per method
    assert [h["title"] for h in heats][:2] == ["pairwise Procrustes", "GPA"] and heats[3]["title"] == "GCPA"
    # the numbers shown match an independent computation: GPA fitted on the same training rows
    from core.universe_eval import split_train_test

    train, test = split_train_test(240, 0.2, seed=0)
    names = ["text", "shape_3d", "image"]
    gpa, expected = _gpa_top1(spaces, names, train, test)
    heat = heats[1]
    assert heat["x"] == names and heat["y"] == names
    z = _z(heat)
    np.testing.assert_allclose(z, expected, atol=1e-9)
    # colours: plotly's Viridis on 0..1 (as the plotly heatmap had), within the 256-step ramp's rounding
    from plotly.colors import sample_colorscale

    assert heat["colours"][0][0] is None                               # undefined: the component's grey
    for i in range(3):
        for j in range(3):
            if i != j:
                assert np.abs(_rgb(heat["colours"][i][j]) - _rgb(sample_colorscale("Viridis", [z[i, j]])[0])).max() <= 3
    # hover texts: plain text lines (the pair, the value, the method with the full names)
    assert heat["hover"][0][1] == f"text vs shape_3d\nHits@1 = {expected[0, 1]:.2f}\nGPA: text -> shape_3d"
    assert heat["text"][0][1] == f"{expected[0, 1]:.2f}"
    # the summary table and the bar chart
    table = at.dataframe[0].value
    assert {"pairwise Procrustes", "GPA", "GCPA"} < set(table.index)
    assert any(i.startswith("GCCA (MAXVAR, ridge") for i in table.index)    # the variant is named
    off = expected[~np.isnan(expected)]
    assert table.loc["GPA", "Hits@1 mean"] == pytest.approx(off.mean())
    (bars,) = _svg(at, "bars")
    mean, worst = bars["series"]
    assert (mean["name"], worst["name"]) == ("mean pair", "worst pair") and bars["categories"] == list(table.index)
    g = bars["categories"].index("GPA")
    assert mean["values"][g] == pytest.approx(off.mean()) and worst["values"][g] == pytest.approx(off.min())
    worst_pairs = {f"worst: {names[i]} -> {names[j]}" for i in range(3) for j in range(3)
                   if expected[i, j] == off.min()}          # (ties: any of them)
    assert worst["hover"][g].split("\n")[-1] in worst_pairs
    assert bars["hline"][0] == pytest.approx(1 / len(test)) and bars["hline"][1] == f"chance {1 / len(test):.3f}"
    # cycle table: GPA is cycle-consistent
    cyc = at.dataframe[1].value
    assert cyc.loc["GPA", "mean relative error"] < 1e-10 and cyc.loc["pairwise Procrustes", "cycles"] == 6
    assert "GPA:" in " ".join(c.value for c in at.caption) and "iterations, objective" in \
        " ".join(c.value for c in at.caption)
    # map: 300 cap > 48 test items; 3 spaces x 48 items and the linking lines
    specs, titles = _specs(_view(at, "Map of the universe"))
    mp = next(s for s, t in zip(specs, titles) if "universe:" in t)
    markers = [t for t in mp["data"] if t.get("mode") == "markers"]
    assert len(markers) == 3 and all(len(_decode(t["x"])) == 48 for t in markers)
    # clustering with the label column (computed only when its view is opened: one more result per method),
    # and the add-a-space flow (extra_text is left out by default)
    from core import cache as core_cache

    results_dir = core_cache.namespace_dir("shared") / "results"
    import joblib

    def clustering_results():
        return [f for f in results_dir.glob("*.joblib")
                if isinstance(v := joblib.load(f), dict) and "mean_ari" in v]

    assert clustering_results() == []                            # nothing computed for a view nobody opened
    at = _view(at, "Clustering")
    assert not at.get("plotly_chart")
    (cbars,) = _svg(at, "bars")
    assert "k-means" in cbars["title"] and [s["name"] for s in cbars["series"]] == ["ARI", "NMI"]
    assert len(clustering_results()) == 4                        # one k-means job per method, once opened
    ctable = next(d.value for d in at.dataframe if "ARI" in d.value.columns)
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    Ut = gpa.to_universe("shape_3d", spaces["shape_3d"].astype(np.float32)[test])
    Ut = Ut / np.linalg.norm(Ut, axis=1, keepdims=True)
    aris = [adjusted_rand_score(np.array([f"c{v}" for v in lab])[test],
                                KMeans(n_clusters=3, n_init=1, random_state=s).fit_predict(Ut)) for s in (0, 1, 2)]
    shown = ctable[(ctable["method"] == "GPA") & (ctable["space"] == "shape_3d")]["ARI"].iloc[0]
    assert shown == pytest.approx(np.mean(aris), abs=1e-9)
    # the bar is the mean over the spaces of the table's ARI (each an independent k-means above for shape_3d)
    gpa_rows = ctable[ctable["method"] == "GPA"]
    assert cbars["series"][0]["values"][cbars["categories"].index("GPA")] == pytest.approx(gpa_rows["ARI"].mean())
    at = _view(at, "Add a space")
    assert not pending_jobs() and not any(t.startswith("Adding") for t in _specs(at)[1])   # only on request
    at.button(key="universe_add_go").click().run()
    specs, titles = _specs(finish_jobs(at))
    add = next(s for s, t in zip(specs, titles) if t.startswith("Adding 'extra_text'"))
    assert add["data"][0]["x"] == ["GPA-ADD", "refit GPA"]     # (plotly: its timing panel is on a log scale)
    add_heats = [h for h in _svg(at, "heatmap") if h["title"].endswith(": Hits@1")]
    assert [h["title"] for h in add_heats] == ["GPA-ADD: Hits@1", "refit GPA: Hits@1"]
    four = ["text", "shape_3d", "image", "extra_text"]
    assert add_heats[1]["x"] == four
    np.testing.assert_allclose(_z(add_heats[1]), _gpa_top1(spaces, four, train, test)[1], atol=1e-9)   # the refit


def test_universe_page_highlight_and_plot_options_do_not_refit(server):
    at = _open({"methods": json.dumps(["gpa", "gcca"]), "view": "Map of the universe"})
    assert not at.exception, at.exception
    at.selectbox(key="universe_item").set_value(3).run()
    assert not at.exception
    specs = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    mp = next(s for s in specs if "universe:" in s["layout"].get("title", {}).get("text", ""))
    lit = [t for t in mp["data"] if str(t.get("name", "")).startswith("item:")]
    assert len(lit) == 1 and len(_decode(lit[0]["x"])) == 3     # the item's 3 copies light up
    at.selectbox(key="url__metric").set_value("mrr").run()
    at.segmented_control(key="url__view").set_value("Retrieval and cycles").run()
    assert not at.exception and not pending_jobs()          # plot options and views never refit
    assert any(m.value.startswith("**Any-to-any MRR") for m in at.markdown)
    assert [h["colorbar"]["title"] for h in _svg(at, "heatmap")] == ["MRR", "MRR"]


def test_universe_page_needs_two_spaces(server):
    at = _open({"spaces": json.dumps(["text"])})
    assert not at.exception
    assert any("at least two spaces" in i.value for i in at.info)


def test_universe_page_paper_d_preset_from_the_url(server):
    spaces, lab = server
    at = _open({"preset": "paper_d", "methods": json.dumps(["gpa", "gcca"])})
    assert not at.exception, at.exception
    assert at.segmented_control(key="url__preset").value == "paper_d"
    # the preset fixes GCPA's epochs at the authors' 50 (METHODS.md 7.4), whatever the URL asked for
    epochs_box = at.number_input(key="universe_preset_epochs")
    assert epochs_box.value == 50 and epochs_box.disabled
    captions = " ".join(c.value for c in at.caption).replace("\\", "")     # markdown escapes removed
    assert "paper D preset" in captions and "the project's default instead: z-score, then PCA" in captions
    table = at.dataframe[0].value
    assert "GCCA (RACING, no ridge)" in set(table.index)
    heats = _svg(at, "heatmap")
    assert [h["title"] for h in heats] == ["GPA", "GCCA (RACING, no ridge)"]
    # the numbers are those of the authors' GCCA fitted on the same training rows (PCA, then z-score)
    from core.universe import GCCA
    from core.universe_eval import split_train_test

    train, test = split_train_test(240, 0.2, seed=0)
    names = ["text", "shape_3d", "image"]
    g = GCCA(variant="racing", preprocess_order="pca-zscore").fit(
        {k: spaces[k].astype(np.float32)[train] for k in names})
    U = {k: g.to_universe(k, spaces[k].astype(np.float32)[test]) for k in names}
    U = {k: v / np.linalg.norm(v, axis=1, keepdims=True) for k, v in U.items()}
    expected = float(((U["text"] @ U["image"].T).argmax(1) == np.arange(len(test))).mean())
    assert _z(heats[1])[0, 2] == pytest.approx(expected, abs=1e-9)
    # back to custom: the one-line difference from the authors' code is shown
    at.segmented_control(key="url__preset").set_value("custom").run()
    at = finish_jobs(at)
    assert "custom: z" in " ".join(c.value for c in at.caption).replace("\\", "")
    assert at.number_input(key="url__epochs").value == 5 and not at.number_input(key="url__epochs").disabled


def test_universe_page_gcpa_precision_is_a_setting_of_gcpa_only(server):
    """bfloat16 GCPA is its own result (the float32 one stays stored), named in the caption; the other methods'
    results are reused, not refitted."""
    from core import cache as core_cache
    import joblib

    # a seed no other test uses: the process-wide job runner keeps other tests' finished jobs of the same keys
    at = _open({"methods": json.dumps(["gpa", "gcpa"]), "seed": "7"})
    assert not at.exception, at.exception
    assert "float32." in " ".join(c.value for c in at.caption)
    results_dir = core_cache.namespace_dir("shared") / "results"

    def stored():
        out = []
        for f in results_dir.glob("*.joblib"):
            v = joblib.load(f)
            if isinstance(v, dict) and "method" in v:
                out.append((v["method"]["name"], v["method"]["description"].get("precision")))
        return sorted(out, key=str)

    assert stored() == [("gcpa", "float32"), ("gpa", None)]
    at.selectbox(key="url__precision").set_value("bfloat16").run()
    at = finish_jobs(at)
    assert not at.exception, at.exception
    assert stored() == [("gcpa", "bfloat16"), ("gcpa", "float32"), ("gpa", None)]   # GPA's result reused
    caption = " ".join(c.value for c in at.caption)
    assert "bfloat16." in caption and "GCPA: " in caption
    assert at.query_params["precision"] == ["bfloat16"] or at.query_params["precision"] == "bfloat16"


def test_universe_page_builds_its_figures_once_per_results_and_metric(server, monkeypatch):
    import ui.plots_universe as plots

    at = _open({"methods": json.dumps(["gpa", "gcca"]), "seed": "11"})
    assert not at.exception, at.exception
    calls = []
    for name in ("retrieval_heatmap_args", "mean_worst_bars_args", "retrieval_heatmaps", "mean_worst_bars"):
        real = getattr(plots, name)
        monkeypatch.setattr(plots, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    at.run()                                                       # a rerun: the kept figures, nothing rebuilt
    assert not at.exception and calls == []
    before = svgcharts(at)
    assert len(before) == 3                                        # two heatmaps, the bars
    at.selectbox(key="url__metric").set_value("mrr").run()         # another metric: built once more (the SVG
    assert sorted(calls) == ["mean_worst_bars_args", "retrieval_heatmap_args"]   # charts; no plotly figure)
    at.selectbox(key="url__metric").set_value("top1").run()        # back: the kept ones again
    assert len(calls) == 2 and svgcharts(at) == before
    # the export still offers the plotly figure of the same numbers, built only when a download asks for it
    import ui.widgets

    exports = {}
    real_export = ui.widgets.export_controls

    def recording_export(name, **k):
        exports[name] = k["fig"]
        return real_export(name, **k)

    monkeypatch.setattr(ui.widgets, "export_controls", recording_export)
    at.run()
    assert not at.exception and "retrieval_heatmaps" not in calls
    fig = exports["platoscope-universe-retrieval"]()
    assert calls.count("retrieval_heatmaps") == 1
    heat_traces = [t for t in fig.data if t.type == "heatmap"]
    assert len(heat_traces) == 2
    for trace, args in zip(heat_traces, _svg(at, "heatmap")):
        np.testing.assert_allclose(np.asarray(trace.z, dtype=float), _z(args), atol=1e-12)


def test_universe_page_starts_gcpa_after_the_first_three_are_drawn(server, monkeypatch):
    """GCPA's training is not queued beside PW / GPA / GCCA: its job is submitted at the end of the script run that
    draws their results (after the heatmaps are built), so it competes neither with their jobs nor with that run."""
    import threading
    import time

    import ui.plots_universe as plots
    from core.evaluation.universe import UniverseStudy
    from ui.jobs import runner

    gate, real_evaluate = threading.Event(), UniverseStudy.evaluate

    def gated(self, method, **kw):
        if method != "gcpa":
            assert gate.wait(120), "the test never opened the gate"
        return real_evaluate(self, method, **kw)

    monkeypatch.setattr(UniverseStudy, "evaluate", gated)
    drawn_at = []
    real_heatmaps = plots.retrieval_heatmap_args
    monkeypatch.setattr(plots, "retrieval_heatmap_args",
                        lambda *a, **k: drawn_at.append(time.time()) or real_heatmaps(*a, **k))

    def gcpa_jobs():                                       # GCPA jobs of this test (the runner is the process's)
        return [j for j in runner().jobs() if j.label.startswith("GCPA") and j.submitted >= t_open]

    t_open = time.time()
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:views"
    at.query_params["spaces"] = json.dumps(["text", "shape_3d", "image"])
    for k, v in {"epochs": "3", "seed": "13", "methods": json.dumps(["pw", "gpa", "gcca", "gcpa"])}.items():
        at.query_params[k] = v
    at.run()
    at.switch_page("pages/universe.py").run()
    assert not at.exception, at.exception
    assert pending_jobs() and not gcpa_jobs()              # PW, GPA, GCCA queued or running; GCPA waits
    assert any("trains once" in c.value for c in at.caption)
    gate.set()
    assert runner().wait_all(900)
    assert not gcpa_jobs()                                 # the first three are done, but nobody has drawn them yet
    at.run()                                               # the run that draws them (the boxes' rerun)
    assert not at.exception, at.exception
    started = gcpa_jobs()
    assert len(started) == 1 and drawn_at and started[0].submitted > max(drawn_at)
    at = finish_jobs(at)
    assert len(_svg(at, "heatmap")) == 4
