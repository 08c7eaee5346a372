"""MiniLM throughput (sentences/s): core.encoders.MiniLMEncoder vs SentenceTransformer.encode (the reference).

Run: ``.venv/bin/python bench/bench_encoders.py [--quick] [--device cpu]``. Prints, per batch size, the median
throughput of both over repeats, and their ratio (ours / reference; ~1 expected: the same model and pooling; ours
also returns what it is asked for - here the final embedding only, then with layers 1..6).
Texts are the demo's caption templates (about 15-25 word pieces each). No cache is used.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def make_texts(n: int) -> list[str]:
    from core.demo.captions import caption_chain
    from core.demo.shapes import make_object
    objs = [make_object(i, 123, n_points=8) for i in range(min(n, 400))]
    base = [caption_chain(o["label"], o["attrs"])[3] for o in objs]
    return [f"{base[i % len(base)]} (item {i})" for i in range(n)]


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    import torch

    from core.encoders import MiniLMEncoder
    n, repeats = (256, 3) if args.quick else (1024, 5)
    texts = make_texts(n)
    print(f"MiniLM throughput, n={n} sentences, device={args.device}, torch threads={torch.get_num_threads()}, "
          f"median of {repeats}")
    print(f"{'batch':>6} {'ours s/s':>10} {'ours+layers':>12} {'reference':>10} {'ratio':>7}")
    for bs in (32, 64, 128):
        enc = MiniLMEncoder(device=args.device, batch_size=bs, cache_namespace=None)
        st = enc.sentence_transformer()
        enc.encode(texts[:bs])  # warm-up
        st.encode(texts[:bs], batch_size=bs)
        ours = timed(lambda: enc.encode(texts), repeats)
        layers = timed(lambda: enc.encode_layers(texts), repeats)
        ref = timed(lambda: st.encode(texts, batch_size=bs, convert_to_numpy=True), repeats)
        r_ours, r_lay, r_ref = (n / statistics.median(x) for x in (ours, layers, ref))
        print(f"{bs:>6} {r_ours:>10.1f} {r_lay:>12.1f} {r_ref:>10.1f} {r_ours / r_ref:>7.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
