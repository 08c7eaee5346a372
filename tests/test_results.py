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
