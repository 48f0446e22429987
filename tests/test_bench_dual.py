"""benchmarks/bench_dual_vs_scan.py: --help, a table row per N, and the agreement check of the cosine."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_dual_vs_scan.py"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_help_names_the_sizes_and_the_device():
    res = subprocess.run([sys.executable, str(SCRIPT), "--help"], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and "--sizes" in res.stdout and "--device" in res.stdout


@pytest.mark.slow  # imports torch in a subprocess and scores two small galleries: ~10 s
def test_the_benchmark_prints_one_row_per_size_and_agrees():
    res = subprocess.run(
        [sys.executable, str(SCRIPT), "--sizes", "6", "12", "--repeats", "1", "--threads", "1"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    rows = [ln.split() for ln in res.stdout.splitlines() if re.match(r"^\s+\d+\s+[\d,]+\s", ln)]
    assert [r[0] for r in rows] == ["6", "12"]
    assert [r[1] for r in rows] == ["180", "720"]  # N x 5N pairs
    # what each must keep for the gallery: SCAN all (16 + 4 + 1) tokens, the dual one 3 x 128 vector per image
    for n, r in zip((6, 12), rows):
        assert float(r[5]) == pytest.approx(n * 21 * 128 * 4 / 2**20, abs=0.006)
        assert float(r[6]) == pytest.approx(n * 3 * 128 * 4 / 2**20, abs=0.006)
    assert "agree" in res.stdout and "DISAGREE" not in res.stdout
