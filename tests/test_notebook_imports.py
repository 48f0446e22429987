"""Every ``daimlib`` / ``experiments`` import in every notebook code cell names something that exists,
and every attribute the cells read from an imported kit module (``nb.setup``, ``viz.save_figure``)
is there: a module moved or a helper renamed fails here, not half-way through a notebook run."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import json
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
KIT = ("daimlib", "experiments")


def _code(path: Path) -> str:
    """The notebook's code cells as one module, IPython magics and shell lines left out."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    lines = [ln for c in cells for ln in "".join(c["source"]).splitlines() + [""]]
    return "\n".join("" if ln.lstrip().startswith(("%", "!")) else ln for ln in lines)


def kit_imports(source: str) -> tuple[list[tuple[str, str | None, int]], dict[str, str]]:
    """``(module, name or None, line)`` for each kit import, and the local names bound to kit modules."""
    found, modules = [], {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.split(".")[0] in KIT:
                    found.append((a.name, None, node.lineno))
                    if a.asname:
                        modules[a.asname] = a.name
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in KIT:
            for a in node.names:
                found.append((node.module, a.name, node.lineno))
                full = f"{node.module}.{a.name}"
                if _is_module(full):
                    modules[a.asname or a.name] = full
    return found, modules


def _is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ImportError:  # a parent that is not a package, or not there at all
        return False


def _attribute_reads(source: str, modules: dict[str, str]) -> list[tuple[str, str, int]]:
    """``(module, attribute, line)`` for each ``alias.attribute`` read of a kit module alias."""
    assigned = {
        t.id
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Assign)
        for t in n.targets
        if isinstance(t, ast.Name)
    }
    return [
        (modules[n.value.id], n.attr, n.lineno)
        for n in ast.walk(ast.parse(source))
        if isinstance(n, ast.Attribute)
        and isinstance(n.value, ast.Name)
        and n.value.id in modules
        and n.value.id not in assigned
    ]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_every_kit_import_and_attribute_of_a_notebook_exists(path):
    source = _code(path)
    imports, modules = kit_imports(source)
    assert imports, f"{path.name} imports nothing from the kit"
    missing = []
    for module, name, line in imports:
        if not _is_module(module):
            missing.append(f"line {line}: no module {module}")
            continue
        mod = importlib.import_module(module)
        if name is not None and not hasattr(mod, name) and not _is_module(f"{module}.{name}"):
            missing.append(f"line {line}: from {module} import {name}")
    for module, attr, line in _attribute_reads(source, modules):
        if not hasattr(importlib.import_module(module), attr):
            missing.append(f"line {line}: {module}.{attr}")
    assert not missing, f"{path.name}: " + "; ".join(missing)


def test_the_checker_sees_a_missing_name_and_a_missing_attribute():
    imports, modules = kit_imports(
        "from daimlib.course import nb\nfrom daimlib.config import no_such_thing\n"
    )
    assert ("daimlib.config", "no_such_thing", 2) in imports and modules == {"nb": "daimlib.course.nb"}
    reads = _attribute_reads("nb.setup()\nnb.long_run_seeds()\n", modules)
    assert [a for _, a, _ in reads] == ["setup", "long_run_seeds"]
    assert not hasattr(
        importlib.import_module("daimlib.course.nb"), "long_run_seeds"
    )  # it moved to experiments
    assert not hasattr(importlib.import_module("daimlib.config"), "no_such_thing")
