"""``daimlib/__init__.py``: the dozen names a user needs, loaded on first use (``import daimlib`` loads
no torch), and ``daimlib.train`` / ``daimlib.evaluate`` callable however they were first imported."""

from __future__ import annotations

import os
import subprocess
import sys

import daimlib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _python(code: str) -> str:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_import_daimlib_loads_no_heavy_module():
    assert (
        _python("import sys, daimlib; print(sorted({'torch', 'timm', 'transformers'} & set(sys.modules)))")
        == "[]"
    )


def test_every_public_name_is_the_object_its_module_defines():
    import importlib

    for name, module in daimlib._PUBLIC.items():
        assert getattr(daimlib, name) is getattr(importlib.import_module(f"daimlib.{module}"), name), name
    assert set(daimlib.__all__) >= {
        "DAIM",
        "DAIMConfig",
        "load_preset",
        "load_model",
        "train",
        "evaluate",
        "load_split",
        "make_demo_dataset",
        "__version__",
    }


def test_train_and_evaluate_call_their_functions_whichever_import_came_first():
    # the submodules are imported first here (by the kit's own modules, as conftest's imports do),
    # then the package attribute is called: it is still the function's module, and callable
    from daimlib.evaluate import evaluate as g
    from daimlib.train import train as f

    for name, fn in (("train", f), ("evaluate", g)):
        module = getattr(daimlib, name)
        assert callable(module) and getattr(module, name) is fn and type(module).__name__ == "_CallableModule"
    calls = []
    import daimlib.evaluate as ev

    original = ev.evaluate
    try:
        ev.evaluate = lambda *a, **k: calls.append((a, k)) or "called"
        assert daimlib.evaluate(1, x=2) == "called" and calls == [((1,), {"x": 2})]
    finally:
        ev.evaluate = original
