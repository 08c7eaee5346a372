"""core sets OpenMP's passive wait policy before torch loads (docs/UI.md, "Threads wait passively")."""
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHILD = "import core, os, torch; print(os.environ.get('OMP_WAIT_POLICY'))"


def _run(env_extra):
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True, text=True, check=True,
                          cwd=ROOT).stdout.strip()


def test_import_core_sets_passive_wait_policy():
    assert _run({}) == "PASSIVE"


def test_an_explicit_wait_policy_is_kept():
    assert _run({"OMP_WAIT_POLICY": "ACTIVE"}) == "ACTIVE"
