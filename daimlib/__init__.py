"""DAIM Kit: image-text matching with dual-stream transformers, FDM (ContraNorm) and MOM (adaptive margin).

The names a user needs, loaded on first use (``import daimlib`` itself imports neither torch nor
timm nor transformers)::

    import daimlib
    cfg = daimlib.load_preset("demo")                          # or DAIMConfig.from_json(...); PRESETS
    result = daimlib.train(cfg, "data/demo", "runs/demo")      # a finished run of this config is reused
    model = daimlib.load_model("runs/demo/best")               # or daimlib.DAIM.from_pretrained(...)
    split = daimlib.load_split(cfg.data, "data/demo", "test")
    metrics, table = daimlib.evaluate(model, split, daimlib.load_tokenizer(cfg.text, "data/demo"), cfg)

One module per idea of the paper: ``config`` (presets), ``fdm`` (ContraNorm), ``encoders`` (Swin +
BERT streams), ``similarity`` (SCAN cross-attention), ``losses`` (triplet + the adaptive margin),
``model`` (``DAIM``), ``data``, ``evaluate`` / ``metrics``, ``train``, ``checkpoint``, ``hub``,
``reference`` (the authors' checkpoints), ``variants`` (the ablation switches). The notebooks'
classroom layer is :mod:`daimlib.course`; the experiments live outside the library
(``experiments/``). ``python -m daimlib --help`` for the command line.
"""

from __future__ import annotations

import importlib
import sys
import types

__version__ = "0.1.0"

# public name -> the module that defines it (imported on first use)
_PUBLIC = {
    "DAIM": "model",
    "DAIMConfig": "config",
    "load_preset": "config",
    "PRESETS": "config",
    "load_model": "checkpoint",
    "load_checkpoint": "checkpoint",
    "save_checkpoint": "checkpoint",
    "TrainResult": "train",
    "make_demo_dataset": "data",
    "load_split": "data",
    "load_tokenizer": "data",
    "recall_metrics": "metrics",
}
# ``daimlib.train`` and ``daimlib.evaluate`` are modules and the entry points they are named after:
# calling the module calls the function (``daimlib.train(cfg, ...)`` is ``daimlib.train.train(cfg, ...)``)
_CALLABLE_MODULES = ("train", "evaluate")
__all__ = ["__version__", *_PUBLIC, *_CALLABLE_MODULES]


class _CallableModule(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return getattr(self, self.__name__.rpartition(".")[2])(*args, **kwargs)


class _Package(types.ModuleType):
    """daimlib itself: makes ``train`` / ``evaluate`` callable however they were first imported."""

    def __setattr__(self, name, value):
        if name in _CALLABLE_MODULES and isinstance(value, types.ModuleType):
            value.__class__ = _CallableModule
        super().__setattr__(name, value)


def __getattr__(name: str):
    if name in _PUBLIC:
        value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
        globals()[name] = value
        return value
    if name in _CALLABLE_MODULES:
        return importlib.import_module(f"{__name__}.{name}")  # the import sets the attribute (see _Package)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


sys.modules[__name__].__class__ = _Package
