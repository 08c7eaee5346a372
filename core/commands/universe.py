"""``platoscope universe FILES... [--method pw,gpa,gcca,gcpa] [--add FILE] [--labels COLUMN] [--json]``: put
M >= 2 spaces into one shared universe and judge it (METHODS.md section 5, paper D).

Every space in the files takes part (``--spaces A,B,C`` picks some); token-set spaces are mean-pooled first.
Items are split once (``--test-size``, ``--seed``; whole groups stay on one side when a ``group`` column exists):
each method is fitted on the training items and judged on the held-out ones by any-to-any retrieval (Hits@1,
Hits@5, MRR for every ordered pair of spaces, by cosine in the universe), cycle-consistency (a -> b -> c -> a)
and, with ``--labels COLUMN``, k-means ARI / NMI against that column of the items table (averaged over
``--cluster-seeds`` seeds). ``--add FILE`` names a file holding one more space: the universe is fitted without
it, the space is then added by GPA-ADD (only its own rotation is fitted) and compared with refitting GPA on all
spaces (time and Hits@1).

Preprocessing (recorded in the output): z-score each space with its training mean / std (``--no-standardize``:
centre only), then one width: ``--width pca`` (default; PCA to the smallest width or ``--dim``) or
``--width pad`` (zero-padding to the largest width).

``--preset paper-d`` reproduces the authors' code (METHODS.md 7.4): PCA on the raw features, then z-score;
RACING-GCCA (no ridge, coordinates keep each space's spectrum); GCPA's sampled-batch schedule (50 epochs). The
output's ``preset`` says which preset was used and, in one line each, where the settings depart from the authors.

JSON output::

    {"spaces": [name, ...], "n_items": n, "n_train": int, "n_test": int, "seed": int, "test_size": float,
     "labels": str | null,
     "methods": {"pw" | "gpa" | "gcca" | "gcpa": {
         "name": method, "fit_seconds": float,
         "description": {"method", "parameters", "preprocessing": {"standardize", "width_matching", "dim",
                         "spaces": {name: {"input_width", "width_step"}}}, "n_train", ...method facts...},
         "retrieval": {"spaces": [...], "n_queries": Q,
                       "top1": [[float | null, ...], ...],        # M x M, row = query space, column = retrieved
                       "top5": [[...]], "mrr": [[...]],           # null on the diagonal
                       "summary": {"top1": {"mean", "worst", "worst_pair": [a, b]}, "top5": ..., "mrr": ...},
                       "chance": {"top1", "top5", "mrr"}},        # (+ the deprecated hits_at_1 / hits_at_5)
         "cycle": {"mean", "max", "n_triples", "sampled", "triples": [{"cycle": [a, b, c], "error"}]},
         "clustering": {"spaces": {name: {"ari", "ari_std", "nmi", "nmi_std", "n_clusters", "per_seed"}},
                        "mean_ari", "mean_nmi", "seeds", "n_items"} | null,
         "history": [...],                                         # GPA iterations / GCPA epochs
         "iterations_run": int,                                    # GPA only: iterations run
         "epochs_run": int,                                        # GCPA only: epochs run
         "objective": float}},                                     # GPA only: final sum of squared distances
     "add": {"space", "add_seconds", "refit_seconds", "speedup", "add": retrieval, "refit": retrieval,
             "top1_new_pairs": {"add", "refit"}, "top1_base_pairs": {"add", "refit"}} | null,
     "test_rows": [int, ...],
     "preset": {"name": "custom" | "paper_d", "paper": "D", "settings": {...}, "differences": [str, ...]}}

Each method also carries ``"label"`` (e.g. ``"GCCA (RACING, no ridge)"`` or ``"GCCA (MAXVAR, ridge 160)"``).
``top1`` / ``top5`` are paper D's Hits@1 / Hits@5; the old keys ``hits_at_1`` / ``hits_at_5`` are still emitted
beside them (same values) for one release, deprecated (README, "Renamed JSON keys"); so are ``new_pairs`` /
``base_pairs`` beside ``top1_new_pairs`` / ``top1_base_pairs``, and ``n_iter`` beside ``iterations_run`` (GPA) /
``epochs_run`` (GCPA). In ``description``: GPA's ``iterations_run`` (old ``iterations`` and ``n_iter``); GCPA's
``epochs_run`` (old ``stopped_epoch``; under the sampled schedule the last epoch may be partial), ``best_epoch``,
``gpa_iterations_run`` (old ``gpa_iterations``) and, sampled schedule, ``steps_run`` (old ``steps``), ``best_step``.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..presets import cli_choices, record, settings_for
from ..universe import METHOD_NAMES, METHODS
from ..evaluation.universe import evaluate_universe
from ._common import add_input_arguments, format_number, format_table, matrix_lines, max_file_bytes

NAME = "universe"
HELP = "align M spaces at once (pairwise Procrustes, GPA, GCCA, GCPA) and judge any-to-any retrieval"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    parser.add_argument("--method", default="all", metavar="M",
                        help=f"one of {', '.join(METHODS)}, a comma-separated list, or 'all' (default)")
    parser.add_argument("--add", metavar="FILE", default=None,
                        help="a file holding one more space: add it to the fitted GPA universe (GPA-ADD) and "
                             "compare with a refit")
    parser.add_argument("--labels", metavar="COLUMN", default=None,
                        help="items column for k-means clustering scores (ARI / NMI)")
    parser.add_argument("--spaces", metavar="A,B,...", default=None, help="use only these spaces (default all)")
    parser.add_argument("--test-size", type=float, default=0.2,
                        help="held-out fraction (or count when >= 1) of the items (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split and of GCPA (default 0)")
    parser.add_argument("--width", choices=["pca", "pad"], default="pca",
                        help="width matching: PCA to the smallest width (default) or zero padding to the largest")
    parser.add_argument("--dim", type=int, default=None, help="common width (default: from --width)")
    parser.add_argument("--no-standardize", action="store_true", help="centre features instead of z-scoring them")
    parser.add_argument("--gcca-reg", type=float, default=None, metavar="R",
                        help="GCCA ridge r (default 0.1 x training items)")
    parser.add_argument("--preset", default="custom", choices=cli_choices("D"),
                        help="paper-d: the authors' code (PCA then z-score, RACING-GCCA without ridge, GCPA's "
                             "sampled-batch schedule); custom (default): the project's defaults")
    parser.add_argument("--epochs", type=int, default=None,
                        help="GCPA's maximum epochs (default 100; 50 under --preset paper-d)")
    parser.add_argument("--patience", type=int, default=15, help="GCPA's early-stopping patience (default 15)")
    parser.add_argument("--gcpa-precision", choices=("float32", "bfloat16", "auto"), default="float32",
                        help="GCPA's training precision: float32 (default), bfloat16 matrix products (float32 "
                             "weights, loss and held-out checks), or auto (bfloat16 where the CPU/GPU has it natively)")
    parser.add_argument("--cluster-seeds", type=int, default=3, metavar="N", help="k-means seeds (default 3)")


def _methods(text: str) -> list[str]:
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not parts or parts == ["all"]:
        return list(METHODS)
    for p in parts:
        if p not in METHODS:
            raise DataError(f"unknown method '{p}'", hint=f"use one of {', '.join(METHODS)} or 'all'")
    return [m for m in METHODS if m in parts]


def run(args: argparse.Namespace, progress) -> dict:
    from ..io import load_dataset

    methods = _methods(args.method)
    files = list(args.files)
    add_name = None
    display = None
    if args.add:
        if Path(args.add).name in {Path(f).name for f in files}:
            raise DataError("the --add file has the same name as one of the FILES", file=Path(args.add).name,
                            hint="rename it, or drop it from FILES")
        files.append(args.add)
    ds = load_dataset(files, metadata=args.meta, max_file_bytes=max_file_bytes(args), origin="files",
                      name=Path(files[0]).stem, display_names=display)
    names = ds.space_names
    if args.add:
        added = [s.name for s in ds.spaces.values() if s.source == Path(args.add).name]
        if len(added) != 1:
            raise DataError(f"the --add file must hold exactly one space, it holds {len(added)}",
                            file=Path(args.add).name, hint="save the new space alone in a file")
        add_name = added[0]
        names = [n for n in names if n != add_name]
    if args.spaces:
        wanted = [s.strip() for s in args.spaces.split(",") if s.strip()]
        for name in wanted:
            ds[name]
        names = [n for n in wanted if n != add_name]
    if len(names) < 2:
        raise DataError(f"a universe needs at least 2 spaces, got {len(names)}",
                        hint="give more files (or a file holding several spaces)")
    labels = None
    if args.labels:
        if args.labels not in ds.items.columns:
            raise DataError(f"no column named '{args.labels}' in the items table", column=args.labels,
                            hint=f"columns: {', '.join(ds.metadata_columns()) or '(none; add --meta FILE)'}")
        labels = ds.items[args.labels].to_numpy(dtype=object)
    groups = ds.groups() if "group" in ds.items.columns else None
    spaces = {n: ds[n].vectors() for n in names + ([add_name] if add_name else [])}
    if args.cluster_seeds < 1:
        raise DataError("--cluster-seeds must be >= 1")
    settings = settings_for("D", args.preset)
    kw = {"gcpa_epochs": 100, **settings.universe_kwargs()}
    if args.epochs is not None:
        kw["gcpa_epochs"] = args.epochs
    res = evaluate_universe(spaces, methods, labels=labels, groups=groups, add=add_name,
                            test_size=args.test_size, seed=args.seed,
                            cluster_seeds=tuple(range(args.cluster_seeds)), standardize=not args.no_standardize,
                            width=args.width, dim=args.dim, gcca_reg=args.gcca_reg,
                            gcpa_patience=args.patience, gcpa_precision=args.gcpa_precision, progress=progress,
                            **kw)
    res["labels"] = args.labels
    res["preset"] = record("D", args.preset, settings)
    return res


def _matrix_lines(names: list[str], matrix, digits: int = 3) -> list[str]:
    return matrix_lines(names, [["-" if v is None else f"{v:.{digits}f}" for v in row] for row in matrix])


def render(result: dict) -> str:
    names = result["spaces"]
    lines = [f"universe of {len(names)} spaces ({', '.join(names)}): {result['n_items']} items, "
             f"fitted on {result['n_train']}, judged on {result['n_test']} held-out (seed {result['seed']})"]
    preset = result.get("preset")
    if preset:
        lines.extend(f"settings: {line}" for line in preset["differences"])
    any_method = next(iter(result["methods"].values()), None)
    if any_method:
        pre = any_method["description"]["preprocessing"]
        steps = "; ".join(f"{k}: {v['width_step']}" for k, v in pre["spaces"].items())
        lines.append(f"preprocessing: {pre['standardize']}, width matching '{pre['width_matching']}' to "
                     f"{pre['dim']} ({steps})")
        ch = any_method["retrieval"]["chance"]
        lines.append(f"chance: Hits@1 {format_number(ch['top1'], 3)}, Hits@5 {format_number(ch['top5'], 3)}")
    lines.append("")
    rows = []
    for m, r in result["methods"].items():
        s = r["retrieval"]["summary"]
        row = {"method": r.get("label") or METHOD_NAMES.get(m, m), "fit s": r["fit_seconds"],
               "Hits@1 mean": s["top1"]["mean"], "Hits@1 worst": s["top1"]["worst"],
               "worst pair": " -> ".join(s["top1"]["worst_pair"] or []),
               "Hits@5 mean": s["top5"]["mean"], "MRR mean": s["mrr"]["mean"],
               "cycle error": r["cycle"]["mean"]}
        if r.get("clustering"):
            row["ARI"] = r["clustering"]["mean_ari"]
            row["NMI"] = r["clustering"]["mean_nmi"]
        rows.append(row)
    if rows:
        cols = list(rows[0])
        lines.append(format_table(rows, cols, digits=3))
    for m, r in result["methods"].items():
        if m == "gpa" and "iterations_run" in r:
            lines.append(f"GPA: {r['iterations_run']} iterations, objective {r['objective']:.6g} (stopped on "
                         f"{r['description'].get('stop_reason', '?')})")
    for m, r in result["methods"].items():
        lines.append("")
        lines.append(f"{r.get('label') or METHOD_NAMES.get(m, m)}: Hits@1 (row = query space, column = retrieved "
                     "space)")
        lines.extend(_matrix_lines(r["retrieval"]["spaces"], r["retrieval"]["top1"]))
    add = result.get("add")
    if add:
        lines.append("")
        lines.append(f"adding '{add['space']}': GPA-ADD {add['add_seconds'] * 1000:.1f} ms vs refit "
                     f"{add['refit_seconds'] * 1000:.1f} ms ({add['speedup']:.0f}x faster)")
        lines.append(f"  mean Hits@1 of pairs with the new space: GPA-ADD {add['top1_new_pairs']['add']:.3f}, "
                     f"refit {add['top1_new_pairs']['refit']:.3f}")
        if add["top1_base_pairs"]["add"] is not None:
            lines.append(f"  mean Hits@1 of the other pairs: GPA-ADD {add['top1_base_pairs']['add']:.3f} (unchanged), "
                         f"refit {add['top1_base_pairs']['refit']:.3f}")
    return "\n".join(lines)
