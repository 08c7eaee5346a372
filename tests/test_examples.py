"""The README's example script runs, and its number agrees with an independent computation."""
import json
import subprocess
import sys

import numpy as np

from tests.conftest import ROOT


def _gram_cka(X, Y):
    n = len(X)
    H = np.eye(n) - 1.0 / n
    K, L = H @ (X @ X.T) @ H, H @ (Y @ Y.T) @ H
    return np.sum(K * L) / np.sqrt(np.sum(K * K) * np.sum(L * L))


def test_quickstart_example_runs(tmp_path):
    out = tmp_path / "ex"
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads((out / "result.json").read_text())
    X = np.load(out / "text.npy").astype(np.float64)
    Y = np.load(out / "image.npy").astype(np.float64)
    assert abs(result["linear_cka"] - _gram_cka(X, Y)) < 1e-6
    assert result["p_value"] <= 0.05
    assert (out / "text_pca.html").stat().st_size > 10_000
