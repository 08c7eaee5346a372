"""core.geometry against independent references: naive loops, scipy's KD-tree and distances, scipy.stats."""
import numpy as np
import pytest
import torch
from scipy import stats
from scipy.spatial import cKDTree
from scipy.spatial.distance import cdist

from core.errors import DataError
from core.geometry import (chamfer_distance, chamfer_matrix, check_distance_matrix, distance_correlation,
                           embedding_distances, geometry_sample, geometry_vs_semantics, load_distance_matrix,
                           neighbour_summary, sample_geometric_distances, subsample_clouds)


def naive_chamfer(a, b):
    """Mean nearest-neighbour squared distance both ways, by explicit loops over points."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ab = np.mean([min(((p - q) ** 2).sum() for q in b) for p in a])
    ba = np.mean([min(((p - q) ** 2).sum() for p in a) for q in b])
    return ab + ba


def kdtree_chamfer(a, b):
    da, _ = cKDTree(b).query(a)
    db, _ = cKDTree(a).query(b)
    return np.mean(da ** 2) + np.mean(db ** 2)


@pytest.fixture
def clouds():
    rng = np.random.default_rng(1)
    return rng.normal(size=(9, 40, 3)) * rng.uniform(0.5, 2.0, size=(9, 1, 3))


def test_chamfer_hand_worked():
    # one point each: both directions give the squared distance -> twice it
    assert chamfer_distance([[0, 0, 0]], [[1, 2, 2]]) == pytest.approx(18.0)
    # a = {0, 2} on the x axis, b = {0}: a->b mean(0, 4) = 2, b->a 0
    assert chamfer_distance([[0, 0, 0], [2, 0, 0]], [[0, 0, 0]]) == pytest.approx(2.0)


def test_chamfer_distance_matches_naive_loops(clouds):
    for i, j in [(0, 1), (2, 7), (4, 4)]:
        assert chamfer_distance(clouds[i], clouds[j]) == pytest.approx(naive_chamfer(clouds[i], clouds[j]),
                                                                       rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("block_entries", [1, 40 * 40 * 3, 1 << 25])
def test_chamfer_matrix_matches_kdtree(clouds, block_entries):
    n = len(clouds)
    ref = np.array([[kdtree_chamfer(clouds[i], clouds[j]) for j in range(n)] for i in range(n)])
    D64 = chamfer_matrix(clouds, dtype=torch.float64, block_entries=block_entries)
    np.testing.assert_allclose(D64, ref, rtol=1e-9, atol=1e-12)
    D32 = chamfer_matrix(clouds, block_entries=block_entries)
    np.testing.assert_allclose(D32, ref, rtol=1e-4, atol=1e-5)
    assert np.array_equal(D32, D32.T) and np.all(np.diag(D32) == 0)


def test_chamfer_matrix_rectangular_and_different_point_counts(clouds):
    rng = np.random.default_rng(2)
    other = rng.normal(size=(4, 25, 3))
    D = chamfer_matrix(clouds, other, dtype=torch.float64, block_entries=2000)
    ref = np.array([[naive_chamfer(a, b) for b in other] for a in clouds])
    assert D.shape == (9, 4)
    np.testing.assert_allclose(D, ref, rtol=1e-9)


def test_chamfer_rejects_bad_clouds():
    with pytest.raises(DataError, match="n x P x 3"):
        chamfer_matrix(np.zeros((3, 10, 2)))
    bad = np.zeros((3, 10, 3))
    bad[1, 4, 0] = np.nan
    with pytest.raises(DataError, match="NaN") as err:
        chamfer_matrix(bad)
    assert err.value.row == 1


def test_subsample_clouds(clouds):
    sub = subsample_clouds(clouds, 10, seed=3)
    assert sub.shape == (9, 10, 3)
    for c, s in zip(clouds, sub):
        # every kept point is one of the cloud's points, with no repeats
        d = cdist(s, c)
        assert np.all(d.min(axis=1) < 1e-6)
        assert len({tuple(np.round(p, 5)) for p in s}) == 10
    np.testing.assert_array_equal(sub, subsample_clouds(clouds, 10, seed=3))
    assert not np.array_equal(sub, subsample_clouds(clouds, 10, seed=4))
    assert subsample_clouds(clouds, 100).shape == (9, 40, 3)   # fewer points than asked: kept whole


def test_geometry_sample():
    rows = geometry_sample(1000, 300, seed=5)
    assert len(rows) == 300 and len(set(rows)) == 300 and np.all(np.diff(rows) > 0) and rows.max() < 1000
    np.testing.assert_array_equal(rows, geometry_sample(1000, 300, seed=5))
    np.testing.assert_array_equal(geometry_sample(50, 300), np.arange(50))


def test_sample_geometric_distances_is_cached(clouds):
    rows = np.array([0, 2, 3, 5, 8])
    first = sample_geometric_distances(clouds, rows, n_points=30, seed=1, namespace="shared")
    second = sample_geometric_distances(clouds, rows, n_points=30, seed=1, namespace="shared")
    assert first["cached"] is False and second["cached"] is True
    np.testing.assert_array_equal(first["distances"], second["distances"])
    assert second["seconds"] == first["seconds"]   # the cost of the one computation is reported
    assert first["n_pairs"] == 10
    sub = subsample_clouds(clouds[rows], 30, seed=1)
    ref = np.array([[kdtree_chamfer(a, b) for b in sub] for a in sub])
    np.testing.assert_allclose(first["distances"], ref, rtol=1e-4, atol=1e-5)


def test_check_distance_matrix_accepts_and_rejects():
    rng = np.random.default_rng(0)
    P = rng.normal(size=(6, 2))
    D = cdist(P, P)
    out = check_distance_matrix(D, 6)
    np.testing.assert_allclose(out, D)
    with pytest.raises(DataError, match="square"):
        check_distance_matrix(D[:5], 6)
    with pytest.raises(DataError, match="dataset has 7 items"):
        check_distance_matrix(D, 7)
    with pytest.raises(DataError, match="2-D"):
        check_distance_matrix(D.ravel())
    asym = D.copy()
    asym[1, 4] += 0.5
    with pytest.raises(DataError, match="not symmetric") as err:
        check_distance_matrix(asym)
    assert err.value.row in (1, 4)
    neg = D.copy()
    neg[2, 3] = neg[3, 2] = -1.0
    with pytest.raises(DataError, match="negative"):
        check_distance_matrix(neg)
    nan = D.copy()
    nan[0, 1] = np.nan
    with pytest.raises(DataError, match="NaN"):
        check_distance_matrix(nan)


def test_load_distance_matrix(tmp_path):
    D = cdist(np.arange(4.0)[:, None], np.arange(4.0)[:, None])
    np.save(tmp_path / "d.npy", D)
    np.savetxt(tmp_path / "d.csv", D, delimiter=",")
    np.testing.assert_allclose(load_distance_matrix(tmp_path / "d.npy", 4), D)
    np.testing.assert_allclose(load_distance_matrix(tmp_path / "d.csv", 4), D)
    with pytest.raises(DataError) as err:
        load_distance_matrix(tmp_path / "d.npy", 5)
    assert err.value.file == "d.npy"
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(DataError):   # never unpickled
        load_distance_matrix(tmp_path / "obj.npy")


@pytest.mark.parametrize("metric, scipy_metric", [("cosine", "cosine"), ("euclidean", "euclidean")])
def test_embedding_distances_match_scipy(metric, scipy_metric):
    X = np.random.default_rng(3).normal(size=(20, 7))
    np.testing.assert_allclose(embedding_distances(X, metric), cdist(X, X, scipy_metric), atol=1e-10)


def test_distance_correlation_matches_scipy_with_ties():
    rng = np.random.default_rng(4)
    A = cdist(rng.normal(size=(15, 3)), rng.normal(size=(15, 3)))
    A = np.round((A + A.T) / 2, 1)    # rounding makes ties
    np.fill_diagonal(A, 0)
    B = A + rng.normal(scale=0.5, size=A.shape)
    B = (B + B.T) / 2
    np.fill_diagonal(B, 0)
    iu = np.triu_indices(15, 1)
    res = distance_correlation(A, B)
    assert res["n_pairs"] == 105
    assert res["pearson"] == pytest.approx(stats.pearsonr(A[iu], B[iu])[0], rel=1e-10)
    assert res["spearman"] == pytest.approx(stats.spearmanr(A[iu], B[iu])[0], rel=1e-10)
    assert distance_correlation(A, np.ones_like(A) - np.eye(15))["pearson"] is None


def test_neighbour_summary_hand_worked():
    # 4 items on a line; embedding neighbours of each: 0->1, 1->0 (tie with 2: lower index), 2->3, 3->2
    E = cdist(np.array([[0.], [1.], [2.], [2.5]]), np.array([[0.], [1.], [2.], [2.5]]))
    G = np.array([[0, 1, 5, 5], [1, 0, 2, 9], [5, 2, 0, 3], [5, 9, 3, 0]], float)
    out = neighbour_summary(E, G, labels=["a", "a", "b", "a"], k=1)
    assert out["geometric_distance"] == pytest.approx((1 + 1 + 3 + 3) / 4)
    assert out["geometric_distance_best"] == pytest.approx((1 + 1 + 2 + 3) / 4)
    assert out["label_agreement"] == pytest.approx((1 + 1 + 0 + 0) / 4)
    assert out["label_chance"] == pytest.approx(6 / 12)   # same-label ordered pairs among the 12


def test_geometry_vs_semantics_planted():
    """A space made of geometry + meaning; the partner knows only meaning. The CCA subspace keeps the meaning:
    its distances follow geometry much less than the original space's do."""
    rng = np.random.default_rng(7)
    n = 400
    geo = rng.normal(size=(n, 3))                 # the shape factors
    sem = rng.normal(size=(n, 4))                 # the meaning factors
    X = np.hstack([3.0 * geo, 1.0 * sem]) @ rng.normal(size=(7, 12)) + 0.05 * rng.normal(size=(n, 12))
    partner = sem @ rng.normal(size=(4, 10)) + 0.05 * rng.normal(size=(n, 10))
    rows = geometry_sample(n, 60, seed=0)
    D_geo = cdist(geo[rows], geo[rows])
    labels = (sem[:, 0] > 0).astype(int)
    res = geometry_vs_semantics(X, D_geo, rows, partner=partner, labels=labels, metric="euclidean", k=4)
    v = res["versions"]
    assert set(v) == {"original", "cca_subspace", "affine_mapped", "partner"}
    assert res["n_anchors"] == n - 60 and res["k"] == 4
    iu = np.triu_indices(60, 1)
    ref = stats.pearsonr(cdist(X[rows], X[rows])[iu], D_geo[iu])[0]
    assert v["original"]["pearson"] == pytest.approx(ref, rel=1e-9)
    assert v["original"]["pearson"] > 0.7
    assert v["cca_subspace"]["pearson"] < 0.3
    assert v["partner"]["pearson"] < 0.3
    assert v["cca_subspace"]["neighbours"]["label_agreement"] > v["original"]["neighbours"]["label_agreement"]
    with pytest.raises(DataError, match="not symmetric"):
        asym = D_geo.copy()
        asym[0, 1] += 1
        geometry_vs_semantics(X, asym, rows)
    with pytest.raises(DataError, match="dataset has 60 items|is 59 x 59"):
        geometry_vs_semantics(X, D_geo[:59, :59], rows)


# -- the `platoscope geosem` command ----------------------------------------------------------------
def _planted_files(tmp_path, n=120):
    rng = np.random.default_rng(11)
    geo = rng.normal(size=(n, 2))
    sem = rng.normal(size=(n, 3))
    shape = np.hstack([3 * geo, sem]) @ rng.normal(size=(5, 8))
    text = sem @ rng.normal(size=(3, 6)) + 0.05 * rng.normal(size=(n, 6))
    labels = np.where(sem[:, 0] > 0, "cup", "lamp")
    np.savez(tmp_path / "emb.npz", shape_3d=shape.astype(np.float32), text=text.astype(np.float32), label=labels,
             caption=np.array([f"a {l} #{i}" for i, l in enumerate(labels)]))
    D = cdist(geo, geo)
    np.save(tmp_path / "geo.npy", D)
    return geo, shape, D


def test_geosem_command_with_a_distance_matrix(tmp_path, capsys):
    import json

    from core.cli import main
    geo, shape, D = _planted_files(tmp_path)
    rc = main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "geo.npy"), "--sample", "50",
               "--dim", "3", "--metric", "euclidean", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["space"] == "shape_3d" and out["partner"] == "text" and out["geometry"]["kind"] == "matrix"
    rows = geometry_sample(120, 50, seed=0)
    iu = np.triu_indices(50, 1)
    ref = stats.spearmanr(cdist(shape[rows], shape[rows])[iu], D[np.ix_(rows, rows)][iu])[0]
    assert out["correlations"]["original"]["spearman"] == pytest.approx(ref, rel=1e-9)
    assert out["correlations"]["cca_subspace"]["pearson"] < out["correlations"]["original"]["pearson"]
    assert len(out["neighbours"]["original"]) == 5
    rc = main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "geo.npy"), "--sample", "50"])
    text = capsys.readouterr().out
    assert rc == 0 and "CCA subspace" in text and "Pearson r" in text


def test_geosem_command_bad_geometry(tmp_path, capsys):
    from core.cli import main
    _, _, D = _planted_files(tmp_path)
    np.save(tmp_path / "small.npy", D[:10, :10])
    asym = D.copy()
    asym[3, 5] += 1.0
    np.save(tmp_path / "asym.npy", asym)
    assert main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "small.npy")]) == 2
    assert "dataset has 120 items" in capsys.readouterr().err
    assert main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "asym.npy")]) == 2
    assert "not symmetric" in capsys.readouterr().err
    assert main(["geosem", str(tmp_path / "emb.npz")]) == 2          # no clouds and no matrix
    assert "no geometry" in capsys.readouterr().err


def test_geosem_command_with_clouds(tmp_path, capsys):
    import json

    from core.cli import main
    _planted_files(tmp_path, n=40)
    clouds = np.random.default_rng(3).normal(size=(40, 20, 3)).astype(np.float32)
    np.save(tmp_path / "clouds.npy", clouds)
    assert main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "clouds.npy"),
                 "--sample", "0"]) == 2   # every item sampled: no anchors left for the alignment
    assert "outside the geometric sample" in capsys.readouterr().err
    rc = main(["geosem", str(tmp_path / "emb.npz"), "--geometry", str(tmp_path / "clouds.npy"), "--sample", "0",
               "--points", "20", "--partner", "none", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["geometry"]["kind"] == "chamfer" and out["geometry"]["n_sample"] == 40
    assert set(out["correlations"]) == {"original"}
    D = np.array([[kdtree_chamfer(a, b) for b in clouds] for a in clouds])
    X = np.load(tmp_path / "emb.npz")["shape_3d"]
    iu = np.triu_indices(40, 1)
    ref = stats.pearsonr(cdist(X, X, "cosine")[iu], D[iu])[0]
    assert out["correlations"]["original"]["pearson"] == pytest.approx(ref, rel=1e-4)
