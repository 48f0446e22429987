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


class CaptionDataset(Dataset):
    """Training samples, one per caption: ``{image [3,H,W], input_ids [L], attention_mask [L], img_index, caption_index}``."""

    def __init__(self, split: Split, tokenizer, transform, max_len: int = 32):
        self.split, self.transform = split, transform
        self.input_ids, self.attention_mask = tokenize(tokenizer, split.captions, max_len)  # [N, L] each

    def __len__(self) -> int:
        return self.split.n_captions

    def __getitem__(self, j: int) -> dict:
        i = int(self.split.img_of_caption[j])
        return {
            "image": self.transform(load_image(self.split.image_paths[i])),
            "input_ids": self.input_ids[j],
            "attention_mask": self.attention_mask[j],
            "img_index": i,
            "caption_index": j,
        }


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
