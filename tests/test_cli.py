"""``python -m daimlib``: help for every command, a make-demo-data -> train -> evaluate smoke, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from daimlib.__main__ import COMMANDS, build_parser, main
from daimlib.config import load_preset
from daimlib.data import load_split

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cli(args, cwd, timeout=150):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # see the one_torch_thread fixture (conftest.py)
    return subprocess.run(
        [sys.executable, "-m", "daimlib", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )


def test_help_names_and_explains_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    for name in COMMANDS:
        assert name in top
    expected_flags = {
        "make-demo-data": ["--root", "--size", "--seed"],
        "train": ["--preset", "--data-root", "--out", "--set", "--resume"],
        "evaluate": ["--checkpoint", "--data-root", "--protocol", "coco1k", "coco5k", "RSUM"],
        "bench": ["--full"],
    }
    for name, flags in expected_flags.items():
        with pytest.raises(SystemExit):
            main([name, "--help"])
        text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
        for flag in flags:
            assert flag in text, (name, flag)
    assert set(build_parser()._subparsers._group_actions[0].choices) == set(COMMANDS)


def test_no_command_prints_the_whole_help_and_exits_2(capsys, monkeypatch):
    """``python -m daimlib`` alone: the help with every command and the examples (not argparse's one-line
    'COMMAND required'), exit code 2 as for any usage error; also through sys.argv (argv=None)."""
    assert main([]) == 2
    out, err = capsys.readouterr()
    assert all(name in out for name in COMMANDS) and "examples" in out and "required" not in err
    monkeypatch.setattr(sys, "argv", ["daimlib"])
    assert main() == 2
    assert capsys.readouterr().out == out
    from experiments.__main__ import main as experiments_main  # the same wrapper: the same behaviour

    assert experiments_main([]) == 2
    assert "ablate" in capsys.readouterr().out


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_output_cut_off_by_a_closed_pipe_ends_quietly():
    """``python -m daimlib presets | head -1``: the reader is gone before the command writes; the command
    ends with the shell's code for a closed pipe (141) and no traceback or 'Exception ignored' noise."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # every write now fails with EPIPE, as after `head` exits
    try:
        done = subprocess.run(
            [sys.executable, "-m", "daimlib", "presets"],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parents[1],
            timeout=120,
        )
    finally:
        os.close(write_end)
    assert done.returncode == 141, done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


@pytest.mark.slow  # trains a model
def test_make_demo_data_train_evaluate_smoke(tmp_path, monkeypatch, capsys):
    """The three commands chained with relative paths: the first as a fresh ``python -m daimlib``
    process (the entry point itself), the next two through ``main`` in this process (a fresh
    interpreter costs its imports again: ~25 s on a busy 2-core machine)."""
    r = _cli(["make-demo-data", "--root", "data", "--size", "small", "-q"], tmp_path)
    assert r.returncode == 0, r.stderr
    assert "written to data" in r.stdout
    assert (tmp_path / "data" / "dataset_demo.json").exists()

    monkeypatch.chdir(tmp_path)
    argv = [
        "train",
        "--preset",
        "demo",
        "--data-root",
        "data",
        "--out",
        "run",
        "-q",
        "--no-val",
        "--set",
        "train.batch_size=8",
        "train.max_steps=3",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "max_steps: 3 steps; run folder run" in out
    steps = (tmp_path / "run" / "history_steps.csv").read_text().splitlines()
    assert len(steps) == 1 + 3
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train"]["max_steps"] == 3

    assert (
        main(["evaluate", "--checkpoint", "run/last", "--data-root", "data", "--protocol", "demo", "-q"]) == 0
    )
    out = capsys.readouterr().out
    assert "RSUM" in out and "i2t R@1" in out
    assert str(tmp_path) not in out  # paths are printed relative to the working directory
    # beside the checkpoint folder, as --help says, not inside it (issue 11 item 6)
    stem = "run/eval_last_test_demo"
    assert f"written: {stem}.csv, {stem}.md, {stem}.tex, {stem}.json" in out
    assert not list((tmp_path / "run" / "last").glob("eval_*"))
    saved = json.loads((tmp_path / f"{stem}.json").read_text())
    assert (tmp_path / f"{stem}.csv").exists() and "| demo test, demo (" in (
        tmp_path / f"{stem}.md"
    ).read_text()
    assert r"\begin{tabular}" in (tmp_path / f"{stem}.tex").read_text()
    assert saved["ties"] == "pessimistic" and saved["paper_protocol"] is False
    assert saved["data"]["annotations"] == "dataset_demo.json" and saved["data"]["data_root"] == "data"
    assert saved["data"]["n_images"] == len(load_split(load_preset("demo").data, tmp_path / "data", "test"))
    # a paper protocol on a split of another size: labelled with the real sizes, or refused with --strict
    args = ["evaluate", "--checkpoint", "run/last", "--data-root", "data", "--protocol", "f30k", "-q"]
    assert main(args) == 0
    assert "f30k rule on" in capsys.readouterr().out
    assert json.loads((tmp_path / "run" / "eval_last_test_f30k.json").read_text())["paper_protocol"] is False
    assert main([*args, "--strict"]) == 2
    err = capsys.readouterr().err
    assert "defined on 1,000 test images" in err and "--strict refuses it" in err and "Traceback" not in err

    # the written metrics are those of the checkpoint, evaluated independently in this process
    from daimlib.checkpoint import load_checkpoint
    from daimlib.data import load_tokenizer
    from daimlib.evaluate import evaluate

    model, cfg, _ = load_checkpoint(tmp_path / "run" / "last")
    metrics, _ = evaluate(
        model.eval(),
        load_split(cfg.data, tmp_path / "data", "test"),
        load_tokenizer(cfg.text, tmp_path / "data"),
        cfg,
        protocol="demo",
        progress=False,
    )
    assert saved["metrics"] == pytest.approx(metrics)
    rsum = sum(metrics[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
    assert saved["metrics"]["rsum"] == pytest.approx(rsum)

    # --images N: the first N images of a split with their captions, in files of their own
    train = load_split(cfg.data, tmp_path / "data", "train")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                "run/last",
                "--data-root",
                "data",
                "--protocol",
                "demo",
                "-q",
                "--split",
                "train",
                "--images",
                "4",
            ]
        )
        == 0
    )
    assert "demo train (first 4 images)" in capsys.readouterr().out
    part = json.loads((tmp_path / "run" / "eval_last_train_first4_demo.json").read_text())
    first = [j for j in range(train.n_captions) if int(train.img_of_caption[j]) < 4]
    assert part["images"] == 4 and part["data"]["n_images"] == 4 and part["data"]["n_captions"] == len(first)
    sub = dataclasses.replace(
        train,
        image_paths=train.image_paths[:4],
        captions=[train.captions[j] for j in first],
        img_of_caption=train.img_of_caption[first],
        image_ids=train.image_ids[:4],
        meta=train.meta[:4],
        caption_meta=None,
    )
    metrics4, _ = evaluate(
        model.eval(), sub, load_tokenizer(cfg.text, tmp_path / "data"), cfg, protocol="demo", progress=False
    )
    assert part["metrics"] == pytest.approx(metrics4)
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                "run/last",
                "--data-root",
                "data",
                "--protocol",
                "demo",
                "-q",
                "--images",
                "100000",
            ]
        )
        == 2
    )
    assert "the test split has only" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--preset", "nope", "--data-root", "d", "--out", "o"], "unknown preset 'nope'"),
        (
            ["train", "--preset", "demo", "--data-root", "d", "--out", "o", "--set", "train.nope=1"],
            "unknown config key",
        ),
        (["train", "--preset", "demo", "--data-root", "d", "--out", "o", "--set", "lr"], "key=value"),
        (
            ["evaluate", "--checkpoint", "missing", "--data-root", "d", "--protocol", "demo"],
            "no checkpoint folder",
        ),
        (["train", "--preset", "demo", "--data-root", "d", "--out", "o", "--resume"], "holds no checkpoint"),
        # a batch of 0 was taken as 'the default' (and -3 failed only after the model had loaded)
        (
            [
                "evaluate",
                "--checkpoint",
                "missing",
                "--data-root",
                "d",
                "--protocol",
                "demo",
                "--batch-size",
                "0",
            ],
            "--batch-size|expected at least 1",
        ),
        # no network and no local weights: the missing model and the field to set are named
        (
            ["train", "--preset", "daim_f30k", "--data-root", "d", "--out", "o"],
            "swin_base_patch4_window7_224.ms_in22k|image.weights",
        ),
    ],
)
@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_user_errors_exit_2_with_a_message_and_no_traceback(argv, message, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # as on a machine without internet, whatever this one has
    assert main(argv + ["-q"]) == 2
    err = capsys.readouterr().err
    assert all(part in err for part in message.split("|")) and "Traceback" not in err


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_evaluating_a_run_folder_names_its_checkpoints(tmp_path, monkeypatch, capsys):
    """--checkpoint RUN (the run folder, not RUN/best): the error names the run's checkpoints to give instead."""
    from daimlib.checkpoint import load_checkpoint, save_checkpoint
    from daimlib.model import DAIM

    cfg = load_preset("demo")
    model = DAIM.from_config(cfg, pretrained=False)
    for kind in ("best", "last"):
        save_checkpoint(tmp_path / "run" / kind, model, cfg)
    monkeypatch.chdir(tmp_path)
    for with_config in (False, True):  # a run folder holds the run's config.json too (train writes it)
        if with_config:
            (tmp_path / "run" / "config.json").write_text(cfg.to_json())
        assert main(["evaluate", "--checkpoint", "run", "--data-root", "d", "--protocol", "demo", "-q"]) == 2
        err = capsys.readouterr().err
        assert "It is a run folder: give one of its checkpoints, run/best or run/last." in err, err
    load_checkpoint("run/best", read_train_state=False)  # what it names loads
    shutil.rmtree(tmp_path / "run" / "best")  # a run trained with --no-val has last/ only
    assert main(["evaluate", "--checkpoint", "run/best", "--data-root", "d", "--protocol", "demo", "-q"]) == 2
    err = capsys.readouterr().err
    assert "this run has no best/" in err and "its checkpoint is run/last" in err


def test_version_prints_the_package_version_without_loading_torch():
    import daimlib

    code = (
        "import sys, runpy; sys.argv = ['daimlib', '--version']\n"
        "try:\n    runpy.run_module('daimlib', run_name='__main__')\nexcept SystemExit as e:\n"
        "    assert e.code in (0, None)\nprint('torch loaded:', 'torch' in sys.modules)"
    )
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines() == [f"daimlib {daimlib.__version__}", "torch loaded: False"]
