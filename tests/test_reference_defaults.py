"""The switches for the defaults that differ from the reference (docs/reproduce.md, "Defaults that differ from the reference"):
validation on the first N images (the reference's COCO dev 1K), skipping the first epoch's
validation (as the reference does), and the feature precision of validation."""

from __future__ import annotations

import pytest
import torch

from daimlib import train as train_mod
from daimlib.config import ConfigError, load_preset
from daimlib.data import Split, first_images
from daimlib.train import train


def _split(caps_per_image):
    """A hand-made split whose image i has caps_per_image[i] captions named 'i.k'."""
    caps, owner = [], []
    for i, n in enumerate(caps_per_image):
        caps += [f"{i}.{k}" for k in range(n)]
        owner += [i] * n
    n_img = len(caps_per_image)
    return Split(
        image_paths=[f"{i}.jpg" for i in range(n_img)],
        captions=caps,
        img_of_caption=torch.tensor(owner),
        image_ids=list(range(n_img)),
        splits=("val",),
        layout="demo",
        dataset="demo",
        source=__import__("pathlib").Path("x.json"),
        image_root=__import__("pathlib").Path("."),
        meta=[{"i": i} for i in range(n_img)],
        caption_meta=[{"c": c} for c in caps],
    )


def test_first_images_keeps_the_first_images_and_exactly_their_captions():
    split = _split([5, 3, 6, 5])
    sub = first_images(split, 2)
    assert sub.image_paths == ["0.jpg", "1.jpg"] and sub.image_ids == [0, 1]
    assert sub.captions == ["0.0", "0.1", "0.2", "0.3", "0.4", "1.0", "1.1", "1.2"]
    assert sub.img_of_caption.tolist() == [0] * 5 + [1] * 3
    assert [m["c"] for m in sub.caption_meta] == sub.captions and sub.meta == [{"i": 0}, {"i": 1}]
    assert first_images(split, 10) is split  # asking for more than there are changes nothing
    assert split.n_images == 4 and len(split.captions) == 19  # the original is untouched


def test_the_switches_are_validated_when_the_config_is_built():
    cfg = load_preset(
        "demo", **{"train.val_images": 3, "train.skip_first_eval": True, "train.eval_features": "fp32"}
    )
    assert (cfg.train.val_images, cfg.train.skip_first_eval, cfg.train.eval_features) == (3, True, "fp32")
    with pytest.raises(ConfigError, match="val_images"):
        load_preset("demo", **{"train.val_images": 0})
    with pytest.raises(ConfigError, match="eval_features"):
        load_preset("demo", **{"train.eval_features": "fp16"})
    # COCO validates on the first 1,000 val images, as the reference (its first 5,000 dev captions); F30K on all
    assert load_preset("daim_coco").train.val_images == load_preset("hat_coco").train.val_images == 1000
    assert load_preset("daim_f30k").train.val_images is None
    assert load_preset("daim_coco", **{"train.val_images": None}).train.val_images is None  # the switch kept


@pytest.mark.slow  # trains a model
@pytest.mark.usefixtures("one_torch_thread")
def test_skip_first_eval_and_val_images_change_what_training_validates(tmp_path, monkeypatch):
    from daimlib.data import make_demo_dataset

    root = tmp_path / "demo"
    make_demo_dataset(root, seed=0, size=(24, 5, 5), progress=False)
    seen = []  # (epoch index of the validation, images validated on)
    real = train_mod.evaluate

    def spy(model, split, *a, **kw):
        seen.append(split.n_images)
        return real(model, split, *a, **kw)

    monkeypatch.setattr(train_mod, "evaluate", spy)
    over = {
        "train.batch_size": 8,
        "train.epochs": 3,
        "train.freeze_epochs": 1,
        "data.train_split": "val",
        "data.val_split": "test",
        "train.eval_batch_size": 64,
    }
    res = train(load_preset("demo", **over), root, tmp_path / "all", progress=False, eval_split="test")
    assert seen == [5, 5, 5] and res.epochs["epoch"].tolist() == [0, 1, 2]
    seen.clear()
    cfg = load_preset("demo", **over, **{"train.skip_first_eval": True, "train.val_images": 3})
    res = train(cfg, root, tmp_path / "ref", progress=False, eval_split="test")
    assert seen == [3, 3]  # no validation after epoch 0; each on the first 3 test images
    validated = res.epochs.dropna(subset=["rsum"])["epoch"].tolist()
    assert validated == [1, 2]
