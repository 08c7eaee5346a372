"""Second visits of the Universe view's retrieval charts, two checkouts side by side (e.g. plotly vs SVG charts).

Writes a small planted server dataset (2,000 items, 4 spaces), starts one Streamlit server per checkout, opens the
Universe view once in each (the fits: PW, GPA, GCCA), then times --repeat new browser contexts per checkout,
interleaved (order swapped every round): from ``goto`` until every retrieval chart is drawn (plotly: two
``.js-plotly-plot``; SVG: four ``ui/svgchart_frontend`` frames painted, three heatmaps and the bars). Prints the
medians and the after / before ratio. Run with the app's interpreter:

    .venv/bin/python bench/bench_universe_visit.py --before /path/to/old/checkout [--after .] [--repeat 7]
"""
from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from urllib.parse import quote

import numpy as np

SEL = "iframe[title*='platoscope_svgchart']"
DRAWN = ("() => document.querySelectorAll('.js-plotly-plot .main-svg').length >= 2 || "
         "document.querySelectorAll('.ps-svgchart[data-svgchart-painted]').length >= 4 || "
         "(() => { const f = [...document.querySelectorAll(\"" + SEL + "\")]; return f.length >= 4 && f.every("
         "x => x.contentDocument && x.contentDocument.body && x.contentDocument.body.dataset.svgchartPainted); })()")


def _port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", required=True, help="checkout to compare against")
    ap.add_argument("--after", default=str(Path(__file__).resolve().parents[1]))
    ap.add_argument("--repeat", type=int, default=7)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="platoscope-bench-universe-visit-"))
    folder = tmp / "server" / "study"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    z = rng.normal(size=(2000, 8))
    for name, w in (("alpha", 64), ("beta", 48), ("gamma", 32), ("delta", 40)):
        x = z @ rng.normal(size=(8, w)) + rng.normal(size=(2000, w))
        np.save(folder / f"{name}.npy", x.astype(np.float32))
    roots = {"before": str(Path(args.before).resolve()), "after": str(Path(args.after).resolve())}
    servers = {}
    try:
        for k, root in roots.items():
            p = _port()
            env = {**os.environ, "PYTHONPATH": root, "PLATOSCOPE_CACHE_DIR": str(tmp / f"cache_{k}"),
                   "PLATOSCOPE_DATA_DIR": str(tmp / "server"), "PLATOSCOPE_DEMO": "0", "PLATOSCOPE_DEVICE": "cpu"}
            proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", f"{root}/app.py", "--server.port",
                                     str(p), "--server.address", "127.0.0.1", "--server.headless", "true",
                                     "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                                    cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
            servers[k] = (f"http://127.0.0.1:{p}", proc)
        for url, _ in servers.values():
            for _ in range(240):
                try:
                    urllib.request.urlopen(url + "/_stcore/health", timeout=2)
                    break
                except OSError:
                    time.sleep(0.5)
        q = (f"spaces={quote(json.dumps(['alpha', 'beta', 'gamma', 'delta']))}"
             f"&methods={quote(json.dumps(['pw', 'gpa', 'gcca']))}")
        from playwright.sync_api import sync_playwright

        times = {k: [] for k in roots}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path="/usr/bin/chromium", args=["--no-sandbox"])

            def visit(k):
                ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
                page = ctx.new_page()
                t0 = time.perf_counter()
                page.goto(f"{servers[k][0]}/universe?dataset=server:study&{q}")
                page.wait_for_function(DRAWN, timeout=600_000, polling=50)
                dt = time.perf_counter() - t0
                ctx.close()
                return dt

            for k in roots:
                print(f"first visit (the fits) {k}: {visit(k):.2f} s", flush=True)
            for r in range(args.repeat):
                for k in (list(roots) if r % 2 == 0 else list(roots)[::-1]):
                    times[k].append(visit(k))
            browser.close()
    finally:
        for _, proc in servers.values():
            proc.terminate()
            proc.wait(15)
    for k, v in times.items():
        print(f"{k} ({roots[k]}): second visits, new browser context: median {statistics.median(v):.2f} s "
              f"{[round(x, 2) for x in v]}")
    print(f"after / before (medians): {statistics.median(times['after']) / statistics.median(times['before']):.2f}")


if __name__ == "__main__":
    main()
