"""Tests of core.align against independent references (numpy/scipy/sklearn or the naive definitions)."""
import warnings

import numpy as np
import pytest
import scipy.linalg
from scipy.linalg import orthogonal_procrustes
from sklearn.cross_decomposition import CCA as SkCCA
from sklearn.decomposition import PCA as SkPCA
from sklearn.exceptions import NotFittedError
from sklearn.linear_model import Ridge

from core.align import (CCA, METHODS, AffineMap, AnchorMoments, LocalCKA, PairedPCA, PairwiseAligner,
                        ProcrustesMap, cosine_similarity_matrix, load_map, save_map, score_matrix)
from core.errors import DataError
from core.evaluate import retrieval_topk


def _data(n, p, q, seed=0, offset=0.0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, p)) @ rng.normal(size=(p, p)) + offset
    Y = X @ rng.normal(size=(p, q)) + 0.5 * rng.normal(size=(n, q)) - offset
    return X, Y


def _cos_ref(a, b):
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return a @ b.T


def _align_signs(A, B):
    """B with each column's sign flipped to match A (for comparisons up to sign)."""
    s = np.sign((A * B).sum(0))
    return B * s


# ---------------------------------------------------------------------------------------------
# moments
# ---------------------------------------------------------------------------------------------
def test_anchor_moments_match_numpy_with_large_offsets_and_chunks():
    X, Y = _data(257, 5, 4, seed=1, offset=1e6)
    m = AnchorMoments.from_arrays(X.astype(np.float64), Y, chunk_rows=50)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    np.testing.assert_allclose(m.mean_x.numpy(), X.mean(0), rtol=1e-12)
    np.testing.assert_allclose(m.Cxx.numpy(), Xc.T @ Xc, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(m.Cyy.numpy(), Yc.T @ Yc, rtol=1e-8, atol=1e-6)
    np.testing.assert_allclose(m.Cxy.numpy(), Xc.T @ Yc, rtol=1e-8, atol=1e-6)
    assert m.n == 257


def test_inputs_are_checked():
    X, Y = _data(30, 4, 3)
    with pytest.raises(DataError, match="same number of rows"):
        AffineMap().fit(X, Y[:-1])
    with pytest.raises(DataError, match="2-D"):
        CCA(2).fit(X[:, :, None], Y)
    Xbad = X.copy()
    Xbad[7, 1] = np.nan
    with pytest.raises(DataError) as err:
        LocalCKA().fit(Xbad, Y)
    assert err.value.row == 7
    with pytest.raises(NotFittedError):
        CCA(2).transform(X)
    fitted = AffineMap().fit(X, Y)
    with pytest.raises(DataError, match="columns"):
        fitted.transform(X[:, :3])


# ---------------------------------------------------------------------------------------------
# affine
# ---------------------------------------------------------------------------------------------
def test_affine_matches_numpy_lstsq():
    X, Y = _data(200, 10, 7, seed=2, offset=3.0)
    fit = AffineMap().fit(X, Y)
    coef, *_ = np.linalg.lstsq(np.hstack([X, np.ones((len(X), 1))]), Y, rcond=None)
    np.testing.assert_allclose(fit.R_, coef[:-1], rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(fit.b_, coef[-1], rtol=1e-9, atol=1e-10)
    Xnew = np.random.default_rng(5).normal(size=(9, 10))
    np.testing.assert_allclose(fit.transform(Xnew), Xnew @ coef[:-1] + coef[-1], rtol=1e-9, atol=1e-9)


def test_affine_ridge_matches_sklearn_ridge_with_mapped_alpha():
    X, Y = _data(80, 12, 5, seed=3, offset=-2.0)
    ridge = 0.05
    Xc = X - X.mean(0)
    alpha = ridge * np.trace(Xc.T @ Xc) / X.shape[1]     # our relative ridge -> sklearn's absolute alpha
    ref = Ridge(alpha=alpha, fit_intercept=True, solver="svd").fit(X, Y)
    fit = AffineMap(ridge=ridge).fit(X, Y)
    assert fit.alpha_ == pytest.approx(alpha, rel=1e-12)
    np.testing.assert_allclose(fit.R_, ref.coef_.T, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(fit.b_, ref.intercept_, rtol=1e-8, atol=1e-10)


def test_affine_rank_deficient_gives_min_norm_solution_with_warning():
    X, Y = _data(6, 10, 3, seed=4)
    with pytest.warns(RuntimeWarning, match="minimum-norm"):
        fit = AffineMap().fit(X, Y)
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    R = np.linalg.pinv(Xc) @ Yc
    np.testing.assert_allclose(fit.R_, R, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(fit.transform(X), Y, atol=1e-6)   # interpolates the anchors


# ---------------------------------------------------------------------------------------------
# Procrustes
# ---------------------------------------------------------------------------------------------
def test_procrustes_matches_scipy_equal_widths():
    X, Y = _data(100, 6, 6, seed=5, offset=1.0)
    fit = ProcrustesMap().fit(X, Y)
    R, _ = orthogonal_procrustes(X - X.mean(0), Y - Y.mean(0))
    np.testing.assert_allclose(fit.R_, R, atol=1e-9)
    assert fit.components_x_ is None
    np.testing.assert_allclose(fit.transform(X[:5]), (X[:5] - X.mean(0)) @ R, atol=1e-9)
    np.testing.assert_allclose(fit.transform(Y[:5], side="y"), Y[:5] - Y.mean(0), atol=1e-12)


def test_procrustes_unequal_widths_reduces_by_pca_like_sklearn_then_scipy():
    X, Y = _data(300, 9, 5, seed=6)
    Xa, Ya, Xq, Yq = X[:250], Y[:250], X[250:], Y[250:]
    fit = ProcrustesMap().fit(Xa, Ya)
    # components in rows, scikit-learn's layout (k x d; issue 12 changed it from d x k)
    assert fit.dim_ == 5 and fit.components_x_.shape == (5, 9) and fit.components_y_.shape == (5, 5)
    px, py = SkPCA(5, svd_solver="full").fit(Xa), SkPCA(5, svd_solver="full").fit(Ya)
    R, _ = orthogonal_procrustes(px.transform(Xa), py.transform(Ya))
    ref = _cos_ref(px.transform(Xq) @ R, py.transform(Yq))   # invariant to the PCA sign conventions
    ours = cosine_similarity_matrix(fit.transform(Xq), fit.transform(Yq, side="y"))
    np.testing.assert_allclose(ours, ref, atol=1e-8)
    np.testing.assert_allclose(fit.R_ @ fit.R_.T, np.eye(5), atol=1e-12)


# ---------------------------------------------------------------------------------------------
# CCA
# ---------------------------------------------------------------------------------------------
def _cca_data(n=500, p=6, q=6, seed=7):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, 3)) * np.array([3.0, 2.0, 1.0])
    X = Z @ rng.normal(size=(3, p)) + rng.normal(size=(n, p)) + 5.0
    Y = Z @ rng.normal(size=(3, q)) + rng.normal(size=(n, q)) - 1.0
    return X, Y


def test_cca_correlations_match_sklearn():
    X, Y = _cca_data()
    ours = CCA(3, reg=0.0).fit(X, Y)
    sk = SkCCA(n_components=3, max_iter=5000, tol=1e-12).fit(X, Y)
    xs, ys = sk.transform(X, Y)
    ref = np.array([np.corrcoef(xs[:, j], ys[:, j])[0, 1] for j in range(3)])
    np.testing.assert_allclose(ours.canonical_correlations_, ref, atol=1e-6)
    # plain correlations of our projected columns on the anchors equal the canonical correlations (reg = 0)
    np.testing.assert_allclose(ours.heldout_correlations(X, Y), ref, atol=1e-6)
    # and our directions span the same one-dimensional spaces as sklearn's (|corr| of scores = 1)
    for j in range(3):
        assert abs(np.corrcoef(ours.transform(X)[:, j], xs[:, j])[0, 1]) > 1 - 1e-5
        assert abs(np.corrcoef(ours.transform(Y, side="y")[:, j], ys[:, j])[0, 1]) > 1 - 1e-5


@pytest.mark.parametrize("reg", [0.0, 0.1])
def test_cca_matches_direct_sqrtm_whitening(reg):
    X, Y = _cca_data(n=200, p=5, q=4, seed=8)
    k = 3
    ours = CCA(k, reg=reg).fit(X, Y)
    n, p = X.shape
    q = Y.shape[1]
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc / (n - 1), Yc.T @ Yc / (n - 1), Xc.T @ Yc / (n - 1)
    Sxx = Sxx + reg * np.trace(Sxx) / p * np.eye(p)
    Syy = Syy + reg * np.trace(Syy) / q * np.eye(q)
    Kx, Ky = np.linalg.inv(np.real(scipy.linalg.sqrtm(Sxx))), np.linalg.inv(np.real(scipy.linalg.sqrtm(Syy)))
    U, S, Vt = np.linalg.svd(Kx @ Sxy @ Ky)
    np.testing.assert_allclose(ours.canonical_correlations_, S[:k], rtol=1e-10)
    Wx, Wy = Kx @ U[:, :k], Ky @ Vt[:k].T
    np.testing.assert_allclose(_align_signs(ours.W_x_, Wx), ours.W_x_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(_align_signs(ours.W_y_, Wy), ours.W_y_, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(ours.mean_x_, X.mean(0), rtol=1e-12)
    # a pair's signs flip together: the projected pairs are positively correlated
    assert (np.diag(ours.W_x_.T @ Sxy @ ours.W_y_) > 0).all()


def test_cca_heldout_correlations_are_plain_correlations():
    X, Y = _cca_data(n=600, seed=9)
    fit = CCA(3, reg=0.01).fit(X[:400], Y[:400])
    xr, yr = fit.transform(X[400:]), fit.transform(Y[400:], side="y")
    ref = [np.corrcoef(xr[:, j], yr[:, j])[0, 1] for j in range(3)]
    np.testing.assert_allclose(fit.heldout_correlations(X[400:], Y[400:]), ref, rtol=1e-12)


def test_cca_truncation_is_nested():
    X, Y = _cca_data(n=300, p=8, q=7, seed=10)
    big = CCA(7, reg=1e-3).fit(X, Y)
    small = CCA(3, reg=1e-3).fit(X, Y)
    cut = big.truncate(3)
    np.testing.assert_allclose(cut.W_x_, small.W_x_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cut.W_y_, small.W_y_, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cut.canonical_correlations_, small.canonical_correlations_, rtol=1e-12)


def test_cca_errors_and_warnings():
    X, Y = _cca_data(n=50, p=6, q=4)
    with pytest.raises(DataError, match="min\\(p, q\\)"):
        CCA(5).fit(X, Y)
    with pytest.warns(RuntimeWarning, match="reg > 0"):
        CCA(2, reg=0.0).fit(X, Y)
    Xs, Ys = _cca_data(n=4, p=6, q=4)       # fewer anchors than features: singular without reg
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        with pytest.raises(DataError, match="reg > 0"):
            CCA(2, reg=0.0).fit(Xs, Ys)
    assert np.isfinite(CCA(2, reg=1e-3).fit(Xs, Ys).W_x_).all()


# ---------------------------------------------------------------------------------------------
# local CKA
# ---------------------------------------------------------------------------------------------
def _linear_cka_naive(X, Y):
    """Linear CKA by the kernel definition: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = XX^T, H centring."""
    n = X.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    K, L = X @ X.T, Y @ Y.T
    hsic = lambda a, b: np.trace(a @ H @ b @ H)  # noqa: E731  (the 1/(n-1)^2 factors cancel)
    return hsic(K, L) / np.sqrt(hsic(K, K) * hsic(L, L))


def test_local_cka_closed_form_matches_naive_definition():
    rng = np.random.default_rng(11)
    nA, p, q, Q = 20, 5, 4, 6
    XA = rng.normal(size=(nA, p)) + 3.0
    YA = XA[:, :q] + 0.3 * rng.normal(size=(nA, q)) - 2.0
    Xq = rng.normal(size=(Q, p)) * 2 + 3.0
    Yq = rng.normal(size=(Q, q)) - 2.0
    fit = LocalCKA().fit(XA, YA)
    ours = fit.score_matrix(Xq, Yq)
    ref = np.array([[_linear_cka_naive(np.vstack([XA, Xq[i]]), np.vstack([YA, Yq[j]])) for j in range(Q)]
                    for i in range(Q)])
    np.testing.assert_allclose(ours, ref, rtol=1e-9)
    assert ours.dtype == np.float64
    Xc = XA - XA.mean(0)
    assert fit.Gx_norm2_ == pytest.approx(np.linalg.norm(Xc.T @ Xc) ** 2, rel=1e-12)


def test_cca_local_cka_from_moments_equals_local_cka_on_projected_anchors():
    X, Y = _cca_data(n=300, p=6, q=5, seed=12)
    al = PairwiseAligner("cca_local_cka", k=3, reg=1e-2).fit(X[:250], Y[:250])
    cca = CCA(3, reg=1e-2).fit(X[:250], Y[:250])
    ref = LocalCKA().fit(cca.transform(X[:250]), cca.transform(Y[:250], side="y")).score_matrix(
        cca.transform(X[250:]), cca.transform(Y[250:], side="y"))
    np.testing.assert_allclose(al.score_matrix(X[250:], Y[250:]), ref, rtol=1e-9)


# ---------------------------------------------------------------------------------------------
# composed methods
# ---------------------------------------------------------------------------------------------
def test_none_is_raw_cosine_and_refuses_unequal_widths():
    X, Y = _data(40, 5, 5, seed=13)
    np.testing.assert_allclose(score_matrix("none", X[:30], Y[:30], X[30:], Y[30:]), _cos_ref(X[30:], Y[30:]),
                               atol=1e-12)
    X2, Y2 = _data(40, 5, 4)
    with pytest.raises(DataError, match="equal widths"):
        score_matrix("none", X2[:30], Y2[:30], X2[30:], Y2[30:])
    with pytest.raises(DataError, match="unknown alignment method"):
        score_matrix("magic", X2[:30], Y2[:30], X2[30:], Y2[30:])


def test_affine_and_pca_affine_scores_match_lstsq_reference():
    X, Y = _data(120, 8, 6, seed=14, offset=2.0)
    Xa, Ya, Xq, Yq = X[:100], Y[:100], X[100:], Y[100:]
    coef, *_ = np.linalg.lstsq(np.hstack([Xa, np.ones((100, 1))]), Ya, rcond=None)
    np.testing.assert_allclose(score_matrix("affine", Xa, Ya, Xq, Yq), _cos_ref(Xq @ coef[:-1] + coef[-1], Yq),
                               atol=1e-9)
    px, py = SkPCA(4, svd_solver="full").fit(Xa), SkPCA(4, svd_solver="full").fit(Ya)
    c2, *_ = np.linalg.lstsq(px.transform(Xa), py.transform(Ya), rcond=None)
    ref = _cos_ref(px.transform(Xq) @ c2, py.transform(Yq))
    np.testing.assert_allclose(score_matrix("pca-affine", Xa, Ya, Xq, Yq, k=4), ref, atol=1e-8)


def test_planted_shared_latent_cca_affine_beats_raw_and_right_k_beats_large_k():
    rng = np.random.default_rng(15)
    n, d, p = 2200, 8, 64
    Z = rng.normal(size=(n, d))
    X = Z @ rng.normal(size=(d, p)) + 2.0 * rng.normal(size=(n, p))
    Y = Z @ rng.normal(size=(d, p)) + 2.0 * rng.normal(size=(n, p))
    Xa, Ya, Xq, Yq = X[:2000], Y[:2000], X[2000:], Y[2000:]
    Q = len(Xq)
    top1 = {}
    for name, k in (("none", None), ("cca_affine", 8), ("cca_affine", 48)):
        S = score_matrix(name, Xa, Ya, Xq, Yq, k=k)
        top1[(name, k)] = retrieval_topk(S, ks=(1,))[1]
    assert top1[("none", None)] < 5 / Q
    assert top1[("cca_affine", 8)] > 0.5 > 20 / Q
    assert top1[("cca_affine", 8)] > top1[("cca_affine", 48)] + 0.2


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", [m for m in METHODS])
def test_save_load_aligner_round_trip(tmp_path, method):
    X, Y = _data(150, 6, 6, seed=16)
    al = PairwiseAligner(method, k=3, reg=1e-2, ridge=0.1).fit(X[:120], Y[:120])
    path = save_map(al, tmp_path / "map.safetensors")
    back = load_map(path)
    assert type(back) is PairwiseAligner and back.method_ == al.method_
    np.testing.assert_array_equal(back.score_matrix(X[120:], Y[120:]), al.score_matrix(X[120:], Y[120:]))
    np.testing.assert_array_equal(back.transform(X[120:]), al.transform(X[120:]))


@pytest.mark.parametrize("make", [lambda: AffineMap(ridge=0.2), lambda: ProcrustesMap(), lambda: PairedPCA(3),
                                  lambda: CCA(3, reg=1e-2), lambda: LocalCKA()])
def test_save_load_estimators_round_trip(tmp_path, make):
    X, Y = _data(150, 7, 5, seed=17)
    est = make().fit(X[:120], Y[:120])
    back = load_map(save_map(est, tmp_path / "m.safetensors"))
    assert type(back) is type(est) and back.get_params() == est.get_params()
    if isinstance(est, LocalCKA):
        np.testing.assert_array_equal(back.score_matrix(X[120:], Y[120:]), est.score_matrix(X[120:], Y[120:]))
    else:
        np.testing.assert_array_equal(back.transform(X[120:]), est.transform(X[120:]))
    if hasattr(est, "_transform_target_t"):
        np.testing.assert_array_equal(back.transform(Y[120:], side="y"), est.transform(Y[120:], side="y"))


def test_load_map_rejects_foreign_files(tmp_path):
    from safetensors.numpy import save_file
    path = tmp_path / "other.safetensors"
    save_file({"w": np.zeros(3)}, str(path))
    with pytest.raises(DataError, match="not a Platoscope map"):
        load_map(path)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError):
        load_map(junk)


def test_pca_components_have_one_layout_and_match_sklearn():
    # PairedPCA, ProcrustesMap and PCAProjection share one PCA (core.numerics.pca_components): components k x d
    # as in scikit-learn, equal to its axes up to sign, and to each other exactly
    from core.projection import PCAProjection

    X, Y = _data(200, 9, 6, seed=21)
    paired = PairedPCA(4).fit(X, Y)
    proc = ProcrustesMap(dim=4).fit(X, Y)
    proj = PCAProjection(4).fit(X)
    sk = SkPCA(4, svd_solver="full").fit(X)
    assert paired.components_x_.shape == proc.components_x_.shape == proj.components_.shape == (4, 9)
    assert paired.components_y_.shape == (4, 6)
    np.testing.assert_allclose(np.abs(paired.components_x_), np.abs(sk.components_), atol=1e-9)
    np.testing.assert_allclose(paired.components_x_, proc.components_x_, atol=0)
    np.testing.assert_allclose(paired.components_x_, proj.components_, atol=1e-12)
    np.testing.assert_allclose(paired.explained_variance_x_, sk.explained_variance_, rtol=1e-9)
    # projecting is (x - mean) @ components.T, as in scikit-learn
    np.testing.assert_allclose(paired.transform(X[:7]), (X[:7] - X.mean(0)) @ paired.components_x_.T, atol=1e-12)
    np.testing.assert_allclose(paired.truncate(2).components_x_, paired.components_x_[:2], atol=0)


def test_load_map_reads_format_1_pca_bases(tmp_path):
    # maps saved before the layout change kept the PCA bases d x k: they load transposed, with the same transform
    from safetensors import safe_open
    from safetensors.numpy import save_file

    X, Y = _data(150, 8, 5, seed=22)
    for est in (PairedPCA(3).fit(X, Y), ProcrustesMap().fit(X, Y)):
        path = save_map(est, tmp_path / "new.safetensors")
        with safe_open(str(path), framework="np") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        old = {k: (np.ascontiguousarray(v.T) if k.startswith("components_") else v) for k, v in tensors.items()}
        save_file(old, str(tmp_path / "old.safetensors"), metadata={**meta, "format_version": "1"})
        back = load_map(tmp_path / "old.safetensors")
        np.testing.assert_array_equal(back.components_x_, est.components_x_)
        np.testing.assert_array_equal(back.transform(X[:9]), est.transform(X[:9]))
