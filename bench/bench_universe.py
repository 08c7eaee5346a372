"""Benchmark of the universe estimators (core/universe.py) against plain references, in the same run.

* GPA (cross-product form, O(M^2 d^3) per iteration) vs a plain numpy GPA iterating on the n x d arrays
  (same start, same stopping rule, same iterations);
* GPA-ADD (one new rotation) vs refitting GPA on all spaces;
* GCCA (d x d eigenproblems) vs the direct n x n eigen-solution of sum_m X_m (X_m^T X_m + r I)^-1 X_m^T;
* GCPA training time (GPA given), with the epochs it ran.

Prints medians over repeats and ratios. ``--quick`` shrinks the sizes to finish in well under a minute.
Also, when the demo artifact exists, the demo's universe (4 spaces) with every method: M x M mean / worst Hits@1.

    .venv/bin/python bench/bench_universe.py [--quick] [--no-demo]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.universe import GCCA, GCPA, GPA  # noqa: E402


def median_time(fn, repeats):
    times = []
    out = None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def naive_gpa(Xs, max_iter, tol):
    R = [np.eye(Xs[0].shape[1]) for _ in Xs]
    U = sum(Xs) / len(Xs)
    for it in range(max_iter):
        R = []
        for X in Xs:
            A, _, Bt = np.linalg.svd(X.T @ U)
            R.append(A @ Bt)
        U_new = sum(X @ r for X, r in zip(Xs, R)) / len(Xs)
        change = np.linalg.norm(U_new - U) / np.linalg.norm(U)
        U = U_new
        if change < tol:
            break
    return R, U, it + 1


def naive_gcca(Xs, k, r):
    P = sum(X @ np.linalg.solve(X.T @ X + r * np.eye(X.shape[1]), X.T) for X in Xs)
    vals, vecs = np.linalg.eigh(P)
    return vecs[:, ::-1][:, :k]


def planted(n, d, M, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d // 2))
    return {f"s{m}": z @ rng.normal(size=(d // 2, d)) + 0.3 * rng.normal(size=(n, d)) for m in range(M)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-demo", action="store_true")
    args = ap.parse_args(argv)
    n, d, M, reps = (1000, 32, 4, 1) if args.quick else (20000, 96, 5, 3)
    n_gcca = 600 if args.quick else 1500
    sp = planted(n, d, M)
    print(f"sizes: n={n}, d={d}, M={M}; medians of {reps} runs")

    t_gpa, gpa = median_time(lambda: GPA(standardize=False, width="pad").fit(sp), reps)
    Xs = [gpa.preprocess(k, sp[k]) for k in sp]
    # the reference runs exactly the iterations GPA ran (whatever rule stopped it), so both do the same work
    t_ref, (R, U, it_ref) = median_time(lambda: naive_gpa(Xs, gpa.n_iter_, 0.0), reps)
    err = max(np.abs(gpa.R_[k] - r).max() for k, r in zip(sp, R))
    print(f"GPA        {t_gpa * 1e3:9.1f} ms ({gpa.n_iter_} it)   numpy reference {t_ref * 1e3:9.1f} ms ({it_ref} it)"
          f"   ratio {t_ref / t_gpa:6.2f}x   max |R diff| {err:.1e}")

    base = {k: sp[k] for k in list(sp)[:-1]}
    new = list(sp)[-1]
    fitted = GPA(standardize=False, width="pad").fit(base)

    def add():
        import copy
        return copy.deepcopy(fitted).add_space(new, sp[new])

    t_add, _ = median_time(add, reps)
    t_refit, _ = median_time(lambda: GPA(standardize=False, width="pad").fit(sp), reps)
    print(f"GPA-ADD    {t_add * 1e3:9.1f} ms   refit {t_refit * 1e3:9.1f} ms   ratio {t_refit / t_add:6.1f}x")

    sp_small = {k: v[:n_gcca] for k, v in sp.items()}
    t_gcca, g = median_time(lambda: GCCA(n_components=d // 2, reg=10.0).fit(sp_small), reps)
    Xs = [g.preprocess(k, sp_small[k]) for k in sp_small]
    t_dir, G = median_time(lambda: naive_gcca(Xs, d // 2, 10.0), reps)
    diff = np.abs(g.G_ @ g.G_.T - G @ G.T).max()
    print(f"GCCA       {t_gcca * 1e3:9.1f} ms   direct n x n eigen (n={n_gcca}) {t_dir * 1e3:9.1f} ms   "
          f"ratio {t_dir / t_gcca:6.1f}x   max |GG^T diff| {diff:.1e}")

    epochs = 10 if args.quick else 100
    t_gcpa, model = median_time(lambda: GCPA(max_epochs=epochs, patience=epochs).fit(sp, gpa=gpa), 1)
    print(f"GCPA       {t_gcpa:9.2f} s for {model.stopped_epoch_} epochs ({t_gcpa / max(model.stopped_epoch_, 1) * 1e3:.1f}"
          f" ms/epoch, {M} x {int(n * 0.9)} rows per epoch, device {model.device_})")

    if args.no_demo:
        return
    try:
        from core.demo import load_demo
        ds = load_demo()
    except Exception as exc:  # noqa: BLE001
        print(f"demo: skipped ({exc})")
        return
    from core.evaluation.universe import evaluate_universe

    names = ["minilm", "descriptor_3d", "pointnet", "minilm_layer3"]
    spaces = {k: ds[k].vectors() for k in names}
    t0 = time.perf_counter()
    methods = ("pw", "gpa", "gcca") if args.quick else ("pw", "gpa", "gcca", "gcpa")
    res = evaluate_universe(spaces, methods, labels=ds.items["label"].to_numpy(),
                            add=None if args.quick else "minilm_layer3")
    print(f"demo ({', '.join(res['spaces'])}; {res['n_train']} train / {res['n_test']} test items), "
          f"total {time.perf_counter() - t0:.1f} s:")
    for m, r in res["methods"].items():
        s = r["retrieval"]["summary"]["top1"]
        print(f"  {m:5s} fit {r['fit_seconds']:7.2f} s   Hits@1 mean {s['mean']:.3f}  worst {s['worst']:.3f} "
              f"({' -> '.join(s['worst_pair'])})   cycle {r['cycle']['mean']:.2e}   ARI {r['clustering']['mean_ari']:.3f}")
    if res["add"]:
        a = res["add"]
        print(f"  GPA-ADD of {a['space']}: {a['add_seconds'] * 1e3:.1f} ms vs refit {a['refit_seconds'] * 1e3:.1f} ms "
              f"({a['speedup']:.0f}x); Hits@1 of new pairs {a['new_pairs']['add']:.3f} vs {a['new_pairs']['refit']:.3f}")


if __name__ == "__main__":
    main()
