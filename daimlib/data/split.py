"""The one type every loader returns: a split's image paths, captions and each caption's image.

Loaders live beside it (``karpathy.py`` for the Karpathy JSON, ``coco_ids.py`` for the VSE++ COCO id
layout, ``layout.py`` for the folder detection that picks one); none subclasses another. Captions of
one image are consecutive and ``img_of_caption`` names each caption's image explicitly (the
reference's ``[::5]`` assumption, spec section 10 A6, is never needed).
"""

from __future__ import annotations

import dataclasses
import hashlib
import unicodedata
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import torch

from daimlib.data.images import DATA_HELP, DatasetFormatError


@dataclass(eq=False)
class Split:
    """One split (or several folded together) of a dataset.

    Attributes:
        image_paths: one file path per image.
        captions: every caption, those of one image consecutive.
        img_of_caption: ``[n_captions]`` int64, the image index of each caption.
        image_ids: the dataset's id of each image (Karpathy ``imgid``/``cocoid``, COCO image id).
        splits: the split names read, e.g. ``("train", "restval")``.
        layout: the folder layout it was read from (``demo``, ``f30k``, ``coco``, ``coco_ids``, ``f8k``).
        dataset: the JSON's ``dataset`` field (``flickr30k``, ``coco`` ...), or ``coco`` for the id layout.
        source: the Karpathy JSON or the annotations folder it was read from.
        image_root: the image folder.
        meta: extra per-image fields (e.g. the demo's ``scene``).
        caption_meta: extra per-caption fields (e.g. the demo's ``claims``), ``None`` when there are none.
        caption_ids: annotation id of every caption (COCO id layout), else ``None``.
    """

    image_paths: list[str]
    captions: list[str]
    img_of_caption: torch.Tensor
    image_ids: list
    splits: tuple[str, ...]
    layout: str
    dataset: str
    source: Path
    image_root: Path
    meta: list[dict] = field(default_factory=list)
    caption_meta: list[dict] | None = None
    caption_ids: list[int] | None = None

    def __post_init__(self) -> None:
        if len(self.img_of_caption) != len(self.captions):
            raise ValueError(
                f"img_of_caption has {len(self.img_of_caption)} entries for {len(self.captions)} captions"
            )

    @property
    def json_path(self) -> Path:
        """Where the split was read from (the name the former ``KarpathySplit`` used)."""
        return self.source

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

    def check_files(self) -> None:
        """Raise if image files are missing, naming how many and the first few."""
        missing = [p for p in self.image_paths if not Path(p).is_file()]
        if missing:
            names = ", ".join(_rel(p, self.image_root) for p in missing[:5])
            raise FileNotFoundError(
                f"{len(missing)} of {len(self.image_paths)} image files of split {'/'.join(self.splits)} are "
                f"missing under {self.image_root.name}/, e.g. {names}; check data.image_dir ({DATA_HELP})"
            )

    def duplicate_images(self, content: bool = True) -> list[list[int]]:
        """Groups of image indices that name the same file, or (``content``) files of identical bytes.

        Only files of equal size are hashed, so a split without duplicates costs one ``stat`` per
        image; ``content=False`` compares resolved paths only (for 100k-image training splits, where
        equal JPEG sizes are common). Missing files are skipped (:meth:`check_files` reports them).
        """
        if not content:
            groups: dict[str, list[int]] = {}
            for i, p in enumerate(self.image_paths):
                groups.setdefault(str(Path(p).resolve()), []).append(i)
            return sorted(g for g in groups.values() if len(g) > 1)
        by_size: dict[int, list[int]] = {}
        for i, p in enumerate(self.image_paths):
            try:
                by_size.setdefault(Path(p).stat().st_size, []).append(i)
            except OSError:
                continue
        groups = {}
        for members in by_size.values():
            if len(members) < 2:
                continue
            for i in members:
                digest = hashlib.sha256(Path(self.image_paths[i]).read_bytes()).hexdigest()
                groups.setdefault(digest, []).append(i)
        return sorted(g for g in groups.values() if len(g) > 1)

    def check_duplicates(self, error: bool) -> None:
        """Refuse (``error=True``: val/test) or warn loudly about images listed twice in the split.

        Two records of one image (the same file, or a copy) make each other's captions negatives and
        change recall silently (97.6 vs 84.0 measured in issue 13); training only sees a few noisy
        negatives, so there it is a warning (and only the same file listed twice is looked for).
        """
        dups = self.duplicate_images(content=error)
        if not dups:
            return
        names = "; ".join(" = ".join(_rel(self.image_paths[i], self.image_root) for i in g) for g in dups[:3])
        msg = (
            f"split {'/'.join(self.splits)} of {self.source.name}: {len(dups)} images are listed more than once "
            f"(the same file or identical bytes: {names}{' ...' if len(dups) > 3 else ''})"
        )
        if error:
            raise DatasetFormatError(
                msg
                + "; recall on it would not follow the protocol. Remove the duplicate records from the split"
            )
        warnings.warn(msg + "; their captions act as false negatives of each other in training", stacklevel=3)

    def __repr__(self) -> str:
        # the loader's name, as printed before the two loaders shared this type
        head = (
            "CocoIdSplit(coco ids"
            if self.layout == "coco_ids"
            else f"KarpathySplit({self.dataset or self.source.name}"
        )
        return f"{head}, split={'/'.join(self.splits)}, {self.n_images} images, {self.n_captions} captions)"


def first_images(split: Split, n: int) -> Split:
    """The first ``n`` images of ``split`` with their captions (a smaller validation set: the
    reference validates COCO on the first 5,000 dev captions = 1,000 images; ``train.val_images``)."""
    if n >= split.n_images:
        return split
    keep = split.img_of_caption < n  # [n_captions]; an image's captions are consecutive
    idx = keep.nonzero().flatten().tolist()
    return dataclasses.replace(
        split,
        image_paths=split.image_paths[:n],
        captions=[split.captions[j] for j in idx],
        img_of_caption=split.img_of_caption[keep].clone(),
        image_ids=split.image_ids[:n],
        meta=split.meta[:n],
        caption_meta=None if split.caption_meta is None else [split.caption_meta[j] for j in idx],
        caption_ids=None if split.caption_ids is None else [split.caption_ids[j] for j in idx],
    )


def clean_caption(text: str) -> str:
    """A caption without invisible characters: control characters and the zero-width space become
    spaces, other format characters (joiners, BOM, bidi marks; Unicode category Cf) are removed, runs of
    whitespace collapse to one space, and the ends are stripped. ``""`` means nothing visible is left."""
    out = []
    for ch in text:
        cat = unicodedata.category(ch)
        if ch == "\u200b":  # zero-width space: a word break
            out.append(" ")
        elif cat != "Cf":
            out.append(" " if cat in ("Cc", "Zl", "Zp") else ch)
    return " ".join("".join(out).split())


def _rel(path: str | Path, root: Path) -> str:
    try:
        return str(Path(path).relative_to(root))
    except ValueError:
        return Path(path).name
