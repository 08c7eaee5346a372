"""Tests of core.pointset (METHODS.md section 6) against direct transcriptions of the definitions."""
import json
import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist

from core import pointset as ps
from core.dataset import Space
from core.errors import DataError


def _unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _planted(n=160, T=8, Tb=10, p=12, q=10, seed=0):
    """Token sets sharing a latent per item; the first tokens carry it, the rest are distractors along axis 0."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    Wa, Wb = rng.normal(size=(4, p)), rng.normal(size=(4, q))
    A = 0.5 * rng.normal(size=(n, T, p))
    B = 0.5 * rng.normal(size=(n, Tb, q))
    A[:, :3] += (z @ Wa)[:, None, :]
    B[:, :3] += (z @ Wb)[:, None, :]
    A[:, 3:] += 3.0 * np.eye(p)[0]
    B[:, 3:] += 3.0 * np.eye(q)[0]
    mask_a = np.ones((n, T), bool)
    mask_a[:, -1] = rng.random(n) < 0.5
    return A.astype(np.float32), B.astype(np.float32), mask_a


# ------------------------------------------------------------------------------------------------
# random Fourier features
# ------------------------------------------------------------------------------------------------
def _exact_kernel(U, V, kernel, sigma=0.5, c=0.5):
    d2 = cdist(U, V, "sqeuclidean")
    return np.exp(-d2 / (2 * sigma ** 2)) if kernel == "gauss" else c / np.sqrt(c ** 2 + d2)


@pytest.mark.parametrize("kernel", ["gauss", "imq"])
def test_rff_error_falls_like_one_over_sqrt_D(kernel):
    rng = np.random.default_rng(1)
    U = _unit(rng.normal(size=(40, 8)))
    # pairs at every range of distances: perturbations of U plus unrelated points
    V = np.vstack([_unit(U[:20] + 0.3 * rng.normal(size=(20, 8))), _unit(rng.normal(size=(20, 8)))])
    K = _exact_kernel(U, V, kernel)
    rmse = {}
    for D in (256, 4096):
        errs = []
        for seed in range(3):
            rff = ps.RandomFourierFeatures(D, kernel, seed=seed, device="cpu").fit(dim=8)
            approx = rff.transform(U) @ rff.transform(V).T
            errs.append(np.sqrt(np.mean((approx - K) ** 2)))
            if D == 4096:
                # per pair: Var[phi(u).phi(v)] <= 1.5 / D, so the error stays within a few sqrt(1.5 / D)
                assert np.abs(approx - K).max() < 5 * math.sqrt(1.5 / D)
        rmse[D] = float(np.mean(errs))
    assert rmse[4096] < 1.2 * math.sqrt(1.5 / 4096)
    ratio = rmse[256] / rmse[4096]       # 1/sqrt(D): a factor 4 from D = 256 to 4096
    assert 2.5 < ratio < 6.5, ratio


def test_rff_draw_is_seeded_and_shared():
    a = ps.RandomFourierFeatures(64, "imq", seed=3).fit(dim=5)
    b = ps.RandomFourierFeatures(64, "imq", seed=3).fit(dim=5)
    c = ps.RandomFourierFeatures(64, "imq", seed=4).fit(dim=5)
    np.testing.assert_array_equal(a.W_, b.W_)
    np.testing.assert_array_equal(a.b_, b.b_)
    assert not np.allclose(a.W_, c.W_)
    assert a.W_.shape == (5, 64) and (a.b_ >= 0).all() and (a.b_ < 2 * np.pi).all()


def test_kernel_matrix_matches_definition():
    rng = np.random.default_rng(0)
    U, V = rng.normal(size=(5, 3)), rng.normal(size=(4, 3))
    np.testing.assert_allclose(ps.kernel_matrix(U, V, "gauss", sigma=0.7), _exact_kernel(U, V, "gauss", 0.7))
    np.testing.assert_allclose(ps.kernel_matrix(U, V, "imq", c=0.3), _exact_kernel(U, V, "imq", c=0.3))


# ------------------------------------------------------------------------------------------------
# set similarity: features vs the double sum
# ------------------------------------------------------------------------------------------------
def _double_sum(A, B, ma, mb, wa, wb, a1, a2, pair_kernel):
    """s_ij = 1/(M M') sum_s sum_t w_s w'_t [a1 <v^_s, v^'_t> + a2 k(v^_s, v^'_t)], written with loops."""
    S = np.zeros((len(A), len(B)))
    for i in range(len(A)):
        for j in range(len(B)):
            total = 0.0
            for s in np.flatnonzero(ma[i]):
                u = A[i, s] / np.linalg.norm(A[i, s])
                for t in np.flatnonzero(mb[j]):
                    v = B[j, t] / np.linalg.norm(B[j, t])
                    total += wa[i, s] * wb[j, t] * (a1 * u @ v + a2 * pair_kernel(u, v))
            S[i, j] = total / (ma[i].sum() * mb[j].sum())
    return S


def test_feature_similarity_equals_double_sum_over_points():
    rng = np.random.default_rng(2)
    A, B = rng.normal(size=(4, 5, 6)), rng.normal(size=(3, 7, 6))
    ma, mb = rng.random((4, 5)) < 0.7, rng.random((3, 7)) < 0.7
    ma[:, 0] = mb[:, 0] = True
    wa, wb = rng.normal(size=(4, 5)), rng.normal(size=(3, 7))     # negative weights included
    rff = ps.RandomFourierFeatures(32, "gauss", seed=5).fit(dim=6)
    phi = lambda x: math.sqrt(2 / 32) * np.cos(x @ rff.W_ + rff.b_)  # noqa: E731
    ref = _double_sum(A, B, ma, mb, wa, wb, 0.667, 0.333, lambda u, v: phi(u) @ phi(v))
    Fa = ps.pointset_features(A, ma, wa, rff=rff, device="cpu")
    Fb = ps.pointset_features(B, mb, wb, rff=rff, device="cpu")
    assert Fa.shape == (4, 6 + 32)
    np.testing.assert_allclose(Fa.astype(np.float64) @ Fb.T.astype(np.float64), ref, atol=2e-5)


@pytest.mark.parametrize("kernel", ["gauss", "imq", "linear"])
def test_exact_path_equals_double_sum(kernel):
    rng = np.random.default_rng(3)
    A, B = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 6, 5))
    ma, mb = np.ones((3, 4), bool), rng.random((2, 6)) < 0.6
    mb[:, 0] = True
    wa, wb = rng.normal(size=(3, 4)), np.ones((2, 6))
    a1, a2 = (1.0, 0.0) if kernel == "linear" else (0.667, 0.333)
    k = (lambda u, v: 0.0) if kernel == "linear" else (
        lambda u, v: float(_exact_kernel(u[None], v[None], kernel)[0, 0]))
    ref = _double_sum(A, B, ma, mb, wa, wb, a1, a2, k)
    got = ps.exact_pointset_similarity(A, B, ma, mb, wa, None, kernel=kernel, device="cpu")
    np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-12)


def test_exact_path_with_normalised_linear_part():
    rng = np.random.default_rng(10)
    A, B = rng.normal(size=(3, 4, 5)), rng.normal(size=(2, 6, 5))
    wa = rng.normal(size=(3, 4))
    ma, mb = np.ones((3, 4), bool), np.ones((2, 6), bool)
    kern = lambda u, v: float(_exact_kernel(u[None], v[None], "imq")[0, 0])  # noqa: E731
    kpart = _double_sum(A, B, ma, mb, wa, np.ones((2, 6)), 0.0, 0.333, kern)
    mean_a = np.stack([(wa[i][:, None] * _unit(A[i])).mean(0) for i in range(3)])
    mean_b = _unit(B).mean(1)
    ref = 0.667 * _unit(mean_a) @ _unit(mean_b).T + kpart
    got = ps.exact_pointset_similarity(A, B, weights_a=wa, kernel="imq", normalize_linear=True, device="cpu")
    np.testing.assert_allclose(got, ref, rtol=1e-10)
    rff = ps.RandomFourierFeatures(4096, "imq", seed=0).fit(dim=5)
    feats = (ps.pointset_features(A, weights=wa, rff=rff, normalize_linear=True, device="cpu") @
             ps.pointset_features(B, rff=rff, normalize_linear=True, device="cpu").T)
    assert np.abs(feats - got).max() < 0.03


def test_rff_set_similarity_approximates_exact_at_large_D():
    rng = np.random.default_rng(4)
    A, B = rng.normal(size=(12, 6, 8)), rng.normal(size=(12, 6, 8))
    exact = ps.exact_pointset_similarity(A, B, kernel="gauss", device="cpu")
    approx = (ps.pointset_features(A, kernel="gauss", n_features=4096, seed=0, device="cpu") @
              ps.pointset_features(B, kernel="gauss", n_features=4096, seed=0, device="cpu").T)
    assert np.abs(approx - exact).max() < 0.02


def test_features_are_chunked_and_read_memmaps(tmp_path, monkeypatch):
    rng = np.random.default_rng(5)
    A = rng.normal(size=(30, 4, 6)).astype(np.float16)
    np.save(tmp_path / "a.npy", A)
    mm = np.load(tmp_path / "a.npy", mmap_mode="r")
    whole = ps.pointset_features(A, kernel="imq", n_features=16, device="cpu")
    monkeypatch.setattr(ps, "_FEATURE_BUDGET", 4 * 16)   # one item per chunk
    calls = []
    chunked = ps.pointset_features(mm, kernel="imq", n_features=16, device="cpu",
                                   progress=lambda it, total=None, desc="": (calls.append(total), it)[1])
    assert calls == [30]
    np.testing.assert_allclose(chunked, whole, rtol=1e-6, atol=1e-7)


def test_pooled_vectors_masked_mean():
    rng = np.random.default_rng(6)
    A = rng.normal(size=(5, 4, 3))
    m = rng.random((5, 4)) < 0.6
    m[:, 0] = True
    ref = np.stack([A[i][m[i]].mean(0) for i in range(5)])
    np.testing.assert_allclose(ps.pooled_vectors(A, m), ref, rtol=1e-5)
    np.testing.assert_allclose(ps.pooled_vectors(Space("t", A, mask=m)), ref, rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# weights, loss, logit scale
# ------------------------------------------------------------------------------------------------
def test_weight_head_formula_and_bounds():
    x = np.array([-1e4, -250.0, -3.0, 0.0, 0.5, 80.0, 1e5])
    np.testing.assert_allclose(ps.weight_head(x), 100 * np.tanh(x / 100))
    t = ps.weight_head(torch.tensor(x))
    np.testing.assert_allclose(t.numpy(), 100 * np.tanh(x / 100))
    assert ps.weight_head(-1e4) < 0 and abs(ps.weight_head(1e9)) <= 100


def test_info_nce_matches_direct_transcription():
    rng = np.random.default_rng(7)
    Fa, Fb = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))

    def direct(s):
        s = min(max(s, 1.0), 100.0)
        L = s * Fa @ Fb.T
        rows = [-(L[i, i] - math.log(sum(math.exp(L[i, j]) for j in range(4)))) for i in range(4)]
        cols = [-(L[j, j] - math.log(sum(math.exp(L[i, j]) for i in range(4)))) for j in range(4)]
        return 0.5 * (sum(rows) / 4 + sum(cols) / 4)

    for scale in (14.29, 0.2, 3.0, 500.0):   # 0.2 and 500 are clamped to 1 and 100
        got = ps.info_nce_loss(torch.tensor(Fa), torch.tensor(Fb), scale)
        assert float(got) == pytest.approx(direct(scale), rel=1e-10)
    assert ps.clamp_logit_scale(500.0) == 100.0 and ps.clamp_logit_scale(0.01) == 1.0


def test_untrained_learned_weights_start_uniform_and_scale_starts_at_14_29():
    A, B, ma = _planted(n=40)
    m = ps.PointSetSimilarity(weights="learned", max_epochs=0, n_features=32, n_components=4,
                              device="cpu").fit(A, B, ma)
    w = m.token_weights(A, ma, "a")
    np.testing.assert_allclose(w, ma.astype(np.float32), rtol=1e-6)
    assert m.logit_scale_ == pytest.approx(14.29)


def test_logit_scale_stays_clamped_when_trained_hard():
    A, B, ma = _planted(n=60)
    m = ps.PointSetSimilarity(weights="learned", max_epochs=3, lr=5.0, patience=10, n_features=16,
                              n_components=4, logit_scale_init=90.0, device="cpu").fit(A, B, ma)
    assert 1.0 <= m.logit_scale_ <= 100.0
    assert all(abs(v) <= 100 for v in m.token_weights(A[:5], ma[:5], "a").ravel())


# ------------------------------------------------------------------------------------------------
# the estimator
# ------------------------------------------------------------------------------------------------
def test_projection_rules():
    A, B, ma = _planted(n=60)
    m = ps.PointSetSimilarity(n_features=16, n_components=4, device="cpu").fit(A, B, ma)
    assert m.projected_ and m.cca_ is not None and m.common_dim_ == 4
    assert m.transform(A, ma, "a").shape == (60, 4 + 16)
    assert m.transform(B, None, "b").shape == (60, 4 + 16)
    with pytest.raises(DataError, match="equal widths"):
        ps.PointSetSimilarity(projection="none").fit(A, B, ma)
    same = ps.PointSetSimilarity(kernel="linear", device="cpu").fit(A, A, ma, ma)
    assert not same.projected_ and same.cca_ is None and same.rff_ is None
    with pytest.raises(DataError, match="token sets"):
        ps.PointSetSimilarity().fit(A[:, 0], B, ma)
    with pytest.raises(DataError, match="unknown kernel"):
        ps.PointSetSimilarity(kernel="cauchy").fit(A, B)


def test_learned_weights_beat_uniform_and_downweight_distractors():
    A, B, ma = _planted(n=200, seed=1)
    anchors, queries = np.arange(150), np.arange(150, 200)
    common = dict(kernel="gauss", n_features=32, n_components=4, device="cpu", seed=0)
    uni = ps.PointSetSimilarity(weights="uniform", **common).fit(A[anchors], B[anchors], ma[anchors])
    learned = ps.PointSetSimilarity(weights="learned", max_epochs=8, lr=3e-2, patience=8, batch_size=64,
                                    **common).fit(A[anchors], B[anchors], ma[anchors])

    def top1(model):
        S = model.score_matrix(A[queries], B[queries], ma[queries])
        return float((S.argmax(1) == np.arange(len(queries))).mean())

    assert top1(learned) > top1(uni) + 0.15
    w = learned.token_weights(A[queries], ma[queries], "a")
    assert np.abs(w[:, :3]).mean() > np.abs(w[:, 3:-1]).mean()
    hist = learned.history_
    assert hist[0]["epoch"] == 0 and len(hist) == learned.n_epochs_ + 1
    assert learned.fit_seconds_ > 0 and learned.n_val_ == 15


def test_training_is_seeded():
    A, B, ma = _planted(n=60)
    kw = dict(weights="learned", max_epochs=2, n_features=16, n_components=4, device="cpu", seed=3)
    S1 = ps.PointSetSimilarity(**kw).fit(A, B, ma).score_matrix(A[:5], B[:5], ma[:5])
    S2 = ps.PointSetSimilarity(**kw).fit(A, B, ma).score_matrix(A[:5], B[:5], ma[:5])
    np.testing.assert_array_equal(S1, S2)


def test_exact_score_matrix_close_to_rff():
    A, B, ma = _planted(n=60)
    m = ps.PointSetSimilarity(n_features=4096, n_components=4, device="cpu").fit(A, B, ma)
    approx = m.score_matrix(A[:10], B[:10], ma[:10])
    exact = m.score_matrix(A[:10], B[:10], ma[:10], exact=True)
    assert np.abs(approx - exact).max() < 0.02


# ------------------------------------------------------------------------------------------------
# diagnostics and the comparison
# ------------------------------------------------------------------------------------------------
def test_spectrum_and_rank():
    rng = np.random.default_rng(8)
    X, Y = rng.normal(size=(30, 4)), rng.normal(size=(30, 4))
    S = X @ Y.T
    sv = ps.similarity_spectrum(S)
    np.testing.assert_allclose(sv, np.linalg.svd(S, compute_uv=False), rtol=1e-10, atol=1e-12)
    assert ps.numerical_rank(sv) == 4


def test_compare_matches_direct_computation_on_equal_widths():
    rng = np.random.default_rng(9)
    n, T, d = 120, 5, 6
    z = rng.normal(size=(n, d))
    A = (z[:, None, :] + 0.8 * rng.normal(size=(n, T, d))).astype(np.float32)
    B = (z[:, None, :] + 0.8 * rng.normal(size=(n, T, d))).astype(np.float32)
    res = ps.compare_pointset_similarities(A, B, kernel="linear", train=False, n_queries=40, seeds=[0, 1],
                                           device="cpu")
    assert set(res["results"]) == {"cosine_pooled", "pointset_uniform"}
    assert res["settings"]["n_anchors"] == 80 and res["settings"]["n_queries"] == 40
    assert "none" in res["projection"]
    from core.evaluate import split_anchors_queries
    for i, seed in enumerate([0, 1]):
        _, q = split_anchors_queries(n, 80, 40, seed)
        pa, pb = _unit(A[q].mean(1)), _unit(B[q].mean(1))
        top1_cos = float((np.argmax(pa @ pb.T, 1) == np.arange(40)).mean())
        assert res["results"]["cosine_pooled"]["top1_x_to_y"]["per_seed"][i] == pytest.approx(top1_cos)
        # linear kernel, linear part normalised (the default): cosine of the means of unit tokens
        la, lb = _unit(_unit(A[q]).mean(1)), _unit(_unit(B[q]).mean(1))
        top1_lin = float((np.argmax(la @ lb.T, 1) == np.arange(40)).mean())
        assert res["results"]["pointset_uniform"]["top1_x_to_y"]["per_seed"][i] == pytest.approx(top1_lin)
    entry = res["results"]["cosine_pooled"]["top1_x_to_y"]
    assert entry["chance"] == pytest.approx(1 / 40)
    assert entry["mean"] == pytest.approx(np.mean(entry["per_seed"]))
    for metrics in res["results"].values():      # the one ddof of spreads over seeds
        for m in metrics.values():
            assert m["std"] == pytest.approx(np.std(m["per_seed"], ddof=1), abs=1e-15)
    assert res["spectra"]["rank_bound"] == d + 1
    assert res["spectra"]["numerical_rank"]["cosine_pooled"] <= d
    assert res["rff_error"] is None   # linear kernel: nothing to approximate


def test_compare_with_training_and_projection():
    A, B, ma = _planted(n=100)
    res = ps.compare_pointset_similarities(A, B, ma, kernel="imq", n_queries=500, seeds=[0], n_features=64,
                                           n_components=4, max_epochs=2, exact_check=10, device="cpu",
                                           keep_models=True)
    assert res["adjustments"] and res["settings"]["n_queries"] == 20
    assert "CCA (k = 4" in res["projection"]
    assert set(res["results"]) == set(ps.SIMILARITIES)
    assert res["training"][0]["epochs_run"] <= 2 and res["training"][0]["seconds"] > 0
    assert res["spectra"]["common_dim"] == 4 and res["spectra"]["numerical_rank"]["cosine_pooled"] <= 4
    assert res["spectra"]["numerical_rank"]["pointset_uniform"] > 5   # the kernel lifts the rank bound
    assert res["rff_error"]["n_items"] == 10 and res["rff_error"]["max_abs_error"] < 0.2
    assert isinstance(res["models"]["pointset_learned"], ps.PointSetSimilarity)
    json.dumps({k: v for k, v in res.items() if k != "models"})   # JSON-ready


def test_compare_rejects_vector_spaces_and_mismatched_rows():
    A, B, ma = _planted(n=40)
    with pytest.raises(DataError, match="vectors"):
        ps.compare_pointset_similarities(Space("v", A[:, 0]), B)
    with pytest.raises(DataError, match="items"):
        ps.compare_pointset_similarities(A, B[:30])


# ------------------------------------------------------------------------------------------------
# the CLI command
# ------------------------------------------------------------------------------------------------
def _npz(tmp_path):
    A, B, ma = _planted(n=80, seed=2)
    path = tmp_path / "sets.npz"
    np.savez(path, text_tokens=A, text_tokens_mask=ma, points_3d=B, pooled=A.mean(1))
    return path, A, B, ma


def test_cli_json_and_text(tmp_path, capsys):
    from core.cli import main

    path, A, B, ma = _npz(tmp_path)
    rc = main(["pointset", f"{path}:text_tokens", f"{path}:points_3d", "--kernel", "linear", "--queries", "20",
               "--seeds", "2", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["kernel"] == "linear" and out["a"]["shape"] == [80, 8, 12] and out["b"]["space"] == "points_3d"
    assert set(out["results"]) == {"cosine_pooled", "pointset_uniform"}
    assert out["results"]["cosine_pooled"]["top1_x_to_y"]["chance"] == pytest.approx(1 / 20)
    assert len(out["results"]["pointset_uniform"]["matching_accuracy"]["per_seed"]) == 2
    # same numbers as the library call
    ref = ps.compare_pointset_similarities(A, B, ma, kernel="linear", train=False, n_queries=20, seeds=[0, 1],
                                           exact_check=0, device="cpu")
    assert out["results"]["pointset_uniform"]["mrr"]["mean"] == pytest.approx(
        ref["results"]["pointset_uniform"]["mrr"]["mean"])
    rc = main(["pointset", f"{path}:text_tokens", f"{path}:points_3d", "--kernel", "imq", "--train", "--epochs",
               "1", "--features", "32", "--k", "4", "--queries", "20", "--seeds", "1", "--exact-check", "5"])
    assert rc == 0
    text = capsys.readouterr().out
    assert "point set, learned w" in text and "RFF vs exact" in text and "training seed 0" in text


def test_cli_rejects_vector_space(tmp_path, capsys):
    from core.cli import main

    path, *_ = _npz(tmp_path)
    rc = main(["pointset", f"{path}:pooled", f"{path}:points_3d"])
    assert rc == 2
    assert "not token sets" in capsys.readouterr().err
