"""Hostile uploads, measured: peak RSS of each bomb's refusal, server RSS over 20 uploads, disk left by an ended session.

1. Bombs (tests/hostile.py, small on disk): each is read in a fresh subprocess by the project's reader and the peak
   RSS growth (ru_maxrss after - before, imports done first) is printed; the reference is a naive reader of a
   1 GB npz bomb (np.load: what core.io did before) in the same run, and the ratio of the two.
2. A real server (streamlit run, 127.0.0.1) and a real browser (playwright + Debian chromium) upload 20 files of
   ~50 MB in one session; the server's anonymous RSS (RssAnon) is read after each upload: median growth per upload.
3. The browser closes; with server.disconnectedSessionTTL = 5 s and PLATOSCOPE_SESSION_GRACE_S = 5 s, the session
   folder's size is polled until the sweeper removes it: MB left and seconds after the close.

Run: python bench/bench_uploads.py [--uploads 20] [--mb 50]. Needs ~1.2 GB of free disk in the temp folder.
"""
from __future__ import annotations

import argparse
import os
import resource  # noqa: F401 - used in the child scripts
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from hostile import write_npz_bomb, write_png_bomb, write_zip_entry_bomb  # noqa: E402

CHILD = """
import resource, sys
sys.path[:0] = [{root!r}, {tests!r}]
import numpy, pandas, PIL.Image, zipfile, core.io, core.encoders
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
outcome = "accepted"
try:
{body}
except Exception as err:
    outcome = type(err).__name__ + ": " + str(err)[:150]
print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024)
print(outcome)
"""


def peak_growth_mb(body: str, env: dict | None = None) -> tuple[float, str]:
    script = CHILD.format(root=str(ROOT), tests=str(ROOT / "tests"), body=textwrap.indent(body, "    "))
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=900,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("PLATOSCOPE_")},
                              "PLATOSCOPE_DEVICE": "cpu", **(env or {})})
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    lines = out.stdout.strip().splitlines()
    return float(lines[-2]), lines[-1]


def bombs(tmp: Path) -> None:
    print("== 1. decompression bombs: peak RSS growth of one read (fresh subprocess each; default budgets:"
          " 4096 MB per session, half the RAM server-wide)")
    npz = write_npz_bomb(tmp / "bomb46.npz", int(4.6e9))
    ref = write_npz_bomb(tmp / "bomb1g.npz", 1 << 30)
    zipb = write_zip_entry_bomb(tmp / "zipbomb.zip", 3 << 29, 2)
    png = write_png_bomb(tmp / "pixels.png", 40_000)
    shutil.make_archive(str(tmp / "pixelbomb"), "zip", tmp, "pixels.png")
    for p in (npz, ref, zipb, tmp / "pixelbomb.zip"):
        print(f"   {p.name}: {p.stat().st_size / 2**20:.1f} MB on disk")
    rows = [
        ("npz bomb, 4.6 GB inflated (issue: 6.0 GB before)", f"core.io.load_file({str(npz)!r})", {}),
        ("zip entry bomb, 2 x 1.5 GB (issue: 6.5 GB before)",
         f"imgs = core.encoders.list_images({str(zipb)!r})\nfor n in imgs.names: imgs.read(n)", {}),
        ("image bomb, 40000 x 40000 PNG", f"imgs = core.encoders.list_images({str(tmp / 'pixelbomb.zip')!r})\n"
                                          "for n in imgs.names: core.encoders.decode_image(imgs.read(n))", {}),
        ("npz bomb, 1 GB inflated (this reader, budget 512 MB)", f"core.io.load_file({str(ref)!r})",
         {"PLATOSCOPE_SESSION_BUDGET_MB": "512"}),
        ("npz bomb, 1 GB inflated (reference: naive np.load)",
         f"import numpy as np\nx = np.load({str(ref)!r})['emb']", {}),
    ]
    results = {}
    for label, body, env in rows:
        mb, outcome = peak_growth_mb(body, env)
        results[label] = mb
        print(f"   {label}: peak RSS +{mb:,.0f} MB  [{outcome}]")
    ours = results["npz bomb, 1 GB inflated (this reader, budget 512 MB)"]
    naive = results["npz bomb, 1 GB inflated (reference: naive np.load)"]
    print(f"   ratio on the 1 GB bomb, this reader / naive np.load: {max(ours, 1) / naive:.4f} "
          f"({naive:,.0f} MB -> {ours:,.0f} MB)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_anon_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _dir_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 2**20 if path.exists() else 0.0


def uploads(tmp: Path, n_uploads: int, mb: int) -> None:
    from browser_util import CHROMIUM, CHROMIUM_FLAGS, choose_upload, wait_idle
    from playwright.sync_api import sync_playwright

    print(f"== 2. {n_uploads} uploads of ~{mb} MB in one browser session (real server, real browser)")
    files = []
    rng = np.random.default_rng(0)
    d = 256
    n = mb * 2**20 // (4 * d)
    for i in range(n_uploads):
        p = tmp / f"upload{i:02d}.npy"
        np.save(p, rng.standard_normal((n, d), dtype=np.float32))
        files.append(p)
    cache = tmp / "cache"
    port = _free_port()
    env = {**os.environ, "PLATOSCOPE_CACHE_DIR": str(cache), "PLATOSCOPE_DATA_DIR": str(tmp / "server"),
           "PLATOSCOPE_DEMO": "0", "PLATOSCOPE_DEVICE": "cpu", "PLATOSCOPE_SESSION_GRACE_S": "5",
           "PLATOSCOPE_SWEEP_S": "2"}
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.disconnectedSessionTTL", "5"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(180):
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
            page = browser.new_page(viewport={"width": 1400, "height": 1400})
            page.set_default_timeout(180_000)
            page.goto(url)
            wait_idle(page, "home", plot=False)
            rss = [_rss_anon_mb(proc.pid)]
            for i, p in enumerate(files):
                try:
                    choose_upload(page, p)
                    page.get_by_role("button", name="Load files").click()
                    deadline = time.time() + 300
                    while len(list(cache.glob("session-*/uploads/*.npy"))) < i + 1:  # spooled and registered
                        if time.time() > deadline:
                            raise TimeoutError(f"upload {i} never reached the session folder")
                        time.sleep(0.5)
                    wait_idle(page, "home", plot=False)
                except Exception:
                    page.screenshot(path=str(tmp.parent / "bench-uploads-failure.png"), full_page=True)
                    print(f"   upload {i} failed; screenshot in {tmp.parent / 'bench-uploads-failure.png'}",
                          file=sys.stderr)
                    raise
                rss.append(_rss_anon_mb(proc.pid))
                print(f"   upload {i + 1}: server RssAnon {rss[-1]:,.0f} MB", file=sys.stderr, flush=True)
            growth = np.diff(rss)
            folders = list(cache.glob("session-*"))
            print(f"   server RssAnon: {rss[0]:,.0f} MB before, {rss[-1]:,.0f} MB after {n_uploads} uploads "
                  f"(+{rss[-1] - rss[0]:,.0f} MB); per upload: median {statistics.median(growth):+.1f} MB, "
                  f"max {growth.max():+.1f} MB; after the first upload (imports, first map): "
                  f"{rss[1]:,.0f} -> {rss[-1]:,.0f} MB = {(rss[-1] - rss[1]) / max(1, n_uploads - 1):+.1f} MB per upload "
                  f"(issue: +48 MB per upload before)")
            session_dir = folders[0] if folders else None
            held = _dir_mb(session_dir) if session_dir else 0.0
            print(f"   session folder on disk while the session is open: {held:,.0f} MB")
            print("== 3. the browser closes: disk left by the ended session")
            browser.close()
        t0 = time.time()
        left = held
        while time.time() - t0 < 120:
            left = _dir_mb(session_dir) if session_dir else 0.0
            if session_dir is None or not session_dir.exists():
                break
            time.sleep(1)
        print(f"   {left:,.0f} MB left {time.time() - t0:.0f} s after the close (disconnectedSessionTTL 5 s + grace 5 s "
              f"+ sweep every 2 s; issue: 1,980 MB kept for 24 h before)")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=20)
    ap.add_argument("--mb", type=int, default=50)
    ap.add_argument("--skip-server", action="store_true")
    ap.add_argument("--skip-bombs", action="store_true")
    ap.add_argument("--quick", action="store_true", help="5 uploads of 20 MB")
    args = ap.parse_args(argv)
    if args.quick:
        args.uploads, args.mb = 5, 20
    with tempfile.TemporaryDirectory(prefix="platoscope-bench-uploads-") as d:
        tmp = Path(d)
        if not args.skip_bombs:
            bombs(tmp)
        if not args.skip_server:
            uploads(tmp, args.uploads, args.mb)


if __name__ == "__main__":
    main()
