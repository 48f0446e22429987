"""SCAN similarity (spec 2.1) against a naive per-caption, per-image loop written from the formulas."""

import pytest
import torch
import torch.nn.functional as F

from daimlib.similarity import multilevel_similarity, scan, scan_i2t, scan_t2i


def _cos(x, y):
    return (x * y).sum(-1) / (x.norm(dim=-1) * y.norm(dim=-1)).clamp_min(1e-8)


def naive_t2i(img, txt, lens, lam):
    out = torch.zeros(img.shape[0], txt.shape[0], dtype=torch.float64)
    for c in range(txt.shape[0]):
        t = txt[c, : lens[c]].double()  # [L, D]
        for i in range(img.shape[0]):
            v = img[i].double()  # [R, D]
            s = v @ t.T  # [R, L]
            e = F.leaky_relu(s, 0.1)
            e = e / (e.norm(dim=1, keepdim=True) + 1e-8)  # over words, per region
            alpha = torch.softmax(lam * e, dim=0)  # over regions
            a = alpha.T @ v  # [L, D]
            out[i, c] = _cos(t, a).mean()
    return out


def naive_i2t(img, txt, lens, lam):
    out = torch.zeros(img.shape[0], txt.shape[0], dtype=torch.float64)
    for c in range(txt.shape[0]):
        t = txt[c, : lens[c]].double()
        for i in range(img.shape[0]):
            v = img[i].double()
            s = t @ v.T  # [L, R]
            e = F.leaky_relu(s, 0.1)
            e = e / (e.norm(dim=1, keepdim=True) + 1e-8)  # over regions, per word
            alpha = torch.softmax(lam * e, dim=0)  # over words
            a = alpha.T @ t  # [R, D]
            out[i, c] = _cos(v, a).mean()
    return out


def _inputs(n_img=5, n_cap=7, R=9, L=8, D=16):
    img = torch.randn(n_img, R, D)
    txt = torch.randn(n_cap, L, D)
    lens = torch.tensor([L, 1, 3, L - 1, 5, 2, 4][:n_cap])
    return img, txt, lens


@pytest.mark.parametrize("use_gram", [True, False])
def test_scan_t2i_equals_naive_loop_with_mixed_lengths(use_gram):
    img, txt, lens = _inputs()
    got = scan_t2i(img, txt, lens, 9.0, use_gram=use_gram)
    torch.testing.assert_close(got.double(), naive_t2i(img, txt, lens, 9.0), atol=1e-5, rtol=0)


def test_scan_i2t_equals_naive_loop_with_mixed_lengths():
    img, txt, lens = _inputs()
    got = scan_i2t(img, txt, lens, 4.0)
    torch.testing.assert_close(got.double(), naive_i2t(img, txt, lens, 4.0), atol=1e-5, rtol=0)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_tiny_block_budget_gives_the_same_scores_as_one_block(direction):
    img, txt, lens = _inputs()
    whole = scan(img, txt, lens, direction)
    tiny = scan(img, txt, lens, direction, max_block_bytes=1)  # 1 image x 1 caption per block
    torch.testing.assert_close(tiny, whole, atol=1e-6, rtol=0)


@pytest.mark.parametrize("direction", ["t2i", "i2t", "both"])
def test_garbage_in_padding_changes_nothing(direction):
    img, txt, lens = _inputs()
    dirty = txt.clone()
    for c, n in enumerate(lens.tolist()):
        dirty[c, n:] = 1e4 * torch.randn(txt.shape[1] - n, txt.shape[2])
    clean = txt.clone()
    for c, n in enumerate(lens.tolist()):
        clean[c, n:] = 0
    torch.testing.assert_close(scan(img, dirty, lens, direction), scan(img, clean, lens, direction))
    # and cutting the padding away entirely gives the same column
    for c, n in enumerate(lens.tolist()):
        alone = scan(img, txt[c : c + 1, :n], lens[c : c + 1], direction)
        torch.testing.assert_close(alone[:, 0], scan(img, dirty, lens, direction)[:, c], atol=1e-6, rtol=0)


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_per_level_scores_lie_in_minus_one_one(direction):
    img = 5 * torch.randn(6, 7, 12)
    txt = torch.cat([5 * torch.randn(6, 5, 12), -img[:, :5]], 0)  # includes anti-aligned tokens
    lens = torch.randint(1, 6, (12,))
    s = scan(img, txt, lens, direction)
    assert s.shape == (6, 12)
    assert s.min() >= -1 - 1e-6 and s.max() <= 1 + 1e-6


def test_half_precision_inputs_are_scored_in_fp32():
    img, txt, lens = _inputs()
    s16 = scan_t2i(img.half(), txt.half(), lens)
    assert s16.dtype == torch.float32
    ref = naive_t2i(img.half().float(), txt.half().float(), lens, 9.0)
    torch.testing.assert_close(s16.double(), ref, atol=1e-5, rtol=0)


def test_gradients_match_the_naive_loop():
    img, txt, lens = _inputs(3, 4, 5, 6, 8)
    no_grad_scores = scan_t2i(img, txt, lens)  # the in-place inference path
    img.requires_grad_(True)
    with_grad = scan_t2i(img, txt, lens)  # the autograd path
    torch.testing.assert_close(with_grad.detach(), no_grad_scores, atol=1e-6, rtol=0)
    with_grad.sum().backward()
    g_fast = img.grad.clone()
    img.grad = None
    naive_t2i(img, txt, lens, 9.0).sum().backward()
    torch.testing.assert_close(g_fast.double(), img.grad.double(), atol=1e-5, rtol=1e-4)


def test_multilevel_is_the_weighted_sum_and_both_is_the_average():
    levels = [_inputs(4, 7, R, 8, 16)[:2] for R in (9, 4, 2)]
    lens = _inputs()[2]
    imgs = [v for v, _ in levels]
    txts = [t for _, t in levels]
    w = (1.0, 0.5, 2.0)
    got = multilevel_similarity(imgs, txts, lens, weights=w, direction="t2i")
    want = sum(wi * naive_t2i(v, t, lens, 9.0) for wi, v, t in zip(w, imgs, txts))
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    both = scan(imgs[0], txts[0], lens, "both")
    want_both = 0.5 * naive_t2i(imgs[0], txts[0], lens, 9.0) + 0.5 * naive_i2t(imgs[0], txts[0], lens, 9.0)
    torch.testing.assert_close(both.double(), want_both, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "img_shape, txt_shape, lens, needle",
    [
        ((4, 9), (7, 8, 16), [3] * 7, "img must be [n_img, R, D]"),
        ((4, 9, 16), (7, 16), [3] * 7, "txt must be [n_cap, L, D]"),
        ((4, 9, 16), (7, 8, 12), [3] * 7, "share the feature size D"),
        ((4, 9, 16), (7, 8, 16), [3] * 6, "txt_lens must be [n_cap] = [7]"),
        ((4, 9, 16), (7, 8, 16), [0] + [3] * 6, "1..L = 1..8"),
        ((4, 9, 16), (7, 8, 16), [9] + [3] * 6, "1..L = 1..8"),
    ],
)
def test_bad_shapes_raise_value_error_naming_the_shapes(img_shape, txt_shape, lens, needle):
    with pytest.raises(ValueError, match=needle.replace("[", r"\[").replace("]", r"\]")) as info:
        scan_t2i(torch.randn(img_shape), torch.randn(txt_shape), torch.tensor(lens))
    assert str(tuple(txt_shape)) in str(info.value) or str(tuple(img_shape)) in str(info.value)


def test_level_count_mismatch_raises():
    img, txt, lens = _inputs()
    with pytest.raises(ValueError, match="2 image levels, 3 text levels"):
        multilevel_similarity([img, img], [txt, txt, txt], lens)


def test_unknown_direction_raises():
    img, txt, lens = _inputs()
    with pytest.raises(ValueError, match="direction"):
        scan(img, txt, lens, "sideways")


@pytest.mark.parametrize("fn", [scan_i2t, scan_t2i], ids=["i2t", "t2i"])
def test_scan_gradients_stay_finite_with_padded_captions(fn):
    """Padded word slots are zero vectors; their L2 norm must not send NaN back (i2t diverged at step 1)."""
    gen = torch.Generator().manual_seed(0)
    img = torch.randn(3, 5, 8, generator=gen, requires_grad=True)
    txt = torch.randn(4, 6, 8, generator=gen, requires_grad=True)
    fn(img, txt, torch.tensor([6, 3, 4, 2])).sum().backward()
    assert torch.isfinite(img.grad).all() and torch.isfinite(txt.grad).all()
    assert img.grad.abs().sum() > 0 and txt.grad.abs().sum() > 0


def _t2i_block_inputs(lam_dtype=torch.float64):
    gen = torch.Generator().manual_seed(3)
    lens = torch.tensor([6, 3, 4, 2])
    mask = torch.arange(6)[None] < lens[:, None]
    v = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    t = torch.randn(4, 6, 8, generator=gen, dtype=torch.float64).masked_fill(~mask[..., None], 0.0)
    return v, t.requires_grad_(True), mask, lens


@pytest.mark.slow  # float64 gradcheck: ~37 s on 2 cores
@pytest.mark.parametrize("lam", [9.0, 100.0], ids=["exp", "softmax-shifted"])
def test_hand_written_t2i_backward_passes_gradcheck(lam):
    """The fused block's backward against finite differences (float64), every differentiable input."""
    from daimlib.similarity import _T2IBlock

    v, t, mask, lens = _t2i_block_inputs()
    gram = torch.bmm(v, v.transpose(1, 2)).detach().requires_grad_(True)
    tnorm = t.norm(dim=-1).detach().requires_grad_(True)

    def block(v_, g_, t_, n_):
        # padding is zeroed inside, as _scan does: the padded entries' true derivative is 0, but a
        # central difference across LeakyReLU's kink at 0 is not (an artefact, not a gradient)
        t_ = t_.masked_fill(~mask[..., None], 0.0)
        return _T2IBlock.apply(v_, g_, t_, n_, mask, lens.double(), lam)

    assert torch.autograd.gradcheck(block, (v, gram, t, tnorm), eps=1e-6, atol=1e-6)


def test_hand_written_t2i_backward_equals_autograd_and_the_naive_loop(monkeypatch):
    from daimlib import similarity as S

    img, txt, lens = _inputs(4, 7, 9, 8, 16)
    grads = {}
    for fused in (True, False):
        monkeypatch.setattr(S, "FUSED_T2I_BACKWARD", fused)
        a, b = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
        w = torch.linspace(-1, 2, a.shape[0] * b.shape[0]).view(a.shape[0], b.shape[0])  # not all-ones
        out = scan_t2i(a, b, lens)
        (out * w).sum().backward()
        grads[fused] = (out.detach(), a.grad, b.grad)
    for x, y in zip(grads[True], grads[False]):
        torch.testing.assert_close(x, y, atol=1e-6, rtol=1e-5)
    a, b = img.clone().requires_grad_(True), txt.clone().requires_grad_(True)
    (naive_t2i(a, b, lens, 9.0) * w.double()).sum().backward()
    torch.testing.assert_close(grads[True][1].double(), a.grad.double(), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(grads[True][2].double(), b.grad.double(), atol=1e-5, rtol=1e-4)


def test_hand_written_t2i_backward_can_run_twice_on_a_retained_graph():
    """The backward never writes its saved tensors: a second pass gives the same gradient."""
    img, txt, lens = _inputs(3, 4, 5, 6, 8)
    img.requires_grad_(True)
    out = scan_t2i(img, txt, lens).sum()
    (g1,) = torch.autograd.grad(out, img, retain_graph=True)
    (g2,) = torch.autograd.grad(out, img)
    torch.testing.assert_close(g1, g2, atol=0, rtol=0)
