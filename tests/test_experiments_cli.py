"""The experiments' command line (``python -m experiments``): ablate, ablate-combine, demo-models, moved
out of the library's CLI; the same flags, the same messages and exit codes."""

from __future__ import annotations

import pytest

from daimlib.__main__ import COMMANDS as LIBRARY_COMMANDS
from experiments.__main__ import COMMANDS, main


def test_help_names_every_command_and_the_library_cli_has_none_of_them(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    assert all(name in top for name in COMMANDS)
    with pytest.raises(SystemExit):
        main(["ablate", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for flag in [
        "--preset",
        "--variants",
        "--seeds",
        "--data-root",
        "--out",
        "--jobs",
        "--set",
        "mean ± std",
    ]:
        assert flag in text, flag
    assert not set(COMMANDS) & set(LIBRARY_COMMANDS)


def test_a_wrong_variant_is_a_message_and_exit_2(tmp_path, capsys):
    argv = [
        "ablate",
        "--preset",
        "demo",
        "--variants",
        "nope",
        "--data-root",
        str(tmp_path),
        "--out",
        str(tmp_path),
    ]
    assert main(argv) == 2
    assert "unknown ablation variants ['nope']" in capsys.readouterr().err


@pytest.mark.slow  # trains two one-step runs
def test_ablate_command_prints_the_mean_std_table_and_writes_it(
    tmp_path, tmp_path_factory, monkeypatch, capsys
):
    from daimlib.data import make_demo_dataset

    root = tmp_path_factory.getbasetemp() / "demo_tiny"  # the tiny dataset of test_train.py (reused if made)
    make_demo_dataset(root, seed=0, size=(24, 5, 5), progress=False)
    monkeypatch.chdir(tmp_path)
    argv = [
        "ablate",
        "--preset",
        "demo",
        "--variants",
        "baseline",
        "mom",
        "--seeds",
        "1",
        "--data-root",
        str(root),
        "--out",
        "abl",
        "-q",
        "--set",
        "train.batch_size=8",
        "train.max_steps=1",
        "data.train_split=val",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split()[:4] == ["n_seeds", "i2t_r1", "t2i_r1", "rsum"]
    assert [ln.split()[0] for ln in lines[2:4]] == ["baseline", "mom"]
    assert "written: abl/runs.csv, abl/summary.csv" in out
    assert (tmp_path / "abl" / "summary.json").exists()


def test_demo_models_stopped_or_unexportable_exits_non_zero_and_says_why(monkeypatch, capsys):
    import experiments.demo_models as dm

    def interrupted(*a, **k):
        raise KeyboardInterrupt("demo: training stopped (interrupted) at step 7")

    monkeypatch.setattr(dm, "main_export", interrupted)
    assert main(["demo-models", "--arms", "demo", "-q"]) == 130
    err = capsys.readouterr().err
    assert "step 7" in err and "nothing was exported" in err

    def refused(*a, **k):
        raise RuntimeError("demo: runs/demo_models/demo is not exported: the run did not finish")

    monkeypatch.setattr(dm, "main_export", refused)
    assert main(["demo-models", "--arms", "demo", "-q"]) == 1
    assert "is not exported" in capsys.readouterr().err


@pytest.mark.parametrize(
    "error, shown",
    [
        (ValueError("--seeds must be at least 1"), "error: --seeds must be at least 1"),
        (
            OSError(28, "No space left on device", "runs/ablation/runs.csv"),
            "cannot write runs/ablation/runs.csv",
        ),
        (OSError(36, "File name too long", "runs/" + "x" * 300), "longer than the file system allows"),
    ],
)
def test_both_command_lines_share_one_error_wrapper(monkeypatch, capsys, error, shown):
    """A user's mistake (a bad value, a full disk, an impossible path) is one line on stderr and exit code 2,
    in ``python -m experiments`` as in ``python -m daimlib``; another OSError is a bug and propagates."""
    import daimlib.__main__ as library_cli
    import experiments.__main__ as experiments_cli

    def failing(args):
        raise error

    for cli in (library_cli, experiments_cli):
        monkeypatch.setitem(cli.COMMANDS, "presets" if cli is library_cli else "ablate-combine", failing)
    assert library_cli.main(["presets"]) == 2
    assert shown in capsys.readouterr().err
    assert experiments_cli.main(["ablate-combine", "runs.csv", "--out", "runs/combined"]) == 2
    err = capsys.readouterr().err
    assert shown in err and "Traceback" not in err


def test_an_os_error_that_is_not_the_users_keeps_its_traceback(monkeypatch):
    import experiments.__main__ as experiments_cli

    def failing(args):
        raise ConnectionResetError(104, "Connection reset by peer")

    monkeypatch.setitem(experiments_cli.COMMANDS, "ablate-combine", failing)
    with pytest.raises(ConnectionResetError):
        experiments_cli.main(["ablate-combine", "runs.csv", "--out", "runs/combined"])
