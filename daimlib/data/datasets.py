"""Torch datasets over a :class:`~daimlib.data.split.Split`, transforms and the batch collate.

Training is caption-level (one sample per caption, as the reference); evaluation loads each image
once (image-level) and each caption once (caption-level), spec section 10 A4.
"""

from __future__ import annotations

import torch
from torch.utils.data import Dataset
from torchvision import transforms as T

from daimlib.data.images import load_image
from daimlib.data.split import Split
from daimlib.data.tokenizer import tokenize


def build_transforms(data_cfg, train: bool):
    """Train: RandomResizedCrop(img_size, crop_scale) + optional flip; eval: Resize + CenterCrop.

    Both normalise with ``data_cfg.mean``/``std`` (ImageNet by default; spec section 6).
    """
    norm = [T.ToTensor(), T.Normalize(list(data_cfg.mean), list(data_cfg.std))]
    if train:
        ops = [T.RandomResizedCrop(data_cfg.img_size, scale=tuple(data_cfg.crop_scale))]
        if data_cfg.hflip:
            ops.append(T.RandomHorizontalFlip())
        return T.Compose(ops + norm)
    return T.Compose([T.Resize(data_cfg.resize), T.CenterCrop(data_cfg.img_size)] + norm)


CACHE_BYTES = 256 * 2**20  # decoded images kept in memory when the whole split fits in this


class CaptionDataset(Dataset):
    """Training samples, one per caption: ``{image [3,H,W], input_ids [L], attention_mask [L], img_index, caption_index}``.

    ``cache_images``: keep each decoded image in memory after its first read, so an image with five
    captions is decoded once per run instead of five times an epoch. ``"auto"`` (default) caches when
    the split's decoded images (estimated from the first one) fit in :data:`CACHE_BYTES` (the demo
    data: 49 MB; Flickr30K or COCO: never). The random crop is still drawn per sample from the
    decoded image, so the batches are exactly those of an uncached run.
    """

    def __init__(
        self, split: Split, tokenizer, transform, max_len: int = 32, cache_images: bool | str = "auto"
    ):
        self.split, self.transform = split, transform
        self.input_ids, self.attention_mask = tokenize(tokenizer, split.captions, max_len)  # [N, L] each
        if cache_images == "auto":
            cache_images = split.n_images > 0 and _decoded_bytes(split) <= CACHE_BYTES
        self._cache: dict[int, object] | None = {} if cache_images else None

    def __len__(self) -> int:
        return self.split.n_captions

    def _image(self, i: int):
        if self._cache is None:
            return load_image(self.split.image_paths[i])
        im = self._cache.get(i)
        if im is None:
            im = self._cache[i] = load_image(self.split.image_paths[i])
        return im

    def __getitem__(self, j: int) -> dict:
        i = int(self.split.img_of_caption[j])
        return {
            "image": self.transform(self._image(i)),
            "input_ids": self.input_ids[j],
            "attention_mask": self.attention_mask[j],
            "img_index": i,
            "caption_index": j,
        }


def _decoded_bytes(split: Split) -> int:
    """Estimated memory of the split's images decoded as RGB, from the size of its first image."""
    from PIL import Image

    try:
        with Image.open(split.image_paths[0]) as im:
            w, h = im.size
    except (OSError, ValueError):
        return CACHE_BYTES + 1  # unreadable here: let the loader report it, and do not cache
    return 3 * w * h * split.n_images


class ImageDataset(Dataset):
    """Each image of the split once: ``{image [3,H,W], img_index}``."""

    def __init__(self, split: Split, transform):
        self.split, self.transform = split, transform

    def __len__(self) -> int:
        return self.split.n_images

    def __getitem__(self, i: int) -> dict:
        return {"image": self.transform(load_image(self.split.image_paths[i])), "img_index": i}


class TextDataset(Dataset):
    """Each caption of the split once: ``{input_ids, attention_mask, img_index, caption_index}``."""

    def __init__(self, split: Split, tokenizer, max_len: int = 32):
        self.split = split
        self.input_ids, self.attention_mask = tokenize(tokenizer, split.captions, max_len)  # [N, L] each

    def __len__(self) -> int:
        return self.split.n_captions

    def __getitem__(self, j: int) -> dict:
        return {
            "input_ids": self.input_ids[j],
            "attention_mask": self.attention_mask[j],
            "img_index": int(self.split.img_of_caption[j]),
            "caption_index": j,
        }


def collate(items: list[dict]) -> dict:
    """Stack samples into the batch dict ``DAIM.forward`` takes.

    Keys (those present): ``images [B,3,H,W]``, ``input_ids [B,L]``, ``attention_mask [B,L]``,
    ``img_index [B]``, ``caption_index [B]``.
    """
    if not items:
        raise ValueError("collate() got an empty list of samples")
    out = {}
    for key, name in (("image", "images"), ("input_ids", "input_ids"), ("attention_mask", "attention_mask")):
        if key in items[0]:
            out[name] = torch.stack([it[key] for it in items])
    for key in ("img_index", "caption_index"):
        if key in items[0]:
            out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    return out
