"""Benchmark of the universe estimators (core/universe.py) against plain references, in the same run.

* GPA (cross-product form, O(M^2 d^3) per iteration) vs a plain numpy GPA iterating on the n x d arrays
  (same start, same stopping rule, same iterations);
* GPA-ADD (one new rotation) vs refitting GPA on all spaces;
* GCCA (d x d eigenproblems) vs the direct n x n eigen-solution of sum_m X_m (X_m^T X_m + r I)^-1 X_m^T;
* GCPA training time (GPA given), with the epochs it ran.

Prints medians over repeats and ratios. ``--quick`` shrinks the sizes to finish in well under a minute.
Also, when the demo artifact exists, the demo's universe (4 spaces) with every method: M x M mean / worst Hits@1.

``--study [DIR]`` (issue 13: the Universe view's PW / GPA / GCCA at study scale) instead times, in one run:

* dense LAPACK at the study's sizes (GPA's four 384 x 384 polar factors of an iteration, from the study's own
  cross-products; the 1,280-wide PCA
  eigh, GCCA's 24,800 x 384 QR): :func:`core.numerics.single_threaded` (one thread per call, side by side)
  against the same ``torch.linalg`` call on the caller's threads (the path before issue 13);
* the Gram matrix of the PCA step (24,800 x 512 and x 1,280): :func:`core.numerics.gram` (numpy's syrk) against
  torch's GEMMs on 512-column blocks (the path before) and the plain GEMM;
* exact cosine ranks of 6,200 held-out items (``cosine_true_ranks``) against the float32 GEMM they cannot avoid;
* ``UniverseStudy`` on the study (31,000 items; widths 1,280, 768, 512, 384; made with bench_app's
  ``make_study`` when DIR has no such files): wall and CPU seconds of prepare, then fit and evaluation of PW,
  GPA and GCCA (the work the Universe view shows first), and the GEMM floor of the evaluation.

    .venv/bin/python bench/bench_universe.py [--quick] [--no-demo] [--study [DIR]]
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

import core  # noqa: E402,F401 - first, as in the app and the CLI (its OpenMP wait policy precedes torch)
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


def _ms(v):
    return f"median {statistics.median(v) * 1e3:7.1f} ms, max {max(v) * 1e3:7.1f} ms"


def _interleaved(fns: dict, repeats: int) -> dict:
    """Each callable ``repeats`` times, interleaved (so that both see the same load); name -> list of seconds."""
    times = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[k].append(time.perf_counter() - t0)
    return times


def study_scale(folder: Path, repeats: int) -> None:
    import torch

    from core.evaluation.metrics import cosine_true_ranks
    from core.evaluation.universe import UniverseStudy
    from core.numerics import polar_factors, single_threaded

    print(f"torch threads {torch.get_num_threads()}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    rng = np.random.default_rng(0)

    def old_polar(M):
        A, _, Bh = torch.linalg.svd(M, full_matrices=False)
        return A @ Bh

    Q, d = 6200, 384
    z = rng.normal(size=(Q, 48))
    A = z @ rng.normal(size=(48, d)) + 0.8 * rng.normal(size=(Q, d))
    B = A + rng.normal(size=(Q, d))
    A32 = torch.nn.functional.normalize(torch.as_tensor(A, dtype=torch.float32), dim=1)
    B32 = torch.nn.functional.normalize(torch.as_tensor(B, dtype=torch.float32), dim=1)
    t = _interleaved({"ranks": lambda: cosine_true_ranks(A, B),
                      "gemm": lambda: [A32[s:s + 2048] @ B32.T for s in range(0, Q, 2048)]}, repeats)
    print(f"exact cosine ranks, both directions, {Q} x {d}: {_ms(t['ranks'])}; float32 GEMM floor {_ms(t['gemm'])}; "
          f"ratio {statistics.median(t['ranks']) / statistics.median(t['gemm']):5.2f}x the floor")

    names = ["audio_384", "image_768", "shape_512", "text_1280"]
    if not all((folder / f"{n}.npy").exists() for n in names):
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from bench_app import make_study
        print(f"making the study in {folder} ...")
        make_study(folder, 31000)
    spaces = {n: np.load(folder / f"{n}.npy", mmap_mode="r") for n in names}
    study = UniverseStudy(spaces)
    rows = []

    def stage(name, fn):
        w, c = time.perf_counter(), time.process_time()
        out = fn()
        rows.append((name, time.perf_counter() - w, time.process_time() - c))
        return out

    stage("prepare", study.prepare)
    E32 = x = None

    def gemm_floor():
        """The products one evaluation cannot avoid: a Q x Q float32 score matrix per pair, the cycles'
        Q x d times d x 6d float32 products from each space (float64 before session 9)."""
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                [E32[a][s:s + 2048] @ E32[b].T for s in range(0, Q, 2048)]
        for _ in names:
            x @ D

    floors = []
    for m in ("pw", "gpa", "gcca"):
        stage(f"{m} fit", lambda: study.model(m))
        stage(f"{m} eval", lambda: study.evaluate(m, map_items=300))
        if E32 is None:
            Zt = study.test_preprocessed_
            Q = int(next(iter(Zt.values())).shape[0])
            E32 = {k: torch.nn.functional.normalize(v.float(), dim=1) for k, v in Zt.items()}
            x = next(iter(Zt.values())).float()
            D = torch.randn(d, 6 * d, dtype=torch.float32)
        w = time.perf_counter()
        gemm_floor()                                     # right after the evaluation: about the same load
        floors.append(time.perf_counter() - w)
    # GPA's first iteration: V_m = X_m^T U = (1/M) sum_k C_mk, the matrices its polar factors come from
    C = study.prepared_.cross_products()
    dd = C.shape[0] // len(names)
    Ms = [sum(C[i * dd:(i + 1) * dd, k * dd:(k + 1) * dd] for k in range(len(names))) / len(names)
          for i in range(len(names))]
    X = torch.as_tensor(rng.normal(size=(4000, 1280)))
    S1280 = X.T @ X
    G = torch.as_tensor(rng.normal(size=(24800, 384)))
    print("dense LAPACK: caller's threads (before) vs core.numerics.single_threaded (one thread per call, side by side)")
    cases = {"4 polar factors 384 x 384 (one GPA iteration)": (lambda: [old_polar(M) for M in Ms],
                                                              lambda: polar_factors(Ms)),
             "eigh 1280 x 1280 (PCA of the widest space)": (lambda: torch.linalg.eigh(S1280),
                                                            lambda: single_threaded(torch.linalg.eigh, [(S1280,)])),
             "QR 24800 x 384 (GCCA)": (lambda: torch.linalg.qr(G), lambda: single_threaded(torch.linalg.qr, [(G,)]))}
    for name, (before, after) in cases.items():
        t = _interleaved({"before": before, "after": after}, repeats)
        print(f"  {name:48s} before {_ms(t['before'])}   after {_ms(t['after'])}   "
              f"ratio of medians {statistics.median(t['before']) / statistics.median(t['after']):5.2f}x")
    from core.numerics import gram, gram_blocks

    print("Gram: X^T X of the PCA step, float64; torch's GEMM on 512-column blocks (the path before) vs "
          "core.numerics.gram (numpy's syrk on the CPU); the plain GEMM X.T @ X beside them")
    for p in (512, 1280):
        X = torch.as_tensor(rng.normal(size=(24800, p)))
        t = _interleaved({"blocks": lambda: gram_blocks([X[:, a:a + 512] for a in range(0, p, 512)]) if p > 512
                          else X.T @ X, "syrk": lambda: gram(X), "gemm": lambda: X.T @ X}, repeats)
        print(f"  24800 x {p:4d}: blocks {_ms(t['blocks'])}   syrk {_ms(t['syrk'])}   gemm {_ms(t['gemm'])}   "
              f"blocks / syrk {statistics.median(t['blocks']) / statistics.median(t['syrk']):5.2f}x")

    print(f"UniverseStudy on {folder} ({study.n_items} items; {len(study.train_rows_)} train, {Q} test):")
    for name, wall, cpu in rows:
        print(f"  {name:10s} wall {wall:6.2f} s   cpu {cpu:6.2f} s")
    total = sum(r[1] for r in rows)
    evals = [r[1] for r in rows if r[0].endswith("eval")]
    print(f"  PW + GPA + GCCA: wall {total:.2f} s, cpu {sum(r[2] for r in rows):.2f} s")
    print("  each evaluation against its GEMM floor (6 float32 score matrices + the cycles' float32 products, timed "
          "right after it): " + ", ".join(f"{m} {e:.2f} s / {f:.2f} s = {e / f:.2f}x"
                                          for m, e, f in zip(("pw", "gpa", "gcca"), evals, floors)))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--no-demo", action="store_true")
    ap.add_argument("--study", nargs="?", const="/tmp/study/server/study", default=None,
                    help="the study-scale section only (default folder: bench_app's server dataset)")
    args = ap.parse_args(argv)
    if args.study is not None:
        study_scale(Path(args.study), 3 if args.quick else 7)
        return
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
