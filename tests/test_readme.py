"""The README's Python API reference matches the code, and its links stay inside the repository."""
from __future__ import annotations

import importlib
import re

from tests.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _api_rows() -> list[tuple[list[str], list[str]]]:
    """(modules, names) of every row of the table under '### Reference'."""
    section = README.split("### Reference", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        if not line.startswith("| `core"):
            continue
        cells = line.strip().strip("|").split("|")
        modules = re.findall(r"`(core[\w.]*)`", cells[0])
        rows.append((modules, _names(cells[1])))
    return rows


def _names(cell: str) -> list[str]:
    """The leading identifier of every backticked entry outside parentheses (those inside describe attributes,
    arguments or environment variables of the entry before them)."""
    kept, depth, in_code = [], 0, False
    for ch in cell:
        if ch == "`":
            in_code = not in_code
        elif not in_code and ch == "(":
            depth += 1
            continue
        elif not in_code and ch == ")":
            depth -= 1
            continue
        if depth == 0:
            kept.append(ch)
    names = []
    for code in re.findall(r"`([^`]+)`", "".join(kept)):
        m = re.match(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", code)
        if m:
            names.append(m.group(0))   # a dotted ``core.x.y`` names its own module
    return names


def _importable(name: str, modules) -> bool:
    if name.startswith("core."):
        mod, _, attr = name.rpartition(".")
        try:
            return hasattr(importlib.import_module(mod), attr)
        except ImportError:
            return _module_exists(name)
    return any(hasattr(m, name) for m in modules)


def _module_exists(name: str) -> bool:
    try:
        importlib.import_module(name)
        return True
    except ImportError:
        return False


def test_the_table_is_parsed():
    rows = _api_rows()
    assert len(rows) >= 15
    flat = {n for _, names in rows for n in names}
    assert {"CCA", "linear_cka", "GPA", "StreamingMoments", "Estimator", "NotFittedError"} <= flat
    assert _names("`A(x)` (`.n`, `b_`), `C` (+ `d`), `e`; `core.m.f`") == ["A", "C", "e", "core.m.f"]
    assert _importable("core.numerics.spearman", []) and not _importable("core.numerics.nothing_here", [])


def test_every_name_in_the_api_table_is_importable():
    missing = []
    for modules, names in _api_rows():
        mods = [importlib.import_module(m) for m in modules]
        for name in names:
            if not _importable(name, mods):
                missing.append(f"{'/'.join(modules)}.{name}")
    assert not missing, missing


def _documented() -> tuple[dict[str, set[str]], set[tuple[str, int]]]:
    """Every name the API table mentions, per module of its row (inside parentheses too: ``GCCA``
    (``GCCA_VARIANTS``) documents both), and the (name, object) pairs they resolve to."""
    section = README.split("### Reference", 1)[1].split("\n## ", 1)[0]
    names: dict[str, set[str]] = {}
    for line in section.splitlines():
        if not line.startswith("| `core"):
            continue
        cells = line.strip().strip("|").split("|")
        modules = re.findall(r"`(core[\w.]*)`", cells[0])
        for code in re.findall(r"`([^`]+)`", "|".join(cells[1:])):
            m = re.match(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", code)
            if not m:
                continue
            if m.group(0).startswith("core."):
                mod, _, attr = m.group(0).rpartition(".")
                names.setdefault(mod, set()).add(attr)
            else:
                for mod in modules:
                    names.setdefault(mod, set()).add(m.group(0))
    objects = set()
    for mod, found in names.items():
        try:
            module = importlib.import_module(mod)
        except ImportError:
            continue
        objects |= {(n, id(getattr(module, n))) for n in found if hasattr(module, n)}
    return names, objects


def test_every_public_name_is_in_the_api_table():
    """Each name of a core module's ``__all__`` is in the table: in its module's row, or (a package, or an old
    module kept for one release, re-exporting it) as the same object under another module's row.
    core.commands is left out: the CLI's plugins (NAME, HELP, run, render) are documented under "Command line"."""
    import pkgutil

    import core

    names, objects = _documented()
    missing = []
    for info in pkgutil.walk_packages(core.__path__, "core."):
        if info.name.endswith("__main__") or info.name.startswith("core.commands"):
            continue
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            if name not in names.get(info.name, ()) and (name, id(getattr(module, name))) not in objects:
                missing.append(f"{info.name}.{name}")
    assert not missing, f"public names the README's API reference does not list: {missing}"


def test_methods_reference_travels_with_the_code():
    assert "../shared" not in README
    assert "docs/METHODS.md" in README and (ROOT / "docs" / "METHODS.md").exists()
    # every code pointer of the methods reference names a module that exists
    text = (ROOT / "docs" / "METHODS.md").read_text()
    pointers = set(re.findall(r"`(core/[\w/]+\.py)", text))
    assert pointers and all((ROOT / p).exists() for p in pointers), sorted(p for p in pointers
                                                                          if not (ROOT / p).exists())


def test_every_environment_variable_the_code_reads_is_in_the_readme():
    """Each ``PLATOSCOPE_*`` variable the app or the core names (as a string: what ``os.environ`` is asked for)
    is documented in the README."""
    files = [ROOT / "app.py", *(p for folder in ("core", "ui", "pages") for p in (ROOT / folder).rglob("*.py"))]
    named = set()
    for path in files:
        named |= set(re.findall(r"[\"'](PLATOSCOPE_[A-Z0-9_]+)[\"']", path.read_text()))
    assert {"PLATOSCOPE_DEVICE", "PLATOSCOPE_BF16_SCREEN", "PLATOSCOPE_MAX_JOBS"} <= named   # the pattern finds them
    assert not sorted(v for v in named if v not in README), sorted(v for v in named if v not in README)
