"""Where the Universe view's time goes between the jobs and the browser (issue 13: PW, GPA and GCCA on screen).

Starts ``streamlit run app.py`` (of ``--app-root``) on a server dataset with a trace of the jobs and script runs
(``bench/_app_trace.py``), opens the Home view once (warm-up: the dataset's first load), then the Universe view in
a new page of headless chromium, and records when the browser shows each of PW, GPA and GCCA (its progress box
gone, a heatmap drawn). For each method, seconds after its job finished: until the page's script run that drew it
began (the progress box's poll) and ended, and until the browser showed it; the job's own wall time; when GCPA's
job started. ``--repeat N`` starts a fresh server N times; medians. Interleave two ``--app-root`` runs for a
before / after on a shared machine (say the load: printed).

    .venv/bin/python bench/bench_universe_app.py [--data DIR_WITH_study] [--repeat 3] [--app-root DIR] [--json F]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
LABELS = {"pw": "pairwise Procrustes", "gpa": "GPA", "gcca": "GCCA"}


def shown(method: str) -> str:
    from bench_app import PAINTED_HEATMAP   # SVG heatmaps since cfe60eb (plotly's .main-svg before)

    return (f"() => (!!document.querySelector('.main-svg') || {PAINTED_HEATMAP}) && "
            "!Array.from(document.querySelectorAll('.ps-job-running'))"
            f".some(e => (e.dataset.label || '').startsWith({json.dumps(LABELS[method] + ' on')}))")


def one_run(app: Path, data: Path, timeout: float) -> dict:
    from playwright.sync_api import sync_playwright

    from tests.browser_util import CHROMIUM, CHROMIUM_FLAGS, _free_port

    tmp = Path(tempfile.mkdtemp(prefix="platoscope-bench-universe-app-"))
    trace = tmp / "trace.jsonl"
    env = {**os.environ, "PLATOSCOPE_DATA_DIR": str(data), "PLATOSCOPE_CACHE_DIR": str(tmp / "cache"),
           "PLATOSCOPE_DEVICE": "cpu", "PYTHONPATH": f"{app}{os.pathsep}{ROOT / 'bench'}",
           "PLATOSCOPE_TRACE_FILE": str(trace)}
    port = _free_port()
    code = ("import sys, _app_trace; _app_trace.install(); from streamlit.web.cli import main; "
            f"sys.argv = ['streamlit', 'run', {str(app / 'app.py')!r}, '--server.port', '{port}', "
            "'--server.address', '127.0.0.1', '--server.headless', 'true', '--browser.gatherUsageStats', 'false', "
            "'--server.fileWatcherType', 'none']; main()")
    log = open(tmp / "server.log", "w")
    server = subprocess.Popen([sys.executable, "-c", code], cwd=app, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    out: dict = {"load": os.getloadavg()[0]}
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=2)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1800})
            page = ctx.new_page()
            page.goto(f"{url}/?dataset=server%3Astudy", timeout=timeout * 1000)
            page.wait_for_function("() => !!document.querySelector('#ps-page-home')", timeout=timeout * 1000)
            page.wait_for_timeout(5000)
            page.close()
            page = ctx.new_page()
            t0 = out["t0"] = time.time()
            page.goto(f"{url}/universe?dataset=server%3Astudy", timeout=timeout * 1000)
            for m in LABELS:
                page.wait_for_function(shown(m), timeout=timeout * 1000, polling=50)
                out[f"{m}_seen"] = time.time() - t0
            page.wait_for_timeout(1500)
            browser.close()
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()
    events = [json.loads(line) for line in open(trace)] if trace.exists() else []
    shutil.rmtree(tmp, ignore_errors=True)
    return {**out, **split(events, out)}


def split(events: list[dict], seen: dict) -> dict:
    t0 = seen["t0"]
    jobs: dict = {}
    runs, start = [], None
    for e in events:
        t = e["t"] - t0
        if e["e"] in ("submit", "start", "end"):
            jobs.setdefault(e["label"].split(" on ")[0], {}).setdefault(e["e"], t)
        elif e["e"] == "script_start":
            start = t
        elif e["e"] == "script_end" and start is not None:
            runs.append((start, t))
            start = None
    out = {}
    for m, label in LABELS.items():
        j = jobs.get(label, {})
        end = j.get("end")
        if end is None:
            continue
        run = next(((a, b) for a, b in runs if b >= end), None)
        out[m] = {"job_start": j["start"], "job_s": end - j["start"], "end": end,
                  "poll_s": None if run is None else max(0.0, run[0] - end),
                  "drawn_s": None if run is None else run[1] - end, "seen_s": seen[f"{m}_seen"] - end}
    gcpa = jobs.get("GCPA", {})
    out["gcpa_start_s"] = None if "start" not in gcpa or "gcca" not in out else gcpa["start"] - out["gcca"]["end"]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="/tmp/study/server", help="a PLATOSCOPE_DATA_DIR with a 'study' dataset "
                                                                 "(bench/bench_app.py's make_study)")
    ap.add_argument("--app-root", default=str(ROOT))
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--timeout", type=float, default=300.0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    runs = []
    for i in range(args.repeat):
        r = one_run(Path(args.app_root).resolve(), Path(args.data), args.timeout)
        runs.append(r)
        print(f"run {i + 1}: load {r['load']:.1f}; three on screen {r['gcca_seen']:.2f} s; " + "; ".join(
            f"{m}: job {r[m]['job_s']:.2f} s, then poll {r[m]['poll_s']:.2f} s, drawn {r[m]['drawn_s']:.2f} s, "
            f"seen {r[m]['seen_s']:.2f} s" for m in LABELS if m in r) +
            (f"; GCPA started {r['gcpa_start_s']:.2f} s after GCCA's job ended" if r.get("gcpa_start_s") is not None
             else ""), flush=True)
    med = lambda xs: statistics.median(xs) if xs else float("nan")  # noqa: E731
    print(f"medians of {len(runs)} (app {args.app_root}):")
    print(f"  three on screen {med([r['gcca_seen'] for r in runs]):.2f} s from navigation; PW job started "
          f"{med([r['pw']['job_start'] for r in runs]):.2f} s")
    for m in LABELS:
        rs = [r[m] for r in runs if m in r]
        print(f"  {m:4s}: job {med([x['job_s'] for x in rs]):6.2f} s; after it ended: rerun began "
              f"{med([x['poll_s'] for x in rs if x['poll_s'] is not None]):.2f} s, ended "
              f"{med([x['drawn_s'] for x in rs if x['drawn_s'] is not None]):.2f} s, browser showed it "
              f"{med([x['seen_s'] for x in rs]):.2f} s")
    g = [r["gcpa_start_s"] for r in runs if r.get("gcpa_start_s") is not None]
    if g:
        print(f"  GCPA's job started {med(g):.2f} s after GCCA's ended")
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
