"""What every encoder family shares (:mod:`core.encoders`, :mod:`core.encoders_text`, :mod:`core.encoders_vision`,
:mod:`core.encoders_python`): checks of the inputs (texts, kinds, layers), the on-disk cache of encodings keyed by
content, the image files abstraction with batched decoding, stacking of token sets, and the hub helpers.

The family modules build on this one and never on each other or on :mod:`core.encoders` (the factory), so the
encoders have no import cycle: :func:`core.encoders.make_encoder` is the one place that knows every family.
"""
from __future__ import annotations

import io
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from .archive import IMAGE_EXTENSIONS  # noqa: F401  (the extensions an image encoder reads; one list, in core.archive)
from .cache import get_memory, sha256_bytes
from .errors import DataError


ProgressFn = Callable[[int, int], None]


def safe_name(text: str, limit: int = 48) -> str:
    """A space-name-safe lower-case slug of ``text`` (letters, digits, underscores)."""
    slug = "".join(c if c.isalnum() else "_" for c in str(text)).strip("_").lower()
    while "__" in slug:
        slug = slug.replace("__", "_")
    return slug[:limit].strip("_") or "model"


def parse_layers(layers, n_layers: int, label: str) -> tuple[int, ...]:
    """``layers`` as a tuple of ints: None/False/() = none, True/'all' = the blocks 1..L, or ints in 0..L."""
    if layers is None or layers is False:
        return ()
    if layers is True or (isinstance(layers, str) and layers.strip().lower() == "all"):
        return tuple(range(1, n_layers + 1))
    if isinstance(layers, str):
        try:
            layers = [int(p) for p in layers.replace(" ", "").split(",") if p]
        except ValueError:
            raise DataError(f"layers {layers!r}: give 'all' or comma-separated layer numbers, e.g. 1,4,6") from None
    out = tuple(dict.fromkeys(int(l) for l in layers))
    bad = [l for l in out if not 0 <= l <= n_layers]
    if bad:
        raise DataError(f"{label} has layers 1..{n_layers} (and 0, the embeddings), not {bad}")
    return out


def _check_kind(encoder, kind: str) -> None:
    if kind not in encoder.input_kinds:
        what = {"text": "texts", "image": "images", "pointcloud": "point clouds"}.get(kind, kind)
        raise DataError(f"{encoder.label} cannot encode {what}: it takes {', '.join(encoder.input_kinds)}",
                        hint={"image": "use an image encoder (timm:..., open_clip:...)",
                              "text": "use a text encoder (minilm, hf:..., st:..., open_clip:...)",
                              "pointcloud": "use a point-cloud encoder (python:core.demo.pointnet:platoscope_encoder "
                                            "or your own python:module:factory)"}.get(kind))


def check_texts(texts: Sequence, column: str | None = None, file: str | None = None) -> list[str]:
    """The texts as a list of str, or a DataError naming the first empty / non-text row."""
    out = []
    for i, t in enumerate(texts):
        if t is None or (isinstance(t, float) and np.isnan(t)):
            raise DataError("a caption is empty", file=file, column=column, row=i,
                            hint="every row needs a non-empty caption; drop the empty rows")
        if isinstance(t, bytes):
            try:
                t = t.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"the text is not UTF-8 (byte offset {err.start} of this row)", file=file,
                                column=column, row=i, hint="save the file as UTF-8") from None
        t = str(t)
        if not t.strip():
            raise DataError("a caption is empty", file=file, column=column, row=i,
                            hint="every row needs a non-empty caption; drop the empty rows")
        out.append(t)
    if not out:
        raise DataError("there are no captions to encode", file=file, column=column,
                        hint="the caption column has no rows")
    return out


def _cached(namespace: str, func, content_key: str, model_key: str, options: dict, payload, progress):
    """Run ``func(payload, progress)`` through the joblib cache keyed by (content_key, model_key, options)."""
    if namespace is None:
        return func(payload, progress)
    memory = get_memory(namespace)
    cached = memory.cache(_cache_entry, ignore=["func", "payload", "progress"])
    return cached(content_key, model_key, options, func=func, payload=payload, progress=progress)


def _cache_entry(content_key, model_key, options, *, func, payload, progress):  # noqa: ARG001 - keys hash the call
    return func(payload, progress)


@dataclass
class ImageFiles:
    """Image files found in a folder or a zip: ``names`` (relative paths) and a reader of their bytes.

    ``ignored`` lists ``(name, reason)`` for files that are not images by their extension.
    """

    names: list[str]
    read: Callable[[str], bytes]
    source: str
    ignored: list[tuple[str, str]] = field(default_factory=list)

    def content_key(self) -> str:
        import hashlib
        h = hashlib.sha256()
        for name in self.names:
            h.update(name.encode("utf-8", "surrogatepass") + b"\0")
            h.update(sha256_bytes(self.read(name)).encode())
        return h.hexdigest()


def decode_image(data: bytes):
    """A PIL RGB image from bytes, or raise ValueError with the decoder's reason."""
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as im:
            im.load()
            return im.convert("RGB")
    except Exception as err:  # PIL raises many types (UnidentifiedImageError, OSError, DecompressionBombError...)
        raise ValueError(f"{type(err).__name__}: {err}") from None


@contextmanager
def _hf_offline():
    """Force huggingface_hub offline (cache only) for the duration (it reads its constants at call time)."""
    try:
        from huggingface_hub import constants
    except ImportError:  # pragma: no cover
        yield
        return
    old = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = old


def _reachable(host: str, timeout: float = 3.0) -> bool:
    """Whether a TCP connection to ``host``:443 opens within ``timeout`` seconds."""
    import socket
    try:
        socket.create_connection((host, 443), timeout=timeout).close()
        return True
    except OSError:
        return False


def run_image_batches(images: ImageFiles, preprocess, forward, batch_size: int, device, progress=None,
                      layers=(), want_tokens: bool = False) -> dict:
    """Decode, preprocess and encode ``images`` in batches (undecodable files skipped and listed).

    ``forward(x, layers, want_tokens)`` maps a ``b x 3 x H x W`` batch to ``{"embedding": b x d, "layers":
    {k: b x d}, "tokens": b x T x d}`` tensors. Returns ``{"embedding", "layers", "names", "skipped"}`` (numpy)
    plus ``"tokens"`` / ``"mask"`` (all True) when asked.
    """
    names, skipped, emb, lay, chunks = [], [], [], {l: [] for l in layers}, []
    batch, batch_names = [], []
    n = len(images.names)

    def flush():
        if not batch:
            return
        with torch.inference_mode():
            out = forward(torch.stack(batch).to(device), layers, want_tokens)
        emb.append(out["embedding"].float().cpu().numpy())
        for l in layers:
            lay[l].append(out["layers"][l].float().cpu().numpy())
        if want_tokens:
            tok = out["tokens"].float().cpu().numpy()
            chunks.append((tok, np.ones(tok.shape[:2], bool)))
        names.extend(batch_names)
        batch.clear()
        batch_names.clear()

    for i, name in enumerate(images.names):
        try:
            batch.append(preprocess(decode_image(images.read(name))))
            batch_names.append(name)
        except ValueError as err:
            skipped.append((name, str(err)[:200]))
        if len(batch) >= batch_size:
            flush()
        if progress is not None and (len(batch) == 0 or i == n - 1):
            progress(i + 1, n)
    flush()
    if progress is not None:
        progress(n, n)
    result = {"embedding": np.concatenate(emb) if emb else np.zeros((0, 0), np.float32),
              "layers": {l: np.concatenate(v) for l, v in lay.items() if v},
              "names": names, "skipped": skipped + list(images.ignored)}
    if want_tokens and chunks:
        result["tokens"], result["mask"] = stack_token_chunks(chunks)
    return result


def stack_token_chunks(chunks):
    """Stack ``[(b x T_i x d tokens, b x T_i mask)]`` batches into ``n x T x d`` + ``n x T`` (padded, masked)."""
    T = max(c[0].shape[1] for c in chunks)
    d = chunks[0][0].shape[2]
    n = sum(c[0].shape[0] for c in chunks)
    toks = np.zeros((n, T, d), np.float32)
    mask = np.zeros((n, T), bool)
    row = 0
    for h, mk in chunks:
        toks[row:row + len(h), :h.shape[1]] = h
        mask[row:row + len(h), :mk.shape[1]] = mk
        row += len(h)
    return toks, mask
