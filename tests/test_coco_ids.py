"""The VSE++ COCO id layout loader (spec section 8) on a tiny COCO written here.

Expected captions, images and groupings are derived in each test from the fixture's own tables
(``TRAIN_CAPS``, ``VAL_CAPS``) with plain loops, independently of the loader.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from daimlib.config import load_preset
from daimlib.data import (
    COCO_IDS,
    CocoIdSplit,
    DatasetFormatError,
    ImageDataset,
    build_transforms,
    has_coco_id_layout,
    load_split,
)

# image id -> its captions; annotation id = 100 * image id + k (k-th caption)
TRAIN_CAPS = {
    1: ["a cat on a mat", "the cat sleeps", "grey cat resting", "a cat lying down", "cat on a rug", "sixth"],
    2: ["two dogs play", "dogs in a yard", "a pair of dogs"],  # fewer than 5: fine for training
    3: ["a red bus", "bus on a street", "a city bus", "red double decker", "a bus stops"],
}
VAL_CAPS = {
    10: [f"kite {k}" for k in range(5)],
    11: [f"boat {k}" for k in range(7)],  # 7 captions: dev ids take 5 of them
    12: [f"train {k}" for k in range(5)],
    13: [f"pizza {k}" for k in range(5)],
    14: [f"horse {k}" for k in range(6)],  # restval image
}


def _fname(year: str, image_id: int) -> str:
    return f"COCO_{year}_{image_id:012d}.jpg"


def _write_coco(folder: Path, year: str, caps: dict[int, list[str]]) -> None:
    images = [{"id": i, "file_name": _fname(year, i), "width": 4, "height": 4} for i in caps]
    anns = [
        {"id": 100 * i + k, "image_id": i, "caption": c} for i, cs in caps.items() for k, c in enumerate(cs)
    ]
    (folder / f"captions_{year}.json").write_text(json.dumps({"images": images, "annotations": anns}))


def _ids(image_id: int, ks) -> list[int]:
    return [100 * image_id + k for k in ks]


@pytest.fixture()
def coco_root(tmp_path):
    ann = tmp_path / "annotations"
    ann.mkdir()
    _write_coco(ann, "train2014", TRAIN_CAPS)
    _write_coco(ann, "val2014", VAL_CAPS)
    for year, caps in (("train2014", TRAIN_CAPS), ("val2014", VAL_CAPS)):
        (tmp_path / "images" / year).mkdir(parents=True)
        for i in caps:
            Image.new("RGB", (4, 4), (i * 17 % 256, 0, 0)).save(tmp_path / "images" / year / _fname(year, i))
    # train ids interleave images 1 and 3 and leave out image 1's 6th caption
    train = _ids(1, [0, 1]) + _ids(3, [0, 1, 2, 3, 4]) + _ids(1, [2, 3, 4]) + _ids(2, [0, 1, 2])
    np.save(ann / "coco_train_ids.npy", np.array(train, dtype=np.int64))
    np.save(ann / "coco_restval_ids.npy", np.array(_ids(14, range(6)), dtype=np.int64))
    np.save(
        ann / "coco_dev_ids.npy", np.array(_ids(11, [0, 2, 4, 5, 6]) + _ids(10, range(5)), dtype=np.int64)
    )
    np.save(ann / "coco_test_ids.npy", np.array(_ids(12, range(5)) + _ids(13, range(5)), dtype=np.int64))
    return tmp_path


def _expected(order: list[tuple[int, list[int]]], caps: dict[int, list[str]]):
    """(captions, image index of each caption) for images in ``order`` with their caption indices."""
    captions, owner = [], []
    for n, (image_id, ks) in enumerate(order):
        for k in ks:
            captions.append(caps[image_id][k])
            owner.append(n)
    return captions, owner


def test_test_and_val_splits_follow_the_id_files_with_five_consecutive_captions_per_image(coco_root):
    pytest.importorskip("pycocotools")
    test = CocoIdSplit(coco_root, "test")
    caps, owner = _expected([(12, range(5)), (13, range(5))], VAL_CAPS)
    assert test.captions == caps and test.img_of_caption.tolist() == owner
    assert test.image_ids == [12, 13] and test.n_images == 2 and test.n_captions == 10 and len(test) == 2
    assert [Path(p).relative_to(coco_root).as_posix() for p in test.image_paths] == [
        f"images/val2014/{_fname('val2014', i)}" for i in (12, 13)
    ]
    assert test.captions_of(1) == VAL_CAPS[13]
    dev = CocoIdSplit(coco_root, "dev")  # the dev ids pick captions 0, 2, 4, 5, 6 of image 11
    caps, owner = _expected([(11, [0, 2, 4, 5, 6]), (10, range(5))], VAL_CAPS)
    assert dev.captions == caps and dev.img_of_caption.tolist() == owner and dev.image_ids == [11, 10]
    assert dev.caption_ids == _ids(11, [0, 2, 4, 5, 6]) + _ids(10, range(5))


def test_val_and_test_use_only_the_leading_protocol_ids(coco_root):
    pytest.importorskip("pycocotools")
    full = CocoIdSplit(coco_root, "val")  # default limit 5000 ids: the whole tiny dev file
    assert full.image_ids == [11, 10]
    one = CocoIdSplit(coco_root, "val", caption_limits={"val": 5, "test": 5})
    assert one.image_ids == [11] and one.n_captions == 5
    assert CocoIdSplit(coco_root, "test", caption_limits={"test": 5}).image_ids == [12]


def test_training_keeps_every_listed_caption_grouped_by_image_in_first_appearance_order(coco_root):
    pytest.importorskip("pycocotools")
    train = CocoIdSplit(coco_root, "train", captions_per_image=None)
    # image 1's ids are split by image 3's block; they are grouped; its 6th caption is not listed
    caps, owner = _expected([(1, [0, 1, 2, 3, 4]), (3, range(5)), (2, range(3))], TRAIN_CAPS)
    assert train.captions == caps and train.img_of_caption.tolist() == owner
    assert train.image_ids == [1, 3, 2]
    assert all(Path(p).parent.name == "train2014" for p in train.image_paths)
    assert np.all(np.diff(train.img_of_caption.numpy()) >= 0)  # captions of one image consecutive


def test_restval_folds_into_train_from_the_val2014_annotations(coco_root):
    pytest.importorskip("pycocotools")
    cfg = load_preset("daim_coco").data
    cfg.json_name = COCO_IDS
    cfg.use_restval = True
    train = load_split(cfg, coco_root, "train")
    assert train.layout == "coco_ids" and train.splits == ("train", "restval")
    assert train.image_ids == [1, 3, 2, 14]
    assert train.captions[-6:] == VAL_CAPS[14] and train.img_of_caption[-6:].tolist() == [3] * 6
    assert Path(train.image_paths[-1]).parts[-2:] == ("val2014", _fname("val2014", 14))
    cfg.use_restval = False
    assert load_split(cfg, coco_root, "train").image_ids == [1, 3, 2]


def test_load_split_uses_the_id_layout_when_the_karpathy_json_is_absent(coco_root):
    pytest.importorskip("pycocotools")
    assert has_coco_id_layout(coco_root) and not has_coco_id_layout(coco_root / "images")
    cfg = load_preset("daim_coco").data  # json_name dataset_coco.json, not in the root
    test = load_split(cfg, coco_root, "test")
    val = load_split(cfg, coco_root, "val")
    assert test.layout == "coco_ids" and test.image_ids == [12, 13] and val.image_ids == [11, 10]
    ds = ImageDataset(test, build_transforms(cfg, train=False))  # the torch datasets take it unchanged
    assert len(ds) == 2


@pytest.mark.parametrize(
    "dev_ids, match",
    [
        (
            _ids(11, range(4)) + _ids(10, range(5)),
            r"image 11 \(COCO_val2014_000000000011\.jpg\) has 4 consecutive",
        ),
        (
            _ids(11, range(5)) + _ids(10, range(5)) + _ids(11, [5, 6]),
            r"image 11 \(COCO_val2014_000000000011\.jpg\) has caption ids at positions 0 and 10",
        ),
        (_ids(11, range(7)), r"image 11 .* has 7 consecutive caption ids at positions 0-6"),
    ],
)
def test_val_ids_not_in_blocks_of_five_per_image_name_the_image(coco_root, dev_ids, match):
    pytest.importorskip("pycocotools")
    np.save(coco_root / "annotations" / "coco_dev_ids.npy", np.array(dev_ids, dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=match):
        CocoIdSplit(coco_root, "val")
    assert CocoIdSplit(coco_root, "val", captions_per_image=None).n_captions == len(
        dev_ids
    )  # training reads it


def test_missing_files_are_named_with_their_folder(coco_root):
    pytest.importorskip("pycocotools")
    (coco_root / "annotations" / "coco_restval_ids.npy").unlink()
    with pytest.raises(FileNotFoundError, match=r"coco_restval_ids\.npy in .*annotations.*data/README\.md"):
        CocoIdSplit(coco_root, ("train", "restval"), captions_per_image=None)
    (coco_root / "annotations" / "captions_val2014.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"expected captions_val2014\.json in .*annotations"):
        CocoIdSplit(coco_root, "test")
    Path(coco_root / "images" / "train2014" / _fname("train2014", 3)).unlink()
    with pytest.raises(
        FileNotFoundError, match=r"1 of 3 image files .* train2014/COCO_train2014_000000000003"
    ):
        CocoIdSplit(coco_root, "train", captions_per_image=None)
    with pytest.raises(FileNotFoundError, match=r"image folder not found: pictures"):
        CocoIdSplit(coco_root, "train", image_dir="pictures", captions_per_image=None)


def test_bad_split_names_and_foreign_ids_are_clear_errors(coco_root):
    pytest.importorskip("pycocotools")
    with pytest.raises(ValueError, match=r"'testall' .* use one of train, restval, val, dev, test"):
        CocoIdSplit(coco_root, "testall")
    np.save(
        coco_root / "annotations" / "coco_test_ids.npy", np.array(_ids(12, range(4)) + [999], dtype=np.int64)
    )
    with pytest.raises(
        DatasetFormatError, match=r"caption id 999 \(position 4\) is not an annotation of captions_val"
    ):
        CocoIdSplit(coco_root, "test")
    np.save(coco_root / "annotations" / "coco_test_ids.npy", np.zeros((2, 5), dtype=np.int64))
    with pytest.raises(DatasetFormatError, match=r"1-D integer array .* shape \(2, 5\)"):
        CocoIdSplit(coco_root, "test")


def test_missing_pycocotools_says_how_to_install_it_or_use_the_karpathy_json(coco_root, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # makes `import pycocotools...` raise ImportError
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    with pytest.raises(ImportError, match=r"pip install pycocotools.*dataset_coco\.json"):
        CocoIdSplit(coco_root, "test")
    cfg = load_preset("daim_coco").data
    with pytest.raises(ImportError, match="pip install pycocotools"):
        load_split(cfg, coco_root, "test")


def test_data_identity_of_the_id_layout_counts_the_ids(coco_root):
    from daimlib.data import data_identity, detect_layout

    ident = data_identity(coco_root)
    ann = coco_root / "annotations"
    assert detect_layout(coco_root) == ident["layout"] == "coco_ids"
    assert ident["files"] == sorted(p.name for p in ann.iterdir())
    assert ident["caption_ids"] == {p.name: len(np.load(p)) for p in sorted(ann.glob("*.npy"))}
