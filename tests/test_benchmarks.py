"""Benchmarks fail when their result disagrees with the reference they time against (issue 12.9)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
import _check  # noqa: E402 - benchmarks/_check.py, imported as the scripts import it


@pytest.mark.parametrize(
    ("diff", "tol", "ok"),
    [
        (0.0, 0.0, True),
        (1e-6, 1e-5, True),
        (2e-5, 1e-5, False),
        (float("nan"), 1.0, False),
        (float("inf"), 1.0, False),
    ],
)
def test_agrees_is_within_tolerance_and_never_for_nan(diff, tol, ok, capsys):
    assert _check.agrees("x", diff, tol) is ok
    assert ("DISAGREE" in capsys.readouterr().out) is (not ok)


def test_exit_code_is_nonzero_when_any_check_disagrees(capsys):
    assert _check.exit_code(True, True) == 0
    assert _check.exit_code(True, False) == 1 and "FAILED" in capsys.readouterr().out


# benchmarks that time something with no reference result to agree with (they still exit non-zero
# when what they time fails)
NO_REFERENCE = {"bench_import_reference.py": "times import-reference; exits 1 when the import fails"}


def test_every_benchmark_script_returns_its_checks_exit_code():
    for script in sorted(BENCH.glob("bench_*.py")) + [BENCH / "gpu_step.py"]:
        text = script.read_text()
        assert "sys.exit(main())" in text, f"{script.name} ignores main()'s exit code"
        if script.name in NO_REFERENCE:
            assert "return 1" in text, f"{script.name}: {NO_REFERENCE[script.name]}"
            continue
        assert "return 0 if" in text or "return exit_code(" in text, f"{script.name} has no agreement check"


@pytest.mark.slow  # runs the benchmark script: ~30 s
def test_bench_recall_agrees_on_a_small_matrix():
    res = subprocess.run(
        [sys.executable, str(BENCH / "bench_recall.py"), "--images", "40", "--repeats", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "agree" in res.stdout and "DISAGREE" not in res.stdout
