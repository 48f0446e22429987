"""daimlib.paths: one rule for the repository root and for how paths are shown."""

from pathlib import Path

from daimlib import checkpoint, paths
from daimlib.course import nb

REPO = Path(__file__).resolve().parents[1]


def test_one_copy_of_the_path_display_rule():
    assert nb.rel is paths.display_path and checkpoint.display_path is paths.display_path
    assert nb.repo_root is paths.repo_root


def test_display_path_is_repo_relative_inside_the_repo_whatever_the_working_directory(monkeypatch):
    monkeypatch.chdir(REPO / "tests")
    assert paths.display_path(REPO / "runs" / "demo" / "best") == "runs/demo/best"
    assert paths.display_path("../data/demo") == "data/demo"
    assert paths.display_path(REPO) == "."


def test_display_path_outside_the_repo_is_relative_to_the_working_directory_or_hidden(monkeypatch, tmp_path):
    (tmp_path / "work").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    assert paths.display_path("run/last") == "run/last"  # CLI: relative to where the user is
    assert paths.display_path(tmp_path / "work" / "run") == "run"
    assert paths.display_path("../elsewhere/x") == "../elsewhere/x"  # given relative: shown as given
    hidden = paths.display_path(tmp_path / "elsewhere" / "x.png")
    assert hidden == "<outside>/elsewhere/x.png" and str(tmp_path) not in hidden


def test_output_root_follows_daim_output_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("DAIM_OUTPUT_DIR", raising=False)
    assert paths.output_root() == paths.repo_root()
    monkeypatch.setenv("DAIM_OUTPUT_DIR", "build/demo")  # relative: to the repository root
    assert paths.output_root() == paths.repo_root() / "build" / "demo"
    monkeypatch.setenv("DAIM_OUTPUT_DIR", str(tmp_path))
    assert paths.output_root() == tmp_path
    assert paths.is_demo_data("demo") and paths.is_demo_data(REPO / "data" / "demo")
    assert not paths.is_demo_data(tmp_path)
