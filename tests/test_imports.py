"""The import graph of daimlib and the experiments, built from the source with ``ast``: no cycle, the
layer rules of the three places (issue 26: the library never imports the course layer or the
experiments; the course layer never the experiments, and the training loop only through the
library's public face), plots and data never reach the training code (issue 12 item 3), the leaf
modules import no kit module."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PKG = REPO / "daimlib"
PACKAGES = ("daimlib", "experiments")
COURSE = "daimlib.course"
LEAVES = ("daimlib.paths", "daimlib.runtime", "daimlib.metrics", "daimlib.tables")
# the training loop: the course layer reaches it only through ``daimlib`` itself (``daimlib.train``,
# ``daimlib.TrainResult``); the run's file names and readers (history, runs) are library helpers
TRAINING = ("daimlib.train",)


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def layer(mod: str) -> str:
    """ "library", "course" or "experiments"."""
    if mod.split(".")[0] == "experiments":
        return "experiments"
    return "course" if mod == COURSE or mod.startswith(COURSE + ".") else "library"


def direct_imports() -> list[tuple[str, str, int]]:
    """(module, what it names after ``import`` / ``from``, line): the import statements as written."""
    out = []
    for mod, path in _files().items():
        is_pkg = path.name == "__init__.py"
        package = mod if is_pkg else mod.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, node.lineno) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    base = ".".join(
                        package.split(".")[: len(package.split(".")) - node.level + 1]
                        + ([base] if base else [])
                    )
                out.append((mod, base, node.lineno))
    return out


def import_graph() -> dict[str, set[str]]:
    """module -> the kit modules (daimlib, experiments) it imports anywhere in its source."""
    files = _files()
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
                if t and t != mod and t not in PACKAGES:  # a package's __init__: its public face
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
    return list(
        {
            frozenset(m for m in graph if m in reachable(graph, s) and s in reachable(graph, m)) | {s}
            for s in graph
            if s in reachable(graph, s)
        }
    )


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


def test_the_library_never_imports_the_course_layer_or_the_experiments():
    g = import_graph()
    for mod, targets in g.items():
        if layer(mod) == "library":
            wrong = {t for t in targets if layer(t) != "library"}
            assert not wrong, f"{mod} imports {sorted(wrong)}"
    for mod, name, line in direct_imports():  # also `import experiments`, whose __init__ the graph skips
        if layer(mod) == "library":
            assert not name.startswith(("experiments", COURSE)), f"{mod}:{line} imports {name}"


def test_the_course_layer_never_imports_the_experiments():
    for mod, name, line in direct_imports():
        if layer(mod) == "course":
            assert name.split(".")[0] != "experiments", f"{mod}:{line} imports {name}"


def test_the_course_layer_reaches_training_only_through_the_public_face():
    """``from daimlib import train`` (the public face) is fine; ``from daimlib.train import ...``,
    ``import daimlib.history`` (the loop's own modules) are not."""
    for mod, name, line in direct_imports():
        if layer(mod) == "course":
            assert name not in TRAINING, f"{mod}:{line} imports the training loop's module {name} directly"


def test_the_layer_rules_catch_a_violation():
    assert layer("daimlib.train") == "library" and layer("daimlib.course.nb") == "course"
    assert layer("experiments.ablation") == "experiments" and layer("daimlib.course") == "course"
    bad = ast.parse("from daimlib.train import train\nfrom daimlib import train as t\n")
    names = [n.module for n in ast.walk(bad) if isinstance(n, ast.ImportFrom)]
    assert [n in TRAINING for n in names] == [True, False]


def test_plots_and_data_never_reach_the_training_code():
    g = import_graph()
    training = {
        "daimlib.train",
        "experiments.ablation",
        "daimlib.checkpoint",
        "daimlib.course.nb",
        "daimlib.model",
    }
    assert not reachable(g, "daimlib.course.viz") & training, reachable(g, "daimlib.course.viz")
    for mod in [m for m in g if m == "daimlib.data" or m.startswith("daimlib.data.")]:
        assert "daimlib.train" not in reachable(g, mod), mod


def test_leaf_modules_import_no_kit_module():
    g = import_graph()
    for leaf in LEAVES:
        assert g[leaf] == set(), (leaf, g[leaf])
