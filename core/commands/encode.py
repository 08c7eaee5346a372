"""``platoscope encode --model SPEC (--text captions.csv [--images DIR_OR_ZIP] | --images ... | --points ...) -o out.npz``.

Models (``--model``, see :func:`core.encoders.make_encoder`): ``minilm`` (bundled, offline; the default),
``hf:<model id or folder>`` (``--pooling mean|cls|last``), ``st:<model id>``, ``timm:<name>[:none]``,
``torchvision:<name>[:<weights>|:none]``, ``open_clip:<arch>:<tag>``, ``python:<module>:<factory>`` (your own torch
module; e.g. the demo's PointNet: ``python:core.demo.pointnet:platoscope_encoder``). Weights download once into
``cache/``; ``none`` tags build random weights (plumbing tests only).

Inputs: a captions CSV (column ``--column``, default ``caption``; ids from an ``id`` column, else row numbers)
and/or a folder or zip of images; or point clouds (``--points``: an ``.npz`` / ``.npy`` n x P x 3, or a folder /
zip of ``.ply`` / ``.xyz`` / ``.npy`` files). ``--layers`` adds every layer's pooled output (``<space>_layerK``;
``--layers 1,4,6`` picks some), ``--tokens`` the token / patch / point features (n x T x d + mask).

With both ``--text`` and ``--images`` the CSV must name each row's image (column ``--image-column``, default the
first of image, image_path, path, file, filename); rows whose image is missing or does not decode are dropped and
listed. Images that do not decode are skipped and listed, never fatal.

The ``.npz`` holds a string array ``id``, one float32 array per space, ``caption``, and ``__spaces__`` (JSON: each
space's modality and provenance - encoder spec, layer, pooling - which ``platoscope info`` and the app read).

JSON output::

    {"model": str, "family": str, "output": str, "n_items": int,
     "spaces": [{"name", "n", "d", "tokens", "layer", "pooling"}], "skipped_images": [{"name", "reason"}],
     "skipped_points": [{"name", "reason"}], "dropped_rows": [{"row", "id", "reason"}], "device": str,
     "random_weights": bool, "batch_size": int, "seconds": float, "items_per_second": float,
     "shards": {"total", "written", "skipped", "rows_per_shard"}, "engine": {...}}   # shards / engine with --ray

``--ray [ADDRESS]`` (captions only): a Ray Data pipeline of encoder actors writes ``OUT/part-NNNNN.parquet``
(``id``, one vector column per space, ``caption``) plus ``OUT/manifest.json``; rerunning the same command skips
the shards already complete. The folder opens as a sharded space anywhere a file does (:mod:`core.shards`).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


from ..errors import DataError

NAME = "encode"
HELP = "embed captions, images or point clouds with any encoder (minilm, hf:, st:, timm:, open_clip:, python:) into an .npz"

from ..encode import IMAGE_COLUMNS, read_captions  # noqa: F401  (re-exported for the tests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm",
                        help="minilm (bundled, offline), hf:MODEL_ID_OR_FOLDER, st:MODEL_ID, timm:NAME[:none], "
                             "torchvision:NAME[:WEIGHTS|:none], open_clip:MODEL:TAG, python:MODULE:FACTORY "
                             "(weights download once into cache/)")
    parser.add_argument("--text", metavar="CSV", default=None, help="captions table (.csv, UTF-8)")
    parser.add_argument("--column", default="caption", help="caption column of the CSV (default: caption)")
    parser.add_argument("--images", metavar="DIR_OR_ZIP", default=None, help="a folder or .zip of images")
    parser.add_argument("--points", metavar="NPZ_NPY_DIR_OR_ZIP", default=None,
                        help="point clouds: .npz / .npy (n x P x 3), or a folder / .zip of .ply, .xyz, .npy files")
    parser.add_argument("--image-column", default=None,
                        help="CSV column naming each row's image file (default: first of "
                             + ", ".join(IMAGE_COLUMNS) + ")")
    parser.add_argument("--layers", nargs="?", const="all", default=None, metavar="K,K,...",
                        help="also every layer's pooled output (<space>_layerK); or only the listed layers")
    parser.add_argument("--tokens", action="store_true", help="also token / patch / point outputs (n x T x d + mask)")
    parser.add_argument("--pooling", default="mean", choices=("mean", "cls", "last", "max"),
                        help="hf: models: how token states become one vector (default mean; cls for BERT-style "
                             "[CLS], last for decoder models)")
    parser.add_argument("--model-arg", action="append", default=[], metavar="KEY=VALUE",
                        help="timm: extra timm.create_model argument (repeatable; VALUE read as JSON when it "
                             "parses, e.g. --model-arg img_size=32)")
    parser.add_argument("--max-length", type=int, default=None, help="text models: tokens kept per text")
    parser.add_argument("--batch-size", type=int, default=64, help="items per forward pass (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: CUDA > MPS > CPU)")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.npz",
                        help="output .npz file (with --ray: a folder of parquet shards)")
    from ._common import add_ray_argument
    add_ray_argument(parser, "encode the captions with a Ray Data pipeline of encoder actors (one GPU each "
                             "where the cluster has GPUs), writing resumable parquet shards")
    parser.add_argument("--shard-rows", type=int, default=10_000, metavar="N",
                        help="with --ray: items per output shard (default 10000)")
    parser.add_argument("--actors", type=int, default=None, metavar="N",
                        help="with --ray: encoder actors (default: one per GPU, else one per CPU)")


def _bridge(progress, desc: str):
    """A ``progress(done, total)`` callback driving the framework's ``progress(iterable, total, desc)``."""
    state: dict = {}

    def callback(done: int, total: int) -> None:
        if "it" not in state:
            state["it"], state["n"] = iter(progress(range(total), total=total, desc=desc)), 0
        while state["n"] < done:
            next(state["it"], None)
            state["n"] += 1
        if done >= total:
            next(state["it"], None)
    return callback


def _model_kwargs(pairs: list[str]) -> dict:
    import json
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip().isidentifier():
            raise DataError(f"--model-arg {pair!r}: write it as KEY=VALUE, e.g. img_size=32")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def run(args: argparse.Namespace, progress) -> dict:
    from ..device import pick_device
    from ..encode import encode_dataset, read_captions, save_encoded, spaces_info
    from ..encoders import list_images, make_encoder
    from ..pointclouds import read_point_clouds

    t0 = time.perf_counter()
    if args.text is None and args.images is None and args.points is None:
        raise DataError("nothing to encode", hint="give --text captions.csv, --images folder_or_zip, or --points")
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_path = Path(args.out)
    if getattr(args, "ray", None) is not None:
        return _run_ray(args, progress, t0)
    if out_path.suffix.lower() != ".npz":
        raise DataError("the output must be an .npz file", file=str(out_path), hint="e.g. -o out.npz")
    encoder = make_encoder(args.model, device=args.device, batch_size=args.batch_size, pooling=args.pooling,
                           max_length=args.max_length, model_kwargs=_model_kwargs(args.model_arg))
    table = read_captions(args.text, args.column) if args.text is not None else None
    images = list_images(args.images) if args.images is not None else None
    points = read_point_clouds(args.points) if args.points is not None else None
    res = encode_dataset(encoder, table, args.column, images, points=points, image_column=args.image_column,
                         layers=args.layers or False, tokens=args.tokens,
                         progress_text=_bridge(progress, "text"), progress_images=_bridge(progress, "images"),
                         progress_points=_bridge(progress, "point clouds"),
                         table_name=Path(args.text).name if args.text else "captions")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    save_encoded(out_path, res)
    seconds = time.perf_counter() - t0
    return {"model": args.model, "family": encoder.family, "output": str(out_path), "n_items": len(res["ids"]),
            "spaces": spaces_info(res["arrays"], res["spaces"]), "skipped_images": res["skipped_images"],
            "skipped_points": res["skipped_points"], "dropped_rows": res["dropped_rows"],
            "device": str(pick_device(args.device)),
            "random_weights": any(d["info"].get("random_weights") for d in res["spaces"].values()),
            "batch_size": args.batch_size, "seconds": round(seconds, 3),
            "items_per_second": round(len(res["ids"]) / max(seconds, 1e-9), 1)}


def _run_ray(args: argparse.Namespace, progress, t0: float) -> dict:
    from ..distributed import encode_captions_ray
    from ..encode import read_captions
    from ._common import ray_session

    if args.text is None:
        raise DataError("--ray encodes a captions table", hint="give --text captions.csv (images: drop --ray)")
    if args.images is not None or args.points is not None or args.layers or args.tokens:
        raise DataError("--ray writes one embedding per caption; --images, --points, --layers and --tokens run "
                        "in one process", hint="drop --ray, or drop those options")
    table = read_captions(args.text, args.column)
    with ray_session(args) as info:
        res = encode_captions_ray(table, args.column, args.out, args.model, shard_rows=args.shard_rows,
                                  batch_size=args.batch_size, actors=args.actors, device=args.device,
                                  encoder_options={"pooling": args.pooling, "max_length": args.max_length,
                                                   "model_kwargs": _model_kwargs(args.model_arg)},
                                  progress=progress)
    from ..io import load_dataset
    ds = load_dataset([Path(args.out)])
    spaces = [{"name": s.name, "n": s.n, "d": s.dim, "tokens": None} for s in ds.spaces.values()]
    return {"model": args.model, "family": res["family"], "output": str(args.out), "n_items": res["n_items"],
            "spaces": spaces, "skipped_images": [], "skipped_points": [], "dropped_rows": [], "device": "ray",
            "random_weights": ":none" in str(args.model).lower(),
            "shards": {"total": res["n_shards"], "written": len(res["written"]), "skipped": res["skipped"],
                       "rows_per_shard": args.shard_rows, "pipeline_seconds": res["seconds"]},
            "engine": {"name": "ray", "address": info["address"], "actors": res["actors"],
                       "gpus_per_actor": res["gpus_per_actor"], "resources": info["resources"]},
            "batch_size": args.batch_size, "seconds": round(time.perf_counter() - t0, 3),
            "items_per_second": round(res["n_items"] / max(time.perf_counter() - t0, 1e-9), 1)}


def render(result: dict) -> str:
    lines = [f"encoded {result['n_items']} items with {result['model']} on {result['device']} "
             f"in {result['seconds']:.1f} s -> {result['output']}"]
    if result.get("shards"):
        sh, e = result["shards"], result["engine"]
        lines.append(f"{sh['written']} shard(s) written, {sh['skipped']} already complete (skipped), "
                     f"{e['actors']} actor(s) x {e['gpus_per_actor']} GPU on Ray ({e['address']})")
    if result.get("random_weights"):
        lines.append("note: random weights (no pretrained tag): for plumbing tests only, not for results")
    for s in result["spaces"]:
        shape = f"{s['n']} x {s['tokens']} x {s['d']}" if s["tokens"] else f"{s['n']} x {s['d']}"
        extra = f" (layer {s['layer']})" if s.get("layer") is not None else ""
        lines.append(f"  {s['name']}: {shape}{extra}")
    if result["skipped_images"]:
        lines.append(f"skipped {len(result['skipped_images'])} files:")
        lines += [f"  {s['name']}: {s['reason']}" for s in result["skipped_images"]]
    if result.get("skipped_points"):
        lines.append(f"skipped {len(result['skipped_points'])} point-cloud files:")
        lines += [f"  {s['name']}: {s['reason']}" for s in result["skipped_points"]]
    if result["dropped_rows"]:
        lines.append(f"dropped {len(result['dropped_rows'])} rows:")
        lines += [f"  row {d['row']} (id {d['id']}): {d['reason']}" for d in result["dropped_rows"]]
    return "\n".join(lines)
