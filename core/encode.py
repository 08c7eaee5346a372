"""Encode a captions table, a set of images or point clouds into named spaces (shared by the CLI and the app).

:func:`read_captions` reads a captions CSV strictly (UTF-8, a non-empty caption column) and
:func:`encode_dataset` embeds it (and/or images) with any encoder of :mod:`core.encoders`, pairing rows with their
images by an image column; images that do not decode are skipped and listed, rows without a usable image dropped
and listed. The result is a plain dict of arrays in the layout :func:`core.io.load_dataset` reads from an ``.npz``.
"""
from __future__ import annotations

import io
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np
import pandas as pd

from .errors import DataError

IMAGE_COLUMNS = ("image", "image_path", "path", "file", "filename")
ProgressFn = Callable[[int, int], None]


def read_captions(path: str | Path, column: str = "caption", display_name: str | None = None) -> pd.DataFrame:
    """The CSV as a DataFrame of str (strict UTF-8), checked to have a non-empty ``column``.

    Raises DataError naming the line and byte offset of non-UTF-8 bytes, a missing column (with the columns
    found), or the first empty caption.
    """
    path = Path(path)
    display = display_name or path.name
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
                             "choose the caption column")
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


MODALITY_OF_KIND = {"text": "text", "image": "image", "pointcloud": "3d"}


def _add_spaces(arrays: dict, described: dict, encoder, kind: str, res: dict, rows=None) -> None:
    """Put one encoder result (final, layers, tokens) into ``arrays`` under the encoder's names for ``kind``."""
    prefix = encoder.space_name(kind)
    modality = MODALITY_OF_KIND[kind]

    def take(a):
        return a if rows is None else a[rows]

    arrays[prefix] = take(res["embedding"]).astype(np.float32, copy=False)
    described[prefix] = {"modality": modality, "info": encoder.space_info(kind)}
    for layer, arr in res.get("layers", {}).items():
        name = f"{prefix}_layer{layer}"
        arrays[name] = take(arr).astype(np.float32, copy=False)
        described[name] = {"modality": modality, "info": encoder.space_info(kind, layer=layer)}
    if "tokens" in res:
        name = f"{prefix}_tokens"
        arrays[name] = take(res["tokens"]).astype(np.float32, copy=False)
        arrays[f"{name}_mask"] = take(res["mask"])
        described[name] = {"modality": modality, "info": encoder.space_info(kind, tokens=True)}


def encode_dataset(encoder, table: pd.DataFrame | None = None, column: str = "caption", images=None, *,
                   points=None, image_column: str | None = None, layers=False, tokens: bool = False,
                   progress_text: ProgressFn | None = None, progress_images: ProgressFn | None = None,
                   progress_points: ProgressFn | None = None, table_name: str = "captions") -> dict:
    """Embed captions (``table[column]``), ``images`` (:class:`core.encoders.ImageFiles`) and/or ``points``
    (:class:`core.pointclouds.PointClouds`) with any encoder of :func:`core.encoders.make_encoder`.

    ``layers``: False, True / 'all' (every block), or layer numbers; each gives ``<space>_layerK``. ``tokens`` adds
    ``<space>_tokens`` (+ ``_mask``). Space names come from the encoder (``minilm``, ``hf_<model>``,
    ``timm_<model>``, ``openclip_<model>_<tag>_text`` / ``_image``, ``pointnet`` ...).

    Returns ``{"ids": [...], "arrays": {name: array}, "spaces": {name: {"modality", "info"}},
    "skipped_images": [{name, reason}], "skipped_points": [{name, reason}], "dropped_rows": [{row, id, reason}]}``;
    ``arrays`` holds one float32 array per space (``<name>_mask`` beside token sets) and ``caption`` (str) when
    there is text. Ids come from an ``id`` column, else row numbers (or the image / cloud names without a table).
    Point clouds are encoded on their own (not paired with a table).
    """
    if table is None and images is None and points is None:
        raise DataError("nothing to encode", hint="give a captions table, images and/or point clouds")
    if points is not None and (table is not None or images is not None):
        raise DataError("point clouds are encoded on their own, not together with captions or images",
                        hint="encode them in a separate run, then add the spaces to the dataset")
    kinds = tuple(encoder.input_kinds)
    for kind, given in (("text", table), ("image", images), ("pointcloud", points)):
        if given is not None and kind not in kinds:
            from .encoders_base import _check_kind
            _check_kind(encoder, kind)
    arrays: dict[str, np.ndarray] = {}
    described: dict[str, dict] = {}
    skipped: list[dict] = []
    dropped: list[dict] = []
    keep_rows = None
    image_result = None
    if points is not None:
        res = encoder.encode_inputs("pointcloud", points, layers=layers, tokens=tokens, progress=progress_points)
        _add_spaces(arrays, described, encoder, "pointcloud", res)
        return {"ids": list(res["names"]), "arrays": arrays, "spaces": described, "skipped_images": [],
                "skipped_points": [{"name": n, "reason": r} for n, r in res["skipped"]], "dropped_rows": []}
    if images is not None:
        image_result = encoder.encode_inputs("image", images, layers=layers, tokens=tokens, progress=progress_images)
        skipped = [{"name": n, "reason": r} for n, r in image_result["skipped"]]

    if table is not None:
        ids = table["id"].astype(str).tolist() if "id" in table.columns else [str(i) for i in range(len(table))]
        if image_result is not None:
            col = image_column or next((c for c in IMAGE_COLUMNS if c in table.columns), None)
            if col is None or col not in table.columns:
                raise DataError("to pair images with captions the table needs a column naming each row's image",
                                file=table_name, column=image_column,
                                hint=f"add one of: {', '.join(IMAGE_COLUMNS)} (or choose the image column)")
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
                raise DataError("no row of the table matches a decodable image", file=table_name,
                                column=col, hint="the column must hold the images' file names")
            img_idx = [match[i] for i in keep_rows]
        texts = table[column].tolist()
        if keep_rows is not None:
            texts = [texts[i] for i in keep_rows]
            ids = [ids[i] for i in keep_rows]
        res = encoder.encode_inputs("text", texts, layers=layers, tokens=tokens, progress=progress_text)
        _add_spaces(arrays, described, encoder, "text", res)
        if image_result is not None:
            _add_spaces(arrays, described, encoder, "image", image_result, rows=np.asarray(img_idx))
        arrays["caption"] = np.array(texts, dtype=str)
    else:
        ids = list(image_result["names"])
        _add_spaces(arrays, described, encoder, "image", image_result)
    return {"ids": ids, "arrays": arrays, "spaces": described, "skipped_images": skipped, "skipped_points": [],
            "dropped_rows": dropped}


def encoded_arrays(result: dict) -> dict:
    """The arrays of an :func:`encode_dataset` result as :func:`core.io.load_dataset` reads them from an ``.npz``:
    ``id``, the spaces (and masks), ``caption``, and ``__spaces__`` (each space's modality and provenance)."""
    import json

    from .io import SPACES_MEMBER
    return {"id": np.array([str(i) for i in result["ids"]], dtype=str), **result["arrays"],
            SPACES_MEMBER: np.array(json.dumps(result.get("spaces", {})))}


def save_encoded(path_or_file, result: dict) -> None:
    """Write an :func:`encode_dataset` result as an ``.npz`` (uncompressed, so spaces memory-map on load)."""
    np.savez(path_or_file, **encoded_arrays(result))


def spaces_info(arrays: dict, described: dict | None = None) -> list[dict]:
    """name, n, d, tokens (T or None), and the layer / pooling when known, of every space of an encoding."""
    out = []
    for name, arr in arrays.items():
        if name.endswith("_mask") or name in ("caption", "id", "__spaces__"):
            continue
        info = (described or {}).get(name, {}).get("info", {})
        out.append({"name": name, "n": int(arr.shape[0]), "d": int(arr.shape[-1]),
                    "tokens": int(arr.shape[1]) if arr.ndim == 3 else None,
                    "layer": info.get("layer"), "pooling": info.get("pooling")})
    return out


def run_encoding(encoder, *, table: pd.DataFrame | None = None, column: str = "caption", images=None,
                 points=None, image_column: str | None = None, layers=False, tokens: bool = False,
                 table_name: str = "captions", progress: Callable[..., None] | None = None) -> dict:
    """:func:`encode_dataset` with one progress callback ``progress(done, total, stage)`` (stage: 'captions',
    'images' or 'point clouds'), the signature of a background job's ``report`` (:mod:`core.jobs`), plus timing:
    the result gains ``seconds`` and ``items_per_second``."""
    import time

    def stage(name):
        return None if progress is None else (lambda done, total: progress(done, total, name))

    t0 = time.perf_counter()
    res = encode_dataset(encoder, table, column, images, points=points, image_column=image_column, layers=layers,
                         tokens=tokens, progress_text=stage("captions"), progress_images=stage("images"),
                         progress_points=stage("point clouds"), table_name=table_name)
    seconds = time.perf_counter() - t0
    return {**res, "seconds": round(seconds, 3), "items_per_second": round(len(res["ids"]) / max(seconds, 1e-9), 1)}
