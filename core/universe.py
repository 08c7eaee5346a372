"""Many spaces at once (METHODS.md section 5, paper D): one shared "universe" for M >= 2 paired spaces.

Every estimator is fitted on a mapping ``name -> array`` (``n x d_m``, row ``i`` of every array describing the
same item) and follows scikit-learn habits: hyper-parameters in ``__init__``, ``fit(spaces)`` returns ``self``,
fitted state in attributes ending in ``_``.

Preprocessing (:class:`UniversePreprocessor`, recorded on every fitted estimator as ``preprocessor_``) is explicit:
each space is z-scored with its training mean / std (``standardize=False``: centred only), then brought to one
width ``d``: ``width="pca"`` reduces every wider space by PCA to the smallest width (or to ``dim``),
``width="pad"`` zero-pads every narrower space to the largest width; ``order="pca-zscore"`` is the authors' order
(PCA of the raw features, then z-score; paper D preset). :meth:`UniversePreprocessor.describe`
says what was done to each space.

Estimators
----------
:class:`PairwiseProcrustes` (``"pw"``)  orthogonal Procrustes per pair of spaces (the baseline; M(M-1)/2 maps,
                                       not cycle-consistent).
:class:`GPA` (``"gpa"``)                generalised Procrustes: one orthogonal ``R_m`` per space, started symmetrically
                                       (``R_m = I``, so the order of the spaces does not matter), consensus
                                       ``U = mean_m X_m R_m``; a map a -> b is ``R_a R_b^T``. :meth:`GPA.add_space`
                                       is GPA-ADD (fit only the new ``R`` against the fixed consensus).
:class:`GCCA` (``"gcca"``)              generalised CCA: regularised MAXVAR (default; shared orthonormal ``G``,
                                       per-space ``W_m``) or the authors' RACING-GCCA (``variant="racing"``: no
                                       ridge, coordinates ``U_m S_m Phi_m`` keep each space's spectrum).
:class:`GCPA` (``"gcpa"``)              GPA, then one shared residual corrector network trained toward per-item
                                       consensus directions (torch, GPU when present, early stopping).

Every estimator has ``to_universe(space, X)`` (raw rows of one space -> universe coordinates),
``pair_embeddings(a, Xa, b, Xb)`` (both sides in one frame, for retrieval) and ``map_between(Z, a, b)``
(preprocessed coordinates of space a -> preprocessed coordinates of space b, used for cycle-consistency).
PW and GPA, which have an inverse, also have ``transform(X, source, target)`` (raw rows of ``source`` -> raw
feature coordinates of ``target``).

Computation runs in torch float64 on :func:`core.device.pick_device` (MPS falls back to CPU); GCPA trains in
float32. On the CPU the dense factorizations (polar factors, eigh, QR, per-space SVDs) run one thread each, side
by side (:func:`core.numerics.single_threaded`; docs/UI.md, "Dense LAPACK runs one thread per call"). Inputs may be numpy arrays (memmaps included); outputs are numpy arrays and plain floats.
"""
from __future__ import annotations

import copy
import functools
import math
import time
import warnings
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping

import numpy as np
import torch

from .base import Estimator, init_linear_, torch_generator
from .device import as_float64, has_fast_bfloat16, pick_device, pick_float64_device, to_numpy
from .errors import DataError
from .numerics import gram, gram_blocks, orthonormal_factor, pca_components, polar_factors, single_threaded
from .numerics import sym_eig_desc as _sym_eig_desc
from .training import EarlyStopping

__all__ = ["UniversePreprocessor", "PreparedSpaces", "prepare_spaces", "PairwiseProcrustes", "GPA", "GCCA", "GCPA", "METHODS", "METHOD_NAMES",
           "make_estimator", "check_spaces", "method_label", "PREPROCESS_ORDERS", "GCCA_VARIANTS", "GCPA_SCHEDULES",
           "GCPA_PRECISIONS"]

#: The four methods, in the order they are reported.
METHODS = ("pw", "gpa", "gcca", "gcpa")
METHOD_NAMES = {"pw": "pairwise Procrustes", "gpa": "GPA", "gcca": "GCCA", "gcpa": "GCPA"}
WIDTH_MODES = ("pca", "pad")
#: Preprocessing orders: the project's default (z-score, then PCA) and the authors' code's (PCA on the raw
#: features, then z-score; METHODS.md 7.4).
PREPROCESS_ORDERS = ("zscore-pca", "pca-zscore")
#: GCCA variants: the project's regularised MAXVAR and the authors' RACING-GCCA block eigenproblem (7.4).
GCCA_VARIANTS = ("maxvar-ridge", "racing")
#: GCPA training schedules: full epochs with early stopping per epoch (the project's) or the authors' sampled
#: batches with validation every few steps (7.4).
GCPA_SCHEDULES = ("epochs", "sampled")
#: GCPA training precisions: float32 throughout (the default), or the corrector's matrix products (and its GELU and
#: gate) in bfloat16 (float32 master weights, gradients, optimizer, loss and held-out checks); "auto" = bfloat16
#: where the device multiplies it natively (:func:`core.device.has_fast_bfloat16`), else float32.
GCPA_PRECISIONS = ("float32", "bfloat16", "auto")

_CHUNK = 16384


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
_dev64 = pick_float64_device
_t = functools.partial(as_float64, copy=True)     # (x, device): a float64 copy, the caller's array stays untouched
_np = to_numpy


def _identity(iterable, total=None, desc=""):
    return iterable


def check_spaces(spaces: Mapping[str, np.ndarray], min_spaces: int = 2, min_rows: int = 3) -> dict:
    """Validate ``name -> (n x d) array`` spaces (rows paired); returns a plain dict with the same arrays.

    Raises :class:`DataError` for fewer than ``min_spaces`` spaces, arrays that are not 2-D, unequal row counts,
    fewer than ``min_rows`` rows or non-finite values.
    """
    if not isinstance(spaces, Mapping):
        raise DataError("spaces must be a mapping name -> (n x d) array")
    spaces = dict(spaces)
    if len(spaces) < min_spaces:
        raise DataError(f"this needs at least {min_spaces} spaces, got {len(spaces)}",
                        hint="give more embedding files or choose more spaces")
    n = None
    for name, X in spaces.items():
        shape = tuple(getattr(X, "shape", ()))
        if len(shape) != 2:
            hint = "pool token sets to one vector per item first (Space.vectors())" if len(shape) == 3 else None
            raise DataError(f"a space must be a 2-D array (n x d), got shape {shape}", array=str(name), hint=hint)
        if n is None:
            n = shape[0]
        elif shape[0] != n:
            raise DataError(f"space '{name}' has {shape[0]} rows but the first space has {n}", array=str(name),
                            hint="row i of every space must describe the same item")
        if shape[1] < 1:
            raise DataError("a space has no columns", array=str(name))
    if n < min_rows:
        raise DataError(f"at least {min_rows} paired rows are needed, got {n}")
    return spaces


def _space_name(space) -> str:
    if not isinstance(space, str):
        raise DataError("name the space the rows come from: transform(X, space=name)")
    return space


def _check_finite(t: torch.Tensor, name: str, offset: int = 0):
    if not torch.isfinite(t).all():
        row = int(torch.nonzero(~torch.isfinite(t).all(dim=1))[0, 0]) + offset
        raise DataError("the space contains NaN or infinite values", array=name, row=row,
                        hint="remove or repair the rows with missing embeddings")


def _polar(M: torch.Tensor) -> torch.Tensor:
    """The orthogonal factor ``A B^T`` of ``M = A S B^T`` (the Procrustes rotation; :func:`core.numerics.polar_factors`)."""
    return polar_factors([M])[0]


def _normalize(t: torch.Tensor) -> torch.Tensor:
    return t / t.norm(dim=-1, keepdim=True).clamp_min(1e-12)


# ------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------
def _basis(components: torch.Tensor) -> torch.Tensor:
    """The ``d x k`` contiguous basis (columns = axes) of ``k x d`` PCA components, for ``z @ basis``."""
    return components.T.contiguous()


class UniversePreprocessor(Estimator):
    """Z-score every space with its training statistics, then match widths (PCA or zero padding).

    Parameters
    ----------
    standardize : z-score features (True) or only centre them (False).
    width : ``"pca"`` - reduce every space wider than ``d`` to its top-``d`` principal components, ``d`` being
        ``dim`` or the smallest width; ``"pad"`` - zero-pad every narrower space to ``d`` = the largest width
        (a space wider than ``dim`` is still reduced by PCA; that is recorded).
    dim : the common width (default: smallest width for ``"pca"``, largest for ``"pad"``).
    order : ``"zscore-pca"`` (default: z-score each space, then PCA of the z-scored features) or
        ``"pca-zscore"`` (the authors' code, METHODS.md 7.4: PCA of the raw, centred features - not whitened - to
        the common width, then z-score the result with the training mean and std; every output column then has
        unit variance on the training rows).

    Attributes
    ----------
    dim_ : the common width ``d``.
    names_ : the spaces, in fitting order.
    steps_ : per space ``{"mean", "scale", "components" (k x d_m, scikit-learn's layout, or None), "pad" (int),
        "post_scale" (k or None: with ``order="pca-zscore"``, the std of the PCA coordinates, applied after the
        projection)}``.
    """

    _fitted_attributes = ("dim_", "steps_")
    _fit_call = "fit(spaces)"

    def __init__(self, standardize: bool = True, width: str = "pca", dim: int | None = None, device=None,
                 order: str = "zscore-pca"):
        self.standardize = standardize
        self.width = width
        self.dim = dim
        self.device = device
        self.order = order

    def fit(self, spaces: Mapping[str, np.ndarray]) -> "UniversePreprocessor":
        spaces = check_spaces(spaces, min_spaces=1)
        self._fit_width(spaces)
        for name, X in spaces.items():
            self.add(name, X)
        return self

    def _fit_width(self, spaces: dict) -> None:
        """Check the settings, fix ``dim_`` from the widths of ``spaces``, start with no space."""
        if self.width not in WIDTH_MODES:
            raise DataError(f"unknown width matching '{self.width}'; use one of {', '.join(WIDTH_MODES)}")
        if self.order not in PREPROCESS_ORDERS:
            raise DataError(f"unknown preprocessing order '{self.order}'; use one of {', '.join(PREPROCESS_ORDERS)}")
        widths = [int(X.shape[1]) for X in spaces.values()]
        d = self.dim if self.dim is not None else (min(widths) if self.width == "pca" else max(widths))
        if self.width == "pca":
            d = min(int(d), min(widths))
        d = int(d)
        if d < 1:
            raise DataError(f"the common width must be >= 1, got {d}")
        self.dim_ = d
        self.names_ = []
        self.steps_ = {}

    def add(self, name: str, X) -> "UniversePreprocessor":
        """Fit the preprocessing of one more space (to the already fixed width ``dim_``)."""
        self._add(name, X)
        return self

    def _add(self, name: str, X) -> torch.Tensor:
        """:meth:`add`; returns its rows standardised, ``(x - mean) / scale`` (float64, checked finite), for
        :meth:`_project`."""
        self._require_fitted()
        dev = _dev64(self.device)
        x = _t(X, dev)                                  # a copy of our own: centred and scaled in place
        n, p = x.shape
        mean = x.mean(0)
        if not bool(torch.isfinite(mean).all()):        # a NaN or inf anywhere makes its column's mean one
            _check_finite(x, name)
        xc = x.sub_(mean)

        def std_of(t):
            k = t.shape[1]
            sc = t.std(0, unbiased=True) if (self.standardize and n > 1) else torch.ones(k, dtype=x.dtype, device=dev)
            return torch.where(sc > 1e-12, sc, torch.ones_like(sc))

        components = post = z = None
        if getattr(self, "order", "zscore-pca") == "pca-zscore":
            # the authors' order: PCA of the raw centred features (not whitened), then z-score the PCA coordinates
            scale = torch.ones(p, dtype=x.dtype, device=dev)
            if p > self.dim_:
                _, components = pca_components(gram(xc), self.dim_)
                post = std_of(xc @ _basis(components))
            else:
                scale = std_of(xc)
        else:
            scale = std_of(xc)
            z = xc.div_(scale)
            if p > self.dim_:
                _, components = pca_components(gram(z), self.dim_)
        if z is None:
            z = xc.div_(scale)                             # as _apply computes it (xc is not needed again)
        pad = max(0, self.dim_ - p)
        self.steps_[name] = {"mean": _np(mean), "scale": _np(scale),
                             "components": None if components is None else _np(components), "pad": int(pad),
                             "post_scale": None if post is None else _np(post)}
        if name not in self.names_:
            self.names_.append(name)
        return z

    def _step(self, name: str) -> dict:
        self._require_fitted()
        if name not in self.steps_:
            raise DataError(f"no space named '{name}' in this universe",
                            hint=f"fitted spaces: {', '.join(self.names_)}")
        return self.steps_[name]

    def transform_t(self, name: str, X, dev: torch.device) -> torch.Tensor:
        """Preprocessed rows of space ``name`` as a float64 tensor (``m x dim_``)."""
        s = self._step(name)
        x = _t(X, dev)
        if x.ndim != 2 or x.shape[1] != s["mean"].shape[0]:
            raise DataError(f"rows of '{name}' must have {s['mean'].shape[0]} columns, got shape {tuple(x.shape)}",
                            array=name)
        _check_finite(x, name)
        return self._apply(s, x)

    @classmethod
    def _apply(cls, s: dict, x: torch.Tensor) -> torch.Tensor:
        """The recorded steps ``s`` of one space applied to its float64 rows ``x``."""
        dev = x.device
        return cls._project(s, (x - torch.as_tensor(s["mean"], device=dev)) / torch.as_tensor(s["scale"], device=dev))

    @staticmethod
    def _project(s: dict, z: torch.Tensor) -> torch.Tensor:
        """The steps after the standardisation (PCA, post-scaling, padding) applied to ``(x - mean) / scale``."""
        dev = z.device
        if s["components"] is not None:
            z = z @ _basis(torch.as_tensor(s["components"], device=dev))
        if s.get("post_scale") is not None:
            z = z / torch.as_tensor(s["post_scale"], device=dev)
        if s["pad"]:
            z = torch.nn.functional.pad(z, (0, s["pad"]))
        return z

    def transform(self, X, space: str | None = None) -> np.ndarray:
        """Preprocessed rows ``X`` of ``space`` (``m x dim_``, float64): the multi-space convention
        ``transform(X, space=name)``. The old order ``transform(name, X)`` still works (deprecated)."""
        if isinstance(X, str) and not isinstance(space, str):
            warnings.warn("UniversePreprocessor.transform(name, X) is deprecated; use transform(X, space=name)",
                          DeprecationWarning, stacklevel=2)
            X, space = space, X
        return _np(self.transform_t(_space_name(space), X, _dev64(self.device)))

    def inverse_t(self, name: str, Z: torch.Tensor) -> torch.Tensor:
        """Back from preprocessed coordinates to the raw features of ``name`` (PCA: projection onto the kept
        components; padding: the padded columns are dropped)."""
        s = self._step(name)
        dev = Z.device
        if s["pad"]:
            Z = Z[:, :Z.shape[1] - s["pad"]]
        if s.get("post_scale") is not None:
            Z = Z * torch.as_tensor(s["post_scale"], device=dev)
        if s["components"] is not None:
            Z = Z @ torch.as_tensor(s["components"], device=dev)
        return Z * torch.as_tensor(s["scale"], device=dev) + torch.as_tensor(s["mean"], device=dev)

    def describe(self) -> dict:
        """JSON-ready record of what was done to each space."""
        self._require_fitted()
        order = getattr(self, "order", "zscore-pca")
        out = {"standardize": "z-score (training mean and std)" if self.standardize else "centre only",
               "width_matching": self.width, "dim": self.dim_, "order": order,
               "order_text": ("PCA of the raw features, then z-score (the authors' order)" if order == "pca-zscore"
                              else "z-score, then PCA"), "spaces": {}}
        for name in self.names_:
            s = self.steps_[name]
            width = int(s["mean"].shape[0])
            if s["components"] is not None:
                how = f"PCA {width} -> {self.dim_}"
            elif s["pad"]:
                how = f"zero-padded {width} -> {self.dim_}"
            else:
                how = f"kept ({width})"
            out["spaces"][name] = {"input_width": width, "width_step": how}
        return out


@dataclass(frozen=True)
class PreparedSpaces:
    """Fitted preprocessing and the preprocessed training rows, computed once and shared by several fits.

    Pass it as ``fit(spaces, prepared=...)`` to any universe estimator whose preprocessing settings
    (``standardize``, ``width``, ``dim``, ``preprocess_order``) match: the fit then skips refitting the z-score
    and PCA steps (the most expensive part of PW and GCCA on wide spaces) and gives the same numbers. Each fit
    keeps its own copy of the preprocessor (GPA-ADD extends it); the tensors ``Z`` are shared, read only.

    Attributes: ``preprocessor`` (a fitted :class:`UniversePreprocessor`), ``Z`` (name -> ``n x d`` float64
    tensor, the preprocessed training rows, in the order of the spaces).
    """

    preprocessor: UniversePreprocessor
    Z: dict
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

    @property
    def n_rows(self) -> int:
        return int(next(iter(self.Z.values())).shape[0])

    def cross_products(self) -> torch.Tensor:
        """``C = [Z_1 ... Z_M]^T [Z_1 ... Z_M]`` (``Md x Md`` float64; block ``(j, k)`` is ``Z_j^T Z_k``),
        computed once and shared: PW, GPA and GCCA all work from its blocks."""
        with self._lock:
            if "C" not in self._cache:
                self._cache["C"] = cross_products(self.Z)
            return self._cache["C"]


def cross_products(Z: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The ``Md x Md`` matrix of every block ``Z_j^T Z_k`` of the (equal-width) preprocessed spaces."""
    return gram_blocks(list(Z.values()))                            # the upper blocks only


def prepare_spaces(spaces: Mapping[str, np.ndarray], *, standardize: bool = True, width: str = "pca",
                   dim: int | None = None, device=None, order: str = "zscore-pca") -> PreparedSpaces:
    """Fit :class:`UniversePreprocessor` on ``spaces`` and preprocess their rows (see :class:`PreparedSpaces`)."""
    spaces = check_spaces(spaces)
    pre = UniversePreprocessor(standardize, width, dim, device, order=order)
    pre._fit_width(spaces)
    Z = {}
    for name, X in spaces.items():          # each space converted to float64 and checked once, fit and transform
        z = pre._add(name, X)
        Z[name] = pre._project(pre.steps_[name], z)
    return PreparedSpaces(pre, Z)


# ------------------------------------------------------------------------------------------------
# base class
# ------------------------------------------------------------------------------------------------
class _Universe(Estimator):
    """Shared plumbing: preprocessing, fitted check, parameters."""

    method = ""
    _fitted_attributes = ("preprocessor_",)
    _fit_call = "fit(spaces)"

    def _dev(self) -> torch.device:
        return _dev64(self.device)

    @property
    def space_names_(self) -> list[str]:
        self._require_fitted()
        return list(self.preprocessor_.names_)

    def _prepare(self, spaces, prepared: PreparedSpaces | None = None) -> dict[str, torch.Tensor]:
        spaces = check_spaces(spaces)
        order = getattr(self, "preprocess_order", "zscore-pca")
        if prepared is None:
            prepared = prepare_spaces(spaces, standardize=self.standardize, width=self.width, dim=self.dim,
                                      device=self.device, order=order)
            self.preprocessor_ = prepared.preprocessor
        else:
            self._check_prepared(spaces, prepared, order)
            self.preprocessor_ = copy.deepcopy(prepared.preprocessor)
        self.n_train_ = int(next(iter(spaces.values())).shape[0])
        self._prepared = prepared              # for this fit only (its cross-products); dropped after fitting
        return dict(prepared.Z)

    def _cross_products(self) -> torch.Tensor:
        return self._prepared.cross_products()

    def _done_fitting(self) -> None:
        self.__dict__.pop("_prepared", None)

    def _check_prepared(self, spaces: dict, prepared: PreparedSpaces, order: str) -> None:
        pre = prepared.preprocessor
        mine = {"standardize": self.standardize, "width": self.width, "dim": self.dim, "order": order}
        theirs = {"standardize": pre.standardize, "width": pre.width, "dim": pre.dim, "order": pre.order}
        if mine != theirs:
            raise DataError("the prepared spaces were preprocessed with other settings than this estimator's",
                            hint=f"prepared with {theirs}; this estimator uses {mine}")
        if list(prepared.Z) != list(spaces):
            raise DataError("the prepared spaces are not the spaces given to fit",
                            hint=f"prepared: {', '.join(map(str, prepared.Z))}; given: {', '.join(map(str, spaces))}")
        n = int(next(iter(spaces.values())).shape[0])
        if prepared.n_rows != n:
            raise DataError(f"the prepared spaces have {prepared.n_rows} rows, the spaces given to fit have {n}",
                            hint="prepare the same training rows that fit sees")

    def preprocess(self, space: str, X) -> np.ndarray:
        """Rows of ``space`` after the recorded preprocessing (``m x d``)."""
        self._require_fitted()
        return self.preprocessor_.transform(X, space=space)

    def _universe_t(self, space: str, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def transform(self, X, space: str | None = None, target: str | None = None) -> np.ndarray:
        """Universe coordinates of raw rows ``X`` of ``space``: the multi-space convention
        ``transform(X, space=name)`` (the same as :meth:`to_universe`).

        The old ``transform(X, source, target)`` of PW / GPA (raw rows of ``source`` into ``target``'s raw
        features) still works, deprecated: use :meth:`translate`.
        """
        if target is not None:
            warnings.warn(f"{type(self).__name__}.transform(X, source, target) is deprecated; use "
                          "translate(X, source, target)", DeprecationWarning, stacklevel=2)
            return self.translate(X, space, target)
        return self.to_universe(_space_name(space), X)

    def to_universe(self, space: str, X) -> np.ndarray:
        """Universe coordinates of raw rows ``X`` of ``space`` (``transform(X, space=space)``)."""
        self._require_fitted()
        dev = self._dev()
        return _np(self._universe_t(space, self.preprocessor_.transform_t(space, X, dev)))

    def pair_embeddings(self, a: str, Xa, b: str, Xb) -> tuple[np.ndarray, np.ndarray]:
        """Raw rows of ``a`` and of ``b`` in one frame, ready for cosine retrieval (the universe here)."""
        return self.to_universe(a, Xa), self.to_universe(b, Xb)

    def map_between(self, Z, source: str, target: str) -> np.ndarray:
        """Preprocessed rows of ``source`` -> preprocessed coordinates of ``target``."""
        self._require_fitted()
        dev = self._dev()
        return _np(self._map_t(_t(Z, dev), source, target))

    def _map_t(self, z, source, target):  # pragma: no cover - abstract
        raise NotImplementedError

    def _json_params(self) -> dict:
        params = {k: v for k, v in self.get_params(deep=False).items() if k != "device"}
        if "random_state" in params:
            params["seed"] = params["random_state"]   # the key's old name, kept as an alias for one release
        return params

    def describe(self) -> dict:
        """JSON-ready summary of the fitted universe (parameters, preprocessing, fit facts)."""
        self._require_fitted()
        out = {"method": self.method, "parameters": self._json_params(),
               "preprocessing": self.preprocessor_.describe(), "n_train": self.n_train_,
               "spaces": self.space_names_}
        return out


class _Invertible(_Universe):
    def translate(self, X, source: str, target: str) -> np.ndarray:
        """Map raw rows of ``source`` into the raw feature coordinates of ``target``.

        Preprocess with ``source``'s recorded steps, map, then undo ``target``'s steps (for a PCA-reduced target
        this lands in the span of its kept components).
        """
        self._require_fitted()
        dev = self._dev()
        z = self.preprocessor_.transform_t(source, X, dev)
        return _np(self.preprocessor_.inverse_t(target, self._map_t(z, source, target)))


# ------------------------------------------------------------------------------------------------
# PW
# ------------------------------------------------------------------------------------------------
class PairwiseProcrustes(_Invertible):
    """The pairwise baseline: orthogonal Procrustes between every pair of (preprocessed) spaces.

    ``R_[(a, b)]`` maps a's preprocessed rows into b's frame (``R_(b, a) = R_(a, b)^T``), fitted with
    :class:`core.align.ProcrustesMap`. There is no shared universe: :meth:`to_universe` uses the frame of
    ``reference`` (default: the first space), and :meth:`pair_embeddings` maps a into b's frame directly.

    Attributes
    ----------
    R_ : dict ``(a, b) -> d x d`` orthogonal numpy array, every ordered pair.
    preprocessor_, n_train_, fit_seconds_.
    """

    method = "pw"

    def __init__(self, standardize: bool = True, width: str = "pca", dim: int | None = None,
                 reference: str | None = None, device=None, preprocess_order: str = "zscore-pca"):
        self.standardize = standardize
        self.width = width
        self.dim = dim
        self.reference = reference
        self.device = device
        self.preprocess_order = preprocess_order

    def fit(self, spaces: Mapping[str, np.ndarray], progress: Callable | None = None,
            prepared: PreparedSpaces | None = None) -> "PairwiseProcrustes":
        """Fit on ``spaces`` (``prepared``: their preprocessing, already fitted; see :class:`PreparedSpaces`)."""
        progress = progress or _identity
        t0 = time.perf_counter()
        Z = self._prepare(spaces, prepared)
        names = list(Z)
        d = self.preprocessor_.dim_
        self.R_ = {}
        pairs = [(names[i], names[j]) for i in range(len(names)) for j in range(i + 1, len(names))]
        # R_ab = polar(Za_c^T Zb_c), the centred cross-product read from the shared block Za^T Zb (the Procrustes
        # fit of core.align.ProcrustesMap on these rows, without recomputing a Gram matrix per pair)
        C = self._cross_products()
        n = self.n_train_
        mu = {m: Z[m].mean(0) for m in names}
        def centred(a, b):
            i, j = names.index(a), names.index(b)
            return C[i * d:(i + 1) * d, j * d:(j + 1) * d] - n * torch.outer(mu[a], mu[b])

        rotations = polar_factors([centred(a, b) for a, b in pairs])      # side by side (core.numerics)
        for (a, b), R in zip(progress(pairs, total=len(pairs), desc="pairwise Procrustes"), rotations):
            R = _np(R)
            self.R_[(a, b)] = np.ascontiguousarray(R)
            self.R_[(b, a)] = np.ascontiguousarray(R.T)
        for a in names:
            self.R_[(a, a)] = np.eye(d)
        self.reference_ = self.reference if self.reference is not None else names[0]
        if self.reference_ not in Z:
            raise DataError(f"reference space '{self.reference_}' is not among the spaces")
        self._done_fitting()
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _R(self, a, b, dev):
        self.preprocessor_._step(a), self.preprocessor_._step(b)
        return torch.as_tensor(self.R_[(a, b)], dtype=torch.float64, device=dev)

    def _map_t(self, z, source, target):
        return z @ self._R(source, target, z.device)

    def map_matrix(self, source: str, target: str) -> np.ndarray:
        """The d x d map ``R_(source, target)`` between preprocessed coordinates."""
        self._require_fitted()
        return _np(self._R(source, target, torch.device("cpu")))

    def _universe_t(self, space, z):
        return z @ self._R(space, self.reference_, z.device)

    def pair_embeddings(self, a, Xa, b, Xb):
        self._require_fitted()
        dev = self._dev()
        za = self.preprocessor_.transform_t(a, Xa, dev)
        zb = self.preprocessor_.transform_t(b, Xb, dev)
        return _np(self._map_t(za, a, b)), _np(zb)


# ------------------------------------------------------------------------------------------------
# GPA
# ------------------------------------------------------------------------------------------------
def _gpa_iterate(Z: dict[str, torch.Tensor], max_iter: int, tol: float, progress,
                 objective_tol: float | None = None, C: torch.Tensor | None = None) -> tuple:
    """GPA from the symmetric start R_m = I. Returns (R dict, U, history list, converged, stop reason).

    Every quantity of an iteration is a function of the cross-products ``C_jk = X_j^T X_k`` (float64, computed
    once), so an iteration costs ``O(M^2 d^3)`` whatever the number of items:
    ``X_m^T U = (1/M) sum_k C_mk R_k``, ``||U||^2 = (1/M^2) sum_jk tr(R_j^T C_jk R_k)``, and the change of U is
    the same quadratic form in the change of the R's. Objective = ``sum_m ||X_m R_m - U||^2`` =
    ``sum_m ||X_m||^2 - M ||U||^2``; residual = objective / (M n).

    Stops when the consensus moves by less than ``tol`` (relative, ``||U_new - U|| / ||U||``, the authors'
    rule), or when the objective decreases by less than ``objective_tol`` (relative) in one iteration: weak
    directions can keep the consensus drifting for hundreds of iterations while the fit no longer improves
    (issue 13: 382 iterations of a 31,000-item, four-space universe still moving). ``objective_tol=None``
    uses ``tol``; 0 disables the objective rule.
    """
    names = list(Z)
    M = len(names)
    n, d = next(iter(Z.values())).shape
    dev = next(iter(Z.values())).device
    obj_tol = float(tol if objective_tol is None else objective_tol)
    if C is None:
        C = cross_products({m: Z[m] for m in names})               # Md x Md
    total = float(torch.diagonal(C).sum())
    eye = torch.eye(d, dtype=torch.float64, device=dev)
    R = torch.cat([eye] * M, dim=0)                                # Md x d, block m = R_m

    def quad(D, CD):                                               # ||sum_k X_k D_k||^2 / M^2, CD = C @ D
        return float(torch.sum(D * CD)) / (M * M)

    CR = C @ R                                                     # one Md x Md x d product per iteration
    u_norm2 = quad(R, CR)
    objective = max(total - M * u_norm2, 0.0)
    history = []
    converged, reason = False, "max_iter"
    for it in progress(range(max_iter), total=max_iter, desc="GPA iterations"):
        V = CR / M                                                 # block m = X_m^T U
        R_new = torch.cat(polar_factors([V[i * d:(i + 1) * d] for i in range(M)]), dim=0)
        CR_new = C @ R_new
        change = math.sqrt(max(quad(R_new - R, CR_new - CR), 0.0) / max(u_norm2, 1e-300))
        R, CR = R_new, CR_new
        u_norm2 = quad(R, CR)
        previous, objective = objective, max(total - M * u_norm2, 0.0)
        objective_change = abs(previous - objective) / max(previous, 1e-300)
        history.append({"iteration": it + 1, "relative_change": change, "residual": objective / (M * n),
                        "objective": objective, "objective_relative_change": objective_change})
        if change < tol:
            converged, reason = True, "consensus"
            break
        if obj_tol > 0 and objective_change < obj_tol:
            converged, reason = True, "objective"
            break
    Rd = {m: R[i * d:(i + 1) * d] for i, m in enumerate(names)}
    U = sum(Z[m] @ Rd[m] for m in names) / M
    return Rd, U, history, converged, reason


class GPA(_Invertible):
    """Generalised Procrustes analysis: one orthogonal map per space into a shared consensus.

    Starts symmetrically (``R_m = I``, consensus ``U = mean_m X_m``), then repeats ``R_m = A B^T`` from the SVD
    ``X_m^T U = A S B^T`` and ``U = mean_m X_m R_m`` until ``||U_new - U|| / ||U|| < tol`` (the authors' rule)
    or until the objective ``sum_m ||X_m R_m - U||^2`` decreases by less than ``objective_tol`` (relative) in one
    iteration, at most ``max_iter`` iterations (the authors' defaults: 50, 1e-6; METHODS.md 7.4). Universe
    coordinates ``u = x R_m``; a map a -> b is ``R_a R_b^T`` (cycle-consistent by construction).

    Parameters
    ----------
    standardize, width, dim, preprocess_order : preprocessing (see :class:`UniversePreprocessor`; ``order``).
    max_iter, tol, objective_tol : stopping rule (``objective_tol=None``: same as ``tol``; 0: consensus only).

    Attributes
    ----------
    R_ : dict space -> d x d orthogonal numpy array.
    consensus_ : n_train x d consensus ``U`` (kept for :meth:`add_space`).
    history_ : list of ``{"iteration", "relative_change", "residual", "objective", "objective_relative_change"}``
        (residual = mean squared distance of the rotated spaces to the consensus, per item and space).
    objective_ : final ``sum_m ||X_m R_m - U||^2`` on the training rows (preprocessed coordinates).
    stop_reason_ : ``"consensus"``, ``"objective"`` or ``"max_iter"``.
    converged_, n_iter_, fit_seconds_, added_ (spaces added by GPA-ADD, with their fit seconds).
    """

    method = "gpa"

    def __init__(self, standardize: bool = True, width: str = "pca", dim: int | None = None,
                 max_iter: int = 50, tol: float = 1e-6, objective_tol: float | None = None, device=None,
                 preprocess_order: str = "zscore-pca"):
        self.standardize = standardize
        self.width = width
        self.dim = dim
        self.max_iter = max_iter
        self.tol = tol
        self.objective_tol = objective_tol
        self.device = device
        self.preprocess_order = preprocess_order

    def fit(self, spaces: Mapping[str, np.ndarray], progress: Callable | None = None,
            prepared: PreparedSpaces | None = None) -> "GPA":
        """Fit on ``spaces`` (``prepared``: their preprocessing, already fitted; see :class:`PreparedSpaces`)."""
        progress = progress or _identity
        t0 = time.perf_counter()
        Z = self._prepare(spaces, prepared)
        R, U, history, converged, reason = _gpa_iterate(
            Z, int(self.max_iter), float(self.tol), progress,
            None if self.objective_tol is None else float(self.objective_tol), C=self._cross_products())
        self._done_fitting()
        self.R_ = {m: _np(r) for m, r in R.items()}
        self.consensus_ = _np(U)
        self.history_ = history
        self.converged_ = converged
        self.stop_reason_ = reason
        self.n_iter_ = len(history)
        self.objective_ = float(history[-1]["objective"]) if history else float("nan")
        self.added_ = {}
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def add_space(self, name: str, X) -> "GPA":
        """GPA-ADD: fit only ``R`` of a new space against the fixed consensus (no other map changes).

        ``X`` holds the new space's rows for the same training items, in the same order, as :meth:`fit` saw.
        The new space is preprocessed on its own, in the universe's preprocessing order (z-score, then PCA / zero
        padding to the universe's width; or, with ``preprocess_order="pca-zscore"``, PCA then z-score), and its
        rotation is the Procrustes fit of those preprocessed rows against the stored consensus of the preprocessed
        spaces - as in the authors' code.
        """
        self._require_fitted()
        if name in self.R_:
            raise DataError(f"the universe already has a space named '{name}'")
        shape = tuple(getattr(X, "shape", ()))
        if len(shape) != 2 or shape[0] != self.consensus_.shape[0]:
            raise DataError(f"the new space needs {self.consensus_.shape[0]} rows (the training items, same order), "
                            f"got shape {shape}", array=name)
        t0 = time.perf_counter()
        # everything is computed on a copy of the preprocessor (its containers copied, the fitted steps shared) and
        # the new state assigned at the end: an add that fails (bad rows, a cancel, an interrupt) leaves the
        # estimator exactly as it was, and the preprocessor a GCPA shares with this GPA is never changed
        pre = copy.copy(self.preprocessor_)
        pre.steps_, pre.names_ = dict(pre.steps_), list(pre.names_)
        pre.add(name, X)
        dev = self._dev()
        z = pre.transform_t(name, X, dev)
        U = torch.as_tensor(self.consensus_, device=dev)
        R = _np(_polar(z.T @ U))
        self.preprocessor_, self.R_ = pre, {**self.R_, name: R}
        self.added_ = {**self.added_, name: {"fit_seconds": time.perf_counter() - t0}}
        return self

    def _Rt(self, name, dev):
        self.preprocessor_._step(name)
        return torch.as_tensor(self.R_[name], dtype=torch.float64, device=dev)

    def _universe_t(self, space, z):
        return z @ self._Rt(space, z.device)

    def _map_t(self, z, source, target):
        return z @ self._Rt(source, z.device) @ self._Rt(target, z.device).T

    def map_matrix(self, source: str, target: str) -> np.ndarray:
        """The d x d map ``R_source R_target^T`` between preprocessed coordinates."""
        self._require_fitted()
        return self.R_[source] @ self.R_[target].T

    def describe(self) -> dict:
        out = super().describe()
        # iterations_run: named for what it holds; "iterations" / "n_iter" are its deprecated aliases (README)
        out.update({"iterations_run": self.n_iter_, "iterations": self.n_iter_, "n_iter": self.n_iter_,
                    "converged": self.converged_,
                    "stop_reason": self.stop_reason_, "objective": self.objective_,
                    "final_relative_change": self.history_[-1]["relative_change"] if self.history_ else None,
                    "added_spaces": list(self.added_)})
        return out


# ------------------------------------------------------------------------------------------------
# GCCA
# ------------------------------------------------------------------------------------------------
class GCCA(_Universe):
    """Generalised CCA in two named variants: the project's regularised MAXVAR (default) and the authors'
    RACING-GCCA (METHODS.md 7.4). Plots and tables label which (:attr:`label`).

    ``variant="maxvar-ridge"`` (default). With the thin SVD ``X_m = U_m S_m V_m^T`` of each preprocessed space,
    the regularised bases are ``B_m = U_m S_m (S_m^2 + r)^{-1/2}``; the shared ``G`` (n x k, ``G^T G = I``) holds
    the top-k left singular vectors of ``[B_1 ... B_M]``; per-space maps ``W_m = (X_m^T X_m + r I)^{-1} X_m^T G``.
    Universe coordinates ``u = x W_m``. Between spaces: a -> universe -> b by the least-squares inverse of ``W_b``.

    ``variant="racing"`` (the authors' code, translator/gcca.py). No ridge. Rank ``R = min(smallest width, n)``;
    per space the thin SVD truncated to ``r_m = min(width_m, n)`` columns; the block matrix ``S`` with
    ``(M - 1) I`` on the diagonal blocks and ``-U_i^T U_j`` off the diagonal; ``Phi`` = the eigenvectors of ``S``
    for its ``R`` smallest eigenvalues, sliced per space (``Phi_m``, ``r_m x R``); the map of space m is
    ``Q_m = V_m Phi_m``, so universe coordinates are ``X_m Q_m = U_m S_m Phi_m``: each space keeps its own
    spectrum (unlike MAXVAR's whitened ``G``). A map a -> b is ``Q_a Q_b^T``. Computed from the equivalent
    ``S = M I - [U_1 .. U_M]^T [U_1 .. U_M]`` (the ``U_m`` have orthonormal columns).

    Parameters
    ----------
    n_components : k (default: the common width d for MAXVAR; R for RACING, which it may only lower).
    reg : r (MAXVAR only), added to the squared singular values of the preprocessed spaces. ``None`` (default)
        uses ``0.1 * n_train`` - with z-scored features the mean squared singular value is about ``n_train``, so
        this is a ridge of about a tenth of the average variance; the value used is in ``reg_``. RACING has no
        ridge: a ``reg`` other than None or 0 is refused.
    variant : ``"maxvar-ridge"`` or ``"racing"``.
    standardize, width, dim, preprocess_order : preprocessing.

    Attributes
    ----------
    W_ (dict space -> d x k: ``W_m``, or ``Q_m`` for RACING), eigenvalues_ (MAXVAR: the k squared singular values
    of ``[B_1 .. B_M]``; RACING: the R smallest eigenvalues of ``S``), G_ (MAXVAR: n_train x k),
    singular_values_ (RACING: dict space -> ``S_m``), reg_ (None for RACING), n_components_, fit_seconds_.
    """

    method = "gcca"

    def __init__(self, n_components: int | None = None, reg: float | None = None, standardize: bool = True,
                 width: str = "pca", dim: int | None = None, device=None, variant: str = "maxvar-ridge",
                 preprocess_order: str = "zscore-pca"):
        self.n_components = n_components
        self.reg = reg
        self.standardize = standardize
        self.width = width
        self.dim = dim
        self.device = device
        self.variant = variant
        self.preprocess_order = preprocess_order

    @property
    def label(self) -> str:
        """What plots call this estimator: ``GCCA (MAXVAR, ridge r)`` or ``GCCA (RACING, no ridge)``."""
        if self.variant == "racing":
            return "GCCA (RACING, no ridge)"
        r = getattr(self, "reg_", self.reg)
        return "GCCA (MAXVAR, ridge " + ("0.1 n" if r is None else f"{r:.4g}") + ")"

    def fit(self, spaces: Mapping[str, np.ndarray], progress: Callable | None = None,
            prepared: PreparedSpaces | None = None) -> "GCCA":
        """Fit on ``spaces`` (``prepared``: their preprocessing, already fitted; see :class:`PreparedSpaces`)."""
        progress = progress or _identity
        if self.variant not in GCCA_VARIANTS:
            raise DataError(f"unknown GCCA variant '{self.variant}'", hint=f"use one of {', '.join(GCCA_VARIANTS)}")
        if self.variant == "racing" and self.reg not in (None, 0, 0.0):
            raise DataError("RACING-GCCA (the authors' variant) has no ridge",
                            hint="drop the ridge, or use variant='maxvar-ridge'")
        t0 = time.perf_counter()
        self.__dict__.pop("_pinv", None)                   # pseudo-inverses of a previous fit
        Z = self._prepare(spaces, prepared)
        if self.variant == "racing":
            self._fit_racing(Z, progress)
        else:
            self._fit_maxvar(Z, progress)
        self._done_fitting()
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _fit_racing(self, Z: dict, progress) -> None:
        n = self.n_train_
        Us, Vs, sizes = [], [], []
        self.singular_values_ = {}
        thin = single_threaded(functools.partial(torch.linalg.svd, full_matrices=False), [(Z[m],) for m in Z],
                             all(z.device.type == "cpu" for z in Z.values()))   # side by side, one thread each
        for m, (U, S, Vh) in zip(progress(list(Z), total=len(Z), desc="GCCA (RACING) SVDs"), thin):
            # r_m = min(width_m, n) columns
            keep = S > S[0].clamp_min(1e-300) * 1e-10     # numerically zero directions (e.g. zero padding) have
            U, S, Vh = U[:, keep], S[keep], Vh[keep]       # arbitrary U columns: leave them out
            Us.append(U)
            Vs.append(Vh.T)
            sizes.append(U.shape[1])
            self.singular_values_[m] = _np(S)
        R = min(min(int(X.shape[1]) for X in Z.values()), n)
        if self.n_components is not None:
            R = min(R, int(self.n_components))
        if R < 1:
            raise DataError("GCCA needs at least one component")
        M = len(Z)
        Ucat = torch.cat(Us, dim=1)
        lam, vecs = _sym_eig_desc(Ucat.T @ Ucat)      # S = M I - Ucat^T Ucat: its smallest = these largest
        Phi = vecs[:, :R]
        self.eigenvalues_ = _np(M - lam[:R])
        self.W_ = {}
        start = 0
        for m, V, r_m in zip(Z, Vs, sizes):
            self.W_[m] = _np(V @ Phi[start:start + r_m])
            start += r_m
        self.reg_ = None
        self.n_components_ = R

    def _fit_maxvar(self, Z: dict, progress) -> None:
        n = self.n_train_
        r = float(0.1 * n if self.reg is None else self.reg)
        if r < 0:
            raise DataError(f"the GCCA ridge must be >= 0, got {r}")
        # B = [B_1 ... B_M], B_m = X_m P_m with P_m = V_m (S_m^2 + r)^{-1/2}; every product with B is read from
        # the shared cross-products C (block C_jk = X_j^T X_k): B_j^T B_k = P_j^T C_jk P_k
        names = list(Z)
        d = int(next(iter(Z.values())).shape[1])
        C = self._cross_products()

        def block(i, j):
            return C[i * d:(i + 1) * d, j * d:(j + 1) * d]

        P, eig = [], {}
        # S^2 and V of every X_m, side by side (one thread each: core.numerics.single_threaded)
        spectra = single_threaded(_sym_eig_desc, [(block(i, i),) for i in range(len(names))], C.device.type == "cpu")
        for i, m in enumerate(progress(names, total=len(names), desc="GCCA bases")):
            vals, vecs = spectra[i]
            keep = vals > vals[0].clamp_min(1e-300) * 1e-10
            s2, V = vals[keep], vecs[:, keep]
            P.append(V / torch.sqrt(s2 + r))               # U S (S^2 + r)^{-1/2} = X V (S^2 + r)^{-1/2}
            eig[m] = (vals.clamp_min(0), vecs)
        width = sum(p.shape[1] for p in P)
        k = int(self.n_components or self.preprocessor_.dim_)
        k = min(k, width, n)
        if k < 1:
            raise DataError("GCCA needs at least one component")
        BtB = torch.cat([torch.cat([P[i].T @ block(i, j) @ P[j] for j in range(len(P))], dim=1)
                         for i in range(len(P))], dim=0)
        lam, Vb = _sym_eig_desc(BtB)
        lam, Vb = lam[:k].clamp_min(1e-300), Vb[:, :k]
        starts = np.cumsum([0] + [p.shape[1] for p in P])
        A = [P[i] @ Vb[starts[i]:starts[i + 1]] / torch.sqrt(lam) for i in range(len(names))]   # G0 = sum X_i A_i
        G0 = sum(Z[m] @ A[i] for i, m in enumerate(names))
        CA = [sum(block(i, j) @ A[j] for j in range(len(names))) for i in range(len(names))]   # X_i^T G0, d x k
        # re-orthonormalise (G0 is orthonormal in exact arithmetic: T = I up to rounding)
        G, T = orthonormal_factor(G0, sum(A[i].T @ CA[i] for i in range(len(names))))
        self.G_ = _np(G)
        self.eigenvalues_ = _np(lam)
        diag = torch.diagonal(T).abs()
        from_C = bool(diag.min() > 1e-8 * diag.max())     # T well conditioned: X_m^T G from the cross-products
        self.W_ = {}
        for i, m in enumerate(names):
            vals, vecs = eig[m]
            inv = torch.where(vals + r > vals[0].clamp_min(1e-300) * 1e-12, 1.0 / (vals + r), torch.zeros_like(vals))
            if from_C:   # X_m^T G = X_m^T G0 T^-1 = (sum_j C_mj A_j) T^-1: d x d work instead of n x d
                XtG = torch.linalg.solve_triangular(T, CA[i], upper=True, left=False)
            else:
                XtG = Z[m].T @ G
            self.W_[m] = _np(vecs @ (inv[:, None] * (vecs.T @ XtG)))
        self.reg_ = r
        self.n_components_ = k

    def _Wt(self, name, dev):
        self.preprocessor_._step(name)
        return torch.as_tensor(self.W_[name], dtype=torch.float64, device=dev)

    def _universe_t(self, space, z):
        return z @ self._Wt(space, z.device)

    def _back_t(self, target, dev):
        """From the universe back to ``target``: ``W_target^+`` (RACING: ``Q_target^T``), one pseudo-inverse per
        space and fit (single-threaded, core.numerics.single_threaded), kept for the next call."""
        W = self._Wt(target, dev)
        if self.variant == "racing":
            return W.T                                     # Q_a Q_b^T, as the authors' code
        cache = self.__dict__.setdefault("_pinv", {})
        key = (target, str(dev), id(self.W_[target]))
        if key not in cache:
            (cache[key],) = single_threaded(torch.linalg.pinv, [(W,)], dev.type == "cpu")
        return cache[key]

    def _map_t(self, z, source, target):
        return z @ self._Wt(source, z.device) @ self._back_t(target, z.device)

    def map_matrix(self, source: str, target: str) -> np.ndarray:
        """The d x d map between preprocessed coordinates: ``W_source W_target^+`` (RACING: ``Q_a Q_b^T``)."""
        self._require_fitted()
        dev = torch.device("cpu")
        return _np(self._Wt(source, dev) @ self._back_t(target, dev))

    def describe(self) -> dict:
        out = super().describe()
        out.update({"n_components": self.n_components_, "reg_used": self.reg_, "variant": self.variant,
                    "label": self.label})
        return out


# ------------------------------------------------------------------------------------------------
# GCPA
# ------------------------------------------------------------------------------------------------
class _Corrector(torch.nn.Module):
    """T(u) = normalize(u^ + g * delta), u^ = normalize(u), h = LayerNorm(u^), delta = W2 GELU(W1 h),
    g = sigmoid(Wg h); W2 and Wg start at zero so T is the identity on unit vectors at start.

    The forward pass is :func:`_corrector_forward` (differentiable by autograd); training computes the gradient
    by hand (:func:`_corrector_backward`)."""

    def __init__(self, d: int, hidden: int, generator: torch.Generator):
        super().__init__()
        self.norm = torch.nn.LayerNorm(d)
        self.w1 = init_linear_(torch.nn.Linear(d, hidden), generator)
        self.w2 = torch.nn.Linear(hidden, d)
        self.wg = torch.nn.Linear(d, d)
        for layer in (self.w2, self.wg):
            torch.nn.init.zeros_(layer.weight)
            torch.nn.init.zeros_(layer.bias)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        v, r, _ = _corrector_forward(self, u)
        return v / r[:, None]


def _buffer(work: dict | None, name: str, shape: tuple, dtype, device):
    """A buffer ``work[name]`` of ``shape`` kept from step to step (the first rows of a larger one when a batch is
    shorter; None without ``work``: the op allocates). Reusing the step's temporaries saves the page faults of
    fresh memory, which cost more than the elementwise work itself (about 23 MB a step on the study's batches)."""
    if work is None:
        return None
    t = work.get(name)
    if t is None or t.shape[0] < shape[0] or t.shape[1:] != shape[1:] or t.dtype != dtype or t.device != device:
        t = work[name] = torch.empty(shape, dtype=dtype, device=device)
    return t[:shape[0]]


def _layer_normed(u_hat: torch.Tensor, eps: float, dtype=None, work: dict | None = None) -> torch.Tensor:
    """LayerNorm of the rows without its affine part (``xn``), in ``dtype``: the corrector's first layer's input,
    which does not depend on the weights (the fit computes it once for its rows)."""
    B, d = u_hat.shape
    dtype = dtype or u_hat.dtype
    if work is None:
        return torch.nn.functional.layer_norm(u_hat, (d,), eps=eps).to(dtype)
    xn = _buffer(work, "xn", (B, d), u_hat.dtype, u_hat.device)
    torch.ops.aten.native_layer_norm.out(u_hat, [d], None, None, eps, out0=xn,
                                         out1=_buffer(work, "ln_mean", (B, 1), u_hat.dtype, u_hat.device),
                                         out2=_buffer(work, "ln_rstd", (B, 1), u_hat.dtype, u_hat.device))
    return xn if dtype == u_hat.dtype else _buffer(work, "xn_lo", (B, d), dtype, u_hat.device).copy_(xn)


def _corrector_forward(net: _Corrector, u: torch.Tensor, dtype=None, work: dict | None = None,
                       xn: torch.Tensor | None = None):
    """The corrector on the rows ``u``: ``(v, r, saved)`` with ``T(u) = v / r``, ``r`` the rows' norms (clamped
    at 1e-12 as :func:`_normalize` does) and ``saved`` what :func:`_corrector_backward` needs.

    LayerNorm's affine part is folded into the first layer: ``h W^T + b = xn (W diag(gamma))^T + (b + W beta)``
    for ``W = [W1; Wg]`` (``xn`` the normalised rows), so ``h`` is never formed and the backward pass needs no
    product with ``dL/dh``. ``dtype`` (e.g. ``torch.bfloat16``): the matrix products' inputs and outputs, the
    GELU and the gate in it (the float32 weights cast once per call); ``v`` and ``r`` stay in ``u``'s dtype.
    ``work``: buffers reused from call to call (training, under ``torch.no_grad``); without it the pass is
    differentiable by autograd. ``xn``: :func:`_layer_normed` of ``normalize(u)`` in ``dtype``, when the caller
    has it."""
    B, d = u.shape
    hid = net.w1.weight.shape[0]
    f32, dev = u.dtype, u.device
    lo = dtype or f32

    def buf(name, cols, dt=f32):
        return _buffer(work, name, (B, cols), dt, dev)

    u_hat = torch.div(u, torch.linalg.vector_norm(u, dim=1, keepdim=True).clamp_min(1e-12), out=buf("u_hat", d))
    xn_lo = _layer_normed(u_hat, net.norm.eps, lo, work) if xn is None else xn
    W = torch.cat([net.w1.weight, net.wg.weight])                            # (hidden + d) x d
    W_eff = W * net.norm.weight
    b_eff = torch.addmv(torch.cat([net.w1.bias, net.wg.bias]), W, net.norm.bias)
    W2, b2 = net.w2.weight, net.w2.bias
    if lo != f32:
        W_eff, b_eff, W2, b2 = W_eff.to(lo), b_eff.to(lo), W2.to(lo), b2.to(lo)
    z = torch.addmm(b_eff[:hid], xn_lo, W_eff[:hid].T, out=buf("z", hid, lo))
    pre_g = torch.addmm(b_eff[hid:], xn_lo, W_eff[hid:].T, out=buf("pre_g", d, lo))
    a = torch._C._nn.gelu(z, out=buf("a", hid, lo))
    delta = torch.addmm(b2, a, W2.T, out=buf("delta", d, lo))
    g = torch.sigmoid(pre_g, out=pre_g if work is not None else None)       # pre_g is not needed again
    if lo == f32:
        v = torch.addcmul(u_hat, g, delta, out=buf("v", d))
    else:       # g * delta in the low precision (as autocast does), added to u^ in float32; no mixed-dtype op
        v = torch.mul(g, delta, out=buf("g_delta", d, lo)).to(f32) if work is None else \
            buf("v", d).copy_(torch.mul(g, delta, out=buf("g_delta", d, lo)))
        v = v.add_(u_hat) if work is not None else v + u_hat
    r = torch.linalg.vector_norm(v, dim=1).clamp_min(1e-12)
    return v, r, {"xn": xn_lo, "z": z, "a": a, "delta": delta, "g": g, "W2": W2, "W": W}


def _gcpa_loss_terms(cos_c, cos_u, preserve_weight, margin):
    """The GCPA loss from the rows' cosines to their targets (``cos_c``) and to their inputs (``cos_u``)."""
    return (1 - cos_c).mean() + preserve_weight * torch.relu((1 - cos_u) - margin).mean()


def _gcpa_loss_of(v, r, u, c, preserve_weight, margin, work: dict | None = None):
    """The GCPA loss of ``T(u) = v / r`` (:func:`_corrector_forward`) toward ``c``, and the rows' cosines
    ``(loss, cos_c, cos_u)``, without forming ``T(u)``."""
    tmp = _buffer(work, "rowprod", tuple(v.shape), v.dtype, v.device)
    cos_c = torch.mul(v, c, out=tmp).sum(1).div_(r)
    cos_u = torch.mul(v, u, out=tmp).sum(1).div_(r)
    return _gcpa_loss_terms(cos_c, cos_u, preserve_weight, margin), cos_c, cos_u


def _corrector_backward(net: _Corrector, u, c, v, r, saved, preserve_weight, margin, work: dict):
    """The GCPA loss of the forward pass ``(v, r, saved)`` of :func:`_corrector_forward` on ``u`` toward ``c``,
    and its gradient with respect to every parameter, written into the parameters' ``.grad`` (float32).

    With ``out = v / r``, ``cc = out . c``, ``cu = out . u`` and ``m = [1 - cu - margin > 0]`` per row:
    ``dL/dv = (-(c + pw m u) + (cc + pw m cu) out) / (B r)`` (the second term dropped where ``r`` is clamped);
    then the gate and GELU by their aten backward kernels, and the first layer through the folded LayerNorm:
    ``Q = dA^T xn`` is the gradient of ``W diag(gamma)``, so ``dW = Q diag(gamma) + db beta^T``,
    ``dgamma = colsum(Q * W)``, ``dbeta = W^T db`` (``db`` the pre-activations' column sums)."""
    B, d = v.shape
    f32, dev = v.dtype, v.device
    xn, z, a, delta, g, W2, W = (saved[k] for k in ("xn", "z", "a", "delta", "g", "W2", "W"))
    hid, lo = z.shape[1], z.dtype
    pw = float(preserve_weight)

    def buf(name, shape, dt=f32):
        return _buffer(work, name, shape, dt, dev)

    loss, cos_c, cos_u = _gcpa_loss_of(v, r, u, c, preserve_weight, margin, work)
    m = ((1 - cos_u) - margin > 0).to(f32)
    inv = 1.0 / (B * r)
    beta = -pw * m * inv
    gamma_v = (cos_c + pw * m * cos_u) * inv / r * (r > 1e-12)
    dv = torch.mul(c, -inv[:, None], out=buf("dv", (B, d)))
    dv.addcmul_(u, beta[:, None]).addcmul_(v, gamma_v[:, None])
    if lo != f32:                        # the low-precision ops get inputs of their own dtype (mixed ones copy)
        dv = buf("dv_lo", (B, d), lo).copy_(dv)
    d_delta = torch.mul(dv, g, out=buf("d_delta", (B, d), lo))
    d_pre_g = torch.mul(dv, delta, out=buf("d_pre_g", (B, d), lo))
    torch.ops.aten.sigmoid_backward.grad_input(d_pre_g, g, grad_input=d_pre_g)
    da = torch.mm(d_delta, W2, out=buf("da", (B, hid), lo))
    dz = torch.ops.aten.gelu_backward.grad_input(da, z, grad_input=da)      # da is not needed again
    grads = _grads(net)
    # column sums (the biases' gradients) and products in the low precision, copied into the float32 gradients
    db = buf("db", (hid + d,), lo)
    torch.sum(dz, 0, out=db[:hid])
    torch.sum(d_pre_g, 0, out=db[hid:])
    db = db.to(f32)
    Q = buf("Q", (hid + d, d), lo)                                          # d L / d (W diag(gamma))
    torch.mm(dz.T, xn, out=Q[:hid])
    torch.mm(d_pre_g.T, xn, out=Q[hid:])
    Q = Q.to(f32)
    if lo == f32:
        torch.mm(d_delta.T, a, out=grads["w2.weight"])
        torch.sum(d_delta, 0, out=grads["w2.bias"])
    else:
        grads["w2.weight"].copy_(torch.mm(d_delta.T, a, out=buf("dW2_lo", (d, hid), lo)))
        grads["w2.bias"].copy_(torch.sum(d_delta, 0, out=buf("db2_lo", (d,), lo)))
    gamma, beta_ln = net.norm.weight, net.norm.bias
    torch.mv(W.T, db, out=grads["norm.bias"])
    torch.sum(torch.mul(Q, W, out=buf("QW", (hid + d, d))), 0, out=grads["norm.weight"])
    dW = torch.addr(Q.mul_(gamma), db, beta_ln, out=buf("QW", (hid + d, d)))
    grads["w1.weight"].copy_(dW[:hid])
    grads["wg.weight"].copy_(dW[hid:])
    grads["w1.bias"].copy_(db[:hid])
    grads["wg.bias"].copy_(db[hid:])
    return loss


def _grads(net: torch.nn.Module) -> dict:
    """The parameters' ``.grad`` tensors by name (made, zero, where missing), for the step to write into."""
    out = {}
    for k, p in net.named_parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        out[k] = p.grad
    return out


def _corrector_inputs(U: torch.Tensor, eps: float, dtype=None) -> torch.Tensor:
    """:func:`_layer_normed` of ``normalize(u)`` for every row of ``U`` (``M x n x d``), in ``dtype``."""
    out = torch.empty(U.shape, dtype=dtype or U.dtype, device=U.device)
    for m in range(U.shape[0]):
        out[m] = _layer_normed(_normalize(U[m]), eps, dtype)
    return out


def _gather_batch(work: dict, rows: torch.Tensor, *tables: torch.Tensor) -> tuple:
    """The ``rows`` of each 2-D table, into buffers of ``work`` kept for the fit."""
    return tuple(torch.index_select(X, 0, rows, out=_buffer(work, f"batch{i}", (len(rows), X.shape[1]), X.dtype,
                                                            X.device)) for i, X in enumerate(tables))


def _adamw(net: torch.nn.Module, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """GCPA's AdamW, the fused implementation where the device has it (one kernel for all the parameters)."""
    params = list(net.parameters())
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):       # pragma: no cover - a device without the fused kernel
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)


def _state_copy(net: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _gcpa_step(net, opt, u, c, preserve_weight, margin, amp_dtype=None, work: dict | None = None,
               xn: torch.Tensor | None = None) -> torch.Tensor:
    """One optimizer step of the corrector on the batch ``(u, c)``: the loss, its gradient (by hand:
    :func:`_corrector_forward`, :func:`_corrector_backward`), clipping at norm 1.0, AdamW. ``amp_dtype`` (e.g.
    ``torch.bfloat16``): the network's matrix products run in it (weights, gradients, optimizer state and the
    loss stay float32). ``work``: a dict the caller keeps for the fit (the step's buffers); ``xn``: the rows'
    :func:`_layer_normed` inputs, if the caller has them. Returns the loss."""
    work = {} if work is None else work
    with torch.no_grad():
        v, r, saved = _corrector_forward(net, u, amp_dtype, work, xn)
        loss = _corrector_backward(net, u, c, v, r, saved, preserve_weight, margin, work)
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step()
    return loss


class GCPA(_Universe):
    """GPA universe, then one small residual corrector ``T`` shared by all spaces (paper D's GCPA).

    Targets are per-item consensus directions ``c_i = normalize(mean_m normalize(u_{m,i}))`` of the GPA
    universe. Loss ``mean(1 - cos(T(u), c)) + preserve_weight * mean(ReLU((1 - cos(T(u), u^)) - margin))``.
    AdamW (lr 2e-3, weight decay 1e-4), gradient clipping at 1.0, batches of ``batch_size`` rows of one random
    space; ``holdout`` of the training items are held out for early stopping (``patience`` epochs without a lower
    held-out loss; the best weights are kept - epoch 0, the identity, included). One epoch = every space's
    training rows once (``schedule="epochs"``, the default). Trains on :func:`core.device.pick_device` (GPU when
    present), seeded. The training step's gradient is written out by hand (:func:`_corrector_backward`: the
    same gradient as autograd's, with two fewer matrix products), AdamW is the fused one where the device has it,
    and the first layer's LayerNorm'd inputs are computed once per fit (``M x n x d`` in the training dtype).

    ``precision``: ``"float32"`` (the default) trains in float32 throughout. ``"bfloat16"`` runs the corrector's
    matrix products (forward and backward), its GELU and its gate in bfloat16, as ``torch.autocast`` would, with
    float32 master weights, gradients, AdamW state and loss; the held-out checks that drive early stopping and the
    trained corrector's use stay float32. ``"auto"``: bfloat16 where the device multiplies it natively
    (:func:`core.device.has_fast_bfloat16`: AVX-512 BF16 / AMX CPUs, CUDA with bf16), else float32.
    ``precision_`` records what was used. See docs/METHODS.md for the measured agreement with float32.

    ``schedule="sampled"`` is the authors' ``_fit_gc`` (METHODS.md 7.4): each step draws a batch with replacement
    (``min(batch_size, training rows)`` rows) from one random space; ``steps_per_epoch`` (default
    ``max(200, ceil(training rows / batch))``) steps per epoch for ``max_epochs`` epochs; every ``val_interval``
    steps (default 20, or 40 when the held-out set holds at least one full batch) the held-out loss is the mean
    over ``val_batches`` sampled held-out batches; training stops after ``val_patience`` checks without
    improvement and the best validated weights are kept (the untrained identity is not a candidate). History
    entries are then one per check: ``{"step", "epoch", "train_loss", "heldout_loss", "seconds"}``.

    Attributes
    ----------
    gpa_ : the fitted :class:`GPA`.
    net_ : the trained torch module (on CPU).
    history_ : list of ``{"epoch", "train_loss", "heldout_loss", "seconds"}`` (epoch 0 = identity; ``seconds``
        since the fit started).
    best_epoch_, stopped_epoch_, fit_seconds_, device_ (where it trained), precision_ (``"float32"`` or
    ``"bfloat16"``).
    """

    method = "gcpa"

    def __init__(self, standardize: bool = True, width: str = "pca", dim: int | None = None,
                 max_epochs: int = 100, patience: int = 15, batch_size: int = 4096, lr: float = 2e-3,
                 weight_decay: float = 1e-4, hidden_mult: int = 2, preserve_weight: float = 0.7,
                 margin: float = 0.08, holdout: float = 0.1, random_state=0, gpa_max_iter: int = 50,
                 gpa_tol: float = 1e-6, device=None, preprocess_order: str = "zscore-pca",
                 schedule: str = "epochs", steps_per_epoch: int | None = None, val_interval: int | None = None,
                 val_batches: int = 50, val_patience: int = 50, precision: str = "float32"):
        self.precision = precision
        self.preprocess_order = preprocess_order
        self.schedule = schedule
        self.steps_per_epoch = steps_per_epoch
        self.val_interval = val_interval
        self.val_batches = val_batches
        self.val_patience = val_patience
        self.standardize = standardize
        self.width = width
        self.dim = dim
        self.max_epochs = max_epochs
        self.patience = patience
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.hidden_mult = hidden_mult
        self.preserve_weight = preserve_weight
        self.margin = margin
        self.holdout = holdout
        self.random_state = random_state
        self.gpa_max_iter = gpa_max_iter
        self.gpa_tol = gpa_tol
        self.device = device

    _fitted_attributes = ("net_",)

    def fit(self, spaces: Mapping[str, np.ndarray], progress: Callable | None = None, gpa: GPA | None = None,
            prepared: PreparedSpaces | None = None) -> "GCPA":
        """Fit GPA (or reuse ``gpa``, already fitted on the same rows) and train the corrector.

        ``prepared``: the spaces' preprocessing, already fitted (:class:`PreparedSpaces`), for the GPA fit and
        the universe coordinates of the training rows."""
        progress = progress or _identity
        t0 = time.perf_counter()
        spaces = check_spaces(spaces)
        if gpa is None:
            gpa = GPA(standardize=self.standardize, width=self.width, dim=self.dim, max_iter=self.gpa_max_iter,
                      tol=self.gpa_tol, device=self.device, preprocess_order=self.preprocess_order
                      ).fit(spaces, progress=progress, prepared=prepared)
        elif not gpa.is_fitted or not set(spaces) <= set(gpa.space_names_):
            raise DataError("the GPA given to GCPA.fit must be fitted on the same spaces",
                            hint=f"it was fitted on {', '.join(map(str, gpa.space_names_)) if gpa.is_fitted else 'nothing'}"
                                 f"; these are {', '.join(map(str, spaces))}")
        elif gpa.n_train_ != next(iter(spaces.values())).shape[0]:
            raise DataError(f"the GPA given to GCPA.fit was fitted on {gpa.n_train_} rows, these spaces have "
                            f"{next(iter(spaces.values())).shape[0]}", hint="pass the rows the GPA was fitted on")
        self.gpa_ = gpa
        self.preprocessor_ = gpa.preprocessor_
        self.n_train_ = gpa.n_train_
        names = list(spaces)
        if prepared is not None:
            self._check_prepared(spaces, prepared, self.preprocess_order)
            U = torch.stack([gpa._universe_t(m, prepared.Z[m]).to(device="cpu", dtype=torch.float32)
                             for m in names])                                # M x n x d
        else:
            U = torch.stack([torch.as_tensor(gpa.to_universe(m, spaces[m]), dtype=torch.float32)
                             for m in names])                                # M x n x d
        dev = pick_device(self.device)
        self.device_ = str(dev)
        seed = self._seed()
        gen = torch_generator(seed)
        M, n, d = U.shape
        U_hat = _normalize(U)
        C = _normalize(U_hat.mean(0))                                         # n x d consensus directions
        perm = torch.randperm(n, generator=gen)
        n_val = max(1, int(round(float(self.holdout) * n))) if n >= 10 else 0
        val_rows, tr_rows = perm[:n_val], perm[n_val:]
        net = _Corrector(d, max(1, int(self.hidden_mult) * d), torch_generator(seed)).to(dev)
        opt = _adamw(net, float(self.lr), float(self.weight_decay))
        U_hat_d, C_d = U_hat.to(dev), C.to(dev)
        pw, mg = float(self.preserve_weight), float(self.margin)

        # the held-out rows of every space and their targets, gathered once (float32: the checks are exact)
        u_val = U_hat_d[:, val_rows.to(dev)].reshape(-1, d)
        c_val = C_d[val_rows.to(dev)].repeat(M, 1)
        xn_val = _layer_normed(_normalize(u_val), net.norm.eps)
        val_work: dict = {}             # the held-out pass's buffers, reused from check to check

        def heldout_loss() -> float:
            if n_val == 0:
                return float("nan")
            with torch.no_grad():
                v, r, _ = _corrector_forward(net, u_val, None, val_work, xn_val)
                return float(_gcpa_loss_of(v, r, u_val, c_val, pw, mg, val_work)[0])

        if self.schedule not in GCPA_SCHEDULES:
            raise DataError(f"unknown GCPA schedule '{self.schedule}'", hint=f"use one of {', '.join(GCPA_SCHEDULES)}")
        amp = self._amp_dtype(dev)
        self.precision_ = "bfloat16" if amp is not None else "float32"
        XN = _corrector_inputs(U_hat_d, net.norm.eps, amp)       # the first layer's inputs, in amp (data only)
        work: dict = {}                 # the step's buffers, reused from batch to batch
        if self.schedule == "sampled":
            return self._fit_sampled(net, opt, U_hat_d, C_d, tr_rows.to(dev), val_rows.to(dev), gen, progress, t0,
                                     amp, XN, work)
        stopper = EarlyStopping(self.patience, 1e-7, lambda: _state_copy(net)).start(heldout_loss(), 0)
        self.history_ = [{"epoch": 0, "train_loss": None, "heldout_loss": stopper.best,
                          "seconds": time.perf_counter() - t0}]
        self.best_epoch_ = 0
        bs = max(1, int(self.batch_size))
        n_tr = len(tr_rows)
        batches_per_space = max(1, math.ceil(n_tr / bs))
        epoch = 0
        for epoch in progress(range(1, int(self.max_epochs) + 1), total=int(self.max_epochs), desc="GCPA epochs"):
            net.train()
            jobs = [(m, b) for m in range(M) for b in range(batches_per_space)]
            order = torch.randperm(len(jobs), generator=gen).tolist()
            rows_perm = {m: tr_rows[torch.randperm(n_tr, generator=gen)] for m in range(M)}
            total = 0.0
            # each batch a progress step: a cancel, or a job that must step aside, waits one batch, not an epoch
            for j in progress(order, total=len(order), desc="batches"):
                m, b = jobs[j]
                rows = rows_perm[m][b * bs:(b + 1) * bs].to(dev)
                u, c, xn = _gather_batch(work, rows, U_hat_d[m], C_d, XN[m])
                total += float(_gcpa_step(net, opt, u, c, pw, mg, amp, work, xn)) * len(rows)
            net.eval()
            val = heldout_loss()
            self.history_.append({"epoch": epoch, "train_loss": total / (M * n_tr), "heldout_loss": val,
                                  "seconds": time.perf_counter() - t0})
            if n_val == 0:          # nothing held out: keep the latest state
                stopper.take(val, epoch)
            elif stopper.update(val, epoch):
                break
            self.best_epoch_ = stopper.best_at
        self.best_epoch_ = stopper.best_at
        net.load_state_dict(stopper.best_state)
        self.net_ = net.cpu().eval()
        self.stopped_epoch_ = epoch
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _amp_dtype(self, dev: torch.device):
        """The low-precision dtype of the corrector's training (None: float32 throughout), from ``precision``."""
        if self.precision not in GCPA_PRECISIONS:
            raise DataError(f"unknown GCPA precision '{self.precision}'",
                            hint=f"use one of {', '.join(GCPA_PRECISIONS)}")
        if self.precision == "bfloat16" or (self.precision == "auto" and has_fast_bfloat16(dev)):
            return torch.bfloat16
        return None

    def _fit_sampled(self, net, opt, U_hat, C, tr_rows, val_rows, gen, progress, t0, amp, XN, work) -> "GCPA":
        """The authors' schedule (``schedule="sampled"``): see the class docstring."""
        M, _, d = U_hat.shape
        dev = U_hat.device
        pw, mg = float(self.preserve_weight), float(self.margin)
        n_tr, n_val = len(tr_rows), len(val_rows)
        bs = max(1, min(int(self.batch_size), n_tr))
        steps = int(self.steps_per_epoch or max(200, math.ceil(n_tr / bs)))
        interval = int(self.val_interval or (40 if n_val >= bs else 20))
        vbs = max(1, min(bs, n_val))

        def draw(rows, size):
            m = int(torch.randint(M, (1,), generator=gen))
            return m, rows[torch.randint(len(rows), (size,), generator=gen).to(dev)]

        def batch_loss(m, pick) -> float:
            u = U_hat[m, pick]
            v, r, _ = _corrector_forward(net, u)
            return float(_gcpa_loss_of(v, r, u, C[pick], pw, mg)[0])

        def heldout_loss() -> float:
            with torch.no_grad():
                return float(np.mean([batch_loss(*draw(val_rows, vbs)) for _ in range(int(self.val_batches))]))

        stopper = EarlyStopping(self.val_patience, 1e-7, lambda: _state_copy(net))   # the identity is no candidate
        step = 0
        self.history_, self.best_epoch_, self.best_step_ = [], 0, 0
        running, epoch, stop = [], 0, False
        for epoch in progress(range(1, int(self.max_epochs) + 1), total=int(self.max_epochs), desc="GCPA epochs"):
            for _ in progress(range(steps), total=steps, desc="steps"):
                net.train()
                m, pick = draw(tr_rows, bs)
                u, c, xn = _gather_batch(work, pick, U_hat[m], C, XN[m])
                running.append(float(_gcpa_step(net, opt, u, c, pw, mg, amp, work, xn)))
                step += 1
                if n_val and step % interval == 0:
                    net.eval()
                    val = heldout_loss()
                    self.history_.append({"step": step, "epoch": epoch, "train_loss": float(np.mean(running)),
                                          "heldout_loss": val, "seconds": time.perf_counter() - t0})
                    running = []
                    stop = stopper.update(val, (epoch, step))
                    if stopper.best_at is not None:
                        self.best_epoch_, self.best_step_ = stopper.best_at
                    if stop:
                        break
            if stop:
                break
        if stopper.best_state is not None:
            net.load_state_dict(stopper.best_state)
        self.net_ = net.cpu().eval()
        self.stopped_epoch_ = epoch
        self.n_steps_ = step
        self.fit_seconds_ = time.perf_counter() - t0
        return self

    def _apply(self, u: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            out = []
            for start in range(0, u.shape[0], _CHUNK):
                out.append(self.net_(u[start:start + _CHUNK].to(torch.float32).cpu()).to(torch.float64))
            return torch.cat(out) if out else u.new_zeros((0, u.shape[1]))

    def _universe_t(self, space, z):
        u = self.gpa_._universe_t(space, z)
        return self._apply(u).to(z.device)

    def _map_t(self, z, source, target):
        u = self.gpa_._universe_t(source, z)
        v = self._apply(u).to(z.device) * u.norm(dim=1, keepdim=True)
        return v @ self.gpa_._Rt(target, z.device).T

    def describe(self) -> dict:
        out = super().describe()
        # epochs_run / gpa_iterations_run / steps_run: named for what they hold; stopped_epoch / gpa_iterations /
        # steps are their deprecated aliases for one release (README, "Renamed JSON keys")
        out.update({"gpa_iterations_run": self.gpa_.n_iter_, "gpa_iterations": self.gpa_.n_iter_,
                    "best_epoch": self.best_epoch_, "epochs_run": self.stopped_epoch_,
                    "stopped_epoch": self.stopped_epoch_, "trained_on": self.device_, "schedule": self.schedule,
                    "precision": getattr(self, "precision_", "float32")})
        if self.schedule == "sampled":
            out.update({"steps_run": self.n_steps_, "steps": self.n_steps_, "best_step": self.best_step_})
        return out


# ------------------------------------------------------------------------------------------------
# factory
# ------------------------------------------------------------------------------------------------
_CLASSES = {"pw": PairwiseProcrustes, "gpa": GPA, "gcca": GCCA, "gcpa": GCPA}


def method_label(estimator) -> str:
    """The name plots give a fitted or unfitted estimator (GCCA says which variant)."""
    return getattr(estimator, "label", None) or METHOD_NAMES.get(estimator.method, estimator.method)


def make_estimator(method: str, **params):
    """A fresh estimator for ``method`` (one of :data:`METHODS`), with the parameters it accepts.

    Parameters it does not know are ignored, so one dict of settings serves every method.
    """
    key = str(method).lower()
    if key not in _CLASSES:
        raise DataError(f"unknown universe method '{method}'", hint=f"use one of {', '.join(METHODS)}")
    cls = _CLASSES[key]
    names = set(cls._get_param_names())
    if "random_state" in names and "seed" in params and "random_state" not in params:
        params = {**params, "random_state": params["seed"]}   # deprecated spelling, still accepted
    return cls(**{k: v for k, v in params.items() if k in names})
