"""AppTest tests of the Query page: item-to-item retrieval against an independent ranking, a space without a text
encoder, an empty query, and (with the demo) a real typed query."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core.align import PairwiseAligner
from tests.app_jobs import finish_jobs
from tests.conftest import ROOT

N = 150


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    rng = np.random.default_rng(0)
    z = rng.normal(size=(N, 4))
    text = (z @ rng.normal(size=(4, 12)) + 0.05 * rng.normal(size=(N, 12))).astype(np.float32)
    shape = (z @ rng.normal(size=(4, 9)) + 0.05 * rng.normal(size=(N, 9))).astype(np.float32)
    labels = np.where(z[:, 0] > 0, "cup", "lamp")
    folder = tmp_path / "server" / "pairs"
    folder.mkdir(parents=True)
    np.savez(folder / "emb.npz", text=text, shape_3d=shape, label=labels)
    return {"text": text, "shape": shape}


def _open(dataset, **params):
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = dataset
    for k, v in params.items():
        at.query_params[k] = v
    at.run()
    finish_jobs(at.switch_page("pages/query.py").run())
    return at


def test_item_query_matches_the_aligner(server):
    at = _open("server:pairs", dim="4", k="5")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="url__from").value == "text" and at.selectbox(key="url__to").value == "shape_3d"
    at.selectbox(key="query_item").set_value("12").run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    S = PairwiseAligner("cca_affine", k=4).fit(server["text"], server["shape"]).score_matrix(
        server["text"][12:13], server["shape"])[0]
    S[12] = -np.inf
    order = np.argsort(-S, kind="stable")[:5]
    assert table["id"].tolist() == [str(i) for i in order]
    np.testing.assert_allclose(table["score"].to_numpy(), np.round(S[order], 4), atol=1e-4)
    assert "12" not in table["id"].tolist()


def test_typed_query_in_a_space_without_text_encoder(server):
    at = _open("server:pairs", dim="4", q="a tall lamp")
    assert not at.exception, at.exception
    errors = [e.value for e in at.error]
    assert any("no text encoder" in e for e in errors), errors
    # an empty query says so
    at.text_input(key="url__q").set_value("   ")
    next(b for b in at.button if b.label == "Search").click().run()
    assert not at.exception
    assert any("the query is empty" in e.value for e in at.error), [e.value for e in at.error]


def test_typed_query_on_the_demo():
    demo = pytest.importorskip("core.demo")
    try:
        demo.load_demo()
    except Exception:
        pytest.skip("demo artifact missing")
    at = _open("demo", q="a tall lamp", k="10")
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    table = at.dataframe[0].value
    assert len(table) == 10
    lamps = table["label"].str.contains("lamp").mean()
    assert lamps > 0.5          # 2 lamp categories of 14: chance is 1/7
    assert any("Embedded in" in c.value for c in at.caption)


def test_query_reuses_the_pair_moments_of_the_neighbours_view(server, monkeypatch):
    """Neighbours (shape_3d with text) and Query (text -> shape_3d) fit on all items of the same pair: the moments
    are accumulated once; the Query's retrieval still equals a direct fit."""
    from core.align import AnchorMoments
    from ui import fits

    passes = []
    real = AnchorMoments.from_arrays.__func__
    monkeypatch.setattr(AnchorMoments, "from_arrays",
                        classmethod(lambda cls, X, Y, **kw: passes.append(X.shape[1]) or real(cls, X, Y, **kw)))
    monkeypatch.setattr(fits, "_MOMENTS", fits.OrderedDict())
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:pairs"
    at.query_params["dim"] = "3"
    at.run()
    finish_jobs(at.switch_page("pages/neighbours.py").run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert passes == [9]                   # shape_3d (9-d) first: the pair in name order
    finish_jobs(at.switch_page("pages/query.py").run())
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert passes == [9], "the Query view accumulated the moments of the pair again"
    at.number_input(key="url__dim").set_value(3)
    at.number_input(key="url__k").set_value(10)
    at.selectbox(key="query_item").set_value("7")
    finish_jobs(at.run())                  # a new alignment (k = 3) on the same moments
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert passes == [9]
    table = at.dataframe[0].value
    S = PairwiseAligner("cca_affine", k=3).fit(server["text"], server["shape"]).score_matrix(
        server["text"][7:8], server["shape"])[0]
    S[7] = -np.inf
    order = np.argsort(-S, kind="stable")[:10]
    assert table["id"].tolist() == [str(i) for i in order]
    np.testing.assert_allclose(table["score"].to_numpy(), np.round(S[order], 4), atol=1e-4)
