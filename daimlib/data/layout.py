"""Which dataset a folder holds, decided by its files: the data decides the format, the preset the model.

Layouts (``docs/field_notes.md`` section 2; ``data/README.md``):

=========  =======================================  ===============================================
layout     what identifies it                       image folder (first one present)
=========  =======================================  ===============================================
demo       ``dataset_demo.json``                    ``images/``
f30k       ``dataset_flickr30k.json``               ``flickr30k-images/``, ``images/``
coco       ``dataset_coco.json``                    ``images/``, the root (``train2014/``, ``val2014/``)
coco_ids   ``annotations/coco_*_ids.npy``           ``images/`` (``train2014/``, ``val2014/``)
f8k        ``dataset_flickr8k.json``                ``Flicker8k_Dataset/``, ``Flickr8k_Dataset/``, ``images/``
=========  =======================================  ===============================================

A folder with the files of two layouts is ambiguous: :func:`load_split` then needs ``data.layout``
(or ``data.json_name``) to say which one is meant. ``data.image_dir`` overrides the image folder.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from daimlib.config import DataConfig
from daimlib.data.coco_ids import ID_FILES, load_coco_ids
from daimlib.data.karpathy import DATA_HELP, DatasetFormatError, load_karpathy, read_karpathy_json
from daimlib.data.split import Split
from daimlib.paths import sha256_file


@dataclass(frozen=True)
class Layout:
    """One dataset layout: the file that identifies it and where its images live."""

    name: str
    marker: str  # the Karpathy JSON, or the annotations folder of the id layout
    image_dirs: tuple[str, ...]  # candidate image folders inside the root, first existing wins
    needs: str  # what a folder of this layout holds, for error messages
    year_folders: bool = False  # images under <image folder>/train2014 and val2014


LAYOUTS: dict[str, Layout] = {
    "demo": Layout(
        "demo",
        "dataset_demo.json",
        ("images",),
        "dataset_demo.json + images/ (python -m daimlib make-demo-data --root DIR)",
    ),
    "f30k": Layout(
        "f30k",
        "dataset_flickr30k.json",
        ("flickr30k-images", "images"),
        "dataset_flickr30k.json + flickr30k-images/ (or images/)",
    ),
    "coco": Layout(
        "coco",
        "dataset_coco.json",
        ("images", "."),
        "dataset_coco.json + images/train2014/ and images/val2014/ (or train2014/, val2014/ in the root)",
        year_folders=True,
    ),
    "coco_ids": Layout(
        "coco_ids",
        "annotations",
        ("images",),
        "annotations/coco_{train,dev,test}_ids.npy + annotations/captions_{train,val}2014.json "
        "+ images/train2014/ and images/val2014/ (VSE++ id layout)",
        year_folders=True,
    ),
    "f8k": Layout(
        "f8k",
        "dataset_flickr8k.json",
        ("Flicker8k_Dataset", "Flickr8k_Dataset", "images"),
        "dataset_flickr8k.json + Flicker8k_Dataset/ (or images/)",
    ),
}
JSON_LAYOUT = {lay.marker: name for name, lay in LAYOUTS.items() if lay.marker.endswith(".json")}


def has_coco_id_layout(root: str | Path) -> bool:
    """Whether ``root/annotations`` holds any ``coco_*_ids.npy`` file of the VSE++ layout."""
    folder = Path(root) / LAYOUTS["coco_ids"].marker
    return any((folder / name).is_file() for name in set(ID_FILES.values()))


def _present(root: Path) -> list[str]:
    found = [name for name, lay in LAYOUTS.items() if name != "coco_ids" and (root / lay.marker).is_file()]
    if has_coco_id_layout(root):
        found.append("coco_ids")
    return found


def _needs_listing() -> str:
    return "; ".join(f"{name}: {lay.needs}" for name, lay in LAYOUTS.items())


def _folder_listing(root: Path, limit: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in root.iterdir())
    if not names:
        return "the folder is empty"
    more = f" and {len(names) - limit} more" if len(names) > limit else ""
    return "it holds " + ", ".join(names[:limit]) + more


def detect_layout(root: str | Path) -> str:
    """The layout of a dataset folder: ``"demo"``, ``"f30k"``, ``"coco"``, ``"coco_ids"`` or ``"f8k"``.

    Raises ``FileNotFoundError`` when the folder is missing or holds no layout's files, and
    :class:`DatasetFormatError` when it holds the files of several (set ``data.layout``); both
    messages list what was found and what each layout needs.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}; {DATA_HELP}")
    found = _present(root)
    if len(found) == 1:
        return found[0]
    if not found:
        raise FileNotFoundError(
            f"no dataset layout recognised in {root.name}/ ({_folder_listing(root)}). Each layout needs: "
            f"{_needs_listing()}; {DATA_HELP}"
        )
    raise DatasetFormatError(
        f"{root.name}/ holds the files of several dataset layouts ({', '.join(found)}); say which one to "
        f"read with --set data.layout=NAME (one of {', '.join(found)}), or move the other files away"
    )


@dataclass(frozen=True)
class ResolvedLayout:
    """A folder's layout with its files: what :func:`load_split` reads."""

    name: str
    root: Path
    source: Path  # the Karpathy JSON, or the annotations folder of the id layout
    image_root: Path


def _image_root(root: Path, lay: Layout, image_dir: str | None) -> Path:
    if image_dir is not None:
        return root / image_dir
    for cand in lay.image_dirs:
        folder = root / cand
        if lay.year_folders:
            if (folder / "train2014").is_dir() or (folder / "val2014").is_dir():
                return folder
        elif folder.is_dir():
            return folder
    return root / lay.image_dirs[0]  # missing: the split loader names it


def resolve_layout(root: str | Path, data_cfg=None) -> ResolvedLayout:
    """The layout of ``root`` and its files, honouring ``data.layout``, ``data.json_name`` and
    ``data.image_dir`` of a :class:`~daimlib.config.DataConfig` when they are set."""
    root = Path(root)
    layout = getattr(data_cfg, "layout", None)
    json_name = getattr(data_cfg, "json_name", None)
    image_dir = getattr(data_cfg, "image_dir", None)
    if layout is not None and layout not in LAYOUTS:
        raise ValueError(
            f"data.layout {layout!r} is not a layout; use one of {', '.join(LAYOUTS)} or None (detect)"
        )
    if json_name == "coco_ids":  # the former way to select the id layout
        layout, json_name = "coco_ids", None
    if json_name is not None:
        json_path = root / json_name
        if not json_path.is_file():
            raise FileNotFoundError(
                f"data.json_name is {json_name!r} but {json_name} is not in {root.name}/ "
                f"({_folder_listing(root) if root.is_dir() else 'the folder does not exist'}); "
                f"unset it to detect the layout; {DATA_HELP}"
            )
        name = layout or JSON_LAYOUT.get(json_name, "f30k")
        return ResolvedLayout(name, root, json_path, _image_root(root, LAYOUTS[name], image_dir))
    if layout is None:
        layout = detect_layout(root)
    elif not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root}; {DATA_HELP}")
    lay = LAYOUTS[layout]
    source = root / lay.marker
    if layout == "coco_ids" and not has_coco_id_layout(root):
        raise FileNotFoundError(f"data.layout is 'coco_ids' but {root.name}/ lacks {lay.needs}; {DATA_HELP}")
    if layout != "coco_ids" and not source.is_file():
        raise FileNotFoundError(
            f"data.layout is {layout!r} but {lay.marker} is not in {root.name}/ ({_folder_listing(root)}); "
            f"that layout needs {lay.needs}; {DATA_HELP}"
        )
    return ResolvedLayout(layout, root, source, _image_root(root, lay, image_dir))


def annotation_digest(source: str | Path) -> tuple[list[Path], str]:
    """The annotation files of a layout's source and their sha256: a Karpathy JSON's own (what
    ``sha256sum`` prints); for the COCO id layout's folder, over the names and sha256s of its .npy /
    .json files in name order. The one digest of the data, for runs and for results."""
    source = Path(source)
    if not source.is_dir():
        return [source], sha256_file(source)
    files = sorted(p for p in source.iterdir() if p.suffix in (".npy", ".json"))
    h = hashlib.sha256()
    for f in files:
        h.update(f.name.encode() + b"\0" + sha256_file(f).encode())
    return files, h.hexdigest()


def data_identity(root: str | Path, cfg=None) -> dict:
    """What identifies the data in ``root``, for run reuse and for results: ``{"layout", "files" (names),
    "sha256" (of the annotation file; of the id files' names and sha256s), "images" ({split: count}, Karpathy layouts) or
    "caption_ids" ({id file: count}, the COCO id layout), "n_images"}``. Reads the split files only,
    no image; the same data copied elsewhere has the same identity."""
    res = resolve_layout(root, _data_cfg(cfg))
    files, digest = annotation_digest(res.source)
    out = {"layout": res.name, "files": [f.name for f in files], "sha256": digest}
    if res.name == "coco_ids":
        out["caption_ids"] = {
            f.name: int(np.load(f, mmap_mode="r").shape[0]) for f in files if f.suffix == ".npy"
        }
        out["n_images"] = None
        return out
    counts: dict[str, int] = {}
    for rec in read_karpathy_json(res.source)["images"]:
        split = rec.get("split") if isinstance(rec, dict) else None
        counts[str(split)] = counts.get(str(split), 0) + 1
    out["images"] = counts
    out["n_images"] = sum(counts.values())
    return out


def describe_data(root: str | Path, cfg=None) -> str:
    """One line saying which dataset a folder holds: layout, split file and split sizes.

    The digest that tells two copies apart is ``data_identity(root)["sha256"]`` (run records keep it);
    this line is for reading, so it leaves the hash out."""
    ident = data_identity(root, cfg)
    sizes = ident.get("images") or ident.get("caption_ids") or {}
    unit = "images" if "images" in ident else "caption ids"
    parts = " / ".join(f"{k} {v:,}" for k, v in sizes.items())
    return f"{ident['layout']} layout ({', '.join(ident['files'])}): {parts} {unit}"


def _data_cfg(cfg):
    """A DataConfig from a DAIMConfig, a DataConfig or None (the defaults)."""
    if cfg is None:
        return DataConfig()
    return cfg.data if hasattr(cfg, "data") and dataclasses.is_dataclass(cfg.data) else cfg


def load_split(root, split="test", cfg=None, check_files: bool = True) -> Split:
    """One split of the dataset in ``root``, its layout detected from the folder (:func:`detect_layout`).

    ``split``: ``"train"``, ``"val"`` or ``"test"`` (mapped through ``data.train_split`` ...) or a
    literal split name of the layout (``restval``; the id layout also has ``dev``). Training keeps
    every caption and folds COCO's ``restval`` in when ``data.use_restval``; val/test keep exactly 5
    captions per image (protocol, ``docs/field_notes.md`` section 1). ``cfg``: a
    :class:`~daimlib.config.DAIMConfig` or its ``DataConfig`` (``None``: defaults).

    Images listed twice (the same file or identical bytes) are an error in val/test and a warning in
    training (``check_files=False`` skips both file checks). The former call
    ``load_split(cfg.data, root, "test")`` still works.
    """
    if dataclasses.is_dataclass(root):  # legacy order: (data_cfg, data_root, split_name)
        root, split, cfg = split, ("test" if cfg is None else cfg), root
    data_cfg = _data_cfg(cfg)
    res = resolve_layout(root, data_cfg)
    mapped = {"train": data_cfg.train_split, "val": data_cfg.val_split, "test": data_cfg.test_split}
    name = mapped.get(split, split)
    is_train = split == "train" or name == data_cfg.train_split
    splits: tuple[str, ...] = (name, "restval") if is_train and data_cfg.use_restval else (name,)
    per_image = None if is_train else 5
    if res.name == "coco_ids":
        out = load_coco_ids(
            res.root, splits, image_root=res.image_root, captions_per_image=per_image, check_files=check_files
        )
    else:
        out = load_karpathy(
            res.source,
            res.image_root,
            splits,
            captions_per_image=per_image,
            check_files=check_files,
            layout=res.name,
        )
    if check_files:
        out.check_duplicates(error=not is_train)
    return out
