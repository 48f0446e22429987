"""A config is validated when it is built: types, enumerations, ranges, fields that must agree; notes
are preset data (``python -OO`` works, editing them changes no config)."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from daimlib import config as config_mod
from daimlib.config import PRESETS, DAIMConfig, load_preset, parse_override, parse_overrides, preset_notes
from daimlib.config_rules import CHOICES, ConfigError

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "item,match",
    [
        ("train.batch_size=1", r"train\.batch_size must be >= 2 .*negative.*found 1"),
        ("train.batch_size=0", r"train\.batch_size must be >= 2"),
        ("train.eval_every=0", r"train\.eval_every must be >= 1"),
        ("train.epochs=3.5", r"train\.epochs: expected an integer, found float 3\.5"),
        ("train.epochs=true", r"train\.epochs: expected an integer"),
        ("train.lr=-1e-4", r"train\.lr must be > 0"),
        ("train.lr=Infinity", r"train\.lr: Infinity is not allowed"),
        ("loss.margin=NaN", r"loss\.margin: NaN is not allowed"),
        ("loss.margin=nan", r"loss\.margin: nan is not allowed"),
        ("loss.margin=-inf", r"loss\.margin: -inf is not allowed"),
        ("loss.ema=1.5", r"loss\.ema must be >= 0 and <= 1"),
        ("loss.adaptive=maybe", r"loss\.adaptive: expected a boolean"),
        ("train.optimizer=sgd", r"train\.optimizer must be one of adam\|adamw; found 'sgd'"),
        ("similarity.direction=t2t", r"similarity\.direction must be one of t2i\|i2t\|both"),
        ("train.amp=fp8", r"train\.amp must be one of auto\|bf16\|fp16\|off"),
        ("data.layout=imagenet", r"data\.layout must be one of none\|demo\|f30k"),
        ("image.init=hub", r"image\.init must be one of auto\|pretrained\|random"),
        ("train.seed=-1", r"train\.seed must be >= 0"),
        ("data.crop_scale=[0.5]", r"data\.crop_scale: expected a list of 2 values"),
        ("similarity.level_weights=1", r"similarity\.level_weights: expected a list"),
        ("train.nope=1", r"unknown config key 'train\.nope'; keys here are \[.*'batch_size'"),
        ("training.lr=1", r"unknown config section 'training'"),
        ("lr", r"key=value"),
    ],
)
def test_bad_overrides_are_refused_when_parsed_naming_the_key(item, match):
    with pytest.raises(ConfigError, match=match):
        parse_override(item)


@pytest.mark.parametrize(
    "overrides,match",
    [
        ({"text.max_len": 65}, r"text\.max_len \(65\) exceeds the text encoder's 64 positions"),
        ({"image.img_size": 32}, r"image\.img_size is 32 but data\.img_size is 64.*set both"),
        ({"data.resize": 32}, r"data\.resize \(32\) must be >= data\.img_size \(64\)"),
        ({"data.crop_scale": [0.9, 0.5]}, r"data\.crop_scale must satisfy 0 < low <= high <= 1"),
        ({"text.hidden_states": [1, 2, 4]}, r"text\.hidden_states must index 0\.\.3"),
        ({"image.stages": [1, 2, 4]}, r"image\.stages must be increasing 0-based stage indices in 0\.\.3"),
        ({"image.stages": [2, 1, 3]}, r"image\.stages must be increasing"),
        (
            {"similarity.level_weights": [1, 1]},
            r"image\.stages has 3, text\.hidden_states 3, similarity\.level_weights 2",
        ),
        ({"similarity.level_weights": [0, 0, 0]}, r"not all 0"),
        ({"fdm.text_layers": [4]}, r"fdm\.text_layers are 1-based BERT layers in 1\.\.3"),
        (
            {
                "text.model_kwargs": {
                    "vocab_size": 512,
                    "hidden_size": 100,
                    "num_hidden_layers": 3,
                    "num_attention_heads": 3,
                    "max_position_embeddings": 64,
                }
            },
            r"hidden_size 100 is not divisible by num_attention_heads 3",
        ),
        (
            {
                "image.timm_kwargs": {
                    "embed_dim": 32,
                    "depths": [1, 1, 2, 1],
                    "num_heads": [1, 2, 3, 8],
                    "window_size": 4,
                    "patch_size": 8,
                }
            },
            r"stage 2 has width 128, not divisible",
        ),
    ],
)
def test_rules_between_fields_fail_when_the_config_is_built(overrides, match, monkeypatch):
    import timm

    def no_model(*a, **kw):  # the error must come from the config, before any backbone is built
        raise AssertionError("a backbone was built while checking a config")

    monkeypatch.setattr(timm, "create_model", no_model)
    with pytest.raises(ConfigError, match=match):
        load_preset("demo", **overrides)


def test_paper_preset_limits_come_from_bert_base_without_the_hub():
    with pytest.raises(ConfigError, match=r"text\.max_len \(600\) exceeds the text encoder's 512 positions"):
        load_preset("daim_f30k", **{"text.max_len": 600})
    with pytest.raises(ConfigError, match=r"text\.hidden_states must index 0\.\.12"):
        load_preset("daim_f30k", **{"text.hidden_states": [4, 10, 13]})
    assert load_preset("daim_f30k", **{"text.max_len": 512}).text.max_len == 512


@pytest.mark.parametrize(
    "word,value",
    [
        ("true", True),
        ("True", True),
        ("yes", True),
        ("on", True),
        ("1", True),
        ("y", True),
        ("false", False),
        ("FALSE", False),
        ("no", False),
        ("off", False),
        ("0", False),
        ("n", False),
    ],
)
def test_booleans_in_every_common_spelling(word, value):
    assert parse_override(f"loss.adaptive={word}") == ("loss.adaptive", value)


def test_values_are_parsed_to_their_field_types():
    got = parse_overrides(
        [
            "train.max_steps=1e3",
            "train.epochs=3",
            "train.lr=1e-3",
            "loss.margin=1",
            "train.max_minutes=none",
            "similarity.level_weights=[0, 0, 1]",
            "text.weights=some/folder",
            "data.layout=f30k",
            "data.image_dir=null",
        ]
    )
    assert got == {
        "train.max_steps": 1000,
        "train.epochs": 3,
        "train.lr": 1e-3,
        "loss.margin": 1.0,
        "train.max_minutes": None,
        "similarity.level_weights": (0.0, 0.0, 1.0),
        "text.weights": "some/folder",
        "data.layout": "f30k",
        "data.image_dir": None,
    }
    assert type(got["train.max_steps"]) is int and type(got["loss.margin"]) is float
    cfg = load_preset("demo", **got)
    assert cfg.train.max_steps == 1000 and cfg.similarity.level_weights == (0.0, 0.0, 1.0)


def test_non_finite_numbers_are_refused_in_json_and_python_too(tmp_path):
    text = load_preset("demo").to_json().replace('"margin": 0.2', '"margin": NaN')
    assert "NaN" in text
    with pytest.raises(ConfigError, match="NaN is not allowed"):
        DAIMConfig.from_json(text)
    d = load_preset("demo").to_dict()
    d["train"]["lr"] = float("inf")
    with pytest.raises(ConfigError, match=r"train\.lr: inf is not allowed"):
        DAIMConfig.from_dict(d)
    d = load_preset("demo").to_dict()
    d["data"]["num_workers"] = "4"  # a string where JSON should hold a number: parsed like the command line
    assert DAIMConfig.from_dict(d).data.num_workers == 4
    d["data"]["num_workers"] = [4]
    with pytest.raises(ConfigError, match=r"data\.num_workers: expected an integer, found list"):
        DAIMConfig.from_dict(d)
    with pytest.raises(ConfigError, match=r"loss\.margin: nan is not allowed"):
        load_preset("demo").replace(**{"loss.margin": float("nan")})


def test_every_choice_is_accepted_and_the_choices_match_the_code_that_reads_them():
    from daimlib.data import LAYOUTS
    from daimlib.losses import NEG_STATS

    assert CHOICES["loss.neg_stat"] == NEG_STATS
    assert set(CHOICES["data.layout"]) == {None, *LAYOUTS}
    for key, options in CHOICES.items():
        for option in options:
            if key == "data.dataset" or (key == "text.init" and option == "pretrained"):
                continue
            extra = (
                {"train.freeze_epochs": 1} if key == "train.feature_cache" else {}
            )  # a cache needs frozen epochs
            load_preset("demo", **{key: option}, **extra)


def test_old_config_files_with_notes_still_load_and_notes_are_not_config():
    d = load_preset("demo").to_dict()
    assert "notes" not in d
    assert DAIMConfig.from_dict({**d, "notes": "written by an older kit"}) == load_preset("demo")


def test_editing_notes_changes_no_config(monkeypatch):
    before = load_preset("demo").to_json()
    monkeypatch.setitem(config_mod.PRESET_NOTES, "demo", ("edited", "entirely new notes"))
    assert preset_notes("demo").startswith("edited.")
    assert load_preset("demo").to_json() == before


def test_every_preset_has_notes_and_works_under_python_OO():
    assert set(config_mod.PRESET_NOTES) == set(PRESETS)
    code = (
        "from daimlib.config import PRESETS, load_preset, preset_notes\n"
        "for n in PRESETS: load_preset(n); assert preset_notes(n)\n"
        "print(preset_notes('demo').splitlines()[1])\n"
    )
    out = subprocess.run(
        [sys.executable, "-OO", "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert out.stdout.startswith("Deviations from the paper presets")


def test_a_bad_config_fails_before_any_model_library_is_imported():
    code = (
        "import sys\nfrom daimlib.config import load_preset\n"
        "try:\n    load_preset('daim_f30k', **{'image.img_size': 256})\nexcept ValueError as e:\n    print(e)\n"
        "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert "image.img_size is 256 but data.img_size is 224" in out.stdout and out.stdout.endswith("[]\n")


def test_config_file_round_trip_and_errors(tmp_path):
    path = tmp_path / "c.json"
    load_preset("tiny", **{"train.lr": 1e-3}).to_json(path)
    assert DAIMConfig.from_json(path) == load_preset("tiny", **{"train.lr": 1e-3})
    with pytest.raises(FileNotFoundError, match="config file not found"):
        DAIMConfig.from_json(tmp_path / "missing.json")
    path.write_text("{broken")
    with pytest.raises(ConfigError, match=r"c\.json is not valid JSON"):
        DAIMConfig.from_json(path)
    path.write_text(json.dumps({"train": {"batch_size": 1}}))
    with pytest.raises(ConfigError, match=r"train\.batch_size must be >= 2"):
        DAIMConfig.from_json(path)
