"""Benchmark of the weighted point-set similarity (core.pointset, paper B).

    .venv/bin/python bench/bench_pointset.py            # full sizes (a few minutes on 2 CPU cores)
    .venv/bin/python bench/bench_pointset.py --quick    # shrunk sizes, < 1 minute

Prints, measured in the same run:

1. RFF approximation error of the kernel itself at D = 256, 1024, 4096 (Gaussian sigma = 0.5 and IMQ c = 0.5, points
   on the unit sphere in 64 dims - half of the pairs close, half unrelated): RMS and max absolute error against the
   exact kernel, median over 5 seeds, with the ratio to D = 4096 (1/sqrt(D) predicts 4 and 2);
2. the same for the point-set similarity of token sets (exact double sum vs features);
3. time of the Q x Q point-set similarity: feature space (features of both sides + one matrix product, D = 1024)
   vs the exact double sum over points (the reference), medians and the ratio.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
from scipy.spatial.distance import cdist

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.device import pick_device  # noqa: E402
from core.pointset import RandomFourierFeatures, exact_pointset_similarity, pointset_features  # noqa: E402


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def exact_kernel(U, V, kernel, sigma=0.5, c=0.5):
    d2 = cdist(U, V, "sqeuclidean")
    return np.exp(-d2 / (2 * sigma ** 2)) if kernel == "gauss" else c / np.sqrt(c ** 2 + d2)


def token_sets(n, T, d, seed):
    rng = np.random.default_rng(seed)
    centre = rng.normal(size=(n, 1, d))
    return (centre + 0.7 * rng.normal(size=(n, T, d))).astype(np.float32)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="shrunk sizes (< 1 minute)")
    args = ap.parse_args(argv)
    Ds = (256, 1024, 4096)
    n_pts = 200 if args.quick else 500
    n_seeds = 3 if args.quick else 5
    print(f"device: {pick_device()}; {'quick' if args.quick else 'full'} sizes")

    # 1. kernel approximation
    rng = np.random.default_rng(0)
    d = 64
    U = unit(rng.normal(size=(n_pts, d)))
    V = np.vstack([unit(U[: n_pts // 2] + 0.15 * rng.normal(size=(n_pts // 2, d))),
                   unit(rng.normal(size=(n_pts - n_pts // 2, d)))])
    print(f"\n1. kernel: RFF vs exact on {n_pts} x {n_pts} pairs of unit vectors in {d} dims "
          f"(median over {n_seeds} seeds)")
    print(f"{'kernel':7s} {'D':>5s} {'RMS error':>10s} {'max |error|':>12s} {'RMS / RMS(4096)':>16s} "
          f"{'sqrt(1.5/D)':>12s}")
    for kernel in ("gauss", "imq"):
        K = exact_kernel(U, V, kernel)
        rows = {}
        for D in Ds:
            rms, mx = [], []
            for seed in range(n_seeds):
                rff = RandomFourierFeatures(D, kernel, random_state=seed).fit(dim=d)
                err = rff.transform(U) @ rff.transform(V).T - K
                rms.append(float(np.sqrt(np.mean(err ** 2))))
                mx.append(float(np.abs(err).max()))
            rows[D] = (statistics.median(rms), statistics.median(mx))
        for D in Ds:
            print(f"{kernel:7s} {D:5d} {rows[D][0]:10.4f} {rows[D][1]:12.4f} {rows[D][0] / rows[4096][0]:16.2f} "
                  f"{np.sqrt(1.5 / D):12.4f}")

    # 2. set similarity approximation
    n_items, T, dt = (40, 16, 32) if args.quick else (100, 32, 64)
    A, B = token_sets(n_items, T, dt, 1), token_sets(n_items, T, dt, 2)
    print(f"\n2. point-set similarity: RFF features vs exact double sum, {n_items} x {n_items} items, "
          f"{T} tokens of {dt} dims (median over {n_seeds} seeds)")
    print(f"{'kernel':7s} {'D':>5s} {'max |error|':>12s} {'rel. Frobenius':>15s}")
    for kernel in ("gauss", "imq"):
        exact = exact_pointset_similarity(A, B, kernel=kernel)
        for D in Ds:
            mx, rel = [], []
            for seed in range(n_seeds):
                rff = RandomFourierFeatures(D, kernel, random_state=seed).fit(dim=dt)
                S = pointset_features(A, kernel=kernel, rff=rff) @ pointset_features(B, kernel=kernel, rff=rff).T
                mx.append(float(np.abs(S - exact).max()))
                rel.append(float(np.linalg.norm(S - exact) / np.linalg.norm(exact)))
            print(f"{kernel:7s} {D:5d} {statistics.median(mx):12.5f} {statistics.median(rel):15.5f}")

    # 3. timing
    Q, T3, d3 = (100, 32, 64) if args.quick else (300, 64, 128)
    A, B = token_sets(Q, T3, d3, 3), token_sets(Q, T3, d3, 4)
    rff = RandomFourierFeatures(1024, "gauss", random_state=0).fit(dim=d3)
    repeats = 3
    t_feat, S_feat = timed(lambda: pointset_features(A, rff=rff) @ pointset_features(B, rff=rff).T, repeats)
    t_exact, S_exact = timed(lambda: exact_pointset_similarity(A, B, kernel="gauss"), repeats)
    print(f"\n3. time of the {Q} x {Q} similarity, {T3} tokens of {d3} dims (median of {repeats}):")
    print(f"   feature space (D = 1024): {t_feat:.3f} s; exact double sum (reference): {t_exact:.3f} s; "
          f"ratio exact / features = {t_exact / t_feat:.1f}x")
    print(f"   max |difference| = {np.abs(S_feat - S_exact).max():.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
