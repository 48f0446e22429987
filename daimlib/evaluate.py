"""Image-text retrieval evaluation: encode once, blocked similarity, exact ranks by counting.

The protocol is VSE++'s ``evalrank`` (spec section 7). Ranks, recalls, COCO folds and the tie
rule (**ties never help**: a negative tied with the positive ranks above it, default
``ties="pessimistic"``) live in :mod:`daimlib.metrics` and are re-exported here.

Protocols: ``"demo"``, ``"f30k"`` (F30K 1K: 1,000 images x 5,000 captions), ``"f8k"`` (Flickr8k
1K, the same rule on Flickr8k's 1,000 test images) and ``"coco5k"`` score the whole split;
``"coco1k"`` is the mean over 5 sequential 1K folds (:func:`coco_fold5`).
A paper protocol is only that protocol on a split of its size (:data:`PROTOCOL_IMAGES`): on any
other split :func:`evaluate` labels its table with the real sizes (:func:`protocol_label`) and
``strict=True`` refuses (:func:`protocol_problem`); :func:`daimlib.published.paper_block` keeps
such rows out of the paper-format tables.

Features are cached in half precision on a GPU by default (``features="auto"``; the reference
keeps float64 copies): ``features="fp32"`` keeps them in float32 (:func:`encode_split`).

Under ``torch.distributed`` (``torchrun``) each rank encodes a contiguous slice of the images and
of the captions (``shard``), the captions' features are all-gathered, each rank scores its own
images against every caption, and the rows are all-gathered: every rank ends with the matrix a
single process computes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from daimlib.data import ImageDataset, TextDataset, build_transforms, check_vocabulary_fits, collate
from daimlib.data.layout import annotation_digest
from daimlib.metrics import (  # noqa: F401 - re-exported: the protocol's ranking lives in daimlib.metrics
    METRIC_KEYS,
    TIES,
    as_tensors,
    coco_fold5,
    fold_metrics,
    i2t_t2i_ranks,
    recall_metrics,
)
from daimlib.paths import display_path
from daimlib.published import BENCHMARK_IMAGES, BENCHMARK_NAMES
from daimlib.runtime import amp_settings, loader_workers
from daimlib.tables import PAPER_COLUMNS, results_table  # noqa: F401 - results_table re-exported here

PROTOCOLS = ("demo", "f30k", "f8k", "coco1k", "coco5k")
PROTOCOL_IMAGES = {**BENCHMARK_IMAGES, "f8k": 1000}  # test images a paper protocol is defined on
PROTOCOL_NAMES = {"demo": "demo", **BENCHMARK_NAMES, "f8k": "Flickr8k 1K"}
FEATURES = ("auto", "fp32")


def protocol_metrics(sims, img_of_caption, protocol: str = "demo", **kw) -> dict[str, float]:
    """Metrics under a named protocol's rule: ``demo``/``f30k``/``f8k``/``coco5k`` (whole split) or ``coco1k``
    (mean over 5 folds), on whatever split ``sims`` scores (sizes: :func:`protocol_problem`).
    ``kw``: ``ties``, ``chunk`` (:func:`recall_metrics`)."""
    if protocol == "coco1k":
        return coco_fold5(sims, img_of_caption, **kw)
    if protocol in ("demo", "f30k", "f8k", "coco5k"):
        return recall_metrics(sims, img_of_caption, **kw)
    raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")


def default_protocols(dataset: str) -> tuple[str, ...]:
    """The paper's protocols for a dataset name of ``DataConfig.dataset``."""
    return {"coco": ("coco1k", "coco5k"), "f30k": ("f30k",), "flickr8k": ("f8k",)}.get(dataset, ("demo",))


MIN_IMAGES = 2  # below this every rank is 1: R@K = 100 whatever the model


def degenerate_problem(n_images: int) -> str:
    """Why a split of fewer than :data:`MIN_IMAGES` images measures nothing (issue 28)."""
    return (
        f"a split of {n_images} image(s) is degenerate: with no other image to confuse, every rank is 1 and "
        "every recall 100 (RSUM 600) whatever the model; score at least 2 images"
    )


# the dataset each paper protocol is defined on, and the layouts (daimlib.data.detect_layout) that hold it
PROTOCOL_DATA = {
    "f30k": ("Flickr30K", ("f30k",)),
    "f8k": ("Flickr8k", ("f8k",)),
    "coco1k": ("MSCOCO", ("coco", "coco_ids")),
    "coco5k": ("MSCOCO", ("coco", "coco_ids")),
}


def _other_data(protocol: str, layout: str | None) -> bool:
    """Whether data of ``layout`` is not the dataset ``protocol`` is defined on (None: not known)."""
    return layout is not None and protocol in PROTOCOL_DATA and layout not in PROTOCOL_DATA[protocol][1]


def protocol_problem(protocol: str, n_images: int, layout: str | None = None) -> str | None:
    """Why a split of ``n_images`` test images is not ``protocol`` as published (None when it is).

    ``f30k`` (F30K 1K) needs the 1,000 Flickr30K test images, ``f8k`` the 1,000 Flickr8k test images,
    ``coco1k``/``coco5k`` the 5,000 COCO test images (COCO 1K = the mean over their 5 folds of 1,000);
    ``demo`` takes any split. ``layout`` (the data's, :func:`daimlib.data.detect_layout`): a split of
    another dataset is not the protocol either, whatever its size (Flickr8k's 1,000 test images are not
    F30K 1K).
    """
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; protocols are {list(PROTOCOLS)}")
    if n_images < MIN_IMAGES:
        return degenerate_problem(n_images)
    need = PROTOCOL_IMAGES.get(protocol)
    if need is None:
        return None
    if n_images != need:  # the size first: the message every split of another size has always had
        return (
            f"the {PROTOCOL_NAMES[protocol]} protocol is defined on {need:,} test images but this split has "
            f"{n_images:,}; its numbers are not comparable with published {PROTOCOL_NAMES[protocol]} results"
        )
    if _other_data(protocol, layout):
        return (
            f"the {PROTOCOL_NAMES[protocol]} protocol is defined on the {PROTOCOL_DATA[protocol][0]} test split "
            f"but this data is in the {layout} layout; its numbers are not comparable with published "
            f"{PROTOCOL_NAMES[protocol]} results"
        )
    return None


def protocol_label(protocol: str, n_images: int, n_captions: int, layout: str | None = None) -> str:
    """The table label of a protocol on a split: its paper name when the split has the protocol's
    size (``"F30K 1K"``), else the protocol with the real sizes (``"f30k rule on 100 images x 500
    captions (not F30K 1K)"``), and the data's layout when it is another dataset's (``layout``,
    :func:`protocol_problem`); a degenerate split (one image) says so."""
    if n_images < MIN_IMAGES:
        return f"{protocol} rule on {n_images} image x {n_captions:,} captions (DEGENERATE: every rank is 1)"
    if protocol_problem(protocol, n_images, layout) is None:
        return (
            PROTOCOL_NAMES[protocol]
            if protocol != "demo"
            else f"demo ({n_images:,} images x {n_captions:,} captions)"
        )
    data = (
        f" of {layout} data"
        if _other_data(protocol, layout) and n_images == PROTOCOL_IMAGES[protocol]
        else ""
    )
    if protocol == "coco1k":
        return (
            f"coco1k rule (5 folds of {n_images // 5:,} images) on {n_images:,} images x {n_captions:,} "
            f"captions{data} (not COCO 1K)"
        )
    return f"{protocol} rule on {n_images:,} images x {n_captions:,} captions{data} (not {PROTOCOL_NAMES[protocol]})"


def split_sizes(split) -> dict[str, int]:
    """``{"n_images", "n_captions"}`` of a split (recorded with every result)."""
    return {"n_images": int(split.n_images), "n_captions": int(split.n_captions)}


def split_identity(split) -> dict:
    """The data a result was measured on: the layout, the split's name(s) and sizes, the folder (as
    displayed) and the annotations with the digest :func:`daimlib.data.data_identity` gives the same
    folder (:func:`daimlib.data.layout.annotation_digest`). A copy elsewhere has the same digest."""
    source = getattr(split, "source", None)
    ident: dict = {
        "layout": getattr(split, "layout", None),
        "splits": list(getattr(split, "splits", ()) or ()),
        **split_sizes(split),
    }
    if source is not None and Path(source).exists():
        source = Path(source)
        ident.update(
            data_root=display_path(source if source.is_dir() else source.parent),
            annotations=source.name,
            annotations_sha256=annotation_digest(source)[1],
        )
    image_root = getattr(split, "image_root", None)
    if image_root is not None:
        ident["image_root"] = display_path(image_root)
    return ident


# --- encoding and blocked similarity --------------------------------------------------------


@dataclass
class EncodedSplit:
    """Token features of a split: each image once, each caption once (on ``device``), one tensor
    per similarity level (the paper's three, or as many as the config has).

    After a sharded encoding (:func:`encode_split` with ``shard=True`` under torch.distributed)
    ``img_levels`` hold only this rank's images, rows ``img_offset ..`` of the split's
    ``split_images``; the captions are always complete."""

    img_levels: list[torch.Tensor]  # n_levels x [n_img (this rank's when sharded), R_level, D]
    txt_levels: list[torch.Tensor]  # n_levels x [n_cap, L, D]
    txt_lens: torch.Tensor  # [n_cap] caption lengths with [CLS]/[SEP]
    img_of_caption: torch.Tensor  # [n_cap]
    img_offset: int = 0  # the split index of img_levels' first row
    split_images: int | None = None  # images in the split when img_levels hold a slice of them

    @property
    def n_images(self) -> int:
        return self.split_images if self.split_images is not None else self.img_levels[0].shape[0]

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


def _world() -> int:
    """Processes in the torch.distributed group (1 when there is none)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard_ranges(n_images: int, n_captions: int) -> tuple[range, range] | None:
    """This rank's images and captions when the encoding is split across ranks (:func:`_rank_slice`:
    the images are the ones it scores), or None: one process, or a split too small to give every
    rank some images and captions (then every rank encodes everything)."""
    world = _world()
    if world == 1 or any((world - 1) * -(-n // world) >= n for n in (n_images, n_captions)):
        return None
    (i0, i1, _), (c0, c1, _) = _rank_slice(n_images), _rank_slice(n_captions)
    return range(i0, i1), range(c0, c1)


def _gather_rows(t: torch.Tensor, n_total: int) -> torch.Tensor:
    """The ranks' contiguous row slices of a ``[n_total, ...]`` tensor, all-gathered in rank order."""
    per = -(-n_total // _world())
    padded = t.new_zeros((per, *t.shape[1:]))
    padded[: t.shape[0]] = t
    parts = [torch.empty_like(padded) for _ in range(_world())]
    dist.all_gather(parts, padded)
    return torch.cat(parts)[:n_total]


def _encode_images(model, loader, ctx, device, dtype, progress: bool) -> list[torch.Tensor]:
    parts: list[list[torch.Tensor]] = []
    for batch in tqdm(loader, desc="encode images", disable=not progress, leave=False):
        with ctx():
            levels = model.encode_image(batch["images"].to(device))  # n_levels x [B, R, D]
        _append_levels(parts, levels, dtype)
    return [torch.cat(p) for p in parts]


def _encode_captions(
    model, loader, ctx, device, dtype, progress: bool
) -> tuple[list[torch.Tensor], torch.Tensor]:
    parts: list[list[torch.Tensor]] = []
    lens = []
    for batch in tqdm(loader, desc="encode captions", disable=not progress, leave=False):
        with ctx():
            levels, lengths = model.encode_text(
                batch["input_ids"].to(device), batch["attention_mask"].to(device)
            )
        _append_levels(parts, levels, dtype)  # n_levels x [B, max_len, D]
        lens.append(lengths.to(device))
    return [torch.cat(p) for p in parts], torch.cat(lens)


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
    shard: bool = False,
) -> EncodedSplit:
    """Encode every image once (image-level loader) and every caption once, at every level.

    Features are cached in bf16/fp16 on a GPU and fp32 on a CPU (``features="auto"``), or fp32
    everywhere (``features="fp32"``): :func:`feature_dtype`. The reference encodes each image 5
    times and keeps float64 copies (spec section 10, A4). Draws nothing from the global random
    generators (the loaders have their own), so validating inside training leaves the training
    stream where it was. ``shard=True`` under torch.distributed: this rank encodes only its slice
    of the images and of the captions (:func:`shard_ranges`), and the captions are all-gathered.
    """
    check_vocabulary_fits(
        tokenizer,
        model,
        "Score a checkpoint with the tokenizer it was trained with (its tokenizer/ folder; evaluate: drop "
        "--set text.tokenizer), or one of at most that many tokens.",
    )
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype, _ = amp_settings(amp, device)
    cache_dtype = feature_dtype(features, amp_dtype, device)
    ranges = shard_ranges(split.n_images, split.n_captions) if shard else None
    was_training = model.training
    model.eval()
    workers = loader_workers(getattr(data_cfg, "num_workers", 0))  # capped at the CPUs (one left free)
    # a generator of its own: a DataLoader draws its workers' base seed from the global torch RNG
    # otherwise, and validation inside training would shift the training stream (issue 13 item 3)
    loader_kw = dict(
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate,
        num_workers=workers,
        generator=torch.Generator().manual_seed(0),
    )
    images = ImageDataset(split, build_transforms(data_cfg, train=False))
    texts = TextDataset(split, tokenizer, max_len)
    if ranges is not None:
        images, texts = torch.utils.data.Subset(images, ranges[0]), torch.utils.data.Subset(texts, ranges[1])
    ctx = (lambda: torch.autocast(device.type, dtype=amp_dtype)) if amp_dtype else torch.no_grad
    img_levels = _encode_images(
        model, torch.utils.data.DataLoader(images, **loader_kw), ctx, device, cache_dtype, progress
    )
    txt_levels, txt_lens = _encode_captions(
        model, torch.utils.data.DataLoader(texts, **loader_kw), ctx, device, cache_dtype, progress
    )
    model.train(was_training)
    if len(img_levels) != len(txt_levels):
        raise ValueError(
            f"the image encoder gives {len(img_levels)} levels but the text encoder {len(txt_levels)}; "
            "both streams need the same levels (config: similarity levels)"
        )
    if ranges is not None:  # every rank scores its images against every caption
        txt_levels = [_gather_rows(lv, split.n_captions) for lv in txt_levels]
        txt_lens = _gather_rows(txt_lens, split.n_captions)
    width = int(txt_lens.max())  # padding beyond the longest caption never enters the scores
    return EncodedSplit(
        img_levels=img_levels,
        txt_levels=[lv[:, :width] for lv in txt_levels],
        txt_lens=txt_lens,
        img_of_caption=split.img_of_caption.clone(),
        img_offset=ranges[0].start if ranges is not None else 0,
        split_images=split.n_images if ranges is not None else None,
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
    device. Under ``torch.distributed`` each rank scores a contiguous slice of the images (the slice
    a sharded :func:`encode_split` gave it) and the rows are all-gathered, so every rank returns the
    full matrix.
    """
    n_img, n_cap = features.n_images, features.n_captions
    start, stop, per = _rank_slice(n_img)
    off, held = features.img_offset, features.img_levels[0].shape[0]
    if start < off or stop > off + held:
        raise ValueError(
            f"this rank scores images {start}..{stop - 1} but its features hold images {off}.."
            f"{off + held - 1}: encode with shard=True in the same process group"
        )
    device = features.img_levels[0].device
    rows = torch.zeros(per, n_cap, dtype=torch.float32, device=device)  # this rank's rows (padded)
    steps = [(a, c) for a in range(start, stop, img_block) for c in range(0, n_cap, cap_block)]
    for a, c in tqdm(steps, desc="similarity", disable=not progress, leave=False):
        b, d = min(a + img_block, stop), min(c + cap_block, n_cap)
        img = [lv[a - off : b - off].float() for lv in features.img_levels]  # n_levels x [bi, R, D]
        txt = [lv[c:d].float() for lv in features.txt_levels]  # n_levels x [bc, L, D]
        rows[a - start : b - start, c:d] = model.similarity(img, txt, features.txt_lens[c:d]).float()
    if per != n_img:  # distributed: gather every rank's slice
        parts = [torch.empty_like(rows) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, rows)
        rows = torch.cat(parts)[:n_img]
    return rows.cpu().numpy()


def _checked_request(protocols: tuple[str, ...], split, layout, ties: str, strict: bool) -> dict:
    """:func:`evaluate`'s arguments checked before any encoding: ``{protocol: problem or None}``
    (:func:`protocol_problem`; unknown names, a tie rule, ``strict``, COCO 1K's folds refused)."""
    problems = {p: protocol_problem(p, split.n_images, layout) for p in protocols}  # rejects unknown names
    if strict and any(problems.values()):
        raise ValueError(
            next(m for m in problems.values() if m) + "; evaluate the full test split "
            "or use the 'demo' protocol"
        )
    if ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)} (default 'pessimistic'), got {ties!r}")
    if "coco1k" in protocols and split.n_images % 5:  # before the encoding, not after it (coco_fold5)
        raise ValueError(
            f"{split.n_images:,} images cannot be split into 5 equal folds; the COCO 1K protocol needs a multiple "
            "of 5 images (COCO 5K test: 5,000; evaluate --images N scores the first N)"
        )
    return problems


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
    shard: bool | None = None,
) -> Any:
    """Evaluate ``model`` on a :class:`~daimlib.data.KarpathySplit` under the paper's protocol.

    Encodes once (:func:`encode_split`), scores in blocks (:func:`similarity_matrix`) and ranks
    (:func:`recall_metrics` / :func:`coco_fold5`; ``ties`` as there, pessimistic by default).
    ``protocol``: one name of :data:`PROTOCOLS` (returns a flat metrics dict) or several (returns
    ``{protocol: metrics}``); default from ``cfg.data.dataset`` (COCO: 1K 5-fold and 5K).
    ``features``: ``"auto"``/``"fp32"`` (:func:`feature_dtype`); default ``cfg.train.eval_features``
    when the config has that field, else ``"auto"``. A split whose size is not the protocol's
    (:func:`protocol_problem`) is labelled with its real sizes, or refused with ``strict=True``.
    ``shard``: split the encoding across the ranks of torch.distributed (default: whenever there
    are several; the result equals one process's). Returns ``(metrics, DataFrame)``, the table's
    rows labelled by :func:`protocol_label` and its ``attrs`` holding the split sizes, whether each
    row is a paper protocol and the seconds spent encoding, scoring and ranking, plus the
    ``[n_img, n_cap]`` matrix when ``return_sims``.
    """
    protocols = default_protocols(cfg.data.dataset) if protocol is None else protocol
    protocols = (protocols,) if isinstance(protocols, str) else tuple(protocols)
    single = len(protocols) == 1
    layout = getattr(split, "layout", None)
    problems = _checked_request(protocols, split, layout, ties, strict)
    features = features if features is not None else getattr(cfg.train, "eval_features", "auto")
    t0 = time.perf_counter()
    feats = encode_split(
        model,
        split,
        tokenizer,
        cfg.data,
        max_len=cfg.text.max_len,
        device=device,
        batch_size=batch_size or cfg.train.eval_batch_size,
        amp=cfg.train.amp if amp is None else amp,
        progress=progress,
        features=features,
        shard=_world() > 1 if shard is None else shard,
    )
    t1 = time.perf_counter()
    sims = similarity_matrix(model, feats, img_block=img_block, cap_block=cap_block, progress=progress)
    t2 = time.perf_counter()
    per = {p: protocol_metrics(sims, split.img_of_caption, p, ties=ties) for p in protocols}
    metrics = per[protocols[0]] if single else per
    sizes = split_sizes(split)
    df = results_table({protocol_label(p, **sizes, layout=layout): m for p, m in per.items()})
    df.attrs.update(
        sizes,
        protocols=list(protocols),
        ties=ties,
        paper_protocol={p: problems[p] is None and p != "demo" for p in protocols},
        seconds={"encode": t1 - t0, "score": t2 - t1, "rank": time.perf_counter() - t2},
    )
    return (metrics, df, sims) if return_sims else (metrics, df)
