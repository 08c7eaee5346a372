"""Tests of core.similarity against independent references (naive n x n definitions, scipy, sklearn)."""
import warnings

import numpy as np
import pytest
from scipy.linalg import orthogonal_procrustes
from scipy.spatial.distance import pdist, squareform
from scipy.stats import spearmanr

from core import DataError
from core import similarity as S


# ----------------------------------------------------------------------------------------------
# independent references, written out from the definitions
# ----------------------------------------------------------------------------------------------
def hsic_biased_ref(K, L):
    n = K.shape[0]
    H = np.eye(n) - np.ones((n, n)) / n
    return np.trace(K @ H @ L @ H) / (n - 1) ** 2


def cka_ref(X, Y):
    """HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)) with K = XX^T, L = YY^T (explicit centring matrix)."""
    K, L = X @ X.T, Y @ Y.T
    return hsic_biased_ref(K, L) / np.sqrt(hsic_biased_ref(K, K) * hsic_biased_ref(L, L))


def hsic_unbiased_ref(K, L):
    """Song et al. 2012, eq. 5, transcribed with explicit matrices."""
    n = K.shape[0]
    Kt = K.copy()
    Lt = L.copy()
    np.fill_diagonal(Kt, 0)
    np.fill_diagonal(Lt, 0)
    one = np.ones(n)
    return (np.trace(Kt @ Lt) + (one @ Kt @ one) * (one @ Lt @ one) / ((n - 1) * (n - 2))
            - 2.0 / (n - 2) * (one @ Kt @ Lt @ one)) / (n * (n - 3))


def debiased_ref(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    K, L = Xc @ Xc.T, Yc @ Yc.T
    return hsic_unbiased_ref(K, L) / np.sqrt(hsic_unbiased_ref(K, K) * hsic_unbiased_ref(L, L))


def related(rng, n=200, p=12, q=9, noise=1.0):
    X = rng.normal(size=(n, p))
    Y = X @ rng.normal(size=(p, q)) + noise * rng.normal(size=(n, q))
    return X, Y


# ----------------------------------------------------------------------------------------------
# linear CKA
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["features", "gram", "auto"])
def test_linear_cka_matches_hsic_gram_definition(rng, method):
    X, Y = related(rng, n=150, p=12, q=7)
    ref = cka_ref(X, Y)
    assert S.linear_cka(X, Y, method=method) == pytest.approx(ref, rel=1e-10)


@pytest.mark.parametrize("chunk_rows", [1, 7, 64, 150, 10_000])
def test_linear_cka_chunked_equals_unchunked(rng, chunk_rows):
    X, Y = related(rng, n=150, p=6, q=5)
    whole = S.linear_cka(X, Y, method="features", chunk_rows=150)
    assert S.linear_cka(X, Y, method="features", chunk_rows=chunk_rows) == pytest.approx(whole, rel=1e-12)
    assert whole == pytest.approx(cka_ref(X, Y), rel=1e-10)


def test_linear_cka_float32_products_are_close(rng):
    X, Y = related(rng, n=300, p=10, q=8)
    assert S.linear_cka(X, Y, method="features", dtype="float32") == pytest.approx(cka_ref(X, Y), abs=1e-5)


def test_linear_cka_huge_common_offset(rng):
    base_x, base_y = related(rng, n=400, p=8, q=6)
    ref = cka_ref(base_x, base_y)            # CKA does not change when a constant is added
    X, Y = base_x + 1e6, base_y - 1e6
    ours = S.linear_cka(X, Y, method="features", chunk_rows=50)
    assert ours == pytest.approx(ref, abs=1e-8)
    # the naive float32 feature-space formula (X^T X - n m m^T) breaks down on the same data,
    # which is what makes this test able to fail
    Xf, Yf = X.astype(np.float32), Y.astype(np.float32)
    n = np.float32(X.shape[0])
    mx, my = Xf.mean(0), Yf.mean(0)
    cxy = Xf.T @ Yf - n * np.outer(mx, my)
    cxx = Xf.T @ Xf - n * np.outer(mx, mx)
    cyy = Yf.T @ Yf - n * np.outer(my, my)
    naive = float((cxy ** 2).sum() / np.sqrt((cxx ** 2).sum() * (cyy ** 2).sum()))
    assert not abs(naive - ref) < 1e-2
    # and the float32 copies themselves are handled: reference on the same (rounded) values in float64
    Xr = Xf.astype(np.float64) - 1e6
    Yr = Yf.astype(np.float64) + 1e6
    assert S.linear_cka(Xf, Yf, method="features", chunk_rows=50) == pytest.approx(cka_ref(Xr, Yr), abs=1e-9)


def test_linear_cka_reads_memmap(tmp_path, rng):
    X, Y = related(rng, n=500, p=8, q=4)
    fx, fy = tmp_path / "x.f32", tmp_path / "y.f32"
    mx = np.memmap(fx, dtype=np.float32, mode="w+", shape=X.shape)
    mx[:] = X
    mx.flush()
    my = np.memmap(fy, dtype=np.float32, mode="w+", shape=Y.shape)
    my[:] = Y
    my.flush()
    del mx, my
    rx = np.memmap(fx, dtype=np.float32, mode="r", shape=X.shape)
    ry = np.memmap(fy, dtype=np.float32, mode="r", shape=Y.shape)
    ref = cka_ref(X.astype(np.float32).astype(np.float64), Y.astype(np.float32).astype(np.float64))
    assert S.linear_cka(rx, ry, method="features", chunk_rows=33) == pytest.approx(ref, rel=1e-9)
    # the pages were released, the data is still there
    np.testing.assert_array_equal(np.asarray(rx[:5]), X[:5].astype(np.float32))


def test_cka_invariances(rng):
    X, Y = related(rng, n=120, p=10, q=10)
    Q, _ = np.linalg.qr(rng.normal(size=(10, 10)))
    base = S.linear_cka(X, Y)
    assert S.linear_cka(X @ Q, Y) == pytest.approx(base, rel=1e-10)
    assert S.linear_cka(3.7 * X, Y * 0.01) == pytest.approx(base, rel=1e-10)
    assert S.debiased_cka(X @ Q, 2.0 * Y) == pytest.approx(S.debiased_cka(X, Y), rel=1e-9)
    A = rng.normal(size=(10, 10)) * np.linspace(0.1, 3.0, 10)   # a generic (non-orthogonal) linear map
    assert abs(S.linear_cka(X @ A, Y) - base) > 1e-3


def test_linear_cka_identical_and_constant(rng):
    X = rng.normal(size=(50, 4))
    assert S.linear_cka(X, X) == pytest.approx(1.0)
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert S.linear_cka(X, np.ones((50, 3)), method="features") is None
    with pytest.warns(RuntimeWarning, match="undefined"):
        assert S.linear_cka(X, np.ones((50, 3)), method="gram") is None


def test_bad_inputs_raise_data_error(rng):
    X = rng.normal(size=(20, 3))
    with pytest.raises(DataError, match="rows"):
        S.linear_cka(X, X[:10])
    bad = X.copy()
    bad[13, 1] = np.nan
    with pytest.raises(DataError) as info:
        S.linear_cka(X, bad, method="features", chunk_rows=5)
    assert info.value.row == 13
    with pytest.raises(DataError, match="2-D"):
        S.linear_cka(X[:, 0], X)
    with pytest.raises(DataError, match="unknown similarity measure"):
        S.similarity(X, X, "nope")
    with pytest.raises(DataError, match="k must be"):
        S.mutual_knn_alignment(X, X, k=20)


# ----------------------------------------------------------------------------------------------
# debiased CKA
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method,chunk", [("features", None), ("features", 3), ("gram", None)])
@pytest.mark.parametrize("n", [6, 40])
def test_debiased_cka_matches_unbiased_hsic_transcription(rng, method, chunk, n):
    X, Y = related(rng, n=n, p=5, q=4, noise=2.0)
    X = X + 50.0       # offsets must not matter (the data is centred first)
    ref = debiased_ref(X, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = S.debiased_cka(X, Y, method=method, chunk_rows=chunk)
    assert got == pytest.approx(ref, rel=1e-8, abs=1e-12)


def test_debiased_cka_negative_value_is_returned_with_warning():
    for seed in range(100):
        r = np.random.default_rng(seed)
        X, Y = r.normal(size=(8, 3)), r.normal(size=(8, 2))
        ref = debiased_ref(X, Y)
        if ref < -0.05:
            break
    else:  # pragma: no cover
        pytest.fail("no negative case found")
    for method in ("features", "gram"):
        with pytest.warns(RuntimeWarning, match="negative"):
            got = S.debiased_cka(X, Y, method=method)
        assert isinstance(got, float) and got < 0
        assert got == pytest.approx(ref, rel=1e-8)


def test_debiased_cka_degenerate_and_too_small(rng):
    X = rng.normal(size=(10, 3))
    for method in ("features", "gram"):
        with pytest.warns(RuntimeWarning, match="undefined"):
            assert S.debiased_cka(X, np.full((10, 2), 5.0), method=method) is None
    with pytest.raises(DataError, match="at least 4"):
        S.debiased_cka(X[:3], X[:3])


# ----------------------------------------------------------------------------------------------
# RBF CKA, neighbourhoods
# ----------------------------------------------------------------------------------------------
def test_rbf_cka_matches_gram_definition_with_median_heuristic(rng):
    X, Y = related(rng, n=60, p=5, q=3)

    def kernel(Z, f=0.8):
        d = pdist(Z)
        sigma = f * np.median(d)
        return np.exp(-squareform(d) ** 2 / (2 * sigma ** 2))

    K, L = kernel(X), kernel(Y)
    ref = hsic_biased_ref(K, L) / np.sqrt(hsic_biased_ref(K, K) * hsic_biased_ref(L, L))
    assert S.rbf_cka(X, Y) == pytest.approx(ref, rel=1e-9)
    K2, L2 = kernel(X, 2.0), kernel(Y, 2.0)
    ref2 = hsic_biased_ref(K2, L2) / np.sqrt(hsic_biased_ref(K2, K2) * hsic_biased_ref(L2, L2))
    assert S.rbf_cka(X, Y, sigma_factor=2.0) == pytest.approx(ref2, rel=1e-9)


def test_rbf_cka_subsamples_with_warning(rng):
    X, Y = related(rng, n=80, p=4, q=3)
    with pytest.warns(UserWarning, match="sample of 30"):
        a = S.rbf_cka(X, Y, max_n=30, seed=3)
    with pytest.warns(UserWarning):
        b = S.rbf_cka(X, Y, max_n=30, seed=3)
    assert a == b and 0 <= a <= 1


def knn_sets_ref(Z, k):
    Zn = Z / np.linalg.norm(Z, axis=1, keepdims=True)
    C = Zn @ Zn.T
    np.fill_diagonal(C, -np.inf)
    return [set(np.argsort(-row, kind="stable")[:k]) for row in C]


@pytest.mark.parametrize("chunk_rows", [7, 1024])
def test_mutual_knn_matches_brute_force_sorting(rng, chunk_rows):
    X, Y = related(rng, n=90, p=6, q=5, noise=2.0)
    k = 5
    sx, sy = knn_sets_ref(X, k), knn_sets_ref(Y, k)
    ref = np.mean([len(a & b) / k for a, b in zip(sx, sy)])
    assert S.mutual_knn_alignment(X, Y, k=k, chunk_rows=chunk_rows) == pytest.approx(ref)
    assert S.mutual_knn_alignment(X, X * 2.0, k=k) == pytest.approx(1.0)


def cknna_ref(X, Y, k):
    """numpy transcription of the Platonic Representation Hypothesis repo's cknna (unbiased, normalised)."""
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Yn = Y / np.linalg.norm(Y, axis=1, keepdims=True)
    K, L = Xn @ Xn.T, Yn @ Yn.T
    n = K.shape[0]

    def sim(K, L):
        def mask_of(G):
            Gh = G.copy()
            np.fill_diagonal(Gh, -np.inf)
            M = np.zeros((n, n))
            for i in range(n):
                M[i, np.argsort(-Gh[i])[:k]] = 1.0
            return M
        M = mask_of(K) * mask_of(L)
        Kt, Lt = M * K, M * L
        np.fill_diagonal(Kt, 0)
        np.fill_diagonal(Lt, 0)
        return ((Kt * Lt.T).sum() + Kt.sum() * Lt.sum() / ((n - 1) * (n - 2))
                - 2 * (Kt @ Lt).sum() / (n - 2)) / (n * (n - 3))

    return sim(K, L) / np.sqrt(sim(K, K) * sim(L, L))


def test_cknna_matches_reference_transcription(rng):
    X, Y = related(rng, n=70, p=6, q=5, noise=1.5)
    assert S.cknna(X, Y, k=6) == pytest.approx(cknna_ref(X, Y, 6), rel=1e-9)
    assert S.cknna(X, X, k=6) == pytest.approx(1.0)


# ----------------------------------------------------------------------------------------------
# CCA family, Procrustes, RSA
# ----------------------------------------------------------------------------------------------
def test_svcca_matches_sklearn_pca_and_cca(rng):
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA
    n = 400
    X = rng.normal(size=(n, 8)) * np.array([5, 4, 3, 2, 1, 0.05, 0.02, 0.01])
    Y = X[:, :6] @ rng.normal(size=(6, 7)) + 0.5 * rng.normal(size=(n, 7))
    Y[:, 5:] *= 0.01
    px = PCA(n_components=0.99, svd_solver="full").fit_transform(X)
    py = PCA(n_components=0.99, svd_solver="full").fit_transform(Y)
    k = min(px.shape[1], py.shape[1])
    assert 1 < k < 7          # the variance cut matters in this case
    cca = CCA(n_components=k, max_iter=5000, tol=1e-12, scale=True).fit(px, py)
    u, v = cca.transform(px, py)
    ref = np.mean([abs(np.corrcoef(u[:, i], v[:, i])[0, 1]) for i in range(k)])
    assert S.svcca(X, Y) == pytest.approx(ref, abs=1e-6)


def cca_ref(X, Y):
    """Canonical correlations and X-side directions from the generalised eigenproblem
    Sxy Syy^-1 Syx a = rho^2 Sxx a."""
    from scipy.linalg import eigh
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    Sxx, Syy, Sxy = Xc.T @ Xc, Yc.T @ Yc, Xc.T @ Yc
    M = Sxy @ np.linalg.solve(Syy, Sxy.T)
    vals, vecs = eigh(M, Sxx)
    order = np.argsort(vals)[::-1][:min(X.shape[1], Y.shape[1])]
    return np.sqrt(np.clip(vals[order], 0, None)), vecs[:, order], Xc


def test_pwcca_matches_direct_computation(rng):
    n = 300
    X = rng.normal(size=(n, 4)) * np.array([3.0, 1.0, 0.5, 0.2])
    Y = X @ rng.normal(size=(4, 6)) + rng.normal(size=(n, 6))
    rho, A, Xc = cca_ref(X, Y)             # X has the smaller rank: weights come from X
    H = Xc @ A
    H = H / np.linalg.norm(H, axis=0)
    alpha = np.abs(H.T @ Xc).sum(axis=1)
    alpha /= alpha.sum()
    assert S.pwcca(X, Y) == pytest.approx(float(alpha @ rho), rel=1e-8)
    # and the unweighted mean of the same correlations is what SVCCA reports with no variance cut
    assert S.svcca(X, Y, var_explained=1.0) == pytest.approx(rho.mean(), rel=1e-8)


def test_procrustes_distance_zero_for_rotated_copies_and_matches_scipy(rng):
    X = rng.normal(size=(100, 6))
    Q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    assert S.procrustes_distance(X, 2.5 * X @ Q + 7.0) == pytest.approx(0.0, abs=1e-10)
    Y = X[:, :4] @ rng.normal(size=(4, 9)) + 0.7 * rng.normal(size=(100, 9))   # different width

    def normalise(Z, width):
        Zc = Z - Z.mean(0)
        Zc = Zc / np.linalg.norm(Zc)
        return np.pad(Zc, ((0, 0), (0, width - Z.shape[1])))

    Xn, Yn = normalise(X, 9), normalise(Y, 9)
    R, _ = orthogonal_procrustes(Xn, Yn)
    ref = np.linalg.norm(Xn @ R - Yn) ** 2 / 2
    assert S.procrustes_distance(X, Y) == pytest.approx(ref, rel=1e-9)
    assert S.procrustes_distance(Y, X) == pytest.approx(ref, rel=1e-9)


@pytest.mark.parametrize("metric", ["cosine", "euclidean", "correlation"])
def test_rsa_matches_scipy_spearman_of_pdist(rng, metric):
    X, Y = related(rng, n=50, p=5, q=4, noise=2.0)
    ref = spearmanr(pdist(X, metric), pdist(Y, metric)).statistic
    assert S.rsa(X, Y, metric=metric) == pytest.approx(ref, rel=1e-9)


def test_rsa_handles_ties(rng):
    X = rng.integers(0, 3, size=(30, 3)).astype(float)       # many equal distances
    Y = X + rng.integers(0, 2, size=(30, 3))
    ref = spearmanr(pdist(X, "euclidean"), pdist(Y, "euclidean")).statistic
    assert S.rsa(X, Y, metric="euclidean") == pytest.approx(ref, rel=1e-9)


def test_rsa_subsample_is_seeded(rng):
    X, Y = related(rng, n=60, p=4, q=4)
    with pytest.warns(UserWarning, match="sample of 20"):
        a = S.rsa(X, Y, max_n=20, seed=1)
    with pytest.warns(UserWarning):
        assert S.rsa(X, Y, max_n=20, seed=1) == a


# ----------------------------------------------------------------------------------------------
# chance references
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["gram", "features"])
def test_linear_permutation_fast_path_equals_naive_null(rng, method):
    X, Y = related(rng, n=40, p=5, q=4, noise=3.0)
    res = S.permutation_test(X, Y, "linear_cka", n_permutations=30, seed=5, method=method)
    perm_rng = np.random.default_rng(5)
    null = np.array([cka_ref(X, Y[perm_rng.permutation(40)]) for _ in range(30)])
    value = cka_ref(X, Y)
    assert res["value"] == pytest.approx(value, rel=1e-10)
    assert res["p_value"] == pytest.approx((1 + (null >= value).sum()) / 31)
    assert res["null_mean"] == pytest.approx(null.mean(), rel=1e-9)
    assert res["null_std"] == pytest.approx(null.std(ddof=1), rel=1e-8)


def test_linear_permutation_streaming_without_resident_copy(rng, monkeypatch):
    X, Y = related(rng, n=60, p=4, q=3, noise=3.0)
    fast = S.permutation_test(X, Y, "linear_cka", n_permutations=10, seed=2, method="features")
    monkeypatch.setattr(S.nulls, "_RESIDENT_BYTES", 0)
    streamed = S.permutation_test(X, Y, "linear_cka", n_permutations=10, seed=2, method="features", chunk_rows=7)
    assert streamed["null_mean"] == pytest.approx(fast["null_mean"], rel=1e-10)
    assert streamed["p_value"] == fast["p_value"]


@pytest.mark.parametrize("measure,kw", [("mutual_knn", {"k": 4}), ("rbf_cka", {})])
def test_fast_nulls_equal_recomputation(rng, measure, kw):
    X, Y = related(rng, n=40, p=5, q=4, noise=2.0)
    res = S.permutation_test(X, Y, measure, n_permutations=12, seed=9, **kw)
    perm_rng = np.random.default_rng(9)
    null = np.array([S.similarity(X, Y[perm_rng.permutation(40)], measure, **kw) for _ in range(12)])
    assert res["null_mean"] == pytest.approx(null.mean(), rel=1e-9)
    assert res["value"] == pytest.approx(S.similarity(X, Y, measure, **kw), rel=1e-12)


@pytest.mark.parametrize("measure", ["linear_cka", "debiased_cka", "mutual_knn", "procrustes", "svcca"])
def test_permutation_p_values_related_vs_independent(measure):
    r = np.random.default_rng(11)
    X, Y = related(r, n=80, p=5, q=4, noise=0.5)
    kw = {"k": 5} if measure == "mutual_knn" else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        related_res = S.permutation_test(X, Y, measure, n_permutations=30, seed=0, **kw)
        indep = S.permutation_test(X, r.normal(size=(80, 4)), measure, n_permutations=30, seed=0, **kw)
    assert related_res["p_value"] == pytest.approx(1 / 31)
    assert indep["p_value"] > 0.05


@pytest.mark.parametrize("method", ["gram", "features"])
def test_linear_bootstrap_equals_naive_resampling_and_contains_value(rng, method):
    X, Y = related(rng, n=50, p=5, q=4, noise=1.5)
    res = S.bootstrap_interval(X, Y, "linear_cka", n_boot=40, ci=0.9, seed=4, method=method)
    draw_rng = np.random.default_rng(4)
    boots = []
    for _ in range(40):
        idx = draw_rng.integers(0, 50, size=50)
        boots.append(cka_ref(X[idx], Y[idx]))
    lo, hi = np.quantile(boots, [0.05, 0.95])
    assert res["low"] == pytest.approx(lo, rel=1e-9) and res["high"] == pytest.approx(hi, rel=1e-9)
    assert res["low"] <= res["value"] <= res["high"]


def test_bootstrap_generic_measure(rng):
    X, Y = related(rng, n=60, p=5, q=4)
    res = S.bootstrap_interval(X, Y, "procrustes", n_boot=30, seed=1)
    assert res["low"] <= res["value"] <= res["high"] and res["n_boot"] == 30
    again = S.bootstrap_interval(X, Y, "procrustes", n_boot=30, seed=1)
    assert again == res


# ----------------------------------------------------------------------------------------------
# many spaces
# ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [30, 200])       # Gram-cache path (n <= widths) and streamed path
def test_similarity_matrix_matches_pairwise_values(rng, n):
    a = rng.normal(size=(n, 40))
    spaces = {"a": a, "b": a[:, :30] @ rng.normal(size=(30, 50)) + rng.normal(size=(n, 50)),
              "c": rng.normal(size=(n, 35))}
    res = S.similarity_matrix(spaces, "linear_cka", chunk_rows=70)
    assert res["names"] == ["a", "b", "c"] and res["n_items"] == n
    V = np.array(res["values"], dtype=float)
    for i, x in enumerate(spaces.values()):
        for j, y in enumerate(spaces.values()):
            assert V[i, j] == pytest.approx(cka_ref(x, y), rel=1e-9)
    assert "p_values" not in res


@pytest.mark.parametrize("one_pass", [True, False])
def test_streamed_linear_cka_matrix_one_pass_and_pair_by_pair_match_the_definition(rng, monkeypatch, tmp_path,
                                                                                  one_pass):
    """Rows beyond the Gram size: the one pass over every space at once (ONE_PASS_MAX_WIDTH) and the pair-by-pair
    path, each against the naive CKA; float32 memmaps far from the origin (the shifts keep the centring exact),
    a ragged last piece, a constant space (undefined: None), the layer-by-layer matrix, and a NaN named by space
    and row."""
    import core.similarity.matrix as matrix

    monkeypatch.setattr(matrix, "ONE_PASS_MAX_WIDTH", 4096 if one_pass else 0)
    calls = []
    real = matrix._linear_cka_one_pass
    monkeypatch.setattr(matrix, "_linear_cka_one_pass", lambda *a, **k: calls.append(1) or real(*a, **k))
    n = 230
    z = rng.normal(size=(n, 6))
    raw = {"a": 1e4 + z @ rng.normal(size=(6, 25)) + 0.3 * rng.normal(size=(n, 25)),
           "b": -3e3 + z[:, :4] @ rng.normal(size=(4, 18)) + rng.normal(size=(n, 18)),
           "c": rng.normal(size=(n, 40))}
    spaces = {}
    for k, v in raw.items():
        np.save(tmp_path / f"{k}.npy", v.astype(np.float32))
        spaces[k] = np.load(tmp_path / f"{k}.npy", mmap_mode="r")
    spaces["flat"] = np.ones((n, 5), dtype=np.float32)
    res = S.similarity_matrix(spaces, "linear_cka", chunk_rows=64)        # 64 + 64 + 64 + 38 rows
    assert bool(calls) == one_pass
    # the reference centres in float64 before the Gram matrices (CKA does not change; XX^T of the raw rows, 1e4
    # from the origin, would lose 8 digits to the centring)
    ref = {k: np.asarray(v, dtype=np.float64) - np.asarray(v, dtype=np.float64).mean(0) for k, v in spaces.items()}
    names = res["names"]
    for i, x in enumerate(names):
        for j, y in enumerate(names):
            if "flat" in (x, y):
                assert res["values"][i][j] is None
            else:
                assert res["values"][i][j] == pytest.approx(cka_ref(ref[x], ref[y]), rel=1e-9)
    lay = S.layerwise_similarity([spaces["a"], spaces["b"]], [spaces["c"], spaces["a"]], "linear_cka",
                                 chunk_rows=50)
    for i, x in enumerate(("a", "b")):
        for j, y in enumerate(("c", "a")):
            assert lay["values"][i][j] == pytest.approx(cka_ref(ref[x], ref[y]), rel=1e-9)
    bad = raw["b"].astype(np.float32)
    bad[171, 3] = np.nan
    with pytest.raises(DataError) as err:
        S.similarity_matrix({"a": spaces["a"], "b": bad}, "linear_cka", chunk_rows=64)
    assert err.value.array == "b" and err.value.row == 171


@pytest.mark.parametrize("n_perm", [0, 10])
def test_similarity_matrix_fills_in_cheapest_pairs_first(rng, n_perm):
    """partial() sees the matrix after every pair, narrowest pairs first; the cells it shows are the final values
    (each naive CKA), and the final result is the one computed without partial."""
    a = rng.normal(size=(150, 30))
    spaces = {"wide": a @ rng.normal(size=(30, 60)), "narrow": a[:, :4] + 0.1 * rng.normal(size=(150, 4)),
              "mid": a[:, :12] @ rng.normal(size=(12, 20))}
    seen = []
    res = S.similarity_matrix(spaces, "linear_cka", chunk_rows=40, n_permutations=n_perm, partial=seen.append)
    assert res == S.similarity_matrix(spaces, "linear_cka", chunk_rows=40, n_permutations=n_perm)
    assert "complete" not in res and all(p["complete"] is False for p in seen)
    off_diagonal = 3
    assert len(seen) == (off_diagonal if n_perm else off_diagonal + 3)
    arrays = list(spaces.values())
    for p in seen:
        for i in range(3):
            for j in range(3):
                if p["values"][i][j] is not None:
                    assert p["values"][i][j] == res["values"][i][j]
                    assert res["values"][i][j] == pytest.approx(cka_ref(arrays[i], arrays[j]), rel=1e-9)
    first = [(i, j) for i in range(3) for j in range(3) if i != j and seen[0]["values"][i][j] is not None]
    names = res["names"]
    if n_perm:   # the diagonal is known before the nulls start; the first pair is the two narrowest spaces
        assert {names[i] for i, j in first} == {"narrow", "mid"}
        assert seen[0]["p_values"][first[0][0]][first[0][1]] == res["p_values"][first[0][0]][first[0][1]]
    else:        # the narrowest space's diagonal comes first
        assert first == [] and seen[0]["values"][names.index("narrow")][names.index("narrow")] == 1.0
    assert sum(v is not None for r in seen[-1]["values"] for v in r) == 9


def test_similarity_matrix_with_permutations_and_asymmetric_measure(rng):
    X, Y = related(rng, n=50, p=4, q=3, noise=0.3)
    spaces = {"x": X, "y": Y, "z": rng.normal(size=(50, 2))}
    res = S.similarity_matrix(spaces, "linear_cka", n_permutations=20)
    P = res["p_values"]
    assert P[0][0] is None and P[0][1] == pytest.approx(1 / 21) and P[1][0] == P[0][1]
    assert P[0][2] > 0.05
    asym = S.similarity_matrix(spaces, "cknna", k=5)
    assert asym["symmetric"] is False
    assert asym["values"][0][1] == pytest.approx(cknna_ref(X, Y, 5), rel=1e-9)
    assert asym["values"][1][0] == pytest.approx(cknna_ref(Y, X, 5), rel=1e-9)


def test_layerwise_similarity(rng):
    base = rng.normal(size=(60, 8))
    layers_a = [base, base @ rng.normal(size=(8, 8))]
    layers_b = [base[:, :3], rng.normal(size=(60, 5)), base @ rng.normal(size=(8, 12))]
    res = S.layerwise_similarity(layers_a, layers_b, "linear_cka", names_a=["a0", "a1"])
    assert res["names_a"] == ["a0", "a1"] and res["names_b"] == ["b0", "b1", "b2"]
    V = np.array(res["values"])
    assert V.shape == (2, 3)
    for i, x in enumerate(layers_a):
        for j, y in enumerate(layers_b):
            assert V[i, j] == pytest.approx(cka_ref(x, y), rel=1e-9)
    r2 = S.layerwise_similarity(layers_a, layers_b, "rsa")
    assert r2["values"][0][2] == pytest.approx(
        spearmanr(pdist(layers_a[0], "cosine"), pdist(layers_b[2], "cosine")).statistic, rel=1e-9)


def test_registry_names_and_aliases():
    assert set(S.MEASURES) == {"linear_cka", "debiased_cka", "rbf_cka", "mutual_knn", "cknna", "svcca", "svcca_top10",
                               "pwcca", "procrustes", "rsa"}
    assert S.resolve_measure("debiased").name == "debiased_cka"
    assert S.resolve_measure("RBF").name == "rbf_cka"
    assert S.MEASURES["procrustes"].higher_is_similar is False


def test_debiased_permutation_fast_path_equals_naive_null(rng):
    X, Y = related(rng, n=30, p=4, q=3, noise=3.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = S.permutation_test(X, Y, "debiased_cka", n_permutations=15, seed=3)
    perm_rng = np.random.default_rng(3)
    null = np.array([debiased_ref(X, Y[perm_rng.permutation(30)]) for _ in range(15)])
    value = debiased_ref(X, Y)
    assert res["value"] == pytest.approx(value, rel=1e-9)
    assert res["null_mean"] == pytest.approx(null.mean(), rel=1e-8, abs=1e-12)
    assert res["p_value"] == pytest.approx((1 + (null >= value).sum()) / 16)


# ----------------------------------------------------------------------------------------------
# CLI: platoscope cka
# ----------------------------------------------------------------------------------------------
@pytest.fixture
def cka_files(tmp_path, rng):
    X, Y = related(rng, n=40, p=6, q=5, noise=0.5)
    Z = rng.normal(size=(40, 3))
    fa = tmp_path / "a.npz"
    np.savez(fa, text=X.astype(np.float32), image=Y.astype(np.float32))
    fb = tmp_path / "other.npy"
    np.save(fb, Z.astype(np.float32))
    f32 = lambda A: A.astype(np.float32).astype(np.float64)  # noqa: E731
    return [str(fa), str(fb)], {"text": f32(X), "image": f32(Y), "other": f32(Z)}


def test_cli_cka_json_matrix_and_p_values(cka_files, capsys):
    import json
    from core.cli import main
    paths, arrays = cka_files
    rc = main(["cka", *paths, "--permutations", "20", "--json"])
    out = capsys.readouterr()
    assert rc == 0, out.err
    res = json.loads(out.out)
    assert res["measure"] == "linear_cka" and res["n_items"] == 40
    assert res["spaces"] == ["text", "image", "other"]
    for i, a in enumerate(res["spaces"]):
        for j, b in enumerate(res["spaces"]):
            assert res["matrix"][i][j] == pytest.approx(cka_ref(arrays[a], arrays[b]), rel=1e-6)
    assert res["p_values"][0][1] == pytest.approx(1 / 21) and res["p_values"][1][1] is None
    assert res["n_permutations"] == 20


def test_cli_cka_debiased_text_and_other_measures(cka_files, capsys):
    import json
    from core.cli import main
    paths, arrays = cka_files
    assert main(["cka", *paths, "--debiased", "--spaces", "text,image"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("debiased_cka") and "text" in text and "image" in text and "other" not in text
    ref = debiased_ref(arrays["text"], arrays["image"])
    assert f"{ref:.4g}" in text
    assert main(["cka", *paths, "--measure", "mutual_knn", "--k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    sx, sy = knn_sets_ref(arrays["text"], 3), knn_sets_ref(arrays["other"], 3)
    assert res["matrix"][0][2] == pytest.approx(np.mean([len(a & b) / 3 for a, b in zip(sx, sy)]))
    assert res["parameters"] == {"k": 3}


def test_cli_cka_bad_input(cka_files, capsys):
    from core.cli import main
    paths, _ = cka_files
    assert main(["cka", *paths, "--spaces", "text,nope"]) == 2
    assert "no space named 'nope'" in capsys.readouterr().err
    assert main(["cka", *paths, "--measure", "rsa", "--debiased"]) == 2
    assert "--debiased applies to linear CKA" in capsys.readouterr().err
