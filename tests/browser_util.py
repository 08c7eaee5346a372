"""Helpers for the real-browser tests: start the app with `streamlit run`, drive Debian's chromium with playwright.

Never runs `playwright install`: the browser is /usr/bin/chromium (installed by .ci/run when missing).
Screenshots go to tests/screenshots/ (git-ignored).
"""
from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCREENSHOTS = ROOT / "tests" / "screenshots"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--enable-unsafe-swiftshader"]


def require_browser():
    """Skip when chromium or playwright is missing, except where CI demands the browser test."""
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append("chromium (apt-get install -y chromium)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("the playwright package")
    if missing:
        msg = "browser test needs " + " and ".join(missing)
        if os.environ.get("PLATOSCOPE_REQUIRE_BROWSER") == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url: str, proc: subprocess.Popen, timeout: float = 90.0) -> None:
    """Wait until the server at ``url`` (started as ``proc``) answers its health check."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"streamlit exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("streamlit did not become healthy in time")


@contextmanager
def streamlit_server(env_extra: dict | None = None, timeout: float = 90.0):
    port = _free_port()
    env = {**os.environ, **(env_extra or {})}
    env.setdefault("PLATOSCOPE_DEVICE", "cpu")
    log = open(SCREENSHOTS.parent / ".streamlit-test.log", "w") if SCREENSHOTS.parent.exists() else None
    cmd = [sys.executable, "-m", "streamlit", "run", str(ROOT / "app.py"), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log or subprocess.DEVNULL, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_healthy(url, proc, timeout)
        yield url, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        if log:
            log.close()


@contextmanager
def browser_page(width: int = 1400, height: int = 1800):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(120_000)
            yield page
        finally:
            browser.close()


def wait_idle(page, marker: str | None = None, plot: bool = True, timeout: float = 180_000):
    """Wait for the app shell, the page marker, a plot, and the 'running' status widget to disappear."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    if marker:
        page.wait_for_selector(f"#ps-page-{marker}", state="attached", timeout=timeout)
    if plot:
        page.wait_for_selector(".main-svg", timeout=timeout)
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout)
    page.wait_for_timeout(800)


def choose_upload(page, path, attempts: int = 6) -> None:
    """Put ``path`` in the sidebar's embeddings uploader and wait until "Load files" is enabled (the uploader may be
    redrawn, under a new key, while the file is set: then it is set again)."""
    if not page.get_by_role("button", name="Load files").is_visible():
        page.get_by_text("Upload embeddings", exact=False).first.click()
    for attempt in range(attempts):
        page.locator('[data-testid="stFileUploaderDropzoneInput"]').first.set_input_files(str(path))
        try:
            page.wait_for_function("() => [...document.querySelectorAll('button')].some("
                                   "b => b.innerText.trim() === 'Load files' && !b.disabled)", timeout=30_000)
            return
        except Exception:
            if attempt == attempts - 1:
                raise


def wait_painted(page, marker: str, timeout: float = 120_000):
    """A view has painted: its marker, and either a plot (plotly, or a drawn SVG chart of ui/svgchart_frontend), a running
    job's progress box, or a message."""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    page.wait_for_selector(f"#ps-page-{marker}", state="attached", timeout=timeout)
    page.wait_for_function(
        "() => document.querySelector('.main-svg') || document.querySelector('.ps-job-running') || "
        "document.querySelector('.ps-svgchart[data-svgchart-painted]') || "
        "document.querySelector('[data-testid=\"stAlert\"]')", timeout=timeout)
    page.wait_for_timeout(500)


def job_id(page, timeout: float = 120_000) -> str:
    """The id of the job whose progress box is shown (waits for the box)."""
    page.wait_for_selector(".ps-job-running", state="attached", timeout=timeout)
    return page.locator(".ps-job-running").first.get_attribute("data-job")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def assert_no_traceback(page):
    text = page.inner_text("body")
    assert "Traceback" not in text, text[:2000]
    assert page.locator('[data-testid="stException"]').count() == 0
