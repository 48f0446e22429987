"""DistributedDataParallel on the CPU: 2 gloo processes train the demo preset and evaluate.

Checks the issue's four properties: it trains; the margins agree across ranks (the MOM sees the
global batch); its checkpoint loads in a single process; and the 2-process evaluation equals the
single-process one.
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from daimlib.config import load_preset

WORLD = 2
PER_RANK_BATCH = 4
TINY = (24, 5, 5)  # train, val, test images (the same tiny demo dataset as test_train.py)


pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # two gloo processes: ~30-60 s


def _cfg():
    # train on the 25 val captions: 12 per rank, 3 steps of 4 per rank (global batch 8) per epoch;
    # backbones frozen in epoch 0 and trained in epoch 1 (DDP must be rebuilt to sync them)
    return load_preset(
        "demo",
        **{
            "train.batch_size": PER_RANK_BATCH,
            "train.epochs": 2,
            "train.freeze_epochs": 1,
            "data.train_split": "val",
            "loss.warmup_steps": 1,
            "loss.activation_fraction": 0.0,
            "train.eval_batch_size": 64,
        },
    )


def _worker(rank: int, port: int, root: str, out: str, result_dir: str) -> None:
    """One rank: train under DDP, then evaluate the final model with the process group up."""
    import torch.distributed as dist

    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import evaluate
    from daimlib.losses import MatchingLoss
    from daimlib.train import train

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        WORLD_SIZE=str(WORLD),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    seen = []  # (margin used, rows the MOM saw) per step, on this rank
    forward = MatchingLoss.forward

    def recording_forward(self, scores, *args, **kwargs):
        out = forward(self, scores, *args, **kwargs)
        seen.append((out.margin, int(out.stats["n_rows"])))
        return out

    MatchingLoss.forward = recording_forward
    cfg = _cfg()
    res = train(cfg, root, out, progress=False, eval_split="test", device="cpu")
    split = load_split(cfg.data, root, "test")
    metrics, _, sims = evaluate(
        res.model,
        split,
        load_tokenizer(cfg.text, root),
        cfg,
        protocol="demo",
        device="cpu",
        progress=False,
        return_sims=True,
    )
    torch.save(
        {
            "seen": seen,
            "state": res.model.state_dict(),
            "metrics": metrics,
            "sims": torch.from_numpy(sims),
            "steps": res.global_step,
        },
        Path(result_dir) / f"rank{rank}.pt",
    )
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    import torch.multiprocessing as mp

    from daimlib.data import make_demo_dataset

    root = tmp_path_factory.getbasetemp() / "demo_tiny"
    make_demo_dataset(root, seed=0, size=TINY, progress=False)
    out = tmp_path_factory.mktemp("ddp") / "run"
    results = tmp_path_factory.mktemp("ddp_results")
    ctx = mp.start_processes(
        _worker,
        args=(_free_port(), str(root), str(out), str(results)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.time() + 240
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process run did not finish within 240 s")
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    return root, out, ranks


def test_two_process_run_trains_and_rank0_alone_writes_the_history(ddp_run):
    _, out, ranks = ddp_run
    steps_per_rank = 2 * ((25 // WORLD) // PER_RANK_BATCH)  # 2 epochs
    assert [r["steps"] for r in ranks] == [steps_per_rank] * WORLD
    hist = pd.read_csv(out / "history_steps.csv")
    assert list(hist["step"]) == list(range(steps_per_rank))  # one row per step, not one per rank
    assert hist["loss"].notna().all()
    assert (out / "last" / "model.safetensors").exists() and (out / "best" / "model.safetensors").exists()


def test_margins_agree_across_ranks_and_come_from_the_global_batch(ddp_run):
    _, _, ranks = ddp_run
    assert ranks[0]["seen"] == ranks[1]["seen"]
    assert all(n_rows == WORLD * PER_RANK_BATCH for _, n_rows in ranks[0]["seen"])
    for k in ranks[0]["state"]:  # DDP keeps the replicas identical, backbones included after unfreezing
        assert torch.equal(ranks[0]["state"][k], ranks[1]["state"][k]), k


def test_ddp_checkpoint_loads_strictly_in_one_process(ddp_run):
    from daimlib.checkpoint import load_checkpoint

    _, out, ranks = ddp_run
    model, cfg, state = load_checkpoint(out / "last", strict=True)
    assert cfg == _cfg() and state["world_size"] == WORLD and len(state["rng"]) == WORLD
    sd = model.state_dict()
    assert sd.keys() == ranks[0]["state"].keys()
    assert all(torch.equal(sd[k], ranks[0]["state"][k]) for k in sd)


def test_two_process_evaluation_equals_the_single_process_one(ddp_run):
    from daimlib.checkpoint import load_model
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import evaluate

    root, out, ranks = ddp_run
    cfg = _cfg()
    split = load_split(cfg.data, root, "test")
    metrics, _, sims = evaluate(
        load_model(out / "last"),
        split,
        load_tokenizer(cfg.text, root),
        cfg,
        protocol="demo",
        device="cpu",
        progress=False,
        return_sims=True,
    )
    for r in ranks:
        torch.testing.assert_close(r["sims"], torch.from_numpy(sims), atol=1e-5, rtol=1e-5)
        assert r["metrics"] == pytest.approx(metrics)


def test_resuming_a_two_process_run_in_one_process_names_the_global_batch_it_changes(
    ddp_run, tmp_path, caplog
):
    """On fewer processes the per-process batch stays (it must) but the global batch halves: the warning said
    only 'RNG streams reseeded'; it names the global batch before and after."""
    import logging
    import shutil

    from daimlib.train import train

    root, out, _ = ddp_run
    shutil.copytree(out, tmp_path / "run")
    cfg = _cfg().replace(**{"train.epochs": 3})
    with caplog.at_level(logging.WARNING, logger="daimlib.train"):
        train(cfg, root, tmp_path / "run", resume=True, progress=False, eval_split="test", device="cpu")
    text = caplog.text
    g = WORLD * PER_RANK_BATCH
    assert f"the global batch changes from {WORLD} x {PER_RANK_BATCH} = {g} to 1 x {PER_RANK_BATCH}" in text
