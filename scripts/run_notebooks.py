"""Execute the notebook sequence top to bottom and save each one with its outputs.

    python scripts/run_notebooks.py notebooks/0*.ipynb            # in place (what `make demo` does)
    python scripts/run_notebooks.py --out runs/executed notebooks/05_training.ipynb

Each notebook runs in its own fresh kernel (the venv's python), with the notebooks folder as the
working directory, exactly as JupyterLab or nbval would run it. A table of wall-clock times is
printed at the end. A failing notebook stops the run with the cell that failed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]


def run_one(path: Path, out: Path, timeout: int) -> float:
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    t0 = time.perf_counter()
    try:
        client.execute()
    finally:
        out.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, out)
    return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="folder for executed copies (default: in place)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    args = ap.parse_args(argv)

    rows = []
    for nb_path in args.notebooks:
        nb_path = nb_path.resolve()
        out = nb_path if args.out is None else (args.out.resolve() / nb_path.name)
        print(f"[notebooks] running {nb_path.relative_to(REPO)} ...", flush=True)
        try:
            seconds = run_one(nb_path, out, args.timeout)
        except CellExecutionError as err:
            print(f"[notebooks] FAILED in {nb_path.name}:\n{err}", file=sys.stderr)
            return 1
        rows.append((nb_path.name, seconds))
        print(f"[notebooks] {nb_path.name}: {seconds:.0f} s", flush=True)

    width = max(len(n) for n, _ in rows)
    print(f"\n{'notebook'.ljust(width)}  seconds")
    for name, seconds in rows:
        print(f"{name.ljust(width)}  {seconds:7.0f}")
    print(f"{'total'.ljust(width)}  {sum(s for _, s in rows):7.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
