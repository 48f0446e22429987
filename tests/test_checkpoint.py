"""Checkpoints: exact round trip, strict loading, truncation, pickle refusal, atomic writes."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch
from torch import nn

from daimlib import checkpoint as ck
from daimlib.checkpoint import CheckpointError, load_checkpoint, load_model, load_train_state, save_checkpoint
from daimlib.config import load_preset
from daimlib.losses import MatchingLoss

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Tiny(nn.Module):
    def __init__(self, names=("a", "b"), width=3):
        super().__init__()
        for n in names:
            self.add_module(n, nn.Linear(width, width))


def _train_state() -> dict:
    g = torch.Generator().manual_seed(1)
    return {
        "epoch": 3,
        "step": 42,
        "best_score": float("-inf"),
        "optimizer": {
            "state": {0: {"exp_avg": torch.randn(3, 3, generator=g)}},
            "param_groups": [{"lr": 1e-4}],
        },
        "rng": [{"torch": torch.get_rng_state(), "python": [1, 2, 3], "python_gauss": None}],
    }


def _assert_nested_equal(a, b):
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and torch.equal(a, b)
    elif isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _assert_nested_equal(a[k], b[k])
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b)
        for x, y in zip(a, b):
            _assert_nested_equal(x, y)
    else:
        assert a == b


@pytest.fixture(scope="module")
def demo_model():
    from daimlib.model import DAIM

    torch.manual_seed(0)
    cfg = load_preset("demo")
    return DAIM.from_config(cfg, pretrained=False), cfg


def test_daim_round_trip_restores_every_tensor_config_and_train_state(tmp_path, demo_model):
    model, cfg = demo_model
    loss = MatchingLoss.from_config(cfg.loss)
    loss.margin.fill_(0.3717)  # the MOM state (the loss's) must travel with the weights
    state = _train_state()
    save_checkpoint(tmp_path / "ck", model, cfg, train_state=state, meta={"epoch": 3}, loss=loss)
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == [
        "config.json",
        "meta.json",
        "model.safetensors",
        "train_state.pt",
    ]
    loaded, cfg2, state2 = load_checkpoint(tmp_path / "ck")
    assert cfg2 == cfg
    sd, sd2 = model.state_dict(), loaded.state_dict()
    assert sd.keys() == sd2.keys()
    for k in sd:
        assert torch.equal(sd[k], sd2[k]), k
    assert float(ck.load_loss(tmp_path / "ck").margin) == pytest.approx(0.3717)
    _assert_nested_equal(state, state2)
    assert json.loads((tmp_path / "ck" / "meta.json").read_text())["epoch"] == 3
    # and the loaded model computes the same function
    x = torch.randn(2, 3, cfg.image.img_size, cfg.image.img_size)
    model.eval()
    with torch.no_grad():
        a, b = model.encode_image(x), load_model(tmp_path / "ck").encode_image(x)
    for u, v in zip(a, b):
        assert torch.equal(u, v)


def test_strict_load_lists_missing_and_unexpected_keys(tmp_path):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "ck", Tiny(("a", "b")), cfg)
    target = Tiny(("a", "c"))
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck", model=target)
    msg = str(e.value)
    assert "missing keys" in msg and "c.weight" in msg and "c.bias" in msg
    assert "unexpected keys" in msg and "b.weight" in msg
    # non-strict loads the matching keys only
    src = Tiny(("a", "b"))
    save_checkpoint(tmp_path / "ck2", src, cfg)
    load_checkpoint(tmp_path / "ck2", model=target, strict=False)
    assert torch.equal(target.a.weight, src.a.weight)


def test_shape_mismatch_is_listed_even_when_not_strict(tmp_path):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "ck", Tiny(("a",), width=3), cfg)
    with pytest.raises(CheckpointError, match=r"a\.weight: checkpoint \(3, 3\) vs model \(4, 4\)"):
        load_checkpoint(tmp_path / "ck", model=Tiny(("a",), width=4), strict=False)


def test_strict_load_lists_every_model_config_mismatch_but_ignores_training_settings(tmp_path):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "ck", Tiny(), cfg)
    other = cfg.replace(**{"fdm.scale": 0.2, "similarity.lambda_softmax": 4.0})
    with pytest.raises(CheckpointError) as e:
        load_checkpoint(tmp_path / "ck", model=Tiny(), expect_cfg=other)
    msg = str(e.value)
    assert "fdm.scale: checkpoint 0.1 vs requested 0.2" in msg
    assert "similarity.lambda_softmax: checkpoint 9.0 vs requested 4.0" in msg
    # train.* and where the initial weights came from do not define the model
    same_model = cfg.replace(**{"train.lr": 1.0, "train.epochs": 99, "text.weights": "elsewhere"})
    load_checkpoint(tmp_path / "ck", model=Tiny(), expect_cfg=same_model)
    load_checkpoint(tmp_path / "ck", model=Tiny(), expect_cfg=other, strict=False)


@pytest.mark.parametrize("name", ["model.safetensors", "train_state.pt"])
def test_truncated_file_gives_an_error_naming_it(tmp_path, name):
    save_checkpoint(tmp_path / "ck", Tiny(), load_preset("demo"), train_state=_train_state())
    path = tmp_path / "ck" / name
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=rf"{name}.*truncated"):
        load_checkpoint(tmp_path / "ck", model=Tiny())
    # deleting its record in meta.json does not switch the check off (issue 28): an unlisted file is refused
    meta_path = tmp_path / "ck" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["files"][name]
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(
        CheckpointError, match=rf"(weight files that meta.json does not list: {name}|{name} is not listed)"
    ):
        load_checkpoint(tmp_path / "ck", model=Tiny())


def test_corrupted_byte_is_detected_by_the_recorded_hash(tmp_path):
    save_checkpoint(tmp_path / "ck", Tiny(), load_preset("demo"))
    path = tmp_path / "ck" / "model.safetensors"
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # same size, one weight byte flipped
    path.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="model.safetensors is corrupted"):
        load_checkpoint(tmp_path / "ck", model=Tiny())


class _Payload:
    """Unpickling this calls open(path, "w"), creating a marker file: code execution."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def test_pickle_that_would_run_code_is_refused_without_running_it(tmp_path):
    save_checkpoint(tmp_path / "ck", Tiny(), load_preset("demo"), train_state=_train_state())
    marker = tmp_path / "pwned"
    evil = tmp_path / "ck" / "train_state.pt"
    torch.save({"epoch": 1, "payload": _Payload(marker)}, evil)
    meta_path = (
        tmp_path / "ck" / "meta.json"
    )  # a consistent (malicious) meta.json, so only the pickle is at stake
    meta = json.loads(meta_path.read_text())
    meta["files"]["train_state.pt"] = {"bytes": evil.stat().st_size, "sha256": ck.sha256_file(evil)}
    meta_path.write_text(json.dumps(meta))

    with pytest.raises(CheckpointError, match="refused to load .*train_state.pt"):
        load_checkpoint(tmp_path / "ck", model=Tiny())
    with pytest.raises(CheckpointError, match="refused"):
        load_train_state(tmp_path / "ck")
    assert not marker.exists()
    # the payload is real: an unrestricted unpickler runs it
    torch.load(evil, weights_only=False)
    assert marker.exists()


def test_crash_while_saving_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    cfg = load_preset("demo")
    first = Tiny()
    save_checkpoint(tmp_path / "last", first, cfg, train_state={"step": 1})

    def broken_save(tensors, path, metadata=None):
        with open(path, "wb") as f:
            f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(ck, "save_file", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(tmp_path / "last", Tiny(), cfg, train_state={"step": 2})
    monkeypatch.undo()
    model, _, state = load_checkpoint(tmp_path / "last", model=Tiny())
    assert state == {"step": 1}
    assert torch.equal(model.a.weight, first.a.weight)
    assert sorted(os.listdir(tmp_path)) == ["last"]  # no temporary folders left behind


def test_save_replaces_an_existing_checkpoint_and_a_half_renamed_one_is_recovered(tmp_path):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "last", Tiny(), cfg, train_state={"step": 1})
    second = Tiny()
    save_checkpoint(tmp_path / "last", second, cfg, train_state={"step": 2})
    assert load_train_state(tmp_path / "last") == {"step": 2}
    assert sorted(os.listdir(tmp_path)) == ["last"]
    # a crash between the two renames leaves only the previous folder, under .last.old-*
    os.replace(tmp_path / "last", tmp_path / ".last.old-1234")
    with pytest.warns(UserWarning, match="a save was interrupted"):
        model, _, state = load_checkpoint(tmp_path / "last", model=Tiny())
    assert state == {"step": 2} and torch.equal(model.a.weight, second.a.weight)


def test_missing_folder_error_says_what_was_expected(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint folder at .*model.safetensors"):
        load_checkpoint(tmp_path / "nope")


# --- integrity (issue 13) ------------------------------------------------------------------------


def test_a_swapped_config_json_is_detected_by_its_recorded_hash(tmp_path):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "a", Tiny(), cfg)
    save_checkpoint(tmp_path / "b", Tiny(), cfg.replace(**{"fdm.scale": 0.3}))
    (tmp_path / "a" / "config.json").write_bytes((tmp_path / "b" / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match=r"config\.json is (corrupted|truncated).*restore the original"):
        load_checkpoint(tmp_path / "a", model=Tiny())
    with pytest.raises(CheckpointError, match=r"config\.json"):
        ck.load_config(tmp_path / "a")
    # an edit of the same size is caught by the hash, not only by the size
    text = (tmp_path / "b" / "config.json").read_text()
    (tmp_path / "b" / "config.json").write_text(text.replace('"scale": 0.3', '"scale": 0.4'))
    with pytest.raises(CheckpointError, match=r"config\.json is corrupted"):
        ck.load_config(tmp_path / "b")
    assert ck.load_config(tmp_path / "b", verify=False).fdm.scale == 0.4


def test_a_damaged_train_state_does_not_stop_evaluating_intact_weights(tmp_path, demo_model):
    model, cfg = demo_model
    save_checkpoint(tmp_path / "last", model, cfg, train_state=_train_state())
    path = tmp_path / "last" / "train_state.pt"
    path.write_bytes(path.read_bytes()[:100])
    loaded = load_model(tmp_path / "last")  # weights + config + meta only
    for k, v in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v), k
    with pytest.raises(CheckpointError, match="train_state.pt.*truncated"):  # resuming still needs it
        load_checkpoint(tmp_path / "last")


def test_stale_temporary_folders_of_a_killed_save_are_removed_and_nothing_else(tmp_path):
    cfg = load_preset("demo")
    stale = tmp_path / ".last.tmp-ab12cd_3"  # what tempfile.mkdtemp names them
    stale.mkdir()
    (stale / "model.safetensors").write_bytes(b"partial")
    keep = [
        tmp_path / ".best.tmp-ab12cd34",
        tmp_path / ".last.tmp-mine",
        tmp_path / "last.tmp-ab12cd34",
        tmp_path / ".last.old-1234abcd",
    ]
    for p in keep:
        p.mkdir()
    (tmp_path / ".last.tmp-ab12cd99").write_text("a file, not a folder")
    save_checkpoint(tmp_path / "last", Tiny(), cfg)
    assert not stale.exists()
    assert all(p.exists() for p in keep) and (tmp_path / ".last.tmp-ab12cd99").is_file()


def test_files_are_written_with_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        save_checkpoint(tmp_path / "ck", Tiny(), load_preset("demo"), train_state={"step": 1})
    finally:
        os.umask(old)
    assert (tmp_path / "ck").stat().st_mode & 0o777 == 0o755
    for f in (tmp_path / "ck").iterdir():
        assert f.stat().st_mode & 0o777 == 0o644, f.name


@pytest.fixture(scope="module")
def small_tokenizer(tmp_path_factory):
    from daimlib.data.tokenizer import build_wordpiece_tokenizer

    captions = ["a red circle left of a blue square", "two green triangles", "a small yellow star"] * 5
    return build_wordpiece_tokenizer(captions, tmp_path_factory.mktemp("tok"), vocab_size=64)


def test_a_checkpoint_carries_its_tokenizer_and_old_folders_still_load(tmp_path, small_tokenizer):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "ck", Tiny(), cfg, tokenizer=small_tokenizer)
    assert ck.has_tokenizer(tmp_path / "ck")
    meta = ck.read_meta(tmp_path / "ck")
    saved = sorted(n for n in meta["files"] if n.startswith("tokenizer/"))
    assert saved and all((tmp_path / "ck" / n).is_file() for n in saved)
    tok = ck.load_checkpoint_tokenizer(tmp_path / "ck")
    text = "a red circle left of two green triangles"
    assert tok(text)["input_ids"] == small_tokenizer(text)["input_ids"]
    assert tok.get_vocab() == small_tokenizer.get_vocab()
    # a tokenizer file changed after saving is detected
    (tmp_path / "ck" / saved[0]).write_text("x")
    with pytest.raises(CheckpointError, match="tokenizer/"):
        ck.load_checkpoint_tokenizer(tmp_path / "ck")
    # a model that holds its tokenizer (DAIM.from_pretrained sets one) saves it without being told
    holder = Tiny()
    holder.tokenizer = small_tokenizer
    save_checkpoint(tmp_path / "held", holder, cfg)
    assert ck.load_checkpoint_tokenizer(tmp_path / "held").get_vocab() == small_tokenizer.get_vocab()
    # a folder written without a tokenizer loads as before, and says it has none
    save_checkpoint(tmp_path / "old", Tiny(), cfg)
    assert not ck.has_tokenizer(tmp_path / "old") and ck.load_checkpoint_tokenizer(tmp_path / "old") is None
    load_checkpoint(tmp_path / "old", model=Tiny())


def test_a_reference_ckpt_with_a_code_running_global_is_refused_without_running_it(tmp_path):
    """The malicious-pickle refusal, on the import path of the authors' checkpoints (issue 8 item 1)."""
    from daimlib import reference

    marker = tmp_path / "pwned"
    evil = tmp_path / "epoch=7-step=19999.ckpt"
    tensors = {"vit_model.patch_embed.proj.weight": torch.zeros(8, 3, 4, 4)}
    torch.save({"epoch": 8, "state_dict": tensors, "callbacks": {"x": _Payload(marker)}}, evil)
    names = reference.list_globals(evil)  # names the global without loading anything
    bad = [n for n in names if n.endswith(".open")]
    assert bad and not marker.exists()
    with pytest.raises(CheckpointError, match=rf"refused to load .*{bad[0]}"):
        reference.import_reference(evil, out=tmp_path / "out")
    with pytest.raises(CheckpointError, match="refused"):
        reference.load_reference_file(evil)
    assert not marker.exists() and not (tmp_path / "out").exists()
    legacy = tmp_path / "legacy.pt"  # torch's pre-1.6 format, one pickle stream: refused by name too
    torch.save({"state_dict": tensors, "x": _Payload(marker)}, legacy, _use_new_zipfile_serialization=False)
    with pytest.raises(CheckpointError, match=rf"refused to load .*names the global {bad[0]}"):
        reference.import_reference(legacy, out=tmp_path / "out")
    assert not marker.exists()
    torch.load(evil, weights_only=False)  # the payload is real
    assert marker.exists()


@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_full_or_read_only_disk_is_a_clear_error_and_keeps_the_previous_checkpoint(
    tmp_path, monkeypatch, code
):
    cfg = load_preset("demo")
    save_checkpoint(tmp_path / "last", Tiny(), cfg, train_state={"step": 1})

    def full_disk(tensors, path, metadata=None):
        raise OSError(code, os.strerror(code), path)

    monkeypatch.setattr(ck, "save_file", full_disk)
    with pytest.raises(
        CheckpointError, match=r"cannot write the checkpoint .*last.*previous checkpoint there is kept"
    ):
        save_checkpoint(tmp_path / "last", Tiny(), cfg, train_state={"step": 2})
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "last", model=Tiny())[2] == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last"]  # no temporary folder left behind


def test_the_cli_turns_a_disk_error_into_exit_2_naming_the_folder(tmp_path, monkeypatch, capsys):
    from daimlib import __main__ as cli

    def read_only(args):
        raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(tmp_path / "out"))

    monkeypatch.setitem(cli.COMMANDS, "presets", read_only)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["presets"]) == 2
    err = capsys.readouterr().err
    assert "cannot write" in err and os.strerror(errno.EROFS) in err and "Traceback" not in err
    assert str(tmp_path) not in err  # shown relative, never as a machine path
