"""The shipped demo models (issue 9.2): export in half precision, load, and reproduce the recorded
test metrics on freshly generated demo data."""

from __future__ import annotations

import json
import types
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from daimlib import runs
from daimlib.checkpoint import load_checkpoint_tokenizer, load_model
from daimlib.config import DAIMConfig, load_preset
from daimlib.course import demo_models
from daimlib.data import load_split
from daimlib.data.tokenizer import load_tokenizer
from daimlib.evaluate import evaluate
from daimlib.model import dead_weight_rows
from daimlib.train import train
from experiments import demo_models as export_models

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "models"
MAX_BYTES = 12 * 2**20


@pytest.fixture(scope="module")
def tiny_run(demo_root, tmp_path_factory):
    """A two-step ``demo`` run on the tiny demo data (its 'test' split is the tiny one)."""
    cfg = load_preset("demo", **{"train.batch_size": 8, "train.max_steps": 2, "train.eval_batch_size": 64})
    out = tmp_path_factory.mktemp("demo_models") / "run"
    train(cfg, demo_root, out, progress=False, eval_split="val")
    return out


@pytest.mark.slow  # trains a model
def test_export_writes_half_precision_and_the_metrics_of_what_it_ships(tiny_run, demo_root, tmp_path):
    dest = export_models.export("demo", tiny_run, demo_root, dest=tmp_path / "demo")
    with safe_open(str(dest / "best" / "model.safetensors"), "pt") as f:
        dtypes = {f.get_tensor(k).dtype for k in f.keys() if f.get_tensor(k).is_floating_point()}
    assert dtypes == {torch.float16}
    rec = json.loads((dest / "metrics.json").read_text())
    assert rec["arm"] == "demo" and rec["command"] == demo_models.COMMAND
    # the recorded metrics are those of the exported weights, recomputed here independently
    model = load_model(dest / "best")
    assert next(model.parameters()).dtype == torch.float32  # users compute in float32
    cfg = model.cfg
    split = load_split(cfg.data, demo_root, "test")
    metrics, _ = evaluate(
        model, split, load_tokenizer(cfg.text, demo_root), cfg, protocol="demo", progress=False
    )
    assert rec["test"] == pytest.approx({k: metrics[k] for k in demo_models.METRIC_KEYS})
    assert rec["data"]["sha256"] == runs.data_identity(demo_root, cfg)["sha256"]
    # the fp16 weights are the fp32 best checkpoint rounded, nothing else, except the rows that cannot
    # change an output (query/key of the one-token windows), which are not shipped and load as zeros
    src = load_model(tiny_run / "best")
    dead = dead_weight_rows(src)
    assert sorted(dead) == [
        f"image_encoder.backbone.layers.3.blocks.0.attn.qkv.{p}" for p in ("bias", "weight")
    ]
    meta = json.loads((dest / "best" / "meta.json").read_text())
    assert {k: tuple(v["rows"]) for k, v in meta["trimmed"].items()} == dead
    for (name, a), (_, b) in zip(src.state_dict().items(), model.state_dict().items()):
        if a.is_floating_point():
            want = a.half().float()
            if name in dead:
                want[: dead[name][0]] = 0
            assert torch.equal(want, b), name
    with safe_open(str(dest / "best" / "model.safetensors"), "pt") as f:
        for key, (start, stop) in dead.items():  # only the value rows are stored
            assert f.get_slice(key).get_shape()[0] == stop - start < src.state_dict()[key].shape[0]
    for name in ("history_steps.csv", "history_epochs.csv"):
        assert (dest / name).read_bytes() == (tiny_run / name).read_bytes()


@pytest.mark.slow  # trains a model
def test_load_prefers_the_shipped_folder_and_names_what_is_missing(
    tiny_run, demo_root, tmp_path, monkeypatch
):
    monkeypatch.setenv(demo_models.MODELS_ENV, str(tmp_path))
    assert not demo_models.is_shipped("demo")
    with pytest.raises(FileNotFoundError, match="demo-models"):
        demo_models.recorded_metrics("demo")
    export_models.export("demo", tiny_run, demo_root)
    dm = demo_models.load("demo", data_root=demo_root, verbose=False)
    assert dm.source == tmp_path / "demo" and dm.test_metrics == demo_models.recorded_metrics("demo")["test"]
    assert not dm.model.training and dm.tokenizer is not None and len(dm.steps) == 2
    with pytest.raises(ValueError, match="unknown demo model"):
        demo_models.load("nope")


def test_the_three_arms_differ_in_direction_then_fdm_and_mom_only():
    hat, base, daim = (load_preset(a) for a in ("demo_hat", "demo_baseline", "demo"))
    assert set(hat.diff(base)) - {"name"} == {"similarity.direction"}
    assert set(base.diff(daim)) - {"name"} == {"fdm.image_blocks", "fdm.image_stage_out", "loss.adaptive"}
    assert round(daim.loss.activation_fraction * 58) == 45  # the paper's trigger, 45 of 58


SHIPPED_ARMS = [a for a in demo_models.ARMS if (SHIPPED / a / "metrics.json").exists()]


def test_every_arm_is_shipped_small_and_in_half_precision():
    assert SHIPPED_ARMS == list(demo_models.ARMS), "models/ lacks an arm: python -m experiments demo-models"
    for arm in SHIPPED_ARMS:
        weights = SHIPPED / arm / "best" / "model.safetensors"
        assert weights.stat().st_size <= MAX_BYTES
        rec = json.loads((SHIPPED / arm / "metrics.json").read_text())
        assert rec["steps"] == load_preset(arm).train.epochs * 312  # the full recipe, not an interim export
        assert set(rec["test"]) == set(demo_models.METRIC_KEYS)


def test_every_shipped_arm_is_its_preset_as_it_is_today():
    """A change to a demo preset must come with retrained models (``python -m experiments demo-models``)."""
    for arm in SHIPPED_ARMS:
        shipped = DAIMConfig.from_json(SHIPPED / arm / "best" / "config.json")
        assert shipped.diff(load_preset(arm)) == {}, (
            f"models/{arm} was trained with another {arm} preset: retrain it"
        )


@pytest.mark.docs
@pytest.mark.slow  # generates the full demo data (15 s) and evaluates three models on 500 test images
@pytest.mark.parametrize("arm", SHIPPED_ARMS)
def test_shipped_model_reproduces_its_recorded_test_metrics(arm, default_demo_root):
    rec = json.loads((SHIPPED / arm / "metrics.json").read_text())
    model = load_model(SHIPPED / arm / "best")
    assert runs.data_identity(default_demo_root, model.cfg)["sha256"] == rec["data"]["sha256"], (
        "the regenerated demo data differ from those the model was measured on"
    )
    tokenizer = load_checkpoint_tokenizer(SHIPPED / arm / "best")  # the one shipped with the model
    got = demo_models.test_metrics(model, model.cfg, default_demo_root, tokenizer=tokenizer)
    for k in demo_models.METRIC_KEYS:  # CPU float differences can move a tie: 0.2 points per recall
        assert got[k] == pytest.approx(rec["test"][k], abs=0.6 if k == "rsum" else 0.2), k


def test_an_interrupted_training_is_never_exported(demo_root, tmp_path, monkeypatch):
    """Ctrl-C (or SIGTERM) during ``demo-models``: train() saves last/ and returns early; the shipped
    model must stay as it was, not be replaced by the partial run."""
    models = tmp_path / "models"
    monkeypatch.setenv(demo_models.MODELS_ENV, str(models))

    def stopped_early(cfg, data_root, out, **kwargs):
        out.mkdir(parents=True, exist_ok=True)
        return types.SimpleNamespace(stopped="interrupted", global_step=7)

    monkeypatch.setattr("daimlib.train.train", stopped_early)
    with pytest.raises(KeyboardInterrupt, match="demo: training stopped \\(interrupted\\) at step 7"):
        export_models.main_export(["demo"], demo_root, out_root=tmp_path / "runs", progress=False)
    assert not (models / "demo").exists()
    # a run that says it completed but has no finished record is refused as well
    monkeypatch.setattr(
        "daimlib.train.train", lambda cfg, d, out, **k: types.SimpleNamespace(stopped="completed")
    )
    with pytest.raises(RuntimeError, match="is not exported"):
        export_models.main_export(["demo"], demo_root, out_root=tmp_path / "runs", progress=False)
    assert not (models / "demo").exists()


@pytest.mark.docs
def test_models_readme_is_what_the_export_writes(tmp_path):
    """models/README.md is generated (its table is the recorded metrics): never edited by hand."""
    export_models.write_readme(tmp_path / "README.md")
    assert (tmp_path / "README.md").read_text() == (SHIPPED / "README.md").read_text()
