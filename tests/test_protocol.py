"""Tests of core.protocol (paper A's protocol and its sweeps) on small planted data."""
import json

import numpy as np
import pytest

from core.align import CCA, PairwiseAligner
from core.errors import DataError
from core.evaluate import evaluate_scores, split_anchors_queries
from core.protocol import run_protocol, sweep_anchors, sweep_k


@pytest.fixture(scope="module")
def planted():
    rng = np.random.default_rng(0)
    n, d = 1400, 6
    Z = rng.normal(size=(n, d))
    X = (Z @ rng.normal(size=(d, 40)) + 1.5 * rng.normal(size=(n, 40))).astype(np.float32)
    Y = (Z @ rng.normal(size=(d, 32)) + 1.5 * rng.normal(size=(n, 32))).astype(np.float32)
    return X, Y


def test_run_protocol_reports_mean_std_chance_per_seed(planted):
    X, Y = planted
    out = run_protocol(X, Y, k=6, n_anchors=1000, n_queries=100, seeds=(0, 1, 2))
    json.dumps(out)                                          # JSON-ready
    assert out["adjustments"] == []
    s = out["settings"]
    assert (s["n_anchors"], s["n_queries"], s["k"], s["seeds"]) == (1000, 100, 6, [0, 1, 2])
    assert set(out["results"]) == {"affine", "local_cka", "cca_affine", "cca_local_cka"}
    for method, metrics in out["results"].items():
        for name in ("matching_accuracy", "top1_x_to_y", "top5_x_to_y", "top10_x_to_y", "top1_y_to_x",
                     "top5_y_to_x", "top10_y_to_x", "mrr"):
            m = metrics[name]
            assert len(m["per_seed"]) == 3
            assert m["mean"] == pytest.approx(np.mean(m["per_seed"]))
            assert m["std"] == pytest.approx(np.std(m["per_seed"], ddof=1))
        assert metrics["top1_x_to_y"]["chance"] == pytest.approx(1 / 100)
        assert metrics["top5_y_to_x"]["chance"] == pytest.approx(5 / 100)
    assert out["results"]["cca_affine"]["top1_x_to_y"]["mean"] > 0.3
    assert len(out["cca"]["canonical_correlations"]) == 6


def test_run_protocol_seed_value_equals_a_direct_fit(planted):
    """One seed of the protocol = split + fit on the anchors + evaluate on the queries, done by hand."""
    X, Y = planted
    out = run_protocol(X, Y, methods=["cca_local_cka"], k=4, n_anchors=800, n_queries=80, seeds=(5,))
    a, q = split_anchors_queries(len(X), 800, 80, seed=5)
    S = PairwiseAligner("cca_local_cka", k=4).fit(X[a], Y[a]).score_matrix(X[q], Y[q])
    ref = evaluate_scores(S, seed=5)
    for name in ("matching_accuracy", "top1_x_to_y", "top5_y_to_x", "mrr"):
        assert out["results"]["cca_local_cka"][name]["per_seed"][0] == pytest.approx(ref[name]["value"])


def test_protocol_shrinks_to_small_datasets_and_says_so(planted):
    X, Y = planted
    out = run_protocol(X[:300], Y[:300], methods=["cca_affine"], k=100, seeds=(0,))
    s = out["settings"]
    assert s["n_queries"] == 60 and s["n_anchors"] == 240 and s["k"] == 32
    text = " ".join(out["adjustments"])
    assert "queries shrunk from 500 to 60" in text and "k = 100" in text and "anchors" in text
    with pytest.raises(DataError, match="too few"):
        run_protocol(X[:8], Y[:8])
    with pytest.raises(DataError, match="equal width"):
        run_protocol(X, Y, methods=["none"])


def test_sweep_k_slices_of_one_cca_equal_fresh_fits(planted):
    """CCA fitted once at the largest k and sliced gives the same results as run_protocol at each k."""
    X, Y = planted
    sweep = sweep_k(X, Y, k_values=(2, 6, 20), methods=("cca_affine", "cca_local_cka", "affine", "local_cka"),
                    n_anchors=1000, n_queries=100, seeds=(0, 1))
    json.dumps(sweep)
    assert "pca_affine" in sweep["settings"]["methods"]
    summary = {(r["method"], r["k"], r["metric"]): r for r in sweep["summary"]}
    for k in (2, 6, 20):
        direct = run_protocol(X, Y, methods=("cca_affine", "cca_local_cka", "pca_affine"), k=k, n_anchors=1000,
                              n_queries=100, seeds=(0, 1))
        for method in ("cca_affine", "cca_local_cka", "pca_affine"):
            for metric in ("matching_accuracy", "top1_x_to_y", "mrr"):
                assert summary[(method, k, metric)]["mean"] == pytest.approx(
                    direct["results"][method][metric]["mean"], abs=1e-12)
    assert ("local_cka", None, "mrr") in summary            # k-independent: once per seed
    # the planted latent has 6 dimensions: k = 6 beats k = 20 after CCA
    assert summary[("cca_affine", 6, "top1_x_to_y")]["mean"] > summary[("cca_affine", 20, "top1_x_to_y")]["mean"]
    recs = [r for r in sweep["records"] if r["method"] == "cca_affine" and r["k"] == 6 and r["metric"] == "mrr"]
    assert sorted(r["seed"] for r in recs) == [0, 1]


def test_sweep_anchors_largest_count_equals_protocol_with_all_anchors(planted):
    """Incrementally accumulated moments over nested anchor sets = one fit on all the remaining rows."""
    X, Y = planted
    sweep = sweep_anchors(X, Y, anchor_counts=(50, 400, 5000), methods=("affine", "cca_local_cka"), k=6,
                          n_queries=100, seeds=(3,))
    assert any("only 1300 anchors" in a for a in sweep["adjustments"])
    counts = sorted({r["n_anchors"] for r in sweep["records"]})
    assert counts == [50, 400, 1300]
    full = run_protocol(X, Y, methods=("affine", "cca_local_cka"), k=6, n_anchors=1300, n_queries=100, seeds=(3,))
    summary = {(r["method"], r["n_anchors"], r["metric"]): r["mean"] for r in sweep["summary"]}
    for method in ("affine", "cca_local_cka"):
        for metric in ("top1_x_to_y", "top5_y_to_x", "mrr"):
            assert summary[(method, 1300, metric)] == pytest.approx(full["results"][method][metric]["mean"],
                                                                   abs=1e-9)
    assert summary[("cca_local_cka", 1300, "mrr")] > summary[("cca_local_cka", 50, "mrr")]


def test_protocol_with_groups_adjusts_chance_and_reports_progress(planted):
    X, Y = planted
    groups = np.repeat(np.arange(700), 2)                 # two rows per group
    seen = []

    def progress(iterable, total=None, desc=""):
        seen.append((total, desc))
        return iterable

    out = run_protocol(X, Y, methods=("cca_affine",), k=6, n_anchors=1000, n_queries=100, seeds=(0, 1),
                       groups=groups, progress=progress)
    assert seen == [(2, "seeds"), (1, "methods"), (1, "methods")]   # methods nested in each seed
    chance = out["results"]["cca_affine"]["top1_x_to_y"]["chance"]
    assert chance == pytest.approx(2 / 100)           # 100 queries = 50 whole groups of 2
    assert out["settings"]["groups"] is True


def test_cca_in_protocol_matches_standalone_cca(planted):
    X, Y = planted
    out = run_protocol(X, Y, methods=("cca_affine",), k=3, n_anchors=1000, n_queries=100, seeds=(0,))
    a, q = split_anchors_queries(len(X), 1000, 100, seed=0)
    cca = CCA(3).fit(X[a], Y[a])
    np.testing.assert_allclose(out["cca"]["canonical_correlations"], cca.canonical_correlations_, rtol=1e-10)
    np.testing.assert_allclose(out["cca"]["heldout_correlations"], cca.heldout_correlations(X[q], Y[q]),
                               rtol=1e-10)


def test_align_command_end_to_end(tmp_path, planted, capsys):
    """`platoscope align FILE:SPACE FILE:SPACE --json --save` runs the protocol and saves a reusable map."""
    from core.align import load_map
    from core.cli import main

    X, Y = planted
    np.savez(tmp_path / "emb.npz", text=X[:600], shape=Y[:600])
    out_map = tmp_path / "map.safetensors"
    code = main(["align", f"{tmp_path / 'emb.npz'}:text", f"{tmp_path / 'emb.npz'}:shape", "--method",
                 "cca-affine", "--k", "6", "--seeds", "2", "--sweep-k", "3,6", "--save", str(out_map), "--json"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    proto = result["protocol"]
    assert proto["settings"]["n_queries"] == 120 and proto["settings"]["n_anchors"] == 480
    assert proto["results"]["cca_affine"]["top1_x_to_y"]["mean"] > 0.3
    assert {r["k"] for r in result["sweep_k"]["records"]} == {3, 6}
    ref = PairwiseAligner("cca_affine", k=6).fit(X[:600], Y[:600]).score_matrix(X[600:700], Y[600:700])
    np.testing.assert_allclose(load_map(out_map).score_matrix(X[600:700], Y[600:700]), ref, rtol=1e-10)
    assert main(["align", str(tmp_path / "emb.npz"), f"{tmp_path / 'emb.npz'}:shape"]) == 2
    assert "must name one" in capsys.readouterr().err


def test_sweeps_publish_the_curve_point_by_point(planted):
    """partial() is called once per point, smallest first, each time with every seed of the points so far."""
    X, Y = planted
    seen = []
    out = sweep_k(X, Y, k_values=(2, 6, 20), methods=("cca_affine", "local_cka"), n_anchors=600, n_queries=100,
                  seeds=(0, 1), partial=lambda p: seen.append(p))
    points = [sorted({r["k"] for r in p["summary"]}, key=lambda k: -1 if k is None else k) for p in seen]
    assert points == [[None], [None, 2], [None, 2, 6], [None, 2, 6, 20]]
    assert all(r["n_seeds"] == 2 for p in seen for r in p["summary"])
    assert seen[-1]["summary"] == out["summary"]
    # the anchor sweep: per-seed accumulators, point by point
    seen = []
    out = sweep_anchors(X, Y, anchor_counts=(50, 400), methods=("affine",), n_queries=100, seeds=(0, 1),
                        partial=lambda p: seen.append(p))
    assert [sorted({r["n_anchors"] for r in p["summary"]}) for p in seen] == [[50], [50, 400]]
    assert seen[-1]["summary"] == out["summary"]
    assert all(r["n_seeds"] == 2 for p in seen for r in p["summary"])


def test_streaming_moments_without_rows_equal_the_remaining_rows():
    """StreamingMoments.without: all-row sums less some rows = the moments of the rest (numpy's covariance)."""
    import torch

    from core.moments import StreamingMoments

    rng = np.random.default_rng(4)
    X = rng.normal(size=(500, 7)) * 3 + 100.0       # large means: the shift matters
    Y = rng.normal(size=(500, 5)) - 40.0
    out = rng.choice(500, 60, replace=False)
    keep = np.setdiff1d(np.arange(500), out)
    every = StreamingMoments(torch.device("cpu"), chunk_rows=64).update(X, Y)
    rest = every.without(X[np.sort(out)], Y[np.sort(out)])
    assert rest.n == 440 and every.n == 500           # the original is unchanged
    C = np.cov(np.hstack([X[keep], Y[keep]]).T) * (len(keep) - 1)
    np.testing.assert_allclose(rest.cxx().numpy(), C[:7, :7], rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(rest.cyy().numpy(), C[7:, 7:], rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(rest.cxy().numpy(), C[:7, 7:], rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(rest.mean_x().numpy(), X[keep].mean(0), rtol=1e-12)
    single = StreamingMoments(torch.device("cpu"), chunk_rows=64).update(X).without(X[:0])
    np.testing.assert_allclose(single.cxx().numpy(), np.cov(X.T) * 499, rtol=1e-10)


def test_protocol_with_most_rows_as_anchors_equals_reading_each_seeds_anchors(planted, monkeypatch):
    """Anchors that are most of the rows come from all-row moments less the rows left out: the same results as
    accumulating each seed's anchors (metrics equal; correlations to rounding); a non-finite row outside the
    anchors still only matters if it is an anchor."""
    from core.evaluation import alignment

    X, Y = planted
    kw = dict(methods=("affine", "cca_affine", "cca_local_cka"), k=6, n_anchors=1200, n_queries=100, seeds=(0, 1))
    calls = []
    real = alignment._all_row_moments
    monkeypatch.setattr(alignment, "_all_row_moments", lambda *a: calls.append(1) or real(*a))
    fast = run_protocol(X, Y, **kw)
    assert calls == [1]                                  # one pass over every row for all the seeds
    monkeypatch.setattr(alignment, "_all_row_moments", lambda *a: None)
    slow = run_protocol(X, Y, **kw)
    for m in kw["methods"]:
        for metric, v in slow["results"][m].items():
            assert fast["results"][m][metric]["per_seed"] == pytest.approx(v["per_seed"], abs=1e-12)
    np.testing.assert_allclose(fast["cca"]["canonical_correlations"], slow["cca"]["canonical_correlations"],
                               rtol=1e-10)
    monkeypatch.setattr(alignment, "_all_row_moments", real)
    # few anchors: each seed's anchors are read (no all-row pass)
    calls.clear()
    monkeypatch.setattr(alignment, "_all_row_moments", lambda *a: calls.append(1) or real(*a))
    run_protocol(X, Y, methods=("affine",), k=6, n_anchors=300, n_queries=100, seeds=(0,))
    assert calls == []
    # a NaN in a row that is neither an anchor nor a query of seed 0: the all-row pass gives way, same results
    a, q = split_anchors_queries(len(X), 1200, 100, seed=0)
    unused = np.setdiff1d(np.arange(len(X)), np.concatenate([a, q]))
    assert len(unused) == 100
    Xn = X.copy()
    Xn[unused[0], 0] = np.nan
    monkeypatch.setattr(alignment, "_all_row_moments", real)
    with_nan = run_protocol(Xn, Y, methods=("affine",), k=6, n_anchors=1200, n_queries=100, seeds=(0,))
    monkeypatch.setattr(alignment, "_all_row_moments", lambda *a: None)
    assert with_nan["results"] == run_protocol(Xn, Y, methods=("affine",), k=6, n_anchors=1200, n_queries=100,
                                               seeds=(0,))["results"]
