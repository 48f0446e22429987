"""Checkpoint folders, the public door: load a trained DAIM, save and resume a run.

The folder format (files, atomic writes, sha256 integrity, the loss state, the tokenizer) lives in
:mod:`daimlib.checkpoint_io`, which knows no model class; this module re-exports it and adds the two
functions that build a DAIM from a folder's own config.json (``DAIM.from_config(cfg,
pretrained=False)``: no download, the checkpoint supplies every weight).
"""

from __future__ import annotations

import contextlib
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
    "CONFIG",
    "FORMAT",
    "FORMAT_VERSION",
    "LEGACY_MARGIN_KEY",
    "LOSS_PREFIX",
    "META",
    "TOKENIZER",
    "TRAIN_STATE",
    "WEIGHTS",
    "CheckpointError",
    "clean_stale_temporaries",
    "display_path",
    "has_tokenizer",
    "load_checkpoint",
    "load_checkpoint_into",
    "load_checkpoint_tokenizer",
    "load_config",
    "load_loss",
    "load_model",
    "load_state_into",
    "load_train_state",
    "model_config_diff",
    "read_meta",
    "save_checkpoint",
    "scoring_tokenizer",
    "split_loss_state",
]


@contextlib.contextmanager
def no_hub():
    """The Hugging Face hub switched off for the block (``HF_HUB_OFFLINE``, read by the kit's probe and by
    huggingface_hub): nothing is looked up online, not even a DNS name; the local cache still answers."""
    import huggingface_hub.constants as hc

    old_env, old_const = os.environ.get("HF_HUB_OFFLINE"), hc.HF_HUB_OFFLINE
    os.environ["HF_HUB_OFFLINE"], hc.HF_HUB_OFFLINE = "1", True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old_const
        if old_env is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = old_env


def _build_offline(cfg: DAIMConfig, directory) -> torch.nn.Module:
    """``DAIM.from_config(cfg, pretrained=False)`` without the network: a checkpoint supplies every weight,
    and a text model named by a hub id needs only its architecture, from the local cache (issue 28)."""
    try:
        with no_hub():
            return DAIM.from_config(cfg, pretrained=False)
    except (RuntimeError, OSError, ValueError) as e:
        if cfg.text.model_kwargs:
            raise
        raise CheckpointError(
            f"{display_path(directory)}: its config.json names the hub text model {cfg.text.weights or cfg.text.name!r}, "
            "whose architecture (its config.json) is not in the local Hugging Face cache, and loading a checkpoint "
            "never goes online. On a machine with internet run AutoConfig.from_pretrained(NAME) once (or copy "
            "~/.cache/huggingface/hub from one), then load again."
        ) from e


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
        model = _build_offline(load_config(directory, verify=verify), directory)
    return load_checkpoint_into(
        model,
        directory,
        device=device,
        strict=strict,
        expect_cfg=expect_cfg,
        verify=verify,
        read_train_state=read_train_state,
        loss=loss,
    )


def scoring_tokenizer(directory: str | os.PathLike | None, cfg: DAIMConfig, data_root=None):
    """The tokenizer to score a checkpoint with: the one saved in the checkpoint folder (the vocabulary
    its text encoder was trained on), else the config's (:func:`daimlib.data.load_tokenizer`, from
    ``data_root`` for the demo and ``data`` tokenizers). ``directory=None`` (a model never saved): the
    config's."""
    from .data import load_tokenizer

    if directory is None:
        return load_tokenizer(cfg.text, data_root, data_cfg=cfg.data)
    saved = load_checkpoint_tokenizer(directory) if has_tokenizer(directory) else None
    if saved is not None:
        return saved
    try:
        with no_hub():  # scoring a checkpoint never goes online (issue 28)
            return load_tokenizer(cfg.text, data_root, data_cfg=cfg.data)
    except OSError as e:
        raise CheckpointError(
            f"{display_path(directory)} carries no tokenizer/ folder, and the tokenizer its config names is not "
            f"on this machine ({e})"
        ) from e


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained DAIM from a checkpoint folder, strictly loaded and in eval mode.

    Reads model.safetensors, config.json and meta.json only (each checked against its recorded
    sha256); the training state is not needed to evaluate, so a damaged train_state.pt is ignored.
    """
    model, _, _ = load_checkpoint(directory, device=device, strict=True, read_train_state=False)
    return model.eval()
