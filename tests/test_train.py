"""The training loop: exact resume, budget stops, Ctrl-C, the freeze schedule, histories, ablation configs.

Runs train the demo preset on the *val* split of a tiny demo dataset (5 images, 25 captions: 3
steps of 8 per epoch) and validate on its test split (5 images), so that each run takes seconds.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch

from daimlib import train as train_mod
from daimlib.checkpoint import CheckpointError, load_checkpoint, load_train_state, read_meta
from daimlib.config import DAIMConfig, load_preset
from daimlib.course.variants import VARIANTS, variant_config
from daimlib.train import selection_score, train, wants_pretrained
from experiments.ablation import ablate, summarize

STEPS_PER_EPOCH = 25 // 8


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
    }
    base.update(over)
    return load_preset("demo", **base)


def _run(cfg, root, out, **kw):
    return train(cfg, root, out, progress=False, eval_split="test", **kw)


def _assert_same_weights(a, b, atol=1e-6):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    worst = max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa if sa[k].numel())
    assert worst <= atol, worst


TIME_COLUMNS = ["step_s", "epoch_s", "elapsed_min"]


def _steps(df):
    return df.drop(columns=[c for c in TIME_COLUMNS if c in df], errors="ignore").reset_index(drop=True)


@pytest.fixture(scope="module")
def straight_run(demo_root, tmp_path_factory):
    """Two epochs without interruption (backbones frozen in epoch 0): what resumed runs must reproduce."""
    return _run(_cfg(), demo_root, tmp_path_factory.mktemp("straight"))


@pytest.fixture(scope="module")
def first_epoch_run(demo_root, tmp_path_factory):
    """The same run stopped after its first (frozen) epoch; the resume test continues it."""
    return _run(_cfg(**{"train.epochs": 1}), demo_root, tmp_path_factory.mktemp("first") / "run")


@pytest.mark.slow  # the two-epoch straight run: ~8 s on a loaded 2-core machine
def test_straight_run_writes_histories_and_checkpoints(straight_run):
    res = straight_run
    steps, epochs = res.steps, res.epochs
    assert list(steps["step"]) == list(range(2 * STEPS_PER_EPOCH))
    assert list(steps["epoch"]) == [0] * STEPS_PER_EPOCH + [1] * STEPS_PER_EPOCH
    for col in (
        "lr",
        "loss",
        "margin",
        "hardest",
        "activated",
        "n_correct",
        "mu_pos",
        "sigma_pos",
        "mu_neg",
        "sigma_neg",
        "lam",
    ):
        assert col in steps.columns, col
    assert steps["loss"].map(math.isfinite).all()
    # the loss warm-up (sum-over-negatives hinge) ends at step 4, in epoch 1: the model gets the global step
    assert list(steps["hardest"].astype(bool)) == [False] * 4 + [True] * (2 * STEPS_PER_EPOCH - 4)
    for col in ("epoch", "i2t_r1", "t2i_r1", "rsum", "select", "best", "lr", "loss", "margin"):
        assert col in epochs.columns, col
    assert list(epochs["epoch"]) == [0, 1] and epochs["complete"].all()
    # selection: best = the epoch with the highest val R@1 sum, and its checkpoint records it
    assert list(epochs["select"]) == [selection_score(r, "r1_sum") for r in epochs.to_dict("records")]
    best_epoch = int(epochs["select"].idxmax())
    assert res.best_epoch == best_epoch
    assert read_meta(res.best_dir)["epoch"] == best_epoch
    assert read_meta(res.last_dir)["step"] == 2 * STEPS_PER_EPOCH
    assert load_train_state(res.best_dir) is None  # best holds weights only
    # the margin column is the loss's MOM buffer, which moved once the MOM had statistics
    assert steps["margin"].iloc[-1] == pytest.approx(float(res.loss.margin))


@pytest.mark.slow  # uses the straight run
def test_resume_after_one_epoch_equals_the_uninterrupted_run(straight_run, first_epoch_run, demo_root):
    """Resumed at epoch 1, which is also where the backbones unfreeze."""
    assert first_epoch_run.global_step == STEPS_PER_EPOCH
    resumed = _run(_cfg(), demo_root, first_epoch_run.out_dir, resume=True)
    assert resumed.global_step == 2 * STEPS_PER_EPOCH
    _assert_same_weights(resumed.model, straight_run.model)
    pd.testing.assert_frame_equal(_steps(resumed.steps), _steps(straight_run.steps))
    pd.testing.assert_frame_equal(_steps(resumed.epochs), _steps(straight_run.epochs))


@pytest.mark.slow  # a stopped and a resumed run: ~4 s (tests/test_resume.py covers more stops)
def test_budget_stop_mid_epoch_saves_evaluates_and_resumes_exactly(straight_run, demo_root, tmp_path):
    out = tmp_path / "run"
    stop_at = STEPS_PER_EPOCH + 1
    stopped = _run(_cfg(**{"train.max_steps": stop_at}), demo_root, out)
    assert stopped.stopped == "max_steps" and stopped.global_step == stop_at
    assert list(stopped.epochs["complete"]) == [True, False]  # evaluated at the stop
    assert not math.isnan(stopped.epochs["rsum"].iloc[-1])
    state = load_train_state(out / "last")
    assert (state["epoch"], state["batch_in_epoch"], state["global_step"]) == (1, 1, stop_at)
    resumed = _run(_cfg(), demo_root, out, resume=True)
    _assert_same_weights(resumed.model, straight_run.model)
    pd.testing.assert_frame_equal(_steps(resumed.steps), _steps(straight_run.steps))
    # the epoch history gains the stop's partial row, then the finished epoch equals the straight run's
    full = _steps(resumed.epochs)
    pd.testing.assert_frame_equal(full[full["complete"]].reset_index(drop=True), _steps(straight_run.epochs))


@pytest.mark.slow  # trains a model (a few steps)
def test_ctrl_c_writes_last_and_the_run_can_resume(demo_root, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = train_mod._to_device

    def interrupt_on_third(batch, device):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(batch, device)

    monkeypatch.setattr(train_mod, "_to_device", interrupt_on_third)
    out = tmp_path / "run"
    res = _run(_cfg(**{"train.epochs": 1}), demo_root, out)
    assert res.stopped == "interrupted" and res.global_step == 2
    assert len(pd.read_csv(out / "history_steps.csv")) == 2
    assert load_train_state(out / "last")["global_step"] == 2
    monkeypatch.setattr(train_mod, "_to_device", real)
    done = _run(_cfg(**{"train.epochs": 1}), demo_root, out, resume=True)
    assert done.stopped == "completed" and done.global_step == STEPS_PER_EPOCH
    assert list(done.steps["step"]) == list(range(STEPS_PER_EPOCH))


@pytest.mark.slow  # uses the straight run
def test_frozen_epochs_leave_backbones_untouched_and_unfreezing_trains_them(straight_run, first_epoch_run):
    from daimlib.model import DAIM

    cfg = _cfg()
    train_mod.seed_everything(cfg.train.seed)
    before = DAIM.from_config(
        cfg, pretrained=False
    ).state_dict()  # the runs' initial weights: seed, then model
    model = first_epoch_run.model
    backbone = {id(p) for p in model.backbone_parameters()}
    names_bb = [n for n, p in model.named_parameters() if id(p) in backbone]
    names_head = [n for n, p in model.named_parameters() if id(p) not in backbone]
    assert names_bb and names_head
    after0 = model.state_dict()  # after the frozen epoch 0
    assert all(torch.equal(after0[n], before[n]) for n in names_bb)
    assert all(not torch.equal(after0[n], before[n]) for n in names_head)
    # epoch 1 (unfrozen): the optimizer built over all parameters now moves the backbones too
    after1 = straight_run.model.state_dict()
    changed = [n for n in names_bb if not torch.equal(after1[n], after0[n])]
    assert len(changed) > len(names_bb) // 2


def test_frozen_backbones_stay_in_train_mode_unless_told(demo_root):
    from daimlib.model import DAIM

    model = DAIM.from_config(load_preset("demo"), pretrained=False)
    backbone = {id(p) for p in model.backbone_parameters()}
    modules_with_bb = [
        m for m in model.modules() if any(id(p) in backbone for p in m.parameters(recurse=False))
    ]
    train_mod._set_frozen(model, frozen=True, train_mode=True)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(m.training for m in modules_with_bb)  # reference: dropout/DropPath stay active
    train_mod._set_frozen(model, frozen=True, train_mode=False)
    assert not any(m.training for m in modules_with_bb)
    assert all(p.requires_grad for p in model.head_parameters())
    train_mod._set_frozen(model, frozen=False, train_mode=False)
    assert all(p.requires_grad for p in model.backbone_parameters()) and all(
        m.training for m in modules_with_bb
    )


@pytest.mark.slow  # trains a model (a few steps)
def test_existing_run_is_not_overwritten_and_resume_needs_a_checkpoint(demo_root, tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        _run(_cfg(), demo_root, tmp_path / "empty", resume=True)
    out = tmp_path / "run"
    _run(_cfg(**{"train.epochs": 1, "train.max_steps": 1}), demo_root, out)
    with pytest.raises(FileExistsError, match="already holds a run"):
        _run(_cfg(), demo_root, out)
    # overwrite starts afresh: a run without validation leaves no stale best behind
    assert (out / "best").exists()
    train(
        _cfg(**{"train.epochs": 1, "train.max_steps": 1}),
        demo_root,
        out,
        progress=False,
        eval_split=None,
        overwrite=True,
    )
    assert not (out / "best").exists() and len(pd.read_csv(out / "history_steps.csv")) == 1
    # a model-defining change is refused on resume, with the differing key named
    with pytest.raises(CheckpointError, match="fdm.scale: checkpoint 0.1 vs requested 0.3"):
        _run(_cfg(**{"fdm.scale": 0.3}), demo_root, out, resume=True)


def test_amp_is_off_on_cpu_and_picks_a_scaler_only_for_fp16():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for mode in ("auto", "bf16", "fp16", "off"):
        assert train_mod._amp(load_preset("demo", **{"train.amp": mode}), cpu) == (None, False)
    assert train_mod._amp(load_preset("demo", **{"train.amp": "fp16"}), cuda) == (torch.float16, True)
    assert train_mod._amp(load_preset("demo", **{"train.amp": "bf16"}), cuda) == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="auto\\|bf16\\|fp16\\|off"):
        train_mod._amp(load_preset("demo", **{"train.amp": "fp8"}), cpu)


def test_paper_presets_want_pretrained_weights_and_the_demo_does_not():
    assert wants_pretrained(load_preset("daim_coco")) and wants_pretrained(load_preset("hat_f30k"))
    assert not wants_pretrained(load_preset("demo"))
    assert wants_pretrained(load_preset("demo", **{"text.weights": "some/folder"}))


# --- ablation variants (configs only: the runs themselves are the notebooks' job) -----------------


def test_each_ablation_variant_differs_from_the_baseline_in_its_module_only():
    base = variant_config("daim_f30k", "baseline")
    assert base.similarity.direction == load_preset("daim_f30k").similarity.direction == "t2i"

    def diff(v):
        return set(variant_config("daim_f30k", v).diff(base)) - {"name"}

    fdm_keys = {"fdm.image_blocks", "fdm.image_stage_out"}
    assert diff("baseline") == set()
    assert diff("fdm") == fdm_keys
    assert diff("mom") == {"loss.adaptive"}
    assert diff("daim") == fdm_keys | {"loss.adaptive"}
    assert diff("fdm_text") == {"fdm.text_layers"}
    assert variant_config("daim_f30k", "fdm_text").fdm.text_layers == tuple(range(1, 13))
    assert variant_config("demo", "fdm_text").fdm.text_layers == (1, 2, 3)
    assert diff("high_only") == fdm_keys | {"loss.adaptive", "similarity.level_weights"}
    assert variant_config("demo", "high_only").similarity.level_weights == (0.0, 0.0, 1.0)
    assert variant_config("demo", "daim", seed=3).train.seed == 3
    for name, weights in (
        ("no_low", (0.0, 1.0, 1.0)),
        ("no_mid", (1.0, 0.0, 1.0)),
        ("no_high", (1.0, 1.0, 0.0)),
    ):
        assert diff(name) == fdm_keys | {"loss.adaptive", "similarity.level_weights"}  # daim minus one level
        assert variant_config("demo", name).similarity.level_weights == weights
    assert (
        diff("hat") == {"similarity.direction"}
        and variant_config("daim_f30k", "hat").similarity.direction == "i2t"
    )
    # the ablation's hat is the demo_hat preset (the comparison's i2t arm) up to its name
    assert set(variant_config("demo", "hat").diff(load_preset("demo_hat"))) <= {"name"}
    # the dual encoder: the similarity and the loss, both; as a variant it is the demo_dual preset
    assert diff("dual") == {"similarity.kind", "loss.kind"}
    assert set(variant_config("demo", "dual").diff(load_preset("demo_dual"))) <= {"name"}
    assert set(VARIANTS) == {
        "baseline",
        "hat",
        "fdm",
        "mom",
        "daim",
        "fdm_text",
        "high_only",
        "no_low",
        "no_mid",
        "no_high",
        "dual",
    }
    with pytest.raises(ValueError, match="unknown ablation variant"):
        variant_config("demo", "nope")


def test_ablation_summary_is_mean_and_sample_std_per_variant():
    runs = pd.DataFrame(
        {"variant": ["b", "b", "b", "a"], "seed": [0, 1, 2, 0], "rsum": [10.0, 20.0, 60.0, 5.0]}
    )
    s = summarize(runs, metrics=("rsum",))
    assert list(s.index) == ["b", "a"]
    assert s.loc["b", "rsum_mean"] == pytest.approx(30.0)
    assert s.loc["b", "rsum_std"] == pytest.approx(
        math.sqrt(((10 - 30) ** 2 + (20 - 30) ** 2 + (60 - 30) ** 2) / 2)
    )
    assert s.loc["b", "rsum"] == "30.0 ± 26.5" and s.loc["a", "rsum"] == "5.0"
    assert list(s["n_seeds"]) == [3, 1]


def test_powered_summary_pairs_by_seed_and_reports_what_the_design_detects():
    from daimlib.course import stats
    from daimlib.course.stats import powered_summary

    runs = pd.DataFrame(
        {
            "variant": ["baseline"] * 4 + ["daim"] * 4,
            "seed": [0, 1, 2, 3, 3, 2, 1, 0],  # daim's rows in another order: pairing is by seed, not by row
            "rsum": [250.0, 260.0, 240.0, 255.0, 259.0, 249.0, 263.0, 256.0],
        }
    )
    t = powered_summary(runs)
    assert list(t.index) == ["baseline", "daim"]
    assert t.loc["daim", "diff"] == pytest.approx(
        (6 + 3 + 9 + 4) / 4
    )  # per seed: 256-250, 263-260, 249-240, 259-255
    assert t.loc["daim", "mean"] == pytest.approx(256.75) and t.loc["daim", "n"] == 4
    d = [6.0, 3.0, 9.0, 4.0]
    assert t.loc["daim", "p_paired"] == pytest.approx(stats.paired_diff([0.0] * 4, d).p)
    assert t.loc["daim", "mdd"] == pytest.approx(stats.min_detectable_difference(float(np.std(d, ddof=1)), 4))
    assert t.loc["daim", "diff_lo"] < t.loc["daim", "diff"] < t.loc["daim", "diff_hi"]
    assert math.isnan(t.loc["baseline", "diff"])
    with pytest.raises(ValueError, match="reference variant"):
        powered_summary(runs, reference="mom")


@pytest.mark.slow  # uses the straight run
def test_read_run_gives_back_the_returned_model_or_the_best_checkpoint(straight_run):
    last = train_mod.read_run(straight_run.out_dir)
    _assert_same_weights(last.model, straight_run.model, atol=0)
    assert last.global_step == straight_run.global_step and last.best_epoch == straight_run.best_epoch
    assert last.best_metrics == pytest.approx(straight_run.best_metrics)
    pd.testing.assert_frame_equal(last.epochs, straight_run.epochs)
    best_folder = load_checkpoint(straight_run.out_dir / "best")[0]
    _assert_same_weights(
        train_mod.read_run(straight_run.out_dir, checkpoint="best").model, best_folder, atol=0
    )
    with pytest.raises(ValueError, match="'last' or 'best'"):
        train_mod.read_run(straight_run.out_dir, checkpoint="first")


@pytest.mark.slow  # uses the straight run
def test_loaded_last_checkpoint_matches_the_returned_model(straight_run):
    model, cfg, state = load_checkpoint(straight_run.last_dir)
    _assert_same_weights(model, straight_run.model, atol=0)
    assert cfg == straight_run.cfg and state["global_step"] == 2 * STEPS_PER_EPOCH


@pytest.mark.slow  # two runs + evaluations: ~5 s
def test_ablate_trains_each_variant_writes_tables_and_reuses_finished_runs(demo_root, tmp_path, monkeypatch):
    over = {
        "train.batch_size": 8,
        "train.max_steps": 1,
        "data.train_split": "val",
        "train.eval_batch_size": 64,
    }
    runs = ablate(
        "demo", ["baseline", "daim"], seeds=1, data_root=demo_root, out_dir=tmp_path, progress=False, **over
    )
    assert list(runs["variant"]) == ["baseline", "daim"] and list(runs["seed"]) == [0, 0]
    assert list(runs["steps"]) == [1, 1] and set(runs["stopped"]) == {"max_steps"}
    six = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
    assert runs["rsum"].tolist() == pytest.approx(runs[six].sum(axis=1).tolist())
    saved_cfg = load_checkpoint(tmp_path / "daim_seed0" / "last")[1]
    assert saved_cfg.fdm.image_blocks and saved_cfg.loss.adaptive and saved_cfg.train.max_steps == 1
    assert not load_checkpoint(tmp_path / "baseline_seed0" / "last")[1].fdm.image_blocks
    for name in ("runs.csv", "summary.csv", "summary.json"):
        assert (tmp_path / name).exists()
    assert list(runs.attrs["summary"].index) == ["baseline", "daim"]
    meta = json.loads((tmp_path / "summary.json").read_text())  # what ran, even after the preset changes
    assert DAIMConfig.from_json(json.dumps(meta["base_config"])) == load_preset("demo", **over)

    def no_training(*a, **k):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr("daimlib.train.train", no_training)
    again = ablate(
        "demo", ["baseline", "daim"], seeds=1, data_root=demo_root, out_dir=tmp_path, progress=False, **over
    )
    pd.testing.assert_frame_equal(again, runs)
    with pytest.raises(ValueError, match="different config"):
        ablate(
            "demo",
            ["baseline"],
            seeds=1,
            data_root=demo_root,
            out_dir=tmp_path,
            progress=False,
            **{**over, "train.lr": 1.0},
        )
    monkeypatch.undo()
    # two worker processes give the same rows as one process, in the same order
    parallel = ablate(
        "demo",
        ["baseline", "daim"],
        seeds=1,
        data_root=demo_root,
        out_dir=tmp_path / "jobs2",
        progress=False,
        jobs=2,
        **over,
    )
    cols = ["variant", "seed", "rsum", "i2t_r1", "t2i_r1", "steps", "final_margin"]
    pd.testing.assert_frame_equal(parallel[cols], runs[cols])
    with pytest.raises(ValueError, match="max_steps"):
        ablate(
            "demo",
            ["baseline"],
            seeds=1,
            data_root=demo_root,
            out_dir=tmp_path / "x",
            jobs=2,
            **{**over, "train.max_minutes": 1.0},
        )


@pytest.mark.slow  # trains a model (a few steps)
def test_time_budget_stops_after_the_first_step_and_clipping_bounds_the_gradient_norm(
    demo_root, tmp_path, monkeypatch
):
    norms = []
    clip = torch.nn.utils.clip_grad_norm_

    def recording_clip(params, max_norm, *a, **k):
        params = list(params)
        out = clip(params, max_norm, *a, **k)
        norms.append((float(torch.norm(torch.stack([p.grad.norm() for p in params]))), max_norm))
        return out

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", recording_clip)
    res = _run(_cfg(**{"train.max_minutes": 1e-6, "train.grad_clip": 0.05}), demo_root, tmp_path / "run")
    assert res.stopped == "max_minutes" and res.global_step == 1
    assert load_train_state(tmp_path / "run" / "last")["stopped"] == "max_minutes"
    assert len(norms) == 1 and norms[0][1] == 0.05
    assert norms[0][0] <= 0.05 * (1 + 1e-5)


@pytest.mark.slow  # a run + an evaluation: ~2 s
def test_ablate_on_the_val_split_reports_the_best_checkpoints_val_evaluation(demo_root, tmp_path):
    """Evaluated on val, ablate reuses training's score of ``best`` instead of a second pass; the
    numbers must equal an independent evaluation of the saved best checkpoint."""
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import evaluate

    over = {
        "train.batch_size": 8,
        "train.max_steps": 2,
        "data.train_split": "val",
        "train.eval_batch_size": 64,
    }
    runs = ablate(
        "demo",
        ["daim"],
        seeds=1,
        data_root=demo_root,
        out_dir=tmp_path,
        eval_split="val",
        progress=False,
        **over,
    )
    cfg = load_checkpoint(tmp_path / "daim_seed0" / "best")[1]
    model = load_checkpoint(tmp_path / "daim_seed0" / "best")[0]
    metrics, _ = evaluate(
        model,
        load_split(cfg.data, demo_root, "val"),
        load_tokenizer(cfg.text, demo_root),
        cfg,
        protocol="demo",
        progress=False,
    )
    for key in ("i2t_r1", "i2t_r10", "t2i_r5", "rsum"):
        assert runs[key].iloc[0] == pytest.approx(metrics[key])
