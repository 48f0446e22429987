"""daimlib.runtime: one copy each of seeding, device resolution and AMP-mode parsing."""

import random

import numpy as np
import pytest
import torch

from daimlib import runtime, train
from daimlib.course import nb


def test_one_copy_of_each_helper():
    assert nb.seed_everything is runtime.seed_everything is train.seed_everything
    assert nb.resolve_device is runtime.resolve_device


def _draws():
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


@pytest.mark.parametrize("seed", [0, 7, 2**32 - 1, 2**32, 2**32 + 7, 2**40])
def test_seed_everything_takes_any_non_negative_seed_reproducibly(seed):
    runtime.seed_everything(seed)
    a = _draws()
    runtime.seed_everything(seed)
    assert _draws() == a
    assert torch.initial_seed() == seed  # torch takes the full seed


@pytest.mark.parametrize("bad", [-1, 1.5, "3", True])
def test_bad_seeds_are_refused(bad):
    with pytest.raises(ValueError, match="non-negative integer"):
        runtime.seed_everything(bad)


def test_resolve_device():
    assert runtime.resolve_device(None) == runtime.resolve_device("auto")
    assert runtime.resolve_device("cpu") == "cpu" and runtime.torch_device("cpu") == torch.device("cpu")
    for bad in ("tpu", "cuda:x", "gpu"):
        with pytest.raises(ValueError, match="unknown device"):
            runtime.resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_without_a_gpu_is_a_user_error_the_cli_reports():
    with pytest.raises(ValueError, match="no CUDA GPU; use 'auto' or 'cpu'"):
        runtime.resolve_device("cuda:0")
    with pytest.raises(RuntimeError):  # also a RuntimeError, as before
        runtime.resolve_device("cuda")


def test_amp_settings_are_off_on_a_cpu_and_use_a_scaler_only_for_fp16():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for mode in ("auto", "bf16", "fp16", "off", None):
        assert runtime.amp_settings(mode, cpu) == (None, False)
    assert runtime.amp_settings("off", cuda) == (None, False)
    assert runtime.amp_settings("fp16", cuda) == (torch.float16, True)
    assert runtime.amp_settings("bf16", "cuda:0") == (torch.bfloat16, False)
    with pytest.raises(ValueError, match="train.amp must be one of auto|bf16|fp16|off, got 'fp8'"):
        runtime.amp_settings("fp8", cpu)


@pytest.mark.slow  # two processes with torch: ~17 s
def test_cpu_allocator_tuning_is_opt_out_and_changes_no_result(monkeypatch):
    import subprocess
    import sys

    code = (
        "import torch; from daimlib.runtime import tune_cpu_allocator as t; ok = t(); "
        "g = torch.Generator().manual_seed(0); a = torch.randn(512, 512, generator=g); "
        "print(ok, float((a @ a).sum()))"
    )
    tuned = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.split()
    env = {**__import__("os").environ, "DAIM_CPU_ALLOCATOR": "default"}
    plain = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.split()
    assert plain[0] == "False"  # the opt-out leaves glibc alone
    if sys.platform.startswith("linux"):
        assert tuned[0] == "True"
    assert tuned[1] == plain[1]  # the same arithmetic, bit for bit
