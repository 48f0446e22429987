"""``loss.negatives = "global"``: 2 gloo processes at batch B equal 1 process at batch 2B.

One forward/backward per process under DistributedDataParallel (``find_unused_parameters`` off,
backbones trainable) with the batch split in two; the single-process reference runs here on the
whole batch. Compared: the loss each rank computes, the margin the MOM moved to, the rows it saw,
and every parameter's gradient after DDP's average, at a warm-up step (sum over negatives) and a
hardest-negative step, with same-image masking across ranks. Local negatives, the contrast, give
other losses. Then each process trains the demo preset for 2 epochs with global negatives through
the unfreeze (DDP re-wrapped without ``find_unused_parameters``).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pytest
import torch

from daimlib.config import load_preset

WORLD, B = 2, 4
TINY = (24, 5, 5)
IMG_INDEX = [0, 1, 2, 3, 0, 5, 6, 2]  # pairs 0/4 and 2/7 share an image, across the two ranks

pytestmark = [pytest.mark.usefixtures("one_torch_thread"), pytest.mark.slow]  # two gloo processes: ~40 s


def _cfg(negatives: str):
    return load_preset(
        "demo",
        **{
            "loss.negatives": negatives,
            "loss.activation_fraction": 0.0,
            "loss.warmup_steps": 1,
            "loss.mask_same_image": True,
        },
    )


def _batch(cfg) -> dict:
    g = torch.Generator().manual_seed(1)
    L = cfg.text.max_len
    lens = torch.randint(4, L + 1, (WORLD * B,), generator=g)
    mask = (torch.arange(L)[None, :] < lens[:, None]).long()
    return {
        "images": torch.randn(WORLD * B, 3, cfg.image.img_size, cfg.image.img_size, generator=g),
        "input_ids": torch.randint(5, 500, (WORLD * B, L), generator=g) * mask,
        "attention_mask": mask,
        "img_index": torch.tensor(IMG_INDEX),
    }


def _model(cfg):
    from daimlib.model import DAIM

    torch.manual_seed(0)
    model = DAIM.from_config(cfg, pretrained=False)
    model.set_backbones_trainable(True)
    return model.eval()  # dropout off: the two runs draw no random numbers


def _two_steps(model, loss_fn, batch, global_batch: bool) -> list[dict]:
    """A warm-up step (sum of hinges) and a hardest-negative step: loss, margin, rows, gradients."""
    out = []
    for step in (0, 1):
        model.zero_grad(set_to_none=True)
        res = model(batch, global_batch=global_batch)
        lo = loss_fn(res.scores, step=step, img_index=res.img_index, global_batch=res.global_batch)
        lo.loss.backward()
        inner = getattr(model, "module", model)
        out.append(
            {
                "loss": float(lo.loss.detach()),
                "margin": float(loss_fn.margin),
                "hardest": lo.hardest,
                "rows": int(lo.stats["n_rows"]),
                "grads": {n: p.grad.clone() for n, p in inner.named_parameters() if p.grad is not None},
            }
        )
    return out


def _worker(rank: int, port: int, root: str, out: str, result_dir: str) -> None:
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

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
    result = {}
    for negatives in ("global", "local"):
        cfg = _cfg(negatives)
        batch = {k: v[rank * B : (rank + 1) * B] for k, v in _batch(cfg).items()}
        ddp = DistributedDataParallel(_model(cfg))  # find_unused_parameters=False: every parameter is used
        result[negatives] = _two_steps(ddp, MatchingLoss.from_config(cfg.loss), batch, negatives == "global")
    seen = []  # (scores shape, rows the MOM saw) of every training step
    forward = MatchingLoss.forward

    def recording_forward(self, scores, *a, **kw):
        res = forward(self, scores, *a, **kw)
        seen.append((tuple(scores.shape), int(res.stats["n_rows"]), res.margin))
        return res

    MatchingLoss.forward = recording_forward
    cfg = load_preset(
        "demo",
        **{
            "train.batch_size": B,
            "train.epochs": 2,
            "train.freeze_epochs": 1,
            "data.train_split": "val",
            "loss.warmup_steps": 1,
            "loss.negatives": "global",
            "train.eval_batch_size": 64,
        },
    )
    res = train(cfg, root, out, progress=False, eval_split="test", device="cpu")
    result.update(seen=seen, steps=res.global_step, state=res.model.state_dict())
    torch.save(result, Path(result_dir) / f"rank{rank}.pt")
    dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    import torch.multiprocessing as mp

    from daimlib.data import make_demo_dataset

    root = tmp_path_factory.getbasetemp() / "demo_tiny"
    if not (root / "dataset_demo.json").exists():
        make_demo_dataset(root, seed=0, size=TINY, progress=False)
    out = tmp_path_factory.mktemp("global") / "run"
    results = tmp_path_factory.mktemp("global_results")
    ctx = mp.start_processes(
        _worker,
        args=(_free_port(), str(root), str(out), str(results)),
        nprocs=WORLD,
        join=False,
        start_method="spawn",
    )
    deadline = time.time() + 300
    while not ctx.join(timeout=5):
        if time.time() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail("the 2-process run did not finish within 300 s")
    ranks = [torch.load(results / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]
    cfg = _cfg("global")
    from daimlib.losses import MatchingLoss

    single = _two_steps(_model(cfg), MatchingLoss.from_config(cfg.loss), _batch(cfg), global_batch=True)
    return ranks, single


def test_global_negatives_on_two_processes_equal_one_process_at_the_doubled_batch(runs):
    ranks, single = runs
    assert [s["hardest"] for s in single] == [False, True]  # both hinge forms are compared
    assert single[1]["margin"] != single[0]["margin"] != 0.2  # the MOM moved the margin at each step
    for r in ranks:
        for got, want in zip(r["global"], single):
            assert got["rows"] == want["rows"] == WORLD * B
            assert got["loss"] == pytest.approx(want["loss"], rel=1e-5)
            assert got["margin"] == pytest.approx(want["margin"], rel=1e-6)
            assert got["grads"].keys() == want["grads"].keys() and len(want["grads"]) > 50  # backbones too
            for name, g in want["grads"].items():
                torch.testing.assert_close(got["grads"][name], g, rtol=1e-4, atol=1e-6, msg=name)


def test_local_negatives_are_another_objective(runs):
    ranks, single = runs
    local = [r["local"][1]["loss"] for r in ranks]  # each rank's hinge over its own 4 x 4 block
    assert all(abs(x - single[1]["loss"]) > 1e-3 for x in local)
    assert all(r["local"][1]["rows"] == WORLD * B for r in ranks)  # the MOM rows are gathered in both


def test_training_with_global_negatives_runs_through_the_unfreeze_without_find_unused(runs):
    ranks, _ = runs
    steps = 2 * ((25 // WORLD) // B)  # 25 val captions, 2 epochs
    assert [r["steps"] for r in ranks] == [steps] * WORLD
    seen = ranks[0]["seen"]
    assert len(seen) == steps and seen == ranks[1]["seen"]  # same global matrix and margin on both ranks
    assert all(shape == (WORLD * B, WORLD * B) and rows == WORLD * B for shape, rows, _ in seen)
    for k, v in ranks[0]["state"].items():  # replicas identical, backbones included after the unfreeze
        assert torch.equal(v, ranks[1]["state"][k]), k
