"""The student and teacher editions (scripts/editions.py): no solution reaches a student, the teacher
edition is the committed notebook, and a student edition still runs top to bottom."""

import importlib.util
import re
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SOLUTION_TEXT = re.compile(r"<summary>\s*solution", re.IGNORECASE)
CHECK_CALL = re.compile(r"\bcheck_[a-z0-9_]+\(")

_spec = importlib.util.spec_from_file_location("editions", REPO / "scripts" / "editions.py")
editions = importlib.util.module_from_spec(_spec)
sys.modules["editions"] = editions
_spec.loader.exec_module(editions)


def _read(path):
    return nbformat.read(path, as_version=4)


def test_a_folded_solution_is_cut_from_a_prose_cell_and_the_question_kept():
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell(
            "## Exercise\n\nWhy?\n\n<details>\n<summary>Solution</summary>\n\nBecause.\n</details>"
        ),
        nbformat.v4.new_markdown_cell("<details><summary> solutions </summary>all of them</details>"),
        nbformat.v4.new_markdown_cell("<details><summary>More on this</summary>not an answer</details>"),
    ]
    student = editions.make_edition(nb, "student")
    assert [c.source for c in student.cells[1:]] == [
        "## Exercise\n\nWhy?",  # the question stays, its answer goes
        "<details><summary>More on this</summary>not an answer</details>",  # a fold that is no solution stays
    ]  # the cell that held only a solution is gone
    assert nb.cells[0].source.endswith("</details>")  # the original is untouched


@pytest.fixture(scope="module")
def written(tmp_path_factory):
    out = tmp_path_factory.mktemp("editions")
    assert editions.main(["--out", str(out)]) == 0
    return out


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_student_edition_has_no_solution_and_no_output(written, path):
    source, student = _read(path), _read(written / "student" / path.name)
    n_solutions = sum(editions.is_solution(c) for c in source.cells)
    assert len(student.cells) == len(source.cells) - n_solutions + 1  # + the edition banner
    assert "Student edition" in student.cells[0].source
    assert "widgets" not in student.metadata  # saved widget state holds results (notebook 12's search)
    assert "top captions for image" not in (written / "student" / path.name).read_text()
    for cell in student.cells:
        assert not SOLUTION_TEXT.search(cell.source), "a solution reached the student edition"
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    # every exercise check stays, in its order
    checks = [c.source for c in source.cells if c.cell_type == "code" and CHECK_CALL.search(c.source)]
    assert [
        c.source for c in student.cells if c.cell_type == "code" and CHECK_CALL.search(c.source)
    ] == checks


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_teacher_edition_is_the_committed_notebook(written, path):
    source, teacher = _read(path), _read(written / "teacher" / path.name)
    assert "Teacher edition" in teacher.cells[0].source
    assert [(c.cell_type, c.source, c.get("outputs")) for c in teacher.cells[1:]] == [
        (c.cell_type, c.source, c.get("outputs")) for c in source.cells
    ]


def test_editions_are_byte_for_byte_reproducible(written, tmp_path):
    again = tmp_path / "again"
    editions.write_editions(NOTEBOOKS, again)
    for edition in editions.EDITIONS:
        for path in NOTEBOOKS:
            assert (again / edition / path.name).read_bytes() == (written / edition / path.name).read_bytes()


def test_a_missing_notebook_is_refused(tmp_path, capsys):
    assert editions.main(["--out", str(tmp_path), str(tmp_path / "nope.ipynb")]) == 2
    assert "no such notebook" in capsys.readouterr().err


def test_unknown_edition_is_refused():
    with pytest.raises(ValueError, match="student"):
        editions.make_edition(_read(NOTEBOOKS[0]), "reviewer")


@pytest.mark.slow
def test_a_student_edition_runs_top_to_bottom(written, tmp_path, monkeypatch):
    """Without its solution cells, notebook 04 (simulated scores, no training) still executes: the
    unanswered exercises report "not attempted" instead of failing."""
    from nbclient import NotebookClient

    name = next(p.name for p in NOTEBOOKS if p.name.startswith("04_"))
    nb = _read(written / "student" / name)
    monkeypatch.setenv("DAIM_OUTPUT_DIR", str(tmp_path))  # its figures go here, not into figures/
    # run where the committed notebooks live, so the setup cell finds the repository
    NotebookClient(
        nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(REPO / "notebooks")}}
    ).execute()
    shown = [
        o.get("text") or o.get("data", {}).get("text/plain", "")
        for c in nb.cells
        if c.cell_type == "code"
        for o in c.outputs
    ]
    assert sum("not attempted yet" in s for s in shown) == 2  # its two exercises, unanswered
    assert not any("right" in s and "\u2713" in s for s in shown)
