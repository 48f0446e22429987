"""Cross-attention similarity of DAIM: SCAN (Lee et al. 2018), spec section 2.

One level, image tokens v_1..v_R and the caption's L real tokens t_1..t_L ([CLS]/[SEP] included):

text-to-image (``scan_t2i``, DAIM's default; words attend to regions)::

    s_rw = v_r·t_w;  s̃ = LeakyReLU_0.1(s);  ŝ_rw = s̃_rw / (sqrt(Σ_w' s̃_rw'²) + 1e-8)
    α_wr = softmax_r(λ ŝ_rw);  a_w = Σ_r α_wr v_r;  S = (1/L) Σ_w cos(t_w, a_w)

image-to-text (``scan_i2t``, HAT's default) swaps the roles (L2 over regions per word, softmax over
words, mean over the R regions). The cosine is ``x·y / max(|x||y|, 1e-8)``.

Computation, all image × caption pairs of a block at once (no Python loop per caption):

- captions are sorted by length and cut into blocks whose padded width is that block's longest
  caption, so padded words cost (almost) nothing; padding is zeroed and masked out;
- the raw scores s come from one matrix product per block, and are reused for the cosine
  numerator: t_w·a_w = Σ_r α_wr s_rw (no attended vectors a_w are formed);
- |a_w|² = α_wᵀ (V Vᵀ) α_w with the per-image Gram matrix V Vᵀ when R ≤ D (the text Gram matrix
  T Tᵀ for i2t); otherwise a_w is formed;
- blocks are sized so that the big [images, R, captions, words] intermediates stay below
  ``max_block_bytes`` (default: 8 MiB on CPU, where cache-sized blocks run about twice as fast as
  large ones; 512 MiB on GPUs and under autograd); without autograd the block math runs in place;
- everything is computed in fp32.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

_EPS_L2 = 1e-8  # clipped_l2norm epsilon
_EPS_COS = 1e-8  # cosine similarity epsilon on the norm product
_SAFE_EXP = 80.0  # exp(80) is finite in fp32
_LIVE = 4  # big block-sized fp32 tensors alive at once (block sizing)
DEFAULT_BLOCK_BYTES = None  # auto: CPU_BLOCK_BYTES on CPU, GPU_BLOCK_BYTES on accelerators
CPU_BLOCK_BYTES = 8 * 2**20  # cache-sized blocks: 2x faster on CPU than 256 MiB blocks (bench_scan);
# in training too: each block's captions are cut to their longest, and its activations stay small
# enough for the allocator to reuse (benchmarks/bench_train_step.py)
GPU_BLOCK_BYTES = 512 * 2**20
DIRECTIONS = ("t2i", "i2t", "both")


def _check_inputs(img: torch.Tensor, txt: torch.Tensor, txt_lens: torch.Tensor) -> torch.Tensor:
    if img.dim() != 3:
        raise ValueError(f"img must be [n_img, R, D]; got shape {tuple(img.shape)}")
    if txt.dim() != 3:
        raise ValueError(f"txt must be [n_cap, L, D]; got shape {tuple(txt.shape)}")
    if img.shape[-1] != txt.shape[-1]:
        raise ValueError(
            f"img and txt must share the feature size D; got img {tuple(img.shape)} and txt {tuple(txt.shape)}"
        )
    txt_lens = torch.as_tensor(txt_lens, device=txt.device)
    if txt_lens.dim() != 1 or txt_lens.shape[0] != txt.shape[0]:
        raise ValueError(
            f"txt_lens must be [n_cap] = [{txt.shape[0]}] for txt {tuple(txt.shape)}; got shape {tuple(txt_lens.shape)}"
        )
    if txt_lens.numel():
        lo, hi = int(txt_lens.min()), int(txt_lens.max())
        if lo < 1 or hi > txt.shape[1]:
            raise ValueError(
                f"txt_lens must lie in 1..L = 1..{txt.shape[1]} for txt {tuple(txt.shape)}; got values in {lo}..{hi}"
            )
    return txt_lens.long()


def _block_plan(n_img: int, per_pair_bytes: int, n_cap: int, max_block_bytes: int) -> tuple[int, int]:
    """Image and caption block sizes with bi·bc·per_pair ≤ max_block_bytes (at least 1×1)."""
    pairs = max(1, max_block_bytes // max(1, per_pair_bytes))
    bi = min(n_img, max(1, math.isqrt(pairs)))
    bc = min(n_cap, max(1, pairs // bi))
    if bc == n_cap:  # captions fit: give the rest of the budget to images
        bi = min(n_img, max(1, pairs // max(1, n_cap)))
    return bi, bc


def _t2i_block(v, gram, t, tnorm, mask, lens, lam):
    """t2i scores of a block. v [bi, R, D], t [bc, Lb, D] (padding zeroed), mask [bc, Lb]."""
    bi, R, D = v.shape
    bc, Lb, _ = t.shape
    s = (v.reshape(bi * R, D) @ t.reshape(bc * Lb, D).T).view(bi, R, bc, Lb)  # [bi, R, bc, Lb]
    inplace = not (torch.is_grad_enabled() and (v.requires_grad or t.requires_grad))
    e = F.leaky_relu(s, 0.1)
    scale = lam / (
        torch.linalg.vector_norm(e, dim=-1, keepdim=True) + _EPS_L2
    )  # [bi, R, bc, 1]: L2 over words
    if inplace and abs(lam) <= _SAFE_EXP:  # |λ ŝ| ≤ |λ|: exp cannot overflow, no max-shift needed
        alpha = e.mul_(scale).exp_()
        alpha.div_(alpha.sum(1, keepdim=True))  # [bi, R, bc, Lb]: softmax over regions
        num = s.mul_(alpha).sum(1)  # [bi, bc, Lb]: t_w·a_w = Σ_r α s_rw
    else:
        alpha = torch.softmax(e * scale, dim=1)  # [bi, R, bc, Lb]: softmax over regions
        num = (alpha * s).sum(1)  # [bi, bc, Lb]: t_w·a_w = Σ_r α s_rw
    del s, e, scale
    if gram is not None:  # |a_w|² = αᵀ (V Vᵀ) α
        ga = torch.bmm(gram, alpha.view(bi, R, bc * Lb)).view(bi, R, bc, Lb)
        a2 = (ga.mul_(alpha) if inplace else ga * alpha).sum(1)  # [bi, bc, Lb]
    else:
        a = torch.bmm(alpha.view(bi, R, bc * Lb).transpose(1, 2), v)  # [bi, bc*Lb, D]
        a2 = torch.linalg.vector_norm(a, dim=-1).square().view(bi, bc, Lb)
    cos = num / (tnorm[None] * a2.clamp_min(0).sqrt()).clamp_min(_EPS_COS)  # [bi, bc, Lb]
    return (cos * mask[None]).sum(-1) / lens[None]  # [bi, bc]


class _T2IBlock(torch.autograd.Function):
    """The t2i block of :func:`_t2i_block` (Gram form) with a hand-written backward.

    Autograd's backward of the block walks every elementwise op of the forward again and keeps
    about five block-sized tensors alive; this one keeps three (the raw scores s, the attention
    α and G α), runs its forward in place as inference does, and forms the gradient in a few
    fused passes that never write the saved tensors (derivation in the comments of ``backward``). Results equal autograd's to float
    rounding (``tests/test_similarity.py`` checks both against the naive loop and each other, in
    float64 with ``torch.autograd.gradcheck``). Not twice differentiable.
    """

    @staticmethod
    def forward(ctx, v, gram, t, tnorm, mask, lens, lam):
        bi, R, D = v.shape
        bc, Lb, _ = t.shape
        s = (v.reshape(bi * R, D) @ t.reshape(bc * Lb, D).T).view(bi, R, bc, Lb)  # [bi, R, bc, Lb]
        e = F.leaky_relu(s, 0.1)
        n = torch.linalg.vector_norm(e, dim=-1, keepdim=True)  # [bi, R, bc, 1]: L2 over words
        k = lam / (n + _EPS_L2)
        e.mul_(k)  # z = λ ŝ
        if abs(lam) <= _SAFE_EXP:  # |z| ≤ |λ|: exp cannot overflow, no max-shift needed
            alpha = e.exp_()
            alpha.div_(alpha.sum(1, keepdim=True))  # [bi, R, bc, Lb]: softmax over regions
        else:
            alpha = torch.softmax(e, dim=1)
        del e
        tmp = torch.mul(s, alpha)
        num = tmp.sum(1)  # [bi, bc, Lb]: t_w·a_w = Σ_r α s_rw
        ga = torch.bmm(gram, alpha.view(bi, R, bc * Lb)).view(bi, R, bc, Lb)  # (G α)_rw
        torch.mul(ga, alpha, out=tmp)
        q = tmp.sum(1)  # [bi, bc, Lb]: |a_w|² = αᵀ G α
        del tmp
        sq = q.clamp_min(0).sqrt()
        den_raw = tnorm[None] * sq
        den = den_raw.clamp_min(_EPS_COS)
        cos = num / den
        ctx.lam = lam
        ctx.save_for_backward(v, gram, t, tnorm, mask, lens, s, alpha, ga, n, k, num, sq, den_raw, den)
        return (cos * mask[None]).sum(-1) / lens[None]  # [bi, bc]

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):
        v, gram, t, tnorm, mask, lens, s, alpha, ga, n, k, num, sq, den_raw, den = ctx.saved_tensors
        lam = ctx.lam
        bi, R, D = v.shape
        bc, Lb, _ = t.shape
        # S = Σ_w m_w cos_w / len, cos_w = num_w / den_w, den_w = max(|t_w| sqrt(q_w), eps)
        gcos = g[:, :, None] * (mask[None] / lens[None, :, None])  # [bi, bc, Lb]
        gnum = gcos / den
        gden = torch.where(den_raw > _EPS_COS, -gcos * num / den.square(), 0.0)
        gtnorm = (gden * sq).sum(0)  # [bc, Lb]
        gq = torch.where(sq > 0, gden * tnorm[None] / (2 * sq).clamp_min(1e-30), 0.0)  # d sqrt(q) / dq
        # q = αᵀ G α and num = Σ_r α s: dL/dα = 2 gq (G α) + gnum s  (G is symmetric)
        galpha = torch.mul(ga, (2 * gq)[:, None])
        galpha.addcmul_(s, gnum[:, None])
        # saved tensors are never written (a retained graph can run backward again): one work buffer
        buf = torch.mul(alpha, gq[:, None])
        # dL/dG = Σ_{c,w} gq α αᵀ (one batched product per image)
        ggram = torch.bmm(buf.view(bi, R, bc * Lb), alpha.view(bi, R, bc * Lb).transpose(1, 2))
        # softmax over regions: dL/dz = α (dL/dα - Σ_r α dL/dα)
        torch.mul(alpha, galpha, out=buf)
        galpha.sub_(buf.sum(1, keepdim=True)).mul_(alpha)  # galpha now holds dL/dz
        gz = galpha
        direct = torch.mul(alpha, gnum[:, None])  # the direct term of num in dL/ds
        e = torch._C._nn.leaky_relu(s, 0.1, out=buf)
        # z = k e with k = λ / (n + eps), n = |e| over words:
        #   dL/dk = Σ_w dL/dz e;  dL/dn = -dL/dk k² / λ;  dL/de = dL/dz k + dL/dn e / n
        gk = torch.linalg.vecdot(gz, e, dim=-1).unsqueeze(-1)  # [bi, R, bc, 1]
        coef = torch.where(n > 0, -gk * k.square() / (lam * n.clamp_min(1e-30)), 0.0)
        ge = gz.mul_(k).addcmul_(e, coef)
        gs = torch.ops.aten.leaky_relu_backward(ge, s, 0.1, False).add_(direct)  # through e = LeakyReLU(s)
        gs2 = gs.view(bi * R, bc * Lb)
        gv = (gs2 @ t.reshape(bc * Lb, D)).view(bi, R, D)
        gt = (gs2.T @ v.reshape(bi * R, D)).view(bc, Lb, D)
        return gv, ggram, gt, gtnorm, None, None, None


FUSED_T2I_BACKWARD = False  # True: the hand-written t2i backward in training (off: no step-level gain measured: docs/maintainers.md)


def _i2t_block(v, vnorm, t, tgram, mask, lam):
    """i2t scores of a block. v [bi, R, D], t [bc, Lb, D] (padding zeroed), tgram [bc, Lb, Lb]."""
    bi, R, D = v.shape
    bc, Lb, _ = t.shape
    s = (v.reshape(bi * R, D) @ t.reshape(bc * Lb, D).T).view(bi, R, bc, Lb)  # [bi, R, bc, Lb]
    e = F.leaky_relu(s, 0.1)
    # clamp before sqrt: padded words give a zero sum, whose sqrt gradient would be inf (NaN after * 0)
    inv = lam / (
        e.square().sum(1, keepdim=True).clamp_min(1e-30).sqrt() + _EPS_L2
    )  # [bi, 1, bc, Lb]: L2 over regions
    logits = (e * inv).masked_fill(~mask[None, None], float("-inf"))
    alpha = torch.softmax(logits, dim=-1)  # [bi, R, bc, Lb]: softmax over the caption's words
    del e, inv, logits
    num = (alpha * s).sum(-1)  # [bi, R, bc]: v_r·a_r = Σ_w α s_rw
    del s
    ga = torch.matmul(alpha.permute(2, 0, 1, 3).reshape(bc, bi * R, Lb), tgram)  # [bc, bi*R, Lb]
    a2 = (alpha.permute(2, 0, 1, 3).reshape(bc, bi * R, Lb) * ga).sum(-1)  # [bc, bi*R]
    a2 = a2.view(bc, bi, R).permute(1, 2, 0)  # [bi, R, bc]
    cos = num / (vnorm[..., None] * a2.clamp_min(0).sqrt()).clamp_min(_EPS_COS)  # [bi, R, bc]
    return cos.mean(1)  # [bi, bc]


def _scan(img, txt, txt_lens, direction, lambda_softmax, max_block_bytes, use_gram):
    txt_lens = _check_inputs(img, txt, txt_lens)
    if max_block_bytes is None:  # CPU: cache-sized blocks, with or without autograd; GPU: few large ones
        max_block_bytes = CPU_BLOCK_BYTES if img.device.type == "cpu" else GPU_BLOCK_BYTES
    n_img, R, D = img.shape
    n_cap, L, _ = txt.shape
    out = torch.zeros(n_img, n_cap, dtype=torch.float32, device=img.device)  # [n_img, n_cap]
    if n_img == 0 or n_cap == 0:
        return out
    img = img.float()
    txt = txt.float()
    mask_full = torch.arange(L, device=txt.device)[None] < txt_lens[:, None]  # [n_cap, L]
    txt = txt.masked_fill(~mask_full[..., None], 0.0)  # padding can never leak in
    order = torch.argsort(txt_lens, descending=True)
    lens_sorted = txt_lens[order].tolist()
    if use_gram is None:
        use_gram = R <= D
    # per image: Gram matrix (t2i) or token norms (i2t)
    gram = torch.bmm(img, img.transpose(1, 2)) if (direction == "t2i" and use_gram) else None  # [n_img, R, R]
    vnorm = img.norm(dim=-1) if direction == "i2t" else None  # [n_img, R]
    grad = torch.is_grad_enabled() and (img.requires_grad or txt.requires_grad)
    fused = direction == "t2i" and gram is not None and grad and FUSED_T2I_BACKWARD

    p = 0
    while p < n_cap:
        Lb = lens_sorted[p]  # longest caption of this block (sorted descending)
        per_pair = 4 * R * Lb * _LIVE
        if direction == "t2i" and not use_gram:
            per_pair += 4 * Lb * D
        bi, bc = _block_plan(n_img, per_pair, n_cap - p, max_block_bytes)
        cols = order[p : p + bc]
        t = txt[cols, :Lb]  # [bc, Lb, D]
        mask = mask_full[cols, :Lb]  # [bc, Lb]
        lens = txt_lens[cols].to(torch.float32)
        if direction == "t2i":
            tnorm = t.norm(dim=-1)  # [bc, Lb]
        else:
            tgram = torch.bmm(t, t.transpose(1, 2))  # [bc, Lb, Lb]
        blocks = []
        for i0 in range(0, n_img, bi):
            v = img[i0 : i0 + bi]
            if direction == "t2i":
                g = gram[i0 : i0 + bi] if gram is not None else None
                if fused:
                    blocks.append(_T2IBlock.apply(v, g, t, tnorm, mask, lens, float(lambda_softmax)))
                else:
                    blocks.append(_t2i_block(v, g, t, tnorm, mask, lens, lambda_softmax))
            else:
                blocks.append(_i2t_block(v, vnorm[i0 : i0 + bi], t, tgram, mask, lambda_softmax))
        out = out.index_copy(1, cols, torch.cat(blocks, 0))
        p += bc
    return out


def scan_t2i(
    img: torch.Tensor,
    txt: torch.Tensor,
    txt_lens: torch.Tensor,
    lambda_softmax: float = 9.0,
    max_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
    use_gram: bool | None = None,
) -> torch.Tensor:
    """SCAN text-to-image scores (spec 2.1, ``xattn_score_t2i``): ``img [n_img, R, D]``,
    ``txt [n_cap, L, D]``, ``txt_lens [n_cap]`` -> ``[n_img, n_cap]`` (fp32, in [-1, 1]).

    ``use_gram`` (default: R ≤ D) picks the Gram-matrix form of |a_w|²; both are exact.
    """
    return _scan(img, txt, txt_lens, "t2i", lambda_softmax, max_block_bytes, use_gram)


def scan_i2t(
    img: torch.Tensor,
    txt: torch.Tensor,
    txt_lens: torch.Tensor,
    lambda_softmax: float = 9.0,
    max_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """SCAN image-to-text scores (spec 2.1, ``xattn_score_i2t``): regions attend to the caption's
    words; mean over the R regions. Shapes as :func:`scan_t2i`."""
    return _scan(img, txt, txt_lens, "i2t", lambda_softmax, max_block_bytes, None)


def scan(
    img: torch.Tensor,
    txt: torch.Tensor,
    txt_lens: torch.Tensor,
    direction: str = "t2i",
    lambda_softmax: float = 9.0,
    max_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """One level's SCAN scores ``[n_img, n_cap]``: ``direction`` "t2i", "i2t" or "both"
    (HAT*: 0.5·t2i + 0.5·i2t, spec 2.1)."""
    if direction == "t2i":
        return scan_t2i(img, txt, txt_lens, lambda_softmax, max_block_bytes)
    if direction == "i2t":
        return scan_i2t(img, txt, txt_lens, lambda_softmax, max_block_bytes)
    if direction == "both":
        return 0.5 * scan_t2i(img, txt, txt_lens, lambda_softmax, max_block_bytes) + 0.5 * scan_i2t(
            img, txt, txt_lens, lambda_softmax, max_block_bytes
        )
    raise ValueError(f"similarity direction must be one of {DIRECTIONS}; got {direction!r}")


def multilevel_similarity(
    img_levels: list[torch.Tensor],
    txt_levels: list[torch.Tensor],
    txt_lens: torch.Tensor,
    weights: tuple[float, ...] = (1.0, 1.0, 1.0),
    direction: str = "t2i",
    lambda_softmax: float = 9.0,
    max_block_bytes: int | None = DEFAULT_BLOCK_BYTES,
) -> torch.Tensor:
    """S(I, T) = Σ_ℓ w_ℓ S^ℓ(I, T) over the levels low, mid, high (spec 2.2) -> ``[n_img, n_cap]``."""
    if len(img_levels) != len(txt_levels) or len(img_levels) != len(weights):
        raise ValueError(
            f"level counts differ: {len(img_levels)} image levels, {len(txt_levels)} text levels, "
            f"{len(weights)} weights; expected the same number (3: low, mid, high)"
        )
    total = None
    for w, v, t in zip(weights, img_levels, txt_levels):
        if w == 0:
            continue
        s = float(w) * scan(v, t, txt_lens, direction, lambda_softmax, max_block_bytes)
        total = s if total is None else total + s
    if total is None:
        total = torch.zeros(img_levels[0].shape[0], txt_levels[0].shape[0], device=img_levels[0].device)
    return total
