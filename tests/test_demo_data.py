"""The generated demo dataset: determinism, sizes, Karpathy format, caption truth and uniqueness."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from daimlib.config import load_preset
from daimlib.data import (
    KarpathySplit,
    caption_is_true,
    caption_match_counts,
    caption_uniqueness,
    load_split,
    load_tokenizer,
    make_demo_dataset,
    tokenize,
)
from daimlib.data.demo import COLOURS, render_scene


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo_small")
    return root, make_demo_dataset(root, seed=0, size="small", progress=False)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_same_seed_gives_byte_identical_json_and_identical_images(small, tmp_path):
    root, path = small
    again = make_demo_dataset(tmp_path, seed=0, size="small", progress=False)
    assert again.read_bytes() == path.read_bytes()
    for name in sorted(p.name for p in (root / "images").iterdir())[::25]:
        a = np.asarray(Image.open(root / "images" / name))
        b = np.asarray(Image.open(tmp_path / "images" / name))
        assert np.array_equal(a, b), name
    other = make_demo_dataset(tmp_path / "seed1", seed=1, size="small", progress=False)
    assert other.read_bytes() != path.read_bytes()


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_split_sizes_five_captions_and_karpathy_fields(small):
    root, path = small
    data = json.loads(path.read_text())
    assert data["dataset"] == "demo"
    counts = {s: sum(r["split"] == s for r in data["images"]) for s in ("train", "val", "test")}
    assert counts == {"train": 200, "val": 50, "test": 50}
    for r in data["images"]:
        assert len(r["sentences"]) == 5 and len({s["raw"] for s in r["sentences"]}) == 5
        assert {"filename", "imgid", "split", "sentences", "scene"} <= set(r)
        assert all(s["tokens"] and s["imgid"] == r["imgid"] for s in r["sentences"])
    im = Image.open(root / "images" / data["images"][0]["filename"])
    assert im.size == (64, 64) and im.format == "PNG"


def test_loads_through_karpathy_split_and_load_split(small):
    root, path = small
    cfg = load_preset("demo").data
    test = load_split(cfg, root, "test")
    assert test.n_images == 50 and test.n_captions == 250 and test.n_images % 5 == 0
    assert test.img_of_caption.tolist() == np.repeat(np.arange(50), 5).tolist()
    train = KarpathySplit(path, root / "images", "train", captions_per_image=None)
    assert train.n_captions == 1000


def test_every_caption_is_true_of_its_own_image_and_most_of_no_other(small):
    root, _ = small
    split = load_split(load_preset("demo").data, root, "test")
    counts = caption_match_counts(split)
    scenes = [m["scene"] for m in split.meta]
    for j, cm in enumerate(split.caption_meta):  # brute force over all images, no bucketing
        truth = [caption_is_true(cm["claims"], sc) for sc in scenes]
        assert truth[int(split.img_of_caption[j])]
        assert sum(truth) == counts[j]
    assert caption_uniqueness(split) == pytest.approx(np.mean(counts == 1))


@pytest.mark.slow
def test_default_test_split_has_at_least_90_percent_unique_captions(default_demo_root):
    split = load_split(load_preset("demo").data, default_demo_root, "test")
    assert split.n_images == 500 and split.n_captions == 2500
    assert caption_uniqueness(split) >= 0.90


def test_caption_text_states_its_claims(small):
    root, _ = small
    split = load_split(load_preset("demo").data, root, "val")
    words = {
        "left": "left",
        "right": "right",
        "above": ("above", "over"),
        "below": ("below", "under", "beneath"),
    }
    for text, cm in zip(split.captions, split.caption_meta):
        for o in cm["claims"]["objects"]:
            assert f"{o['size']} {o['colour']} {o['shape']}" in text
        for _, rel, _ in cm["claims"]["relations"]:
            w = words[rel]
            assert any(x in text for x in (w if isinstance(w, tuple) else (w,))), (text, rel)


def test_caption_truth_on_hand_made_scenes():
    red_left = {
        "objects": [
            {"shape": "circle", "colour": "red", "size": "small", "row": 1, "col": 0},
            {"shape": "square", "colour": "blue", "size": "big", "row": 1, "col": 2},
        ]
    }
    swapped = {"objects": [dict(red_left["objects"][0], col=2), dict(red_left["objects"][1], col=0)]}
    recoloured = {"objects": [dict(red_left["objects"][0], colour="green"), red_left["objects"][1]]}
    claims = {
        "objects": [
            {"shape": "square", "colour": "blue", "size": "big"},
            {"shape": "circle", "colour": "red", "size": "small"},
        ],
        "relations": [[0, "right", 1]],
        "locations": [],
    }
    assert caption_is_true(claims, red_left)  # the square is right of the circle
    assert not caption_is_true(claims, swapped)  # one relation differs
    assert not caption_is_true(claims, recoloured)  # one attribute differs
    one = {"objects": [red_left["objects"][0]]}
    assert not caption_is_true(claims, one)  # object count differs
    assert caption_is_true({"objects": claims["objects"][1:], "relations": [], "locations": [[0, 1, 0]]}, one)
    assert not caption_is_true(
        {"objects": claims["objects"][1:], "relations": [], "locations": [[0, 0, 0]]}, one
    )


def test_rendered_object_has_its_colour_at_its_centre():
    scene = {
        "objects": [{"shape": "square", "colour": "orange", "size": "big", "x": 20.0, "y": 40.0, "r": 8.5}],
        "background": [50, 50, 50],
    }
    a = np.asarray(render_scene(scene)).astype(int)
    assert np.abs(a[40, 20] - COLOURS["orange"]).max() <= 2
    assert np.abs(a[5, 60] - 50).max() <= 1


def test_demo_tokenizer_covers_test_captions_within_max_len(small):
    root, _ = small
    cfg = load_preset("demo")
    tok = load_tokenizer(cfg.text, root)
    assert len(tok) <= cfg.text.model_kwargs["vocab_size"]
    split = load_split(cfg.data, root, "test")
    ids, mask = tokenize(tok, split.captions, cfg.text.max_len)
    assert not (ids == tok.unk_token_id).any()  # real words, not [UNK]
    assert int(mask.sum(1).max()) <= cfg.text.max_len and (ids[:, 0] == tok.cls_token_id).all()
    ends = ids[np.arange(len(ids)), mask.sum(1) - 1]
    assert (ends == tok.sep_token_id).all()  # nothing truncated: [SEP] closes every caption


def test_existing_dataset_is_reused_and_bad_knobs_rejected(small, tmp_path):
    root, path = small
    stamp = path.stat().st_mtime_ns
    assert make_demo_dataset(root, seed=0, size="small", progress=False) == path
    assert path.stat().st_mtime_ns == stamp
    with pytest.raises(ValueError, match="unknown demo knobs"):
        make_demo_dataset(tmp_path, size="small", difficulty=3)
    with pytest.raises(ValueError, match="multiple of 5"):
        make_demo_dataset(tmp_path, size=(10, 5, 7))
    with pytest.raises(ValueError, match="unknown shapes/colours"):
        make_demo_dataset(tmp_path, size="small", colours=("red", "teal"))


def test_knobs_change_the_scenes(tmp_path):
    path = make_demo_dataset(
        tmp_path,
        size=(20, 5, 10),
        progress=False,
        object_probs=(0.0, 0.0, 1.0),
        relations=("horizontal",),
        shapes=("star", "cross", "circle", "square"),
    )
    data = json.loads(path.read_text())
    for r in data["images"]:
        objs = r["scene"]["objects"]
        assert len(objs) == 3 and len({o["col"] for o in objs}) == 3  # only left/right: distinct columns
        assert all(rel in ("left", "right") for s in r["sentences"] for _, rel, _ in s["claims"]["relations"])
