"""The shape of the house: no import cycles, one-way imports between packages, the public API.

The import graph is read from the source (``ast``), counting imports made inside functions too: they hide
a cycle from the interpreter, not from the reader.  ``python -m pytest tests/test_architecture.py`` is the
repository's own cycle check.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import networkx as nx
import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("distill", "encoders", "verifier", "benchmarks")

#: package -> the packages of ours it may import (data flows distill → encoders → verifier → benchmarks;
#: distill may use the encoders' IR and errors for export checks; verifier uses both)
ALLOWED: dict[str, frozenset[str]] = {
    "encoders": frozenset(),
    "distill": frozenset({"encoders"}),
    "verifier": frozenset({"encoders", "distill"}),
    "benchmarks": frozenset({"encoders", "distill", "verifier"}),
}


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for pkg in PACKAGES:
        for f in (ROOT / pkg).rglob("*.py"):
            name = ".".join(f.relative_to(ROOT).with_suffix("").parts)
            mods[name.removesuffix(".__init__")] = f
    return mods


def _targets(mod: str, path: Path, node: ast.AST, mods: dict[str, Path]) -> set[str]:
    """Our modules named by one import statement (``from p import m`` names ``p`` and ``p.m``)."""
    if isinstance(node, ast.Import):
        return {a.name for a in node.names if a.name in mods}
    assert isinstance(node, ast.ImportFrom)
    if node.level:
        parts = mod.split(".") if path.name == "__init__.py" else mod.split(".")[:-1]
        parts = parts[: len(parts) - node.level + 1]
        stem = ".".join(parts + ([node.module] if node.module else []))
    else:
        stem = node.module or ""
    return {m for m in [stem] + [f"{stem}.{a.name}" for a in node.names] if m in mods}


def import_graph() -> nx.DiGraph:
    mods = _modules()
    g = nx.DiGraph()
    g.add_nodes_from(mods)
    for mod, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for t in _targets(mod, path, node, mods):
                    # importing one's own package's __init__ is not a cycle worth reporting
                    if t != mod and not mod.startswith(t + "."):
                        g.add_edge(mod, t)
    return g


def test_graph_sees_function_local_imports():
    g = import_graph()
    # verifier.dispatch imports the searches inside a function: the edge must be seen
    assert g.has_edge("verifier.dispatch", "verifier.search.input_split")


def test_no_import_cycles():
    cycles = [sorted(c) for c in nx.strongly_connected_components(import_graph()) if len(c) > 1]
    assert cycles == [], f"import cycles: {cycles}"


def test_imports_run_one_way():
    bad = [
        f"{a} -> {b}"
        for a, b in import_graph().edges
        if a.split(".")[0] != b.split(".")[0] and b.split(".")[0] not in ALLOWED[a.split(".")[0]]
    ]
    assert bad == [], "not one-way distill → encoders → verifier → benchmarks: " + "; ".join(bad)


def test_public_api_resolves():
    import verifier

    for name in verifier.__all__:
        assert getattr(verifier, name) is not None, name
    with pytest.raises(AttributeError):
        verifier.no_such_name  # noqa: B018


def test_readme_api_example_runs(tmp_path, monkeypatch):
    """The README's Python API example (the block after ``<!-- api-example -->``) runs as written."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"<!-- api-example -->\s*```python\n(.*?)```", text, re.S)
    assert m, "README.md has no <!-- api-example --> python block"
    monkeypatch.chdir(tmp_path)
    exec(compile(m.group(1), "README.md:api-example", "exec"), {"__name__": "readme_example"})
