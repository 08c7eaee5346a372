"""Paper presets (core/presets.py) and the behaviour METHODS.md section 7 states for each of them.

Paper D: the authors' preprocessing order, RACING-GCCA against a naive block eigenproblem written here, GPA-ADD
against the preprocessed consensus, GCPA's sampled-batch schedule.
"""
import json
import math

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
             val_patience=100, batch_size=64, random_state=0).fit(sp)
    steps = [h["step"] for h in m.history_]
    assert steps == [10, 20, 30, 40, 50, 60]               # 2 epochs x 30 steps, a check every 10
    best = min(h["heldout_loss"] for h in m.history_)
    assert m.best_step_ == [h["step"] for h in m.history_ if h["heldout_loss"] == best][0]
    assert m.describe()["schedule"] == "sampled"
    # patience counts checks: with patience 1 training stops at the first check that does not improve
    m1 = GCPA(schedule="sampled", max_epochs=20, steps_per_epoch=30, val_interval=10, val_batches=3,
              val_patience=1, batch_size=64, random_state=0, lr=0.5).fit(sp)
    losses = [h["heldout_loss"] for h in m1.history_]
    first_bad = next(i for i in range(1, len(losses)) if losses[i] >= min(losses[:i]) - 1e-7)
    assert len(losses) == first_bad + 1
    # default steps per epoch: max(200, ceil(train rows / batch)); 40-step interval once the held-out set is a batch
    m2 = GCPA(schedule="sampled", max_epochs=1, val_batches=2, batch_size=8, random_state=0).fit(sp)
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


# ------------------------------------------------------------------------------------------------
# paper C
# ------------------------------------------------------------------------------------------------
def _xi(e, e2, r):
    a, b = e - r, e2 - e
    return float(np.arccos(np.clip(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)), -1, 1)))


def _unit(v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


def test_re_loss_on_a_hand_worked_two_chain_batch():
    """Two 4-tier chains in 3-D: every term of batch2losses written out one angle at a time."""
    import torch
    from core.radial import radial_loss

    rng = np.random.default_rng(3)
    r = _unit([0, 0, 1.0])
    pos = np.array([[_unit(r + 0.3 * (t + 1) * rng.normal(size=3)) for t in range(4)] for _ in range(2)])
    neg = np.array([[_unit(r + 0.3 * (t + 1) * rng.normal(size=3)) for t in range(4)] for _ in range(2)])
    pos_f = np.array([[_unit(v + 0.05 * rng.normal(size=3)) for v in c] for c in pos])
    neg_f = np.array([[_unit(v + 0.05 * rng.normal(size=3)) for v in c] for c in neg])
    P = np.array([[_xi(pos[c, i], pos[c, i + 1], r) for i in range(3)] for c in range(2)])      # (2, 3)
    N = np.array([[-_xi(pos[c, i], neg[c, i], r) for i in range(4)] for c in range(2)])       # (2, 4)
    PN = (P + N[:, :3]).ravel()
    L_e = P.mean() + N[:, :3].mean()                      # tiers 0..2 only
    L_m = PN[P.ravel().argmax()] + PN[N[:, :3].ravel().argmax()]
    cos = np.concatenate([(pos * pos_f).sum(-1).ravel(), (neg * neg_f).sum(-1).ravel()])    # 16 texts
    L_p = (1 - cos.mean()) / 2
    t = lambda x: torch.as_tensor(x)   # noqa: E731
    out = radial_loss(t(pos), t(neg), t(r), t(pos_f), t(neg_f), le_negatives="shared")
    assert float(out["L_e"]) == pytest.approx(L_e, abs=1e-12)
    assert float(out["L_m"]) == pytest.approx(L_m, abs=1e-12)
    assert float(out["L_p"]) == pytest.approx(L_p, abs=1e-12)
    assert float(out["total"]) == pytest.approx(10 * L_p + L_e + L_m, abs=1e-12)
    # the project's default averages all four tiers' negatives in L_e
    out_all = radial_loss(t(pos), t(neg), t(r), t(pos_f), t(neg_f))
    assert float(out_all["L_e"]) == pytest.approx(P.mean() + N.mean(), abs=1e-12)
    # the tier-3 negative enters no angle under the authors' loss: moving it changes L_p only
    neg2 = neg.copy()
    neg2[:, 3] = _unit([1.0, 1.0, -0.2])
    out2 = radial_loss(t(pos), t(neg2), t(r), t(pos_f), t(neg_f), le_negatives="shared")
    assert float(out2["L_e"]) == pytest.approx(L_e, abs=1e-12)
    assert float(out2["L_m"]) == pytest.approx(L_m, abs=1e-12)
    assert float(out2["L_p"]) != pytest.approx(L_p, abs=1e-6)
    assert float(radial_loss(t(pos), t(neg2), t(r), t(pos_f), t(neg_f))["L_e"]) != pytest.approx(
        float(out_all["L_e"]), abs=1e-6)


def _chains(radii_like, texts=None, images=None):
    """Chains whose tier embeddings lie at chosen angles from the root (so radii are what we set)."""
    from core.hierarchy import Chains

    C, L = len(radii_like), len(radii_like[0])
    root = np.array([1.0, 0, 0, 0])
    emb = []
    for c, row in enumerate(radii_like):
        for t, ang in enumerate(row):
            v = [np.cos(ang), 0.0, 0.0, 0.0]
            v[1 + (c + t) % 3] = np.sin(ang)    # equal angles give bit-identical radii (ties stay ties)
            emb.append(v)
    texts = np.array(texts if texts is not None else [f"c{c}t{t}" for c in range(C) for t in range(L)], dtype=object)
    return Chains(ids=np.array([f"c{c}" for c in range(C)]), offsets=np.arange(0, C * L + 1, L), texts=texts,
                  embeddings=np.array(emb, dtype=np.float32), root=root, images=images)


def test_tau_d_argsort_matches_scipy_on_tied_radii_and_tau_b_is_the_default():
    from scipy.stats import kendalltau
    from core.hierarchy import kendall_tau_argsort, kendall_tau_tiers, radial_order

    R = np.array([[0.1, 0.2, 0.2, 0.4], [0.3, 0.1, 0.2, 0.4], [0.2, 0.2, 0.2, 0.5], [0.4, 0.3, 0.2, 0.1]])
    ref_a = [kendalltau(np.argsort(r, kind="stable"), [1, 2, 3, 4])[0] for r in R]
    ref_b = [kendalltau(r, [1, 2, 3, 4])[0] for r in R]
    np.testing.assert_allclose(kendall_tau_argsort(R)[0], ref_a, atol=1e-12)
    np.testing.assert_allclose(kendall_tau_tiers(R)[0], ref_b, atol=1e-12)
    assert not np.allclose(ref_a, ref_b)                   # ties make them differ
    ch = _chains(np.arccos(1 - R ** 2 / 2))                # ||e - r|| = R for unit e, r
    default = radial_order(ch, n_boot=0)
    authors = radial_order(ch, n_boot=0, tau="argsort")
    assert default["tau_method"] == "tau-b" and authors["tau_method"] == "argsort"
    assert authors["tau_d"] == pytest.approx(np.mean(ref_a), abs=1e-6)
    assert default["tau_d"] == pytest.approx(np.mean(ref_b), abs=1e-6)
    assert default["n_chains_with_ties"] == 2
    assert default["tau_d_by_method"] == authors["tau_d_by_method"]


def naive_by_image(texts, emb, root, chain_tiers, image_of, images, T=50):
    """The authors' protocol written out: pool = every chain's texts (repeats kept), argmax per threshold."""
    radii = np.linalg.norm(emb - root, axis=1)
    th = np.linspace(radii.min(), radii.max(), T)
    prec, rec = [], []
    for u, img in enumerate(images):
        preds = []
        for t in th:
            ok = np.flatnonzero(radii <= t + 1e-12)
            best = texts[ok[np.argmax(emb[ok] @ img)]]
            if not preds or preds[-1] != best:
                preds.append(best)
        chains = [c for c, i in enumerate(image_of) if i == u]
        truth = {x for c in chains for x in chain_tiers[c]}
        prec.append(len(set(preds) & truth) / len(set(preds)))
        rec.append(np.mean([any(chain_tiers[c][k] in preds for c in chains) for k in range(len(chain_tiers[0]))]))
    return np.mean(prec), np.mean(rec)


def test_retrieval_per_unique_image_over_every_chain_matches_the_naive_protocol():
    from core.hierarchy import hierarchical_retrieval, hierarchical_retrieval_by_image, normalize_rows

    rng = np.random.default_rng(5)
    C, L = 12, 4
    ang = np.sort(rng.uniform(0.2, 1.4, size=(C, L)), axis=1)
    texts = [f"c{c}t{t}" for c in range(C) for t in range(L)]
    for c in range(0, C, 3):                               # shared generic tiers: repeated strings in the pool
        texts[c * L] = "animal"
    ch = _chains(ang, texts)
    ch.embeddings[[c * L for c in range(0, C, 3)]] = ch.embeddings[0]
    image_of = np.array([0, 0, 1, 2, 3, 3, 4, 5, 6, 7, 7, 8])     # images 0, 3, 7 have two chains each
    base = normalize_rows(rng.normal(size=(9, 4)))
    images = base[image_of]
    res = hierarchical_retrieval_by_image(ch, images)
    chain_tiers = [texts[c * L:(c + 1) * L] for c in range(C)]
    p, r = naive_by_image(np.array(texts, dtype=object), ch.embeddings.astype(np.float64), ch.root, chain_tiers,
                          image_of, base)
    assert res["n_images"] == 9 and res["n_pool"] == 48 and res["n_pool_distinct"] == 45
    assert res["precision"] == pytest.approx(p, abs=1e-9) and res["recall"] == pytest.approx(r, abs=1e-9)
    per_chain = hierarchical_retrieval(ch, images)
    assert per_chain["n_images"] == 12 and per_chain["pool"] == "per-chain"
    # held-out queries: only those chains' images are asked, the pool stays every chain's texts
    q = np.array([0, 1, 5, 9])
    sub = hierarchical_retrieval_by_image(ch, images, query_chains=q)
    assert sub["n_images"] == 3 and sub["n_pool"] == 48


def test_hierarchy_command_under_the_paper_c_preset_says_which_pool(capsys):
    from core.cli import main

    assert main(["hierarchy", "demo", "--preset", "paper-c", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "paper_c" and out["tau_method"] == "argsort"
    before = out["heldout"]["before"]
    assert before["retrieval_pool"] == "all-chains" and before["n_pool"] == 4 * out["n_chains"]
    assert before["n_retrieval_queries"] == out["split"]["test"]
    assert main(["hierarchy", "demo", "--preset", "paper-c"]) == 0
    text = capsys.readouterr().out
    assert "pool of every chain's texts" in text and "settings: paper C preset" in text


# ------------------------------------------------------------------------------------------------
# paper B
# ------------------------------------------------------------------------------------------------
def _token_sets(n=60, T=6, p=8, q=8, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 3))
    A = 0.5 * rng.normal(size=(n, T, p)) + (z @ rng.normal(size=(3, p)))[:, None, :]
    B = 0.5 * rng.normal(size=(n, T, q)) + (z @ rng.normal(size=(3, q)))[:, None, :]
    return A.astype(np.float32), B.astype(np.float32)


def test_rff_redrawn_at_every_training_step_and_drawn_once_for_evaluation(monkeypatch):
    import hashlib

    import torch
    from core import pointset as ps

    seen = []
    original = ps.RandomFourierFeatures.features_t

    def spy(self, v):
        seen.append((torch.is_grad_enabled(), hashlib.sha256(self.W_.tobytes() + self.b_.tobytes()).hexdigest()))
        return original(self, v)

    monkeypatch.setattr(ps.RandomFourierFeatures, "features_t", spy)
    A, B = _token_sets()
    m = ps.PointSetSimilarity(weights="learned", projection="none", n_features=32, max_epochs=2, batch_size=16,
                              val_fraction=0.0, rff_redraw=True, random_state=1, device="cpu").fit(A, B)
    train = [h for grad, h in seen if grad]
    # both sides of a step share one draw; every step draws afresh: 2 calls per step, all steps different
    steps = [train[i] for i in range(0, len(train), 2)]
    assert all(train[i] == train[i + 1] for i in range(0, len(train), 2))
    assert len(steps) == 2 * math.ceil(len(A) / 16) and len(set(steps)) == len(steps)
    eval_hash = hashlib.sha256(m.rff_.W_.tobytes() + m.rff_.b_.tobytes()).hexdigest()
    assert eval_hash not in steps
    seen.clear()
    F1, F2 = m.transform(A[:10], side="a"), m.transform(A[:10], side="a")
    np.testing.assert_array_equal(F1, F2)
    assert {h for _, h in seen} == {eval_hash}
    # the project's default: one seeded draw for training too
    seen.clear()
    ps.PointSetSimilarity(weights="learned", projection="none", n_features=32, max_epochs=1, batch_size=16,
                          val_fraction=0.0, random_state=1, device="cpu").fit(A, B)
    assert len({h for grad, h in seen if grad}) == 1


def test_paper_b_head_and_logit_scale():
    from core import pointset as ps

    A, B = _token_sets()
    authors = ps.PointSetSimilarity(weights="learned", projection="none", n_features=16, max_epochs=0,
                                    head_bias=False, logit_scale_param="direct", random_state=0, device="cpu").fit(A, B)
    assert authors.side_a_.head.bias is None
    w = authors.token_weights(A[:5], side="a")
    assert np.std(w) > 1e-3                                 # a random start, not uniform weights
    assert authors.logit_scale_ == pytest.approx(1 / 0.07)
    again = ps.PointSetSimilarity(weights="learned", projection="none", n_features=16, max_epochs=0,
                                  head_bias=False, random_state=0, device="cpu").fit(A, B)
    np.testing.assert_array_equal(w, again.token_weights(A[:5], side="a"))   # the random start is seeded
    default = ps.PointSetSimilarity(weights="learned", projection="none", n_features=16, max_epochs=0,
                                    random_state=0, device="cpu").fit(A, B)
    np.testing.assert_allclose(default.token_weights(A[:5], side="a"), 1.0, rtol=1e-6)
    # one Adam step moves the directly trained scale by about lr, the log-parametrised one by a factor e^(+-lr)
    kw = dict(weights="learned", projection="none", n_features=16, max_epochs=1, batch_size=len(A), lr=0.5,
              val_fraction=0.0, random_state=0, device="cpu")
    direct = ps.PointSetSimilarity(logit_scale_param="direct", **kw).fit(A, B)
    logp = ps.PointSetSimilarity(**kw).fit(A, B)
    assert abs(direct.logit_scale_ - 1 / 0.07) == pytest.approx(0.5, rel=1e-3)
    assert abs(np.log(logp.logit_scale_) - np.log(14.29)) == pytest.approx(0.5, rel=1e-3)
    hard = ps.PointSetSimilarity(logit_scale_param="direct", **{**kw, "lr": 500.0, "max_epochs": 2}).fit(A, B)
    assert 1.0 <= hard.logit_scale_ <= 100.0


def test_pointset_command_records_the_paper_b_preset(tmp_path, capsys):
    from core.cli import main

    A, B = _token_sets(n=80)
    np.savez(tmp_path / "t.npz", a_tokens=A, b_tokens=B)
    path = tmp_path / "t.npz"
    args = ["pointset", f"{path}:a_tokens", f"{path}:b_tokens", "--train", "--epochs", "1", "--features", "16",
            "--queries", "20", "--seeds", "1", "--exact-check", "0"]
    assert main([*args, "--preset", "paper-b", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "paper_b"
    s = out["settings"]
    assert s["rff_redraw"] is True and s["normalize_linear"] is False and s["head_bias"] is False
    assert out["training"][0]["logit_scale"] != pytest.approx(14.29, abs=1e-3)
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "custom" and out["settings"]["rff_redraw"] is False
    assert len(out["preset"]["differences"]) == 4


# ------------------------------------------------------------------------------------------------
# paper A / the Platonic code
# ------------------------------------------------------------------------------------------------
def test_platonic_preprocess_clips_at_the_mean_row_quantile_then_normalises():
    from core.similarity import platonic_preprocess

    rng = np.random.default_rng(0)
    X = rng.standard_t(2, size=(200, 16)) * 5
    t = np.mean([np.quantile(np.abs(row), 0.95) for row in X])     # per-item 0.95 quantile, averaged
    ref = np.clip(X, -t, t)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    got = platonic_preprocess(X, chunk_rows=37)                     # chunking changes nothing
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-7)
    assert np.abs(got).max() <= 1 and np.allclose(np.linalg.norm(got, axis=1), 1, atol=1e-6)


def test_paper_a_measures_rbf_sigma_one_and_svcca_top10_against_naive_definitions():
    from sklearn.cross_decomposition import CCA as SkCCA
    from core import similarity as sim

    rng = np.random.default_rng(1)
    z = rng.normal(size=(150, 4))
    X = z @ rng.normal(size=(4, 20)) + 0.5 * rng.normal(size=(150, 20))
    Y = z @ rng.normal(size=(4, 14)) + 0.5 * rng.normal(size=(150, 14))
    # RBF CKA with a fixed sigma = 1 (the naive kernel form)
    def naive_rbf_cka(A, B, s):
        def k(M):
            D2 = ((M[:, None] - M[None]) ** 2).sum(-1)
            K = np.exp(-D2 / (2 * s * s))
            H = np.eye(len(M)) - 1 / len(M)
            return H @ K @ H
        Ka, Kb = k(A), k(B)
        return (Ka * Kb).sum() / (np.linalg.norm(Ka) * np.linalg.norm(Kb))
    Xp, Yp = sim.platonic_preprocess(X), sim.platonic_preprocess(Y)
    assert sim.rbf_cka(Xp, Yp, sigma=1.0) == pytest.approx(naive_rbf_cka(Xp.astype(float), Yp.astype(float), 1.0),
                                                             rel=1e-6)
    # SVCCA top-10 = the mean correlation of sklearn's CCA on the top-10 PCA scores
    def pcs(A, k):
        Ac = A - A.mean(0)
        U, S, _ = np.linalg.svd(Ac, full_matrices=False)
        return U[:, :k] * S[:k]
    a, b = pcs(X, 10), pcs(Y, 10)
    ca, cb = SkCCA(n_components=10, max_iter=5000, tol=1e-12).fit(a, b).transform(a, b)
    ref = np.mean([np.corrcoef(ca[:, i], cb[:, i])[0, 1] for i in range(10)])
    assert sim.svcca_top10(X, Y) == pytest.approx(ref, abs=1e-4)
    assert sim.svcca_top10(X, Y) != pytest.approx(sim.svcca(X, Y), abs=1e-3)     # named apart: they differ
    assert sim.resolve_measure("svcca_platonic").name == "svcca_top10"
    # similarity_matrix applies the pre-processing to every space first
    res = sim.similarity_matrix({"x": X, "y": Y}, "linear_cka", preprocess="platonic")
    assert res["preprocess"] == "platonic"
    assert res["values"][0][1] == pytest.approx(sim.linear_cka(Xp, Yp), rel=1e-9)


def test_cka_and_align_commands_record_the_paper_a_preset(tmp_path, capsys):
    from core.cli import main
    from core import similarity as sim

    rng = np.random.default_rng(2)
    z = rng.normal(size=(120, 4))
    X = (z @ rng.normal(size=(4, 12)) + 0.3 * rng.normal(size=(120, 12))).astype(np.float32)
    Y = (z @ rng.normal(size=(4, 10)) + 0.3 * rng.normal(size=(120, 10))).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", Y)
    files = [str(tmp_path / "x.npy"), str(tmp_path / "y.npy")]
    assert main(["cka", *files, "--measure", "svcca", "--preset", "paper-a", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["measure"] == "svcca_top10" and out["preprocess"] == "platonic"
    assert out["preset"]["name"] == "paper_a"
    assert out["matrix"][0][1] == pytest.approx(sim.svcca_top10(sim.platonic_preprocess(X),
                                                                sim.platonic_preprocess(Y)), rel=1e-6)
    assert main(["cka", *files, "--measure", "rbf_cka", "--preset", "paper-a", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["parameters"]["sigma"] == 1.0
    assert main(["cka", *files, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["name"] == "custom" and len(out["preset"]["differences"]) == 3
    assert main(["align", files[0], files[1], "--method", "cca-affine", "--k", "4", "--queries", "20", "--seeds",
                 "1", "--preset", "paper-a", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["preset"]["settings"]["k"] == 4
    assert out["preset"]["differences"] == [
        "paper A preset, changed here: subspace dimension k = 4; the authors' code uses k = 50",
        "paper A preset, changed here: queries = 20; the authors' code uses 500 queries",
        "paper A preset, changed here: seeds = 1; the authors' code uses 3 seeds"]
    assert any("k = 4" in line for line in out["preset"]["differences"])


def test_hierarchy_report_paper_pool_with_a_mapped_image_side_and_fine_tuning():
    from dataclasses import replace
    from core.hierarchy import make_negatives
    from core.hierarchy_eval import hierarchy_report

    rng = np.random.default_rng(4)
    C, L = 30, 4
    ch = _chains(np.sort(rng.uniform(0.2, 1.4, size=(C, L)), axis=1))
    ch = make_negatives(replace(ch, images=rng.normal(size=(C, 6)).astype(np.float32), image_in_text_space=False),
                        seed=0)
    out = hierarchy_report(ch, finetune=True, seed=0, n_boot=0, retrieval_pool="all-chains", tau="argsort",
                           tuner_params={"max_epochs": 2, "le_negatives": "shared"})
    for when in ("before", "after"):
        s = out["heldout"][when]
        assert s["retrieval_pool"] == "all-chains" and s["n_pool"] == C * L
        assert s["n_retrieval_queries"] == out["split"]["test"] and s["tau_method"] == "argsort"
    assert out["training"]["params"]["le_negatives"] == "shared"
    default = hierarchy_report(ch, seed=0, n_boot=0)
    assert default["heldout"]["before"]["retrieval_pool"] == "per-chain"
    assert default["heldout"]["before"]["n_pool"] < C * L       # only the held-out chains' texts
