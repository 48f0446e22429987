"""Loader of Karpathy-format splits (``dataset_flickr30k.json``, ``dataset_coco.json``,
``dataset_flickr8k.json``, the demo's ``dataset_demo.json``) into a :class:`~daimlib.data.split.Split`.

Protocol (``docs/field_notes.md`` sections 1-2): val/test use exactly 5 captions per image
(the first 5 where COCO has 6 or 7); training keeps all (``captions_per_image=None``).
Every record is validated before any image is opened: field types, caption text (empty after
removing invisible characters is an error), and image paths that stay inside the image folder.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch

from daimlib.data.images import DATA_HELP, DatasetFormatError, load_image
from daimlib.data.split import Split, clean_caption

__all__ = [
    "DATA_HELP",
    "DatasetFormatError",
    "KarpathySplit",
    "load_image",
    "load_karpathy",
    "read_karpathy_json",
]

_STANDARD_SENTENCE_KEYS = {"raw", "tokens", "imgid", "sentid"}


def caption_text(sentence, i: int, k: int, filename: str) -> str:
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
    try:
        raw.encode("utf-8")
    except UnicodeEncodeError as e:  # valid JSON (\ud800 escapes) but no text: a lone surrogate
        raise DatasetFormatError(
            f"images[{i}] ({filename}): sentences[{k}] holds the lone surrogate U+{ord(raw[e.start]):04X} at "
            f"character {e.start} ({raw[: e.start][-30:]!r} before it), which is not a character (a broken "
            "UTF-16 conversion); fix or remove that caption"
        ) from None
    text = clean_caption(raw)
    if not text:
        what = "an empty caption" if not raw.strip() else f"a caption of invisible characters only ({raw!r})"
        raise DatasetFormatError(
            f"images[{i}] ({filename}): sentences[{k}] is {what}; remove it or fix the annotation"
        )
    return text


def _check_json_values(obj, where: str) -> None:
    """Refuse NaN/Infinity, which Python's JSON reader accepts but no dataset field may hold."""
    if isinstance(obj, float) and not math.isfinite(obj):
        raise DatasetFormatError(f"{where}: holds the non-finite number {obj}; JSON datasets hold none")


def read_karpathy_json(json_path: str | Path) -> dict:
    """Read and minimally validate a Karpathy JSON (``{"images": [...], "dataset": ...}``)."""
    json_path = Path(json_path)
    if not json_path.is_file():
        raise FileNotFoundError(
            f"Karpathy split file not found: expected {json_path.name} in {json_path.parent}. "
            f"Flickr30K needs dataset_flickr30k.json, COCO dataset_coco.json, Flickr8k dataset_flickr8k.json, "
            f"the demo dataset_demo.json (python -m daimlib make-demo-data); python -m daimlib get-data "
            f"flickr8k|flickr30k|coco --out DIR writes the real ones; {DATA_HELP}"
        )
    try:
        data = json.loads(
            json_path.read_text(encoding="utf-8"),
            parse_constant=lambda c: _check_json_values(float(c), json_path.name),
        )
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


def check_record(rec, i: int, name: str) -> None:
    if not isinstance(rec, dict):
        raise DatasetFormatError(f"{name}: images[{i}] must be an object, got {type(rec).__name__}")
    for field in ("filename", "split", "sentences"):
        if field not in rec:
            raise DatasetFormatError(f"{name}: images[{i}] lacks the field {field!r} (keys: {sorted(rec)})")
    for field in ("filename", "split", "filepath"):
        value = rec.get(field, "")
        if not isinstance(value, str):
            raise DatasetFormatError(
                f"{name}: images[{i}] field {field!r} must be a string, found {type(value).__name__} {value!r}"
                + ("; one record belongs to one split" if field == "split" else "")
            )
    if not rec["filename"].strip():
        raise DatasetFormatError(f"{name}: images[{i}] has an empty 'filename'")
    if not isinstance(rec["sentences"], list):
        raise DatasetFormatError(f"{name}: images[{i}] ({rec['filename']}): 'sentences' must be a list")


def _image_path(image_root: Path, rec: dict, i: int, name: str) -> str:
    """``image_root/filepath/filename``, refused when it leaves ``image_root`` (``..``, absolute)."""
    sub, fname = rec.get("filepath") or "", rec["filename"]
    joined = os.path.normpath(os.path.join(image_root, sub, fname))
    root = os.path.normpath(image_root)
    if os.path.isabs(sub) or os.path.isabs(fname) or os.path.commonpath([root, joined]) != root:
        raise DatasetFormatError(
            f"{name}: images[{i}] names the file {os.path.join(sub, fname)!r}, which lies outside the image "
            f"folder {image_root.name}/; image paths must be relative and stay inside it"
        )
    return joined


def load_karpathy(
    json_path: str | Path,
    image_root: str | Path,
    split: str | tuple[str, ...] | list[str],
    captions_per_image: int | None = 5,
    check_files: bool = True,
    data: dict | None = None,
    layout: str = "karpathy",
) -> Split:
    """One split (or several, e.g. ``("train", "restval")``) of a Karpathy JSON.

    Args:
        json_path: the Karpathy JSON file.
        image_root: folder holding the images (COCO: the folder above ``train2014``/``val2014``,
            whose names come from each record's ``filepath``).
        split: a split name (``train``, ``val``, ``test``, ``restval``) or several.
        captions_per_image: keep the first N captions of each image and require at least N
            (protocol: 5 for val/test); ``None`` keeps all (training).
        check_files: verify that every image file exists (fast, and fails early).
        data: the parsed JSON, when already read.
        layout: the layout name recorded in the split (``f30k``, ``coco``, ``f8k``, ``demo``).
    """
    json_path, image_root = Path(json_path), Path(image_root)
    data = read_karpathy_json(json_path) if data is None else data
    splits = (split,) if isinstance(split, str) else tuple(split)
    if not image_root.is_dir():
        raise FileNotFoundError(
            f"image folder not found: {image_root.name} (expected at "
            f"{image_root}); set data.image_dir or the data root; {DATA_HELP}"
        )
    present: dict[str, int] = {}
    records = []
    for i, rec in enumerate(data["images"]):
        check_record(rec, i, json_path.name)
        present[rec["split"]] = present.get(rec["split"], 0) + 1
        if rec["split"] in splits:
            records.append((i, rec))
    unknown = [s for s in splits if s not in present]
    if unknown:
        listing = ", ".join(f"{k} ({v} images)" for k, v in present.items())
        raise ValueError(f"split {unknown[0]!r} not in {json_path.name}; the splits present are: {listing}")
    image_paths, captions, image_ids, meta = [], [], [], []
    caption_meta: list[dict] = []  # extra per-caption fields (e.g. the demo's "claims")
    img_of_caption: list[int] = []
    for n, (i, rec) in enumerate(records):
        fname = rec["filename"]
        caps = [caption_text(s, i, k, fname) for k, s in enumerate(rec["sentences"])]
        if captions_per_image is not None:
            if len(caps) < captions_per_image:
                raise DatasetFormatError(
                    f"{json_path.name}: images[{i}] ({fname}) has {len(caps)} captions; the "
                    f"{'/'.join(splits)} protocol needs {captions_per_image} per image"
                )
            caps = caps[:captions_per_image]
        caption_meta.extend(
            {k: v for k, v in s.items() if k not in _STANDARD_SENTENCE_KEYS}
            for s in rec["sentences"][: len(caps)]
        )
        image_paths.append(_image_path(image_root, rec, i, json_path.name))
        captions.extend(caps)
        img_of_caption.extend([n] * len(caps))
        image_ids.append(rec.get("cocoid", rec.get("imgid", i)))
        meta.append({k: v for k, v in rec.items() if k not in ("sentences", "filename", "filepath")})
    out = Split(
        image_paths=image_paths,
        captions=captions,
        img_of_caption=torch.tensor(img_of_caption, dtype=torch.long),
        image_ids=image_ids,
        splits=splits,
        layout=layout,
        dataset=str(data.get("dataset", "")),
        source=json_path,
        image_root=image_root,
        meta=meta,
        caption_meta=caption_meta if any(caption_meta) else None,
    )
    if check_files:
        out.check_files()
    return out


# The former class name, kept for old code: the same loader (same arguments, returns a Split).
KarpathySplit = load_karpathy
