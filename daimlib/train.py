"""The training loop: the reference schedule (spec section 6), readable top to bottom.

``train(cfg, data_root, out_dir)`` does, in this order:

1. join the process group when launched by ``torchrun`` (gloo on CPU, nccl on CUDA); seed
   everything and build the model (first, so that its initial weights depend on the seed only);
2. data: the train split at *caption* level (one sample per caption, shuffled; the same image can
   appear twice in a batch, as in the reference), sharded across ranks by a ``DistributedSampler``;
3. Adam/AdamW over *all* parameters, so that the backbones join the
   optimisation when unfrozen (a frozen parameter has ``grad=None`` and Adam skips it); StepLR
   stepped per epoch;
4. per epoch: backbones frozen while ``epoch < freeze_epochs`` (frozen modules stay in train mode,
   dropout on, as in the reference, unless ``frozen_train_mode=False``); per step: forward with
   ``step=global_step`` (the loss warm-up and the MOM margin update live in the model), backward
   under AMP on CUDA (bf16, or fp16 with a GradScaler; off on CPU), optional gradient clipping;
   one row per step in ``history_steps.csv`` (loss, margin and every MOM statistic, lr);
5. validation every ``eval_every`` epochs through :func:`daimlib.evaluate.evaluate`, one row per
   epoch in ``history_epochs.csv``; ``best`` = highest val R@1(i2t)+R@1(t2i) (``select_on="r1_sum"``,
   the reference's ``best_irtr``) or RSUM; ``last`` written at every epoch end;
6. budgets (``max_steps``, ``max_minutes``) and Ctrl-C stop the run cleanly: ``last`` is written
   (and at a budget stop the model is evaluated), so ``resume=True`` continues where it stopped.

Resume is exact on a CPU: the order of the captions in epoch e depends only on (seed, e), and the
RNG states (torch, CUDA, numpy, python) are saved with the optimizer, scheduler and scaler, so a
run interrupted after epoch k and resumed ends with the same weights and history rows as an
uninterrupted one. A resume in the middle of an epoch (after a budget stop) is exact with
``data.num_workers=0``; with worker processes their augmentation RNG restarts with the epoch.
"""

from __future__ import annotations

import contextlib
import csv
import logging
import math
import os
import random
import shutil
import time
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

from .checkpoint import (
    CheckpointError,
    display_path,
    load_checkpoint,
    save_checkpoint,
)
from .config import DAIMConfig
from .encoders import image_pretrained, text_pretrained

log = logging.getLogger("daimlib.train")

STEP_COLUMNS = ("step", "epoch", "lr", "loss", "margin")  # then every MOM statistic, then step_s
STEPS_CSV = "history_steps.csv"
EPOCHS_CSV = "history_epochs.csv"


class PretrainedWeightsError(RuntimeError):
    """The pretrained encoder weights a config asks for are not available (offline, no local copy)."""


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

    @property
    def last_dir(self) -> Path:
        return self.out_dir / "last"

    @property
    def best_dir(self) -> Path:
        return self.out_dir / "best"


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
        dev = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return _Dist(), torch.device(dev)
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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


class _SkipSampler(Sampler):
    """The indices of ``base`` without the first ``skip`` (to resume in the middle of an epoch)."""

    def __init__(self, base: Sampler, skip: int = 0):
        self.base, self.skip = base, skip

    def __iter__(self):
        it = iter(self.base)
        for _ in range(self.skip):
            next(it, None)
        yield from it

    def __len__(self) -> int:
        return max(len(self.base) - self.skip, 0)


def _train_loader(cfg: DAIMConfig, data_root, dd: _Dist, device: torch.device):
    """Caption-level training data, shuffled per epoch by ``DistributedSampler(seed, epoch)``.

    The same sampler runs in a single process (one replica), so the caption order depends only on
    (seed, epoch) and resume needs no generator state. ``drop_last``: a short last batch would
    change the MOM trigger fraction and the summed loss's scale.
    """
    from .data import CaptionDataset, build_transforms, collate, load_split, load_tokenizer

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
    return dataset, sampler, tokenizer, collate


def _make_loader(
    dataset, sampler, collate, cfg: DAIMConfig, epoch: int, skip_batches: int, device, dd: _Dist
):
    sampler.set_epoch(epoch)
    gen = torch.Generator().manual_seed(cfg.train.seed * 1_000_003 + epoch * 101 + dd.rank)  # worker seeds
    return DataLoader(
        dataset,
        batch_size=cfg.train.batch_size,
        sampler=_SkipSampler(sampler, skip_batches * cfg.train.batch_size),
        collate_fn=collate,
        num_workers=cfg.data.num_workers,
        drop_last=True,
        pin_memory=device.type == "cuda",
        generator=gen,
    )


def _to_device(batch: dict, device: torch.device) -> dict:
    return {
        k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()
    }


# --- model, precision, history -------------------------------------------------------------------


def wants_pretrained(cfg: DAIMConfig) -> bool:
    """Whether ``cfg`` asks for pretrained encoders: paper presets do, the demo builds them from kwargs."""
    return image_pretrained(cfg.image) or text_pretrained(cfg.text)  # each stream decides (image/text.init)


def _amp(cfg: DAIMConfig, device: torch.device) -> tuple[torch.dtype | None, bool]:
    """(autocast dtype or None, use a GradScaler). AMP only on CUDA: off on a CPU whatever the config."""
    mode = cfg.train.amp
    if mode not in ("auto", "bf16", "fp16", "off"):
        raise ValueError(f"train.amp must be one of auto|bf16|fp16|off, got {mode!r}")
    if device.type != "cuda" or mode == "off":
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


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


def _scalar(v) -> float | bool | str:
    """A statistic as a CSV cell: tensors and numbers as float, flags as bool, labels (MOM branch) as text."""
    if isinstance(v, torch.Tensor):
        return float(v.detach().float().mean().item()) if v.numel() else float("nan")
    if isinstance(v, (bool, str)):
        return v
    return float(v) if v is not None else float("nan")


def _truncate_csv(path: Path, rows: int) -> None:
    """Keep the header and the first ``rows`` data rows (drop rows written after the checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > rows + 1:
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_text("".join(lines[: rows + 1]))
        os.replace(tmp, path)


class _CsvLog:
    """Append rows to a CSV as they come (header from the first row; flushed every ``flush_every``)."""

    def __init__(self, path: Path, enabled: bool, flush_every: int = 1):
        self.path, self.enabled, self.flush_every = path, enabled, max(1, flush_every)
        self.columns: list[str] | None = None
        self.rows = 0
        self._f = None
        self._w = None
        if enabled and path.exists():
            with open(path, newline="") as f:
                reader = csv.reader(f)
                header = next(reader, None)
                self.columns = header
                self.rows = sum(1 for _ in reader)

    def write(self, row: dict) -> None:
        if not self.enabled:
            self.rows += 1
            return
        if self._f is None:
            new = self.columns is None
            if new:
                self.columns = list(row)
            self._f = open(self.path, "a", newline="")
            self._w = csv.DictWriter(self._f, fieldnames=self.columns, extrasaction="ignore", restval="")
            if new:
                self._w.writeheader()
        self._w.writerow(row)
        self.rows += 1
        if self.rows % self.flush_every == 0:
            self._f.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._f.close()
            self._f = self._w = None


def _read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path) if path.exists() and path.stat().st_size > 0 else pd.DataFrame()


def selection_score(metrics: dict, select_on: str) -> float:
    """Model selection on val: R@1(i2t)+R@1(t2i) (the reference's ``best_irtr``) or RSUM."""
    if select_on == "r1_sum":
        return float(metrics["i2t_r1"] + metrics["t2i_r1"])
    if select_on == "rsum":
        return float(metrics["rsum"])
    raise ValueError(f"train.select_on must be 'r1_sum' or 'rsum', got {select_on!r}")


def _val_protocol(cfg: DAIMConfig) -> str:
    """Validation scores the whole val split (F30K 1,014 images, COCO dev 1K, the demo's val)."""
    from .evaluate import default_protocols

    return default_protocols(cfg.data.dataset)[-1]


# --- the loop ------------------------------------------------------------------------------------


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

    ``out_dir`` receives config.json, history_steps.csv, history_epochs.csv and the checkpoint
    folders ``last`` and ``best`` (:mod:`daimlib.checkpoint`). ``resume=True`` continues from
    ``out_dir/last`` (the model-defining config must match; ``train.*`` may differ, e.g. more
    epochs or a larger ``max_steps``). ``eval_split=None`` skips validation (no ``best``).
    ``pretrained=None`` loads pretrained encoders exactly when the config names hub models or
    local weights (:func:`wants_pretrained`). Under ``torchrun`` every process calls this; rank 0
    writes files. Returns a :class:`TrainResult`.
    """
    t_call = time.time()
    out_dir = Path(out_dir)
    dd, device = _setup_distributed(torch.device(device) if device is not None else None)
    tc = cfg.train
    last_dir, best_dir = out_dir / "last", out_dir / "best"
    if resume and not (last_dir / "meta.json").exists():
        raise CheckpointError(
            f"resume=True but {display_path(last_dir)} holds no checkpoint; start the run without --resume, "
            "or point --out at the run folder that has last/"
        )
    if not resume and not overwrite and (last_dir / "meta.json").exists():
        raise FileExistsError(
            f"{display_path(out_dir)} already holds a run (last/ exists). Pass resume=True (--resume) to "
            "continue it, overwrite=True to start over, or choose another out_dir."
        )
    if dd.main:
        out_dir.mkdir(parents=True, exist_ok=True)

    # 1. seeds; 2. model (identical on every rank: same seed, built before anything else draws random numbers)
    seed_everything(tc.seed)
    from .model import DAIM

    use_pretrained = (wants_pretrained(cfg) if pretrained is None else pretrained) and not resume
    try:
        model = DAIM.from_config(cfg, pretrained=use_pretrained)
    except (RuntimeError, OSError) as e:
        if not use_pretrained:
            raise
        raise PretrainedWeightsError(str(e)) from e  # the encoders' message names the model and the field
    model.to(device)

    # 3. data
    dataset, sampler, tokenizer, collate = _train_loader(cfg, data_root, dd, device)
    val_split = None
    if eval_split is not None:
        from .data import load_split

        val_split = load_split(cfg.data, data_root, eval_split)
    steps_per_epoch = len(sampler) // tc.batch_size

    # 4. optimiser, schedule, precision
    optimizer = _optimizer(cfg, model)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=tc.lr_step, gamma=tc.lr_gamma)
    amp_dtype, use_scaler = _amp(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True

    # resume: weights strictly into the model built from cfg, then the training state
    st = dict(epoch=0, batch_in_epoch=0, global_step=0, steps_rows=0, epochs_rows=0, best_score=-math.inf,
              best_epoch=-1, best_metrics={}, loss_sum=0.0, loss_n=0, elapsed_s=0.0)  # fmt: skip
    if resume:
        _, saved_cfg, state = load_checkpoint(
            last_dir, device=device, strict=True, model=model, expect_cfg=cfg
        )
        if state is None:
            raise CheckpointError(f"{display_path(last_dir)} has no train_state.pt; it cannot be resumed")
        changed = {k: v for k, v in saved_cfg.diff(cfg).items() if k.startswith("train.")}
        if changed:
            log.info("resuming with changed training settings: %s", changed)
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scheduler.step_size, scheduler.gamma = tc.lr_step, tc.lr_gamma
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        st.update({k: state[k] for k in st if k in state})
        rngs = state["rng"]
        seed_everything(tc.seed + dd.rank)
        if len(rngs) == dd.world:
            _set_rng_state(rngs[dd.rank])
        else:
            log.warning(
                "checkpoint was written by %d process(es), this run has %d: RNG streams reseeded",
                len(rngs),
                dd.world,
            )
        log.info(
            "resumed from %s at epoch %d, step %d", display_path(last_dir), st["epoch"], st["global_step"]
        )
    else:
        seed_everything(tc.seed + dd.rank)  # dropout/augmentation streams differ across ranks
    if dd.main:
        cfg.to_json(out_dir / "config.json")
        if resume:
            _truncate_csv(out_dir / STEPS_CSV, st["steps_rows"])
            _truncate_csv(out_dir / EPOCHS_CSV, st["epochs_rows"])
        else:  # a fresh run (overwrite=True): nothing of an earlier run may survive, a stale best least of all
            for name in (STEPS_CSV, EPOCHS_CSV):
                (out_dir / name).unlink(missing_ok=True)
            for folder in (last_dir, best_dir, *out_dir.glob(".last.old-*"), *out_dir.glob(".best.old-*")):
                shutil.rmtree(folder, ignore_errors=True)
    steps_log = _CsvLog(out_dir / STEPS_CSV, dd.main, flush_every=tc.log_every)
    epochs_log = _CsvLog(out_dir / EPOCHS_CSV, dd.main)
    steps_log.rows, epochs_log.rows = st["steps_rows"], st["epochs_rows"]

    def state_dict(stopped: str, gather: bool) -> dict:
        rng = _gather_rng(dd) if gather else [_rng_state()]  # gather is a collective: not after Ctrl-C
        return dict(
            st, optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
            scaler=scaler.state_dict() if use_scaler else {}, rng=rng, world_size=dd.world,
            steps_rows=steps_log.rows, epochs_rows=epochs_log.rows, elapsed_s=elapsed(), stopped=stopped,
        )  # fmt: skip

    def elapsed() -> float:
        return st["elapsed_s"] + time.time() - t_call

    def save_last(stopped: str, gather: bool = True) -> None:
        state = state_dict(stopped, gather)
        steps_log.flush()  # the rows the checkpoint counts must be on disk
        epochs_log.flush()
        if dd.main:
            save_checkpoint(last_dir, model, cfg, train_state=state,
                            meta=dict(kind="last", epoch=st["epoch"], step=st["global_step"], stopped=stopped))  # fmt: skip

    def validate(epoch: int, complete: bool, epoch_s: float) -> None:
        row = dict(epoch=epoch, step=st["global_step"], complete=complete, lr=optimizer.param_groups[0]["lr"],
                   loss=st["loss_sum"] / max(st["loss_n"], 1), margin=_scalar(model.margin_module.margin))  # fmt: skip
        if val_split is not None and (
            (epoch + 1) % tc.eval_every == 0 or epoch + 1 == tc.epochs or not complete
        ):
            from .evaluate import evaluate

            metrics, _ = evaluate(model, val_split, tokenizer, cfg, protocol=_val_protocol(cfg), device=device,
                                  progress=progress and dd.main)  # fmt: skip
            score = selection_score(metrics, tc.select_on)
            row.update({k: float(v) for k, v in metrics.items()}, select=score)
            if score > st["best_score"]:
                st.update(
                    best_score=score, best_epoch=epoch, best_metrics={k: float(v) for k, v in metrics.items()}
                )
                if dd.main:
                    save_checkpoint(best_dir, model, cfg, meta=dict(kind="best", epoch=epoch, step=st["global_step"],
                                                                  select_on=tc.select_on, metrics=st["best_metrics"]))  # fmt: skip
            row["best"] = st["best_epoch"] == epoch
        row.update(epoch_s=epoch_s, elapsed_min=elapsed() / 60)
        epochs_log.write(row)
        model.train()

    # 5. the loop
    ddp_model, wrapped_trainable = model, None
    stopped = "completed"
    epoch = st["epoch"]
    try:
        while epoch < tc.epochs:
            if tc.max_steps is not None and st["global_step"] >= tc.max_steps:
                stopped = "max_steps"  # already spent (a resumed run): nothing to do
                break
            frozen = epoch < tc.freeze_epochs
            _set_frozen(model, frozen, tc.frozen_train_mode)
            if dd.enabled and wrapped_trainable != (not frozen):
                # DDP only syncs parameters that required grad when it was built: re-wrap at unfreeze.
                ddp_model = DistributedDataParallel(
                    model,
                    device_ids=[dd.local_rank] if device.type == "cuda" else None,
                    find_unused_parameters=True,
                )
                wrapped_trainable = not frozen
            loader = _make_loader(dataset, sampler, collate, cfg, epoch, st["batch_in_epoch"], device, dd)
            bar = tqdm(loader, total=len(loader), desc=f"epoch {epoch}" + (" (backbones frozen)" if frozen else ""),
                       disable=not (progress and dd.main), leave=False, dynamic_ncols=True)  # fmt: skip
            t_epoch = time.time()
            for batch in bar:
                t_step = time.time()
                batch = _to_device(batch, device)
                with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
                    out = ddp_model(batch, step=st["global_step"])
                loss = out["loss"]
                scaler.scale(loss).backward()
                if tc.grad_clip:
                    scaler.unscale_(optimizer)
                    torch.nn.utils.clip_grad_norm_(
                        [p for p in model.parameters() if p.grad is not None], tc.grad_clip
                    )
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)

                loss_value = loss.detach().float()
                if dd.enabled:  # log the mean over ranks (the margin is already global)
                    dist.all_reduce(loss_value)
                    loss_value /= dd.world
                loss_value = float(loss_value.item())
                stats = {k: _scalar(v) for k, v in (out.get("stats") or {}).items() if k not in STEP_COLUMNS}
                row = dict(step=st["global_step"], epoch=epoch, lr=optimizer.param_groups[0]["lr"], loss=loss_value,
                           margin=_scalar(out.get("margin", model.margin_module.margin)), **stats,
                           step_s=time.time() - t_step)  # fmt: skip
                steps_log.write(row)
                st["global_step"] += 1
                st["batch_in_epoch"] += 1
                st["loss_sum"] += loss_value
                st["loss_n"] += 1
                bar.set_postfix(loss=f"{loss_value:.3f}", margin=f"{row['margin']:.4f}")
                stop = None
                if tc.max_steps is not None and st["global_step"] >= tc.max_steps:
                    stop = "max_steps"
                elif tc.max_minutes is not None:
                    flag = torch.tensor([float(elapsed() >= tc.max_minutes * 60)], device=device)
                    if dd.enabled:  # rank 0's clock decides, so every rank stops at the same step
                        dist.broadcast(flag, 0)
                    stop = "max_minutes" if flag.item() > 0 else None
                if stop is not None:
                    stopped = stop
                    break
            bar.close()
            epoch_done = st["batch_in_epoch"] >= steps_per_epoch
            if epoch_done:  # end of epoch: schedule, validation, checkpoints
                scheduler.step()
                st.update(epoch=epoch + 1, batch_in_epoch=0)
                validate(epoch, complete=True, epoch_s=time.time() - t_epoch)
                st.update(loss_sum=0.0, loss_n=0)
                save_last(stopped)
                epoch += 1
            else:  # budget stop mid-epoch: evaluate what we have, then save the position
                validate(epoch, complete=False, epoch_s=time.time() - t_epoch)
                save_last(stopped)
            if stopped != "completed":
                log.info("stopped by %s at epoch %d, step %d", stopped, epoch, st["global_step"])
                break
    except KeyboardInterrupt:
        stopped = "interrupted"
        if dd.main:
            log.warning("interrupted: writing %s", display_path(last_dir))
        save_last(stopped, gather=False)
    finally:
        steps_log.close()
        epochs_log.close()
    if dd.enabled:
        dist.barrier()
    result = TrainResult(
        model=model.eval(), cfg=cfg, out_dir=out_dir, steps=_read_csv(out_dir / STEPS_CSV),
        epochs=_read_csv(out_dir / EPOCHS_CSV), best_metrics=dict(st["best_metrics"]),
        best_epoch=st["best_epoch"] if st["best_epoch"] >= 0 else None, global_step=st["global_step"], stopped=stopped,
    )  # fmt: skip
    if dd.owns_group:
        dist.destroy_process_group()
    return result
