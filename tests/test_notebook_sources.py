"""Properties of the committed notebooks 00-10, read as JSON (nothing is executed), and of
scripts/run_notebooks.py (issue 14 items 2-4 and 7, issue 10 item 7).

Each notebook has a papermill ``parameters`` cell with DATA, PRESET, DEVICE and SMOKE that papermill
can read; no machine path in sources or outputs; no progress-bar spam; nbval markers as cell tags;
every figure goes through the notebook's ``save`` rule (tracked ``figures/`` only for the full demo
run); each file is under 1 MB. The slow test runs two notebooks under papermill in smoke mode on a
generated Flickr30K-layout folder and checks that the checkout stays clean.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted(p for p in (REPO / "notebooks").glob("[01][0-9]_*.ipynb") if int(p.name[:2]) <= 10)
REQUIRED = ("DATA", "PRESET", "DEVICE", "SMOKE")
# absolute paths of a machine: POSIX homes and temp folders, this project's work tree, Windows users
MACHINE_PATH = re.compile(
    r"(?<![\w.])(/work/|/tmp/|/root/|/home/\w|/Users/\w|/private/var/|[A-Za-z]:\\\\Users)"
    r"|<outside>/"  # display_path's marker for a folder outside the repo: the notebook ran elsewhere
)


def _load_script():
    spec = importlib.util.spec_from_file_location("run_notebooks", REPO / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


run_notebooks = _load_script()


def _nb(path):
    return nbformat.read(path, as_version=4)


def _parameters_cell(nb):
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(cells) == 1, f"expected one cell tagged 'parameters', found {len(cells)}"
    assert cells[0].cell_type == "code"
    return cells[0]


def _output_texts(cell):
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            yield "".join(out.get("text", ""))
        for mime, value in out.get("data", {}).items():
            if mime.startswith("text/") or mime.endswith("json"):
                yield value if isinstance(value, str) else json.dumps(value)
        if out.get("output_type") == "error":
            yield "\n".join(out.get("traceback", []))


@pytest.mark.docs
def test_the_sequence_is_there():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{i:02d}" for i in range(11)]


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_parameters_cell_has_data_preset_device_smoke(path):
    cell = _parameters_cell(_nb(path))
    tree = ast.parse(cell.source)
    assigned = {t.id: node.value for node in tree.body if isinstance(node, ast.Assign) for t in node.targets}
    for name in REQUIRED:
        assert name in assigned, f"{path.name}: the parameters cell lacks {name}"
    assert ast.literal_eval(assigned["SMOKE"]) is False, "SMOKE must default to False (the full run)"
    assert all(isinstance(node, ast.Assign) for node in tree.body), (
        "the parameters cell holds assignments only"
    )


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_papermill_reads_every_parameter(path):
    """papermill skips a line with two '=' (e.g. in its comment): such a parameter would be unknown to it."""
    papermill = pytest.importorskip("papermill")
    cell = _parameters_cell(_nb(path))
    names = {t.id for node in ast.parse(cell.source).body for t in node.targets}
    inspected = set(papermill.inspect_notebook(str(path)))
    assert names == inspected, f"{path.name}: papermill cannot read {sorted(names - inspected)}"


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_smoke_changes_something_after_the_parameters(path):
    """SMOKE is read after the parameters cell (where papermill's injected values are in force)."""
    nb = _nb(path)
    k = nb.cells.index(_parameters_cell(nb))
    later = "\n".join(c.source for c in nb.cells[k + 1 :] if c.cell_type == "code")
    assert re.search(r"\bSMOKE\b", later), f"{path.name}: SMOKE is never used"


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_machine_paths(path):
    nb = _nb(path)
    for i, cell in enumerate(nb.cells):
        for text in (cell.source, *_output_texts(cell)):
            m = MACHINE_PATH.search(text)
            assert m is None, (
                f"{path.name} cell {i}: machine path {text[max(0, m.start() - 30) : m.end() + 30]!r}"
            )


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_no_progress_bar_spam(path):
    nb = _nb(path)
    for i, cell in enumerate(nb.cells):
        outs = cell.get("outputs", [])
        streams = [o for o in outs if o.get("output_type") == "stream"]
        assert len(streams) <= 10, f"{path.name} cell {i}: {len(streams)} stream outputs"
        for o in outs:
            assert "application/vnd.jupyter.widget-view+json" not in o.get("data", {}), (
                f"{path.name} cell {i}: widget"
            )
            if o.get("output_type") == "stream":
                text = "".join(o.get("text", ""))
                assert "\r" not in text and "it/s]" not in text, (
                    f"{path.name} cell {i}: a progress bar {text[:60]!r}"
                )


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_harness_markers_are_tags_not_comments(path):
    nb = _nb(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert "NBVAL_" not in cell.source, (
                f"{path.name} cell {i}: nbval marker as a comment; use a cell tag"
            )
            for tag in cell.metadata.get("tags", []):
                assert tag in {
                    "parameters",
                    "nbval-check-output",
                    "nbval-ignore-output",
                    "nbval-skip",
                    "raises-exception",
                }, f"{path.name} cell {i}: unknown tag {tag!r}"


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_figures_go_through_the_save_rule(path):
    """Only the notebook's ``save`` helper calls ``viz.save_figure`` with the tracked default, and only for
    the full demo run (DATA == "demo" and not SMOKE); every other figure goes to the run folder."""
    nb = _nb(path)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    helpers = [s for s in code if "def save(fig, name)" in s]
    calls = [line for s in code for line in s.splitlines() if "viz.save_figure(" in line]
    if helpers:  # the notebook's own rule
        body = helpers[0].split("def save(fig, name)", 1)[1]
        assert 'DATA == "demo" and not SMOKE' in body and "root=" in body
        calls = [c for c in calls if c not in body]
    for call in calls:  # the library's rule: viz.save_figure(..., data=DATA, smoke=SMOKE)
        assert "data=DATA" in call and "smoke=SMOKE" in call, f"{path.name}: {call.strip()}"


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_run_folders_follow_the_data(path):
    """Runs, checkpoints and caches of DATA other than the demo (or of a smoke run) never share a folder with
    the demo's: every load_or_train / ablate call names a folder under ``out_root``."""
    src = "\n".join(c.source for c in _nb(path).cells if c.cell_type == "code")
    for call in re.findall(r"nb\.load_or_train\([^\n]*", src):
        assert "out_root" in call or "run_dir" in call, f"{path.name}: {call}"
    for call in re.findall(r"\bablate\([^\n]*\n[^\n]*", src):
        assert "out_root" in call, f"{path.name}: {call}"
    assert not re.search(r"runs/(demo|demo_hat|daim_f30k|ablation_short)\b[^\"]*\"\)", src)


@pytest.mark.docs
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name[:2])
def test_under_one_megabyte(path):
    assert path.stat().st_size < 1_000_000, f"{path.name}: {path.stat().st_size / 1e6:.2f} MB"


# --- scripts/run_notebooks.py ------------------------------------------------------------------


def test_progress_outputs_are_dropped_and_nothing_else():
    nb = nbformat.v4.new_notebook()
    keep = [
        nbformat.v4.new_output("stream", name="stdout", text="demo: 300 steps in 2.1 min\n"),
        nbformat.v4.new_output("stream", name="stderr", text="UserWarning: something a reader should see\n"),
        nbformat.v4.new_output("display_data", data={"text/plain": "<Figure size 600x350 with 1 Axes>"}),
    ]
    drop = [
        nbformat.v4.new_output(
            "stream", name="stderr", text="\repoch 0:   3%|3         | 9/312 [00:04<02:31, 2.00it/s]"
        ),
        nbformat.v4.new_output("stream", name="stderr", text="\r"),
        nbformat.v4.new_output(
            "display_data",
            data={
                "application/vnd.jupyter.widget-view+json": {
                    "model_id": "x",
                    "version_major": 2,
                    "version_minor": 0,
                },
                "text/plain": "demo images:   0%|          | 0/4700 [00:00<?, ?it/s]",
            },
        ),
    ]
    cell = nbformat.v4.new_code_cell("train()")
    cell.outputs = [drop[0], keep[0], drop[1], keep[1], drop[2], keep[2]]
    nb.cells = [cell, nbformat.v4.new_markdown_cell("text")]
    assert run_notebooks.drop_progress_outputs(nb) == 3
    assert nb.cells[0].outputs == keep


def test_parameters_from_the_command_line(tmp_path):
    ap = run_notebooks.build_parser()
    args = ap.parse_args(
        [
            "--smoke",
            "--data",
            "demo",
            "--preset",
            "tiny",
            "-p",
            "TRAIN_STEPS=20",
            "-p",
            "QUERY=a red dog",
            "--out",
            str(tmp_path),
            "x.ipynb",
        ]
    )
    assert run_notebooks.parameters_from(args) == {
        "TRAIN_STEPS": 20,
        "QUERY": "a red dog",
        "DATA": "demo",
        "PRESET": "tiny",
        "SMOKE": True,
    }
    inside = REPO / "runs" / "smoke" / "data" / "f30k_like"
    args = ap.parse_args(["--data", str(inside), "--out", str(tmp_path), "x.ipynb"])
    assert run_notebooks.parameters_from(args) == {"DATA": "runs/smoke/data/f30k_like"}  # repo-relative


def test_parameters_need_an_output_folder(capsys):
    with pytest.raises(SystemExit) as exc:
        run_notebooks.main(["--smoke", str(NOTEBOOKS[0])])
    assert exc.value.code == 2
    assert "--out" in capsys.readouterr().err


def test_a_bad_param_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        run_notebooks.main(["-p", "TRAIN_STEPS", "--out", str(tmp_path), str(NOTEBOOKS[0])])
    assert exc.value.code == 2
    assert "KEY=VALUE" in capsys.readouterr().err


@pytest.mark.slow
def test_smoke_run_on_a_flickr30k_layout_folder_leaves_the_checkout_clean(tmp_path):
    """Notebooks 00 and 04 under papermill with SMOKE=True, PRESET="tiny" on a generated F30K-layout folder
    (outside the repository): they run, say which dataset they loaded, and git status is unchanged."""
    pytest.importorskip("papermill")
    from daimlib.data import make_f30k_layout  # noqa: PLC0415 - the generator of helper "data"

    data = tmp_path / "f30k_like"
    make_f30k_layout(data, n_train=40, n_val=10, n_test=10, seed=0)
    out = tmp_path / "executed"
    picked = [p for p in NOTEBOOKS if p.name[:2] in ("00", "04")]
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "run_notebooks.py"),
        "--smoke",
        "--preset",
        "tiny",
        "--data",
        str(data),
        "--out",
        str(out),
        "--check-clean",
        *map(str, picked),
    ]
    res = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    executed = _nb(out / picked[0].name)
    text = "\n".join(t for c in executed.cells for t in _output_texts(c))
    assert "f30k layout (dataset_flickr30k.json" in text
    assert "caption truth check skipped" in text
    assert "runs/smoke/f30k_like/figures/00_images.png" in text
