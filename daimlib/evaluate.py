"""Image-text retrieval evaluation: encode once, blocked similarity, exact ranks by counting.

The protocol is VSE++'s ``evalrank`` (``docs/field_notes.md`` section 1, spec section 7):

- i2t (text retrieval): for image i, the 0-based rank of the best-ranked of its captions;
- t2i (image retrieval): for caption j, the 0-based rank of its image;
- R@K = 100 * fraction of queries with rank < K, K in {1, 5, 10}; medr = floor(median rank) + 1;
  meanr = mean rank + 1; RSUM = the six recalls summed (max 600).

Ranks are *exact* and obtained by counting the scores strictly above the positive, row chunk by
row chunk, never by a full argsort (5,000 x 25,000: ~1 s and ~130 MB extra instead of ~22 s
and ~2 GB).

**Ties never help** (default ``ties="pessimistic"``): a negative scored exactly like the positive
counts against it, i.e. the positive is ranked *last* among the negatives it ties with. So a
collapsed model whose scores are all equal gets the lowest recall, not 100. An image's own
captions are never negatives: for i2t the rank of image i is the number of *other images'*
captions scored at least as high as its best own caption (its tied own captions do not count
against it). ``ties="optimistic"`` (the reference's ``numpy.argsort`` happens to behave close to
it for exact ties) ranks the positive first among equals. With distinct scores both equal
argsort ranking. The same default selects ``best`` during training (which calls :func:`evaluate`).

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
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from daimlib.data import ImageDataset, TextDataset, build_transforms, collate
from daimlib.paths import display_path
from daimlib.runtime import amp_settings
from daimlib.tables import PAPER_COLUMNS, results_table  # noqa: F401 - results_table re-exported here

METRIC_KEYS = (
    "i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "i2t_meanr",
    "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "t2i_meanr", "rsum",
)  # fmt: skip
PROTOCOLS = ("demo", "f30k", "coco1k", "coco5k")
TIES = ("pessimistic", "optimistic")
# test images a paper protocol is defined on (F30K 1K test; the COCO 5K test, whose 5 folds are COCO 1K)
PROTOCOL_IMAGES = {"f30k": 1000, "coco1k": 5000, "coco5k": 5000}
PROTOCOL_NAMES = {"demo": "demo", "f30k": "F30K 1K", "coco1k": "COCO 1K", "coco5k": "COCO 5K"}
FEATURES = ("auto", "fp32")


# --- ranks and recalls --------------------------------------------------------------------------


def _as_tensors(sims, img_of_caption) -> tuple[torch.Tensor, torch.Tensor]:
    s = torch.from_numpy(np.ascontiguousarray(sims)) if isinstance(sims, np.ndarray) else sims
    if not isinstance(s, torch.Tensor) or s.dim() != 2:
        raise ValueError(
            f"sims must be a 2-D [n_img, n_cap] array or tensor, got {type(sims).__name__} "
            f"of shape {getattr(sims, 'shape', None)}"
        )
    s = s.detach().cpu()
    if not s.is_floating_point():
        s = s.float()
    idx = torch.as_tensor(np.asarray(img_of_caption), dtype=torch.long).reshape(-1)
    n_img, n_cap = s.shape
    if idx.numel() != n_cap:
        raise ValueError(
            f"img_of_caption has {idx.numel()} entries but sims has {n_cap} caption columns; "
            "pass one image index per caption (KarpathySplit.img_of_caption)"
        )
    if n_cap and (idx.min() < 0 or idx.max() >= n_img):
        raise ValueError(
            f"img_of_caption values must lie in [0, {n_img}) (sims has {n_img} image rows); "
            f"found range [{int(idx.min())}, {int(idx.max())}]"
        )
    counts = torch.bincount(idx, minlength=n_img)
    if n_img and int(counts.min()) == 0:
        missing = torch.nonzero(counts == 0).flatten()[:5].tolist()
        raise ValueError(f"every image needs at least one caption; images {missing} have none")
    if torch.isnan(s).any():
        raise ValueError("sims contains NaN; check the model's similarity (e.g. an empty caption)")
    return s, idx


def i2t_t2i_ranks(
    sims, img_of_caption, chunk: int = 128, ties: str = "pessimistic"
) -> tuple[np.ndarray, np.ndarray]:
    """Exact 0-based ranks of VSE++ evalrank: ``(i2t_ranks [n_img], t2i_ranks [n_cap])``.

    ``sims[i, j]`` scores image i against caption j; ``img_of_caption[j]`` is caption j's image.
    i2t rank of image i = number of other images' captions scored above its best-scored own caption
    (= the best rank among its captions). t2i rank of caption j = number of images scored above its
    own image. ``ties="pessimistic"`` (default) counts a tied negative as above, ``"optimistic"``
    as below (module doc). Computed by counting in chunks of ``chunk`` image rows (memory ~ chunk x
    n_cap).
    """
    if ties not in TIES:
        raise ValueError(f"ties must be one of {list(TIES)} (default 'pessimistic'), got {ties!r}")
    s, idx = _as_tensors(sims, img_of_caption)
    n_img, n_cap = s.shape
    pos_t2i = s[idx, torch.arange(n_cap)]  # [n_cap] score of each caption with its own image
    pos_i2t = torch.full((n_img,), -math.inf, dtype=s.dtype).scatter_reduce(
        0, idx, pos_t2i, reduce="amax"
    )  # [n_img] best score among each image's captions
    # numpy's bool counting is ~20x faster than torch's here (2 cores, measured)
    s, pos_t2i, pos_i2t, idx = s.numpy(), pos_t2i.numpy(), pos_i2t.numpy(), idx.numpy()
    above = np.greater if ties == "optimistic" else np.greater_equal
    count_dtype = np.uint8 if chunk <= 255 else np.int32  # per-chunk column counts fit in a byte
    i2t = np.zeros(n_img, dtype=np.int64)
    t2i = np.zeros(n_cap, dtype=np.int64)
    for a in range(0, n_img, chunk):
        block = s[a : a + chunk]  # [c, n_cap]
        i2t[a : a + chunk] = np.count_nonzero(above(block, pos_i2t[a : a + chunk, None]), axis=1)
        t2i += above(block, pos_t2i[None, :]).sum(0, dtype=count_dtype)
    if ties == "pessimistic":
        # ">=" counted the positive itself: for t2i the own image once; for i2t every own caption
        # tied with the best one (own captions are never negatives)
        i2t -= np.bincount(idx, weights=pos_t2i >= pos_i2t[idx], minlength=n_img).astype(np.int64)
        t2i -= 1
    return i2t, t2i


def _recalls(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    out = {f"{prefix}_r{k}": 100.0 * float(np.mean(ranks < k)) for k in (1, 5, 10)}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    return out


def recall_metrics(sims, img_of_caption, chunk: int = 128, ties: str = "pessimistic") -> dict[str, float]:
    """R@1/5/10, medr, meanr in both directions and RSUM (VSE++ evalrank, exact ranks; ties: module doc).

    Keys: ``i2t_r1, i2t_r5, i2t_r10, i2t_medr, i2t_meanr, t2i_r1, ..., t2i_meanr, rsum``.
    """
    i2t, t2i = i2t_t2i_ranks(sims, img_of_caption, chunk=chunk, ties=ties)
    out = {**_recalls(i2t, "i2t"), **_recalls(t2i, "t2i")}
    out["rsum"] = sum(out[k] for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"))
    return {k: out[k] for k in METRIC_KEYS}


def fold_metrics(sims, img_of_caption, n_folds: int = 5, **kw) -> list[dict[str, float]]:
    """Metrics of each of ``n_folds`` sequential image folds, each with its own captions.

    COCO 1K protocol: the 5K test images split into 1,000-image blocks 0-999, 1000-1999, ...
    """
    s, idx = _as_tensors(sims, img_of_caption)
    n_img = s.shape[0]
    if n_folds < 1 or n_img % n_folds:
        raise ValueError(
            f"{n_img} images cannot be split into {n_folds} equal folds; the COCO 1K protocol "
            f"needs a multiple of {n_folds} images (COCO 5K test: 5,000)"
        )
    size = n_img // n_folds
    out = []
    for f in range(n_folds):
        caps = torch.nonzero((idx >= f * size) & (idx < (f + 1) * size)).flatten()
        sub = s[f * size : (f + 1) * size][:, caps]  # [size, captions of the fold]
        out.append(recall_metrics(sub, idx[caps] - f * size, **kw))
    return out


def coco_fold5(sims, img_of_caption, n_folds: int = 5, **kw) -> dict[str, float]:
    """COCO 1K: the **mean** of every metric over 5 sequential 1K folds (VSE++ ``fold5``).

    Per-fold values: :func:`fold_metrics`.
    """
    folds = fold_metrics(sims, img_of_caption, n_folds=n_folds, **kw)
    return {k: float(np.mean([f[k] for f in folds])) for k in METRIC_KEYS}


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
    """What identifies the data a result was measured on: the folder (as displayed), the annotation
    file's name and sha256, the split's name(s) and sizes. A copy of the same data elsewhere has the
    same hash."""
    json_path = getattr(split, "json_path", None)
    ident: dict = {"splits": list(getattr(split, "splits", ()) or ()), **split_sizes(split)}
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
    times and keeps float64 copies (spec section 10, A4).
    """
    device = torch.device(device) if device is not None else next(model.parameters()).device
    amp_dtype, _ = amp_settings(amp, device)
    cache_dtype = feature_dtype(features, amp_dtype, device)
    was_training = model.training
    model.eval()
    workers = getattr(data_cfg, "num_workers", 0)
    loader_kw = dict(batch_size=batch_size, shuffle=False, collate_fn=collate, num_workers=workers)
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
