"""Safe reading of image folders, image zips and uploaded images: bounded in count, bytes and pixels.

:func:`scan_images` lists the images of a folder, a ``.zip`` (on disk or in memory) or a list of uploaded
``(name, bytes)`` / ``(name, path)`` pairs (zips among them are opened, not unpacked), *without inflating
anything but image headers*. Every entry is checked from the zip's directory and the image header, in this order:

* a name that climbs out of the archive (``..``, an absolute path, a drive letter) is skipped and reported;
* hidden files and ``__MACOSX`` are ignored silently, files without an image extension are reported;
* an entry whose declared size (zip directory ``file_size``) exceeds ``max_image_bytes``, or that would take the
  total inflated bytes over ``max_total_bytes``, is skipped;
* an image whose header declares more than ``max_pixels`` pixels is skipped (a decompression bomb); one whose
  header cannot be read stays listed (the encoder reports it as undecodable);
* images beyond ``max_images`` are skipped.

Each skipped entry is listed in ``ignored`` as ``(name, reason)``. Reading an image later (``read(name)``) inflates
that one entry only, never more than its declared size. :func:`open_image` decodes with the same pixel cap.

Limits come from the environment (:meth:`ImageLimits.from_env`): ``$PLATOSCOPE_MAX_IMAGES`` (default 2000
images per archive or upload; folders on the server are not capped in count), ``$PLATOSCOPE_MAX_IMAGE_MB``
(64 MB per image file), ``$PLATOSCOPE_MAX_IMAGE_PIXELS`` (64 megapixels) and the session budget for the total.
"""
from __future__ import annotations

import io
import os
import posixpath
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from .budget import fmt_bytes, session_budget_bytes
from .errors import DataError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")
DEFAULT_MAX_IMAGES = 2000
DEFAULT_MAX_IMAGE_MB = 64
DEFAULT_MAX_PIXELS = 64_000_000


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:
        return default
    try:
        value = int(float(raw))
    except ValueError:
        raise DataError(f"{name} must be a number, got {raw!r}") from None
    if value <= 0:
        raise DataError(f"{name} must be positive, got {raw!r}")
    return value


@dataclass(frozen=True)
class ImageLimits:
    """Caps applied while listing images (see the module docstring)."""

    max_images: int = DEFAULT_MAX_IMAGES
    max_image_bytes: int = DEFAULT_MAX_IMAGE_MB << 20
    max_total_bytes: int = 4096 << 20
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_env(cls) -> "ImageLimits":
        return cls(max_images=_env_int("PLATOSCOPE_MAX_IMAGES", DEFAULT_MAX_IMAGES),
                   max_image_bytes=_env_int("PLATOSCOPE_MAX_IMAGE_MB", DEFAULT_MAX_IMAGE_MB) << 20,
                   max_total_bytes=session_budget_bytes(),
                   max_pixels=_env_int("PLATOSCOPE_MAX_IMAGE_PIXELS", DEFAULT_MAX_PIXELS))


def set_pil_pixel_cap(max_pixels: int) -> None:
    """PIL's own backstop: it warns above ``Image.MAX_IMAGE_PIXELS`` and refuses (DecompressionBombError) above
    twice that. Headers are checked against ``max_pixels`` exactly before decoding anyway."""
    from PIL import Image

    Image.MAX_IMAGE_PIXELS = max(1, int(max_pixels))


@dataclass
class ScannedImages:
    """What :func:`scan_images` found: ``names`` in order, ``read(name) -> bytes``, ``ignored`` (name, reason)."""

    names: list[str]
    read: Callable[[str], bytes]
    source: str
    ignored: list[tuple[str, str]] = field(default_factory=list)


def unsafe_member_name(name: str) -> str | None:
    """Why a zip entry name is unsafe to use as a path (None when it is safe)."""
    text = name.replace("\\", "/")
    if text.startswith("/") or (len(text) > 1 and text[1] == ":"):
        return "absolute path in the archive (path traversal): not read"
    if ".." in PurePosixPath(text).parts:
        return "'..' in the path (path traversal): not read"
    if "\0" in text:
        return "NUL character in the name: not read"
    return None


def _hidden(name: str) -> bool:
    return any(p.startswith(".") or p == "__MACOSX" for p in PurePosixPath(name.replace("\\", "/")).parts)


def image_header_pixels(fh) -> tuple[int, int]:
    """(width, height) from an image header (PIL reads the header only; nothing is decoded)."""
    from PIL import Image

    with Image.open(fh) as im:
        return int(im.size[0]), int(im.size[1])


class _Scan:
    def __init__(self, limits: ImageLimits, cap_count: bool = True):
        self.limits = limits
        self.cap_count = cap_count
        self.names: list[str] = []
        self.readers: dict[str, Callable[[], bytes]] = {}
        self.ignored: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []  # skipped for safety (not merely "not an image")
        self.total = 0

    def refuse(self, name: str, reason: str) -> None:
        self.ignored.append((name, reason))
        self.refused.append((name, reason))

    def consider(self, name: str, size: int, opener: Callable[[], io.IOBase], reader: Callable[[], bytes]) -> None:
        lim = self.limits
        if self.cap_count and len(self.names) >= lim.max_images:
            self.refuse(name, f"over the cap of {lim.max_images} images per upload (PLATOSCOPE_MAX_IMAGES)")
            return
        if size > lim.max_image_bytes:
            self.refuse(name, f"inflates to {fmt_bytes(size)}, over the {fmt_bytes(lim.max_image_bytes)} "
                              f"per-image limit (PLATOSCOPE_MAX_IMAGE_MB): not inflated")
            return
        if self.total + size > lim.max_total_bytes:
            self.refuse(name, f"would take the inflated total over {fmt_bytes(lim.max_total_bytes)} "
                              f"(the session budget): not inflated")
            return
        from PIL import Image

        try:
            with opener() as fh:
                w, h = image_header_pixels(fh)
        except Image.DecompressionBombError as err:  # PIL's own check fired while reading the header
            found = re.search(r"\((\d+) pixels\)", str(err))
            pixels = f"{int(found.group(1)):,}" if found else "too many"
            self.refuse(name, f"declares {pixels} pixels, over the cap of {lim.max_pixels:,} "
                              f"(PLATOSCOPE_MAX_IMAGE_PIXELS; a decompression bomb?): not decoded")
            return
        except Exception:  # noqa: BLE001 - an unreadable header: listed, the decoder reports it as undecodable
            w = h = 0
        if w * h > lim.max_pixels:
            self.refuse(name, f"declares {w} x {h} = {w * h:,} pixels, over the cap of {lim.max_pixels:,} "
                              f"(PLATOSCOPE_MAX_IMAGE_PIXELS; a decompression bomb?): not decoded")
            return
        self.total += size
        self.names.append(name)
        self.readers[name] = reader

    def skip_or_candidate(self, name: str, shown: str | None = None) -> bool:
        """True when ``name`` should be considered as an image (else it was reported as ``shown``, or hidden)."""
        shown = name if shown is None else shown
        reason = unsafe_member_name(name)
        if reason:
            self.refuse(shown, reason)
            return False
        if _hidden(name):
            return False
        if not name.lower().endswith(IMAGE_EXTENSIONS):
            self.ignored.append((shown, "not an image file extension"))
            return False
        return True

    def add_zip(self, zf: zipfile.ZipFile, prefix: str = "") -> None:
        infos = sorted((i for i in zf.infolist() if not i.is_dir()), key=lambda i: i.filename)
        for info in infos:
            name = prefix + info.filename
            if not self.skip_or_candidate(info.filename, name):
                continue
            self.consider(name, int(info.file_size), lambda i=info: zf.open(i),
                          lambda i=info: _read_member(zf, i))

    def result(self, source: str) -> ScannedImages:
        readers = self.readers
        if not self.names and self.refused:
            name, reason = self.refused[0]
            more = f" (and {len(self.refused) - 1} more refused)" if len(self.refused) > 1 else ""
            raise DataError(f"none of its {len(self.refused)} image entries can be read safely: '{name}' {reason}"
                            f"{more}", file=source,
                            hint="give ordinary images (at most PLATOSCOPE_MAX_IMAGE_PIXELS pixels and "
                                 "PLATOSCOPE_MAX_IMAGE_MB each) with plain relative names")

        def read(name: str) -> bytes:
            try:
                return readers[name]()
            except KeyError:
                raise DataError(f"'{name}' is not among the listed images", file=source) from None

        return ScannedImages(self.names, read, source, self.ignored)


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo) -> bytes:
    """One entry's bytes; zipfile never returns more than the declared ``file_size``."""
    with zf.open(info) as fh:
        return fh.read(info.file_size + 1)[: info.file_size]


def _open_zip(source, label: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(source)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError) as err:
        raise DataError(f"this is not a readable zip file ({type(err).__name__})", file=label,
                        hint="give a .zip of images or a folder") from None


def scan_images(source: str | os.PathLike | io.BytesIO | Sequence[tuple[str, object]],
                limits: ImageLimits | None = None) -> ScannedImages:
    """List the images of a folder, a zip (path or BytesIO), or uploaded ``(name, bytes | path)`` pairs, safely.

    Returns a :class:`ScannedImages`; nothing but image headers is inflated. See the module docstring for the
    checks and :class:`ImageLimits` for the caps (default: :meth:`ImageLimits.from_env`).
    """
    limits = ImageLimits.from_env() if limits is None else limits
    set_pil_pixel_cap(limits.max_pixels)
    if isinstance(source, (list, tuple)):
        scan = _Scan(limits)
        for name, payload in sorted(((str(n), p) for n, p in source), key=lambda t: t[0]):
            blob = payload if isinstance(payload, (bytes, bytearray, memoryview)) else None
            path = None if blob is not None else Path(payload)  # type: ignore[arg-type]
            if name.lower().endswith(".zip"):
                zf = _open_zip(io.BytesIO(bytes(blob)) if blob is not None else path, name)
                scan.add_zip(zf, prefix=f"{name}/")
                continue
            if not scan.skip_or_candidate(name):
                continue
            if blob is not None:
                data = bytes(blob)
                scan.consider(name, len(data), lambda d=data: io.BytesIO(d), lambda d=data: d)
            else:
                scan.consider(name, path.stat().st_size, lambda p=path: open(p, "rb"),
                              lambda p=path: p.read_bytes())
        return scan.result(str(source[0][0]) if len(source) == 1 else "uploaded files")
    if isinstance(source, io.BytesIO) or str(source).lower().endswith(".zip"):
        label = "zip" if isinstance(source, io.BytesIO) else Path(source).name
        if not isinstance(source, io.BytesIO) and not Path(source).exists():
            raise DataError("the image zip does not exist", file=str(source))
        scan = _Scan(limits)
        scan.add_zip(_open_zip(source, label))
        return scan.result(label)
    root = Path(source)
    if not root.exists():
        raise DataError("the image folder does not exist", file=str(source))
    if not root.is_dir():
        raise DataError("expected a folder or a .zip of images", file=str(source))
    scan = _Scan(limits, cap_count=False)
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root).as_posix()
        if not p.is_file() or _hidden(rel):
            continue
        if p.is_symlink() and not posixpath.realpath(p).startswith(posixpath.realpath(root) + "/"):
            scan.refuse(rel, "symbolic link leaving the folder: not read")
            continue
        if not scan.skip_or_candidate(rel):
            continue
        scan.consider(rel, p.stat().st_size, lambda q=p: open(q, "rb"), lambda q=p: q.read_bytes())
    return scan.result(root.name)


def open_image(data: bytes, max_pixels: int | None = None):
    """A PIL RGB image from bytes, its header checked against ``max_pixels`` before decoding (ValueError if not)."""
    from PIL import Image

    cap = ImageLimits.from_env().max_pixels if max_pixels is None else int(max_pixels)
    set_pil_pixel_cap(cap)
    try:
        with Image.open(io.BytesIO(data)) as im:
            w, h = im.size
            if w * h > cap:
                raise ValueError(f"the image declares {w} x {h} = {w * h:,} pixels, over the cap of {cap:,}")
            im.load()
            return im.convert("RGB")
    except ValueError:
        raise
    except Exception as err:  # noqa: BLE001 - PIL raises many types
        raise ValueError(f"{type(err).__name__}: {err}") from None
