"""MSCOCO in the VSE++/SCAN id layout, the one the DAIM reference reads (spec section 8).

::

    <root>/
      annotations/captions_train2014.json   COCO caption annotations (read with pycocotools)
      annotations/captions_val2014.json
      annotations/coco_train_ids.npy        caption (annotation) ids of each split
      annotations/coco_restval_ids.npy      optional: folded into train when asked for
      annotations/coco_dev_ids.npy          5 consecutive ids per image
      annotations/coco_test_ids.npy         5 consecutive ids per image
      images/train2014/  images/val2014/

Splits as the reference uses them: ``train`` = the train ids (captions and images of train2014);
``restval`` = the restval ids (val2014); ``val`` = the first 5,000 dev ids (1K images); ``dev`` = all
dev ids; ``test`` = the first 25,000 test ids (5K images); the last three read val2014.

The result is a :class:`~daimlib.data.split.Split`, the type the Karpathy loader returns too
(``image_paths``, ``captions``, ``img_of_caption`` with the captions of one image consecutive,
``image_ids`` = COCO image ids, ``caption_ids`` = annotation ids), so the datasets, the evaluation
and training use it unchanged. The reference assumed
without checking that the dev/test ids come in blocks of 5 per image (spec section 10, A6); here a
split read with ``captions_per_image=5`` verifies it and names the offending image.

pycocotools is imported only when this loader runs; the Karpathy JSON (``dataset_coco.json``) needs
no extra package.
"""

from __future__ import annotations

import contextlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from daimlib.data.images import DATA_HELP, DatasetFormatError
from daimlib.data.split import Split, clean_caption

COCO_IDS = "coco_ids"  # DataConfig.json_name value that selects this loader
ANNOTATIONS_DIR = "annotations"
ID_FILES = {
    "train": "coco_train_ids.npy",
    "restval": "coco_restval_ids.npy",
    "val": "coco_dev_ids.npy",
    "dev": "coco_dev_ids.npy",
    "test": "coco_test_ids.npy",
}
# which year's annotations and image folder hold each split's captions
SOURCE = {"train": "train2014", "restval": "val2014", "val": "val2014", "dev": "val2014", "test": "val2014"}
# the reference's protocol: val = first 5000 dev ids (1K images), test = first 25000 test ids (5K images)
PROTOCOL_CAPTIONS = {"val": 5000, "test": 25000}


def _coco_class():
    try:
        from pycocotools.coco import COCO
    except ImportError as e:
        raise ImportError(
            "the VSE++ COCO id layout (coco_*_ids.npy + captions_*2014.json) is read with pycocotools, "
            "which is not installed: `pip install pycocotools` (or `pip install -e '.[dev]'`), or use "
            f"Karpathy's dataset_coco.json instead (data.json_name); {DATA_HELP}"
        ) from e
    return COCO


def _load_annotations(path: Path):
    """``pycocotools.coco.COCO`` of one captions file, its progress prints silenced."""
    COCO = _coco_class()
    if not path.is_file():
        raise FileNotFoundError(
            f"COCO caption annotations not found: expected {path.name} in {path.parent} "
            f"(from the COCO 2014 annotations download); {DATA_HELP}"
        )
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return COCO(str(path))
    except (json.JSONDecodeError, UnicodeDecodeError, AssertionError, KeyError, TypeError) as e:
        raise DatasetFormatError(
            f"{path.name} is not a COCO annotation file ({type(e).__name__}: {e}); expected an object with "
            f"'images' (id, file_name) and 'annotations' (id, image_id, caption); re-download it"
        ) from e


def _load_ids(path: Path) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(
            f"caption id file not found: expected {path.name} in {path.parent} (VSE++/SCAN COCO split "
            f"files); {DATA_HELP}"
        )
    try:
        ids = np.load(path, allow_pickle=False)
    except ValueError as e:
        raise DatasetFormatError(f"{path.name} is not a NumPy array of caption ids ({e})") from e
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise DatasetFormatError(
            f"{path.name}: expected a 1-D integer array of caption (annotation) ids, found shape "
            f"{ids.shape} and dtype {ids.dtype}"
        )
    return ids


def _grouped_captions(name: str, annotation_dir: Path, coco, limits, captions_per_image) -> dict:
    """``{image id: [(annotation id, caption)]}`` of one split, in id-file order (blocks checked)."""
    id_file = ID_FILES[name]
    ids = _load_ids(annotation_dir / id_file)
    if name in limits:
        ids = ids[: limits[name]]
    runs = _image_runs(ids, coco, id_file, SOURCE[name])
    if captions_per_image is not None:
        _check_blocks(runs, captions_per_image, coco, id_file, name)
    grouped: dict[int, list[tuple[int, str]]] = {}
    for image_id, anns in runs:
        grouped.setdefault(image_id, []).extend(anns)
    return grouped


def load_coco_ids(
    root: str | Path,
    split: str | tuple[str, ...] | list[str],
    image_root: str | Path | None = None,
    captions_per_image: int | None = 5,
    check_files: bool = True,
    caption_limits: dict[str, int] | None = None,
    annotations_dir: str = ANNOTATIONS_DIR,
) -> Split:
    """One split (or several, e.g. ``("train", "restval")``) of COCO in the VSE++ id layout.

    Args:
        root: the COCO data root (holding ``annotations/`` and the image folder).
        split: ``train``, ``restval``, ``val``, ``dev`` or ``test``, or a tuple of them.
        image_root: the image folder holding ``train2014/`` and ``val2014/`` (default ``root/images``).
        captions_per_image: ``5`` (val/test protocol): the ids must come in blocks of exactly 5
            consecutive ids per image, each image in one block, else a :class:`DatasetFormatError`
            names the image; ``None`` keeps every caption, grouped by image (training).
        check_files: verify that every image file exists.
        caption_limits: how many leading ids of a split are used (default: the reference's
            ``val`` = 5000, ``test`` = 25000; other splits use all).
        annotations_dir: annotation folder inside ``root``.

    Images are ordered by first appearance in the id list(s); ``img_of_caption`` names each
    caption's image and the captions of one image are consecutive (in id-file order).
    """
    root = Path(root)
    splits = (split,) if isinstance(split, str) else tuple(split)
    unknown = [s for s in splits if s not in ID_FILES]
    if unknown:
        raise ValueError(
            f"split {unknown[0]!r} is not a split of the VSE++ COCO id layout; use one of "
            f"{', '.join(ID_FILES)} (or a tuple such as ('train', 'restval'))"
        )
    _coco_class()  # fail on a missing pycocotools before touching any file
    annotation_dir = root / annotations_dir
    image_root = root / "images" if image_root is None else Path(image_root)
    if not image_root.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {image_root.name} (expected at {image_root}, holding "
            f"train2014/ and val2014/); set data.image_dir or the data root; {DATA_HELP}"
        )
    limits = PROTOCOL_CAPTIONS if caption_limits is None else caption_limits
    cocos: dict[str, object] = {}
    image_paths: list[str] = []
    captions: list[str] = []
    image_ids: list = []
    meta: list[dict] = []
    caption_ids: list[int] = []  # annotation id of every caption
    img_of_caption: list[int] = []
    for name in splits:
        year = SOURCE[name]
        if year not in cocos:
            cocos[year] = _load_annotations(annotation_dir / f"captions_{year}.json")
        coco = cocos[year]
        grouped = _grouped_captions(name, annotation_dir, coco, limits, captions_per_image)
        for image_id, anns in grouped.items():
            n = len(image_paths)
            image_paths.append(str(image_root / year / coco.imgs[image_id]["file_name"]))
            image_ids.append(image_id)
            meta.append({"split": name, "cocoid": image_id})
            caption_ids.extend(a for a, _ in anns)
            captions.extend(c for _, c in anns)
            img_of_caption.extend([n] * len(anns))
    out = Split(
        image_paths=image_paths,
        captions=captions,
        img_of_caption=torch.tensor(img_of_caption, dtype=torch.long),
        image_ids=image_ids,
        splits=splits,
        layout="coco_ids",
        dataset="coco",
        source=annotation_dir,
        image_root=image_root,
        meta=meta,
        caption_ids=caption_ids,
    )
    if check_files:
        out.check_files()
    return out


def CocoIdSplit(  # noqa: N802 - the former class name, kept as the loader's name
    root: str | Path,
    split: str | tuple[str, ...] | list[str],
    image_dir: str = "images",
    captions_per_image: int | None = 5,
    check_files: bool = True,
    caption_limits: dict[str, int] | None = None,
    annotations_dir: str = ANNOTATIONS_DIR,
) -> Split:
    """:func:`load_coco_ids` under the name of the former class (``image_dir`` inside ``root``)."""
    return load_coco_ids(
        root, split, Path(root) / image_dir, captions_per_image, check_files, caption_limits, annotations_dir
    )


def _image_runs(ids: np.ndarray, coco, id_file: str, year: str) -> list[tuple[int, list[tuple[int, str]]]]:
    """Maximal runs of consecutive ids of one image: ``[(image id, [(ann id, caption), ...]), ...]``."""
    runs: list[tuple[int, list[tuple[int, str]]]] = []
    for pos, ann_id in enumerate(ids.tolist()):
        ann = coco.anns.get(ann_id)
        if ann is None:
            raise DatasetFormatError(
                f"{id_file}: caption id {ann_id} (position {pos}) is not an annotation of "
                f"captions_{year}.json; the id file and the annotations come from different releases"
            )
        image_id = ann.get("image_id")
        if image_id not in coco.imgs or "file_name" not in coco.imgs[image_id]:
            raise DatasetFormatError(
                f"captions_{year}.json: annotation {ann_id} names image {image_id!r}, which is not in "
                f"its 'images' list (with a 'file_name')"
            )
        caption = ann.get("caption")
        text = clean_caption(caption) if isinstance(caption, str) else ""
        if not text:
            raise DatasetFormatError(
                f"captions_{year}.json: annotation {ann_id} (image {image_id}) has "
                f"{'an empty (or invisible-only)' if isinstance(caption, str) else 'no'} caption"
            )
        if runs and runs[-1][0] == image_id:
            runs[-1][1].append((ann_id, text))
        else:
            runs.append((image_id, [(ann_id, text)]))
    return runs


def _check_blocks(runs, per_image: int, coco, id_file: str, split: str) -> None:
    """The val/test layout: exactly ``per_image`` consecutive ids per image, each image once (A6)."""
    seen: dict[int, int] = {}
    pos = 0
    for image_id, anns in runs:
        fname = coco.imgs[image_id]["file_name"]
        if image_id in seen:
            raise DatasetFormatError(
                f"{id_file}: image {image_id} ({fname}) has caption ids at positions {seen[image_id]} and "
                f"{pos} that are not consecutive; the {split} protocol needs the {per_image} ids of an "
                f"image in one block (VSE++ layout)"
            )
        if len(anns) != per_image:
            raise DatasetFormatError(
                f"{id_file}: image {image_id} ({fname}) has {len(anns)} consecutive caption ids at "
                f"positions {pos}-{pos + len(anns) - 1}; the {split} protocol needs exactly {per_image} "
                f"consecutive ids per image (VSE++ layout)"
            )
        seen[image_id] = pos
        pos += len(anns)
