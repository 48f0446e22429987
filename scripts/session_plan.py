"""The tables of ``docs/session_plan.md``, computed from the notebooks (``--write`` updates the page).

Per notebook: the words of its markdown cells, counted strictly (every part of a code name, URL or
formula is a word: ``daimlib.course.nb`` is three; table rules and heading marks do not count), the student time ESTIMATED from them (reading at
200 words per minute, plus 10 minutes per exercise: each numbered item under a markdown heading that
names exercises, or the heading itself when it numbers none), and
the CPU time its own header states (the header row "time on a 2-core CPU", quoted as written). Per
session: the sums of the estimates, flagged when over 90 minutes. Nothing here is measured on students.

    python scripts/session_plan.py            # print the tables
    python scripts/session_plan.py --write    # rewrite them between the markers in docs/session_plan.md
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PAGE = REPO / "docs" / "session_plan.md"
START, END = "<!-- session-plan:start (scripts/session_plan.py --write) -->", "<!-- session-plan:end -->"
WORDS_PER_MINUTE = 200
MINUTES_PER_EXERCISE = 10
# the course in 90-minute sessions: notebook numbers per session (the capstone is homework)
SESSIONS = [
    ("1", "the data and the two encoders", ["00", "01"]),
    ("2", "cross-attention similarity", ["02"]),
    ("3", "the FDM and the MOM", ["03", "04"]),
    ("4", "training", ["05"]),
    ("5", "evaluation and the margin over training", ["06", "07"]),
    ("6", "feature separation and the ablation", ["08", "09"]),
    ("7", "real data, the authors' checkpoints, search, real photos", ["10", "11", "12", "13"]),
    ("8", "the capstone, presented", ["14"]),
]
EXERCISE_HEADING = re.compile(r"^#{1,6} .*\b[Ee]xercises?\b", re.M)
HEADING = re.compile(r"^#{1,6} ", re.M)
NUMBERED_ITEM = re.compile(r"^\d+\. ", re.M)  # a top-level numbered list item: one exercise each
SESSION_MINUTES = 90
# a word as a strict counter sees it: each part of a code name, URL or formula counts
WORD = re.compile(r"[A-Za-z0-9][\w'-]*")
HEADER_TIME = re.compile(r"^\|\s*time on a 2-core CPU\s*\|\s*(.*?)\s*\|\s*$", re.M)


def count_exercises(text: str) -> int:
    """The exercises of one markdown cell: each heading that names an exercise counts as many as the
    numbered items in its section (up to the next heading), and as one when it numbers none."""
    total = 0
    for m in EXERCISE_HEADING.finditer(text):
        following = HEADING.search(text, m.end())
        section = text[m.end() : following.start() if following else len(text)]
        total += max(1, len(NUMBERED_ITEM.findall(section)))
    return total


def notebook_stats(path: Path) -> dict:
    cells = json.loads(path.read_text())["cells"]
    markdown = ["".join(c["source"]) for c in cells if c["cell_type"] == "markdown"]
    words = sum(len(WORD.findall(text)) for text in markdown)
    exercises = sum(count_exercises(text) for text in markdown)
    header = next(
        (m.group(1) for text in markdown[:3] for m in [HEADER_TIME.search(text)] if m), "not stated"
    )
    minutes = words / WORDS_PER_MINUTE + MINUTES_PER_EXERCISE * exercises
    return {"name": path.stem, "words": words, "exercises": exercises, "minutes": minutes, "cpu": header}


def all_stats(folder: Path = REPO / "notebooks") -> dict[str, dict]:
    return {p.name[:2]: notebook_stats(p) for p in sorted(folder.glob("[0-9][0-9]_*.ipynb"))}


def tables(stats: dict[str, dict]) -> str:
    rows = [
        "| notebook | markdown words | exercises | student time, estimated | CPU time: the notebook's header says |",
        "|---|---|---|---|---|",
    ]
    for s in stats.values():
        rows.append(
            f"| `{s['name']}` | {s['words']:,} | {s['exercises']} | {math.ceil(s['minutes'])} min | {s['cpu']} |"
        )
    rows += ["", "| session | notebooks | student time, estimated |", "|---|---|---|"]
    for number, topic, nbs in SESSIONS:
        have = [n for n in nbs if n in stats]
        total = sum(stats[n]["minutes"] for n in have)
        shown = ", ".join(have) if have else f"{', '.join(nbs)} (not in this checkout)"
        over = f" (over {SESSION_MINUTES}: assign part as homework)" if total > SESSION_MINUTES else ""
        rows.append(f"| {number}: {topic} | {shown} | {math.ceil(total)} min{over} |")
    return "\n".join(rows)


def write(page: Path = PAGE, stats: dict[str, dict] | None = None) -> None:
    text = page.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    page.write_text(f"{head}{START}\n{tables(stats or all_stats())}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--write", action="store_true", help=f"rewrite the tables in {PAGE.relative_to(REPO)}")
    args = ap.parse_args(argv)
    if args.write:
        write()
        print(f"[session-plan] tables rewritten in {PAGE.relative_to(REPO)}")
    else:
        print(tables(all_stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
