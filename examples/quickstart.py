"""Platoscope from Python: load embedding files, measure how alike two spaces are, and plot a map.

Run:  .venv/bin/python examples/quickstart.py --out /tmp/platoscope-example
It writes two toy spaces (.npy) and a metadata .csv, loads them with core.io.load_dataset, computes linear CKA
with a permutation p-value and a bootstrap interval, projects one space with PCA, and saves an interactive plot.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.express as px

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.io import load_dataset  # noqa: E402
from core.projection import PCAProjection  # noqa: E402
from core.similarity import bootstrap_interval, linear_cka, permutation_test  # noqa: E402


def make_toy_files(out: Path, n: int = 600, seed: int = 0) -> list[Path]:
    """Two views of one 8-dimensional latent (plus noise), seen through different random linear maps."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, size=n)
    latent = rng.normal(size=(n, 8)) + 3.0 * np.eye(8)[labels]
    text = latent @ rng.normal(size=(8, 64)) + 0.5 * rng.normal(size=(n, 64))
    image = latent @ rng.normal(size=(8, 96)) + 0.5 * rng.normal(size=(n, 96))
    out.mkdir(parents=True, exist_ok=True)
    np.save(out / "text.npy", text.astype(np.float32))
    np.save(out / "image.npy", image.astype(np.float32))
    names = np.array(["cat", "dog", "owl", "fox"])[labels]
    pd.DataFrame({"id": [str(i) for i in range(n)], "label": names,
                  "caption": [f"a {w} (item {i})" for i, w in enumerate(names)]}).to_csv(out / "meta.csv", index=False)
    return [out / "text.npy", out / "image.npy"]


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("cache/example"))
    args = parser.parse_args(argv)

    files = make_toy_files(args.out)
    ds = load_dataset(files, metadata=args.out / "meta.csv", name="toy")
    print(ds)

    X, Y = ds["text"].data, ds["image"].data
    cka = linear_cka(X, Y)
    null = permutation_test(X, Y, "linear_cka", n_permutations=50, seed=0)
    boot = bootstrap_interval(X, Y, "linear_cka", n_boot=50, seed=0)
    print(f"linear CKA(text, image) = {cka:.3f}  (permutation p = {null['p_value']:.3f}, "
          f"95% bootstrap interval [{boot['low']:.3f}, {boot['high']:.3f}])")

    coords = PCAProjection(2).fit_transform(X)
    fig = px.scatter(x=coords[:, 0], y=coords[:, 1], color=ds.items["label"], hover_name=ds.items["caption"],
                     title=f"PCA of 'text' (linear CKA with 'image' = {cka:.2f})",
                     labels={"x": "PCA 1", "y": "PCA 2", "color": "label"})
    fig.write_html(args.out / "text_pca.html")
    result = {"linear_cka": cka, "p_value": null["p_value"], "bootstrap": [boot["low"], boot["high"]],
              "plot": str(args.out / "text_pca.html")}
    (args.out / "result.json").write_text(json.dumps(result, indent=2))
    print(f"plot written to {result['plot']}")
    return result


if __name__ == "__main__":
    main()
