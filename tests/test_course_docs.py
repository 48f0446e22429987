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


def test_results_page_quotes_the_shipped_models_metrics_and_curves():
    """docs/results.md's table of the three shipped arms and its curve are models/*/ (metrics.json, history)."""
    import csv

    text = (REPO / "docs" / "results.md").read_text()
    arms = ("demo_hat", "demo_baseline", "demo")
    m = {a: json.loads((REPO / "models" / a / "metrics.json").read_text())["test"] for a in arms}
    for arm in arms:
        row = re.search(
            rf"^\| `{arm}` \| [it]2[it] \| (?:yes|no) \| (?:yes|no) \| ([\d.]+) / ([\d.]+) \| ([\d.]+) \|$",
            text,
            re.M,
        )
        assert row, arm
        assert [float(x) for x in row.groups()] == [round(m[arm][k], 1) for k in ("i2t_r1", "t2i_r1", "rsum")]
    gaps = (
        m["demo_baseline"]["rsum"] - m["demo_hat"]["rsum"],
        m["demo"]["rsum"] - m["demo_baseline"]["rsum"],
    )
    assert f"+{gaps[0]:.1f} RSUM" in text and f"(FDM +\nMOM): {gaps[1]:.1f}".replace("-", "−") in text
    curves = {a: list(csv.DictReader((REPO / "models" / a / "history_epochs.csv").open())) for a in arms}
    first_rate = float(curves["demo"][0]["elapsed_min"])  # minutes per epoch at the first epoch's rate
    for e, rec in enumerate(curves["demo"]):
        vals = " | ".join(f"{float(curves[a][e]['rsum']):.1f}" for a in ("demo", "demo_baseline", "demo_hat"))
        row = f"| {e} | {rec['step']} | {(e + 1) * first_rate:.1f} | {vals} |"
        assert row in text, row
