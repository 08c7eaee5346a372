"""Judging a universe (core/universe_eval.py) against naive references written out here."""
import json
import pickle
from math import comb

import numpy as np
import pytest
from scipy.stats import ortho_group

from core.commands._common import to_jsonable
from core.errors import DataError
from core.universe import GCCA, GPA, PairwiseProcrustes
from core.universe_eval import (add_space_vs_refit, any_to_any_retrieval, clustering_scores, cycle_consistency,
                                evaluate_universe, split_train_test, universe_map)


def views(n=160, widths=(8, 10, 9), k=4, seed=0, noise=0.8, labels=False):
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 4, n)
    centers = rng.normal(size=(4, k)) * 8
    z = centers[lab] + rng.normal(size=(n, k)) if labels else rng.normal(size=(n, k))
    sp = {f"v{m}": z @ rng.normal(size=(k, w)) + noise * rng.normal(size=(n, w)) for m, w in enumerate(widths)}
    return (sp, lab) if labels else sp


def naive_cos(A, B):
    A = A / np.linalg.norm(A, axis=1, keepdims=True)
    B = B / np.linalg.norm(B, axis=1, keepdims=True)
    return A @ B.T


def naive_ari(a, b):
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    C = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(C, (ai, bi), 1)
    n = len(a)
    sum_c = sum(comb(int(v), 2) for v in C.ravel())
    sa = sum(comb(int(v), 2) for v in C.sum(1))
    sb = sum(comb(int(v), 2) for v in C.sum(0))
    expected = sa * sb / comb(n, 2)
    return (sum_c - expected) / (0.5 * (sa + sb) - expected)


def naive_nmi(a, b):
    _, ai = np.unique(a, return_inverse=True)
    _, bi = np.unique(b, return_inverse=True)
    C = np.zeros((ai.max() + 1, bi.max() + 1))
    np.add.at(C, (ai, bi), 1)
    P = C / C.sum()
    pa, pb = P.sum(1), P.sum(0)
    nz = P > 0
    mi = (P[nz] * np.log(P[nz] / np.outer(pa, pb)[nz])).sum()
    h = lambda p: -(p[p > 0] * np.log(p[p > 0])).sum()  # noqa: E731
    return mi / ((h(pa) + h(pb)) / 2)


def test_split_is_seeded_disjoint_and_keeps_groups_together():
    train, test = split_train_test(100, 0.2, seed=1)
    assert len(test) == 20 and len(train) == 80 and not set(train) & set(test)
    assert np.array_equal(split_train_test(100, 0.2, seed=1)[1], test)
    groups = np.repeat(np.arange(25), 4)
    train, test = split_train_test(100, 0.2, seed=0, groups=groups)
    assert not set(groups[train]) & set(groups[test])


def test_any_to_any_retrieval_matches_naive_ranks():
    sp = views()
    gcca = GCCA(reg=1.0).fit(sp)
    res = any_to_any_retrieval(gcca, sp)
    names = list(sp)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                assert res["top1"][i][j] is None
                continue
            S = naive_cos(gcca.to_universe(a, sp[a]), gcca.to_universe(b, sp[b]))
            rank = 1 + (S > np.diag(S)[:, None]).sum(1)   # continuous data: no ties
            assert res["top1"][i][j] == pytest.approx((rank == 1).mean())
            assert res["top5"][i][j] == pytest.approx((rank <= 5).mean())
            assert res["mrr"][i][j] == pytest.approx((1 / rank).mean())
    off = [res["top1"][i][j] for i in range(3) for j in range(3) if i != j]
    assert res["summary"]["top1"]["mean"] == pytest.approx(np.mean(off))
    assert res["summary"]["top1"]["worst"] == pytest.approx(min(off))
    a, b = res["summary"]["top1"]["worst_pair"]
    assert res["top1"][names.index(a)][names.index(b)] == min(off)
    assert res["chance"]["top1"] == pytest.approx(1 / 160)


def test_pairwise_retrieval_maps_a_into_b():
    sp = views(seed=4)
    pw = PairwiseProcrustes().fit(sp)
    res = any_to_any_retrieval(pw, sp)
    Xa, Xb = pw.preprocess("v1", sp["v1"]), pw.preprocess("v2", sp["v2"])
    S = naive_cos(Xa @ pw.R_[("v1", "v2")], Xb)
    rank = 1 + (S > np.diag(S)[:, None]).sum(1)
    assert res["top1"][1][2] == pytest.approx((rank == 1).mean())


def test_cycle_consistency_zero_for_gpa_positive_for_pw():
    sp = views(widths=(8, 8, 8, 8), seed=2)
    gpa = GPA().fit(sp)
    pw = PairwiseProcrustes().fit(sp)
    c_gpa = cycle_consistency(gpa, sp)
    c_pw = cycle_consistency(pw, sp)
    assert c_gpa["n_triples"] == 24 and c_gpa["max"] < 1e-10
    # naive PW cycle for one triple
    x = pw.preprocess("v0", sp["v0"])
    y = x @ pw.R_[("v0", "v1")] @ pw.R_[("v1", "v2")] @ pw.R_[("v2", "v0")]
    err = (np.linalg.norm(y - x, axis=1) / np.linalg.norm(x, axis=1)).mean()
    row = next(t for t in c_pw["triples"] if t["cycle"] == ["v0", "v1", "v2"])
    assert row["error"] == pytest.approx(err)
    assert c_pw["mean"] > 1e-3
    assert cycle_consistency(pw, sp, max_triples=5)["n_triples"] == 5
    two = {k: sp[k] for k in ("v0", "v1")}
    assert cycle_consistency(PairwiseProcrustes().fit(two), two)["mean"] is None


def test_clustering_scores_match_independent_ari_and_nmi():
    from sklearn.cluster import KMeans

    sp, lab = views(n=200, labels=True, seed=3)
    gpa = GPA().fit(sp)
    labels = lab.astype(object)
    labels[:5] = None   # missing labels are left out
    res = clustering_scores(gpa, sp, labels, seeds=(0, 1))
    keep = np.arange(200) >= 5
    for name in sp:
        U = gpa.to_universe(name, sp[name])
        U = U / np.linalg.norm(U, axis=1, keepdims=True)
        aris, nmis = [], []
        for s in (0, 1):
            pred = KMeans(n_clusters=4, n_init=1, random_state=s).fit_predict(U[keep])
            aris.append(naive_ari(lab[keep], pred))
            nmis.append(naive_nmi(lab[keep], pred))
        assert res["spaces"][name]["ari"] == pytest.approx(np.mean(aris), abs=1e-12)
        assert res["spaces"][name]["nmi"] == pytest.approx(np.mean(nmis), abs=1e-12)
    assert res["n_items"] == 195
    # well-separated planted clusters are found
    assert res["mean_ari"] > 0.8


def test_add_space_vs_refit_keeps_base_and_reports_both():
    sp = views(widths=(8, 9, 10, 11), seed=5)
    train, test = split_train_test(160, 0.25, seed=0)
    tr = {k: v[train] for k, v in sp.items()}
    te = {k: v[test] for k, v in sp.items()}
    base = GPA().fit({k: tr[k] for k in ("v0", "v1", "v2")})
    R_before = {k: v.copy() for k, v in base.R_.items()}
    res = add_space_vs_refit(base, tr, te, "v3")
    assert set(base.R_) == {"v0", "v1", "v2"} and all(np.array_equal(base.R_[k], R_before[k]) for k in R_before)
    base_only = any_to_any_retrieval(base, te, names=["v0", "v1", "v2"])
    sub = [row[:3] for row in res["add"]["top1"][:3]]
    assert sub == base_only["top1"]        # GPA-ADD leaves the base pairs exactly as they were
    assert res["add_seconds"] > 0 and res["refit_seconds"] > 0
    assert 0 <= res["top1_new_pairs"]["add"] <= 1 and 0 <= res["top1_new_pairs"]["refit"] <= 1
    # the pair means, by hand from the top-1 matrices: the 6 ordered pairs with v3, the 6 among v0..v2
    for way in ("add", "refit"):
        H = np.array(res[way]["top1"], dtype=float)
        new_cells = [H[i, j] for i in range(4) for j in range(4) if i != j and 3 in (i, j)]
        base_cells = [H[i, j] for i in range(3) for j in range(3) if i != j]
        assert len(new_cells) == 6 and res["top1_new_pairs"][way] == pytest.approx(np.mean(new_cells))
        assert res["top1_base_pairs"][way] == pytest.approx(np.mean(base_cells))
    # the old keys: read with a warning, emitted beside the new ones in JSON (one release)
    with pytest.warns(DeprecationWarning, match="'new_pairs' is deprecated; use 'top1_new_pairs'"):
        assert res["new_pairs"] is res.top1_new_pairs
    with pytest.warns(DeprecationWarning, match="'base_pairs' is deprecated; use 'top1_base_pairs'"):
        assert res["base_pairs"] is res.top1_base_pairs
    d = res.to_dict()
    assert list(d)[-4:] == ["top1_new_pairs", "new_pairs", "top1_base_pairs", "base_pairs"]
    assert d["new_pairs"] == d["top1_new_pairs"] and d["base_pairs"] == d["top1_base_pairs"]
    back = pickle.loads(pickle.dumps(res))
    assert back.top1_new_pairs == res.top1_new_pairs and "new_pairs" in back and "new_pairs" not in list(back)
    assert res["refit"]["spaces"] == ["v0", "v1", "v2", "v3"]


def test_universe_map_shapes_and_pca():
    sp = views(seed=6)
    gpa = GPA().fit(sp)
    m = universe_map(gpa, sp, rows=np.arange(10))
    coords = np.array(m["coords"])
    assert coords.shape == (3, 10, 2)
    U = np.concatenate([gpa.to_universe(k, sp[k][:10]) for k in sp])
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    Uc = U - U.mean(0)
    s = np.linalg.svd(Uc, compute_uv=False)
    assert coords.reshape(-1, 2).var(0, ddof=1) == pytest.approx(s[:2] ** 2 / (len(U) - 1), rel=1e-8)


def test_evaluate_universe_end_to_end_json():
    sp, lab = views(n=200, widths=(8, 10, 12, 9), labels=True, seed=7)
    groups = np.arange(200) // 2
    res = evaluate_universe(sp, labels=lab, groups=groups, add="v3", gcpa_epochs=3, map_items=20,
                            cluster_seeds=(0,), test_size=0.25)
    text = json.dumps(to_jsonable(res), allow_nan=False)
    back = json.loads(text)
    assert back["spaces"] == ["v0", "v1", "v2"]
    assert list(back["methods"]) == ["pw", "gpa", "gcca", "gcpa"]
    assert back["n_train"] + back["n_test"] == 200
    assert not set(groups[back["test_rows"]]) & set(np.delete(groups, back["test_rows"]))
    for m in back["methods"].values():
        assert len(m["retrieval"]["top1"]) == 3
        assert m["clustering"]["spaces"]["v0"]["n_clusters"] == 4
        assert np.array(m["map"]["coords"]).shape == (3, 20, 2)
    assert back["methods"]["gpa"]["cycle"]["max"] < 1e-10
    assert back["add"]["space"] == "v3"
    with pytest.raises(DataError, match="unknown universe method"):
        evaluate_universe(sp, methods=["xyz"])
    with pytest.raises(DataError, match="no space named"):
        evaluate_universe(sp, add="nope")


def test_universe_command_json_text_and_errors(tmp_path, capsys):
    from core.cli import main

    sp, lab = views(n=150, widths=(8, 10, 12, 9), labels=True, seed=8)
    paths = []
    for name, X in sp.items():
        np.save(tmp_path / f"{name}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"{name}.npy"))
    import pandas as pd
    pd.DataFrame({"id": [str(i) for i in range(150)], "label": lab}).to_csv(tmp_path / "meta.csv", index=False)
    args = ["universe", *paths[:3], "--add", paths[3], "--meta", str(tmp_path / "meta.csv"), "--labels", "label",
            "--epochs", "2", "--method", "gpa,pw"]
    assert main([*args, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["spaces"] == ["v0", "v1", "v2"] and list(out["methods"]) == ["pw", "gpa"]
    assert out["add"]["space"] == "v3" and out["labels"] == "label"
    assert out["methods"]["gpa"]["cycle"]["max"] < 1e-10
    # the held-out split is the documented one, and Hits@1 of v0 -> v1 is the naive argmax rate under GPA
    train, test = split_train_test(150, 0.2, seed=0)
    assert out["test_rows"] == test.tolist()
    gpa = GPA().fit({k: sp[k].astype(np.float32)[train] for k in ("v0", "v1", "v2")})
    S = naive_cos(gpa.to_universe("v0", sp["v0"].astype(np.float32)[test]),
                  gpa.to_universe("v1", sp["v1"].astype(np.float32)[test]))
    assert out["methods"]["gpa"]["retrieval"]["top1"][0][1] == pytest.approx(
        (S.argmax(1) == np.arange(len(test))).mean())
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "GPA-ADD" in text and "Hits@1 (row = query space" in text
    assert main(["universe", *paths[:2], "--labels", "nope"]) == 2
    assert "no column named 'nope'" in capsys.readouterr().err
    assert main(["universe", paths[0]]) == 2
    assert main(["universe", *paths[:2], "--method", "xyz"]) == 2


def test_clustering_spread_uses_the_one_ddof():
    from core.evaluate import std_over_seeds
    from core.universe_eval import kmeans_scores
    rng = np.random.default_rng(0)
    lab = rng.integers(0, 3, 90)
    X = rng.normal(size=(90, 4)) + 1.5 * np.eye(4)[lab]
    res = kmeans_scores(X, lab, seeds=(0, 1, 2))
    ari = [p["ari"] for p in res["per_seed"]]
    assert res["ari_std"] == pytest.approx(np.std(ari, ddof=1), rel=1e-12)
    assert std_over_seeds([0.5]) == 0.0 and std_over_seeds([1.0, 3.0]) == pytest.approx(np.sqrt(2.0))


def test_universe_study_shares_one_preprocessing_and_its_models():
    from core.evaluation.universe import UniverseStudy

    sp = views(seed=7)
    study = UniverseStudy(sp, seed=2, gcpa_epochs=3)
    gpa = study.model("gpa")
    assert study.model("gpa") is gpa                            # fitted once
    assert study.model("gcpa").gpa_ is gpa                      # GCPA builds on the study's GPA
    # the study's numbers are those of fitting on the split by hand
    train, test = split_train_test(len(sp["v0"]), 0.2, seed=2)
    ref = GPA().fit({k: v[train] for k, v in sp.items()})
    res = study.evaluate("gpa")
    direct = any_to_any_retrieval(ref, {k: v[test] for k, v in sp.items()})
    assert res["retrieval"]["top1"] == direct["top1"]
    assert res["retrieval"]["summary"]["mrr"]["mean"] == pytest.approx(direct["summary"]["mrr"]["mean"], abs=1e-12)
    assert res["clustering"] is None and res["iterations_run"] == ref.n_iter_


def test_universe_study_clustering_matches_sklearn_on_its_universe():
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    from core.evaluation.universe import UniverseStudy

    sp, lab = views(seed=8, labels=True)
    study = UniverseStudy(sp, seed=0)
    res = study.clustering("gcca", lab, cluster_seeds=(0,))
    gcca = study.model("gcca")
    test = study.test_rows_
    U = gcca.to_universe("v1", sp["v1"][test])
    U = U / np.linalg.norm(U, axis=1, keepdims=True)
    k = len(np.unique(lab))
    pred = KMeans(n_clusters=k, n_init=1, random_state=0).fit_predict(U)
    assert res["spaces"]["v1"]["ari"] == pytest.approx(adjusted_rand_score(np.asarray(lab)[test].astype(str), pred))


def test_retrieval_with_groups_matches_naive_ranks_both_directions():
    sp = views(seed=9)
    gcca = GCCA(reg=1.0).fit(sp)
    groups = np.repeat(np.arange(40), 4)
    res = any_to_any_retrieval(gcca, sp, groups=groups)
    names = list(sp)
    for i, a in enumerate(names):
        for j, b in enumerate(names):
            if i == j:
                continue
            S = naive_cos(gcca.to_universe(a, sp[a]), gcca.to_universe(b, sp[b]))
            same = groups[:, None] == groups[None, :]
            best = np.where(same, S, -np.inf).max(1)
            rank = 1 + ((S >= best[:, None]) & ~same).sum(1)
            assert res["top1"][i][j] == pytest.approx((rank == 1).mean())
            assert res["mrr"][i][j] == pytest.approx((1 / rank).mean())


def test_results_are_typed_and_the_renamed_keys_stay_as_aliases(tmp_path, capsys):
    # typed results read like the dicts they replaced; the JSON (CLI --json) carries the deprecated hits_at_1 /
    # hits_at_5 keys beside top1 / top5 with the same values, and reading an old key in Python warns
    from core.cli import main
    from core.evaluation.universe import (RENAMED_KEYS, RetrievalMatrices, UniverseEvaluation,
                                          UniverseMethodResult)

    sp = views(n=120, widths=(6, 7, 8), seed=9)
    res = evaluate_universe(sp, ["gpa", "gcca"], keep_models=True)
    assert isinstance(res, UniverseEvaluation) and isinstance(res.methods["gpa"], UniverseMethodResult)
    ret = res.methods["gpa"].retrieval
    assert isinstance(ret, RetrievalMatrices) and ret["top1"] is ret.top1 and "iterations_run" in res.methods["gpa"]
    assert "objective" not in res.methods["gcca"]                      # a GPA-only key: absent, not None
    assert "models" in res and "models" not in res.to_dict()           # fitted models stay out of JSON
    with pytest.warns(DeprecationWarning, match="'hits_at_1' is deprecated; use 'top1'"):
        assert ret["hits_at_1"] == ret.top1
    with pytest.warns(DeprecationWarning):
        assert ret["summary"]["hits_at_5"] == ret.summary["top5"]
    paths = []
    for name, X in sp.items():
        np.save(tmp_path / f"{name}.npy", X.astype(np.float32))
        paths.append(str(tmp_path / f"{name}.npy"))
    assert main(["universe", *paths, "--method", "gpa", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    r = out["methods"]["gpa"]["retrieval"]
    for old, new in RENAMED_KEYS.items():
        assert r[old] == r[new] and r["summary"][old] == r["summary"][new] and r["chance"][old] == r["chance"][new]
    assert r["chance"]["top1"] == pytest.approx(1 / len(out["test_rows"]))
    # the CLI prints the typed result's to_dict(): the same keys and numbers (timings aside)
    direct = evaluate_universe({k: v.astype(np.float32) for k, v in sp.items()}, ["gpa"]).to_dict()
    assert set(out) == set(direct) | {"preset"} and out["test_rows"] == direct["test_rows"]
    assert out["methods"]["gpa"]["retrieval"] == json.loads(json.dumps(direct["methods"]["gpa"]["retrieval"]))
    # --add: the pair means under their new names, the old ones beside them (same values)
    assert main(["universe", *paths[:2], "--add", paths[2], "--method", "gpa", "--json"]) == 0
    add = json.loads(capsys.readouterr().out)["add"]
    assert add["new_pairs"] == add["top1_new_pairs"] and add["base_pairs"] == add["top1_base_pairs"]
    assert set(add["top1_new_pairs"]) == {"add", "refit"} and 0 <= add["top1_new_pairs"]["add"] <= 1
    assert add["add"]["hits_at_1"] == add["add"]["top1"]


def test_a_paused_gcpa_fit_does_not_block_other_jobs_of_its_study():
    """GCPA trains as a background job (priority 1) on one slot; a view's job (priority 0) on the same study
    makes it step aside (core.jobs) and must not wait on the study while GCPA is paused mid-fit (a fit holds
    only its own method's lock): it finishes, then GCPA does, with the same model as an undisturbed fit."""
    import threading

    from core.evaluation.universe import UniverseStudy
    from core.jobs import DONE, JobRunner

    sp = views(seed=3)
    study = UniverseStudy(sp, seed=1, gcpa_epochs=400, gcpa_patience=400)
    study.model("gpa")
    training = threading.Event()

    def train(job):
        def progress(iterable, total=None, desc=""):
            for x in job.progress(iterable, total=total, desc=desc):
                if desc == "GCPA epochs":
                    training.set()
                yield x
        return study.model("gcpa", progress)

    runner = JobRunner(max_jobs=1, torch_threads=1)
    try:
        bg = runner.submit("gcpa", "GCPA", train, priority=1)
        assert training.wait(120)
        seen = {}

        def front(job):
            seen["gcpa_paused"] = bg.paused
            return study.evaluate("pw", progress=job.progress)

        fg = runner.submit("pw", "PW", front, priority=0)
        assert fg.wait(120) and fg.state == DONE, fg.error          # no deadlock on the study
        assert seen["gcpa_paused"] and not bg.is_finished
        assert bg.wait(300) and bg.state == DONE, bg.error
    finally:
        runner.shutdown()
    ref = UniverseStudy(sp, seed=1, gcpa_epochs=400, gcpa_patience=400).model("gcpa")
    assert bg.result.stopped_epoch_ == ref.stopped_epoch_
    for a, b in zip(bg.result.net_.parameters(), ref.net_.parameters()):
        assert np.array_equal(a.detach().numpy(), b.detach().numpy())    # the pause changed nothing
