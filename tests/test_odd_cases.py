"""A full disk, odd captions and files, long paths, offline hub names, torchrun ranks, a shipped model:
each a clear, named error or the correct behaviour (issue 28, the "crash" and "confusing" cases)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from safetensors import SafetensorError

from daimlib import checkpoint
from daimlib.__main__ import eval_stem, main
from daimlib.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_config,
    load_model,
    save_checkpoint,
    scoring_tokenizer,
)
from daimlib.config import load_preset
from daimlib.data import DatasetFormatError, load_split, load_tokenizer, make_demo_dataset
from daimlib.history import HistoryLogger
from daimlib.metrics import recall_metrics
from daimlib.model import DAIM
from daimlib.paths import repo_root

pytestmark = pytest.mark.usefixtures("one_torch_thread")

FULL = (
    'Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })'
)


@pytest.fixture
def ckpt(tmp_path, demo_root):
    cfg = load_preset("demo")
    folder = tmp_path / "run" / "last"
    save_checkpoint(folder, DAIM.from_config(cfg), cfg, tokenizer=load_tokenizer(cfg.text, demo_root))
    return folder


def test_a_full_disk_inside_safetensors_is_a_named_error_and_keeps_the_checkpoint(ckpt, monkeypatch):
    before = (ckpt / "model.safetensors").read_bytes()

    def full(*a, **k):
        raise SafetensorError(FULL)

    monkeypatch.setattr(checkpoint, "save_file", full)
    cfg = load_preset("demo")
    with pytest.raises(
        CheckpointError, match=r"No space left on device \(the previous checkpoint there is kept\)"
    ):
        save_checkpoint(ckpt, DAIM.from_config(cfg), cfg)
    assert (ckpt / "model.safetensors").read_bytes() == before
    assert [p.name for p in ckpt.parent.iterdir()] == ["last"]  # no temporary folder left


def test_a_lone_surrogate_in_a_caption_names_the_record(tmp_path):
    (tmp_path / "images").mkdir()
    from PIL import Image

    Image.new("RGB", (6, 4)).save(tmp_path / "images" / "a.jpg")
    caps = ["a dog", "a dog runs", "dog \ud800 here", "a brown dog", "the dog"]
    record = {"filename": "a.jpg", "split": "test", "sentences": [{"raw": c} for c in caps]}
    text = json.dumps({"images": [record]})  # ASCII JSON: the unpaired surrogate becomes the escape \ud800
    assert "\\ud800" in text
    (tmp_path / "dataset_flickr30k.json").write_text(text)
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] \(a.jpg\): sentences\[2\] holds the lone surrogate U\+D800"
    ):
        load_split(tmp_path, "test")


def test_a_name_longer_than_the_file_system_allows_is_refused_before_anything(demo_root, tmp_path, capsys):
    out = tmp_path / "runs" / ("x" * 260)
    argv = ["train", "--preset", "demo", "--data-root", str(demo_root), "--out", str(out), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "260 bytes long; file systems allow at most 255" in err and "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_make_demo_data_on_a_file_is_a_named_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    assert main(["make-demo-data", "--root", str(tmp_path / "notes.txt"), "--size", "small", "-q"]) == 2
    err = capsys.readouterr().err
    assert "--root notes.txt is a file" in err and "Traceback" not in err
    assert (tmp_path / "notes.txt").read_text() == "mine"
    assert (
        main(["train", "--preset", "demo", "--data-root", "d", "--out", str(tmp_path / "notes.txt"), "-q"])
        == 2
    )
    assert "notes.txt is a file, not a folder" in capsys.readouterr().err


@pytest.fixture
def small_demo(tmp_path):
    root = tmp_path / "demo"
    make_demo_dataset(root, size=(5, 5, 5), progress=False)
    return root


def test_a_corrupt_or_empty_data_tokenizer_names_the_folder_and_the_cause(small_demo):
    text_cfg = load_preset("demo").text
    tok = small_demo / "tokenizer"
    (tok / "tokenizer.json").write_text('{"version": "1.0", "model": ')  # cut short
    with pytest.raises(
        ValueError, match=r"cannot read the demo tokenizer folder tokenizer/ \(it holds tokenizer.json"
    ):
        load_tokenizer(text_cfg, small_demo)
    for f in tok.iterdir():
        f.unlink()
    with pytest.raises(
        ValueError, match=r"the demo tokenizer folder tokenizer/ is empty: expected tokenizer.json"
    ):
        load_tokenizer(text_cfg, small_demo)
    make_demo_dataset(small_demo, size=(5, 5, 5), progress=False)  # the advice works: written again
    assert len(load_tokenizer(text_cfg, small_demo)) > 10


def test_an_empty_or_damaged_checkpoint_tokenizer_is_a_checkpoint_error(ckpt):
    from daimlib.checkpoint import load_checkpoint_tokenizer

    for f in (ckpt / "tokenizer").iterdir():
        f.unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer folder .*last/tokenizer is empty"):
        load_checkpoint_tokenizer(ckpt)


def test_a_non_utf8_config_file_names_the_file(tmp_path, capsys):
    bad = tmp_path / "mine.json"
    bad.write_bytes('{"name": "caf\u00e9"}'.encode("latin-1"))
    argv = ["train", "--config", str(bad), "--data-root", "d", "--out", str(tmp_path / "o"), "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "config file mine.json is not UTF-8 text (byte 0xe9 at position 13)" in err
    assert not (tmp_path / "o").exists()


def test_a_dangling_tensorboard_link_is_a_named_error(tmp_path):
    os.symlink(tmp_path / "gone", tmp_path / "tb")
    with pytest.raises(ValueError, match=r"tb is a symbolic link to .*gone, which does not exist"):
        HistoryLogger(tmp_path, enabled=True, tensorboard=True)


def test_non_finite_weights_are_named_not_blamed_on_captions(ckpt):
    model = load_model(ckpt)
    with torch.no_grad():
        model.txt_proj[0].weight[0, 0] = float("nan")
    save_checkpoint(ckpt, model, model.cfg)
    with pytest.raises(
        CheckpointError, match=r"non-finite weights \(NaN/Inf\) in 1 tensor\(s\): txt_proj.0.weight"
    ):
        load_model(ckpt)
    sims = torch.tensor([[0.5, float("nan")], [0.1, 0.2]])
    with pytest.raises(ValueError, match="weights are probably not finite") as err:
        recall_metrics(sims, torch.tensor([0, 1]))
    assert "empty caption" not in str(err.value)


def _edit_meta(folder, fn):
    meta = json.loads((folder / "meta.json").read_text())
    fn(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_checkpoint_naming_a_hub_text_model_makes_no_network_attempt(ckpt, monkeypatch):
    cfg = json.loads((ckpt / "config.json").read_text())
    cfg["text"].update(name="someone/a-text-model", model_kwargs=None, tokenizer=None)
    (ckpt / "config.json").write_text(json.dumps(cfg))
    record = {
        "bytes": (ckpt / "config.json").stat().st_size,
        "sha256": hashlib.sha256((ckpt / "config.json").read_bytes()).hexdigest(),
    }
    _edit_meta(ckpt, lambda m: m["files"].update({"config.json": record}))  # as if it had been saved so
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)

    def no_network(*a, **k):
        raise AssertionError("a network lookup was attempted")

    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setenv("HF_HOME", str(ckpt.parent / "empty_hf_home"))
    with pytest.raises(
        CheckpointError, match=r"names the hub text model 'someone/a-text-model'.*never goes online"
    ):
        load_checkpoint(ckpt)
    shutil.rmtree(
        ckpt / "tokenizer"
    )  # a checkpoint without its tokenizer: the config's, from local files only
    _edit_meta(ckpt, lambda m: [m["files"].pop(k) for k in list(m["files"]) if k.startswith("tokenizer/")])
    with pytest.raises(CheckpointError, match=r"carries no tokenizer/ folder.*not on this machine"):
        scoring_tokenizer(ckpt, load_config(ckpt), None)
    assert "HF_HUB_OFFLINE" not in os.environ  # put back as it was


def test_only_rank_0_prints_the_summary_under_torchrun(monkeypatch, capsys):
    from daimlib import train as train_mod

    done = SimpleNamespace(
        stopped="completed", global_step=3, out_dir=Path("runs/x"), best_metrics={}, best_epoch=None
    )
    monkeypatch.setattr(train_mod, "train", lambda *a, **k: done)
    argv = ["train", "--preset", "demo", "--data-root", "d", "--out", "runs/x"]
    for rank, printed in (("1", False), ("0", True)):
        monkeypatch.setenv("RANK", rank)
        assert main(argv) == 0
        assert ("completed: 3 steps" in capsys.readouterr().out) is printed


def test_advice_names_no_option_that_does_not_exist(ckpt):
    cfg = load_preset("demo")
    other = cfg.replace(**{"similarity.lambda_softmax": 4.0})
    with pytest.raises(CheckpointError) as diff:
        load_checkpoint(ckpt, model=DAIM.from_config(other), expect_cfg=other)
    small = load_preset(
        "demo",
        **{"text.hidden_states": (2, 3), "image.stages": (1, 2), "similarity.level_weights": (1.0, 1.0)},
    )
    with pytest.raises(CheckpointError) as keys:
        load_checkpoint(ckpt, model=DAIM.from_config(small), expect_cfg=cfg)
    for err in (diff, keys):
        assert "strict=False" not in str(err.value) and "evaluate" in str(err.value)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_evaluating_a_shipped_model_writes_nothing_into_models(demo_root, tmp_path, monkeypatch, capsys):
    shipped = repo_root() / "models" / "demo" / "best"
    if not (shipped / "meta.json").is_file():
        pytest.skip("the shipped demo model is not in this checkout")
    monkeypatch.setenv("DAIM_OUTPUT_DIR", str(tmp_path / "out"))
    assert (
        eval_stem(shipped, "test_demo")
        == tmp_path / "out" / "runs" / "eval" / "models" / "demo" / "eval_best_test_demo"
    )
    assert eval_stem(tmp_path / "run" / "best", "test_demo") == tmp_path / "run" / "eval_best_test_demo"

    def tracked_state():
        return subprocess.run(
            ["git", "status", "--porcelain", "--ignored", "models"],
            cwd=repo_root(),
            capture_output=True,
            text=True,
        ).stdout

    before = tracked_state()
    argv = [
        "evaluate",
        "--checkpoint",
        str(shipped),
        "--data-root",
        str(demo_root),
        "--protocol",
        "demo",
        "-q",
    ]
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert "is a shipped model (tracked by git); its results go to the ignored folder" in captured.err
    assert tracked_state() == before
    written = sorted(p.name for p in (tmp_path / "out" / "runs" / "eval" / "models" / "demo").iterdir())
    assert written == [f"eval_best_test_demo.{e}" for e in ("csv", "json", "md", "tex")]


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_evaluating_one_checkpoint_on_other_data_keeps_the_earlier_results(
    demo_root, other_demo_data, tmp_path, capsys
):
    """A model evaluated on one dataset, then on another (cross-dataset): the second evaluation used to replace
    the first's files (same checkpoint, split and protocol); it is written beside them under the data folder's
    name, and the same data again still replaces its own files."""
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "run" / "best", DAIM.from_config(cfg, pretrained=False), cfg)
    base = ["evaluate", "--checkpoint", str(tmp_path / "run" / "best"), "--protocol", "demo", "-q"]
    base += ["--set", "data.num_workers=0"]

    def recorded(name):
        return json.loads((tmp_path / "run" / f"{name}.json").read_text())["data"]["annotations_sha256"]

    assert main([*base, "--data-root", str(demo_root)]) == 0
    first = recorded("eval_best_test_demo")
    assert main([*base, "--data-root", str(other_demo_data)]) == 0
    assert "hold an evaluation of other data" in capsys.readouterr().err
    assert recorded("eval_best_test_demo") == first  # kept
    assert recorded("eval_best_test_demo_other_data") != first  # the other data's, beside it
    assert main([*base, "--data-root", str(demo_root)]) == 0  # the same data: its own files, no note
    assert "other data" not in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").glob("eval_*.json")) == [
        "eval_best_test_demo.json",
        "eval_best_test_demo_other_data.json",
    ]
