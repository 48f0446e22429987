"""The install metadata stays consistent: environment.yml names exactly pyproject's packages."""

import re
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parents[1]


def _pyproject_requirements() -> set[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return set(meta["dependencies"]) | set(meta["optional-dependencies"]["dev"])


def _environment_pip_requirements() -> set[str]:
    reqs, in_pip = set(), False
    for line in (REPO / "environment.yml").read_text().splitlines():
        if re.match(r"^\s*-\s*pip:\s*$", line):
            in_pip = True
            continue
        m = re.match(r"^\s{6,}-\s*(\S.*)$", line)
        if in_pip and m and not m.group(1).startswith("-e"):
            reqs.add(m.group(1).strip())
    return reqs


def test_environment_yml_lists_the_same_requirements_as_pyproject():
    py, env = _pyproject_requirements(), _environment_pip_requirements()
    assert env, "no pip requirements parsed from environment.yml"
    assert py - env == set(), f"in pyproject.toml but not environment.yml: {sorted(py - env)}"
    assert env - py == set(), f"in environment.yml but not pyproject.toml: {sorted(env - py)}"


def test_torch_is_a_range_never_an_exact_pin():
    for req in _pyproject_requirements():
        name = re.split(r"[<>=!~ ]", req, maxsplit=1)[0]
        if name in ("torch", "torchvision"):
            assert "==" not in req, f"{req}: keep torch as a range so each machine gets a build that fits"


def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci
