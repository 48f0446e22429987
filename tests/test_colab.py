"""scripts/colab.py on copies of the notebooks: the badge and the Colab install cell, idempotent, and the
cell a silent no-op outside Colab (executed here), and the right clone and install inside it (simulated)."""

import contextlib
import importlib.util
import io
import json
import shutil
import sys
import types
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _load():
    spec = importlib.util.spec_from_file_location("colab", REPO / "scripts" / "colab.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


colab = _load()


def _src(cell):
    return "".join(cell["source"])


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    folder = tmp_path_factory.mktemp("nbs")
    for nb in NOTEBOOKS:
        shutil.copy(nb, folder / nb.name)
    paths = sorted(folder.glob("*.ipynb"))
    first = {p.name: colab.process([p]) for p in paths}
    return folder, paths, first


def test_running_twice_changes_nothing_the_second_time(copies):
    folder, paths, _ = copies
    before = {p.name: p.read_text() for p in paths}
    assert colab.process(paths) == [] and colab.process(paths, check=True) == []
    assert {p.name: p.read_text() for p in paths} == before
    assert colab.main([*map(str, paths), "--check"]) == 0


def test_an_executed_install_cell_is_up_to_date_and_an_edited_one_is_rewritten():
    """Re-executing the notebooks (make refresh-notebooks) gives the cell a count and timing metadata:
    that is no change for --check; an edited cell gets the script's source back and loses both."""
    nb = colab.update(json.loads(NOTEBOOKS[0].read_text()), NOTEBOOKS[0].name)
    cell = next(c for c in nb["cells"] if c["metadata"].get(colab.KEY) == colab.ROLE)
    cell["execution_count"], cell["metadata"]["execution"] = 3, {"iopub.status.idle": "then"}
    again = colab.update(nb, NOTEBOOKS[0].name)
    assert colab.dumps(again) == colab.dumps(nb)
    cell["source"] = ["print('edited')\n"]
    fixed = colab.update(nb, NOTEBOOKS[0].name)
    new = next(c for c in fixed["cells"] if c["metadata"].get(colab.KEY) == colab.ROLE)
    assert _src(new) == colab.install_source(NOTEBOOKS[0].name[:2])
    assert new["execution_count"] is None and "execution" not in new["metadata"]


def test_check_reports_an_untouched_notebook_without_writing_it(tmp_path):
    nb = tmp_path / NOTEBOOKS[0].name
    shutil.copy(NOTEBOOKS[0], nb)
    text = nb.read_text()
    if colab.process([nb], check=True):  # the committed notebook lacks the cell: reported, not written
        assert nb.read_text() == text and colab.main([str(nb), "--check"]) == 1


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_badge_and_install_cell_in_place(copies, name):
    folder, _, _ = copies
    original = json.loads((REPO / "notebooks" / name).read_text())["cells"]
    cells = json.loads((folder / name).read_text())["cells"]
    url = f"https://colab.research.google.com/github/{colab.OWNER}/daim-kit/blob/main/notebooks/{name}"
    title = _src(cells[0])
    assert cells[0]["cell_type"] == "markdown" and title.startswith("# ")
    assert title.count("Open In Colab") == 1 and f"]({url})" in title
    assert title.split("\n")[0] == _src(original[0]).split("\n")[0], "the title line stays first"
    roles = [c.get("metadata", {}).get(colab.KEY) for c in cells]
    assert roles.count("colab") == 1
    k = roles.index("colab")
    if "header" in roles:
        assert roles[k - 1] == "header", "the install cell follows the 'At a glance' header"
    else:  # a notebook without the course header: right after its title cell
        assert k == 1
    params = next(i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", []))
    assert k < params
    assert cells[k]["outputs"] == [], "the install cell prints nothing outside Colab"
    # every other cell is the committed one (ids and outputs kept); only a hand-written install cell goes
    kept = [c for c in original if '"google.colab" in sys.modules' not in _src(c)]
    others = [c for i, c in enumerate(cells) if i != k]
    assert [c.get("id") for c in others] == [c.get("id") for c in kept]
    assert [c.get("outputs") for c in others] == [c.get("outputs") for c in kept]


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_the_install_cell_is_a_silent_no_op_outside_colab(copies, name, monkeypatch):
    folder, _, _ = copies
    cell = next(
        c for c in json.loads((folder / name).read_text())["cells"] if c["metadata"].get(colab.KEY) == "colab"
    )
    assert "google.colab" not in sys.modules
    monkeypatch.setattr("subprocess.run", lambda *a, **k: pytest.fail(f"ran {a}"))
    monkeypatch.setattr("os.chdir", lambda *a: pytest.fail("changed folder"))
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        exec(compile(_src(cell), name, "exec"), {})
    assert out.getvalue() == ""


@pytest.mark.parametrize("number, extras", [("00", "colab"), ("13", "colab,pretrained-test")])
def test_in_colab_it_clones_once_and_installs_the_kit(monkeypatch, number, extras):
    calls, dirs, path = [], [], []
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    monkeypatch.setattr("subprocess.run", lambda cmd, check: calls.append(cmd))
    monkeypatch.setattr("os.chdir", dirs.append)
    monkeypatch.setattr("os.path.isdir", lambda p: bool(calls))  # cloned after the first git call
    monkeypatch.setattr(sys, "path", path)
    source = colab.install_source(number, owner="someone")
    for _ in range(2):  # run twice, as a student re-running the cell would
        with contextlib.redirect_stdout(io.StringIO()) as out:
            exec(compile(source, "cell", "exec"), {})
        assert "DAIM Kit installed from https://github.com/someone/daim-kit" in out.getvalue()
    clone = ["git", "clone", "--depth", "1", "https://github.com/someone/daim-kit", "/content/daim-kit"]
    install = [sys.executable, "-m", "pip", "install", "-q", "-e", f"/content/daim-kit[{extras}]"]
    assert calls == [clone, install, install]
    assert dirs == ["/content/daim-kit/notebooks"] * 2 and path[0] == "/content/daim-kit"


def test_badge_rewritten_not_duplicated_and_owner_applied():
    md = "# 05 · Training\n\nSome text."
    once = colab.with_badge(md, "05_training.ipynb")
    assert once.split("\n")[:3] == ["# 05 · Training", "", colab.badge_line("05_training.ipynb")]
    assert colab.with_badge(once, "05_training.ipynb") == once
    tight = colab.with_badge("# 14 · Capstone\nText right under the title.", "14_capstone.ipynb")
    assert tight.split("\n")[1:4] == ["", colab.badge_line("14_capstone.ipynb"), ""]
    assert colab.with_badge(tight, "14_capstone.ipynb") == tight
    moved = colab.with_badge(once, "05_training.ipynb", owner="me")
    assert (
        moved.count("Open In Colab") == 1
        and "/github/me/daim-kit/blob/main/notebooks/05_training.ipynb" in moved
    )


def test_a_published_owner_stays_when_the_script_runs_again_without_owner(tmp_path, capsys):
    """After `--owner acme`, a plain run or `--check` keeps acme (it used to put the placeholder back
    into every notebook, and `--check` failed on all of them)."""
    paths = []
    for nb in NOTEBOOKS[:2]:
        shutil.copy(nb, tmp_path / nb.name)
        paths.append(tmp_path / nb.name)
    args = [*map(str, paths)]
    assert colab.main([*args, "--owner", "acme"]) == 0
    published = {p.name: p.read_text() for p in paths}
    assert all("github/acme/daim-kit" in t and colab.OWNER not in t for t in published.values())
    assert colab.main([*args, "--check"]) == 0
    assert colab.main(args) == 0
    assert {p.name: p.read_text() for p in paths} == published
    # two owners at once: the script cannot tell which is meant, and says so
    paths[1].write_text(paths[1].read_text().replace("github/acme/", "github/other/"))
    assert colab.main(args) == 2 and "--owner" in capsys.readouterr().err
    assert colab.main([*args, "--owner", "acme"]) == 0 and colab.owners_in(paths) == {"acme"}


def test_an_editions_banner_gets_no_badge_and_the_titles_badge_follows_the_owner(tmp_path):
    """A teacher who publishes the student edition (`make editions`) runs `colab.py --owner` on it: the
    banner cell before the title got a second badge and the title's kept the placeholder owner."""
    spec = importlib.util.spec_from_file_location("editions", REPO / "scripts" / "editions.py")
    editions = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(editions)
    import nbformat

    path = tmp_path / NOTEBOOKS[4].name
    path.write_text(
        nbformat.writes(editions.make_edition(nbformat.read(NOTEBOOKS[4], as_version=4), "student"))
    )
    before = json.loads(path.read_text())
    again = colab.update(before, path.name)  # an edition of an up-to-date notebook is up to date
    assert [_src(c) for c in again["cells"]] == [_src(c) for c in before["cells"]]
    assert colab.main([str(path), "--owner", "teacher"]) == 0
    banner, title = json.loads(path.read_text())["cells"][:2]
    assert "Open In Colab" not in _src(banner) and "Student edition" in _src(banner)
    assert _src(title).count("Open In Colab") == 1 and "/github/teacher/daim-kit/" in _src(title)
