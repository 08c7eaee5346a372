"""Tests of core.hierarchy and core.radial against hand-worked cases and direct transcriptions of METHODS.md s.4."""
import math

import numpy as np
import pandas as pd
import pytest
import torch
from scipy.stats import kendalltau

from core.dataset import Dataset, Space
from core.errors import DataError
from core.hierarchy import (Chains, chain_layout, chains_from_dataset, exterior_angle_matrix, exterior_angles,
                            genericness, hierarchical_retrieval, kendall_tau_tiers, make_negatives,
                            mean_root, radial_order, split_chains)
from core.hierarchy_eval import hierarchy_report
from core.radial import RadialAdapter, RadialFineTuner, exterior_angle_torch, radial_loss


def unit(*v):
    v = np.asarray(v, dtype=np.float64)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------------------------------------
# genericness and exterior angles: hand-worked cases
# ---------------------------------------------------------------------------------------------
def test_genericness_hand_worked():
    r = unit(1, 0, 0)
    E = np.array([unit(1, 0, 0), unit(0, 1, 0), unit(-1, 0, 0)])
    np.testing.assert_allclose(genericness(E, r), [0.0, math.sqrt(2), 2.0], atol=1e-7)


def test_exterior_angle_hand_worked():
    # root at the north pole of the unit sphere in 3-D
    r = unit(0, 0, 1)
    e = unit(1, 0, 1)             # 45 degrees down
    e_out = unit(1, 0, 0)         # further along the same great circle: continues outward
    e_side = unit(0, 1, 1)        # another direction
    ang, valid = exterior_angles(np.array([e, e]), np.array([e_out, e_side]), r)
    assert valid.all()
    # e - r = (s, 0, s - 1), e_out - e = (1 - s, 0, -s) with s = 1/sqrt(2)
    s = 1 / math.sqrt(2)
    u, v = np.array([s, 0, s - 1]), np.array([1 - s, 0, -s])
    expected0 = math.acos(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))
    u2, v2 = u, np.array([-s, s, 0])
    expected1 = math.acos(u2 @ v2 / (np.linalg.norm(u2) * np.linalg.norm(v2)))
    np.testing.assert_allclose(ang, [expected0, expected1], atol=1e-7)
    assert ang[0] < ang[1]        # continuing outward is the smaller angle
    # collinear in the embedding space (before normalisation): exactly 0
    r2 = np.array([1.0, 0, 0, 0])
    a, ok = exterior_angles(np.array([unit(1, 1, 0, 0)]), np.array([unit(1, 1, 0, 0) * 1]), r2)
    assert not ok[0] and a[0] == 0.0


def test_exterior_angle_sentinels_skip_and_count():
    r = unit(0, 0, 1)
    e = unit(1, 0, 1)
    E_from = np.array([e, r, e])
    E_to = np.array([e, e, unit(0, 1, 0)])       # e' = e ; e = r ; a normal pair
    ang, valid = exterior_angles(E_from, E_to, r)
    assert np.isfinite(ang).all()
    assert valid.tolist() == [False, False, True]
    assert int((~valid).sum()) == 2
    M, ok = exterior_angle_matrix(E_from[[0, 2]] if False else np.array([e, unit(1, 0, 0)]),
                                  np.array([e, unit(1, 0, 0)]), r)
    assert not ok[0, 0] and not ok[1, 1] and ok[0, 1] and ok[1, 0]
    assert np.isfinite(M).all()


def test_exterior_angle_torch_matches_numpy():
    rng = np.random.default_rng(0)
    A, B, r = rng.normal(size=(5, 6)), rng.normal(size=(5, 6)), rng.normal(size=6)
    A /= np.linalg.norm(A, axis=1, keepdims=True)
    B /= np.linalg.norm(B, axis=1, keepdims=True)
    r /= np.linalg.norm(r)
    ang_t, _ = exterior_angle_torch(torch.tensor(A), torch.tensor(B), torch.tensor(r))
    naive = [math.acos(np.clip((a - r) @ (b - a) / np.linalg.norm(a - r) / np.linalg.norm(b - a), -1, 1))
             for a, b in zip(A, B)]
    np.testing.assert_allclose(ang_t.numpy(), naive, atol=1e-10)
    np.testing.assert_allclose(exterior_angles(A, B, r)[0], naive, atol=1e-10)


# ---------------------------------------------------------------------------------------------
# tau_d
# ---------------------------------------------------------------------------------------------
def test_kendall_tau_hand_worked_and_scipy():
    R = np.array([[0.1, 0.2, 0.3, 0.4],     # increasing: +1
                  [0.4, 0.3, 0.2, 0.1],     # decreasing: -1
                  [0.1, 0.3, 0.2, 0.4],     # one discordant pair of 6: (5 - 1) / 6
                  [0.2, 0.2, 0.3, 0.4],     # one tie: S = 5, tau-b = 5 / sqrt(6 * 5)
                  [0.5, 0.5, 0.5, 0.5]])    # undefined
    tau, valid = kendall_tau_tiers(R)
    np.testing.assert_allclose(tau[:4], [1.0, -1.0, 4 / 6, 5 / math.sqrt(30)], atol=1e-12)
    assert valid.tolist() == [True, True, True, True, False] and tau[4] == 0.0
    rng = np.random.default_rng(1)
    R2 = rng.integers(0, 3, size=(50, 5)).astype(float)
    tau2, valid2 = kendall_tau_tiers(R2)
    for row, t, v in zip(R2, tau2, valid2):
        ref = kendalltau(row, np.arange(5))[0]
        if v:
            assert t == pytest.approx(ref, abs=1e-12)
        else:
            assert np.isnan(ref)


def _chains(E, lengths, root, texts=None, images=None):
    offsets = np.concatenate([[0], np.cumsum(lengths)])
    texts = np.array(texts if texts is not None else [f"t{i}" for i in range(len(E))], dtype=object)
    return Chains(ids=np.array([str(i) for i in range(len(lengths))]), offsets=offsets, texts=texts,
                  embeddings=np.asarray(E, np.float32), root=np.asarray(root, np.float32), images=images)


def test_radial_order_hand_worked_variable_lengths():
    r = unit(0, 0, 1)
    # points at polar angles theta: radius ||e - r|| = 2 sin(theta / 2), increasing with theta
    def at(theta, phi=0.0):
        return np.array([math.sin(theta) * math.cos(phi), math.sin(theta) * math.sin(phi), math.cos(theta)])
    E = [at(0.2), at(0.4), at(0.6),              # chain 0: monotone, tau 1
         at(0.5), at(0.3),                        # chain 1: length 2, decreasing, tau -1
         at(0.2, 1), at(0.6, 1), at(0.4, 1)]     # chain 2: S = 1 + 1 - 1 = 1, tau 1/3
    ch = _chains(E, [3, 2, 3], r)
    out = radial_order(ch, n_boot=200)
    assert out["per_chain_tau"] == pytest.approx([1.0, -1.0, 1 / 3])
    assert out["tau_d"] == pytest.approx((1 - 1 + 1 / 3) / 3)
    assert out["share_monotone"] == pytest.approx(1 / 3)
    assert out["n_undefined"] == 0
    lo, hi = out["tau_d_ci"]
    assert -1 <= lo <= out["tau_d"] <= hi <= 1
    med0 = np.median([2 * math.sin(0.1), 2 * math.sin(0.25), 2 * math.sin(0.1)])
    assert out["median_radius_per_tier"][0] == pytest.approx(med0, abs=1e-6)
    assert out["median_radius_per_tier"][2] == pytest.approx(np.median([2 * math.sin(0.3), 2 * math.sin(0.2)]),
                                                             abs=1e-6)
    assert out["radii"][1][2] is None


# ---------------------------------------------------------------------------------------------
# hierarchical retrieval against a direct transcription of the definition
# ---------------------------------------------------------------------------------------------
def naive_retrieval(chains, images, n_thresholds=50):
    pool = []
    for t in chains.texts:
        if t not in pool:
            pool.append(t)
    emb = {t: None for t in pool}
    for t, e in zip(chains.texts, chains.embeddings):
        if emb[t] is None:
            emb[t] = np.asarray(e, np.float64) / np.linalg.norm(e)
    r = chains.root / np.linalg.norm(chains.root)
    radius = {t: np.linalg.norm(emb[t] - r) for t in pool}
    lo, hi = min(radius.values()), max(radius.values())
    P, R = [], []
    for c in range(chains.n_chains):
        img = images[c] / np.linalg.norm(images[c])
        preds = []
        for k in range(n_thresholds):
            t = lo + (hi - lo) * k / (n_thresholds - 1)
            allowed = [s for s in pool if radius[s] <= t + 1e-12]
            best = max(allowed, key=lambda s: float(emb[s] @ img))
            if not preds or preds[-1] != best:
                preds.append(best)
        true = list(chains.texts[chains.chain_rows(c)])
        P.append(len([p for p in preds if p in true]) / len(preds))
        R.append(len([t for t in true if t in preds]) / len(true))
    return np.mean(P), np.mean(R), P, R


def test_hierarchical_retrieval_tiny_hand_case():
    # pool: "a" (radius small), "b" (medium), "c" (large). image closest to c, then a, then b.
    r = unit(0, 0, 1)
    a, b, c = unit(0.3, 0, 1), unit(0, 0.8, 1), unit(1.5, 0.1, 1)
    ch = _chains([a, b, a, c], [2, 2], r, texts=["a", "b", "a", "c"],
                 images=np.array([unit(1, 0.05, 0.6), unit(1, 0.05, 0.6)]))
    out = hierarchical_retrieval(ch, n_thresholds=3, return_predictions=True)
    # thresholds: radius(a), midpoint, radius(c). allowed sets {a}, {a, b?}, {a, b, c}
    assert out["predictions"][0][0] == "a" and out["predictions"][0][-1] == "c"
    p, rec, P, R = naive_retrieval(ch, ch.images, 3)
    assert out["per_image_precision"] == pytest.approx(P)
    assert out["per_image_recall"] == pytest.approx(R)
    # chain 1 is (a, c): both predicted, nothing else -> precision 1, recall 1
    assert out["per_image_precision"][1] == pytest.approx(1.0) and out["per_image_recall"][1] == pytest.approx(1.0)


def test_hierarchical_retrieval_matches_naive_random():
    rng = np.random.default_rng(3)
    d, n = 8, 12
    root = unit(*rng.normal(size=d))
    texts, E = [], []
    shared = {k: unit(*rng.normal(size=d)) for k in ("g0", "g1", "g2")}
    lengths = rng.integers(2, 5, size=n)
    for c, L in enumerate(lengths):
        for k in range(L):
            key = f"g{c % 3}" if k == 0 else f"c{c}t{k}"
            texts.append(key)
            E.append(shared[key] if key in shared else unit(*(root + (k + 1) * rng.normal(size=d) * 0.4)))
    images = rng.normal(size=(n, d))
    ch = _chains(E, lengths, root, texts=texts, images=images)
    out = hierarchical_retrieval(ch, n_thresholds=50)
    p, rec, P, R = naive_retrieval(ch, images, 50)
    assert out["precision"] == pytest.approx(p) and out["recall"] == pytest.approx(rec)
    assert out["per_image_precision"] == pytest.approx(P)
    assert out["n_pool"] == len(set(texts))


def test_retrieval_needs_image_side():
    ch = _chains([unit(1, 0, 1), unit(1, 0, 0)], [2], unit(0, 0, 1))
    with pytest.raises(DataError, match="image side"):
        hierarchical_retrieval(ch)


# ---------------------------------------------------------------------------------------------
# RE loss
# ---------------------------------------------------------------------------------------------
def _loss_inputs(seed=0, B=3, L=4, d=5):
    g = torch.Generator().manual_seed(seed)
    pos = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    neg = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    root = torch.randn(d, generator=g, dtype=torch.float64)
    pf = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    nf = torch.randn(B, L, d, generator=g, dtype=torch.float64)
    return pos, neg, root, pf, nf


def test_radial_loss_matches_direct_transcription():
    pos, neg, root, pf, nf = _loss_inputs()
    out = radial_loss(pos, neg, root, pf, nf)

    def xi(a, b):
        u, v = a - root, b - a
        return torch.arccos(torch.clamp((u @ v) / (u.norm() * v.norm()), -1, 1))

    B, L, _ = pos.shape
    P = torch.tensor([[float(xi(pos[b, i], pos[b, i + 1])) for b in range(B)] for i in range(L - 1)], dtype=torch.float64)
    N = torch.tensor([[-float(xi(pos[b, i], neg[b, i])) for b in range(B)] for i in range(L)], dtype=torch.float64)
    L_e = P.mean() + N.mean()
    Nm = N[:-1]
    PN = (P + Nm).ravel()
    L_m = PN[P.ravel().argmax()] + PN[Nm.ravel().argmax()]
    cos = torch.cat([(pos * pf).sum(-1).ravel(), (neg * nf).sum(-1).ravel()])
    L_p = (1 - cos.mean()) / 2
    assert float(out["L_e"]) == pytest.approx(float(L_e), abs=1e-10)
    assert float(out["L_m"]) == pytest.approx(float(L_m), abs=1e-10)
    assert float(out["L_p"]) == pytest.approx(float(L_p), abs=1e-10)
    assert float(out["total"]) == pytest.approx(float(10 * L_p + L_e + L_m), abs=1e-9)


def test_radial_loss_gradcheck():
    pos, neg, root, pf, nf = _loss_inputs(seed=1)
    pos.requires_grad_(True)
    neg.requires_grad_(True)
    root.requires_grad_(True)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[0, 3] = False          # a shorter chain
    nmask = torch.ones(3, 4, dtype=torch.bool)
    nmask[1, 2] = False         # a missing negative
    # random inputs keep every cosine well inside (-1, 1): away from the arccos clip
    assert torch.autograd.gradcheck(
        lambda p, n, r: radial_loss(p, n, r, pf, nf, mask, nmask)["total"], (pos, neg, root), eps=1e-6, atol=1e-5)


def test_radial_loss_masks_degenerate_pairs():
    pos, neg, root, pf, nf = _loss_inputs(seed=2)
    pos = pos.clone()
    pos[0, 1] = pos[0, 0]        # identical consecutive texts: undefined angle, skipped
    pos.requires_grad_(True)
    out = radial_loss(pos, neg, root, pf, nf)
    out["total"].backward()
    assert torch.isfinite(pos.grad).all()


# ---------------------------------------------------------------------------------------------
# adapter and fine-tuning
# ---------------------------------------------------------------------------------------------
def planted_chains(n=60, d=16, seed=0, noise=2.0):
    """Chains moving outward from the root with noise, with given negatives (perturbed positives)."""
    rng = np.random.default_rng(seed)
    root = unit(*rng.normal(size=d))
    texts, E, negs, NE = [], [], [], []
    for c in range(n):
        base = rng.normal(size=d)
        for k in range(4):
            v = root + 0.15 * (k + 1) * base / np.sqrt(d) + noise * 0.3 * rng.normal(size=d) / np.sqrt(d)
            texts.append(f"c{c}t{k}")
            E.append(unit(*v))
            negs.append(f"c{c}n{k}")
            NE.append(unit(*(v + 0.3 * rng.normal(size=d) / np.sqrt(d))))
    ch = _chains(E, [4] * n, root, texts=texts)
    ch.neg_texts = np.array(negs, dtype=object)
    ch.neg_embeddings = np.asarray(NE, np.float32)
    return ch


@pytest.fixture
def one_thread():
    """Tiny training runs are much faster single-threaded on a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _mean_positive_angle(ch):
    idx = ch.padded_index()
    a, ok = exterior_angles(ch.embeddings[idx[:, :-1].ravel()], ch.embeddings[idx[:, 1:].ravel()], ch.root)
    return a[ok].mean()


def test_adapter_is_identity_at_start():
    rng = np.random.default_rng(0)
    X = torch.tensor(rng.normal(size=(5, 8)), dtype=torch.float32)
    Xn = torch.nn.functional.normalize(X, dim=-1)
    for kind in ("linear", "mlp"):
        torch.testing.assert_close(RadialAdapter(8, kind)(Xn), Xn)


def test_finetuning_lowers_heldout_angles_and_is_seeded(one_thread):
    ch = planted_chains()
    split = split_chains(ch.n_chains, 0.25, 0.15, seed=0)
    test = ch.subset(split["test"])
    tuner = RadialFineTuner(lr=1e-2, max_epochs=40, patience=40, batch_size=16, prior_weight=1.0, seed=0,
                            device="cpu").fit(ch.subset(split["train"]), ch.subset(split["val"]))
    # the objective's positive term, on chains never trained on: consecutive tiers continue more outward
    assert _mean_positive_angle(tuner.transform_chains(test)) < _mean_positive_angle(test) - 0.01
    assert tuner.history_[tuner.best_epoch_]["val_loss"] == pytest.approx(tuner.best_val_loss_)
    assert tuner.best_val_loss_ < tuner.history_[0]["val_loss"]
    again = RadialFineTuner(lr=1e-2, max_epochs=5, patience=60, batch_size=16, prior_weight=1.0, seed=0,
                            device="cpu").fit(ch.subset(split["train"]), ch.subset(split["val"]))
    again2 = RadialFineTuner(lr=1e-2, max_epochs=5, patience=60, batch_size=16, prior_weight=1.0, seed=0,
                             device="cpu").fit(ch.subset(split["train"]), ch.subset(split["val"]))
    np.testing.assert_array_equal(again.transform(ch.embeddings), again2.transform(ch.embeddings))


def test_finetuner_save_load(tmp_path, one_thread):
    ch = planted_chains(n=20)
    tuner = RadialFineTuner(max_epochs=2, batch_size=8, device="cpu").fit(ch.subset(range(12)),
                                                                          ch.subset(range(12, 20)))
    tuner.save(tmp_path / "adapter")
    back = RadialFineTuner.load(tmp_path / "adapter")
    np.testing.assert_allclose(back.transform(ch.embeddings), tuner.transform(ch.embeddings), atol=1e-7)


# ---------------------------------------------------------------------------------------------
# dataset side
# ---------------------------------------------------------------------------------------------
def test_chains_from_long_dataset_and_report():
    rng = np.random.default_rng(0)
    rows, lengths = [], [2, 3, 4, 3, 2, 4]
    for c, L in enumerate(lengths):
        for k in range(L):
            rows.append({"id": f"{c}:{k}", "chain": f"ch{c}", "tier": k, "caption": f"c{c % 2} t{k}" if k == 0
                         else f"chain {c} tier {k}"})
    items = pd.DataFrame(rows).sample(frac=1, random_state=0)   # rows in any order
    n = len(items)
    text = rng.normal(size=(n, 6)).astype(np.float32)
    image = rng.normal(size=(n, 3)).astype(np.float32)
    ds = Dataset(items, [Space("text", text, modality="text"), Space("img_3d", image, modality="3d")])
    assert chain_layout(ds) == "long"
    ch = chains_from_dataset(ds, text_space="text", image_space="img_3d")
    assert ch.n_chains == 6 and sorted(ch.lengths.tolist()) == sorted(lengths)
    assert "mean embedding" in ch.root_source
    np.testing.assert_allclose(ch.root, mean_root(text), atol=1e-6)
    # tier order inside each chain follows the tier column
    c = list(ch.ids).index("ch2")
    assert list(ch.texts[ch.chain_rows(c)]) == ["c0 t0", "chain 2 tier 1", "chain 2 tier 2", "chain 2 tier 3"]
    row = items.reset_index(drop=True)
    k = int(np.flatnonzero((row["chain"] == "ch2").to_numpy() & (row["tier"] == 3).to_numpy())[0])
    np.testing.assert_allclose(ch.images[c], image[k])
    assert not ch.image_in_text_space
    rep = hierarchy_report(ch, n_boot=50)
    assert rep["all"]["tau_d"] == pytest.approx(radial_order(ch, n_boot=0)["tau_d"])
    assert "precision" in rep["heldout"]["before"] and rep["image_map"]["method"] == "affine"
    assert rep["split"]["test"] + rep["split"]["val"] + rep["split"]["train"] == 6


def test_chains_from_wide_dataset_given_negatives():
    rng = np.random.default_rng(1)
    items = pd.DataFrame({"id": ["a", "b", "c"], "tier_0": ["x", "x", "y"], "tier_1": ["x1", "x2", "y1"],
                          "neg_tier_0": ["y", "y", "x"], "neg_tier_1": ["x2", "x1", "unknown"]})
    t0, t1 = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    t0[1] = t0[0]   # identical texts, identical vectors
    ds = Dataset(items, [Space("m_tier0", t0.astype(np.float32), modality="text"),
                         Space("m_tier1", t1.astype(np.float32), modality="text")])
    assert chain_layout(ds) == "wide"
    ch = chains_from_dataset(ds, text_space="m", root=np.ones(4))
    assert ch.root_source == "user-chosen vector"
    assert list(ch.texts) == ["x", "x1", "x", "x2", "y", "y1"]
    # negatives reuse the embeddings of identical chain texts; 'unknown' has no embedding and no encoder: dropped
    assert list(ch.neg_texts) == ["y", "x2", "y", "x1", "x", ""]
    np.testing.assert_allclose(ch.neg_embeddings[0], ch.embeddings[4], atol=1e-7)
    assert not ch.neg_embeddings[5].any()


def test_make_negatives_prefers_siblings():
    texts = ["animal", "goat", "animal", "frog", "plant", "tree"]
    E = np.eye(6, dtype=np.float32)
    ch = _chains(E, [2, 2, 2], np.ones(6) / math.sqrt(6), texts=texts)
    neg = make_negatives(ch, seed=0)
    assert neg.neg_texts[1] == "frog" and neg.neg_texts[3] == "goat"   # same parent 'animal'
    assert neg.neg_texts[0] in ("plant",) and neg.neg_texts[4] == "animal"
    assert neg.neg_texts[5] in ("goat", "frog")                         # no sibling: another tier-1 text
    np.testing.assert_array_equal(neg.neg_embeddings[1], E[3])


def test_no_chains_is_a_clear_error():
    ds = Dataset(pd.DataFrame({"id": ["a", "b"]}), [Space("x", np.zeros((2, 3), np.float32))])
    with pytest.raises(DataError, match="no caption chains"):
        chains_from_dataset(ds, text_space="x")


# ---------------------------------------------------------------------------------------------
# the CLI command (MiniLM, offline)
# ---------------------------------------------------------------------------------------------
def test_cli_hierarchy_json(tmp_path, monkeypatch, capsys):
    import json as _json

    from core.cli import main
    from core.encoders import MiniLMEncoder
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(tmp_path / "cache"))
    rows = [("1", "animal => goat => a goat on grass => a white goat eating grass on a hill"),
            ("2", "animal => frog => a frog in a pond => a green frog sitting on a lily pad"),
            ("3", "vehicle => car => a red car => a red car parked on a city street"),
            ("4", "food => pizza => a pizza on a table => a pepperoni pizza on a wooden table")]
    path = tmp_path / "caps.csv"
    pd.DataFrame({"id": [r[0] for r in rows], "captions": [r[1] for r in rows],
                  "image_url": [""] * 4}).to_csv(path, index=False)
    code = main(["hierarchy", str(path), "--json", "--no-images"])
    out = _json.loads(capsys.readouterr().out)
    assert code == 0
    # independent: MiniLM through sentence-transformers directly, root = its embedding of ""
    st = MiniLMEncoder(cache_namespace=None).sentence_transformer()
    taus, radii = [], []
    root = st.encode([""], normalize_embeddings=True)[0]
    for _, caps in rows:
        tiers = caps.split(" => ")
        E = st.encode(tiers, normalize_embeddings=True)
        r = np.linalg.norm(E - root, axis=1)
        radii.append(r)
        taus.append(kendalltau(r, np.arange(4))[0])
    assert out["all"]["tau_d"] == pytest.approx(np.mean(taus), abs=1e-4)
    assert out["all"]["median_radius_per_tier"] == pytest.approx(np.median(np.array(radii), axis=0).tolist(),
                                                                 abs=1e-4)
    assert out["root"].startswith("embedding of the empty string")


def test_chain_pca_is_sklearn_pca_of_root_and_chain():
    from sklearn.decomposition import PCA as SkPCA

    from core.hierarchy import chain_pca

    rng = np.random.default_rng(4)
    E, root = rng.normal(size=(6, 10)), rng.normal(size=10)
    X = np.vstack([root / np.linalg.norm(root), E / np.linalg.norm(E, axis=1, keepdims=True)])
    ref = SkPCA(2, svd_solver="full").fit_transform(X)
    coords = chain_pca(E, root)
    assert coords.shape == (7, 2)
    # the same axes up to sign (normalize_rows works in float32)
    np.testing.assert_allclose(np.abs(coords), np.abs(ref), atol=1e-6)
    assert chain_pca(E[:1, :1], root[:1]).shape == (2, 2)                  # one dimension: padded
