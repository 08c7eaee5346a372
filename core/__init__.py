"""Platoscope's compute core: load embedding spaces, measure and align them.

The public API is listed in README.md ("Python API"). Nothing here imports streamlit.
"""
from .errors import DataError, PlatoscopeError
from .dataset import Dataset, Space, SourceFile, guess_modality, array_sha256, MODALITIES

__version__ = "0.1.0"

__all__ = [
    "DataError", "PlatoscopeError", "Dataset", "Space", "SourceFile", "guess_modality",
    "array_sha256", "MODALITIES", "__version__",
]
