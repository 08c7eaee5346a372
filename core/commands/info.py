"""``platoscope info FILE... [--meta META] [--json]``: what a set of embedding files holds.

JSON output::

    {"dataset": {"name", "origin", "n_items", "n_spaces", "space_names", "metadata_columns", "n_groups",
                 "n_chains", "fingerprint", "sources": [{"name", "sha256", "size"}]},
     "spaces": [{"name", "kind", "modality", "n", "d", "tokens", "dtype", "mean_norm", "problems": [...],
                 "source"}, ...]}
"""
from __future__ import annotations

import argparse

from ..summary import dataset_overview, summarize_dataset
from ._common import add_input_arguments, format_table, load_inputs, to_jsonable

NAME = "info"
HELP = "load embedding files, validate them and summarise every space"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)


def run(args: argparse.Namespace, progress) -> dict:
    ds = load_inputs(args)
    table = summarize_dataset(ds, progress=progress)
    spaces = []
    for row in table.to_dict(orient="records"):
        row["problems"] = [p for p in row["problems"].split("; ") if p]
        row["tokens"] = None if row["tokens"] is None else int(row["tokens"])
        spaces.append(row)
    return to_jsonable({"dataset": dataset_overview(ds), "spaces": spaces})


def render(result: dict) -> str:
    ds = result["dataset"]
    lines = [f"dataset '{ds['name']}': {ds['n_items']} items, {ds['n_spaces']} space"
             f"{'s' if ds['n_spaces'] != 1 else ''}"]
    if ds["metadata_columns"]:
        lines.append("metadata columns: " + ", ".join(ds["metadata_columns"]))
    if ds.get("n_groups") is not None:
        lines.append(f"groups: {ds['n_groups']}")
    if ds.get("n_chains") is not None:
        lines.append(f"chains: {ds['n_chains']}")
    for src in ds["sources"]:
        lines.append(f"source: {src['name']} ({src['size']} bytes, sha256 {src['sha256'][:16]}...)")
    if result["spaces"]:
        rows = []
        for s in result["spaces"]:
            rows.append({**s, "problems": "; ".join(s["problems"]) or "-",
                         "tokens": s["tokens"] if s["tokens"] is not None else "-"})
        lines.append("")
        lines.append(format_table(rows, ["name", "kind", "modality", "n", "tokens", "d", "dtype", "mean_norm",
                                          "source", "problems"],
                                  ["space", "kind", "modality", "n", "T", "d", "dtype", "mean norm", "file",
                                   "problems"]))
    else:
        lines.append("no embedding spaces (items only)")
    return "\n".join(lines)
