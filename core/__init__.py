"""Platoscope's compute core: load embedding spaces, measure and align them.

The public API is listed in README.md ("Python API"); every function and estimator has a numpy-style docstring.
Nothing here imports streamlit. Sub-modules: dataset, io, validate, summary, projection, similarity, align,
evaluate, protocol, export, cache, device, cli (and the ones later issues add).
"""
from .errors import BudgetError, DataError, PlatoscopeError
from .dataset import MODALITIES, Dataset, SourceFile, Space, array_sha256, guess_modality
from .io import load_dataset, load_file, load_hierarcaps, load_metadata
from .summary import dataset_overview, summarize_dataset

__version__ = "0.1.0"

__all__ = [
    "DataError", "BudgetError", "PlatoscopeError", "Dataset", "Space", "SourceFile", "guess_modality",
    "array_sha256", "MODALITIES", "load_dataset", "load_file", "load_hierarcaps", "load_metadata",
    "summarize_dataset", "dataset_overview", "__version__",
]
