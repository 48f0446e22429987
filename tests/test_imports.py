"""The import graph of daimlib and the experiments, built from the source with ``ast``: no import cycle
(among the imports that run when a module loads; an import inside a function runs at call time), the
layer rules of the three places (issue 26: the library never imports the course layer or the
experiments; the course layer never the experiments, and the training loop only through the
library's public face; no layer imports another module's private names), ``import daimlib.data`` and
``import daimlib.hub`` load neither the loss nor the model, plots and data never reach the training
code (issue 12 item 3), the leaf modules import no kit module."""

from __future__ import annotations

import ast
import functools
import subprocess
import sys
from pathlib import Path

import pytest

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


@functools.cache
def _parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(), str(path))


@functools.cache
def _files() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}


def layer(mod: str) -> str:
    """ "library", "course" or "experiments"."""
    if mod.split(".")[0] == "experiments":
        return "experiments"
    return "course" if mod == COURSE or mod.startswith(COURSE + ".") else "library"


def _absolute(node: ast.ImportFrom, package: str) -> str:
    if not node.level:
        return node.module or ""
    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def direct_imports(names: bool = False) -> list[tuple]:
    """(module, what it names after ``import`` / ``from``, line): the import statements as written;
    with ``names``, also the names a ``from`` import takes (``()`` for ``import x``)."""
    out = []
    for mod, path in _files().items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        for node in ast.walk(_parse(path)):
            if isinstance(node, ast.Import):
                out += [(mod, a.name, node.lineno, ()) for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                out.append((mod, _absolute(node, package), node.lineno, tuple(a.name for a in node.names)))
    return out if names else [row[:3] for row in out]


def _load_time_nodes(tree: ast.Module):
    """The import statements that run when the module loads: not those inside a function."""
    todo = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def import_graph(load_time: bool = False) -> dict[str, set[str]]:
    return {m: set(t) for m, t in _graph(load_time).items()}  # a copy: callers may change it


@functools.cache
def _graph(load_time: bool) -> dict[str, frozenset[str]]:
    """module -> the kit modules (daimlib, experiments) it imports anywhere in its source (with
    ``load_time``: only the imports that run when it loads)."""
    files = _files()
    graph: dict[str, set[str]] = {m: set() for m in files}
    for mod, path in files.items():
        package = mod if path.name == "__init__.py" else mod.rpartition(".")[0]
        tree = _parse(path)
        for node in _load_time_nodes(tree) if load_time else ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _absolute(node, package)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]
            else:
                continue
            for t in targets:
                while t and t not in files:  # daimlib.data.karpathy.load_image -> daimlib.data.karpathy
                    t = t.rpartition(".")[0]
                if t and t != mod and t not in PACKAGES:  # a package's __init__: its public face
                    graph[mod].add(t)
    return {m: frozenset(t) for m, t in graph.items()}


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


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_graph_is_built_from_real_imports():
    g = import_graph()
    assert "daimlib.evaluate" in g["daimlib.train"] and "daimlib.config" in g["daimlib.checkpoint"]
    assert "daimlib.data.split" in g["daimlib.data.datasets"]  # absolute imports of a subpackage
    assert "daimlib.fdm" in g["daimlib.encoders"]  # relative imports
    assert {"daimlib.metrics", "daimlib.paths"} <= g["daimlib.course.viz"]


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_no_import_cycle_anywhere_in_daimlib():
    found = cycles(import_graph(load_time=True))
    assert not found, f"import cycles: {[sorted(c) for c in found]}"


def test_load_time_graph_leaves_out_only_imports_inside_functions():
    full, load = import_graph(), import_graph(load_time=True)
    assert all(load[m] <= full[m] for m in full)
    # checkpoint builds a DAIM (model) and a MatchingLoss (losses) only when asked to: deferred imports
    assert {"daimlib.model", "daimlib.losses"} <= full["daimlib.checkpoint"]
    assert not {"daimlib.model", "daimlib.losses"} & load["daimlib.checkpoint"]
    assert "daimlib.hub" in load["daimlib.model"]  # DAIM's base class: a load-time import


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


def _is_private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def test_no_module_imports_private_names_of_another_kit_module():
    """The course layer and the experiments use the library's public names only (and the experiments
    the course layer's); inside the library, too, a private name stays in its module."""
    for mod, base, line, names in direct_imports(names=True):
        if base.split(".")[0] in PACKAGES:
            private = [n for n in names if _is_private(n)]
            assert not private, f"{mod}:{line} imports private names {private} from {base}"


def _kit_names(tree: ast.Module, package: str) -> set[str]:
    """The local names a module binds to kit modules or objects by its imports."""
    out = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Import):
            out |= {(a.asname or a.name).split(".")[0] for a in n.names if a.name.split(".")[0] in PACKAGES}
        elif isinstance(n, ast.ImportFrom) and _absolute(n, package).split(".")[0] in PACKAGES:
            out |= {a.asname or a.name for a in n.names}
    return out


def test_course_and_experiments_use_no_private_attribute_of_a_kit_module():
    for mod, path in _files().items():
        if layer(mod) == "library":
            continue
        tree = _parse(path)
        kit = _kit_names(tree, mod if path.name == "__init__.py" else mod.rpartition(".")[0])
        for n in ast.walk(tree):
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in kit:
                assert not _is_private(n.attr), f"{mod}:{n.lineno} uses {n.value.id}.{n.attr}"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_data_and_hub_load_neither_the_loss_nor_the_model():
    code = (
        "import sys, daimlib.data, daimlib.hub, daimlib.checkpoint\n"
        "print(sorted(m for m in ('daimlib.losses', 'daimlib.model', 'daimlib.train') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
    # the same from the source: what loads with them reaches no loss
    load = import_graph(load_time=True)
    for mod in ("daimlib.data", "daimlib.hub", "daimlib.checkpoint"):
        assert not {"daimlib.losses", "daimlib.model"} & (reachable(load, mod) | load[mod]), mod


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


MAX_FUNCTION_LINES = 80


def _long_functions(source: str, name: str) -> list[str]:
    """``name:function (lines)`` for every function of ``source`` longer than the limit (docstring included)."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                out.append(f"{name}:{node.name} ({lines})")
    return out


def test_no_function_in_the_kit_is_over_80_lines():
    """Library, course layer, experiments and scripts: a function a reader takes in at once (benchmarks apart)."""
    files = [p for d in ("daimlib", "experiments", "scripts") for p in sorted((REPO / d).rglob("*.py"))]
    assert len(files) > 50
    long = [f for p in files for f in _long_functions(p.read_text(), str(p.relative_to(REPO)))]
    assert not long, f"split these functions: {long}"


def test_the_length_rule_counts_a_long_function_and_spares_a_short_one():
    body = "\n".join(f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES))
    assert _long_functions(f"def long():\n{body}\n", "m") == [f"m:long ({MAX_FUNCTION_LINES + 1})"]
    assert _long_functions(f"def short():\n{body[: body.rindex(chr(10))]}\n", "m") == []
