import hashlib
import re
import shutil

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from safetensors.numpy import load_file as st_load_numpy
from safetensors.torch import load_file as st_load_torch

from badfiles import markers_executed, write_bad_corpus, write_good_corpus
from core.dataset import _is_mmap_view
from core.errors import BudgetError, DataError
from core.io import (list_column_to_array, load_dataset, load_file, load_hierarcaps, load_metadata,
                     read_safetensors_header)


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    return write_good_corpus(tmp_path_factory.mktemp("good"))


@pytest.fixture(scope="module")
def bad(tmp_path_factory):
    return write_bad_corpus(tmp_path_factory.mktemp("bad"))


def _space(lf, name):
    return {s.name: s for s in lf.spaces}[name]


# ---- good files, each compared with an independent reader ------------------------------------------
def test_npy_is_memory_mapped_and_equals_np_load(good):
    for key, name in (("npy", "text_emb"), ("npy_fortran", "fortran")):
        lf = load_file(good[key].path)
        space = _space(lf, name)
        assert isinstance(space.data, np.memmap)
        np.testing.assert_array_equal(np.asarray(space.data), np.load(good[key].path, allow_pickle=False))
        assert lf.ids is None and space.kind == "vectors"


def test_npz_stored_members_are_memmaps_with_ids_metadata_mask_weights(good):
    g = good["npz_stored"]
    ref = np.load(g.path, allow_pickle=False)
    lf = load_file(g.path)
    assert sorted(s.name for s in lf.spaces) == ["image", "tok"]
    for s in lf.spaces:
        assert isinstance(s.data, np.memmap)
        np.testing.assert_array_equal(np.asarray(s.data), ref[s.name])
    tok = _space(lf, "tok")
    assert tok.kind == "tokens" and tok.n_tokens == 3
    np.testing.assert_array_equal(np.asarray(tok.mask), ref["tok_mask"])
    np.testing.assert_array_equal(np.asarray(tok.weights), ref["tok_weights"])
    assert list(lf.ids) == list(ref["id"])
    assert list(lf.metadata["caption"]) == list(ref["caption"])
    assert list(lf.metadata["label"]) == list(ref["label"])
    assert _space(lf, "image").modality == "image"


def test_npz_compressed_read_into_ram(good):
    g = good["npz_compressed"]
    lf = load_file(g.path)
    space = _space(lf, "audio")
    assert not _is_mmap_view(space.data)
    np.testing.assert_array_equal(space.data, np.load(g.path)["audio"])
    assert list(lf.ids) == list(np.load(g.path)["ids"])
    assert space.modality == "audio"


def test_safetensors_matches_reference_reader_and_is_memmapped(good):
    g = good["safetensors"]
    ref_t = st_load_torch(g.path)
    lf = load_file(g.path)
    names = {s.name for s in lf.spaces}
    assert names == {"f32", "f16", "bf16", "f64", "i64", "toks"}
    for s in lf.spaces:
        t = ref_t[s.name]
        expected = t.float().numpy() if t.dtype == torch.bfloat16 else t.numpy()
        np.testing.assert_array_equal(np.asarray(s.data), expected)
        assert np.asarray(s.data).dtype == expected.dtype
    for name in ("f32", "f16", "f64", "i64", "toks"):
        assert isinstance(_space(lf, name).data, np.memmap)
    toks = _space(lf, "toks")
    np.testing.assert_array_equal(np.asarray(toks.mask), ref_t["toks_mask"].numpy())
    header, start = read_safetensors_header(g.path)
    raw = open(g.path, "rb").read()
    assert start == 8 + int.from_bytes(raw[:8], "little")
    assert header["f32"]["shape"] == tuple(ref_t["f32"].shape)


def test_safetensors_numpy_written_file(tmp_path):
    from safetensors.numpy import save_file
    rng = np.random.default_rng(3)
    arrays = {"a": rng.normal(size=(7, 3)).astype(np.float32), "b": rng.integers(0, 9, size=(7, 2)).astype(np.int32)}
    save_file(arrays, str(tmp_path / "x.safetensors"))
    lf = load_file(tmp_path / "x.safetensors")
    ref = st_load_numpy(str(tmp_path / "x.safetensors"))
    for s in lf.spaces:
        np.testing.assert_array_equal(np.asarray(s.data), ref[s.name])


@pytest.mark.parametrize("key", ["pt", "pth_tensor", "pt_legacy"])
def test_pt_matches_torch_load(good, key):
    g = good[key]
    ref = torch.load(g.path, map_location="cpu", weights_only=True)
    flat = {}

    def walk(obj, prefix):
        if isinstance(obj, torch.Tensor):
            flat[prefix] = obj
        else:
            for k, v in obj.items():
                walk(v, f"{prefix}.{k}" if prefix else k)
    walk(ref, "" if isinstance(ref, dict) else "single")
    lf = load_file(g.path)
    assert {s.name for s in lf.spaces} == set(flat)
    for s in lf.spaces:
        np.testing.assert_array_equal(np.asarray(s.data), flat[s.name].float().numpy()
                                      if flat[s.name].dtype == torch.bfloat16 else flat[s.name].numpy())


def test_parquet_matches_pyarrow(good):
    g = good["parquet"]
    table = pq.read_table(g.path)
    lf = load_file(g.path)
    for s in lf.spaces:
        expected = np.array(table.column(s.name).to_pylist())
        np.testing.assert_array_equal(np.asarray(s.data), expected.astype(np.asarray(s.data).dtype))
        np.testing.assert_allclose(np.asarray(s.data, dtype=np.float64), expected)
    assert list(lf.ids) == table.column("id").to_pylist()
    assert list(lf.metadata.columns) == ["label", "score"]
    assert lf.metadata["score"].tolist() == table.column("score").to_pylist()


def test_list_column_to_array_chunked_and_sliced():
    rows = [[float(i), float(i) * 2, -float(i)] for i in range(10)]
    for typ in (pa.list_(pa.float32()), pa.large_list(pa.float64()), pa.list_(pa.float64(), 3)):
        full = pa.array(rows, type=typ)
        chunked = pa.chunked_array([full.slice(0, 4), full.slice(4, 3), full.slice(7)])
        out = list_column_to_array(chunked, "f", "c")
        np.testing.assert_array_equal(out, np.array(rows))
        np.testing.assert_array_equal(list_column_to_array(full.slice(3, 5), "f", "c"), np.array(rows[3:8]))


def test_list_column_null_value_names_row():
    arr = pa.array([[1.0, 2.0], [3.0, None], [5.0, 6.0]])
    with pytest.raises(DataError, match=r"row 1: has 1 null value"):
        list_column_to_array(arr, "f.parquet", "v")
    fixed = pa.array([[1.0, 2.0], [3.0, 4.0], [None, 6.0]], type=pa.list_(pa.float64(), 2))
    with pytest.raises(DataError, match=r"row 2"):
        list_column_to_array(fixed, "f.parquet", "v")


def test_metadata_join_reorders_and_covers_items(good):
    g = good["npz_stored"]
    ds = load_dataset([g.path], metadata=good["metadata_csv"].path)
    assert list(ds.items["id"]) == g.ids
    expected = good["metadata_csv"].metadata
    assert list(ds.items["group"]) == expected["group"]
    assert list(ds.items["note"]) == expected["note"]
    assert list(ds.items["caption"]) == g.metadata["caption"]
    assert len(ds.sources) == 2
    meta = load_metadata(good["metadata_csv"].path)
    assert pd.api.types.is_string_dtype(meta["id"]) and len(meta) == len(g.ids) + 1


def test_metadata_parquet_with_int_ids(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(0).normal(size=(3, 2)))
    pq.write_table(pa.table({"id": [2, 0, 1], "label": ["c", "a", "b"]}), tmp_path / "m.parquet")
    ds = load_dataset([tmp_path / "v.npy"], metadata=tmp_path / "m.parquet")
    assert list(ds.items["label"]) == ["a", "b", "c"]


def test_combining_files_pairs_rows_and_reorders_by_ids(tmp_path):
    rng = np.random.default_rng(5)
    ids = np.array(["a", "b", "c", "d"])
    x = rng.normal(size=(4, 3))
    y = rng.normal(size=(4, 2))
    perm = np.array([2, 0, 3, 1])
    np.savez(tmp_path / "one.npz", x=x, id=ids)
    np.savez(tmp_path / "two.npz", y=y[perm], id=ids[perm])
    np.save(tmp_path / "z_text.npy", rng.normal(size=(4, 5)))
    ds = load_dataset([tmp_path / "one.npz", tmp_path / "two.npz", tmp_path / "z_text.npy"])
    assert list(ds.ids) == list(ids)
    np.testing.assert_array_equal(ds["y"].data, y)
    np.testing.assert_array_equal(ds["x"].data, x)
    assert ds["z_text"].modality == "text"
    assert ds.name == "one"


def test_ids_default_to_row_numbers(good):
    ds = load_dataset(good["npy"].path)
    assert list(ds.ids) == [str(i) for i in range(12)]


def test_numeric_label_array_in_npz_is_metadata(tmp_path):
    np.savez(tmp_path / "l.npz", emb=np.random.default_rng(0).normal(size=(4, 2)), label=np.array([1, 0, 1, 2]))
    ds = load_dataset(tmp_path / "l.npz")
    assert ds.items["label"].tolist() == [1, 0, 1, 2] and ds.space_names == ["emb"]


def test_hierarcaps_items(good):
    g = good["hierarcaps"]
    ds = load_hierarcaps(g.path)
    assert list(ds.items.columns) == ["id", "chain", "tier", "caption", "image_url"]
    assert list(ds.items["id"]) == g.ids
    assert list(ds.items["caption"]) == g.metadata["caption"]
    assert list(ds.items["tier"]) == [0, 1, 2, 3] * 2
    assert list(ds.items["chain"]) == ["r1"] * 4 + ["r2"] * 4
    assert list(ds.items["image_url"]) == ["http://x/1.jpg"] * 4 + ["http://x/2.jpg"] * 4
    assert ds.spaces == {}
    ds2 = load_dataset([g.path])  # detected by its columns
    pd.testing.assert_frame_equal(ds2.items, ds.items)


def test_chains_table(good):
    g = good["chains"]
    ds = load_hierarcaps(g.path)
    assert list(ds.items["id"]) == g.ids
    assert list(ds.items["caption"]) == g.metadata["caption"]
    assert list(ds.items["tier"]) == [0, 1, 2, 0, 1]


def test_hierarcaps_with_embeddings_positional(tmp_path, good):
    np.save(tmp_path / "tier_text.npy", np.random.default_rng(0).normal(size=(8, 3)))
    ds = load_dataset([good["hierarcaps"].path, tmp_path / "tier_text.npy"])
    assert ds.n == 8 and list(ds.ids) == good["hierarcaps"].ids and "tier_text" in ds


def test_sources_have_sha256(good):
    ds = load_dataset(good["npy"].path)
    src = ds.sources[0]
    assert src.sha256 == hashlib.sha256(open(good["npy"].path, "rb").read()).hexdigest()
    assert src.name == "text_emb.npy"


def test_display_names_used_in_errors_and_spaces(tmp_path, bad):
    spool = tmp_path / "3f9a1c0d"
    shutil.copy(bad["nan_npy"].paths[0], spool)
    with pytest.raises(DataError) as info:
        load_dataset([spool], display_names={str(spool): "my_vectors.npy"})
    text = str(info.value)
    assert text.startswith("my_vectors.npy, array 'my_vectors', row 3") and str(tmp_path) not in text
    spool2 = tmp_path / "77aa"
    shutil.copy(bad["corrupt_parquet"].paths[0], spool2)
    with pytest.raises(DataError) as info:
        load_dataset([spool2], display_names={spool2: "upload.parquet"})
    assert "upload.parquet" in str(info.value) and str(tmp_path) not in str(info.value)
    ok = tmp_path / "ok_spool"
    np.save(tmp_path / "tmp.npy", np.random.default_rng(0).normal(size=(3, 2)))
    shutil.move(tmp_path / "tmp.npy", ok)
    ds = load_dataset([ok], display_names={str(ok): "clip_image.npy"})
    assert ds.space_names == ["clip_image"] and ds["clip_image"].modality == "image"
    assert ds.sources[0].name == "clip_image.npy"


def test_size_limit_from_environment(monkeypatch, good):
    monkeypatch.setenv("PLATOSCOPE_MAX_FILE_MB", "0.0001")
    with pytest.raises(BudgetError, match=r"over the limit of 104 bytes"):
        load_dataset(good["npy"].path)
    monkeypatch.setenv("PLATOSCOPE_MAX_FILE_MB", "1")
    assert load_dataset(good["npy"].path).n == 12


def test_every_bad_case_raises_a_clear_data_error(bad):
    failures = []
    for name, case in bad.items():
        try:
            load_dataset(case.paths, **case.load_kwargs())
        except DataError as err:
            text = str(err)
            if not re.search(case.message, text):
                failures.append(f"{name}: {text!r} !~ {case.message!r}")
        except Exception as err:  # noqa: BLE001 - any other exception is a failure
            failures.append(f"{name}: {type(err).__name__}: {err}")
        else:
            failures.append(f"{name}: no error")
    assert not failures, "\n".join(failures)
    assert markers_executed(bad) == []
    assert all(case.marker is None or not __import__("os").path.exists(case.marker) for case in bad.values())
    assert {"pickle_npy", "pickle_npz", "pickle_pt", "pickle_pt_legacy"} <= set(bad)


def test_bad_case_unpacks_as_pair(bad):
    paths, message = bad["nan_npy"]
    assert paths == bad["nan_npy"].paths and message == bad["nan_npy"].message
