"""Universe estimators (core/universe.py) against naive references written out here."""
import numpy as np
import pytest
import torch
from scipy.stats import ortho_group

from core.errors import DataError
from core.universe import GCCA, GCPA, GPA, PairwiseProcrustes, UniversePreprocessor, make_estimator


def rotated(n=120, d=6, M=4, seed=0):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d)) * np.linspace(3, 1, d)
    return Z, {f"s{m}": Z @ ortho_group.rvs(d, random_state=seed * 10 + m) for m in range(M)}


def noisy(n=150, widths=(8, 12, 10), k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    return {f"v{m}": z @ rng.normal(size=(k, w)) + 0.5 * rng.normal(size=(n, w)) + rng.normal(size=w) * 3
            for m, w in enumerate(widths)}


def planted(n=500, k=6, noise=10, M=3, seed=0):
    """Shared k-dim signal plus space-specific noise dimensions, each space rotated at random."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k))
    out = {}
    for m in range(M):
        X = np.hstack([z + 0.3 * rng.normal(size=(n, k)), rng.normal(size=(n, noise))])
        out[f"v{m}"] = X @ ortho_group.rvs(k + noise, random_state=seed * 10 + m)
    return out


def naive_gpa(Xs, iters=3000, tol=1e-13):
    """GPA written out in numpy: R_m = I, U = mean X_m R_m, R_m = polar(X_m^T U), until U stops moving."""
    R = [np.eye(Xs[0].shape[1]) for _ in Xs]
    U = sum(X @ r for X, r in zip(Xs, R)) / len(Xs)
    for _ in range(iters):
        R = []
        for X in Xs:
            A, _, Bt = np.linalg.svd(X.T @ U)
            R.append(A @ Bt)
        U_new = sum(X @ r for X, r in zip(Xs, R)) / len(Xs)
        done = np.linalg.norm(U_new - U) / np.linalg.norm(U) < tol
        U = U_new
        if done:
            break
    return R, U


# ------------------------------------------------------------------------------------------------ GPA
def test_gpa_recovers_exact_rotations():
    Z, sp = rotated()
    gpa = GPA(standardize=False, tol=1e-12).fit(sp)
    for a in sp:
        assert np.allclose(gpa.R_[a] @ gpa.R_[a].T, np.eye(6), atol=1e-10)
        # every space lands on the consensus, and a -> b maps X_a onto X_b exactly
        assert np.abs(gpa.to_universe(a, sp[a]) - gpa.consensus_).max() < 1e-9
        for b in sp:
            assert np.abs(gpa.translate(sp[a], a, b) - sp[b]).max() < 1e-9
    assert gpa.history_[-1]["residual"] < 1e-10 * (Z ** 2).sum(1).mean()
    assert gpa.converged_


def test_gpa_consensus_does_not_depend_on_order():
    sp = noisy()
    a = GPA(tol=1e-12).fit(sp)
    b = GPA(tol=1e-12).fit({k: sp[k] for k in reversed(list(sp))})
    assert np.abs(a.consensus_ - b.consensus_).max() < 1e-8
    for k in sp:
        assert np.abs(a.R_[k] - b.R_[k]).max() < 1e-8


def test_gpa_matches_naive_numpy_iteration():
    sp = noisy(seed=3)
    gpa = GPA(tol=1e-13, max_iter=3000, objective_tol=0).fit(sp)   # the reference stops on the consensus only
    pre = [gpa.preprocess(k, sp[k]) for k in sp]
    R, U = naive_gpa(pre)
    assert np.abs(gpa.consensus_ - U).max() < 1e-7
    for k, r in zip(sp, R):
        assert np.abs(gpa.R_[k] - r).max() < 1e-7


def test_gpa_add_fits_only_the_new_map():
    Z, sp = rotated(M=4, seed=2)
    base = {k: sp[k] for k in ("s0", "s1", "s2")}
    gpa = GPA(standardize=False, tol=1e-12).fit(base)
    before = {k: v.copy() for k, v in gpa.R_.items()}
    gpa.add_space("s3", sp["s3"])
    for k in base:
        assert np.array_equal(gpa.R_[k], before[k])
    # naive: polar factor of X_new^T U against the fixed consensus
    X = gpa.preprocess("s3", sp["s3"])
    A, _, Bt = np.linalg.svd(X.T @ gpa.consensus_)
    assert np.allclose(gpa.R_["s3"], A @ Bt, atol=1e-10)
    # an exact rotation of the others is recovered: s3 -> s0 maps onto s0
    assert np.abs(gpa.translate(sp["s3"], "s3", "s0") - sp["s0"]).max() < 1e-8
    with pytest.raises(DataError):
        gpa.add_space("s3", sp["s3"])
    with pytest.raises(DataError):
        gpa.add_space("s9", sp["s3"][:10])



def test_gpa_add_that_fails_leaves_the_estimator_as_before(monkeypatch):
    """A GPA-ADD that fails after the new space's preprocessing was fitted (here: its polar factor) leaves the
    GPA, its preprocessor and a GCPA sharing that preprocessor exactly as they were; a later add still works."""
    import pickle

    import core.universe as cu

    _, sp = rotated(M=4, seed=3)
    base = {k: sp[k] for k in ("s0", "s1", "s2")}
    gpa = GPA(standardize=False, tol=1e-12).fit(base)
    gcpa = GCPA(max_epochs=1, random_state=0).fit(base, gpa=gpa)
    shared_pre = gcpa.preprocessor_

    def state(est):                      # every attribute's value, byte for byte (GCPA's own GPA aside)
        return {k: pickle.dumps(v) for k, v in est.__dict__.items() if k != "gpa_"}

    before, before_gcpa = state(gpa), state(gcpa)

    def broken(M):
        raise RuntimeError("polar factor failed")

    monkeypatch.setattr(cu, "_polar", broken)
    with pytest.raises(RuntimeError, match="polar factor failed"):
        gpa.add_space("s3", sp["s3"])
    assert state(gpa) == before
    assert gpa.space_names_ == ["s0", "s1", "s2"] and "s3" not in gpa.preprocessor_.steps_
    with pytest.raises(DataError, match="no space named 's3'"):
        gpa.to_universe("s3", sp["s3"])
    monkeypatch.undo()
    gpa.add_space("s3", sp["s3"])
    # the added map is the polar factor of X_new^T U (naive, numpy), as if the failed call had never happened
    A, _, Bt = np.linalg.svd(gpa.preprocess("s3", sp["s3"]).T @ gpa.consensus_)
    assert np.allclose(gpa.R_["s3"], A @ Bt, atol=1e-10)
    # the GCPA built on this GPA (it holds it as gpa_) keeps its preprocessor through either call
    assert gcpa.gpa_ is gpa and gcpa.preprocessor_ is shared_pre and state(gcpa) == before_gcpa
    assert "s3" not in gcpa.preprocessor_.steps_ and gcpa.space_names_ == ["s0", "s1", "s2"]


# ------------------------------------------------------------------------------------------------ preprocessing
def test_preprocessing_zscore_and_pca_match_sklearn():
    from sklearn.decomposition import PCA
    from sklearn.preprocessing import StandardScaler

    sp = noisy(widths=(8, 12, 10))
    pre = UniversePreprocessor(width="pca").fit(sp)
    assert pre.dim_ == 8
    for name, X in sp.items():
        Z = pre.transform(name, X)
        assert Z.shape == (len(X), 8)
        s = StandardScaler().fit(X)
        zs = (X - s.mean_) / (s.scale_ * np.sqrt(len(X) / (len(X) - 1)))   # sample std (ddof 1)
        if X.shape[1] == 8:
            assert np.allclose(Z, zs, atol=1e-10)
        else:
            ref = PCA(8, svd_solver="full").fit_transform(zs)
            assert np.allclose(np.abs(Z), np.abs(ref), atol=1e-8)    # same components up to sign
    desc = pre.describe()
    assert desc["spaces"]["v1"]["width_step"] == "PCA 12 -> 8"
    assert desc["spaces"]["v0"]["width_step"] == "kept (8)"


@pytest.mark.parametrize("order", ["zscore-pca", "pca-zscore"])
def test_preprocessing_leaves_the_callers_arrays_as_they_were(order):
    """The preprocessing centres and scales its own float64 copy in place: never the caller's rows (float64
    numpy arrays, which a conversion could share, float32 ones, and tensors)."""
    from core.universe import prepare_spaces

    sp = noisy(widths=(8, 12, 10))
    given = {"v0": sp["v0"].astype(np.float64), "v1": sp["v1"].astype(np.float32), "v2": torch.as_tensor(sp["v2"])}
    before = {k: np.array(v, copy=True) for k, v in given.items()}
    prepared = prepare_spaces(given, order=order)
    UniversePreprocessor(order=order).fit(given)
    for k, v in given.items():
        np.testing.assert_array_equal(np.asarray(v), before[k])
    # and the prepared rows are the preprocessing of those rows
    for k, v in given.items():
        np.testing.assert_allclose(prepared.Z[k].numpy(), prepared.preprocessor.transform(before[k], space=k),
                                   atol=1e-12)


def test_preprocessing_zero_padding_and_inverse():
    sp = noisy(widths=(8, 12, 10))
    pre = UniversePreprocessor(width="pad", standardize=False).fit(sp)
    assert pre.dim_ == 12
    Z = pre.transform("v0", sp["v0"])
    assert Z.shape == (150, 12) and np.all(Z[:, 8:] == 0)
    assert np.allclose(Z[:, :8], sp["v0"] - sp["v0"].mean(0))
    back = pre.inverse_t("v0", torch.as_tensor(Z)).numpy()
    assert np.allclose(back, sp["v0"])
    assert pre.describe()["spaces"]["v0"]["width_step"] == "zero-padded 8 -> 12"
    # GPA's a -> a map is the identity in raw coordinates when nothing was reduced
    gpa = GPA(width="pad").fit(sp)
    assert np.allclose(gpa.translate(sp["v2"], "v2", "v2"), sp["v2"])


# ------------------------------------------------------------------------------------------------ PW
def test_pairwise_procrustes_matches_svd():
    sp = noisy(seed=5)
    pw = PairwiseProcrustes().fit(sp)
    for a in sp:
        for b in sp:
            Xa, Xb = pw.preprocess(a, sp[a]), pw.preprocess(b, sp[b])
            U, _, Vt = np.linalg.svd(Xa.T @ Xb)
            assert np.allclose(pw.R_[(a, b)], U @ Vt if a != b else np.eye(8), atol=1e-8)
            Ea, Eb = pw.pair_embeddings(a, sp[a], b, sp[b])
            assert np.allclose(Ea, Xa @ pw.R_[(a, b)]) and np.allclose(Eb, Xb)


# ------------------------------------------------------------------------------------------------ GCCA
def test_gcca_basis_orthonormal_and_matches_direct_eigensolution():
    sp = noisy(n=60, widths=(6, 9, 7), seed=1)
    r = 2.0
    g = GCCA(n_components=4, reg=r).fit(sp)
    G = g.G_
    assert np.allclose(G.T @ G, np.eye(4), atol=1e-10)
    # direct: top-k eigenvectors of sum_m X_m (X_m^T X_m + r I)^{-1} X_m^T (n x n)
    Xs = [g.preprocess(k, sp[k]) for k in sp]
    P = sum(X @ np.linalg.solve(X.T @ X + r * np.eye(X.shape[1]), X.T) for X in Xs)
    vals, vecs = np.linalg.eigh(P)
    top = vecs[:, ::-1][:, :4]
    assert np.allclose(G @ G.T, top @ top.T, atol=1e-8)
    assert np.allclose(g.eigenvalues_, vals[::-1][:4], atol=1e-8)
    # W_m = (X^T X + r I)^{-1} X^T G and universe coordinates x W_m
    for k, X in zip(sp, Xs):
        W = np.linalg.solve(X.T @ X + r * np.eye(X.shape[1]), X.T @ G)
        assert np.allclose(g.W_[k], W, atol=1e-10)
        assert np.allclose(g.to_universe(k, sp[k]), X @ W, atol=1e-10)


def test_gcca_default_ridge_is_recorded():
    sp = noisy(seed=2)
    g = GCCA().fit(sp)
    assert g.reg_ == pytest.approx(0.1 * 150)
    assert g.describe()["reg_used"] == pytest.approx(15.0)


# ------------------------------------------------------------------------------------------------ GCPA
def test_gcpa_starts_as_identity():
    sp = planted(n=200, seed=0)
    gpa = GPA().fit(sp)
    model = GCPA(max_epochs=0).fit(sp, gpa=gpa)
    for layer in (model.net_.w2, model.net_.wg):
        assert torch.count_nonzero(layer.weight) == 0 and torch.count_nonzero(layer.bias) == 0
    for k in sp:
        u = gpa.to_universe(k, sp[k])
        assert np.allclose(model.to_universe(k, sp[k]), u / np.linalg.norm(u, axis=1, keepdims=True), atol=1e-6)


def test_gcpa_does_not_lower_heldout_hits_below_gpa():
    from core.universe_eval import any_to_any_retrieval, split_train_test

    sp = planted(n=500, seed=1)
    train, test = split_train_test(500, 0.2, seed=0)
    tr = {k: v[train] for k, v in sp.items()}
    te = {k: v[test] for k, v in sp.items()}
    gpa = GPA().fit(tr)
    gcpa = GCPA(max_epochs=60, patience=10, seed=0).fit(tr, gpa=gpa)
    h_gpa = any_to_any_retrieval(gpa, te)["summary"]["top1"]["mean"]
    h_gcpa = any_to_any_retrieval(gcpa, te)["summary"]["top1"]["mean"]
    assert h_gcpa >= h_gpa
    assert gcpa.history_[0]["epoch"] == 0 and gcpa.best_epoch_ >= 1
    # seeded: the same fit twice gives the same corrector
    again = GCPA(max_epochs=5, patience=10, seed=3).fit(tr, gpa=gpa)
    again2 = GCPA(max_epochs=5, patience=10, seed=3).fit(tr, gpa=gpa)
    assert np.allclose(again.to_universe("v0", te["v0"]), again2.to_universe("v0", te["v0"]))


# ------------------------------------------------------------------------------------------------ errors
def test_bad_inputs_raise_data_errors():
    rng = np.random.default_rng(0)
    with pytest.raises(DataError, match="at least 2 spaces"):
        GPA().fit({"a": rng.normal(size=(10, 3))})
    with pytest.raises(DataError, match="rows"):
        GPA().fit({"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(9, 3))})
    bad = rng.normal(size=(10, 3))
    bad[4, 1] = np.nan
    with pytest.raises(DataError) as err:
        GCCA().fit({"a": rng.normal(size=(10, 3)), "b": bad})
    assert err.value.row == 4
    with pytest.raises(DataError, match="token sets"):
        GPA().fit({"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(10, 2, 3))})
    with pytest.raises(DataError, match="unknown universe method"):
        make_estimator("nope")
    gpa = GPA().fit({"a": rng.normal(size=(10, 3)), "b": rng.normal(size=(10, 3))})
    with pytest.raises(DataError, match="no space named"):
        gpa.to_universe("c", rng.normal(size=(2, 3)))
    with pytest.raises(DataError, match="columns"):
        gpa.to_universe("a", rng.normal(size=(2, 4)))
    from sklearn.exceptions import NotFittedError
    with pytest.raises(NotFittedError):
        GCPA().to_universe("a", rng.normal(size=(2, 3)))


def test_fit_with_prepared_spaces_gives_the_same_fit_and_checks_settings():
    from core.universe import prepare_spaces

    sp = noisy(seed=5)
    prepared = prepare_spaces(sp)
    for method in ("pw", "gpa", "gcca"):
        plain = make_estimator(method).fit(sp)
        shared = make_estimator(method).fit(sp, prepared=prepared)
        for name in sp:
            np.testing.assert_array_equal(plain.to_universe(name, sp[name]), shared.to_universe(name, sp[name]))
        assert shared.preprocessor_ is not prepared.preprocessor       # GPA-ADD must not extend a shared one
    gpa = GPA().fit(sp, prepared=prepared)
    a = GCPA(max_epochs=3, patience=10).fit(sp, gpa=gpa)
    b = GCPA(max_epochs=3, patience=10).fit(sp, gpa=gpa, prepared=prepared)
    np.testing.assert_array_equal(a.to_universe("v0", sp["v0"]), b.to_universe("v0", sp["v0"]))
    with pytest.raises(DataError, match="other settings"):
        GPA(standardize=False).fit(sp, prepared=prepared)
    with pytest.raises(DataError, match="not the spaces"):
        GPA().fit({k: sp[k] for k in ("v0", "v1")}, prepared=prepared)
    with pytest.raises(DataError, match="rows"):
        GPA().fit({k: v[:100] for k, v in sp.items()}, prepared=prepared)


def test_map_matrix_is_the_map_between_preprocessed_coordinates():
    sp = noisy(seed=6)
    for est in (PairwiseProcrustes().fit(sp), GPA().fit(sp), GCCA(reg=1.0).fit(sp),
                GCCA(variant="racing").fit(sp)):
        z = est.preprocess("v0", sp["v0"])
        np.testing.assert_allclose(z @ est.map_matrix("v0", "v2"), est.map_between(z, "v0", "v2"), atol=1e-10)


def test_preprocessor_pca_components_are_k_x_d_like_sklearn():
    # the one PCA (core.numerics.pca_components): steps_["components"] in rows, as scikit-learn's components_
    from sklearn.decomposition import PCA as SkPCA

    from core.universe import UniversePreprocessor

    rng = np.random.default_rng(5)
    sp = {"a": rng.normal(size=(80, 9)) @ rng.normal(size=(9, 9)), "b": rng.normal(size=(80, 4))}
    for order in ("zscore-pca", "pca-zscore"):
        pre = UniversePreprocessor(order=order).fit(sp)
        C = pre.steps_["a"]["components"]
        X = sp["a"] - sp["a"].mean(0)
        if order == "zscore-pca":
            X = X / sp["a"].std(0, ddof=1)
        ref = SkPCA(4, svd_solver="full").fit(X).components_
        assert C.shape == (4, 9) and pre.steps_["b"]["components"] is None
        np.testing.assert_allclose(np.abs(C), np.abs(ref), atol=1e-8)


def test_infinite_values_are_caught_with_their_row_whatever_their_mix():
    # the fit checks finiteness through the column means (one pass): +inf, -inf and both in one column
    rng = np.random.default_rng(1)
    for cells in ([(6, 0, np.inf)], [(2, 1, -np.inf)], [(3, 2, np.inf), (8, 2, -np.inf)]):
        bad = rng.normal(size=(12, 3))
        for r, c, v in cells:
            bad[r, c] = v
        with pytest.raises(DataError) as err:
            GPA().fit({"a": rng.normal(size=(12, 3)), "b": bad})
        assert err.value.row == min(r for r, _, _ in cells)
