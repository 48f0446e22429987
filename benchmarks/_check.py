"""The agreement check every benchmark ends with: a timing only counts when the fast result equals
the reference it is timed against. A script returns ``exit_code(...)`` so that a disagreement makes
``python -m daimlib bench`` (and CI) fail instead of printing a speed-up of a wrong answer."""

from __future__ import annotations

import math


def agrees(what: str, max_diff: float, tol: float) -> bool:
    """Print ``what``'s largest difference against the reference and whether it is within ``tol``."""
    ok = math.isfinite(max_diff) and max_diff <= tol
    print(
        f"# check {what}: max |diff| = {max_diff:.2e} (tolerance {tol:.0e}): {'agree' if ok else 'DISAGREE'}"
    )
    return ok


def exit_code(*checks: bool) -> int:
    """0 when every check agreed, else 1 (with a line saying so)."""
    if all(checks):
        return 0
    print("# FAILED: the benchmarked code disagrees with its reference; the timings above do not count")
    return 1
