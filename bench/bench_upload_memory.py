"""Upload memory, attributed: is the server's RSS growth per upload a leak or a bounded cache?

A real server (streamlit run app.py on 127.0.0.1, wrapped so that it answers probes) and a real browser (playwright
+ Debian chromium). Session 1 uploads the same small .npy ``--uploads`` times; the browser context closes (the
session ends); after the session TTL and the sweeper, session 2 uploads the same file ``--uploads2`` times and
closes. After every upload and after each close the server answers a probe (after ``gc.collect()``):

* RSS / RssAnon (/proc/self/status) and glibc's heap (mallinfo2: in use vs free in the arenas);
* with ``--tracemalloc``: the bytes Python and numpy hold (tracemalloc) and the lines that hold the most;
* live objects: core Datasets / Spaces, Streamlit sessions (and ended ones whose object Streamlit still holds),
  UploadedFileRecs, threads;
* Streamlit's own accounting (runtime.stats_mgr): bytes per cache (st.cache_data / st.cache_resource, uploaded files,
  media files, session state), per category;
* Platoscope's in-memory stores: shared results, jobs, budget reservations, per-key locks.

Run: python bench/bench_upload_memory.py [--uploads 30] [--uploads2 10] [--mb 5] [--tracemalloc] [--distinct]
[--arena-max N]. Prints one row per probe, then the per-upload growth in session 1 (median step, and the slope
over its second half). ``--arena-max 2`` runs the server with MALLOC_ARENA_MAX=2: the reference that tells
glibc's per-thread arenas (free memory kept per arena, bounded by their number) from a leak (live objects).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------------
# the server side: a probe thread inside `streamlit run`
# ------------------------------------------------------------------------------------------------
def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _mallinfo() -> dict:
    import ctypes

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                    "fsmblks", "uordblks", "fordblks", "keepcost")]
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = MallInfo2
        mi = libc.mallinfo2()
    except (OSError, AttributeError):
        return {}
    return {"heap_in_use_mb": mi.uordblks / 2**20, "heap_free_mb": mi.fordblks / 2**20,
            "mmapped_mb": mi.hblkhd / 2**20}


def _probe() -> dict:
    import gc
    import tracemalloc

    gc.collect()
    out = {"rss_mb": _status_mb("VmRSS"), "rss_anon_mb": _status_mb("RssAnon"), **_mallinfo()}
    if tracemalloc.is_tracing():
        snap = tracemalloc.take_snapshot()
        stats = snap.statistics("lineno")
        out["traced_mb"] = sum(s.size for s in stats) / 2**20
        out["traced_top"] = [f"{s.size / 2**20:.2f} MB {s.traceback[0].filename.split('site-packages/')[-1]}:"
                             f"{s.traceback[0].lineno}" for s in stats[:8]]
    counts: dict[str, int] = {}
    wanted = {"Dataset", "Space", "LazySpace", "UploadedFileRec", "UploadedFile", "AppSession", "SessionState",
              "ScriptRunner", "PCAProjection", "Job", "DataFrame"}
    for obj in gc.get_objects():
        name = type(obj).__name__
        if name in wanted:
            counts[name] = counts.get(name, 0) + 1
    out["objects"] = counts
    out["threads"] = threading.active_count()
    try:
        from streamlit import runtime

        rt = runtime.get_instance()
        out["sessions"] = len(rt._session_mgr.list_sessions())  # noqa: SLF001
        by_cache: dict[str, float] = {}
        for stats in rt.stats_mgr.get_stats().values():
            for st in stats:
                if getattr(st, "byte_length", None) is None:
                    continue
                key = st.category_name + (f":{st.cache_name}" if getattr(st, "cache_name", "") else "")
                by_cache[key] = by_cache.get(key, 0) + st.byte_length / 2**20
        out["streamlit_mb"] = {k: round(v, 3) for k, v in sorted(by_cache.items())}
        live = {info.session.id for info in rt._session_mgr.list_sessions()}  # noqa: SLF001
        # ended sessions whose object Streamlit still holds (its store of disconnected sessions is purged only
        # when it next changes)
        out["ended_sessions_alive"] = sum(1 for o in gc.get_objects()
                                          if type(o).__name__ == "AppSession" and o.id not in live)
        mgr = rt.uploaded_file_mgr
        out["upload_store"] = {"files": sum(len(v) for v in getattr(mgr, "file_storage", {}).values()),
                               "sessions": len(getattr(mgr, "file_storage", {}))}
    except Exception as err:  # noqa: BLE001
        out["streamlit_error"] = repr(err)
    try:
        from ui import cached, jobs
        from core import budget
        from core import cache as core_cache

        out["platoscope"] = {"shared_results": len(cached._shared_results()),  # noqa: SLF001
                             "locks": len(cached._LOCKS),  # noqa: SLF001
                             "jobs": len(getattr(jobs.runner(), "_jobs", {})),
                             "reservations": len(getattr(budget.LEDGER, "_live", ())),
                             "session_folders": len(list(core_cache.cache_root().glob("session-*")))}
    except Exception as err:  # noqa: BLE001
        out["platoscope_error"] = repr(err)
    return out


def _probe_loop(folder: Path) -> None:
    while True:
        for req in sorted(folder.glob("req-*")):
            tag = req.name[4:]
            try:
                result = _probe()
            except Exception as err:  # noqa: BLE001
                result = {"error": repr(err)}
            tmp = folder / f".resp-{tag}"
            tmp.write_text(json.dumps(result))
            os.replace(tmp, folder / f"resp-{tag}.json")
            req.unlink()
        time.sleep(0.2)


def serve(probe_dir: str, trace: bool, streamlit_args: list[str]) -> None:
    if trace:
        import tracemalloc
        tracemalloc.start(1)
    threading.Thread(target=_probe_loop, args=(Path(probe_dir),), daemon=True, name="memory-probe").start()
    from streamlit.web import cli

    sys.argv = ["streamlit", "run", *streamlit_args]
    cli.main()


# ------------------------------------------------------------------------------------------------
# the driver
# ------------------------------------------------------------------------------------------------
def ask(folder: Path, tag: str, timeout: float = 120) -> dict:
    (folder / f"req-{tag}").write_text("")
    resp = folder / f"resp-{tag}.json"
    deadline = time.time() + timeout
    while not resp.exists():
        if time.time() > deadline:
            raise TimeoutError(f"probe {tag} unanswered")
        time.sleep(0.2)
    return json.loads(resp.read_text())


def upload_once(page, path: Path, cache: Path) -> None:
    from browser_util import choose_upload, wait_idle

    before = {p: p.stat().st_mtime_ns for p in cache.glob("session-*/uploads/*")}
    choose_upload(page, path)
    page.get_by_role("button", name="Load files").click()
    deadline = time.time() + 300
    while True:   # spooled again (same name: a new mtime) and the page idle
        now = {p: p.stat().st_mtime_ns for p in cache.glob("session-*/uploads/*") if p.exists()}
        if any(before.get(p) != t for p, t in now.items()):
            break
        if time.time() > deadline:
            raise TimeoutError("the upload never reached the session folder")
        time.sleep(0.3)
    wait_idle(page, "home", plot=True)


def row(label: str, r: dict) -> str:
    st_mb = r.get("streamlit_mb", {})
    cache_mb = sum(v for k, v in st_mb.items() if k.startswith("st_cache") or "cache_data" in k
                   or "cache_resource" in k)
    objs = r.get("objects", {})
    return (f"{label:>14} rss {r['rss_mb']:7.1f} anon {r['rss_anon_mb']:7.1f} heap {r.get('heap_in_use_mb', 0):6.1f}"
            f"+free {r.get('heap_free_mb', 0):6.1f} traced {r.get('traced_mb', float('nan')):6.1f} | "
            f"Dataset {objs.get('Dataset', 0):2d} Space {objs.get('Space', 0):3d} AppSession "
            f"{objs.get('AppSession', 0)} sessions {r.get('sessions', '?')} upload_store "
            f"{r.get('upload_store', {}).get('files', '?')} threads {r['threads']:3d} | st caches {cache_mb:6.2f} MB "
            f"| ended sessions held {r.get('ended_sessions_alive', '?')} | {r.get('platoscope', {})}"
            f"{' ' + r['streamlit_error'] if 'streamlit_error' in r else ''}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--uploads", type=int, default=30)
    ap.add_argument("--uploads2", type=int, default=10)
    ap.add_argument("--mb", type=float, default=5)
    ap.add_argument("--tracemalloc", action="store_true")
    ap.add_argument("--ttl", type=float, default=5)
    ap.add_argument("--arena-max", type=int, default=None, help="MALLOC_ARENA_MAX for the server (glibc arenas)")
    ap.add_argument("--distinct", action="store_true", help="a different file (same size) for every upload")
    ap.add_argument("--serve", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.serve:
        probe_dir, trace, *rest = args.serve
        return serve(probe_dir, trace == "1", rest)

    sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
    import numpy as np
    from browser_util import CHROMIUM, CHROMIUM_FLAGS, _free_port, wait_healthy, wait_idle
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="platoscope-upload-memory-") as d:
        tmp = Path(d)
        probe = tmp / "probe"
        probe.mkdir()
        d_ = 256
        n = int(args.mb * 2**20) // (4 * d_)
        path = tmp / "same_small_file.npy"
        np.save(path, np.random.default_rng(0).standard_normal((n, d_), dtype=np.float32))

        def file_for(i):
            if not args.distinct:
                return path
            p = tmp / f"upload{i:03d}.npy"
            if not p.exists():
                np.save(p, np.random.default_rng(i + 1).standard_normal((n, d_), dtype=np.float32))
            return p
        cache = tmp / "cache"
        port = _free_port()
        env = {**os.environ, "PYTHONPATH": str(ROOT), "PLATOSCOPE_CACHE_DIR": str(cache),
               "PLATOSCOPE_DATA_DIR": str(tmp / "server"), "PLATOSCOPE_DEMO": "0", "PLATOSCOPE_DEVICE": "cpu",
               "PLATOSCOPE_SESSION_GRACE_S": "2", "PLATOSCOPE_SWEEP_S": "1",
               **({"MALLOC_ARENA_MAX": str(args.arena_max)} if args.arena_max else {})}
        cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", str(probe),
               "1" if args.tracemalloc else "0", str(ROOT / "app.py"), "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats",
               "false", "--server.fileWatcherType", "none", "--server.disconnectedSessionTTL", str(args.ttl)]
        log = open(tmp / "server.log", "w")
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        url = f"http://127.0.0.1:{port}"
        results: list[tuple[str, dict]] = []

        def record(label):
            r = ask(probe, label.replace(" ", "_"))
            results.append((label, r))
            print(row(label, r), flush=True)
            return r

        print(f"# {args.uploads} + {args.uploads2} uploads of {'distinct' if args.distinct else 'the same'} "
              f"{path.stat().st_size / 2**20:.1f} MB .npy ({n} x {d_} float32); tracemalloc "
              f"{'on' if args.tracemalloc else 'off'}; MALLOC_ARENA_MAX {args.arena_max or 'default'}; "
              f"disconnectedSessionTTL {args.ttl} s, grace 2 s, sweep every 1 s", flush=True)
        try:
            wait_healthy(url, proc, 120)
            record("server up")
            with sync_playwright() as pw:
                browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
                for session, count in ((1, args.uploads), (2, args.uploads2)):
                    context = browser.new_context(viewport={"width": 1400, "height": 1400})
                    page = context.new_page()
                    page.set_default_timeout(180_000)
                    page.goto(url)
                    wait_idle(page, "home", plot=False)
                    record(f"s{session} open")
                    for i in range(count):
                        upload_once(page, file_for(1000 * session + i), cache)
                        record(f"s{session} up {i + 1}")
                    context.close()
                    time.sleep(args.ttl + 2 + 3)     # the session's TTL, the grace, a sweep
                    record(f"s{session} closed")
                browser.close()
            time.sleep(3)
            record("end")
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()
        # growth per upload within session 1: median step, and the slope over its second half
        s1 = [r for label, r in results if label.startswith("s1 up")]
        for key in ("rss_anon_mb", "heap_in_use_mb", "traced_mb"):
            vals = [r.get(key) for r in s1]
            if len(vals) < 4 or any(v is None for v in vals):
                continue
            steps = np.diff(vals)
            half = len(vals) // 2
            slope = np.polyfit(np.arange(half, len(vals)), vals[half:], 1)[0]
            print(f"# session 1 {key}: first {vals[0]:.1f} MB, last {vals[-1]:.1f} MB, median step "
                  f"{statistics.median(steps):+.2f} MB, slope over uploads {half + 1}-{len(vals)}: {slope:+.2f} MB "
                  f"per upload")
        final = results[-1][1]
        print("# at the end:", json.dumps({k: final.get(k) for k in ("objects", "streamlit_mb", "upload_store",
                                                                    "platoscope", "traced_top")}, indent=1))


if __name__ == "__main__":
    main()
