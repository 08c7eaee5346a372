"""Judging a universe of M spaces (METHODS.md section 5): any-to-any retrieval, cycle-consistency, clustering,
GPA-ADD against a refit, and a 2-D map of every space's copy of the same items.

Items are split once (seeded, group-aware: :func:`core.evaluation.splits.split_anchors_queries`) into training items, on
which the universe is fitted, and held-out test items, on which everything here is judged.

* :func:`any_to_any_retrieval` - for every ordered pair (a, b), cosine scores between a's test items and b's
  (in the universe; for PW, a mapped into b's frame) ranked with :func:`core.evaluation.metrics.retrieval_topk` and
  :func:`core.evaluation.metrics.mean_reciprocal_rank` (ties count against the true item; items of one group are
  partners): M x M matrices of top-1 and top-5 accuracy (paper D's Hits@1 / Hits@5) and MRR, with the mean and
  the worst off-diagonal pair.
* :func:`cycle_consistency` - relative error ``||x - (a -> b -> c -> a)(x)|| / ||x||`` on test items in a's
  preprocessed coordinates, for every ordered triple of distinct spaces (a seeded sample beyond ``max_triples``).
* :func:`clustering_scores` - k-means (scikit-learn, one run per seed) on the L2-normalised universe coordinates
  of each space's test items, ARI and NMI (scikit-learn) against a label column, averaged over seeds.
* :func:`add_space_vs_refit` - GPA-ADD of one more space against refitting GPA on all of them: time and retrieval.
* :func:`universe_map` - a shared 2-D PCA of the normalised universe coordinates of every space's test items.
* :func:`evaluate_universe` - all of it for several methods.

Each returns a typed result (:class:`core.results.Result`: a dataclass read like a dict, ``to_dict()`` for JSON;
:class:`UniverseEvaluation` is the CLI's ``--json`` output). Metric keys follow the project's scheme (``top1``,
``top5``, ``mrr``; the matrices' rows are the query spaces, columns the retrieved ones); the old ``hits_at_1`` /
``hits_at_5`` keys are deprecated aliases for one release (read with a warning, emitted beside the new ones in JSON).
"""
from __future__ import annotations

import copy
import functools
import itertools
import time
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..errors import DataError
from ..results import ABSENT, Result, with_aliases
from ..device import to_numpy
from ..numerics import single_threaded_iter
from .metrics import chance_levels, cosine_true_ranks, mrr_from_ranks, std_over_seeds, topk_from_ranks
from .splits import split_train_test
import threading

import torch

from ..universe import (GPA, METHODS, PairwiseProcrustes, PreparedSpaces, check_spaces, make_estimator,
                        method_label, prepare_spaces)

__all__ = ["split_train_test", "UniverseStudy", "any_to_any_retrieval", "cycle_consistency", "clustering_scores",
           "add_space_vs_refit", "universe_map", "evaluate_universe", "RETRIEVAL_METRICS", "RENAMED_KEYS",
           "RetrievalMatrices", "CycleConsistency", "KMeansScores", "ClusteringScores", "AddSpaceResult",
           "UniverseMap", "UniverseMethodResult", "UniverseEvaluation"]

#: Keys of the retrieval matrices (and of their summary and chance).
RETRIEVAL_METRICS = ("top1", "top5", "mrr")
#: Deprecated keys (until the next release) -> their names in the project's metric scheme.
RENAMED_KEYS = {"hits_at_1": "top1", "hits_at_5": "top5"}


class _MetricDict(dict):
    """A dict keyed by metric that still answers the deprecated keys (with a warning)."""

    def __missing__(self, key):
        if key in RENAMED_KEYS:
            import warnings
            warnings.warn(f"the result key '{key}' is deprecated; use '{RENAMED_KEYS[key]}'", DeprecationWarning,
                          stacklevel=2)
            return self[RENAMED_KEYS[key]]
        raise KeyError(key)


@dataclass(eq=False)
class RetrievalMatrices(Result):
    """Any-to-any retrieval of M spaces on held-out items (:func:`any_to_any_retrieval`).

    ``top1``, ``top5``, ``mrr``: M x M lists (None on the diagonal; row = query space, column = retrieved space);
    ``summary``: {metric: {"mean", "worst", "worst_pair"}} over the off-diagonal cells; ``chance``: {metric: value}.
    """

    spaces: list
    n_queries: int
    top1: list
    top5: list
    mrr: list
    summary: dict
    chance: dict
    label: Any = ABSENT

    _aliases = RENAMED_KEYS

    def to_dict(self) -> dict:
        out = super().to_dict()
        out["summary"] = with_aliases(out["summary"], RENAMED_KEYS)
        out["chance"] = with_aliases(out["chance"], RENAMED_KEYS)
        return out


@dataclass(eq=False)
class CycleConsistency(Result):
    """Cycle error a -> b -> c -> a (:func:`cycle_consistency`)."""

    mean: float | None
    max: float | None
    n_triples: int
    sampled: bool
    triples: list


@dataclass(eq=False)
class KMeansScores(Result):
    """k-means ARI / NMI against labels, mean and std over seeds (:func:`kmeans_scores`)."""

    ari: float
    ari_std: float
    nmi: float
    nmi_std: float
    n_clusters: int
    per_seed: list


@dataclass(eq=False)
class ClusteringScores(Result):
    """:class:`KMeansScores` per space and their means (:func:`clustering_scores`)."""

    spaces: dict
    mean_ari: float
    mean_nmi: float
    seeds: list
    n_items: int


@dataclass(eq=False)
class AddSpaceResult(Result):
    """GPA-ADD of one space against refitting GPA (:func:`add_space_vs_refit`): ``top1_new_pairs`` /
    ``top1_base_pairs`` are the mean top-1 over the ordered pairs with the new space / among the base spaces
    (``{"add", "refit"}``; the old keys ``new_pairs`` / ``base_pairs`` are deprecated aliases for one release)."""

    space: str
    add_seconds: float
    refit_seconds: float
    speedup: float
    add: RetrievalMatrices
    refit: RetrievalMatrices
    top1_new_pairs: dict
    top1_base_pairs: dict

    _aliases = {"new_pairs": "top1_new_pairs", "base_pairs": "top1_base_pairs"}


@dataclass(eq=False)
class UniverseMap(Result):
    """Shared 2-D PCA of every space's universe coordinates of the same items (:func:`universe_map`)."""

    spaces: list
    rows: list
    coords: list
    explained: list


@dataclass(eq=False)
class UniverseMethodResult(Result):
    """One method of :func:`evaluate_universe`: its fit and how it is judged."""

    name: str
    label: str
    fit_seconds: float
    description: dict
    retrieval: RetrievalMatrices
    cycle: CycleConsistency
    clustering: ClusteringScores | None = None
    history: Any = ABSENT          # GPA iterations / GCPA epochs
    iterations_run: Any = ABSENT   # GPA only
    epochs_run: Any = ABSENT       # GCPA only
    objective: Any = ABSENT        # GPA only
    map: Any = ABSENT              # UniverseMap, with map_items

    @property
    def _aliases(self) -> dict:
        # "n_iter" (deprecated for one release) held GPA's iterations or GCPA's epochs run
        return {"n_iter": "iterations_run" if self.iterations_run is not ABSENT else "epochs_run"}


@dataclass(eq=False)
class UniverseEvaluation(Result):
    """What :func:`evaluate_universe` returns (the CLI's ``--json``; ``models`` is kept out of JSON)."""

    spaces: list
    n_items: int
    n_train: int
    n_test: int
    seed: int
    test_size: float
    labels: Any
    methods: dict
    add: AddSpaceResult | None = None
    map_rows: Any = ABSENT
    test_rows: Any = ABSENT
    models: Any = ABSENT
    preset: Any = ABSENT           # set by the CLI: the preset record

    _not_json = ("models",)


def _identity(iterable, total=None, desc=""):
    return iterable


def _rows(spaces: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    # the rows keep their dtype: every estimator converts to float64 (exactly) when it preprocesses them
    return {k: np.asarray(v[rows]) for k, v in spaces.items()}


def _preprocessed(model, test_spaces, names, preprocessed=None) -> dict[str, torch.Tensor]:
    """Each space's held-out rows in the model's preprocessed coordinates (float64 tensors), computed once."""
    dev = model._dev()
    if preprocessed is not None:
        return {m: torch.as_tensor(preprocessed[m], dtype=torch.float64, device=dev) for m in names}
    return {m: model.preprocessor_.transform_t(m, test_spaces[m], dev) for m in names}


def _summary(matrix: np.ndarray, names: list[str]) -> dict:
    M = len(names)
    off = [(matrix[i, j], names[i], names[j]) for i in range(M) for j in range(M) if i != j]
    if not off:
        return {"mean": None, "worst": None, "worst_pair": None}
    vals = np.array([o[0] for o in off])
    worst = off[int(np.argmin(vals))]
    return {"mean": float(vals.mean()), "worst": float(worst[0]), "worst_pair": [worst[1], worst[2]]}


def any_to_any_retrieval(model, test_spaces: Mapping[str, np.ndarray], groups=None, names: Sequence[str] | None = None,
                         progress: Callable | None = None, preprocessed: Mapping | None = None) -> RetrievalMatrices:
    """Top-1, top-5 (Hits@1, Hits@5) and MRR for every ordered pair of spaces on held-out items, by cosine in the
    universe.

    Parameters
    ----------
    model : a fitted universe estimator (:mod:`core.universe`).
    test_spaces : name -> held-out rows (raw features, rows paired).
    groups : optional group id per test row (partners count as hits).
    names : the spaces to judge (default: every space of ``test_spaces`` that the model knows).
    preprocessed : optional name -> the same rows already in the model's preprocessed coordinates (skips
        preprocessing them again; :class:`UniverseStudy` passes them).

    One score matrix serves both directions of a pair: in a shared universe ``S_ba = S_ab^T``; for pairwise
    Procrustes too, since ``R_ba = R_ab^T`` is orthogonal and ``cos(x_a R_ab, x_b) = cos(x_a, x_b R_ab^T)``.
    Each direction's ranks give all three metrics; they are computed exactly, with a float32 product screened
    in float64 (:func:`core.evaluation.metrics.cosine_true_ranks`). The pairs run side by side, one thread each
    (:func:`core.numerics.single_threaded_iter`: their GEMMs and single-threaded numpy screening keep every core
    busy), in order, so that progress and cancellation come between pairs.

    Returns
    -------
    :class:`RetrievalMatrices`: ``{"spaces": [...], "n_queries": Q, "top1": M x M list (None on the diagonal;
    row = query space a, column = retrieved space b), "top5": ..., "mrr": ..., "summary": {metric: {"mean",
    "worst", "worst_pair"}} over the off-diagonal cells, "chance": {metric: value}}``.
    """
    progress = progress or _identity
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    first = names[0] if names else next(iter(test_spaces))
    Q = int((preprocessed or test_spaces)[first].shape[0])
    Z = _preprocessed(model, test_spaces, names, preprocessed)
    pairwise = isinstance(model, PairwiseProcrustes)
    E = None if pairwise else {m: to_numpy(model._universe_t(m, Z[m])) for m in names}
    mats = {k: np.full((len(names), len(names)), np.nan) for k in RETRIEVAL_METRICS}
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]

    def ranks_of(i, j):                                 # a -> b ranks the columns, b -> a the rows
        a, b = names[i], names[j]
        Ea, Eb = (to_numpy(model._map_t(Z[a], a, b)), to_numpy(Z[b])) if pairwise else (E[a], E[b])
        return cosine_true_ranks(Ea, Eb, groups, device=model.device)

    # the pairs side by side, one thread each (their GEMMs and their numpy screening keep every core busy)
    on_cpu = all(z.device.type == "cpu" for z in Z.values())
    for (i, j), both in zip(progress(pairs, total=len(pairs), desc="any-to-any retrieval"),
                            single_threaded_iter(ranks_of, pairs, on_cpu)):
        for (q, r), ranks in zip(((i, j), (j, i)), both):
            top = topk_from_ranks(ranks, (1, 5))
            mats["top1"][q, r] = top[1]
            mats["top5"][q, r] = top[5]
            mats["mrr"][q, r] = mrr_from_ranks(ranks)
    chance = chance_levels(Q, groups, ks=(1, 5))
    lists = {k: [[None if i == j else float(mat[i, j]) for j in range(len(names))] for i in range(len(names))]
             for k, mat in mats.items()}
    return RetrievalMatrices(names, Q, **lists,
                             summary=_MetricDict({k: _summary(mats[k], names) for k in RETRIEVAL_METRICS}),
                             chance=_MetricDict({k: chance[k] for k in RETRIEVAL_METRICS}))


def cycle_consistency(model, test_spaces: Mapping[str, np.ndarray], names: Sequence[str] | None = None,
                      max_triples: int = 120, seed: int = 0, preprocessed: Mapping | None = None) -> CycleConsistency:
    """Cycle error a -> b -> c -> a of the model's maps between spaces, on held-out rows.

    For each ordered triple of distinct spaces, ``mean_i ||x_i - cycle(x_i)|| / ||x_i||`` with ``x`` the test rows
    of a in a's preprocessed coordinates (0 = perfectly cycle-consistent). With more than ``max_triples`` triples
    a seeded sample is used. Needs at least 3 spaces (else ``{"n_triples": 0, ...}``).

    Returns :class:`CycleConsistency`: ``{"mean": float | None, "max": float | None, "n_triples": int,
    "sampled": bool, "triples": [{"cycle": [a, b, c], "error": float}, ...]}``.
    """
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    triples = list(itertools.permutations(names, 3))
    sampled = False
    if len(triples) > max_triples:
        pick = np.random.default_rng(seed).choice(len(triples), size=max_triples, replace=False)
        triples = [triples[i] for i in sorted(pick)]
        sampled = True
    Z = _preprocessed(model, test_spaces, names, preprocessed)
    linear = getattr(model, "map_matrix", None)
    errors_of = {}
    if linear is not None:
        # linear maps: compose each cycle's d x d matrix; y - x = x (M_ab M_bc M_ca - I), every cycle from one
        # space in one product
        maps = {(s, t): torch.as_tensor(linear(s, t), dtype=torch.float64, device=Z[s].device)
                for s in names for t in names if s != t}

        def errors_from(a):
            from_a = [t for t in triples if t[0] == a]
            x = Z[a]
            norms = x.norm(dim=1)
            ok = norms > 1e-12
            eye = torch.eye(x.shape[1], dtype=torch.float64, device=x.device)
            x32 = x.float()
            out = {}
            for start in range(0, len(from_a), 8):                  # at most 8 cycles (n x 8d) at a time
                mine = from_a[start:start + 8]
                # D = M_ab M_bc M_ca - I composed in float64 (the cancellation of "- I" happens there), then
                # x D in float32: half the float64 GEMM's time; an error is then known to a relative
                # accuracy of about d 2^-24 (2e-5 at d = 384) however small it is (GPA's stay near 1e-15)
                D = torch.cat([maps[a, b] @ maps[b, c] @ maps[c, a] - eye for _, b, c in mine], dim=1)
                diff = (x32 @ D.float()).double().reshape(x.shape[0], len(mine), x.shape[1])
                for k, t in enumerate(mine):
                    out[t] = float((diff[:, k].norm(dim=1)[ok] / norms[ok]).mean()) if bool(ok.any()) else 0.0
            return out

        # every source space's cycles side by side, one thread each
        for part in single_threaded_iter(errors_from, [(a,) for a in names],
                                         all(z.device.type == "cpu" for z in Z.values())):
            errors_of.update(part)
    else:
        pre = {m: to_numpy(Z[m]) for m in names}
        for a, b, c in triples:
            x = pre[a]
            y = model.map_between(model.map_between(model.map_between(x, a, b), b, c), c, a)
            norms = np.linalg.norm(x, axis=1)
            ok = norms > 1e-12
            errors_of[(a, b, c)] = float((np.linalg.norm(y - x, axis=1)[ok] / norms[ok]).mean()) if ok.any() else 0.0
    rows = [{"cycle": list(t), "error": errors_of[t]} for t in triples]
    errors = [r["error"] for r in rows]
    return CycleConsistency(float(np.mean(errors)) if errors else None, float(np.max(errors)) if errors else None,
                            len(rows), sampled, rows)


def _normalize_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def kmeans_scores(X: np.ndarray, labels, seeds: Sequence[int] = (0, 1, 2),
                  n_clusters: int | None = None) -> KMeansScores:
    """k-means (scikit-learn, ``n_init=1`` per seed) on the rows of ``X``; ARI and NMI against ``labels``.

    Returns :class:`KMeansScores`: ``{"ari": mean, "ari_std", "nmi": mean, "nmi_std", "n_clusters",
    "per_seed": [{"seed", "ari", "nmi"}]}`` (std over seeds with ddof = 1, :func:`std_over_seeds`).
    """
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    labels = np.asarray(labels)
    k = int(n_clusters or len(np.unique(labels)))
    if k < 2:
        raise DataError("clustering needs at least 2 distinct labels")
    if k > len(X):
        raise DataError(f"{k} clusters but only {len(X)} items")
    per = []
    for s in seeds:
        pred = KMeans(n_clusters=k, n_init=1, random_state=int(s)).fit_predict(X)
        per.append({"seed": int(s), "ari": float(adjusted_rand_score(labels, pred)),
                    "nmi": float(normalized_mutual_info_score(labels, pred))})
    ari = np.array([p["ari"] for p in per])
    nmi = np.array([p["nmi"] for p in per])
    return KMeansScores(float(ari.mean()), std_over_seeds(ari), float(nmi.mean()), std_over_seeds(nmi), k, per)


def clustering_scores(model, test_spaces: Mapping[str, np.ndarray], labels, seeds: Sequence[int] = (0, 1, 2),
                      names: Sequence[str] | None = None, n_clusters: int | None = None,
                      preprocessed: Mapping | None = None) -> ClusteringScores:
    """k-means on each space's L2-normalised universe coordinates of held-out items, ARI / NMI vs ``labels``.

    Rows whose label is missing are left out. Returns :class:`ClusteringScores`: ``{"spaces": {name:
    kmeans_scores(...)}, "mean_ari", "mean_nmi", "seeds", "n_items"}``.
    """
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    labels = pd.Series(np.asarray(labels, dtype=object))
    keep = labels.notna().to_numpy()
    lab = labels[keep].astype(str).to_numpy()
    Z = _preprocessed(model, test_spaces, names, preprocessed)
    out = {}
    for m in names:
        U = _normalize_rows(to_numpy(model._universe_t(m, Z[m])))[keep]
        out[m] = kmeans_scores(U, lab, seeds, n_clusters)
    return ClusteringScores(out, float(np.mean([v.ari for v in out.values()])),
                            float(np.mean([v.nmi for v in out.values()])), [int(s) for s in seeds], int(keep.sum()))


def add_space_vs_refit(base: GPA, train_spaces: Mapping[str, np.ndarray], test_spaces: Mapping[str, np.ndarray],
                       new: str, groups=None) -> AddSpaceResult:
    """GPA-ADD of space ``new`` to the fitted ``base`` universe, against refitting GPA on every space.

    ``train_spaces`` / ``test_spaces`` hold the base spaces and ``new`` (training / held-out rows). ``base`` is
    not changed (GPA-ADD runs on a copy).

    Returns :class:`AddSpaceResult`: ``{"space", "add_seconds", "refit_seconds", "speedup", "add": retrieval,
    "refit": retrieval, "top1_new_pairs": {"add": mean top-1 over pairs involving new, "refit": ...},
    "top1_base_pairs": {"add": ..., "refit": ...}}`` (retrieval as :func:`any_to_any_retrieval`; ``new_pairs`` /
    ``base_pairs`` are the deprecated names of the last two).
    """
    if new not in train_spaces:
        raise DataError(f"no space named '{new}' to add")
    added = copy.deepcopy(base)
    t0 = time.perf_counter()
    added.add_space(new, train_spaces[new])
    add_seconds = time.perf_counter() - t0
    params = base.get_params()
    t0 = time.perf_counter()
    refit = GPA(**params).fit({k: train_spaces[k] for k in [*base.space_names_, new]})
    refit_seconds = time.perf_counter() - t0
    names = [*base.space_names_, new]
    res_add = any_to_any_retrieval(added, test_spaces, groups, names)
    res_refit = any_to_any_retrieval(refit, test_spaces, groups, names)

    def split_mean(res):
        H = res.top1
        new_idx = len(names) - 1
        new_vals = [H[i][j] for i in range(len(names)) for j in range(len(names))
                    if i != j and new_idx in (i, j)]
        base_vals = [H[i][j] for i in range(new_idx) for j in range(new_idx) if i != j]
        return (float(np.mean(new_vals)), float(np.mean(base_vals)) if base_vals else None)

    na, ba = split_mean(res_add)
    nr, br = split_mean(res_refit)
    return AddSpaceResult(new, add_seconds, refit_seconds, refit_seconds / max(add_seconds, 1e-9), res_add,
                          res_refit, {"add": na, "refit": nr}, {"add": ba, "refit": br})


def universe_map(model, test_spaces: Mapping[str, np.ndarray], rows: np.ndarray | None = None,
                 names: Sequence[str] | None = None, preprocessed: Mapping | None = None) -> UniverseMap:
    """2-D PCA (shared by all spaces) of the L2-normalised universe coordinates of held-out items.

    ``rows`` picks which test rows to draw (default all). For PW the universe is the reference space's frame.
    Returns :class:`UniverseMap`: ``{"spaces": [...], "rows": [...], "coords": M x len(rows) x 2 list,
    "explained": [r1, r2]}``.
    """
    from ..projection import PCAProjection

    names = list(names or [m for m in test_spaces if m in model.space_names_])
    Q = int(next(iter((preprocessed or test_spaces).values())).shape[0])
    rows = np.arange(Q) if rows is None else np.asarray(rows, dtype=np.int64)
    if preprocessed is not None:
        Z = _preprocessed(model, test_spaces, names, preprocessed)
        U = [_normalize_rows(to_numpy(model._universe_t(m, Z[m][torch.as_tensor(rows, device=Z[m].device)])))
             for m in names]
    else:
        U = [_normalize_rows(model.to_universe(m, np.asarray(test_spaces[m])[rows])) for m in names]
    stacked = np.concatenate(U)
    pca = PCAProjection(2).fit(stacked)
    coords = pca.transform(stacked).reshape(len(names), len(rows), -1)
    if coords.shape[2] < 2:
        coords = np.concatenate([coords, np.zeros(coords.shape[:2] + (2 - coords.shape[2],))], axis=2)
    return UniverseMap(names, rows.tolist(), coords.tolist(), [float(v) for v in pca.explained_variance_ratio_])


class UniverseStudy:
    """One held-out split and one preprocessing of several spaces, shared by every method fitted on them.

    :func:`evaluate_universe` is a loop over this; the app keeps one per dataset and settings, so that the jobs
    of the methods (and the later clustering and GCPA jobs) reuse the split, the preprocessed rows and the fitted
    models instead of recomputing them. Thread-safe: two jobs asking for the same model wait for one fit.

    Parameters are those of :func:`evaluate_universe` (preprocessing, split and per-method settings).

    Attributes (after :meth:`prepare`, which every method calls first)
    ----------
    train_rows_, test_rows_ : the split (sorted row indices).
    prepared_ : :class:`core.universe.PreparedSpaces` of the training rows (the fitted spaces, ``add`` left out).
    test_preprocessed_ : name -> held-out rows in preprocessed coordinates (float64 tensors).
    prepare_seconds_ : time of the split and preprocessing (counted in every method's ``fit_seconds``).
    """

    def __init__(self, spaces: Mapping[str, np.ndarray], *, groups=None, add: str | None = None,
                 test_size: float = 0.2, seed: int = 0, standardize: bool = True, width: str = "pca",
                 dim: int | None = None, gcca_reg: float | None = None, gcca_components: int | None = None,
                 gcpa_epochs: int = 100, gcpa_patience: int = 15, device=None,
                 preprocess_order: str = "zscore-pca", gcca_variant: str = "maxvar-ridge",
                 gcpa_schedule: str = "epochs", gcpa_precision: str = "float32"):
        self.spaces = check_spaces(spaces)
        n = int(next(iter(self.spaces.values())).shape[0])
        if add is not None:
            if add not in self.spaces:
                raise DataError(f"no space named '{add}' to add", hint=f"spaces: {', '.join(self.spaces)}")
            if len(self.spaces) < 3:
                raise DataError("adding a space needs at least 2 other spaces to form the universe first")
        self.n_items = n
        self.add = add
        self.groups = None if groups is None else np.asarray(groups)
        self.test_size, self.seed = test_size, int(seed)
        self.names = [m for m in self.spaces if m != add]
        self.params = dict(standardize=standardize, width=width, dim=dim, device=device, seed=seed,
                           reg=gcca_reg, n_components=gcca_components, max_epochs=gcpa_epochs,
                           patience=gcpa_patience, preprocess_order=preprocess_order, variant=gcca_variant,
                           schedule=gcpa_schedule, precision=gcpa_precision)
        self._lock = threading.RLock()       # the preprocessing and the tables below, held briefly
        self._method_locks: dict = {}         # one per method, held while that method fits
        self._models: dict = {}
        self._fit_seconds: dict = {}
        self.prepared_ = None
        # the split is cheap and needed by everyone (test rows, groups): done at once
        self.train_rows_, self.test_rows_ = split_train_test(n, test_size, seed, self.groups)
        self.test_groups_ = None if self.groups is None else self.groups[self.test_rows_]

    def prepare(self) -> "UniverseStudy":
        """Preprocess the training rows (fit) and the held-out rows, once."""
        with self._lock:
            if self.prepared_ is not None:
                return self
            t0 = time.perf_counter()
            p = self.params
            fit_train = _rows({m: self.spaces[m] for m in self.names}, self.train_rows_)
            self.prepared_ = prepare_spaces(fit_train, standardize=p["standardize"], width=p["width"],
                                            dim=p["dim"], device=p["device"], order=p["preprocess_order"])
            self.fit_train_ = fit_train
            pre = self.prepared_.preprocessor
            dev = next(iter(self.prepared_.Z.values())).device
            test = _rows({m: self.spaces[m] for m in self.names}, self.test_rows_)
            self.test_preprocessed_ = {m: pre.transform_t(m, test[m], dev) for m in self.names}
            self.test_spaces_ = test
            self.prepare_seconds_ = time.perf_counter() - t0
            return self

    def model(self, method: str, progress: Callable | None = None):
        """The fitted estimator for ``method`` (fitted on first use; GCPA reuses the study's GPA).

        A fit holds only its own method's lock, never the study's: a job fitting one method can pause at a
        progress step (``core.jobs``: a background job steps aside) while another job uses the other methods."""
        method = _check_method(method)
        with self._lock:
            if method in self._models:
                return self._models[method]
            lock = self._method_locks.setdefault(method, threading.Lock())
        with lock:
            with self._lock:
                if method in self._models:          # fitted by the job we waited for
                    return self._models[method]
            self.prepare()
            est = make_estimator(method, **self.params)
            t0 = time.perf_counter()
            if method == "gcpa":
                gpa = self.model("gpa", progress)
                est.fit(self.fit_train_, progress=progress, gpa=gpa, prepared=self.prepared_)
                seconds = time.perf_counter() - t0 + self._fit_seconds["gpa"]
            else:
                est.fit(self.fit_train_, progress=progress, prepared=self.prepared_)
                seconds = time.perf_counter() - t0 + self.prepare_seconds_
            with self._lock:
                self._fit_seconds[method] = seconds
                self._models[method] = est
            return est

    def fit_seconds(self, method: str) -> float:
        """Seconds to fit ``method``, its share of the preprocessing included (GCPA: its GPA's too)."""
        self.model(method)
        return self._fit_seconds[_check_method(method)]

    def evaluate(self, method: str, *, map_items: int = 0, max_triples: int = 120,
                 progress: Callable | None = None) -> UniverseMethodResult:
        """One method's entry of :func:`evaluate_universe`'s ``"methods"``, without the clustering (see
        :meth:`clustering`): name, label, fit seconds, description, retrieval, cycle (and history, map)."""
        progress = progress or _identity
        method = _check_method(method)
        est = self.model(method, progress)
        Zt = self.test_preprocessed_
        retrieval = any_to_any_retrieval(est, self.test_spaces_, self.test_groups_, self.names, progress=progress,
                                         preprocessed=Zt)
        retrieval.label = method_label(est)
        res = UniverseMethodResult(method, method_label(est), self.fit_seconds(method), est.describe(), retrieval,
                                   cycle_consistency(est, self.test_spaces_, self.names, max_triples=max_triples,
                                                     seed=self.seed, preprocessed=Zt))
        if method in ("gpa", "gcpa"):
            res.history = est.history_
        if method == "gpa":
            res.iterations_run, res.objective = int(est.n_iter_), float(est.objective_)
        if method == "gcpa":
            res.epochs_run = int(est.stopped_epoch_)
        rows = self.map_rows(map_items)
        if rows is not None:
            res.map = universe_map(est, self.test_spaces_, rows, self.names, preprocessed=Zt)
        return res

    def clustering(self, method: str, labels, cluster_seeds: Sequence[int] = (0, 1, 2),
                   progress: Callable | None = None) -> ClusteringScores:
        """:func:`clustering_scores` of ``method``'s universe on the held-out items (``labels``: one per item)."""
        est = self.model(method, progress)
        test_labels = np.asarray(labels, dtype=object)[self.test_rows_]
        return clustering_scores(est, self.test_spaces_, test_labels, cluster_seeds, self.names,
                                 preprocessed=self.test_preprocessed_)

    def map_rows(self, map_items: int) -> np.ndarray | None:
        """The seeded sample of held-out rows (positions in the test rows) drawn on the maps."""
        if not map_items:
            return None
        rng = np.random.default_rng(self.seed)
        Q = len(self.test_rows_)
        return np.sort(rng.choice(Q, size=min(int(map_items), Q), replace=False))

    def add_space(self) -> AddSpaceResult:
        """:func:`add_space_vs_refit` of the study's ``add`` space onto its GPA."""
        if self.add is None:
            raise DataError("this study has no space to add")
        self.prepare()
        train_sp = _rows(self.spaces, self.train_rows_)
        return add_space_vs_refit(self.model("gpa"), train_sp, _rows(self.spaces, self.test_rows_), self.add,
                                  self.test_groups_)


def _check_method(method: str) -> str:
    m = str(method).lower()
    if m not in METHODS:
        raise DataError(f"unknown universe method '{method}'", hint=f"use one of {', '.join(METHODS)}")
    return m


def evaluate_universe(spaces: Mapping[str, np.ndarray], methods: Sequence[str] = METHODS, *, labels=None,
                      groups=None, add: str | None = None, test_size: float = 0.2, seed: int = 0,
                      cluster_seeds: Sequence[int] = (0, 1, 2), standardize: bool = True, width: str = "pca",
                      dim: int | None = None, gcca_reg: float | None = None, gcca_components: int | None = None,
                      gcpa_epochs: int = 100, gcpa_patience: int = 15, map_items: int = 0,
                      max_triples: int = 120, device=None, progress: Callable | None = None,
                      keep_models: bool = False, preprocess_order: str = "zscore-pca",
                      gcca_variant: str = "maxvar-ridge", gcpa_schedule: str = "epochs",
                      gcpa_precision: str = "float32") -> UniverseEvaluation:
    """Fit every method on the training items and judge it on the held-out items.

    Parameters
    ----------
    spaces : name -> n x d array (rows paired; token sets pooled beforehand).
    methods : any of ``"pw", "gpa", "gcca", "gcpa"``.
    labels : optional label per item (clustering scores need it).
    groups : optional group id per item (partners in retrieval; whole groups stay on one side of the split).
    add : name of one space in ``spaces`` to leave out of the fit and add afterwards with GPA-ADD, compared with
        a refit on every space (the methods themselves are then fitted without it).
    test_size, seed : the held-out split (fraction or count; seed).
    cluster_seeds : k-means seeds.
    standardize, width, dim : preprocessing (see :class:`core.universe.UniversePreprocessor`).
    gcca_reg, gcca_components : GCCA's ridge r (None: 0.1 n_train) and k.
    gcpa_epochs, gcpa_patience : GCPA's training budget and early-stopping patience.
    preprocess_order : ``"zscore-pca"`` (default) or ``"pca-zscore"`` (the authors' order).
    gcca_variant : ``"maxvar-ridge"`` (default) or ``"racing"`` (the authors' GCCA; ``gcca_reg`` must be None).
    gcpa_schedule : ``"epochs"`` (default) or ``"sampled"`` (the authors' training schedule).
    gcpa_precision : ``"float32"`` (default), ``"bfloat16"`` or ``"auto"`` (:class:`core.universe.GCPA`'s
        ``precision``: the corrector's matrix products in bfloat16 where the CPU or GPU does them natively).
    (:mod:`core.presets` bundles the paper D choices: ``PRESETS["paper_d"].universe_kwargs()``.)
    map_items : when > 0, a 2-D map of this many test items (seeded sample) per method.
    keep_models : also return the fitted estimators under ``"models"`` (not JSON-ready; for the app).

    Returns
    -------
    :class:`UniverseEvaluation` (``to_dict()`` is the JSON)::

        {"spaces": [...], "n_items", "n_train", "n_test", "seed", "test_size", "labels": bool,
         "methods": {method: {"name", "label" (e.g. "GCCA (RACING, no ridge)"), "fit_seconds", "description": {...preprocessing and fit facts...},
                              "retrieval": any_to_any_retrieval(...), "cycle": cycle_consistency(...),
                              "clustering": clustering_scores(...) or None, "history": [...] (GPA / GCPA),
                              "iterations_run" (GPA) / "epochs_run" (GCPA), "objective" (GPA),
                              "map": universe_map(...) (with map_items)}},
         "add": add_space_vs_refit(...) or None}
    """
    progress = progress or _identity
    methods = [_check_method(m) for m in methods]
    methods = [m for m in METHODS if m in methods]   # GPA before GCPA, so GCPA reuses it
    if not methods:
        raise DataError("choose at least one method")
    study = UniverseStudy(spaces, groups=groups, add=add, test_size=test_size, seed=seed, standardize=standardize,
                          width=width, dim=dim, gcca_reg=gcca_reg, gcca_components=gcca_components,
                          gcpa_epochs=gcpa_epochs, gcpa_patience=gcpa_patience, device=device,
                          preprocess_order=preprocess_order, gcca_variant=gcca_variant, gcpa_schedule=gcpa_schedule,
                          gcpa_precision=gcpa_precision)
    out = UniverseEvaluation(study.names, study.n_items, int(len(study.train_rows_)), int(len(study.test_rows_)),
                             int(seed), test_size, labels is not None, {})
    for method in progress(methods, total=len(methods), desc="fitting methods"):
        res = study.evaluate(method, map_items=map_items, max_triples=max_triples, progress=progress)
        if labels is not None:
            res.clustering = study.clustering(method, labels, cluster_seeds)
        out.methods[method] = res
    if add is not None:
        out.add = study.add_space()
    rows = study.map_rows(map_items)
    if rows is not None:
        out.map_rows = study.test_rows_[rows].tolist()
    out.test_rows = study.test_rows_.tolist()
    if keep_models:
        out.models = {m: study.model(m) for m in methods}
    return out
