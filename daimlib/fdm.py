"""The feature discriminability module (FDM): parameter-free ContraNorm (spec section 3).

For one sequence of tokens X [N, C] (rows = tokens), ContraNorm (Guo et al., ICLR 2023) is

    X̂  = row_L2_normalise(X)
    A  = softmax_row(X̂ X̂ᵀ / τ)                 (N×N, cosine-similarity attention)
    X' = (1 + s)·X − s·A X                      (s = scale = 0.1, τ = 1 in DAIM)

``softmax(X̂X̂ᵀ/τ)·X`` is attention with q = k = X̂, v = X and scale 1/τ, so :func:`contranorm`
computes it with :func:`torch.nn.functional.scaled_dot_product_attention`, which never
materialises the N×N matrix (3136² per image at Swin stage 1).

Where DAIM puts it (the reference code; the paper's figure draws it in the text stream):

- :func:`attach_to_swin_blocks`: inside every timm ``SwinTransformerBlock``, after the attention
  residual and before the MLP residual, over the whole image's (B, H·W, C) token set (not per
  window); the MLP residual then carries the ContraNorm output:
  ``x = x + DropPath(WMSA(LN1(x)))``; ``x = ContraNorm(x)``; ``x = x + DropPath(MLP(LN2(x)))``.
- stage outputs: applied by :class:`daimlib.encoders.ImageEncoder` before each used stage's LN.
- :func:`attach_to_bert_layers` (``fdm.text_layers``, off in every paper preset): on the *output*
  of the chosen BERT layers (after the FFN residual and its LayerNorm), with padding excluded as
  keys. The reference's commented-out variants sit inside the layer; the layer output is the one
  insertion point that needs no copy of BERT's code, and it is what the hidden states then carry.
"""

from __future__ import annotations

import types

import torch
import torch.nn.functional as F
from torch import nn


def contranorm(
    x: torch.Tensor, scale: float = 0.1, tau: float = 1.0, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """ContraNorm (spec section 3): ``(1+s)·x − s·softmax(x̂x̂ᵀ/τ)·x`` per sequence.

    Args:
        x: tokens ``[B, N, C]``.
        scale: s; 0 returns ``x`` unchanged.
        tau: softmax temperature τ.
        mask: optional ``[B, N]`` bool, True = real token. Padding is excluded as a *key* (it
            attracts and repels nothing); padded rows are still computed and are meaningless.

    Returns:
        A tensor of the shape and dtype of ``x``.
    """
    if x.dim() != 3:
        raise ValueError(f"contranorm expects tokens [B, N, C]; got shape {tuple(x.shape)}")
    if scale == 0:
        return x
    if tau <= 0:
        raise ValueError(f"contranorm: tau must be > 0, got {tau}")
    attn_mask = None
    if mask is not None:
        if mask.shape != x.shape[:2]:
            raise ValueError(
                f"contranorm: mask must be [B, N] = {tuple(x.shape[:2])}, got {tuple(mask.shape)}"
            )
        attn_mask = mask.to(torch.bool)[:, None, :]  # [B, 1, N]: broadcast over queries
    x_hat = F.normalize(x, dim=-1)  # [B, N, C]
    ax = F.scaled_dot_product_attention(
        x_hat.unsqueeze(1),
        x_hat.unsqueeze(1),
        x.unsqueeze(1),
        attn_mask=None if attn_mask is None else attn_mask.unsqueeze(1),
        scale=1.0 / tau,
    ).squeeze(1)  # [B, N, C]
    return (1.0 + scale) * x - scale * ax


class ContraNorm(nn.Module):
    """:func:`contranorm` as a parameter-free module (the FDM of spec section 3)."""

    def __init__(self, scale: float = 0.1, tau: float = 1.0):
        super().__init__()
        self.scale = float(scale)
        self.tau = float(tau)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return contranorm(x, self.scale, self.tau, mask)

    def extra_repr(self) -> str:
        return f"scale={self.scale}, tau={self.tau}"


# --- Swin -------------------------------------------------------------------------------------


def _swin_block_forward_with_contranorm(self, x: torch.Tensor) -> torch.Tensor:
    """timm ``SwinTransformerBlock.forward`` (NHWC in and out) with ContraNorm between residuals."""
    B, H, W, C = x.shape
    x = x + self.drop_path1(self._attn(self.norm1(x)))
    x = self.contranorm(x.reshape(B, H * W, C))  # [B, H*W, C]: the whole image, not windows
    x = x + self.drop_path2(self.mlp(self.norm2(x)))
    return x.reshape(B, H, W, C)


def swin_blocks(model: nn.Module) -> list[nn.Module]:
    """All timm ``SwinTransformerBlock`` modules of ``model``, in forward order."""
    from timm.models.swin_transformer import SwinTransformerBlock

    return [m for m in model.modules() if isinstance(m, SwinTransformerBlock)]


def attach_to_swin_blocks(model: nn.Module, scale: float = 0.1, tau: float = 1.0) -> int:
    """Insert ContraNorm into every Swin block of a timm model; returns the number of blocks.

    Each block gets a ``contranorm`` child module and a forward that applies it after the
    attention residual (spec section 1.1, ★). Calling it again only updates scale/τ.
    """
    blocks = swin_blocks(model)
    if not blocks:
        raise ValueError(
            f"attach_to_swin_blocks: {type(model).__name__} has no timm SwinTransformerBlock; "
            "set fdm.image_blocks=False for other backbones"
        )
    for blk in blocks:
        blk.contranorm = ContraNorm(scale, tau)
        blk.forward = types.MethodType(_swin_block_forward_with_contranorm, blk)
    return len(blocks)


# --- BERT -------------------------------------------------------------------------------------


class BertContraNormHooks:
    """ContraNorm on the outputs of chosen BERT layers (1-based), padding excluded as keys.

    The hooks sit on each chosen layer's ``output`` sub-module (``BertOutput``: FFN residual +
    LayerNorm), so the layer's returned value, and hence ``hidden_states[k]``, is the ContraNorm
    output. The padding mask is set per forward by the owner through :meth:`set_mask`.
    """

    def __init__(self, bert: nn.Module, layers: tuple[int, ...], scale: float = 0.1, tau: float = 1.0):
        encoder_layers = bert.encoder.layer
        n = len(encoder_layers)
        bad = [k for k in layers if not 1 <= k <= n]
        if bad:
            raise ValueError(f"fdm.text_layers must be 1-based layer numbers in 1..{n}; got {list(layers)}")
        self.module = ContraNorm(scale, tau)
        self.mask: torch.Tensor | None = None
        self.handles = [encoder_layers[k - 1].output.register_forward_hook(self._hook) for k in layers]

    def set_mask(self, mask: torch.Tensor | None) -> None:
        self.mask = mask

    def _hook(self, module, inputs, output):
        return self.module(output, self.mask)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        self.handles = []


def attach_to_bert_layers(
    bert: nn.Module, layers: tuple[int, ...], scale: float = 0.1, tau: float = 1.0
) -> BertContraNormHooks:
    """Attach ContraNorm after the given 1-based BERT layers (see :class:`BertContraNormHooks`)."""
    return BertContraNormHooks(bert, tuple(layers), scale, tau)
