"""A corpus of hostile inputs, shared by the loader, CLI, app and browser tests and by bench/bench_uploads.py.

Every bomb is small on disk and *valid*: a zip member of N zeros is written as one real deflate segment of a zero
chunk repeated (after a full flush deflate output does not refer back, so repeating the segment is exactly the
stream of N zeros) with the right CRC, so an archive reader that inflated it would get every byte.

API
---
``write_hostile_corpus(dirpath, *, bomb_bytes=1 << 30) -> dict[str, HostileCase]``
    One file per attack; each :class:`HostileCase` has ``path``, ``kind`` ('embeddings' for ``load_file`` /
    ``platoscope info``, 'images' for ``list_images`` / ``platoscope encode --images``), ``message`` (a regex the
    error must match; None when the input is accepted with a report), ``inflated`` (what a naive reader would
    build in RAM) and ``marker`` (a path that exists only if a pickle ran).
``write_npz_bomb(path, inflated)``, ``write_zip_entry_bomb(path, entry_bytes, n_entries)``,
``write_png_bomb(path, side)``, ``write_many_images_zip(path, n)``, ``write_traversal_zip(path)``,
``write_nested_safetensors(path, depth)``, ``write_raw_pickle_pt(path, marker)``, ``write_parquet_bomb(path, rows, d)``
``markup_payloads(url)``: the markdown / HTML strings used for captions, labels, ids, space and file names.
"""
from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CHUNK = 1 << 22  # 4 MiB of zeros per repeated deflate segment


class _RepeatingZeroDeflate:
    """A zipfile compressor that deflates runs of zeros at memory speed (see the module docstring)."""

    def __init__(self):
        self._c = zlib.compressobj(9, zlib.DEFLATED, -15)
        self._zero_segment: bytes | None = None

    def compress(self, data: bytes) -> bytes:
        if len(data) == CHUNK and data == bytes(CHUNK):
            if self._zero_segment is None:
                self._zero_segment = self._c.compress(data) + self._c.flush(zlib.Z_FULL_FLUSH)
            return self._zero_segment
        return self._c.compress(data) + self._c.flush(zlib.Z_FULL_FLUSH)

    def flush(self) -> bytes:
        return self._c.flush(zlib.Z_FINISH)


def _check_segments_repeat() -> None:
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    c.compress(b"prefix")
    c.flush(zlib.Z_FULL_FLUSH)
    zero = bytes(CHUNK)
    first = c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH)
    assert first == c.compress(zero) + c.flush(zlib.Z_FULL_FLUSH), "deflate segments should repeat after a flush"


def _write_zeros_member(zf: zipfile.ZipFile, name: str, prefix: bytes, n_zeros: int) -> None:
    _check_segments_repeat()
    info = zipfile.ZipInfo(name, date_time=(2024, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as w:
        w._compressor = _RepeatingZeroDeflate()  # noqa: SLF001 - feed zipfile the precomputed deflate stream
        w.write(prefix)
        zero = bytes(CHUNK)
        left = n_zeros
        while left >= CHUNK:
            w.write(zero)
            left -= CHUNK
        if left:
            w.write(bytes(left))


def write_npz_bomb(path, inflated: int = 1 << 30, d: int = 1024) -> Path:
    """A compressed .npz whose one float32 member 'emb' (n x d zeros) inflates to ``inflated`` bytes."""
    n = max(1, inflated // (4 * d))
    header = io.BytesIO()
    np.lib.format.write_array_header_2_0(header, {"descr": "<f4", "fortran_order": False, "shape": (n, d)})
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        _write_zeros_member(zf, "emb.npy", header.getvalue(), n * d * 4)
    return path


_PNG_SIG = b"\x89PNG\r\n\x1a\n"


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def tiny_png(color: int = 0) -> bytes:
    """A valid 2 x 2 greyscale PNG."""
    raw = b"".join(b"\x00" + bytes([color, color]) for _ in range(2))
    return (_PNG_SIG + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 2, 2, 8, 0, 0, 0, 0))
            + _png_chunk(b"IDAT", zlib.compress(raw)) + _png_chunk(b"IEND", b""))


def write_png_bomb(path, side: int = 40_000) -> Path:
    """A valid 1-bit ``side`` x ``side`` PNG of zeros (side**2 pixels; a few hundred KB on disk)."""
    row = 1 + (side + 7) // 8
    total = row * side
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = bytes(1 << 20)
    seg = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    again = c.compress(block) + c.flush(zlib.Z_FULL_FLUSH)
    assert seg == again
    n_blocks, rest = divmod(total, len(block))
    body = seg * n_blocks
    if rest:
        body += c.compress(bytes(rest))
    body += c.flush(zlib.Z_FINISH)
    # adler32 of zeros: a = 1, b = total mod 65521
    adler = ((total % 65521) << 16) | 1
    idat = b"\x78\xda" + body + struct.pack(">I", adler)
    path = Path(path)
    path.write_bytes(_PNG_SIG + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
                     + _png_chunk(b"IDAT", idat) + _png_chunk(b"IEND", b""))
    return path


def write_zip_entry_bomb(path, entry_bytes: int = 3 << 29, n_entries: int = 2) -> Path:
    """An images zip with ``n_entries`` entries 'bomb<i>.png' of a PNG signature + zeros, ``entry_bytes`` each."""
    path = Path(path)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n_entries):
            _write_zeros_member(zf, f"bomb{i}.png", _PNG_SIG, entry_bytes - len(_PNG_SIG))
    return path


def write_many_images_zip(path, n: int = 10_000) -> Path:
    """A zip of ``n`` tiny (valid) PNG images."""
    path = Path(path)
    png = tiny_png(128)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for i in range(n):
            zf.writestr(f"img{i:05d}.png", png)
    return path


TRAVERSAL_NAMES = ("../evil.png", "a/../../escape.png", "/etc/abs.png")


def write_traversal_zip(path) -> Path:
    """A zip with one ordinary image 'ok.png' and images named to climb out of the archive."""
    path = Path(path)
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ok.png", tiny_png(10))
        for name in TRAVERSAL_NAMES:
            info = zipfile.ZipInfo(name)  # zipfile keeps these names verbatim when written this way
            info.filename = name
            zf.writestr(info, tiny_png(200))
    return path


def write_nested_safetensors(path, depth: int = 100_000) -> Path:
    """A .safetensors whose JSON header nests ``depth`` levels deep (json.loads would recurse)."""
    header = ('{"a":' * depth + "0" + "}" * depth).encode()
    Path(path).write_bytes(struct.pack("<Q", len(header)) + header)
    return Path(path)


class _Marker:
    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def write_raw_pickle_pt(path, marker) -> Path:
    """A plain pickle (protocol 4) saved as .pt whose unpickling would create ``marker``."""
    Path(path).write_bytes(pickle.dumps({"emb": _Marker(str(marker))}, protocol=4))
    return Path(path)


def write_parquet_bomb(path, rows: int = 1 << 18, d: int = 64) -> Path:
    """A Parquet file with a list column of zeros (rows x d float32) that compresses to almost nothing."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    flat = pa.array(np.zeros(rows * d, dtype=np.float32))
    col = pa.FixedSizeListArray.from_arrays(flat, d)
    pq.write_table(pa.table({"emb": col}), path, compression="zstd")
    return Path(path)


def markup_payloads(url: str = "http://127.0.0.1:9/track.png") -> dict[str, str]:
    """User strings that would fetch ``url`` or render as markup if a page treated them as markdown / HTML."""
    return {
        "image": f"![x]({url})",
        "html_img": f'<img src="{url}">',
        "bold": "<b>bold</b>",
        "link": f"[click]({url})",
        "md": "**strong** _em_ # heading :red[red] $x^2$",
    }


def write_markup_dataset(path, url: str, n: int = 30) -> dict:
    """An .npz whose captions, labels, ids and a space name carry markup payloads; returns what was written."""
    pay = markup_payloads(url)
    kinds = list(pay.values())
    rng = np.random.default_rng(5)
    ids = np.array([f"{kinds[i % len(kinds)]} #{i}" for i in range(n)])
    captions = np.array([kinds[(i + 1) % len(kinds)] for i in range(n)])
    labels = np.array([kinds[i % 2] for i in range(n)])  # two classes: an image and a <b> payload
    space = "<b>sp</b>"
    arrays = {space: rng.normal(size=(n, 6)).astype(np.float32), "plain": rng.normal(size=(n, 4)).astype(np.float32)}
    np.savez(path, id=ids, caption=captions, label=labels, **arrays)
    return {"ids": ids, "captions": captions, "labels": labels, "space": space, "payloads": pay}


@dataclass
class HostileCase:
    path: str
    kind: str  # 'embeddings' or 'images'
    message: str | None  # regex the error must match (None: accepted, with a report)
    inflated: int = 0
    marker: str | None = None


def write_hostile_corpus(dirpath, *, bomb_bytes: int = 1 << 30) -> dict[str, HostileCase]:
    """Write every hostile file into ``dirpath`` (a few MB in all); returns {name: HostileCase}."""
    d = Path(dirpath)
    d.mkdir(parents=True, exist_ok=True)
    cases = {}
    write_npz_bomb(d / "bomb.npz", bomb_bytes)
    cases["npz_bomb"] = HostileCase(str(d / "bomb.npz"), "embeddings",
                                    r"bomb\.npz.*emb\.npy.*would inflate to 1\.0 GB.*nothing was inflated",
                                    bomb_bytes)
    write_parquet_bomb(d / "bomb.parquet")
    cases["parquet_bomb"] = HostileCase(str(d / "bomb.parquet"), "embeddings",
                                        r"bomb\.parquet.*'emb'.*would inflate to 64\.\d MB.*decoded.*nothing was inflated",
                                        (1 << 18) * 64 * 4)
    write_zip_entry_bomb(d / "zipbomb.zip", bomb_bytes * 3 // 2, 2)
    cases["zip_entry_bomb"] = HostileCase(str(d / "zipbomb.zip"), "images",
                                          r"zipbomb\.zip.*none of its 2 image entries.*'(\S*/)?bomb0\.png' inflates to 1\.5 GB",
                                          bomb_bytes * 3)
    write_png_bomb(d / "pixels.png", 40_000)
    with zipfile.ZipFile(d / "pixelbomb.zip", "w") as zf:
        zf.write(d / "pixels.png", "pixels.png")
    cases["image_bomb"] = HostileCase(str(d / "pixelbomb.zip"), "images",
                                      r"pixelbomb\.zip.*'(\S*/)?pixels\.png' declares (40000 x 40000 = )?1,600,000,000 pixels",
                                      40_000 * 40_000 * 3)
    write_many_images_zip(d / "many.zip", 10_000)
    cases["many_entries"] = HostileCase(str(d / "many.zip"), "images", None)
    write_traversal_zip(d / "traversal.zip")
    cases["path_traversal"] = HostileCase(str(d / "traversal.zip"), "images", None)
    write_nested_safetensors(d / "nested.safetensors")
    cases["nested_safetensors"] = HostileCase(str(d / "nested.safetensors"), "embeddings",
                                              r"nested\.safetensors.*nested too deeply")
    marker = d / "pickle-ran"
    write_raw_pickle_pt(d / "raw.pt", marker)
    cases["raw_pickle_pt"] = HostileCase(str(d / "raw.pt"), "embeddings", r"raw\.pt.*pickled content",
                                         marker=str(marker))
    return cases


def corpus_json(cases: dict[str, HostileCase]) -> str:
    return json.dumps({k: vars(v) for k, v in cases.items()})


def shown(markdown_source: str) -> str:
    """The text a markdown element shows for a source that ui.text.md escaped (backslash escapes removed)."""
    import re

    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown_source)
