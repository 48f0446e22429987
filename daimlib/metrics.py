"""Retrieval metrics of a score matrix: exact ranks, recalls, COCO folds, separation (a leaf module).

``sims[i, j]`` scores image i against caption j; ``img_of_caption[j]`` is caption j's image. The
protocol is VSE++'s ``evalrank`` (``docs/field_notes.md`` section 1, spec section 7):

- i2t (text retrieval): for image i, the 0-based rank of the best-ranked of its captions;
- t2i (image retrieval): for caption j, the 0-based rank of its image;
- R@K = 100 * fraction of queries with rank < K, K in {1, 5, 10}; medr = floor(median rank) + 1;
  meanr = mean rank + 1; RSUM = the six recalls summed (max 600).

**Ties never help** (default ``ties="pessimistic"``): a negative scored exactly like the positive
counts against it, i.e. the positive is ranked *last* among the negatives it ties with. So a
collapsed model whose scores are all equal gets the lowest recall, not 100. An image's own
captions are never negatives: for i2t the rank of image i is the number of *other images'*
captions scored at least as high as its best own caption (its tied own captions do not count
against it). ``ties="optimistic"`` ranks the positive first among equals (a named option; the
reference's ``numpy.argsort`` orders ties by index, i.e. by the data's order). With distinct
scores both rules equal argsort ranking. Training selects ``best`` with the same default (it
calls :func:`daimlib.evaluate.evaluate`).

Ranks are *exact* and obtained by counting the scores above the positive, row chunk by row
chunk, never by a full argsort (5,000 x 25,000: ~1 s and ~130 MB extra instead of ~22 s and
~2 GB).

Also: :func:`positive_and_hardest_negative` gives, per query, the two numbers the hardest-negative
triplet loss compares (spec section 4, step 5); :func:`separation_auc` how often a positive
outscores a negative (ROC AUC). :mod:`daimlib.evaluate` and :mod:`daimlib.viz` re-export these.
"""

from __future__ import annotations

import math

import numpy as np
import torch

METRIC_KEYS = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "i2t_medr",
    "i2t_meanr",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "t2i_medr",
    "t2i_meanr",
    "rsum",
)
TIES = ("pessimistic", "optimistic")


def as_tensors(sims, img_of_caption) -> tuple[torch.Tensor, torch.Tensor]:
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
        raise ValueError(
            "sims contains NaN: the model scored some pairs as not-a-number, so no rank is defined; "
            "its weights are probably not finite (a checkpoint from a diverged run or a damaged file: "
            "load it with daimlib.checkpoint.load_model, which names such weights)"
        )
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
    s, idx = as_tensors(sims, img_of_caption)
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
    s, idx = as_tensors(sims, img_of_caption)
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


def to_numpy(x) -> np.ndarray:
    """A float64 numpy copy of an array, tensor or list (tensors are detached and moved to CPU)."""
    if hasattr(x, "detach"):
        x = x.detach().double().cpu().numpy()
    return np.asarray(x, dtype=np.float64)


def positive_and_hardest_negative(
    sims, img_of_caption, direction: str = "t2i"
) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the positive score and the hardest negative score of an ``[n_img, n_cap]`` matrix.

    ``direction="t2i"``: one pair per caption j: ``S[img(j), j]`` and ``max_{i != img(j)} S[i, j]``.
    ``direction="i2t"``: one pair per image i: the best of its own captions and the best other
    caption. These are the two numbers the hardest-negative triplet loss compares (spec section 4,
    step 5); the positive wins exactly when the query is ranked first (R@1, evaluation protocol).
    """
    s = to_numpy(sims)
    idx = np.asarray(img_of_caption).reshape(-1).astype(np.int64)
    if s.ndim != 2 or idx.size != s.shape[1]:
        raise ValueError(
            f"expected sims [n_img, n_cap] and one image index per caption; got sims {s.shape} and "
            f"{idx.size} indices"
        )
    own = np.zeros_like(s, dtype=bool)
    own[idx, np.arange(idx.size)] = True  # [n_img, n_cap]: caption j belongs to image i
    if direction == "t2i":
        return s[idx, np.arange(idx.size)], np.where(own, -np.inf, s).max(axis=0)
    if direction == "i2t":
        return np.where(own, s, -np.inf).max(axis=1), np.where(own, -np.inf, s).max(axis=1)
    raise ValueError(f"direction must be 't2i' or 'i2t', got {direction!r}")


def separation_auc(pos, neg) -> float:
    """P(a random positive scores above a random negative), ties counted 1/2 (ROC AUC, Mann-Whitney U).

    0.5 = no separation, 1.0 = every positive above every negative. Computed from ranks in
    O((P + N) log(P + N)).
    """
    p, n = to_numpy(pos).ravel(), to_numpy(neg).ravel()
    if p.size == 0 or n.size == 0:
        raise ValueError(f"need positives and negatives, got {p.size} and {n.size}")
    both = np.concatenate([p, n])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(both.size, dtype=np.float64)
    sorted_vals = both[order]
    # average ranks (1-based) over ties
    _, first, counts = np.unique(sorted_vals, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    u = ranks[: p.size].sum() - p.size * (p.size + 1) / 2.0
    return float(u / (p.size * n.size))
