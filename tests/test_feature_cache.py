"""The frozen-phase feature cache (daimlib.feature_cache): exact losses, keys that change with what they
cover, a partial or corrupt cache detected, and the switch that says what it turns off."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from daimlib import feature_cache as fc
from daimlib.config import ConfigError, load_preset
from daimlib.data import load_split, load_tokenizer, tokenize
from daimlib.model import DAIM
from daimlib.train import train

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _cfg(mode, **over):
    return load_preset(
        "demo",
        **{
            "train.freeze_epochs": 2,
            "train.epochs": 2,
            "train.batch_size": 8,
            "train.feature_cache": mode,
            "train.feature_cache_dtype": "fp32",
            "data.num_workers": 0,
            "loss.warmup_steps": 2,
            **over,
        },
    )


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("DAIM_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "features"


@pytest.mark.slow  # trains a model (a few steps)
def test_fp32_cache_gives_the_loss_trajectory_of_the_same_run_computed_live(demo_root, tmp_path, cache_dir):
    """Two frozen epochs (30 steps, hardest negatives after step 2, the MOM updating): with the cache the
    losses and margins equal those of the uncached run with the same things turned off (eval-mode
    encoders, eval crops) to float tolerance, and the trained projections agree."""
    runs = {}
    for mode in ("frozen_live", "frozen"):
        runs[mode] = train(_cfg(mode), demo_root, tmp_path / mode, progress=False, eval_split=None)
    live, cached = runs["frozen_live"].steps, runs["frozen"].steps
    assert len(live) == len(cached) == 30
    np.testing.assert_allclose(cached["loss"], live["loss"], rtol=2e-5, atol=1e-5)
    np.testing.assert_allclose(cached["margin"], live["margin"], rtol=1e-6, atol=1e-7)
    assert live["loss"].std() > 0.01  # the trajectory moves: the comparison is not of constants
    a, b = runs["frozen_live"].model.state_dict(), runs["frozen"].model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
    assert len(list(cache_dir.glob("image-*"))) == len(list(cache_dir.glob("text-*"))) == 1


@pytest.mark.slow  # trains a model (a few steps)
def test_the_reference_setting_differs_from_the_deterministic_frozen_phase(demo_root, tmp_path, cache_dir):
    """'off' keeps random crops (and train-mode encoders): its losses are not those of 'frozen_live',
    so the equality above is a property of the cache, not of a run that ignores the setting."""
    off = train(
        _cfg("off", **{"train.max_steps": 4}), demo_root, tmp_path / "off", progress=False, eval_split=None
    )
    live = train(
        _cfg("frozen_live", **{"train.max_steps": 4}),
        demo_root,
        tmp_path / "live",
        progress=False,
        eval_split=None,
    )
    assert not np.allclose(off.steps["loss"], live.steps["loss"], rtol=1e-4)


def _model_and_data(demo_root, cfg):
    model = DAIM.from_config(cfg)
    split = load_split(cfg.data, demo_root, "train")
    tok = load_tokenizer(cfg.text, demo_root)
    return model, split, tok


def test_cache_key_changes_with_weights_data_preprocessing_and_dtype(demo_root, tmp_path):
    cfg = _cfg("frozen")
    model, split, tok = _model_and_data(demo_root, cfg)
    ids, _ = tokenize(tok, split.captions, cfg.text.max_len)
    img0 = fc.image_key(model, cfg, split.image_paths, "fp32")
    txt0 = fc.text_key(model, cfg, ids, "fp32")
    assert fc.image_key(model, cfg, split.image_paths, "fp32") == img0  # deterministic
    # a weight of each stream (a frozen stage LayerNorm counts too)
    with torch.no_grad():
        next(iter(model.image_encoder.stage_norms.values())).weight[0] += 1e-3
    assert fc.image_key(model, cfg, split.image_paths, "fp32") != img0
    with torch.no_grad():
        model.text_encoder.bert.embeddings.word_embeddings.weight[5, 0] += 1e-3
    assert fc.text_key(model, cfg, ids, "fp32") != txt0
    model, _, _ = _model_and_data(demo_root, cfg)
    # the data: one image's bytes, one caption's tokens
    copy = tmp_path / "img.png"
    copy.write_bytes(Path(split.image_paths[0]).read_bytes() + b"\0")
    assert fc.image_key(model, cfg, [copy, *split.image_paths[1:]], "fp32") != img0
    ids2 = ids.clone()
    ids2[0, 1] += 1
    assert fc.text_key(model, cfg, ids2, "fp32") != txt0
    # the preprocessing: crop size / normalisation; FDM; the dtype
    assert (
        fc.image_key(model, cfg.replace(**{"data.std": (0.3, 0.3, 0.3)}), split.image_paths, "fp32") != img0
    )
    assert fc.image_key(model, cfg.replace(**{"fdm.scale": 0.2}), split.image_paths, "fp32") != img0
    assert fc.image_key(model, cfg, split.image_paths, "fp16") != img0
    assert fc.text_key(model, cfg, ids, "fp16") != txt0


def test_cached_features_equal_the_eval_mode_encoders(demo_root, tmp_path):
    cfg = _cfg("frozen")
    model, split, tok = _model_and_data(demo_root, cfg)
    pairs = fc.cached_pairs(model, cfg, split, tok, torch.device("cpu"), cache_dir=tmp_path, progress=False)
    ds = fc.CachedPairs.__getitem__
    batch = fc.collate_cached([ds(pairs, j) for j in (0, 7, 13)])
    from daimlib.data import CaptionDataset, build_transforms, collate

    ref = collate(
        [CaptionDataset(split, tok, build_transforms(cfg.data, train=False))[j] for j in (0, 7, 13)]
    )
    model.eval()
    with torch.no_grad():
        img = model.image_encoder(ref["images"])
        txt, lens = model.text_encoder(ref["input_ids"], ref["attention_mask"])
    for got, want in zip(batch["image_feats"], img):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    mask = ref["attention_mask"].bool()[..., None]
    for got, want in zip(batch["text_feats"], txt):
        torch.testing.assert_close(got, want * mask, rtol=1e-5, atol=1e-5)  # zeros past each caption
    assert batch["attention_mask"].sum(1).tolist() == lens.tolist()
    import pickle

    blob = pickle.dumps(pairs)  # what a spawned DataLoader worker receives: file names, not the features
    assert len(blob) < sum(a.nbytes for a in [*pairs.img, *pairs.txt]) / 4  # (the token masks are in it)
    again = pickle.loads(blob)
    for a, b in zip(fc.collate_cached([again[j] for j in (0, 7, 13)])["image_feats"], batch["image_feats"]):
        assert torch.equal(a, b)


def _built_stream(demo_root, tmp_path, stream="image"):
    cfg = _cfg("frozen")
    torch.manual_seed(0)  # the same weights each call: the same key
    model, split, tok = _model_and_data(demo_root, cfg)
    fc.cached_pairs(model, cfg, split, tok, torch.device("cpu"), cache_dir=tmp_path, progress=False)
    folder = next(tmp_path.glob(f"{stream}-*"))
    return folder, json.loads((folder / fc.MANIFEST).read_text())["key"]


def test_a_corrupt_or_partial_cache_is_detected_and_rebuilt(demo_root, tmp_path, caplog):
    folder, key = _built_stream(demo_root, tmp_path)
    fc.open_stream(folder, key)  # intact: opens
    with pytest.raises(fc.FeatureCacheError, match="another format or key"):
        fc.open_stream(folder, "0" * 64)
    good = (folder / "level0.npy").read_bytes()
    arr = np.load(folder / "level0.npy", mmap_mode="r+")
    arr[0, 0, 0] += 1.0  # one flipped value
    arr.flush()
    del arr
    with pytest.raises(fc.FeatureCacheError, match="sha256 differs"):
        fc.open_stream(folder, key)
    (folder / "level0.npy").write_bytes(good)
    fc.open_stream(folder, key)  # restored: opens again
    data = (folder / "level1.npy").read_bytes()
    (folder / "level1.npy").write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(fc.FeatureCacheError, match="level1.npy"):
        fc.open_stream(folder, key)
    (folder / fc.MANIFEST).unlink()  # a build that never finished
    with pytest.raises(fc.FeatureCacheError, match="partial"):
        fc.open_stream(folder, key)
    with caplog.at_level("WARNING", logger="daimlib.feature_cache"):  # training rebuilds it
        again, _ = _built_stream(demo_root, tmp_path)
    assert again == folder and "rebuilding" in caplog.text
    fc.open_stream(folder, key)


def test_the_setting_is_checked_and_the_paper_presets_keep_the_reference(demo_root):
    for name in ("daim_f30k", "daim_coco", "hat_f30k", "hat_coco"):
        cfg = load_preset(name)
        assert cfg.train.feature_cache == "off" and fc.frozen_train_mode(cfg)  # dropout/DropPath stay on
    assert not fc.frozen_train_mode(load_preset("daim_f30k", **{"train.feature_cache": "frozen"}))
    with pytest.raises(ConfigError, match="train.freeze_epochs is 0"):
        load_preset("demo", **{"train.feature_cache": "frozen"})
    with pytest.raises(ConfigError, match="train.feature_cache must be one of"):
        load_preset("daim_f30k", **{"train.feature_cache": "always"})
