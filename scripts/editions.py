"""A student edition and a teacher edition of the notebook sequence, from the same notebooks.

    python scripts/editions.py                       # both editions into runs/editions/ (`make editions`)
    python scripts/editions.py --out DIR notebooks/0[0-4]_*.ipynb

Which cells are solutions is read from the cell metadata ``daimkit_course`` that the course cells
carry (``check-solution``: the folded answer below a self-checked question; ``impl-solution``: the
reference implementation below an "implement it yourself" exercise).

- ``DIR/student/``: every solution cell removed, every solution folded inside a prose cell
  (``<details><summary>Solution ...</details>``) cut out, and every code cell's outputs cleared (with
  the widget state saved in the notebook's metadata, notebook 12's search results), so neither a
  solution nor a printed result gives an answer away; a first cell says which edition it is.
- ``DIR/teacher/``: the notebooks as committed (outputs and solutions kept), with the same first cell.

Both keep the notebooks' file names, so their links to each other hold. They are meant to replace
``notebooks/`` in a clone of the kit (the setup cells find the repository from there), e.g.
``cp runs/editions/student/*.ipynb notebooks/`` in each student's clone. ``tests/test_editions.py``
checks that no ``<summary>Solution`` reaches the student edition.
"""

from __future__ import annotations

import argparse
import copy
import re
import sys
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
KEY = "daimkit_course"
SOLUTION_ROLES = ("check-solution", "impl-solution")
# a solution folded inside a prose cell (`<details><summary>Solution</summary> ... </details>`)
FOLDED_SOLUTION = re.compile(
    r"\n*<details>\s*<summary>\s*solutions?\b.*?</details>[ \t]*", re.IGNORECASE | re.DOTALL
)
EDITIONS = ("student", "teacher")
BANNER = {
    "student": "**Student edition.** The solutions are left out and the outputs cleared: run the cells yourself. "
    "The exercise checks tell you right or wrong without giving the answer.",
    "teacher": "**Teacher edition.** The notebook as committed, with the solutions in its last section "
    "(Solutions, before the references) and the outputs of a full run. Hand out the student edition (`make editions`).",
}


def is_solution(cell) -> bool:
    """A cell that holds an answer: marked ``check-solution`` or ``impl-solution`` by the course layout."""
    return cell.get("metadata", {}).get(KEY) in SOLUTION_ROLES


def make_edition(nb, edition: str):
    """A copy of ``nb`` for ``edition`` ("student" or "teacher"); ``nb`` itself is left as it is."""
    if edition not in EDITIONS:
        raise ValueError(f"edition must be one of {EDITIONS}, not {edition!r}")
    out = copy.deepcopy(nb)
    if edition == "student":
        out.cells = [c for c in out.cells if not is_solution(c)]
        for cell in out.cells:
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
            elif cell.cell_type == "markdown":
                cell.source = FOLDED_SOLUTION.sub("", cell.source)
        out.cells = [c for c in out.cells if c.cell_type != "markdown" or c.source.strip()]
        out.metadata.pop("widgets", None)  # the saved widget state: the cleared outputs' results
    banner = nbformat.v4.new_markdown_cell(BANNER[edition])
    banner.metadata[KEY] = f"edition-{edition}"
    banner.id = f"edition-{edition}"  # fixed, so the same notebooks give the same files
    out.cells.insert(0, banner)
    return out


def write_editions(paths: list[Path], out: Path) -> dict[str, int]:
    """Write both editions of every notebook in ``paths`` under ``out/{student,teacher}/``; returns
    how many solution cells the student edition left out."""
    removed = {}
    for edition in EDITIONS:
        (out / edition).mkdir(parents=True, exist_ok=True)
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        removed[path.name] = sum(
            is_solution(c) or (c.cell_type == "markdown" and len(FOLDED_SOLUTION.findall(c.source)))
            for c in nb.cells
        )
        for edition in EDITIONS:
            ed = make_edition(nb, edition)
            nbformat.validate(ed)
            (out / edition / path.name).write_text(nbformat.writes(ed) + "\n")
    return removed


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "editions")
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        print(f"editions: no such notebook: {', '.join(missing)}", file=sys.stderr)
        return 2
    removed = write_editions(paths, args.out)
    shown = args.out.resolve()
    shown = shown.relative_to(REPO) if shown.is_relative_to(REPO) else args.out
    for name, n in removed.items():
        print(f"{name}: {n} solution(s) left out of the student edition")
    print(f"[editions] student and teacher editions of {len(paths)} notebooks in {shown}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
