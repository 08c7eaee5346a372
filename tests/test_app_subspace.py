"""AppTest tests of the Subspace page on a planted two-view dataset."""
import json

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.app_jobs import finish_jobs, pending_jobs, svgcharts
from tests.conftest import ROOT


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "planted"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(600, 6))
    np.save(folder / "text.npy", z @ rng.normal(size=(6, 24)) + 0.2 * rng.normal(size=(600, 24)))
    np.save(folder / "shape_3d.npy", z @ rng.normal(size=(6, 20)) + 0.2 * rng.normal(size=(600, 20)))
    return tmp_path


def test_subspace_runs_protocol_and_curves(server):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:planted"
    at.query_params["k"] = "6"
    at.query_params["queries"] = "100"
    at.run()
    at.switch_page("pages/subspace.py").run()
    assert not at.exception, at.exception
    # the page paints at once: controls and a progress box with a Cancel button while the job runs
    assert at.selectbox(key="url__x").value == "text"
    assert any(b.label == "Cancel" for b in at.button) or not pending_jobs()
    finish_jobs(at)
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="url__y").value == "shape_3d"
    # the summary table shows CCA + affine far above chance on the planted data
    table = at.dataframe[0].value
    cell = table.loc["CCA + affine", "matching accuracy"]
    mean = float(cell.split(" +- ")[0])
    chance = float(cell.split("chance ")[1].rstrip(")"))
    assert mean > 0.5 and chance == pytest.approx(0.01)
    # adjustments are explained (600 items cannot hold 30,000 anchors)
    assert any("Adjusted" in i.value for i in at.info)
    # changing only the plotted metric does not refit: no job is started, the numbers are there at once
    at.selectbox(key="url__metric").set_value("mrr").run()
    assert not at.exception and not pending_jobs()
    # the bars (the SVG chart, ui.svgchart; no plotly figure) show the table's numbers for the chosen metric
    (bars,) = svgcharts(at, "bars")
    assert bars["title"].startswith("MRR") and not at.get("plotly_chart")
    (series,) = bars["series"]
    table = at.dataframe[0].value
    for method, mean, std in zip(bars["categories"], series["values"], series["errors"]):
        shown = table.loc[method, "MRR (both directions)"]
        assert mean == pytest.approx(float(shown.split(" +- ")[0]), abs=5e-4)
        assert std == pytest.approx(float(shown.split(" +- ")[1].split()[0]), abs=5e-4)
    assert series["hover"][0] == f"{bars['categories'][0]}\nMRR (both directions) = {series['values'][0]:.3f} +- " \
                                 f"{series['errors'][0]:.3f}"
    # nothing is computed for a view nobody opened; opening the k curve starts its job, which fills it in
    at.segmented_control(key="url__view").set_value("Curve over k").run()
    assert not at.exception
    finish_jobs(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("MRR") and t.endswith("against k") for t in titles)
    at.segmented_control(key="url__view").set_value("Curve over anchors").run()
    finish_jobs(at)
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("MRR") and t.endswith("against anchors") for t in titles)


def test_subspace_groups_items_by_a_chosen_column(server):
    folder = server / "server" / "planted"
    n = 600
    (folder / "meta.csv").write_text("id,caption\n" + "\n".join(f"{i},caption {i // 2}" for i in range(n)))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:planted"
    at.query_params["k"] = "6"
    at.query_params["queries"] = "100"
    at.query_params["methods"] = '["cca_affine"]'
    at.run()
    at.switch_page("pages/subspace.py").run()
    finish_jobs(at)
    assert any("share their caption" in i.value for i in at.info)
    alone = at.dataframe[0].value.loc["CCA + affine", "top-1 (source -> target)"]
    at.selectbox(key="url__partners").set_value("caption").run()
    finish_jobs(at)
    assert not at.exception and not at.error
    grouped = at.dataframe[0].value.loc["CCA + affine", "top-1 (source -> target)"]
    chance_alone = float(alone.split("chance ")[1].rstrip(")"))
    chance_grouped = float(grouped.split("chance ")[1].rstrip(")"))
    assert chance_grouped > chance_alone  # two true partners per query double the chance of a hit
    assert not any("share their caption" in i.value for i in at.info)


def test_results_survive_a_server_restart(server):
    """A finished job's result is on disk: with the server's memory gone, the page shows it without a new job."""
    def open_page():
        at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
        at.query_params["dataset"] = "server:planted"
        at.query_params["k"] = "6"
        at.query_params["queries"] = "100"
        at.query_params["methods"] = '["cca_affine"]'
        at.run()
        return at.switch_page("pages/subspace.py").run()

    finish_jobs(open_page())
    stored = list((server / "cache" / "shared" / "results").glob("*.joblib"))
    assert len(stored) == 1
    from ui import cached, jobs

    cached._shared_results().clear()                 # what a restart loses: the in-memory results ...
    for job in jobs.runner().jobs():                 # ... and the runner's table of jobs
        jobs.runner().forget(job.key)
    at = open_page()
    assert not at.exception and not pending_jobs() and not jobs.runner().jobs()
    assert "CCA + affine" in at.dataframe[0].value.index
