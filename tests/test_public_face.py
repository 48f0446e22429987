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
    assert _python("import sys, daimlib; print(sorted({'torch', 'timm', 'transformers'} & set(sys.modules)))") == "[]"


def test_every_public_name_is_the_object_its_module_defines():
    import importlib

    for name, module in daimlib._PUBLIC.items():
        assert getattr(daimlib, name) is getattr(importlib.import_module(f"daimlib.{module}"), name), name
    assert set(daimlib.__all__) >= {"DAIM", "DAIMConfig", "load_preset", "load_model", "train", "evaluate",
                                    "load_split", "make_demo_dataset", "__version__"}  # fmt: skip


def test_train_and_evaluate_call_their_functions_whichever_import_came_first():
    # the submodule imported first (as the kit's own modules do), then the package attribute called
    code = (
        "from daimlib.train import train as f\nfrom daimlib.evaluate import evaluate as g\nimport daimlib\n"
        "m = daimlib.train\nprint(callable(m), m.train is f, daimlib.evaluate.evaluate is g, type(m).__name__)"
    )
    assert _python(code) == "True True True _CallableModule"
    calls = []
    import daimlib.evaluate as ev

    original = ev.evaluate
    try:
        ev.evaluate = lambda *a, **k: calls.append((a, k)) or "called"
        assert daimlib.evaluate(1, x=2) == "called" and calls == [((1,), {"x": 2})]
    finally:
        ev.evaluate = original
