"""The registry of similarity measures and the :func:`similarity` entry point."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..errors import DataError
from .cca_family import procrustes_distance, pwcca, svcca, svcca_top10
from .cka import debiased_cka, linear_cka, rbf_cka
from .neighbours import cknna, mutual_knn_alignment
from .preprocess import _preprocess
from .rsa import rsa


@dataclass(frozen=True)
class Measure:
    """A registered similarity measure.

    ``symmetric``: f(X, Y) == f(Y, X) (a matrix computes each pair once); ``higher_is_similar``: False
    for distances (the permutation p-value then counts null values <= the observed one).
    """

    name: str
    func: Callable
    symmetric: bool
    higher_is_similar: bool
    description: str


MEASURES: dict[str, Measure] = {m.name: m for m in [
    Measure("linear_cka", linear_cka, True, True, "linear CKA (streamed)"),
    Measure("debiased_cka", debiased_cka, True, True, "debiased linear CKA (unbiased HSIC)"),
    Measure("rbf_cka", rbf_cka, True, True, "RBF-kernel CKA (median heuristic)"),
    Measure("mutual_knn", mutual_knn_alignment, True, True, "mutual k-NN alignment (cosine)"),
    Measure("cknna", cknna, False, True, "CKNNA: HSIC on mutual k-NN pairs"),
    Measure("svcca", svcca, True, True, "SVCCA, 99 % of the variance (Raghu et al.)"),
    Measure("svcca_top10", svcca_top10, True, True, "SVCCA, top-10 components (the Platonic code)"),
    Measure("pwcca", pwcca, False, True, "projection-weighted CCA"),
    Measure("procrustes", procrustes_distance, True, False, "orthogonal Procrustes distance (lower = closer)"),
    Measure("rsa", rsa, True, True, "RSA (Spearman of pairwise distances)"),
]}

#: Other accepted spellings of the measure names.
MEASURE_ALIASES = {
    "cka": "linear_cka", "linear": "linear_cka", "debiased": "debiased_cka", "unbiased_cka": "debiased_cka",
    "rbf": "rbf_cka", "mutual_knn_alignment": "mutual_knn", "knn": "mutual_knn",
    "procrustes_distance": "procrustes", "svcca_platonic": "svcca_top10", "svcca_raghu": "svcca",
}


def resolve_measure(measure: str | Measure) -> Measure:
    """The registered :class:`Measure` for a name or alias (DataError when unknown)."""
    if isinstance(measure, Measure):
        return measure
    key = str(measure).strip().lower().replace("-", "_")
    key = MEASURE_ALIASES.get(key, key)
    if key not in MEASURES:
        raise DataError(f"unknown similarity measure {measure!r}",
                        hint=f"use one of {', '.join(MEASURES)}")
    return MEASURES[key]


def _with_seed(m: Measure, kw: dict, seed: int) -> dict:
    """``kw`` plus ``seed=seed`` when the measure takes a seed (its own sub-sample) and none was given."""
    import inspect
    if "seed" in inspect.signature(m.func).parameters and "seed" not in kw:
        return {**kw, "seed": seed}
    return dict(kw)


def similarity(X, Y, measure: str = "linear_cka", preprocess: str | None = None, **kw) -> float | None:
    """``measure(X, Y, **kw)`` for a registered measure name (see :data:`MEASURES`), after ``preprocess``
    (``"platonic"``: :func:`platonic_preprocess` of both spaces)."""
    return resolve_measure(measure).func(_preprocess(X, preprocess), _preprocess(Y, preprocess), **kw)
