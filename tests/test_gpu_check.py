"""``benchmarks/gpu_check.py --cpu-smoke``: the GPU check's code paths at tiny sizes on a CPU (issue 25)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


@pytest.mark.slow  # ~1-2 min on 2 busy cores (torch.compile's tracing is most of it)
def test_cpu_smoke_runs_every_row_and_passes_its_checks():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--cpu-smoke"], capture_output=True, text=True, timeout=600, env=env
    )
    out = res.stdout
    assert res.returncode == 0, out + res.stderr
    for row in (
        "train step, frozen, batch 8",
        "train step, unfrozen, largest batch found",
        "DDP 1 process (gloo)",
        "eval encode 40 images + 200 captions",
        "eval score 40 x 200, TF32",
        "eval score 40 x 200, fp32",
        "torch.compile on",
        "torch.compile off",
        "compile vs eager",
    ):
        assert row in out, row
    assert "| ran " in out and "all checks within tolerance" in out and "EXCEEDED" not in out


def test_a_check_beyond_its_tolerance_fails_the_run(capsys):
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check

    failures = []
    assert "EXCEEDED" in gpu_check._verdict("x", 0.2, 0.05, failures) and failures == ["x"]
    assert "ok" in gpu_check._verdict("y", 0.01, 0.05, failures) and failures == ["x"]
    gpu_check._verdict("z", float("nan"), 1.0, failures)
    assert failures == ["x", "z"]


def test_the_precision_rows_name_what_was_compared(monkeypatch):
    """The rows said 'bf16+TF32 vs fp32' everywhere: on a CPU (no AMP: fp32 against fp32) and on a GPU before
    Ampere (fp16, no TF32) too. They name the AMP dtype and TF32 this device really used."""
    sys.path.insert(0, str(SCRIPT.parent))
    import gpu_check
    import torch

    from daimlib.config import load_preset

    cfg = load_preset("demo", **{"train.amp": "auto"})  # as the check runs it
    cpu = gpu_check.precision_name(cfg, "cpu")
    assert cpu.split()[0] == "fp32" and "no AMP, no TF32" in cpu  # fp32 against fp32: said so
    for bf16, major, want in ((True, 8, "bf16+TF32"), (True, 9, "bf16+TF32"), (False, 7, "fp16")):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, b=bf16, **k: b)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, m=major, **k: (m, 0))
        assert gpu_check.precision_name(cfg, "cuda") == want
