"""faiss nearest-neighbour indexes (core.ann), checked against brute-force numpy / scipy."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist

import core.ann as ann
from core.ann import NeighbourIndex, neighbour_index
from core.retrieval import CrossModalRetriever, expand_query, nearest_neighbours


def _clustered(rng, n=3000, d=16, centres=30):
    C = rng.normal(size=(centres, d)) * 3
    return (C[rng.integers(0, centres, n)] + rng.normal(size=(n, d))).astype(np.float32)


def _brute_cosine(X, Q, k):
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    Qn = Q / np.linalg.norm(Q, axis=1, keepdims=True)
    S = Qn.astype(np.float64) @ Xn.T.astype(np.float64)
    idx = np.argsort(-S, axis=1)[:, :k]
    return idx, np.take_along_axis(S, idx, 1)


def test_flat_cosine_equals_brute_force(rng):
    X = _clustered(rng)
    Q = rng.normal(size=(20, 16))
    idx, sc = NeighbourIndex("cosine", kind="flat").fit(X).search(Q, 10)
    ref_i, ref_s = _brute_cosine(X, Q, 10)
    assert np.array_equal(idx, ref_i)
    assert np.allclose(sc, ref_s, atol=1e-5)


def test_flat_euclidean_distances_equal_scipy(rng):
    X = _clustered(rng, 800)
    Q = X[:5] + 0.01
    idx, dist = NeighbourIndex("euclidean", kind="flat").fit(X).search(Q, 7)
    D = cdist(Q, X)
    assert np.array_equal(idx, np.argsort(D, axis=1)[:, :7])
    assert np.allclose(dist, np.sort(D, axis=1)[:, :7], atol=1e-3)


def test_ivf_recall_and_full_probe_is_exact(rng):
    X = _clustered(rng, 4000)
    Q = X[rng.choice(len(X), 50, replace=False)] + 0.1 * rng.normal(size=(50, 16)).astype(np.float32)
    ref_i, _ = _brute_cosine(X, Q, 10)
    ivf = NeighbourIndex("cosine", kind="ivf", nlist=40, nprobe=8).fit(X)
    assert ivf.kind_ == "ivf"
    idx, _ = ivf.search(Q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(idx, ref_i)])
    assert recall >= 0.9
    full, _ = NeighbourIndex("cosine", kind="ivf", nlist=40, nprobe=40).fit(X).search(Q, 10)
    assert np.array_equal(full, ref_i)


def test_exclude_drops_the_query_item(rng):
    X = _clustered(rng, 500)
    index = NeighbourIndex("cosine", kind="flat").fit(X)
    idx, _ = index.search(X[[3, 9]], 5, exclude=[3, 9])
    assert 3 not in idx[0] and 9 not in idx[1] and idx.shape == (2, 5)
    ref_i, _ = _brute_cosine(X, X[[3]], 6)
    assert np.array_equal(idx[0], ref_i[0][ref_i[0] != 3][:5])


def test_index_is_built_once_and_cached_on_disk(rng, monkeypatch):
    X = _clustered(rng, 2000)
    monkeypatch.setattr(ann, "FLAT_MAX_N", 1000)             # 2000 rows -> IVF
    ann._MEMORY.clear()
    built = []
    real_fit = NeighbourIndex.fit
    monkeypatch.setattr(NeighbourIndex, "fit", lambda self, X, y=None: built.append(1) or real_fit(self, X))
    a = neighbour_index(X, "cosine", content_key="space-sha", namespace="shared")
    assert a.kind_ == "ivf" and len(built) == 1
    from core.cache import namespace_dir
    assert list(namespace_dir("shared").glob("ann/*.faiss"))
    ann._MEMORY.clear()
    b = neighbour_index(X, "cosine", content_key="space-sha", namespace="shared")   # from disk
    assert len(built) == 1 and b.n_ == len(X)
    Q = X[:4]
    assert np.array_equal(a.search(Q, 5)[0], b.search(Q, 5)[0])
    neighbour_index(X, "cosine", content_key="other-space", namespace="shared")
    assert len(built) == 2                                        # another space, another index


def test_views_switch_to_the_index_for_large_n_with_the_same_answers(rng, monkeypatch):
    X = _clustered(rng, 1500)
    Y = (X @ rng.normal(size=(16, 12)) + 0.5 * rng.normal(size=(1500, 12))).astype(np.float32)
    rows = [4, 700, 12]
    exact_i, exact_d = nearest_neighbours(X, rows, 8, "cosine")
    exact_e = nearest_neighbours(X, rows, 8, "euclidean")
    retr = CrossModalRetriever("cca_affine", k=8).fit(X, Y)
    assert retr.ann_ is None
    ref_q = retr.query(X[:5], 10, exclude=[0, 1, 2, 3, 4])
    ref_exp = expand_query(X[:2], X, 10)
    monkeypatch.setattr(ann, "ANN_MIN_N", 1000)                  # now 1500 items count as large (flat index)
    ann._MEMORY.clear()
    before = X.copy()
    ann_i, ann_d = nearest_neighbours(X, rows, 8, "cosine")
    assert np.array_equal(X, before)                             # the caller's rows are not normalised in place
    assert np.array_equal(ann_i, exact_i) and np.allclose(ann_d, exact_d, atol=1e-5)
    e_i, e_d = nearest_neighbours(X, rows, 8, "euclidean")
    assert np.array_equal(e_i, exact_e[0]) and np.allclose(e_d, exact_e[1], atol=1e-3)
    retr2 = CrossModalRetriever("cca_affine", k=8).fit(X, Y)
    assert retr2.ann_ is not None and retr2.ann_.kind_ == "flat"
    q = retr2.query(X[:5], 10, exclude=[0, 1, 2, 3, 4])
    assert np.array_equal(q[0], ref_q[0]) and np.allclose(q[1], ref_q[1], atol=1e-5)
    assert np.allclose(expand_query(X[:2], X, 10), ref_exp, atol=1e-6)


def test_local_cka_retrieval_stays_exact(rng, monkeypatch):
    monkeypatch.setattr(ann, "ANN_MIN_N", 10)
    X = _clustered(rng, 300)
    retr = CrossModalRetriever("local_cka").fit(X, X[:, ::-1].copy())
    assert retr.ann_ is None


def test_bad_parameters(rng):
    with pytest.raises(ValueError, match="unknown metric"):
        NeighbourIndex("manhattan").fit(_clustered(rng, 50))
    idx = NeighbourIndex(kind="flat").fit(_clustered(rng, 50))
    with pytest.raises(ValueError, match="16-d"):
        idx.search(np.ones((1, 3)), 2)
