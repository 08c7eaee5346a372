"""Benchmark of the hierarchy measures and of RE fine-tuning (paper C).

1. Speed: hierarchical retrieval (cummax over radius-sorted pool) against a direct transcription of the definition
   (a Python loop over images and thresholds), and tau_d (vectorised tau-b) against scipy.stats.kendalltau per
   chain, on synthetic chains. Medians of repeated runs and their ratio.
2. Quality: tau_d and retrieval precision / recall for MiniLM before / after RE fine-tuning, on held-out chains,
   and the fine-tuning time. Uses the demo (core.demo.load_demo(): MiniLM tier spaces, PointNet mapped into the
   text space as the image side) when it exists; otherwise demo-like chains generated with the demo's caption
   templates (core.demo.captions) and encoded with MiniLM, whose image side is a noisy random linear view of the
   tier-3 embedding (a stand-in, stated in the output).

Run: .venv/bin/python bench/bench_hierarchy.py [--quick] [--no-finetune]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.dataset import Dataset, Space  # noqa: E402
from core.hierarchy import (Chains, chains_from_dataset, hierarchical_retrieval,  # noqa: E402
                            kendall_tau_tiers, normalize_rows)
from core.evaluation.hierarchy import hierarchy_report  # noqa: E402


def naive_retrieval(chains: Chains, images: np.ndarray, n_thresholds: int = 50):
    texts = list(dict.fromkeys(chains.texts))
    first = {t: i for i, t in reversed(list(enumerate(chains.texts)))}
    emb = np.stack([chains.embeddings[first[t]] for t in texts]).astype(np.float64)
    r = chains.root.astype(np.float64)
    radii = np.linalg.norm(emb - r, axis=1)
    th = np.linspace(radii.min(), radii.max(), n_thresholds)
    P, R = [], []
    for c in range(chains.n_chains):
        img = images[c].astype(np.float64)
        cos = emb @ img
        preds = []
        for t in th:
            allowed = np.flatnonzero(radii <= t)
            best = texts[allowed[np.argmax(cos[allowed])]]
            if not preds or preds[-1] != best:
                preds.append(best)
        true = list(chains.texts[chains.chain_rows(c)])
        P.append(sum(p in true for p in preds) / len(preds))
        R.append(sum(t in preds for t in true) / len(true))
    return float(np.mean(P)), float(np.mean(R))


def median_time(fn, repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def synthetic_chains(n_chains: int, L: int = 4, d: int = 64, n_pool_groups: int = 50, seed: int = 0) -> Chains:
    rng = np.random.default_rng(seed)
    root = normalize_rows(rng.normal(size=(1, d)))[0]
    groups = rng.integers(n_pool_groups, size=n_chains)
    texts, emb = [], []
    for c in range(n_chains):
        for k in range(L):
            key = f"g{groups[c]}-t{k}" if k < 2 else f"c{c}-t{k}"
            texts.append(key)
            v = root + (k + 1) * 0.3 * normalize_rows(np.random.default_rng(abs(hash(key)) % 2**32).normal(size=(1, d)))[0]
            emb.append(v)
    E = normalize_rows(np.array(emb))
    imgs = normalize_rows(E[np.arange(n_chains) * L + L - 1] + 0.3 * rng.normal(size=(n_chains, d)) / np.sqrt(d))
    return Chains(ids=np.array([str(i) for i in range(n_chains)]), offsets=np.arange(0, n_chains * L + 1, L),
                  texts=np.array(texts, dtype=object), embeddings=E, root=root, images=imgs)


def speed(quick: bool) -> None:
    n = 300 if quick else 2000
    ch = synthetic_chains(n)
    t_fast = median_time(lambda: hierarchical_retrieval(ch), 5)
    t_naive = median_time(lambda: naive_retrieval(ch, ch.images), 1 if not quick else 3)
    fast = hierarchical_retrieval(ch)
    slow = naive_retrieval(ch, ch.images)
    print(f"retrieval, {n} images, {fast['n_pool']} pool texts, 50 thresholds: "
          f"vectorised {t_fast * 1e3:.1f} ms, naive loop {t_naive * 1e3:.1f} ms, ratio {t_naive / t_fast:.1f}x "
          f"(precision {fast['precision']:.4f} vs {slow[0]:.4f}, recall {fast['recall']:.4f} vs {slow[1]:.4f})")
    from scipy.stats import kendalltau
    R = np.random.default_rng(1).random((20 * n, 4))
    t_vec = median_time(lambda: kendall_tau_tiers(R), 5)
    t_sci = median_time(lambda: [kendalltau(r, np.arange(4))[0] for r in R], 1)
    print(f"tau-b of {len(R)} chains: vectorised {t_vec * 1e3:.2f} ms, scipy loop {t_sci * 1e3:.1f} ms, "
          f"ratio {t_sci / t_vec:.0f}x")


def demo_like_dataset(n_per_category: int, seed: int = 0):
    from core.demo.captions import caption_chain, negative_chain
    from core.demo.shapes import DOMAINS
    rng = np.random.default_rng(seed)
    rows = []
    for label, dom in DOMAINS.items():
        for j in range(n_per_category):
            attrs = {k: v[int(rng.integers(len(v)))] for k, v in dom.items()}
            tiers = caption_chain(label, attrs)
            negs = negative_chain(label, attrs, rng)
            cid = f"{label}-{j}"
            for k, (t, nt) in enumerate(zip(tiers, negs)):
                rows.append({"id": f"{cid}:{k}", "chain": cid, "tier": k, "caption": t, "negative": nt})
    return pd.DataFrame(rows)


def quality(quick: bool, finetune: bool) -> None:
    from core.encoders import MiniLMEncoder
    enc = MiniLMEncoder(cache_namespace=None if quick else "shared")
    try:
        from core.demo import load_demo
        ds = load_demo()
        source = "the demo (MiniLM tier spaces; PointNet mapped into the text space by an affine map fitted on " \
                 "training chains)"
        t0 = time.perf_counter()
        chains = chains_from_dataset(ds, text_space="minilm", encoder=enc, image_space="pointnet")
    except Exception as err:  # demo not built yet
        items = demo_like_dataset(12 if quick else 144)
        ds = Dataset(items, [], name="demo-like")
        source = (f"demo-like chains ({items['chain'].nunique()} chains made with core.demo.captions; the demo "
                  f"artifact is missing: {type(err).__name__}); image side = a noisy random linear view of the "
                  f"tier-3 MiniLM embedding, mapped back by an affine map fitted on training chains")
        t0 = time.perf_counter()
        chains = chains_from_dataset(ds, encoder=enc)
        rng = np.random.default_rng(0)
        last = chains.embeddings[chains.offsets[1:] - 1]
        view = last @ rng.normal(size=(last.shape[1], 128)) + 0.5 * rng.normal(size=(len(last), 128))
        from dataclasses import replace
        chains = replace(chains, images=view.astype(np.float32), image_in_text_space=False,
                         image_source="noisy random linear view of the tier-3 embedding")
    t_encode = time.perf_counter() - t0
    print(f"\nquality on {source}: {chains.n_chains} chains, encoded in {t_encode:.1f} s")
    t0 = time.perf_counter()
    rep = hierarchy_report(chains, finetune=finetune, tuner_params={"max_epochs": 30 if quick else 100,
                                                                    "device": os.environ.get("PLATOSCOPE_DEVICE")})
    total = time.perf_counter() - t0
    a = rep["all"]
    print(f"all chains (zero-shot): tau_d {a['tau_d']:.3f} [{a['tau_d_ci'][0]:.3f}, {a['tau_d_ci'][1]:.3f}], "
          f"monotone {a['share_monotone']:.3f}, median radius per tier "
          f"{', '.join(f'{x:.3f}' for x in a['median_radius_per_tier'])}")
    for when, s in rep["heldout"].items():
        print(f"held-out {rep['split']['test']} chains, {when:6s}: tau_d {s['tau_d']:.3f} "
              f"[{s['tau_d_ci'][0]:.3f}, {s['tau_d_ci'][1]:.3f}], monotone {s['share_monotone']:.3f}, "
              f"precision {s.get('precision', float('nan')):.3f}, recall {s.get('recall', float('nan')):.3f}")
    if "training" in rep:
        tr = rep["training"]
        print(f"fine-tuning: {tr['seconds']:.1f} s on {tr['device']}, {tr['epochs_run']} epochs, best epoch "
              f"{tr['best_epoch']}, negatives {tr['negatives']}; whole report {total:.1f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small sizes (< 1 min)")
    ap.add_argument("--no-finetune", action="store_true")
    ap.add_argument("--skip-quality", action="store_true")
    args = ap.parse_args(argv)
    speed(args.quick)
    if not args.skip_quality:
        quality(args.quick, not args.no_finetune)


if __name__ == "__main__":
    main()
