import numpy as np
import pytest
from sklearn.decomposition import PCA

from core.projection import PCAProjection, cached_umap_embedding, is_umap_cached, sample_rows


def _aligned(a, b):
    """Compare column by column up to sign (PCA axes are defined up to sign)."""
    for j in range(a.shape[1]):
        s = np.sign(np.dot(a[:, j], b[:, j])) or 1.0
        np.testing.assert_allclose(a[:, j], s * b[:, j], rtol=1e-6, atol=1e-8)


def test_pca_matches_sklearn(rng):
    X = rng.normal(size=(300, 12)) @ rng.normal(size=(12, 12)) + 5.0
    ours = PCAProjection(3, chunk_rows=37).fit(X)
    ref = PCA(3, svd_solver="full").fit(X)
    _aligned(ours.transform(X), ref.transform(X))
    np.testing.assert_allclose(ours.explained_variance_ratio_, ref.explained_variance_ratio_, rtol=1e-8)
    np.testing.assert_allclose(ours.explained_variance_, ref.explained_variance_, rtol=1e-8)


def test_pca_handles_large_offset_and_memmap(tmp_path, rng):
    X = (rng.normal(size=(500, 8)) + 1e6).astype(np.float64)
    path = tmp_path / "x.npy"
    np.save(path, X)
    mm = np.load(path, mmap_mode="r")
    ours = PCAProjection(2, chunk_rows=64).fit(mm)
    ref = PCA(2, svd_solver="full").fit(X)
    _aligned(ours.transform(mm), ref.transform(X))


def test_pca_sign_is_deterministic(rng):
    X = rng.normal(size=(100, 5))
    a = PCAProjection(2).fit(X).components_
    b = PCAProjection(2).fit(X[::-1].copy()).components_
    np.testing.assert_allclose(a, b, atol=1e-10)
    assert all(row[np.argmax(np.abs(row))] > 0 for row in a)


def test_sample_rows():
    assert sample_rows(10, 20).tolist() == list(range(10))
    s = sample_rows(1000, 50, seed=3)
    assert len(s) == 50 and len(set(s)) == 50 and np.all(np.diff(s) > 0)
    assert s.tolist() == sample_rows(1000, 50, seed=3).tolist()


@pytest.mark.slow
def test_umap_is_cached_on_disk(rng):
    X = np.concatenate([rng.normal(size=(60, 6)), rng.normal(size=(60, 6)) + 8.0]).astype(np.float32)
    key = "test-umap-key"
    assert not is_umap_cached(key, namespace="shared")
    first = cached_umap_embedding(X, key, namespace="shared", n_neighbors=10)
    assert is_umap_cached(key, namespace="shared", n_neighbors=10)
    again = cached_umap_embedding(np.zeros_like(X), key, namespace="shared", n_neighbors=10)
    np.testing.assert_array_equal(first, again)  # answered from disk by key, not recomputed
    # the two planted clusters stay apart in 2-D
    d_between = np.linalg.norm(first[:60].mean(0) - first[60:].mean(0))
    spread = max(first[:60].std(0).max(), first[60:].std(0).max())
    assert d_between > 2 * spread
