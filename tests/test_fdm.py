"""ContraNorm, the FDM (spec section 3), and its insertion into timm Swin blocks."""

import pytest
import timm
import torch
import torch.nn.functional as F

from daimlib.fdm import ContraNorm, attach_to_swin_blocks, contranorm, swin_blocks


def explicit_contranorm(x, scale, tau, mask=None):
    """(1+s) x - s softmax(x̂ x̂ᵀ / τ) x with the N×N matrix written out."""
    xh = F.normalize(x.double(), dim=-1)
    logits = xh @ xh.transpose(1, 2) / tau  # [B, N, N]
    if mask is not None:
        logits = logits.masked_fill(~mask[:, None, :], float("-inf"))
    a = torch.softmax(logits, dim=-1)
    return ((1 + scale) * x.double() - scale * a @ x.double()).float()


@pytest.mark.parametrize("scale, tau", [(0.1, 1.0), (0.5, 0.3), (-0.2, 2.0)])
def test_contranorm_equals_explicit_formula(scale, tau):
    x = 3 * torch.randn(2, 37, 16)
    torch.testing.assert_close(
        contranorm(x, scale, tau), explicit_contranorm(x, scale, tau), atol=1e-5, rtol=1e-5
    )


def test_contranorm_is_identity_at_scale_zero():
    x = torch.randn(2, 5, 8)
    assert torch.equal(contranorm(x, 0.0), x)
    assert torch.equal(ContraNorm(0.0)(x), x)


def test_contranorm_mask_excludes_padding_as_keys():
    x = torch.randn(3, 10, 8)
    lens = [10, 4, 7]
    mask = torch.arange(10)[None] < torch.tensor(lens)[:, None]
    got = contranorm(x, 0.1, 1.0, mask)
    torch.testing.assert_close(got, explicit_contranorm(x, 0.1, 1.0, mask), atol=1e-5, rtol=1e-5)
    dirty = x.clone()
    for b, n in enumerate(lens):
        dirty[b, n:] = 100 * torch.randn(10 - n, 8)
        # real tokens equal ContraNorm of the real tokens alone
        alone = contranorm(x[b : b + 1, :n], 0.1)
        torch.testing.assert_close(contranorm(dirty, 0.1, 1.0, mask)[b, :n], alone[0], atol=1e-5, rtol=1e-5)


def test_contranorm_pushes_similar_tokens_apart():
    base = torch.randn(1, 1, 16)
    x = base + 0.05 * torch.randn(1, 6, 16)  # six nearly identical tokens
    y = contranorm(x, 0.5)
    spread = lambda t: (t - t.mean(1, keepdim=True)).norm()  # noqa: E731
    assert spread(y) > spread(x)


def test_contranorm_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[B, N, C\].*\(5, 8\)"):
        contranorm(torch.randn(5, 8))
    with pytest.raises(ValueError, match=r"mask must be \[B, N\] = \(2, 5\)"):
        contranorm(torch.randn(2, 5, 8), mask=torch.ones(2, 4, dtype=torch.bool))


def _tiny_swin():
    return timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        embed_dim=16,
        depths=[2, 1],
        num_heads=[1, 2],
        window_size=4,
    ).eval()


def test_in_block_contranorm_changes_the_swin_output():
    plain = _tiny_swin()
    fdm = _tiny_swin()
    fdm.load_state_dict(plain.state_dict())
    assert attach_to_swin_blocks(fdm, 0.1) == 3
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a, b = plain.forward_features(x), fdm.forward_features(x)
    assert a.shape == b.shape and (a - b).abs().max() > 1e-3


def test_in_block_contranorm_equals_manual_block_with_global_tokens():
    model = _tiny_swin()
    attach_to_swin_blocks(model, 0.1)
    blk = swin_blocks(model)[1]  # the shifted-window block of stage 1
    x = torch.randn(2, 8, 8, 16)  # NHWC: 64 tokens per image, 4 windows of 16
    with torch.no_grad():
        got = blk(x)
        h = x + blk._attn(blk.norm1(x))  # attention residual (drop path 0)
        tok = h.reshape(2, 64, 16)  # whole image, not per window
        tok = explicit_contranorm(tok, 0.1, 1.0)
        want = (tok + blk.mlp(blk.norm2(tok))).reshape(2, 8, 8, 16)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("train", [False, True])
def test_patched_swin_block_equals_timms_own_block_when_contranorm_is_identity(train):
    """The ContraNorm patch re-implements timm's SwinTransformerBlock.forward around one inserted call;
    with that call made the identity it must equal timm's own forward (both window kinds, drop path on)."""
    from timm.models.swin_transformer import SwinTransformerBlock

    model = timm.create_model(
        "swin_tiny_patch4_window7_224",
        pretrained=False,
        num_classes=0,
        img_size=32,
        embed_dim=16,
        depths=[2, 1],
        num_heads=[1, 2],
        window_size=4,
        drop_path_rate=0.3,
    )
    model.train(train)
    attach_to_swin_blocks(model, 0.1)
    blocks = swin_blocks(model)
    assert len({any(b.shift_size) for b in blocks}) == 2  # shifted and plain windows both checked
    for blk in blocks:
        blk.contranorm = torch.nn.Identity()
        x = torch.randn(2, *blk.input_resolution, blk.norm1.normalized_shape[0])
        torch.manual_seed(1)
        got = blk(x)
        torch.manual_seed(1)
        want = SwinTransformerBlock.forward(blk, x)
        torch.testing.assert_close(got, want, atol=0, rtol=0)
