"""``platoscope pointset A B [--kernel {gauss,imq,linear}] [--train] [--features D] [--anchors N] [--queries Q]
[--seeds S] [--epochs E] [--json]``: weighted point-set similarity of two token-set spaces (METHODS.md section 6,
paper B), judged on held-out pairs beside the cosine of mean-pooled vectors.

``A`` and ``B`` name token-set spaces (``n x T x d``, with optional ``<name>_mask`` / ``<name>_weights``): a file
holding one space, or ``FILE:SPACE`` (both may name the same file). Rows pair by item; a ``group`` column (from
``--meta``) marks true partners. When the widths differ, a CCA fitted on each seed's anchors (mean-pooled) projects
the pooled vectors and every token to a common width (``--k``); ``--exact-check N`` compares the RFF similarity of N
queries with the exact double sum.

JSON output::

    {"a": {"file", "space", "shape"}, "b": {...}, "n_items": n, "kernel": "gauss",
     "settings": {...}, "adjustments": [str], "projection": str,
     "results": {"cosine_pooled" | "pointset_uniform" | "pointset_learned":        # learned only with --train
                 {"matching_accuracy": {"mean", "std", "chance", "per_seed"}, "top1_x_to_y": {...},
                  "top5_x_to_y", "top10_x_to_y", "top1_y_to_x", ..., "mrr_x_to_y", "mrr_y_to_x", "mrr"}},
     "spectra": {"cosine_pooled": [singular values], "pointset_uniform": [...], "pointset_learned": [...],
                 "common_dim": k, "rank_bound": k + 1, "numerical_rank": {...}},       # first seed
     "training": [{"seed", "seconds", "epochs_run", "best_epoch", "logit_scale", "n_train", "n_val", "history"}],
     "rff_error": {"n_items", "n_features", "max_abs_error", "mean_abs_error", "relative_frobenius_error"} | null,
     "seconds": float,
     "preset": {"name": "custom" | "paper_b", "paper": "B", "settings": {...}, "differences": [str, ...]}}

``training`` entries also carry ``epochs`` beside ``epochs_run`` (same value), deprecated for one release (README,
"Renamed JSON keys").

``--preset paper-b`` reproduces the authors' code (METHODS.md 7.5): random features redrawn at every training
step (evaluation draws once, seeded), linear part not normalised, weight head without bias from a random start,
logit scale trained directly from 1/0.07, clamped to [1, 100].
"""
from __future__ import annotations

import argparse

from ..errors import DataError
from ..pointset import KERNELS, SIMILARITIES, compare_pointset_similarities
from ..presets import cli_choices, record, settings_for
from ._common import format_number, format_table, max_file_bytes, to_jsonable
from .align import parse_space_spec

NAME = "pointset"
HELP = "weighted point-set (token-set) similarity, paper B: RFF kernel, uniform vs learned weights vs pooled cosine"

LABELS = {"cosine_pooled": "cosine, mean-pooled", "pointset_uniform": "point set, uniform w",
          "pointset_learned": "point set, learned w"}
_SHOWN = (("top1_x_to_y", "top-1 a->b"), ("top5_x_to_y", "top-5 a->b"), ("top1_y_to_x", "top-1 b->a"),
          ("top5_y_to_x", "top-5 b->a"), ("matching_accuracy", "matching"), ("mrr", "MRR"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("a", metavar="A", help="token-set space: FILE (holding one space) or FILE:SPACE")
    parser.add_argument("b", metavar="B", help="token-set space: FILE (holding one space) or FILE:SPACE")
    parser.add_argument("--kernel", default="gauss", choices=KERNELS,
                        help="gauss (sigma), imq (c) or linear (no kernel part); default gauss")
    parser.add_argument("--train", action="store_true", help="also learn per-token weights (symmetric InfoNCE)")
    parser.add_argument("--features", type=int, default=1024, metavar="D", help="random Fourier features (1024)")
    parser.add_argument("--sigma", type=float, default=0.5, help="Gaussian bandwidth (default 0.5)")
    parser.add_argument("--c", type=float, default=0.5, help="IMQ scale (default 0.5)")
    parser.add_argument("--anchors", type=int, default=None, metavar="N",
                        help="anchor pairs per seed (default: every item outside the queries)")
    parser.add_argument("--queries", type=int, default=500, metavar="Q", help="held-out query pairs per seed (500)")
    parser.add_argument("--seeds", type=int, default=3, metavar="S", help="number of seeds 0..S-1 (default 3)")
    parser.add_argument("--k", type=int, default=50, help="CCA width when the two widths differ (default 50)")
    parser.add_argument("--epochs", type=int, default=30, help="most training epochs (early stopping; default 30)")
    parser.add_argument("--batch-size", type=int, default=128, help="training pairs per batch (default 128)")
    parser.add_argument("--lr", type=float, default=1e-3, help="AdamW learning rate (default 1e-3)")
    parser.add_argument("--preset", default="custom", choices=cli_choices("B"),
                        help="paper-b: the authors' code (random features redrawn at every training step, linear "
                             "part not normalised, weight head without bias from a random start, logit scale "
                             "trained directly from 1/0.07); custom (default): the project's defaults")
    parser.add_argument("--exact-check", type=int, default=100, metavar="N",
                        help="compare RFF with the exact double sum on N queries of the first seed (0: skip)")
    parser.add_argument("--meta", metavar="META", default=None,
                        help="metadata table (.csv or .parquet) with an 'id' column ('group' marks partners)")
    parser.add_argument("--max-file-mb", metavar="MB", type=float, default=None,
                        help="refuse files larger than this many MB (default $PLATOSCOPE_MAX_FILE_MB, else 2048)")


def _pick(ds, file: str, space: str | None, side: str):
    if space is not None:
        sp = ds[space]
    else:
        mine = [s for s in ds.spaces.values() if s.source == file and s.kind == "tokens"]
        if len(mine) != 1:
            names = ", ".join(s.name for s in ds.spaces.values() if s.source == file) or "none"
            raise DataError(f"{len(mine)} token-set spaces in it (spaces: {names}); {side} must name one", file=file,
                            hint=f"write {side} as {file}:SPACE")
        sp = mine[0]
    if sp.kind != "tokens":
        raise DataError(f"space '{sp.name}' holds vectors ({sp.shape_text}), not token sets (n x T x d)", file=file,
                        array=sp.name, hint="give per-token / per-point outputs (a 3-D array)")
    return sp


def run(args: argparse.Namespace, progress) -> dict:
    for option, value in (("--seeds", args.seeds), ("--queries", args.queries), ("--features", args.features),
                          ("--k", args.k), ("--batch-size", args.batch_size)):
        if value < 1:
            raise DataError(f"{option} must be >= 1, got {value}")
    if args.anchors is not None and args.anchors < 2:
        raise DataError(f"--anchors must be >= 2, got {args.anchors}")
    if args.epochs < 0 or args.exact_check < 0:
        raise DataError("--epochs and --exact-check must be >= 0")
    from ..io import load_dataset

    (fa, sa), (fb, sb) = parse_space_spec(args.a), parse_space_spec(args.b)
    paths = list(dict.fromkeys([fa, fb]))
    ds = load_dataset(paths, metadata=args.meta, display_names={p: p for p in paths},
                      max_file_bytes=max_file_bytes(args), origin="files")
    a, b = _pick(ds, fa, sa, "A"), _pick(ds, fb, sb, "B")
    if a is b:
        raise DataError(f"A and B are the same space '{a.name}'", hint="name two different spaces")
    groups = ds.groups() if "group" in ds.items.columns else None
    settings = settings_for("B", getattr(args, "preset", "custom"))
    res = compare_pointset_similarities(
        a, b, kernel=args.kernel, train=args.train, n_anchors=args.anchors, n_queries=args.queries,
        seeds=range(args.seeds), groups=groups, n_features=args.features, sigma=args.sigma, c=args.c,
        n_components=args.k, max_epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
        exact_check=args.exact_check, progress=progress, **settings.pointset_kwargs())
    res.pop("query_rows", None)
    out = {"a": {"file": fa, "space": a.name, "shape": list(a.data.shape)},
           "b": {"file": fb, "space": b.name, "shape": list(b.data.shape)},
           "n_items": int(ds.n), "kernel": args.kernel, **res,
           "preset": record("B", getattr(args, "preset", "custom"), settings)}
    return to_jsonable(out)


def render(result: dict) -> str:
    s = result["settings"]
    a, b = result["a"], result["b"]
    lines = [f"point-set similarity ({result['kernel']} kernel, D = {s['n_features']}) of {a['space']} "
             f"({' x '.join(map(str, a['shape']))}, {a['file']}) and {b['space']} "
             f"({' x '.join(map(str, b['shape']))}, {b['file']})",
             f"{s['n_anchors']} anchors, {s['n_queries']} held-out queries, {len(s['seeds'])} seed"
             f"{'s' if len(s['seeds']) != 1 else ''}; mean +- std over seeds",
             f"projection: {result['projection']}"]
    lines += [f"settings: {line}" for line in (result.get("preset") or {}).get("differences", [])] + [""]
    rows = []
    for name in SIMILARITIES:
        metrics = result["results"].get(name)
        if metrics is None:
            continue
        row = {"similarity": LABELS[name]}
        for key, _ in _SHOWN:
            row[key] = f"{format_number(metrics[key]['mean'], 3)} +- {format_number(metrics[key]['std'], 2)}"
        rows.append(row)
    first = next(iter(result["results"].values()))
    rows.append({"similarity": "(chance)", **{k: format_number(first[k]["chance"], 3) for k, _ in _SHOWN}})
    lines.append(format_table(rows, ["similarity"] + [k for k, _ in _SHOWN], ["similarity"] + [h for _, h in _SHOWN]))
    sp = result.get("spectra")
    if sp:
        ranks = ", ".join(f"{LABELS[k]} {v}" for k, v in sp["numerical_rank"].items())
        lines += ["", f"numerical rank of the query x query similarity (rank bound of cosine: d + 1 = "
                      f"{sp['rank_bound']}): {ranks}"]
    err = result.get("rff_error")
    if err:
        lines.append(f"RFF vs exact double sum on {err['n_items']} queries: max |error| "
                     f"{format_number(err['max_abs_error'], 3)}, mean {format_number(err['mean_abs_error'], 3)}, "
                     f"relative (Frobenius) {format_number(err['relative_frobenius_error'], 3)}")
    for t in result.get("training", []):
        lines.append(f"training seed {t['seed']}: {format_number(t['seconds'], 3)} s, {t['epochs_run']} epochs "
                     f"(best {t['best_epoch']}), logit scale {format_number(t['logit_scale'], 4)}")
    for note in result.get("adjustments", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


__all__ = ["NAME", "HELP", "add_arguments", "run", "render"]
