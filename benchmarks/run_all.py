"""Run every benchmark script in this folder and print their tables (``python -m daimlib bench``).

Each script runs in its own process, one after another (two at once would distort the timings),
with ``--quick`` (reduced sizes, seconds to a few minutes on a CPU) unless ``--full`` is given.
Usage::

    python benchmarks/run_all.py [--full] [--only gpu_step ...]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def scripts(only: list[str] | None = None) -> list[Path]:
    """The benchmark scripts (every ``*.py`` here except this one), optionally filtered by name."""
    found = sorted(
        p for p in HERE.glob("*.py") if p.name != Path(__file__).name and not p.name.startswith("_")
    )
    if only:
        missing = sorted(set(only) - {p.stem for p in found})
        if missing:
            raise SystemExit(f"no benchmark named {missing}; available: {[p.stem for p in found]}")
        found = [p for p in found if p.stem in only]
    return found


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--full", action="store_true", help="full sizes (meant for a GPU)")
    ap.add_argument("--only", nargs="+", default=None, help="script names without .py")
    args = ap.parse_args(argv)
    failed = []
    for script in scripts(args.only):
        cmd = [sys.executable, str(script)] + ([] if args.full else ["--quick"])
        shown = f"python benchmarks/{script.name}" + ("" if args.full else " --quick")
        print(f"\n=== {shown}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call(cmd, cwd=HERE.parent)
        print(f"=== {script.name}: exit {rc}, {time.perf_counter() - t0:.1f} s", flush=True)
        if rc != 0:
            failed.append(script.name)
    if failed:
        print(f"\nfailed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
