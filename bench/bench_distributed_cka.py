"""Sharded CKA matrix: single process (today's ``similarity_matrix`` over the shards) vs the one-pass block moments
in this process vs local Ray (2 workers), values equal, peak memory of each.

Writes ``--spaces`` spaces of ``--rows`` x ``--dim`` float32 in ``--shards`` .npy shards each (a shared factor
plus noise, a large common offset), then runs each variant in a fresh subprocess:

* ``similarity_matrix``: :func:`core.similarity.similarity_matrix` (linear CKA, feature form) on the
  :class:`core.shards.ShardedArray` spaces - the single-process path of ``platoscope cka``: one pass per space for
  its own moments, then one pass per pair;
* ``blocks, local``: :func:`core.distributed.sharded_cka_matrix` with ``engine='local'`` - one pass over the rows,
  ``Z^T Z`` of all spaces per block, in this process;
* ``blocks, Ray (2 workers)``: the same on a local Ray instance with 2 CPUs (tasks read the shard files).

Peak memory: the subprocess's peak RSS (``ru_maxrss``) and, for Ray, the peak of the summed RSS of the driver and
every process it started (raylet, GCS and the workers included), sampled every 0.2 s. Run time excludes writing the
data; Ray's is reported with and without starting the instance.

    python bench/bench_distributed_cka.py --rows 2000000 --spaces 4 --shards 20 --dim 32
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def write_spaces(root: Path, rows: int, n_spaces: int, shards: int, dim: int, seed: int = 0) -> list[Path]:
    rng = np.random.default_rng(seed)
    bounds = np.linspace(0, rows, shards + 1).astype(np.int64)
    mixes = [rng.normal(size=(8, dim)) for _ in range(n_spaces)]
    folders = [root / f"space{k}" for k in range(n_spaces)]
    for f in folders:
        f.mkdir(parents=True, exist_ok=True)
    for i, (a, b) in enumerate(zip(bounds[:-1], bounds[1:])):
        z = rng.normal(size=(b - a, 8))
        for k, f in enumerate(folders):
            x = z @ mixes[k] + (0.5 + k * 0.5) * rng.normal(size=(b - a, dim)) + 20.0
            np.save(f / f"part-{i:03d}.npy", x.astype(np.float32))
    return folders


def _tree_rss_mb(pid: int) -> float:
    """Summed VmRSS of ``pid`` and all its descendants (Linux /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
            children.setdefault(ppid, []).append(int(d))
        except (OSError, ValueError, IndexError):
            continue
    total, stack = 0, [pid]
    while stack:
        p = stack.pop()
        stack.extend(children.get(p, []))
        try:
            with open(f"/proc/{p}/status") as fh:
                for line in fh:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
                        break
        except OSError:
            continue
    return total / 1024


def child(variant: str, folders: list[str]) -> None:
    """Run one variant; print a JSON line with values, seconds and peak RSS."""
    import resource

    import core.similarity  # noqa: F401  (torch imported before any timing)
    from core.io import load_dataset

    peak = {"tree": 0.0}
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak["tree"] = max(peak["tree"], _tree_rss_mb(os.getpid()))
            time.sleep(0.2)

    threading.Thread(target=sample, daemon=True).start()
    ds = load_dataset(folders)
    spaces = {k: ds[k].vectors() for k in ds.space_names}
    t_start = time.perf_counter()
    out = {"variant": variant, "rss_after_load_mb": _tree_rss_mb(os.getpid())}
    if variant == "similarity_matrix":
        from core.similarity import similarity_matrix
        t0 = time.perf_counter()
        res = similarity_matrix(spaces, method="features")
    elif variant == "blocks_local":
        from core.distributed import sharded_cka_matrix
        t0 = time.perf_counter()
        res = sharded_cka_matrix(spaces, engine="local")
    else:
        from core.distributed import connect, sharded_cka_matrix, shutdown
        connect(num_cpus=2, object_store_mb=256)
        t0 = time.perf_counter()
        res = sharded_cka_matrix(spaces, engine="ray")
        out["n_blocks"] = res["n_blocks"]
    t1 = time.perf_counter()
    out.update(values=res["values"], seconds=t1 - t0, seconds_with_start=t1 - t_start)
    if variant == "ray":
        shutdown()
    stop.set()
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["peak_tree_rss_mb"] = peak["tree"]
    print("RESULT " + json.dumps(out), flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=2_000_000)
    ap.add_argument("--spaces", type=int, default=4)
    ap.add_argument("--shards", type=int, default=20)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--variants", default="similarity_matrix,blocks_local,ray")
    ap.add_argument("--data", default=None, help="folder for the shards (default: a temporary folder)")
    ap.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--_folders", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--quick", action="store_true", help="a smaller run (make bench BENCH_ARGS=--quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.rows, args.shards = min(args.rows, 200_000), min(args.shards, 10)
    if args._child:
        child(args._child, args._folders.split(","))
        return 0
    with tempfile.TemporaryDirectory(dir=args.data) as tmp:
        t0 = time.perf_counter()
        folders = write_spaces(Path(tmp), args.rows, args.spaces, args.shards, args.dim)
        size = sum(p.stat().st_size for f in folders for p in f.iterdir()) / 2**20
        print(f"{args.spaces} spaces x {args.rows:,} rows x {args.dim} float32 in {args.shards} shards each "
              f"({size:.0f} MB on disk), written in {time.perf_counter() - t0:.0f} s", flush=True)
        results = {}
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "PLATOSCOPE_DEVICE": "cpu"}
        for variant in args.variants.split(","):
            proc = subprocess.run([sys.executable, __file__, "--_child", variant, "--_folders",
                                   ",".join(map(str, folders))], capture_output=True, text=True, env=env)
            line = next((l for l in proc.stdout.splitlines() if l.startswith("RESULT ")), None)
            if line is None:
                print(f"{variant} failed:\n{proc.stderr[-2000:]}")
                return 1
            results[variant] = json.loads(line[len("RESULT "):])
    ref = np.array(results.get("similarity_matrix", next(iter(results.values())))["values"], dtype=float)
    print(f"\n{'variant':28}  {'seconds':>8}  {'(with start)':>12}  {'RSS after load':>14}  {'peak RSS MB':>11}  "
          f"{'tree RSS MB':>11}  {'max rel. diff':>13}")
    names = {"similarity_matrix": "similarity_matrix (1 proc)", "blocks_local": "blocks, local (1 proc)",
             "ray": "blocks, Ray (2 workers)"}
    for v, r in results.items():
        diff = float(np.max(np.abs(np.array(r["values"], dtype=float) - ref) / np.abs(ref)))
        print(f"{names.get(v, v):28}  {r['seconds']:8.1f}  {r['seconds_with_start']:12.1f}  "
              f"{r['rss_after_load_mb']:14.0f}  {r['peak_rss_mb']:11.0f}  "
              f"{r['peak_tree_rss_mb']:11.0f}  {diff:13.1e}")
    if "similarity_matrix" in results:
        base = results["similarity_matrix"]["seconds"]
        for v in ("blocks_local", "ray"):
            if v in results:
                print(f"speed-up of {names[v]} over similarity_matrix: {base / results[v]['seconds']:.2f}x")
    print("RSS after load: torch imported (about 580 MB here) plus the items table (ids of every row); the shards "
          "stay on disk")
    print("CKA matrix:", np.array2string(ref, precision=4))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
