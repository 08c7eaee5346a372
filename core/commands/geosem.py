"""``platoscope geosem [FILE...] --space NAME [--partner NAME] [--geometry demo|FILE] [--json]``: geometry versus
semantics (paper A, section 3; METHODS.md section 3).

Without files it runs on the built-in demo (space ``pointnet``, partner ``minilm``, the demo's point clouds).
``--geometry FILE`` gives the ground truth: an ``n x n`` distance matrix (.npy / .npz / .csv / .safetensors;
square, symmetric, non-negative) or ``n x P x 3`` point clouds (.npy / .npz; Chamfer distances). Without it the
items' own clouds are used (the demo's, or a token-set space of width 3).

Chamfer distances of a seeded sample (``--sample 300`` items, ``--points 256`` per cloud) are computed once and
cached; the cost is printed. The space's pairwise distances (cosine by default, ``--metric euclidean``) are
correlated with the geometric ones for the original space, its CCA subspace with the partner (fitted on the items
outside the sample) and its affine map into the partner space; the partner itself is the semantic reference.

JSON output::

    {"space", "partner", "metric", "k", "reg", "n_anchors",
     "geometry": {"kind": "chamfer" | "matrix", "n_sample", "n_points", "seed", "n_pairs", "seconds", "device",
                  "cached"},
     "correlations": {"original" | "cca_subspace" | "affine_mapped" | "partner":
                      {"pearson", "spearman", "n_pairs"}},
     "neighbour_summary": {version: {"k", "geometric_distance", "geometric_distance_best",
                                     "geometric_distance_random", "label_agreement", "label_chance"}},
     "neighbours": {"query": {"row", "id", "label", "caption"}, "k_subspace",
                    "original": [{"rank", "row", "id", "label", "caption", "distance"}, ...],
                    "subspace": [...]}}
"""
from __future__ import annotations

import argparse

from ..errors import DataError
from ._common import format_number, format_table, load_inputs

NAME = "geosem"
HELP = "geometry vs semantics: correlation of a space's distances with Chamfer / given distances, before and after alignment"

_VERSION_LABELS = {"original": "original space", "cca_subspace": "CCA subspace", "affine_mapped": "affine-mapped",
                   "partner": "partner space"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="*", metavar="FILE", help="embedding files (default: the built-in demo)")
    parser.add_argument("--meta", metavar="META", default=None, help="metadata table joined on id")
    parser.add_argument("--max-file-mb", metavar="MB", type=float, default=None, help="input size limit")
    parser.add_argument("--space", default="3d", help="the space judged: a name or a modality (default 3d)")
    parser.add_argument("--partner", default="text",
                        help="the paired space for the alignment: a name, a modality (default text), or 'none'")
    parser.add_argument("--geometry", default=None, metavar="demo|FILE",
                        help="ground truth: an n x n distance matrix or n x P x 3 clouds (default: the items' "
                             "own point clouds)")
    parser.add_argument("--sample", type=int, default=300, help="items in the seeded sample (default 300; 0 = all)")
    parser.add_argument("--points", type=int, default=256, help="points per cloud (default 256)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the item and point samples (default 0)")
    parser.add_argument("--metric", default="cosine", choices=["cosine", "euclidean"],
                        help="embedding distance (default cosine)")
    parser.add_argument("--dim", type=int, default=50, help="CCA subspace dimension k (default 50)")
    parser.add_argument("--reg", type=float, default=1e-3, help="CCA relative ridge (default 1e-3)")
    parser.add_argument("--neighbours", type=int, default=5, help="neighbours listed per query (default 5)")
    parser.add_argument("--query", default=None, metavar="ID",
                        help="item (id or row number) whose neighbours are listed (default: the first sampled item)")


def _load(args):
    if args.files:
        return load_inputs(args)
    from ..demo import load_demo
    return load_demo()


def _item_row(ds, query) -> int:
    ids = list(ds.ids)
    if query in ids:
        return ids.index(query)
    try:
        row = int(query)
    except ValueError:
        raise DataError(f"no item with id '{query}'", hint="give an item id or a row number") from None
    if not 0 <= row < ds.n:
        raise DataError(f"row {row} is out of range for {ds.n} items")
    return row


def _describe(ds, row, distance=None, rank=None) -> dict:
    items = ds.items
    out = {"row": int(row), "id": str(items["id"].iloc[row])}
    for col in ("label", "caption"):
        if col in items.columns:
            out[col] = str(items[col].iloc[row])
    if rank is not None:
        out = {"rank": rank, **out, "distance": float(distance)}
    return out


def run(args: argparse.Namespace, progress) -> dict:
    from ..geometry import dataset_geometry_vs_semantics, load_geometry
    from ..retrieval import neighbours_before_after, resolve_space

    if args.sample < 0:
        raise DataError(f"--sample must be >= 0, got {args.sample}")
    if args.points < 1:
        raise DataError(f"--points must be >= 1, got {args.points}")
    ds = _load(args)
    space = resolve_space(ds, args.space)
    partner = None if str(args.partner).lower() == "none" else resolve_space(ds, args.partner, exclude=space)
    geometry = None
    if args.geometry and args.geometry != "demo":
        geometry = load_geometry(args.geometry, ds.n)
    namespace = "shared" if ds.origin in ("demo", "server", "files") else None
    res = dataset_geometry_vs_semantics(ds, space, partner, geometry=geometry, n_sample=args.sample or None,
                                        n_points=args.points, seed=args.seed, metric=args.metric, k=args.dim,
                                        reg=args.reg, n_neighbours=args.neighbours, namespace=namespace,
                                        progress=progress)
    out = {"space": space, "partner": partner, "metric": args.metric, "k": res["k"], "reg": res["reg"],
           "n_anchors": res["n_anchors"], "geometry": res["geometry"],
           "correlations": {v: {"pearson": e["pearson"], "spearman": e["spearman"], "n_pairs": e["n_pairs"]}
                            for v, e in res["versions"].items()},
           "neighbour_summary": {v: e["neighbours"] for v, e in res["versions"].items()}}
    row = _item_row(ds, args.query) if args.query is not None else int(res["rows"][0])
    if partner is not None:
        nb = neighbours_before_after(ds[space].vectors(), ds[partner].vectors(), row, args.neighbours,
                                     dim=args.dim, reg=args.reg, metric=args.metric,
                                     index_key=f"{ds.space_fingerprint(space)}:{ds.space_fingerprint(partner)}",
                                     index_namespace="shared")
        out["neighbours"] = {
            "query": _describe(ds, row), "k_subspace": nb["k"],
            **{side: [_describe(ds, r, d, i + 1) for i, (r, d) in enumerate(zip(nb[side]["rows"],
                                                                                nb[side]["distances"]))]
               for side in ("original", "subspace")}}
    return out


def render(result: dict) -> str:
    g = result["geometry"]
    what = (f"Chamfer distances of {g['n_sample']} sampled items ({g['n_points']} points each, seed {g['seed']}, "
            f"{g['n_pairs']:,} pairs)" if g["kind"] == "chamfer"
            else f"the given distance matrix on {g['n_sample']} sampled items ({g['n_pairs']:,} pairs)")
    lines = [f"Geometry vs semantics: '{result['space']}'"
             + (f" aligned with '{result['partner']}'" if result["partner"] else ""),
             f"ground truth: {what}"]
    if g["kind"] == "chamfer":
        lines.append(f"cost: {g['seconds']:.1f} s on {g['device']}" + (" (read from the cache)" if g["cached"] else ""))
    if result["partner"]:
        lines.append(f"alignment: CCA k = {result['k']}, r = {result['reg']}, fitted on {result['n_anchors']} items "
                     f"outside the sample")
    lines.append(f"embedding distance: {result['metric']}")
    lines.append("")
    rows = []
    for v, c in result["correlations"].items():
        nb = result["neighbour_summary"][v]
        rows.append({"version": _VERSION_LABELS.get(v, v), "pearson": c["pearson"], "spearman": c["spearman"],
                     "nn_geo": nb["geometric_distance"], "nn_label": nb["label_agreement"]})
    lines.append(format_table(rows, ["version", "pearson", "spearman", "nn_geo", "nn_label"],
                              ["version", "Pearson r", "Spearman rho", f"{nb['k']}-NN geom. dist",
                               f"{nb['k']}-NN same label"], digits=3))
    nb = next(iter(result["neighbour_summary"].values()))
    lines.append(f"(geometric distance to the nearest by geometry: {format_number(nb['geometric_distance_best'], 3)}; "
                 f"to a random item: {format_number(nb['geometric_distance_random'], 3)}"
                 + (f"; same label by chance: {format_number(nb['label_chance'], 3)})" if nb["label_chance"] is not None
                    else ")"))
    if "neighbours" in result:
        n = result["neighbours"]
        q = n["query"]
        lines += ["", f"neighbours of {q['id']}" + (f" [{q.get('label')}]" if q.get("label") else "")
                  + (f": {q['caption']}" if q.get("caption") else "")]
        for side, title in (("original", "original space"), ("subspace", f"CCA subspace (k = {n['k_subspace']})")):
            lines.append(f"  {title}:")
            for r in n[side]:
                mark = "" if "label" not in q else ("  = " if r.get("label") == q.get("label") else "  x ")
                lines.append(f"  {mark}{r['rank']:>2}. {r['id']} [{r.get('label', '')}] d={r['distance']:.3f} "
                             f"{r.get('caption', '')[:80]}")
    return "\n".join(lines)
