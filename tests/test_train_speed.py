"""Training on GPUs without waste (issue 25, part 3), checked on a CPU: the static DDP graph of each
phase, TF32 changing nothing on a CPU, persistent loader workers with per-caption augmentation seeds,
``best/`` hard-linked from ``last/``, and ``train.compile``."""

from __future__ import annotations

import os

import pytest
import torch
from safetensors.torch import load_file

from daimlib import train as train_mod
from daimlib.checkpoint import TRAIN_STATE, link_checkpoint, load_model, read_meta, save_checkpoint
from daimlib.config import load_preset
from daimlib.losses import MatchingLoss
from daimlib.model import DAIM
from daimlib.runtime import loader_workers, tf32
from daimlib.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _batch(cfg, n=6):
    g = torch.Generator().manual_seed(0)
    L = cfg.text.max_len
    mask = (torch.arange(L)[None, :] < torch.randint(4, L + 1, (n,), generator=g)[:, None]).long()
    return {
        "images": torch.randn(n, 3, cfg.image.img_size, cfg.image.img_size, generator=g),
        "input_ids": torch.randint(5, 500, (n, L), generator=g) * mask,
        "attention_mask": mask,
    }


@pytest.mark.parametrize("frozen", [True, False])
def test_every_trainable_parameter_gets_a_gradient_in_each_phase(tiny_cfg, frozen):
    """What lets DDP run without find_unused_parameters: the graph of each phase uses every parameter
    that requires a gradient (heads while frozen, all after), and a frozen backbone gets none."""
    model = DAIM.from_config(tiny_cfg)
    train_mod._set_frozen(model, frozen, train_mode=True)
    MatchingLoss.from_config(tiny_cfg.loss)(model(_batch(tiny_cfg)).scores, step=10**6).loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert trainable == with_grad
    heads = {n for n, _ in model.named_parameters() if n.startswith(("img_proj", "txt_proj"))}
    assert (trainable == heads) if frozen else (trainable == {n for n, _ in model.named_parameters()})


def test_tf32_sets_and_restores_the_cuda_flags_and_leaves_a_cpu_alone():
    flags = lambda: (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)  # noqa: E731
    before = flags()
    with tf32(not before[0], "cpu"):
        assert flags() == before
    with tf32(True, "cuda"):
        assert flags() == (True, True)
        with tf32(False, "cuda:0"):
            assert flags() == (False, False)
        assert flags() == (True, True)
    assert flags() == before


def test_loader_workers_are_capped_by_the_cpus_per_process(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader_workers(0) == 0 and loader_workers(8) == 8 and loader_workers(32) == 15
    assert loader_workers(8, processes_per_node=8) == 1 and loader_workers(8, processes_per_node=4) == 3


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_seeded_items_give_each_caption_the_same_augmentation_with_any_number_of_workers(demo_root):
    from torch.utils.data import DataLoader, DistributedSampler

    from daimlib.data import CaptionDataset, build_transforms, collate, load_split, load_tokenizer

    cfg = load_preset("demo", **{"data.crop_scale": [0.3, 1.0]})  # visibly random crops
    split = load_split(cfg.data, demo_root, "train")
    ds = CaptionDataset(
        split, load_tokenizer(cfg.text, demo_root), build_transforms(cfg.data, train=True), 32
    )
    base = DistributedSampler(ds, num_replicas=1, rank=0, shuffle=True, seed=0, drop_last=True)

    def images(workers, epoch, skip):
        sampler = train_mod._EpochSampler(base, seed=0, seeded=True)
        loader = DataLoader(
            train_mod._SeededItems(ds),
            batch_size=5,
            sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        out = []
        for e in (0, epoch):  # a first epoch, then the one compared: the workers live on
            sampler.start(e, skip if e == epoch else 0)
            out = [b["images"] for b in loader]
        return torch.cat(out)

    a, b = images(0, 1, 0), images(2, 1, 0)
    assert torch.equal(a, b)  # worker count and a previous epoch change nothing
    assert torch.equal(images(2, 1, 10), a[10:])  # a resume mid-epoch sees the same crops
    assert not torch.equal(images(0, 2, 0), a)  # another epoch, other crops


def _cfg(**over):
    base = {
        "train.batch_size": 8,
        "train.epochs": 2,
        "train.freeze_epochs": 1,
        "data.train_split": "val",
        "data.val_split": "test",
        "loss.warmup_steps": 2,
        "train.eval_batch_size": 64,
        "data.num_workers": 0,
    }
    base.update(over)
    return load_preset("demo", **base)


@pytest.mark.slow  # two short runs, ~20 s
def test_tf32_changes_nothing_on_a_cpu(demo_root, tmp_path):
    for flag in (True, False):
        train(
            _cfg(**{"train.tf32": flag, "train.epochs": 1}),
            demo_root,
            tmp_path / str(flag),
            progress=False,
            eval_split=None,
        )
    a, b = (load_file(str(tmp_path / str(f) / "last" / "model.safetensors")) for f in (True, False))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow  # three short runs with a loader worker, ~40 s
def test_a_run_with_persistent_workers_resumes_exactly(demo_root, tmp_path):
    from test_resume import assert_same_run

    cfg = _cfg(**{"data.num_workers": 1})
    train(cfg, demo_root, tmp_path / "straight", progress=False, eval_split="test")
    res = train(
        _cfg(**{"data.num_workers": 1, "train.max_steps": 4}),
        demo_root,
        tmp_path / "run",
        progress=False,
        eval_split="test",
    )
    assert res.stopped == "max_steps"
    train(cfg, demo_root, tmp_path / "run", progress=False, eval_split="test", resume=True)
    assert_same_run(tmp_path / "run", tmp_path / "straight", partial_rows=True)


def test_link_checkpoint_writes_no_weights_and_survives_the_source_being_replaced(tiny_cfg, tmp_path):
    model = DAIM.from_config(tiny_cfg)
    save_checkpoint(
        tmp_path / "last", model, tiny_cfg, train_state={"step": 3}, meta={"kind": "last", "stopped": "x"}
    )
    link_checkpoint(tmp_path / "last", tmp_path / "best", meta={"kind": "best", "epoch": 0, "stopped": None})
    w = "model.safetensors"
    assert os.stat(tmp_path / "best" / w).st_ino == os.stat(tmp_path / "last" / w).st_ino  # one file on disk
    assert not (tmp_path / "best" / TRAIN_STATE).exists()
    meta = read_meta(tmp_path / "best")
    assert meta["kind"] == "best" and "stopped" not in meta and TRAIN_STATE not in meta["files"]
    before = load_model(tmp_path / "best").state_dict()  # every recorded sha256 still checks
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    save_checkpoint(tmp_path / "last", model, tiny_cfg, train_state={"step": 4})  # last/ replaced
    after = load_model(tmp_path / "best").state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_the_writer_runs_in_the_background_and_hands_its_error_on():
    import threading

    writer, seen, gate = train_mod._Writer(), [], threading.Event()
    writer.submit(lambda: (gate.wait(5), seen.append(threading.current_thread().name)), background=True)
    assert seen == []  # submit returned while the write waits
    gate.set()
    writer.submit(
        lambda: seen.append(threading.current_thread().name), background=False
    )  # waits for the first
    assert seen == ["daim-checkpoint-writer", threading.current_thread().name]

    def fail():
        raise OSError("disk full")

    writer.submit(fail, background=True)
    with pytest.raises(OSError, match="disk full"):
        writer.wait()
    writer.wait()  # handed on once


@pytest.mark.slow  # one short run, ~15 s
def test_best_is_linked_from_last_and_repaired_after_a_stop_between_them(demo_root, tmp_path, monkeypatch):
    import threading

    threads, real = [], train_mod.save_checkpoint

    def spy(directory, *a, **kw):
        threads.append((directory.name, kw["meta"]["stopped"], threading.current_thread().name))
        return real(directory, *a, **kw)

    monkeypatch.setattr(train_mod, "save_checkpoint", spy)
    out = tmp_path / "run"
    res = train(_cfg(), demo_root, out, progress=False, eval_split="test")
    main = (
        threading.current_thread().name
    )  # epoch 0's last/ was written behind the training, the final one before return
    assert threads == [("last", "running", "daim-checkpoint-writer"), ("last", "completed", main)]
    best = read_meta(out / "best")
    assert best["kind"] == "best" and best["epoch"] == res.best_epoch
    if res.best_epoch == res.epochs["epoch"].max():  # best is the last epoch: the same file
        assert (
            os.stat(out / "best" / "model.safetensors").st_ino
            == os.stat(out / "last" / "model.safetensors").st_ino
        )
    st = train_mod.TrainState.from_dict(torch.load(out / "last" / TRAIN_STATE, weights_only=True))
    assert st.best_step == best["step"]
    # a stop after last/ was written and before best/ was linked: best/ is an older one (here: absent)
    import shutil

    shutil.rmtree(out / "best")
    st.best_step = read_meta(out / "last")["step"]
    train_mod._repair_best(out, st)
    assert read_meta(out / "best")["epoch"] == st.best_epoch


@pytest.mark.slow  # ~1 min; with the default inductor backend the same test took 11.7 min on 2 busy cores
def test_compile_gives_the_same_loss(tiny_cfg):
    """train.compile's path (DAIM.compile_encoders) with dynamo and AOTAutograd but no code generation
    (backend aot_eager): the same loss and gradients, the same state_dict keys. Inductor's numbers on a
    GPU are checked by benchmarks/gpu_check.py (compiled vs eager loss within 1 %)."""
    try:
        torch.compile(lambda x: x * 2 + 1, backend="aot_eager")(torch.ones(3))
    except Exception as e:  # an unsupported platform or Python
        pytest.skip(f"torch.compile is not available here: {type(e).__name__}: {e}")
    batch = _batch(tiny_cfg)
    losses = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = DAIM.from_config(tiny_cfg).eval()
        if compiled:
            model.compile_encoders(backend="aot_eager")
        loss = MatchingLoss.from_config(tiny_cfg.loss).eval()(model(batch).scores, step=10**6).loss
        loss.backward()
        losses.append((float(loss.detach()), model.img_proj[0].weight.grad.clone()))
        assert set(model.state_dict()) == set(DAIM.from_config(tiny_cfg).state_dict())  # keys unchanged
    assert losses[1][0] == pytest.approx(losses[0][0], rel=1e-4)
    torch.testing.assert_close(losses[1][1], losses[0][1], rtol=1e-3, atol=1e-5)
