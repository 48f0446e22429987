"""Karpathy-format splits (``dataset_flickr30k.json``, ``dataset_coco.json``, ``dataset_flickr8k.json``,
the demo's ``dataset_demo.json``) and a tolerant image loader.

Protocol (``docs/field_notes.md`` sections 1-2): val/test use exactly 5 captions per image
(the first 5 where COCO has 6 or 7); training keeps all (``captions_per_image=None``). Captions
of one image are consecutive and ``img_of_caption`` names each caption's image explicitly (the
reference's ``[::5]`` assumption, spec section 10 A6, is never needed).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from PIL import Image, UnidentifiedImageError

DATA_HELP = "see data/README.md for where the datasets come from and the expected layout"


_STANDARD_SENTENCE_KEYS = {"raw", "tokens", "imgid", "sentid"}


class DatasetFormatError(ValueError):
    """A dataset file exists but does not have the expected content."""


def load_image(path: str | Path) -> Image.Image:
    """Open any image Pillow reads (RGB, L, 1, P, RGBA, LA, CMYK, I;16) as an RGB image.

    Transparent pixels are composited onto white (dropping alpha would expose arbitrary colours).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path.name} (looked in {path.parent}); {DATA_HELP}")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
                im = im.point(lambda v: v / 256).convert("L") if im.mode != "F" else im.convert("L")
            if im.mode == "P" and "transparency" in im.info:
                im = im.convert("RGBA")
            if im.mode in ("RGBA", "LA", "PA"):
                rgba = im.convert("RGBA")
                background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return Image.alpha_composite(background, rgba).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise DatasetFormatError(
            f"cannot read image {path.name}: {e}; the file is corrupt or not an image"
        ) from e


def _caption_text(sentence, i: int, k: int, filename: str) -> str:
    if not isinstance(sentence, dict):
        raise DatasetFormatError(
            f"images[{i}] ({filename}): sentences[{k}] must be an object with 'raw', "
            f"got {type(sentence).__name__}"
        )
    raw = sentence.get("raw")
    if raw is None and isinstance(sentence.get("tokens"), list):
        raw = " ".join(str(t) for t in sentence["tokens"])
    if not isinstance(raw, str):
        raise DatasetFormatError(
            f"images[{i}] ({filename}): sentences[{k}] has neither a 'raw' string nor a 'tokens' list"
        )
    raw = raw.strip()
    if not raw:
        raise DatasetFormatError(
            f"images[{i}] ({filename}): sentences[{k}] is an empty caption; remove it or fix the annotation"
        )
    return raw


def read_karpathy_json(json_path: str | Path) -> dict:
    """Read and minimally validate a Karpathy JSON (``{"images": [...], "dataset": ...}``)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"Karpathy split file not found: expected {json_path.name} in {json_path.parent}. "
            f"Flickr30K needs dataset_flickr30k.json, COCO dataset_coco.json, the demo dataset_demo.json "
            f"(python -m daimlib make-demo-data); {DATA_HELP}"
        )
    try:
        data = json.loads(json_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DatasetFormatError(
            f"{json_path.name} is not valid JSON ({e}); re-download it ({DATA_HELP})"
        ) from e
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise DatasetFormatError(
            f"{json_path.name}: expected an object with an 'images' list (Karpathy format), "
            f"found {type(data).__name__} with keys {sorted(data)[:10] if isinstance(data, dict) else '-'}"
        )
    return data


class KarpathySplit:
    """One split of a Karpathy JSON: image paths, captions and each caption's image index.

    Args:
        json_path: the Karpathy JSON file.
        image_root: folder holding the images (COCO: the folder above ``train2014``/``val2014``,
            whose names come from each record's ``filepath``).
        split: a split name (``train``, ``val``, ``test``, ``restval``) or several, e.g.
            ``("train", "restval")`` to fold COCO's restval into training.
        captions_per_image: keep the first N captions of each image and require at least N
            (protocol: 5 for val/test); ``None`` keeps all (training).
        check_files: verify that every image file exists (fast, and fails early).
    """

    def __init__(
        self,
        json_path: str | Path,
        image_root: str | Path,
        split: str | tuple[str, ...] | list[str],
        captions_per_image: int | None = 5,
        check_files: bool = True,
        data: dict | None = None,
    ):
        self.json_path = Path(json_path)
        self.image_root = Path(image_root)
        data = read_karpathy_json(self.json_path) if data is None else data
        self.dataset = data.get("dataset", "")
        self.splits = (split,) if isinstance(split, str) else tuple(split)
        if not self.image_root.is_dir():
            raise FileNotFoundError(
                f"image folder not found: {self.image_root.name} (expected at "
                f"{self.image_root}); set data.image_dir or the data root; {DATA_HELP}"
            )
        present: dict[str, int] = {}
        records = []
        for i, rec in enumerate(data["images"]):
            if not isinstance(rec, dict):
                raise DatasetFormatError(
                    f"{self.json_path.name}: images[{i}] must be an object, got {type(rec).__name__}"
                )
            for field in ("filename", "split", "sentences"):
                if field not in rec:
                    raise DatasetFormatError(
                        f"{self.json_path.name}: images[{i}] lacks the field {field!r} (keys: {sorted(rec)})"
                    )
            present[rec["split"]] = present.get(rec["split"], 0) + 1
            if rec["split"] in self.splits:
                records.append((i, rec))
        unknown = [s for s in self.splits if s not in present]
        if unknown:
            listing = ", ".join(f"{k} ({v} images)" for k, v in present.items())
            raise ValueError(
                f"split {unknown[0]!r} not in {self.json_path.name}; the splits present are: {listing}"
            )
        self.image_paths: list[str] = []
        self.captions: list[str] = []
        self.image_ids: list = []
        self.meta: list[dict] = []  # extra per-image fields (e.g. the demo's "scene")
        caption_meta: list[dict] = []  # extra per-caption fields (e.g. the demo's "claims")
        img_of_caption: list[int] = []
        for n, (i, rec) in enumerate(records):
            fname = rec["filename"]
            if not isinstance(rec["sentences"], list):
                raise DatasetFormatError(
                    f"{self.json_path.name}: images[{i}] ({fname}): 'sentences' must be a list"
                )
            caps = [_caption_text(s, i, k, fname) for k, s in enumerate(rec["sentences"])]
            if captions_per_image is not None:
                if len(caps) < captions_per_image:
                    raise DatasetFormatError(
                        f"{self.json_path.name}: images[{i}] ({fname}) has {len(caps)} captions; the "
                        f"{'/'.join(self.splits)} protocol needs {captions_per_image} per image"
                    )
                caps = caps[:captions_per_image]
            caption_meta.extend(
                {k: v for k, v in s.items() if k not in _STANDARD_SENTENCE_KEYS}
                for s in rec["sentences"][: len(caps)]
            )
            sub = rec.get("filepath") or ""
            self.image_paths.append(str(self.image_root / sub / fname))
            self.captions.extend(caps)
            img_of_caption.extend([n] * len(caps))
            self.image_ids.append(rec.get("cocoid", rec.get("imgid", i)))
            self.meta.append({k: v for k, v in rec.items() if k not in ("sentences", "filename", "filepath")})
        self.img_of_caption = torch.tensor(img_of_caption, dtype=torch.long)  # [n_cap]
        self.caption_meta = caption_meta if any(caption_meta) else None
        if check_files:
            self.check_files()

    def check_files(self) -> None:
        """Raise if image files are missing, naming how many and the first few."""
        missing = [p for p in self.image_paths if not Path(p).is_file()]
        if missing:
            names = ", ".join(str(Path(p).relative_to(self.image_root)) for p in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.image_paths)} image files of split {'/'.join(self.splits)} are "
                f"missing under {self.image_root.name}/, e.g. {names}; check data.image_dir ({DATA_HELP})"
            )

    @property
    def n_images(self) -> int:
        return len(self.image_paths)

    @property
    def n_captions(self) -> int:
        return len(self.captions)

    def __len__(self) -> int:
        return self.n_images

    def captions_of(self, img_index: int) -> list[str]:
        return [self.captions[j] for j in torch.nonzero(self.img_of_caption == img_index).flatten().tolist()]

    def __repr__(self) -> str:
        return (
            f"KarpathySplit({self.dataset or self.json_path.name}, split={'/'.join(self.splits)}, "
            f"{self.n_images} images, {self.n_captions} captions)"
        )


def load_split(
    data_cfg, data_root: str | Path, split_name: str = "test", check_files: bool = True
) -> KarpathySplit:
    """The split a run uses, from a :class:`~daimlib.config.DataConfig`.

    ``split_name``: ``"train"``, ``"val"`` or ``"test"`` (mapped through ``data_cfg.*_split``) or a
    literal split name. Training keeps every caption and folds COCO's ``restval`` in when
    ``data_cfg.use_restval``; val/test keep exactly 5 captions per image.

    COCO in the VSE++ id layout (``annotations/coco_*_ids.npy`` + ``captions_*2014.json``, spec
    section 8) is read by :class:`~daimlib.data.coco_ids.CocoIdSplit` (needs pycocotools) when
    ``data_cfg.json_name == "coco_ids"``, or when the named Karpathy JSON is absent and the root
    holds that layout.
    """
    root = Path(data_root)
    mapped = {"train": data_cfg.train_split, "val": data_cfg.val_split, "test": data_cfg.test_split}
    split = mapped.get(split_name, split_name)
    is_train = split_name == "train" or split == data_cfg.train_split
    splits: tuple[str, ...] = (split,)
    if is_train and data_cfg.use_restval:
        splits = (split, "restval")
    from daimlib.data.coco_ids import COCO_IDS, CocoIdSplit, has_coco_id_layout

    json_path = root / data_cfg.json_name
    if data_cfg.json_name == COCO_IDS or (not json_path.is_file() and has_coco_id_layout(root)):
        return CocoIdSplit(
            root, splits, image_dir=data_cfg.image_dir,
            captions_per_image=None if is_train else 5, check_files=check_files,
        )  # fmt: skip
    return KarpathySplit(
        root / data_cfg.json_name, root / data_cfg.image_dir, splits,
        captions_per_image=None if is_train else 5, check_files=check_files,
    )  # fmt: skip
