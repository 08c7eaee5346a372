"""Home map at 10^5 / 10^6 points in headless chromium: Platoscope's canvas component vs the plotly path.

For each size a server-folder dataset (16-d Gaussian clusters, a 12-class label column) is written to a temporary
folder, the app is started on 127.0.0.1 with ``PLATOSCOPE_PLOTLY_MAX_POINTS`` forcing one renderer, and chromium
(Debian's, the browser tests' flags) opens ``?dataset=server:NAME``. Measured per run:

* ``first paint``: from navigation to the map drawn (canvas: the component's ``data-painted`` mark; plotly: its
  WebGL layer present and the app idle), including the server's PCA of the whole space (the same for both);
* ``lasso``: from releasing a lasso drawn over the middle of the map to the "N selected item(s)" line;
* the browser's JS heap after the paint (``performance.memory``) and the number of points selected.

A run that does not finish within ``--timeout`` seconds is reported as such (what happens to plotly at 10^6).

    python bench/bench_map.py --sizes 100000,1000000 --renderers canvas,plotly --timeout 240
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))


def write_dataset(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lab = rng.integers(0, 12, n)
    centres = rng.normal(size=(12, 16)) * 4
    np.save(folder / "emb.npy", (centres[lab] + rng.normal(size=(n, 16))).astype(np.float32))
    pd.DataFrame({"id": np.arange(n).astype(str), "label": [f"class {c}" for c in lab],
                  "caption": [f"item {i}" for i in range(n)]}).to_csv(folder / "meta.csv", index=False)


def _lasso(page, box, frac=0.18, steps=24):
    """A closed lasso (a polygon around the centre of ``box``) drawn with the mouse."""
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    rx, ry = box["width"] * frac, box["height"] * frac
    pts = [(cx + rx * np.cos(t), cy + ry * np.sin(t)) for t in np.linspace(0, 2 * np.pi, steps)]
    page.mouse.move(*pts[0])
    page.mouse.down()
    for p in pts[1:]:
        page.mouse.move(*p, steps=2)
    page.mouse.up()


def run_one(url: str, name: str, renderer: str, timeout_s: float) -> dict:
    from browser_util import browser_page

    out = {"renderer": renderer}
    with browser_page(width=1400, height=1400) as page:
        page.set_default_timeout(timeout_s * 1000)
        t0 = time.perf_counter()
        try:
            page.goto(f"{url}/?dataset=server:{name}", timeout=timeout_s * 1000)
            page.wait_for_selector("#ps-page-home", state="attached")
            if renderer == "canvas":
                # the map in the page (components v2 since session 8), or in its iframe (before)
                page.wait_for_function("() => !!document.querySelector('.ps-map[data-painted]') || "
                                       "!!document.querySelector(\"iframe[title*='platoscope_map']\")")
                if page.locator(".ps-map").count():
                    page.wait_for_function("() => !!document.querySelector('.ps-map[data-painted]')")
                    out["first_paint_s"] = time.perf_counter() - t0
                    out["draw_ms"] = float(page.locator(".ps-map").first.get_attribute("data-draw-ms"))
                    target = page.locator(".ps-map-overlay").first.bounding_box()
                    heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
                else:
                    frame = page.wait_for_selector("iframe[title*='platoscope_map']").content_frame()
                    frame.wait_for_function("() => document.body.dataset.painted", timeout=timeout_s * 1000)
                    out["first_paint_s"] = time.perf_counter() - t0
                    out["draw_ms"] = float(frame.evaluate("() => document.body.dataset.drawMs"))
                    target = frame.locator("#overlay").bounding_box()
                    heap = frame.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
            else:
                page.wait_for_selector("[data-testid='stPlotlyChart'] .main-svg")
                page.wait_for_function("() => document.querySelector('[data-testid=\"stPlotlyChart\"] canvas')")
                page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
                out["first_paint_s"] = time.perf_counter() - t0
                target = page.locator("[data-testid='stPlotlyChart'] .nsewdrag").first.bounding_box()
                heap = page.evaluate("() => performance.memory ? performance.memory.usedJSHeapSize : null")
            out["js_heap_mb"] = None if heap is None else heap / 2**20
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')")
            page.wait_for_timeout(500)
            t1 = time.perf_counter()
            _lasso(page, target)
            line = page.wait_for_selector("text=/selected item\\(s\\)/")
            out["lasso_s"] = time.perf_counter() - t1
            out["selected"] = int(line.inner_text().split()[0].replace(",", ""))
            if os.environ.get("BENCH_MAP_SHOTS"):
                page.wait_for_timeout(1500)
                page.screenshot(path=str(Path(os.environ["BENCH_MAP_SHOTS"]) / f"map-{renderer}.png"), full_page=True)
        except Exception as err:  # a timeout is a result here
            out["error"] = f"{type(err).__name__}: {str(err).splitlines()[0][:160]}"
            out["gave_up_after_s"] = time.perf_counter() - t0
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="100000,1000000")
    ap.add_argument("--renderers", default="canvas,plotly")
    ap.add_argument("--timeout", type=float, default=240.0, help="seconds per run before giving up")
    ap.add_argument("--quick", action="store_true", help="a smaller run (make bench BENCH_ARGS=--quick)")
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes = "100000"
    from browser_util import CHROMIUM, streamlit_server

    if not Path(CHROMIUM).exists():
        print("skipped: needs Debian's chromium (apt-get install chromium)")
        return 0
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Path(tmp) / "server"
        for n in sizes:
            write_dataset(server / f"map{n}", n)
        for renderer in args.renderers.split(","):
            env = {"PLATOSCOPE_DATA_DIR": str(server), "PLATOSCOPE_CACHE_DIR": str(Path(tmp) / "cache"),
                   "PLATOSCOPE_PLOTLY_MAX_POINTS": "0" if renderer == "canvas" else str(10**9),
                   "PLATOSCOPE_DEMO": "0"}
            with streamlit_server(env) as (url, _proc):
                for n in sizes:
                    res = run_one(url, f"map{n}", renderer, args.timeout)
                    res["n"] = n
                    rows.append(res)
                    print(res, flush=True)
    print()
    print(f"{'points':>9}  {'renderer':8}  {'first paint s':>13}  {'lasso s':>8}  {'selected':>9}  {'JS heap MB':>10}")
    for r in rows:
        fp = f"{r['first_paint_s']:.1f}" if "first_paint_s" in r else "-"
        la = f"{r['lasso_s']:.2f}" if "lasso_s" in r else "-"
        heap = f"{r['js_heap_mb']:.0f}" if r.get("js_heap_mb") else "-"
        print(f"{r['n']:>9}  {r['renderer']:8}  {fp:>13}  {la:>8}  {r.get('selected', '-'):>9}  {heap:>10}"
              + (f"  ({r['error']} after {r['gave_up_after_s']:.0f} s)" if "error" in r else ""))
    by = {(r["n"], r["renderer"]): r for r in rows}
    for n in sizes:
        c, p = by.get((n, "canvas")), by.get((n, "plotly"))
        if c and p and "first_paint_s" in c and "first_paint_s" in p:
            line = f"n={n}: plotly / canvas first paint {p['first_paint_s'] / c['first_paint_s']:.2f}x"
            if "lasso_s" in c and "lasso_s" in p:
                line += f", lasso {p['lasso_s'] / c['lasso_s']:.2f}x"
            print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
