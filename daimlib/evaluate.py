"""Image-text retrieval evaluation: encode once, blocked similarity, exact ranks by counting.

The protocol is VSE++'s ``evalrank`` (spec section 7). Ranks, recalls, COCO folds and the tie
rule (**ties never help**: a negative tied with the positive ranks above it, default
``ties="pessimistic"``) live in :mod:`daimlib.metrics` and are re-exported here.

Protocols: ``"demo"`` and ``"f30k"`` (F30K 1K: 1,000 images x 5,000 captions) and ``"coco5k"``
score the whole split; ``"coco1k"`` is the mean over 5 sequential 1K folds (:func:`coco_fold5`).
A paper protocol is only that protocol on a split of its size (:data:`PROTOCOL_IMAGES`): on any
other split :func:`evaluate` labels its table with the real sizes (:func:`protocol_label`) and
``strict=True`` refuses (:func:`protocol_problem`); :func:`daimlib.published.paper_block` keeps
such rows out of the paper-format tables.

Features are cached in half precision on a GPU by default (``features="auto"``; the reference
keeps float64 copies): ``features="fp32"`` keeps them in float32 (:func:`encode_split`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from daimlib.data import ImageDataset, TextDataset, build_transforms, collate
from daimlib.metrics import (  # noqa: F401 - re-exported: the protocol's ranking lives in daimlib.metrics
    METRIC_KEYS,
    TIES,
    _as_tensors,
    coco_fold5,
    fold_metrics,
    i2t_t2i_ranks,
    recall_metrics,
)
from daimlib.paths import display_path
from daimlib.published import BENCHMARK_IMAGES, BENCHMARK_NAMES
from daimlib.runtime import amp_settings, loader_workers
from daimlib.tables import PAPER_COLUMNS, results_table  # noqa: F401 - results_table re-exported here

PROTOCOLS = ("demo", "f30k", "coco1k", "coco5k")
PROTOCOL_IMAGES = BENCHMARK_IMAGES  # test images a paper protocol is defined on
PROTOCOL_NAMES = {"demo": "demo", **BENCHMARK_NAMES}
FEATURES = ("auto", "fp32")


def protocol_metrics(sims, img_of_caption, protocol: str = "demo", **kw) -> dict[str, float]:
    """Metrics under a named protocol's rule: ``demo``/``f30k``/``coco5k`` (whole split) or ``coco1k``
    (mean over 5 folds), on whatever split ``sims`` scores (sizes: :func:`protocol_problem`).
    ``kw``: ``ties``, ``chunk`` (:func:`recall_metrics`)."""
    if protocol == "coco1k":
        return coco_fold5(sims, img_of_caption, **kw)
    if protocol in ("demo", "f30k", "coco5k"):
        return recall_metrics(sims, img_of_caption, **kw)
    raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")


def default_protocols(dataset: str) -> tuple[str, ...]:
    """The paper's protocols for a dataset name of ``DataConfig.dataset``."""
    return {"coco": ("coco1k", "coco5k"), "f30k": ("f30k",)}.get(dataset, ("demo",))


def protocol_problem(protocol: str, n_images: int) -> str | None:
    """Why a split of ``n_images`` test images is not ``protocol`` as published (None when it is).

    ``f30k`` (F30K 1K) needs the 1,000 Flickr30K test images, ``coco1k``/``coco5k`` the 5,000 COCO
    test images (COCO 1K = the mean over their 5 folds of 1,000); ``demo`` takes any split.
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")
    need = PROTOCOL_IMAGES.get(protocol)
    if need is None or n_images == need:
        return None
    return (
        f"the {PROTOCOL_NAMES[protocol]} protocol is defined on {need:,} test images but this split has "
        f"{n_images:,}; its numbers are not comparable with published {PROTOCOL_NAMES[protocol]} results"
    )


def protocol_label(protocol: str, n_images: int, n_captions: int) -> str:
    """The table label of a protocol on a split: its paper name when the split has the protocol's
    size (``"F30K 1K"``), else the protocol with the real sizes (``"f30k rule on 100 images x 500
    captions (not F30K 1K)"``)."""
    if protocol_problem(protocol, n_images) is None:
        return (
            PROTOCOL_NAMES[protocol]
            if protocol != "demo"
            else f"demo ({n_images:,} images x {n_captions:,} captions)"
        )
    if protocol == "coco1k":
        return (
            f"coco1k rule (5 folds of {n_images // 5:,} images) on {n_images:,} images x {n_captions:,} "
            "captions (not COCO 1K)"
        )
    return (
        f"{protocol} rule on {n_images:,} images x {n_captions:,} captions (not {PROTOCOL_NAMES[protocol]})"
    )


def split_sizes(split) -> dict[str, int]:
    """``{"n_images", "n_captions"}`` of a split (recorded with every result)."""
    return {"n_images": int(split.n_images), "n_captions": int(split.n_captions)}


def data_identity(split) -> dict:
    """What identifies the data a result was measured on: the layout, the folder (as displayed), the
    annotation file's name and sha256 (a Karpathy JSON; the COCO id layout's folder is named, not
    hashed), the split's name(s) and sizes. A copy of the same data elsewhere has the same hash."""
    json_path = getattr(split, "source", None) or getattr(split, "json_path", None)
    ident: dict = {"layout": getattr(split, "layout", None), "splits": list(getattr(split, "splits", ()) or ()),
                   **split_sizes(split)}  # fmt: skip
    if json_path is not None and Path(json_path).is_file():
        h = hashlib.sha256(Path(json_path).read_bytes()).hexdigest()
        ident.update(data_root=display_path(Path(json_path).parent), annotations=Path(json_path).name,
                     annotations_sha256=h)  # fmt: skip
    image_root = getattr(split, "image_root", None)
    if image_root is not None:
        ident["image_root"] = display_path(image_root)
    return ident


# --- encoding and blocked similarity --------------------------------------------------------


@dataclass
class EncodedSplit:
    """Token features of a split: each image once, each caption once (on ``device``), one tensor
    per similarity level (the paper's three, or as many as the config has)."""

    img_levels: list[torch.Tensor]  # n_levels x [n_img, R_level, D]
    txt_levels: list[torch.Tensor]  # n_levels x [n_cap, L, D]
    txt_lens: torch.Tensor  # [n_cap] caption lengths with [CLS]/[SEP]
    img_of_caption: torch.Tensor  # [n_cap]

    @property
    def n_images(self) -> int:
        return self.img_levels[0].shape[0]

    @property
    def n_captions(self) -> int:
        return self.txt_levels[0].shape[0]

    @property
    def n_levels(self) -> int:
        return len(self.img_levels)


def feature_dtype(features: str, amp_dtype: torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype evaluation features are cached in: ``"fp32"`` -> float32; ``"auto"`` -> the AMP
    dtype on a GPU with AMP, float16 on a GPU without, float32 on a CPU (a documented difference
    from the reference, which keeps float64 copies: README, "Defaults that differ")."""
    if features not in FEATURES:
        raise ValueError(f"features must be one of {list(FEATURES)}, got {features!r}")
    if features == "fp32" or device.type != "cuda":
        return torch.float32
    return amp_dtype if amp_dtype is not None else torch.float16


def _append_levels(parts: list[list[torch.Tensor]], levels, dtype: torch.dtype) -> None:
    """Append one batch's level tensors to ``parts`` (one list per level, created on first use)."""
    if not parts:
        parts.extend([] for _ in levels)
    if len(levels) != len(parts):
        raise ValueError(f"the encoder returned {len(levels)} levels for this batch but {len(parts)} before")
    for k, lv in enumerate(levels):
        parts[k].append(lv.to(dtype))


@torch.no_grad()
def encode_split(
    model,
    split,
    tokenizer,
    data_cfg,
    max_len: int = 32,
    device: str | torch.device | None = None,
    batch_size: int = 128,
    amp: str | None = "auto",
    progress: bool = True,
    features: str = "auto",
) -> EncodedSplit:
    """Encode every image once (image-level loader) and every caption once, at every level.

    Features are cached in bf16/fp16 on a GPU and fp32 on a CPU (``features="auto"``), or fp32
    everywhere (``features="fp32"``): :func:`feature_dtype`. The reference encodes each image 5
    times and keeps float64 copies (spec section 10, A4). Draws nothing from the global random
    generators (the loaders have their own), so validating inside training leaves the training
    stream where it was.
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype, _ = amp_settings(amp, device)
    cache_dtype = feature_dtype(features, amp_dtype, device)
    was_training = model.training
    model.eval()
    workers = loader_workers(getattr(data_cfg, "num_workers", 0))  # capped at the CPUs (one left free)
    # a generator of its own: a DataLoader draws its workers' base seed from the global torch RNG
    # otherwise, and validation inside training would shift the training stream (issue 13 item 3)
    loader_kw = dict(batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers,
                     generator=torch.Generator().manual_seed(0))  # fmt: skip
    img_loader = torch.utils.data.DataLoader(
        ImageDataset(split, build_transforms(data_cfg, train=False)), **loader_kw
    )
    txt_loader = torch.utils.data.DataLoader(TextDataset(split, tokenizer, max_len), **loader_kw)
    ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else torch.no_grad
    img_parts: list[list[torch.Tensor]] = []
    for batch in tqdm(img_loader, desc="encode images", disable=not progress, leave=False):
        with ctx():
            levels = model.encode_image(batch["images"].to(device))  # n_levels x [B, R, D]
        _append_levels(img_parts, levels, cache_dtype)
    txt_parts: list[list[torch.Tensor]] = []
    lens = []
    for batch in tqdm(txt_loader, desc="encode captions", disable=not progress, leave=False):
        with ctx():
            levels, lengths = model.encode_text(
                batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )
        _append_levels(txt_parts, levels, cache_dtype)
        lens.append(lengths.to(device))
    model.train(was_training)
    if len(img_parts) != len(txt_parts):
        raise ValueError(
            f"the image encoder gives {len(img_parts)} levels but the text encoder {len(txt_parts)}; "
            "both streams need the same levels (config: similarity levels)"
        )
    txt_lens = torch.cat(lens)  # [n_cap]
    width = int(txt_lens.max())  # padding beyond the longest caption never enters the scores
    return EncodedSplit(
        img_levels=[torch.cat(p) for p in img_parts],
        txt_levels=[torch.cat(p)[:, :width] for p in txt_parts],
        txt_lens=txt_lens,
        img_of_caption=split.img_of_caption.clone(),
    )


def _rank_slice(n: int) -> tuple[int, int, int]:
    """(start, stop, per-rank size) of this rank's contiguous image slice under torch.distributed."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return 0, n, n
    world, rank = dist.get_world_size(), dist.get_rank()
    per = -(-n // world)
    return min(rank * per, n), min((rank + 1) * per, n), per


@torch.no_grad()
def similarity_matrix(
    model, features: EncodedSplit, img_block: int = 128, cap_block: int = 1024, progress: bool = True
) -> np.ndarray:
    """The ``[n_img, n_cap]`` float32 score matrix through ``model.similarity``, in blocks.

    Blocks of ``img_block`` images x ``cap_block`` captions are scored in fp32 on the features'
    device. Under ``torch.distributed`` each rank scores a contiguous slice of the images and the
    rows are all-gathered, so every rank returns the full matrix.
    """
    n_img, n_cap = features.n_images, features.n_captions
    start, stop, per = _rank_slice(n_img)
    device = features.img_levels[0].device
    rows = torch.zeros(per, n_cap, dtype=torch.float32, device=device)  # this rank's rows (padded)
    steps = [(a, c) for a in range(start, stop, img_block) for c in range(0, n_cap, cap_block)]
    for a, c in tqdm(steps, desc="similarity", disable=not progress, leave=False):
        b, d = min(a + img_block, stop), min(c + cap_block, n_cap)
        img = [lv[a:b].float() for lv in features.img_levels]  # n_levels x [bi, R, D]
        txt = [lv[c:d].float() for lv in features.txt_levels]  # n_levels x [bc, L, D]
        rows[a - start : b - start, c:d] = model.similarity(img, txt, features.txt_lens[c:d]).float()
    if per != n_img:  # distributed: gather every rank's slice
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows)
        rows = torch.cat(parts)[:n_img]
    return rows.cpu().numpy()


def evaluate(
    model,
    split,
    tokenizer,
    cfg,
    protocol: str | tuple[str, ...] | None = None,
    device: str | torch.device | None = None,
    batch_size: int | None = None,
    img_block: int = 128,
    cap_block: int = 1024,
    amp: str | None = None,
    progress: bool = True,
    return_sims: bool = False,
    ties: str = "pessimistic",
    features: str | None = None,
    strict: bool = False,
) -> Any:
    """Evaluate ``model`` on a :class:`~daimlib.data.KarpathySplit` under the paper's protocol.

    Encodes once (:func:`encode_split`), scores in blocks (:func:`similarity_matrix`) and ranks
    (:func:`recall_metrics` / :func:`coco_fold5`; ``ties`` as there, pessimistic by default).
    ``protocol``: one name of :data:`PROTOCOLS` (returns a flat metrics dict) or several (returns
    ``{protocol: metrics}``); default from ``cfg.data.dataset`` (COCO: 1K 5-fold and 5K).
    ``features``: ``"auto"``/``"fp32"`` (:func:`feature_dtype`); default ``cfg.train.eval_features``
    when the config has that field, else ``"auto"``. A split whose size is not the protocol's
    (:func:`protocol_problem`) is labelled with its real sizes, or refused with ``strict=True``.
    Returns ``(metrics, DataFrame)``, the table's rows labelled by :func:`protocol_label` and its
    ``attrs`` holding the split sizes and whether each row is a paper protocol, plus the
    ``[n_img, n_cap]`` matrix when ``return_sims``.
    """
    protocols = default_protocols(cfg.data.dataset) if protocol is None else protocol
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    single = len(protocols) == 1
    problems = {p: protocol_problem(p, split.n_images) for p in protocols}  # also rejects unknown names
    if strict and any(problems.values()):
        raise ValueError(next(m for m in problems.values() if m) + "; evaluate the full test split "
                         "or use the 'demo' protocol")  # fmt: skip
    if ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)} (default 'pessimistic'), got {ties!r}")
    features = features if features is not None else getattr(cfg.train, "eval_features", "auto")
    feats = encode_split(
        model, split, tokenizer, cfg.data, max_len=cfg.text.max_len, device=device,
        batch_size=batch_size or cfg.train.eval_batch_size, amp=cfg.train.amp if amp is None else amp,
        progress=progress, features=features,
    )  # fmt: skip
    sims = similarity_matrix(model, feats, img_block=img_block, cap_block=cap_block, progress=progress)
    per = {p: protocol_metrics(sims, split.img_of_caption, p, ties=ties) for p in protocols}
    metrics = per[protocols[0]] if single else per
    sizes = split_sizes(split)
    df = results_table({protocol_label(p, **sizes): m for p, m in per.items()})
    df.attrs.update(sizes, protocols=list(protocols), ties=ties,
                    paper_protocol={p: problems[p] is None and p != "demo" for p in protocols})  # fmt: skip
    return (metrics, df, sims) if return_sims else (metrics, df)
