"""Study-scale benchmark of the app: every view on a 31,000-item server dataset, in headless chromium, vs the CLI.

Generates a server dataset in a temporary ``PLATOSCOPE_DATA_DIR`` (31,000 items; spaces of width 1,280, 768, 512
and 384 sharing a planted 48-d structure under space-specific noise; a 20-class label column and captions),
starts ``streamlit run app.py`` on 127.0.0.1 with a fresh cache, and for every view measures, from navigation:

* first paint: the view's marker and its first control (or metric) are on screen;
* first numbers: the view's first computed result (Home: the summary table, and the PCA map; Similarity: the heatmap; Neighbours: the
  neighbour lists; Query: the fitted alignment; Subspace: the "At one k" table; Universe: the first method);
* Universe also: PW + GPA + GCCA shown, and everything (GCPA too);
* idle: no job running and no script running;
* second visit: a new session (a new page) in the same browser, on the same URL, to the numbers;
* second browser: the same in a fresh browser context (a second user: empty HTTP cache), to paint and numbers;
* for both, the map too (Home's map, Similarity's side-by-side maps), and the split of the time: when the server's
  script run finished (its last ``script_finished`` message) and how many bytes it sent, by element kind (a
  plotly figure's JSON, a canvas map's bytes), read from the websocket; ``--repeat N`` takes the medians of N
  second visits and N second browsers (a shared machine is noisy).

The floor: the same harness on two trivial Streamlit apps served the same way on this machine (one ``st.write``
line; the same with a three-bar ``st.plotly_chart``): navigation to the text (the chart) on screen, as a second
visit and as a second browser (medians of ``--repeat``). That is what a "under 1 s" target must be read against:
no view can beat the empty app, and any view that shows a plotly chart pays for Streamlit's plotly bundle
(about 4.7 MB of JavaScript parsed and run in every new page) as the plotly floor does.

Every first visit is a new session in one browser context that loaded the app once during the warm-up (its HTTP
cache holds Streamlit's static files, as any returning user's does); the second browser shows the cold-cache cost.

After each view, the same computation through the CLI (``python -m core ...``), timed end to end in a subprocess
right after the view (so that both run under about the same load on a shared machine), and the ratio app / CLI
where the CLI computes the same thing. Prints one table; ``--json`` writes the numbers.

    .venv/bin/python bench/bench_app.py [--n 31000] [--timeout 300] [--app-root DIR] [--no-cli] [--repeat 5]

``--app-root`` runs another checkout's app (e.g. an older commit unpacked with ``git archive``) on the same data,
for a before / after table. The machine is shared: note the load (printed) next to the numbers.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WIDTHS = {"text_1280": 1280, "image_768": 768, "shape_512": 512, "audio_384": 384}
#: canvas maps (ui/bigmap_frontend) painted so far: the component sets data-painted on its root (its body before)
PAINTED_CANVASES = ("(document.querySelectorAll('.ps-map[data-painted]').length + "   # in the page (session 8 on)
                    "Array.from(document.querySelectorAll('iframe')).filter(f => { try { return "      # its iframe
                    "!!f.contentDocument?.body?.dataset?.painted } catch (e) { return false } }).length)")
#: the SVG heatmap (ui/svgchart_frontend) has drawn: data-svgchart-painted="heatmap" on its root in the page (a
#: components-v2 element since this session's commit), or on its iframe's body (before; data-heatmap-painted at
#: 5c9f247; older commits: plotly's .main-svg)
PAINTED_HEATMAP = ("!!document.querySelector('.ps-svgchart[data-svgchart-painted=\"heatmap\"]') || "
                   "Array.from(document.querySelectorAll('iframe')).some(f => { try { const d = "
                   "f.contentDocument?.body?.dataset; return !!d && (d.svgchartPainted === 'heatmap' || "
                   "!!d.heatmapPainted) } catch (e) { return false } })")
PAINT = ('[data-testid="stMain"] [data-testid="stSelectbox"], [data-testid="stMain"] [data-testid="stMultiSelect"], '
         '[data-testid="stMain"] [data-testid="stMetric"], [data-testid="stMain"] [data-testid="stNumberInput"]')


def make_study(folder: Path, n: int, seed: int = 0) -> None:
    """Planted shared structure: z (n x 48, 20 label clusters) seen through a random map per space, plus noise."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 20, n)
    centres = rng.normal(size=(20, 48)) * 1.5
    z = (centres[labels] + rng.normal(size=(n, 48))).astype(np.float32)
    for name, w in WIDTHS.items():
        out = np.lib.format.open_memmap(folder / f"{name}.npy", mode="w+", dtype=np.float32, shape=(n, w))
        A = rng.normal(size=(48, w)).astype(np.float32) / np.sqrt(48)
        for s in range(0, n, 4096):
            e = min(n, s + 4096)
            out[s:e] = z[s:e] @ A + 0.8 * rng.normal(size=(e - s, w)).astype(np.float32)
        out.flush()
        del out
    with open(folder / "meta.csv", "w") as fh:
        fh.write("id,label,caption\n")
        for i, lab in enumerate(labels):
            fh.write(f"{i},class{lab},an object of class {lab} number {i}\n")


def views(n: int) -> list[dict]:
    """(path, marker, URL settings, JS condition for 'first numbers', CLI command or None)."""
    q = lambda v: quote(json.dumps(v)) if not isinstance(v, str) else quote(v)  # noqa: E731
    files = [f"{name}.npy" for name in WIDTHS]
    main = '[data-testid="stMain"]'
    return [
        {"name": "Home", "path": "", "marker": "home", "params": {"space": "text_1280"},
         "numbers": f"document.querySelector('{main} [data-testid=\"stDataFrame\"]')",
         "map": f"document.querySelector('.main-svg') || ({PAINTED_CANVASES}) >= 1",
         "cli": ["info", *files, "--meta", "meta.csv", "--json"]},
        {"name": "Similarity", "path": "similarity", "marker": "similarity", "params": {},
         "numbers": f"document.querySelector('.main-svg') || {PAINTED_HEATMAP}",
         "map": f"(document.querySelector('.main-svg') || {PAINTED_HEATMAP}) && "
                f"(document.querySelectorAll('.main-svg').length >= 3 || ({PAINTED_CANVASES}) >= 2)",
         "cli": ["cka", *files, "--meta", "meta.csv", "--json"]},
        {"name": "Neighbours", "path": "neighbours", "marker": "neighbours",
         "params": {"space": "shape_512", "partner": "text_1280"},
         "numbers": f"(document.querySelector('{main}')?.innerText || '').includes('Query:')", "cli": None},
        {"name": "Query", "path": "query", "marker": "query", "params": {"from": "text_1280", "to": "shape_512"},
         "numbers": f"(document.querySelector('{main}')?.innerText || '').includes('indexed')",
         "cli": ["query", "--dataset", *files, "--meta", "meta.csv", "--from", "text_1280", "--to", "shape_512",
                 "--item", "0", "--json"]},
        {"name": "Subspace", "path": "subspace", "marker": "subspace",
         "params": {"x": "text_1280", "y": "shape_512"},
         "numbers": f"document.querySelector('{main} [data-testid=\"stDataFrame\"]')",
         "cli": ["align", "text_1280.npy", "shape_512.npy", "--method", "paper", "--k", "50", "--anchors", "30000",
                 "--queries", "500", "--seeds", "3", "--json"]},
        {"name": "Universe", "path": "universe", "marker": "universe", "params": {},
         "numbers": f"document.querySelector('.main-svg') || {PAINTED_HEATMAP}",   # SVG since cfe60eb
         "three": f"(document.querySelector('.main-svg') || {PAINTED_HEATMAP}) && !Array.from(document.querySelectorAll('.ps-job-running'))"
                  ".some(e => /^(pairwise|GPA |GCCA)/.test(e.dataset.label || ''))",
         "cli": ["universe", *files, "--meta", "meta.csv", "--labels", "label", "--method", "pw,gpa,gcca",
                 "--json"],
         "cli_all": ["universe", *files, "--meta", "meta.csv", "--labels", "label", "--method", "all", "--json"]},
    ]


IDLE = ("() => !document.querySelector('.ps-job-running') && "
        "!document.querySelector('[data-testid=\"stStatusWidget\"]') && "
        "document.querySelector('[data-testid=\"stApp\"]')?.dataset?.testScriptState !== 'running'")


def timed_wait(page, js: str, t0: float, timeout_s: float) -> float | None:
    try:
        page.wait_for_function(f"() => !!({js})" if not js.startswith("()") else js, timeout=timeout_s * 1000,
                               polling=100)
        return time.perf_counter() - t0
    except Exception:  # noqa: BLE001 - a timeout is reported as '>'
        return None


def wait_idle_stable(page, t0: float, timeout_s: float) -> float | None:
    """Idle for 1.5 s in a row (the job fragments poll every second)."""
    deadline = t0 + timeout_s
    while time.perf_counter() < deadline:
        t = timed_wait(page, IDLE, t0, max(0.1, deadline - time.perf_counter()))
        if t is None:
            return None
        page.wait_for_timeout(1500)
        if page.evaluate(IDLE):
            return t
    return None


def new_context(browser):
    return browser.new_context(viewport={"width": 1400, "height": 1800})


class WireLog:
    """What the server sent over the websocket during one visit: every ForwardMsg's arrival time, size and kind
    (``delta`` elements by element type), to split a visit's time into the server's script run (its last
    ``script_finished``), the payload (bytes per element, e.g. a plotly figure's JSON) and the browser's drawing
    (the rest, up to the 'numbers' condition)."""

    def __init__(self, page, t0_ref: list):
        self.frames: list[tuple[float, int, str]] = []
        self._t0 = t0_ref
        self.ws_open: float | None = None
        page.on("websocket", self._attach)

    def _attach(self, ws) -> None:
        if self.ws_open is None:   # the page's JavaScript has booted and connects (the script run starts after)
            self.ws_open = time.perf_counter() - self._t0[0]
        ws.on("framereceived", self._frame)

    def _frame(self, payload) -> None:
        t = time.perf_counter() - self._t0[0]
        raw = payload if isinstance(payload, (bytes, bytearray)) else str(payload).encode()
        kind = "?"
        try:
            from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

            msg = ForwardMsg()
            msg.ParseFromString(bytes(raw))
            kind = msg.WhichOneof("type") or "?"
            if kind == "delta":
                d = msg.delta
                sub = d.WhichOneof("type")
                kind = f"delta:{d.new_element.WhichOneof('type')}" if sub == "new_element" else f"delta:{sub}"
        except Exception:  # noqa: BLE001 - not a ForwardMsg
            pass
        self.frames.append((t, len(raw), kind))

    def summary(self, until: float | None) -> dict:
        done = [t for t, _, k in self.frames if k == "script_finished" and (until is None or t <= until + 0.05)]
        sizes: dict[str, int] = {}
        for t, n, k in self.frames:
            if until is None or t <= until + 0.05:
                sizes[k] = sizes.get(k, 0) + n
        top = sorted(sizes.items(), key=lambda kv: -kv[1])[:4]
        return {"script_done": done[-1] if done else None, "runs": len(done), "ws_open": self.ws_open,
                "first_frame": self.frames[0][0] if self.frames else None,
                "bytes": sum(sizes.values()), "top": {k: v for k, v in top},
                "plotly": sizes.get("delta:plotly_chart", 0)}


def visit(browser, url: str, view: dict, timeout_s: float, second: bool = False, context=None) -> dict:
    """One visit in a new session: a new page of ``context`` (a browser whose HTTP cache already holds the app's
    static files, as for any returning user), or, without one, of a fresh browser context (cold cache)."""
    ctx = context or new_context(browser)
    page = ctx.new_page()
    t0_ref = [time.perf_counter()]
    wire = WireLog(page, t0_ref)
    qs = "&".join([f"dataset={quote('server:study')}"] +
                  [f"{k}={quote(v)}" for k, v in view["params"].items()])
    t0 = t0_ref[0] = time.perf_counter()
    page.goto(f"{url}/{view['path']}?{qs}", timeout=timeout_s * 1000)
    out = {}
    out["paint"] = timed_wait(page, f"document.querySelector('#ps-page-{view['marker']}') && "
                                    f"document.querySelector('{PAINT}')",
                              t0, timeout_s)
    out["numbers"] = timed_wait(page, view["numbers"], t0, timeout_s)
    if "map" in view:      # Home's map, Similarity's side-by-side maps (after the heatmap)
        out["map"] = timed_wait(page, view["map"], t0, timeout_s)
    if not second:
        if "three" in view:
            out["three"] = timed_wait(page, view["three"], t0, timeout_s)
        out["idle"] = wait_idle_stable(page, t0, timeout_s)
        if view["name"] == "Universe":
            text = page.inner_text('[data-testid="stMain"]')
            out["gpa_note"] = next((line for line in text.splitlines() if "GPA:" in line), "")
        if view["name"] == "Subspace":   # the protocol's own time (run_protocol's "seconds"), beside the CLI's
            text = page.inner_text('[data-testid="stMain"]')
            found = re.search(r"fitted in ([0-9.]+) s", text)
            out["fit_s"] = float(found.group(1)) if found else None
    out["wire"] = wire.summary(out.get("map") or out["numbers"])
    page.close()
    if context is None:
        ctx.close()
    return out


def return_visits(browser_context, url: str, view: dict, timeout_s: float, repeat: int) -> dict:
    """Leaving the view and coming back in the same session (the issue's "second visit": a click on another view
    in the sidebar, then a click back on this one; no page load): seconds from the click back to the numbers (and
    the map) on screen, median of ``repeat`` returns, and whether the view then reads exactly as before."""
    import statistics

    page = browser_context.new_page()
    qs = "&".join([f"dataset={quote('server:study')}"] +
                  [f"{k}={quote(v)}" for k, v in view["params"].items()])
    t0 = time.perf_counter()
    page.goto(f"{url}/{view['path']}?{qs}", timeout=timeout_s * 1000)
    here = f"document.querySelector('#ps-page-{view['marker']}') && !document.querySelector('#ps-page-encode')"
    timed_wait(page, f"{here} && ({view['numbers']})", t0, timeout_s)
    if "map" in view:
        timed_wait(page, f"{here} && ({view['map']})", t0, timeout_s)
    if view["name"] != "Universe":       # (Universe's GCPA may train for minutes: its text is compared as it is)
        wait_idle_stable(page, time.perf_counter(), timeout_s)
    page.wait_for_timeout(1500)
    before = page.inner_text('[data-testid="stMain"]')
    numbers, maps, same = [], [], []
    link = 'a[data-testid="stPageLink-NavLink"][href="{}"]'
    for _ in range(max(1, repeat)):
        page.click(link.format("encode"))
        timed_wait(page, "document.querySelector('#ps-page-encode')", time.perf_counter(), timeout_s)
        wait_idle_stable(page, time.perf_counter(), 60)
        t0 = time.perf_counter()
        page.click(link.format(view["path"]))
        numbers.append(timed_wait(page, f"{here} && ({view['numbers']})", t0, timeout_s))
        if "map" in view:
            maps.append(timed_wait(page, f"{here} && ({view['map']})", t0, timeout_s))
        page.wait_for_timeout(1500)
        same.append(page.inner_text('[data-testid="stMain"]') == before)
    page.close()
    med = lambda xs: statistics.median([x for x in xs if x is not None]) if any(x is not None for x in xs) else None  # noqa: E731
    return {"return_numbers": med(numbers), "return_map": med(maps) if maps else None,
            "return_same_text": all(same), "returns": len(numbers)}


def median_visit(visits: list[dict]) -> dict:
    """The median of each timing over repeated visits (a timing that timed out counts as missing); the wire
    summary of the visit whose 'numbers' is the median's (or the first)."""
    import statistics

    out = {}
    for key in ("paint", "numbers", "map"):
        got = [v[key] for v in visits if v.get(key) is not None]
        out[key] = statistics.median(got) if got else None
    mid = sorted(visits, key=lambda v: v.get("numbers") or float("inf"))[(len(visits) - 1) // 2]
    out["wire"] = {**mid["wire"], **{f"{k}_median": statistics.median(
        [v["wire"][k] for v in visits if v["wire"].get(k) is not None] or [0.0]) for k in ("script_done", "ws_open")}}
    out["repeats"] = len(visits)
    return out


FLOOR_APP = """import streamlit as st

st.write("floor: one line of text")
if st.query_params.get("plot"):
    import plotly.graph_objects as go

    st.plotly_chart(go.Figure(go.Bar(x=["a", "b", "c"], y=[1, 3, 2])))
if st.query_params.get("frame"):
    import pandas as pd

    frame = pd.DataFrame({"method": ["a", "b", "c"], "hits@1": [0.5, 0.25, 0.125]})
    st.dataframe(frame, hide_index=True) if st.query_params["frame"] == "dataframe" else st.table(frame)
"""
FLOOR = {"text": ("", "(document.querySelector('[data-testid=stMain]')?.innerText || '').includes('floor: one line')"),
         "plotly": ("?plot=1", "document.querySelector('.main-svg')"),
         "dataframe": ("?frame=dataframe", "document.querySelector('[data-testid=stMain] [data-testid=stDataFrame]')"),
         "table": ("?frame=table", "document.querySelector('[data-testid=stMain] [data-testid=stTable]')")}


def start_server(app: Path, cwd: Path, env: dict, log_path: Path) -> tuple[subprocess.Popen, str, object]:
    """``streamlit run app`` on a free port of 127.0.0.1 (headless, no file watcher; its output to ``log_path``);
    waits for its health check."""
    import urllib.request

    from tests.browser_util import _free_port

    port = _free_port()
    log = open(log_path, "w")
    server = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(app), "--server.port", str(port),
                               "--server.address", "127.0.0.1", "--server.headless", "true",
                               "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
                              cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(120):
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                break
        except OSError:
            time.sleep(0.5)
    return server, url, log


def stop_server(server: subprocess.Popen, log) -> None:
    server.terminate()
    try:
        server.wait(timeout=20)
    except subprocess.TimeoutExpired:
        server.kill()
    log.close()


def measure_floor(browser, tmp: Path, env: dict, repeat: int, timeout_s: float) -> dict:
    """Navigation to the trivial app's text (and to its small plotly chart) on screen, in a new page of a warm
    browser context (a second visit) and in a fresh context (a second browser): medians of ``repeat`` visits."""
    import statistics

    app = tmp / "floor_app.py"
    app.write_text(FLOOR_APP)
    server, url, log = start_server(app, tmp, {k: v for k, v in env.items() if k != "PYTHONPATH"},
                                    tmp / "streamlit-floor.log")
    out: dict = {}
    try:
        user = new_context(browser)
        for q, cond in FLOOR.values():           # warm-up: the server's first run, the static files, the chunks
            page = user.new_page()
            page.goto(f"{url}/{q}", timeout=timeout_s * 1000)
            timed_wait(page, cond, time.perf_counter(), timeout_s)
            page.close()
        for name, (q, cond) in FLOOR.items():
            for where in ("second_visit", "second_browser"):
                got = []
                for _ in range(max(1, repeat)):
                    ctx = user if where == "second_visit" else new_context(browser)
                    page = ctx.new_page()
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{q}", timeout=timeout_s * 1000)
                    got.append(timed_wait(page, cond, t0, timeout_s))
                    page.close()
                    if ctx is not user:
                        ctx.close()
                ok = [g for g in got if g is not None]
                out[f"{name}_{where}"] = statistics.median(ok) if ok else None
        user.close()
    finally:
        stop_server(server, log)
    return out


def run_cli(args: list[str], cwd: Path, env: dict, timeout_s: float, out: dict | None = None) -> float | None:
    """Seconds end to end; ``out["json"]`` gets the parsed ``--json`` output when asked for."""
    t0 = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-m", "core", *args], cwd=cwd, env=env, capture_output=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return None
    if proc.returncode != 0:
        print(f"  CLI {' '.join(args[:2])} failed: {proc.stderr.decode()[-400:]}", file=sys.stderr)
        return None
    seconds = time.perf_counter() - t0
    if out is not None:
        try:
            out["json"] = json.loads(proc.stdout.decode())
        except ValueError:
            out["json"] = None
    return seconds


def run_view_cli(row: dict, view: dict, study: Path, env: dict, timeout_s: float) -> None:
    """The view's CLI commands, timed end to end (and run_protocol's own seconds for Subspace)."""
    for field, cmd in (("cli", view.get("cli")), ("cli_all", view.get("cli_all"))):
        if cmd:
            got: dict = {}
            row[f"{field}_load"] = os.getloadavg()[0]
            row[field] = run_cli(cmd, study, env, timeout_s, got)
            if view["name"] == "Subspace" and got.get("json"):
                row["cli_fit_s"] = (got["json"].get("protocol") or {}).get("seconds")


def fmt(v, timeout_s):
    return f">{timeout_s:.0f}" if v is None else f"{v:.1f}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=31000)
    ap.add_argument("--timeout", type=float, default=300.0, help="per view and per CLI command (seconds)")
    ap.add_argument("--app-root", default=str(ROOT), help="checkout whose app.py and core/ to run")
    ap.add_argument("--no-cli", action="store_true")
    ap.add_argument("--only", default=None, help="comma-separated view names")
    ap.add_argument("--json", default=None, help="write the numbers to this file")
    ap.add_argument("--repeat", type=int, default=1,
                    help="second visits and second browsers per view; the medians are reported (noisy machines)")
    args = ap.parse_args()

    from tests.browser_util import CHROMIUM, CHROMIUM_FLAGS

    try:
        import playwright  # noqa: F401
    except ImportError:
        print("bench_app needs the playwright package (and chromium); skipped")
        return 0
    if not Path(CHROMIUM).exists():
        print(f"bench_app needs chromium at {CHROMIUM}; skipped")
        return 0
    app_root = Path(args.app_root).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="platoscope-bench-app-"))
    data_dir, study = tmp / "server", tmp / "server" / "study"
    t0 = time.perf_counter()
    make_study(study, args.n)
    print(f"dataset: {args.n:,} items, widths {list(WIDTHS.values())}, generated in "
          f"{time.perf_counter() - t0:.1f} s; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    env = {**os.environ, "PLATOSCOPE_DATA_DIR": str(data_dir), "PLATOSCOPE_CACHE_DIR": str(tmp / "cache"),
           "PLATOSCOPE_DEVICE": "cpu", "PYTHONPATH": str(app_root)}
    server, url, log = start_server(app_root / "app.py", app_root, env, tmp / "streamlit.log")
    rows = []
    floors = []
    try:
        from playwright.sync_api import sync_playwright

        wanted = None if not args.only else set(args.only.split(","))
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            # warm the server (imports, the dataset's first load) on the Home view, not counted
            user = new_context(browser)         # one user's browser: the static files are cached after warm-up
            home = {k: v for k, v in views(args.n)[0].items() if k != "map"}    # not waiting for the PCA fit
            warm = visit(browser, url, {**home, "numbers": "true"}, args.timeout, second=True, context=user)
            print(f"warm-up (server start, first dataset load): {fmt(warm['paint'], args.timeout)} s")
            floors.append(measure_floor(browser, tmp, env, args.repeat, args.timeout))
            print(f"floor (trivial apps), load {os.getloadavg()[0]:.1f}: {floors[-1]}", flush=True)
            for view in views(args.n):
                if wanted and view["name"] not in wanted:
                    continue
                load = os.getloadavg()[0]
                first = visit(browser, url, view, args.timeout, context=user)
                agains = [visit(browser, url, view, args.timeout, second=True, context=user)
                          for _ in range(max(1, args.repeat))]
                others = [visit(browser, url, view, args.timeout, second=True)      # a second browser, cold cache
                          for _ in range(max(1, args.repeat))]
                again, other = median_visit(agains), median_visit(others)
                back = return_visits(user, url, view, args.timeout, args.repeat)
                rows.append({"view": view["name"], **first, "second_visit": again["numbers"],
                             "second_browser": other["numbers"], "second_browser_paint": other["paint"],
                             "second_visit_map": again.get("map"), "second_browser_map": other.get("map"),
                             "second_visit_wire": again["wire"], "second_browser_wire": other["wire"],
                             **back, "load": load})
                if not args.no_cli:   # right after the view (the server idles): both under about the same load
                    run_view_cli(rows[-1], view, study, env, args.timeout)
                print(f"  {view['name']}: {rows[-1]}", flush=True)
            floors.append(measure_floor(browser, tmp, env, args.repeat, args.timeout))   # again, after the views
            print(f"floor (trivial apps), load {os.getloadavg()[0]:.1f}: {floors[-1]}", flush=True)
            browser.close()
    finally:
        stop_server(server, log)

    t = args.timeout
    print(f"\n| view | first paint (s) | first numbers (s) | idle (s) | second visit (s) | second browser: paint, "
          f"numbers (s) | CLI (s) | app / CLI | load |\n|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ref = r.get("numbers")
        extra = ""
        if r["view"] == "Universe":
            extra = f" (PW+GPA+GCCA {fmt(r.get('three'), t)} s; all {fmt(r.get('idle'), t)} s)"
            ref = r.get("three")
        if r["view"] == "Home":
            extra = f" (summary table; PCA map {fmt(r.get('map'), t)} s)"
        if r["view"] == "Subspace" and r.get("fit_s") is not None:
            extra = (f" (run_protocol {r['fit_s']:.1f} s in the app"
                     + (f", {r['cli_fit_s']:.1f} s in the CLI)" if r.get("cli_fit_s") else ")"))
        cli = r.get("cli")
        ratio = "-" if cli is None or ref is None else f"{ref / cli:.2f}"
        if r["view"] == "Universe" and r.get("cli_all") and r.get("idle"):
            ratio += f"; all {r['idle'] / r['cli_all']:.2f} (CLI all {r['cli_all']:.1f} s)"
        print(f"| {r['view']} | {fmt(r.get('paint'), t)} | {fmt(r.get('numbers'), t)}{extra} | "
              f"{fmt(r.get('idle'), t)} | {fmt(r.get('second_visit'), t)} | "
              f"{fmt(r.get('second_browser_paint'), t)}, {fmt(r.get('second_browser'), t)} | "
              f"{fmt(cli, t) if cli or 'cli' in r else '-'}"
              f" | {ratio} | {r['load']:.1f} |")
    print("\nLeaving the view and coming back in the same session (sidebar click to Encode, then back; no page "
          "load): seconds from the click back to the numbers / the map, median of --repeat returns; whether the view "
          "then reads exactly as before")
    print("| view | back: numbers (s) | back: map (s) | same text | returns |\n|---|---|---|---|---|")
    for r in rows:
        f2 = lambda v: f">{t:.0f}" if v is None else f"{v:.2f}"  # noqa: E731
        print(f"| {r['view']} | {f2(r.get('return_numbers'))} | "
              f"{f2(r.get('return_map')) if r.get('return_map') else '-'} | {r.get('return_same_text')} | "
              f"{r.get('returns', 0)} |")
    import statistics

    floor = {k: statistics.median([f[k] for f in floors if f.get(k) is not None] or [float("nan")])
             for k in ("text_second_visit", "text_second_browser", "plotly_second_visit", "plotly_second_browser")}
    print(f"\nFloor: a trivial Streamlit app on this machine, same harness (median of {len(floors)} rounds of --repeat "
          f"visits; navigation to the text / to a small plotly chart on screen): "
          f"text {floor['text_second_visit']:.2f} s "
          f"(second visit), {floor['text_second_browser']:.2f} s (second browser); with st.plotly_chart "
          f"{floor['plotly_second_visit']:.2f} s, {floor['plotly_second_browser']:.2f} s")
    print("\nSecond visit / second browser, split (s from navigation; medians of --repeat visits): the page's "
          "websocket opened (its JavaScript booted), the server's last script_finished, the numbers and the map on screen; the "
          "numbers against the text floor (x floor); bytes the server sent (the largest element kind)")
    print("| view | second visit: ws open, script done, numbers, map | x floor | second browser: ws open, script done, "
          "numbers, map | x floor | plotly sent | bytes |\n|---|---|---|---|---|---|---|")
    for r in rows:
        sv, sb = r.get("second_visit_wire") or {}, r.get("second_browser_wire") or {}
        top = next(iter((sv.get("top") or {}).items()), ("-", 0))
        ratio = lambda v, f: "-" if v is None or not f == f else f"{v / f:.2f}"  # noqa: E731
        print(f"| {r['view']} | {fmt(sv.get('ws_open_median', sv.get('ws_open')), t)}, "
              f"{fmt(sv.get('script_done_median', sv.get('script_done')), t)}, "
              f"{fmt(r.get('second_visit'), t)}, "
              f"{fmt(r.get('second_visit_map'), t) if 'second_visit_map' in r and r['second_visit_map'] else '-'} | "
              f"{ratio(r.get('second_visit'), floor['text_second_visit'])} | "
              f"{fmt(sb.get('ws_open_median', sb.get('ws_open')), t)}, "
              f"{fmt(sb.get('script_done_median', sb.get('script_done')), t)}, {fmt(r.get('second_browser'), t)}, "
              f"{fmt(r.get('second_browser_map'), t) if r.get('second_browser_map') else '-'} | "
              f"{ratio(r.get('second_browser'), floor['text_second_browser'])} | "
              f"{'yes' if (sv.get('top') or {}).get('delta:plotly_chart') or sv.get('plotly') else 'no'} | "
              f"{sv.get('bytes', 0) / 1e6:.2f} MB ({top[0]} {top[1] / 1e6:.2f} MB) |")
    for r in rows:
        if r.get("gpa_note"):
            print(f"Universe: {r['gpa_note']}")
    if args.json:
        Path(args.json).write_text(json.dumps({"views": rows, "floor": floors}, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
