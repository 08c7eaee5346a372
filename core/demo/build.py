"""Build the demo world's committed artifact into data/demo/ (``python -m core.demo.build``, ``make demo-data``).

Steps (all seeded by :data:`SEED`): generate the objects and their 1,024-point clouds, the caption chains and
negatives; round the clouds to float16 (everything downstream is computed from the rounded clouds, so it can be
re-derived from the artifact); the 3D descriptor; MiniLM of the captions (final + layers 1..6) and of the unique
tier texts; train the PointNet and take its pooled features; write the files and a manifest.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .captions import caption_chain, negative_chain
from .descriptors import shape_descriptors, standardise
from .shapes import N_POINTS, make_object

SEED = 20240611
N_OBJECTS = 2016  # 144 per category, 14 categories
PN_SEED = 7
PN_EPOCHS = 10
ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"
FILES = ("items.parquet", "clouds.npz", "spaces.npz", "pointnet.safetensors", "pointnet.json")


def generate_objects(n: int, seed: int = SEED, start: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Items table and float16 clouds (``n x 1024 x 3``) for objects ``start .. start + n - 1``.

    Deterministic: object ``i`` depends only on (seed, i).
    """
    rows, clouds = [], []
    for i in range(start, start + n):
        obj = make_object(i, seed)
        tiers = caption_chain(obj["label"], obj["attrs"])
        negs = negative_chain(obj["label"], obj["attrs"], np.random.default_rng([seed, i, 1]))
        attrs = dict(obj["attrs"])
        attrs["support"] = " ".join(attrs["support"])
        ext = obj["extent_m"]
        rows.append({
            "id": f"demo-{i:04d}", "label": obj["label"], "super": obj["super"],
            **{f"tier_{k}": t for k, t in enumerate(tiers)}, "caption": tiers[3], "chain": " => ".join(tiers),
            **{f"neg_tier_{k}": t for k, t in enumerate(negs)},
            "width_m": float(ext[0]), "depth_m": float(ext[1]), "height_m": float(ext[2]),
            "scale_m": float(obj["scale"]), "attributes": json.dumps(attrs),
            "params": json.dumps(obj["params"], sort_keys=True), "cloud_index": i,
        })
        clouds.append(obj["cloud"])
    return pd.DataFrame(rows), np.stack(clouds).astype(np.float16)


def minilm_spaces(items: pd.DataFrame, log=print) -> dict[str, np.ndarray]:
    """MiniLM arrays as stored: final caption embedding, layer norms/means, unique tier texts."""
    from ..encoders import MiniLMEncoder
    enc = MiniLMEncoder(cache_namespace=None, batch_size=64)
    t0 = time.perf_counter()
    out = enc.encode_all(items["caption"].tolist(), layers=(1, 2, 3, 4, 5, 6))
    log(f"  MiniLM: {len(items)} captions in {time.perf_counter() - t0:.1f} s")
    arrays = {"minilm": out["embedding"].astype(np.float16),
              "minilm_layer6_norm": np.linalg.norm(out["layers"][6], axis=1).astype(np.float32)}
    for layer in (1, 2, 3, 4, 5):
        arrays[f"minilm_layer{layer}"] = out["layers"][layer].astype(np.float16)
    tier_cols = ["tier_0", "tier_1", "tier_2"]
    texts = sorted(set(items[tier_cols].to_numpy().ravel().tolist()))
    lookup = {t: k for k, t in enumerate(texts)}
    arrays["tier_texts"] = np.array(texts, dtype=str)
    arrays["tier_embeddings"] = enc.encode(texts).astype(np.float16)
    arrays["tier_index"] = np.vectorize(lookup.__getitem__)(items[tier_cols].to_numpy()).astype(np.int32)
    return arrays


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    h.update(path.read_bytes())
    return h.hexdigest()


def build(out_dir: Path = ARTIFACT_DIR, n: int = N_OBJECTS, epochs: int = PN_EPOCHS, log=print) -> dict:
    """Build the artifact into ``out_dir``; returns the manifest."""
    import torch

    from .pointnet import pointnet_features, save_pointnet, train_pointnet
    t_start = time.perf_counter()
    timings = {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    t = time.perf_counter()
    items, clouds = generate_objects(n)
    timings["objects_s"] = time.perf_counter() - t
    log(f"objects: {n} in {timings['objects_s']:.1f} s")

    t = time.perf_counter()
    raw = shape_descriptors(clouds.astype(np.float32), SEED)
    desc, d_mean, d_std = standardise(raw)
    timings["descriptor_s"] = time.perf_counter() - t

    t = time.perf_counter()
    arrays = minilm_spaces(items, log)
    timings["minilm_s"] = time.perf_counter() - t

    t = time.perf_counter()
    model, losses = train_pointnet(clouds.astype(np.float32), PN_SEED, epochs=epochs, log=log)
    pooled = pointnet_features(model, clouds.astype(np.float32))
    timings["pointnet_s"] = time.perf_counter() - t

    arrays.update({"descriptor_3d": desc.astype(np.float16), "descriptor_mean": d_mean,
                   "descriptor_std": d_std, "pointnet": pooled.astype(np.float16)})
    items.to_parquet(out_dir / "items.parquet", index=False)
    np.savez_compressed(out_dir / "clouds.npz", clouds=clouds)
    np.savez_compressed(out_dir / "spaces.npz", **arrays)
    save_pointnet(model, out_dir / "pointnet.safetensors",
                  {"seed": PN_SEED, "epochs": epochs, "final_loss": losses[-1], "points_per_view": 256})
    timings["total_s"] = time.perf_counter() - t_start
    manifest = {
        "seed": SEED, "pointnet_seed": PN_SEED, "n_objects": n, "n_points": N_POINTS,
        "built_with": {"python": platform.python_version(), "torch": torch.__version__, "numpy": np.__version__,
                       "machine": platform.machine(), "cpu_count": os.cpu_count()},
        "timings": {k: round(v, 1) for k, v in timings.items()},
        "pointnet_losses": [round(x, 4) for x in losses],
        "files": {f: {"sha256": _sha256(out_dir / f), "bytes": (out_dir / f).stat().st_size} for f in FILES},
    }
    manifest["total_bytes"] = sum(v["bytes"] for v in manifest["files"].values())
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=1))
    log(f"built {out_dir} in {timings['total_s']:.1f} s, {manifest['total_bytes'] / 2**20:.2f} MiB")
    return manifest


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m core.demo.build", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ARTIFACT_DIR, help="output folder (default data/demo)")
    parser.add_argument("--n", type=int, default=N_OBJECTS, help="number of objects")
    parser.add_argument("--epochs", type=int, default=PN_EPOCHS, help="PointNet training epochs")
    args = parser.parse_args(argv)
    build(args.out, args.n, args.epochs)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
