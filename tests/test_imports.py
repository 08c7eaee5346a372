"""Layering of core/ and ui/: every module imports on its own, and the import graph has no cycles.

The graph is read from the source (every ``import`` statement, the ones inside functions included: a lazy import
hides a cycle from the interpreter, not from the reader). Each module is imported in a fresh process of its own
(forked from one that has loaded only third-party libraries), so an order-dependent import shows up.
"""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("core", "ui")

#: Cycles that other work in progress introduced and still has to take apart (the lead tracks them). This list
#: may only shrink: a new cycle fails the test, and so does a listed one that is gone (remove it here). Empty: core/
#: and ui/ have no import cycle left.
KNOWN_CYCLES: set[frozenset[str]] = set()


def _modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for f in sorted((ROOT / pkg).rglob("*.py")):
            parts = list(f.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts = parts[:-1]
            if parts[-1] == "__main__":
                continue
            out[".".join(parts)] = f
    return out


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Project modules that ``name`` imports anywhere in its source."""
    is_pkg = path.name == "__init__.py"
    deps = set()
    for node in ast.walk(ast.parse(path.read_text())):
        targets = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[:len(base) - (node.level - 1)]
                prefix = ".".join(base + ([node.module] if node.module else []))
            else:
                prefix = node.module or ""
            targets = [prefix] + [f"{prefix}.{a.name}" for a in node.names]
        for t in targets:
            # "import core.x.y" depends on core.x.y (its parents are packages, not the dependency meant)
            if t in modules and t != name:
                deps.add(t)
    return deps


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10000))

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(frozenset(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_cycle_finder_on_a_hand_made_graph():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set(), "f": {"g"}, "g": {"f"}}
    assert set(_cycles(g)) == {frozenset("abc"), frozenset("fg")}


def test_import_graph_has_no_new_cycles():
    modules = _modules()
    graph = {m: _imports(m, p, modules) for m, p in modules.items()}
    # the layering this work fixed stays fixed
    assert "core.radial" not in graph["core.hierarchy"] and "ui.widgets" not in graph["ui.sidebar"]
    found = set(_cycles(graph))
    new = found - KNOWN_CYCLES
    assert not new, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in new)
    gone = KNOWN_CYCLES - found
    assert not gone, "these cycles are gone, remove them from KNOWN_CYCLES: " + "; ".join(
        " <-> ".join(sorted(c)) for c in gone)


_CHILD = r"""
import importlib, json, os, sys, warnings
warnings.simplefilter("ignore")
for lib in ("numpy", "pandas", "scipy", "sklearn", "torch", "streamlit", "plotly"):
    try:
        importlib.import_module(lib)
    except Exception:
        pass
failed = {}
for name in json.loads(sys.argv[1]):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            importlib.import_module(name)
            code = 0
        except BaseException as exc:  # report any failure of the import itself
            os.write(w, f"{type(exc).__name__}: {exc}".encode()[:2000])
            code = 1
        os._exit(code)
    os.close(w)
    msg = b""
    while True:
        chunk = os.read(r, 4096)
        if not chunk:
            break
        msg += chunk
    os.close(r)
    _, status = os.waitpid(pid, 0)
    if status:
        failed[name] = msg.decode(errors="replace") or f"exit status {status}"
print(json.dumps(failed))
"""


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_every_module_imports_on_its_own():
    names = sorted(_modules())
    proc = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(names)], cwd=ROOT, capture_output=True,
                          text=True, timeout=900, env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    failed = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not failed, failed


def test_no_view_relies_on_streamlit_magic():
    """.streamlit/config.toml turns Streamlit's magic off: a bare value on its own line of app.py or a view would
    silently show nothing. Calls, docstrings and ``...`` are fine."""
    import tomllib

    assert tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["runner"]["magicEnabled"] is False
    bare = []
    for f in [ROOT / "app.py", *sorted((ROOT / "pages").glob("*.py"))]:
        tree = ast.parse(f.read_text())
        for parent in ast.walk(tree):
            for field in ("body", "orelse", "finalbody"):
                body = getattr(parent, field, None)
                if not isinstance(body, list):
                    continue
                for i, node in enumerate(body):
                    if not isinstance(node, ast.Expr) or isinstance(node.value, (ast.Call, ast.Await, ast.Yield,
                                                                                   ast.YieldFrom)):
                        continue
                    docstring = (field == "body" and i == 0 and isinstance(node.value, ast.Constant)
                                 and isinstance(node.value.value, str)
                                 and isinstance(parent, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef,
                                                         ast.ClassDef)))
                    if not docstring and not (isinstance(node.value, ast.Constant) and node.value.value is ...):
                        bare.append(f"{f.relative_to(ROOT)}:{node.lineno}: {ast.unparse(node)[:60]}")
    assert not bare, bare
