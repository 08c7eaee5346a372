import json
import math
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from badfiles import markers_executed, write_bad_corpus, write_good_corpus
from core.cli import build_parser, discover_commands, main, make_progress
from core.commands._common import format_table, to_jsonable
from core.io import load_dataset
from core.summary import summarize_dataset

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_good_corpus(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return write_bad_corpus(tmp_path_factory.mktemp("bad"))


def test_info_is_discovered():
    commands = discover_commands()
    assert "info" in commands
    for module in commands.values():
        assert module.NAME and isinstance(module.HELP, str)


def test_info_text(good, capsys):
    rc = main(["info", good["npz_stored"].path, good["npy"].path])
    out = capsys.readouterr()
    assert rc == 0 and out.err == ""
    lines = out.out.splitlines()
    assert lines[0] == "dataset 'stored': 12 items, 3 spaces"
    header = next(line for line in lines if line.startswith("space"))
    assert header.split() == ["space", "kind", "modality", "n", "T", "d", "dtype", "mean", "norm", "file", "problems"]
    assert any(re.match(r"tok\s+tokens\s+other\s+12\s+3\s+4\s+float32", line) for line in lines)
    assert any(re.match(r"text_emb\s+vectors\s+text\s+12\s+-\s+5\s+float32", line) for line in lines)


def test_info_json_matches_summary(good, capsys):
    paths = [good["parquet"].path, good["safetensors"].path]
    rc = main(["info", *paths, "--json"])
    out = capsys.readouterr()
    assert rc == 0
    result = json.loads(out.out)
    ds = load_dataset(paths)
    table = summarize_dataset(ds)
    assert [s["name"] for s in result["spaces"]] == list(table["name"])
    for s, (_, row) in zip(result["spaces"], table.iterrows()):
        assert set(s) == {"name", "kind", "modality", "n", "d", "tokens", "dtype", "mean_norm", "problems", "source"}
        assert (s["n"], s["d"], s["dtype"], s["source"]) == (row["n"], row["d"], row["dtype"], row["source"])
        assert math.isclose(s["mean_norm"], row["mean_norm"], rel_tol=1e-12)
        assert isinstance(s["problems"], list)
    toks = next(s for s in result["spaces"] if s["name"] == "toks")
    assert toks["tokens"] == 2 and toks["kind"] == "tokens"
    assert result["dataset"]["n_items"] == 12
    assert result["dataset"]["metadata_columns"] == ["label", "score"]
    assert [src["name"] for src in result["dataset"]["sources"]] == ["table.parquet", "model.safetensors"]


def test_info_meta_option(good, capsys):
    rc = main(["info", good["npz_stored"].path, "--meta", good["metadata_csv"].path, "--json"])
    result = json.loads(capsys.readouterr().out)
    assert rc == 0 and "group" in result["dataset"]["metadata_columns"]


def test_every_bad_case_exits_2_with_one_clear_line(bad, capsys):
    failures = []
    for name, case in bad.items():
        rc = main(["info", *case.cli_args()])
        out = capsys.readouterr()
        err_lines = out.err.strip().splitlines()
        if rc != 2:
            failures.append(f"{name}: exit {rc} ({out.err.strip()})")
        elif "Traceback" in out.err or len(err_lines) != 1:
            failures.append(f"{name}: not one line: {out.err!r}")
        elif not (err_lines[0].startswith("error: ") and re.search(case.message, err_lines[0])):
            failures.append(f"{name}: {err_lines[0]!r} !~ {case.message!r}")
    assert not failures, "\n".join(failures)
    assert markers_executed(bad) == []


def test_json_error_on_stdout(bad, capsys):
    rc = main(["info", *bad["nan_npy"].cli_args(), "--json"])
    out = capsys.readouterr()
    assert rc == 2
    payload = json.loads(out.out)
    assert payload["file"] == "nan.npy" and payload["row"] == 3 and "NaN" in payload["error"]
    assert out.err.startswith("error: nan.npy")


def test_usage_errors_exit_2(capsys):
    assert main(["info"]) == 2  # FILE is required
    assert main(["no-such-command"]) == 2
    assert main([]) == 2
    assert main(["info", "x.npy", "--max-file-mb", "lots"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "usage:" in err
    assert main(["--help"]) == 0
    assert main(["info", "--help"]) == 0
    assert "--json" in capsys.readouterr().out


def test_max_file_mb_must_be_positive(good, capsys):
    assert main(["info", good["npy"].path, "--max-file-mb", "0"]) == 2
    assert "--max-file-mb must be positive" in capsys.readouterr().err


@pytest.fixture
def fake_plugins(tmp_path, monkeypatch):
    pkg = tmp_path / "fakecmds"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "_helper.py").write_text("NAME = 'helper'\n")  # underscore: never a command
    (pkg / "noname.py").write_text("X = 1\n")  # no NAME: skipped silently
    (pkg / "broken.py").write_text("import does_not_exist_anywhere\n")
    (pkg / "echo.py").write_text(textwrap.dedent('''
        import numpy as np
        from core.errors import DataError
        NAME = "echo"
        HELP = "echo test"
        def add_arguments(parser):
            parser.add_argument("word")
        def run(args, progress):
            if args.word == "bad":
                raise DataError("bad word", file="w.txt", row=4, hint="try another")
            if args.word == "bug":
                raise ZeroDivisionError("oops")
            if args.word == "missing":
                open("/definitely/not/here.npy")
            total = sum(progress(range(3), total=3, desc="counting"))
            return {"word": args.word, "total": np.int64(total), "value": np.float32(0.5), "nan": float("nan"),
                    "vec": np.arange(3)}
        def render(result):
            return f"{result['word']}={result['total']}"
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    return "fakecmds"


def test_plugin_framework(fake_plugins, capsys):
    warnings = []
    commands = discover_commands(fake_plugins, warn=warnings.append)
    assert list(commands) == ["echo"]
    assert len(warnings) == 1 and "fakecmds.broken" in warnings[0]
    assert main(["echo", "hi"], package=fake_plugins) == 0
    assert capsys.readouterr().out == "hi=3\n"
    assert main(["echo", "hi", "--json"], package=fake_plugins) == 0
    assert json.loads(capsys.readouterr().out) == {"word": "hi", "total": 3, "value": 0.5, "nan": None,
                                                   "vec": [0, 1, 2]}
    assert main(["echo", "bad"], package=fake_plugins) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == "error: w.txt, row 4: bad word -> try another"
    assert main(["echo", "missing"], package=fake_plugins) == 2
    err = capsys.readouterr().err
    assert "/definitely/not/here.npy: file not found" in err and "Traceback" not in err
    assert main(["echo", "bug"], package=fake_plugins) == 1
    err = capsys.readouterr().err
    assert "internal error in 'echo': ZeroDivisionError: oops" in err and "Traceback" not in err


def test_progress_wrapper(capsys):
    off = make_progress(False)
    items = [1, 2, 3]
    assert off(items, total=3, desc="x") is items
    on = make_progress(True)
    assert list(on(iter(items), total=3, desc="counting")) == items
    assert "counting" in capsys.readouterr().err


def test_progress_flag_enables_bar_with_json(fake_plugins, capsys):
    assert main(["echo", "hi", "--json", "--progress"], package=fake_plugins) == 0
    out = capsys.readouterr()
    assert json.loads(out.out)["total"] == 3 and "counting" in out.err
    assert main(["echo", "hi", "--json"], package=fake_plugins) == 0
    assert "counting" not in capsys.readouterr().err


def test_to_jsonable():
    value = {"a": np.float64(1.5), "b": np.array([[1.0, np.nan], [np.inf, 2.0]]), "c": (np.int32(2), None),
             "d": Path("/x/y"), 3: np.bool_(True), "e": float("-inf")}
    out = to_jsonable(value)
    assert out == {"a": 1.5, "b": [[1.0, None], [None, 2.0]], "c": [2, None], "d": "/x/y", "3": True, "e": None}
    json.dumps(out, allow_nan=False)
    assert type(out["a"]) is float and type(out["c"][0]) is int


def test_format_table_alignment():
    text = format_table([{"name": "a", "x": 1.5}, {"name": "longer", "x": 12.25}], ["name", "x"])
    lines = text.splitlines()
    assert lines[0].split() == ["name", "x"]
    assert lines[2] == "a         1.5"
    assert lines[3] == "longer  12.25"


def test_build_parser_adds_json_to_every_command():
    parser = build_parser()
    args = parser.parse_args(["info", "a.npy", "--json", "--meta", "m.csv", "--max-file-mb", "5"])
    assert args.json and args.meta == "m.csv" and args.max_file_mb == 5.0 and args.files == ["a.npy"]


def test_python_dash_m_core_info(good):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "core", "info", good["npy"].path, "--json"], cwd=ROOT,
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    x = np.load(good["npy"].path)
    assert result["spaces"][0]["name"] == "text_emb"
    assert math.isclose(result["spaces"][0]["mean_norm"], float(np.linalg.norm(x.astype(np.float64), axis=1).mean()),
                        rel_tol=1e-12)
    bad = subprocess.run([sys.executable, "-m", "core", "info", str(Path(good["npy"].path).with_suffix(".nope"))],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and "file not found" in bad.stderr
