"""A dataset at a glance: one row per space (shape, dtype, mean norm, problems) and an overview dict."""
from __future__ import annotations

from typing import Callable, Iterable

import pandas as pd

from .dataset import Dataset
from .validate import problems_from_scan, scan_space

SUMMARY_COLUMNS = ("name", "kind", "modality", "n", "d", "tokens", "dtype", "mean_norm", "problems", "source")


def summarize_dataset(ds: Dataset, progress: Callable | None = None) -> pd.DataFrame:
    """One row per space of ``ds``.

    Parameters
    ----------
    ds : the dataset.
    progress : optional tqdm-like wrapper ``progress(iterable, total=None, desc="")`` over the spaces.

    Returns
    -------
    DataFrame with columns ``name, kind ('vectors'|'tokens'), modality, n, d, tokens (T for token sets, else
    None), dtype, mean_norm`` (mean L2 norm of the pooled vectors, accumulated in float64), ``problems``
    (the non-fatal problems of :func:`core.validate.find_problems`, joined by "; ", "" when none) and
    ``source`` (the file the space was read from).
    """
    names: Iterable[str] = ds.space_names       # on-demand spaces are not computed for a summary
    if progress is not None:
        names = progress(names, total=len(ds.space_names), desc="scanning spaces")
    rows = []
    for name in names:
        space = ds.spaces[name]
        scan = scan_space(space)
        rows.append({
            "name": name,
            "kind": space.kind,
            "modality": space.modality,
            "n": space.n,
            "d": space.dim,
            "tokens": space.n_tokens,
            "dtype": str(space.data.dtype),
            "mean_norm": float(scan.mean_norm),
            "problems": "; ".join(problems_from_scan(scan)),
            "source": space.source or "",
        })
    frame = pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))
    frame["tokens"] = pd.Series([r["tokens"] for r in rows], dtype=object)
    return frame


def dataset_overview(ds: Dataset) -> dict:
    """Facts about a dataset as a JSON-ready dict.

    Keys: ``name``, ``origin``, ``n_items``, ``n_spaces``, ``space_names``, ``metadata_columns``,
    ``n_groups`` (distinct values of the ``group`` column, None without one), ``n_chains`` (distinct
    ``chain`` values, None without one), ``fingerprint`` and ``sources`` (list of {name, sha256, size}).
    """
    items = ds.items
    return {
        "name": ds.name,
        "origin": ds.origin,
        "n_items": int(ds.n),
        "n_spaces": len(ds.space_names),
        "space_names": ds.space_names,
        "metadata_columns": [str(c) for c in ds.metadata_columns()],
        "n_groups": int(items["group"].nunique()) if "group" in items.columns else None,
        "n_chains": int(items["chain"].nunique()) if "chain" in items.columns else None,
        "fingerprint": ds.fingerprint,
        "sources": [{"name": s.name, "sha256": s.sha256, "size": int(s.size)} for s in ds.sources],
    }
