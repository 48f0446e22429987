"""Issue 10, "Done when": every notebook has the header parts, a references section and a
self-checked exercise with its solution folded (cells written by course_insert.py).

Reads the notebook JSON only; executes nothing.
"""

import json
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs  # notebook sources, not behaviour: make test runs it, make test-fast skips it

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))  # 11-13 included
KEY = "daimkit_course"
CHECKERS = (
    "check_scan_t2i",
    "check_contranorm",
    "check_gaussian_boundary",
    "check_recall_at_k",
    "check_info_nce",
    "check_answer",
)
IMPLEMENT = {
    "02": "check_scan_t2i",
    "03": "check_contranorm",
    "04": "check_gaussian_boundary",
    "06": "check_recall_at_k",
    "14": "check_info_nce",  # the capstone
}


def _cells(path):
    return json.loads(path.read_text())["cells"]


def _src(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _role(cell):
    return cell.get("metadata", {}).get(KEY)


def test_all_fifteen_notebooks_are_there():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{k:02d}" for k in range(15)]


# issue 27: about 14,000 words of notebook prose in all (markdown cells, counted as the session plan
# counts them); each notebook its share, so that one cannot grow at the others' expense
WORD_BUDGET = {
    "00": 840, "01": 825, "02": 1050, "03": 1000, "04": 990, "05": 1220, "06": 1330,
    "07": 640, "08": 750, "09": 1010, "10": 770, "11": 650, "12": 610, "13": 980, "14": 780,
}  # fmt: skip
TOTAL_WORDS = 13_500


def _words(path) -> int:
    text = [_src(c) for c in _cells(path) if c["cell_type"] == "markdown"]
    # strict: every part of a code name, URL or formula is a word (the course's budget is read this way)
    return sum(len(re.findall(r"[A-Za-z0-9][\w'-]*", t)) for t in text)


def test_notebook_prose_within_its_budget_and_the_course_within_13500_words():
    words = {p.name[:2]: _words(p) for p in NOTEBOOKS}
    over = {k: (n, WORD_BUDGET[k]) for k, n in words.items() if n > WORD_BUDGET[k]}
    assert not over, f"markdown words over budget (words, budget): {over}"
    assert sum(words.values()) <= TOTAL_WORDS and sum(WORD_BUDGET.values()) <= TOTAL_WORDS


HISTORY = re.compile(
    r"\b20\d\d-\d\d-\d\d\b"  # a date
    r"|\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{12,}\b"  # a hash (hex digits with a letter)
    r"|\bsha256 [0-9a-f]{6}"  # a printed digest
    r"|\b[Ii]ssues? #?\d+|#\d+\b"  # a tracker reference
    r"|while (other )?(training )?jobs|cores busy|load average|[Mm]easured on 20"  # machine-load notes
)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_dates_hashes_tracker_references_or_load_notes(path):
    """Teaching cells carry the ideas: no kit history in the markdown, the code or the printed outputs."""
    found = []
    for i, c in enumerate(_cells(path)):
        outs = [o.get("text", "") for o in c.get("outputs", [])]
        outs += [o.get("data", {}).get("text/plain", "") for o in c.get("outputs", [])]
        text = _src(c) + "".join("".join(o) if isinstance(o, list) else o for o in outs)
        text = re.sub(r"\(https?://[^)]*\)|https?://\S+", "", text)  # links (Colab, arXiv) may hold ids
        found += [(i, m.group(0)) for m in HISTORY.finditer(text)]
    assert not found, found


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_header_right_after_the_title(path):
    cells = _cells(path)
    title = next(
        i for i, c in enumerate(cells) if c["cell_type"] == "markdown" and _src(c).lstrip().startswith("# ")
    )
    header = cells[title + 1]
    text = _src(header)
    assert _role(header) == "header", "run course_insert.py"
    assert "After this notebook you can:" in text and text.count("\n- ") >= 2
    for part in ("time on a 2-core CPU", "prerequisites", "| previous |", "| next |", "../docs/glossary.md"):
        assert part in text, part
    assert "TIME_TBD" not in text, "fill the measured time: course_insert.py --times times.json"
    for link in re.findall(r"\]\(([0-9]{2}_[^)]+\.ipynb)\)", text):
        if link == CAPSTONE and path.name.startswith("13_"):
            continue  # 13's "next": the capstone notebook, added beside the sequence by its own change
        assert (path.parent / link).exists(), link


# these keep their solutions in a last "Solutions" section, before the references
SOLUTIONS_AT_END = {f"{k:02d}" for k in range(0, 15)}
CAPSTONE = "14_capstone.ipynb"


@pytest.mark.parametrize(
    "path", [p for p in NOTEBOOKS if p.name[:2] in SOLUTIONS_AT_END], ids=lambda p: p.name[:2]
)
def test_previous_and_next_are_the_neighbours(path):
    text = _src(next(c for c in _cells(path) if _role(c) == "header"))
    num = int(path.name[:2])
    prev = re.search(r"\| previous \| \[[^]]*\]\(([0-9]{2})_[^)]+\.ipynb\)", text)
    nxt = re.search(r"\| next \| \[[^]]*\]\(([0-9]{2})_[^)]+\.ipynb\)", text)
    last = int(NOTEBOOKS[-1].name[:2])
    if num == 0:  # the first: no notebook before it
        assert prev is None, "00 has no previous notebook"
    else:
        assert prev and int(prev.group(1)) == num - 1, "previous must link the notebook before"
    if num == last:  # the last: no notebook after it
        assert nxt is None, "the last notebook has no next notebook"
    else:
        assert nxt and int(nxt.group(1)) == num + 1, "next must link the notebook after (13: the capstone)"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_references_last(path):
    last = _cells(path)[-1]
    assert _role(last) == "references" and _src(last).startswith("## References")
    assert "High Feature Distinguishability" in _src(last)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_a_self_checked_exercise_with_a_folded_solution(path):
    cells = _cells(path)
    checks = [
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "code" and any(f"{k}(" in _src(c) for k in CHECKERS)
    ]
    assert checks, "no exercise checked by daimlib.course.exercises"
    num = path.name[:2]
    if num in SOLUTIONS_AT_END:  # one folded "Solutions" section at the end, before the references
        sols = [i for i, c in enumerate(cells) if _role(c) == "check-solution"]
        first = sols[0] if sols else None
        assert first is not None and _src(cells[first]).startswith("## Solutions"), "no Solutions section"
        assert "<details>" in _src(cells[first]) and first > max(checks)
        last = cells[first:-1]
        assert all(_role(c) in ("check-solution", "impl-solution") for c in last), (
            "only solutions between it and the references"
        )
        assert all(_role(c) != "check-solution" for c in cells[:first]), "a solution left beside its question"
        folded = [c for c in cells[:first] if "<summary>Solution" in _src(c)]
        assert not folded, "a folded solution left in the text"
    else:
        after = cells[checks[0] + 1]
        assert after["cell_type"] == "markdown" and "<details>" in _src(after), (
            "solution not folded below the check"
        )
    if num in IMPLEMENT:
        assert any(IMPLEMENT[num] + "(my_" in _src(cells[i]) for i in checks), f"{num}: implement-it exercise"


def test_map_of_the_method_in_00():
    cells = _cells(NOTEBOOKS[0])
    code = [_src(c) for c in cells if c["cell_type"] == "code"]
    assert any("draw_method_map(" in s for s in code) and any("method_table()" in s for s in code)
    assert (REPO / "figures" / "method_map.png").exists() and (REPO / "docs" / "glossary.md").exists()
