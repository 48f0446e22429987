"""Give every course notebook an "Open in Colab" badge and a Colab-only install cell (idempotent).

In each ``notebooks/NN_*.ipynb``:
- the markdown cell with the ``# `` title (the first markdown cell of a committed notebook; an
  edition's banner comes before it) gets the badge line right under the title, or has its badge line
  rewritten to the current URL;
- a code cell right after the "At a glance" header (cell metadata ``daimkit_course: colab``) that, only
  when the notebook runs in Colab (``"google.colab" in sys.modules``), clones the kit's repository and
  installs it with pip; anywhere else it does nothing and prints nothing, so nbval's committed outputs
  stay as they are. An earlier hand-written install cell (one that tests ``google.colab``) is replaced.

Running it twice changes nothing the second time. The badge and the clone point at
``github.com/<OWNER>/daim-kit``; OWNER is a placeholder until the repository is published, then:

    python scripts/colab.py --owner THE-OWNER            # all notebooks, in place
    python scripts/colab.py --check                      # exit 1 when a notebook is not up to date

Without ``--owner`` the owner is the one the notebooks' badges already name (the placeholder when
none does), so a later run, or ``--check``, keeps a published owner instead of reverting it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OWNER = "REPLACE-WITH-GITHUB-OWNER"  # the kit's GitHub owner, a placeholder until it is published
NAME, BRANCH = "daim-kit", "main"
KEY, ROLE = "daimkit_course", "colab"
EXTRAS = {"13": "colab,pretrained-test"}  # pip extras per notebook number; default: colab (not notebook:
# Colab ships Jupyter itself, and upgrading ipykernel or IPython inside its kernel can break it)
BADGE_IMAGE = "https://colab.research.google.com/assets/colab-badge.svg"
BADGE = re.compile(r"^\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)[ \t]*$", re.M)
NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")
BADGE_OWNER = re.compile(rf"colab\.research\.google\.com/github/([A-Za-z0-9_.-]+)/{NAME}/")


def badge_line(filename: str, owner: str = OWNER) -> str:
    url = f"https://colab.research.google.com/github/{owner}/{NAME}/blob/{BRANCH}/notebooks/{filename}"
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def install_source(number: str, owner: str = OWNER) -> str:
    extras = EXTRAS.get(number, "colab")
    return f"""# Colab only: clone the kit and install it with pip (nothing happens, and nothing is printed, elsewhere).
# Written by scripts/colab.py.
import sys

if "google.colab" in sys.modules:
    import os
    import subprocess

    KIT_REPO, KIT_DIR = "https://github.com/{owner}/{NAME}", "/content/{NAME}"
    if not os.path.isdir(KIT_DIR):
        subprocess.run(["git", "clone", "--depth", "1", KIT_REPO, KIT_DIR], check=True)
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "-e", KIT_DIR + "[{extras}]"], check=True)
    os.chdir(KIT_DIR + "/notebooks")  # the kit's working folder, as when run from a clone
    sys.path.insert(0, KIT_DIR)  # this kernel started before the install
    print("DAIM Kit installed from", KIT_REPO)"""


def _src(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _lines(text: str) -> list[str]:
    """A cell source in the notebook's JSON form: a list of lines, each but the last ending in \\n."""
    return text.splitlines(keepends=True)


def with_badge(markdown: str, filename: str, owner: str = OWNER) -> str:
    line = badge_line(filename, owner)
    if BADGE.search(markdown):
        return BADGE.sub(line.replace("\\", "\\\\"), markdown, count=1)
    lines = markdown.split("\n")
    title = next((i for i, s in enumerate(lines) if s.startswith("# ")), -1)
    rest = lines[title + 1 :]
    gap = [""] if rest and rest[0].strip() else []  # the badge stays a paragraph of its own
    return "\n".join(lines[: title + 1] + ["", line] + gap + rest)


def _is_install_cell(cell: dict) -> bool:
    if cell.get("metadata", {}).get(KEY) == ROLE:
        return True
    return cell["cell_type"] == "code" and '"google.colab" in sys.modules' in _src(cell)


def _title_cell(cells: list[dict]) -> int:
    """The markdown cell with the ``# `` title (an edition's banner comes before it), else the first one."""
    markdown = [i for i, c in enumerate(cells) if c["cell_type"] == "markdown"]
    titled = (i for i in markdown if any(line.startswith("# ") for line in _src(cells[i]).splitlines()))
    return next(titled, markdown[0])


def update(nb: dict, filename: str, owner: str = OWNER) -> dict:
    """The notebook with its badge and install cell in place (a new dict; cell ids kept)."""
    nb = json.loads(json.dumps(nb))
    cells = nb["cells"]
    first_md = _title_cell(cells)
    text = with_badge(_src(cells[first_md]), filename, owner)
    if text != _src(cells[first_md]):
        cells[first_md]["source"] = _lines(text)
    source = install_source(filename[:2], owner)
    old = [i for i, c in enumerate(cells) if _is_install_cell(c)]
    cell = (
        cells[old[0]] if old else {"cell_type": "code", "id": "colab-install", "metadata": {}, "source": []}
    )
    for i in reversed(old):
        del cells[i]
    if _src(cell) != source or cell.get("outputs"):
        cell.update(source=_lines(source), outputs=[], execution_count=None)
        cell.get("metadata", {}).pop("execution", None)
    # an executed cell (make refresh-notebooks) keeps its count and timing metadata: it is up to date
    keep = ("tags", "execution")
    cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k in keep or k == KEY}
    cell["metadata"][KEY] = ROLE
    cell.setdefault("outputs", [])
    cell.setdefault("execution_count", None)
    header = next((i for i, c in enumerate(cells) if c.get("metadata", {}).get(KEY) == "header"), first_md)
    cells.insert(header + 1, cell)
    return nb


def dumps(nb: dict) -> str:
    return json.dumps(nb, indent=1, ensure_ascii=False) + "\n"


def process(paths: list[Path], owner: str = OWNER, check: bool = False) -> list[Path]:
    """Update each notebook in place (or, with ``check``, only report); returns those that changed."""
    changed = []
    for path in paths:
        before = path.read_text()
        after = dumps(update(json.loads(before), path.name, owner))
        if after != before:
            changed.append(path)
            if not check:
                path.write_text(after)
    return changed


def owners_in(paths: list[Path]) -> set[str]:
    """The GitHub owners that the Colab badges of these notebooks name."""
    return {m.group(1) for path in paths for m in BADGE_OWNER.finditer(path.read_text())}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("notebooks", nargs="*", type=Path, help="default: notebooks/NN_*.ipynb")
    ap.add_argument(
        "--owner",
        default=None,
        help=f"the GitHub owner of the kit's repository (default: the one the badges name, else {OWNER})",
    )
    ap.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 when a notebook would change"
    )
    args = ap.parse_args(argv)
    paths = args.notebooks or sorted(
        p for p in (REPO / "notebooks").glob("*.ipynb") if NOTEBOOK_NAME.match(p.name)
    )
    owner = args.owner
    if owner is None:
        named = owners_in(paths)
        if len(named) > 1:
            print(
                f"[colab] the badges name several owners ({', '.join(sorted(named))}): pass --owner",
                file=sys.stderr,
            )
            return 2
        owner = named.pop() if named else OWNER
    changed = process(paths, owner, args.check)
    verb = "would change" if args.check else "updated"
    print(
        f"[colab] {len(paths)} notebooks, {len(changed)} {verb}: {' '.join(p.name for p in changed) or '-'}"
    )
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    sys.exit(main())
