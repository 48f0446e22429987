"""Exact resume from every stop (issue 13 item 3): an interrupt injected at each point of a step, a
signal during validation, a budget stop mid-epoch; resumed == uninterrupted, bit for bit on CPU
(weights, margin, optimizer state, RNG states, both histories).

Runs train the demo preset on the val split of a tiny demo dataset (25 captions: 3 steps of 8 per
epoch, 2 epochs, backbones frozen in epoch 0) and validate on its test split.
"""

from __future__ import annotations

import os
import signal

import pandas as pd
import pytest
import torch
from safetensors.torch import load_file

from daimlib import history as history_mod
from daimlib import runs
from daimlib import train as train_mod
from daimlib.checkpoint import load_train_state
from daimlib.config import load_preset
from daimlib.losses import MatchingLoss
from daimlib.train import train

STEPS = 2 * (25 // 8)  # 6 steps in 2 epochs
TIME_COLUMNS = ["step_s", "epoch_s", "elapsed_min"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**over):
    base = {
        "train.batch_size": 8,
        "train.epochs": 2,
        "train.freeze_epochs": 1,
        "data.train_split": "val",
        "data.val_split": "test",
        "loss.warmup_steps": 4,
        "loss.activation_fraction": 0.0,
        "train.eval_batch_size": 64,
        "data.num_workers": 0,
    }
    base.update(over)
    return load_preset("demo", **base)


def _run(root, out, cfg=None, **kw):
    return train(cfg or _cfg(), root, out, progress=False, eval_split="test", **kw)


def _table(path):
    df = pd.read_csv(path)
    return df.drop(columns=[c for c in TIME_COLUMNS if c in df]).reset_index(drop=True)


def _nested_equal(a, b, where=""):
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _nested_equal(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _nested_equal(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def assert_same_run(resumed, straight, partial_rows: bool = False):
    """Weights + margin (model.safetensors), optimizer, scheduler, RNG states and both histories."""
    wa, wb = (
        load_file(str(resumed / "last" / "model.safetensors")),
        load_file(str(straight / "last" / "model.safetensors")),
    )
    assert wa.keys() == wb.keys() and "loss.margin_module.margin" in wa
    for k in wa:
        assert torch.equal(wa[k], wb[k]), k
    sa, sb = load_train_state(resumed / "last"), load_train_state(straight / "last")
    best_keys = () if partial_rows else ("best_epoch", "best_metrics")  # a partial row may win: checked apart
    for key in ("optimizer", "scheduler", "rng", "global_step", "epoch", *best_keys):
        _nested_equal(sa[key], sb[key], key)
    pd.testing.assert_frame_equal(
        _table(resumed / "history_steps.csv"), _table(straight / "history_steps.csv")
    )
    ea, eb = _table(resumed / "history_epochs.csv"), _table(straight / "history_epochs.csv")
    if partial_rows:  # a budget stop adds its partial row; the complete rows must be the straight run's
        ea = ea[ea["complete"]].reset_index(drop=True)
    pd.testing.assert_frame_equal(ea, eb)
    if partial_rows:
        _assert_best_of_partial_run(resumed, straight, sa, sb)
        return
    bb, bs = (
        load_file(str(resumed / "best" / "model.safetensors")),
        load_file(str(straight / "best" / "model.safetensors")),
    )
    assert all(torch.equal(bb[k], bs[k]) for k in bs)


def _assert_best_of_partial_run(resumed, straight, sa, sb):
    """The budget stop's extra validation (the partial row) selects best/ exactly when it beats every
    earlier row; otherwise best/ is the straight run's."""
    from daimlib.checkpoint import read_meta

    rows = pd.read_csv(resumed / "history_epochs.csv")
    partial = rows[~rows["complete"]].iloc[0]
    before = rows.loc[: partial.name - 1, "select"].max()
    assert bool(partial["best"]) == (partial["select"] > before)
    if partial["best"]:
        assert read_meta(resumed / "best")["step"] == partial["step"] and sa["best_epoch"] == partial["epoch"]
        assert sa["best_metrics"]["rsum"] == pytest.approx(partial["rsum"])
    else:
        _nested_equal(sa["best_epoch"], sb["best_epoch"], "best_epoch")
        bb, bs = (
            load_file(str(resumed / "best" / "model.safetensors")),
            load_file(str(straight / "best" / "model.safetensors")),
        )
        assert all(torch.equal(bb[k], bs[k]) for k in bs)


@pytest.fixture(scope="module")
def straight(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("straight") / "run"
    res = _run(demo_root, out)
    assert res.stopped == "completed" and res.global_step == STEPS
    return out


def _at_step(k, action):
    """A hook that performs ``action`` at the k-th call (0-based) and passes through otherwise."""
    calls = {"n": 0}

    def hook():
        n = calls["n"]
        calls["n"] += 1
        if n == k:
            action()

    return hook


def _raise():
    raise KeyboardInterrupt


def _signal(sig):
    return lambda: os.kill(os.getpid(), sig)


def _inject(monkeypatch, point: str, hook):
    """Call ``hook`` at ``point`` of every step: in the loss (after the MOM update, before backward),
    after backward (the gradient check, before the optimizer step), right after the optimizer step
    (zero_grad), before or after the step's history row is written."""
    if point == "loss":
        real = MatchingLoss.forward

        def loss_forward(self, *a, **k):
            out = real(self, *a, **k)
            hook()
            return out

        monkeypatch.setattr(MatchingLoss, "forward", loss_forward)
    elif point == "before_optimizer_step":
        real_norm = torch.nn.utils.get_total_norm

        def norm(*a, **k):
            hook()
            return real_norm(*a, **k)

        monkeypatch.setattr(torch.nn.utils, "get_total_norm", norm)
    elif point == "after_optimizer_step":
        real_zero = torch.optim.Optimizer.zero_grad

        def zero_grad(self, *a, **k):
            hook()
            return real_zero(self, *a, **k)

        monkeypatch.setattr(torch.optim.Optimizer, "zero_grad", zero_grad)
    elif point in ("before_history_write", "after_history_write"):
        real_log = history_mod.HistoryLogger.log_step

        def log_step(self, row):
            if point == "before_history_write":
                hook()
            real_log(self, row)
            if point == "after_history_write":
                hook()

        monkeypatch.setattr(history_mod.HistoryLogger, "log_step", log_step)
    else:
        raise AssertionError(point)


CASES = [
    ("loss", "raise", 3),
    ("before_optimizer_step", "raise", 5),
    ("after_optimizer_step", "raise", 4),
    ("before_history_write", "raise", 3),
    ("after_history_write", "raise", 2),
    ("loss", "SIGINT", 4),
    ("after_optimizer_step", "SIGTERM", 1),
    ("before_history_write", "SIGTERM", 5),
]


@pytest.mark.slow  # 8 interrupted + resumed runs: ~60 s on 2 loaded cores
@pytest.mark.parametrize("point,how,k", CASES, ids=[f"{p}-{h}-step{k}" for p, h, k in CASES])
def test_interrupt_at_any_point_of_a_step_resumes_exactly(
    straight, demo_root, tmp_path, monkeypatch, point, how, k
):
    action = _raise if how == "raise" else _signal(getattr(signal, how))
    with monkeypatch.context() as m:
        _inject(m, point, _at_step(k, action))
        res = _run(demo_root, tmp_path / "run")
    assert res.stopped == "interrupted"
    record = runs.read_record(tmp_path / "run")
    assert record["stopped"] == "interrupted" and not record["finished"]
    if how != "raise":
        assert record["signal"] == how
    # a raised interrupt before the update undoes step k; after it (or any signal) step k completes
    undone = how == "raise" and point in ("loss", "before_optimizer_step")
    assert res.global_step == (k if undone else k + 1)
    assert list(pd.read_csv(tmp_path / "run" / "history_steps.csv")["step"]) == list(range(res.global_step))
    done = _run(demo_root, tmp_path / "run", resume=True)
    assert done.stopped == "completed" and done.global_step == STEPS
    assert_same_run(tmp_path / "run", straight)


@pytest.mark.slow  # 2 interrupted + resumed runs: ~15 s
@pytest.mark.parametrize("how", ["raise", "SIGTERM"])
def test_interrupt_during_validation_redoes_it_on_resume(straight, demo_root, tmp_path, monkeypatch, how):
    real = train_mod.evaluate
    action = _raise if how == "raise" else _signal(signal.SIGTERM)

    def evaluate(*a, **k):
        action()
        return real(*a, **k)

    with monkeypatch.context() as m:
        m.setattr(train_mod, "evaluate", evaluate)
        res = _run(demo_root, tmp_path / "run")
    assert res.stopped == "interrupted" and res.global_step == STEPS // 2
    state = load_train_state(tmp_path / "run" / "last")
    assert state["val_pending"]["epoch"] == 0 and state["epoch"] == 1
    assert not (tmp_path / "run" / "best").exists()  # the candidate was not lost: resume validates it
    _run(demo_root, tmp_path / "run", resume=True)
    assert_same_run(tmp_path / "run", straight)


@pytest.mark.slow  # ~10 s
def test_budget_stop_mid_epoch_with_validation_resumes_exactly(straight, demo_root, tmp_path):
    out = tmp_path / "run"
    res = _run(demo_root, out, _cfg(**{"train.max_steps": STEPS // 2 + 1}))
    assert res.stopped == "max_steps" and list(res.epochs["complete"]) == [True, False]
    assert runs.read_record(out)["finished"]  # a budget stop finishes a run of that budget
    _run(demo_root, out, resume=True)
    assert_same_run(out, straight, partial_rows=True)


@pytest.mark.slow  # ~8 s
def test_validation_never_draws_from_the_training_rng(straight, demo_root, tmp_path):
    """A run validated every epoch and one never validated train the same weights, bit for bit."""
    res = train(_cfg(), demo_root, tmp_path / "noval", progress=False, eval_split=None)
    a = load_file(str(tmp_path / "noval" / "last" / "model.safetensors"))
    b = load_file(str(straight / "last" / "model.safetensors"))
    assert res.global_step == STEPS and all(torch.equal(a[k], b[k]) for k in b)
    pd.testing.assert_frame_equal(
        _table(tmp_path / "noval" / "history_steps.csv"), _table(straight / "history_steps.csv")
    )


@pytest.mark.slow  # trains a model (a few steps)
def test_resuming_with_another_batch_size_is_refused(demo_root, tmp_path):
    out = tmp_path / "run"
    _run(demo_root, out, _cfg(**{"train.max_steps": 1, "train.epochs": 1}))
    with pytest.raises(ValueError, match="train.batch_size=4.*trained with 8"):
        _run(demo_root, out, _cfg(**{"train.batch_size": 4}), resume=True)


@pytest.mark.slow  # 2 short runs: ~10 s
def test_adaptive_warmup_end_survives_a_stop_and_resume(demo_root, tmp_path, monkeypatch):
    """The step an adaptive warm-up ended at is train state: a run stopped after it and resumed goes on
    with hardest negatives (a resume that forgot it would check again and, here, fall back to the sum),
    and equals the uninterrupted run."""

    def scripted(calls):  # the warm-up's 3rd check (step 3) finds a learned batch; every other a flat one
        def flat_ratio(self, scores, margin, neg_mask=None, global_batch=False):
            calls.append(1)
            return 0.1 if len(calls) == 3 else 0.9

        return flat_ratio

    cfg = _cfg(**{"loss.warmup_steps": 1, "loss.warmup_until": 0.5})
    monkeypatch.setattr(MatchingLoss, "flat_ratio", scripted([]))
    _run(demo_root, tmp_path / "straight", cfg)
    monkeypatch.setattr(MatchingLoss, "flat_ratio", scripted([]))
    with monkeypatch.context() as m:  # interrupted after step 4 (no validation at the stop)
        _inject(m, "after_history_write", _at_step(4, _raise))
        res = _run(demo_root, tmp_path / "run", cfg)
    assert res.stopped == "interrupted" and res.global_step == 5
    assert load_train_state(tmp_path / "run" / "last")["warmup_end"] == 3
    _run(demo_root, tmp_path / "run", cfg, resume=True)
    hist = pd.read_csv(tmp_path / "run" / "history_steps.csv")
    assert list(hist["hardest"]) == [False, False, False, True, True, True]
    assert hist["flat_ratio"].isna().tolist() == [True, False, False, False, True, True]
    assert_same_run(tmp_path / "run", tmp_path / "straight")
