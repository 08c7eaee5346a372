"""Image encoders: any timm model (``timm:``) and any torchvision classification model (``torchvision:``).

Each image is decoded (:func:`core.encoders_base.decode_image`; undecodable files are skipped and listed, never fatal),
preprocessed by the model's own pipeline and run in batches. One pass gives

* the final embedding: the model's pooled pre-logits features (timm: ``forward_head(forward_features(x),
  pre_logits=True)``; torchvision: the input of the last ``Linear`` layer), not normalised;
* layer ``k`` (1..L): the output of block ``k`` (timm: ``forward_intermediates``, the blocks of a ViT, the stages
  of a CNN; torchvision: forward hooks on the blocks), averaged over patches / spatial positions;
* the patch tokens of the final feature map (``n x T x d``; prefix tokens such as [CLS] left out; every token is
  real, so the mask is all True).

Preprocessing: timm's ``resolve_data_config`` + ``create_transform`` (the pretrained config's resize, crop, mean and
std); torchvision's ``weights.transforms()`` (ImageNet defaults for random weights).

Weights: timm downloads into ``cache/timm`` (or ``$PLATOSCOPE_TIMM_CACHE``, safetensors first, else
``torch.load(weights_only=True)``), torchvision into ``cache/torch`` (``weights_only=True``). Offline or unknown
model -> a :class:`~core.errors.DataError` naming the model and the folder.
"""
from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import torch

from .cache import cache_root
from .device import pick_device
from . import encoders_base
from .encoders_base import (IMAGE_EXTENSIONS, _cached, _check_kind, _hf_offline, parse_layers, run_image_batches,
                            safe_name)
from .errors import DataError


def timm_cache_dir() -> Path:
    path = Path(os.environ.get("PLATOSCOPE_TIMM_CACHE") or cache_root() / "timm")
    path.mkdir(parents=True, exist_ok=True)
    return path


def torch_cache_dir() -> Path:
    path = Path(os.environ.get("PLATOSCOPE_TORCH_CACHE") or cache_root() / "torch")
    path.mkdir(parents=True, exist_ok=True)
    return path


def pool_feature_map(x: torch.Tensor) -> torch.Tensor:
    """``b x C x H x W`` -> mean over positions; ``b x T x d`` -> mean over tokens; ``b x d`` unchanged."""
    if x.ndim == 4:
        return x.mean(dim=(2, 3))
    if x.ndim == 3:
        return x.mean(dim=1)
    if x.ndim == 2:
        return x
    raise DataError(f"cannot pool a feature map of shape {tuple(x.shape)}")


def as_tokens(x: torch.Tensor, prefix: int = 0) -> torch.Tensor:
    """Feature map -> ``b x T x d`` tokens (NCHW flattened over positions; ``prefix`` leading tokens dropped)."""
    if x.ndim == 4:
        return x.flatten(2).transpose(1, 2)
    if x.ndim == 3:
        return x[:, prefix:]
    raise DataError(f"the model's final features have shape {tuple(x.shape)}: no tokens to give",
                    hint="encode without --tokens")


def find_blocks(model) -> list[tuple[str, torch.nn.Module]]:
    """The model's sequence of blocks: ``blocks`` / ``stages`` / ``layers`` / ``features`` / ``encoder.layers`` /
    ``layer1..layer4`` (ResNets), as ``(dotted name, module)``."""
    if all(hasattr(model, f"layer{k}") for k in (1, 2, 3, 4)):
        return [(f"layer{k}", getattr(model, f"layer{k}")) for k in (1, 2, 3, 4)]
    for path in ("blocks", "stages", "layers", "encoder.layers", "features", "trunk.blocks"):
        obj = model
        for part in path.split("."):
            obj = getattr(obj, part, None)
            if obj is None:
                break
        if isinstance(obj, (torch.nn.Sequential, torch.nn.ModuleList)) and len(obj) >= 2:
            return [(f"{path}.{i}", m) for i, m in enumerate(obj)]
    return []


class ImageModelEncoder:
    """Shared batching of image encoders; subclasses give ``load()`` -> (model, preprocess) and ``_forward``."""

    family = "image"
    input_kinds = ("image",)

    def __init__(self, device=None, batch_size: int = 64, cache_namespace: str | None = "shared"):
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_namespace = cache_namespace
        self._loaded = None

    @property
    def label(self) -> str:
        return self.spec

    @property
    def model_key(self) -> str:
        return self.spec

    def layers_for(self, kind: str = "image", layers=True) -> tuple[int, ...]:
        out = parse_layers(layers, self.n_layers, self.label)
        if 0 in out:
            raise DataError(f"{self.label}: image layers are numbered 1..{self.n_layers} (block outputs), not 0")
        return out

    def encode_images(self, images, layers=(), tokens: bool = False, progress=None) -> dict:
        """Encode every decodable image of ``images`` (:class:`core.encoders.ImageFiles`).

        Returns ``{"embedding": m x d, "layers": {k: m x d}, "names": the m kept names, "skipped": [(name, reason)]}``
        plus ``"tokens"`` / ``"mask"`` when asked.
        """
        if not images.names:
            raise DataError("no image files found", file=images.source,
                            hint=f"image extensions: {', '.join(IMAGE_EXTENSIONS)}")
        layers = self.layers_for("image", layers) if layers else ()
        result = _cached(self.cache_namespace, self._run_images, images.content_key(), self.model_key,
                         {"layers": layers, "tokens": bool(tokens), "tower": "image"},
                         (images, layers, bool(tokens)), progress)
        if not result["names"]:
            first = result["skipped"][0]
            raise DataError(f"none of the {len(images.names)} images could be decoded (e.g. {first[0]}: {first[1]})",
                            file=images.source)
        return result

    def encode_inputs(self, kind: str, inputs, *, layers=(), tokens: bool = False, progress=None) -> dict:
        _check_kind(self, kind)
        return self.encode_images(inputs, layers=layers, tokens=tokens, progress=progress)

    def _run_images(self, payload, progress):
        images, layers, want_tokens = payload
        _, preprocess = self.load()
        return run_image_batches(images, preprocess, self._forward, self.batch_size, pick_device(self.device),
                                 progress, layers, want_tokens)

    def space_name(self, kind: str = "image") -> str:
        return self.name

    def space_info(self, kind: str = "image", layer: int | None = None, tokens: bool = False) -> dict:
        info = {"encoder": self.label, "spec": self.spec, "family": self.family, "input": "image",
                "pooling": "the model's own (pre-logits)", "normalised": False,
                "random_weights": not self.pretrained}
        if layer is not None:
            info.update(layer=int(layer), pooling="mean over positions")
        if tokens:
            info.update(tokens="patches (final features)", pooling=None)
        return info


class TimmEncoder(ImageModelEncoder):
    """A timm image model (``timm.list_models()``), e.g. ``vit_small_patch14_dinov2.lvd142m``.

    Parameters
    ----------
    model_name : a timm model name, optionally with a pretrained tag after a dot.
    pretrained : download the pretrained weights (False: random weights, plumbing only).
    model_kwargs : extra ``timm.create_model`` arguments (e.g. ``img_size=32`` for tests).
    """

    family = "timm"

    def __init__(self, model_name: str, pretrained: bool = True, device=None, batch_size: int = 64,
                 cache_namespace: str | None = "shared", model_kwargs: dict | None = None):
        super().__init__(device=device, batch_size=batch_size, cache_namespace=cache_namespace)
        self.model_name = str(model_name)
        self.pretrained = bool(pretrained)
        self.model_kwargs = dict(model_kwargs or {})
        check_timm_model(self.model_name)

    @property
    def spec(self) -> str:
        return f"timm:{self.model_name}" + ("" if self.pretrained else ":none")

    @property
    def model_key(self) -> str:
        return self.spec + (f"{sorted(self.model_kwargs.items())}" if self.model_kwargs else "")

    @property
    def name(self) -> str:
        return f"timm_{safe_name(self.model_name)}" + ("" if self.pretrained else "_random")

    def load(self):
        """(model, preprocess), downloading the weights into cache/timm on first use."""
        if self._loaded is None:
            import timm
            from timm.data import create_transform, resolve_data_config

            def create():
                return timm.create_model(self.model_name, pretrained=self.pretrained,
                                         cache_dir=str(timm_cache_dir()), **self.model_kwargs)
            if not self.pretrained:
                model = create()
            else:
                try:
                    with _hf_offline():
                        model = create()
                except Exception:  # noqa: BLE001 - not cached yet (or no weights)
                    host = _timm_weights_host(self.model_name)
                    if host is None:
                        raise DataError(f"timm has no pretrained weights for {self.model_name!r}",
                                        hint="add the pretrained tag (timm.list_pretrained()) or use "
                                             f"timm:{self.model_name}:none for random weights") from None
                    if not encoders_base._reachable(host):
                        raise _offline_error(self.model_name, timm_cache_dir(), f"cannot reach {host}") from None
                    try:
                        model = create()
                    except Exception as err:  # noqa: BLE001
                        raise _offline_error(self.model_name, timm_cache_dir(),
                                             f"{type(err).__name__}: {str(err)[:200]}") from None
            model.eval().to(pick_device(self.device))
            size = self.model_kwargs.get("img_size")
            args = {"input_size": (3, *((size, size) if isinstance(size, int) else tuple(size)))} if size else {}
            config = resolve_data_config(args, model=model)
            self.data_config = dict(config)
            self._loaded = (model, create_transform(**config))
        return self._loaded

    @property
    def n_layers(self) -> int:
        model, _ = self.load()
        if not hasattr(self, "_n_layers"):
            if hasattr(model, "forward_intermediates"):
                size = self.data_config.get("input_size", (3, 224, 224))
                x = torch.zeros(1, *size, device=next(model.parameters()).device)
                with torch.inference_mode():
                    try:
                        self._n_layers = len(model.forward_intermediates(x, intermediates_only=True))
                        self._hooks = False
                    except (NotImplementedError, AttributeError):
                        self._n_layers, self._hooks = len(find_blocks(model)), True
            else:
                self._n_layers, self._hooks = len(find_blocks(model)), True
        return self._n_layers

    def _forward(self, x, layers, want_tokens):
        model, _ = self.load()
        out = {"layers": {}}
        if layers:
            self.n_layers  # noqa: B018 - decides hooks vs forward_intermediates
        if layers and not self._hooks:
            final, inter = model.forward_intermediates(x, indices=[l - 1 for l in layers])
            out["layers"] = {l: pool_feature_map(h) for l, h in zip(layers, inter)}
        elif layers:
            final, grabbed = run_with_hooks(model, x, [find_blocks(model)[l - 1][1] for l in layers],
                                            model.forward_features)
            out["layers"] = {l: pool_feature_map(h) for l, h in zip(layers, grabbed)}
        else:
            final = model.forward_features(x)
        out["embedding"] = model.forward_head(final, pre_logits=True)
        if want_tokens:
            out["tokens"] = as_tokens(final, int(getattr(model, "num_prefix_tokens", 0) or 0))
        return out


def run_with_hooks(model, x, modules, forward):
    """``forward(x)`` and the outputs of ``modules`` (forward hooks, removed afterwards)."""
    grabbed: dict[int, torch.Tensor] = {}
    handles = []
    for i, m in enumerate(modules):
        def hook(_m, _inp, output, i=i):
            grabbed[i] = output[0] if isinstance(output, (tuple, list)) else output
        handles.append(m.register_forward_hook(hook))
    try:
        result = forward(x)
    finally:
        for h in handles:
            h.remove()
    return result, [grabbed[i] for i in range(len(modules))]


def check_timm_model(model_name: str) -> None:
    import timm
    base = model_name.split(".")[0]
    if timm.is_model(base):
        return
    names = timm.list_models()
    close = difflib.get_close_matches(base, names, n=5, cutoff=0.6)
    raise DataError(f"timm does not know the model {model_name!r}",
                    hint=("close matches: " + ", ".join(close)) if close else
                    "see timm.list_models() (e.g. timm:vit_small_patch14_dinov2.lvd142m, timm:resnet50.a1_in1k)")


def _timm_weights_host(model_name: str) -> str | None:
    from urllib.parse import urlparse
    try:
        import timm
        cfg = timm.models.get_pretrained_cfg(model_name)
    except Exception:  # noqa: BLE001
        return None
    if cfg is None:
        return None
    if getattr(cfg, "hf_hub_id", None):
        return "huggingface.co"
    url = getattr(cfg, "url", None)
    return urlparse(url).hostname if url else None


def _offline_error(model_name: str, cache_dir: Path, cause: str) -> DataError:
    return DataError(f"could not get the pretrained weights of {model_name!r}: they are downloaded once, then kept "
                     f"in {cache_dir}",
                     hint="connect to the internet for the first use of this model, or use random weights "
                          f"(plumbing only). Cause: {cause}")


class TorchvisionEncoder(ImageModelEncoder):
    """A torchvision classification model (``torchvision.models.list_models()``) with its weights enum.

    Parameters
    ----------
    model_name : e.g. ``resnet50``, ``vit_b_16``, ``convnext_tiny``.
    weights : a weights name of the model (``DEFAULT``, ``IMAGENET1K_V2`` ...) or None for random weights.
    """

    family = "torchvision"

    def __init__(self, model_name: str, weights: str | None = "DEFAULT", device=None, batch_size: int = 64,
                 cache_namespace: str | None = "shared"):
        super().__init__(device=device, batch_size=batch_size, cache_namespace=cache_namespace)
        import torchvision
        self.model_name = str(model_name)
        self.weights = weights
        names = torchvision.models.list_models()
        if self.model_name not in names:
            close = difflib.get_close_matches(self.model_name, names, n=5, cutoff=0.6)
            raise DataError(f"torchvision does not know the model {self.model_name!r}",
                            hint=("close matches: " + ", ".join(close)) if close else
                            "see torchvision.models.list_models()")
        if weights is not None:
            enum = torchvision.models.get_model_weights(self.model_name)
            valid = ["DEFAULT"] + [w.name for w in enum]
            if weights not in valid:
                raise DataError(f"torchvision has no weights {weights!r} for {self.model_name!r}",
                                hint="weights: " + ", ".join(valid))

    @property
    def pretrained(self) -> bool:
        return self.weights is not None

    @property
    def spec(self) -> str:
        return f"torchvision:{self.model_name}:{self.weights or 'none'}"

    @property
    def name(self) -> str:
        return f"tv_{safe_name(self.model_name)}" + ("" if self.pretrained else "_random")

    def load(self):
        if self._loaded is None:
            import torchvision
            from torchvision import transforms
            if self.weights is None:
                model = torchvision.models.get_model(self.model_name, weights=None)
                preprocess = transforms.Compose([
                    transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                    transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
            else:
                enum = torchvision.models.get_model_weights(self.model_name)
                w = enum.DEFAULT if self.weights == "DEFAULT" else enum[self.weights]
                folder = torch_cache_dir() / "checkpoints"
                fname = Path(w.url).name
                if not (folder / fname).exists():
                    from urllib.parse import urlparse
                    host = urlparse(w.url).hostname
                    if host and not encoders_base._reachable(host):
                        raise _offline_error(self.model_name, folder, f"cannot reach {host}")
                model = torchvision.models.get_model(self.model_name, weights=None,
                                                     num_classes=len(w.meta["categories"]))
                try:
                    state = w.get_state_dict(progress=False, model_dir=str(folder), weights_only=True)
                except Exception as err:  # noqa: BLE001
                    raise _offline_error(self.model_name, folder, f"{type(err).__name__}: {str(err)[:200]}") from None
                model.load_state_dict(state)
                preprocess = w.transforms()
            model.eval().to(pick_device(self.device))
            self._loaded = (model, preprocess)
        return self._loaded

    @property
    def n_layers(self) -> int:
        return len(find_blocks(self.load()[0]))

    def _head(self, model):
        linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
        if not linears:
            raise DataError(f"{self.label} has no Linear classifier to take the pre-logits features from")
        return linears[-1]

    def _forward(self, x, layers, want_tokens):
        model, _ = self.load()
        blocks = find_blocks(model)
        wanted = [blocks[l - 1][1] for l in layers]
        if want_tokens:
            if not blocks:
                raise DataError(f"{self.label}: no blocks found for token outputs", hint="encode without --tokens")
            wanted.append(blocks[-1][1])
        pre: dict = {}
        handle = self._head(model).register_forward_pre_hook(lambda _m, inp: pre.__setitem__("x", inp[0]))
        try:
            _, grabbed = run_with_hooks(model, x, wanted, model)
        finally:
            handle.remove()
        out = {"embedding": pre["x"].flatten(1),
               "layers": {l: pool_feature_map(h) for l, h in zip(layers, grabbed)}}
        if want_tokens:
            last = grabbed[-1]
            out["tokens"] = as_tokens(last, 1 if last.ndim == 3 else 0)
        return out
