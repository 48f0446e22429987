"""Checkpoint folders, the public door: load a trained DAIM, save and resume a run.

The folder format (files, atomic writes, sha256 integrity, the loss state, the tokenizer) lives in
:mod:`daimlib.checkpoint_io`, which knows no model class; this module re-exports it and adds the two
functions that build a DAIM from a folder's own config.json (``DAIM.from_config(cfg,
pretrained=False)``: no download, the checkpoint supplies every weight).
"""

from __future__ import annotations

import os

import torch

from .checkpoint_io import (
    CONFIG,
    FORMAT,
    FORMAT_VERSION,
    LEGACY_MARGIN_KEY,
    LOSS_PREFIX,
    META,
    TOKENIZER,
    TRAIN_STATE,
    WEIGHTS,
    CheckpointError,
    clean_stale_temporaries,
    display_path,
    has_tokenizer,
    load_checkpoint_into,
    load_checkpoint_tokenizer,
    load_config,
    load_loss,
    load_state_into,
    load_train_state,
    model_config_diff,
    read_meta,
    save_checkpoint,
    split_loss_state,
)
from .config import DAIMConfig
from .model import DAIM

__all__ = [
    "CONFIG", "FORMAT", "FORMAT_VERSION", "LEGACY_MARGIN_KEY", "LOSS_PREFIX", "META", "TOKENIZER",
    "TRAIN_STATE", "WEIGHTS", "CheckpointError", "clean_stale_temporaries", "display_path",
    "has_tokenizer", "load_checkpoint", "load_checkpoint_into", "load_checkpoint_tokenizer",
    "load_config", "load_loss", "load_model", "load_state_into", "load_train_state",
    "model_config_diff", "read_meta", "save_checkpoint", "split_loss_state",
]  # fmt: skip


def load_checkpoint(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    strict: bool = True,
    model: torch.nn.Module | None = None,
    expect_cfg: DAIMConfig | None = None,
    verify: bool = True,
    read_train_state: bool = True,
    loss: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, DAIMConfig, dict | None]:
    """Load a checkpoint folder: ``(model, cfg, train_state)``.

    The model is built from the folder's own config.json unless ``model`` is given, in which case
    the weights are loaded into it (then, with ``strict``, a config that differs from ``expect_cfg``
    or ``model.cfg`` in the model's sections is an error). The other arguments are those of
    :func:`daimlib.checkpoint_io.load_checkpoint_into`.
    """
    if model is None:
        model = DAIM.from_config(load_config(directory, verify=verify), pretrained=False)
    return load_checkpoint_into(
        model, directory, device=device, strict=strict, expect_cfg=expect_cfg, verify=verify,
        read_train_state=read_train_state, loss=loss,
    )  # fmt: skip


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained DAIM from a checkpoint folder, strictly loaded and in eval mode.

    Reads model.safetensors, config.json and meta.json only (each checked against its recorded
    sha256); the training state is not needed to evaluate, so a damaged train_state.pt is ignored.
    """
    model, _, _ = load_checkpoint(directory, device=device, strict=True, read_train_state=False)
    return model.eval()
