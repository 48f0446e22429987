"""The training loop: the reference schedule (spec section 6), a straight line from top to bottom.

``train(cfg, data_root, out_dir)`` does, in this order (nanoGPT's ``train.py`` and open_clip's
``train_one_epoch`` are the models):

1. check ``out_dir`` (:func:`_prepare_out_dir`: never destroy a folder the kit did not write; a
   finished run of the same config and data is reused, :func:`daimlib.runs.reuse_problem`);
2. join the process group when launched by ``torchrun``; seed; build the model (first, so that its
   initial weights depend on the seed only) and the loss (:class:`daimlib.losses.MatchingLoss`,
   which owns the adaptive margin and the warm-up); caption-level train data sharded by a
   ``DistributedSampler``; Adam/AdamW over *all* parameters (a frozen one has ``grad=None`` and
   is skipped), StepLR per epoch; AMP on CUDA only;
3. per epoch (:func:`train_one_epoch`): backbones frozen while ``epoch < freeze_epochs``; per step
   (:func:`train_step`): model -> scores, loss(scores, step), backward, optimizer step, one row in
   ``history_steps.csv`` (:mod:`daimlib.history`);
4. at the epoch end (:func:`validate_and_checkpoint`): validation on its own RNG stream, one row in
   ``history_epochs.csv``, ``best`` when the selection score improves; then :func:`save_last` (rank 0
   writes ``last`` in a background thread from a CPU snapshot, :class:`_Writer`; ``best`` is hard-linked
   from it, :func:`_link_best`);
5. stops: budgets (``max_steps``, ``max_minutes``), Ctrl-C (SIGINT) and SIGTERM. A signal is
   acted on at the next step boundary; a ``KeyboardInterrupt`` raised inside a step completes the
   step if the optimizer already stepped and undoes it otherwise; an interrupted validation is
   redone on resume. A NaN/Inf loss or gradient stops the run before the optimizer step
   (:class:`NonFiniteError`), ``best`` untouched.

Resume is exact on a CPU (with or without loader workers) from every stop: the caption order of epoch e
depends only on (seed, e), the RNG states at the step boundary are saved with the optimizer,
scheduler, scaler, margin and history position, and validation never draws from the training
streams. ``<out>/run.json`` records the config, budget, data identity, versions and how the run
stopped (:mod:`daimlib.runs`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import inspect
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler, Sampler
from tqdm.auto import tqdm

from . import feature_cache, runlock, runs
from .checkpoint import (
    CheckpointError,
    display_path,
    link_checkpoint,
    load_checkpoint,
    read_meta,
    save_checkpoint,
)
from .config import DAIMConfig
from .data import (
    CaptionDataset,
    build_transforms,
    check_vocabulary_fits,
    collate,
    first_images,
    load_split,
    load_tokenizer,
)
from .encoders import image_pretrained, text_pretrained
from .evaluate import MIN_IMAGES, default_protocols, degenerate_problem, evaluate
from .history import EPOCHS_CSV, STEP_COLUMNS, STEPS_CSV, HistoryLogger, read_csv
from .losses import MatchingLoss
from .metrics import METRIC_KEYS
from .model import DAIM
from .runtime import amp_for as _amp
from .runtime import loader_workers, seed_everything, tf32, torch_device, tune_cpu_allocator

log = logging.getLogger("daimlib.train")

__all__ = [
    "EPOCHS_CSV",
    "STEPS_CSV",
    "STEP_COLUMNS",
    "NonFiniteError",
    "PretrainedWeightsError",
    "TrainResult",
    "TrainState",
    "save_last",
    "selection_score",
    "train",
    "train_one_epoch",
    "train_step",
    "validate_and_checkpoint",
    "wants_pretrained",
]


class PretrainedWeightsError(RuntimeError):
    """The pretrained encoder weights a config asks for are not available (offline, no local copy)."""


class NonFiniteError(RuntimeError):
    """A NaN/Inf loss or gradient: the run stopped before the optimizer step (``best`` untouched)."""


@dataclass
class TrainResult:
    """What :func:`train` returns: the final model, its histories and where the checkpoints are."""

    model: torch.nn.Module
    cfg: DAIMConfig
    out_dir: Path
    steps: pd.DataFrame  # one row per optimisation step
    epochs: pd.DataFrame  # one row per finished (or budget-stopped) epoch, with val metrics
    best_metrics: dict = field(default_factory=dict)  # val metrics of the best checkpoint
    best_epoch: int | None = None
    global_step: int = 0
    stopped: str = "completed"  # "completed" | "max_steps" | "max_minutes" | "interrupted"
    loss: MatchingLoss | None = None  # the loss with its final (adaptive) margin

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"


@dataclass
class TrainState:
    """Where a run stands; saved in ``last/train_state.pt`` and restored on resume."""

    epoch: int = 0
    batch_in_epoch: int = 0
    global_step: int = 0
    best_score: float = -math.inf
    best_epoch: int = -1
    best_metrics: dict = field(default_factory=dict)
    best_step: int = -1  # the global step of the best validation (best/ is linked from last/ at that step)
    best_select_on: str = ""
    loss_sum: float = 0.0  # over the epoch's steps so far (the epoch row's mean loss)
    loss_n: int = 0
    elapsed_s: float = 0.0  # training time before this call (resumed runs)
    val_pending: dict | None = None  # {"epoch", "complete", "epoch_s"}: a row still to validate and write

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> TrainState:
        return cls(**{f.name: d[f.name] for f in dataclasses.fields(cls) if f.name in d})


# --- distributed, seeds, RNG state -------------------------------------------------------------


@dataclass
class _Dist:
    enabled: bool = False
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    owns_group: bool = False

    @property
    def main(self) -> bool:
        return self.rank == 0


def _setup_distributed(device: torch.device | None) -> tuple[_Dist, torch.device]:
    """Join the process group that ``torchrun`` describes in the environment (WORLD_SIZE > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 and not (dist.is_available() and dist.is_initialized()):
        return _Dist(), torch_device(device)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    owns = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        owns = True
    if use_cuda:
        torch.cuda.set_device(local_rank)
        dev = torch.device("cuda", local_rank)
    else:
        dev = torch.device("cpu")
    return _Dist(True, dist.get_rank(), dist.get_world_size(), local_rank, owns), dev


def _rng_state() -> dict:
    """This process's RNG states as tensors and plain values (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached": float(cached),
        },
        "python": list(random.getstate()[1]),
        "python_gauss": random.getstate()[2],
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached"])
    )
    random.setstate((3, tuple(int(x) for x in state["python"]), state["python_gauss"]))


def _gather_rng(dd: _Dist) -> list[dict]:
    """Every rank's RNG state (on rank 0), so a resumed DDP run restores each rank's own stream."""
    mine = _rng_state()
    if not dd.enabled:
        return [mine]
    states: list[Any] = [None] * dd.world
    dist.all_gather_object(states, mine)
    return states


# --- data ----------------------------------------------------------------------------------------


class _EpochSampler(Sampler):
    """The indices of ``base`` (a DistributedSampler) for epoch ``epoch`` without the first ``skip`` (to
    resume in the middle of an epoch); :meth:`start` sets both before each epoch, so one DataLoader with
    persistent workers serves every epoch. ``seeded``: each index comes with its augmentation seed."""

    def __init__(self, base: DistributedSampler, seed: int, seeded: bool):
        self.base, self.seed, self.seeded = base, int(seed), bool(seeded)
        self.epoch, self.skip = 0, 0

    def start(self, epoch: int, skip: int) -> None:
        self.epoch, self.skip = int(epoch), int(skip)
        self.base.set_epoch(self.epoch)

    def __iter__(self):
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        for i in it:
            yield (i, (self.seed * 1_000_003 + self.epoch) * 10_000_019 + i) if self.seeded else i

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


class _SeededItems(torch.utils.data.Dataset):
    """``dataset[i]`` drawn under the seed that comes with ``i`` (in loader workers): a caption's augmentation
    depends only on (train.seed, epoch, caption), not on the worker, their number or an earlier epoch, so
    workers can live across epochs and a resumed run sees the same crops."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, key):
        index, seed = key
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        return self.dataset[index]


def _train_loader(cfg: DAIMConfig, data_root, dd: _Dist, device: torch.device):
    """Caption-level training data, shuffled per epoch by ``DistributedSampler(seed, epoch)``.

    The same sampler runs in a single process (one replica), so the caption order depends only on
    (seed, epoch) and resume needs no generator state. ``drop_last``: a short last batch would
    change the MOM trigger fraction and the summed loss's scale.
    """
    tokenizer = load_tokenizer(cfg.text, data_root)
    split = load_split(cfg.data, data_root, cfg.data.train_split)
    dataset = CaptionDataset(split, tokenizer, build_transforms(cfg.data, train=True), cfg.text.max_len)
    per_rank = cfg.train.batch_size
    if len(dataset) < per_rank * dd.world:
        raise ValueError(
            f"the train split has {len(dataset)} captions, fewer than one batch of {per_rank} x {dd.world} "
            f"process(es); lower train.batch_size (e.g. --set train.batch_size=16) or use more data"
        )
    sampler = DistributedSampler(
        dataset, num_replicas=dd.world, rank=dd.rank, shuffle=True, seed=cfg.train.seed, drop_last=True
    )
    return dataset, sampler, tokenizer


def _epoch_batches(ctx, epoch: int, skip_batches: int, src=None):
    """The batches of ``epoch`` from ``skip_batches`` on. One DataLoader per run: with workers
    (``data.num_workers`` > 0, capped by :func:`daimlib.runtime.loader_workers`) they persist across
    epochs and draw each caption's augmentation from its own seed (:class:`_SeededItems`); without,
    the augmentation draws from the training RNG as before (exact resume on a CPU).

    ``src``: the epoch's data under ``train.feature_cache`` (:func:`daimlib.feature_cache.epoch_source`).
    Cached features or evaluation-transformed images hold no randomness: they get a plain loader in
    this process, in the same sampler order."""
    cfg = ctx.cfg
    if src is not None and src.dataset is not ctx.dataset:
        order = _EpochSampler(ctx.sampler, cfg.train.seed, seeded=False)
        order.start(epoch, skip_batches * cfg.train.batch_size)
        return iter(
            DataLoader(
                src.dataset,
                batch_size=cfg.train.batch_size,
                sampler=order,
                collate_fn=src.collate,
                num_workers=0,
                drop_last=True,
                pin_memory=ctx.device.type == "cuda",
            )
        )
    if ctx.loader is None:
        per_node = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        workers = loader_workers(cfg.data.num_workers, per_node)
        ctx.epoch_sampler = _EpochSampler(ctx.sampler, cfg.train.seed, seeded=workers > 0)
        ctx.loader = DataLoader(
            _SeededItems(ctx.dataset) if workers else ctx.dataset,
            batch_size=cfg.train.batch_size,
            sampler=ctx.epoch_sampler,
            collate_fn=collate,
            num_workers=workers,
            drop_last=True,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
            # its own generator: a DataLoader without one draws a seed from the training RNG
            generator=torch.Generator().manual_seed(cfg.train.seed + 1_000_003 * ctx.dd.rank),
        )
    ctx.epoch_sampler.start(epoch, skip_batches * cfg.train.batch_size)
    return iter(ctx.loader)


def _close_loader(ctx) -> None:
    """Stop the loader's persistent workers now, not when the garbage collector finds the run."""
    it = getattr(ctx.loader, "_iterator", None)
    if it is not None and hasattr(it, "_shutdown_workers"):
        it._shutdown_workers()
    ctx.loader = None


def _to_device(batch: dict, device: torch.device) -> dict:
    def move(v):
        if isinstance(v, list):  # cached features: one tensor per level
            return [move(x) for x in v]
        return v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v

    return {k: move(v) for k, v in batch.items()}


# --- model, precision, history -------------------------------------------------------------------


def wants_pretrained(cfg: DAIMConfig) -> bool:
    """Whether ``cfg`` asks for pretrained encoders: paper presets do, the demo builds them from kwargs."""
    return image_pretrained(cfg.image) or text_pretrained(cfg.text)  # each stream decides (image/text.init)


def _optimizer(cfg: DAIMConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    """Adam (reference: lr 1e-4, no weight decay) or AdamW over every parameter (see module doc)."""
    params = list(model.parameters())
    t = cfg.train
    if t.optimizer == "adam":
        return torch.optim.Adam(params, lr=t.lr, weight_decay=t.weight_decay)
    if t.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=t.lr, weight_decay=t.weight_decay)
    raise ValueError(f"train.optimizer must be 'adam' or 'adamw', got {t.optimizer!r}")


def _set_frozen(model, frozen: bool, train_mode: bool) -> None:
    """Freeze/unfreeze the backbones (spec section 1.5); frozen ones stay in train mode unless told."""
    model.set_backbones_trainable(not frozen)
    model.train()
    if frozen and not train_mode:
        model.image_encoder.eval()
        model.text_encoder.eval()


def selection_score(metrics: dict, select_on: str) -> float:
    """Model selection on val: R@1(i2t)+R@1(t2i) (the reference's ``best_irtr``) or RSUM."""
    if select_on == "r1_sum":
        return float(metrics["i2t_r1"] + metrics["t2i_r1"])
    if select_on == "rsum":
        return float(metrics["rsum"])
    raise ValueError(f"train.select_on must be 'r1_sum' or 'rsum', got {select_on!r}")


def _val_protocol(cfg: DAIMConfig) -> str:
    """Validation scores the whole val split (F30K 1,014 images, COCO dev 1K, the demo's val)."""
    return default_protocols(cfg.data.dataset)[-1]


def _scalar(v) -> float | bool | str:
    """A statistic as a CSV cell: tensors and numbers as float, flags as bool, labels (MOM branch) as text."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item()) if v.numel() else float("nan")
    if isinstance(v, (bool, str)):
        return v
    return float(v) if v is not None else float("nan")


# --- stops: signals, own RNG for validation -----------------------------------------------------


class _StopSignals:
    """SIGINT (Ctrl-C) and SIGTERM (schedulers, ``timeout``) while :func:`train` runs: recorded and
    acted on at the next step boundary, so no step is ever half applied. Inside :meth:`immediate`
    (validation, which resume redoes) and at a second signal, a KeyboardInterrupt is raised at once.
    Handlers are installed only in the main thread and restored on exit."""

    def __init__(self):
        self.requested: str | None = None
        self.raise_now = False
        self._old: dict = {}

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._old.items():
            signal.signal(sig, handler)

    def _handle(self, signum, frame) -> None:
        first = self.requested is None
        self.requested = self.requested or signal.Signals(signum).name
        if self.raise_now or not first:
            raise KeyboardInterrupt(self.requested)
        log.warning("%s received: stopping after this step (again to stop at once)", self.requested)

    @contextlib.contextmanager
    def immediate(self):
        self.raise_now = True
        try:
            yield
        finally:
            self.raise_now = False


@contextlib.contextmanager
def _own_rng(seed: int):
    """Run a block on its own seeded RNG streams and give the training streams back untouched."""
    saved = _rng_state()
    seed_everything(seed)
    try:
        yield
    finally:
        _set_rng_state(saved)


# --- the pieces of a run ------------------------------------------------------------------------


@dataclass
class _Loop:
    """Everything a run's functions share (built once by :func:`_build`)."""

    cfg: DAIMConfig
    dd: _Dist
    device: torch.device
    model: DAIM
    loss_fn: MatchingLoss
    optimizer: torch.optim.Optimizer
    scheduler: Any
    scaler: Any
    amp_dtype: torch.dtype | None
    use_scaler: bool
    dataset: Any
    sampler: Any
    tokenizer: Any
    val_split: Any
    out_dir: Path
    progress: bool
    history: HistoryLogger | None = None
    signals: _StopSignals | None = None
    ddp_model: Any = None
    wrapped_trainable: bool | None = None
    loader: Any = None  # the training DataLoader, built at the first epoch (_epoch_batches)
    epoch_sampler: Any = None
    t_start: float = field(default_factory=time.time)
    elapsed0: float = 0.0
    snap: dict | None = None  # RNG and margin at the current step's boundary
    pending: dict | None = None  # the history row of a step whose optimizer step may have run
    best_due: dict | None = None  # meta of a best/ to link from the next last/
    writer: _Writer = field(default_factory=lambda: _Writer())
    stepped: bool = False  # the optimizer stepped since the boundary (a step post-hook sets it)

    @property
    def steps_per_epoch(self) -> int:
        return len(self.sampler) // self.cfg.train.batch_size

    def elapsed(self) -> float:
        return self.elapsed0 + time.time() - self.t_start


def _build(cfg, data_root, out_dir, device, dd, eval_split, use_pretrained, progress) -> _Loop:
    """Seed, model, loss, data, optimiser, schedule and precision, in this order (see module doc)."""
    seed_everything(cfg.train.seed)
    try:
        model = DAIM.from_config(cfg, pretrained=use_pretrained)
    except (RuntimeError, OSError) as e:
        if not use_pretrained:
            raise
        raise PretrainedWeightsError(str(e)) from e  # the encoders' message names the model and the field
    model.to(device)
    if cfg.train.compile:
        model.compile_encoders()
    loss_fn = MatchingLoss.from_config(cfg.loss).to(device)
    dataset, sampler, tokenizer = _train_loader(cfg, data_root, dd, device)
    check_vocabulary_fits(
        tokenizer,
        model,
        "Set text.tokenizer to the text encoder's vocabulary (text.tokenizer=data builds one that fits), or "
        "give the encoder that many embeddings (text.model_kwargs.vocab_size).",
    )
    val_split = load_split(cfg.data, data_root, eval_split) if eval_split is not None else None
    if val_split is not None and cfg.train.val_images is not None:
        val_split = first_images(val_split, cfg.train.val_images)
    if val_split is not None and val_split.n_images < MIN_IMAGES:  # best could never improve (issue 28)
        raise ValueError(
            f"validation on {eval_split!r} cannot select a best checkpoint: {degenerate_problem(val_split.n_images)}"
            " (data.val_split, train.val_images), or train without validation (--no-val)"
        )
    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=cfg.train.lr_step, gamma=cfg.train.lr_gamma
    )
    amp_dtype, use_scaler = _amp(cfg, device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    ctx = _Loop(
        cfg,
        dd,
        device,
        model,
        loss_fn,
        optimizer,
        scheduler,
        torch.amp.GradScaler("cuda", enabled=use_scaler),
        amp_dtype,
        use_scaler,
        dataset,
        sampler,
        tokenizer,
        val_split,
        Path(out_dir),
        progress,
    )
    ctx.ddp_model = model
    optimizer.register_step_post_hook(lambda *_: setattr(ctx, "stepped", True))
    return ctx


def _restore(ctx: _Loop, last_dir: Path) -> tuple[TrainState, tuple[int, int]]:
    """Weights strictly into the model built from cfg, the margin into the loss, then the training state."""
    cfg = ctx.cfg
    _, saved_cfg, state = load_checkpoint(
        last_dir, device=ctx.device, strict=True, model=ctx.model, expect_cfg=cfg, loss=ctx.loss_fn
    )
    if state is None:
        raise CheckpointError(f"{display_path(last_dir)} has no train_state.pt; it cannot be resumed")
    if saved_cfg.train.batch_size != cfg.train.batch_size:
        raise ValueError(
            f"cannot resume with train.batch_size={cfg.train.batch_size}: the run was trained with "
            f"{saved_cfg.train.batch_size}, and the caption order, the MOM's batch statistics and the summed "
            f"loss depend on it. Resume with --set train.batch_size={saved_cfg.train.batch_size}, or start a "
            "new run in another --out."
        )
    _keep_run_tokenizer(ctx, last_dir)
    changed = {k: v for k, v in saved_cfg.diff(cfg).items() if k.startswith("train.")}
    if changed:
        log.info("resuming with changed training settings: %s", changed)
    ctx.optimizer.load_state_dict(state["optimizer"])
    ctx.scheduler.load_state_dict(state["scheduler"])
    ctx.scheduler.step_size, ctx.scheduler.gamma = cfg.train.lr_step, cfg.train.lr_gamma
    if state.get("scaler"):
        ctx.scaler.load_state_dict(state["scaler"])
    st = TrainState.from_dict(state)
    ctx.loss_fn.warmup_end = state.get("warmup_end")  # where an adaptive warm-up (loss.warmup_until) ended
    rngs = state["rng"]
    seed_everything(cfg.train.seed + ctx.dd.rank)
    if len(rngs) == ctx.dd.world:
        _set_rng_state(rngs[ctx.dd.rank])
    else:
        per = cfg.train.batch_size
        log.warning(
            "checkpoint was written by %d process(es), this run has %d: RNG streams reseeded, and the global "
            "batch changes from %d x %d = %d to %d x %d = %d (each hardest negative, the MOM's batch statistics and "
            "the steps per epoch change with it: docs/reproduce.md, 'The batch across GPUs')",
            len(rngs),
            ctx.dd.world,
            len(rngs),
            per,
            len(rngs) * per,
            ctx.dd.world,
            per,
            ctx.dd.world * per,
        )
    log.info("resumed from %s at epoch %d, step %d", display_path(last_dir), st.epoch, st.global_step)
    return st, (int(state["steps_rows"]), int(state["epochs_rows"]))


def _keep_run_tokenizer(ctx: _Loop, last_dir: Path) -> None:
    """A resumed run goes on with the vocabulary it was trained with (``last/tokenizer``), even when the
    data folder's tokenizer has changed since (issue 28): captions are tokenized again with it."""
    from .checkpoint import load_checkpoint_tokenizer  # noqa: PLC0415 - kept beside its one use
    from .data import tokenize  # noqa: PLC0415

    saved = load_checkpoint_tokenizer(last_dir)
    if saved is None or saved.get_vocab() == ctx.tokenizer.get_vocab():
        return
    log.warning(
        "the data's tokenizer differs from the one %s was trained with: continuing with the run's own (%s)",
        display_path(last_dir.parent),
        display_path(last_dir / "tokenizer"),
    )
    ctx.tokenizer = saved
    ds = ctx.dataset
    ds.input_ids, ds.attention_mask = tokenize(saved, ds.split.captions, ctx.cfg.text.max_len)


def save_last(ctx: _Loop, st: TrainState, stopped: str, gather: bool = True) -> None:
    """Write ``<out>/last``: weights, margin, optimizer, scheduler, scaler, RNG of every rank, history position."""
    rng = _gather_rng(ctx.dd) if gather else [_rng_state()]  # gather is a collective: not after Ctrl-C
    steps_rows, epochs_rows = ctx.history.rows
    state = dict(
        st.to_dict(),
        warmup_end=ctx.loss_fn.warmup_end,
        optimizer=ctx.optimizer.state_dict(),
        scheduler=ctx.scheduler.state_dict(),
        scaler=ctx.scaler.state_dict() if ctx.use_scaler else {},
        rng=rng,
        world_size=ctx.dd.world,
        steps_rows=steps_rows,
        epochs_rows=epochs_rows,
        elapsed_s=ctx.elapsed(),
        stopped=stopped,
    )
    ctx.history.flush()  # the rows the checkpoint counts must be on disk
    if ctx.dd.main:
        ctx.writer.wait()  # the previous write first: one snapshot in memory, writes in order
        weights = {k: v.detach().to("cpu", copy=True) for k, v in ctx.model.state_dict().items()}
        state, loss, best = _cpu_copy(state), copy.deepcopy(ctx.loss_fn).cpu(), ctx.best_due
        tokenizer = copy.deepcopy(
            ctx.tokenizer
        )  # the loader tokenizes on: a fast tokenizer is not shared by threads
        split = ctx.dataset.split  # the data it trains on: a preset for any folder (tiny) names none
        data = {"layout": split.layout, "dataset": getattr(split, "dataset", None)}
        meta = dict(kind="last", epoch=st.epoch, step=st.global_step, stopped=stopped, data=data)

        def write() -> None:
            save_checkpoint(
                ctx.out_dir / "last",
                ctx.model,
                ctx.cfg,
                train_state=state,
                loss=loss,
                meta=meta,
                tokenizer=tokenizer,  # the folder carries its tokenizer: evaluating needs no hub
                state_dict=weights,
            )
            if best is not None:
                _link_best(ctx.out_dir, best)

        ctx.writer.submit(
            write, background=stopped == "running"
        )  # a run's last save is written before it returns
    ctx.best_due = None


def _cpu_copy(obj):
    """``obj`` (tensors in dicts, lists, tuples) with every tensor copied to the CPU: a snapshot that the
    training can go on changing in place while a background thread writes it."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().to("cpu", copy=True)
    if isinstance(obj, dict):
        return {k: _cpu_copy(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_cpu_copy(v) for v in obj)
    return obj


class _Writer:
    """Rank 0's checkpoint writes, one at a time, in a background thread while training goes on: a save
    costs the training only the copy of the weights and the optimizer state to the CPU, and the other
    ranks, which wait for rank 0 at the next collective, no longer wait for the disk (issue 25). A write
    that failed raises at the next save or at the end of the run; a crash mid-write leaves the previous
    ``last/`` (atomic rename), from which resume goes on."""

    def __init__(self):
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None

    def wait(self, raise_error: bool = True) -> None:
        if self.thread is not None:
            self.thread.join()
            self.thread = None
        if self.error is not None and raise_error:
            error, self.error = self.error, None
            raise error

    def submit(self, fn, background: bool) -> None:
        self.wait()
        if not background:
            fn()
            return

        def run() -> None:
            try:
                fn()
            except BaseException as e:  # handed to the main thread at the next wait()
                self.error = e

        self.thread = threading.Thread(target=run, name="daim-checkpoint-writer", daemon=False)
        self.thread.start()


def _link_best(out_dir: Path, meta: dict) -> None:
    """``best/`` from the ``last/`` just written (the same weights, margin and tokenizer; no train state):
    hard links, so the weights are written once per epoch (:func:`daimlib.checkpoint.link_checkpoint`)."""
    link_checkpoint(out_dir / "last", out_dir / "best", meta=dict(meta, stopped=None))


def _repair_best(out_dir: Path, st: TrainState) -> None:
    """On resume: a stop between writing ``last/`` and linking ``best/`` left ``best/`` one best behind
    while ``last/`` holds the best weights (its step is the best's); link it again."""
    if st.best_epoch < 0 or not (out_dir / "last" / "meta.json").is_file():
        return
    best = read_meta(out_dir / "best") if (out_dir / "best" / "meta.json").is_file() else {}
    last = read_meta(out_dir / "last")
    if best.get("epoch") != st.best_epoch and last.get("step") == st.best_step:
        log.warning("best/ was one best behind last/ (a stop between their writes): linking it again")
        _link_best(
            out_dir,
            dict(
                kind="best",
                epoch=st.best_epoch,
                step=st.best_step,
                select_on=st.best_select_on,
                metrics=st.best_metrics,
            ),
        )


# --- one step, one epoch, one validation --------------------------------------------------------


def _nonfinite(ctx: _Loop, st: TrainState, what: str, batch: dict) -> NonFiniteError:
    """The error for a NaN/Inf ``what`` at this step, naming the likely cause."""
    causes = []
    if "images" in batch and not bool(torch.isfinite(batch["images"]).all()):
        causes.append("the batch holds non-finite pixel values (a damaged image, or data.std with a zero)")
    margin = float(ctx.snap["margin"]) if ctx.snap else float(ctx.loss_fn.margin)
    if not math.isfinite(margin):
        causes.append(f"the margin is {margin} (loss.margin={ctx.cfg.loss.margin})")
    if not causes:
        causes.append(
            f"training diverged: train.lr={ctx.cfg.train.lr} is probably too high (lower it, or set "
            "train.grad_clip)"
        )
    return NonFiniteError(
        f"step {st.global_step} (epoch {st.epoch}): the {what} is not finite; likely cause: {'; '.join(causes)}. "
        f"The run stopped before this step's update: {display_path(ctx.out_dir / 'last')} holds the state before "
        "it (fix the cause, then --resume), and best/ was not touched."
    )


def train_step(ctx: _Loop, st: TrainState, batch: dict) -> dict:
    """One optimisation step: model -> scores, loss (MOM update, warm-up), backward, optimizer step.

    Returns the step's history row; the caller counts the step (:func:`_finish_step`).
    """
    tc, t0 = ctx.cfg.train, time.time()
    batch = _to_device(batch, ctx.device)
    with torch.autocast(ctx.device.type, dtype=ctx.amp_dtype) if ctx.amp_dtype else contextlib.nullcontext():
        out = ctx.ddp_model(batch, global_batch=ctx.cfg.loss.negatives == "global")
    lo = ctx.loss_fn(out.scores, step=st.global_step, img_index=out.img_index, global_batch=out.global_batch)
    if not ctx.dd.enabled and not bool(torch.isfinite(lo.loss)):  # under DDP the gradient check below agrees
        raise _nonfinite(ctx, st, "loss", batch)
    ctx.scaler.scale(lo.loss).backward()
    grads = [p.grad for p in ctx.model.parameters() if p.grad is not None]
    if tc.grad_clip:
        ctx.scaler.unscale_(ctx.optimizer)
        torch.nn.utils.clip_grad_norm_(
            [p for p in ctx.model.parameters() if p.grad is not None], tc.grad_clip
        )
    if not ctx.use_scaler and not bool(torch.isfinite(torch.nn.utils.get_total_norm(grads))):
        raise _nonfinite(ctx, st, "gradient", batch)  # (a GradScaler skips such steps itself)
    loss_value = lo.loss.detach().float()
    if ctx.dd.enabled and not out.global_batch:  # log the mean over ranks (the margin is already global)
        dist.all_reduce(loss_value)
        loss_value /= ctx.dd.world
    stats = {k: _scalar(v) for k, v in lo.stats.items() if k not in STEP_COLUMNS}
    row = dict(
        step=st.global_step,
        epoch=st.epoch,
        lr=ctx.optimizer.param_groups[0]["lr"],
        loss=float(loss_value.item()),
        margin=lo.margin,
        **stats,
    )
    ctx.pending = row  # from here on an interrupt completes this step instead of undoing it
    ctx.scaler.step(ctx.optimizer)
    ctx.scaler.update()
    ctx.optimizer.zero_grad(set_to_none=True)
    row["step_s"] = time.time() - t0
    return row


def _finish_step(ctx: _Loop, st: TrainState) -> None:
    """Write the pending step's row (once) and count the step."""
    row = ctx.pending
    if row is None:
        return
    row.setdefault("step_s", float("nan"))
    ctx.history.log_step(row)
    if st.global_step == row["step"]:
        st.global_step, st.batch_in_epoch = st.global_step + 1, st.batch_in_epoch + 1
        st.loss_sum, st.loss_n = st.loss_sum + row["loss"], st.loss_n + 1
    ctx.pending, ctx.snap = None, None


def _undo_step(ctx: _Loop) -> None:
    """Back to the step boundary (RNG, margin, no gradients): for a step stopped before its update."""
    if ctx.snap is not None:
        _set_rng_state(ctx.snap["rng"])
        ctx.loss_fn.margin.copy_(ctx.snap["margin"])
        ctx.loss_fn.warmup_end = ctx.snap.get("warmup_end")
    ctx.optimizer.zero_grad(set_to_none=True)
    ctx.pending, ctx.snap = None, None


def _settle_interrupted_step(ctx: _Loop, st: TrainState) -> None:
    """A KeyboardInterrupt raised inside a step: finish it if the optimizer stepped, undo it otherwise."""
    if ctx.pending is not None and ctx.stepped:
        _finish_step(ctx, st)
    elif ctx.snap is not None:
        _undo_step(ctx)


def _stop_reason(ctx: _Loop, st: TrainState) -> str | None:
    """Budget or signal, decided alike on every rank."""
    tc = ctx.cfg.train
    flags = torch.tensor(
        [
            float(ctx.signals.requested is not None),
            float(tc.max_minutes is not None and ctx.elapsed() >= tc.max_minutes * 60),
        ]
    )
    if ctx.dd.enabled:
        flags = flags.to(ctx.device)
        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
    if tc.max_steps is not None and st.global_step >= tc.max_steps:
        return "max_steps"
    if flags[1] > 0:
        return "max_minutes"
    return "interrupted" if flags[0] > 0 else None


# torch >= 2.14 names it forward_sync_buffers (and deprecates broadcast_buffers)
_NO_BUFFER_SYNC = (
    {"forward_sync_buffers": False}
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
    else {"broadcast_buffers": False}
)


def train_one_epoch(ctx: _Loop, st: TrainState) -> str | None:
    """The steps of epoch ``st.epoch`` from ``st.batch_in_epoch`` on; returns a stop reason or None."""
    tc, dd = ctx.cfg.train, ctx.dd
    frozen = st.epoch < tc.freeze_epochs
    _set_frozen(ctx.model, frozen, feature_cache.frozen_train_mode(ctx.cfg))
    src = feature_cache.epoch_source(ctx, frozen)  # images, or the frozen encoders' cached features
    if dd.enabled and ctx.wrapped_trainable != (not frozen):
        # DDP only syncs parameters that required grad when it was built: re-wrap at unfreeze. The graph is
        # static in both phases (every trainable parameter gets a gradient at every step: heads only while
        # frozen, all after; tests/test_train_speed.py), so no find_unused_parameters pass per step. The
        # buffers are constants (Swin's position index and masks, BERT's position ids): not broadcast.
        ctx.ddp_model = DistributedDataParallel(
            ctx.model, device_ids=[dd.local_rank] if ctx.device.type == "cuda" else None, **_NO_BUFFER_SYNC
        )
        ctx.wrapped_trainable = not frozen
    batches = _epoch_batches(ctx, st.epoch, st.batch_in_epoch, src)
    bar = tqdm(
        total=ctx.steps_per_epoch,
        desc=f"epoch {st.epoch}" + (" (backbones frozen)" if frozen else ""),
        disable=not (ctx.progress and dd.main),
        leave=False,
        dynamic_ncols=True,
    )
    stop = None
    try:
        while stop is None and st.batch_in_epoch < ctx.steps_per_epoch:
            ctx.snap = {
                "rng": _rng_state(),
                "margin": ctx.loss_fn.margin.detach().clone(),
                "warmup_end": ctx.loss_fn.warmup_end,
            }  # the boundary
            ctx.stepped = False
            batch = next(batches, None)  # augmentation draws from the training RNG: after the snapshot
            if batch is None:
                break
            ctx.pending = None
            row = train_step(ctx, st, batch)
            _finish_step(ctx, st)
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.3f}", margin=f"{row['margin']:.4f}")
            stop = _stop_reason(ctx, st)
    finally:
        bar.close()
        del batches
    return stop


def _val_due(ctx: _Loop, pending: dict) -> bool:
    tc, epoch = ctx.cfg.train, pending["epoch"]
    if ctx.val_split is None or (tc.skip_first_eval and epoch == 0 and tc.epochs > 1):
        return False
    return (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs or not pending["complete"]


def validate_and_checkpoint(ctx: _Loop, st: TrainState) -> None:
    """The pending epoch row: validation (its own RNG stream), ``best`` if improved, the history row.

    A signal aborts the validation at once; the row stays pending and a resumed run redoes it.
    """
    pending, tc = st.val_pending, ctx.cfg.train
    if pending is None:
        return
    epoch, complete = pending["epoch"], pending["complete"]
    row = dict(
        epoch=epoch,
        step=st.global_step,
        complete=complete,
        lr=ctx.optimizer.param_groups[0]["lr"],
        loss=st.loss_sum / max(st.loss_n, 1),
        margin=float(ctx.loss_fn.margin),
    )
    if _val_due(ctx, pending):
        with ctx.signals.immediate(), _own_rng(tc.seed * 7919 + epoch):
            metrics, _ = evaluate(
                ctx.model,
                ctx.val_split,
                ctx.tokenizer,
                ctx.cfg,
                protocol=_val_protocol(ctx.cfg),
                device=ctx.device,
                progress=ctx.progress and ctx.dd.main,
            )
        metrics = {k: float(v) for k, v in metrics.items()}
        score = selection_score(metrics, tc.select_on)
        row.update(metrics, select=score)
        improved = score > st.best_score
        if improved:  # best/ is made from the last/ that save_last writes next (_link_best)
            ctx.best_due = dict(
                kind="best", epoch=epoch, step=st.global_step, select_on=tc.select_on, metrics=metrics
            )
            st.best_score, st.best_epoch, st.best_metrics = score, epoch, metrics
            st.best_step, st.best_select_on = st.global_step, tc.select_on
        row["best"] = improved  # this row saved best/ (an epoch's complete row after its partial one may not)
    elif ctx.val_split is not None:  # the same columns in every row: the CSV's header is its first row's
        row.update(dict.fromkeys(METRIC_KEYS, float("nan")), select=float("nan"), best=False)
    row.update(epoch_s=pending["epoch_s"], elapsed_min=ctx.elapsed() / 60)
    ctx.history.log_epoch(row, key=(epoch, complete, st.global_step))
    st.val_pending = None
    if complete:
        st.loss_sum, st.loss_n = 0.0, 0
    ctx.model.train()


def _epochs(ctx: _Loop, st: TrainState) -> str:
    """The loop over epochs; returns how the run stopped."""
    tc = ctx.cfg.train
    if st.val_pending is not None:  # an interrupt cut a validation short: redo it first
        validate_and_checkpoint(ctx, st)
        save_last(ctx, st, "running")
    while st.epoch < tc.epochs:
        if tc.max_steps is not None and st.global_step >= tc.max_steps:
            return "max_steps"  # already spent (a resumed run): nothing to do
        t0, epoch = time.time(), st.epoch
        stop = train_one_epoch(ctx, st)
        if st.batch_in_epoch >= ctx.steps_per_epoch:  # end of epoch: schedule, validation, checkpoints
            with warnings.catch_warnings():  # a run resumed exactly at an epoch end steps no optimizer first
                warnings.filterwarnings(
                    "ignore", message="Detected call of `lr_scheduler.step", category=UserWarning
                )
                ctx.scheduler.step()
            st.epoch, st.batch_in_epoch = epoch + 1, 0
            st.val_pending = dict(epoch=epoch, complete=True, epoch_s=time.time() - t0)
        elif stop in ("max_steps", "max_minutes"):  # budget stop mid-epoch: evaluate what we have
            st.val_pending = dict(epoch=epoch, complete=False, epoch_s=time.time() - t0)
        if stop != "interrupted":  # after a signal the validation stays pending (resume does it)
            validate_and_checkpoint(ctx, st)
        save_last(ctx, st, stop or ("completed" if st.epoch >= tc.epochs else "running"))
        if stop is not None:
            log.info("stopped by %s at epoch %d, step %d", stop, st.epoch, st.global_step)
            return stop
    return "completed"


def _run(ctx: _Loop, st: TrainState, record) -> str:
    """:func:`_epochs` under the stop signals; every way out leaves a consistent ``last``."""
    with _StopSignals() as sig, tf32(ctx.cfg.train.tf32, ctx.device):
        ctx.signals = sig
        try:
            return _epochs(ctx, st)
        except KeyboardInterrupt:
            _settle_interrupted_step(ctx, st)
            if ctx.dd.main:
                log.warning("interrupted: writing %s", display_path(ctx.out_dir / "last"))
            save_last(ctx, st, "interrupted", gather=False)
            return "interrupted"
        except NonFiniteError:
            _undo_step(ctx)
            save_last(ctx, st, "nonfinite", gather=False)
            record("nonfinite", st)
            raise
        finally:
            ctx.writer.wait(raise_error=False)  # nothing left writing when train() returns or raises
            _close_loader(ctx)
            ctx.history.close()


# --- the run folder -----------------------------------------------------------------------------


def _restore_backup(last_dir: Path) -> bool:
    """A crash between the two renames of a save leaves ``.last.old-*`` and no ``last``: put it back."""
    olds = sorted(last_dir.parent.glob(f".{last_dir.name}.old-*"), key=lambda p: p.stat().st_mtime)
    olds = [p for p in olds if (p / "meta.json").is_file()]
    if not olds:
        return False
    os.replace(olds[-1], last_dir)
    log.warning(
        "restored %s from the backup %s left by an interrupted save",
        display_path(last_dir),
        display_path(olds[-1]),
    )
    return True


def _prepare_out_dir(
    out_dir: Path, cfg, data_root, eval_split, resume: bool, overwrite: bool, main: bool
) -> str:
    """What to do with ``out_dir``: "resume", "fresh" or "reuse" (a finished run of this config and data).

    Never destroys what the kit did not write: a non-empty folder that is not a kit run is refused
    even with ``overwrite``; ``overwrite`` deletes the kit's own files only (:func:`runs.clear_run`).
    """
    last_dir = out_dir / "last"
    if resume and overwrite:
        raise ValueError(
            "resume=True (--resume) and overwrite=True (--overwrite) exclude each other: resume "
            "continues the run in the folder, overwrite replaces it; pass one of them"
        )
    if resume:
        backups = [p for p in out_dir.glob(".last.old-*") if (p / "meta.json").is_file()]
        if not (last_dir / "meta.json").is_file() and not backups:
            raise CheckpointError(
                f"resume=True but {display_path(last_dir)} holds no checkpoint (nor a backup .last.old-*); "
                "point --out at the run folder that has last/, or start a new run in an empty --out"
            )
        if main and not (last_dir / "meta.json").is_file():
            _restore_backup(last_dir)
        return "resume"
    problem = runs.checkpoint_folder_problem(out_dir)
    if problem:
        raise FileExistsError(problem)
    if not out_dir.exists() or not any(p.name != runlock.LOCK_NAME for p in out_dir.iterdir()):
        return "fresh"
    if not runs.is_kit_run(out_dir):
        shown = ", ".join(sorted(p.name for p in out_dir.iterdir() if p.name != runlock.LOCK_NAME)[:5])
        raise FileExistsError(
            f"{display_path(out_dir)} is not empty and is not a DAIM Kit run folder (it holds {shown}, but no "
            "run record run.json, the marker a kit run writes first); nothing was changed. Choose a new or empty "
            "--out."
        )
    if overwrite:
        if main:
            removed = runs.clear_run(out_dir)
            log.info("overwrite: removed %s from %s", ", ".join(removed) or "nothing", display_path(out_dir))
        return "fresh"
    problem = runs.reuse_problem(out_dir, cfg, data_root, eval_split)
    if problem is None:
        log.info(
            "%s already holds this finished run (same config and data): reusing it", display_path(out_dir)
        )
        return "reuse"
    raise FileExistsError(
        f"{display_path(out_dir)} already holds a run that cannot be reused: {problem}. Pass resume=True "
        "(--resume) to continue it, overwrite=True (--overwrite) to replace it, or choose another out_dir."
    )


def read_run(
    out_dir: str | os.PathLike, device="cpu", checkpoint: str = "last", cfg: DAIMConfig | None = None
) -> TrainResult:
    """The :class:`TrainResult` of a finished run folder, read back instead of training again: the
    library's one run reader. ``checkpoint="last"`` gives the weights a fresh ``train`` returns;
    ``"best"`` the best validation checkpoint (``last`` when the run had no validation). ``cfg``:
    the config to hold the folder to (default its own config.json)."""
    if checkpoint not in ("last", "best"):
        raise ValueError(f"checkpoint must be 'last' or 'best', got {checkpoint!r}")
    out_dir = Path(out_dir)
    cfg = DAIMConfig.from_json(out_dir / "config.json") if cfg is None else cfg
    record = runs.read_record(out_dir) or {}
    model = DAIM.from_config(cfg, pretrained=False)
    loss = MatchingLoss.from_config(cfg.loss)
    best = read_meta(out_dir / "best") if (out_dir / "best" / "meta.json").is_file() else {}
    folder = out_dir / ("best" if checkpoint == "best" and best else "last")
    load_checkpoint(folder, device=device, strict=True, model=model, expect_cfg=cfg, loss=loss)
    return TrainResult(
        model=model.eval(),
        cfg=cfg,
        out_dir=out_dir,
        steps=read_csv(out_dir / STEPS_CSV),
        epochs=read_csv(out_dir / EPOCHS_CSV),
        best_metrics=dict(best.get("metrics", {})),
        best_epoch=best.get("epoch"),
        global_step=int(record.get("global_step", 0)),
        stopped=str(record.get("stopped", "completed")),
        loss=loss.eval(),
    )


# --- the entry point ----------------------------------------------------------------------------


def _owning_out_dir(fn):
    """Run ``fn(cfg, data_root, out_dir, ...)`` while owning ``out_dir`` (:func:`daimlib.runlock.run_folder`:
    one writer per folder, a second ``train`` on it fails at once naming the holder; a failed start
    leaves no empty folder). Under ``torchrun`` rank 0 holds the lock."""

    @functools.wraps(fn)
    def owning(cfg, data_root, out_dir, *args, **kwargs):
        with runlock.run_folder(out_dir, "train", enabled=int(os.environ.get("RANK", "0")) == 0):
            return fn(cfg, data_root, out_dir, *args, **kwargs)

    return owning


def _result(ctx: _Loop, st: TrainState, stopped: str, out_dir: Path) -> TrainResult:
    """The :class:`TrainResult` of the run just trained (the model as it ends, in eval mode)."""
    return TrainResult(
        model=ctx.model.eval(),
        cfg=ctx.cfg,
        out_dir=out_dir,
        steps=read_csv(out_dir / STEPS_CSV),
        epochs=read_csv(out_dir / EPOCHS_CSV),
        best_metrics=dict(st.best_metrics),
        best_epoch=st.best_epoch if st.best_epoch >= 0 else None,
        global_step=st.global_step,
        stopped=stopped,
        loss=ctx.loss_fn.eval(),
    )


def _start_state(ctx: _Loop, out_dir: Path, data_root, data_id: dict, resume: bool, dd: _Dist):
    """``(TrainState, history rows)`` to start from: restored from ``out_dir/last`` on ``resume`` (the
    same data only), else a fresh state with every generator seeded."""
    if not resume:
        seed_everything(ctx.cfg.train.seed + dd.rank)  # dropout/augmentation streams differ across ranks
        return TrainState(), None
    trained_on = ((runs.read_record(out_dir) or {}).get("data") or {}).get("sha256")
    if trained_on is not None and trained_on != data_id["sha256"]:
        raise ValueError(
            f"cannot resume {display_path(out_dir)} on {display_path(data_root)}: the run was trained on other "
            "data (its run.json records another dataset sha256); resume with the run's own data root"
        )
    st, rows = _restore(ctx, out_dir / "last")
    if dd.main:
        _repair_best(out_dir, st)
    return st, rows


@_owning_out_dir
def train(
    cfg: DAIMConfig,
    data_root: str | os.PathLike,
    out_dir: str | os.PathLike,
    resume: bool = False,
    device: str | torch.device | None = None,
    progress: bool = True,
    eval_split: str | None = "val",
    pretrained: bool | None = None,
    overwrite: bool = False,
) -> TrainResult:
    """Train DAIM with ``cfg`` on the dataset at ``data_root``; write the run to ``out_dir``.

    ``out_dir`` receives run.json, config.json, history_steps.csv, history_epochs.csv and the
    checkpoint folders ``last`` and ``best`` (:mod:`daimlib.checkpoint`). ``resume=True`` continues
    from ``out_dir/last`` (the model-defining config and the batch size must match; other ``train.*``
    may differ, e.g. more epochs or a larger ``max_steps``). A non-empty ``out_dir`` is refused
    unless it holds a finished run of the same config and data (then it is returned as is) or
    ``overwrite=True``. ``eval_split=None`` skips validation (no ``best``). ``pretrained=None``
    loads pretrained encoders exactly when the config names hub models or local weights
    (:func:`wants_pretrained`). Under ``torchrun`` every process calls this; rank 0 writes files.
    """
    out_dir = Path(out_dir)
    dd, device = _setup_distributed(torch.device(device) if device is not None else None)
    plan = _prepare_out_dir(out_dir, cfg, data_root, eval_split, resume, overwrite, dd.main)
    if dd.enabled:
        dist.barrier()
    if plan == "reuse":
        return read_run(out_dir, device, cfg=cfg)
    if dd.main:
        out_dir.mkdir(parents=True, exist_ok=True)
    use_pretrained = (wants_pretrained(cfg) if pretrained is None else pretrained) and not resume
    if device.type == "cpu":
        tune_cpu_allocator()  # freed activations are reused, not returned to the OS (bit-identical results)
    ctx = _build(cfg, data_root, out_dir, device, dd, eval_split, use_pretrained, progress)
    data_id = runs.data_identity(data_root, cfg)
    st, rows = _start_state(ctx, out_dir, data_root, data_id, resume, dd)
    ctx.elapsed0 = st.elapsed_s

    def record(stopped: str, state: TrainState) -> None:
        if dd.main:
            runs.write_record(
                out_dir,
                cfg,
                data_id,
                stopped=stopped,
                global_step=state.global_step,
                epoch=state.epoch,
                eval_split=eval_split,
                extra={"signal": ctx.signals.requested if ctx.signals else None},
            )

    record("running", st)  # first: run.json is the marker by which --overwrite knows a kit run folder
    if dd.main:
        cfg.to_json(out_dir / "config.json")
    ctx.history = HistoryLogger(
        out_dir,
        dd.main,
        flush_every=cfg.train.log_every,
        resume_rows=rows,
        tensorboard=cfg.train.tensorboard,
        global_step=st.global_step,
    )
    stopped = _run(ctx, st, record)
    record(stopped, st)
    if dd.enabled:
        dist.barrier()
    result = _result(ctx, st, stopped, out_dir)
    if dd.owns_group:
        dist.destroy_process_group()
    return result
