"""Platoscope's compute core: load embedding spaces, measure and align them.

The public API is listed in README.md ("Python API"); every function and estimator has a numpy-style docstring.
Nothing here imports streamlit. Sub-modules: dataset, io, validate, summary, projection, similarity (a package: one
module per family of measures), align, pointset, hierarchy, radial, universe (the estimators, one module per paper),
evaluation (a package: metrics, splits and one protocol module per paper), encoders, demo, export, cache, device, cli.

The names below are importable from ``core`` directly; the heavier ones are imported on first use.
"""
import os as _os

# OpenMP worker threads (torch's, MKL's, scikit-learn's) sleep while they wait for work instead of spinning: on a
# shared or busy machine spinning threads starve each other, and a 384 x 384 SVD took 2.2 s instead of 0.04 s
# (docs/UI.md, "threads"). Only takes effect when core is imported before torch; an explicit value is kept.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .errors import BudgetError, DataError, PlatoscopeError
from .dataset import MODALITIES, Dataset, LazySpace, SourceFile, Space, array_sha256, guess_modality
from .io import load_dataset, load_file, load_hierarcaps, load_metadata
from .summary import dataset_overview, summarize_dataset
from ._lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {
    # similarity of two spaces
    "linear_cka": "similarity", "debiased_cka": "similarity", "rbf_cka": "similarity",
    "mutual_knn_alignment": "similarity", "cknna": "similarity", "svcca": "similarity", "pwcca": "similarity",
    "procrustes_distance": "similarity", "rsa": "similarity",
    "permutation_test": "similarity", "bootstrap_interval": "similarity", "similarity_matrix": "similarity",
    "layerwise_similarity": "similarity",
    # pairwise alignment and its evaluation
    "AffineMap": "align", "ProcrustesMap": "align", "CCA": "align", "LocalCKA": "align",
    "PairwiseAligner": "align", "score_matrix": "align", "save_map": "align", "load_map": "align",
    "evaluate_scores": "evaluation.metrics", "split_anchors_queries": "evaluation.splits",
    "matching_accuracy": "evaluation.metrics", "retrieval_topk": "evaluation.metrics",
    "mean_reciprocal_rank": "evaluation.metrics",
    "run_protocol": "evaluation.alignment", "sweep_k": "evaluation.alignment", "sweep_anchors": "evaluation.alignment",
    # projections
    "PCAProjection": "projection", "umap_embedding": "projection",
    # encoders and the demo
    "MiniLMEncoder": "encoders", "OpenCLIPEncoder": "encoders", "make_encoder": "encoders",
    "HFTextEncoder": "encoders_text", "SentenceTransformerEncoder": "encoders_text",
    "TimmEncoder": "encoders_vision", "TorchvisionEncoder": "encoders_vision", "PythonEncoder": "encoders_python",
    "read_point_clouds": "pointclouds", "encode_dataset": "encode",
    "load_demo": "demo", "demo_point_clouds": "demo", "demo_token_space": "demo",
}


__getattr__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "DataError", "BudgetError", "PlatoscopeError", "Dataset", "Space", "LazySpace", "SourceFile", "guess_modality",
    "array_sha256", "MODALITIES", "load_dataset", "load_file", "load_hierarcaps", "load_metadata",
    "summarize_dataset", "dataset_overview", "__version__", *_LAZY,
]
