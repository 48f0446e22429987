"""The trained demo models shipped with the kit: load them, or train them again.

Three arms, one recipe (the ``demo`` preset's schedule). The first gap has one cause (the SCAN
direction), the second two (FDM and MOM are switched on together; notebook 09's ablation separates them):

============== ========================================= =============================================
arm            what it is                                compared with
============== ========================================= =============================================
``demo_hat``   HAT-style: i2t SCAN, no FDM, fixed margin
``demo_baseline`` t2i SCAN, no FDM, fixed margin          ``demo_hat``: the SCAN direction alone
``demo``       DAIM: t2i SCAN, FDM (ContraNorm), MOM     ``demo_baseline``: FDM + MOM together
============== ========================================= =============================================

Each shipped model is a folder ``models/<arm>/`` (UvA-notebook style: load it, else train it)::

    best/                 the selected checkpoint, weights in half precision (model.safetensors,
                          config.json, meta.json with sha256 of every file, tokenizer/); the
                          query/key rows of one-token attention windows, which cannot change an
                          output, are left out and load as zeros (``model.dead_weight_rows``)
    history_steps.csv     the training history, one row per step (loss, margin, MOM statistics)
    history_epochs.csv    one row per epoch (validation recalls, minutes)
    metrics.json          test metrics of ``best/`` as shipped (half-precision weights, float32
                          compute), the data identity they were measured on, and how it was trained

One command trains what is missing (resumable run by run: an interrupted arm continues where it
stopped) and exports it (``experiments/demo_models.py``; this module only loads them)::

    python -m experiments demo-models --data-root data/demo

``load(arm)`` returns the shipped model; ``load(arm, retrain=True)`` trains it from scratch into
``runs/demo_models/<arm>`` instead (the shipped arms took 49 to 55 minutes each on one CPU thread: their
recorded wall clock, ``metrics.json`` ``minutes``).
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pandas as pd
import torch

from daimlib import runs
from daimlib.checkpoint import CONFIG, WEIGHTS, load_checkpoint_tokenizer, load_model
from daimlib.config import DAIMConfig, load_preset
from daimlib.data import load_split, load_tokenizer
from daimlib.evaluate import evaluate
from daimlib.history import EPOCHS_CSV, STEPS_CSV
from daimlib.paths import display_path, repo_root, run_root
from daimlib.tables import read_csv

log = logging.getLogger("daimlib.course.demo_models")

ARMS: dict[str, str] = {
    "demo": "DAIM: t2i SCAN + FDM (ContraNorm in the image encoder) + MOM (adaptive margin)",
    "demo_baseline": "t2i baseline: t2i SCAN, no FDM, fixed margin 0.2",
    "demo_hat": "HAT-style baseline: i2t SCAN, no FDM, fixed margin 0.2",
}
METRICS_JSON = "metrics.json"
COMMAND = "python -m experiments demo-models --data-root data/demo"  # experiments/demo_models.py
METRIC_KEYS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


MODELS_ENV = "DAIM_MODELS_DIR"


def models_dir() -> Path:
    """Where the shipped models live: ``models/`` at the repository root (``$DAIM_MODELS_DIR`` when set)."""
    env = os.environ.get(MODELS_ENV)
    return Path(env) if env else repo_root() / "models"


def model_dir(arm: str) -> Path:
    _check_arm(arm)
    return models_dir() / arm


def _check_arm(arm: str) -> None:
    if arm not in ARMS:
        raise ValueError(f"unknown demo model {arm!r}; the shipped arms are {list(ARMS)}")


def is_shipped(arm: str) -> bool:
    """True when ``models/<arm>`` holds an exported model (weights, config and metrics)."""
    d = model_dir(arm)
    return (
        (d / "best" / WEIGHTS).is_file() and (d / "best" / CONFIG).is_file() and (d / METRICS_JSON).is_file()
    )


def recorded_metrics(arm: str) -> dict:
    """``models/<arm>/metrics.json``: ``test`` (the shipped weights' test metrics), ``data`` (the
    identity of the data they were measured on), ``val_curve``, ``minutes``, ``steps``, ``command``."""
    path = model_dir(arm) / METRICS_JSON
    if not path.is_file():
        raise FileNotFoundError(
            f"{display_path(path)} not found: the demo model {arm!r} is not shipped in this checkout; "
            f"train it with `{COMMAND}` or load it with retrain=True"
        )
    return json.loads(path.read_text())


class DemoModel:
    """A loaded demo model: ``model`` (eval mode, float32), ``cfg``, ``tokenizer``, ``steps`` /
    ``epochs`` (the training history), ``test_metrics`` (recorded), ``source`` (its folder)."""

    def __init__(self, arm: str, model, cfg: DAIMConfig, steps, epochs, test_metrics: dict, source: Path):
        self.arm, self.model, self.cfg = arm, model, cfg
        self.tokenizer = load_checkpoint_tokenizer(source / "best")
        self.steps, self.epochs, self.test_metrics, self.source = steps, epochs, test_metrics, source

    @property
    def margin(self) -> float:
        """The margin at the end of training (the MOM's output for ``demo``, 0.2 for the fixed arms)."""
        return float(self.steps["margin"].iloc[-1])

    @property
    def minutes(self) -> float:
        return float(self.epochs["elapsed_min"].iloc[-1]) if "elapsed_min" in self.epochs else float("nan")

    def __repr__(self) -> str:
        rsum = self.test_metrics.get("rsum", float("nan"))
        return f"DemoModel({self.arm!r}, test RSUM {rsum:.1f}, from {display_path(self.source)})"


def load(
    arm: str = "demo",
    retrain: bool = False,
    data_root: str | os.PathLike = "data/demo",
    device: str | torch.device = "cpu",
    progress: bool = True,
    verbose: bool = True,
) -> DemoModel:
    """The shipped ``models/<arm>`` (``retrain=False``), or the arm trained from scratch.

    With ``retrain=True`` (or when the arm is not shipped) the arm is trained with its preset into
    ``runs/demo_models/<arm>`` (resumed when a run there was interrupted, reused when it finished
    with the same config and data); its test metrics are then measured on ``data_root``.
    """
    _check_arm(arm)
    if not retrain and is_shipped(arm):
        d = model_dir(arm)
        model = load_model(d / "best", device=device)
        rec = recorded_metrics(arm)
        out = DemoModel(
            arm, model, model.cfg, read_csv(d / STEPS_CSV), read_csv(d / EPOCHS_CSV), rec["test"], d
        )
        if verbose:
            print(
                f"{arm}: loaded {display_path(d / 'best')} (shipped; test RSUM {rec['test']['rsum']:.1f}, "
                f"{rec['steps']} steps, {rec['minutes']:.0f} min wall-clock to train)"
            )
        return out
    if verbose:
        why = "retrain=True" if retrain else f"{display_path(model_dir(arm))} is not shipped here"
        print(f"{arm}: training from scratch into {display_path(run_root() / 'demo_models' / arm)} ({why})")
    run = train_arm(arm, data_root, device=device, progress=progress)
    model = load_model(run / "best", device=device)
    metrics = test_metrics(
        model,
        model.cfg,
        data_root,
        device=device,
        progress=progress,
        tokenizer=load_checkpoint_tokenizer(run / "best"),
    )
    return DemoModel(
        arm, model, model.cfg, read_csv(run / STEPS_CSV), read_csv(run / EPOCHS_CSV), metrics, run
    )


def train_arm(arm: str, data_root, out_root=None, device="cpu", progress: bool = True) -> Path:
    """Train ``arm`` with its preset into ``<out_root>/<arm>`` (default ``runs/demo_models``).

    Resumable: a finished run of the same config and data is reused, an interrupted one resumed.
    Returns the run folder.
    """
    from daimlib import train  # heavy; only needed when training (the library's public face)

    _check_arm(arm)
    cfg = load_preset(arm)
    run = Path(out_root) if out_root is not None else run_root() / "demo_models"
    run = run / arm
    resume = (run / "last" / "train_state.pt").is_file()
    problem = runs.reuse_problem(run, cfg, Path(data_root), "val") if run.exists() else "not trained"
    if problem is None:
        log.info("%s: reusing the finished run %s", arm, display_path(run))
        return run
    result = train(cfg, data_root, run, device=device, progress=progress, eval_split="val", resume=resume)
    if result.stopped != "completed":  # Ctrl-C / SIGTERM: train() saved last/ and returned early
        raise KeyboardInterrupt(f"{arm}: training stopped ({result.stopped}) at step {result.global_step}")
    problem = runs.reuse_problem(run, cfg, Path(data_root), "val")
    if problem is not None:  # never hand on (export, load) a run its record does not call finished
        raise RuntimeError(f"{arm}: {display_path(run)} is not exported: {problem}")
    return run


def test_metrics(
    model, cfg: DAIMConfig, data_root, device="cpu", progress: bool = False, tokenizer=None
) -> dict:
    """The model's metrics on the test split of ``data_root`` (the demo protocol: the whole split)."""
    split = load_split(cfg.data, data_root, cfg.data.test_split)
    tokenizer = tokenizer if tokenizer is not None else load_tokenizer(cfg.text, data_root)
    metrics, _ = evaluate(model, split, tokenizer, cfg, protocol="demo", device=device, progress=progress)
    return {k: float(metrics[k]) for k in METRIC_KEYS}


def summary_table(arms=tuple(ARMS)) -> pd.DataFrame:
    """The shipped arms side by side: recorded test recalls, RSUM, steps, minutes (wall clock), final margin."""
    rows = []
    for arm in arms:
        rec = recorded_metrics(arm)
        steps = read_csv(model_dir(arm) / STEPS_CSV)
        rows.append(
            {
                "arm": arm,
                **{k: rec["test"][k] for k in METRIC_KEYS},
                "steps": rec["steps"],
                "minutes": rec["minutes"],
                "final_margin": float(steps["margin"].iloc[-1]),
            }
        )
    return pd.DataFrame(rows).set_index("arm")


__all__ = [
    "ARMS",
    "COMMAND",
    "DemoModel",
    "is_shipped",
    "load",
    "model_dir",
    "models_dir",
    "recorded_metrics",
    "summary_table",
    "test_metrics",
    "train_arm",
]
