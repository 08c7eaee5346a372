"""Your own torch module as an encoder: ``python:<module>:<factory>``.

``<module>`` is a dotted module name on the Python path (``mylab.encoders``) or a ``.py`` file
(``python:./my_encoder.py:make``); ``<factory>`` is a function of that module called with no arguments. It returns
either a tuple ``(module, input_kind, output)`` or a dict (the tuple's three entries plus optional extras)::

    {"module": torch.nn.Module,        # eval mode is set for you; moved to the GPU when there is one
     "input": "pointcloud",            # "text" | "image" | "pointcloud"
     "output": "tokens",               # "vector": forward gives b x d; "tokens": b x T x d (or (tokens, mask))
     "pool": "max",                    # tokens -> the final embedding: "mean" (default) or "max" over real tokens
     "layers": 3,                      # optional: module.forward_layers(x) returns that many outputs
                                       #   (b x d, or b x T x d pooled like the tokens) -> layers 1..L;
                                       #   module.forward_all(x) -> (output, layer outputs), if the module
                                       #   has it, gives both in one pass
     "name": "pointnet",               # optional: the space name (default: the factory's name)
     "preprocess": callable,           # optional: image (PIL RGB) or point cloud (P x 3 float32) -> tensor
     "version": "sha256 of my weights"}  # optional: part of the result-cache key (change it with the weights)

What ``forward`` receives: text - a list of str (the module tokenises); image - a float tensor ``b x 3 x H x W``
(the default preprocessing: resize 256, centre crop 224, ImageNet mean/std); pointcloud - a float tensor ``b x P x 3``
(clouds are batched with others of the same size P). Load your checkpoint with ``safetensors`` or
``torch.load(path, weights_only=True)``: Platoscope never unpickles anything, and neither should your factory.

The worked example is the demo's PointNet: ``python:core.demo.pointnet:platoscope_encoder``.

Importing a module runs its code: the CLI runs what you name; the app only offers the factories an administrator
lists in ``$PLATOSCOPE_PYTHON_ENCODERS`` (comma-separated ``module:factory``) and the shipped PointNet.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import sys
from pathlib import Path

import numpy as np
import torch

from .device import pick_device
from .encoders_base import (_cached, _check_kind, check_texts, decode_image, parse_layers, safe_name,
                            stack_token_chunks)
from .errors import DataError

INPUT_KINDS = ("text", "image", "pointcloud")
OUTPUTS = ("vector", "tokens")
EXAMPLE_SPEC = "python:core.demo.pointnet:platoscope_encoder"
_MODULES: dict = {}


def import_module(module: str):
    """A module by dotted name, or from a ``.py`` file path; DataError when it cannot be imported."""
    path = Path(module).expanduser()
    try:
        if module.endswith(".py"):
            if not path.is_file():
                raise DataError(f"the encoder file {module!r} does not exist", file=module)
            name = f"platoscope_user_{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:12]}"
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
            return mod
        return importlib.import_module(module)
    except DataError:
        raise
    except ModuleNotFoundError as err:
        raise DataError(f"cannot import the module {module!r} ({err})",
                        hint="give a dotted module on the Python path or a .py file: python:my_pkg.enc:make") from None
    except Exception as err:  # noqa: BLE001 - the user's module failed while importing
        raise DataError(f"importing {module!r} failed: {type(err).__name__}: {str(err)[:300]}") from None


def _default_image_preprocess():
    from torchvision import transforms
    return transforms.Compose([transforms.Resize(256), transforms.CenterCrop(224), transforms.ToTensor(),
                               transforms.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])


class PythonEncoder:
    """The encoder a user's factory describes (see the module docstring for the protocol)."""

    family = "python"

    def __init__(self, module: str, factory: str, device=None, batch_size: int = 64,
                 cache_namespace: str | None = "shared"):
        self.module = str(module)
        self.factory = str(factory)
        self.device = device
        self.batch_size = int(batch_size)
        self.cache_namespace = cache_namespace
        self._loaded = None

    @property
    def spec(self) -> str:
        return f"python:{self.module}:{self.factory}"

    label = spec

    def load(self) -> dict:
        """The factory's description, normalised: module, input, output, pool, layers, name, preprocess, version."""
        if self._loaded is None:
            key = (self.spec, str(pick_device(self.device)))
            if key not in _MODULES:
                mod = import_module(self.module)
                fn = getattr(mod, self.factory, None)
                if not callable(fn):
                    public = [n for n in dir(mod) if not n.startswith("_") and callable(getattr(mod, n))]
                    raise DataError(f"the module {self.module!r} has no function {self.factory!r}",
                                    hint=("functions there: " + ", ".join(public[:12])) if public else None)
                try:
                    made = fn()
                except DataError:
                    raise
                except Exception as err:  # noqa: BLE001 - the user's factory failed
                    raise DataError(f"{self.spec}: the factory failed: {type(err).__name__}: {str(err)[:300]}") \
                        from None
                _MODULES[key] = self._normalise(made, mod)
            self._loaded = _MODULES[key]
        return self._loaded

    def _normalise(self, made, mod) -> dict:
        if isinstance(made, tuple) and len(made) == 3:
            made = {"module": made[0], "input": made[1], "output": made[2]}
        if not isinstance(made, dict) or "module" not in made:
            raise DataError(f"{self.spec}: the factory must return (module, input_kind, output) or a dict with "
                            f"'module', 'input' and 'output', not {type(made).__name__}")
        module = made["module"]
        if not isinstance(module, torch.nn.Module):
            raise DataError(f"{self.spec}: 'module' must be a torch.nn.Module, not {type(module).__name__}")
        kind, output = made.get("input"), made.get("output", "vector")
        if kind not in INPUT_KINDS:
            raise DataError(f"{self.spec}: input kind {kind!r} is not one of {', '.join(INPUT_KINDS)}")
        if output not in OUTPUTS:
            raise DataError(f"{self.spec}: output {output!r} is not one of {', '.join(OUTPUTS)}")
        pool = made.get("pool", "mean")
        if pool not in ("mean", "max"):
            raise DataError(f"{self.spec}: pool {pool!r} is not 'mean' or 'max'")
        n_layers = int(made.get("layers", getattr(module, "n_layers", 0)) or 0)
        if n_layers and not hasattr(module, "forward_layers"):
            raise DataError(f"{self.spec}: 'layers' is {n_layers} but the module has no forward_layers(x)")
        src = getattr(mod, "__file__", None)
        src_hash = hashlib.sha256(Path(src).read_bytes()).hexdigest()[:16] if src and Path(src).is_file() else ""
        preprocess = made.get("preprocess")
        if preprocess is None and kind == "image":
            preprocess = _default_image_preprocess()
        module.eval().to(pick_device(self.device))
        return {"module": module, "input": kind, "output": output, "pool": pool, "layers": n_layers,
                "name": safe_name(made.get("name") or self.factory), "preprocess": preprocess,
                "version": f"{src_hash}:{made.get('version', '')}"}

    # -- shape ----------------------------------------------------------------------------------
    @property
    def input_kinds(self) -> tuple[str, ...]:
        return (self.load()["input"],)

    @property
    def n_layers(self) -> int:
        return self.load()["layers"]

    @property
    def name(self) -> str:
        return self.load()["name"]

    @property
    def model_key(self) -> str:
        return f"{self.spec}@{self.load()['version']}"

    def layers_for(self, kind: str = "", layers=True) -> tuple[int, ...]:
        if not self.n_layers:
            raise DataError(f"{self.spec} exposes no layers",
                            hint="give the module a forward_layers(x) method and 'layers': L in the factory's dict")
        out = parse_layers(layers, self.n_layers, self.spec)
        if 0 in out:
            raise DataError(f"{self.spec}: layers are numbered 1..{self.n_layers}, not 0")
        return out

    # -- encoding -------------------------------------------------------------------------------
    def encode_inputs(self, kind: str, inputs, *, layers=(), tokens: bool = False, progress=None) -> dict:
        """Encode texts (list of str), images (:class:`core.encoders.ImageFiles`) or point clouds
        (:class:`core.pointclouds.PointClouds`): ``{"embedding", "layers", "names", "skipped"}`` (+ tokens, mask)."""
        from .cache import sha256_texts
        _check_kind(self, kind)
        if tokens and self.load()["output"] != "tokens":
            raise DataError(f"{self.spec} gives one vector per item, no token features",
                            hint="encode without --tokens, or return b x T x d from forward (output 'tokens')")
        layers = self.layers_for(kind, layers) if layers else ()
        if kind == "text":
            inputs = check_texts(inputs)
            key = sha256_texts(inputs)
        elif kind == "image":
            if not inputs.names:
                raise DataError("no image files found", file=inputs.source)
            key = inputs.content_key()
        else:
            if not len(inputs):
                raise DataError("no point clouds to encode", file=inputs.source)
            key = inputs.content_key()
        result = _cached(self.cache_namespace, self._run, key, self.model_key,
                         {"kind": kind, "layers": layers, "tokens": bool(tokens)},
                         (kind, inputs, layers, bool(tokens)), progress)
        if not result["names"]:
            first = result["skipped"][0]
            raise DataError(f"none of the {len(result['skipped'])} inputs could be used (e.g. {first[0]}: {first[1]})",
                            file=getattr(inputs, "source", None))
        return result

    def _forward(self, x, layers, want_tokens):
        spec = self.load()
        module = spec["module"]
        per = None
        if layers and hasattr(module, "forward_all"):  # one pass for the output and every layer
            raw, per = module.forward_all(x)
        else:
            raw = module(x)
        mask = None
        if spec["output"] == "tokens":
            if isinstance(raw, (tuple, list)):
                raw, mask = raw[0], raw[1]
            if raw.ndim != 3:
                raise DataError(f"{self.spec}: output 'tokens' needs forward to give b x T x d, got "
                                f"{tuple(raw.shape)}")
            if mask is None:
                mask = torch.ones(raw.shape[:2], dtype=torch.bool, device=raw.device)
            emb = self._pool(raw, mask)
        else:
            if raw.ndim != 2:
                raise DataError(f"{self.spec}: output 'vector' needs forward to give b x d, got {tuple(raw.shape)}")
            emb = raw
        out = {"embedding": emb, "layers": {}}
        if layers:
            per = module.forward_layers(x) if per is None else per
            if len(per) != spec["layers"]:
                raise DataError(f"{self.spec}: forward_layers gave {len(per)} outputs, the factory said "
                                f"{spec['layers']}")
            for l in layers:
                h = per[l - 1]
                out["layers"][l] = h if h.ndim == 2 else self._pool(
                    h, mask if mask is not None and h.shape[:2] == mask.shape
                    else torch.ones(h.shape[:2], dtype=torch.bool, device=h.device))
        if want_tokens:
            out["tokens"] = raw * mask.unsqueeze(-1).to(raw.dtype)
            out["mask"] = mask
        return out

    def _pool(self, h, mask):
        full = bool(mask.all())
        if self.load()["pool"] == "max":
            if full:  # every token real (point clouds of one size): no masked copy
                return h.max(dim=1).values
            return h.masked_fill(~mask.bool().unsqueeze(-1), float("-inf")).max(dim=1).values
        if full:
            return h.mean(dim=1)
        m = mask.bool().unsqueeze(-1)
        mf = m.to(h.dtype)
        return (h * mf).sum(1) / mf.sum(1).clamp(min=1e-9)

    def _run(self, payload, progress):
        kind, inputs, layers, want_tokens = payload
        spec = self.load()
        device = pick_device(self.device)
        pre = spec["preprocess"]
        names, skipped = [], []
        if kind == "pointcloud":
            items = list(range(len(inputs)))
            order = sorted(items, key=lambda i: inputs.clouds[i].shape[0])  # equal sizes share a batch
            names_all = list(inputs.names)
            skipped = list(inputs.skipped)
        elif kind == "image":
            order = list(range(len(inputs.names)))
            names_all = list(inputs.names)
            skipped = list(inputs.ignored)
        else:
            order = list(range(len(inputs)))
            names_all = [str(i) for i in order]
        n = len(order)
        rows, emb, lay, chunks = [], [], {l: [] for l in layers}, []
        batch, batch_rows = [], []

        def flush():
            if not batch:
                return
            if kind == "text":
                x = list(batch)
            else:
                x = torch.stack([b if isinstance(b, torch.Tensor) else torch.as_tensor(b) for b in batch]).to(device)
            with torch.inference_mode():
                out = self._forward(x, layers, want_tokens)
            emb.append(out["embedding"].float().cpu().numpy())
            for l in layers:
                lay[l].append(out["layers"][l].float().cpu().numpy())
            if want_tokens:
                chunks.append((out["tokens"].float().cpu().numpy(), out["mask"].bool().cpu().numpy()))
            rows.extend(batch_rows)
            batch.clear()
            batch_rows.clear()

        for k, i in enumerate(order):
            if kind == "image":
                try:
                    img = decode_image(inputs.read(inputs.names[i]))
                except ValueError as err:
                    skipped.append((inputs.names[i], str(err)[:200]))
                    img = None
                if img is not None:
                    batch.append(pre(img))
                    batch_rows.append(i)
            elif kind == "pointcloud":
                cloud = inputs.clouds[i]
                if batch and (batch[0].shape[0] != cloud.shape[0]):
                    flush()
                batch.append(pre(cloud) if pre is not None else torch.tensor(cloud))
                batch_rows.append(i)
            else:
                batch.append(inputs[i])
                batch_rows.append(i)
            if len(batch) >= self.batch_size:
                flush()
            if progress is not None and (not batch or k == n - 1):
                progress(k + 1, n)
        flush()
        if progress is not None:
            progress(n, n)
        # back to input order
        perm = np.argsort(np.asarray(rows, dtype=np.int64), kind="stable") if rows else np.zeros(0, np.int64)
        kept = [rows[p] for p in perm]
        result = {"embedding": np.concatenate(emb)[perm] if emb else np.zeros((0, 0), np.float32),
                  "layers": {l: np.concatenate(v)[perm] for l, v in lay.items() if v},
                  "names": [names_all[i] for i in kept], "skipped": skipped}
        if want_tokens and chunks:
            toks, mask = stack_token_chunks(chunks)
            result["tokens"], result["mask"] = toks[perm], mask[perm]
        return result

    # -- spaces ---------------------------------------------------------------------------------
    def space_name(self, kind: str = "") -> str:
        return self.name

    def space_info(self, kind: str = "", layer: int | None = None, tokens: bool = False) -> dict:
        spec = self.load()
        info = {"encoder": self.spec, "spec": self.spec, "family": "python", "input": spec["input"],
                "pooling": spec["pool"] if spec["output"] == "tokens" else "the module's own", "normalised": False}
        if layer is not None:
            info.update(layer=int(layer), pooling=spec["pool"])
        if tokens:
            info.update(tokens={"pointcloud": "points", "image": "patches", "text": "tokens"}[spec["input"]])
            info.pop("pooling")
        return info

    # -- text conveniences (hierarchies) --------------------------------------------------------
    def encode(self, texts, progress=None) -> np.ndarray:
        """Final embeddings of texts (text modules only)."""
        return self.encode_inputs("text", list(texts), progress=progress)["embedding"]

    def embed_empty_string(self, layer: int | None = None) -> np.ndarray:
        """The module's embedding of ``""`` (the hierarchy root; text modules only)."""
        _check_kind(self, "text")
        out = self._run(("text", [""], (layer,) if layer is not None else (), False), None)
        return out["layers"][layer][0] if layer is not None else out["embedding"][0]
