import io
import json
import shutil
import zipfile

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest

from core import Dataset, Space, SourceFile
from core.export import (ExportUnavailable, build_manifest, export_bundle, figure_bytes, json_safe,
                         table_bytes)


def _ds(rng):
    return Dataset(None, [Space("a", rng.normal(size=(5, 3)))],
                   sources=[SourceFile("a.npy", "ab" * 32, 123)], name="t")


def test_manifest_records_versions_inputs_and_params(rng):
    ds = _ds(rng)
    m = build_manifest(view="home/map", params={"k": np.int64(5), "x": np.float32(0.5)}, seeds=[0, 1], dataset=ds)
    assert m["parameters"] == {"k": 5, "x": 0.5}
    assert m["seeds"] == [0, 1]
    assert m["inputs"] == [{"name": "a.npy", "sha256": "ab" * 32, "bytes": 123}]
    assert m["dataset"]["fingerprint_sha256"] == ds.fingerprint
    assert m["packages"]["numpy"] == np.__version__
    json.dumps(m, allow_nan=False)  # JSON-safe


def test_json_safe_replaces_nan_and_numpy():
    assert json_safe({"a": np.array([1.0, np.nan]), "b": (np.int32(2),)}) == {"a": [1.0, None], "b": [2]}


def test_table_bytes_roundtrip():
    df = pd.DataFrame({"id": ["a", "b"], "x": [1.5, 2.5]})
    back = pd.read_csv(io.BytesIO(table_bytes(df, "csv")))
    pd.testing.assert_frame_equal(back, df)
    payload = json.loads(table_bytes(df, "json", {"view": "v"}))
    assert payload["manifest"] == {"view": "v"} and payload["data"][1] == {"id": "b", "x": 2.5}
    with pytest.raises(ValueError):
        table_bytes(df, "xlsx")


def test_figure_html_and_bundle(rng):
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    html = figure_bytes(fig, "html")
    assert b"<html" in html[:100] and b"plotly" in html.lower()
    manifest = build_manifest(view="t", dataset=_ds(rng))
    blob = export_bundle(name="fig", manifest=manifest, fig=fig, table=pd.DataFrame({"a": [1]}),
                         figure_formats=("html",))
    with zipfile.ZipFile(io.BytesIO(blob)) as zf:
        assert set(zf.namelist()) == {"fig.html", "fig.csv", "fig.json", "manifest.json"}
        assert json.loads(zf.read("manifest.json"))["view"] == "t"


@pytest.mark.skipif(shutil.which("chromium") is None and shutil.which("google-chrome") is None,
                    reason="static export needs Chromium (installed by .ci/run)")
def test_figure_svg_png_with_chromium():
    fig = go.Figure(go.Scatter(x=[0, 1], y=[1, 0]))
    svg = figure_bytes(fig, "svg", width=200, height=150)
    assert b"<svg" in svg[:500]
    png = figure_bytes(fig, "png", width=200, height=150)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_unknown_figure_format():
    with pytest.raises(ValueError):
        figure_bytes(go.Figure(), "bmp")


def test_csv_cells_cannot_run_as_formulas():
    import csv
    import io

    from core.export import table_bytes

    cells = ['=HYPERLINK("http://127.0.0.1:9/x","click")', "@SUM(A1:A2)", "+1+2", "-2+3", "\tx", "\rx",
             "plain", "a=b"]
    table = pd.DataFrame({"id": cells, "score": [-0.5, 1.0, -2.0, 3.0, 0.0, 1.5, -1.0, 2.0],
                          "=bad header": list(range(len(cells)))})
    rows = list(csv.reader(io.StringIO(table_bytes(table, "csv").decode(), newline="")))
    assert rows[0] == ["id", "score", "'=bad header"]
    # OWASP: text starting with = + - @ tab CR gets a leading single quote; other text and numbers unchanged
    expected = ["'" + c if c[0] in "=+-@\t\r" else c for c in cells]
    assert [r[0] for r in rows[1:]] == expected
    assert [float(r[1]) for r in rows[1:]] == table["score"].tolist()  # negative numbers stay numbers
    assert rows[1][1] == "-0.5"


class _FlakyFigure:
    """Stands in for a plotly figure whose renderer fails the first ``failures`` times with ``error``."""

    def __init__(self, error: Exception, failures: int):
        self.error, self.failures, self.calls = error, failures, 0

    def to_image(self, **kwargs):
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return b"\x89PNG-rendered"


def test_figure_bytes_retries_a_page_that_was_not_ready():
    # kaleido's page can miss its scripts on a loaded machine ("kaleido_scopes is not defined"): retried
    fig = _FlakyFigure(RuntimeError("ReferenceError: kaleido_scopes is not defined"), failures=1)
    assert figure_bytes(fig, "png") == b"\x89PNG-rendered"
    assert fig.calls == 2


def test_figure_bytes_does_not_retry_without_a_browser():
    ChromeNotFoundError = type("ChromeNotFoundError", (RuntimeError,), {})
    fig = _FlakyFigure(ChromeNotFoundError("no chrome"), failures=10)
    with pytest.raises(ExportUnavailable, match="ChromeNotFoundError"):
        figure_bytes(fig, "svg")
    assert fig.calls == 1


def test_static_export_check_runs_off_the_script_thread(monkeypatch):
    """The kaleido check (a render through Chrome, seconds) runs once, on its own thread: a page asking for it
    gets None (unknown) at once, then the answer."""
    import threading

    from ui import widgets

    release = threading.Event()
    calls = []

    def slow_render(fig, fmt, **kw):
        calls.append(threading.current_thread().name)
        release.wait(60)
        raise ExportUnavailable("no browser here")

    monkeypatch.setattr(widgets.core_export, "figure_bytes", slow_render)
    monkeypatch.setattr(widgets, "_STATIC_EXPORT", {"ok": None, "thread": None})
    assert widgets._static_export_ok() is None          # answered while the check is still rendering
    assert widgets._static_export_ok() is None
    release.set()
    widgets._STATIC_EXPORT["thread"].join(60)
    assert widgets._static_export_ok() is False
    assert calls == ["platoscope-kaleido-probe"]          # once, not on the caller's thread
    assert widgets._figure_formats() == ("html",)
