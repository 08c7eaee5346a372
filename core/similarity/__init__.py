"""Similarity of two embedding spaces (docs/METHODS.md section 1).

Every function takes two row-paired spaces ``X`` (``n x p``) and ``Y`` (``n x q``) - numpy arrays,
``numpy.memmap`` views of files, or torch tensors - and returns a plain Python ``float`` (or ``None``
where the value is undefined, always with a warning; never NaN).

Measures (names of the :data:`MEASURES` registry, used by :func:`similarity`):

``linear_cka``   linear CKA, streamed over row chunks from feature-space sums (n bounded by time, not memory)
``debiased_cka`` CKA from Song et al.'s unbiased HSIC estimator, streamed in two passes
``rbf_cka``      CKA with Gaussian kernels, median heuristic bandwidth (n x n; seeded sub-sample above ``max_n``)
``mutual_knn``   mutual k-NN alignment of Huh et al. (cosine; top-k in row chunks)
``cknna``        CKNNA of Huh et al. (unbiased HSIC restricted to mutual k-NN pairs)
``svcca``        SVCCA: PCA to ``var_explained`` of the variance, then the mean canonical correlation
``svcca_top10``  SVCCA as the Platonic Representation code: the top 10 components, then the mean correlation
``pwcca``        projection-weighted CCA (Morcos et al. 2018)
``procrustes``   orthogonal Procrustes distance of the centred, Frobenius-normalised spaces (a distance: 0 = same shape)
``rsa``          Spearman correlation of the two condensed pairwise-distance vectors (seeded sample)

``preprocess="platonic"`` (:func:`platonic_preprocess`; the paper A preset): the Platonic code's clipping at the
0.95 quantile of |x| and L2-normalised rows before any measure; with it ``rbf_cka(sigma=1)`` is that code's RBF CKA.

Chance references: :func:`permutation_test` (shuffle the rows of ``Y``) and :func:`bootstrap_interval`
(resample items). Many spaces at once: :func:`similarity_matrix` (M x M over one dataset's spaces) and
:func:`layerwise_similarity` (A x B between two lists of spaces, e.g. the layers of two encoders).

All sums are accumulated in float64 on :func:`core.device.pick_device` (CPU when MPS is the pick, as MPS
has no float64). Inputs are read chunk by chunk, so memory-mapped spaces are never loaded whole by the
streaming measures (linear and debiased CKA, Procrustes, SVCCA, PWCCA).

Modules, by family: :mod:`._common` (array checks, chunked loading, seeded samples, streamed moments),
:mod:`.cka` (linear, debiased and RBF CKA), :mod:`.neighbours` (mutual k-NN, CKNNA), :mod:`.cca_family` (SVCCA,
PWCCA, Procrustes distance), :mod:`.rsa`, :mod:`.preprocess` (the Platonic code's pre-processing),
:mod:`.measures` (the registry and :func:`similarity`), :mod:`.nulls` (permutation test, bootstrap interval) and
:mod:`.matrix` (matrices over many spaces). Everything public is importable from ``core.similarity``.
"""
from __future__ import annotations

from ._common import GRAM_MAX_N, _Moments
from .cca_family import procrustes_distance, pwcca, svcca, svcca_top10
from .cka import _cka_from_moments, debiased_cka, linear_cka, rbf_cka
from .matrix import layerwise_similarity, similarity_matrix
from .measures import MEASURE_ALIASES, MEASURES, Measure, resolve_measure, similarity
from .neighbours import cknna, mutual_knn_alignment
from .nulls import BootstrapInterval, PermutationTest, bootstrap_interval, permutation_test
from .preprocess import PREPROCESSING, platonic_preprocess
from .rsa import rsa

__all__ = [
    "linear_cka", "debiased_cka", "rbf_cka", "mutual_knn_alignment", "cknna", "svcca", "pwcca",
    "procrustes_distance", "rsa", "similarity", "permutation_test", "bootstrap_interval",
    "similarity_matrix", "layerwise_similarity", "Measure", "MEASURES", "MEASURE_ALIASES",
    "resolve_measure", "GRAM_MAX_N", "svcca_top10", "platonic_preprocess", "PREPROCESSING",
    "PermutationTest", "BootstrapInterval",
]
# private names other modules import from here: _cka_from_moments and _Moments (core.distributed)
