"""Every bad input of the shared corpus (tests/badfiles.py), uploaded through the app: a clear message, no traceback."""
import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.badfiles import markers_executed, write_bad_corpus
from tests.hostile import shown
from tests.conftest import ROOT

NOT_UPLOADABLE = {"missing_file"}  # a path that does not exist cannot be uploaded


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_bad_corpus(tmp_path_factory.mktemp("bad"))


def _case_names():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        return sorted(k for k in write_bad_corpus(Path(d)) if k not in NOT_UPLOADABLE)


@pytest.mark.parametrize("name", _case_names())
def test_bad_upload_gets_a_clear_message(name, corpus, tmp_path, monkeypatch):
    case = corpus[name]
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    if case.max_file_bytes is not None:
        monkeypatch.setenv("PLATOSCOPE_MAX_FILE_MB", repr(case.max_file_bytes / (1 << 20)))
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    files = [(Path(p).name, Path(p).read_bytes(), "application/octet-stream") for p in case.paths]
    if name == "unknown_extension":
        # the browser's file chooser (and Streamlit's server-side check) refuses types the uploader does not list
        suffix = Path(case.paths[0]).suffix
        assert suffix not in at.file_uploader[0].allowed_type
        assert all(t.startswith(".") for t in at.file_uploader[0].allowed_type)
        return
    at.file_uploader[0].set_value(files).run()
    if case.metadata is not None:
        at.file_uploader[1].upload(Path(case.metadata).name, Path(case.metadata).read_bytes()).run()
    at.button(key="sb_load").click().run()
    assert not at.exception, at.exception
    errors = "\n".join(shown(e.value) for e in at.error)  # the text the page shows (markup escaped)
    assert errors, f"no error shown for {name}"
    assert "Traceback" not in errors
    named = [Path(p).name for p in case.paths] + ([Path(case.metadata).name] if case.metadata else [])
    assert any(n in errors for n in named), errors
    if name == "over_size_limit":
        assert "limit" in errors and "PLATOSCOPE_MAX_FILE_MB" in errors
    else:
        assert re.search(case.message, errors, flags=re.S), (case.message, errors)
    assert at.file_uploader[0].key == "upl_files_1"  # refused bytes are dropped from Streamlit's memory ...
    assert not list((tmp_path / "cache").glob("session-*/uploads/*.*"))  # ... and from the disk
    assert not markers_executed({name: case})


def test_a_broken_server_dataset_says_which_file_and_why(tmp_path, monkeypatch):
    """A server dataset that cannot be opened: the view shows the loader's message (file, reason), not a blank."""
    import numpy as np

    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    folder = tmp_path / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    np.save(folder / "good.npy", rng.normal(size=(10, 4)).astype(np.float32))
    np.save(folder / "short.npy", rng.normal(size=(7, 4)).astype(np.float32))   # 7 rows, the other space 10
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120)
    at.query_params["dataset"] = "server:study"
    at.run()
    at.switch_page("pages/similarity.py").run()
    assert not at.exception, at.exception
    errors = " ".join(shown(e.value) for e in at.error)
    assert "short.npy" in errors and "10" in errors and "7" in errors, errors
