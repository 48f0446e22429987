"""The self-checking exercises accept the library and an independent naive loop, and reject the
usual wrong implementations with the right reason, without printing the answer."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from daimlib.course.exercises import (
    QUESTIONS,
    check_answer,
    check_contranorm,
    check_gaussian_boundary,
    check_recall_at_k,
    check_scan_t2i,
)
from daimlib.evaluate import recall_metrics
from daimlib.fdm import contranorm
from daimlib.losses import gaussian_boundary
from daimlib.similarity import scan_i2t, scan_t2i

# --- SCAN t2i ---------------------------------------------------------------------------------


def naive_pair(v, t, lam=9.0, l2=True, softmax_dim=0, leaky=True):
    """Spec 2.1 written out for one pair, one word at a time (a student's loop)."""
    s = v @ t.T  # [R, L]
    if leaky:
        s = torch.where(s > 0, s, 0.1 * s)
    if l2:
        s = s / (torch.sqrt((s**2).sum(1, keepdim=True)) + 1e-8)
    alpha = torch.softmax(lam * s, dim=softmax_dim)
    total = 0.0
    for w in range(t.shape[0]):
        a_w = (alpha[:, w : w + 1] * v).sum(0)
        total += float(t[w] @ a_w / max(float(t[w].norm() * a_w.norm()), 1e-8))
    return total / t.shape[0]


def naive_batched(img, txt, txt_lens, lambda_softmax=9.0, **kw):
    out = torch.zeros(img.shape[0], txt.shape[0])
    for i in range(img.shape[0]):
        for j in range(txt.shape[0]):
            out[i, j] = naive_pair(img[i], txt[j, : int(txt_lens[j])], lambda_softmax, **kw)
    return out


def test_scan_checker_accepts_the_library_and_naive_loops():
    assert check_scan_t2i(scan_t2i)
    assert check_scan_t2i(naive_batched)
    fb = check_scan_t2i(
        lambda v, t, lambda_softmax=9.0: naive_pair(v, t, lambda_softmax)
    )  # one pair at a time
    assert fb and "5 cases" in fb.message
    fb = check_scan_t2i(lambda v, t: naive_pair(v, t))  # no λ argument: checked at λ = 9 only
    assert fb and "λ fixed at 9" in fb.message


@pytest.mark.parametrize(
    "wrong, reason",
    [
        (
            lambda img, txt, lens, lambda_softmax=9.0: scan_i2t(img, txt, lens, lambda_softmax),
            "image-to-text",
        ),
        (
            lambda img, txt, lens, lambda_softmax=9.0: naive_batched(
                img, txt, lens, lambda_softmax, l2=False
            ),
            "not L2-normalised",
        ),
        (
            lambda img, txt, lens, lambda_softmax=9.0: naive_batched(
                img, txt, lens, lambda_softmax, softmax_dim=1
            ),
            "wrong axis",
        ),
        (
            lambda img, txt, lens, lambda_softmax=9.0: naive_batched(
                img, txt, lens, lambda_softmax, leaky=False
            ),
            "LeakyReLU",
        ),
        (
            lambda img, txt, lens, lambda_softmax=9.0: scan_t2i(
                img, txt, torch.full_like(lens, txt.shape[1]), lambda_softmax
            ),
            "padding leaks in",
        ),
        (
            lambda img, txt, lens, lambda_softmax=9.0: scan_t2i(img, txt, lens, lambda_softmax).T,
            "rows are images",
        ),
    ],
)
def test_scan_checker_names_the_mistake(wrong, reason):
    fb = check_scan_t2i(wrong)
    assert not fb and fb.status == "wrong" and reason in fb.message, fb


def test_scan_checker_catches_an_ignored_lambda_and_never_shows_the_scores():
    fb = check_scan_t2i(lambda img, txt, lens, lambda_softmax=9.0: scan_t2i(img, txt, lens, 9.0))
    assert not fb and "λ = 4" in fb.message and "differ" in fb.message
    assert "tensor" not in fb.message  # no expected values printed


def test_checkers_say_not_attempted_for_none_and_for_the_stub():
    def my_scan_t2i(img, txt, txt_lens, lambda_softmax=9.0): ...  # the notebook's stub

    for check in (check_scan_t2i, check_contranorm, check_gaussian_boundary, check_recall_at_k):
        fb = check(None)
        assert fb.status == "not attempted" and not fb and "not attempted yet" in str(fb)
    assert check_scan_t2i(my_scan_t2i).status == "not attempted"
    assert check_contranorm(lambda x, scale=0.1, tau=1.0: None).status == "not attempted"


def test_a_one_pair_stub_is_not_attempted_and_its_own_mistakes_read_plainly():
    """The one-pair form ``fn(v, t) -> float`` that the checker also accepts: its stub is "not
    attempted" (not "raised _NotAttempted"), and the checker's own messages are not wrapped."""

    def my_scan_t2i(v, t): ...

    fb = check_scan_t2i(my_scan_t2i)
    assert fb.status == "not attempted", fb
    assert check_scan_t2i(lambda v, t, lambda_softmax=9.0: None).status == "not attempted"
    fb = check_scan_t2i(lambda v, t: torch.zeros(2))
    assert fb.status == "wrong" and "_Wrong" not in fb.message and "expected one number" in fb.message
    fb = check_scan_t2i(lambda v, t: None if t.shape[0] < 3 else naive_pair(v, t))  # None on short captions
    assert fb.status == "wrong" and "returned None" in fb.message and "_" not in fb.message.split(":")[0]


def test_a_crashing_function_is_reported_with_its_error():
    fb = check_scan_t2i(lambda img, txt, lens: img @ txt)
    assert fb.status == "wrong" and "raised RuntimeError" in fb.message


# --- ContraNorm -------------------------------------------------------------------------------


def naive_contranorm(x, scale=0.1, tau=1.0):
    """One image, one token at a time: x_i + s (x_i - Σ_j a_ij x_j), a_i = softmax_j(cos(x_i, x_j)/τ)."""
    out = torch.empty_like(x)
    for b in range(x.shape[0]):
        for i in range(x.shape[1]):
            cos = torch.stack([F.cosine_similarity(x[b, i], x[b, j], dim=0) for j in range(x.shape[1])])
            a = torch.exp(cos / tau) / torch.exp(cos / tau).sum()
            out[b, i] = x[b, i] + scale * (x[b, i] - (a[:, None] * x[b]).sum(0))
    return out


def _cn(x, scale, tau, norm=True, dim=-1, sign=-1):
    xn = F.normalize(x, dim=-1) if norm else x
    a = torch.softmax(xn @ xn.mT / tau, dim=dim)
    return (1 - sign * scale) * x + sign * scale * (a @ x)


@pytest.mark.parametrize(
    "wrong, reason",
    [
        (lambda x, scale=0.1, tau=1.0: _cn(x, scale, tau, sign=1), "towards their weighted mean"),
        (lambda x, scale=0.1, tau=1.0: _cn(x, scale, tau, norm=False), "cosine similarities"),
        (lambda x, scale=0.1, tau=1.0: _cn(x, scale, tau, dim=-2), "row-stochastic"),
        (
            lambda x, scale=0.1, tau=1.0: _cn(x.reshape(1, -1, x.shape[-1]), scale, tau).reshape(x.shape),
            "different images interact",
        ),
    ],
)
def test_contranorm_checker_names_the_mistake(wrong, reason):
    fb = check_contranorm(wrong)
    assert not fb and reason in fb.message, fb


def test_contranorm_checker_accepts_library_and_naive_and_checks_tau():
    assert check_contranorm(contranorm)
    assert check_contranorm(naive_contranorm)
    fb = check_contranorm(lambda x, scale=0.1, tau=1.0: contranorm(x, scale, 1.0))  # τ ignored
    assert not fb and "τ = 0.5" in fb.message
    fb = check_contranorm(lambda x, scale=0.1, tau=1.0: x[:, :-1])
    assert not fb and "keeps the shape" in fb.message


# --- Gaussian boundary ------------------------------------------------------------------------


def bisect_boundary(mu_p, sigma_p, mu_n, sigma_n, alpha):
    """The crossing of α N_p and N_n found by bisection between μ_n and μ_p (no closed form)."""

    def g(x):
        pdf = lambda m, s: math.exp(-0.5 * ((x - m) / s) ** 2) / s  # noqa: E731
        return alpha * pdf(mu_p, sigma_p) - pdf(mu_n, sigma_n)

    _, e = gaussian_boundary(mu_p, sigma_p, mu_n, sigma_n, alpha)
    if e <= 0:
        return float("nan")
    lo, hi = mu_n, mu_p
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if g(mid) < 0 else (lo, mid)
    return (lo + hi) / 2


def test_boundary_checker_accepts_library_and_an_independent_bisection():
    assert check_gaussian_boundary(gaussian_boundary)
    assert check_gaussian_boundary(bisect_boundary)


@pytest.mark.parametrize(
    "wrong, reason",
    [
        (lambda mp, sp, mn, sn, a: gaussian_boundary(mp, sp, mn, sn, 1 / a)[0], "α multiplies the positives"),
        (lambda mp, sp, mn, sn, a: gaussian_boundary(mp, sp, mn, sn, 1.0)[0], "α is missing"),
        (lambda mp, sp, mn, sn, a: gaussian_boundary(mn, sn, mp, sp, a)[0], "swapped"),
        (lambda mp, sp, mn, sn, a: 0.5, "must be equal"),
    ],
)
def test_boundary_checker_names_the_mistake(wrong, reason):
    fb = check_gaussian_boundary(wrong)
    assert not fb and reason in fb.message, fb


def test_boundary_checker_wants_the_plus_root_and_nan_without_root():
    def minus_root(mp, sp, mn, sn, a):
        lam, e = gaussian_boundary(mp, sp, mn, sn, a)
        A, B = sp**2 - sn**2, 2 * (mp * sn**2 - mn * sp**2)
        return (-B - math.sqrt(e)) / (2 * A) if e > 0 else float("nan")

    fb = check_gaussian_boundary(minus_root)
    assert not fb and "other root" in fb.message
    fb = check_gaussian_boundary(
        lambda *args: 0.0 if gaussian_boundary(*args)[1] <= 0 else gaussian_boundary(*args)[0]
    )
    assert not fb and "no boundary" in fb.message
    # the notebook's and the glossary's names: a, b, c (B is the batch size), never the spec's A, B, C
    assert "E = b² − 4ac" in fb.message and "4AC" not in fb.message
    assert "check a, b and c" in check_gaussian_boundary(lambda *args: 0.5).message


# --- recall at K ------------------------------------------------------------------------------


def naive_recall(sims, img_of_caption, k):
    """argsort per query, 0-based ranks, best caption per image (VSE++ evalrank)."""
    n_img, n_cap = sims.shape
    i2t = []
    for i in range(n_img):
        order = list(np.argsort(-sims[i]))
        i2t.append(min(order.index(j) for j in range(n_cap) if img_of_caption[j] == i))
    t2i = [list(np.argsort(-sims[:, j])).index(img_of_caption[j]) for j in range(n_cap)]
    return 100 * np.mean(np.array(i2t) < k), 100 * np.mean(np.array(t2i) < k)


def test_recall_checker_accepts_a_naive_argsort_and_agrees_with_recall_metrics():
    assert check_recall_at_k(naive_recall)
    g = np.random.default_rng(3)
    sims, idx = g.normal(size=(8, 40)), np.repeat(np.arange(8), 5)
    m = recall_metrics(sims, idx)
    for k in (1, 5, 10):
        assert naive_recall(sims, idx, k) == pytest.approx((m[f"i2t_r{k}"], m[f"t2i_r{k}"]))


@pytest.mark.parametrize(
    "wrong, reason",
    [
        (lambda s, idx, k: naive_recall(s, idx, k - 1), "0-based"),  # 1-based ranks: rank + 1 < K
        (lambda s, idx, k: naive_recall(s, idx, k + 1), "not ≤ K"),
        (lambda s, idx, k: naive_recall(s, idx, k)[::-1], "swapped"),
        (lambda s, idx, k: tuple(v / 100 for v in naive_recall(s, idx, k)), "percentage"),
        (lambda s, idx, k: 50.0, "two numbers"),
    ],
)
def test_recall_checker_names_the_mistake(wrong, reason):
    fb = check_recall_at_k(wrong)
    assert not fb and reason in fb.message, fb


def test_recall_checker_catches_first_caption_only():
    def first_caption(s, idx, k):
        i2t = []
        for i in range(s.shape[0]):
            j = int(np.flatnonzero(idx == i)[0])
            i2t.append(int((s[i] > s[i, j]).sum()))
        return 100 * np.mean(np.array(i2t) < k), naive_recall(s, idx, k)[1]

    fb = check_recall_at_k(first_caption)
    assert not fb and "ALL its captions" in fb.message


# --- short answers ----------------------------------------------------------------------------

ANSWERS = {  # computed from the formulas, independently of the stored digests
    "00.img_of_caption": 42 // 5,
    "01.tokens_384": tuple((384 // (4 * 2**s)) ** 2 for s in (1, 2, 3)),
    # lambda_MOM = 1.4 above lam_max = 1: the reset branch, m <- 0.9 m + 0.1 lam_reset, from m = 0.3
    "04.reset_direction": "down" if 0.9 * 0.3 + 0.1 * 0.2 < 0.3 else "up",
    "05.collapse_loss": 2 * 58 * 0.2,
    "07.trigger_rows": math.floor(45 / 58 * 128) + 1,
    "08.gap": 1.2 - max(1.3, 0.9, 1.1),
    "09.welch_t": 10 / math.sqrt(8**2 / 5 + 8**2 / 5),
    "10.tokens_per_image": sum((224 // (4 * 2**s)) ** 2 for s in (1, 2, 3)),
    "11.embed_dim": __import__("torch").nn.Conv2d(3, 128, 4, 4).weight.shape[0],  # [out, in, kh, kw]
    "12.scores_per_image": 100 * 5,
    "13.pairs_f8k": 1000 * (1000 * 5),  # every test image x every test caption
}


@pytest.mark.parametrize("name", sorted(QUESTIONS))
def test_check_answer_accepts_the_right_answer_and_rejects_a_near_miss(name):
    assert set(ANSWERS) == set(QUESTIONS)
    right = ANSWERS[name]
    assert check_answer(name, right), name
    q = QUESTIONS[name]
    if q.kind == "choice":
        wrong = next(o for o in q.options if o != right)
    elif q.kind == "ints":
        wrong = tuple(v + 1 for v in right) if isinstance(right, tuple) else right + 1
    else:
        wrong = right + 0.05 * max(abs(right), 1)
    fb = check_answer(name, wrong)
    assert not fb and fb.message.startswith("hint:")
    assert str(right) not in str(fb)  # the answer is never shown
    assert check_answer(name, None).status == "not attempted"


def test_check_answer_tolerance_and_bad_input():
    assert check_answer("09.welch_t", 1.976) and check_answer("09.welch_t", 1.99)
    assert not check_answer("09.welch_t", 2.1)
    assert "whole numbers" in check_answer("07.trigger_rows", "many").message
    assert "answer one of" in check_answer("04.reset_direction", "maybe").message
    # a whole-number answer is not rounded into the right one: 42 / 5 (not 42 // 5) is no image index
    assert check_answer("00.img_of_caption", 42 / 5).status == "wrong"
    assert "whole numbers" in check_answer("00.img_of_caption", 42 / 5).message
    assert not check_answer("07.trigger_rows", 45 / 58 * 128 + 0.4)  # 99.7 rows: not a count of rows
    assert not check_answer("01.tokens_384", (2304.4, 576, 144))
    assert check_answer("00.img_of_caption", 8.0) and check_answer("07.trigger_rows", np.int64(100))
    with pytest.raises(ValueError, match="unknown question"):
        check_answer("99.nothing", 1)
