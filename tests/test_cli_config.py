"""The command line's config options: --set checked when parsed, --config FILE.json, per-stream weight
flags, and the presets listing (issue 11 item 8, issue 14 item 5)."""

import json

import pytest

from daimlib.__main__ import build_parser, config_from_args, config_overrides, main
from daimlib.config import PRESET_NOTES, PRESETS, DAIMConfig, load_preset


def _train_args(*extra):
    return build_parser().parse_args(["train", "--data-root", "d", "--out", "o", *extra])


def test_presets_lists_every_preset_on_one_line(capsys):
    assert main(["presets"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [ln.split()[0] for ln in lines] == list(PRESETS)
    for ln, name in zip(lines, PRESETS):
        assert ln.split(None, 1)[1] == PRESET_NOTES[name][0]


def test_presets_name_prints_notes_and_a_config_that_config_reads(capsys, tmp_path):
    assert main(["presets", "tiny"]) == 0
    out = capsys.readouterr().out
    notes, cfg_json = out[: out.index("{")], out[out.index("{") :]
    assert "training captions" in notes and DAIMConfig.from_json(cfg_json) == load_preset("tiny")
    assert main(["presets", "nope"]) == 2
    assert "unknown preset 'nope'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "item,message",
    [
        ("train.batch_size=1", "train.batch_size must be >= 2"),
        ("loss.margin=NaN", "loss.margin: NaN is not allowed"),
        ("loss.adaptive=maybe", "expected a boolean"),
        ("train.epochs=2.5", "expected an integer"),
        ("similarity.direction=up", "must be one of t2i|i2t|both"),
    ],
)
def test_bad_set_values_exit_2_when_parsed_before_any_file_is_read(item, message, capsys):
    argv = ["train", "--preset", "demo", "--data-root", "no/such/folder", "--out", "o", "--set", item]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "argument --set" in err and message in err and "Traceback" not in err and "no/such" not in err


def test_weight_flags_change_only_their_own_stream():
    base = load_preset("daim_f30k")
    img = config_from_args(_train_args("--preset", "daim_f30k", "--image-weights", "swin.safetensors"))
    assert base.diff(img) == {
        "image.weights": (None, "swin.safetensors"),
        "image.init": ("auto", "pretrained"),
    }
    txt = config_from_args(_train_args("--preset", "daim_f30k", "--text-weights", "bert_dir"))
    assert base.diff(txt) == {"text.weights": (None, "bert_dir"), "text.init": ("auto", "pretrained")}
    rnd = config_from_args(_train_args("--preset", "daim_f30k", "--random-init", "both"))
    assert base.diff(rnd) == {"image.init": ("auto", "random"), "text.init": ("auto", "random")}
    one = config_from_args(
        _train_args("--preset", "daim_f30k", "--random-init", "image", "--text-weights", "b")
    )
    assert (one.image.init, one.image.weights, one.text.init, one.text.weights) == (
        "random",
        None,
        "pretrained",
        "b",
    )


def test_config_file_alone_or_on_a_preset_then_set_on_top(tmp_path, capsys):
    full = tmp_path / "full.json"
    load_preset("tiny", **{"train.lr": 1e-3}).to_json(full)
    assert config_from_args(_train_args("--config", str(full))) == load_preset("tiny", **{"train.lr": 1e-3})
    part = tmp_path / "part.json"
    part.write_text(json.dumps({"train": {"lr": 0.002, "batch_size": 16}, "loss": {"margin": 0.3}}))
    cfg = config_from_args(
        _train_args("--preset", "demo", "--config", str(part), "--set", "train.batch_size=8")
    )
    assert load_preset("demo").diff(cfg) == {
        "train.lr": (5e-4, 0.002),
        "train.batch_size": (64, 8),
        "loss.margin": (0.2, 0.3),
    }
    part.write_text(json.dumps({"train": {"batch_size": 1}}))
    with pytest.raises(ValueError, match=r"train\.batch_size must be >= 2"):
        config_overrides(_train_args("--preset", "demo", "--config", str(part)))
    assert main(["train", "--data-root", "d", "--out", "o", "-q"]) == 2
    assert "train needs --preset NAME or --config FILE.json" in capsys.readouterr().err
    assert (
        main(["train", "--config", str(tmp_path / "none.json"), "--data-root", "d", "--out", "o", "-q"]) == 2
    )
    assert "config file not found" in capsys.readouterr().err


@pytest.mark.parametrize(
    "device,message",
    [
        ("gpu", "unknown device 'gpu'"),
        ("tpu", "unknown device 'tpu'"),
        ("cuda:x", "unknown device 'cuda:x'"),
        ("xla", "the kit runs on cpu, cuda or mps, not xla"),
    ],
)
def test_unknown_devices_exit_2_when_parsed(device, message, capsys):
    assert main(["train", "--preset", "demo", "--data-root", "d", "--out", "o", "--device", device]) == 2
    err = capsys.readouterr().err
    assert "argument --device" in err and message in err


def test_cuda_without_a_gpu_and_a_missing_gpu_index_are_refused(monkeypatch, capsys):
    import torch

    from daimlib.__main__ import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="asks for CUDA but this machine shows no GPU"):
        check_device("cuda")
    assert (
        main(
            ["evaluate", "--checkpoint", "c", "--data-root", "d", "--protocol", "demo", "--device", "cuda:0"]
        )
        == 2
    )
    assert "shows no GPU" in capsys.readouterr().err
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == "cuda:1" and check_device("cpu") == "cpu"
    with pytest.raises(ValueError, match=r"only 2 GPU\(s\) are visible \(cuda:0\.\.cuda:1\)"):
        check_device("cuda:2")
