"""core.results: typed results read like dicts, give JSON with to_dict(), keep deprecated keys as aliases."""
import copy
import json
import pickle
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from core.results import ABSENT, Result, with_aliases


@dataclass(eq=False)
class Toy(Result):
    name: str
    top1: float
    extra: Any = ABSENT
    models: Any = ABSENT

    _aliases = {"hits_at_1": "top1"}
    _not_json = ("models",)


def test_reads_like_the_dict_it_replaced():
    r = Toy("a", 0.5)
    assert dict(r) == {"name": "a", "top1": 0.5} and r == {"name": "a", "top1": 0.5}
    assert "extra" not in r and r.get("extra", 7) == 7 and len(r) == 2
    assert {**r, "x": 1} == {"name": "a", "top1": 0.5, "x": 1}
    r["extra"] = [1, 2]
    assert r.extra == [1, 2] and list(r) == ["name", "top1", "extra"]
    r.top1 = 0.75                                   # attributes and keys stay in step
    assert r["top1"] == 0.75 and json.loads(json.dumps(r)) == {"name": "a", "top1": 0.75, "extra": [1, 2]}
    assert isinstance(r, dict)
    del r["extra"]
    assert r.extra is ABSENT and "extra" not in r
    r["note"] = "kept"                              # a key that is no field: kept, and in the JSON
    assert r.to_dict()["note"] == "kept" and r.pop("note") == "kept" and "note" not in r
    with pytest.raises(KeyError):
        r["nope"]


def test_to_dict_is_json_safe_with_aliases_and_without_private_fields():
    r = Toy("a", np.float64("nan"), extra=np.arange(3), models=object())
    with pytest.warns(DeprecationWarning, match="'hits_at_1' is deprecated; use 'top1'"):
        assert r["hits_at_1"] is r.top1
    d = r.to_dict()
    assert d == {"name": "a", "top1": None, "hits_at_1": None, "extra": [0, 1, 2]}
    assert list(d) == ["name", "top1", "hits_at_1", "extra"]      # the alias stands beside its new key
    json.dumps(d, allow_nan=False)
    assert with_aliases({"top1": 1, "mrr": 2}, {"hits_at_1": "top1"}) == {"top1": 1, "hits_at_1": 1, "mrr": 2}


def test_pickles_and_copies_keep_absent_fields_absent():
    r = Toy("a", 0.25)
    for back in (pickle.loads(pickle.dumps(r)), copy.deepcopy(r)):
        assert back.extra is ABSENT and dict(back) == dict(r)


def test_every_protocol_returns_a_typed_result_whose_json_is_its_to_dict():
    # paper A's protocol and sweep, paper B's comparison, paper C's report, the similarity matrices: each a Result
    # (a dict as before), json.dumps-able as it is, with to_dict() equal to that JSON (no aliases there)
    from core.evaluation.alignment import ProtocolResult, SweepResult, run_protocol, sweep_k
    from core.evaluation.hierarchy import HierarchyReport, hierarchy_report
    from core.evaluation.metrics import MetricSummary
    from core.hierarchy import Chains
    from core.pointset import PointSetComparison, compare_pointset_similarities
    from core.similarity import layerwise_similarity, similarity_matrix
    from core.similarity.matrix import LayerwiseSimilarity, SimilarityMatrix

    rng = np.random.default_rng(0)
    z = rng.normal(size=(120, 4))
    X, Y = z @ rng.normal(size=(4, 6)), z @ rng.normal(size=(4, 5))
    A = (z[:, None, :] + 0.5 * rng.normal(size=(120, 3, 4))).astype(np.float32)
    E = rng.normal(size=(12, 5)).astype(np.float32)
    chains = Chains(ids=np.array([str(i) for i in range(4)]), offsets=np.array([0, 3, 6, 9, 12]),
                    texts=np.array([f"t{i}" for i in range(12)], dtype=object), embeddings=E,
                    root=np.zeros(5, np.float32))
    results = [
        (run_protocol(X, Y, methods=["affine", "cca_affine"], k=3, n_anchors=80, n_queries=20, seeds=[0, 1]),
         ProtocolResult),
        (sweep_k(X, Y, k_values=[2, 3], n_anchors=80, n_queries=20, seeds=[0]), SweepResult),
        (compare_pointset_similarities(A, A, kernel="linear", train=False, n_queries=20, seeds=[0], device="cpu"),
         PointSetComparison),
        (hierarchy_report(chains, n_boot=10), HierarchyReport),
        (similarity_matrix({"x": X, "y": Y}), SimilarityMatrix),
        (layerwise_similarity([X], [Y, X]), LayerwiseSimilarity),
    ]
    for res, cls in results:
        assert type(res) is cls and isinstance(res, dict)
        assert json.loads(json.dumps(res)) == json.loads(json.dumps(res.to_dict()))
    entry = results[0][0].results["cca_affine"]["matching_accuracy"]
    assert isinstance(entry, MetricSummary) and entry.std == pytest.approx(np.std(entry.per_seed, ddof=1))
    assert results[4][0]["values"] is results[4][0].values and len(results[4][0].values) == 2


def test_the_remaining_public_functions_return_typed_results_too():
    # geometry vs semantics (paper A's geometry), the permutation / bootstrap nulls, paper C's radial order and
    # hierarchical retrieval (both pools), and the metrics of one score matrix: each a Result (still the dict it
    # was: same keys in the same order), whose to_dict() is the JSON of that dict
    from core.evaluation.metrics import ScoreEvaluation, ValueWithChance, evaluate_scores
    from core.export import json_safe
    from core.geometry import GeometryVersion, GeometryVsSemantics, geometry_vs_semantics
    from core.hierarchy import (Chains, HierarchicalRetrieval, RadialOrder, hierarchical_retrieval,
                                hierarchical_retrieval_by_image, radial_order)
    from core.similarity import BootstrapInterval, PermutationTest, bootstrap_interval, permutation_test

    rng = np.random.default_rng(1)
    z = rng.normal(size=(60, 3))
    X = z @ rng.normal(size=(3, 6)) + 0.1 * rng.normal(size=(60, 6))
    Y = z @ rng.normal(size=(3, 5)) + 0.1 * rng.normal(size=(60, 5))
    rows = np.arange(20)
    D_geo = np.linalg.norm(z[rows, None] - z[None, rows], axis=-1)
    E = rng.normal(size=(12, 5)).astype(np.float32)
    chains = Chains(ids=np.array([str(i) for i in range(4)]), offsets=np.array([0, 3, 6, 9, 12]),
                    texts=np.array([f"t{i}" for i in range(12)], dtype=object), embeddings=E,
                    root=np.zeros(5, np.float32))
    images = rng.normal(size=(4, 5))
    geo = geometry_vs_semantics(X, D_geo, rows, partner=Y, labels=rng.integers(0, 3, 60), k=2)
    cases = [
        (geo, GeometryVsSemantics, ["metric", "n_sample", "n_anchors", "k", "reg", "versions"]),
        (permutation_test(X, Y, n_permutations=9), PermutationTest,
         ["value", "p_value", "null_mean", "null_std", "n_permutations"]),
        (permutation_test(X, np.zeros_like(Y), n_permutations=3), PermutationTest,   # undefined value
         ["value", "p_value", "null_mean", "null_std", "n_permutations"]),
        (bootstrap_interval(X, Y, n_boot=8), BootstrapInterval, ["value", "low", "high", "std", "n_boot", "ci"]),
        (radial_order(chains, n_boot=20), RadialOrder,
         ["tau_d", "tau_method", "tau_d_by_method", "n_chains_with_ties", "tau_d_ci", "confidence", "per_chain_tau",
          "n_chains", "n_undefined", "share_monotone", "median_radius_per_tier", "radii"]),
        (hierarchical_retrieval(chains, images, n_thresholds=5, return_predictions=True), HierarchicalRetrieval,
         ["precision", "recall", "per_image_precision", "per_image_recall", "n_images", "n_query_chains", "n_pool",
          "n_pool_distinct", "pool", "n_thresholds", "thresholds", "mean_predictions", "predictions"]),
        (hierarchical_retrieval_by_image(chains, images, n_thresholds=5), HierarchicalRetrieval,
         ["precision", "recall", "per_image_precision", "per_image_recall", "n_images", "n_query_chains", "n_pool",
          "n_pool_distinct", "pool", "n_thresholds", "thresholds", "mean_predictions"]),
        (evaluate_scores(X[:20, :3] @ Y[:20, :3].T, ks=(1, 3)), ScoreEvaluation,
         ["n_queries", "matching_accuracy", "top1_x_to_y", "top3_x_to_y", "mrr_x_to_y", "top1_y_to_x",
          "top3_y_to_x", "mrr_y_to_x", "mrr"]),
    ]
    for res, cls, keys in cases:
        assert type(res) is cls and isinstance(res, dict) and list(res) == keys
        plain = json_safe({k: v for k, v in dict.items(res)})     # what the dict it replaced gave as JSON
        assert res.to_dict() == plain
        assert json.dumps(res.to_dict(), allow_nan=False) == json.dumps(plain, allow_nan=False)   # same order
    assert cases[2][0]["value"] is None and cases[2][0].n_permutations == 0
    assert "predictions" not in cases[6][0] and len(cases[5][0].predictions) == 4
    assert cases[5][0].pool == "per-chain" and cases[6][0].pool == "all-chains"
    for name, version in geo.versions.items():
        assert type(version) is GeometryVersion and version.distances.shape == (20, 20)
        assert list(version) == ["pearson", "spearman", "n_pairs", "neighbours", "distances"]
    assert set(geo.versions) == {"original", "cca_subspace", "affine_mapped", "partner"}
    ev = cases[7][0]
    assert all(type(ev[k]) is ValueWithChance for k in ev if k != "n_queries")
    assert ev.mrr.value == pytest.approx((ev["mrr_x_to_y"]["value"] + ev["mrr_y_to_x"]["value"]) / 2)
    back = pickle.loads(pickle.dumps(ev))
    assert type(back) is ScoreEvaluation and list(back) == list(ev) and back.to_dict() == ev.to_dict()
