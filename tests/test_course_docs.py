"""The student README and the course pages: short, every link and `make` target real, and the session
plan's tables recomputed from the notebooks (scripts/session_plan.py)."""

import importlib.util
import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]

pytestmark = pytest.mark.docs


def _load(name):
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_student_readme_is_short_and_names_the_two_commands_and_every_notebook():
    text = (REPO / "README.md").read_text()
    assert len(text.split()) < 1500, len(text.split())
    assert "make demo" in text and "make test" in text and "figures/method_map.png" in text
    for nb in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        assert f"`{nb.stem}`" in text, f"README's notebook list lacks {nb.stem}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_relative_link_resolves(page):
    text = page.read_text()
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name} links to {target}, which does not exist"
        if anchor and file.suffix == ".md":  # a GitHub heading anchor: lower case, spaces to dashes
            slugs = {
                re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
                for h in re.findall(r"^#+ (.*)$", file.read_text(), flags=re.M)
            }
            assert anchor in slugs, f"{page.name} links to {target}: no such heading"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_make_target_named_exists(page):
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z-]+)`", page.read_text()):
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), (
            f"{page.name} names `make {target}`"
        )


def test_session_plan_tables_are_the_notebooks(tmp_path):
    """The committed tables are what the script computes now (rerun `python scripts/session_plan.py --write`)."""
    plan = _load("session_plan")
    page = tmp_path / "plan.md"
    page.write_text((REPO / "docs" / "session_plan.md").read_text())
    plan.write(page)
    assert page.read_text() == (REPO / "docs" / "session_plan.md").read_text(), (
        "docs/session_plan.md is out of date: run python scripts/session_plan.py --write"
    )


def test_session_plan_estimate_against_a_hand_count(tmp_path):
    """Words / 200 + 10 min per exercise heading, and the header's CPU time quoted as written."""
    plan = _load("session_plan")
    md = lambda s: {"cell_type": "markdown", "metadata": {}, "source": s}  # noqa: E731
    cells = [
        md("# 99 · A test\n\n| what | value |\n|---|---|\n| time on a 2-core CPU | about 7 s (measured) |\n"),
        md("## Exercise\n\n" + "word " * 396),
        {
            "cell_type": "code",
            "metadata": {},
            "source": "x = 1  # words in code are not counted",
            "outputs": [],
        },
        md("### Exercise: two\ntext"),
    ]
    path = tmp_path / "99_test.ipynb"
    path.write_text(json.dumps({"cells": cells, "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    s = plan.notebook_stats(path)
    # counted by hand: "99 A test what value time on a 2-core CPU about 7 s (measured)", "Exercise" + 396,
    # "Exercise: two text" (the marks #, |, ---, · are no words)
    words = 14 + 397 + 3
    assert s["words"] == words and s["exercises"] == 2
    assert s["minutes"] == pytest.approx(words / 200 + 20)
    assert s["cpu"] == "about 7 s (measured)"
