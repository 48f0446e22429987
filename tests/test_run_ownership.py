"""A run folder is owned while it is written; --overwrite touches only a folder the kit marked; a
checkpoint's integrity cannot be switched off by deleting its record; degenerate splits are refused or
labelled; the demo data is deterministic; scorers use the checkpoint's tokenizer (issue 28)."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from daimlib import runlock, runs
from daimlib import train as train_mod
from daimlib.__main__ import main
from daimlib.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_checkpoint_tokenizer,
    load_model,
    save_checkpoint,
    scoring_tokenizer,
)
from daimlib.config import load_preset
from daimlib.data import build_wordpiece_tokenizer, load_split, load_tokenizer, make_demo_dataset
from daimlib.data.split import first_images
from daimlib.data.tokenizer import SPECIAL_TOKENS, wordpiece_vocab
from daimlib.evaluate import evaluate, protocol_label, protocol_problem
from daimlib.model import DAIM
from daimlib.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(**over):
    base = {
        "train.batch_size": 8,
        "train.epochs": 1,
        "train.max_steps": 1,
        "train.freeze_epochs": 0,
        "data.train_split": "val",
        "data.val_split": "test",
        "train.eval_batch_size": 64,
    }
    base.update(over)
    return load_preset("demo", **base)


def _listing(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def _lock_of(folder, pid, host=None):
    folder.mkdir(parents=True, exist_ok=True)
    owner = {"pid": pid, "host": host or socket.gethostname(), "command": "train", "started_utc": "then"}
    (folder / runlock.LOCK_NAME).write_text(json.dumps(owner))


@pytest.fixture
def live_pid():
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield proc.pid
    proc.kill()
    proc.wait()


@pytest.fixture
def demo_ckpt(tmp_path, demo_root):
    """A kit checkpoint of the untrained demo model with the demo data's tokenizer: ``runs/x/last``."""
    cfg = _cfg()
    folder = tmp_path / "runs" / "x" / "last"
    save_checkpoint(folder, DAIM.from_config(cfg), cfg, tokenizer=load_tokenizer(cfg.text, demo_root))
    return folder


# --- one writer per run folder ----------------------------------------------------------------------


def test_a_second_train_on_a_folder_in_use_fails_at_once_naming_the_holder(
    demo_root, tmp_path, live_pid, capsys
):
    out = tmp_path / "run"
    _lock_of(out, live_pid)
    (out / "history_steps.csv").write_text("step,loss\r\n0,1.0\r\n")  # the first run's rows
    before = {p: (out / p).read_bytes() for p in _listing(out)}
    argv = [
        "train",
        "--preset",
        "demo",
        "--data-root",
        str(demo_root),
        "--out",
        str(out),
        "-q",
        "--set",
        "train.max_steps=1",
    ]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert (
        f"is in use by train (pid {live_pid} on host {socket.gethostname()}" in err and "Traceback" not in err
    )
    assert {p: (out / p).read_bytes() for p in _listing(out)} == before  # nothing written, the lock kept
    with pytest.raises(runlock.RunBusyError, match=f"pid {live_pid}"):
        train(_cfg(), demo_root, out, progress=False, overwrite=True)


@pytest.mark.slow  # two real processes: ~25 s
def test_two_trainings_on_one_out_the_second_stops_at_once_and_nothing_is_mixed(demo_root, tmp_path):
    out = tmp_path / "run"
    base = [
        sys.executable,
        "-m",
        "daimlib",
        "train",
        "--preset",
        "demo",
        "--data-root",
        str(demo_root),
        "--out",
        str(out),
        "-q",
        "--no-val",
        "--set",
        "train.batch_size=8",
        "data.train_split=val",
        "train.freeze_epochs=0",
        "train.epochs=40",
        "train.max_steps=60",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(base, env=env, stderr=subprocess.PIPE, text=True)
    for _ in range(600):
        if (out / runlock.LOCK_NAME).exists() or first.poll() is not None:
            break
        time.sleep(0.1)
    second = subprocess.run([*base, "train.seed=1"], env=env, capture_output=True, text=True, timeout=300)
    assert first.poll() is None, "the first run ended before the second started: the test proves nothing"
    assert second.returncode == 2 and f"is in use by train (pid {first.pid}" in second.stderr
    assert first.wait(timeout=600) == 0, first.stderr.read()
    lines = (out / "history_steps.csv").read_text().splitlines()
    assert len(lines) == 61 and sum(line == lines[0] for line in lines) == 1  # one header, one run's rows
    assert runs.read_record(out)["config"]["train"]["seed"] == 0 and not (out / runlock.LOCK_NAME).exists()


def test_the_lock_is_held_while_training_and_released_on_every_exit(demo_root, tmp_path):
    out, seen = tmp_path / "run", []

    def fake(cfg, data_root, out_dir, resume=False):
        seen.append(runlock.read_lock(out_dir))
        (out_dir / "run.json").write_text("{}")
        if resume:
            raise KeyboardInterrupt("stop")
        return "done"

    assert train_mod.train.__wrapped__.__name__ == "train"  # the public train() owns its folder this way
    train = train_mod._owning_out_dir(fake)
    assert train(_cfg(), demo_root, out) == "done"
    assert seen[0]["pid"] == os.getpid() and seen[0]["host"] == socket.gethostname()
    assert not (out / runlock.LOCK_NAME).exists()
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(), demo_root, out, resume=True)
    assert not (out / runlock.LOCK_NAME).exists() and (out / "run.json").exists()


def test_a_stale_lock_is_taken_over_and_one_from_another_host_named(demo_root, tmp_path, caplog):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    folder = tmp_path / "a"
    _lock_of(folder, dead.pid)
    assert runlock.is_stale(runlock.read_lock(folder))
    with runlock.run_folder(folder, "train"):
        assert runlock.read_lock(folder)["pid"] == os.getpid()
    assert "no longer runs" in caplog.text and not (folder / runlock.LOCK_NAME).exists()
    other = tmp_path / "b"
    _lock_of(other, 1, host="gpu-node-7")
    with pytest.raises(
        runlock.RunBusyError, match=r"on host gpu-node-7.*another host.*delete .*\.daimlib\.lock"
    ):
        with runlock.run_folder(other, "train"):
            pass


def test_ablate_and_demo_models_refuse_a_folder_in_use(demo_root, tmp_path, live_pid, capsys, monkeypatch):
    from experiments import ablation, demo_models
    from experiments.__main__ import main as experiments_main

    out = tmp_path / "abl"
    _lock_of(out, live_pid)
    monkeypatch.setattr(
        ablation, "_one_run", lambda *a: pytest.fail("trained while another owned the folder")
    )
    with pytest.raises(runlock.RunBusyError, match=f"pid {live_pid}"):
        ablation.ablate("demo", ["baseline"], 1, demo_root, out, progress=False)
    runs_dir = tmp_path / "dm"
    _lock_of(runs_dir, live_pid)
    monkeypatch.setattr(demo_models, "train_arm", lambda *a, **k: pytest.fail("trained"))
    assert (
        experiments_main(["demo-models", "--data-root", str(demo_root), "--runs", str(runs_dir), "-q"]) == 2
    )
    assert f"pid {live_pid}" in capsys.readouterr().err


def test_a_failed_start_leaves_no_empty_out_folder(tmp_path, capsys):
    out = tmp_path / "new" / "deeper" / "run"
    argv = ["train", "--preset", "demo", "--data-root", str(tmp_path / "no_data"), "--out", str(out), "-q"]
    assert main(argv) == 2
    assert "Traceback" not in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


# --- --overwrite: a marked kit run folder only --------------------------------------------------------


def test_overwrite_refuses_a_checkpoint_folder(demo_root, demo_ckpt):
    before = {p: (demo_ckpt / p).read_bytes() for p in _listing(demo_ckpt)}
    for kw in ({"overwrite": True}, {}):
        with pytest.raises(FileExistsError, match=r"is a checkpoint folder.*give --out the run folder"):
            train(_cfg(), demo_root, demo_ckpt, progress=False, **kw)
    with pytest.raises(FileExistsError, match=r"inside the checkpoint folder last/"):
        train(_cfg(), demo_root, demo_ckpt / "sub", progress=False, overwrite=True)
    assert {p: (demo_ckpt / p).read_bytes() for p in _listing(demo_ckpt)} == before
    load_model(demo_ckpt)  # still a whole checkpoint


def test_overwrite_never_touches_a_folder_without_the_kit_marker(demo_root, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "config.json").write_text("{}")  # parses as the default config, yet the user's
    (out / "history_steps.csv").write_bytes(b"my,own\r\n1,2\r\n")
    with pytest.raises(FileExistsError, match="not a DAIM Kit run folder"):
        train(_cfg(), demo_root, out, progress=False, overwrite=True)
    assert (out / "config.json").read_bytes() == b"{}" and (
        out / "history_steps.csv"
    ).read_bytes() == b"my,own\r\n1,2\r\n"


# --- integrity ------------------------------------------------------------------------------------------


def _edit_meta(folder, fn):
    meta = json.loads((folder / "meta.json").read_text())
    fn(meta)
    (folder / "meta.json").write_text(json.dumps(meta))


def test_a_swapped_config_with_its_record_deleted_is_refused(demo_ckpt):
    cfg = json.loads((demo_ckpt / "config.json").read_text())
    cfg["similarity"]["lambda_softmax"] = 4.0  # another model around the same weights
    (demo_ckpt / "config.json").write_text(json.dumps(cfg))
    _edit_meta(demo_ckpt, lambda m: m["files"].pop("config.json"))
    with pytest.raises(CheckpointError, match=r"config.json is not listed in .*meta.json"):
        load_model(demo_ckpt)


def test_a_listed_file_that_is_gone_or_an_extra_weight_file_is_refused(demo_ckpt, tmp_path):
    (demo_ckpt / "pytorch_model.bin").write_bytes(b"\0" * 16)
    with pytest.raises(
        CheckpointError, match=r"weight files that meta.json does not list: pytorch_model.bin"
    ):
        load_model(demo_ckpt)
    (demo_ckpt / "pytorch_model.bin").unlink()
    (demo_ckpt / "tokenizer" / "tokenizer.json").unlink()
    with pytest.raises(CheckpointError, match=r"lacks tokenizer/tokenizer.json, which meta.json lists"):
        load_model(demo_ckpt)
    with pytest.raises(CheckpointError, match=r"lacks tokenizer/tokenizer.json"):
        load_checkpoint_tokenizer(demo_ckpt)


def test_meta_json_files_as_a_list_is_a_named_error(demo_ckpt):
    _edit_meta(demo_ckpt, lambda m: m.update(files=sorted(m["files"])))
    with pytest.raises(
        CheckpointError, match=r'meta.json: its "files" entry must map each file name.*found list'
    ):
        load_model(demo_ckpt)


# --- degenerate splits ----------------------------------------------------------------------------------


def test_a_one_image_validation_split_is_refused_for_best_selection(demo_root, tmp_path):
    from experiments.ablation import ablate

    out = tmp_path / "run"
    with pytest.raises(
        ValueError, match=r"cannot select a best checkpoint: a split of 1 image.*every rank is 1"
    ):
        train(_cfg(**{"train.val_images": 1}), demo_root, out, progress=False, eval_split="test")
    assert not out.exists()
    one_val = tmp_path / "one_val"
    make_demo_dataset(one_val, size=(5, 1, 5), progress=False)
    with pytest.raises(ValueError, match=r"ablate on the 'val' split: a split of 1 image\(s\) is degenerate"):
        ablate("demo", ["baseline"], 1, one_val, tmp_path / "abl", eval_split="val", progress=False)
    assert not (tmp_path / "abl").exists()


def test_a_one_image_test_split_is_labelled_degenerate(demo_root, capsys):
    cfg = _cfg()
    split = first_images(load_split(cfg.data, demo_root, "test"), 1)
    model = DAIM.from_config(cfg).eval()
    metrics, table = evaluate(model, split, load_tokenizer(cfg.text, demo_root), cfg, protocol="demo")
    assert metrics["rsum"] == pytest.approx(600.0)  # what it measures: nothing
    assert "DEGENERATE: every rank is 1" in table.index[0]
    assert protocol_label("f30k", 1, 5).endswith("(DEGENERATE: every rank is 1)")
    assert "degenerate" in protocol_problem("demo", 1) and protocol_problem("demo", 2) is None
    with pytest.raises(ValueError, match="degenerate"):
        evaluate(model, split, load_tokenizer(cfg.text, demo_root), cfg, protocol="demo", strict=True)


# --- deterministic artefacts, the checkpoint's tokenizer ---------------------------------------------


def test_the_same_seed_gives_the_same_demo_data_byte_for_byte(tmp_path):
    digests = []
    for name in ("a", "b"):
        make_demo_dataset(tmp_path / name, seed=3, size=(6, 3, 5), progress=False)
        root = tmp_path / name
        digests.append(
            {
                p: hashlib.sha256((root / p).read_bytes()).hexdigest()
                for p in _listing(root)
                if (root / p).is_file()
            }
        )
    assert "tokenizer/vocab.txt" in digests[0] and "tokenizer/tokenizer.json" in digests[0]
    assert digests[0] == digests[1]


def test_the_wordpiece_vocabulary_follows_its_rule(tmp_path):
    caps = ["A red circle.", "a blue circle", "red red square"]
    chars = sorted(set("aredcirclblusq."))
    words = ["red", "circle", "blue", "square"]  # by falling count (3, 2, 1, 1), ties alphabetically
    assert wordpiece_vocab(caps, 64) == SPECIAL_TOKENS + chars + [f"##{c}" for c in chars] + words
    tok = build_wordpiece_tokenizer(caps, tmp_path / "t", vocab_size=64)
    assert (tmp_path / "t" / "vocab.txt").read_text().split("\n")[:-1] == wordpiece_vocab(caps, 64)
    assert tok.tokenize("Blue squares ace") == [
        "blue",
        "square",
        "##s",
        "a",
        "##c",
        "##e",
    ]  # longest pieces first
    assert wordpiece_vocab(caps, len(SPECIAL_TOKENS) + 2 * len(chars) + 1)[-1] == "red"


def _permuted_tokenizer(demo_root, folder):
    """The demo tokenizer's words in another order: other ids for the same words."""
    caps = load_split(demo_root, "train", check_files=False).captions
    return build_wordpiece_tokenizer(caps[::-1] + ["zz zz zz zz zz zz"], folder, vocab_size=512)


def test_the_widget_and_scorers_use_the_checkpoints_tokenizer(demo_root, tmp_path):
    from daimlib.course.widgets import ModelChoice, build_index

    cfg = _cfg()
    own = _permuted_tokenizer(demo_root, tmp_path / "tok")
    data_tok = load_tokenizer(cfg.text, demo_root)
    assert own.get_vocab() != data_tok.get_vocab()
    ckpt = save_checkpoint(tmp_path / "run" / "best", DAIM.from_config(cfg), cfg, tokenizer=own)
    index = build_index(
        ModelChoice("trained", ckpt, "demo"), load_split(cfg.data, demo_root, "test"), demo_root, n_images=2
    )
    assert index.tokenizer.get_vocab() == own.get_vocab()
    assert scoring_tokenizer(ckpt, cfg, demo_root).get_vocab() == own.get_vocab()
    assert scoring_tokenizer(None, cfg, demo_root).get_vocab() == data_tok.get_vocab()


@pytest.mark.slow  # two one-step runs: ~8 s
def test_a_resumed_run_keeps_the_vocabulary_it_was_trained_with(demo_root, tmp_path, caplog):
    import shutil

    out, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(demo_root, data)
    train(_cfg(**{"train.epochs": 2}), data, out, progress=False, eval_split=None)
    trained_with = load_checkpoint_tokenizer(out / "last").get_vocab()
    shutil.rmtree(data / "tokenizer")
    other = _permuted_tokenizer(demo_root, data / "tokenizer")  # the data folder's vocabulary changed since
    assert other.get_vocab() != trained_with
    res = train(
        _cfg(**{"train.epochs": 2, "train.max_steps": 2}),
        data,
        out,
        progress=False,
        eval_split=None,
        resume=True,
    )
    assert res.global_step == 2 and "continuing with the run's own" in caplog.text
    assert load_checkpoint_tokenizer(out / "last").get_vocab() == trained_with


def test_widget_arguments_out_of_range_are_refused_like_image_to_text(demo_root):
    from daimlib.course.widgets import ModelChoice, build_index, image_to_text, text_to_image, word_attention

    cfg = _cfg()
    index = build_index(
        ModelChoice("random", None, "demo"), load_split(cfg.data, demo_root, "test"), demo_root, n_images=3
    )
    for image in (-1, 3, 1.5):
        with pytest.raises(ValueError, match=r"image must be an index in 0..2"):
            image_to_text(index, image)
        with pytest.raises(ValueError, match=r"image must be an index in 0..2"):
            word_attention(index, "a red circle", image)
    for k in (-1, 0):
        with pytest.raises(ValueError, match="k must be a whole number of results, at least 1"):
            text_to_image(index, "a red circle", k=k)
        with pytest.raises(ValueError, match="k must be a whole number"):
            image_to_text(index, 0, k=k)
    assert len(text_to_image(index, "a red circle", k=10)) == 3 and len(
        word_attention(index, "a red circle", 2)[0]
    )


# --- .last.old backups: one warning -----------------------------------------------------------------


def test_the_backup_fallback_warns_once(demo_ckpt):
    os.replace(demo_ckpt, demo_ckpt.parent / ".last.old-0badc0de")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model, _, _ = load_checkpoint(demo_ckpt)
        load_model(demo_ckpt)
    mine = [w for w in caught if "a save was interrupted" in str(w.message)]
    assert len(mine) == 1 and isinstance(model, torch.nn.Module)
