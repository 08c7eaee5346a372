"""Benchmark: exact Chamfer distance matrix (chunked torch GEMM blocks) against a per-pair KD-tree reference
(scipy cKDTree, two queries per pair) on the same clouds; and the cost of the default 300 x 256 sample.

    .venv/bin/python bench/bench_geometry.py [--quick]

Prints medians over repeats and the speed-up ratio, and the max relative difference to the reference.
"""
import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.device import pick_device  # noqa: E402
from core.geometry import chamfer_matrix, subsample_clouds  # noqa: E402


def kdtree_matrix(clouds):
    n = len(clouds)
    trees = [cKDTree(c) for c in clouds]
    D = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            a = trees[j].query(clouds[i])[0]
            b = trees[i].query(clouds[j])[0]
            D[i, j] = D[j, i] = np.mean(a ** 2) + np.mean(b ** 2)
    return D


def timed(fn, repeats):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def clouds_for(n, points, seed=0):
    try:
        from core.demo import demo_point_clouds
        base = demo_point_clouds()[:n]
    except Exception:   # no demo: random clouds on spheres
        rng = np.random.default_rng(seed)
        base = rng.normal(size=(n, 1024, 3))
        base /= np.linalg.norm(base, axis=2, keepdims=True)
    return subsample_clouds(base, points, seed=seed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    args = ap.parse_args()
    sizes = [(40, 128)] if args.quick else [(60, 256), (120, 256)]
    repeats = 2 if args.quick else 3
    print(f"device: {pick_device()}")
    for n, points in sizes:
        C = clouds_for(n, points)
        t_ref, ref = timed(lambda: kdtree_matrix(C), 1 if not args.quick else repeats)
        t_ours, ours = timed(lambda: chamfer_matrix(C), repeats)
        err = float(np.max(np.abs(ours - ref) / np.maximum(ref, 1e-12) * (ref > 0)))
        pairs = n * (n - 1) // 2
        print(f"n={n:4d} points={points}: chunked torch {t_ours:.3f} s | KD-tree per pair {t_ref:.3f} s | "
              f"ratio {t_ref / t_ours:.1f}x | {pairs / t_ours:,.0f} pairs/s | max rel diff {err:.2e}")
    if not args.quick:
        C = clouds_for(300, 256)
        t, _ = timed(lambda: chamfer_matrix(C), 1)
        print(f"default sample (300 items x 256 points, 44,850 pairs): {t:.1f} s once (then cached)")


if __name__ == "__main__":
    main()
