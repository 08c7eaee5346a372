"""What a polling progress box costs the browser (issue 13: the jobs share the CPU with the browser's drawing).

Writes a small Streamlit app (20 lines of text and one fragment that reruns every second, like a job's progress box
in ui/jobs.py), serves it on 127.0.0.1 and opens it in headless chromium once per mode; for ``--seconds`` it sums
the CPU time of chromium's processes and of the server (/proc; the server runs in the project root, so the app's
.streamlit/config.toml applies: no full garbage collection after each fragment run). Modes: ``static`` (no fragment), ``caption`` (the
fragment draws a line of text), ``progress`` (an st.progress whose value moves every poll, Streamlit's default
look), ``progress_app_css`` (the same with the app's page style, ui.widgets.PAGE_STYLE), ``fixed`` (a bar whose
value does not change). Rounds interleave the modes; prints the medians and the ratio of each mode to ``caption``.

    .venv/bin/python bench/bench_poll_cost.py [--seconds 12] [--rounds 2]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

APP = '''import time
import streamlit as st

mode = st.query_params.get("mode", "static")
st.write("poll test")
if mode == "progress_app_css":
    st.html(PAGE_STYLE)
for i in range(20):
    st.caption(f"static line {i}")
if mode != "static":
    @st.fragment(run_every=1.0)
    def box():
        f = (time.time() % 60) / 60
        if mode.startswith("progress"):
            st.progress(f, text=f"stage {f:.3f}")
        elif mode == "fixed":
            st.progress(0.5, text=f"stage {f:.3f}")
        else:
            st.caption(f"elapsed {time.time():.1f}")
    box()
'''
MODES = ("static", "caption", "progress", "progress_app_css", "fixed")


def cpu_seconds(pattern: bytes) -> float:
    """User + system CPU seconds of the processes whose command line contains ``pattern``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            if pattern not in open(f"/proc/{pid}/cmdline", "rb").read():
                continue
            fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total / tick


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=2)
    args = ap.parse_args()
    from bench_app import start_server, stop_server
    from tests.browser_util import CHROMIUM, CHROMIUM_FLAGS

    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("bench_poll_cost needs the playwright package (and chromium); skipped")
        return 0
    if not Path(CHROMIUM).exists():
        print(f"bench_poll_cost needs chromium at {CHROMIUM}; skipped")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="platoscope-bench-poll-"))
    from ui.widgets import PAGE_STYLE

    (tmp / "poll_app.py").write_text(f"PAGE_STYLE = {PAGE_STYLE!r}\n" + APP)
    # run in the project root, so that the app's .streamlit/config.toml applies
    server, url, log = start_server(tmp / "poll_app.py", ROOT, {**os.environ, "PYTHONPATH": str(ROOT)},
                                    tmp / "server.log")
    got: dict = {m: {"chromium": [], "server": []} for m in MODES}
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            ctx = browser.new_context(viewport={"width": 1400, "height": 1000})
            for _ in range(max(1, args.rounds)):
                for mode in MODES:
                    page = ctx.new_page()
                    page.goto(f"{url}/?mode={mode}")
                    page.wait_for_function("() => (document.body.innerText || '').includes('poll test')")
                    page.wait_for_timeout(2000)
                    c0, s0 = cpu_seconds(b"chrom"), cpu_seconds(b"poll_app.py")
                    page.wait_for_timeout(args.seconds * 1000)
                    got[mode]["chromium"].append(cpu_seconds(b"chrom") - c0)
                    got[mode]["server"].append(cpu_seconds(b"poll_app.py") - s0)
                    page.close()
            browser.close()
    finally:
        stop_server(server, log)
    ref = statistics.median(got["caption"]["chromium"])
    print(f"CPU seconds in {args.seconds:.0f} s with the page open (medians of {args.rounds} interleaved rounds); "
          f"load {os.getloadavg()[0]:.1f}")
    for mode in MODES:
        c, s = statistics.median(got[mode]["chromium"]), statistics.median(got[mode]["server"])
        print(f"  {mode:17s} chromium {c:5.2f}  server {s:5.2f}  chromium / caption {c / ref if ref else float('nan'):5.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
