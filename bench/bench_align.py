"""Benchmark of pairwise alignment (core.align, core.protocol) against reference implementations.

    .venv/bin/python bench/bench_align.py            # paper-A sizes (a few minutes on 2 CPU cores)
    .venv/bin/python bench/bench_align.py --quick    # shrunk sizes, < 1 minute

Prints medians (seconds) and ratios reference / ours, measured in the same run:

1. local CKA score matrix, Q x Q queries, n_A anchors, width k: our closed form (fit + score) vs the naive
   definition (CKA of the anchors with one pair appended, recomputed from scratch per pair), timed on a subset
   of pairs and extrapolated to all Q^2 pairs;
2. our closed-form CCA vs scikit-learn's iterative CCA (NIPALS) at n = 10,000, p = q = 256, k = 20, with the
   mean plain correlation of the projected columns on held-out rows for both;
3. our CCA alone at n = 30,000, p = q = 512, k = 50;
4. the full paper-A protocol on synthetic data (30,000 anchors, 500 queries, 3 seeds, p = 384, q = 512): the
   four methods at k = 50, plus the curve over 8 values of k; against refitting every (method, k) from the raw
   anchors (the straightforward way; one seed timed, extrapolated to three).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.align import CCA, LocalCKA, PAPER_A_METHODS, PairwiseAligner  # noqa: E402
from core.device import pick_device  # noqa: E402
from core.evaluation import evaluate_scores, split_anchors_queries  # noqa: E402
from core.evaluation.alignment import run_protocol, sweep_k  # noqa: E402


def timed(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def planted(n, p, q, d, noise, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    Z = rng.normal(size=(n, d))
    X = Z @ rng.normal(size=(d, p)) / np.sqrt(d) + noise * rng.normal(size=(n, p))
    Y = Z @ rng.normal(size=(d, q)) / np.sqrt(d) + noise * rng.normal(size=(n, q))
    return X.astype(dtype), Y.astype(dtype)


def naive_linear_cka(X, Y):
    Xc, Yc = X - X.mean(0), Y - Y.mean(0)
    return np.linalg.norm(Xc.T @ Yc) ** 2 / (np.linalg.norm(Xc.T @ Xc) * np.linalg.norm(Yc.T @ Yc))


def bench_local_cka(n_anchors, k, Q, naive_pairs, repeats):
    XA, YA = planted(n_anchors, k, k, k, 1.0, seed=1, dtype=np.float64)
    Xq, Yq = planted(Q, k, k, k, 1.0, seed=2, dtype=np.float64)

    def ours():
        return LocalCKA().fit(XA, YA).score_matrix(Xq, Yq)

    t_ours, S = timed(ours, repeats)
    rng = np.random.default_rng(0)
    pairs = [(int(i), int(j)) for i, j in zip(rng.integers(0, Q, naive_pairs), rng.integers(0, Q, naive_pairs))]
    t0 = time.perf_counter()
    worst = 0.0
    for i, j in pairs:
        ref = naive_linear_cka(np.vstack([XA, Xq[i]]), np.vstack([YA, Yq[j]]))
        worst = max(worst, abs(ref - S[i, j]) / abs(ref))
    per_pair = (time.perf_counter() - t0) / len(pairs)
    t_naive = per_pair * Q * Q
    print(f"[local CKA] {Q}x{Q} queries, {n_anchors} anchors, k={k}")
    print(f"  ours (fit + score, median of {repeats}): {t_ours:.3f} s")
    print(f"  naive: {per_pair * 1e3:.2f} ms/pair on {len(pairs)} pairs -> {t_naive:.0f} s extrapolated "
          f"to {Q * Q} pairs")
    print(f"  ratio naive / ours: {t_naive / t_ours:,.0f}x   (max rel. difference on the subset: {worst:.1e}; "
          f"target < 1 s: {'OK' if t_ours < 1 else 'MISSED'})")


def bench_cca_vs_sklearn(n, p, k, repeats, sk_max_iter):
    from sklearn.cross_decomposition import CCA as SkCCA

    X, Y = planted(n, p, p, 2 * k, 1.0, seed=3, dtype=np.float64)
    n_fit = int(n * 0.8)
    Xa, Ya, Xh, Yh = X[:n_fit], Y[:n_fit], X[n_fit:], Y[n_fit:]
    t_ours, ours = timed(lambda: CCA(k, reg=1e-3).fit(Xa, Ya), repeats)
    t0 = time.perf_counter()
    sk = SkCCA(n_components=k, max_iter=sk_max_iter).fit(Xa, Ya)
    t_sk = time.perf_counter() - t0
    xs, ys = sk.transform(Xh, Yh)
    sk_corr = np.array([np.corrcoef(xs[:, j], ys[:, j])[0, 1] for j in range(k)])
    our_corr = ours.heldout_correlations(Xh, Yh)
    print(f"[CCA vs sklearn] n={n_fit} anchors (+{n - n_fit} held out), p=q={p}, k={k}")
    print(f"  ours (median of {repeats}): {t_ours:.3f} s;  sklearn CCA (NIPALS, max_iter={sk_max_iter}, "
          f"1 run): {t_sk:.2f} s;  ratio sklearn / ours: {t_sk / t_ours:,.0f}x "
          f"(target >= 100x: {'OK' if t_sk / t_ours >= 100 else 'MISSED'})")
    print(f"  mean held-out correlation of the k projected pairs: ours {our_corr.mean():.4f}, "
          f"sklearn {sk_corr.mean():.4f} ({'ours >= sklearn' if our_corr.mean() >= sk_corr.mean() - 1e-4 else 'LOWER'})")


def bench_cca_alone(n, p, k, repeats):
    X, Y = planted(n, p, p, k, 1.0, seed=4)
    t, fit = timed(lambda: CCA(k, reg=1e-3).fit(X, Y), repeats)
    print(f"[CCA alone] n={n}, p=q={p}, k={k}: {t:.3f} s (median of {repeats}); "
          f"top canonical correlation {fit.canonical_correlations_[0]:.3f}")


def bench_protocol(n_anchors, n_queries, p, q, k, k_values, seeds, repeats):
    X, Y = planted(n_anchors + n_queries, p, q, 30, 3.0, seed=5)
    kw = dict(n_anchors=n_anchors, n_queries=n_queries, seeds=seeds)
    t_main, main = timed(lambda: run_protocol(X, Y, methods=PAPER_A_METHODS, k=k, **kw), repeats)
    t_sweep, sweep = timed(lambda: sweep_k(X, Y, k_values=k_values, methods=PAPER_A_METHODS, **kw), repeats)

    # reference: refit every (method, k) from the raw anchors, one seed, extrapolated to all seeds
    def reference_one_seed(seed):
        a, qi = split_anchors_queries(len(X), n_anchors, n_queries, seed)
        Xa, Ya, Xq, Yq = X[a], Y[a], X[qi], Y[qi]
        for method in PAPER_A_METHODS:
            evaluate_scores(PairwiseAligner(method, k=k).fit(Xa, Ya).score_matrix(Xq, Yq), seed=seed)
        for method in ("pca_affine", "cca_affine", "cca_local_cka"):
            for kk in k_values:
                evaluate_scores(PairwiseAligner(method, k=kk).fit(Xa, Ya).score_matrix(Xq, Yq), seed=seed)
        evaluate_scores(PairwiseAligner("local_cka").fit(Xa, Ya).score_matrix(Xq, Yq), seed=seed)

    t0 = time.perf_counter()
    reference_one_seed(seeds[0])
    t_ref = (time.perf_counter() - t0) * len(seeds)
    total = t_main + t_sweep
    print(f"[protocol] {n_anchors} anchors, {n_queries} queries, {len(seeds)} seeds, p={p}, q={q}")
    print(f"  run_protocol (4 methods, k={k}, median of {repeats}): {t_main:.2f} s")
    print(f"  sweep_k ({len(k_values)} values of k, 4 methods, median of {repeats}): {t_sweep:.2f} s")
    print(f"  total {total:.2f} s (target < 60 s: {'OK' if total < 60 else 'MISSED'}); reference (refit every "
          f"method and k from the raw anchors; 1 seed timed x {len(seeds)}): {t_ref:.1f} s; "
          f"ratio reference / ours: {t_ref / total:.1f}x")
    res = main["results"]
    print("  top-1 x->y at k=%d: " % k + ", ".join(f"{m} {res[m]['top1_x_to_y']['mean']:.3f}" for m in res)
          + f" (chance {1 / n_queries:.4f})")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="shrunk sizes (< 1 minute)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    import torch
    print(f"device: {pick_device()}, torch threads: {torch.get_num_threads()}, cpus: {os.cpu_count()}"
          f"{'  (quick sizes)' if args.quick else ''}")
    if args.quick:
        bench_local_cka(n_anchors=5000, k=50, Q=200, naive_pairs=10, repeats=args.repeats)
        bench_cca_vs_sklearn(n=2500, p=64, k=10, repeats=args.repeats, sk_max_iter=500)
        bench_cca_alone(n=5000, p=128, k=20, repeats=args.repeats)
        bench_protocol(n_anchors=3000, n_queries=200, p=96, q=128, k=20, k_values=(4, 8, 16, 20, 32, 48, 64, 96),
                       seeds=(0, 1, 2), repeats=1)
    else:
        bench_local_cka(n_anchors=30000, k=50, Q=500, naive_pairs=40, repeats=args.repeats)
        bench_cca_vs_sklearn(n=12500, p=256, k=20, repeats=args.repeats, sk_max_iter=100)
        bench_cca_alone(n=30000, p=512, k=50, repeats=args.repeats)
        bench_protocol(n_anchors=30000, n_queries=500, p=384, q=512, k=50,
                       k_values=(8, 16, 32, 50, 64, 128, 256, 384), seeds=(0, 1, 2), repeats=1)


if __name__ == "__main__":
    main()
