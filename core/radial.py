"""RE (radial embedding) fine-tuning of the text side (paper C; METHODS.md section 4).

* :func:`exterior_angle_torch` and :func:`radial_loss` - the RE loss:
  positive angles ``P_i = Xi(p_i, p_{i+1})`` (tiers i = 0..L-2), negative angles ``N_i = -Xi(p_i, n_i)`` with
  ``n_i`` a same-tier text contradicting ``p_i``; ``L_e = mean(P) + mean(N)`` (``le_negatives="all"``, the
  default: N over every tier; ``"shared"``: N over tiers 0..L-2 only, exactly the authors' ``batch2losses``,
  METHODS.md 7.3, the paper C preset); the hardest-pair term
  ``L_m = PN[argmax P] + PN[argmax N]`` with ``PN = P + N`` over (sample, tier) (N restricted to the tiers of P, as
  the paper's ``N[:-1]``); ``L_p = (1 - mean cos(e, e_frozen)) / 2``; total ``= 10 L_p + L_e + L_m``.
  Pairs that are undefined (identical texts, padding of shorter chains, missing negatives) are masked out.
* :class:`RadialAdapter` - the project's own light text-side adapter on frozen embeddings: residual linear
  ``normalize(e + W e + b)`` or small MLP ``normalize(e + W2 GELU(W1 e))``, identity at start (W, W2 zero).
* :class:`RadialFineTuner` - trains it (AdamW, seeded, GPU when present, progress, early stopping on held-out
  validation chains, best epoch kept), then ``transform`` / ``transform_chains``; ``save`` / ``load`` use
  safetensors + JSON.

* :class:`OpenCLIPTextTowerFineTuner` - the same loss, loop and early stopping (shared :func:`_run_epochs`) on the
  last N transformer blocks (+ ``ln_final``, ``text_projection``) of a copy of an open_clip text tower: texts,
  negatives and the root ``""`` are re-embedded every step; L_p's targets are the original weights' embeddings;
  ``transform_texts``; ``save`` / ``load`` write only the trained parameters (safetensors + JSON).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from .base import Estimator, init_linear_, torch_generator
from .device import pick_device
from .errors import DataError
from .training import EarlyStopping
from .hierarchy import DEGENERATE_EPS, Chains, make_negatives, normalize_rows

__all__ = ["exterior_angle_torch", "radial_loss", "RadialAdapter", "RadialFineTuner", "OpenCLIPTextTowerFineTuner",
           "tower_trainable_names", "PRIOR_WEIGHT", "LE_NEGATIVES", "AUTHORS_TOWER_PARAMS"]

#: Weight of the pull-back term L_p (the paper's code uses 10).
PRIOR_WEIGHT = 10.0
#: The authors' fine-tuning (METHODS.md 7.3; paper C preset): the whole text tower, AdamW lr 1e-7, torch's default
#: weight decay 0.01, batch 8, one epoch, the last weights kept. The residual adapter is the project's own.
AUTHORS_TOWER_PARAMS = {"n_blocks": "all", "lr": 1e-7, "weight_decay": 0.01, "batch_size": 8, "max_epochs": 1,
                        "patience": 1, "keep_best": False}


def exterior_angle_torch(e: torch.Tensor, e2: torch.Tensor, root: torch.Tensor,
                         eps: float = DEGENERATE_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Exterior angles ``Xi_r(e, e2)`` along the last dimension (differentiable) and their validity mask.

    ``arccos(<e - r, e2 - e> / (||e - r|| ||e2 - e||))``, cosine clipped to [-1, 1]. Where ``||e - r|| < eps`` or
    ``||e2 - e|| < eps`` the angle is undefined: ``valid`` is False there and the (finite) value must be masked.
    """
    a = e - root
    b = e2 - e
    na, nb = a.norm(dim=-1), b.norm(dim=-1)
    valid = (na >= eps) & (nb >= eps)
    cos = (a * b).sum(-1) / (na.clamp_min(eps) * nb.clamp_min(eps))
    return torch.arccos(cos.clamp(-1.0, 1.0)), valid.detach()


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    m = mask.to(x.dtype)
    return (x * m).sum() / m.sum().clamp_min(1.0)


#: Which negative angles enter L_e: every tier's (the project's default) or, as the authors' batch2losses,
#: only those of tiers 0..L-2 - the tiers that also have a positive angle (paper C preset).
LE_NEGATIVES = ("all", "shared")


def radial_loss(pos: torch.Tensor, neg: torch.Tensor, root: torch.Tensor, pos_frozen: torch.Tensor,
                neg_frozen: torch.Tensor | None = None, pos_mask: torch.Tensor | None = None,
                neg_mask: torch.Tensor | None = None, prior_weight: float = PRIOR_WEIGHT,
                le_negatives: str = "all") -> dict:
    """The RE loss of a batch of chains.

    With ``le_negatives="shared"`` (the authors' ``batch2losses``, METHODS.md 7.3) the mean of negative angles in
    L_e runs over tiers 0..L-2 of each chain only, like L_m: the last tier's negative is embedded and counts in
    the pull-back L_p, but enters no angle. ``"all"`` (default) averages every tier's negative angle in L_e.

    Parameters
    ----------
    pos : (B, L, d) current embeddings of the chains' tiers (generic -> specific).
    neg : (B, L, d) current embeddings of the same-tier negatives.
    root : (d,) current root embedding.
    pos_frozen, neg_frozen : the same texts embedded by the frozen (original) model, for L_p.
    pos_mask, neg_mask : (B, L) bool, True for real tiers / present negatives (default all True).
    prior_weight : weight of L_p (10 in the paper).
    le_negatives : ``"all"`` or ``"shared"`` (see above).

    Returns
    -------
    dict of scalar tensors ``total``, ``L_e``, ``L_m``, ``L_p`` and the means ``P`` and ``N``.
    """
    B, L, _ = pos.shape
    if pos_mask is None:
        pos_mask = torch.ones(B, L, dtype=torch.bool, device=pos.device)
    if neg_mask is None:
        neg_mask = torch.ones(B, L, dtype=torch.bool, device=pos.device)
    neg_mask = neg_mask & pos_mask
    P, pv = exterior_angle_torch(pos[:, :-1], pos[:, 1:], root)          # (B, L-1)
    pv = pv & pos_mask[:, :-1] & pos_mask[:, 1:]
    Nang, nv = exterior_angle_torch(pos, neg, root)                      # (B, L)
    N = -Nang
    nv = nv & neg_mask
    if le_negatives not in LE_NEGATIVES:
        raise DataError(f"unknown le_negatives {le_negatives!r}", hint=f"use one of {', '.join(LE_NEGATIVES)}")
    # hardest pairs: PN = P + N over (sample, tier) for the tiers of P
    Nh, nvh = N[:, :-1], nv[:, :-1]
    if le_negatives == "shared":   # tiers with a next tier only (each chain's last tier excluded)
        L_e = _masked_mean(P, pv) + _masked_mean(Nh, nvh & pos_mask[:, 1:])
    else:
        L_e = _masked_mean(P, pv) + _masked_mean(N, nv)
    PN = P + torch.where(nvh, Nh, torch.zeros_like(Nh))
    L_m = torch.zeros((), dtype=pos.dtype, device=pos.device)
    if pv.any():
        i = torch.where(pv, P, torch.full_like(P, -torch.inf)).flatten().argmax()
        L_m = L_m + PN.flatten()[i]
    both = pv & nvh
    if both.any():
        j = torch.where(both, Nh, torch.full_like(Nh, -torch.inf)).flatten().argmax()
        L_m = L_m + PN.flatten()[j]
    cos_p = (pos * pos_frozen).sum(-1)
    if neg_frozen is not None:
        cos_all = torch.cat([cos_p[pos_mask], (neg * neg_frozen).sum(-1)[neg_mask]])
    else:
        cos_all = cos_p[pos_mask]
    L_p = (1.0 - cos_all.mean()) / 2.0
    total = prior_weight * L_p + L_e + L_m
    return {"total": total, "L_e": L_e, "L_m": L_m, "L_p": L_p, "P": _masked_mean(P, pv),
            "N": _masked_mean(N, nv)}


_VAL_KEYS = ("L_e", "L_m", "L_p", "P", "N")


def _snapshot(named: dict) -> dict:
    return {k: p.detach().clone() for k, p in named.items()}


def _load_named(named: dict, state: dict) -> None:
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(state[k])


def _record_fit(est, history, best, bad_steps, start_time, dev, how, train, val):
    """Store what a fine-tuner's fit learned about itself (history, best epoch, time, ...); returns ``est``."""
    est.history_ = history
    est.best_val_loss_, est.best_epoch_ = float(best[0]), int(best[1])
    est.seconds_ = time.perf_counter() - start_time
    est.device_ = str(dev)
    est.negatives_ = how
    est.skipped_steps_ = bad_steps
    est.n_train_chains_, est.n_val_chains_ = train.n_chains, val.n_chains
    return est


def _run_epochs(tuner, named: dict, n: int, dev, step_loss: Callable, evaluate: Callable, set_mode: Callable,
                progress: Callable | None = None, seed: int = 0) -> tuple[list, tuple, int]:
    """The shared training loop of the RE fine-tuners: AdamW on the parameters ``named`` (name -> Parameter),
    seeded batch order (``seed``), one epoch over ``n`` training chains in batches of ``tuner.batch_size``,
    early stopping on the validation loss (``tuner.patience``), best epoch kept.

    ``step_loss(rows)`` returns :func:`radial_loss`'s dict for training chains ``rows`` (with gradients);
    ``evaluate('train' | 'val')`` returns it as floats (no gradients); ``set_mode(training)`` switches modes.
    Returns (history, (best_val_loss, best_epoch, best_state), skipped_steps); the caller restores best_state.
    With ``tuner.keep_best`` False the last epoch's weights are returned instead (the authors' code).
    """
    gen = torch_generator(seed)
    opt = torch.optim.AdamW(list(named.values()), lr=tuner.lr, weight_decay=tuner.weight_decay)
    set_mode(False)
    first = evaluate("val")
    history = [{"epoch": 0, "train_loss": evaluate("train")["total"], "val_loss": first["total"],
                **{f"val_{k}": first[k] for k in _VAL_KEYS}}]
    stopper = EarlyStopping(tuner.patience, 1e-6, lambda: _snapshot(named)).start(first["total"], 0)
    epochs = range(1, tuner.max_epochs + 1)
    if progress is not None:
        epochs = progress(epochs, total=tuner.max_epochs, desc="RE fine-tuning (epochs)")
    bad_steps = 0
    for epoch in epochs:
        set_mode(True)
        perm = torch.randperm(n, generator=gen).to(dev)
        total, count = 0.0, 0
        for s in range(0, n, tuner.batch_size):
            rows = perm[s:s + tuner.batch_size]
            loss = step_loss(rows)["total"]
            if not torch.isfinite(loss):
                bad_steps += 1
                continue
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item() * len(rows)
            count += len(rows)
        set_mode(False)
        ev = evaluate("val")
        history.append({"epoch": epoch, "train_loss": total / max(count, 1), "val_loss": ev["total"],
                        **{f"val_{k}": ev[k] for k in _VAL_KEYS}})
        if stopper.update(ev["total"], epoch):
            break
    best = (stopper.best, stopper.best_at, stopper.best_state)
    if not getattr(tuner, "keep_best", True):   # the authors keep the last weights (no early stopping)
        best = (history[-1]["val_loss"], history[-1]["epoch"], _snapshot(named))
    return history, best, bad_steps


class RadialAdapter(nn.Module):
    """Text-side adapter on frozen embeddings, identity at start, output L2-normalised.

    Parameters
    ----------
    dim : embedding width.  kind : 'linear' (``e + W e + b``) or 'mlp' (``e + W2 GELU(W1 e + b1) + b2``).
    hidden : MLP width (default ``dim``).
    generator : a local :class:`torch.Generator` for the MLP's first layer (default: torch's own initialisation).
    """

    def __init__(self, dim: int, kind: str = "linear", hidden: int | None = None,
                 generator: torch.Generator | None = None):
        super().__init__()
        if kind not in ("linear", "mlp"):
            raise DataError(f"unknown adapter kind {kind!r}", hint="use 'linear' or 'mlp'")
        self.kind = kind
        self.dim = int(dim)
        self.hidden = int(hidden or dim)
        if kind == "linear":
            self.out = nn.Linear(dim, dim)
        else:
            self.inp = nn.Linear(dim, self.hidden)
            if generator is not None:
                init_linear_(self.inp, generator)
            self.out = nn.Linear(self.hidden, dim)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        h = self.out(e) if self.kind == "linear" else self.out(nn.functional.gelu(self.inp(e)))
        return nn.functional.normalize(e + h, dim=-1)


class _RETuner(Estimator):
    """What both RE fine-tuners share (settings check, negatives, the training loop, fit records, persistence
    of the records); the trained part - an adapter or blocks of a text tower - is the subclass's."""

    _fit_call = "fit(train, val)"

    def __init__(self, lr: float, weight_decay: float, batch_size: int, max_epochs: int, patience: int,
                 prior_weight: float, random_state, device, le_negatives: str, keep_best: bool):
        # the training settings both fine-tuners share (each subclass lists them, with its defaults, in its own
        # signature, as scikit-learn's get_params reads them from there)
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.prior_weight = prior_weight
        self.random_state = random_state
        self.device = device
        self.le_negatives = le_negatives
        self.keep_best = keep_best

    def _check_settings(self):
        if self.batch_size < 1 or self.max_epochs < 1 or self.patience < 1:
            raise DataError("batch_size, max_epochs and patience must be >= 1")

    @staticmethod
    def _ensure_negatives(chains: Chains, seed: int) -> tuple[Chains, str]:
        if chains.has_negatives and all(bool(t) for t in chains.neg_texts):
            return chains, "given"
        had = chains.has_negatives and any(bool(t) for t in chains.neg_texts)
        return make_negatives(chains, seed=seed), "given + sampled" if had else "sampled"

    def _begin(self, train: Chains, val: Chains):
        """Checks, device, seed and negatives of a fit: ``(start_time, dev, seed, train, val, how)``."""
        self._check_settings()
        start_time = time.perf_counter()
        dev = pick_device(self.device)
        seed = self._seed()
        train, how = self._ensure_negatives(train, seed)
        val, _ = self._ensure_negatives(val, seed + 1)
        return start_time, dev, seed, train, val, how

    def json_params(self) -> dict:
        """The hyper-parameters as JSON (no device; ``seed``: the old name of ``random_state``, kept one release)."""
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "device"}
        rs = params["random_state"]
        params["random_state"] = int(rs) if isinstance(rs, (int, np.integer)) else None
        params["seed"] = params["random_state"]
        return params

    @classmethod
    def _from_json_params(cls, params: dict):
        params = dict(params)
        seed = params.pop("seed", None)
        params.setdefault("random_state", seed)
        return cls(**params)

    def _records(self) -> dict:
        return {"history": self.history_, "best_epoch": self.best_epoch_, "best_val_loss": self.best_val_loss_,
                "seconds": self.seconds_, "device": self.device_, "negatives": self.negatives_}

    def _restore_records(self, meta: dict):
        self.history_ = meta["history"]
        self.best_epoch_, self.best_val_loss_ = meta["best_epoch"], meta["best_val_loss"]
        self.seconds_, self.device_, self.negatives_ = meta["seconds"], meta["device"], meta["negatives"]
        return self


class RadialFineTuner(_RETuner):
    """Train a :class:`RadialAdapter` with :func:`radial_loss` on chains with same-tier negatives.

    Parameters
    ----------
    kind, hidden : adapter shape (see :class:`RadialAdapter`).
    lr, weight_decay : AdamW settings.  batch_size : chains per step.
    max_epochs : upper bound on epochs.  patience : stop after this many epochs without a better validation loss.
    prior_weight : weight of L_p (10).  random_state : seeds the initialisation, the sampled negatives and the
        batch order (int, None or a numpy Generator).
    device : torch device (default :func:`core.device.pick_device`).

    Attributes
    ----------
    adapter_ : the trained adapter (best validation epoch), on CPU.
    history_ : list of per-epoch dicts (``epoch``, ``train_loss``, ``val_loss``, ``val_L_e``, ``val_L_m``,
        ``val_L_p``, ``val_P``, ``val_N``); epoch 0 is the untrained adapter.
    best_epoch_, best_val_loss_, seconds_ (training wall time), device_ (str), negatives_ ('given', 'sampled'
        or 'given + sampled'), n_train_chains_, n_val_chains_.
    """

    def __init__(self, kind: str = "linear", hidden: int | None = None, lr: float = 1e-3,
                 weight_decay: float = 1e-4, batch_size: int = 256, max_epochs: int = 100, patience: int = 8,
                 prior_weight: float = PRIOR_WEIGHT, random_state=0, device=None, le_negatives: str = "all",
                 keep_best: bool = True):
        self.kind = kind
        self.hidden = hidden
        super().__init__(lr, weight_decay, batch_size, max_epochs, patience, prior_weight, random_state, device,
                         le_negatives, keep_best)

    _fitted_attributes = ("adapter_",)

    # -- data ----------------------------------------------------------------------------------
    @staticmethod
    def _tensors(chains: Chains, dev) -> dict:
        idx = chains.padded_index()
        mask = idx >= 0
        safe = np.clip(idx, 0, None)
        E = torch.as_tensor(normalize_rows(chains.embeddings), device=dev)
        NE = torch.as_tensor(normalize_rows(chains.neg_embeddings), device=dev)
        present = np.array([bool(t) for t in chains.neg_texts])
        return {"pos": E[torch.as_tensor(safe, device=dev)], "neg": NE[torch.as_tensor(safe, device=dev)],
                "pos_mask": torch.as_tensor(mask, device=dev),
                "neg_mask": torch.as_tensor(mask & present[safe], device=dev),
                "root": torch.as_tensor(normalize_rows(chains.root[None])[0], device=dev)}

    def _loss(self, adapter, t: dict, rows) -> dict:
        pos_f, neg_f = t["pos"][rows], t["neg"][rows]
        return radial_loss(adapter(pos_f), adapter(neg_f), adapter(t["root"]), pos_f, neg_f,
                           t["pos_mask"][rows], t["neg_mask"][rows], prior_weight=self.prior_weight,
                           le_negatives=self.le_negatives)

    def _evaluate(self, adapter, t: dict) -> dict:
        with torch.no_grad():
            out = self._loss(adapter, t, slice(None))
        return {k: float(v) for k, v in out.items()}

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, train: Chains, val: Chains, progress: Callable | None = None) -> "RadialFineTuner":
        """Train on ``train`` chains, early-stop on ``val`` chains; returns self.

        Missing negatives are sampled (:func:`core.hierarchy.make_negatives`, seeded).
        ``progress(iterable, total=None, desc="")`` wraps the epoch loop.
        """
        start_time, dev, seed, train, val, how = self._begin(train, val)
        adapter = RadialAdapter(train.embeddings.shape[1], self.kind, self.hidden, torch_generator(seed)).to(dev)
        tt, tv = self._tensors(train, dev), self._tensors(val, dev)

        def set_mode(training: bool):
            adapter.train(training)

        history, best, bad_steps = _run_epochs(
            self, dict(adapter.named_parameters()), train.n_chains, dev,
            step_loss=lambda rows: self._loss(adapter, tt, rows),
            evaluate=lambda which: self._evaluate(adapter, tt if which == "train" else tv),
            set_mode=set_mode, progress=progress, seed=seed)
        _load_named(dict(adapter.named_parameters()), best[2])
        self.adapter_ = adapter.cpu().eval()
        return _record_fit(self, history, best, bad_steps, start_time, dev, how, train, val)

    # -- using it ------------------------------------------------------------------------------
    def transform(self, embeddings) -> np.ndarray:
        """Adapted, L2-normalised embeddings (n, d) float32 of frozen embeddings ``embeddings``."""
        self._require_fitted()
        X = torch.as_tensor(normalize_rows(np.atleast_2d(embeddings)))
        with torch.no_grad():
            return self.adapter_(X).numpy().astype(np.float32)

    def transform_chains(self, chains: Chains) -> Chains:
        """``chains`` with adapted text, negative and root embeddings (the image side is unchanged)."""
        neg = None if chains.neg_embeddings is None else self.transform(chains.neg_embeddings)
        return chains.with_embeddings(self.transform(chains.embeddings), self.transform(chains.root[None])[0],
                                      neg_embeddings=neg)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``<path>.safetensors`` (weights) and ``<path>.json`` (settings, history). Returns the JSON path."""
        from safetensors.torch import save_file
        self._require_fitted()
        path = Path(path)
        save_file({k: v.contiguous() for k, v in self.adapter_.state_dict().items()},
                  str(path.with_suffix(".safetensors")))
        meta = {"params": self.json_params(), "dim": self.adapter_.dim, "hidden": self.adapter_.hidden,
                **self._records()}
        out = path.with_suffix(".json")
        out.write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, path) -> "RadialFineTuner":
        """Read what :meth:`save` wrote (no pickle involved)."""
        from safetensors.torch import load_file
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        obj = cls._from_json_params(meta["params"])
        adapter = RadialAdapter(meta["dim"], meta["params"]["kind"], meta["hidden"])
        adapter.load_state_dict(load_file(str(path.with_suffix(".safetensors"))))
        obj.adapter_ = adapter.eval()
        return obj._restore_records(meta)


def _tower_prefix(model) -> str:
    """Parameter-name prefix of an open_clip model's text transformer ('' for CLIP, 'text.' for CustomTextCLIP)."""
    if hasattr(model, "transformer") and hasattr(model.transformer, "resblocks"):
        return ""
    text = getattr(model, "text", None)
    if text is not None and hasattr(getattr(text, "transformer", None), "resblocks"):
        return "text."
    raise DataError("this open_clip model's text tower is not an open_clip text transformer (e.g. a Hugging Face "
                    "text tower): its last blocks cannot be fine-tuned here",
                    hint="fine-tune an adapter on its embeddings instead (RadialFineTuner)")


#: Top-level parameters of an open_clip CLIP model that belong to its text tower (besides the transformer).
_TEXT_PARAMS = ("token_embedding.", "positional_embedding", "transformer.", "ln_final.", "text_projection")


def tower_trainable_names(model, n_blocks: int | str) -> list[str]:
    """Names of the parameters trained by :class:`OpenCLIPTextTowerFineTuner`: the last ``n_blocks`` residual
    blocks of the text transformer, its final LayerNorm and the text projection; ``n_blocks="all"``: every
    parameter of the text tower (token and positional embeddings included; the authors' fine-tuning - the image
    tower gets no gradient from the RE loss, so it is left out)."""
    prefix = _tower_prefix(model)
    tower = model if prefix == "" else model.text
    if n_blocks == "all":
        if prefix:
            return [k for k, _ in model.named_parameters() if k.startswith(prefix)]
        return [k for k, _ in model.named_parameters() if k.startswith(_TEXT_PARAMS)]
    n_blocks = int(n_blocks)
    n_layers = len(tower.transformer.resblocks)
    if not 1 <= n_blocks <= n_layers:
        raise DataError(f"n_blocks must be between 1 and {n_layers} (the text tower's blocks), got {n_blocks}")
    keep = tuple(f"{prefix}transformer.resblocks.{i}." for i in range(n_layers - n_blocks, n_layers))
    keep += (f"{prefix}ln_final.", f"{prefix}text_projection")
    return [k for k, _ in model.named_parameters() if k.startswith(keep)]


class OpenCLIPTextTowerFineTuner(_RETuner):
    """RE fine-tuning of the last ``n_blocks`` transformer blocks of an open_clip text tower (plus ``ln_final``
    and ``text_projection``); everything else stays frozen. Same loss, loop and early stopping as
    :class:`RadialFineTuner`; the chains' texts, negatives and the root ``""`` are re-embedded by the trainable
    tower at every step (L2-normalised), the pull-back targets of L_p are their embeddings by the original
    weights (computed once before training). The encoder's own model is never modified (a copy is trained).

    Attributes (after :meth:`fit`): ``model_`` (the tuned copy, eval mode), ``trainable_names_``, and the fit
    records of :class:`RadialFineTuner` (``history_``, ``best_epoch_``, ...).
    """

    _fitted_attributes = ("model_",)
    _fit_call = "fit(encoder, train, val)"

    def __init__(self, n_blocks: int | str = 2, lr: float = 1e-5, weight_decay: float = 1e-4, batch_size: int = 32,
                 max_epochs: int = 10, patience: int = 3, prior_weight: float = PRIOR_WEIGHT, random_state=0,
                 device=None, le_negatives: str = "all", keep_best: bool = True):
        self.n_blocks = n_blocks
        super().__init__(lr, weight_decay, batch_size, max_epochs, patience, prior_weight, random_state, device,
                         le_negatives, keep_best)

    # -- the tower -----------------------------------------------------------------------------
    def _prepare(self, encoder, dev):
        model, _, tokenizer = encoder.load()
        model = copy.deepcopy(model).to(dev).float().eval()
        names = tower_trainable_names(model, self.n_blocks)
        for k, p in model.named_parameters():
            p.requires_grad_(k in names)
        self.model_, self.tokenizer_, self.trainable_names_ = model, tokenizer, names
        self.model_key_ = getattr(encoder, "model_key", None)
        self.encode_batch_size_ = int(getattr(encoder, "batch_size", 64))

    def _embed_ids(self, ids: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.model_.encode_text(ids).float(), dim=-1)

    def _embed_all(self, ids: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return torch.cat([self._embed_ids(ids[s:s + self.encode_batch_size_])
                              for s in range(0, len(ids), self.encode_batch_size_)])

    def _tokens(self, texts, dev) -> torch.Tensor:
        return self.tokenizer_(list(texts)).to(dev)

    def _tower_tensors(self, chains: Chains, dev) -> dict:
        """Token ids of every distinct text (tiers, negatives, root '') and the (C, L) index into them."""
        vocab = list(dict.fromkeys([""] + [str(t) for t in chains.texts] + [str(t) for t in chains.neg_texts]))
        where = {t: i for i, t in enumerate(vocab)}
        idx = chains.padded_index()
        safe = np.clip(idx, 0, None)
        present = np.array([bool(t) for t in chains.neg_texts])
        pos_v = np.array([where[str(t)] for t in chains.texts])[safe]
        neg_v = np.array([where[str(t)] for t in chains.neg_texts])[safe]
        ids = self._tokens(vocab, dev)
        return {"ids": ids, "frozen": self._embed_all(ids), "pos_v": torch.as_tensor(pos_v, device=dev),
                "neg_v": torch.as_tensor(neg_v, device=dev), "pos_mask": torch.as_tensor(idx >= 0, device=dev),
                "neg_mask": torch.as_tensor((idx >= 0) & present[safe], device=dev)}

    def _tower_loss(self, t: dict, rows, grad: bool = True) -> dict:
        pv, nv = t["pos_v"][rows], t["neg_v"][rows]
        need, inv = torch.unique(torch.cat([pv.flatten(), nv.flatten(), pv.new_zeros(1)]), return_inverse=True)
        if grad:
            E = self._embed_ids(t["ids"][need])
        else:
            E = self._embed_all(t["ids"][need])
        k = pv.numel()
        pos, neg, root = E[inv[:k]].view(*pv.shape, -1), E[inv[k:2 * k]].view(*nv.shape, -1), E[inv[-1]]
        return radial_loss(pos, neg, root, t["frozen"][pv], t["frozen"][nv], t["pos_mask"][rows],
                           t["neg_mask"][rows], prior_weight=self.prior_weight, le_negatives=self.le_negatives)

    # -- fitting -------------------------------------------------------------------------------
    def fit(self, encoder, train: Chains, val: Chains,
            progress: Callable | None = None) -> "OpenCLIPTextTowerFineTuner":
        """Fine-tune a copy of ``encoder``'s (:class:`core.encoders.OpenCLIPEncoder`) text tower on the texts of
        ``train`` chains, early-stop on ``val`` chains; returns self. Missing negatives are sampled as in
        :meth:`RadialFineTuner.fit`; the chains' stored embeddings are not used."""
        start_time, dev, seed, train, val, how = self._begin(train, val)
        self._prepare(encoder, dev)
        tt, tv = self._tower_tensors(train, dev), self._tower_tensors(val, dev)
        named = {k: p for k, p in self.model_.named_parameters() if p.requires_grad}

        def evaluate(which: str) -> dict:
            t = tt if which == "train" else tv
            out = self._tower_loss(t, slice(None), grad=False)
            return {k: float(v) for k, v in out.items()}

        history, best, bad_steps = _run_epochs(
            self, named, train.n_chains, dev, step_loss=lambda rows: self._tower_loss(tt, rows),
            evaluate=evaluate, set_mode=lambda training: None, progress=progress, seed=seed)
        _load_named(named, best[2])
        self.model_ = self.model_.cpu().eval()
        return _record_fit(self, history, best, bad_steps, start_time, dev, how, train, val)

    # -- using it ------------------------------------------------------------------------------
    def transform_texts(self, texts) -> np.ndarray:
        """(n, d) float32 L2-normalised embeddings of ``texts`` by the tuned tower (on CPU)."""
        self._require_fitted()
        texts = [str(t) for t in texts]
        if not texts:
            raise DataError("no texts to embed")
        return self._embed_all(self._tokens(texts, "cpu")).numpy().astype(np.float32)

    def transform(self, texts) -> np.ndarray:
        """The same as :meth:`transform_texts`: this estimator's input is text."""
        return self.transform_texts(texts)

    def transform_chains(self, chains: Chains) -> Chains:
        """``chains`` re-embedded by the tuned tower (tiers, negatives where present, root ''); images unchanged."""
        emb = self.transform_texts(chains.texts)
        root = self.transform_texts([""])[0]
        neg = None
        if chains.has_negatives:
            present = np.array([bool(t) for t in chains.neg_texts])
            neg = np.zeros_like(emb)
            if present.any():
                neg[present] = self.transform_texts(chains.neg_texts[present])
        return chains.with_embeddings(emb, root, neg_embeddings=neg)

    # -- persistence ---------------------------------------------------------------------------
    def save(self, path) -> Path:
        """Write ``<path>.safetensors`` (only the trained parameters) and ``<path>.json`` (settings, model key,
        history). Returns the JSON path."""
        from safetensors.torch import save_file
        self._require_fitted()
        path = Path(path)
        state = dict(self.model_.named_parameters())
        save_file({k: state[k].detach().contiguous().cpu() for k in self.trainable_names_},
                  str(path.with_suffix(".safetensors")))
        meta = {"params": self.json_params(), "model_key": self.model_key_, "trainable": self.trainable_names_,
                **self._records()}
        out = path.with_suffix(".json")
        out.write_text(json.dumps(meta, indent=1))
        return out

    @classmethod
    def load(cls, path, encoder) -> "OpenCLIPTextTowerFineTuner":
        """Read what :meth:`save` wrote onto a copy of ``encoder``'s model (which must be the same model)."""
        from safetensors.torch import load_file
        path = Path(path)
        meta = json.loads(path.with_suffix(".json").read_text())
        key = getattr(encoder, "model_key", None)
        if meta.get("model_key") != key:
            raise DataError(f"these tower weights were trained on {meta.get('model_key')!r}, not {key!r}",
                            hint="load them with the encoder they were trained with")
        obj = cls._from_json_params(meta["params"])
        obj._prepare(encoder, "cpu")
        weights = load_file(str(path.with_suffix(".safetensors")))
        if sorted(weights) != sorted(obj.trainable_names_):
            raise DataError("the saved tower weights do not match this model's last blocks",
                            hint="load them with the encoder they were trained with")
        _load_named({k: p for k, p in obj.model_.named_parameters() if k in weights}, weights)
        obj.model_.eval()
        return obj._restore_records(meta)
