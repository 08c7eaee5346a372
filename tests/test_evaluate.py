"""Tests of core.evaluate against brute force and hand-worked cases."""
import itertools

import numpy as np
import pytest

from core.errors import DataError
from core.evaluate import (chance_levels, evaluate_scores, matching_accuracy, mean_reciprocal_rank,
                           retrieval_topk, split_anchors_queries, true_ranks)


# ---------------------------------------------------------------------------------------------
# matching
# ---------------------------------------------------------------------------------------------
def _brute_force_matching(S, groups=None):
    Q = S.shape[0]
    best = max(itertools.permutations(range(Q)), key=lambda perm: sum(S[i, perm[i]] for i in range(Q)))
    g = np.arange(Q) if groups is None else np.asarray(groups)
    return np.mean([g[best[i]] == g[i] for i in range(Q)])


@pytest.mark.parametrize("Q", [2, 3, 5, 6])
def test_matching_accuracy_matches_brute_force(Q):
    rng = np.random.default_rng(Q)
    for trial in range(5):
        S = rng.normal(size=(Q, Q)) + np.eye(Q) * rng.uniform(0, 1.5)
        assert matching_accuracy(S, seed=trial) == pytest.approx(_brute_force_matching(S))


def test_matching_accuracy_with_groups_matches_brute_force():
    rng = np.random.default_rng(1)
    groups = np.array([0, 0, 1, 2, 2, 2])
    for trial in range(5):
        S = rng.normal(size=(6, 6))
        assert matching_accuracy(S, groups=groups, seed=trial) == pytest.approx(_brute_force_matching(S, groups))


def test_matching_shuffles_columns_so_ties_do_not_favour_the_diagonal():
    S = np.zeros((60, 60))
    accs = [matching_accuracy(S, seed=s) for s in range(3)]
    assert max(accs) < 0.2                       # an unshuffled solver returns the identity (accuracy 1)
    assert matching_accuracy(S, seed=4) == matching_accuracy(S, seed=4)


# ---------------------------------------------------------------------------------------------
# retrieval, hand-worked
# ---------------------------------------------------------------------------------------------
S_TIES = np.array([[1.0, 1.0, 0.0],
                   [0.5, 0.2, 0.9],
                   [0.0, 0.0, 0.0]])


def test_ranks_with_ties_count_against_the_true_item():
    # rows: row 0 ties with column 1 -> rank 2; row 1: 0.5 and 0.9 beat 0.2 -> 3; row 2: all tied -> 3
    np.testing.assert_array_equal(true_ranks(S_TIES, axis=1), [2, 3, 3])
    # columns: col 0 (1.0 vs 0.5, 0) -> 1; col 1 (0.2 vs 1.0, 0) -> 2; col 2 (0 vs 0, 0.9) -> 3
    np.testing.assert_array_equal(true_ranks(S_TIES, axis=0), [1, 2, 3])
    assert retrieval_topk(S_TIES, ks=(1, 2, 3), axis=1) == {1: 0.0, 2: pytest.approx(1 / 3), 3: 1.0}
    assert retrieval_topk(S_TIES, ks=(1, 2), axis=0) == {1: pytest.approx(1 / 3), 2: pytest.approx(2 / 3)}
    assert mean_reciprocal_rank(S_TIES, axis=1) == pytest.approx((1 / 2 + 1 / 3 + 1 / 3) / 3)
    assert mean_reciprocal_rank(S_TIES, axis=0) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_ranks_with_groups_use_the_best_partner_and_count_only_non_partners():
    groups = ["a", "a", "b"]
    # row 0: partners {0, 1} best 1.0, non-partner 0.0 -> 1; row 1: best 0.5, non-partner 0.9 -> 2;
    # row 2: partner {2} = 0.0, non-partners 0.0, 0.0 (ties) -> 3
    np.testing.assert_array_equal(true_ranks(S_TIES, groups, axis=1), [1, 2, 3])
    # columns: col 0: partners rows {0,1} best 1.0 vs row 2 (0.0) -> 1; col 1: best 1.0 -> 1;
    # col 2: partner row 2 = 0.0, non-partners 0.0 and 0.9 -> 3
    np.testing.assert_array_equal(true_ranks(S_TIES, groups, axis=0), [1, 1, 3])
    assert retrieval_topk(S_TIES, ks=(1,), groups=groups) == {1: pytest.approx(1 / 3)}
    assert mean_reciprocal_rank(S_TIES, groups) == pytest.approx((1 + 1 / 2 + 1 / 3) / 3)


def test_bad_score_matrices_are_refused():
    with pytest.raises(DataError, match="square"):
        true_ranks(np.zeros((3, 4)))
    S = np.eye(3)
    S[1, 2] = np.nan
    with pytest.raises(DataError, match="NaN"):
        matching_accuracy(S)
    with pytest.raises(DataError, match="one id per query"):
        true_ranks(np.eye(3), groups=[0, 1])


# ---------------------------------------------------------------------------------------------
# chance levels: exact enumeration over all orderings
# ---------------------------------------------------------------------------------------------
def _enumerated_chance(groups, ks):
    """Expected top-k / MRR / matching under a uniformly random ordering, by enumerating all of them."""
    groups = np.asarray(groups)
    Q = len(groups)
    topk = {k: [] for k in ks}
    mrr, match = [], []
    for order in itertools.permutations(range(Q)):        # order[r] = column at rank r+1 (no ties)
        for i in range(Q):
            partner_ranks = [r for r, j in enumerate(order) if groups[j] == groups[i]]
            best = min(partner_ranks) + 1                   # non-partners ahead + 1
            for k in ks:
                topk[k].append(best <= k)
            mrr.append(1 / best)
        match.append(np.mean([groups[order[i]] == groups[i] for i in range(Q)]))
    out = {f"top{k}": np.mean(v) for k, v in topk.items()}
    out["mrr"] = np.mean(mrr)
    out["matching_accuracy"] = np.mean(match)
    return out


@pytest.mark.parametrize("groups", [None, [0, 0, 1, 2, 2], [0, 0, 0, 1, 2, 3]])
def test_chance_levels_match_enumeration(groups):
    Q = 5 if groups is None else len(groups)
    ks = (1, 2, 3)
    ours = chance_levels(Q, groups, ks)
    ref = _enumerated_chance(np.arange(Q) if groups is None else groups, ks)
    for key, value in ref.items():
        assert ours[key] == pytest.approx(value, rel=1e-12), key


def test_chance_levels_without_groups_are_the_textbook_values():
    c = chance_levels(500, None, (1, 5, 10))
    assert c["matching_accuracy"] == pytest.approx(1 / 500)
    assert c["top1"] == pytest.approx(1 / 500) and c["top5"] == pytest.approx(5 / 500)
    assert c["top10"] == pytest.approx(10 / 500)
    assert c["mrr"] == pytest.approx(sum(1 / r for r in range(1, 501)) / 500)


# ---------------------------------------------------------------------------------------------
# evaluate_scores
# ---------------------------------------------------------------------------------------------
def test_evaluate_scores_reports_every_metric_with_chance():
    rng = np.random.default_rng(3)
    S = rng.normal(size=(40, 40)) + 2 * np.eye(40)
    out = evaluate_scores(S, seed=2)
    assert out["n_queries"] == 40
    r_rows, r_cols = true_ranks(S, axis=1), true_ranks(S, axis=0)
    assert out["top5_x_to_y"]["value"] == pytest.approx(np.mean(r_rows <= 5))
    assert out["top10_y_to_x"]["value"] == pytest.approx(np.mean(r_cols <= 10))
    assert out["top5_y_to_x"]["chance"] == pytest.approx(5 / 40)
    assert out["mrr"]["value"] == pytest.approx((np.mean(1 / r_rows) + np.mean(1 / r_cols)) / 2)
    assert out["matching_accuracy"]["value"] == matching_accuracy(S, seed=2)
    assert out["matching_accuracy"]["chance"] == pytest.approx(1 / 40)


# ---------------------------------------------------------------------------------------------
# splits
# ---------------------------------------------------------------------------------------------
def test_split_is_disjoint_sized_and_seeded():
    a, q = split_anchors_queries(100, 60, 20, seed=3)
    assert len(a) == 60 and len(q) == 20 and not set(a) & set(q)
    a2, q2 = split_anchors_queries(100, 60, 20, seed=3)
    np.testing.assert_array_equal(a, a2)
    np.testing.assert_array_equal(q, q2)
    _, q3 = split_anchors_queries(100, 60, 20, seed=4)
    assert set(q3) != set(q)
    with pytest.raises(DataError, match="only 100"):
        split_anchors_queries(100, 90, 20, seed=0)


def test_split_is_group_aware():
    rng = np.random.default_rng(0)
    groups = rng.integers(0, 40, size=200)
    for seed in range(5):
        a, q = split_anchors_queries(200, 120, 30, seed=seed, groups=groups)
        assert len(a) == 120 and len(q) == 30 and not set(a) & set(q)
        assert not set(groups[a]) & set(groups[q]), "a group straddles anchors and queries"
    a1, q1 = split_anchors_queries(200, 120, 30, seed=1, groups=groups)
    a2, q2 = split_anchors_queries(200, 120, 30, seed=1, groups=groups)
    assert (a1 == a2).all() and (q1 == q2).all()
    with pytest.raises(DataError):
        split_anchors_queries(200, 195, 30, seed=0, groups=groups)



def test_true_ranks_match_the_definition_on_scores_with_many_ties():
    rng = np.random.default_rng(3)
    S = rng.integers(0, 4, size=(30, 30)).astype(float)          # ties everywhere
    for axis in (1, 0):
        T = S if axis == 1 else S.T
        naive = [1 + sum(T[i, j] >= T[i, i] for j in range(30) if j != i) for i in range(30)]
        np.testing.assert_array_equal(true_ranks(S, axis=axis), naive)


def test_every_standard_deviation_in_core_states_its_ddof():
    # one ddof (1) for spreads over seeds: every std / var call in core/ (the demo's build aside) passes ddof=1
    # (numpy) or unbiased=True (torch) explicitly, or is std_over_seeds itself
    import ast

    from tests.conftest import ROOT

    offenders = []
    for path in sorted((ROOT / "core").rglob("*.py")):
        if "demo" in path.relative_to(ROOT / "core").parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("std", "var"):
                kw = {k.arg: k.value for k in node.keywords}
                ok = any(isinstance(kw.get(a), ast.Constant) and kw[a].value in (1, True) for a in ("ddof", "unbiased"))
                if not ok:
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []
    from core.evaluate import std_over_seeds
    assert std_over_seeds([0.2, 0.4, 0.9]) == pytest.approx(np.std([0.2, 0.4, 0.9], ddof=1)) and std_over_seeds([3]) == 0


@pytest.mark.parametrize("case", ["plain", "duplicates", "near_ties", "groups", "zero_rows"])
def test_cosine_true_ranks_equal_true_ranks_of_the_float64_cosine(case):
    from core.align import cosine_similarity_matrix
    from core.evaluation.metrics import cosine_true_ranks

    rng = np.random.default_rng(11)
    Q, d = 300, 24
    A = rng.normal(size=(Q, d))
    B = A + 0.8 * rng.normal(size=(Q, d))
    groups = None
    if case == "duplicates":                    # exact ties between candidates and with the true item
        B[10] = B[20]
        B[40:45] = B[40]
        A[7] = A[8]
    if case == "near_ties":                     # scores closer than float32 can tell apart
        for i in range(0, Q, 3):
            B[(i + 1) % Q] = B[i] * (1 + 1e-9) + 1e-10 * rng.normal(size=d)
    if case == "groups":
        groups = np.repeat(np.arange(Q // 4), 4)
    if case == "zero_rows":
        A[3] = 0
        B[5] = 0
    S = cosine_similarity_matrix(A, B)
    r1, r0 = cosine_true_ranks(A, B, groups, chunk_rows=64)
    np.testing.assert_array_equal(r1, true_ranks(S, groups, axis=1))
    np.testing.assert_array_equal(r0, true_ranks(S, groups, axis=0))


@pytest.mark.parametrize("bf16", [True, False])
@pytest.mark.parametrize("case", ["separated", "plain", "near_ties", "groups"])
def test_cosine_true_ranks_are_exact_with_and_without_the_bfloat16_screen(monkeypatch, case, bf16):
    from core.align import cosine_similarity_matrix
    from core.evaluation import metrics

    if bf16 and not metrics._bf16_screen_ok():
        pytest.skip("no fast bfloat16 products here")
    monkeypatch.setattr(metrics, "_BF16_OK", [bf16])
    rng = np.random.default_rng(12)
    Q, d = 400, 48
    A = rng.normal(size=(Q, d))
    B = A + (0.05 if case == "separated" else 0.8) * rng.normal(size=(Q, d))
    groups = np.repeat(np.arange(Q // 4), 4) if case == "groups" else None
    if case == "near_ties":
        for i in range(0, Q, 3):
            B[(i + 1) % Q] = B[i] * (1 + 1e-9) + 1e-10 * rng.normal(size=d)
    before = dict(metrics._SCREENS)
    r1, r0 = metrics.cosine_true_ranks(A, B, groups, chunk_rows=64)
    S = cosine_similarity_matrix(A, B)
    np.testing.assert_array_equal(r1, true_ranks(S, groups, axis=1))
    np.testing.assert_array_equal(r0, true_ranks(S, groups, axis=0))
    used = {k: metrics._SCREENS[k] - before[k] for k in before}
    if bf16 and case == "separated":
        assert used["bfloat16"] == 7 and used["float32"] == 0     # every block through the bfloat16 screen
    if not bf16:
        assert used["bfloat16"] == 0
