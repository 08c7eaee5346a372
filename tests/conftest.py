import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as core/__init__.py does, before numpy/torch load
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# Tests never touch the user's cache, and always run on the CPU unless asked otherwise.
os.environ.setdefault("PLATOSCOPE_DEVICE", "cpu")


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache_session(tmp_path_factory):
    """The same isolated cache for session- and module-scoped fixtures, which run before any function-scoped one
    (e.g. a module's Ray cluster, whose workers read the variable once, or a module's encoder download folder)."""
    cache = tmp_path_factory.getbasetemp() / "platoscope-cache"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PLATOSCOPE_CACHE_DIR", str(cache))
        yield


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    cache = tmp_path_factory.getbasetemp() / "platoscope-cache"
    monkeypatch.setenv("PLATOSCOPE_CACHE_DIR", str(cache))
    yield


@pytest.fixture
def rng():
    return np.random.default_rng(0)
