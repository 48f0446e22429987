"""Run-time choices shared by training, evaluation, the CLI and the notebooks: seeds, device, AMP.

A leaf module (torch, numpy and the standard library only), one copy of each rule:

- :func:`seed_everything`: Python's ``random``, numpy and torch (CPU and every GPU) from one seed,
  any non-negative integer (numpy takes the seed modulo 2**32, and torch's CPU generator also
  uses only its low 32 bits, so seeds that differ only above bit 32 give the same streams);
- :func:`resolve_device`: ``"auto"`` -> cuda, else mps, else cpu; an explicit device that is not
  there is a clear error;
- :func:`amp_settings`: the mixed-precision mode (``train.amp``) -> autocast dtype and whether a
  GradScaler is needed. ``"auto"`` is bf16 on GPUs that support it (Ampere and newer) and fp16 +
  GradScaler otherwise; the reference always uses fp16 + GradScaler (``--set train.amp=fp16``);
- :func:`hub_reachable`: the kit's one Hugging Face hub probe (honours ``HF_HUB_OFFLINE`` and the
  mirror named by ``HF_ENDPOINT``), and :func:`no_hub`, the hub switched off for a block.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
from urllib.parse import urlsplit

import numpy as np
import torch

AMP_MODES = ("auto", "bf16", "fp16", "off")
DEFAULT_ENDPOINT = "https://huggingface.co"


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


@contextlib.contextmanager
def tf32(enabled: bool, device: str | torch.device):
    """Within the block, fp32 matrix products and cuDNN convolutions on CUDA may use TF32 (``train.tf32``).

    TF32 rounds the inputs of an fp32 product to a 10-bit mantissa (Ampere and newer GPUs); the
    kit's fp32 parts are SCAN (similarity is computed in fp32 under AMP) and whatever autocast
    leaves in fp32. Only CUDA reads these flags: on a CPU or MPS the block runs as without it
    (``tests/test_train_speed.py`` checks a CPU run is bit-identical either way). The previous
    flags are restored on exit.
    """
    if torch.device(device).type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = bool(enabled)
    torch.backends.cudnn.allow_tf32 = bool(enabled)
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def loader_workers(requested: int, processes_per_node: int = 1) -> int:
    """``data.num_workers`` capped at the CPUs this process may use, shared by the processes of a node,
    one left for the training process itself (0 stays 0: loading in the main process)."""
    if requested <= 0:
        return 0
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    return max(1, min(int(requested), cpus // max(1, processes_per_node) - 1))


# --- CPU allocator ----------------------------------------------------------------------------

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc mallopt parameters (malloc.h)
_MMAP_THRESHOLD_MAX = 32 * 1024 * 1024  # glibc's ceiling for M_MMAP_THRESHOLD on 64-bit
ALLOCATOR_ENV = "DAIM_CPU_ALLOCATOR"  # "default" leaves glibc's malloc as it is
_allocator_tuned: bool | None = None


def tune_cpu_allocator() -> bool:
    """Keep freed tensor memory in the process instead of returning it to the OS (glibc only).

    Why: glibc serves every allocation above its mmap threshold (128 KiB, raised on the fly to at
    most 32 MiB) with a fresh ``mmap``, and gives freed heap tops back to the OS. A training step on
    a CPU allocates and frees the same few-MiB activations (the SCAN score blocks ``[B, R, B, L]``)
    hundreds of times, so each one is zero-filled page by page again: on the development machine an
    elementwise product of two 8 MiB tensors took 4.7 ms instead of 1.5 ms. Raising the mmap
    threshold to its ceiling and the trim threshold to 1 GiB lets the heap reuse that memory; the
    arithmetic is untouched, so results are bit-identical. The process keeps up to ~1 GiB of freed
    memory for reuse. Set ``DAIM_CPU_ALLOCATOR=default`` to leave the allocator alone. Returns
    whether the tuning is in effect (False off glibc, e.g. macOS and Windows).
    """
    global _allocator_tuned
    import os

    if os.environ.get(ALLOCATOR_ENV, "").lower() == "default":
        return False
    if _allocator_tuned is not None:
        return _allocator_tuned
    try:
        import ctypes
        import ctypes.util

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        _allocator_tuned = False
        return False
    ok = bool(mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD_MAX)) and bool(mallopt(_M_TRIM_THRESHOLD, 1 << 30))
    _allocator_tuned = ok
    return ok


# --- the Hugging Face hub: the kit's one reachability probe ---------------------------------------


def hub_endpoint() -> tuple[str, int]:
    """``(host, port)`` of the hub: ``HF_ENDPOINT`` when set (default port from its scheme), else huggingface.co:443."""
    url = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
    parts = urlsplit(url if "://" in url else f"https://{url}")
    if not parts.hostname:
        raise ValueError(f"HF_ENDPOINT={url!r} has no host; expected a URL such as https://hf-mirror.example")
    return parts.hostname, parts.port or (80 if parts.scheme == "http" else 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """Whether the hub answers a TCP connection (False at once when ``HF_HUB_OFFLINE`` is set).

    The one probe of the kit: it saves a minute of retries on an offline machine, and it probes the
    mirror named by ``HF_ENDPOINT`` when one is set.
    """
    if os.environ.get("HF_HUB_OFFLINE", "0").strip().lower() in ("1", "true", "yes", "on"):
        return False
    host, port = hub_endpoint()
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


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
