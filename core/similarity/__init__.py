"""Similarity of two embedding spaces (docs/METHODS.md section 1)."""
from .matrix import *  # noqa: F401,F403
from .matrix import __all__  # noqa: F401
from .matrix import _cka_from_moments, _Moments, _RESIDENT_BYTES  # noqa: F401
