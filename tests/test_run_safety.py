"""Run folders: never destroy what the kit did not write, the run record and its one reuse rule, the
non-finite guard, TensorBoard, any number of levels (issue 13 items 1 and 5, issue 12 items 1, 3, 5)."""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil

import pandas as pd
import pytest
import torch

from daimlib import runs
from daimlib import train as train_mod
from daimlib.checkpoint import load_checkpoint, load_loss, load_model, load_train_state, read_meta
from daimlib.config import load_preset
from daimlib.train import NonFiniteError, train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**over):
    base = {
        "train.batch_size": 8,
        "train.epochs": 1,
        "train.max_steps": 1,
        "train.freeze_epochs": 0,
        "data.train_split": "val",
        "data.val_split": "test",
        "train.eval_batch_size": 64,
    }
    base.update(over)
    return load_preset("demo", **base)


def _run(root, out, cfg=None, eval_split="test", **kw):
    return train(cfg or _cfg(), root, out, progress=False, eval_split=eval_split, **kw)


@pytest.fixture(scope="module")
def one_step_run(demo_root, tmp_path_factory):
    out = tmp_path_factory.mktemp("one") / "run"
    return _run(demo_root, out)


# --- the run record and the reuse rule --------------------------------------------------------------


@pytest.mark.slow  # trains a model (a few steps)
def test_run_record_holds_config_budget_data_identity_and_versions(one_step_run, demo_root):
    rec = runs.read_record(one_step_run.out_dir)
    assert rec["finished"] and rec["stopped"] == "max_steps" and rec["global_step"] == 1
    assert rec["config_sha256"] == runs.config_sha256(_cfg()) and rec["budget"]["max_steps"] == 1
    js = demo_root / "dataset_demo.json"
    assert rec["data"]["sha256"] == hashlib.sha256(js.read_bytes()).hexdigest()
    assert rec["data"]["images"] == {"train": 24, "val": 5, "test": 5} and rec["data"]["n_images"] == 34
    assert rec["eval_split"] == "test"
    v = rec["versions"]
    assert v["torch"] == torch.__version__.split("+")[0] or v["torch"].startswith(
        torch.__version__.split("+")[0]
    )
    assert set(v) >= {"python", "torch", "timm", "transformers", "git_commit"}


def test_data_identity_ignores_the_folder_but_not_the_content(demo_root, tmp_path):
    cfg = _cfg()
    copy = tmp_path / "copy"
    shutil.copytree(demo_root, copy)
    assert runs.data_identity(copy, cfg) == runs.data_identity(demo_root, cfg)
    data = json.loads((copy / "dataset_demo.json").read_text())
    data["images"] = data["images"][:-1]
    (copy / "dataset_demo.json").write_text(json.dumps(data))
    other = runs.data_identity(copy, cfg)
    assert other["sha256"] != runs.data_identity(demo_root, cfg)["sha256"] and other["n_images"] == 33
    with pytest.raises(FileNotFoundError, match="dataset folder not found"):
        runs.data_identity(tmp_path / "nowhere", cfg)


@pytest.mark.slow  # trains a model (a few steps)
def test_reuse_rule_names_each_reason(one_step_run, demo_root, tmp_path):
    run = one_step_run.out_dir
    assert runs.reuse_problem(run, _cfg(), demo_root, "test") is None
    assert "another config" in runs.reuse_problem(run, _cfg(**{"train.lr": 1e-3}), demo_root, "test")
    assert "validated on 'test', not 'val'" in runs.reuse_problem(run, _cfg(), demo_root, "val")
    copy = tmp_path / "data"
    shutil.copytree(demo_root, copy)
    data = json.loads((copy / "dataset_demo.json").read_text())
    data["images"][0]["sentences"][0]["raw"] = "a changed caption"
    (copy / "dataset_demo.json").write_text(json.dumps(data))
    assert "other data" in runs.reuse_problem(run, _cfg(), copy, "test")
    assert "no run record" in runs.reuse_problem(tmp_path, _cfg(), demo_root, "test")


def test_git_commit_never_fails_without_git(monkeypatch):
    def no_git(*a, **k):
        raise FileNotFoundError("git")

    monkeypatch.setattr(runs.subprocess, "run", no_git)
    assert runs.git_commit() is None and runs.versions()["git_commit"] is None


# --- never destroy --------------------------------------------------------------------------------


@pytest.mark.slow  # several one-step runs: ~15 s
def test_a_finished_run_of_the_same_config_is_reused_and_anything_else_refused(
    demo_root, tmp_path, monkeypatch
):
    out = tmp_path / "run"
    first = _run(demo_root, out)
    weights = (out / "last" / "model.safetensors").read_bytes()

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    with monkeypatch.context() as m:
        m.setattr(train_mod, "train_one_epoch", no_training)
        again = _run(demo_root, out)
    assert again.global_step == first.global_step and again.stopped == "max_steps"
    assert again.best_metrics == pytest.approx(first.best_metrics)
    assert (out / "last" / "model.safetensors").read_bytes() == weights
    # last/ missing (the destroying case of the issue): refused, best/ and the histories kept
    shutil.rmtree(out / "last")
    with pytest.raises(FileExistsError, match="cannot be reused: its last/ checkpoint is missing"):
        _run(demo_root, out)
    assert (out / "best" / "meta.json").is_file() and (out / "history_steps.csv").is_file()


def test_a_folder_that_is_not_a_kit_run_is_never_touched(demo_root, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    (out / "best").mkdir()
    (out / "best" / "notes.txt").write_text("mine too")
    for kw in ({}, {"overwrite": True}):
        with pytest.raises(FileExistsError, match="not a DAIM Kit run folder"):
            _run(demo_root, out, **kw)
    assert sorted(p.name for p in out.iterdir()) == ["best", "thesis.tex"]
    assert (out / "best" / "notes.txt").read_text() == "mine too"


@pytest.mark.slow  # two one-step runs: ~8 s
def test_overwrite_deletes_only_what_the_kit_wrote(demo_root, tmp_path):
    out = tmp_path / "run"
    _run(demo_root, out)
    (out / "my_notes.md").write_text("keep me")
    (out / "analysis").mkdir()
    res = _run(demo_root, out, _cfg(**{"train.lr": 1e-3}), eval_split=None, overwrite=True)
    assert res.global_step == 1
    assert (out / "my_notes.md").read_text() == "keep me" and (out / "analysis").is_dir()
    assert not (out / "best").exists()  # no stale best from the replaced run
    assert len(pd.read_csv(out / "history_steps.csv")) == 1


def test_resume_and_overwrite_together_are_an_error(demo_root, tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        _run(demo_root, tmp_path / "run", resume=True, overwrite=True)


@pytest.mark.slow  # two short runs: ~8 s
def test_resume_restores_the_backup_left_between_the_two_renames_of_a_save(demo_root, tmp_path):
    out = tmp_path / "run"
    _run(demo_root, out, _cfg(**{"train.max_steps": 2, "train.epochs": 2}), eval_split=None)
    os.replace(
        out / "last", out / ".last.old-deadbeef"
    )  # the crash: last/ renamed away, new one not in place
    with pytest.raises(FileExistsError, match="cannot be reused"):  # a plain re-run wipes nothing
        _run(demo_root, out, _cfg(**{"train.max_steps": 2, "train.epochs": 2}), eval_split=None)
    assert (out / ".last.old-deadbeef" / "meta.json").is_file()
    res = _run(
        demo_root, out, _cfg(**{"train.max_steps": 3, "train.epochs": 2}), eval_split=None, resume=True
    )
    assert res.global_step == 3 and (out / "last" / "meta.json").is_file()
    assert not list(out.glob(".last.old-*"))
    assert list(pd.read_csv(out / "history_steps.csv")["step"]) == [0, 1, 2]


# --- non-finite guard -----------------------------------------------------------------------------


@pytest.mark.slow  # ~8 s
def test_a_nan_pixel_stops_the_run_naming_the_step_without_touching_best(demo_root, tmp_path, monkeypatch):
    out = tmp_path / "run"
    cfg = _cfg(**{"train.max_steps": None, "train.epochs": 2})  # 3 steps per epoch; best after epoch 0
    real, calls = train_mod._to_device, {"n": 0}

    def poisoned(batch, device):
        calls["n"] += 1
        if calls["n"] == 5:  # step 4, in epoch 1
            batch = dict(batch, images=batch["images"].clone())
            batch["images"][0, 0, 0, 0] = float("nan")
        return real(batch, device)

    monkeypatch.setattr(train_mod, "_to_device", poisoned)
    best_before = None

    real_epoch = train_mod.train_one_epoch

    def remember_best(ctx, st):
        nonlocal best_before
        ctx.writer.wait()  # epoch 0's last/ and best/ are written in the background
        if (out / "best" / "model.safetensors").exists():
            best_before = (out / "best" / "model.safetensors").read_bytes()
        return real_epoch(ctx, st)

    monkeypatch.setattr(train_mod, "train_one_epoch", remember_best)
    with pytest.raises(NonFiniteError, match=r"step 4 \(epoch 1\): the loss is not finite.*non-finite pixel"):
        _run(demo_root, out, cfg)
    assert best_before is not None and (out / "best" / "model.safetensors").read_bytes() == best_before
    state = load_train_state(out / "last")
    assert state["global_step"] == 4 and state["stopped"] == "nonfinite"
    model = load_model(out / "last")
    assert all(torch.isfinite(p).all() for p in model.parameters())
    rec = runs.read_record(out)
    assert rec["stopped"] == "nonfinite" and not rec["finished"]
    assert len(pd.read_csv(out / "history_steps.csv")) == 4


@pytest.mark.slow  # trains a model (a few steps)
def test_a_non_finite_gradient_stops_before_the_update_and_blames_the_lr(demo_root, tmp_path, monkeypatch):
    monkeypatch.setattr(torch.nn.utils, "get_total_norm", lambda grads, *a, **k: torch.tensor(float("inf")))
    with pytest.raises(
        NonFiniteError, match=r"step 0 \(epoch 0\): the gradient is not finite.*train.lr=0.0003"
    ):
        _run(demo_root, tmp_path / "run", _cfg(**{"train.lr": 3e-4}), eval_split=None)
    fresh = load_model(tmp_path / "run" / "last")  # the state before step 0: the initial weights
    train_mod.seed_everything(0)
    from daimlib.model import DAIM

    init = DAIM.from_config(_cfg()).state_dict()
    assert all(torch.equal(init[k], v) for k, v in fresh.state_dict().items())


# --- TensorBoard, levels --------------------------------------------------------------------------


@pytest.mark.slow  # ~6 s
def test_tensorboard_gets_the_same_scalars_as_the_csv(demo_root, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # in the dev extra

    out = tmp_path / "run"
    _run(demo_root, out, _cfg(**{"train.max_steps": 3, "train.tensorboard": True}))
    acc = EventAccumulator(str(out / "tb"))
    acc.Reload()
    steps = pd.read_csv(out / "history_steps.csv")
    for tag, col in (("train/loss", "loss"), ("train/margin", "margin"), ("train/lr", "lr")):
        events = acc.Scalars(tag)
        assert [e.step for e in events] == list(steps["step"])
        assert [e.value for e in events] == pytest.approx(list(steps[col]), rel=1e-6)
    assert {"train/mu_pos", "train/sigma_pos", "train/activated", "val/rsum", "val/i2t_r1"} <= set(
        acc.Tags()["scalars"]
    )


@pytest.mark.slow  # ~8 s
def test_a_two_level_config_trains_saves_loads_and_resumes(demo_root, tmp_path):
    two = {"image.stages": (1, 2), "text.hidden_states": (2, 3), "similarity.level_weights": (1.0, 1.0)}
    cfg = _cfg(**two, **{"train.max_steps": 2, "train.epochs": 2})
    out = tmp_path / "run"
    res = _run(demo_root, out, cfg, eval_split=None)
    assert res.global_step == 2 and len(res.model.img_proj) == 2
    model, saved, _ = load_checkpoint(out / "last")
    assert saved.similarity.level_weights == (1.0, 1.0) and len(model.txt_proj) == 2
    assert math.isfinite(float(load_loss(out / "last").margin))
    more = _run(
        demo_root, out, _cfg(**two, **{"train.max_steps": 4, "train.epochs": 2}), eval_split=None, resume=True
    )
    assert more.global_step == 4 and read_meta(out / "last")["step"] == 4


def test_cli_refuses_resume_with_overwrite_with_exit_2(tmp_path, monkeypatch, capsys):
    from daimlib.__main__ import main

    monkeypatch.chdir(tmp_path)
    argv = ["train", "--preset", "demo", "--data-root", "d", "--out", "o", "--resume", "--overwrite", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "exclude each other" in err and "Traceback" not in err


def test_tensorboard_without_the_package_is_a_clear_error(tmp_path, monkeypatch):
    import sys

    from daimlib.history import HistoryLogger

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if tensorboard were not installed
    with pytest.raises(ValueError, match="pip install tensorboard, or set train.tensorboard=false"):
        HistoryLogger(tmp_path, enabled=True, tensorboard=True)


@pytest.mark.slow  # two one-step runs: ~6 s
def test_resuming_on_other_data_is_refused(demo_root, other_demo_data, tmp_path):
    out = tmp_path / "run"
    _run(demo_root, out, _cfg(**{"train.epochs": 2}), eval_split=None)
    with pytest.raises(ValueError, match="trained on other data"):
        _run(
            other_demo_data,
            out,
            _cfg(**{"train.epochs": 2, "train.max_steps": 2}),
            eval_split=None,
            resume=True,
        )
    res = _run(
        demo_root, out, _cfg(**{"train.epochs": 2, "train.max_steps": 2}), eval_split=None, resume=True
    )
    assert res.global_step == 2


@pytest.mark.slow  # trains a model (a few steps)
def test_a_trained_checkpoint_carries_its_tokenizer(one_step_run, demo_root):
    """Issue 13: evaluating a saved run never needs the hub (nor the data's tokenizer folder)."""
    from daimlib.checkpoint import has_tokenizer, load_checkpoint_tokenizer
    from daimlib.data import load_tokenizer

    for kind in ("last", "best"):
        assert has_tokenizer(one_step_run.out_dir / kind), kind
    saved = load_checkpoint_tokenizer(one_step_run.out_dir / "best")
    original = load_tokenizer(_cfg().text, demo_root)
    text = "a small red circle left of a blue square"
    assert saved(text)["input_ids"] == original(text)["input_ids"] and len(saved) == len(original)
