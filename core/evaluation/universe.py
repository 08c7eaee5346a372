"""Judging a universe of M spaces (METHODS.md section 5): any-to-any retrieval, cycle-consistency, clustering,
GPA-ADD against a refit, and a 2-D map of every space's copy of the same items.

Items are split once (seeded, group-aware: :func:`core.evaluation.splits.split_anchors_queries`) into training items, on
which the universe is fitted, and held-out test items, on which everything here is judged.

* :func:`any_to_any_retrieval` - for every ordered pair (a, b), cosine scores between a's test items and b's
  (in the universe; for PW, a mapped into b's frame) ranked with :func:`core.evaluation.metrics.retrieval_topk` and
  :func:`core.evaluation.metrics.mean_reciprocal_rank` (ties count against the true item; items of one group are
  partners): M x M matrices of Hits@1, Hits@5 and MRR, with the mean and the worst off-diagonal pair.
* :func:`cycle_consistency` - relative error ``||x - (a -> b -> c -> a)(x)|| / ||x||`` on test items in a's
  preprocessed coordinates, for every ordered triple of distinct spaces (a seeded sample beyond ``max_triples``).
* :func:`clustering_scores` - k-means (scikit-learn, one run per seed) on the L2-normalised universe coordinates
  of each space's test items, ARI and NMI (scikit-learn) against a label column, averaged over seeds.
* :func:`add_space_vs_refit` - GPA-ADD of one more space against refitting GPA on all of them: time and retrieval.
* :func:`universe_map` - a shared 2-D PCA of the normalised universe coordinates of every space's test items.
* :func:`evaluate_universe` - all of it for several methods; returns a JSON-ready dict (the CLI's output).
"""
from __future__ import annotations

import copy
import itertools
import time
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from ..align import cosine_similarity_matrix
from ..errors import DataError
from .metrics import chance_levels, mean_reciprocal_rank, retrieval_topk, std_over_seeds
from .splits import split_train_test
from ..universe import GPA, METHODS, PairwiseProcrustes, check_spaces, make_estimator, method_label

__all__ = ["split_train_test", "any_to_any_retrieval", "cycle_consistency", "clustering_scores",
           "add_space_vs_refit", "universe_map", "evaluate_universe", "RETRIEVAL_METRICS"]

#: JSON keys of the retrieval matrices.
RETRIEVAL_METRICS = ("hits_at_1", "hits_at_5", "mrr")


def _identity(iterable, total=None, desc=""):
    return iterable


def _rows(spaces: Mapping[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: np.asarray(v[rows], dtype=np.float64) for k, v in spaces.items()}


def _embeddings(model, test_spaces, names):
    if isinstance(model, PairwiseProcrustes):
        return None
    return {m: model.to_universe(m, test_spaces[m]) for m in names}


def _pair(model, cache, a, Xa, b, Xb):
    if cache is None:
        return model.pair_embeddings(a, Xa, b, Xb)
    return cache[a], cache[b]


def _summary(matrix: np.ndarray, names: list[str]) -> dict:
    M = len(names)
    off = [(matrix[i, j], names[i], names[j]) for i in range(M) for j in range(M) if i != j]
    if not off:
        return {"mean": None, "worst": None, "worst_pair": None}
    vals = np.array([o[0] for o in off])
    worst = off[int(np.argmin(vals))]
    return {"mean": float(vals.mean()), "worst": float(worst[0]), "worst_pair": [worst[1], worst[2]]}


def any_to_any_retrieval(model, test_spaces: Mapping[str, np.ndarray], groups=None, names: Sequence[str] | None = None,
                         progress: Callable | None = None) -> dict:
    """Hits@1, Hits@5 and MRR for every ordered pair of spaces on held-out items, by cosine in the universe.

    Parameters
    ----------
    model : a fitted universe estimator (:mod:`core.universe`).
    test_spaces : name -> held-out rows (raw features, rows paired).
    groups : optional group id per test row (partners count as hits).
    names : the spaces to judge (default: every space of ``test_spaces`` that the model knows).

    Returns
    -------
    ``{"spaces": [...], "n_queries": Q, "hits_at_1": M x M list (None on the diagonal; row = query space a,
    column = retrieved space b), "hits_at_5": ..., "mrr": ..., "summary": {metric: {"mean", "worst",
    "worst_pair"}} over the off-diagonal cells, "chance": {metric: value}}``.
    """
    progress = progress or _identity
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    Q = int(next(iter(test_spaces.values())).shape[0])
    cache = _embeddings(model, test_spaces, names)
    mats = {k: np.full((len(names), len(names)), np.nan) for k in RETRIEVAL_METRICS}
    pairs = [(i, j) for i in range(len(names)) for j in range(len(names)) if i != j]
    for i, j in progress(pairs, total=len(pairs), desc="any-to-any retrieval"):
        a, b = names[i], names[j]
        Ea, Eb = _pair(model, cache, a, test_spaces[a], b, test_spaces[b])
        S = cosine_similarity_matrix(Ea, Eb)
        top = retrieval_topk(S, ks=(1, 5), groups=groups, axis=1)
        mats["hits_at_1"][i, j] = top[1]
        mats["hits_at_5"][i, j] = top[5]
        mats["mrr"][i, j] = mean_reciprocal_rank(S, groups=groups, axis=1)
    chance = chance_levels(Q, groups, ks=(1, 5))
    out = {"spaces": names, "n_queries": Q}
    for k, mat in mats.items():
        out[k] = [[None if i == j else float(mat[i, j]) for j in range(len(names))] for i in range(len(names))]
    out["summary"] = {k: _summary(mats[k], names) for k in RETRIEVAL_METRICS}
    out["chance"] = {"hits_at_1": chance["top1"], "hits_at_5": chance["top5"], "mrr": chance["mrr"]}
    return out


def cycle_consistency(model, test_spaces: Mapping[str, np.ndarray], names: Sequence[str] | None = None,
                      max_triples: int = 120, seed: int = 0) -> dict:
    """Cycle error a -> b -> c -> a of the model's maps between spaces, on held-out rows.

    For each ordered triple of distinct spaces, ``mean_i ||x_i - cycle(x_i)|| / ||x_i||`` with ``x`` the test rows
    of a in a's preprocessed coordinates (0 = perfectly cycle-consistent). With more than ``max_triples`` triples
    a seeded sample is used. Needs at least 3 spaces (else ``{"n_triples": 0, ...}``).

    Returns ``{"mean": float | None, "max": float | None, "n_triples": int, "sampled": bool,
    "triples": [{"cycle": [a, b, c], "error": float}, ...]}``.
    """
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    triples = list(itertools.permutations(names, 3))
    sampled = False
    if len(triples) > max_triples:
        pick = np.random.default_rng(seed).choice(len(triples), size=max_triples, replace=False)
        triples = [triples[i] for i in sorted(pick)]
        sampled = True
    pre = {m: model.preprocess(m, test_spaces[m]) for m in names}
    rows = []
    for a, b, c in triples:
        x = pre[a]
        y = model.map_between(model.map_between(model.map_between(x, a, b), b, c), c, a)
        norms = np.linalg.norm(x, axis=1)
        ok = norms > 1e-12
        err = float((np.linalg.norm(y - x, axis=1)[ok] / norms[ok]).mean()) if ok.any() else 0.0
        rows.append({"cycle": [a, b, c], "error": err})
    errors = [r["error"] for r in rows]
    return {"mean": float(np.mean(errors)) if errors else None, "max": float(np.max(errors)) if errors else None,
            "n_triples": len(rows), "sampled": sampled, "triples": rows}


def _normalize_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def kmeans_scores(X: np.ndarray, labels, seeds: Sequence[int] = (0, 1, 2), n_clusters: int | None = None) -> dict:
    """k-means (scikit-learn, ``n_init=1`` per seed) on the rows of ``X``; ARI and NMI against ``labels``.

    Returns ``{"ari": mean, "ari_std", "nmi": mean, "nmi_std", "n_clusters", "per_seed": [{"seed", "ari",
    "nmi"}]}``.
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
    return {"ari": float(ari.mean()), "ari_std": std_over_seeds(ari), "nmi": float(nmi.mean()),
            "nmi_std": std_over_seeds(nmi), "n_clusters": k, "per_seed": per}


def clustering_scores(model, test_spaces: Mapping[str, np.ndarray], labels, seeds: Sequence[int] = (0, 1, 2),
                      names: Sequence[str] | None = None, n_clusters: int | None = None) -> dict:
    """k-means on each space's L2-normalised universe coordinates of held-out items, ARI / NMI vs ``labels``.

    Rows whose label is missing are left out. Returns ``{"spaces": {name: kmeans_scores(...)}, "mean_ari",
    "mean_nmi", "seeds", "n_items"}``.
    """
    names = list(names or [m for m in test_spaces if m in model.space_names_])
    labels = pd.Series(np.asarray(labels, dtype=object))
    keep = labels.notna().to_numpy()
    lab = labels[keep].astype(str).to_numpy()
    out = {}
    for m in names:
        U = _normalize_rows(model.to_universe(m, test_spaces[m]))[keep]
        out[m] = kmeans_scores(U, lab, seeds, n_clusters)
    return {"spaces": out, "mean_ari": float(np.mean([v["ari"] for v in out.values()])),
            "mean_nmi": float(np.mean([v["nmi"] for v in out.values()])), "seeds": [int(s) for s in seeds],
            "n_items": int(keep.sum())}


def add_space_vs_refit(base: GPA, train_spaces: Mapping[str, np.ndarray], test_spaces: Mapping[str, np.ndarray],
                       new: str, groups=None) -> dict:
    """GPA-ADD of space ``new`` to the fitted ``base`` universe, against refitting GPA on every space.

    ``train_spaces`` / ``test_spaces`` hold the base spaces and ``new`` (training / held-out rows). ``base`` is
    not changed (GPA-ADD runs on a copy).

    Returns ``{"space", "add_seconds", "refit_seconds", "speedup", "add": retrieval dict, "refit": retrieval
    dict, "new_pairs": {"add": mean Hits@1 over pairs involving new, "refit": ...}, "base_pairs": {"add": ...,
    "refit": ...}}`` (retrieval dicts as :func:`any_to_any_retrieval`).
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
        H = res["hits_at_1"]
        new_idx = len(names) - 1
        new_vals = [H[i][j] for i in range(len(names)) for j in range(len(names))
                    if i != j and new_idx in (i, j)]
        base_vals = [H[i][j] for i in range(new_idx) for j in range(new_idx) if i != j]
        return (float(np.mean(new_vals)), float(np.mean(base_vals)) if base_vals else None)

    na, ba = split_mean(res_add)
    nr, br = split_mean(res_refit)
    return {"space": new, "add_seconds": add_seconds, "refit_seconds": refit_seconds,
            "speedup": refit_seconds / max(add_seconds, 1e-9), "add": res_add, "refit": res_refit,
            "new_pairs": {"add": na, "refit": nr}, "base_pairs": {"add": ba, "refit": br}}


def universe_map(model, test_spaces: Mapping[str, np.ndarray], rows: np.ndarray | None = None,
                 names: Sequence[str] | None = None) -> dict:
    """2-D PCA (shared by all spaces) of the L2-normalised universe coordinates of held-out items.

    ``rows`` picks which test rows to draw (default all). For PW the universe is the reference space's frame.
    Returns ``{"spaces": [...], "rows": [...], "coords": M x len(rows) x 2 list, "explained": [r1, r2]}``.
    """
    from ..projection import PCAProjection

    names = list(names or [m for m in test_spaces if m in model.space_names_])
    Q = int(next(iter(test_spaces.values())).shape[0])
    rows = np.arange(Q) if rows is None else np.asarray(rows, dtype=np.int64)
    U = [_normalize_rows(model.to_universe(m, np.asarray(test_spaces[m])[rows])) for m in names]
    stacked = np.concatenate(U)
    pca = PCAProjection(2).fit(stacked)
    coords = pca.transform(stacked).reshape(len(names), len(rows), -1)
    if coords.shape[2] < 2:
        coords = np.concatenate([coords, np.zeros(coords.shape[:2] + (2 - coords.shape[2],))], axis=2)
    return {"spaces": names, "rows": rows.tolist(), "coords": coords.tolist(),
            "explained": [float(v) for v in pca.explained_variance_ratio_]}


def evaluate_universe(spaces: Mapping[str, np.ndarray], methods: Sequence[str] = METHODS, *, labels=None,
                      groups=None, add: str | None = None, test_size: float = 0.2, seed: int = 0,
                      cluster_seeds: Sequence[int] = (0, 1, 2), standardize: bool = True, width: str = "pca",
                      dim: int | None = None, gcca_reg: float | None = None, gcca_components: int | None = None,
                      gcpa_epochs: int = 100, gcpa_patience: int = 15, map_items: int = 0,
                      max_triples: int = 120, device=None, progress: Callable | None = None,
                      keep_models: bool = False, preprocess_order: str = "zscore-pca",
                      gcca_variant: str = "maxvar-ridge", gcpa_schedule: str = "epochs") -> dict:
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
    (:mod:`core.presets` bundles the paper D choices: ``PRESETS["paper_d"].universe_kwargs()``.)
    map_items : when > 0, a 2-D map of this many test items (seeded sample) per method.
    keep_models : also return the fitted estimators under ``"models"`` (not JSON-ready; for the app).

    Returns
    -------
    JSON-ready dict::

        {"spaces": [...], "n_items", "n_train", "n_test", "seed", "test_size", "labels": bool,
         "methods": {method: {"name", "label" (e.g. "GCCA (RACING, no ridge)"), "fit_seconds", "description": {...preprocessing and fit facts...},
                              "retrieval": any_to_any_retrieval(...), "cycle": cycle_consistency(...),
                              "clustering": clustering_scores(...) or None, "history": [...] (GPA / GCPA),
                              "map": universe_map(...) (with map_items)}},
         "add": add_space_vs_refit(...) or None}
    """
    progress = progress or _identity
    spaces = check_spaces(spaces)
    methods = [str(m).lower() for m in methods]
    for m in methods:
        if m not in METHODS:
            raise DataError(f"unknown universe method '{m}'", hint=f"use one of {', '.join(METHODS)}")
    methods = [m for m in METHODS if m in methods]   # GPA before GCPA, so GCPA reuses it
    if not methods:
        raise DataError("choose at least one method")
    n = int(next(iter(spaces.values())).shape[0])
    if add is not None:
        if add not in spaces:
            raise DataError(f"no space named '{add}' to add", hint=f"spaces: {', '.join(spaces)}")
        if len(spaces) < 3:
            raise DataError("adding a space needs at least 2 other spaces to form the universe first")
    g = None if groups is None else np.asarray(groups)
    train, test = split_train_test(n, test_size, seed, g)
    train_sp, test_sp = _rows(spaces, train), _rows(spaces, test)
    test_groups = None if g is None else g[test]
    base_names = [m for m in spaces if m != add]
    fit_train = {m: train_sp[m] for m in base_names}
    params = dict(standardize=standardize, width=width, dim=dim, device=device, seed=seed,
                  reg=gcca_reg, n_components=gcca_components, max_epochs=gcpa_epochs, patience=gcpa_patience,
                  preprocess_order=preprocess_order, variant=gcca_variant, schedule=gcpa_schedule)
    out = {"spaces": base_names, "n_items": n, "n_train": int(len(train)), "n_test": int(len(test)),
           "seed": int(seed), "test_size": test_size, "labels": labels is not None, "methods": {}, "add": None}
    models = {}
    map_rows = None
    if map_items:
        rng = np.random.default_rng(seed)
        map_rows = np.sort(rng.choice(len(test), size=min(int(map_items), len(test)), replace=False))
    test_labels = None
    if labels is not None:
        test_labels = np.asarray(labels, dtype=object)[test]
    gpa_model = None
    for method in progress(methods, total=len(methods), desc="fitting methods"):
        est = make_estimator(method, **params)
        t0 = time.perf_counter()
        if method == "gcpa" and gpa_model is not None:
            # reuse the already fitted GPA (same rows, same preprocessing); its time counts toward GCPA's
            est.fit(fit_train, progress=progress, gpa=gpa_model)
            fit_seconds = time.perf_counter() - t0 + gpa_model.fit_seconds_
        else:
            est.fit(fit_train, progress=progress)
            fit_seconds = time.perf_counter() - t0
        if method == "gpa":
            gpa_model = est
        models[method] = est
        res = {"name": method, "label": method_label(est), "fit_seconds": fit_seconds,
               "description": est.describe(),
               "retrieval": {**any_to_any_retrieval(est, test_sp, test_groups, base_names),
                             "label": method_label(est)},
               "cycle": cycle_consistency(est, test_sp, base_names, max_triples=max_triples, seed=seed),
               "clustering": None}
        if test_labels is not None:
            res["clustering"] = clustering_scores(est, test_sp, test_labels, cluster_seeds, base_names)
        if method in ("gpa", "gcpa"):
            res["history"] = est.history_
        if method == "gpa":
            res["n_iter"], res["objective"] = int(est.n_iter_), float(est.objective_)
        if method == "gcpa":
            res["n_iter"] = int(est.stopped_epoch_)
        if map_rows is not None:
            res["map"] = universe_map(est, test_sp, map_rows, base_names)
        out["methods"][method] = res
    if add is not None:
        base = gpa_model or make_estimator("gpa", **params).fit(fit_train)
        out["add"] = add_space_vs_refit(base, train_sp, test_sp, add, test_groups)
    if map_rows is not None:
        out["map_rows"] = test[map_rows].tolist()
    out["test_rows"] = test.tolist()
    if keep_models:
        out["models"] = models
    return out
