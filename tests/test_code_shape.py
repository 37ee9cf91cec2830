"""The shape of the code, checked: packages import one another one way only, and ruff's small rule set
(pyflakes, syntax errors, bugbear, and a complexity limit per function) holds everywhere."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "spikedriven"


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The nodes under ``if TYPE_CHECKING:``: imports for annotations, never run."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skipped


def _imported_packages(path: Path) -> set[str]:
    """The top-level parts of ``spikedriven`` (a sub-package or a module) that ``path`` imports, wherever in
    the file the import is (a function-level import is an import too)."""
    tree = ast.parse(path.read_text())
    skipped = _type_checking_only(tree)
    here = list(path.relative_to(PACKAGE).parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.ImportFrom) and node.level:
            base = here[:len(here) - (node.level - 1)]
            names = [node.module] if node.module else [alias.name for alias in node.names]
            found.update((base + name.split("."))[0] for name in names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("spikedriven."):
            found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(a.name.split(".")[1] for a in node.names if a.name.startswith("spikedriven."))
    # a name that is neither a sub-package nor a module is the package's own (``from .. import __version__``)
    return {name if (PACKAGE / name).is_dir() or (PACKAGE / f"{name}.py").is_file() else "__init__" for name in found}


def package_graph() -> dict[str, set[str]]:
    """Which top-level part of the package imports which (``cli -> study``), each part's own imports left out."""
    graph: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE).parts
        part = parts[0] if len(parts) > 1 else path.stem
        graph[part].update(p for p in _imported_packages(path) if p != part)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, as the path that closes it (depth-first; each cycle found once per entry point)."""
    found, state = [], {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_cycle_finder_finds_a_cycle_and_passes_a_chain():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


def test_the_import_walker_sees_function_level_imports_and_skips_type_checking_ones(tmp_path, monkeypatch):
    pkg = tmp_path / "spikedriven"
    (pkg / "engine").mkdir(parents=True)
    source = pkg / "engine" / "x.py"
    source.write_text("from typing import TYPE_CHECKING\nfrom ..data import a\nif TYPE_CHECKING:\n"
                      "    from ..config import Config\n\ndef f():\n    from ..analysis import b\n"
                      "    from . import loop\n")
    (pkg / "data").mkdir()
    (pkg / "analysis.py").write_text("")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", pkg)
    assert _imported_packages(source) == {"data", "analysis", "engine"}
    source.write_text("from .. import __version__\n")
    assert _imported_packages(source) == {"__init__"}


def test_the_packages_import_one_another_one_way():
    """Data flows one way (config -> data -> model -> engine -> reports): no part of the package imports a
    part that imports it back, directly or through others, not even inside a function."""
    graph = package_graph()
    assert {"engine", "analysis", "config", "neurons", "models", "cli"} <= set(graph)
    found = cycles(graph)
    assert not found, "import cycles: " + "; ".join(" -> ".join(c) for c in found)


def test_ruff_finds_nothing():
    """The rule set in pyproject.toml ([tool.ruff.lint]): pyflakes and syntax errors everywhere; bugbear and
    the per-function complexity limit in the package."""
    ruff = [sys.executable, "-m", "ruff"]
    if subprocess.run(ruff + ["--version"], capture_output=True).returncode != 0:
        if shutil.which("ruff") is None:
            pytest.fail("ruff is not installed: install the test extra (pip install -e '.[test]')")
        ruff = ["ruff"]
    done = subprocess.run(ruff + ["check", "--output-format", "concise", "src", "tests", "benchmarks", "docs"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
