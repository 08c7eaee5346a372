"""What every Platoscope estimator shares: scikit-learn's contract, one fitted check, seeded randomness.

Every estimator of :mod:`core` derives from :class:`Estimator`, a :class:`sklearn.base.BaseEstimator`:

* hyper-parameters are the ``__init__`` arguments, stored unchanged under their own names (``__init__`` holds
  no logic), so :func:`sklearn.base.clone`, ``get_params`` / ``set_params`` and ``repr`` work, and estimators
  compose with :class:`sklearn.pipeline.Pipeline` and :class:`sklearn.model_selection.GridSearchCV`;
* ``fit`` returns ``self``; fitted state lives in attributes ending in ``_``; a ``fit`` (or ``fit_moments``) that
  raises leaves the estimator as it was before the call (its attributes are restored; see :func:`_atomic_fit`),
  so a failed first fit leaves it unfitted and a failed refit keeps the previous fit;
* an unfitted estimator raises :class:`core.errors.NotFittedError` (a subclass of scikit-learn's
  ``NotFittedError`` and of :class:`core.errors.DataError`) from one place, :func:`check_fitted`;
* estimators that draw random numbers take ``random_state`` (an int, ``None`` for fresh entropy, or a
  :class:`numpy.random.Generator`), resolved once per ``fit`` by :func:`resolve_seed` and then used only
  through local generators (:func:`torch_generator`, :func:`numpy_rng`); the global torch / numpy RNGs are
  never seeded. ``seed=`` is still accepted as a deprecated alias of ``random_state`` (one release).
"""
from __future__ import annotations

import functools
import inspect
import math
import os
import sys
import warnings

import numpy as np
import torch
from sklearn.base import BaseEstimator

from .errors import NotFittedError

__all__ = ["Estimator", "check_fitted", "resolve_seed", "torch_generator", "numpy_rng", "init_linear_"]


def check_fitted(estimator, attributes: tuple[str, ...] | None = None) -> None:
    """Raise :class:`~core.errors.NotFittedError` unless ``estimator`` is fitted.

    ``attributes`` default to the estimator's ``_fitted_attributes`` (every one must exist).
    """
    names = attributes if attributes is not None else type(estimator)._fitted_attributes
    if isinstance(names, str):
        names = (names,)
    if not all(hasattr(estimator, name) for name in names):
        cls = type(estimator).__name__
        raise NotFittedError(f"this {cls} is not fitted yet", hint=f"call {type(estimator)._fit_call} first")


def resolve_seed(random_state) -> int:
    """One integer seed from ``random_state``: an int (used as is), ``None`` (fresh OS entropy), a
    :class:`numpy.random.Generator` / ``RandomState`` or a :class:`torch.Generator` (one draw from it)."""
    if random_state is None:
        return int(np.random.default_rng().integers(2 ** 63))
    if isinstance(random_state, (bool, np.bool_)):
        raise TypeError("random_state must be an int, None or a random generator, not a bool")
    if isinstance(random_state, (int, np.integer)):
        return int(random_state)
    if isinstance(random_state, np.random.Generator):
        return int(random_state.integers(2 ** 63))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(2 ** 31))
    if isinstance(random_state, torch.Generator):
        return int(torch.randint(2 ** 62, (1,), generator=random_state))
    raise TypeError(f"random_state must be an int, None or a random generator, got {type(random_state).__name__}")


def torch_generator(seed: int, device: str | torch.device = "cpu") -> torch.Generator:
    """A local :class:`torch.Generator` on ``device`` seeded with ``seed`` (the global RNG is left alone)."""
    return torch.Generator(device=device).manual_seed(int(seed))


def numpy_rng(seed: int) -> np.random.Generator:
    """A local :func:`numpy.random.default_rng` seeded with ``seed``."""
    return np.random.default_rng(int(seed))


def init_linear_(layer: torch.nn.Module, generator: torch.Generator) -> torch.nn.Module:
    """Re-draw a linear or convolution layer's parameters exactly as its ``reset_parameters`` does (Kaiming
    uniform weights, uniform bias), but from ``generator``: a seeded fit neither depends on nor touches torch's
    global RNG, and draws the same numbers as seeding the global generator with ``seed`` and then building the layer."""
    with torch.no_grad():
        torch.nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
        if layer.bias is not None:
            fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(layer.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            torch.nn.init.uniform_(layer.bias, -bound, bound, generator=generator)
    return layer


def _accept_seed_alias(init):
    """Wrap an ``__init__`` that takes ``random_state`` so that ``seed=`` still works (deprecated alias)."""
    @functools.wraps(init)
    def wrapper(self, *args, **kwargs):
        if "seed" in kwargs:
            if "random_state" in kwargs:
                raise TypeError("give random_state or its deprecated alias seed, not both")
            warnings.warn(f"{type(self).__name__}(seed=...) is deprecated; use random_state=...",
                          DeprecationWarning, stacklevel=2)
            kwargs["random_state"] = kwargs.pop("seed")
        init(self, *args, **kwargs)
    return wrapper


_CORE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def outside_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` in the calling function that points at the first frame outside
    :mod:`core` (the user's line), however many core frames (fits, wrappers, helpers) lie between."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_CORE_DIR):
        frame, level = frame.f_back, level + 1
    return level


#: The methods whose failure must not leave partial fitted state (wrapped by :func:`_atomic_fit`).
_FIT_METHODS = ("fit", "fit_moments")


def _atomic_fit(fit):
    """Wrap a ``fit`` so that, when it raises (an error, a cancelled job, Ctrl-C), the estimator's attributes are
    restored to what they were before the call: no half-fitted state (a partial ``R_``, the training cross-products
    of ``_prepared``, a preprocessor without the maps) survives a failed fit. The snapshot is shallow (a fit
    assigns its attributes anew, it does not edit the previous fit's objects in place)."""
    if getattr(fit, "_atomic_fit", False):
        return fit

    @functools.wraps(fit)
    def wrapper(self, *args, **kwargs):
        before = dict(self.__dict__)
        try:
            return fit(self, *args, **kwargs)
        except BaseException:
            self.__dict__.clear()
            self.__dict__.update(before)
            raise
    wrapper._atomic_fit = True
    return wrapper


class Estimator(BaseEstimator):
    """Base class of Platoscope's estimators (see the module docstring for the contract).

    Subclasses set ``_fitted_attributes`` (the attributes a fit creates) and ``_fit_call`` (how to fit, for
    the error message).
    """

    _fitted_attributes: tuple[str, ...] = ()
    _fit_call: str = "fit"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is not None and "random_state" in inspect.signature(init).parameters:
            cls.__init__ = _accept_seed_alias(init)
        for name in _FIT_METHODS:
            method = cls.__dict__.get(name)
            if callable(method):
                setattr(cls, name, _atomic_fit(method))

    def __sklearn_is_fitted__(self) -> bool:
        return all(hasattr(self, name) for name in type(self)._fitted_attributes)

    @property
    def is_fitted(self) -> bool:
        """Whether :meth:`fit` has run."""
        return self.__sklearn_is_fitted__()

    def _require_fitted(self) -> None:
        check_fitted(self)

    @property
    def seed(self):
        """Deprecated alias of ``random_state`` (read only)."""
        if "random_state" not in self._get_param_names():
            raise AttributeError(f"{type(self).__name__} has no random_state")
        return self.random_state

    def _seed(self) -> int:
        """The integer seed of this fit (from ``random_state``)."""
        return resolve_seed(self.random_state)
