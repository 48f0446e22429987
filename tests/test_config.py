"""Presets carry the reference code's constants, and configs survive a JSON round trip."""

import pytest

from daimlib.config import PRESETS, DAIMConfig, load_preset, parse_overrides


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_json(name, tmp_path):
    cfg = load_preset(name)
    path = tmp_path / "config.json"
    cfg.to_json(path)
    assert DAIMConfig.from_json(path) == cfg
    assert DAIMConfig.from_json(cfg.to_json()).diff(cfg) == {}


def test_daim_preset_holds_the_reference_constants():
    cfg = load_preset("daim_f30k")
    assert cfg.image.name == "swin_base_patch4_window7_224.ms_in22k"
    assert cfg.image.stages == (1, 2, 3) and cfg.text.hidden_states == (4, 10, 12)
    assert cfg.similarity.direction == "t2i" and cfg.similarity.lambda_softmax == 9.0
    assert cfg.similarity.level_weights == (1.0, 1.0, 1.0) and cfg.similarity.embed_dim == 768
    assert cfg.fdm.image_blocks and cfg.fdm.image_stage_out and cfg.fdm.text_layers == ()
    assert cfg.fdm.scale == 0.1
    assert cfg.loss.adaptive and cfg.loss.margin == 0.2 and cfg.loss.alpha == 0.3 and cfg.loss.ema == 0.1
    assert round(cfg.loss.activation_fraction * 58) == 45 and cfg.loss.hardest and cfg.loss.reduction == "sum"
    assert cfg.loss.warmup_steps == 0
    assert (cfg.train.optimizer, cfg.train.lr, cfg.train.lr_step, cfg.train.lr_gamma) == (
        "adam",
        1e-4,
        10,
        0.1,
    )
    assert cfg.train.freeze_epochs == 11 and cfg.train.batch_size == 58 and cfg.text.max_len == 32


def test_hat_preset_differs_from_daim_only_in_fdm_margin_and_direction():
    diff = load_preset("hat_coco").diff(load_preset("daim_coco"))
    assert set(diff) == {
        "name",
        "fdm.image_blocks",
        "fdm.image_stage_out",
        "loss.adaptive",
        "similarity.direction",
    }
    assert diff["similarity.direction"] == ("i2t", "t2i")


def test_overrides_from_the_command_line_are_coerced_to_field_types():
    cfg = load_preset(
        "demo",
        **parse_overrides(
            [
                "train.lr=1e-3",
                "loss.adaptive=false",
                "train.max_steps=5",
                "similarity.level_weights=[0, 0, 1]",
            ]
        ),
    )
    assert cfg.train.lr == 1e-3 and cfg.loss.adaptive is False and cfg.train.max_steps == 5
    assert cfg.similarity.level_weights == (0, 0, 1)


def test_unknown_keys_and_presets_raise_with_the_known_ones():
    with pytest.raises(ValueError, match="presets are"):
        load_preset("daim_imagenet")
    with pytest.raises(ValueError, match="keys here are"):
        load_preset("demo", **{"train.learning_rate": 1})
    with pytest.raises(ValueError, match="unknown keys"):
        DAIMConfig.from_dict({"train": {"lr": 1.0, "bogus": 2}})
    with pytest.raises(ValueError, match="key=value"):
        parse_overrides(["train.lr"])
