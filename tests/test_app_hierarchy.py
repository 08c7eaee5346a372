"""AppTest tests of the Hierarchy page on a planted chains table (no encoder: the mean-embedding root)."""
import json

import numpy as np
import pandas as pd
import pytest
from scipy.stats import kendalltau
from streamlit.testing.v1 import AppTest

from tests.app_jobs import finish_jobs
from tests.conftest import ROOT

N_CHAINS, D = 40, 12


def _planted():
    rng = np.random.default_rng(0)
    centre = rng.normal(size=D)
    rows, vecs = [], []
    for c in range(N_CHAINS):
        L = 3 + c % 2                       # chains of length 3 and 4
        direction = rng.normal(size=D)
        for k in range(L):
            rows.append({"chain": f"ch{c}", "tier": k, "caption": f"chain {c} tier {k}"})
            vecs.append(centre + 0.4 * (k + 1) * direction + 0.3 * rng.normal(size=D))
    return pd.DataFrame(rows), np.asarray(vecs, np.float32)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "chains"
    folder.mkdir(parents=True)
    table, vecs = _planted()
    table.to_csv(folder / "chains.csv", index=False)
    np.save(folder / "text.npy", vecs)
    return table, vecs


def _expected_tau(table, vecs):
    E = vecs / np.linalg.norm(vecs, axis=1, keepdims=True)
    root = E.mean(axis=0)
    root /= np.linalg.norm(root)
    radii = np.linalg.norm(E - root, axis=1)
    taus = []
    for _, g in table.assign(r=radii).groupby("chain"):
        g = g.sort_values("tier")
        taus.append(kendalltau(g["r"], g["tier"])[0])
    return float(np.mean(taus))


def test_hierarchy_page_radial_inspector_and_finetune(server):
    table, vecs = server
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:chains"
    at.query_params["epochs"] = "3"
    at.run()
    finish_jobs(at.switch_page("pages/hierarchy.py").run())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="url__root").value == "mean"
    # tau_d shown equals an independent computation (scipy's Kendall tau per chain, mean root)
    shown = float(at.metric[0].value)
    assert shown == pytest.approx(_expected_tau(table, vecs), abs=1e-3)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    radial = charts[0]
    boxes = [t for t in radial["data"] if t["type"] == "box"]
    assert len(boxes) == 4                                        # tiers 0..3
    assert any("mean embedding" in c.value for c in at.caption)  # the fallback root is stated
    # inspector: the angle matrix has the chain's tiers as rows; the diagonal within the chain is undefined
    heat = next(c for c in charts if c["data"][0]["type"] == "heatmap")
    text = heat["data"][0]["text"]
    assert all(text[k][k] == "undefined" for k in range(len(text)))
    # fine-tuning side by side
    finish_jobs(at.toggle(key="url__ft").set_value(True).run())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert any(t.startswith("Before") for t in titles) and any(t.startswith("After RE") for t in titles)


def test_hierarchy_page_explains_missing_chains(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "flat"
    folder.mkdir(parents=True)
    np.save(folder / "text.npy", np.random.default_rng(0).normal(size=(20, 4)).astype(np.float32))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["dataset"] = "server:flat"
    at.run()
    finish_jobs(at.switch_page("pages/hierarchy.py").run())
    assert not at.exception
    assert any("caption chains" in i.value for i in at.info)


def test_hierarchy_page_under_the_paper_c_preset(server):
    table, vecs = server
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:chains"
    at.query_params["preset"] = "paper_c"
    at.run()
    finish_jobs(at.switch_page("pages/hierarchy.py").run())
    assert not at.exception, at.exception
    rec = at.session_state["platoscope_current_preset"]
    assert rec["name"] == "paper_c" and rec["settings"]["tau"] == "argsort"
    # without tied radii the authors' argsort tau_d equals tau-b: the same number is shown
    assert float(at.metric[0].value) == pytest.approx(_expected_tau(table, vecs), abs=1e-3)
    text = " ".join(c.value for c in at.caption).replace("\\", "")
    assert "paper C preset: the authors' code (TAU-VAILab/hierarcaps)" in text
    assert "whole text tower" in text


def test_hierarchy_root_from_any_text_encoder(server, tmp_path):
    """Paper C's CLIP setting in the app: the captions encoded by an open_clip model (tiny, random weights) and the
    root = the empty string embedded by the same model; tau_d equals an independent computation."""
    import open_clip
    import torch
    table, _ = server
    cfg = {"embed_dim": 16,
           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 8},
           "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}
    path = tmp_path / "platoscope-test-tiny-h.json"
    path.write_text(json.dumps(cfg))
    open_clip.add_model_config(path)
    spec = "open_clip:platoscope-test-tiny-h:none"
    torch.manual_seed(0)
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300)
    at.query_params["dataset"] = "server:chains"
    at.run()
    at.switch_page("pages/hierarchy.py").run()
    at.selectbox(key="url__text").set_value("encode the captions with an encoder").run()
    finish_jobs(at.text_input(key="url__encoder").set_value(spec).run())
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert at.selectbox(key="url__root").value == "encoder"
    assert any(f"Root: embedding of the empty string by {spec}" in c.value for c in at.caption)
    # independent: the same (cached, shared) model's encode_text on the captions and on ""
    from ui.encoders import _shared_encoder
    model, _, tokenizer = _shared_encoder(spec, "mean").load()
    with torch.no_grad():
        E = model.encode_text(tokenizer(table["caption"].tolist()), normalize=True).numpy().astype(np.float64)
        root = model.encode_text(tokenizer([""]), normalize=True)[0].numpy().astype(np.float64)
    radii = np.linalg.norm(E - root, axis=1)
    taus = [kendalltau(g["r"], g["tier"])[0] for _, g in table.assign(r=radii).groupby("chain")]
    assert float(at.metric[0].value) == pytest.approx(float(np.nanmean(taus)), abs=1e-3)
