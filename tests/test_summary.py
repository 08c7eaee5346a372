import hashlib

import numpy as np
import pandas as pd

from core.dataset import Dataset, Space
from core.io import load_dataset
from core.summary import SUMMARY_COLUMNS, dataset_overview, summarize_dataset


def test_summarize_dataset_rows_match_naive(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 5)).astype(np.float32)
    x[4] = 0
    tok = rng.normal(size=(20, 3, 2))
    np.save(tmp_path / "clip_text.npy", x)
    np.savez(tmp_path / "more.npz", tok=tok, id=np.array([f"i{k}" for k in range(20)]),
             group=np.array([f"g{k % 4}" for k in range(20)]))
    ds = load_dataset([tmp_path / "clip_text.npy", tmp_path / "more.npz"])
    table = summarize_dataset(ds)
    assert list(table.columns) == list(SUMMARY_COLUMNS)
    row = table.set_index("name").loc["clip_text"]
    assert (row["kind"], row["modality"], row["n"], row["d"], row["dtype"]) == ("vectors", "text", 20, 5, "float32")
    assert row["tokens"] is None
    np.testing.assert_allclose(row["mean_norm"], np.linalg.norm(x.astype(np.float64), axis=1).mean(), rtol=1e-12)
    assert row["problems"] == "1 all-zero row"
    assert row["source"] == "clip_text.npy"
    trow = table.set_index("name").loc["tok"]
    assert trow["kind"] == "tokens" and trow["tokens"] == 3 and trow["d"] == 2
    np.testing.assert_allclose(trow["mean_norm"], np.linalg.norm(tok.mean(axis=1), axis=1).mean(), rtol=1e-12)
    assert trow["problems"] == ""


def test_summarize_uses_progress_wrapper():
    ds = Dataset(None, [Space("a", np.random.default_rng(1).normal(size=(5, 2)))])
    seen = []

    def progress(it, total=None, desc=""):
        seen.append((total, desc))
        return it
    summarize_dataset(ds, progress=progress)
    assert seen == [(1, "scanning spaces")]


def test_dataset_overview(tmp_path):
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "a.npz", img=rng.normal(size=(6, 3)), id=np.array(list("abcdef")),
             group=np.array(["x", "x", "y", "y", "z", "z"]))
    pd.DataFrame({"id": list("fedcba"), "note": list("123456")}).to_csv(tmp_path / "m.csv", index=False)
    ds = load_dataset([tmp_path / "a.npz"], metadata=tmp_path / "m.csv")
    ov = dataset_overview(ds)
    assert ov["n_items"] == 6 and ov["n_spaces"] == 1 and ov["space_names"] == ["img"]
    assert ov["metadata_columns"] == ["group", "note"]
    assert ov["n_groups"] == 3 and ov["n_chains"] is None
    expected = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in (tmp_path / "a.npz", tmp_path / "m.csv")}
    assert {s["name"]: s["sha256"] for s in ov["sources"]} == expected
    assert {s["name"]: s["size"] for s in ov["sources"]} == {k: (tmp_path / k).stat().st_size for k in expected}
    assert ov["fingerprint"] == ds.fingerprint
