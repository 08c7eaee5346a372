"""A view's work while GCPA trains in the background, two checkouts one after the other (issue 13).

On a generated 31,000-item server dataset (bench_app.make_study), for each checkout: a fresh server and cache,
the Universe view opened until pairwise Procrustes, GPA and GCCA are shown (GCPA's training then starts in the
background), then ``--repeat`` rounds, while GCPA trains, of: a second visit of Universe (navigation to its
numbers) and the Subspace view in a new session (navigation to "At one k", and run_protocol's own seconds; a
different query count each round, so each is a fresh fit). Before jobs could step aside, Subspace's job waited
in the queue behind the training. Prints each round and the medians. Run with the app's interpreter:

    .venv/bin/python bench/bench_app_background.py --before OLD_CHECKOUT [--after .] [--repeat 3] [--timeout 300]
        [--only before|after]
"""
from __future__ import annotations

import argparse
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import bench_app as B  # noqa: E402

MAIN = '[data-testid="stMain"]'


def run_checkout(root: Path, data_dir: Path, repeat: int, timeout_s: float) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_FLAGS

    views = {v["name"]: v for v in B.views(31000)}
    env = {**os.environ, "PLATOSCOPE_DATA_DIR": str(data_dir), "PLATOSCOPE_CACHE_DIR": tempfile.mkdtemp(),
           "PLATOSCOPE_DEVICE": "cpu", "PYTHONPATH": str(root)}
    server, url, log = B.start_server(root / "app.py", root, env, Path(tempfile.mkdtemp()) / "streamlit.log")
    out: dict = {"universe_second_visit": [], "subspace_numbers": [], "subspace_fit": []}
    try:
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            ctx = B.new_context(browser)
            page = ctx.new_page()
            page.goto(f"{url}/?dataset=server%3Astudy")
            B.timed_wait(page, "document.querySelector('#ps-page-home')", time.perf_counter(), timeout_s)
            page.close()
            page = ctx.new_page()
            t0 = time.perf_counter()
            page.goto(f"{url}/universe?dataset=server%3Astudy")
            out["three"] = B.timed_wait(page, views["Universe"]["three"], t0, timeout_s)
            time.sleep(5)
            out["gcpa_training"] = "GCPA" in page.inner_text(MAIN)
            for i in range(repeat):
                visit = B.visit(browser, url, views["Universe"], timeout_s, second=True, context=ctx)
                out["universe_second_visit"].append(visit["numbers"])
                sub = ctx.new_page()
                t0 = time.perf_counter()
                sub.goto(f"{url}/subspace?dataset=server%3Astudy&x=text_1280&y=shape_512&queries={500 - i}")
                t = B.timed_wait(sub, f"document.querySelector('{MAIN} [data-testid=\"stDataFrame\"]')", t0,
                                 timeout_s)
                found = re.search(r"fitted in ([0-9.]+) s", sub.inner_text(MAIN)) if t is not None else None
                out["subspace_numbers"].append(t)
                out["subspace_fit"].append(float(found.group(1)) if found else None)
                sub.close()
                print(f"  round {i + 1}: Universe second visit {B.fmt(visit['numbers'], timeout_s)} s, Subspace "
                      f"'At one k' {B.fmt(t, timeout_s)} s (run_protocol {out['subspace_fit'][-1]} s); load "
                      f"{os.getloadavg()[0]:.1f}", flush=True)
            browser.close()
    finally:
        B.stop_server(server, log)
    return out


def _median(values):
    ok = [v for v in values if v is not None]
    return statistics.median(ok) if ok else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--before", default=None, help="the older checkout (e.g. unpacked with git archive)")
    ap.add_argument("--after", default=str(ROOT))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--n", type=int, default=31000)
    ap.add_argument("--only", choices=("before", "after"), default=None, help="run one of the two checkouts")
    args = ap.parse_args()
    if args.before is None and args.only != "after":
        ap.error("--before is needed (or --only after)")
    tmp = Path(tempfile.mkdtemp(prefix="platoscope-bench-bg-"))
    B.make_study(tmp / "server" / "study", args.n)
    print(f"{args.n:,} items; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = {}
    for name in [args.only] if args.only else ("before", "after"):
        root = Path(getattr(args, name)).resolve()
        print(f"{name}: {root}", flush=True)
        results[name] = run_checkout(root, tmp / "server", args.repeat, args.timeout)
    print(f"\nWhile GCPA trains (medians of {args.repeat}; '>' = no numbers within {args.timeout:.0f} s):")
    print("| checkout | PW+GPA+GCCA (s) | Universe second visit (s) | Subspace 'At one k' (s) | run_protocol (s) |")
    print("|---|---|---|---|---|")
    for name, r in results.items():
        sub = r["subspace_numbers"]
        visit = _median(r["universe_second_visit"])
        print(f"| {name} | {B.fmt(r['three'], args.timeout)} | {B.fmt(visit, args.timeout)}"
              f" | {B.fmt(_median(sub), args.timeout)} ({', '.join(B.fmt(v, args.timeout) for v in sub)}) | "
              f"{_median(r['subspace_fit'])} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
