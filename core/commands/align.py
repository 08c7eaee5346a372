"""``platoscope align X Y [--method M] [--k 50] [--anchors N] [--queries 500] [--seeds 3] [--reg R]
[--sweep-k 8,16,...] [--sweep-anchors 1000,5000,...] [--save map.safetensors] [--json]``: align two spaces
and judge the alignment with paper A's protocol (METHODS.md sections 2 and 3).

``X`` and ``Y`` are each a file holding one space, or ``FILE:SPACE`` to pick a space of a file (both may name
the same file). Rows pair by item (ids are matched when the files carry them); a ``group`` column (from
``--meta``) marks true partners. Token-set spaces are mean-pooled first. X is the source: matching and the
``x_to_y`` retrieval rank Y queries for each X query.

For each seed, anchors and queries are drawn (disjoint, group-aware), the method is fitted on the anchors and
scored on the queries; the result is mean +- std over seeds with the chance level beside it. When the data
are smaller than anchors + queries, the counts shrink (queries = min(queries, n // 5), anchors = the rest) and
``adjustments`` says so. ``--save`` fits the method on all n pairs and writes the fitted map (safetensors
with JSON metadata; reload it with :func:`core.align.load_map`).

JSON output::

    {"x": {"file", "space", "dim"}, "y": {...}, "n_items": n, "methods": [...],
     "protocol": {"settings": {...}, "adjustments": [...],
                  "results": {method: {"matching_accuracy": {"mean", "std", "chance", "per_seed"},
                                       "top1_x_to_y": {...}, "top5_x_to_y": {...}, "top10_x_to_y": {...},
                                       "top1_y_to_x": {...}, ..., "mrr_x_to_y", "mrr_y_to_x",
                                       "mrr": {...}}},       # mrr = mean of both directions
                  "cca": {"reg", "k", "canonical_correlations", "heldout_correlations"}   # CCA methods only
                  "seconds"},
     "sweep_k": {"settings", "adjustments", "records": [{"method", "k", "seed", "metric", "value", "chance"}],
                 "summary": [{"method", "k", "metric", "mean", "std", "chance", "n_seeds"}]} | null,
     "sweep_anchors": {... same with "n_anchors" ...} | null,
     "saved_map": {"path", "method", "n_pairs"} | null,
     "engine": {"name": "ray", "address", "resources", "distributed": [...], "in_process": [...]}}  # with --ray

``--ray [ADDRESS]`` computes every seed's anchor moments (and the ``--save`` fit on all pairs) as per-shard Ray
tasks, tree-reduced (:func:`core.distributed.anchor_moments`); the fits from those moments and the query scores
run here. The numbers equal the single-process run up to float64 summation order.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from ..align import METHODS, PairwiseAligner, normalize_method, save_map
from ..errors import DataError
from ..presets import PROTOCOL_FIELDS, cli_choices, record, settings_for
from ..evaluation.alignment import run_protocol, sweep_anchors, sweep_k
from ._common import add_ray_argument, format_number, format_table, max_file_bytes, ray_session, to_jsonable

NAME = "align"
HELP = "align two spaces (affine, Procrustes, CCA + affine / local CKA) and judge it by matching and retrieval"

CLI_METHODS = ("affine", "procrustes", "cca-affine", "cca-local-cka", "local-cka", "pca-affine", "none")
_SHOWN = (("matching_accuracy", "matching"), ("top1_x_to_y", "top-1 x->y"), ("top5_x_to_y", "top-5 x->y"),
          ("top1_y_to_x", "top-1 y->x"), ("top5_y_to_x", "top-5 y->x"), ("mrr", "MRR"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("x", metavar="X", help="source space: FILE (holding one space) or FILE:SPACE")
    parser.add_argument("y", metavar="Y", help="target space: FILE (holding one space) or FILE:SPACE")
    parser.add_argument("--method", default="cca-affine", metavar="M",
                        help=f"one of {', '.join(CLI_METHODS)}, a comma-separated list, or 'paper' for paper "
                             "A's four (affine, local-cka, cca-affine, cca-local-cka); default cca-affine")
    parser.add_argument("--k", type=int, default=50, help="CCA / PCA subspace dimension (default 50)")
    parser.add_argument("--anchors", type=int, default=30000, metavar="N",
                        help="anchor pairs per seed (default 30000; shrinks to fit the data)")
    parser.add_argument("--queries", type=int, default=500, metavar="Q",
                        help="query pairs per seed (default 500; shrinks to min(Q, n // 5))")
    parser.add_argument("--seeds", type=int, default=3, metavar="S", help="number of seeds 0..S-1 (default 3)")
    parser.add_argument("--reg", type=float, default=1e-3,
                        help="CCA's relative ridge r (Sxx + r tr(Sxx)/p I; default 1e-3)")
    parser.add_argument("--ridge", type=float, default=0.0,
                        help="affine map's relative ridge (default 0: least squares)")
    parser.add_argument("--sweep-k", default=None, metavar="K1,K2,...",
                        help="also sweep the subspace dimension over these k (e.g. 8,16,32,50,64,128,256)")
    parser.add_argument("--sweep-anchors", default=None, metavar="N1,N2,...",
                        help="also sweep the number of anchors over these counts (e.g. 1000,5000,10000,30000)")
    parser.add_argument("--save", default=None, metavar="MAP.safetensors",
                        help="fit the method on all pairs and save the fitted map here (one method only)")
    parser.add_argument("--preset", default="custom", choices=cli_choices("A"),
                        help="paper-a: paper A's protocol (k = 50, 30,000 anchors, 500 queries, 3 seeds; also the "
                             "defaults); recorded in the output with any departure from it")
    parser.add_argument("--meta", metavar="META", default=None,
                        help="metadata table (.csv or .parquet) with an 'id' column (a 'group' column marks "
                             "true partners)")
    parser.add_argument("--max-file-mb", metavar="MB", type=float, default=None,
                        help="refuse files larger than this many MB (default $PLATOSCOPE_MAX_FILE_MB, else 2048)")
    add_ray_argument(parser, "the anchors' moments (for every seed and for --save) as per-shard Ray tasks")


def parse_space_spec(spec: str) -> tuple[str, str | None]:
    """``FILE`` or ``FILE:SPACE`` -> (file, space or None). An existing path containing ':' stays whole."""
    if os.path.exists(spec) or ":" not in spec:
        return spec, None
    file, space = spec.rsplit(":", 1)
    if not file or not space or space.startswith(("/", "\\")):
        return spec, None
    return file, space


def _parse_ints(text: str | None, option: str) -> list[int] | None:
    if text is None:
        return None
    try:
        values = [int(v) for v in text.replace(" ", "").split(",") if v]
    except ValueError:
        raise DataError(f"{option} takes comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise DataError(f"{option} needs positive integers, got {text!r}")
    return values


def _methods(text: str) -> list[str]:
    if text.strip().lower() in ("paper", "paper-a", "all"):
        return ["affine", "local_cka", "cca_affine", "cca_local_cka"]
    out = [normalize_method(m) for m in text.split(",") if m.strip()]
    if not out:
        raise DataError("--method is empty", hint=f"use one of {', '.join(CLI_METHODS)}")
    return list(dict.fromkeys(out))


def _pick_space(ds, file: str, space: str | None, side: str):
    if space is not None:
        return ds[space]
    mine = [s for s in ds.spaces.values() if s.source == file]
    if len(mine) != 1:
        names = ", ".join(s.name for s in mine) or "none"
        raise DataError(f"{'no' if not mine else len(mine)} embedding spaces in it ({names}); {side} must name "
                        f"one", file=file, hint=f"write {side} as {file}:SPACE")
    return mine[0]


def _load(args):
    from ..io import load_dataset

    (fx, sx), (fy, sy) = parse_space_spec(args.x), parse_space_spec(args.y)
    paths = list(dict.fromkeys([fx, fy]))
    ds = load_dataset(paths, metadata=args.meta, display_names={p: p for p in paths},
                      max_file_bytes=max_file_bytes(args), origin="files")
    x_space = _pick_space(ds, fx, sx, "X")
    y_space = _pick_space(ds, fy, sy, "Y")
    if x_space is y_space:
        raise DataError(f"X and Y are the same space '{x_space.name}'", hint="name two different spaces")
    return ds, (fx, x_space), (fy, y_space)


def run(args: argparse.Namespace, progress) -> dict:
    methods = _methods(args.method)
    if args.seeds < 1:
        raise DataError(f"--seeds must be >= 1, got {args.seeds}")
    for option, value in (("--k", args.k), ("--queries", args.queries), ("--anchors", args.anchors)):
        if value < 1:
            raise DataError(f"{option} must be >= 1, got {value}")
    if args.reg < 0 or args.ridge < 0:
        raise DataError("--reg and --ridge must be >= 0")
    k_values = _parse_ints(args.sweep_k, "--sweep-k")
    anchor_counts = _parse_ints(args.sweep_anchors, "--sweep-anchors")
    if args.save and len(methods) != 1:
        raise DataError(f"--save needs exactly one method, got {', '.join(methods)}",
                        hint="pass a single --method with --save")

    ds, (fx, xs), (fy, ys) = _load(args)
    X, Y = xs.vectors(), ys.vectors()
    groups = ds.groups() if "group" in ds.items.columns else None
    seeds = list(range(args.seeds))
    common = dict(n_queries=args.queries, seeds=seeds, groups=groups, reg=args.reg, ridge=args.ridge,
                  progress=progress)
    out = {"x": {"file": fx, "space": xs.name, "dim": int(X.shape[1])},
           "y": {"file": fy, "space": ys.name, "dim": int(Y.shape[1])},
           "n_items": int(ds.n), "methods": methods}
    with ray_session(args) as info:
        moments_fn = None
        if info is not None:
            from ..distributed import anchor_moments

            def moments_fn(rows):
                return anchor_moments(X, Y, rows=rows, engine="ray")
            out["engine"] = {"name": "ray", "address": info["address"], "resources": info["resources"],
                             "distributed": ["protocol anchor moments", "sweep_k anchor moments", "--save fit"],
                             "in_process": ["query scoring", "sweep_anchors"]}
        out["protocol"] = run_protocol(X, Y, methods=methods, k=args.k, n_anchors=args.anchors,
                                       moments_fn=moments_fn, **common)
        out["sweep_k"] = (sweep_k(X, Y, k_values=k_values, methods=methods, n_anchors=args.anchors,
                                  moments_fn=moments_fn, **common) if k_values else None)
        out["sweep_anchors"] = (sweep_anchors(X, Y, anchor_counts=anchor_counts, methods=methods, k=args.k,
                                              **common) if anchor_counts else None)
        preset = getattr(args, "preset", "custom")
        used = settings_for("A", preset).replace(k=args.k, n_anchors=args.anchors, n_queries=args.queries,
                                                 n_seeds=args.seeds)
        if preset == "custom":
            used = type(used)(k=args.k, n_anchors=args.anchors, n_queries=args.queries, n_seeds=args.seeds)
        out["preset"] = record("A", preset, used, only=PROTOCOL_FIELDS)
        out["saved_map"] = None
        if args.save:
            k = out["protocol"]["settings"]["k"]
            aligner = PairwiseAligner(methods[0], k=k, reg=args.reg, ridge=args.ridge)
            aligner = aligner.fit(X, Y) if moments_fn is None else aligner.fit_moments(moments_fn(None))
            path = save_map(aligner, Path(args.save))
            out["saved_map"] = {"path": str(path), "method": methods[0], "n_pairs": int(ds.n), "k": k}
    return to_jsonable(out)


def _pm(entry: dict) -> str:
    return f"{format_number(entry['mean'], 3)} +- {format_number(entry['std'], 2)}"


def _sweep_table(sweep: dict, by: str) -> str:
    rows = {}
    for r in sweep["summary"]:
        if r["metric"] not in ("matching_accuracy", "top1_x_to_y", "mrr"):
            continue
        key = (r["method"], r[by])
        rows.setdefault(key, {"method": r["method"], by: "-" if r[by] is None else r[by]})
        rows[key][r["metric"]] = f"{format_number(r['mean'], 3)} +- {format_number(r['std'], 2)}"
    return format_table(list(rows.values()), ["method", by, "matching_accuracy", "top1_x_to_y", "mrr"],
                        ["method", by, "matching", "top-1 x->y", "MRR"])


def render(result: dict) -> str:
    proto = result["protocol"]
    s = proto["settings"]
    lines = [f"align {result['x']['space']} ({result['x']['dim']}-d, {result['x']['file']}) -> "
             f"{result['y']['space']} ({result['y']['dim']}-d, {result['y']['file']}), {result['n_items']} items",
             f"{s['n_anchors']} anchors, {s['n_queries']} queries, {len(s['seeds'])} seed"
             f"{'s' if len(s['seeds']) != 1 else ''}, k = {s['k']}, reg = {s['reg']:g}"
             f"{', groups' if s['groups'] else ''}; mean +- std over seeds"]
    lines += [f"settings: {line}" for line in (result.get("preset") or {}).get("differences", [])] + [""]
    rows = []
    for method, metrics in proto["results"].items():
        row = {"method": method.replace("_", "-")}
        for key, _ in _SHOWN:
            row[key] = _pm(metrics[key])
        rows.append(row)
    first = next(iter(proto["results"].values()))
    rows.append({"method": "(chance)", **{key: format_number(first[key]["chance"], 3) for key, _ in _SHOWN}})
    lines.append(format_table(rows, ["method"] + [k for k, _ in _SHOWN], ["method"] + [h for _, h in _SHOWN]))
    if proto.get("cca"):
        cc = proto["cca"]
        shown = ", ".join(format_number(v, 3) for v in cc["canonical_correlations"][:5])
        held = ", ".join(format_number(v, 3) for v in cc["heldout_correlations"][:5])
        lines += ["", f"CCA (reg {cc['reg']:g}) canonical correlations: {shown}"
                      f"{', ...' if len(cc['canonical_correlations']) > 5 else ''}",
                  f"held-out correlations on the queries: {held}"
                  f"{', ...' if len(cc['heldout_correlations']) > 5 else ''}"]
    for note in proto["adjustments"]:
        lines.append(f"note: {note}")
    if result.get("sweep_k"):
        lines += ["", "sweep over k:", _sweep_table(result["sweep_k"], "k")]
        lines += [f"note: {a}" for a in result["sweep_k"]["adjustments"] if a not in proto["adjustments"]]
    if result.get("sweep_anchors"):
        lines += ["", "sweep over the number of anchors:", _sweep_table(result["sweep_anchors"], "n_anchors")]
        lines += [f"note: {a}" for a in result["sweep_anchors"]["adjustments"] if a not in proto["adjustments"]]
    if result.get("saved_map"):
        m = result["saved_map"]
        lines += ["", f"saved the {m['method']} map fitted on all {m['n_pairs']} pairs to {m['path']}"]
    return "\n".join(lines)


__all__ = ["NAME", "HELP", "add_arguments", "run", "render", "parse_space_spec", "METHODS"]
