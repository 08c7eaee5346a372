"""``platoscope query "a tall lamp" [--dataset FILE ...] [--from text --to 3d] [--map map.safetensors] --k 10
[--json]``: live query retrieval across modalities (paper A).

The text is embedded by the source space's text encoder (MiniLM offline, or ``--encoder open_clip:MODEL:TAG``),
mapped through the alignment into the target space and the ``--k`` best items are printed with their scores.
``--item ID`` queries with an item's own source vector instead of a text (item-to-item across spaces).

Without ``--dataset`` the built-in demo is used (text space ``minilm``, target ``pointnet``). Without ``--map`` the
default alignment (``--method cca_affine --dim 50``) is fitted on every paired item once and cached
(``cache/shared/maps/``); ``--map`` loads one saved by ``platoscope align --save`` / :func:`core.align.save_map`.

JSON output::

    {"query": str | null, "item": {"row", "id", ...} | null, "from", "to", "encoder": str | null,
     "expanded_with": int (text queries: N nearest source items averaged before mapping; 0 = off),
     "alignment": {"method", "k", "n_anchors", "source": "map file" | "fitted" | "cache"},
     "score": "cosine" | "local CKA", "n_items",
     "results": [{"rank", "row", "id", "score", "label"?, "caption"?}, ...],
     "label_counts": {label: count} (when items carry labels), "seconds": {"embed", "search"}}
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

from ..errors import DataError
from ._common import format_table

NAME = "query"
HELP = "retrieve the items of one space (e.g. 3D) for a typed text or an item of another, through a fitted alignment"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("text", nargs="?", default=None, help="the query text (or use --item)")
    parser.add_argument("--dataset", nargs="+", default=None, metavar="FILE",
                        help="embedding files of the dataset (default: the built-in demo)")
    parser.add_argument("--meta", metavar="META", default=None, help="metadata table joined on id")
    parser.add_argument("--from", dest="source", default="text", help="source space or modality (default text)")
    parser.add_argument("--to", dest="target", default="3d", help="target space or modality (default 3d)")
    parser.add_argument("--item", default=None, metavar="ID", help="query with this item's source vector instead")
    parser.add_argument("--map", default=None, metavar="MAP.safetensors", help="a saved alignment to use")
    parser.add_argument("--method", default="cca_affine", help="alignment fitted without --map (default cca_affine)")
    parser.add_argument("--dim", type=int, default=50, help="subspace dimension of the fitted alignment (default 50)")
    parser.add_argument("--reg", type=float, default=1e-3, help="CCA relative ridge (default 1e-3)")
    parser.add_argument("--encoder", default=None, help="text encoder (default: the one that made the source space)")
    parser.add_argument("--k", type=int, default=10, help="results to return (default 10)")
    parser.add_argument("--expand", type=int, default=10, metavar="N",
                        help="text queries: replace the query by the mean of its N nearest source items before "
                             "mapping it (default 10, as in the app; 0 = off)")


def _load(args):
    if args.dataset:
        from ..io import load_dataset
        return load_dataset(list(args.dataset), metadata=args.meta, origin="files")
    from ..demo import load_demo
    return load_demo()


def _describe(ds, row) -> dict:
    out = {"row": int(row), "id": str(ds.items["id"].iloc[row])}
    for col in ("label", "caption"):
        if col in ds.items.columns:
            out[col] = str(ds.items[col].iloc[row])
    return out


def run(args: argparse.Namespace, progress) -> dict:
    from ..align import PairwiseAligner, load_map
    from ..retrieval import (CrossModalRetriever, cached_alignment, check_text_encoder, embed_query_text,
                             resolve_space, text_encoder_spec)

    if args.k < 1:
        raise DataError(f"--k must be >= 1, got {args.k}")
    if args.text is None and args.item is None:
        raise DataError("give a query text or --item ID", hint='e.g. platoscope query "a tall lamp"')
    if args.text is not None and args.item is not None:
        raise DataError("give either a query text or --item, not both")
    if args.text is not None and not args.text.strip():
        raise DataError("the query is empty", hint="type a few words, e.g. 'a tall lamp'")
    ds = _load(args)
    source = resolve_space(ds, args.source)
    target = resolve_space(ds, args.target, exclude=source)
    if source == target:
        raise DataError("the source and target spaces are the same", hint="pick two different spaces")
    X, Y = ds[source].vectors(), ds[target].vectors()
    if args.map:
        aligner = load_map(args.map)
        if not isinstance(aligner, PairwiseAligner):
            raise DataError("the map is not a PairwiseAligner", file=Path(args.map).name,
                            hint="save it with `platoscope align --save`")
        if aligner.p_ != X.shape[1] or aligner.q_ != Y.shape[1]:
            raise DataError(f"the map goes from {aligner.p_}-d to {aligner.q_}-d, but '{source}' is {X.shape[1]}-d "
                            f"and '{target}' {Y.shape[1]}-d", file=Path(args.map).name,
                            hint="use the map fitted on these two spaces")
        origin = "map file"
    else:
        aligner, loaded = cached_alignment(X, Y, ds.space_fingerprint(source) + ds.space_fingerprint(target),
                                           method=args.method, k=args.dim, reg=args.reg, namespace="shared")
        origin = "cache" if loaded else "fitted"
    retr = CrossModalRetriever(index_namespace="shared").set_aligner(aligner, Y)
    encoder_spec = None
    t0 = time.perf_counter()
    if args.text is not None:
        encoder_spec = args.encoder or text_encoder_spec(ds[source])
        if encoder_spec is None:
            raise DataError(f"the space '{source}' has no text encoder, so a typed query cannot be placed in it",
                            hint="use --from with a MiniLM / open_clip text space, --encoder SPEC, or --item ID")
        from ..encoders import make_encoder
        encoder = make_encoder(encoder_spec, cache_namespace=None)
        if "caption" in ds.items.columns:
            check_text_encoder(encoder, X, ds.items["caption"].tolist(), space_name=f"the space '{source}'")
        from ..retrieval import expand_query
        q = expand_query(embed_query_text(args.text, encoder), X, args.expand,
                         index_key=ds.space_fingerprint(source), index_namespace="shared")
        item = None
        exclude = None
    else:
        from .geosem import _item_row
        row = _item_row(ds, args.item)
        q = X[row:row + 1]
        item = _describe(ds, row)
        exclude = [row]
    t1 = time.perf_counter()
    idx, scores = retr.query(q, args.k, exclude=exclude)
    t2 = time.perf_counter()
    results = [{"rank": i + 1, **_describe(ds, r), "score": float(s)} for i, (r, s) in enumerate(zip(idx[0],
                                                                                                       scores[0]))]
    out = {"query": args.text, "item": item, "from": source, "to": target, "encoder": encoder_spec,
           "expanded_with": args.expand if args.text is not None else 0,
           "alignment": {"method": aligner.method_, "k": aligner.k if aligner.uses_k else None,
                         "n_anchors": aligner.n_anchors_, "source": origin},
           "score": retr.score_kind, "n_items": retr.n_items_, "results": results,
           "seconds": {"embed": t1 - t0, "search": t2 - t1}}
    if "label" in ds.items.columns:
        counts: dict = {}
        for r in results:
            counts[r["label"]] = counts.get(r["label"], 0) + 1
        out["label_counts"] = dict(sorted(counts.items(), key=lambda kv: -kv[1]))
    return out


def render(result: dict) -> str:
    a = result["alignment"]
    what = f'"{result["query"]}"' if result["query"] is not None else f"item {result['item']['id']}"
    lines = [f"{what}: {result['from']} -> {result['to']} through {a['method']}"
             + (f" (k = {a['k']})" if a.get("k") else "") + f", {a['source']}, {a['n_anchors']} anchors; "
             f"scores: {result['score']}; {result['n_items']} items searched in {result['seconds']['search'] * 1000:.0f} ms",
             ""]
    cols = ["rank", "id", "score"] + [c for c in ("label", "caption") if result["results"] and c in result["results"][0]]
    rows = [{**r, "caption": r.get("caption", "")[:90]} for r in result["results"]]
    lines.append(format_table(rows, cols, digits=3))
    if result.get("label_counts"):
        lines.append("")
        lines.append("labels: " + ", ".join(f"{k} x{v}" for k, v in result["label_counts"].items()))
    return "\n".join(lines)
