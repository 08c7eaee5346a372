"""Benchmark: streamed linear CKA (core.similarity.linear_cka) vs the n x n Gram form most public code uses.

Part 1 - n = 10,000 and 20,000, d = 768: median wall time over repeats of
  * the reference Gram form: K = X X^T, L = Y Y^T (float64, same device), double-centred, HSIC ratio
    (what Kornblith et al.'s notebook and most public code do; O(n^2 d) time, O(n^2) memory);
  * core.similarity.linear_cka, feature form streamed over row chunks (O(n d^2) time, O(d^2) memory),
    with float64 products (default) and with float32 products;
  and the ratio, after checking that the values agree.
Part 2 - n = 1,000,000 x 768 float32 spaces written chunk by chunk to np.memmap files in a temp dir
  (about 3 GB each), then CKA streamed from them in a fresh process: wall time, peak RSS (getrusage) and
  peak traced Python/numpy allocations (tracemalloc). The Gram form would need n^2 * 8 bytes = 8 TB per
  kernel matrix at this n.

Part 3 - ``--matrix [DIR]``: the M x M linear CKA matrix (core.similarity.similarity_matrix) of the study's four
  spaces (31,000 float32 rows, widths 1,280 / 768 / 512 / 384; bench_app's ``make_study`` in DIR), interleaved
  repeats: one pass over the rows for every pair at once (the default since issue 13) against the pair-by-pair
  path (each space's moments, then each pair's cross products, every space read once per pair), with the
  hardware floor beside them: one syrk of the four spaces side by side, already in memory as float64.

Run: .venv/bin/python bench/bench_cka.py [--quick] [--matrix [DIR]]   (--quick shrinks every size; < 1 min)
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from core.device import float64_device, pick_device  # noqa: E402
from core.similarity import linear_cka  # noqa: E402


def gram_cka_reference(X: np.ndarray, Y: np.ndarray, device) -> float:
    """The n x n Gram form: HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), K = X X^T double-centred."""
    def centred_gram(Z):
        Zt = torch.from_numpy(np.asarray(Z)).to(device=device, dtype=torch.float64)
        K = Zt @ Zt.T
        K -= K.mean(0, keepdim=True)
        K -= K.mean(1, keepdim=True)
        return K

    K = centred_gram(X)
    L = centred_gram(Y)
    kl = torch.dot(K.view(-1), L.view(-1))
    kk = torch.dot(K.view(-1), K.view(-1))
    ll = torch.dot(L.view(-1), L.view(-1))
    return float(kl / torch.sqrt(kk * ll))


def make_pair(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d), dtype=np.float32) + rng.normal(0, 3, size=d).astype(np.float32)
    W = (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    Y = np.tanh(X @ W) + 0.5 * rng.standard_normal((n, d), dtype=np.float32)
    return X, Y.astype(np.float32)


def timed(fn, repeats: int) -> tuple[float, object]:
    times, value = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        value = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def part1(sizes, d, repeats, device) -> None:
    print(f"\n== Part 1: streamed feature form vs n x n Gram form, d = {d}, median of {repeats} runs")
    print(f"{'n':>8} {'gram s':>9} {'stream f64 s':>13} {'stream f32 s':>13} {'ratio f64':>10} {'ratio f32':>10}"
          f" {'|diff| f64':>11} {'|diff| f32':>11}")
    for n in sizes:
        X, Y = make_pair(n, d, seed=n)
        t_gram, v_gram = timed(lambda: gram_cka_reference(X, Y, device), repeats)
        t64, v64 = timed(lambda: linear_cka(X, Y, method="features", device=device), repeats)
        t32, v32 = timed(lambda: linear_cka(X, Y, method="features", device=device, dtype="float32"), repeats)
        assert abs(v64 - v_gram) < 1e-9, (v64, v_gram)
        assert abs(v32 - v_gram) < 1e-5, (v32, v_gram)
        print(f"{n:>8} {t_gram:>9.3f} {t64:>13.3f} {t32:>13.3f} {t_gram / t64:>9.1f}x {t_gram / t32:>9.1f}x"
              f" {abs(v64 - v_gram):>11.1e} {abs(v32 - v_gram):>11.1e}")
        print(f"{'':>8} CKA = {v_gram:.10f}; Gram form held 2 x n^2 x 8 B = {2 * n * n * 8 / 1e9:.2f} GB of kernels")
        del X, Y


def write_memmaps(folder: Path, n: int, d: int, chunk: int = 65536) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    offset = rng.normal(0, 3, size=d).astype(np.float32)
    W = (rng.standard_normal((d, d), dtype=np.float32) / np.sqrt(d)).astype(np.float32)
    px, py = folder / "x.f32", folder / "y.f32"
    mx = np.memmap(px, dtype=np.float32, mode="w+", shape=(n, d))
    my = np.memmap(py, dtype=np.float32, mode="w+", shape=(n, d))
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        x = rng.standard_normal((b - a, d), dtype=np.float32) + offset
        mx[a:b] = x
        my[a:b] = np.tanh(x @ W) + 0.5 * rng.standard_normal((b - a, d), dtype=np.float32)
    mx.flush()
    my.flush()
    del mx, my
    return px, py


def child(px: str, py: str, n: int, d: int, device: str) -> None:
    """Runs in a fresh process: stream CKA from the memmaps, report time and memory as JSON."""
    import tracemalloc
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    X = np.memmap(px, dtype=np.float32, mode="r", shape=(n, d))
    Y = np.memmap(py, dtype=np.float32, mode="r", shape=(n, d))
    vm_before = _proc_status("VmRSS")
    reset = _reset_peak_rss()
    tracemalloc.start()
    t0 = time.perf_counter()
    value = linear_cka(X, Y, method="features", device=device)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    gpu_peak = torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None
    print(json.dumps({"value": value, "seconds": seconds, "peak_rss_kb": rss, "rss_before_kb": rss0,
                      "vm_rss_before_kb": vm_before, "vm_hwm_kb": _proc_status("VmHWM") if reset else None,
                      "traced_peak_bytes": traced_peak, "gpu_peak_bytes": gpu_peak}))


def _proc_status(key: str) -> int | None:
    """A kB field of /proc/self/status (Linux), else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) so it measures the streaming alone (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def part2(n: int, d: int, device) -> None:
    print(f"\n== Part 2: n = {n:,} x {d} float32 memmaps ({n * d * 4 / 1e9:.2f} GB each), streamed")
    with tempfile.TemporaryDirectory(prefix="bench_cka_") as tmp:
        t0 = time.perf_counter()
        px, py = write_memmaps(Path(tmp), n, d)
        print(f"wrote two memmap files in {time.perf_counter() - t0:.1f} s")
        out = subprocess.run([sys.executable, __file__, "--child", str(px), str(py), str(n), str(d), str(device)],
                             check=True, capture_output=True, text=True)
        res = json.loads(out.stdout.strip().splitlines()[-1])
    mb = 1024.0
    print(f"linear CKA = {res['value']:.10f} in {res['seconds']:.1f} s "
          f"({n / res['seconds']:,.0f} rows/s, device {device})")
    if res["vm_hwm_kb"] is not None:
        print(f"peak RSS while streaming: {res['vm_hwm_kb'] / mb:.0f} MB (VmHWM, reset just before the call; "
              f"RSS before the call {res['vm_rss_before_kb'] / mb:.0f} MB, i.e. "
              f"+{(res['vm_hwm_kb'] - res['vm_rss_before_kb']) / mb:.0f} MB for the streaming)")
    print(f"getrusage ru_maxrss of the streaming process: {res['peak_rss_kb'] / mb:.0f} MB (before the call: "
          f"{res['rss_before_kb'] / mb:.0f} MB; Linux carries the parent's peak across fork/exec, so this "
          f"includes the parent's Gram phase / file writing, not the streaming)")
    print(f"peak traced numpy/Python allocations during the call (tracemalloc): {res['traced_peak_bytes'] / 1e6:.0f} MB")
    if res["gpu_peak_bytes"] is not None:
        print(f"peak GPU memory: {res['gpu_peak_bytes'] / 1e6:.0f} MB")
    print(f"the n x n Gram form would need n^2 x 8 B = {n * n * 8 / 1e12:.1f} TB per kernel matrix")


def part3(folder: Path, repeats: int) -> None:
    import core.similarity.matrix as matrix
    from core.numerics import gram

    names = ["text_1280", "image_768", "shape_512", "audio_384"]
    if not all((folder / f"{n}.npy").exists() for n in names):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_app import make_study
        make_study(folder, 31000)
    spaces = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}
    full = torch.as_tensor(np.concatenate([np.asarray(spaces[n], dtype=np.float64) for n in names], axis=1))
    limit = matrix.ONE_PASS_MAX_WIDTH
    times: dict = {"one pass": [], "pair by pair": [], "floor": []}
    values = {}
    try:
        for _ in range(repeats):
            for name, width in (("one pass", limit), ("pair by pair", 0)):
                matrix.ONE_PASS_MAX_WIDTH = width
                t0 = time.perf_counter()
                values[name] = matrix.similarity_matrix(spaces, "linear_cka")["values"]
                times[name].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            gram(full - full.mean(0))
            times["floor"].append(time.perf_counter() - t0)
    finally:
        matrix.ONE_PASS_MAX_WIDTH = limit
    gap = max(abs(a - b) for ra, rb in zip(values["one pass"], values["pair by pair"]) for a, b in zip(ra, rb))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"linear CKA matrix, 4 spaces x 31,000 rows, {repeats} interleaved repeats, load "
          f"{os.getloadavg()[0]:.1f}: one pass median {med['one pass']:.2f} s, pair by pair "
          f"{med['pair by pair']:.2f} s ({med['pair by pair'] / med['one pass']:.2f}x), floor (one in-memory "
          f"syrk) {med['floor']:.2f} s (one pass at {med['one pass'] / med['floor']:.2f}x the floor); "
          f"largest difference of a cell {gap:.1e}")


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        px, py, n, d, device = sys.argv[2:7]
        child(px, py, int(n), int(d), device)
        return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 minute)")
    ap.add_argument("--repeats", type=int, default=None)
    ap.add_argument("--matrix", nargs="?", const="/tmp/study/server/study", default=None,
                    help="part 3 only: the study's CKA matrix (default folder: bench_app's server dataset)")
    args = ap.parse_args()
    device = float64_device(pick_device())
    print(f"device: {device}; torch {torch.__version__}; CPU threads: {torch.get_num_threads()}")
    if args.matrix is not None:
        part3(Path(args.matrix), args.repeats or 3)
        return
    if args.quick:
        part1([2000, 4000], 256, args.repeats or 3, device)
        part2(200_000, 256, device)
    else:
        part1([10_000, 20_000], 768, args.repeats or 3, device)
        part2(1_000_000, 768, device)


if __name__ == "__main__":
    main()
