"""GPA's stopping rules and reported fit facts (core/universe.py), against a numpy iteration written out here."""
import numpy as np
import pytest

from core.universe import GPA
from core.universe_eval import evaluate_universe


def spaces(n=200, widths=(10, 12, 9, 11), k=3, seed=0):
    """A weak shared signal under strong space-specific noise: the consensus keeps drifting for a long time."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    return {f"v{m}": z @ rng.normal(size=(k, w)) + 1.5 * rng.normal(size=(n, w)) for m, w in enumerate(widths)}


def naive_objectives(Xs, iters):
    """R_m = I; then R_m = polar(X_m^T U), U = mean X_m R_m; returns sum_m ||X_m R_m - U||^2 after each step."""
    R = [np.eye(Xs[0].shape[1]) for _ in Xs]
    U = sum(X @ r for X, r in zip(Xs, R)) / len(Xs)
    out = [sum(((X @ r - U) ** 2).sum() for X, r in zip(Xs, R))]
    changes = []
    for _ in range(iters):
        R = []
        for X in Xs:
            A, _, Bt = np.linalg.svd(X.T @ U)
            R.append(A @ Bt)
        U_new = sum(X @ r for X, r in zip(Xs, R)) / len(Xs)
        changes.append(np.linalg.norm(U_new - U) / np.linalg.norm(U))
        U = U_new
        out.append(sum(((X @ r - U) ** 2).sum() for X, r in zip(Xs, R)))
    return np.array(out), np.array(changes)


def test_defaults_are_the_authors():
    gpa = GPA()
    assert (gpa.max_iter, gpa.tol) == (50, 1e-6)     # METHODS.md 7.4


def test_objective_is_the_summed_squared_distance_to_the_consensus():
    sp = spaces()
    gpa = GPA(max_iter=7, tol=0.0, objective_tol=0.0).fit(sp)
    pre = {k: gpa.preprocess(k, sp[k]) for k in sp}
    direct = sum(((pre[k] @ gpa.R_[k] - gpa.consensus_) ** 2).sum() for k in sp)
    assert gpa.objective_ == pytest.approx(direct, rel=1e-9)
    assert gpa.n_iter_ == 7 and gpa.stop_reason_ == "max_iter" and not gpa.converged_
    ref, _ = naive_objectives(list(pre.values()), 7)
    assert np.allclose([h["objective"] for h in gpa.history_], ref[1:], rtol=1e-9)
    assert all(b <= a * (1 + 1e-12) for a, b in zip(ref, ref[1:]))       # GPA never increases the objective


def test_stops_on_the_objective_where_the_numpy_iteration_says():
    sp = spaces(seed=1)
    probe = GPA(max_iter=1, tol=0.0, objective_tol=0.0).fit(sp)
    pre = [probe.preprocess(k, sp[k]) for k in sp]
    ref, changes = naive_objectives(pre, 300)
    rel = np.abs(np.diff(ref)) / ref[:-1]
    obj_tol = 1e-5
    expected = int(np.argmax(rel < obj_tol)) + 1
    assert rel[expected - 1] < obj_tol and np.all(changes[:expected] >= 1e-12)
    gpa = GPA(max_iter=300, tol=1e-12, objective_tol=obj_tol).fit(sp)
    assert gpa.stop_reason_ == "objective" and gpa.converged_
    assert gpa.n_iter_ == expected
    assert gpa.history_[-1]["objective_relative_change"] == pytest.approx(rel[expected - 1], rel=1e-6, abs=1e-15)


def test_consensus_rule_alone_when_objective_rule_is_off():
    sp = spaces(seed=2)
    gpa = GPA(max_iter=500, tol=1e-4, objective_tol=0).fit(sp)
    probe = GPA(max_iter=1, tol=0.0, objective_tol=0.0).fit(sp)
    _, changes = naive_objectives([probe.preprocess(k, sp[k]) for k in sp], 500)
    assert gpa.stop_reason_ == "consensus"
    assert gpa.n_iter_ == int(np.argmax(changes < 1e-4)) + 1


def test_every_universe_fit_reports_iterations_and_objective():
    sp = spaces(n=120)
    out = evaluate_universe(sp, ["gpa", "gcpa"], test_size=0.25, seed=0, gcpa_epochs=2)
    g = out["methods"]["gpa"]
    assert g["iterations_run"] == len(g["history"]) and 1 <= g["iterations_run"] <= 50
    assert g["objective"] == pytest.approx(g["history"][-1]["objective"])
    assert g["description"]["stop_reason"] in ("consensus", "objective", "max_iter")
    assert out["methods"]["gcpa"]["epochs_run"] == out["methods"]["gcpa"]["description"]["epochs_run"]


def test_universe_command_reports_iterations_and_objective(tmp_path, capsys):
    import json

    from core.cli import main
    from core.universe_eval import split_train_test

    sp = spaces(n=150, widths=(8, 10, 9))
    paths = []
    for name, X in sp.items():
        np.save(tmp_path / f"{name}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"{name}.npy"))
    assert main(["universe", *paths, "--method", "gpa", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)["methods"]["gpa"]
    train, _ = split_train_test(150, 0.2, seed=0)
    ref = GPA().fit({k: sp[k].astype(np.float32)[train] for k in sp})
    assert out["iterations_run"] == ref.n_iter_ and out["objective"] == pytest.approx(ref.objective_, rel=1e-9)
    assert main(["universe", *paths, "--method", "gpa"]) == 0
    assert f"GPA: {ref.n_iter_} iterations, objective" in capsys.readouterr().out
