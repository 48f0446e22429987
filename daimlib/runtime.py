"""Run-time choices shared by training, evaluation, the CLI and the notebooks: seeds, device, AMP.

A leaf module (torch and numpy only), one copy of each rule:

- :func:`seed_everything`: Python's ``random``, numpy and torch (CPU and every GPU) from one seed,
  any non-negative integer (numpy takes the seed modulo 2**32, and torch's CPU generator also
  uses only its low 32 bits, so seeds that differ only above bit 32 give the same streams);
- :func:`resolve_device`: ``"auto"`` -> cuda, else mps, else cpu; an explicit device that is not
  there is a clear error;
- :func:`amp_settings`: the mixed-precision mode (``train.amp``) -> autocast dtype and whether a
  GradScaler is needed. ``"auto"`` is bf16 on GPUs that support it (Ampere and newer) and fp16 +
  GradScaler otherwise; the reference always uses fp16 + GradScaler (``--set train.amp=fp16``).
"""

from __future__ import annotations

import random

import numpy as np
import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")


class DeviceError(RuntimeError, ValueError):
    """A device that was asked for but is not there (a user error: the CLI exits 2 with the message)."""


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and all GPUs) with ``seed`` (an int >= 0)."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)  # numpy's legacy seeding takes 32 bits
    torch.manual_seed(seed)  # also seeds every CUDA device


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def resolve_device(device: str | torch.device | None = "auto") -> str:
    """``"auto"`` (or None) -> ``"cuda"`` if available, else ``"mps"`` if available, else ``"cpu"``.

    An explicit device (``cpu``, ``cuda``, ``cuda:N``, ``mps``) must exist: asking for CUDA
    without a GPU, or an unknown name, raises with what was found and what to pass instead.
    """
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        return "mps" if _mps_available() else "cpu"
    name = str(device)
    kind, _, index = name.partition(":")
    if kind not in ("cpu", "cuda", "mps") or (index and not index.isdigit()):
        raise ValueError(f"unknown device {name!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(
                f"device {name!r} was asked for but this torch build sees no CUDA GPU; use 'auto' or 'cpu'"
            )
        if index and int(index) >= torch.cuda.device_count():
            raise DeviceError(
                f"device {name!r} was asked for but only {torch.cuda.device_count()} CUDA GPU(s) are visible"
            )
    if kind == "mps" and not _mps_available():
        raise DeviceError(f"device {name!r} was asked for but MPS is not available; use 'auto' or 'cpu'")
    return name


def torch_device(device: str | torch.device | None = "auto") -> torch.device:
    """:func:`resolve_device` as a ``torch.device``."""
    return torch.device(resolve_device(device))


def amp_settings(mode: str | None, device: str | torch.device) -> tuple[torch.dtype | None, bool]:
    """``(autocast dtype or None, use a GradScaler)`` for an AMP mode on ``device``.

    ``mode``: ``"auto"`` | ``"bf16"`` | ``"fp16"`` | ``"off"`` (``None``/``False`` = off). AMP runs
    on CUDA only; on a CPU or MPS every mode is off. ``"auto"``: bf16 where supported, else fp16.
    """
    if mode is None or mode is False:
        mode = "off"
    if mode not in AMP_MODES:
        raise ValueError(f"train.amp must be one of {'|'.join(AMP_MODES)}, got {mode!r}")
    if torch.device(device).type != "cuda" or mode == "off":
        return None, False
    if mode == "auto":
        mode = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def amp_for(cfg, device: str | torch.device) -> tuple[torch.dtype | None, bool]:
    """:func:`amp_settings` of a config's ``train.amp``."""
    return amp_settings(cfg.train.amp, device)
