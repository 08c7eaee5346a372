"""The hierarchy report of paper C (METHODS.md section 4): tau_d, hierarchical retrieval and RE fine-tuning of a
set of caption chains, split into train / validation / test chains, as one typed result (:class:`HierarchyReport`,
a :class:`core.results.Result`: a dataclass that is also the dict it replaced; ``to_dict()`` for JSON).

:func:`hierarchy_report` composes :mod:`core.hierarchy` (the measures on :class:`~core.hierarchy.Chains`) and
:mod:`core.radial` (the fine-tuners); it is what the CLI's ``hierarchy`` command and the Hierarchy page run.
It lives apart from both so that neither imports the other's caller (no import cycle).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from ..errors import DataError
from ..hierarchy import (N_THRESHOLDS, RETRIEVAL_POOLS, Chains, fit_image_side, hierarchical_retrieval,
                        hierarchical_retrieval_by_image, radial_order, split_chains)
from ..radial import OpenCLIPTextTowerFineTuner, RadialFineTuner
from ..results import ABSENT, Result

__all__ = ["hierarchy_report", "HierarchyReport"]


@dataclass(eq=False)
class HierarchyReport(Result):
    """What :func:`hierarchy_report` returns: the chains' facts, ``all`` (zero-shot statistics of every chain),
    and with 3 or more chains the ``split``, the ``heldout`` ``before`` / ``after`` summaries, the ``image_map`` and
    the fine-tuning's ``training`` record; ``notes`` when something could not be done."""

    n_chains: int
    n_texts: int
    n_distinct_texts: int
    tiers: int
    root: Any
    image_side: Any
    n_thresholds: int
    tau_method: str
    retrieval_pool: str
    all: dict
    notes: Any = ABSENT
    split: Any = ABSENT
    image_map: Any = ABSENT
    heldout: Any = ABSENT
    training: Any = ABSENT


# ---------------------------------------------------------------------------------------------
# the whole report (CLI and page)
# ---------------------------------------------------------------------------------------------
def _summary(stats: dict, retrieval: dict | None, details: bool) -> dict:
    keys = ("tau_d", "tau_method", "tau_d_by_method", "n_chains_with_ties", "tau_d_ci", "confidence", "n_chains",
            "n_undefined", "share_monotone", "median_radius_per_tier")
    out = {k: stats[k] for k in keys}
    if details:
        out["per_chain_tau"] = stats["per_chain_tau"]
        out["radii"] = stats["radii"]
    if retrieval is not None:
        out["precision"] = retrieval["precision"]
        out["recall"] = retrieval["recall"]
        out["n_pool"] = retrieval["n_pool"]
        out["mean_predictions"] = retrieval["mean_predictions"]
        out["retrieval_pool"] = retrieval["pool"]
        out["n_pool_distinct"] = retrieval["n_pool_distinct"]
        out["n_retrieval_queries"] = retrieval["n_images"]
    return out


def hierarchy_report(chains: Chains, *, finetune: bool = False, test_fraction: float = 0.2,
                     val_fraction: float = 0.1, seed: int = 0, n_thresholds: int = N_THRESHOLDS,
                     image_ridge: float = 1e-2, n_boot: int = 1000, tuner_params: dict | None = None,
                     details: bool = False, progress: Callable | None = None, encoder=None,
                     tower_blocks: int | str = 0, tau: str = "tau-b",
                     retrieval_pool: str = "heldout") -> HierarchyReport:
    """tau_d, retrieval and (optionally) RE fine-tuning of ``chains``, as a :class:`HierarchyReport`.

    * ``all``: the zero-shot radial statistics of every chain (no fitting involved), with retrieval when the
      image side is already in the text space.
    * ``heldout``: a seeded split into train / validation / test chains; ``before`` (and with ``finetune``,
      ``after``) hold the statistics and retrieval of the *test* chains only. An image side that needs a map is
      mapped by an affine map fitted on the train + validation chains (never on the test chains); it stays fixed
      during fine-tuning (only the text side is trained).
    * ``training``: settings, time, device, best epoch and the per-epoch history of the adapter.

    Parameters
    ----------
    chains : the chains (see :func:`chains_from_dataset`).
    finetune : train a :class:`core.radial.RadialFineTuner` on the train chains (early stopping on validation).
    test_fraction, val_fraction, seed : the split.  n_thresholds : retrieval thresholds (50).
    image_ridge : relative ridge of the image-side affine map.  n_boot : bootstrap resamples for tau_d's interval.
    tuner_params : keyword arguments of :class:`core.radial.RadialFineTuner` (its ``random_state`` defaults to ``seed``).
    details : keep per-chain lists (radii, taus) for plotting.
    encoder, tower_blocks : with ``finetune`` and ``tower_blocks > 0``, fine-tune the last ``tower_blocks`` blocks
        of ``encoder``'s open_clip text tower instead (:class:`core.radial.OpenCLIPTextTowerFineTuner`;
        ``tuner_params`` go to it); the chains' texts are re-embedded by the tuned tower.
        ``tower_blocks="all"`` trains the whole text tower (the authors' fine-tuning; paper C preset).
    tau : tau_d tie handling, ``"tau-b"`` (default) or ``"argsort"`` (the authors'; see :func:`radial_order`).
    retrieval_pool : ``"heldout"`` (default: the judged chains' own de-duplicated texts, one query per chain) or
        ``"all-chains"`` (the authors' protocol, :func:`hierarchical_retrieval_by_image`: the pool is every chain's
        texts, the queries the unique images of the judged chains). Each summary says which pool and its size.
    progress : tqdm-like ``progress(iterable, total=None, desc="")`` for the training epochs.

    The RE loss variant goes in ``tuner_params`` (``le_negatives``, see :func:`core.radial.radial_loss`).
    """
    if retrieval_pool not in RETRIEVAL_POOLS:
        raise DataError(f"unknown retrieval pool {retrieval_pool!r}", hint=f"use one of {', '.join(RETRIEVAL_POOLS)}")
    paper_pool = retrieval_pool == "all-chains"
    all_ret = None
    if chains.images is not None and chains.image_in_text_space:
        all_ret = (hierarchical_retrieval_by_image(chains, n_thresholds=n_thresholds) if paper_pool
                   else hierarchical_retrieval(chains, n_thresholds=n_thresholds))
    out = HierarchyReport(chains.n_chains, int(len(chains.texts)), int(pd.Series(chains.texts).nunique()),
                          int(chains.max_length), chains.root_source, chains.image_source, int(n_thresholds), tau,
                          retrieval_pool, _summary(radial_order(chains, n_boot=n_boot, seed=seed, tau=tau), all_ret,
                                                   details))
    if chains.n_chains < 3:
        out["notes"] = ["fewer than 3 chains: no held-out split"]
        return out
    split = split_chains(chains.n_chains, test_fraction, val_fraction, seed)
    out["split"] = {k: int(len(v)) for k, v in split.items()} | {"seed": seed}
    images = None
    if chains.images is not None:
        images, info = fit_image_side(chains, np.concatenate([split["train"], split["val"]]), ridge=image_ridge)
        out["image_map"] = info
    test = chains.subset(split["test"])
    test_images = None if images is None else images[split["test"]]

    def judge(ch: Chains, full: Chains | None = None) -> dict:
        ret = None
        if test_images is not None and paper_pool:
            ret = hierarchical_retrieval_by_image(full if full is not None else chains, images,
                                                  query_chains=split["test"], n_thresholds=n_thresholds)
        elif test_images is not None:
            ret = hierarchical_retrieval(ch, test_images, n_thresholds=n_thresholds)
        return _summary(radial_order(ch, n_boot=n_boot, seed=seed, tau=tau), ret, details)

    out["heldout"] = {"before": judge(test)}
    if finetune:
        params = {"random_state": seed, **(tuner_params or {})}
        if "seed" in params:   # the deprecated spelling of random_state
            params["random_state"] = params.pop("seed")
        if tower_blocks:
            if encoder is None or not hasattr(encoder, "load") or not hasattr(encoder, "encode_images"):
                raise DataError("fine-tuning text-tower blocks needs an open_clip encoder",
                                hint="use --encoder open_clip:MODEL:TAG, or drop --tower-blocks")
            tuner = OpenCLIPTextTowerFineTuner(n_blocks=tower_blocks, **params).fit(
                encoder, chains.subset(split["train"]), chains.subset(split["val"]), progress=progress)
        else:
            tuner = RadialFineTuner(**params).fit(chains.subset(split["train"]), chains.subset(split["val"]),
                                                  progress=progress)
        tuned_all = tuner.transform_chains(chains) if (paper_pool and images is not None) else None
        out["heldout"]["after"] = judge(tuned_all.subset(split["test"]) if tuned_all is not None
                                        else tuner.transform_chains(test), tuned_all)
        out["training"] = {"params": tuner.json_params(), "seconds": tuner.seconds_, "device": tuner.device_,
                           "best_epoch": tuner.best_epoch_, "epochs_run": len(tuner.history_) - 1,
                           "negatives": tuner.negatives_, "history": tuner.history_}
    return out
