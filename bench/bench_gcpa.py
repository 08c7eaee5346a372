"""Benchmark of one GCPA training epoch (core/universe.py) against its GEMM floor, in the same run.

One epoch of ``schedule="epochs"`` is every space's training rows once, in batches of 4,096, plus the held-out
check. Its unavoidable work is the corrector's matrix products: per training row 9 GEMMs (3 forward, 6 backward:
``d x 2d``, ``2d x d`` and ``d x d``; 30 d^2 flops), per held-out row the 3 forward ones (10 d^2 flops). The
floor is those GEMMs alone, with the epoch's exact shapes, timed here in the same dtype and thread count
(the hardware floor; everything else in the step, LayerNorm, GELU, the gate, the normalisations, the loss,
clipping and AdamW, is overhead above it). Printed per (threads, precision): median epoch seconds over
``--epochs`` epochs and ``--rounds`` fits, the floor (median), their ratio and the achieved GFLOP/s.

Default sizes are the study's (4 spaces, 24,800 training rows, d = 384, so 22,320 trained + 2,480 held out per
space); ``--quick`` shrinks them. The spaces are planted (a shared signal plus noise), the GPA is given.

    .venv/bin/python bench/bench_gcpa.py [--quick] [--threads 1,2] [--epochs 3] [--rounds 3]
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.device import has_fast_bfloat16  # noqa: E402
from core.universe import GCPA, GPA  # noqa: E402


def planted(n, d, M, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d // 2)).astype(np.float32)
    return {f"s{m}": z @ rng.normal(size=(d // 2, d)).astype(np.float32)
            + 0.3 * rng.normal(size=(n, d)).astype(np.float32) for m in range(M)}


def epoch_gemms(M, n_train, n_val, d, batch):
    """(m, k, n) of every GEMM of one epoch: 9 per training batch, 3 for the held-out check."""
    h = 2 * d
    sizes = [min(batch, n_train - s) for s in range(0, n_train, batch)] * M
    out = []
    for B in sizes:
        out += [(B, d, h), (B, h, d), (B, d, d),                                       # forward
                (d, B, h), (B, d, h), (h, B, d), (B, h, d), (d, B, d), (B, d, d)]      # backward
    V = M * n_val
    out += [(V, d, h), (V, h, d), (V, d, d)]
    return out


def gemm_floor(shapes, dtype, repeats):
    """Median seconds of the GEMMs of ``shapes`` (distinct shapes timed once each, counted as often as they occur)."""
    from collections import Counter

    count = Counter(shapes)
    mats = {s: (torch.randn(s[0], s[1]).to(dtype), torch.randn(s[1], s[2]).to(dtype)) for s in count}
    for a, b in mats.values():
        a @ b
    times = []
    for _ in range(repeats):
        total = 0.0
        for s, (a, b) in mats.items():
            t0 = time.perf_counter()
            a @ b
            total += (time.perf_counter() - t0) * count[s]
        times.append(total)
    return statistics.median(times)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    n, d, M = (4000, 128, 4) if args.quick else (24800, 384, 4)
    batch = 4096
    sp = planted(n, d, M)
    gpa = GPA(standardize=False, width="pad", max_iter=3).fit(sp)
    n_val = max(1, int(round(0.1 * n)))
    n_train = n - n_val
    shapes = epoch_gemms(M, n_train, n_val, d, batch)
    flops = sum(2 * a * b * c for a, b, c in shapes)
    precisions = ["float32"] + (["bfloat16"] if has_fast_bfloat16("cpu") else [])
    print(f"sizes: M={M} spaces, {n_train} trained + {n_val} held-out rows each, d={d}, batch {batch}; "
          f"{flops / 1e9:.0f} GFLOP of GEMMs per epoch; {args.epochs} epochs x {args.rounds} fits per setting; "
          f"native bfloat16: {has_fast_bfloat16('cpu')}")
    results = {}
    for rnd in range(args.rounds):            # rounds interleave the settings: load changes hit all of them
        for threads in [int(t) for t in args.threads.split(",")]:
            torch.set_num_threads(threads)
            for prec in precisions:
                est = GCPA(max_epochs=args.epochs, patience=args.epochs + 1, precision=prec, device="cpu",
                           batch_size=batch).fit(sp, gpa=gpa)
                secs = [b["seconds"] - a["seconds"] for a, b in zip(est.history_, est.history_[1:])]
                floor = gemm_floor(shapes, torch.float32 if prec == "float32" else torch.bfloat16, 3)
                r = results.setdefault((threads, prec), {"epoch": [], "floor": []})
                r["epoch"] += secs
                r["floor"].append(floor)
    print(f"{'threads':>7s} {'precision':>9s} {'epoch s':>9s} {'GEMM floor s':>12s} {'ratio':>6s} "
          f"{'GFLOP/s':>8s} {'floor GFLOP/s':>13s}")
    base = {}
    for (threads, prec), r in results.items():
        e, f = statistics.median(r["epoch"]), statistics.median(r["floor"])
        base.setdefault(threads, e)
        print(f"{threads:7d} {prec:>9s} {e:9.3f} {f:12.3f} {e / f:6.2f} {flops / e / 1e9:8.1f} {flops / f / 1e9:13.1f}"
              + (f"   float32 / bfloat16 epoch: {base[threads] / e:.2f}x" if prec != "float32" else ""))


if __name__ == "__main__":
    main()
