"""Where the demo artifact lives (``data/demo``, or ``$PLATOSCOPE_DEMO_DIR``)."""
from __future__ import annotations

import os
from pathlib import Path

from ..errors import DataError

ARTIFACT_DIR = Path(__file__).resolve().parents[2] / "data" / "demo"


def _artifact_dir() -> Path:
    path = Path(os.environ.get("PLATOSCOPE_DEMO_DIR") or ARTIFACT_DIR)
    if not (path / "manifest.json").exists():
        raise DataError("the demo artifact is missing", file=str(path), hint="run `make demo-data`")
    return path
