"""Paper presets: the settings that reproduce each paper's own reference code (METHODS.md section 7).

The papers' text leaves choices open that their public code makes; Platoscope's defaults sometimes differ. A
*preset* is a named, documented set of those choices, so a study can reproduce a paper exactly and depart from it
knowingly. Each paper has one settings dataclass whose **defaults are the project's defaults**; the preset is an
instance holding the authors' values:

=========  ==========================  =========================================================================
preset     settings class              what it governs
=========  ==========================  =========================================================================
paper_a    :class:`SimilaritySettings` CKA family / mutual k-NN / SVCCA as the Platonic Representation code (7.1);
                                       paper A's protocol (k = 50, 30,000 anchors, 500 queries, 3 seeds; 7.2)
paper_b    :class:`PointSetSettings`   weighted point-set training as sony/wpse (7.5)
paper_c    :class:`HierarchySettings`  tau_d, hierarchical retrieval and RE fine-tuning as hierarcaps (7.3)
paper_d    :class:`UniverseSettings`   preprocessing, GCCA and GCPA as multiway-alignment (7.4)
=========  ==========================  =========================================================================

Every field of a settings class carries, in its metadata, a label and a one-line description of each value, so
:func:`differences` can say, in one line per setting, where a choice departs from the authors' code::

    >>> from core.presets import UniverseSettings, differences
    >>> differences(UniverseSettings())[0].line()
    "custom: z-score, then PCA; the authors' code does PCA on the raw features, then z-score"

:func:`resolve` turns a user's spelling (``paper-d``, ``paper_d``, ``D``, ``custom``) into a preset name;
:func:`record` is what every JSON output and export manifest carries under ``preset``.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from .errors import DataError

__all__ = ["Difference", "Preset", "SimilaritySettings", "PointSetSettings", "HierarchySettings",
           "UniverseSettings", "PRESETS", "PRESET_NAMES", "CUSTOM", "resolve", "get_preset", "settings_for",
           "differences", "difference_lines", "record", "cli_choices", "SETTINGS_CLASSES", "PROTOCOL_FIELDS",
           "SIMILARITY_FIELDS"]

#: The name of "no preset": the project's defaults and whatever the user changed.
CUSTOM = "custom"


def _f(default, label: str, texts: dict, authors: str | None = None):
    """A settings field: its default (the project's), a label, and a description of each value."""
    return field(default=default, metadata={"label": label, "texts": texts, "authors": authors})


@dataclass(frozen=True)
class Difference:
    """One setting where a choice differs from the authors' code."""

    setting: str        #: field name
    label: str          #: what the setting is
    value: Any          #: the value in use
    authors: Any        #: the authors' code's value
    value_text: str     #: the value in use, in words
    authors_text: str   #: the authors' value, in words

    def line(self, prefix: str = CUSTOM) -> str:
        """``custom: z-score, then PCA; the authors' code does PCA on the raw features, then z-score``."""
        return f"{prefix}: {self.value_text}; the authors' code {self.authors_text}"

    def as_dict(self) -> dict:
        return {"setting": self.setting, "label": self.label, "value": self.value, "authors": self.authors,
                "line": self.line()}


class _Settings:
    """Shared behaviour of the settings dataclasses."""

    paper: str = ""

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)

    def replace(self, **changes) -> "_Settings":
        return dataclasses.replace(self, **changes)

    def text(self, name: str) -> str:
        """The value of field ``name`` in words."""
        f = {x.name: x for x in dataclasses.fields(self)}[name]
        value = getattr(self, name)
        texts = f.metadata.get("texts") or {}
        return texts.get(value, f"{f.metadata.get('label', name)} = {value!r}")


# ------------------------------------------------------------------------------------------------
# paper A / the Platonic Representation code
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SimilaritySettings(_Settings):
    """Similarity of two spaces (METHODS.md 7.1) and paper A's protocol (7.2).

    ``preprocess="platonic"``: before every metric, clip every value at the 0.95 quantile of absolute values
    (the Platonic code's non-exact threshold: the mean over items of each item's 0.95 quantile of ``|x|``), then
    L2-normalise the rows (:func:`core.similarity.platonic_preprocess`). ``rbf_sigma``: a fixed RBF bandwidth
    (the Platonic code: 1) instead of the median heuristic. ``svcca``: ``"raghu"`` (components explaining 99 % of
    the variance) or ``"top10"`` (the Platonic code's top-10 components). The paper A protocol fields match the
    project's defaults (no public code was found; the paper's text is the protocol).
    """

    paper = "A"
    preprocess: str = _f("none", "pre-processing before every metric", {
        "none": "features as they are (centred by the metric)",
        "platonic": "does clip values at the 0.95 quantile of |x|, then L2-normalise rows, before every metric"})
    rbf_sigma: float | None = _f(None, "RBF CKA bandwidth", {
        None: "RBF bandwidth 0.8 x median distance", 1.0: "uses a fixed RBF bandwidth sigma = 1"})
    svcca: str = _f("raghu", "SVCCA components", {
        "raghu": "SVCCA keeps 99 % of the variance (Raghu et al.)",
        "top10": "keeps the top 10 components for SVCCA (then CCA)"})
    k: int = _f(50, "subspace dimension k", {50: "uses k = 50"})
    n_anchors: int = _f(30000, "anchors", {30000: "uses 30,000 anchors"})
    n_queries: int = _f(500, "queries", {500: "uses 500 queries"})
    n_seeds: int = _f(3, "seeds", {3: "uses 3 seeds"})

    def similarity_kwargs(self, measure: str) -> dict:
        """Keyword arguments of :func:`core.similarity.similarity_matrix` for ``measure`` under these settings."""
        from .similarity import resolve_measure

        name = resolve_measure(measure).name
        kw: dict = {}
        if self.preprocess != "none":
            kw["preprocess"] = self.preprocess
        if name == "rbf_cka" and self.rbf_sigma is not None:
            kw["sigma"] = float(self.rbf_sigma)
        return kw

    def measure_name(self, measure: str) -> str:
        """``svcca`` becomes ``svcca_top10`` under ``svcca="top10"``; other names are unchanged."""
        from .similarity import resolve_measure

        name = resolve_measure(measure).name
        if name in ("svcca", "svcca_top10"):
            return "svcca_top10" if self.svcca == "top10" else "svcca"
        return name


# ------------------------------------------------------------------------------------------------
# paper B
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PointSetSettings(_Settings):
    """Weighted point-set training (METHODS.md 7.5): keyword arguments of
    :class:`core.pointset.PointSetSimilarity` and :func:`core.pointset.compare_pointset_similarities`."""

    paper = "B"
    rff_redraw: bool = _f(False, "random features during training", {
        False: "random features drawn once (seeded) for training and evaluation",
        True: "does redraw W, b at every training step (evaluation draws once, seeded)"})
    normalize_linear: bool = _f(True, "linear part of the set feature", {
        True: "linear part L2-normalised", False: "does not normalise the linear part"})
    head_bias: bool = _f(True, "weight head", {
        True: "weight head with a bias, started at uniform weights (w = 1)",
        False: "uses a weight head without bias, randomly initialised"})
    logit_scale_param: str = _f("log", "logit scale", {
        "log": "logit scale trained as log s (start 14.29), clamped to [1, 100]",
        "direct": "trains the logit scale directly (start 1/0.07), clamped to [1, 100]"})

    def pointset_kwargs(self) -> dict:
        return {"rff_redraw": self.rff_redraw, "normalize_linear": self.normalize_linear,
                "head_bias": self.head_bias, "logit_scale_param": self.logit_scale_param}


# ------------------------------------------------------------------------------------------------
# paper C
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class HierarchySettings(_Settings):
    """Hierarchies (METHODS.md 7.3): tau_d's tie handling, the retrieval protocol, the RE loss and fine-tuning."""

    paper = "C"
    tau: str = _f("tau-b", "tau_d tie handling", {
        "tau-b": "tau_d is Kendall tau-b of the radii (ties count as neither order)",
        "argsort": "uses Kendall tau of argsort(radii) (ties broken by tier order)"})
    retrieval_pool: str = _f("heldout", "hierarchical retrieval pool", {
        "heldout": "retrieval over the held-out test chains' texts (de-duplicated), one query per chain",
        "all-chains": "pools every chain's texts of the evaluation file (not de-duplicated); one query per "
                      "unique image, true texts = the union of its chains"})
    le_negatives: str = _f("all", "negatives in L_e", {
        "all": "L_e averages the negative angles of every tier",
        "shared": "averages negative angles of tiers 0..L-2 only in L_e (the last tier's negative only in L_p)"})
    finetune: str = _f("adapter", "RE fine-tuning", {
        "adapter": "fine-tunes a residual linear adapter on frozen embeddings (the project's own, fast)",
        "tower": "fine-tunes the whole text tower (AdamW lr 1e-7, weight decay 0.01, batch 8, 1 epoch)"})

    def loss_kwargs(self) -> dict:
        return {"le_negatives": self.le_negatives}

    def tower_params(self) -> dict:
        """:class:`core.radial.OpenCLIPTextTowerFineTuner` settings of the authors' fine-tuning."""
        return {"n_blocks": "all", "lr": 1e-7, "weight_decay": 0.01, "batch_size": 8, "max_epochs": 1,
                "patience": 1}


# ------------------------------------------------------------------------------------------------
# paper D
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class UniverseSettings(_Settings):
    """Many spaces at once (METHODS.md 7.4): keyword arguments of :func:`core.evaluation.universe.evaluate_universe`."""

    paper = "D"
    preprocess_order: str = _f("zscore-pca", "preprocessing order", {
        "zscore-pca": "z-score, then PCA",
        "pca-zscore": "does PCA on the raw features, then z-score"})
    gcca_variant: str = _f("maxvar-ridge", "GCCA", {
        "maxvar-ridge": "GCCA is ridge MAXVAR (r = 0.1 n; whitened shared coordinates)",
        "racing": "uses RACING-GCCA (no ridge, rank = smallest width, coordinates keep each space's spectrum)"})
    gcpa_schedule: str = _f("epochs", "GCPA training schedule", {
        "epochs": "GCPA trains on full epochs, early stopping per epoch (patience 15, up to 100 epochs)",
        "sampled": "trains GCPA on sampled batches (with replacement), >= 200 steps per epoch, 50 epochs, "
                   "validation every 20-40 steps, patience 50 checks, best weights kept"})

    def universe_kwargs(self) -> dict:
        out = {"preprocess_order": self.preprocess_order, "gcca_variant": self.gcca_variant,
               "gcpa_schedule": self.gcpa_schedule}
        if self.gcpa_schedule == "sampled":
            out["gcpa_epochs"] = 50
        return out


SETTINGS_CLASSES = {"paper_a": SimilaritySettings, "paper_b": PointSetSettings, "paper_c": HierarchySettings,
                    "paper_d": UniverseSettings}


# ------------------------------------------------------------------------------------------------
# the presets
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Preset:
    """A paper preset: the authors' settings plus what stays the same or cannot be reproduced (``notes``)."""

    name: str
    paper: str
    title: str
    code: str
    settings: _Settings
    notes: tuple = ()

    @property
    def label(self) -> str:
        return f"paper {self.paper} preset"

    def differences_from_default(self) -> list[Difference]:
        """Where the project's default departs from this preset (one :class:`Difference` per setting)."""
        return differences(type(self.settings)(), self.name)


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset("paper_a", "A", "Hadgi et al., Escaping Plato's Cave (CVPR 2025) / Huh et al., Platonic Representation",
           "minyoungg/platonic-rep; paper A's protocol from its text, no public code",
           SimilaritySettings(preprocess="platonic", rbf_sigma=1.0, svcca="top10"),
           ("the Platonic code adds 1e-6 to the CKNNA / debiased HSIC denominators; Platoscope keeps the exact "
            "values (they differ by about 5e-5)",
            "SVCCA top-10 uses an exact PCA where the Platonic code uses a randomised SVD",
            "paper A's protocol (k = 50, 30,000 anchors, 500 queries, 3 seeds) is also the project's default")),
    Preset("paper_b", "B", "Uesaka et al., Weighted Point Cloud Embedding (ICLR 2025)", "sony/wpse",
           PointSetSettings(rff_redraw=True, normalize_linear=False, head_bias=False, logit_scale_param="direct"),
           ("tokens are L2-normalised first, set features average all unmasked tokens and the mixing is "
            "(0.667, 0.333) in both",)),
    Preset("paper_c", "C", "Alper & Averbuch-Elor, Emergent Visual-Semantic Hierarchies (ECCV 2024)",
           "TAU-VAILab/hierarcaps",
           HierarchySettings(tau="argsort", retrieval_pool="all-chains", le_negatives="shared", finetune="tower"),
           ("the authors fine-tune on the 73K-chain HierarCaps train set (not public); here the training chains "
            "are a seeded split of the given file",
            "whole-tower fine-tuning needs an open_clip encoder; with another encoder the adapter is used and "
            "that is said")),
    Preset("paper_d", "D", "Achara & Gaintseva, Multi-Way Representation Alignment (2026)",
           "acharaakshit/multiway-alignment",
           UniverseSettings(preprocess_order="pca-zscore", gcca_variant="racing", gcpa_schedule="sampled"),
           ("GPA starts symmetrically (R_m = I) in both: the authors' random N(0, 1) start reaches the same or a "
            "worse optimum and depends on the order of the spaces",
            "GPA-ADD fits the new space against the stored consensus of the preprocessed spaces, as the authors",
            "retrieval: cosine on L2-normalised universe coordinates in both; ties count against the true item "
            "here (the authors' double argsort breaks them arbitrarily)")),
]}

#: Preset names in the order the UI lists them (``custom`` first).
PRESET_NAMES = (CUSTOM, *PRESETS)


def cli_choices(paper: str | None = None) -> list[str]:
    """Spellings ``--preset`` accepts on a command (``custom``, ``paper-d``, ...)."""
    names = [n for n, p in PRESETS.items() if paper is None or p.paper == paper]
    return [CUSTOM] + [n.replace("_", "-") for n in names]


def resolve(name: str | None) -> str:
    """``paper-d`` / ``paper_d`` / ``d`` / ``D`` / ``custom`` / None -> ``paper_d`` or ``custom``."""
    if name is None:
        return CUSTOM
    key = str(name).strip().lower().replace("-", "_").replace(" ", "_")
    if key in ("", CUSTOM, "none", "default"):
        return CUSTOM
    if len(key) == 1:
        key = f"paper_{key}"
    if key not in PRESETS:
        raise DataError(f"unknown preset {name!r}", hint=f"use one of {', '.join(cli_choices())}")
    return key


def get_preset(name: str) -> Preset | None:
    """The :class:`Preset` of ``name`` (None for ``custom``)."""
    key = resolve(name)
    return None if key == CUSTOM else PRESETS[key]


def settings_for(paper: str, name: str | None) -> _Settings:
    """The settings of paper ``paper`` ('A'..'D') under preset ``name``: the preset's own values, or the project's
    defaults for ``custom``. A preset of another paper is refused."""
    key = resolve(name)
    cls = SETTINGS_CLASSES[f"paper_{paper.lower()}"]
    if key == CUSTOM:
        return cls()
    preset = PRESETS[key]
    if preset.paper != paper.upper():
        raise DataError(f"the {key.replace('_', '-')} preset does not apply here",
                        hint=f"use {' or '.join(cli_choices(paper.upper()))}")
    return preset.settings


def differences(settings: _Settings, preset: str | None = None, only: tuple | None = None) -> list[Difference]:
    """Every setting of ``settings`` (or of the fields ``only``) whose value differs from the authors' code."""
    authors = PRESETS[f"paper_{settings.paper.lower()}"].settings if preset is None else PRESETS[resolve(preset)].settings
    out = []
    for f in dataclasses.fields(settings):
        if only is not None and f.name not in only:
            continue
        mine, theirs = getattr(settings, f.name), getattr(authors, f.name)
        if mine != theirs:
            out.append(Difference(f.name, f.metadata.get("label", f.name), mine, theirs, _plain(settings.text(f.name)),
                                  authors.text(f.name)))
    return out


def _plain(text: str) -> str:
    """A value's description without the verb used for the authors' side ("does PCA ..." -> "PCA ...")."""
    for verb in ("does ", "uses ", "trains ", "pools ", "averages ", "keeps "):
        if text.startswith(verb):
            return text[len(verb):]
    return text


def difference_lines(paper: str, name: str | None, settings: _Settings | None = None,
                     only: tuple | None = None) -> list[str]:
    """The one-line statements a view shows under its preset control.

    Under a preset: ``paper D preset: reproduces multiway-alignment`` plus one line per setting where the
    project's default differs (``default: z-score, then PCA``). Under ``custom``: one line per setting that
    departs from the authors' code (``custom: z-score, then PCA; the authors' code does PCA ..., then z-score``).
    """
    key = resolve(name)
    preset = PRESETS[f"paper_{paper.lower()}"]
    if settings is None:
        settings = settings_for(paper, key)
    diffs = differences(settings, preset.name, only)
    if key != CUSTOM and not diffs:
        default_diffs = differences(type(settings)(), preset.name, only)
        lines = [f"{preset.label}: the authors' code ({preset.code})"]
        lines += [f"the project's default instead: {d.value_text}" for d in default_diffs]
        return lines
    if not diffs:
        return [f"custom: the same as the authors' code ({preset.code}) here"]
    if key != CUSTOM:
        return [d.line(f"{preset.label}, changed here") for d in diffs]
    return [d.line() for d in diffs]


#: The paper A fields that concern the alignment protocol (the rest concern the similarity measures).
PROTOCOL_FIELDS = ("k", "n_anchors", "n_queries", "n_seeds")
SIMILARITY_FIELDS = ("preprocess", "rbf_sigma", "svcca")


def record(paper: str, name: str | None, settings: _Settings | None = None, only: tuple | None = None) -> dict:
    """What JSON outputs and export manifests store under ``preset``::

        {"name": "paper_d" | "custom", "paper": "D", "settings": {...}, "differences": [line, ...]}

    ``only``: the fields that concern this output (e.g. :data:`PROTOCOL_FIELDS` for an alignment).
    """
    key = resolve(name)
    if settings is None:
        settings = settings_for(paper, key)
    values = settings.as_dict()
    if only is not None:
        values = {k: v for k, v in values.items() if k in only}
    return {"name": key, "paper": paper.upper(), "settings": values,
            "differences": difference_lines(paper, key, settings, only)}
