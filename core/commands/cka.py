"""``platoscope cka FILE... [--measure M] [--debiased] [--permutations N] [--json]``: similarity of every pair
of spaces in the given files (METHODS.md section 1).

Token-set spaces are mean-pooled (masked / weighted, :meth:`core.dataset.Space.vectors`) first. Measures:
``linear_cka`` (default), ``debiased_cka``, ``rbf_cka``, ``mutual_knn``, ``cknna``, ``svcca``, ``pwcca``,
``procrustes`` (a distance: lower = more similar), ``rsa``; ``--debiased`` is short for
``--measure debiased_cka``.

JSON output::

    {"measure": "linear_cka", "spaces": [name, ...], "matrix": [[float | null, ...], ...] (M x M, row i =
     spaces[i]; null where the value is undefined), "p_values": [[...]] (only with --permutations N > 0;
     null on the diagonal), "n_permutations": N, "n_items": n, "higher_is_similar": bool,
     "symmetric": bool, "parameters": {...measure options used...}, "warnings": [str, ...],
     "preprocess": "none" | "platonic",
     "preset": {"name": "custom" | "paper_a", "paper": "A", "settings": {...}, "differences": [str, ...]},
     "engine": {"name": "ray", "address", "n_blocks", "resources"}}     # only with --ray

``--preset paper-a`` uses the Platonic Representation code's conventions (METHODS.md 7.1): every space is clipped
at the 0.95 quantile of |x| and row-normalised first, RBF CKA uses sigma = 1, and ``svcca`` becomes
``svcca_top10`` (the top 10 components; Raghu et al.'s 99 % of variance stays the default ``svcca``).

``--ray [ADDRESS]`` computes linear CKA from per-block moments as Ray tasks (:mod:`core.distributed`; the blocks
follow the shards of sharded spaces), tree-reduced: one pass over the rows for the whole M x M matrix.
"""
from __future__ import annotations

import argparse
import inspect
import warnings

from ..errors import DataError
from ..presets import SIMILARITY_FIELDS, cli_choices, record, settings_for
from ..similarity import MEASURE_ALIASES, MEASURES, resolve_measure, similarity_matrix
from ._common import (add_input_arguments, add_ray_argument, format_number, load_inputs, matrix_lines,
                      ray_session)

NAME = "cka"
HELP = "similarity (linear / debiased / RBF CKA, mutual k-NN, CKNNA, SVCCA, PWCCA, Procrustes, RSA) of every pair of spaces"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_input_arguments(parser)
    choices = sorted(set(MEASURES) | set(MEASURE_ALIASES))
    parser.add_argument("--measure", default="linear_cka", choices=choices, metavar="MEASURE",
                        help=f"one of {', '.join(MEASURES)} (default linear_cka)")
    parser.add_argument("--debiased", action="store_true", help="debiased linear CKA (same as --measure debiased_cka)")
    parser.add_argument("--permutations", type=int, default=0, metavar="N",
                        help="permutation test with N row shuffles per pair: adds p-values (default 0: none)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the shuffles and of sub-samples (default 0)")
    parser.add_argument("--spaces", default=None, metavar="A,B,...",
                        help="compare only these spaces (comma-separated names; default all)")
    parser.add_argument("--k", type=int, default=10, help="neighbours for mutual_knn / cknna (default 10)")
    parser.add_argument("--max-n", type=int, default=None, metavar="N",
                        help="items sampled (seeded) by the n x n measures rbf_cka / cknna / rsa "
                             "(default: 5000, 5000, 2000)")
    parser.add_argument("--var-explained", type=float, default=0.99, help="SVCCA variance cut (default 0.99)")
    parser.add_argument("--metric", default="cosine", choices=["cosine", "euclidean", "correlation"],
                        help="RSA distance (default cosine)")
    parser.add_argument("--preset", default="custom", choices=cli_choices("A"),
                        help="paper-a: the Platonic Representation code's conventions (values clipped at the 0.95 "
                             "quantile of |x| and rows L2-normalised before every measure; RBF sigma = 1; SVCCA on "
                             "the top 10 components); custom (default): the project's defaults")
    parser.add_argument("--chunk-rows", type=int, default=None, metavar="ROWS",
                        help="rows per chunk for the streamed measures (default: about 128 MB per chunk)")
    add_ray_argument(parser, "linear CKA as per-shard moments (one pass over the rows, tree-reduced)")


def _measure_options(func, args: argparse.Namespace) -> dict:
    wanted = {"k": args.k, "max_n": args.max_n, "var_explained": args.var_explained,
              "metric": args.metric, "chunk_rows": args.chunk_rows}
    params = inspect.signature(func).parameters
    return {key: value for key, value in wanted.items() if key in params and value is not None}


def run(args: argparse.Namespace, progress) -> dict:
    measure = resolve_measure(args.measure)
    if args.debiased:
        if measure.name not in ("linear_cka", "debiased_cka"):
            raise DataError(f"--debiased applies to linear CKA, not to --measure {args.measure}",
                            hint="drop one of the two options")
        measure = MEASURES["debiased_cka"]
    if args.permutations < 0:
        raise DataError(f"--permutations must be >= 0, got {args.permutations}")
    ds = load_inputs(args)
    names = ds.space_names
    if args.spaces:
        wanted = [s.strip() for s in args.spaces.split(",") if s.strip()]
        for name in wanted:
            ds[name]   # raises a DataError listing the available spaces
        names = wanted
    if not names:
        raise DataError("the files hold no embedding spaces", hint="give files with at least one space")
    spaces = {name: ds[name].vectors() for name in names}
    settings = settings_for("A", getattr(args, "preset", "custom"))
    measure = resolve_measure(settings.measure_name(measure.name))
    options = _measure_options(measure.func, args)
    preset_kw = settings.similarity_kwargs(measure.name)
    if args.ray is not None:
        if getattr(args, "preset", "custom") != "custom":
            raise DataError("--ray computes plain linear CKA; a paper preset's preprocessing runs in one process",
                            hint="drop --ray or --preset")
        return _run_ray(args, measure, spaces)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = similarity_matrix(spaces, measure, progress=progress, n_permutations=args.permutations,
                                   seed=args.seed, **options, **preset_kw)
    notes = []
    for w in caught:
        text = str(w.message)
        if text not in notes:
            notes.append(text)
    out = {"measure": result["measure"], "spaces": result["names"], "matrix": result["values"],
           "n_items": result["n_items"], "higher_is_similar": result["higher_is_similar"],
           "symmetric": result["symmetric"], "parameters": {**options, **preset_kw},
           "preprocess": result.get("preprocess", "none"),
           "preset": record("A", getattr(args, "preset", "custom"), settings, only=SIMILARITY_FIELDS)}
    if args.permutations:
        out["p_values"] = result["p_values"]
        out["n_permutations"] = args.permutations
    out["warnings"] = notes
    return out


def _run_ray(args: argparse.Namespace, measure, spaces: dict) -> dict:
    from ..distributed import sharded_cka_matrix

    if measure.name != "linear_cka" or args.permutations:
        raise DataError(f"--ray computes linear CKA from per-shard moments, not {measure.name}"
                        + (" with permutations" if args.permutations else ""),
                        hint="drop --ray, or use --measure linear_cka without --permutations")
    with ray_session(args) as info:
        result = sharded_cka_matrix(spaces, engine="ray")
    return {"measure": result["measure"], "spaces": result["names"], "matrix": result["values"],
            "n_items": result["n_items"], "higher_is_similar": True, "symmetric": True, "parameters": {},
            "engine": {"name": "ray", "address": info["address"], "n_blocks": result["n_blocks"],
                       "resources": info["resources"]},
            "warnings": []}


def _matrix_text(names, matrix, digits: int = 4) -> list[str]:
    return matrix_lines(names, [[format_number(v, digits) for v in row] for row in matrix])


def render(result: dict) -> str:
    what = MEASURES[result["measure"]].description
    lines = [f"{result['measure']} ({what}) over {len(result['spaces'])} spaces, {result['n_items']} items"]
    if not result["higher_is_similar"]:
        lines.append("(a distance: lower means more similar)")
    for line in (result.get("preset") or {}).get("differences", []):
        lines.append(f"settings: {line}")
    lines.append("")
    lines.extend(_matrix_text(result["spaces"], result["matrix"]))
    if result.get("p_values") is not None:
        lines.append("")
        lines.append(f"permutation p-values ({result['n_permutations']} row shuffles of the column space; "
                     f"smallest possible {1 / (1 + result['n_permutations']):.3g})")
        lines.extend(_matrix_text(result["spaces"], result["p_values"], 3))
    for note in result.get("warnings", []):
        lines.append(f"note: {note}")
    if result.get("engine"):
        e = result["engine"]
        lines.append(f"computed on Ray ({e['address']}, {format_number(e['resources'].get('CPU'))} CPUs) in "
                     f"{e['n_blocks']} blocks")
    return "\n".join(lines)
