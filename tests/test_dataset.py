import numpy as np
import pandas as pd
import pytest

from core import DataError, Dataset, Space, guess_modality


def test_space_kinds_and_pooling_against_naive_mean(rng):
    tokens = rng.normal(size=(5, 4, 3)).astype(np.float32)
    mask = np.array([[1, 1, 0, 0]] * 5, dtype=bool)
    s = Space("tok", tokens, mask=mask)
    assert s.kind == "tokens" and s.n == 5 and s.dim == 3 and s.n_tokens == 4
    naive = np.stack([tokens[i, :2].mean(axis=0) for i in range(5)])
    np.testing.assert_allclose(s.vectors(), naive, rtol=1e-6)
    v = Space("v", tokens[:, 0])
    assert v.kind == "vectors" and v.vectors().shape == (5, 3)


def test_weighted_pooling_hand_worked():
    tokens = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    s = Space("t", tokens, weights=np.array([[3.0, -1.0]]))
    # (3*[1,0] - 1*[0,1]) / M with M = 2 real tokens: paper B's mean_i w_i v_i (METHODS.md section 6).
    # Changed deliberately (issue 12, one pooling): Space.vectors divided by sum |w| = 4 before, giving
    # [0.75, -0.25], unlike the point-set features; unweighted token sets pool as before.
    np.testing.assert_allclose(s.vectors(np.float64), [[1.5, -0.5]])
    masked = Space("t", np.array([[[1.0, 0.0], [0.0, 1.0], [9.0, 9.0]]]), mask=np.array([[True, True, False]]),
                   weights=np.array([[3.0, -1.0, 5.0]]))
    np.testing.assert_allclose(masked.vectors(np.float64), [[1.5, -0.5]])    # masked tokens count for nothing
    empty = Space("t", tokens, mask=np.zeros((1, 2), bool), weights=np.array([[3.0, -1.0]]))
    np.testing.assert_array_equal(empty.vectors(np.float64), [[0.0, 0.0]])


def test_one_pooling_for_vectors_baseline_and_point_set_features(rng):
    # Space.vectors, pointset.pooled_vectors and the linear part of pointset_features are one definition:
    # (1/M) sum_t m_t w_t v_t, checked against a naive loop over items
    from core.dataset import pool_token_sets
    from core.pointset import pointset_features, pooled_vectors

    tokens = rng.normal(size=(7, 5, 3))
    mask = rng.random((7, 5)) > 0.4
    mask[0] = False
    weights = rng.normal(size=(7, 5))
    naive = np.zeros((7, 3))
    for i in range(7):
        real = np.flatnonzero(mask[i])
        if len(real):
            naive[i] = sum(weights[i, t] * tokens[i, t] for t in real) / len(real)
    np.testing.assert_allclose(pool_token_sets(tokens, mask, weights, dtype=np.float64, chunk=3), naive,
                               rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(Space("t", tokens, mask=mask, weights=weights).vectors(np.float64), naive,
                               rtol=1e-12, atol=1e-15)
    uniform = np.stack([tokens[i][mask[i]].mean(0) if mask[i].any() else np.zeros(3) for i in range(7)])
    np.testing.assert_allclose(pooled_vectors(tokens, mask), uniform, rtol=1e-5, atol=1e-6)
    unit = tokens / np.linalg.norm(tokens, axis=-1, keepdims=True)
    feats = pointset_features(tokens, mask, weights, kernel="linear", device="cpu")
    np.testing.assert_allclose(feats, Space("u", unit, mask=mask, weights=weights).vectors(), rtol=1e-5, atol=1e-6)


def test_dataset_rejects_mismatched_rows_and_duplicate_ids(rng):
    a = Space("a", rng.normal(size=(4, 2)))
    b = Space("b", rng.normal(size=(5, 2)), source="b.npy")
    with pytest.raises(DataError, match="5 rows but the dataset has 4"):
        Dataset(None, [a, b])
    items = pd.DataFrame({"id": ["x", "y", "x", "z"]})
    with pytest.raises(DataError, match="share an id") as info:
        Dataset(items, [a])
    assert info.value.row == 0 and info.value.column == "id"


def test_groups_default_and_column(rng):
    a = Space("a", rng.normal(size=(4, 2)))
    ds = Dataset(None, [a])
    assert ds.groups().tolist() == [0, 1, 2, 3]
    ds2 = Dataset(pd.DataFrame({"id": list("abcd"), "group": ["img1", "img1", "img2", "img1"]}), [a])
    assert ds2.groups().tolist() == [0, 0, 1, 0]
    ds3 = Dataset(pd.DataFrame({"id": list("abcd"), "caption": ["x", "y", "x", "z"]}), [a])
    assert ds3.groups("caption").tolist() == [0, 1, 0, 2]
    assert ds3.groups(None).tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="no item column named 'nope'"):
        ds3.groups("nope")


def test_fingerprint_changes_with_content(rng):
    x = rng.normal(size=(6, 3))
    d1 = Dataset(None, [Space("a", x)])
    d2 = Dataset(None, [Space("a", x.copy())])
    x2 = x.copy(); x2[5, 2] += 1e-9
    d3 = Dataset(None, [Space("a", x2)])
    assert d1.fingerprint == d2.fingerprint != d3.fingerprint


def test_subset_and_modality_guess(rng):
    ds = Dataset(pd.DataFrame({"id": list("abcd"), "caption": list("pqrs")}),
                 [Space("clip_text", rng.normal(size=(4, 2)))])
    sub = ds.subset([3, 1])
    assert sub.ids.tolist() == ["d", "b"] and sub["clip_text"].n == 2
    assert guess_modality("pointnet_pooled") == "3d"
    assert guess_modality("clip_image") == "image"
    assert guess_modality("minilm_tier3") == "text"
    assert guess_modality("foo") == "other"


def test_lazy_space_computes_once_on_first_use_and_lists_apart(rng):
    from core import LazySpace

    tokens = rng.normal(size=(4, 3, 2))
    mask = np.array([[1, 1, 0]] * 4, dtype=bool)
    calls = []

    def load(progress=None):
        calls.append(progress)
        if progress is not None:
            progress(1, 1)
        return tokens, mask, None

    lazy = LazySpace("tok", load, (4, None, 2), modality="text")
    ds = Dataset(None, [Space("v", rng.normal(size=(4, 5))), lazy])
    # listing, pairing, choosing by kind, subsetting, fingerprinting and repr compute nothing
    assert ds.space_names == ["v"] and ds.on_demand_space_names() == ["tok"]
    assert ds.token_space_names() == ["tok"] and ds.vector_space_names() == ["v"]
    assert lazy.kind == "tokens" and lazy.n == 4 and lazy.dim == 2 and lazy.shape_text == "4 x ? x 2"
    assert lazy.resident_nbytes == 0 and not lazy.ready
    sub = ds.subset([2, 0])
    fp = ds.fingerprint
    assert "not computed" in repr(lazy) and calls == []
    assert fp == Dataset(None, [ds["v"]]).fingerprint      # derived spaces do not change the identity
    # first use computes once (with the caller's progress), later uses read what is held
    seen = []
    lazy.materialize(progress=lambda d, t: seen.append((d, t)))
    assert seen == [(1, 1)] and lazy.ready and lazy.n_tokens == 3
    np.testing.assert_array_equal(lazy.data, tokens)
    naive = tokens[:, :2].mean(axis=1)
    np.testing.assert_allclose(lazy.vectors(np.float64), naive)
    assert len(calls) == 1
    np.testing.assert_array_equal(sub["tok"].data, tokens[[2, 0]])
    np.testing.assert_array_equal(sub["tok"].mask, mask[[2, 0]])


def test_lazy_space_ready_from_its_files_and_checks_the_computed_shape(tmp_path, rng):
    from core import LazySpace

    path = tmp_path / "v.npy"

    def load(progress=None):
        if not path.exists():
            np.save(path, np.ones((3, 2)))
        return np.load(path, mmap_mode="r")

    lazy = LazySpace("v", load, (3, 2), files=lambda: [path])
    assert not lazy.ready
    np.save(path, np.zeros((3, 2)))
    assert lazy.ready and not lazy.materialized           # only reading is left
    assert lazy.data.sum() == 0 and lazy.resident_nbytes == 0   # memory-mapped
    wrong = LazySpace("w", lambda progress=None: np.zeros((3, 4)), (3, 2))
    with pytest.raises(DataError, match=r"expected 3 x 2"):
        wrong.data
    with pytest.raises(DataError, match="needs its shape"):
        LazySpace("x", load, (None, 2))
