"""Paper presets (core/presets.py) and the behaviour METHODS.md section 7 states for each of them.

Paper D: the authors' preprocessing order, RACING-GCCA against a naive block eigenproblem written here, GPA-ADD
against the preprocessed consensus, GCPA's sampled-batch schedule.
"""
import json

import numpy as np
import pytest
from scipy.stats import ortho_group

from core import presets
from core.errors import DataError
from core.universe import GCCA, GCPA, GPA, UniversePreprocessor
from core.universe_eval import evaluate_universe


def planted(n=300, k=5, widths=(12, 9, 15), seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    out = {}
    for m, w in enumerate(widths):
        sc = 1.0
        X = np.hstack([z + 0.3 * rng.normal(size=(n, k)), rng.normal(size=(n, w - k))]) * np.linspace(3, 0.5, w)
        out[f"v{m}"] = sc * (X @ ortho_group.rvs(w, random_state=seed * 10 + m)) + rng.normal(size=w) * 4
    return out


# ------------------------------------------------------------------------------------------------
# the preset registry
# ------------------------------------------------------------------------------------------------
def test_resolve_spellings_and_refusals():
    assert presets.resolve("paper-d") == presets.resolve("paper_d") == presets.resolve("D") == "paper_d"
    assert presets.resolve(None) == presets.resolve("custom") == "custom"
    with pytest.raises(DataError, match="unknown preset"):
        presets.resolve("paper-z")
    with pytest.raises(DataError, match="does not apply"):
        presets.settings_for("D", "paper-c")


def test_every_preset_differs_from_the_default_and_says_so_in_one_line():
    for name, p in presets.PRESETS.items():
        diffs = p.differences_from_default()
        assert diffs, name                                   # each preset changes something
        for d in diffs:
            line = d.line()
            assert line.startswith("custom: ") and "the authors' code" in line and "\n" not in line
        # under the preset itself nothing departs from the authors
        assert presets.differences(p.settings) == []
        rec = presets.record(p.paper, name)
        assert rec["name"] == name and json.dumps(rec)
        assert rec["differences"][0].startswith(f"paper {p.paper} preset")


def test_paper_d_default_line_names_the_order():
    lines = presets.difference_lines("D", "custom")
    assert "custom: z-score, then PCA; the authors' code does PCA on the raw features, then z-score" in lines


# ------------------------------------------------------------------------------------------------
# paper D
# ------------------------------------------------------------------------------------------------
def test_pca_then_zscore_gives_unit_variance_columns_and_matches_sklearn_pca():
    from sklearn.decomposition import PCA

    sp = planted()
    pre = UniversePreprocessor(order="pca-zscore").fit(sp)
    assert pre.dim_ == 9
    for name, X in sp.items():
        Z = pre.transform(name, X)
        np.testing.assert_allclose(Z.mean(0), 0, atol=1e-9)
        np.testing.assert_allclose(Z.std(0, ddof=1), 1, rtol=1e-9)
        if X.shape[1] > 9:   # PCA of the raw features (sklearn), then z-score: equal up to column signs
            P = PCA(9).fit_transform(X)
            P = P / P.std(0, ddof=1)
            signs = np.sign((P * Z).sum(0))
            np.testing.assert_allclose(Z, P * signs, atol=1e-7)
    # the default order differs on the same data (PCA of z-scored features is another subspace)
    zd = UniversePreprocessor().fit(sp).transform("v2", sp["v2"])
    zp = pre.transform("v2", sp["v2"])
    assert not np.allclose(np.abs(zd), np.abs(zp), atol=1e-3)
    # the inverse goes back into the raw coordinates of the kept components
    back = pre.inverse_t("v0", __import__("torch").as_tensor(pre.transform("v0", sp["v0"]))).numpy()
    Xc = sp["v0"] - sp["v0"].mean(0)
    V = PCA(9).fit(sp["v0"]).components_.T
    np.testing.assert_allclose(back - sp["v0"].mean(0), Xc @ V @ V.T, atol=1e-7)


def naive_racing(Xs, R):
    """RACING-GCCA written out: per-space thin SVDs, the explicit block matrix, its R smallest eigenvectors."""
    M = len(Xs)
    svd = [np.linalg.svd(X, full_matrices=False) for X in Xs]
    sizes = [u.shape[1] for u, _, _ in svd]
    S = np.zeros((sum(sizes), sum(sizes)))
    offs = np.concatenate([[0], np.cumsum(sizes)])
    for i in range(M):
        for j in range(M):
            blk = (M - 1) * np.eye(sizes[i]) if i == j else -svd[i][0].T @ svd[j][0]
            S[offs[i]:offs[i + 1], offs[j]:offs[j + 1]] = blk
    vals, vecs = np.linalg.eigh(S)
    Phi = vecs[:, :R]
    coords = [svd[m][0] @ np.diag(svd[m][1]) @ Phi[offs[m]:offs[m + 1]] for m in range(M)]
    return coords, vals[:R], [s for _, s, _ in svd]


def test_racing_gcca_matches_the_naive_block_eigenproblem():
    sp = planted(widths=(7, 9, 8))
    g = GCCA(variant="racing", standardize=False).fit(sp)
    Z = [g.preprocess(m, sp[m]) for m in sp]
    coords, vals, _ = naive_racing(Z, 7)
    assert g.n_components_ == 7   # rank = the smallest width
    # compare the subspace of the stacked eigenvectors (sign / rotation invariant) through the coordinates
    mine = np.hstack([g.to_universe(m, sp[m]) for m in sp])
    ref = np.hstack(coords)
    # both are stacked coordinates [U_m S_m Phi_m]; Phi is defined up to an R x R orthogonal factor
    Q, _, Vt = np.linalg.svd(mine.T @ ref)
    np.testing.assert_allclose(mine @ (Q @ Vt), ref, atol=1e-7)
    np.testing.assert_allclose(np.sort(g.eigenvalues_), np.sort(vals), atol=1e-9)


def test_racing_gcca_coordinates_keep_each_space_spectrum():
    sp = planted()
    g = GCCA(variant="racing", standardize=False).fit(sp)
    # scaling one space scales its universe coordinates (U_m S_m Phi_m); MAXVAR's whitened coordinates do not
    sp2 = dict(sp, v1=sp["v1"] * 7.0)
    g2 = GCCA(variant="racing", standardize=False).fit(sp2)
    np.testing.assert_allclose(np.abs(g2.to_universe("v1", sp2["v1"])), 7 * np.abs(g.to_universe("v1", sp["v1"])),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(np.abs(g2.to_universe("v0", sp["v0"])), np.abs(g.to_universe("v0", sp["v0"])),
                               atol=1e-8)
    m1 = GCCA(standardize=False).fit(sp)
    m2 = GCCA(standardize=False).fit(sp2)
    ratio = np.linalg.norm(m2.to_universe("v1", sp2["v1"])) / np.linalg.norm(m1.to_universe("v1", sp["v1"]))
    assert ratio < 2   # the ridge MAXVAR re-whitens: a 7x scale does not carry through
    # U_m^T (coordinates) / S_m is the per-space slice of orthonormal eigenvectors: stacked, Phi^T Phi = I
    Phis = []
    for m in sp:
        Z = g.preprocess(m, sp[m])
        U, S, _ = np.linalg.svd(Z, full_matrices=False)
        np.testing.assert_allclose(S, g.singular_values_[m], rtol=1e-9)
        Phis.append((U.T @ g.to_universe(m, sp[m])) / S[:, None])
    Phi = np.vstack(Phis)
    np.testing.assert_allclose(Phi.T @ Phi, np.eye(g.n_components_), atol=1e-8)
    # rank = the smallest width; the map a -> b is Q_a Q_b^T
    assert g.n_components_ == 9
    za = g.preprocess("v0", sp["v0"])
    np.testing.assert_allclose(g.map_between(za, "v0", "v2"), za @ g.W_["v0"] @ g.W_["v2"].T, atol=1e-10)


def test_racing_refuses_a_ridge_and_labels_say_which():
    sp = planted()
    with pytest.raises(DataError, match="no ridge"):
        GCCA(variant="racing", reg=5.0).fit(sp)
    assert GCCA(variant="racing").label == "GCCA (RACING, no ridge)"
    assert GCCA().fit(sp).label.startswith("GCCA (MAXVAR, ridge")


def test_gpa_add_under_the_authors_order_fits_against_the_preprocessed_consensus():
    sp = planted(widths=(12, 9, 15, 11))
    base = {k: sp[k] for k in ("v0", "v1", "v2")}
    g = GPA(preprocess_order="pca-zscore").fit(base)
    g.add_space("v3", sp["v3"])
    # the new space: PCA of the raw rows to the universe width, then z-score (sklearn as the reference) ...
    from sklearn.decomposition import PCA
    P = PCA(g.preprocessor_.dim_).fit_transform(sp["v3"])
    P = P / P.std(0, ddof=1)
    z = g.preprocess("v3", sp["v3"])
    np.testing.assert_allclose(np.abs(z), np.abs(P), atol=1e-7)
    # ... rotated by the Procrustes fit of those rows onto the stored consensus
    A, _, Bt = np.linalg.svd(z.T @ g.consensus_)
    np.testing.assert_allclose(g.R_["v3"], A @ Bt, atol=1e-9)


def test_gcpa_sampled_schedule_validates_every_interval_and_keeps_the_best_checked_weights():
    sp = planted(n=200)
    m = GCPA(schedule="sampled", max_epochs=2, steps_per_epoch=30, val_interval=10, val_batches=3,
             val_patience=100, batch_size=64, seed=0).fit(sp)
    steps = [h["step"] for h in m.history_]
    assert steps == [10, 20, 30, 40, 50, 60]               # 2 epochs x 30 steps, a check every 10
    best = min(h["heldout_loss"] for h in m.history_)
    assert m.best_step_ == [h["step"] for h in m.history_ if h["heldout_loss"] == best][0]
    assert m.describe()["schedule"] == "sampled"
    # patience counts checks: with patience 1 training stops at the first check that does not improve
    m1 = GCPA(schedule="sampled", max_epochs=20, steps_per_epoch=30, val_interval=10, val_batches=3,
              val_patience=1, batch_size=64, seed=0, lr=0.5).fit(sp)
    losses = [h["heldout_loss"] for h in m1.history_]
    first_bad = next(i for i in range(1, len(losses)) if losses[i] >= min(losses[:i]) - 1e-7)
    assert len(losses) == first_bad + 1
    # default steps per epoch: max(200, ceil(train rows / batch)); 40-step interval once the held-out set is a batch
    m2 = GCPA(schedule="sampled", max_epochs=1, val_batches=2, batch_size=8, seed=0).fit(sp)
    assert m2.n_steps_ == 200 and [h["step"] for h in m2.history_][:2] == [40, 80]


def test_paper_d_preset_runs_through_evaluate_universe():
    sp = planted(n=200)
    kw = presets.settings_for("D", "paper-d").universe_kwargs()
    kw["gcpa_epochs"] = 1
    res = evaluate_universe(sp, ["gcca", "gpa"], seed=0, **kw)
    assert res["methods"]["gcca"]["label"] == "GCCA (RACING, no ridge)"
    assert res["methods"]["gpa"]["description"]["preprocessing"]["order"] == "pca-zscore"


def test_universe_command_records_the_preset(tmp_path, capsys):
    from core.cli import main

    sp = planted(n=150)
    paths = []
    for name, X in sp.items():
        np.save(tmp_path / f"{name}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"{name}.npy"))
    assert main(["universe", *paths, "--method", "gcca", "--preset", "paper-d", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "paper_d" and out["preset"]["settings"]["gcca_variant"] == "racing"
    assert out["methods"]["gcca"]["label"] == "GCCA (RACING, no ridge)"
    assert main(["universe", *paths, "--method", "gcca", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "custom"
    assert any(line.startswith("custom: z-score, then PCA") for line in out["preset"]["differences"])
    assert main(["universe", *paths, "--method", "gcca", "--preset", "paper-d"]) == 0
    assert "GCCA (RACING, no ridge)" in capsys.readouterr().out
    assert main(["universe", *paths, "--preset", "paper-c"]) == 2     # argparse refuses another paper's preset
