"""Loader speed: Platoscope's loaders vs the straightforward readers, in the same run.

    .venv/bin/python bench/bench_io.py [--quick] [--n N] [--d D] [--repeats R]

Prints the median wall time of each and the ratio (reference / ours; > 1 means ours is faster). Ours always does
more work than the reference (sha256 of the file + a full NaN/Inf/zero-variance scan), so ratios < 1 are expected
where the reference only reads; the point is that memory-mapped formats keep ``resident MB`` at 0.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import list_column_to_array, load_dataset  # noqa: E402
from core.validate import validate_array  # noqa: E402


def median_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def row(label, ours, ref, extra=""):
    print(f"{label:<44} ours {ours * 1e3:9.1f} ms   reference {ref * 1e3:9.1f} ms   ratio {ref / ours:6.2f}x  {extra}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (finishes in seconds)")
    ap.add_argument("--n", type=int, default=None)
    ap.add_argument("--d", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=None)
    args = ap.parse_args(argv)
    n = args.n or (20_000 if args.quick else 200_000)
    d = args.d
    repeats = args.repeats or (3 if args.quick else 5)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(n, d)).astype(np.float32)
    print(f"n = {n}, d = {d}, float32 ({x.nbytes / 2**20:.0f} MB), median of {repeats}")

    import pyarrow as pa
    from safetensors.numpy import load_file as st_load, save_file as st_save

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.save(tmp / "x.npy", x)
        np.savez(tmp / "z.npz", x=x)
        st_save({"x": x}, str(tmp / "s.safetensors"))

        def ref_npy():
            arr = np.load(tmp / "x.npy")
            assert np.isfinite(arr).all()
            return arr
        t_ours, ds = median_time(lambda: load_dataset(tmp / "x.npy"), repeats)
        t_ref, _ = median_time(ref_npy, repeats)
        row(".npy  load_dataset vs np.load+isfinite", t_ours, t_ref,
            f"resident MB {ds.resident_nbytes / 2**20:.0f} vs {x.nbytes / 2**20:.0f}")

        def ref_npz():
            arr = np.load(tmp / "z.npz")["x"]
            assert np.isfinite(arr).all()
            return arr
        t_ours, ds = median_time(lambda: load_dataset(tmp / "z.npz"), repeats)
        t_ref, _ = median_time(ref_npz, repeats)
        row(".npz  load_dataset vs np.load[...]+isfinite", t_ours, t_ref,
            f"resident MB {ds.resident_nbytes / 2**20:.0f} vs {x.nbytes / 2**20:.0f}")

        def ref_st():
            arr = st_load(str(tmp / "s.safetensors"))["x"]
            assert np.isfinite(arr).all()
            return arr
        t_ours, ds = median_time(lambda: load_dataset(tmp / "s.safetensors"), repeats)
        t_ref, _ = median_time(ref_st, repeats)
        row(".safetensors  load_dataset vs safetensors", t_ours, t_ref,
            f"resident MB {ds.resident_nbytes / 2**20:.0f} vs {x.nbytes / 2**20:.0f}")

        t_ours, _ = median_time(lambda: validate_array(x), repeats)
        t_ref, _ = median_time(lambda: (np.isfinite(x).all(), (x == x[0]).all()), repeats)
        row("validate_array (chunked) vs whole-array numpy", t_ours, t_ref)

    m = min(n, 20_000 if not args.quick else 5_000)
    flat = pa.array(x[:m].reshape(-1))
    fixed = pa.FixedSizeListArray.from_arrays(flat, d)
    listed = pa.ListArray.from_arrays(pa.array(np.arange(0, m * d + 1, d, dtype=np.int32)), flat)
    for label, col in (("fixed_size_list", fixed), ("list", listed)):
        t_ours, out = median_time(lambda: list_column_to_array(col, "f", "c"), repeats)
        t_ref, ref = median_time(lambda: np.array(col.to_pylist(), dtype=np.float32), repeats)
        assert np.array_equal(out, ref)
        row(f"parquet {label} ({m} rows) vs to_pylist", t_ours, t_ref)


if __name__ == "__main__":
    main()
