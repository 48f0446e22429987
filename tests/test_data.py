"""Karpathy loader, image modes, tokenizers, transforms and torch datasets on a fixture written here."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from daimlib.config import load_preset
from daimlib.data import (
    CaptionDataset,
    DatasetFormatError,
    ImageDataset,
    KarpathySplit,
    TextDataset,
    build_transforms,
    build_wordpiece_tokenizer,
    collate,
    load_image,
    load_split,
    load_tokenizer,
    tokenize,
)

CAPS = [
    "a dog runs on the grass",
    "a brown dog running",
    "the dog plays outside",
    "one dog in a park",
    "a happy dog on green grass",
]


def _write_images(folder: Path) -> dict[str, tuple]:
    """One file per Pillow mode; returns filename -> expected RGB of pixel (0, 0)."""
    folder.mkdir(parents=True, exist_ok=True)
    expected = {}
    Image.new("RGB", (8, 6), (200, 10, 30)).save(folder / "rgb.jpg", quality=100)
    expected["rgb.jpg"] = (200, 10, 30)
    Image.new("L", (8, 6), 77).save(folder / "gray.png")
    expected["gray.png"] = (77, 77, 77)
    Image.new("1", (8, 6), 1).save(folder / "bw.png")
    expected["bw.png"] = (255, 255, 255)
    Image.new("RGBA", (8, 6), (0, 0, 255, 0)).save(folder / "rgba.png")  # fully transparent blue
    expected["rgba.png"] = (255, 255, 255)  # composited onto white
    pal = Image.new("P", (8, 6), 0)
    pal.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    pal.save(folder / "palette.png")
    expected["palette.png"] = (10, 200, 30)
    Image.new("CMYK", (8, 6), (0, 0, 0, 0)).save(folder / "cmyk.jpg", quality=100)
    expected["cmyk.jpg"] = (255, 255, 255)
    return expected


def _record(fname, split, caps, **extra):
    return {
        "filename": fname,
        "split": split,
        "sentences": [{"raw": c, "tokens": c.split()} for c in caps],
        **extra,
    }


@pytest.fixture()
def karpathy(tmp_path):
    """A small Karpathy dataset: 6 image modes, an image with 7 captions, non-ASCII captions."""
    expected = _write_images(tmp_path / "images")
    images = [
        _record("rgb.jpg", "train", CAPS[:2]),  # training keeps any number of captions
        _record("gray.png", "train", CAPS),
        _record("bw.png", "val", CAPS),
        _record("rgba.png", "test", CAPS + ["extra six", "extra seven"]),  # 7 captions: first 5 kept
        _record(
            "palette.png",
            "test",
            [
                "ein Hund läuft über die Wiese",
                "un chien très heureux",
                "狗在草地上",
                "a dog — running",
                "dog",
            ],
        ),
        _record("cmyk.jpg", "test", CAPS),
    ]
    path = tmp_path / "dataset_toy.json"
    path.write_text(json.dumps({"images": images, "dataset": "toy"}, ensure_ascii=False), encoding="utf-8")
    return path, tmp_path / "images", expected, images


def test_split_keeps_first_five_captions_in_order_with_consecutive_image_index(karpathy):
    path, root, _, images = karpathy
    s = KarpathySplit(path, root, "test")
    assert s.n_images == len(s) == 3 and s.n_captions == 15
    assert s.captions[:5] == CAPS  # the 7-caption image keeps its first 5
    assert s.captions[5] == "ein Hund läuft über die Wiese" and s.captions[7] == "狗在草地上"
    assert s.img_of_caption.dtype == torch.long
    assert s.img_of_caption.tolist() == [0] * 5 + [1] * 5 + [2] * 5
    assert [Path(p).name for p in s.image_paths] == ["rgba.png", "palette.png", "cmyk.jpg"]
    assert s.captions_of(1)[2] == "狗在草地上"


def test_training_split_keeps_all_captions_and_splits_can_be_combined(karpathy):
    path, root, _, _ = karpathy
    s = KarpathySplit(path, root, "train", captions_per_image=None)
    assert s.n_captions == 2 + 5 and s.img_of_caption.tolist() == [0, 0, 1, 1, 1, 1, 1]
    both = KarpathySplit(path, root, ("train", "val"), captions_per_image=None)
    assert both.n_images == 3 and both.n_captions == 12


def test_load_image_converts_every_mode_to_rgb(karpathy):
    _, root, expected, _ = karpathy
    for name, rgb in expected.items():
        im = load_image(root / name)
        assert im.mode == "RGB" and im.size == (8, 6)
        assert np.allclose(np.asarray(im)[0, 0], rgb, atol=3), name  # JPEG rounding


def test_coco_filepath_is_joined_and_restval_folds_into_train(tmp_path):
    (tmp_path / "images" / "train2014").mkdir(parents=True)
    (tmp_path / "images" / "val2014").mkdir(parents=True)
    Image.new("RGB", (4, 4), (10, 0, 0)).save(tmp_path / "images" / "train2014" / "a.jpg")
    Image.new("RGB", (4, 4), (90, 0, 0)).save(tmp_path / "images" / "val2014" / "b.jpg")
    Image.new("RGB", (4, 4), (170, 0, 0)).save(tmp_path / "images" / "val2014" / "c.jpg")
    images = [
        _record("a.jpg", "train", CAPS, filepath="train2014", cocoid=11),
        _record("b.jpg", "restval", CAPS[:3], filepath="val2014", cocoid=12),
        _record("c.jpg", "test", CAPS + ["six", "seven"], filepath="val2014", cocoid=13),
    ]
    (tmp_path / "dataset_coco.json").write_text(json.dumps({"images": images, "dataset": "coco"}))
    cfg = load_preset("daim_coco").data
    train = load_split(cfg, tmp_path, "train")
    assert train.n_images == 1 and train.image_ids == [11]
    cfg.use_restval = True
    train = load_split(cfg, tmp_path, "train")
    assert train.n_images == 2 and train.n_captions == 8  # restval's 3 captions kept for training
    assert Path(train.image_paths[1]).parts[-2:] == ("val2014", "b.jpg")
    test = load_split(cfg, tmp_path, "test")
    assert test.n_captions == 5 and test.image_ids == [13]


# --- every bad input gets a clear error ---------------------------------------------------


def _write(tmp_path, images, name="d.json"):
    p = tmp_path / name
    p.write_text(json.dumps({"images": images}))
    return p


def test_missing_json_names_file_folder_and_readme(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset_flickr30k\.json.*data/README\.md"):
        KarpathySplit(tmp_path / "dataset_flickr30k.json", tmp_path, "test")


def test_missing_image_folder(karpathy):
    path, root, _, _ = karpathy
    with pytest.raises(FileNotFoundError, match="image folder not found: flickr30k-images"):
        KarpathySplit(path, root.parent / "flickr30k-images", "test")


def test_missing_image_files_are_counted_and_named(karpathy, tmp_path):
    path, root, _, images = karpathy
    images = images + [_record(f"gone{i}.jpg", "test", CAPS) for i in range(7)]
    p = _write(tmp_path, images)
    with pytest.raises(FileNotFoundError, match=r"7 of 10 image files.*gone0\.jpg, gone1\.jpg"):
        KarpathySplit(p, root, "test")


def test_unknown_split_lists_the_present_ones(karpathy):
    path, root, _, _ = karpathy
    with pytest.raises(
        ValueError, match=r"'dev' not in .*train \(2 images\), val \(1 images\), test \(3 images\)"
    ):
        KarpathySplit(path, root, "dev")


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not valid JSON"),
        (json.dumps([1, 2]), "'images' list"),
        (
            json.dumps({"images": [{"filename": "a.jpg", "sentences": []}]}),
            r"images\[0\] lacks the field 'split'",
        ),
        (
            json.dumps({"images": [{"filename": "a.jpg", "split": "test", "sentences": "x"}]}),
            "must be a list",
        ),
        (
            json.dumps({"images": [{"filename": "a.jpg", "split": "test", "sentences": [{"x": 1}]}]}),
            r"images\[0\] \(a\.jpg\): sentences\[0\] has neither",
        ),
    ],
)
def test_malformed_json_names_field_and_image_index(tmp_path, content, match):
    (tmp_path / "images").mkdir()
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DatasetFormatError, match=match):
        KarpathySplit(p, tmp_path / "images", "test")


def test_empty_caption_is_an_error_naming_the_image(karpathy, tmp_path):
    _, root, _, images = karpathy
    p = _write(tmp_path, [_record("rgb.jpg", "test", CAPS[:4] + ["   "])])
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] \(rgb\.jpg\): sentences\[4\] is an empty caption"
    ):
        KarpathySplit(p, root, "test")


def test_fewer_than_five_captions_in_test_names_the_image(karpathy, tmp_path):
    _, root, _, _ = karpathy
    p = _write(tmp_path, [_record("gray.png", "test", CAPS[:4])])
    with pytest.raises(DatasetFormatError, match=r"gray\.png\) has 4 captions.*needs 5"):
        KarpathySplit(p, root, "test")


def test_unreadable_image_names_the_file(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"this is not a jpeg")
    with pytest.raises(DatasetFormatError, match="cannot read image broken.jpg"):
        load_image(bad)
    with pytest.raises(FileNotFoundError, match="nothere.png"):
        load_image(tmp_path / "nothere.png")


# --- tokenizers -----------------------------------------------------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_wordpiece_tokenizer_round_trips_and_knows_real_words(tmp_path):
    from transformers import BertTokenizerFast

    tok = build_wordpiece_tokenizer(CAPS * 3, tmp_path / "tok", vocab_size=200)
    again = BertTokenizerFast.from_pretrained(str(tmp_path / "tok"))
    assert (tmp_path / "tok" / "vocab.txt").is_file()
    assert len(again) == len(tok) <= 200
    ids, mask = tokenize(again, ["A Dog runs", "the happy dog plays on the grass in a park"], max_len=8)
    assert ids.shape == mask.shape == (2, 8) and ids.dtype == mask.dtype == torch.long
    assert again.convert_ids_to_tokens(ids[0, :5].tolist()) == ["[CLS]", "a", "dog", "runs", "[SEP]"]
    assert mask[0].tolist() == [1] * 5 + [0] * 3 and ids[0, 5:].eq(again.pad_token_id).all()
    # truncation keeps [CLS] + max_len - 2 tokens + [SEP]
    assert mask[1].sum() == 8 and ids[1, -1] == again.sep_token_id
    assert again.unk_token_id not in ids[0].tolist()


def test_load_tokenizer_from_folder_demo_and_offline_hub_errors(tmp_path):
    build_wordpiece_tokenizer(CAPS, tmp_path / "tokenizer")
    cfg = load_preset("demo").text
    assert load_tokenizer(cfg, tmp_path).tokenize("a dog") == ["a", "dog"]
    cfg.tokenizer = str(tmp_path / "tokenizer")
    assert load_tokenizer(cfg).tokenize("dog") == ["dog"]
    cfg.tokenizer = "demo"
    with pytest.raises(FileNotFoundError, match="make_demo_dataset"):
        load_tokenizer(cfg, tmp_path / "elsewhere")
    user = tmp_path / "my_f30k"  # a user's dataset: never told to write demo data into it (issue 14)
    user.mkdir()
    (user / "dataset_flickr30k.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match=r"my_f30k/ is not demo data; .* preset 'tiny'") as e:
        load_tokenizer(cfg, user)
    assert "make-demo-data" not in str(e.value)
    with pytest.raises(ValueError, match="no data_root"):
        load_tokenizer(cfg)
    cfg.tokenizer = "no-such-org/no-such-tokenizer"
    with pytest.raises(OSError, match=r"no-such-org/no-such-tokenizer.*save_pretrained"):
        load_tokenizer(cfg, local_files_only=True)


def test_tokenize_rejects_empty_captions(tmp_path):
    tok = build_wordpiece_tokenizer(CAPS, tmp_path / "tok")
    with pytest.raises(ValueError, match="empty caption at positions \\[1\\]"):
        tokenize(tok, ["a dog", " "])
    with pytest.raises(ValueError, match="empty caption at positions \\[0, 2\\].*invisible"):
        tokenize(tok, ["\u200b\ufeff", "a dog", "\u2060"])


# --- transforms and datasets -----------------------------------------------------------------


def test_transforms_sizes_normalisation_and_no_flip_when_disabled():
    cfg = load_preset("demo").data
    img = Image.fromarray(np.tile(np.linspace(0, 255, 80, dtype=np.uint8)[None, :, None], (80, 1, 3)))
    ev = build_transforms(cfg, train=False)(img)
    assert ev.shape == (3, 64, 64)
    # normalisation: value = (pixel/255 - mean) / std, checked on the first column
    want = (np.asarray(img.resize((64, 64), Image.BILINEAR))[0, 0, 0] / 255 - cfg.mean[0]) / cfg.std[0]
    assert float(ev[0, 0, 0]) == pytest.approx(want, abs=0.05)
    torch.manual_seed(0)
    for _ in range(20):  # left-to-right gradient survives every training crop: no flip in the demo
        tr = build_transforms(cfg, train=True)(img)
        assert tr.shape == (3, 64, 64) and tr[0, 32, -1] > tr[0, 32, 0]
    names = [type(t).__name__ for t in build_transforms(load_preset("daim_f30k").data, train=True).transforms]
    assert names[:2] == ["RandomResizedCrop", "RandomHorizontalFlip"]


def test_datasets_and_collate_build_the_batch_dict(karpathy, tmp_path):
    path, root, _, _ = karpathy
    split = KarpathySplit(path, root, "test")
    tok = build_wordpiece_tokenizer(split.captions, tmp_path / "tok")
    cfg = load_preset("demo").data
    caps = CaptionDataset(split, tok, build_transforms(cfg, train=True), max_len=16)
    assert len(caps) == 15
    batch = collate([caps[j] for j in (0, 6, 14)])
    assert set(batch) == {"images", "input_ids", "attention_mask", "img_index", "caption_index"}
    assert batch["images"].shape == (3, 3, 64, 64) and batch["input_ids"].shape == (3, 16)
    assert batch["img_index"].tolist() == [0, 1, 2] and batch["caption_index"].tolist() == [0, 6, 14]
    imgs = ImageDataset(split, build_transforms(cfg, train=False))
    b = collate([imgs[i] for i in range(len(imgs))])
    assert set(b) == {"images", "img_index"} and b["img_index"].tolist() == [0, 1, 2]
    txt = TextDataset(split, tok, 16)
    t = collate([txt[j] for j in range(len(txt))])
    assert torch.equal(t["img_index"], split.img_of_caption) and t["input_ids"].shape == (15, 16)
    with pytest.raises(ValueError, match="empty"):
        collate([])


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_caption_dataset_caches_decoded_images_without_changing_a_sample(demo_root, monkeypatch):
    import daimlib.data.datasets as ds_mod
    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.data.datasets import CaptionDataset, build_transforms

    cfg = load_preset("demo")
    split = load_split(cfg.data, demo_root, "train")
    tok = load_tokenizer(cfg.text, demo_root)
    opened = []
    real = ds_mod.load_image
    monkeypatch.setattr(ds_mod, "load_image", lambda p: opened.append(p) or real(p))
    cached = CaptionDataset(
        split, tok, build_transforms(cfg.data, train=True), cfg.text.max_len
    )  # auto: small split
    plain = CaptionDataset(
        split, tok, build_transforms(cfg.data, train=True), cfg.text.max_len, cache_images=False
    )
    n = split.n_captions
    for j in list(range(n)) + list(range(n)):  # two epochs
        torch.manual_seed(j)
        a = cached[j]["image"]
        torch.manual_seed(j)
        b = plain[j]["image"]
        assert torch.equal(a, b)  # the random crop is drawn per sample, from the same decoded image
    # cached: each image decoded once; uncached: once per caption and epoch
    assert len(opened) == split.n_images + 2 * n
    monkeypatch.setattr(ds_mod, "CACHE_BYTES", 10)  # a split too large for the budget is not cached
    assert CaptionDataset(split, tok, build_transforms(cfg.data, train=True), cfg.text.max_len)._cache is None
