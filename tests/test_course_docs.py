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


def test_session_plan_counts_each_numbered_exercise_and_flags_a_session_over_90_minutes():
    """'## Exercises' over three numbered questions is three exercises (notebook 12's, 13's), not one;
    the numbers of a later section (a numbered summary) are not exercises."""
    plan = _load("session_plan")
    assert plan.count_exercises("## Exercises\n\n1. one\n2. two\n3. three\n\n## Summary\n\n1. not one") == 3
    assert plan.count_exercises("## Exercise\n\nOne question, no list.") == 1
    assert plan.count_exercises("## 2. Exercise: implement it\n\nWrite `f`.\n") == 1
    assert plan.count_exercises("## Summary\n\n1. a\n2. b") == 0
    nb12 = plan.notebook_stats(next((REPO / "notebooks").glob("12_*.ipynb")))
    assert nb12["exercises"] == 3  # its "## Exercises" numbers three questions
    stats = {n: {"name": n, "words": 0, "exercises": 0, "minutes": 0.0, "cpu": "-"} for n in ("00", "01")}
    stats["00"]["minutes"], stats["01"]["minutes"] = 50.0, 45.0
    session_1 = next(r for r in plan.tables(stats).splitlines() if r.startswith("| 1: "))
    assert "95 min (over 90" in session_1


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


# --- every command the README and the docs pages give exists, with the flags they give it -------------

EXTERNAL_FLAGS = {  # flags of other tools the pages show: torchrun, pip, conda, jupyter, ipykernel
    "--nnodes",
    "--nproc_per_node",
    "--rdzv_backend",
    "--rdzv_endpoint",
    "--rdzv_id",
    "--index-url",
    "--allow-root",
    "--sys-prefix",
    "--user",
    "--name",
    "--display-name",
    "--depth",
    "--dry-run",
}


def _parsers():
    import argparse

    from daimlib.__main__ import build_parser as kit_parser
    from experiments.__main__ import build_parser as experiments_parser

    found = {}
    for module, build in (("daimlib", kit_parser), ("experiments", experiments_parser)):
        sub = next(a for a in build()._actions if isinstance(a, argparse._SubParsersAction))
        found.update({(module, name): p for name, p in sub.choices.items()})
    return found


def _commands(text: str) -> list[str]:
    """Command lines of fenced bash blocks (continuations joined, comments cut) and inline `...` code."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split("  #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
    return lines


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_kit_command_and_flag_on_the_page_exists(page):
    from daimlib.config import PRESETS

    parsers = _parsers()
    checked = 0
    for line in _commands(page.read_text()):
        m = re.search(r"-m (daimlib|experiments) ([a-z][a-z0-9-]+)", line)
        if not m:
            continue
        assert (m.group(1), m.group(2)) in parsers, f"{page.name}: no command `{m.group(2)}` ({line})"
        options = parsers[(m.group(1), m.group(2))]._option_string_actions
        for flag in re.findall(r"(?<![\w-])(--?[a-z][a-z0-9_-]*)", line[m.end() :]):
            assert flag in options, f"{page.name}: `{m.group(2)}` has no {flag} ({line})"
        for name in re.findall(r"--preset ([\w]+)", line):
            assert name in PRESETS, f"{page.name}: no preset {name} ({line})"
        for value in re.findall(r"--protocol (\w+)", line):
            assert value in options["--protocol"].choices, f"{page.name}: no protocol {value}"
        checked += 1
    if page.name in ("reproduce.md",):
        assert checked >= 20, checked


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_every_script_the_page_runs_exists_with_its_flags(page):
    for line in _commands(page.read_text()):
        for script, args in re.findall(r"python3? ((?:scripts|benchmarks)/\w+\.py)([^`|]*)", line):
            path = REPO / script
            assert path.is_file(), f"{page.name}: {script} does not exist"
            source = path.read_text()
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", args):
                assert f'"{flag}"' in source, f"{page.name}: {script} has no {flag}"
        for extra in re.findall(r'-e "\.\[([\w,-]+)\]"', line):
            try:
                import tomllib
            except ImportError:  # Python 3.10
                tomllib = pytest.importorskip("tomli")
            extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
            assert set(extra.split(",")) <= set(extras), f"{page.name}: no extra {extra}"


def test_every_long_flag_in_the_researchers_page_is_a_real_option():
    """A looser net over inline code too: each --flag on docs/reproduce.md is an option of a kit command,
    of a script or benchmark, or of the other tools the page shows."""
    known = set(EXTERNAL_FLAGS)
    from daimlib.__main__ import build_parser

    known |= set(build_parser()._option_string_actions)  # --version, --help
    for p in _parsers().values():
        known |= set(p._option_string_actions)
    for path in [*(REPO / "scripts").glob("*.py"), *(REPO / "benchmarks").glob("*.py")]:
        known |= set(re.findall(r'"(--[a-z][a-z0-9-]*)"', path.read_text()))
    text = (REPO / "docs" / "reproduce.md").read_text()
    code = " ".join(_commands(text))
    unknown = sorted(set(re.findall(r"(?<![\w-])(--[a-z][a-z0-9_-]*)", code)) - known)
    assert not unknown, unknown


def test_session_plan_says_how_jupyterlab_reuses_make_demos_runs():
    """`make demo` keeps its runs under DEMO_OUT (DAIM_OUTPUT_DIR); the plan used to promise that
    later runs reuse them, which a plain `jupyter lab` (runs under runs/) does not."""
    demo_out = re.search(r"^DEMO_OUT := (\S+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    text = " ".join((REPO / "docs" / "session_plan.md").read_text().split())
    assert f"`DAIM_OUTPUT_DIR={demo_out} .venv/bin/jupyter lab notebooks/`" in text
    assert "so later runs reuse the finished work" not in text
