"""The hostile-input corpus (tests/hostile.py) through the loader, the CLI and the app: refused before inflating,
with a message naming the file, the member and the sizes; never a traceback, never the memory it asks for."""
import json
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from hostile import TRAVERSAL_NAMES, shown, write_hostile_corpus
from core.cli import main
from core.errors import BudgetError, DataError

ROOT = Path(__file__).resolve().parents[1]
BUDGET_MB = "32"
TINY_CFG = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
            "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_hostile_corpus(tmp_path_factory.mktemp("hostile"))


@pytest.fixture
def budget(monkeypatch):
    monkeypatch.setenv("PLATOSCOPE_SESSION_BUDGET_MB", BUDGET_MB)
    monkeypatch.setenv("PLATOSCOPE_MAX_IMAGES", "5")


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    import open_clip

    path = tmp_path_factory.mktemp("oc") / "platoscope-hostile-tiny.json"
    path.write_text(json.dumps(TINY_CFG))
    open_clip.add_model_config(path)
    return "platoscope-hostile-tiny"


EMBEDDINGS = ["npz_bomb", "parquet_bomb", "nested_safetensors", "raw_pickle_pt"]
IMAGE_BOMBS = ["zip_entry_bomb", "image_bomb"]


# -- the loader -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EMBEDDINGS)
def test_loader_refuses_with_a_specific_message(name, corpus, budget):
    from core.io import load_file

    case = corpus[name]
    with pytest.raises(DataError) as err:
        load_file(case.path)
    assert re.search(case.message, str(err.value), flags=re.S), str(err.value)
    if name.endswith("bomb"):
        assert isinstance(err.value, BudgetError)
    if case.marker:
        assert not Path(case.marker).exists()


def test_server_wide_budget_applies_when_the_session_one_would_not(corpus, monkeypatch):
    from core.io import load_file

    monkeypatch.setenv("PLATOSCOPE_SESSION_BUDGET_MB", "100000")
    monkeypatch.setenv("PLATOSCOPE_SERVER_BUDGET_MB", "64")
    with pytest.raises(BudgetError, match=r"bomb\.npz.*emb\.npy.*server-wide (memory )?budget.*64\.0 MB"):
        load_file(corpus["npz_bomb"].path)


def test_ledger_counts_live_reservations_across_owners(monkeypatch):
    from core.budget import MemoryBudget, MemoryLedger

    ledger = MemoryLedger(limit=100)
    a = ledger.reservation("session-a")
    a.grow(60)
    b = MemoryBudget(1000, reservation=ledger.reservation("session-b"))
    with pytest.raises(BudgetError, match="server-wide budget"):
        b.charge(50, file="f.npz", member="x")
    assert b.used == 0
    a.release()
    b.charge(50, file="f.npz", member="x")
    del a
    assert ledger.reserved() == 50


@pytest.mark.parametrize("name", IMAGE_BOMBS)
def test_image_bombs_refused_from_headers(name, corpus, budget):
    from core.encoders import list_images

    with pytest.raises(DataError) as err:
        list_images(corpus[name].path)
    assert re.search(corpus[name].message, str(err.value)), str(err.value)


def test_many_entries_are_capped_and_listed(corpus, budget):
    from core.encoders import list_images

    found = list_images(corpus["many_entries"].path)
    assert found.names == [f"img{i:05d}.png" for i in range(5)]
    capped = [n for n, r in found.ignored if "PLATOSCOPE_MAX_IMAGES" in r]
    assert len(capped) == 10_000 - 5


def test_path_traversal_entries_are_reported(corpus, budget):
    from core.encoders import list_images

    found = list_images(corpus["path_traversal"].path)
    assert found.names == ["ok.png"]
    reasons = dict(found.ignored)
    assert set(TRAVERSAL_NAMES) <= set(reasons)
    assert all("path traversal" in reasons[n] for n in TRAVERSAL_NAMES)


def test_uploaded_image_list_with_a_zip_inside_is_not_unpacked(corpus, budget):
    from core.encoders import list_images

    data = Path(corpus["zip_entry_bomb"].path).read_bytes()
    with pytest.raises(DataError, match=r"none of its 2 image entries"):
        list_images([("zipbomb.zip", data)])


def _peak_rss_growth_mb(code: str) -> float:
    script = textwrap.dedent("""
        import resource, sys
        sys.path[:0] = [{root!r}, {tests!r}]
        import numpy, pandas, PIL.Image, zipfile, core.io, core.encoders  # imported before the baseline
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        try:
        {body}
        except Exception as err:
            print("ERR", type(err).__name__, err, file=sys.stderr)
        print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
    """).format(root=str(ROOT), tests=str(ROOT / "tests"), body=textwrap.indent(code, "    "))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                         env={"PLATOSCOPE_SESSION_BUDGET_MB": BUDGET_MB, "PATH": "/usr/bin:/bin",
                              "PLATOSCOPE_DEVICE": "cpu"})
    assert out.returncode == 0, out.stderr
    assert "ERR" in out.stderr, out.stderr  # it was refused
    return float(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name,call", [("npz_bomb", "core.io.load_file({path!r})"),
                                       ("zip_entry_bomb", "core.encoders.list_images({path!r})"),
                                       ("image_bomb", "core.encoders.list_images({path!r})")])
def test_refusal_does_not_inflate(name, call, corpus):
    # a naive reader would build >= 1 GB; the refusal stays far below (robust margin, no timing involved)
    growth = _peak_rss_growth_mb(call.format(path=corpus[name].path))
    assert corpus[name].inflated >= 1 << 30
    assert growth < 150, f"{name}: peak RSS grew by {growth:.0f} MB"


# -- the CLI --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", EMBEDDINGS)
def test_cli_info_exits_2_with_one_line(name, corpus, budget, capsys):
    case = corpus[name]
    rc = main(["info", case.path])
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert rc == 2, out.err
    assert "Traceback" not in out.err and len(lines) == 1, out.err
    assert lines[0].startswith("error: ") and re.search(case.message, lines[0]), lines[0]


@pytest.mark.parametrize("name", IMAGE_BOMBS)
def test_cli_encode_image_bombs_exit_2(name, corpus, budget, tiny_clip, tmp_path, capsys):
    rc = main(["encode", "--images", corpus[name].path, "--model", f"open_clip:{tiny_clip}:none",
               "-o", str(tmp_path / "out.npz")])
    out = capsys.readouterr()
    assert rc == 2, out.err
    assert "Traceback" not in out.err
    assert re.search(corpus[name].message, out.err), out.err
    assert not (tmp_path / "out.npz").exists()


@pytest.mark.parametrize("name", ["many_entries", "path_traversal"])
def test_cli_encode_reports_what_it_skipped(name, corpus, budget, tiny_clip, tmp_path, capsys):
    rc = main(["encode", "--images", corpus[name].path, "--model", f"open_clip:{tiny_clip}:none",
               "-o", str(tmp_path / "out.npz"), "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    result = json.loads(out.out)
    skipped = {s["name"]: s["reason"] for s in result["skipped_images"]}
    if name == "many_entries":
        assert result["n_items"] == 5 and len(skipped) == 10_000 - 5
    else:
        assert result["n_items"] == 1
        assert all("path traversal" in skipped[n] for n in TRAVERSAL_NAMES)


# -- the app --------------------------------------------------------------------------------------------------------
@pytest.fixture
def app_env(tmp_path, monkeypatch, budget):
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    monkeypatch.setenv("PLATOSCOPE_DEMO", "0")
    return tmp_path


@pytest.mark.parametrize("name", EMBEDDINGS)
def test_app_upload_refused_with_the_message(name, corpus, app_env):
    from streamlit.testing.v1 import AppTest

    case = corpus[name]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=120).run()
    at.file_uploader[0].set_value([(Path(case.path).name, Path(case.path).read_bytes(),
                                    "application/octet-stream")]).run()
    at.button(key="sb_load").click().run()
    assert not at.exception, at.exception
    errors = "\n".join(shown(e.value) for e in at.error)
    assert re.search(case.message, errors, flags=re.S), errors
    assert "Traceback" not in errors
    assert not list((app_env / "cache").glob("session-*/uploads/*.*"))  # the refused file was deleted
    if case.marker:
        assert not Path(case.marker).exists()


def _encode_images(at, tiny_clip, upload):
    at.switch_page("pages/encode.py")
    at.run()
    at.radio(key="url__model").set_value("open_clip").run()
    at.text_input(key="url__clip_model").set_value(tiny_clip).run()
    at.text_input(key="url__clip_tag").set_value("none").run()
    at.file_uploader(key="enc_images").set_value([upload]).run()
    from tests.app_jobs import finish_jobs

    return finish_jobs(at.button(key="enc_go").click().run())     # encoding runs as a job


@pytest.mark.parametrize("name", IMAGE_BOMBS + ["many_entries", "path_traversal"])
def test_app_encode_images(name, corpus, app_env, tiny_clip):
    from streamlit.testing.v1 import AppTest

    case = corpus[name]
    at = AppTest.from_file(str(ROOT / "app.py"), default_timeout=300).run()
    at = _encode_images(at, tiny_clip, (Path(case.path).name, Path(case.path).read_bytes(), "application/zip"))
    assert not at.exception, at.exception
    errors = "\n".join(shown(e.value) for e in at.error)
    assert "Traceback" not in errors
    if case.message:
        assert re.search(case.message, errors), errors
    else:
        assert not errors, errors
        skipped = at.dataframe[1].value  # spaces table, then the skipped images
        reasons = dict(zip(skipped["name"], skipped["reason"]))
        if name == "many_entries":
            assert len(reasons) == 10_000 - 5
        else:
            assert all("path traversal" in reasons[f"{Path(case.path).name}/{n}"] for n in TRAVERSAL_NAMES)
