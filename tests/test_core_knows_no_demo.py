"""core/ knows no demo: outside core/demo (the demo itself) and core/commands (the CLI, whose default dataset is the
built-in demo) no module compares an origin with "demo", imports the demo package, or names a demo space."""
import ast
from pathlib import Path

import pytest

from core.demo import TOKEN_SPACES, VECTOR_SPACES
from tests.conftest import ROOT

CORE = ROOT / "core"
ALLOWED = (CORE / "demo", CORE / "commands")
#: demo space names that are no encoder's name ('minilm' also names the bundled MiniLM encoder)
DEMO_NAMES = ({*VECTOR_SPACES, *TOKEN_SPACES, "point_clouds", "cloud_index"} - {"minilm"})


def _modules():
    return sorted(p for p in CORE.rglob("*.py") if not any(p.is_relative_to(a) for a in ALLOWED))


def _docstrings(tree):
    out = set()
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            out.add(id(body[0].value))
    return out


def demo_knowledge(path: Path) -> list[str]:
    """Where ``path`` knows the demo: (line, what) for each place."""
    tree = ast.parse(path.read_text(), str(path))
    docs = _docstrings(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Compare):
            consts = [c.value for c in [node.left, *node.comparators] if isinstance(c, ast.Constant)]
            consts += [e.value for c in node.comparators if isinstance(c, (ast.Tuple, ast.List, ast.Set))
                       for e in c.elts if isinstance(e, ast.Constant)]
            if "demo" in consts:
                found.append(f"{node.lineno}: compares with 'demo'")
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if mod == "demo" or mod.startswith("demo.") or mod.startswith("core.demo") \
                    or (node.level and mod == "" and any(a.name == "demo" for a in node.names)):
                found.append(f"{node.lineno}: imports the demo ({'.' * node.level}{mod})")
        elif isinstance(node, ast.Import):
            if any(a.name.startswith("core.demo") for a in node.names):
                found.append(f"{node.lineno}: imports core.demo")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docs:
            if node.value in DEMO_NAMES:
                found.append(f"{node.lineno}: names the demo space '{node.value}'")
    return found


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(ROOT)))
def test_core_module_knows_no_demo(path):
    assert demo_knowledge(path) == []


def test_the_check_finds_demo_knowledge(tmp_path):
    # the detector itself, on the patterns core/ used to have
    bad = tmp_path / "bad.py"
    bad.write_text('"""doc naming pointnet is fine"""\n'
                   'def f(ds):\n'
                   '    if ds.origin == "demo":\n'
                   '        from .demo import demo_point_clouds\n'
                   '    return {"3d": ("pointnet",)}\n')
    found = demo_knowledge(bad)
    assert [f.split(":")[0] for f in found] == ["3", "4", "5"]
    assert len(_modules()) > 30
