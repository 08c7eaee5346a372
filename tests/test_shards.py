"""Sharded spaces (core.shards): a folder of .npy / .parquet shards opens as one space, read shard by shard."""
import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from core.align import AnchorMoments
from core.errors import BudgetError, DataError
from core.io import load_dataset, load_file
from core.shards import ShardedArray, is_shard_folder, load_shard_folder, shard_files
from core.similarity import linear_cka, similarity_matrix

BOUNDS = [(0, 130), (130, 131), (131, 400), (400, 1000)]   # uneven, with a one-row shard


def _data(rng, n=1000):
    X = rng.normal(size=(n, 7)).astype(np.float32)
    Y = (X @ rng.normal(size=(7, 4)) + 0.3 * rng.normal(size=(n, 4))).astype(np.float32)
    return X, Y


def write_npy_shards(folder, X, bounds=BOUNDS, prefix="part-"):
    folder.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(bounds):
        np.save(folder / f"{prefix}{i}.npy", X[a:b])
    return folder


def write_parquet_shards(folder, Y, ids=None, bounds=BOUNDS, caption=True, column="vec"):
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"item{j}" for j in range(len(Y))] if ids is None else ids
    for i, (a, b) in enumerate(bounds):
        cols = {"id": ids[a:b], column: pa.array(list(Y[a:b]), type=pa.list_(pa.float32()))}
        if caption:
            cols["caption"] = [f"caption {j}" for j in range(a, b)]
        pq.write_table(pa.table(cols), folder / f"part-{i:05d}.parquet")
    return folder


# ---- opening -------------------------------------------------------------------------------------------
def test_npy_folder_is_one_space_equal_to_the_concatenation(tmp_path, rng):
    X, _ = _data(rng)
    folder = write_npy_shards(tmp_path / "text_emb", X)
    (folder / "_SUCCESS").write_text("")
    (folder / "manifest.json").write_text("{}")
    assert is_shard_folder(folder)
    lf = load_file(folder)
    (space,) = lf.spaces
    assert space.name == "text_emb" and space.modality == "text"
    arr = space.data
    assert isinstance(arr, ShardedArray) and arr.n_shards == 4 and arr.shape == X.shape
    assert np.array_equal(np.asarray(arr), X)
    assert np.array_equal(arr[125:135], X[125:135])            # crosses three shards
    rows = np.array([999, 0, 130, 131, 5, 130])
    assert np.array_equal(arr[rows], X[rows])
    mask = np.zeros(len(X), bool)
    mask[[3, 500, 130]] = True
    assert np.array_equal(arr[mask], X[mask])
    assert np.array_equal(arr[-1], X[-1]) and np.array_equal(arr[::97], X[::97])
    assert lf.ids is None and space.resident_nbytes == 0


def test_natural_order_of_shard_names(tmp_path, rng):
    X, _ = _data(rng, 60)
    folder = tmp_path / "s"
    folder.mkdir()
    for i in range(12):                                       # part-10 must come after part-9
        np.save(folder / f"part-{i}.npy", X[i * 5:(i + 1) * 5])
    assert [p.name for p in shard_files(folder)][9:11] == ["part-9.npy", "part-10.npy"]
    assert np.array_equal(np.asarray(load_file(folder).spaces[0].data), X)


def test_parquet_folder_ids_metadata_and_join_with_a_single_file(tmp_path, rng):
    X, Y = _data(rng)
    write_parquet_shards(tmp_path / "image_emb", Y)
    ds = load_dataset([tmp_path / "image_emb"])
    assert ds.space_names == ["image_emb"] and ds.n == len(Y)
    assert list(ds.ids[:2]) == ["item0", "item1"] and ds.items["caption"].iloc[999] == "caption 999"
    assert np.allclose(np.asarray(ds["image_emb"].data), Y)
    # a single .npz in another item order is reordered to the shards' ids
    perm = rng.permutation(len(X))
    np.savez(tmp_path / "other.npz", id=np.array([f"item{j}" for j in perm]), other=X[perm])
    ds2 = load_dataset([tmp_path / "image_emb", tmp_path / "other.npz"])
    assert np.allclose(np.asarray(ds2["other"].data), X)


def test_parquet_several_vector_columns_give_several_spaces(tmp_path, rng):
    X, Y = _data(rng)
    folder = tmp_path / "enc"
    folder.mkdir()
    for i, (a, b) in enumerate(BOUNDS):
        pq.write_table(pa.table({"id": [str(j) for j in range(a, b)],
                                 "minilm": pa.array(list(X[a:b]), type=pa.list_(pa.float32())),
                                 "clip": pa.array(list(Y[a:b].astype(np.float64)), type=pa.list_(pa.float64()))}),
                       folder / f"p{i}.parquet")
    lf = load_file(folder)
    assert [s.name for s in lf.spaces] == ["minilm", "clip"]
    assert np.allclose(np.asarray(lf.spaces[1].data), Y)


# ---- errors name the shard and its row -----------------------------------------------------------------
def test_nan_in_a_shard_names_the_shard_and_its_row(tmp_path, rng):
    X, Y = _data(rng)
    X[135, 2] = np.nan                                       # shard part-2 starts at 131
    write_npy_shards(tmp_path / "x", X)
    with pytest.raises(DataError) as err:
        load_file(tmp_path / "x")
    assert err.value.file == "x/part-2.npy" and err.value.row == 4 and "NaN" in err.value.message
    Y[401, 0] = np.inf
    write_parquet_shards(tmp_path / "y", Y)
    with pytest.raises(DataError) as err:
        load_file(tmp_path / "y")
    assert err.value.file == "y/part-00003.parquet" and err.value.row == 1 and "Inf" in err.value.message


def test_mismatched_shards_are_refused_clearly(tmp_path, rng):
    X, Y = _data(rng)
    folder = write_npy_shards(tmp_path / "w", X)
    np.save(folder / "part-9.npy", rng.normal(size=(3, 5)).astype(np.float32))
    with pytest.raises(DataError, match="5 columns but the first shard has 7") as err:
        load_file(folder)
    assert err.value.file == "w/part-9.npy"
    mixed = write_npy_shards(tmp_path / "m", X)
    write_parquet_shards(mixed, Y, bounds=[(0, 10)])
    with pytest.raises(DataError, match="mixes shard formats"):
        load_file(mixed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="empty folder"):
        load_file(tmp_path / "empty")
    obj = write_npy_shards(tmp_path / "o", X)
    np.save(obj / "part-7.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match="pickled") as err:
        load_file(obj)
    assert err.value.file == "o/part-7.npy"
    tok = tmp_path / "t"
    tok.mkdir()
    np.save(tok / "a.npy", rng.normal(size=(4, 3, 2)).astype(np.float32))
    with pytest.raises(DataError, match="token-set"):
        load_file(tok)


def test_parquet_shard_errors(tmp_path, rng):
    _, Y = _data(rng)
    ids = [f"item{j}" for j in range(len(Y))]
    ids[450] = "item3"                                       # duplicate across shards
    write_parquet_shards(tmp_path / "dup", Y, ids=ids)
    with pytest.raises(DataError, match="more than once") as err:
        load_file(tmp_path / "dup")
    assert err.value.file == "dup/part-00000.parquet" and err.value.row == 3
    folder = write_parquet_shards(tmp_path / "cols", Y)
    pq.write_table(pa.table({"id": ["z"], "other": pa.array([list(Y[0])], type=pa.list_(pa.float32()))}),
                   folder / "part-00009.parquet")
    with pytest.raises(DataError, match="vector columns") as err:
        load_file(folder)
    assert err.value.file == "cols/part-00009.parquet"
    bad = write_parquet_shards(tmp_path / "bad", Y)
    (bad / "part-00002.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(DataError, match="corrupt") as err:
        load_file(bad)
    assert err.value.file == "bad/part-00002.parquet"


def test_zero_variance_is_judged_over_all_shards(tmp_path):
    same = np.ones((10, 3), np.float32)
    write_npy_shards(tmp_path / "flat", same, bounds=[(0, 4), (4, 10)])
    with pytest.raises(DataError, match="zero variance"):
        load_file(tmp_path / "flat")
    varied = np.ones((10, 3), np.float32)
    varied[5:] = 2.0                                       # each shard constant, the space is not
    write_npy_shards(tmp_path / "ok", varied, bounds=[(0, 5), (5, 10)])
    assert load_file(tmp_path / "ok").spaces[0].n == 10


def test_per_file_size_limit_applies_to_each_shard(tmp_path, rng):
    X, _ = _data(rng)
    write_npy_shards(tmp_path / "big", X)
    with pytest.raises(BudgetError) as err:
        load_file(tmp_path / "big", max_file_bytes=4096)
    assert err.value.file.startswith("big/part-")


def test_loading_whole_refuses_beyond_the_budget(tmp_path, rng, monkeypatch):
    X, _ = _data(rng)
    space = load_file(write_npy_shards(tmp_path / "x", X)).spaces[0]
    monkeypatch.setenv("PLATOSCOPE_MAX_FILE_MB", str(X.nbytes / 2 / 2**20))
    with pytest.raises(BudgetError, match="loaded whole"):
        np.asarray(space.data)
    assert space.data[10:20].shape == (10, 7)                # row chunks still work


# ---- computations stream over the shards ---------------------------------------------------------------
def test_streamed_measures_on_shards_equal_the_in_memory_result(tmp_path, rng):
    X, Y = _data(rng)
    write_npy_shards(tmp_path / "x", X)
    write_parquet_shards(tmp_path / "y", Y, ids=[str(j) for j in range(len(Y))])
    ds = load_dataset([tmp_path / "x", tmp_path / "y"])
    sx, sy = ds["x"].vectors(), ds["y"].vectors()
    assert isinstance(sx, ShardedArray) and sx.dtype == np.float32
    ref = linear_cka(X.astype(np.float64), Y.astype(np.float64), method="features")
    assert abs(linear_cka(sx, sy, chunk_rows=97, method="features") - ref) < 1e-12
    mat = similarity_matrix({"x": sx, "y": sy}, chunk_rows=150)["values"]
    assert abs(mat[0][1] - ref) < 1e-12
    m_sh = AnchorMoments.from_arrays(sx, sy, chunk_rows=111)
    m_ref = AnchorMoments.from_arrays(X, Y)
    assert np.allclose(m_sh.Cxy.numpy(), m_ref.Cxy.numpy(), rtol=1e-10, atol=1e-9)


def test_spec_round_trip_reads_the_same_rows(tmp_path, rng):
    X, _ = _data(rng)
    arr = load_file(write_npy_shards(tmp_path / "x", X)).spaces[0].data
    again = ShardedArray.from_spec(json.loads(json.dumps(arr.spec())))
    assert np.array_equal(again[100:500], X[100:500])
    starts = [s for s, _ in arr.iter_shards()]
    assert starts == [a for a, _ in BOUNDS]


def test_cli_cka_reads_shard_folders(tmp_path, rng):
    X, Y = _data(rng)
    write_npy_shards(tmp_path / "x", X)
    write_npy_shards(tmp_path / "y", Y)
    out = subprocess.run([sys.executable, "-m", "core", "cka", str(tmp_path / "x"), str(tmp_path / "y"), "--json"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout)
    ref = linear_cka(X.astype(np.float64), Y.astype(np.float64), method="features")
    assert res["spaces"] == ["x", "y"] and abs(res["matrix"][0][1] - ref) < 1e-9
    X[500, 1] = np.nan
    write_npy_shards(tmp_path / "x", X)
    out = subprocess.run([sys.executable, "-m", "core", "cka", str(tmp_path / "x"), str(tmp_path / "y")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 2 and "part-3.npy" in out.stderr and "row 100" in out.stderr
    assert "Traceback" not in out.stderr


def test_load_shard_folder_fingerprint_changes_with_a_shard(tmp_path, rng):
    X, _ = _data(rng)
    folder = write_npy_shards(tmp_path / "x", X)
    a = load_shard_folder(folder).source.sha256
    X[3, 3] += 1
    write_npy_shards(folder, X)
    assert load_shard_folder(folder).source.sha256 != a


def test_server_folder_dataset_opens_shard_subfolders(tmp_path, rng, monkeypatch):
    from ui import data

    X, Y = _data(rng)
    study = tmp_path / "server" / "study"
    write_npy_shards(study / "pointnet", X)
    write_parquet_shards(study / "minilm", Y, ids=[str(j) for j in range(len(Y))])
    np.savez(study / "extra.npz", id=np.array([str(j) for j in range(len(Y))]), extra=X[:, :3] * 2)
    monkeypatch.setenv("PLATOSCOPE_DATA_DIR", str(tmp_path / "server"))
    assert data.server_dataset_names() == ["study"]
    ds = data.open_dataset("server:study")
    assert sorted(ds.space_names) == ["extra", "minilm", "pointnet"] and ds.origin == "server"
    assert isinstance(ds["pointnet"].data, ShardedArray) and ds["pointnet"].modality == "3d"
    assert ds.items["caption"].iloc[7] == "caption 7"


_MEMORY_PROBE = """
import sys, tracemalloc
import numpy as np, pyarrow as pa
from core.io import load_file
total = int(sys.argv[2])
pool = pa.default_memory_pool()
tracemalloc.start()
arr = load_file(sys.argv[1]).spaces[0].data
load_peak = tracemalloc.get_traced_memory()[1] + pool.max_memory()
kept = tracemalloc.get_traced_memory()[0] + pa.total_allocated_bytes()
tracemalloc.reset_peak()
s = np.zeros(arr.shape[1])
for start in range(0, arr.n, 1500):
    s += arr[start:start + 1500].sum(axis=0)
stream_peak = tracemalloc.get_traced_memory()[1] + pool.max_memory()
print(load_peak / total, kept / total, stream_peak / total)
"""


def test_memory_stays_bounded_by_a_shard_when_opening_and_streaming(tmp_path, rng):
    """Python-heap (tracemalloc) plus Arrow-pool peaks, in a fresh process, as a share of the whole space."""
    import os

    n_shards, rows, d = 24, 5000, 128
    Y = rng.normal(size=(n_shards * rows, d)).astype(np.float32)
    write_parquet_shards(tmp_path / "y", Y, ids=[str(i) for i in range(len(Y))],
                         bounds=[(i * rows, (i + 1) * rows) for i in range(n_shards)], caption=False)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(__import__("tests.conftest").conftest.ROOT),
                                                        os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, str(tmp_path / "y"), str(Y.nbytes)],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    load_peak, kept, stream_peak = (float(v) for v in out.stdout.split())
    assert load_peak < 0.7, load_peak       # one shard decoded at a time (+ ids, read buffers, Arrow's pool)
    assert kept < 0.3, kept                 # nothing of the shards kept after the checks
    assert stream_peak < 0.7, stream_peak   # a streamed pass holds one decoded shard
