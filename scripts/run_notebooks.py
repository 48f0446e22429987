"""Execute the notebook sequence top to bottom and save each one with its outputs.

    python scripts/run_notebooks.py notebooks/0*.ipynb            # in place (what `make demo` does)
    python scripts/run_notebooks.py --out runs/executed notebooks/05_training.ipynb
    python scripts/run_notebooks.py --smoke --data runs/smoke/data/f30k_like --preset tiny \\
        --out runs/smoke/executed notebooks/0*.ipynb notebooks/10_*.ipynb   # `make smoke` (CI)

Each notebook runs in its own fresh kernel (the venv's python), with the notebooks folder as the
working directory, exactly as JupyterLab or nbval would run it. With parameters (``--smoke``,
``--data``, ``--preset``, ``-p KEY=VALUE``) the notebooks run under papermill, which sets them in a
cell after each notebook's ``parameters`` cell; such runs need ``--out`` (the committed notebooks
keep their own parameters). ``--smoke`` sets ``SMOKE=True``: every notebook cuts its budgets to a
run of seconds and writes its runs and figures under ``runs/smoke/``.

Progress bars (tqdm's carriage-return streams and its widgets) are dropped from the saved outputs, so an
executed notebook holds what a reader needs. ``--check-clean`` (on by default with ``--smoke``)
compares ``git status --porcelain`` before and after and fails when the run changed any tracked
or unignored file. A table of wall-clock times is printed at the end (and written to
``OUT/timings.csv`` with ``--out``). A failing notebook stops the run with the cell that failed.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[1]


def is_progress_output(output: dict) -> bool:
    """A progress bar in a cell's outputs: tqdm's stderr stream of carriage-return redraws, or the
    widget tqdm.auto shows when ipywidgets is installed (its text form ends like ``0/4700 [00:00<?, ?it/s]``)."""
    kind = output.get("output_type")
    if kind == "stream" and output.get("name") == "stderr":
        text = "".join(output.get("text", ""))
        return "\r" in text or not text.strip()
    if kind == "display_data" and "application/vnd.jupyter.widget-view+json" in output.get("data", {}):
        text = "".join(output["data"].get("text/plain", ""))
        return "it/s" in text or "%|" in text or not text.strip()
    return False


def drop_progress_outputs(nb) -> int:
    """Remove progress bars from every code cell's outputs; return how many were removed."""
    removed = 0
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        kept = [o for o in cell.get("outputs", []) if not is_progress_output(o)]
        removed += len(cell.get("outputs", [])) - len(kept)
        cell["outputs"] = kept
    return removed


def parse_value(text: str):
    """A ``-p`` value as papermill's CLI reads it: a Python literal when it is one, else the string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def repo_relative(path: Path) -> str:
    """``path`` relative to the repository root when it lies inside it (the notebooks resolve
    relative ``DATA`` folders against the root), else absolute."""
    p = path.resolve()
    try:
        return p.relative_to(REPO).as_posix()
    except ValueError:
        return str(p)


def parameters_from(args) -> dict:
    """The notebook parameters the command line asks for."""
    params = {}
    for item in args.param:
        key, sep, value = item.partition("=")
        if not sep or not key.isidentifier():
            raise ValueError(
                f"-p expects KEY=VALUE with a Python name as KEY (e.g. -p TRAIN_STEPS=20), got {item!r}"
            )
        params[key] = parse_value(value)
    if args.data is not None:
        params["DATA"] = "demo" if args.data == "demo" else repo_relative(Path(args.data))
    if args.preset is not None:
        params["PRESET"] = args.preset
    if args.smoke:
        params["SMOKE"] = True
    return params


def run_one(path: Path, out: Path, timeout: int, params: dict) -> float:
    """Execute one notebook (papermill when there are parameters, else nbclient) and save it at ``out``."""
    t0 = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    if params:
        import papermill  # noqa: PLC0415 - only runs with parameters need it

        try:
            papermill.execute_notebook(
                str(path),
                str(out),
                parameters=params,
                cwd=str(path.parent),
                kernel_name="python3",
                progress_bar=False,
                execution_timeout=timeout,
            )
        finally:
            if out.is_file():
                nb = nbformat.read(out, as_version=4)
                drop_progress_outputs(nb)
                nbformat.write(nb, out)
        return time.perf_counter() - t0
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    )
    try:
        client.execute()
    finally:
        drop_progress_outputs(nb)
        nbformat.write(nb, out)
    return time.perf_counter() - t0


def git_status() -> list[str] | None:
    """``git status --porcelain`` lines of the repository (None when it is not a git checkout)."""
    try:
        res = subprocess.run(
            ["git", "status", "--porcelain"], cwd=REPO, capture_output=True, text=True, check=True
        )
    except (OSError, subprocess.CalledProcessError):
        return None
    return res.stdout.splitlines()


def build_parser() -> argparse.ArgumentParser:
    """The command line of this script."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="folder for executed copies (default: in place)")
    ap.add_argument("--timeout", type=int, default=1200, help="seconds per cell (default 1200)")
    ap.add_argument(
        "--smoke", action="store_true", help="SMOKE=True: budgets of seconds, outputs under runs/smoke/"
    )
    ap.add_argument("--data", default=None, help='DATA of every notebook: "demo" or a dataset folder')
    ap.add_argument("--preset", default=None, help="PRESET of every notebook (e.g. tiny, demo, daim_f30k)")
    ap.add_argument(
        "-p",
        "--param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other notebook parameter (a Python literal or a string); repeatable",
    )
    ap.add_argument(
        "--check-clean",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="fail when the run changes `git status --porcelain` (default: on with --smoke)",
    )
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = build_parser()
    args = ap.parse_args(argv)

    try:
        params = parameters_from(args)
    except ValueError as err:
        ap.error(str(err))
    if params and args.out is None:
        ap.error(
            "parameters (--smoke, --data, --preset, -p) need --out: the committed notebooks keep their own"
        )
    missing = [str(p) for p in args.notebooks if not p.is_file()]
    if missing:
        ap.error(f"notebook(s) not found: {', '.join(missing)}")
    check_clean = args.smoke if args.check_clean is None else args.check_clean
    before = git_status() if check_clean else None
    if check_clean and before is None:
        ap.error("--check-clean needs a git checkout (git status failed); use --no-check-clean")
    if params:
        print("[notebooks] parameters: " + ", ".join(f"{k}={v!r}" for k, v in params.items()), flush=True)

    rows = []
    for nb_path in args.notebooks:
        nb_path = nb_path.resolve()
        out = nb_path if args.out is None else (args.out.resolve() / nb_path.name)
        print(f"[notebooks] running {repo_relative(nb_path)} ...", flush=True)
        try:
            seconds = run_one(nb_path, out, args.timeout, params)
        except CellExecutionError as err:
            print(f"[notebooks] FAILED in {nb_path.name}:\n{err}", file=sys.stderr)
            return 1
        except Exception as err:  # papermill's PapermillExecutionError names the cell and the traceback
            if type(err).__name__ != "PapermillExecutionError":
                raise
            print(
                f"[notebooks] FAILED in {nb_path.name} (executed copy: {repo_relative(out)}):\n{err}",
                file=sys.stderr,
            )
            return 1
        rows.append((nb_path.name, seconds))
        print(f"[notebooks] {nb_path.name}: {seconds:.0f} s", flush=True)

    width = max(len(n) for n, _ in rows)
    print(f"\n{'notebook'.ljust(width)}  seconds")
    for name, seconds in rows:
        print(f"{name.ljust(width)}  {seconds:7.0f}")
    print(f"{'total'.ljust(width)}  {sum(s for _, s in rows):7.0f}")
    if args.out is not None:
        lines = (
            ["notebook,seconds"]
            + [f"{n},{s:.1f}" for n, s in rows]
            + [f"total,{sum(s for _, s in rows):.1f}"]
        )
        (args.out.resolve() / "timings.csv").write_text("\n".join(lines) + "\n")
    if check_clean:
        after = git_status()
        changed = sorted(set(after) ^ set(before))
        if changed:
            print(
                "[notebooks] the run changed `git status --porcelain` (it must leave the checkout clean):",
                file=sys.stderr,
            )
            for line in changed:
                print("  " + line, file=sys.stderr)
            return 1
        print("[notebooks] git status --porcelain unchanged", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
