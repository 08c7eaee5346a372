"""Corpora of good and bad input files, shared by the loader, CLI and app tests.

API
---
``write_bad_corpus(dirpath) -> dict[str, BadCase]``
    Writes one small file set per problem; each :class:`BadCase` knows its ``paths``, optional ``metadata`` table
    and ``max_file_bytes`` limit, the regex ``message`` the DataError text must match, and (for pickles) a
    ``marker`` path that must NOT exist afterwards (it would be created if the pickle were executed).
    ``case.load_kwargs()`` gives the keyword arguments for ``core.io.load_dataset(case.paths, **kwargs)``;
    ``case.cli_args()`` the file arguments for ``platoscope info``. A case also unpacks as
    ``paths, message = case``.
``write_good_corpus(dirpath) -> dict[str, GoodFile]``
    One valid file per format, with the arrays, ids and metadata it was written from.
"""
from __future__ import annotations

import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np


@dataclass
class BadCase:
    """One bad input: files to load and the message (a regex) the resulting DataError must contain."""

    paths: list[str]
    message: str
    metadata: str | None = None
    max_file_bytes: int | None = None
    marker: str | None = None

    def __iter__(self):
        return iter((self.paths, self.message))

    def load_kwargs(self) -> dict:
        kwargs = {}
        if self.metadata is not None:
            kwargs["metadata"] = self.metadata
        if self.max_file_bytes is not None:
            kwargs["max_file_bytes"] = self.max_file_bytes
        return kwargs

    def cli_args(self) -> list[str]:
        args = list(self.paths)
        if self.metadata is not None:
            args += ["--meta", self.metadata]
        if self.max_file_bytes is not None:
            args += ["--max-file-mb", repr(self.max_file_bytes / (1 << 20))]
        return args


@dataclass
class GoodFile:
    """A valid file: its path, the spaces it holds (name -> array), its ids and metadata columns."""

    path: str
    arrays: dict = field(default_factory=dict)
    ids: list | None = None
    metadata: dict = field(default_factory=dict)


class _MarkerPayload:
    """Pickles to a call of ``open(marker, 'w')``: executing the pickle would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _rng(seed=0):
    return np.random.default_rng(seed)


def _truncate(src: Path, dst: Path, keep: float = 0.6) -> str:
    data = src.read_bytes()
    dst.write_bytes(data[: max(1, int(len(data) * keep))])
    return str(dst)


def _garbage(dst: Path, size: int = 300) -> str:
    dst.write_bytes(_rng(99).integers(0, 256, size=size, dtype=np.uint8).tobytes())
    return str(dst)


def _save_safetensors_torch(path: Path, tensors: dict) -> str:
    from safetensors.torch import save_file

    save_file(tensors, str(path))
    return str(path)


def write_good_corpus(dirpath) -> dict[str, GoodFile]:
    """Write one valid file per supported format into ``dirpath``; returns {case: GoodFile}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    rng = _rng(1)
    n = 12
    out: dict[str, GoodFile] = {}
    ids = [f"item{i:02d}" for i in range(n)]

    x = rng.normal(size=(n, 5)).astype(np.float32)
    np.save(d / "text_emb.npy", x)
    out["npy"] = GoodFile(str(d / "text_emb.npy"), {"text_emb": x})

    xf = np.asfortranarray(rng.normal(size=(n, 4)))
    np.save(d / "fortran.npy", xf)
    out["npy_fortran"] = GoodFile(str(d / "fortran.npy"), {"fortran": xf})

    img = rng.normal(size=(n, 6)).astype(np.float32)
    tok = rng.normal(size=(n, 3, 4)).astype(np.float32)
    mask = rng.random((n, 3)) > 0.2
    mask[:, 0] = True
    weights = rng.random((n, 3)).astype(np.float32) + 0.1
    captions = np.array([f"caption {i}" for i in range(n)])
    labels = np.array([f"label{i % 3}" for i in range(n)])
    np.savez(d / "stored.npz", image=img, tok=tok, tok_mask=mask, tok_weights=weights, id=np.array(ids),
             caption=captions, label=labels)
    out["npz_stored"] = GoodFile(str(d / "stored.npz"), {"image": img, "tok": tok}, ids,
                                 {"caption": list(captions), "label": list(labels)})
    out["npz_stored"].metadata["tok_mask"] = mask
    out["npz_stored"].metadata["tok_weights"] = weights

    zc = rng.normal(size=(n, 7))
    np.savez_compressed(d / "compressed.npz", audio=zc, ids=np.array(ids))
    out["npz_compressed"] = GoodFile(str(d / "compressed.npz"), {"audio": zc}, ids)

    st = {
        "f32": torch.from_numpy(rng.normal(size=(n, 5)).astype(np.float32)),
        "f16": torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float16)),
        "bf16": torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)).to(torch.bfloat16),
        "f64": torch.from_numpy(rng.normal(size=(n, 2))),
        "i64": torch.from_numpy(rng.integers(-5, 5, size=(n, 3))),
        "toks": torch.from_numpy(rng.normal(size=(n, 2, 3)).astype(np.float32)),
        "toks_mask": torch.ones(n, 2, dtype=torch.bool),
    }
    _save_safetensors_torch(d / "model.safetensors", st)
    out["safetensors"] = GoodFile(str(d / "model.safetensors"),
                                  {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy()
                                   for k, v in st.items() if k != "toks_mask"})

    pt = {"text": torch.from_numpy(rng.normal(size=(n, 4)).astype(np.float32)),
          "enc": {"layer": torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32)),
                  "half": torch.from_numpy(rng.normal(size=(n, 2)).astype(np.float32)).to(torch.bfloat16)}}
    torch.save(pt, d / "nested.pt")
    out["pt"] = GoodFile(str(d / "nested.pt"), {"text": pt["text"].numpy(), "enc.layer": pt["enc"]["layer"].numpy(),
                                               "enc.half": pt["enc"]["half"].float().numpy()})

    single = torch.from_numpy(rng.normal(size=(n, 3)))
    torch.save(single, d / "single.pth")
    out["pth_tensor"] = GoodFile(str(d / "single.pth"), {"single": single.numpy()})

    legacy = {"vision": torch.from_numpy(rng.normal(size=(n, 3)).astype(np.float32))}
    torch.save(legacy, d / "legacy.pt", _use_new_zipfile_serialization=False)
    out["pt_legacy"] = GoodFile(str(d / "legacy.pt"), {"vision": legacy["vision"].numpy()})

    fixed = rng.normal(size=(n, 4)).astype(np.float32)
    var = rng.normal(size=(n, 3))
    large = rng.normal(size=(n, 2)).astype(np.float32)
    table = pa.table({
        "id": pa.array(ids),
        "clip_image": pa.FixedSizeListArray.from_arrays(pa.array(fixed.reshape(-1)), 4),
        "text_vec": pa.array(list(var), type=pa.list_(pa.float64())),
        "big": pa.array(list(large), type=pa.large_list(pa.float32())),
        "label": pa.array([f"l{i % 2}" for i in range(n)]),
        "score": pa.array(np.arange(n, dtype=np.int64)),
    })
    pq.write_table(table, d / "table.parquet")
    out["parquet"] = GoodFile(str(d / "table.parquet"), {"clip_image": fixed, "text_vec": var, "big": large}, ids,
                              {"label": [f"l{i % 2}" for i in range(n)], "score": list(range(n))})

    # a metadata table listing the stored.npz items in another order, plus one extra row
    order = rng.permutation(n)
    with open(d / "meta.csv", "w") as fh:
        fh.write("id,group,note\n")
        for i in order:
            fh.write(f"{ids[i]},g{i // 2},note {i}\n")
        fh.write("extra_item,g99,unused\n")
    out["metadata_csv"] = GoodFile(str(d / "meta.csv"), {}, ids,
                                   {"group": [f"g{i // 2}" for i in range(n)],
                                    "note": [f"note {i}" for i in range(n)]})

    with open(d / "hierarcaps.csv", "w") as fh:
        fh.write("id,captions,image_url\n")
        fh.write('r1,"animal => dog => small dog => small dog on grass",http://x/1.jpg\n')
        fh.write('r2,"object => vehicle => car => red car parked",http://x/2.jpg\n')
    out["hierarcaps"] = GoodFile(str(d / "hierarcaps.csv"), {}, ["r1:0", "r1:1", "r1:2", "r1:3",
                                                                 "r2:0", "r2:1", "r2:2", "r2:3"],
                                 {"caption": ["animal", "dog", "small dog", "small dog on grass",
                                              "object", "vehicle", "car", "red car parked"]})

    with open(d / "chains.csv", "w") as fh:
        fh.write("chain,tier,caption\n")
        fh.write("a,0,thing\na,1,animal\na,2,cat\nb,0,place\nb,1,city\n")
    out["chains"] = GoodFile(str(d / "chains.csv"), {}, ["a:0", "a:1", "a:2", "b:0", "b:1"],
                             {"caption": ["thing", "animal", "cat", "place", "city"]})
    return out


def write_bad_corpus(dirpath) -> dict[str, BadCase]:
    """Write one set of bad files per problem into ``dirpath``; returns {case: BadCase}."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import torch

    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    rng = _rng(2)
    cases: dict[str, BadCase] = {}

    def p(name):
        return d / name

    # NaN / Inf ------------------------------------------------------------------------------------------
    x = rng.normal(size=(20, 4)).astype(np.float32)
    x[3, 1] = np.nan
    x[11, 0] = np.nan
    np.save(p("nan.npy"), x)
    cases["nan_npy"] = BadCase([str(p("nan.npy"))], r"nan\.npy.*2 NaN values \(first in row 3\)")

    y = rng.normal(size=(10, 3))
    y[5, 2] = np.inf
    y[7, 0] = -np.inf
    y[8, 1] = np.nan
    np.savez_compressed(p("naninf.npz"), emb=y)
    cases["nan_inf_npz"] = BadCase([str(p("naninf.npz"))], r"array 'emb'.*1 NaN and 2 Inf values \(first in row 5\)")

    z = rng.normal(size=(9, 3)).astype(np.float32)
    z[6, 0] = np.inf
    _save_safetensors_torch(p("inf.safetensors"), {"vec": torch.from_numpy(z)})
    cases["inf_safetensors"] = BadCase([str(p("inf.safetensors"))], r"row 6.*1 Inf value \(first in row 6\)")

    # row counts ------------------------------------------------------------------------------------------
    np.save(p("rows10.npy"), rng.normal(size=(10, 3)))
    np.save(p("rows12.npy"), rng.normal(size=(12, 3)))
    cases["row_mismatch"] = BadCase([str(p("rows10.npy")), str(p("rows12.npy"))],
                                    r"different numbers of rows.*rows10\.npy.*10.*rows12\.npy.*12")

    np.savez(p("inner_mismatch.npz"), a=rng.normal(size=(5, 2)), b=rng.normal(size=(6, 2)))
    cases["row_mismatch_in_file"] = BadCase([str(p("inner_mismatch.npz"))], r"different numbers of rows")

    # ndim --------------------------------------------------------------------------------------------------
    np.save(p("flat.npy"), rng.normal(size=10))
    cases["ndim_1d"] = BadCase([str(p("flat.npy"))], r"1-D array of shape \(10\), expected 2-D")
    np.save(p("four.npy"), rng.normal(size=(2, 3, 4, 5)))
    cases["ndim_4d"] = BadCase([str(p("four.npy"))], r"4-D array of shape \(2 x 3 x 4 x 5\), expected 2-D")

    # dtypes ------------------------------------------------------------------------------------------------
    np.save(p("strings.npy"), np.array([["a", "b"], ["c", "d"]]))
    cases["string_dtype"] = BadCase([str(p("strings.npy"))], r"holds text .*not numbers")
    np.save(p("complex.npy"), rng.normal(size=(4, 3)) + 1j)
    cases["complex_dtype"] = BadCase([str(p("complex.npy"))], r"holds complex numbers")
    st_bool = {"flags": torch.ones(4, 3, dtype=torch.bool)}
    _save_safetensors_torch(p("bool.safetensors"), st_bool)
    cases["bool_dtype"] = BadCase([str(p("bool.safetensors"))], r"holds booleans")
    np.save(p("objects.npy"), np.array([[1, "a"], [2, None]], dtype=object), allow_pickle=True)
    cases["object_dtype"] = BadCase([str(p("objects.npy"))], r"pickled Python objects")

    # pickles that would create a marker file if executed -------------------------------------------------
    for name in ("npy", "npz", "pt", "pt_legacy"):
        marker = str(p(f"EXECUTED_{name}"))
        payload = np.empty((2, 2), dtype=object)
        payload[:] = _MarkerPayload(marker)
        if name == "npy":
            np.save(p("evil.npy"), payload, allow_pickle=True)
            path = p("evil.npy")
        elif name == "npz":
            np.savez(p("evil.npz"), good=rng.normal(size=(2, 2)), evil=payload)
            path = p("evil.npz")
        elif name == "pt":
            torch.save({"x": torch.ones(2, 2), "evil": _MarkerPayload(marker)}, p("evil.pt"))
            path = p("evil.pt")
        else:
            torch.save({"evil": _MarkerPayload(marker)}, p("evil_legacy.pt"), _use_new_zipfile_serialization=False)
            path = p("evil_legacy.pt")
        cases[f"pickle_{name}"] = BadCase([str(path)], r"pickled Python objects, which Platoscope never executes",
                                          marker=marker)
    with open(p("raw_pickle.pkl.npy"), "wb") as fh:  # a bare pickle with a .npy name
        pickle.dump(_MarkerPayload(str(p("EXECUTED_raw"))), fh)
    cases["pickle_raw_as_npy"] = BadCase([str(p("raw_pickle.pkl.npy"))], r"corrupt or truncated",
                                         marker=str(p("EXECUTED_raw")))

    # not tensors -----------------------------------------------------------------------------------------
    torch.save({"x": torch.ones(3, 2), "note": "hello"}, p("strmember.pt"))
    cases["pt_non_tensor"] = BadCase([str(p("strmember.pt"))], r"array 'note'.*holds a str, not a tensor")
    torch.save([1, 2, 3], p("list.pt"))
    cases["pt_list"] = BadCase([str(p("list.pt"))], r"holds a list; expected a tensor or a dict of tensors")

    # empty -------------------------------------------------------------------------------------------------
    np.save(p("norows.npy"), np.zeros((0, 5), dtype=np.float32))
    cases["empty_rows"] = BadCase([str(p("norows.npy"))], r"is empty: shape \(0 x 5\) has 0 rows")
    _save_safetensors_torch(p("nocols.safetensors"), {"e": torch.zeros(5, 0)})
    cases["empty_columns"] = BadCase([str(p("nocols.safetensors"))], r"is empty: shape \(5 x 0\) has 0 columns")

    # corrupt / truncated, each format -------------------------------------------------------------------
    good = d / "_good"
    good.mkdir(exist_ok=True)
    g = rng.normal(size=(40, 16)).astype(np.float32)
    np.save(good / "g.npy", g)
    np.savez(good / "g.npz", g=g)
    _save_safetensors_torch(good / "g.safetensors", {"g": torch.from_numpy(g)})
    torch.save({"g": torch.from_numpy(g)}, good / "g.pt")
    pq.write_table(pa.table({"g": pa.array(list(g.astype(np.float64)), type=pa.list_(pa.float64()))}),
                   good / "g.parquet")
    for ext in ("npy", "npz", "safetensors", "pt", "parquet"):
        cases[f"corrupt_{ext}"] = BadCase([_garbage(p(f"corrupt.{ext}"))], r"corrupt or truncated")
        cases[f"truncated_{ext}"] = BadCase([_truncate(good / f"g.{ext}", p(f"truncated.{ext}"))],
                                            r"corrupt or truncated")
    header = b'{"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 64]'  # JSON cut short
    with open(p("badjson.safetensors"), "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header + bytes(64))
    cases["safetensors_bad_json"] = BadCase([str(p("badjson.safetensors"))], r"bad JSON header")
    header = b'{"x": {"dtype": "F32", "shape": [4, 4], "data_offsets": [0, 6400]}}'
    with open(p("offsets.safetensors"), "wb") as fh:
        fh.write(len(header).to_bytes(8, "little") + header + bytes(64))
    cases["safetensors_bad_offsets"] = BadCase([str(p("offsets.safetensors"))],
                                               r"array 'x'.*offsets \[0, 6400\] lie outside the 64 data bytes")

    # unknown extension -----------------------------------------------------------------------------------
    p("emb.txt").write_text("1 2 3\n")
    cases["unknown_extension"] = BadCase([str(p("emb.txt"))], r"emb\.txt: unknown file type '\.txt'")

    # metadata ---------------------------------------------------------------------------------------------
    n = 6
    np.savez(p("with_ids.npz"), emb=rng.normal(size=(n, 3)), id=np.array([f"i{k}" for k in range(n)]))
    p("meta_dup.csv").write_text("id,label\n" + "".join(f"i{k},l\n" for k in range(n)) + "i2,again\n")
    cases["metadata_duplicate_ids"] = BadCase([str(p("with_ids.npz"))],
                                              r"meta_dup\.csv.*id 'i2' appears more than once \(rows 2, 6\)",
                                              metadata=str(p("meta_dup.csv")))
    p("meta_other.csv").write_text("id,label\n" + "".join(f"x{k},l\n" for k in range(n - 2))
                                   + "i0,l\ni1,l\n")
    cases["metadata_mismatched_ids"] = BadCase(
        [str(p("with_ids.npz"))], r"4 of 6 item ids are not in the metadata table \(e\.g\. 'i2', 'i3', 'i4', \.\.\.\)"
                                  r"; 4 of its 6 ids match no item",
        metadata=str(p("meta_other.csv")))
    p("meta_noid.csv").write_text("name,label\na,b\n")
    cases["metadata_no_id_column"] = BadCase([str(p("with_ids.npz"))], r"has no 'id' column",
                                             metadata=str(p("meta_noid.csv")))

    # zero variance -------------------------------------------------------------------------------------------
    np.save(p("constant.npy"), np.tile(rng.normal(size=(1, 4)), (8, 1)))
    cases["zero_variance"] = BadCase([str(p("constant.npy"))], r"zero variance: all 8 rows are identical")

    # size limit ---------------------------------------------------------------------------------------------
    np.save(p("big.npy"), rng.normal(size=(50, 10)))
    cases["over_size_limit"] = BadCase([str(p("big.npy"))], r"big\.npy: is .*over the limit of 100 bytes.*--max-file-mb",
                                       max_file_bytes=100)

    # HierarCaps / chains --------------------------------------------------------------------------------------
    p("hc_bad.csv").write_text("id,captions,image_url\n"
                               'r1,"a => b => c => d",u1\n'
                               'r2,"a => b => c",u2\n')
    cases["hierarcaps_malformed_row"] = BadCase([str(p("hc_bad.csv"))],
                                                r"hc_bad\.csv, column 'captions', row 1: row with id 'r2' has 3 tiers, "
                                                r"expected 4")
    p("chains_short.csv").write_text("chain,tier,caption\na,0,x\na,1,y\nb,0,z\n")
    cases["chains_single_tier"] = BadCase([str(p("chains_short.csv"))], r"chain 'b' has only one tier")
    p("plain.csv").write_text("id,label\n1,a\n")
    cases["csv_not_embeddings"] = BadCase([str(p("plain.csv"))], r"must be a HierarCaps file.*--meta")

    # token-set extras -------------------------------------------------------------------------------------
    np.savez(p("badmask.npz"), tok=rng.normal(size=(5, 3, 4)), tok_mask=np.ones((5, 2), dtype=bool))
    cases["mask_wrong_shape"] = BadCase([str(p("badmask.npz"))], r"array 'tok_mask'.*has shape \(5 x 2\), expected \(5 x 3\)")

    # parquet -------------------------------------------------------------------------------------------------
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0, 3.0, 4.0], [1.0, 0.0, 3.0, 4.0], [1.0, 2.0, 3.0],
                                            [0.0, 0.0, 0.0, 1.0]])}), p("ragged.parquet"))
    cases["parquet_ragged"] = BadCase([str(p("ragged.parquet"))],
                                      r"column 'v', row 2: rows have different lengths: row 0 has 4 values, row 2 has 3")
    pq.write_table(pa.table({"v": pa.array([[1.0, 2.0], [3.0, 4.0], None, [0.0, 1.0]])}), p("nullrow.parquet"))
    cases["parquet_null_row"] = BadCase([str(p("nullrow.parquet"))], r"column 'v', row 2: has 1 empty \(null\) row")

    # name clash ---------------------------------------------------------------------------------------------
    (d / "a").mkdir(exist_ok=True)
    (d / "b").mkdir(exist_ok=True)
    np.save(d / "a" / "emb.npy", rng.normal(size=(4, 3)))
    np.save(d / "b" / "emb.npy", rng.normal(size=(4, 3)))
    cases["space_name_clash"] = BadCase([str(d / "a" / "emb.npy"), str(d / "b" / "emb.npy")],
                                        r"a space named 'emb' was already read.*rename")

    # missing file ---------------------------------------------------------------------------------------------
    cases["missing_file"] = BadCase([str(p("does_not_exist.npy"))], r"does_not_exist\.npy: file not found")
    return cases


def markers_executed(cases: dict[str, BadCase]) -> list[str]:
    """Names of the cases whose pickle marker file exists (i.e. whose pickle got executed): must be empty."""
    return [name for name, case in cases.items() if case.marker and os.path.exists(case.marker)]
