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
import io
import time
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd

from ..errors import DataError

NAME = "encode"
HELP = "embed a captions CSV and/or images with MiniLM (offline) or an open_clip model, into an .npz"

IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename")


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


def read_captions(path: str | Path, column: str = "caption") -> pd.DataFrame:
    """The CSV as a DataFrame of str (strict UTF-8), checked to have a non-empty ``column``.

    Raises DataError naming the line and byte offset of non-UTF-8 bytes, a missing column (with the columns
    found), or the first empty caption.
    """
    path = Path(path)
    display = path.name
    if not path.exists():
        raise DataError("the captions file does not exist", file=str(path))
    raw = path.read_bytes()
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line = raw.count(b"\n", 0, err.start) + 1
        raise DataError(f"is not UTF-8 text: byte 0x{raw[err.start]:02x} at byte offset {err.start} (line {line})",
                        file=display, row=max(line - 2, 0) if line > 1 else None,
                        hint="save the file as UTF-8 (e.g. 'Save as... CSV UTF-8')") from None
    if not text.strip():
        raise DataError("is empty", file=display, hint="give a CSV with a header row and a caption column")
    try:
        table = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise DataError(f"is not a readable CSV table ({err})", file=display) from None
    if column not in table.columns:
        raise DataError(f"has no column '{column}'", file=display, column=column,
                        hint=f"columns found: {', '.join(map(str, table.columns)) or '(none)'}; "
                             "choose one with --column")
    if len(table) == 0:
        raise DataError("has a header but no rows", file=display, column=column)
    empty = table[column].str.strip() == ""
    if empty.all():
        raise DataError("the caption column is empty", file=display, column=column,
                        hint="fill it, or pick another column with --column")
    if empty.any():
        row = int(np.flatnonzero(empty.to_numpy())[0])
        raise DataError(f"{int(empty.sum())} captions are empty", file=display, column=column, row=row,
                        hint="every row needs a caption; drop the empty rows")
    return table


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


def _match_images(table: pd.DataFrame, column: str, kept: list[str]) -> list[int | None]:
    """For each row, the index into ``kept`` of its image (by relative path, else by file name), or None."""
    exact = {name: k for k, name in enumerate(kept)}
    by_base: dict[str, int] = {}
    for k, name in enumerate(kept):
        by_base.setdefault(PurePosixPath(name).name, k)
    out = []
    for value in table[column].tolist():
        v = str(value).strip().replace("\\", "/")
        out.append(exact.get(v, exact.get(v.lstrip("./"), by_base.get(PurePosixPath(v).name))))
    return out


def run(args: argparse.Namespace, progress) -> dict:
    from ..device import pick_device
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
    arrays: dict[str, np.ndarray] = {}
    skipped: list[dict] = []
    dropped: list[dict] = []
    keep_rows = None

    image_result = None
    if args.images is not None:
        files = list_images(args.images)
        image_result = encoder.encode_images(files, tokens=args.tokens, progress=_bridge(progress, "images"))
        skipped = [{"name": n, "reason": r} for n, r in image_result["skipped"]]

    if table is not None:
        ids = table["id"].astype(str).tolist() if "id" in table.columns else [str(i) for i in range(len(table))]
        if image_result is not None:
            col = args.image_column or next((c for c in IMAGE_COLUMNS if c in table.columns), None)
            if col is None or col not in table.columns:
                raise DataError("to pair images with captions the CSV needs a column naming each row's image",
                                file=Path(args.text).name, column=args.image_column,
                                hint=f"add one of: {', '.join(IMAGE_COLUMNS)} (or give --image-column)")
            match = _match_images(table, col, image_result["names"])
            skipped_names = {s["name"] for s in skipped}
            keep_rows = [i for i, m in enumerate(match) if m is not None]
            for i, m in enumerate(match):
                if m is None:
                    value = str(table[col].iloc[i])
                    hit = any(PurePosixPath(s).name == PurePosixPath(value).name for s in skipped_names)
                    dropped.append({"row": i, "id": ids[i],
                                    "reason": f"image '{value}' " + ("did not decode" if hit else "not found")})
            if not keep_rows:
                raise DataError("no row of the CSV matches a decodable image", file=Path(args.text).name,
                                column=col, hint="the column must hold the images' file names")
            img_idx = [match[i] for i in keep_rows]
        texts = table[args.column].tolist()
        if keep_rows is not None:
            texts = [texts[i] for i in keep_rows]
            ids = [ids[i] for i in keep_rows]
        if is_minilm:
            spaces = encoder.spaces(texts, layers=args.layers, tokens=args.tokens, progress=_bridge(progress, "text"))
            for name, space in spaces.items():
                arrays[name] = space.data.astype(np.float32)
                if space.mask is not None:
                    arrays[f"{name}_mask"] = space.mask
        else:
            res = encoder.encode_text(texts, tokens=args.tokens, progress=_bridge(progress, "text"))
            arrays[f"{encoder.name}_text"] = res["embedding"]
            if args.tokens:
                arrays[f"{encoder.name}_text_tokens"] = res["tokens"]
                arrays[f"{encoder.name}_text_tokens_mask"] = res["mask"]
        if image_result is not None:
            arrays[f"{encoder.name}_image"] = image_result["embedding"][img_idx]
            if args.tokens and "tokens" in image_result:
                arrays[f"{encoder.name}_image_tokens"] = image_result["tokens"][img_idx]
                arrays[f"{encoder.name}_image_tokens_mask"] = image_result["mask"][img_idx]
        arrays["caption"] = np.array(texts, dtype=str)
    else:
        ids = list(image_result["names"])
        arrays[f"{encoder.name}_image"] = image_result["embedding"]
        if args.tokens and "tokens" in image_result:
            arrays[f"{encoder.name}_image_tokens"] = image_result["tokens"]
            arrays[f"{encoder.name}_image_tokens_mask"] = image_result["mask"]

    out_path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(out_path, id=np.array(ids, dtype=str), **arrays)
    spaces_info = []
    for name, arr in arrays.items():
        if name.endswith("_mask") or name == "caption":
            continue
        spaces_info.append({"name": name, "n": int(arr.shape[0]), "d": int(arr.shape[-1]),
                            "tokens": int(arr.shape[1]) if arr.ndim == 3 else None})
    return {"model": args.model, "output": str(out_path), "n_items": len(ids), "spaces": spaces_info,
            "skipped_images": skipped, "dropped_rows": dropped, "device": str(pick_device(args.device)),
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
