"""Benchmark of one GCPA training epoch (core/universe.py): the hand-written step against the old autograd step
and against the GEMM floors, in the same run.

One epoch of ``schedule="epochs"`` is every space's training rows once, in batches of 4,096, plus the held-out
check. The floor of an epoch is the matrix products a step cannot avoid, timed alone with the epoch's exact
shapes, in the same dtype and thread count, in the same round as the epochs (the other developers' load hits
both):

* old floor (the autograd step's GEMMs): per training row 9 GEMMs, 3 forward (``d x 2d``, ``2d x d``, ``d x d``)
  and 6 backward (two weight gradients and one ``dL/dinput`` per layer): ``30 d^2`` flops;
* new floor (the hand-written step's GEMMs): the two products with ``dL/dh`` (``h`` = LayerNorm's output, only
  needed for LayerNorm's own weights) are gone, LayerNorm's gradient comes from the first layer's weight
  gradient instead (core.universe._corrector_backward): 7 GEMMs, ``24 d^2`` flops per training row;
* both: per held-out row the 3 forward GEMMs (``10 d^2`` flops), in float32 in both precisions (the held-out
  checks that drive early stopping stay float32 by GCPA's contract; the bench before this one timed them in
  bfloat16 in the bfloat16 floor, which no bfloat16 fit could reach).

Printed per (threads, precision): median epoch seconds of the new step and of the old one (the autograd step
of before, kept here only: ``old_step``, put in place of core's step for the "old" fits), both floors, and the
medians over rounds of the ratios taken within each round (new / new floor, old / old floor, old / new). Each
round runs, per setting, a fit of ``--epochs`` epochs with the new step, the new floor, the same fit with the old
step and the old floor, back to back, so that a ratio compares timings taken seconds apart on the shared machine.
``uptime`` is printed before and after each round. Everything above the floor is the step's elementwise
work (normalisation, GELU, the gate, the loss and their gradients), the casts, clipping, AdamW, the batch
gathering and the held-out check's non-GEMM work.

Default sizes are the study's (4 spaces, 24,800 training rows, d = 384, so 22,320 trained + 2,480 held out per
space); ``--quick`` shrinks them. The spaces are planted (a shared signal plus noise), the GPA is given.

    .venv/bin/python bench/bench_gcpa.py [--quick] [--threads 1,2] [--epochs 3] [--rounds 3]

``--full-fit [--study DIR]``: instead, the default GCPA fit (100 epochs at most, patience 15) of the study's
split (``UniverseStudy``: 80 % of the items, 10 % of those held out), old step vs new (``--paths``), float32
and bfloat16, at the first of ``--threads``: epochs run, best epoch, seconds, best held-out loss and how far the
two held-out curves are apart. ``DIR`` holds one ``.npy`` per space (the study: /tmp/study/server/study);
without it, planted spaces of the study's shape (31,000 items, 4 spaces, d = 384).
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import core.universe as cu  # noqa: E402
from core.device import has_fast_bfloat16  # noqa: E402
from core.universe import GCPA, GPA  # noqa: E402


# ---- the autograd step as it was before the hand-written one (bench only) ------------------------------------
def _autograd_loss(out, target, u_hat, preserve_weight, margin):
    """The old step's loss, from the corrector's output rows (autograd differentiates it)."""
    return cu._gcpa_loss_terms((out * target).sum(-1), (out * u_hat).sum(-1), preserve_weight, margin)


def old_forward(net, u):
    u_hat = cu._normalize(u)
    h = net.norm(u_hat)
    delta = net.w2(torch.nn.functional.gelu(net.w1(h)))
    g = torch.sigmoid(net.wg(h))
    return cu._normalize(u_hat + g * delta)


def old_step(net, opt, u, c, preserve_weight, margin, amp_dtype=None, work=None, xn=None):
    with (torch.autocast(u.device.type, dtype=amp_dtype) if amp_dtype is not None else contextlib.nullcontext()):
        out = net(u)
    loss = _autograd_loss(out.float(), c, u, preserve_weight, margin)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss.detach()


@contextlib.contextmanager
def old_path():
    """GCPA.fit with the old step, forward, optimizer, batch indexing and held-out check (nothing precomputed)."""
    names = ("_gcpa_step", "_adamw", "_corrector_inputs", "_gather_batch", "_layer_normed", "_corrector_forward",
             "_gcpa_loss_of")
    saved = {k: getattr(cu, k) for k in names}
    forward = cu._Corrector.forward
    cu._gcpa_step = old_step
    cu._adamw = lambda net, lr, wd: torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=wd)
    cu._corrector_inputs = lambda U, eps, dtype=None: U
    cu._gather_batch = lambda work, rows, U, C, XN: (U[rows], C[rows], None)
    cu._layer_normed = lambda *args, **kwargs: None
    cu._corrector_forward = lambda net, u, dtype=None, work=None, xn=None: (net(u), None, None)
    cu._gcpa_loss_of = lambda v, r, u, c, pw, mg, work=None: (_autograd_loss(v, c, u, pw, mg), None, None)
    cu._Corrector.forward = old_forward
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(cu, k, v)
        cu._Corrector.forward = forward


# ---- the floors --------------------------------------------------------------------------------------------
def planted(n, d, M, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, d // 2)).astype(np.float32)
    return {f"s{m}": z @ rng.normal(size=(d // 2, d)).astype(np.float32)
            + 0.3 * rng.normal(size=(n, d)).astype(np.float32) for m in range(M)}


def epoch_gemms(M, n_train, n_val, d, batch, new: bool):
    """(m, k, n, training) of every GEMM of one epoch: 9 (old) or 7 (new) per training batch, 3 for the held-out
    check (``training`` False)."""
    h = 2 * d
    sizes = [min(batch, n_train - s) for s in range(0, n_train, batch)] * M
    out = []
    for B in sizes:
        out += [(B, d, h), (B, h, d), (B, d, d)]                                   # forward
        out += [(d, B, h), (B, d, h), (h, B, d), (d, B, d)]                         # dW2, da, dW1, dWg
        if not new:
            out += [(B, h, d), (B, d, d)]                                           # dL/dh through W1 and Wg
    V = M * n_val
    return [s + (True,) for s in out] + [(V, d, h, False), (V, h, d, False), (V, d, d, False)]


def gemm_floor(shapes, dtype, repeats=5):
    """Seconds of the GEMMs of ``shapes``: each distinct shape timed ``repeats`` times (median), counted as often
    as it occurs; training GEMMs in ``dtype``, the held-out check's in float32."""
    count = Counter(shapes)
    total = 0.0
    for s, k in count.items():
        dt = dtype if s[3] else torch.float32
        a, b = torch.randn(s[0], s[1]).to(dt), torch.randn(s[1], s[2]).to(dt)
        a @ b
        ts = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            a @ b
            ts.append(time.perf_counter() - t0)
        total += statistics.median(ts) * k
    return total


def uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip().split("load average:")[1]
    except Exception:   # noqa: BLE001
        return " ".join(f"{x:.2f}" for x in os.getloadavg())


def full_fits(args):
    from core.evaluation.universe import UniverseStudy

    torch.set_num_threads(int(args.threads.split(",")[0]))
    if args.study:
        spaces = {f.stem: np.load(f, allow_pickle=False) for f in sorted(Path(args.study).glob("*.npy"))}
    else:
        spaces = planted(31000, 384, 4)
    print(f"full default fits: {', '.join(f'{k} {v.shape}' for k, v in spaces.items())}; "
          f"{torch.get_num_threads()} threads; load {uptime()}", flush=True)
    study = UniverseStudy(spaces)
    gpa = study.model("gpa")
    precisions = ["float32"] + (["bfloat16"] if has_fast_bfloat16("cpu") else [])
    fits = {}
    paths = args.paths.split(",")
    for prec in precisions[::-1]:
        for which in paths:
            with (old_path() if which == "old" else contextlib.nullcontext()):
                est = GCPA(precision=prec, device="cpu").fit(study.fit_train_, gpa=gpa, prepared=study.prepared_)
            fits[(prec, which)] = est
            h = [e["heldout_loss"] for e in est.history_]
            print(f"{prec:>9s} {which}: {est.stopped_epoch_} epochs (best {est.best_epoch_}), "
                  f"{est.fit_seconds_:.1f} s ({est.fit_seconds_ / est.stopped_epoch_:.2f} s per epoch), best held-out "
                  f"loss {min(h):.6f} (epoch 0: {h[0]:.6f}); load after {uptime()}", flush=True)
    for prec in precisions if len(paths) == 2 else []:
        a, b = ([e["heldout_loss"] for e in fits[(prec, w)].history_] for w in ("new", "old"))
        k = min(len(a), len(b))
        diff = max(abs(x - y) for x, y in zip(a[:k], b[:k]))
        speed = fits[(prec, 'old')].fit_seconds_ / fits[(prec, 'new')].fit_seconds_
        print(f"{prec:>9s}: old / new seconds {speed:.2f}x;"
              f" held-out curves (epochs 0-{k - 1}) within {diff:.2e} ({diff / min(b):.1e} of the best)")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--paths", default="new,old", help="--full-fit: which steps to fit (new, old)")
    ap.add_argument("--full-fit", action="store_true")
    ap.add_argument("--study", default=None)
    args = ap.parse_args(argv)
    if args.full_fit:
        return full_fits(args)
    n, d, M = (4000, 128, 4) if args.quick else (24800, 384, 4)
    batch = 4096
    sp = planted(n, d, M)
    gpa = GPA(standardize=False, width="pad", max_iter=3).fit(sp)
    n_val = max(1, int(round(0.1 * n)))
    n_train = n - n_val
    shapes = {new: epoch_gemms(M, n_train, n_val, d, batch, new) for new in (False, True)}
    flops = {new: sum(2 * a * b * c for a, b, c, _ in s) for new, s in shapes.items()}
    precisions = ["float32"] + (["bfloat16"] if has_fast_bfloat16("cpu") else [])
    print(f"sizes: M={M} spaces, {n_train} trained + {n_val} held-out rows each, d={d}, batch {batch}; GEMMs per "
          f"epoch: old step {flops[False] / 1e9:.0f} GFLOP, new step {flops[True] / 1e9:.0f} GFLOP; {args.epochs} "
          f"epochs x {args.rounds} rounds per setting; native bfloat16: {has_fast_bfloat16('cpu')}", flush=True)
    res: dict = {}
    threads_list = [int(t) for t in args.threads.split(",")]
    for rnd in range(args.rounds):
        print(f"round {rnd + 1}: load before {uptime()}", flush=True)
        for threads in threads_list:
            torch.set_num_threads(threads)
            for prec in precisions:
                r = res.setdefault((threads, prec), {k: [] for k in ("new", "old", "floor_new", "floor_old")})
                dt = torch.float32 if prec == "float32" else torch.bfloat16
                for which in ("new", "old"):
                    with (old_path() if which == "old" else contextlib.nullcontext()):
                        est = GCPA(max_epochs=args.epochs, patience=args.epochs + 1, precision=prec, device="cpu",
                                   batch_size=batch).fit(sp, gpa=gpa)
                    r[which].append(statistics.median(b["seconds"] - a["seconds"]
                                                      for a, b in zip(est.history_, est.history_[1:])))
                    r["floor_" + which].append(gemm_floor(shapes[which == "new"], dt))
        print(f"round {rnd + 1}: load after  {uptime()}", flush=True)
    print(f"{'threads':>7s} {'precision':>9s} {'new s':>7s} {'old s':>7s} {'new floor':>9s} {'old floor':>9s} "
          f"{'new/new floor':>13s} {'old/old floor':>13s} {'old/new':>7s} {'new/old floor':>13s}")
    med = statistics.median
    for (threads, prec), r in res.items():
        ratio = {k: med(x / y for x, y in zip(r[a], r[b])) for k, a, b in (
            ("new", "new", "floor_new"), ("old", "old", "floor_old"), ("speedup", "old", "new"),
            ("new_old_floor", "new", "floor_old"))}
        print(f"{threads:7d} {prec:>9s} {med(r['new']):7.3f} {med(r['old']):7.3f} {med(r['floor_new']):9.3f} "
              f"{med(r['floor_old']):9.3f} {ratio['new']:13.2f} {ratio['old']:13.2f} {ratio['speedup']:7.2f} "
              f"{ratio['new_old_floor']:13.2f}")
    print("(seconds: medians over rounds; ratios: medians over rounds of the ratio within each round)")


if __name__ == "__main__":
    main()
