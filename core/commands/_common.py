"""Helpers shared by the CLI subcommands: input arguments, loading, JSON conversion, text tables."""
from __future__ import annotations

import argparse
import math
from typing import Sequence

import numpy as np

from ..dataset import Dataset
from ..errors import DataError
from ..export import json_safe


def add_input_arguments(parser: argparse.ArgumentParser, *, nargs: str = "+") -> None:
    """Add ``FILE...``, ``--meta META`` and ``--max-file-mb MB`` to ``parser``.

    Parameters
    ----------
    parser : the subcommand's parser.
    nargs : how many FILE arguments ('+' by default; '*' when the command can run without files).
    """
    parser.add_argument("files", nargs=nargs, metavar="FILE",
                        help="embedding files (.npy, .npz, .safetensors, .pt, .pth, .parquet), folders of .npy / "
                             ".parquet shards (one space each), or a HierarCaps / chains .csv")
    parser.add_argument("--meta", metavar="META", default=None,
                        help="metadata table (.csv or .parquet) with an 'id' column, joined on id")
    parser.add_argument("--max-file-mb", metavar="MB", type=float, default=None,
                        help="refuse files larger than this many MB (default $PLATOSCOPE_MAX_FILE_MB, else 2048)")


def max_file_bytes(args: argparse.Namespace) -> int | None:
    """The size limit in bytes from ``--max-file-mb`` (None: the loader's default)."""
    mb = getattr(args, "max_file_mb", None)
    if mb is None:
        return None
    if mb <= 0:
        raise DataError(f"--max-file-mb must be positive, got {mb:g}")
    return int(mb * (1 << 20))


def load_inputs(args: argparse.Namespace) -> Dataset:
    """Load the dataset named by the arguments of :func:`add_input_arguments`."""
    from ..io import load_dataset

    return load_dataset(list(args.files), metadata=getattr(args, "meta", None),
                        max_file_bytes=max_file_bytes(args), origin="files")


#: The CLI's JSON conversion is the project's one: :func:`core.export.json_safe`.
to_jsonable = json_safe


def format_number(value, digits: int = 4) -> str:
    """A compact text for a number (``"-"`` for None / NaN)."""
    if value is None:
        return "-"
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(f):
        return "-"
    return f"{f:.{digits}g}"


def format_table(rows: Sequence[dict], columns: Sequence[str], headers: Sequence[str] | None = None,
                 digits: int = 4) -> str:
    """Rows of dicts as an aligned text table (numbers right-aligned, text left-aligned)."""
    headers = list(headers or columns)
    cells = []
    numeric = [True] * len(columns)
    for row in rows:
        line = []
        for j, col in enumerate(columns):
            value = row.get(col)
            if isinstance(value, (list, tuple)):
                value = "; ".join(map(str, value))
            if not (value is None or isinstance(value, (int, float, np.integer, np.floating))) or isinstance(
                    value, bool):
                numeric[j] = False
            line.append(format_number(value, digits) if not isinstance(value, str) else value)
        cells.append(line)
    widths = [max([len(h)] + [len(r[j]) for r in cells]) for j, h in enumerate(headers)]

    def fmt(line, header=False):
        parts = []
        for j, text in enumerate(line):
            parts.append(text.rjust(widths[j]) if numeric[j] and not header else text.ljust(widths[j]))
        return "  ".join(parts).rstrip()

    out = [fmt(headers, header=True), "  ".join("-" * w for w in widths)]
    out.extend(fmt(line) for line in cells)
    return "\n".join(out)


def matrix_lines(names: Sequence[str], cells: Sequence[Sequence[str]]) -> list[str]:
    """A square matrix of pre-formatted cells as text lines: a header of column names, then one row per name,
    every column right-aligned to its widest entry."""
    first = max(len(n) for n in names)
    widths = [max(len(names[j]), *(len(row[j]) for row in cells)) for j in range(len(names))]
    lines = [" " * first + "  " + "  ".join(n.rjust(w) for n, w in zip(names, widths))]
    for name, row in zip(names, cells):
        lines.append(name.ljust(first) + "  " + "  ".join(c.rjust(w) for c, w in zip(row, widths)))
    return lines


def add_ray_argument(parser: argparse.ArgumentParser, what: str) -> None:
    """Add ``--ray [ADDRESS]``: run ``what`` as Ray tasks (a local instance without an address)."""
    parser.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                        help=f"{what} on a Ray cluster: ADDRESS is 'auto', HOST:PORT or ray://HOST:10001; without "
                             "one, a local Ray instance (needs the 'distributed' extra; see docs/DISTRIBUTED.md)")


class ray_session:
    """``with ray_session(args) as info:`` connects when ``args.ray`` is set (info is None otherwise) and stops a
    local instance it started on exit."""

    def __init__(self, args: argparse.Namespace):
        self.address = getattr(args, "ray", None)
        self.info = None

    def __enter__(self):
        if self.address is not None:
            from ..distributed import connect
            self.info = connect(self.address)
        return self.info

    def __exit__(self, *exc):
        if self.info is not None and self.info.get("started"):
            from ..distributed import shutdown
            shutdown()
        return False
