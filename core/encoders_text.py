"""Transformer text encoders: any Hugging Face ``transformers`` model (``hf:``) and any sentence-transformers model
(``st:``), with the hidden states of every layer.

Both share :class:`TransformerTextEncoder`: texts are sorted by length (similar lengths share a batch), tokenised
with the model's own tokenizer (padding, truncation to ``max_length``), run once with ``output_hidden_states``, and
pooled over the attention mask. Layer ``k`` is ``hidden_states[k]``: 0 is the embedding layer, 1..L the outputs of
the L transformer blocks. One pass gives

* the final embedding (``hf:`` the last layer pooled with ``pooling``; ``st:`` exactly what
  ``SentenceTransformer.encode`` returns),
* the pooled output of each asked layer (same pooling, not normalised),
* the token outputs of the last layer (``n x T x d`` with an ``n x T`` mask; padding zeroed).

Pooling (:func:`pool_tokens`): ``mean`` (attention-masked mean), ``cls`` (the first token), ``last`` (the last real
token, for decoder models; right or left padding), ``max`` (masked max).

Weights come from the Hugging Face hub into ``cache/hf`` (or ``$PLATOSCOPE_HF_CACHE``), or from a local folder
written by ``save_pretrained``. Loading tries the local cache first (no network), then the hub; an unknown model or
no connection gives a :class:`~core.errors.DataError` naming the model and the cache folder. Remote code is never
run (``trust_remote_code=False``); weights are read from safetensors, or by transformers' ``torch.load`` with
``weights_only=True``.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from .cache import cache_root, sha256_texts
from . import encoders_base
from .dataset import Space
from .device import pick_device
from .encoders_base import _cached, _check_kind, check_texts, parse_layers, safe_name  # noqa: F401
from .errors import DataError

POOLINGS = ("mean", "cls", "last", "max")


def hf_cache_dir() -> Path:
    """Where Hugging Face downloads go: ``$PLATOSCOPE_HF_CACHE``, else ``cache/hf``."""
    path = Path(os.environ.get("PLATOSCOPE_HF_CACHE") or cache_root() / "hf")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pool_tokens(hidden: torch.Tensor, mask: torch.Tensor, pooling: str) -> torch.Tensor:
    """Pool ``b x T x d`` token states over the real tokens (``mask`` b x T, 1 = real) into ``b x d``."""
    m = mask.to(hidden.dtype).unsqueeze(-1)
    if pooling == "mean":
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    if pooling == "cls":
        return hidden[:, 0]
    if pooling == "last":
        positions = torch.arange(mask.shape[1], device=mask.device).expand_as(mask)
        last = torch.where(mask.bool(), positions, torch.zeros_like(positions)).max(dim=1).values
        return hidden[torch.arange(hidden.shape[0], device=hidden.device), last]
    if pooling == "max":
        return hidden.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).max(dim=1).values
    raise DataError(f"unknown pooling {pooling!r}", hint=f"use one of {', '.join(POOLINGS)}")


def _stamp(path: Path) -> str:
    """A fingerprint of a local model folder (names, sizes and mtimes of its files), for cache keys."""
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        if p.is_file():
            st = p.stat()
            h.update(f"{p.relative_to(path)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


class TransformerTextEncoder:
    """Base class: a transformers model + tokenizer, pooled; subclasses say where they come from.

    Parameters
    ----------
    device : torch device or name; None = :func:`core.device.pick_device`.
    batch_size : texts per forward pass.
    max_length : tokens kept per text (also capped by the model's own limit).
    cache_namespace : :mod:`core.cache` namespace for results, or None for no cache.
    """

    family = "hf"
    input_kinds = ("text",)
    pooling = "mean"
    normalise = False

    def __init__(self, device=None, batch_size: int = 64, max_length: int = 512,
                 cache_namespace: str | None = "shared"):
        self.device = device
        self.batch_size = int(batch_size)
        self.max_length = int(max_length)
        self.cache_namespace = cache_namespace

    # -- to be provided -----------------------------------------------------------------------
    def components(self):  # pragma: no cover - abstract
        """``(model, tokenizer)``: the transformers model (eval mode) and its tokenizer."""
        raise NotImplementedError

    @property
    def spec(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def load(self):
        """Load the weights now (downloading them on first use); returns ``(model, tokenizer)``."""
        return self.components()

    @property
    def model_key(self) -> str:
        return self.spec

    @property
    def label(self) -> str:
        return self.spec

    def _final(self, texts: list[str], hidden_states, mask: torch.Tensor) -> torch.Tensor:
        """The final embedding of one batch (default: the last layer pooled, L2-normalised if ``normalise``)."""
        out = pool_tokens(hidden_states[-1], mask, self.pooling)
        return torch.nn.functional.normalize(out, dim=-1) if self.normalise else out

    # -- shape ----------------------------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        """Number of transformer blocks L (layers 1..L; 0 is the embedding layer)."""
        config = self.components()[0].config
        for attr in ("num_hidden_layers", "n_layer", "num_layers"):
            value = getattr(config, attr, None)
            if isinstance(value, int):
                return value
        text_config = getattr(config, "text_config", None)
        if text_config is not None and isinstance(getattr(text_config, "num_hidden_layers", None), int):
            return text_config.num_hidden_layers
        raise DataError(f"cannot tell how many layers {self.label} has", hint="encode without --layers")

    def layers_for(self, kind: str = "text", layers=True) -> tuple[int, ...]:
        return parse_layers(layers, self.n_layers, self.label)

    def _max_length(self, model, tokenizer) -> int:
        limits = [self.max_length]
        for value in (getattr(tokenizer, "model_max_length", None),
                      getattr(model.config, "max_position_embeddings", None)):
            if isinstance(value, int) and 0 < value < 10**7:
                limits.append(value)
        return min(limits)

    # -- public API -----------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], progress=None) -> np.ndarray:
        """Final embeddings ``n x d`` (float32)."""
        return self.encode_all(texts, layers=(), tokens=False, progress=progress)["embedding"]

    def encode_layers(self, texts: Sequence[str], layers: Iterable[int] | str | bool = True,
                      progress=None) -> dict[int, np.ndarray]:
        """Pooled hidden states (not normalised) of ``layers`` (default: the blocks 1..L): ``n x d`` each."""
        return self.encode_all(texts, layers=layers, tokens=False, progress=progress)["layers"]

    def encode_tokens(self, texts: Sequence[str], progress=None) -> tuple[np.ndarray, np.ndarray]:
        """Last-layer token outputs ``n x T x d`` (float32, padding zeroed) and their mask ``n x T`` (bool)."""
        out = self.encode_all(texts, layers=(), tokens=True, progress=progress)
        return out["tokens"], out["mask"]

    def encode_all(self, texts: Sequence[str], layers=(), tokens: bool = False, progress=None) -> dict:
        """One pass giving ``{"embedding", "layers": {k: array}, "tokens", "mask"}`` (tokens only if asked)."""
        texts = check_texts(texts)
        layers = self.layers_for("text", layers) if layers else ()
        options = {"layers": layers, "tokens": bool(tokens), "max_length": self.max_length,
                   "pooling": self.pooling}
        return _cached(self.cache_namespace, self._run, sha256_texts(texts), self.model_key, options,
                       (texts, layers, bool(tokens)), progress)

    def encode_inputs(self, kind: str, inputs, *, layers=(), tokens: bool = False, progress=None) -> dict:
        """The family-independent entry point (see :func:`core.encoders.encode_inputs`)."""
        _check_kind(self, kind)
        return self.encode_all(inputs, layers=layers, tokens=tokens, progress=progress)

    def embed_empty_string(self, layer: int | None = None) -> np.ndarray:
        """The embedding of ``""`` (the hierarchy root): the final embedding, or layer ``layer`` pooled. ``(d,)``."""
        out = self._run(([""], (layer,) if layer is not None else (), False), None)
        return out["layers"][layer][0] if layer is not None else out["embedding"][0]

    def _run(self, payload, progress):
        texts, layers, want_tokens = payload
        model, tokenizer = self.components()
        device = pick_device(self.device)
        model.to(device)
        max_length = self._max_length(model, tokenizer)
        n = len(texts)
        order = np.argsort([-len(t) for t in texts], kind="stable")
        emb, lay, tok_chunks = None, {l: None for l in layers}, []
        done = 0
        with torch.inference_mode():
            for start in range(0, n, self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = [texts[i] for i in idx]
                enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                                return_tensors="pt").to(device)
                if enc["input_ids"].shape[1] == 0:
                    raise DataError(f"{self.label} turns this text into no tokens at all", row=int(idx[0]),
                                    hint="the tokenizer adds no special tokens; give a non-empty text")
                mask = enc.get("attention_mask")
                if mask is None:
                    mask = torch.ones(enc["input_ids"].shape, dtype=torch.long, device=device)
                out = model(**enc, output_hidden_states=bool(layers), return_dict=True)
                last = getattr(out, "last_hidden_state", None)
                if not layers and last is None:  # a model without last_hidden_state: ask for every layer
                    out = model(**enc, output_hidden_states=True, return_dict=True)
                hs = out.hidden_states if layers or last is None else (last,)
                final = self._final(batch, hs, mask).float().cpu().numpy()
                if emb is None:
                    emb = np.empty((n, final.shape[1]), np.float32)
                emb[idx] = final
                for l in layers:
                    pooled = pool_tokens(hs[l], mask, self.pooling).float().cpu().numpy()
                    if lay[l] is None:
                        lay[l] = np.empty((n, pooled.shape[1]), np.float32)
                    lay[l][idx] = pooled
                if want_tokens:
                    m = mask.unsqueeze(-1).to(hs[-1].dtype)
                    tok_chunks.append((idx, (hs[-1] * m).float().cpu().numpy(), mask.bool().cpu().numpy()))
                done += len(idx)
                if progress is not None:
                    progress(done, n)
        result = {"embedding": emb, "layers": lay}
        if want_tokens:
            T = max(c[1].shape[1] for c in tok_chunks)
            d = tok_chunks[0][1].shape[2]
            toks = np.zeros((n, T, d), np.float32)
            mask_all = np.zeros((n, T), bool)
            for idx, h, mk in tok_chunks:
                toks[idx, :h.shape[1]] = h
                mask_all[idx, :mk.shape[1]] = mk
            result["tokens"], result["mask"] = toks, mask_all
        return result

    # -- spaces ---------------------------------------------------------------------------------
    @property
    def name(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def space_name(self, kind: str = "text") -> str:
        return self.name

    def space_info(self, kind: str = "text", layer: int | None = None, tokens: bool = False) -> dict:
        """Provenance recorded with each space: enough to rebuild the encoder (``spec``) and its root."""
        info = {"encoder": self.label, "spec": self.spec, "family": self.family, "input": "text",
                "pooling": self.pooling, "normalised": bool(self.normalise and layer is None and not tokens)}
        if layer is not None:
            info["layer"] = int(layer)
            info["normalised"] = False
        if tokens:
            info.update(layer=self.n_layers, tokens="word pieces (last layer)")
            info.pop("pooling")
        return info

    def spaces(self, texts: Sequence[str], *, layers=False, tokens: bool = False, prefix: str | None = None,
               progress=None) -> dict[str, Space]:
        """Spaces ready for a Dataset: ``prefix``, ``prefix_layerK`` (if layers), ``prefix_tokens`` (if tokens)."""
        prefix = prefix or self.name
        out = self.encode_all(texts, layers=layers, tokens=tokens, progress=progress)
        spaces = {prefix: Space(prefix, out["embedding"], modality="text", info=self.space_info())}
        for l, arr in out["layers"].items():
            name = f"{prefix}_layer{l}"
            spaces[name] = Space(name, arr, modality="text", info=self.space_info(layer=l))
        if tokens:
            name = f"{prefix}_tokens"
            spaces[name] = Space(name, out["tokens"], mask=out["mask"], modality="text",
                                 info=self.space_info(tokens=True))
        return spaces


# ---------------------------------------------------------------------------------------------
# loading from the hub or a folder
# ---------------------------------------------------------------------------------------------
def _offline_error(model_id: str, cache_dir: Path, cause: str, family: str) -> DataError:
    return DataError(
        f"could not get the {family} model {model_id!r}: it is downloaded from the Hugging Face hub once, then "
        f"kept in {cache_dir}",
        hint="check the model id (e.g. hf:bert-base-uncased, st:sentence-transformers/all-mpnet-base-v2), connect "
             "to the internet for its first use, or give a local folder written by save_pretrained; 'minilm' "
             f"works offline. Cause: {cause}")


def load_from_hub(model_id: str, loader, family: str):
    """``loader(local_files_only: bool)`` from a local folder, the cache, or the hub; a DataError when it cannot."""
    cache_dir = hf_cache_dir()
    if Path(model_id).expanduser().is_dir():
        try:
            return loader(True)
        except Exception as err:  # noqa: BLE001 - transformers raises OSError/ValueError/KeyError for bad folders
            raise DataError(f"the folder {model_id!r} is not a {family} model ({type(err).__name__}: "
                            f"{str(err)[:300]})", file=model_id,
                            hint="give a folder written by save_pretrained (config.json, weights, tokenizer)") from None
    if model_id.startswith((".", "/", "~")) or "\\" in model_id:
        raise DataError(f"the model folder {model_id!r} does not exist", file=model_id)
    try:
        return loader(True)
    except Exception:  # noqa: BLE001 - not in the cache yet
        pass
    if os.environ.get("HF_HUB_OFFLINE") == "1" or not encoders_base._reachable("huggingface.co"):
        raise _offline_error(model_id, cache_dir, "cannot reach huggingface.co", family)
    try:
        return loader(False)
    except Exception as err:  # noqa: BLE001
        name = type(err).__name__
        if "RepositoryNotFound" in name or "not a valid model identifier" in str(err) or "404" in str(err):
            raise DataError(f"the Hugging Face hub has no model {model_id!r}", hint="check the spelling of the "
                            "model id (owner/name), e.g. hf:bert-base-uncased") from None
        if "trust_remote_code" in str(err):
            raise DataError(f"{model_id!r} needs remote code, which Platoscope never runs",
                            hint="use a model that transformers supports natively") from None
        raise _offline_error(model_id, cache_dir, f"{name}: {str(err)[:200]}", family) from None


_HF_MODELS: dict = {}


class HFTextEncoder(TransformerTextEncoder):
    """Any Hugging Face transformers text model (``AutoModel`` + ``AutoTokenizer``).

    Parameters
    ----------
    model_id : a hub id (``bert-base-uncased``, ``FacebookAI/roberta-base``) or a local ``save_pretrained`` folder.
    pooling : ``mean`` (default), ``cls`` or ``last`` (decoder models); also ``max``.
    device, batch_size, max_length, cache_namespace : as for :class:`TransformerTextEncoder`.
    """

    family = "hf"

    def __init__(self, model_id: str, pooling: str = "mean", device=None, batch_size: int = 64,
                 max_length: int = 512, cache_namespace: str | None = "shared"):
        super().__init__(device=device, batch_size=batch_size, max_length=max_length,
                         cache_namespace=cache_namespace)
        if pooling not in POOLINGS:
            raise DataError(f"unknown pooling {pooling!r}", hint=f"use one of {', '.join(POOLINGS)}")
        self.model_id = str(model_id)
        self.pooling = pooling

    @property
    def spec(self) -> str:
        return f"hf:{self.model_id}"

    @property
    def label(self) -> str:
        return self.spec

    @property
    def model_key(self) -> str:
        path = Path(self.model_id).expanduser()
        return f"{self.spec}@{_stamp(path)}" if path.is_dir() else self.spec

    @property
    def name(self) -> str:
        base = f"hf_{safe_name(Path(self.model_id).name if Path(self.model_id).expanduser().is_dir() else self.model_id.split('/')[-1])}"
        return base if self.pooling == "mean" else f"{base}_{self.pooling}"

    def components(self):
        key = (self.model_key, str(pick_device(self.device)))
        if key not in _HF_MODELS:
            from transformers import AutoModel, AutoTokenizer

            def loader(local_only: bool):
                kw = dict(cache_dir=str(hf_cache_dir()), local_files_only=local_only, trust_remote_code=False)
                tok = AutoTokenizer.from_pretrained(self.model_id, **kw)
                model = AutoModel.from_pretrained(self.model_id, **kw)
                return model, tok

            model, tok = load_from_hub(self.model_id, loader, "Hugging Face")
            if tok.pad_token is None:  # decoder tokenizers (GPT-2 ...) have none: pad with end-of-text
                tok.pad_token = tok.eos_token or tok.unk_token
            model.eval().to(pick_device(self.device))
            _HF_MODELS.clear() if len(_HF_MODELS) > 4 else None
            _HF_MODELS[key] = (model, tok)
        return _HF_MODELS[key]


_ST_POOLING = {"mean": "mean", "cls": "cls", "max": "max", "lasttoken": "last"}
_ST_MODELS: dict = {}


class SentenceTransformerEncoder(TransformerTextEncoder):
    """Any sentence-transformers model; the final embedding is exactly ``SentenceTransformer.encode``'s.

    When the model is a plain Transformer -> Pooling (mean / cls / max / last token) [-> Normalize] pipeline, one
    forward pass gives the final embedding and the layers; otherwise the final embedding comes from
    ``SentenceTransformer.encode`` on the same batch (a second pass when layers or tokens are asked for).
    Layers are pooled like the model's own Pooling module (mean when it has none).
    """

    family = "st"

    def __init__(self, model_id: str, device=None, batch_size: int = 64, max_length: int = 512,
                 cache_namespace: str | None = "shared", model_path: str | None = None):
        super().__init__(device=device, batch_size=batch_size, max_length=max_length,
                         cache_namespace=cache_namespace)
        self.model_id = str(model_id)
        self.model_path = model_path
        self._st = None

    @property
    def spec(self) -> str:
        return f"st:{self.model_id}"

    @property
    def label(self) -> str:
        return self.spec

    @property
    def name(self) -> str:
        return f"st_{safe_name(self.model_id.split('/')[-1])}"

    def _load_st(self, device: str):
        from sentence_transformers import SentenceTransformer

        def loader(local_only: bool):
            return SentenceTransformer(self.model_id, device=device, cache_folder=str(hf_cache_dir()),
                                       local_files_only=local_only, trust_remote_code=False)
        return load_from_hub(self.model_id, loader, "sentence-transformers")

    def sentence_transformer(self):
        """The underlying ``SentenceTransformer`` (loaded once per device)."""
        if self._st is None:
            device = str(pick_device(self.device))
            key = (self.model_path or self.model_id, device)
            if key not in _ST_MODELS:
                _ST_MODELS[key] = self._load_st(device).eval()
            self._st = _ST_MODELS[key]
            self.pooling, self._plan = self._pipeline(self._st)
            if self._plan:
                self.normalise = type(list(self._st)[-1]).__name__ == "Normalize"
        return self._st

    @staticmethod
    def _pipeline(st) -> tuple[str, bool]:
        """(pooling of the model's Pooling module, or mean; whether ``st`` is Transformer -> Pooling [-> Normalize],
        so that one pass over the hidden states gives exactly ``SentenceTransformer.encode``)."""
        mods = list(st)
        names = [type(m).__name__ for m in mods]
        pool = next((m for m in mods if type(m).__name__ == "Pooling"), None)
        cfg = pool.get_config_dict() if pool is not None and hasattr(pool, "get_config_dict") else {}
        pooling = _ST_POOLING.get(cfg.get("pooling_mode"), "mean")
        plain = (len(mods) in (2, 3) and names[0] == "Transformer" and names[1] == "Pooling"
                 and (len(mods) == 2 or names[2] == "Normalize")
                 and cfg.get("pooling_mode") in _ST_POOLING and cfg.get("include_prompt", True) is not False)
        return pooling, plain

    def components(self):
        st = self.sentence_transformer()
        first = st[0]
        model = getattr(first, "auto_model", None) or getattr(first, "model", None)
        return model, st.tokenizer

    def _max_length(self, model, tokenizer) -> int:
        limit = getattr(self.sentence_transformer(), "max_seq_length", None)
        base = super()._max_length(model, tokenizer)
        return min(base, limit) if isinstance(limit, int) and limit > 0 else base

    def _final(self, texts, hidden_states, mask):
        self.sentence_transformer()
        if self._plan:
            return super()._final(texts, hidden_states, mask)
        return self._st.encode(texts, batch_size=len(texts), convert_to_tensor=True, show_progress_bar=False)

    def space_info(self, kind: str = "text", layer: int | None = None, tokens: bool = False) -> dict:
        self.sentence_transformer()
        info = super().space_info(kind, layer, tokens)
        if layer is None and not tokens and not self._plan:
            info["pooling"] = "the model's own (SentenceTransformer.encode)"
        return info
