"""core.retrieval against independent references: full sorts, scipy distances, the aligner's own score path,
planted pairs, and (when the demo exists) a real MiniLM text query."""
import numpy as np
import pytest
from scipy.spatial.distance import cdist

from core.align import PairwiseAligner, load_map
from core.dataset import Space
from core.errors import DataError
from core.retrieval import (CrossModalRetriever, cached_alignment, check_text_encoder, embed_query_text,
                            nearest_neighbours, neighbours_before_after, text_encoder_spec, top_k)


@pytest.fixture
def planted():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 5))
    X = z @ rng.normal(size=(5, 16)) + 0.05 * rng.normal(size=(300, 16))
    Y = z @ rng.normal(size=(5, 12)) + 0.05 * rng.normal(size=(300, 12))
    return X, Y


def test_top_k_matches_full_sort_with_ties_and_exclude():
    S = np.array([[0.5, 0.9, 0.9, 0.1], [0.3, 0.3, 0.3, 0.8]])
    idx, val = top_k(S, 3)
    np.testing.assert_array_equal(idx, [[1, 2, 0], [3, 0, 1]])   # ties: lower index first
    np.testing.assert_allclose(val, [[0.9, 0.9, 0.5], [0.8, 0.3, 0.3]])
    idx, _ = top_k(S, 3, exclude=[1, -1])
    np.testing.assert_array_equal(idx, [[2, 0, 3], [3, 0, 1]])
    rng = np.random.default_rng(1)
    R = rng.normal(size=(5, 30))
    idx, val = top_k(R, 7)
    for r in range(5):
        ref = sorted(range(30), key=lambda j: -R[r, j])[:7]
        assert idx[r].tolist() == ref
    assert top_k(R, 100)[0].shape == (5, 30)


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_nearest_neighbours_match_scipy(metric):
    X = np.random.default_rng(2).normal(size=(50, 6))
    rows = [0, 7, 49]
    idx, dist = nearest_neighbours(X, rows, k=5, metric=metric, chunk_rows=2)
    D = cdist(X, X, metric)
    for r, i, d in zip(rows, idx, dist):
        order = [j for j in np.argsort(D[r], kind="stable") if j != r][:5]
        assert i.tolist() == order
        np.testing.assert_allclose(d, D[r, order], atol=1e-10)
    idx_self, _ = nearest_neighbours(X, rows, k=1, metric=metric, exclude_self=False)
    assert idx_self[:, 0].tolist() == rows


@pytest.mark.parametrize("method", ["cca_affine", "cca_local_cka", "affine", "local_cka", "procrustes"])
def test_retriever_scores_equal_the_aligner_score_matrix(planted, method):
    X, Y = planted
    anchors = np.arange(200)
    retr = CrossModalRetriever(method, k=5).fit(X, Y, anchors=anchors)
    ref = PairwiseAligner(method, k=5).fit(X[anchors], Y[anchors]).score_matrix(X[200:], Y)
    np.testing.assert_allclose(retr.scores(X[200:]), ref, rtol=1e-9, atol=1e-12)
    assert retr.n_items_ == 300 and retr.n_anchors_ == 200


def test_retriever_finds_held_out_partners(planted):
    X, Y = planted
    retr = CrossModalRetriever("cca_affine", k=5).fit(X, Y, anchors=np.arange(200))
    idx, scores = retr.query(X[200:], top_k=5)
    top1 = np.mean(idx[:, 0] == np.arange(200, 300))
    assert top1 > 0.8                                    # chance is 1/300
    assert np.all(np.diff(scores, axis=1) <= 1e-12)       # best first
    # the cosine against naive numpy: mapped queries vs indexed targets
    a = retr.aligner_
    xq, yt = a.transform(X[200:203]), a.transform(Y, side="y")
    naive = (xq / np.linalg.norm(xq, axis=1, keepdims=True)) @ (yt / np.linalg.norm(yt, axis=1, keepdims=True)).T
    np.testing.assert_allclose(retr.scores(X[200:203]), naive, atol=1e-10)
    with pytest.raises(DataError, match="16-d source"):
        retr.scores(np.zeros((1, 7)))


class FakeEncoder:
    """Deterministic text 'encoder': a hash of the text seeds a random unit vector."""
    dim = 8

    def encode(self, texts):
        out = []
        for t in texts:
            v = np.random.default_rng(sum(map(ord, t))).normal(size=self.dim)
            out.append(v / np.linalg.norm(v))
        return np.array(out, np.float32)


def test_embed_query_text_and_empty_query():
    enc = FakeEncoder()
    v = embed_query_text("  a tall lamp ", enc)
    np.testing.assert_allclose(v, enc.encode(["a tall lamp"]), rtol=1e-6)
    for bad in ("", "   ", None):
        with pytest.raises(DataError, match="empty"):
            embed_query_text(bad, enc)


def test_check_text_encoder():
    enc = FakeEncoder()
    texts = ["a mug", "a mug", "a red vase", "a bench", "a jar"]
    V = enc.encode(texts)
    assert check_text_encoder(enc, V, texts) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(DataError, match="no text encoder"):
        check_text_encoder(enc, np.zeros((5, 70)), texts, space_name="descriptor_3d")
    with pytest.raises(DataError, match="not produced by this text encoder"):
        check_text_encoder(enc, V[::-1].copy(), texts)


def test_text_encoder_spec():
    v = np.zeros((2, 4), np.float32)
    assert text_encoder_spec(Space("minilm", v, modality="text", info={"encoder": "all-MiniLM-L6-v2"})) == "minilm"
    assert text_encoder_spec(Space("minilm_layer3", v, modality="text")) is None
    assert text_encoder_spec(Space("pointnet", v, modality="3d")) is None
    assert text_encoder_spec(Space("captions", v, modality="text",
                                   info={"encoder": "open_clip:ViT-B-32:openai"})) == "open_clip:vit-b-32:openai"
    assert text_encoder_spec(Space("text", v, modality="text")) is None


def test_neighbours_before_after_original_matches_naive(planted):
    X, Y = planted
    res = neighbours_before_after(X, Y, row=3, k=4, dim=5)
    D = cdist(X, X, "cosine")
    assert res["original"]["rows"] == [j for j in np.argsort(D[3], kind="stable") if j != 3][:4]
    assert 3 not in res["subspace"]["rows"] and len(res["subspace"]["rows"]) == 4
    assert res["k"] == 5


def test_cached_alignment_fits_once(planted):
    X, Y = planted
    a1, loaded1 = cached_alignment(X, Y, "key-1", k=5, namespace="shared")
    a2, loaded2 = cached_alignment(X, Y, "key-1", k=5, namespace="shared")
    assert (loaded1, loaded2) == (False, True)
    np.testing.assert_allclose(a1.score_matrix(X[:10], Y), a2.score_matrix(X[:10], Y), rtol=1e-12)
    ref = PairwiseAligner("cca_affine", k=5).fit(X, Y).score_matrix(X[:10], Y)
    np.testing.assert_allclose(a2.score_matrix(X[:10], Y), ref, rtol=1e-9)
    _, loaded3 = cached_alignment(X, Y, "key-1", k=6, namespace="shared")
    assert loaded3 is False


def test_a_real_text_query_on_the_demo():
    demo = pytest.importorskip("core.demo")
    try:
        ds = demo.load_demo()
    except DataError:
        pytest.skip("demo artifact missing")
    from core.encoders import MiniLMEncoder
    enc = MiniLMEncoder(cache_namespace=None)
    X, Y = ds["minilm"].data, ds["pointnet"].data
    check_text_encoder(enc, X, ds.items["caption"].tolist(), space_name="minilm")
    retr = CrossModalRetriever("cca_affine", k=50).fit(X, Y)
    idx, _ = retr.query(embed_query_text("a tall lamp", enc), top_k=10)
    labels = ds.items["label"].to_numpy()[idx[0]]
    is_lamp = np.char.find(labels.astype(str), "lamp") >= 0
    assert is_lamp.mean() > 0.5   # 2 lamp categories of 14: chance is 1/7 per item


# -- the `platoscope query` command -----------------------------------------------------------------
def test_query_command_item_to_item_and_bad_input(tmp_path, planted, capsys):
    import json

    from core.align import save_map
    from core.cli import main
    X, Y = planted
    labels = np.array(["a", "b", "c"])[np.arange(300) % 3]
    np.savez(tmp_path / "emb.npz", text=X.astype(np.float32), shape_3d=Y.astype(np.float32), label=labels)
    rc = main(["query", "--dataset", str(tmp_path / "emb.npz"), "--item", "7", "--k", "3", "--dim", "5", "--json"])
    assert rc == 0
    out = json.loads(capsys.readouterr().out)
    assert out["from"] == "text" and out["to"] == "shape_3d" and out["item"]["row"] == 7
    ref = PairwiseAligner("cca_affine", k=5).fit(X.astype(np.float32), Y.astype(np.float32)).score_matrix(
        X[7:8].astype(np.float32), Y.astype(np.float32))[0]
    ref[7] = -np.inf
    assert [r["row"] for r in out["results"]] == list(np.argsort(-ref, kind="stable")[:3])
    np.testing.assert_allclose([r["score"] for r in out["results"]], np.sort(ref)[::-1][:3], rtol=1e-6)
    # a saved map is used as it is
    path = save_map(PairwiseAligner("affine").fit(X, Y), tmp_path / "m.safetensors")
    rc = main(["query", "--dataset", str(tmp_path / "emb.npz"), "--item", "7", "--map", str(path), "--json"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and out["alignment"]["source"] == "map file" and out["alignment"]["method"] == "affine"
    wrong = save_map(PairwiseAligner("affine").fit(X[:, :5], Y), tmp_path / "w.safetensors")
    assert main(["query", "--dataset", str(tmp_path / "emb.npz"), "--item", "7", "--map", str(wrong)]) == 2
    assert "5-d" in capsys.readouterr().err
    # bad input: empty query, no text encoder for the source space
    assert main(["query", "   ", "--dataset", str(tmp_path / "emb.npz")]) == 2
    assert "empty" in capsys.readouterr().err
    assert main(["query", "a lamp", "--dataset", str(tmp_path / "emb.npz")]) == 2
    assert "no text encoder" in capsys.readouterr().err


def test_expand_query_is_the_mean_of_the_nearest_source_rows():
    from core.retrieval import expand_query

    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 6))
    q = rng.normal(size=(2, 6))
    out = expand_query(q, X, 4)
    Xn = X / np.linalg.norm(X, axis=1, keepdims=True)
    for i in range(2):
        cos = Xn @ (q[i] / np.linalg.norm(q[i]))
        nearest = np.argsort(-cos)[:4]
        np.testing.assert_allclose(out[i], X[nearest].mean(axis=0), rtol=1e-12)
    np.testing.assert_array_equal(expand_query(q, X, 0), q)
    with pytest.raises(DataError):
        expand_query(q, X[:, :5], 3)


def test_default_space_prefers_the_modality_then_falls_back():
    from core import Dataset, Space
    from core.retrieval import default_space

    rng = np.random.default_rng(0)
    ds = Dataset(None, [Space("alpha", rng.normal(size=(5, 3))), Space("pointnet", rng.normal(size=(5, 3)), modality="3d")])
    assert default_space(ds, "3d") == "pointnet"
    assert default_space(ds, "text") == "alpha"          # no text space: the first vector space
    assert default_space(ds, "text", exclude="alpha") == "pointnet"
