"""``platoscope encode --model minilm|open_clip:MODEL:TAG --text captions.csv [--images DIR_OR_ZIP] -o out.npz``.

Encodes a captions CSV (column ``--column``, default ``caption``; ids from an ``id`` column, else row numbers)
and/or a folder or zip of images, and writes an ``.npz`` that ``platoscope info`` and the app load directly:
a string array ``id``, one float32 array per space (``minilm``, ``minilm_layer1..6``, ``minilm_tokens`` +
``minilm_tokens_mask``; ``openclip_<model>_<tag>_text`` / ``_image`` (+ ``_tokens``)), and ``caption``.

With both ``--text`` and ``--images`` the CSV must name each row's image (column ``--image-column``, default the
first of image, image_path, path, file, filename); rows whose image is missing or does not decode are dropped and
listed. Images that do not decode are skipped and listed, never fatal. ``TAG`` ``none`` builds the model with random
weights (plumbing tests only).

JSON output::

    {"model": str, "output": str, "n_items": int,
     "spaces": [{"name", "n", "d", "tokens"}], "skipped_images": [{"name", "reason"}],
     "dropped_rows": [{"row", "id", "reason"}], "device": str, "seconds": float}
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from ..errors import DataError

NAME = "encode"
HELP = "embed a captions CSV and/or images with MiniLM (offline) or an open_clip model, into an .npz"

from ..encode import IMAGE_COLUMNS, read_captions  # noqa: F401  (re-exported for the tests)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="minilm",
                        help="'minilm' (bundled, offline) or 'open_clip:MODEL:TAG' (e.g. open_clip:ViT-B-32:openai; "
                             "weights download once into cache/models)")
    parser.add_argument("--text", metavar="CSV", default=None, help="captions table (.csv, UTF-8)")
    parser.add_argument("--column", default="caption", help="caption column of the CSV (default: caption)")
    parser.add_argument("--images", metavar="DIR_OR_ZIP", default=None, help="a folder or .zip of images")
    parser.add_argument("--image-column", default=None,
                        help="CSV column naming each row's image file (default: first of "
                             + ", ".join(IMAGE_COLUMNS) + ")")
    parser.add_argument("--layers", action="store_true", help="MiniLM: also the mean-pooled layers 1..6")
    parser.add_argument("--tokens", action="store_true", help="also token outputs (n x T x d + mask)")
    parser.add_argument("--batch-size", type=int, default=64, help="items per forward pass (default 64)")
    parser.add_argument("--device", default=None, help="cpu, cuda, mps (default: CUDA > MPS > CPU)")
    parser.add_argument("-o", "--out", required=True, metavar="OUT.npz", help="output .npz file")


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


def run(args: argparse.Namespace, progress) -> dict:
    from ..device import pick_device
    from ..encode import encode_dataset, read_captions, spaces_info
    from ..encoders import MiniLMEncoder, list_images, make_encoder

    t0 = time.perf_counter()
    if args.text is None and args.images is None:
        raise DataError("nothing to encode", hint="give --text captions.csv and/or --images folder_or_zip")
    if args.batch_size < 1:
        raise DataError(f"--batch-size must be at least 1, got {args.batch_size}")
    out_path = Path(args.out)
    if out_path.suffix.lower() != ".npz":
        raise DataError("the output must be an .npz file", file=str(out_path), hint="e.g. -o out.npz")
    encoder = make_encoder(args.model, device=args.device, batch_size=args.batch_size)
    is_minilm = isinstance(encoder, MiniLMEncoder)
    if args.images is not None and is_minilm:
        raise DataError("MiniLM is a text encoder: it cannot encode images",
                        hint="use an open_clip model, e.g. --model open_clip:ViT-B-32:openai")
    if args.layers and not is_minilm:
        raise DataError("--layers is only available for MiniLM")
    table = read_captions(args.text, args.column) if args.text is not None else None
    images = list_images(args.images) if args.images is not None else None
    res = encode_dataset(encoder, table, args.column, images, image_column=args.image_column, layers=args.layers,
                         tokens=args.tokens, progress_text=_bridge(progress, "text"),
                         progress_images=_bridge(progress, "images"),
                         table_name=Path(args.text).name if args.text else "captions")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, id=np.array(res["ids"], dtype=str), **res["arrays"])
    return {"model": args.model, "output": str(out_path), "n_items": len(res["ids"]),
            "spaces": spaces_info(res["arrays"]), "skipped_images": res["skipped_images"],
            "dropped_rows": res["dropped_rows"], "device": str(pick_device(args.device)),
            "random_weights": (not is_minilm and encoder.pretrained is None),
            "seconds": round(time.perf_counter() - t0, 3)}


def render(result: dict) -> str:
    lines = [f"encoded {result['n_items']} items with {result['model']} on {result['device']} "
             f"in {result['seconds']:.1f} s -> {result['output']}"]
    if result.get("random_weights"):
        lines.append("note: random weights (no pretrained tag): for plumbing tests only, not for results")
    for s in result["spaces"]:
        shape = f"{s['n']} x {s['tokens']} x {s['d']}" if s["tokens"] else f"{s['n']} x {s['d']}"
        lines.append(f"  {s['name']}: {shape}")
    if result["skipped_images"]:
        lines.append(f"skipped {len(result['skipped_images'])} files:")
        lines += [f"  {s['name']}: {s['reason']}" for s in result["skipped_images"]]
    if result["dropped_rows"]:
        lines.append(f"dropped {len(result['dropped_rows'])} rows:")
        lines += [f"  row {d['row']} (id {d['id']}): {d['reason']}" for d in result["dropped_rows"]]
    return "\n".join(lines)
