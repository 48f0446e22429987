"""``DAIM``: the dual-stream model with its two modules and its loss (spec sections 1-5).

One training step (``DAIM.forward``)::

    images   -> ImageEncoder (Swin stages, ContraNorm inside) -> 3 token sets -> img_proj[ℓ]
    captions -> TextEncoder (BERT hidden states)               -> 3 token sets -> txt_proj[ℓ]
    S = Σ_ℓ w_ℓ SCAN_ℓ (fp32)   = DAIM.forward(batch).scores
    MatchingLoss(S, step): AdaptiveMargin.update(S.detach()) (training mode only)
        -> triplet_loss(S, m)   (hardest negatives after ``loss.warmup_steps``)

The dual-encoder baseline (``similarity.kind = "cosine"``, ``loss.kind = "infonce"``, preset
``demo_dual``; :mod:`daimlib.dual`) keeps all of this but SCAN and the hinge: S is the cosine of
pooled, normalised level embeddings and the loss the symmetric InfoNCE.

The model holds weights only; the adaptive margin, the only state of the objective, lives in
:class:`daimlib.losses.MatchingLoss`, which the training loop calls after the model.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .distributed import global_scores, world_size
from .dual import cosine_similarity
from .encoders import ImageEncoder, TextEncoder, freeze, unfreeze
from .hub import DAIMHubMixin
from .similarity import DEFAULT_BLOCK_BYTES, multilevel_similarity


@dataclass
class MatchOutput:
    """What :meth:`DAIM.forward` returns: what the loss needs, nothing about the training step."""

    scores: torch.Tensor  # [B, B] fp32, rows images, columns captions, diagonal positives
    img_index: torch.Tensor | None = None  # [B] image ids of the pairs (same-image masking)
    global_batch: bool = False  # scores span the batches of every rank (loss.negatives="global")


class DAIM(nn.Module, DAIMHubMixin):
    """DAIM (and HAT, with FDM off): encoders, one projection per level and stream, SCAN.

    Attributes: ``image_encoder``, ``text_encoder``, ``img_proj`` / ``txt_proj`` (one ``Linear`` to
    ``similarity.embed_dim`` per level, init N(0, 0.02), bias 0) and ``cfg``. Any number of levels
    (``image.stages``, ``text.hidden_states`` and ``similarity.level_weights`` of equal length).
    """

    def __init__(self, cfg, pretrained: bool = False):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = ImageEncoder(cfg.image, cfg.fdm, pretrained=pretrained)
        self.text_encoder = TextEncoder(cfg.text, cfg.fdm, pretrained=pretrained)
        n_img, n_txt, n_w = (
            len(cfg.image.stages),
            len(cfg.text.hidden_states),
            len(cfg.similarity.level_weights),
        )
        if not n_img == n_txt == n_w:
            raise ValueError(
                f"level counts differ: image.stages has {n_img}, text.hidden_states {n_txt}, "
                f"similarity.level_weights {n_w}; all three must list the same levels (low, mid, high)"
            )
        D = cfg.similarity.embed_dim
        self.img_proj = nn.ModuleList(nn.Linear(c, D) for c in self.image_encoder.out_dims)
        self.txt_proj = nn.ModuleList(nn.Linear(self.text_encoder.hidden_size, D) for _ in range(n_txt))
        for lin in [*self.img_proj, *self.txt_proj]:
            nn.init.normal_(lin.weight, std=0.02)
            nn.init.zeros_(lin.bias)

    @classmethod
    def from_config(cls, cfg, pretrained: bool = False) -> DAIM:
        """Build the model of a :class:`daimlib.config.DAIMConfig` (random or pretrained encoders)."""
        return cls(cfg, pretrained=pretrained)

    # --- the three doors ---------------------------------------------------------------------

    def encode_image(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B, 3, H, W]`` -> levels low, mid, high, each ``[B, R_ℓ, D]``."""
        return [proj(x) for proj, x in zip(self.img_proj, self.image_encoder(images))]

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        """``input_ids, attention_mask [B, L]`` -> (levels, each ``[B, L, D]``; lengths ``[B]``)."""
        levels, lengths = self.text_encoder(input_ids, attention_mask)
        return [proj(x) for proj, x in zip(self.txt_proj, levels)], lengths

    def similarity(
        self,
        img_levels: list[torch.Tensor],
        txt_levels: list[torch.Tensor],
        txt_lens: torch.Tensor,
        max_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
    ) -> torch.Tensor:
        """S(I, T) ``[n_img, n_cap]`` in fp32 with the configured direction, λ and level weights;
        with ``similarity.kind = "cosine"`` the dual encoder's cosine of global embeddings instead
        (:func:`daimlib.dual.cosine_similarity`: same levels, same projections, no cross-attention)."""
        sc = self.cfg.similarity
        with torch.autocast(device_type=img_levels[0].device.type, enabled=False):
            if sc.kind == "cosine":
                return cosine_similarity(img_levels, txt_levels, txt_lens, weights=tuple(sc.level_weights))
            return multilevel_similarity(
                img_levels,
                txt_levels,
                txt_lens,
                weights=tuple(sc.level_weights),
                direction=sc.direction,
                lambda_softmax=sc.lambda_softmax,
                max_block_bytes=max_block_bytes,
            )

    def forward(self, batch: dict, global_batch: bool = False) -> MatchOutput:
        """Scores of a batch of matching pairs (spec section 5); the loss is the caller's
        (:class:`daimlib.losses.MatchingLoss`), so the model never needs the training step.

        ``batch``: "images" ``[B, 3, H, W]``, "input_ids" / "attention_mask" ``[B, L]``, optional
        "img_index" ``[B]`` (passed through for same-image masking); or, instead of images and ids,
        the frozen encoders' cached outputs "image_feats" / "text_feats" (a list per level,
        :mod:`daimlib.feature_cache`), which only the projections and SCAN then see. Returns a :class:`MatchOutput`
        whose ``scores [B, B]`` (rows images, columns captions, fp32) carry the gradient.

        ``global_batch=True`` under an initialised process group of W ranks: the scores are those of
        the global batch, ``[W B, W B]`` on every rank (``loss.negatives="global"``,
        :func:`daimlib.distributed.global_scores`); without one it changes nothing.
        """
        if "image_feats" in batch:  # frozen encoders' cached level features (daimlib.feature_cache)
            img_levels = [proj(x) for proj, x in zip(self.img_proj, batch["image_feats"])]
            txt_levels = [proj(x) for proj, x in zip(self.txt_proj, batch["text_feats"])]
            lengths = batch["attention_mask"].long().sum(1)
            return MatchOutput(
                scores=self.similarity(img_levels, txt_levels, lengths), img_index=batch.get("img_index")
            )
        images, ids, mask = batch["images"], batch["input_ids"], batch["attention_mask"]
        if images.shape[0] != ids.shape[0]:
            raise ValueError(
                f"batch holds {images.shape[0]} images but {ids.shape[0]} captions; expected matching pairs"
            )
        img_levels = self.encode_image(images)
        txt_levels, lengths = self.encode_text(ids, mask)
        if global_batch and world_size() > 1:
            scores, index = global_scores(self, img_levels, txt_levels, lengths, batch.get("img_index"))
            return MatchOutput(scores=scores, img_index=index, global_batch=True)  # [N, N]
        scores = self.similarity(img_levels, txt_levels, lengths)  # [B, B]
        return MatchOutput(scores=scores, img_index=batch.get("img_index"))

    def compile_encoders(self, **kwargs) -> DAIM:
        """``torch.compile`` the two encoders in place (``train.compile``; ``kwargs`` go to ``compile``,
        e.g. ``backend="eager"``). In place, so the state_dict keys stay the plain modules'; SCAN stays
        eager (its blocks depend on the caption lengths)."""
        self.image_encoder.compile(**kwargs)
        self.text_encoder.compile(**kwargs)
        return self

    # --- freezing (spec 1.5) -------------------------------------------------------------------

    def backbone_parameters(self) -> list[nn.Parameter]:
        """Parameters of both encoders (Swin with its stage LNs, BERT)."""
        return [*self.image_encoder.parameters(), *self.text_encoder.parameters()]

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the per-level projections (always trained)."""
        return [*self.img_proj.parameters(), *self.txt_proj.parameters()]

    def set_backbones_trainable(self, flag: bool) -> None:
        """Freeze (False) or unfreeze (True) both encoders; train/eval modes are not touched.

        BERT is built without a pooler, so nothing of it stays frozen when unfrozen.
        """
        fn = unfreeze if flag else freeze
        fn(self.image_encoder)
        fn(self.text_encoder)


def dead_weight_rows(model: nn.Module) -> dict[str, tuple[int, int]]:
    """Weight rows of ``model`` that can never change an output: {state_dict key: (start, stop) of the
    rows that *do* matter}.

    A Swin block whose attention window holds a single token (the last stage of the demo's 64 px
    Swin: a 1 x 1 grid) computes softmax over one score, which is 1 whatever the query and key are;
    so the query and key rows of its ``qkv`` projection (the first two thirds) never affect an
    output and never receive a gradient. Only the value rows are kept. ``export`` of the demo models
    stores just these rows (``save_checkpoint(trim=...)``); loading puts zeros in the others.
    """
    keep = {}
    for name, module in model.named_modules():
        qkv = getattr(module, "qkv", None)
        if getattr(module, "window_area", None) == 1 and isinstance(qkv, nn.Linear):
            dim = qkv.out_features // 3
            keep[f"{name}.qkv.weight"] = (2 * dim, 3 * dim)
            if qkv.bias is not None:
                keep[f"{name}.qkv.bias"] = (2 * dim, 3 * dim)
    return keep
