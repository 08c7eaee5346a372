"""The CLI's --json names a fit's loop counts for what they hold (``iterations_run``, ``epochs_run``, ``steps_run``,
``best_epoch``); each renamed key is still emitted beside its new name with the same value for one release, and the
README's "Renamed JSON keys" table lists both."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from core.cli import main
from tests.conftest import ROOT

# (command, deprecated key, new key, where) as the README table lists them
RENAMES = [
    ("universe", "n_iter", "iterations_run", "methods.gpa"),
    ("universe", "n_iter", "epochs_run", "methods.gcpa"),
    ("universe", "iterations", "iterations_run", "methods.gpa.description"),
    ("universe", "n_iter", "iterations_run", "methods.gpa.description"),
    ("universe", "stopped_epoch", "epochs_run", "methods.gcpa.description"),
    ("universe", "gpa_iterations", "gpa_iterations_run", "methods.gcpa.description"),
    ("universe", "steps", "steps_run", "methods.gcpa.description"),
    ("pointset", "epochs", "epochs_run", "training[*]"),
]


def _spaces(tmp_path, n=120, widths=(8, 10, 9)):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, 3))
    paths = []
    for m, w in enumerate(widths):
        X = z @ rng.normal(size=(3, w)) + 0.8 * rng.normal(size=(n, w))
        np.save(tmp_path / f"v{m}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"v{m}.npy"))
    return paths


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out)


def _same(d: dict, old: str, new: str):
    assert new in d and old in d, (old, new, sorted(d))
    assert d[old] == d[new] and isinstance(d[new], int)


def test_universe_counts_named_for_what_they_hold_with_old_aliases(tmp_path, capsys):
    out = _json(capsys, ["universe", *_spaces(tmp_path), "--method", "gpa,gcpa", "--epochs", "3", "--json"])
    gpa, gcpa = out["methods"]["gpa"], out["methods"]["gcpa"]
    # what the counts hold, from the histories: one GPA entry per iteration; GCPA's epoch 0 is the identity
    assert gpa["iterations_run"] == len(gpa["history"]) >= 1
    assert gcpa["epochs_run"] == gcpa["history"][-1]["epoch"] == len(gcpa["history"]) - 1 <= 3
    assert "epochs_run" not in gpa and "iterations_run" not in gcpa
    _same(gpa, "n_iter", "iterations_run")
    _same(gcpa, "n_iter", "epochs_run")
    _same(gpa["description"], "iterations", "iterations_run")
    _same(gpa["description"], "n_iter", "iterations_run")
    assert gpa["description"]["iterations_run"] == gpa["iterations_run"]
    _same(gcpa["description"], "stopped_epoch", "epochs_run")
    _same(gcpa["description"], "gpa_iterations", "gpa_iterations_run")
    assert gcpa["description"]["epochs_run"] == gcpa["epochs_run"]
    assert gcpa["description"]["gpa_iterations_run"] == gpa["iterations_run"]   # GCPA starts from this GPA
    assert 0 <= gcpa["description"]["best_epoch"] <= gcpa["epochs_run"]
    # other methods carry no loop counts
    assert not {"n_iter", "iterations_run", "epochs_run"} & set(
        _json(capsys, ["universe", *_spaces(tmp_path), "--method", "pw", "--json"])["methods"]["pw"])


def test_universe_sampled_schedule_steps_run(tmp_path, capsys):
    out = _json(capsys, ["universe", *_spaces(tmp_path), "--method", "gcpa", "--preset", "paper-d", "--epochs", "1",
                         "--json"])
    d = out["methods"]["gcpa"]["description"]
    assert d["schedule"] == "sampled"
    _same(d, "steps", "steps_run")
    _same(d, "stopped_epoch", "epochs_run")
    hist = out["methods"]["gcpa"]["history"]
    assert d["steps_run"] >= hist[-1]["step"] and d["epochs_run"] == 1 == hist[-1]["epoch"]
    assert d["best_step"] <= d["steps_run"]


def test_typed_result_reads_n_iter_as_its_alias_with_a_warning():
    from core.evaluation.universe import evaluate_universe

    rng = np.random.default_rng(1)
    z = rng.normal(size=(80, 3))
    sp = {f"v{m}": z @ rng.normal(size=(3, 6)) + rng.normal(size=(80, 6)) for m in range(3)}
    res = evaluate_universe(sp, ["gpa", "gcpa", "pw"], test_size=0.25, seed=0, gcpa_epochs=2)
    gpa, gcpa, pw = (res.methods[m] for m in ("gpa", "gcpa", "pw"))
    with pytest.warns(DeprecationWarning, match="'n_iter' is deprecated; use 'iterations_run'"):
        assert gpa["n_iter"] == gpa.iterations_run == len(gpa.history)
    with pytest.warns(DeprecationWarning, match="'n_iter' is deprecated; use 'epochs_run'"):
        assert gcpa["n_iter"] == gcpa.epochs_run
    assert "n_iter" in gpa and "n_iter" in gcpa and "n_iter" not in pw
    assert gpa.to_dict()["n_iter"] == gpa.to_dict()["iterations_run"]
    assert "n_iter" not in pw.to_dict() and "epochs_run" not in pw.to_dict()


def test_pointset_training_epochs_run(tmp_path, capsys):
    rng = np.random.default_rng(2)
    A = rng.normal(size=(60, 6, 5)).astype(np.float32)
    B = (A @ rng.normal(size=(5, 5))).astype(np.float32) + 0.1 * rng.normal(size=(60, 6, 5)).astype(np.float32)
    path = tmp_path / "sets.npz"
    np.savez(path, a_tokens=A, b_tokens=B)
    out = _json(capsys, ["pointset", f"{path}:a_tokens", f"{path}:b_tokens", "--kernel", "linear", "--train",
                         "--epochs", "2", "--queries", "10", "--seeds", "1", "--json"])
    (t,) = out["training"]
    _same(t, "epochs", "epochs_run")
    assert t["epochs_run"] == t["history"][-1]["epoch"] == len(t["history"]) - 1 <= 2
    assert 0 <= t["best_epoch"] <= t["epochs_run"]


def test_readme_documents_every_rename():
    readme = (ROOT / "README.md").read_text()
    rows = []
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`") and "`" in cells[1]:
            rows.append((cells[0].strip("`"), re.findall(r"`([^`]+)`", cells[1]), cells[2].strip("`"), cells[3]))
    for command, old, new, where in RENAMES:
        assert any(c == command and old in olds and n == new and f"`{where}`" in w for c, olds, n, w in rows), \
            (command, old, new, where)
    # and each command module's docstring names the new keys
    from core.commands import pointset, universe

    assert all(k in universe.__doc__ for k in ("iterations_run", "epochs_run", "steps_run", "gpa_iterations_run"))
    assert "epochs_run" in pointset.__doc__
