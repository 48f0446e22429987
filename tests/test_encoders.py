"""Image and text streams (spec section 1): levels, hidden-state indices, local weights, offline errors."""

import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from daimlib.config import FDMConfig
from daimlib.encoders import ImageEncoder, TextEncoder


def test_demo_image_levels_have_stage_token_counts_and_dims(tiny_cfg):
    enc = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    levels = enc(torch.randn(2, 3, 64, 64))
    assert [tuple(x.shape) for x in levels] == [(2, 16, 64), (2, 4, 128), (2, 1, 256)]
    assert enc.out_dims == [64, 128, 256] and enc.num_tokens() == [16, 4, 1]
    assert enc.num_tokens(128) == [64, 16, 4]


@pytest.mark.parametrize("blocks", [False, True])
def test_levels_from_forward_intermediates_equal_running_the_stages_by_hand(tiny_cfg, blocks):
    """The encoder reads timm's forward_intermediates; by hand = patch_embed, then each stage (with the
    ContraNorm patch inside its blocks when attached), then ContraNorm and the LayerNorm per used stage."""
    fdm = FDMConfig(image_blocks=blocks, image_stage_out=True)
    enc = ImageEncoder(tiny_cfg.image, fdm).eval()
    bb = enc.backbone
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        levels = enc(x)
        h, want = bb.patch_embed(x), []  # NHWC
        for i, layer in enumerate(bb.layers):
            h = layer(h)
            if i in (1, 2, 3):
                tok = enc.stage_contranorm(h.reshape(2, -1, h.shape[-1]))
                want.append(bb.norm(tok) if i == 3 else enc.stage_norms[str(i)](tok))
    assert [tuple(t.shape) for t in levels] == [(2, 16, 64), (2, 4, 128), (2, 1, 256)]
    for got, ref in zip(levels, want):
        torch.testing.assert_close(got, ref, atol=1e-6, rtol=1e-6)


def test_stage_output_contranorm_runs_only_for_used_stages(tiny_cfg):
    enc = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    seen = []
    enc.stage_contranorm.register_forward_hook(lambda m, i, o: seen.append(o.shape[1]))
    enc(torch.randn(1, 3, 64, 64))
    assert seen == [16, 4, 1]  # stage 0 (64 tokens) gets no stage-output ContraNorm
    assert "0" not in enc.stage_norms


def test_fdm_off_leaves_blocks_plain(tiny_cfg):
    enc = ImageEncoder(tiny_cfg.image, FDMConfig(image_blocks=False, image_stage_out=False))
    assert not any(hasattr(m, "contranorm") for m in enc.backbone.modules())
    assert enc.stage_contranorm is None
    enc_on = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    assert sum(hasattr(m, "contranorm") for m in enc_on.backbone.modules()) == 5  # depths 1+1+2+1


def test_hidden_state_index_k_is_the_output_of_layer_k(tiny_cfg):
    enc = TextEncoder(tiny_cfg.text, tiny_cfg.fdm).eval()
    outs = {}
    for k, layer in enumerate(enc.bert.encoder.layer, start=1):
        layer.register_forward_hook(
            lambda m, i, o, k=k: outs.__setitem__(k, o[0] if isinstance(o, tuple) else o)
        )
    emb = {}
    enc.bert.embeddings.register_forward_hook(lambda m, i, o: emb.__setitem__(0, o))
    ids = torch.randint(0, 512, (3, 9))
    mask = torch.ones(3, 9, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        levels, lengths = enc(ids, mask)
    assert lengths.tolist() == [9, 5, 9]
    for lvl, k in zip(levels, tiny_cfg.text.hidden_states):
        torch.testing.assert_close(lvl, outs[k])
    # index 0 would be the embeddings (so the reference's 1-based layers 4/10/12 are hidden_states[4, 10, 12])
    enc0 = TextEncoder(
        tiny_cfg.text.__class__(**{**tiny_cfg.text.__dict__, "hidden_states": (0, 1, 3)}), tiny_cfg.fdm
    )
    enc0.load_state_dict(enc.state_dict())
    enc0.eval()
    with torch.no_grad():
        lv0, _ = enc0(ids, mask)
    torch.testing.assert_close(lv0[0], emb[0])
    torch.testing.assert_close(lv0[2], outs[3])


def test_text_contranorm_changes_only_layers_from_the_chosen_one(tiny_cfg):
    plain = TextEncoder(tiny_cfg.text, tiny_cfg.fdm).eval()
    fdm = TextEncoder(tiny_cfg.text, FDMConfig(text_layers=(2,))).eval()
    fdm.load_state_dict(plain.state_dict())
    ids = torch.randint(0, 512, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[0, 4:] = 0
    with torch.no_grad():
        a, _ = plain(ids, mask)
        b, _ = fdm(ids, mask)
    torch.testing.assert_close(a[0], b[0])  # hidden_states[1]: before layer 2
    assert (a[1] - b[1]).abs().max() > 1e-3  # hidden_states[2]: ContraNorm output of layer 2


def test_image_weights_in_a_local_folder_load_through_the_pretrained_path(tiny_cfg, tmp_path):
    src = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    state = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    save_file(state, str(tmp_path / "model.safetensors"))
    cfg = tiny_cfg.image.__class__(**{**tiny_cfg.image.__dict__, "weights": str(tmp_path)})
    got = ImageEncoder(cfg, tiny_cfg.fdm, pretrained=True)
    for k, v in src.backbone.state_dict().items():
        assert torch.equal(got.backbone.state_dict()[k], v), k
    fresh = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)  # random init differs
    assert not torch.equal(fresh.backbone.patch_embed.proj.weight, src.backbone.patch_embed.proj.weight)
    torch.save(state, tmp_path / "w.pth")  # a .pth file path works too (weights_only load)
    cfg2 = tiny_cfg.image.__class__(**{**tiny_cfg.image.__dict__, "weights": str(tmp_path / "w.pth")})
    got2 = ImageEncoder(cfg2, tiny_cfg.fdm, pretrained=True)
    assert torch.equal(got2.backbone.patch_embed.proj.weight, src.backbone.patch_embed.proj.weight)


def test_text_weights_in_a_local_folder_load_through_from_pretrained(tiny_cfg, tmp_path):
    src = TextEncoder(tiny_cfg.text, tiny_cfg.fdm).eval()
    src.bert.save_pretrained(tmp_path)
    cfg = tiny_cfg.text.__class__(**{**tiny_cfg.text.__dict__, "weights": str(tmp_path)})
    got = TextEncoder(cfg, tiny_cfg.fdm, pretrained=True).eval()
    ids = torch.randint(0, 512, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    with torch.no_grad():
        for a, b in zip(src(ids, mask)[0], got(ids, mask)[0]):
            torch.testing.assert_close(a, b)
    assert got.bert.pooler is None


def test_missing_hub_model_offline_fails_fast_naming_id_and_field(tiny_cfg, monkeypatch, tmp_path):
    import huggingface_hub.constants as hc

    import daimlib.encoders as encoders

    monkeypatch.setattr(encoders, "hub_reachable", lambda timeout=3.0: False)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))  # an empty cache
    t0 = time.time()
    hub_image = tiny_cfg.image.__class__(**{**tiny_cfg.image.__dict__, "init": "pretrained"})
    with pytest.raises(RuntimeError, match=r"swin_tiny_patch4_window7_224.*image\.weights"):
        ImageEncoder(hub_image, tiny_cfg.fdm, pretrained=True)
    cfg = tiny_cfg.text.__class__(
        **{**tiny_cfg.text.__dict__, "name": "daim-kit-tests/no-such-bert", "init": "pretrained"}
    )
    with pytest.raises(RuntimeError, match=r"no-such-bert.*text\.weights"):
        TextEncoder(cfg, tiny_cfg.fdm, pretrained=True)
    assert time.time() - t0 < 10


def test_bad_inputs_raise_value_errors_naming_shapes(tiny_cfg):
    enc = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    with pytest.raises(ValueError, match=r"\[B, 3, H, W\].*\(2, 64, 64\)"):
        enc(torch.randn(2, 64, 64))
    txt = TextEncoder(tiny_cfg.text, tiny_cfg.fdm)
    with pytest.raises(ValueError, match=r"\(2, 5\) and \(2, 6\)"):
        txt(torch.zeros(2, 5, dtype=torch.long), torch.ones(2, 6, dtype=torch.long))
    bad = tiny_cfg.text.__class__(**{**tiny_cfg.text.__dict__, "hidden_states": (1, 2, 7)})
    with pytest.raises(ValueError, match=r"0\.\.3.*\(1, 2, 7\)"):
        TextEncoder(bad, tiny_cfg.fdm)
    bad_img = tiny_cfg.image.__class__(**{**tiny_cfg.image.__dict__, "stages": (1, 5)})
    with pytest.raises(ValueError, match=r"0\.\.3.*\(1, 5\)"):
        ImageEncoder(bad_img, tiny_cfg.fdm)


# --- weights decided per stream ---------------------------------------------------------------


@pytest.fixture
def no_hub(monkeypatch):
    """Any attempt to reach or read the hub fails the test."""
    import timm
    import transformers

    import daimlib.encoders as encoders

    def refuse(*a, **k):
        raise AssertionError(f"the hub was asked for: {a} {k}")

    monkeypatch.setattr(encoders, "hub_reachable", refuse)
    real_create = timm.create_model

    def create(name, pretrained=False, **kw):
        if pretrained and "pretrained_cfg_overlay" not in kw:
            refuse(name)
        return real_create(name, pretrained=pretrained, **kw)

    monkeypatch.setattr(timm, "create_model", create)
    real_auto = transformers.AutoModel.from_pretrained

    def auto(source, *a, **k):
        if not str(source).startswith("/"):
            refuse(source)
        return real_auto(source, *a, **k)

    monkeypatch.setattr(transformers.AutoModel, "from_pretrained", auto)


def test_local_image_weights_leave_the_text_stream_alone(tiny_cfg, tmp_path, no_hub):
    from daimlib.model import DAIM

    src = ImageEncoder(tiny_cfg.image, tiny_cfg.fdm)
    save_file(
        {k: v.contiguous() for k, v in src.backbone.state_dict().items()}, str(tmp_path / "m.safetensors")
    )
    cfg = tiny_cfg.replace(**{"image.weights": str(tmp_path / "m.safetensors")})
    model = DAIM.from_config(cfg, pretrained=True)  # text: model_kwargs, no weights -> random, no hub
    assert torch.equal(
        model.image_encoder.backbone.patch_embed.proj.weight, src.backbone.patch_embed.proj.weight
    )
    assert model.text_encoder.bert.config.hidden_size == 128


def test_local_text_weights_leave_the_image_stream_alone(tiny_cfg, tmp_path, no_hub):
    from daimlib.model import DAIM

    src = TextEncoder(tiny_cfg.text, tiny_cfg.fdm)
    src.bert.save_pretrained(tmp_path / "bert")
    cfg = tiny_cfg.replace(**{"text.weights": str(tmp_path / "bert")})
    model = DAIM.from_config(cfg, pretrained=True)  # image: timm_kwargs, no weights -> random, no hub
    for k, v in src.bert.state_dict().items():
        assert torch.equal(model.text_encoder.bert.state_dict()[k], v), k


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_random_init_switch_builds_the_full_size_text_stream_offline(no_hub):
    from daimlib.config import load_preset
    from daimlib.encoders import image_pretrained, text_pretrained

    paper = load_preset("daim_f30k")
    assert image_pretrained(paper.image) and text_pretrained(paper.text)  # the paper loads both
    cfg = load_preset("daim_f30k", **{"text.init": "random", "image.init": "random"})
    assert not image_pretrained(cfg.image) and not text_pretrained(cfg.text)
    assert image_pretrained(
        load_preset("daim_f30k", **{"text.init": "random"}).image
    )  # the other stream unchanged
    enc = TextEncoder(cfg.text, cfg.fdm, pretrained=True)  # BERT-base's shape, random, no network
    assert enc.bert.config.num_hidden_layers == 12 and enc.hidden_size == 768


def test_random_and_local_weights_together_are_refused():
    from daimlib.config import load_preset
    from daimlib.config_rules import ConfigError

    with pytest.raises(ConfigError, match=r"image\.weights is set but image\.init is 'random'"):
        load_preset("daim_f30k", **{"image.init": "random", "image.weights": "w.safetensors"})


def test_timm_and_transformers_stay_inside_the_tested_ranges_of_pyproject():
    """pyproject.toml bounds timm and transformers above by what the tests ran against; the environment
    running them must lie inside (a newer major release needs a test run before the bound moves)."""
    try:
        import tomllib
    except ImportError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    import timm
    import transformers
    from packaging.requirements import Requirement

    deps = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    reqs = {Requirement(r).name: Requirement(r) for r in deps["dependencies"]}
    for name, module in (("timm", timm), ("transformers", transformers)):
        spec = reqs[name].specifier
        assert any(s.operator == "<" for s in spec), f"{name}: no upper bound in pyproject.toml ({spec})"
        assert spec.contains(module.__version__), f"{name} {module.__version__} is outside {spec}"
