"""Query at 10^6 items: the faiss index of core.ann vs the exact chunked search, latency per query and recall@10.

The index holds ``--n`` unit vectors of ``--dim`` dimensions (the width of a CCA-k query index; Gaussian clusters,
so that neighbourhoods mean something), the queries are ``--queries`` perturbed items. Compared:

* ``exact, Query path``: what the Query view does below ``core.ann.ANN_MIN_N`` - ``cosine_similarity_matrix`` of
  the query against every item (torch, float64) and :func:`core.retrieval.top_k`;
* ``exact, f32 GEMV``: the floor of any exact search - one float32 matrix-vector product over the pre-normalised
  items and ``argpartition`` (the reference the index must beat);
* ``faiss flat``: ``IndexFlatIP`` (exact, float32);
* ``faiss IVF``: the index :func:`core.ann.neighbour_index` picks above ``FLAT_MAX_N`` (IVF-Flat, ``4 sqrt(n)``
  lists, ``nprobe = 48``), built once (the build time is reported separately; it is cached on disk afterwards).

Latency is the median over the queries, one query at a time (as typed in the app). recall@10 = share of the exact
top-10 found by the index.

    python bench/bench_ann.py --n 1000000 --dim 50 --queries 200
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=50)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--quick", action="store_true", help="a smaller run (make bench BENCH_ARGS=--quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.queries = min(args.n, 200_000), min(args.queries, 50)
    from core.align import cosine_similarity_matrix
    from core.ann import NeighbourIndex
    from core.retrieval import top_k

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(2000, args.dim)).astype(np.float32)
    X = centres[rng.integers(0, len(centres), args.n)] + 0.6 * rng.normal(size=(args.n, args.dim)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    Q = X[rng.choice(args.n, args.queries, replace=False)] + 0.05 * rng.normal(size=(args.queries, args.dim))
    print(f"{args.n:,} items x {args.dim} dims, {args.queries} queries, k = {args.k}", flush=True)

    def timed(fn):
        out, lat = [], []
        for q in Q:
            t0 = time.perf_counter()
            out.append(fn(q[None, :]))
            lat.append(time.perf_counter() - t0)
        return np.concatenate(out), np.array(lat)

    X64 = X.astype(np.float64)          # the Query view's index_ is float64

    def floor(q):                       # exact, at the memory-bandwidth floor: one float32 GEMV + argpartition
        s = X @ q[0].astype(np.float32)
        part = np.argpartition(-s, args.k)[:args.k]
        return part[np.argsort(-s[part])][None, :]

    exact, lat_exact = timed(lambda q: top_k(cosine_similarity_matrix(q, X64), args.k)[0])
    floor_i, lat_floor = timed(floor)
    rows = [("exact, Query path (torch f64 + top_k)", None, lat_exact, 1.0),
            ("exact, f32 GEMV + argpartition", None, lat_floor,
             float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(floor_i, exact)])))]
    for kind in ("flat", "ivf"):
        t0 = time.perf_counter()
        index = NeighbourIndex("cosine", kind=kind).fit(X)
        build = time.perf_counter() - t0
        got, lat = timed(lambda q: index.search(q, args.k)[0])
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(got, exact)]))
        label = "faiss flat (IndexFlatIP)" if kind == "flat" else (
            f"faiss IVF (nlist {index.index_.nlist}, nprobe {index.index_.nprobe})")
        rows.append((label, build, lat, recall))
        del index
    print(f"\n{'search':40}  {'build s':>8}  {'median ms/query':>15}  {'p90 ms':>7}  {'recall@10':>9}  {'speed-up':>8}")
    base = float(np.median(lat_exact))
    for label, build, lat, recall in rows:
        print(f"{label:40}  {'-' if build is None else f'{build:.1f}':>8}  {np.median(lat) * 1e3:15.2f}  "
              f"{np.percentile(lat, 90) * 1e3:7.2f}  {recall:9.3f}  {base / np.median(lat):7.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
