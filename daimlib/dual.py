"""The dual-encoder baseline: global embeddings, cosine similarity and the symmetric InfoNCE loss.

SCAN (:mod:`daimlib.similarity`) lets every word attend to every region of every image, so each
image-caption pair costs its own attention. A dual encoder (VSE, CLIP) instead reduces each image
and each caption to one vector, independently of the other side, and scores a pair by a cosine:
all pairs are then one matrix product, and the embeddings of a gallery can be computed once.

Here the dual encoder keeps DAIM's encoders, levels and projections; only the similarity and the
loss change (``similarity.kind = "cosine"``, ``loss.kind = "infonce"``; preset ``demo_dual``)::

    level ℓ:  u_ℓ = normalise(mean_r W_ℓ v_r),   e_ℓ = normalise(mean_{w ≤ L} W'_ℓ t_w)
    image embedding  g(I) = [sqrt(w_ℓ / W) u_ℓ]_ℓ  (concatenated; W = Σ_ℓ w_ℓ, so |g| = 1)
    caption embedding h(T) = [sqrt(w_ℓ / W) e_ℓ]_ℓ
    S(I, T) = g(I)·h(T) = Σ_ℓ (w_ℓ / W) cos(u_ℓ, e_ℓ)   in [-1, 1]

(mean pooling commutes with the affine projection, so pooling the projected tokens is projecting
the pooled ones). The loss is CLIP's symmetric InfoNCE with a fixed temperature τ: a softmax
cross-entropy over each row (image -> its caption among the batch's) and over each column (caption
-> its image), averaged::

    L = ½ [ mean_i −log softmax_j(S_ij / τ)_i  +  mean_j −log softmax_i(S_ij / τ)_j ]
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F

SIMILARITY_KINDS = ("scan", "cosine")
LOSS_KINDS = ("triplet", "infonce")
_EPS = 1e-8
_CUSTOM_INFO_NCE: list[Callable] = []  # the innermost ``info_nce_from`` block's function, if any


def _level_scales(weights: tuple[float, ...], n_levels: int) -> list[float]:
    if len(weights) != n_levels:
        raise ValueError(f"{n_levels} levels but {len(weights)} level weights; expected one weight per level")
    if any(w < 0 for w in weights) or not any(weights):
        raise ValueError(f"level weights must be >= 0 and not all 0; got {tuple(weights)}")
    total = float(sum(weights))
    return [math.sqrt(float(w) / total) for w in weights]


def pool_image(level: torch.Tensor) -> torch.Tensor:
    """``[n, R, D]`` region tokens -> ``[n, D]``: the mean over the R regions."""
    if level.dim() != 3:
        raise ValueError(f"an image level must be [n, R, D]; got shape {tuple(level.shape)}")
    return level.float().mean(1)


def pool_text(level: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """``[n, L, D]`` word tokens and ``lengths [n]`` -> ``[n, D]``: the mean over each caption's first
    ``lengths`` tokens ([CLS] and [SEP] included, as SCAN sees them); padding never counts."""
    if level.dim() != 3:
        raise ValueError(f"a text level must be [n, L, D]; got shape {tuple(level.shape)}")
    lengths = torch.as_tensor(lengths, device=level.device).long()
    if lengths.shape != (level.shape[0],):
        raise ValueError(f"lengths must be [{level.shape[0]}]; got shape {tuple(lengths.shape)}")
    if lengths.numel() and (int(lengths.min()) < 1 or int(lengths.max()) > level.shape[1]):
        raise ValueError(f"lengths must lie in 1..{level.shape[1]}")
    mask = (torch.arange(level.shape[1], device=level.device)[None] < lengths[:, None]).float()  # [n, L]
    return (level.float() * mask[..., None]).sum(1) / lengths[:, None].float()


def image_embedding(img_levels: list[torch.Tensor], weights: tuple[float, ...]) -> torch.Tensor:
    """Global image embeddings ``[n, ℓ·D]`` (unit length) from the projected levels ``[n, R, D]``."""
    scales = _level_scales(tuple(weights), len(img_levels))
    parts = [s * F.normalize(pool_image(x), dim=-1, eps=_EPS) for s, x in zip(scales, img_levels) if s > 0]
    return torch.cat(parts, dim=-1)


def text_embedding(
    txt_levels: list[torch.Tensor], lengths: torch.Tensor, weights: tuple[float, ...]
) -> torch.Tensor:
    """Global caption embeddings ``[n, ℓ·D]`` (unit length) from the projected levels ``[n, L, D]``."""
    scales = _level_scales(tuple(weights), len(txt_levels))
    parts = [
        s * F.normalize(pool_text(x, lengths), dim=-1, eps=_EPS) for s, x in zip(scales, txt_levels) if s > 0
    ]
    return torch.cat(parts, dim=-1)


def cosine_similarity(
    img_levels: list[torch.Tensor],
    txt_levels: list[torch.Tensor],
    txt_lens: torch.Tensor,
    weights: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> torch.Tensor:
    """Dual-encoder scores ``[n_img, n_cap]`` (fp32, in [-1, 1]): ``S = g(I) h(T)ᵀ``, one matrix
    product of the global embeddings (the weighted mean of the levels' cosines)."""
    if len(img_levels) != len(txt_levels):
        raise ValueError(f"{len(img_levels)} image levels but {len(txt_levels)} text levels")
    g = image_embedding(img_levels, weights)  # [n_img, ℓD]
    h = text_embedding(txt_levels, txt_lens, weights)  # [n_cap, ℓD]
    return g @ h.T


def info_nce(
    scores: torch.Tensor,
    temperature: float = 0.05,
    neg_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Symmetric InfoNCE (CLIP) on ``scores [B, B]`` (rows images, columns captions, diagonal positives).

    ``½ (CE over each row + CE over each column)`` of the logits ``scores / temperature``, the
    positive being the diagonal entry. ``neg_mask [B, B]`` bool: pairs left out of both softmaxes
    (e.g. another caption of the same image; the diagonal is always kept). ``reduction``: "mean"
    over the B pairs (CLIP) or "sum" (B times the mean).
    """
    if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
        raise ValueError(f"info_nce expects square scores [B, B]; got shape {tuple(scores.shape)}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0; got {temperature!r}")
    if reduction not in ("sum", "mean"):
        raise ValueError(f"reduction must be 'sum' or 'mean'; got {reduction!r}")
    B = scores.shape[0]
    logits = scores.to(torch.promote_types(scores.dtype, torch.float32)) / temperature  # fp32 at least
    if neg_mask is not None:
        if neg_mask.shape != scores.shape:
            raise ValueError(f"neg_mask must be [B, B] = {tuple(scores.shape)}; got {tuple(neg_mask.shape)}")
        drop = neg_mask.to(device=scores.device, dtype=torch.bool)
        drop = drop & ~torch.eye(B, dtype=torch.bool, device=scores.device)
        logits = logits.masked_fill(drop, float("-inf"))
    target = torch.arange(B, device=scores.device)
    i2t = F.cross_entropy(logits, target, reduction="sum")  # each image picks its caption
    t2i = F.cross_entropy(logits.T, target, reduction="sum")  # each caption picks its image
    loss = 0.5 * (i2t + t2i)
    return loss / B if reduction == "mean" else loss


@contextlib.contextmanager
def info_nce_from(fn: Callable[[torch.Tensor, float], torch.Tensor]) -> Iterator[None]:
    """Inside this block, :class:`daimlib.losses.MatchingLoss` with ``kind="infonce"`` computes its loss
    with ``fn(scores [B, B], temperature)`` (a scalar tensor, mean over the batch, as :func:`info_nce`)
    instead of :func:`info_nce`: how the capstone (notebook 14) trains with the student's own loss.
    ``reduction="sum"`` multiplies ``fn``'s mean by B; same-image masking is refused (``fn`` has no mask).
    A run trained this way records nothing of ``fn``: keep it in its own run folder."""
    _CUSTOM_INFO_NCE.append(fn)
    try:
        yield
    finally:
        _CUSTOM_INFO_NCE.pop()


def contrastive_loss(
    scores: torch.Tensor,
    temperature: float,
    neg_mask: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """:func:`info_nce`, or the function of the innermost :func:`info_nce_from` block."""
    if not _CUSTOM_INFO_NCE:
        return info_nce(scores, temperature, neg_mask=neg_mask, reduction=reduction)
    if neg_mask is not None:
        raise ValueError("a loss given by info_nce_from takes no neg_mask: set loss.mask_same_image=false")
    loss = _CUSTOM_INFO_NCE[-1](scores, temperature)
    return loss * scores.shape[0] if reduction == "sum" else loss
