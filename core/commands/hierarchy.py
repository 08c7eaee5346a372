"""``platoscope hierarchy CHAINS.csv --encoder minilm|open_clip:MODEL:TAG [--finetune [--tower-blocks N]] [--json]``:
radial genericness of caption chains (paper C; METHODS.md section 4).

CHAINS.csv is a HierarCaps file (id, captions, image_url; 4 tiers joined by " => ") or a chains table (chain, tier,
caption[, negative]; chains of any length >= 2). ``demo`` instead of a file uses the built-in demo (its MiniLM tier
spaces; its PointNet space, mapped into the text space by an affine map fitted on training chains, as the image side).

The captions and the root (the empty string) are embedded by ``--encoder``. tau_d needs text only. Retrieval needs
an image side: with an open_clip encoder and an ``image_url`` column the images are downloaded once into
``cache/shared/hierarcaps_images`` (``--no-images`` skips this; offline, retrieval is skipped with a note).
``--finetune`` trains a residual-linear adapter with the RE loss on training chains (early stopping on validation
chains) and reports before / after on held-out chains only; with an open_clip encoder, ``--tower-blocks N``
fine-tunes the text tower's last N blocks (plus final LayerNorm and projection) instead of an adapter.

JSON output::

    {"n_chains", "n_texts", "n_distinct_texts", "tiers", "root", "image_side", "n_thresholds", "encoder",
     "all": {"tau_d", "tau_d_ci": [lo, hi], "confidence", "n_chains", "n_undefined", "share_monotone",
             "median_radius_per_tier": [...], "precision"?, "recall"?},
     "split": {"train", "val", "test", "seed"},
     "heldout": {"before": {...same keys...}, "after"?: {...}},
     "training"?: {"params", "seconds", "device", "best_epoch", "epochs_run", "negatives", "history"},
     "tau_method": "tau-b" | "argsort", "retrieval_pool": "heldout" | "all-chains",
     "preset": {"name": "custom" | "paper_c", "paper": "C", "settings": {...}, "differences": [str, ...]},
     "notes": [str, ...]}

Every summary also holds ``tau_method``, ``tau_d_by_method`` ({"tau-b", "argsort"}: they differ only when radii
tie), ``n_chains_with_ties`` and, with retrieval, ``retrieval_pool`` ("per-chain" or "all-chains"), ``n_pool``,
``n_pool_distinct`` and ``n_retrieval_queries``.

``--preset paper-c`` reproduces the authors' code (METHODS.md 7.3): tau_d as Kendall tau of ``argsort(radii)``;
retrieval over the pool of every chain's texts, per unique image (held-out chains' images as the queries when
the image side needs a fitted map); the RE loss of ``batch2losses``; with ``--finetune`` and an open_clip encoder
the whole text tower is trained (AdamW lr 1e-7, weight decay 0.01, batch 8, one epoch, last weights kept).
"""
from __future__ import annotations

import argparse
import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..errors import DataError
from ..presets import cli_choices, record, settings_for
from ._common import format_number, format_table, to_jsonable

NAME = "hierarchy"
HELP = "radial genericness of caption chains: tau_d, hierarchical retrieval, optional RE fine-tuning (paper C)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("chains", metavar="CHAINS.csv",
                        help="HierarCaps CSV (id, captions, image_url) or chains table (chain, tier, caption); "
                             "'demo' for the built-in demo")
    parser.add_argument("--encoder", default="minilm", metavar="MODEL",
                        help="text encoder: minilm (offline) or open_clip:MODEL:TAG (default minilm)")
    parser.add_argument("--finetune", action="store_true",
                        help="train an RE adapter on training chains; report before/after on held-out chains")
    parser.add_argument("--tower-blocks", type=int, default=0, metavar="N",
                        help="with --finetune and an open_clip encoder: fine-tune the text tower's last N blocks "
                             "(plus final LayerNorm and projection) instead of an adapter (default 0 = adapter)")
    parser.add_argument("--preset", default="custom", choices=cli_choices("C"),
                        help="paper-c: the authors' code (tau_d of argsort(radii), retrieval pool of every chain's "
                             "texts per unique image, RE loss of batch2losses, whole-tower fine-tuning with AdamW "
                             "lr 1e-7 / wd 0.01 / batch 8 / 1 epoch); custom (default): the project's defaults")
    parser.add_argument("--epochs", type=int, default=None,
                        help="max fine-tuning epochs (default 100; 1 for the paper-c tower fine-tuning)")
    parser.add_argument("--test-fraction", type=float, default=0.2, help="held-out chains (default 0.2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the split, negatives and training")
    parser.add_argument("--no-images", action="store_true", help="do not download images (tau_d only)")
    parser.add_argument("--max-file-mb", type=float, default=None, metavar="MB", help="input size limit")


def _fetch_images(urls, progress) -> tuple[list[bytes | None], list[str]]:
    """Download each URL once into cache/shared/hierarcaps_images; None where it fails."""
    import urllib.request

    from ..cache import namespace_dir
    folder = namespace_dir("shared") / "hierarcaps_images"
    folder.mkdir(parents=True, exist_ok=True)
    out, errors = [], []
    for url in progress(list(urls), desc="images"):
        path = folder / hashlib.sha256(url.encode()).hexdigest()
        if path.exists():
            out.append(path.read_bytes())
            continue
        try:
            with urllib.request.urlopen(url, timeout=20) as resp:   # noqa: S310 - user-given http(s) URLs
                data = resp.read()
            path.write_bytes(data)
            out.append(data)
        except Exception as err:  # network errors come in many types
            out.append(None)
            errors.append(f"{url}: {type(err).__name__}")
            if len(errors) >= 5 and not any(b is not None for b in out):
                out.extend([None] * (len(urls) - len(out)))
                break
    return out, errors


def _image_side(chains, ds, encoder, progress, notes):
    from ..encoders import ImageFiles
    from ..hierarchy import normalize_rows
    urls = ds.items.drop_duplicates("chain").set_index("chain")["image_url"].reindex(chains.ids).fillna("")
    blobs, errors = _fetch_images(list(urls), progress)
    names = [f"{i}.img" for i, b in enumerate(blobs) if b is not None]
    if not names:
        notes.append("retrieval skipped: no image could be downloaded (offline?) "
                     + (f"e.g. {errors[0]}" if errors else ""))
        return chains
    store = {f"{i}.img": b for i, b in enumerate(blobs) if b is not None}
    files = ImageFiles(names, store.__getitem__, "image_url")
    res = encoder.encode_images(files)
    keep = np.array([int(n.split(".")[0]) for n in res["names"]])
    if len(keep) < chains.n_chains:
        notes.append(f"{chains.n_chains - len(keep)} chains without a usable image were dropped for retrieval")
    sub = chains.subset(keep)
    return replace(sub, images=normalize_rows(res["embedding"]), image_in_text_space=True,
                   image_source=f"open_clip image tower ({getattr(encoder, 'name', 'open_clip')})")


def run(args: argparse.Namespace, progress) -> dict:
    from ..encoders import make_encoder
    from ..hierarchy import chains_from_dataset
    from ..evaluation.hierarchy import hierarchy_report

    if not 0 < args.test_fraction < 1:
        raise DataError(f"--test-fraction must be between 0 and 1, got {args.test_fraction}")
    notes: list[str] = []
    encoder = make_encoder(args.encoder)

    if args.chains == "demo":
        from ..demo import load_demo
        if encoder.name != "minilm":
            raise DataError("the demo's tier spaces are MiniLM embeddings", hint="use --encoder minilm")
        ds = load_demo()
        chains = chains_from_dataset(ds, text_space="minilm", encoder=encoder, image_space="pointnet",
                                     seed=args.seed)
    else:
        from ..io import load_hierarcaps
        mb = args.max_file_mb
        ds = load_hierarcaps(args.chains, max_file_bytes=None if mb is None else int(mb * (1 << 20)))
        chains = chains_from_dataset(ds, encoder=encoder, seed=args.seed)
        if "image_url" in ds.items.columns and not args.no_images:
            if hasattr(encoder, "encode_images"):
                chains = _image_side(chains, ds, encoder, progress, notes)
            else:
                notes.append("retrieval needs image embeddings of the same model: use --encoder "
                             "open_clip:MODEL:TAG (MiniLM has no image tower)")
    tower_blocks = int(getattr(args, "tower_blocks", 0) or 0)
    if tower_blocks and not args.finetune:
        raise DataError("--tower-blocks needs --finetune")
    settings = settings_for("C", getattr(args, "preset", "custom"))
    tuner_params = {"max_epochs": 100, **settings.loss_kwargs()}
    if args.finetune and settings.finetune == "tower" and not tower_blocks:
        if hasattr(encoder, "load") and hasattr(encoder, "encode_images"):
            from ..radial import AUTHORS_TOWER_PARAMS
            tower_blocks = AUTHORS_TOWER_PARAMS["n_blocks"]
            tuner_params.update({k: v for k, v in AUTHORS_TOWER_PARAMS.items() if k != "n_blocks"})
        else:
            notes.append("the authors fine-tune the whole text tower of an open_clip model; this encoder has none, "
                         "so the project's residual adapter was trained (with the authors' RE loss)")
    if args.epochs is not None:
        tuner_params["max_epochs"] = args.epochs
    result = hierarchy_report(chains, finetune=args.finetune, test_fraction=args.test_fraction, seed=args.seed,
                              tuner_params=tuner_params, progress=progress, encoder=encoder,
                              tower_blocks=tower_blocks, tau=settings.tau, retrieval_pool=settings.retrieval_pool)
    result["encoder"] = args.encoder
    result["preset"] = record("C", getattr(args, "preset", "custom"), settings)
    result["notes"] = result.get("notes", []) + notes
    return to_jsonable(result)


def _row(name: str, s: dict) -> dict:
    ci = s.get("tau_d_ci") or [None, None]
    return {"chains": name, "n": s["n_chains"], "tau_d": s["tau_d"],
            "95% CI": f"[{format_number(ci[0], 3)}, {format_number(ci[1], 3)}]",
            "monotone": s["share_monotone"], "precision": s.get("precision"), "recall": s.get("recall")}


def _tie_note(s: dict) -> str:
    ties = s.get("n_chains_with_ties") or 0
    if not ties:
        return " (no tied radii: tau-b and the authors' argsort agree)"
    by = s.get("tau_d_by_method") or {}
    return (f" ({ties} chains have tied radii: tau-b {format_number(by.get('tau-b'), 4)}, "
            f"argsort {format_number(by.get('argsort'), 4)})")


def _pool_text(s: dict) -> str:
    if s["retrieval_pool"] == "all-chains":
        return (f"pool of every chain's texts ({s['n_pool']} texts, {s['n_pool_distinct']} distinct), "
                f"{s['n_retrieval_queries']} unique images")
    return f"pool of the judged chains' distinct texts ({s['n_pool']}), one query per chain ({s['n_retrieval_queries']})"


def render(result: dict) -> str:
    lines = [f"{result['n_chains']} chains, {result['n_distinct_texts']} distinct texts, up to {result['tiers']} "
             f"tiers; encoder {result.get('encoder')}; root = {result['root']}"]
    if result.get("image_side"):
        lines.append(f"image side: {result['image_side']}")
    rows = [_row("all (zero-shot)", result["all"])]
    held = result.get("heldout", {})
    if "before" in held:
        rows.append(_row("held-out, before", held["before"]))
    if "after" in held:
        rows.append(_row("held-out, after RE", held["after"]))
    for line in (result.get("preset") or {}).get("differences", []):
        lines.append(f"settings: {line}")
    lines.append("")
    lines.append(format_table(rows, ["chains", "n", "tau_d", "95% CI", "monotone", "precision", "recall"],
                              digits=3))
    lines.append(f"tau_d: {result.get('tau_method', 'tau-b')}" + _tie_note(result["all"]))
    for name, s in (("all", result["all"]), ("held-out", held.get("before"))):
        if s and s.get("retrieval_pool"):
            lines.append(f"retrieval ({name}): " + _pool_text(s))
    lines.append("")
    med = result["all"]["median_radius_per_tier"]
    lines.append("median radius d_r per tier (all chains): " +
                 ", ".join(f"tier {k}: {format_number(v, 4)}" for k, v in enumerate(med)))
    if "after" in held:
        lines.append("median radius per tier after RE (held-out): " +
                     ", ".join(f"tier {k}: {format_number(v, 4)}"
                               for k, v in enumerate(held["after"]["median_radius_per_tier"])))
    tr = result.get("training")
    if tr:
        lines.append(f"fine-tuning: {tr['seconds']:.1f} s on {tr['device']}, {tr['epochs_run']} epochs "
                     f"(best {tr['best_epoch']}), negatives {tr['negatives']}")
    if "split" in result:
        s = result["split"]
        lines.append(f"split (seed {s['seed']}): {s['train']} train, {s['val']} validation, {s['test']} held-out "
                     f"chains; retrieval uses {result['n_thresholds']} radius thresholds")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)
