"""The import graph of daimlib, built from the source with ``ast``: no cycle, plots and data never
reach the training code (issue 12 item 3), the leaf modules import no kit module."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "daimlib"
LEAVES = ("daimlib.paths", "daimlib.runtime", "daimlib.metrics", "daimlib.tables")
# Cycles that exist on main and are being removed by another item; each entry must still be a cycle
# (the test fails when it disappears, so the entry is deleted then).
KNOWN_CYCLES = {
    frozenset({"daimlib.data.karpathy", "daimlib.data.coco_ids"})
}  # issue 12 item 4 (helper data)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict[str, set[str]]:
    """module -> the daimlib modules it imports anywhere in its source (top level or in functions)."""
    files = {_module_name(p): p for p in PKG.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(base + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # daimlib.data.karpathy.load_image -> daimlib.data.karpathy
                    t = t.rpartition(".")[0]
                if t and t != mod and t != "daimlib":  # the package __init__ holds only the version
                    graph[mod].add(t)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()]:
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """The strongly connected components with more than one module (every cycle lies in one)."""
    return list({frozenset(m for m in graph if m in reachable(graph, s) and s in reachable(graph, m)) | {s}
                 for s in graph if s in reachable(graph, s)})  # fmt: skip


def test_the_graph_is_built_from_real_imports():
    g = import_graph()
    assert "daimlib.evaluate" in g["daimlib.train"] and "daimlib.config" in g["daimlib.checkpoint"]
    assert "daimlib.data.split" in g["daimlib.data.datasets"]  # absolute imports of a subpackage
    assert "daimlib.fdm" in g["daimlib.encoders"]  # relative imports
    assert {"daimlib.metrics", "daimlib.paths"} <= g["daimlib.course.viz"]


def test_no_import_cycle_anywhere_in_daimlib():
    found = cycles(import_graph())
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


def test_the_cycle_finder_finds_a_cycle():
    g = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(g) == [frozenset({"a", "b", "c"})]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_plots_and_data_never_reach_the_training_code():
    g = import_graph()
    training = {"daimlib.train", "experiments.ablation", "daimlib.checkpoint", "daimlib.course.nb", "daimlib.model"}
    assert not reachable(g, "daimlib.course.viz") & training, reachable(g, "daimlib.course.viz")
    for mod in [m for m in g if m == "daimlib.data" or m.startswith("daimlib.data.")]:
        assert "daimlib.train" not in reachable(g, mod), mod


def test_leaf_modules_import_no_kit_module():
    g = import_graph()
    for leaf in LEAVES:
        assert g[leaf] == set(), (leaf, g[leaf])
