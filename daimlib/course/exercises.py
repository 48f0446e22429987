"""Exercises that check themselves (issue 10, item 5): right or wrong, and why, never the answer.

Five "implement it yourself" checkers call the student's function on random and edge-case
inputs and compare it with the library; when it disagrees they test it against the usual
mistakes (a direction swapped, a normalisation left out, a softmax over the wrong axis, 1-based
ranks, ...) and name the one it makes:

- :func:`check_scan_t2i` (notebook 02): ``fn(img [n_img, R, D], txt [n_cap, L, D], txt_lens [n_cap],
  lambda_softmax) -> [n_img, n_cap]``, or for one pair ``fn(v [R, D], t [L, D]) -> float``
  (t = the caption's real tokens), against :func:`daimlib.similarity.scan_t2i` (spec 2.1);
- :func:`check_contranorm` (03): ``fn(x [B, N, C], scale, tau) -> [B, N, C]`` against
  :func:`daimlib.fdm.contranorm` (spec 3);
- :func:`check_gaussian_boundary` (04): ``fn(mu_p, sigma_p, mu_n, sigma_n, alpha) -> λ`` (nan when
  there is no root) against :func:`daimlib.losses.gaussian_boundary` (spec 4.3);
- :func:`check_recall_at_k` (06): ``fn(sims [n_img, n_cap], img_of_caption [n_cap], k) -> (i2t R@K,
  t2i R@K)`` in percent, against :func:`daimlib.evaluate.i2t_t2i_ranks` (VSE++ evalrank);
- :func:`check_info_nce` (14, the capstone): ``fn(scores [B, B], temperature) -> scalar tensor``, the
  symmetric InfoNCE (mean over the batch), against :func:`daimlib.dual.info_nce`, its gradient included.

:func:`check_answer` checks short numeric or multiple-choice answers of each notebook against
salted hashes (:data:`QUESTIONS`), so the answers are not written here in plain text.

Every checker returns a :class:`Feedback` (``bool(fb)`` is True when right); ``fn=None``, or a
stub that returns None, gives "not attempted yet", so an unanswered exercise cell runs cleanly.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from daimlib.dual import info_nce
from daimlib.fdm import contranorm
from daimlib.losses import gaussian_boundary
from daimlib.metrics import i2t_t2i_ranks
from daimlib.similarity import scan_t2i

MARKS = {"right": "\u2713 right", "wrong": "\u2717 not yet", "not attempted": "\u2026 not attempted yet"}


@dataclass(frozen=True)
class Feedback:
    """The verdict of a checker: ``status`` is "right", "wrong" or "not attempted"."""

    exercise: str
    status: str
    message: str

    def __bool__(self) -> bool:
        return self.status == "right"

    def __str__(self) -> str:
        return f"{MARKS[self.status]} ({self.exercise}): {self.message}"

    __repr__ = __str__


class _Wrong(Exception):
    """Raised inside a checker to stop at the first case that is wrong."""


def _not_attempted(exercise: str, fn_name: str = "your function") -> Feedback:
    return Feedback(
        exercise, "not attempted", f"{fn_name} is still the stub; write its body, then run this cell again"
    )


def _call(fn: Callable, case: str, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except (_NotAttempted, _Wrong):  # raised by a checker's own wrapper (SCAN's one pair at a time)
        raise
    except Exception as err:  # noqa: BLE001 - any error of the student's code is feedback
        raise _Wrong(f"on the case '{case}' it raised {type(err).__name__}: {err}") from None


def _params(fn: Callable) -> list[str]:
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        return []


def _as_tensor(out, case: str) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out.detach().to(torch.float64).cpu()
    try:
        return torch.as_tensor(np.asarray(out, dtype=np.float64))
    except (TypeError, ValueError):
        raise _Wrong(f"on the case '{case}' it returned {type(out).__name__}, not numbers") from None


def _close(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-4) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a, b.to(a.dtype), rtol=tol, atol=tol, equal_nan=True))


def _run(exercise: str, fn, body: Callable[[Callable], str], fn_name: str) -> Feedback:
    if fn is None:
        return _not_attempted(exercise, fn_name)
    try:
        return Feedback(exercise, "right", body(fn))
    except _NotAttempted:
        return _not_attempted(exercise, fn_name)
    except _Wrong as err:
        return Feedback(exercise, "wrong", str(err))


class _NotAttempted(Exception):
    """The student's function returned None (the stub)."""


def _first_call(out):
    if out is None:
        raise _NotAttempted
    return out


# --- SCAN t2i (notebook 02) ---------------------------------------------------------------


def _attend(keys: torch.Tensor, queries: torch.Tensor, lam: float, **mistake) -> torch.Tensor:
    """One pair: queries attend to keys (t2i: keys = regions, queries = words); mistakes as flags."""
    s = keys @ queries.T  # [N_keys, N_queries]
    if not mistake.get("no_leaky"):
        s = F.leaky_relu(s, 0.1)
    if not mistake.get("no_l2"):
        s = s / (s.norm(dim=1, keepdim=True) + 1e-8)  # over the queries, per key
    alpha = torch.softmax(lam * s, dim=1 if mistake.get("softmax_queries") else 0)
    attended = alpha.T @ keys  # [N_queries, D]
    if mistake.get("dot"):
        return (queries * attended).sum(-1).mean()
    return F.cosine_similarity(queries, attended, dim=-1, eps=1e-8).mean()


def _scan_naive(img, txt, lens, lam, direction="t2i", all_positions=False, **mistake) -> torch.Tensor:
    out = torch.zeros(img.shape[0], txt.shape[0], dtype=torch.float64)
    for i in range(img.shape[0]):
        for j in range(txt.shape[0]):
            t = txt[j] if all_positions else txt[j, : int(lens[j])]
            v = img[i]
            out[i, j] = _attend(v, t, lam, **mistake) if direction == "t2i" else _attend(t, v, lam, **mistake)
    return out


SCAN_MISTAKES = (
    (
        dict(direction="i2t"),
        "this is image-to-text (regions attend to words, mean over regions); in t2i "
        "every word attends to the image regions and S is the mean over the words",
    ),
    (
        dict(no_l2=True),
        "the LeakyReLU scores are not L2-normalised: divide each region's scores by their "
        "norm over the caption's words before the softmax",
    ),
    (
        dict(softmax_queries=True),
        "the softmax runs over the wrong axis: each word's weights must sum to 1 over the R regions",
    ),
    (dict(no_leaky=True), "the LeakyReLU (slope 0.1) on the raw dot products is missing"),
    (
        dict(all_positions=True),
        "padding leaks in: use only the first txt_lens[j] tokens of caption j ([CLS] and [SEP] included)",
    ),
    (dict(dot=True), "the last step must be the cosine of t_w and a_w, not their dot product"),
)


def _scan_cases() -> list[tuple[str, torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(0)
    img = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    txt = torch.randn(4, 6, 8, generator=g, dtype=torch.float64)
    cases = [("random, full-length captions", img, txt, torch.tensor([6, 6, 6, 6]), 9.0)]
    cases.append(("captions with padding", img, txt, torch.tensor([6, 3, 4, 2]), 9.0))
    bg = img.clone()
    bg[:, :2] = 0  # background regions: zero vectors
    cases.append(("zero (background) regions", bg, txt, torch.tensor([5, 6, 1, 3]), 9.0))
    cases.append(("a one-token caption", img, txt, torch.tensor([1, 6, 2, 4]), 9.0))
    cases.append(("another temperature, λ = 4", img, txt, torch.tensor([6, 3, 4, 2]), 4.0))
    return cases


def _scan_caller(fn: Callable):
    """Wrap ``fn`` as batched ``(img, txt, lens, lam) -> [n_img, n_cap]``; also say if λ is passed."""
    names = _params(fn)
    lam_name = next(
        (n for n in names if n in ("lambda_softmax", "lam", "lmbda", "lambda_", "temperature")), None
    )
    batched = len(names) >= 3 and (lam_name is None or names.index(lam_name) >= 3)

    def lam_kw(lam):
        return {lam_name: lam} if lam_name else {}

    if batched:
        return (lambda img, txt, lens, lam: fn(img, txt, lens, **lam_kw(lam))), lam_name is not None, True

    first = [True]  # only the very first pair's None is the stub; a later None is a wrong answer

    def pairwise(img, txt, lens, lam):
        rows = []
        for i in range(img.shape[0]):
            row = []
            for j in range(txt.shape[0]):
                out = fn(img[i], txt[j, : int(lens[j])], **lam_kw(lam))
                if first[0]:
                    first[0] = False
                    out = _first_call(out)
                if out is None:
                    raise _Wrong(f"for the pair (image {i}, caption {j}) it returned None; return one number")
                s = _as_tensor(out, "one pair")
                if s.numel() != 1:
                    raise _Wrong(
                        f"for one pair it returned shape {tuple(s.shape)}; expected one number, "
                        "the mean over the words of cos(t_w, a_w)"
                    )
                row.append(float(s.reshape(())))
            rows.append(row)
        return torch.tensor(rows, dtype=torch.float64)

    return pairwise, lam_name is not None, False


def _scan_body(fn: Callable) -> str:
    caller, takes_lam, batched = _scan_caller(fn)
    cases = [c for c in _scan_cases() if takes_lam or c[4] == 9.0]
    for k, (case, img, txt, lens, lam) in enumerate(cases):
        out = _call(caller, case, img.float() if batched else img, txt.float() if batched else txt, lens, lam)
        got = _as_tensor(_first_call(out) if k == 0 else out, case)
        want = scan_t2i(img.float(), txt.float(), lens, lambda_softmax=lam).double()
        n_img, n_cap = want.shape
        if got.shape == (n_cap, n_img):
            raise _Wrong(
                f"shape {tuple(got.shape)} but expected {(n_img, n_cap)}: rows are images, columns captions"
            )
        if got.shape != want.shape:
            raise _Wrong(
                f"on '{case}' the shape is {tuple(got.shape)} but expected {(n_img, n_cap)} (images × captions)"
            )
        if _close(got, want):
            continue
        for mistake, why in SCAN_MISTAKES:
            if _close(got, _scan_naive(img, txt, lens, lam, **mistake)):
                raise _Wrong(f"on '{case}': {why}")
        err = float((got - want).abs().max())
        raise _Wrong(
            f"on '{case}' the scores differ from the library's by up to {err:.3g}; check the five "
            "lines of the formula one by one (notebook 02, section 1)"
        )
    note = "" if takes_lam else " (λ fixed at 9: add a lambda_softmax argument to be checked at other λ)"
    return f"matches daimlib.similarity.scan_t2i on {len(cases)} cases{note}"


def check_scan_t2i(fn: Callable | None) -> Feedback:
    """Check a student's text-to-image SCAN (spec 2.1) against :func:`daimlib.similarity.scan_t2i`."""
    return _run("SCAN t2i", fn, _scan_body, "my_scan_t2i")


# --- ContraNorm (notebook 03) -------------------------------------------------------------


def _contranorm_naive(x, scale, tau, **mistake):
    if mistake.get("across_batch"):
        return _contranorm_naive(x.reshape(1, -1, x.shape[-1]), scale, tau).reshape(x.shape)
    xn = x if mistake.get("no_norm") else F.normalize(x, dim=-1)
    sim = xn @ xn.mT / tau
    a = torch.softmax(sim, dim=-2 if mistake.get("columns") else -1)
    ax = a @ (F.normalize(x, dim=-1) if mistake.get("ax_hat") else x)
    if mistake.get("towards"):
        return (1 - scale) * x + scale * ax
    return (1 + scale) * x - scale * ax


CONTRANORM_MISTAKES = (
    (
        dict(towards=True),
        "the tokens move towards their weighted mean (that is smoothing); ContraNorm "
        "moves them away from it: X' = X + s·(X − A X)",
    ),
    (dict(no_norm=True), "A must use cosine similarities: L2-normalise each token (row) before X̂ X̂ᵀ"),
    (dict(columns=True), "A must be row-stochastic: the softmax runs over each row (over the keys)"),
    (dict(ax_hat=True), "A multiplies the tokens X themselves, not their normalised copies X̂"),
    (
        dict(across_batch=True),
        "tokens of different images interact: ContraNorm acts on each image's token set separately",
    ),
)


def _contranorm_cases():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 4, generator=g, dtype=torch.float64)
    d = F.normalize(torch.randn(6, generator=g, dtype=torch.float64), dim=0)
    cloud = 3 * d + 0.5 * torch.randn(1, 8, 6, generator=g, dtype=torch.float64)
    return [
        ("random tokens, s = 0.1, τ = 1", x, 0.1, 1.0),
        ("a tight cloud of similar tokens", cloud, 0.1, 1.0),
        ("a single token", x[:, :1], 0.1, 1.0),
        ("scale s = 0 (the identity)", x, 0.0, 1.0),
        ("another scale, s = 0.3", x, 0.3, 1.0),
        ("another temperature, τ = 0.5", x, 0.1, 0.5),
    ]


def _contranorm_body(fn: Callable) -> str:
    names = _params(fn)
    s_name = next((n for n in names if n in ("scale", "s")), None)
    t_name = next((n for n in names if n in ("tau", "temperature", "t")), None)
    cases = [c for c in _contranorm_cases() if (s_name or c[2] == 0.1) and (t_name or c[3] == 1.0)]
    for k, (case, x, s, tau) in enumerate(cases):
        kw = {**({s_name: s} if s_name else {}), **({t_name: tau} if t_name else {})}
        out = _call(fn, case, x.float().clone(), **kw)
        got = _as_tensor(_first_call(out) if k == 0 else out, case)
        want = contranorm(x.float(), scale=s, tau=tau).double()
        if got.shape != want.shape:
            raise _Wrong(
                f"on '{case}' it returned shape {tuple(got.shape)} but expected {tuple(want.shape)}: "
                "ContraNorm keeps the shape [B, N, C] of its input"
            )
        if _close(got, want):
            continue
        for mistake, why in CONTRANORM_MISTAKES:
            if _close(got, _contranorm_naive(x, s, tau, **mistake)):
                raise _Wrong(f"on '{case}': {why}")
        err = float((got - want).abs().max())
        raise _Wrong(
            f"on '{case}' the tokens differ from the library's by up to {err:.3g}; compare each "
            "step with the formula of notebook 03, section 1"
        )
    missing = [w for w, n in (("scale", s_name), ("tau", t_name)) if n is None]
    note = f" (add a {' and '.join(missing)} argument to be checked at other values)" if missing else ""
    return f"matches daimlib.fdm.contranorm on {len(cases)} cases{note}"


def check_contranorm(fn: Callable | None) -> Feedback:
    """Check a student's ContraNorm (spec 3) against :func:`daimlib.fdm.contranorm`."""
    return _run("ContraNorm", fn, _contranorm_body, "my_contranorm")


# --- the Gaussian boundary of the MOM (notebook 04) ----------------------------------------


def _pdf(x: float, mu: float, sigma: float) -> float:
    return math.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2 * math.pi))


def _minus_root(mu_p, sigma_p, mu_n, sigma_n, alpha) -> float:
    lam, e = gaussian_boundary(mu_p, sigma_p, mu_n, sigma_n, alpha)
    if e <= 0:
        return float("nan")
    a = sigma_p**2 - sigma_n**2
    b = 2.0 * (mu_p * sigma_n**2 - mu_n * sigma_p**2)
    return (-b - math.sqrt(e)) / (2.0 * a + 1e-10)


BOUNDARY_CASES = (
    ("notebook 04's example", (2.0, 0.3, 0.17, 0.008, 0.3)),
    ("wide positives, wide negatives", (1.5, 0.4, 0.5, 0.2, 0.3)),
    ("another prior ratio, α = 0.5", (0.9, 0.1, 0.3, 0.05, 0.5)),
    ("two Gaussians that never cross at α = 0.3", (0.5, 0.3, 0.4, 0.5, 0.3)),
)


def _boundary_value(out, case: str) -> float:
    if isinstance(out, tuple | list) and len(out) >= 1:
        out = out[0]  # (λ, E) as the library returns it
    try:
        return float(out)
    except (TypeError, ValueError):
        raise _Wrong(f"on '{case}' it returned {type(out).__name__}; expected one number λ") from None


def _boundary_body(fn: Callable) -> str:
    for k, (case, args) in enumerate(BOUNDARY_CASES):
        out = _call(fn, case, *args)
        got = _boundary_value(_first_call(out) if k == 0 else out, case)
        want, e = gaussian_boundary(*args)
        mu_p, sigma_p, mu_n, sigma_n, alpha = args
        if e <= 0:
            if not math.isnan(got):
                raise _Wrong(
                    f"on '{case}' the discriminant E = b² − 4ac is ≤ 0, so there is no boundary "
                    "and the margin stays: return float('nan')"
                )
            continue
        if math.isclose(got, want, rel_tol=1e-6, abs_tol=1e-9):
            continue
        if math.isclose(got, _minus_root(*args), rel_tol=1e-6, abs_tol=1e-9):
            raise _Wrong(
                f"on '{case}' this is the other root; the reference keeps λ = (−b + √E) / (2a) with a = σp² − σn²"
            )
        for other, why in (
            (
                gaussian_boundary(mu_p, sigma_p, mu_n, sigma_n, 1 / alpha)[0],
                "α multiplies the positives' density: α·N(λ; μp, σp) = N(λ; μn, σn)",
            ),
            (gaussian_boundary(mu_p, sigma_p, mu_n, sigma_n, 1.0)[0], "the prior ratio α is missing"),
            (
                gaussian_boundary(mu_n, sigma_n, mu_p, sigma_p, alpha)[0],
                "the positives' and negatives' statistics are swapped",
            ),
        ):
            if math.isclose(got, other, rel_tol=1e-6, abs_tol=1e-9):
                raise _Wrong(f"on '{case}': {why}")
        lhs, rhs = alpha * _pdf(got, mu_p, sigma_p), _pdf(got, mu_n, sigma_n)
        raise _Wrong(
            f"on '{case}' your λ = {got:.4g} gives α·N_p(λ) = {lhs:.4g} but N_n(λ) = {rhs:.4g}; "
            "they must be equal (check a, b and c one by one)"
        )
    return (
        f"matches daimlib.losses.gaussian_boundary on {len(BOUNDARY_CASES)} cases, the no-root case included"
    )


def check_gaussian_boundary(fn: Callable | None) -> Feedback:
    """Check a student's MOM boundary λ (spec 4, step 3) against :func:`daimlib.losses.gaussian_boundary`."""
    return _run("Gaussian boundary", fn, _boundary_body, "my_gaussian_boundary")


# --- recall at K (notebook 06) -------------------------------------------------------------


def _recall_variant(sims, img_of_caption, k, kind=None) -> tuple[float, float]:
    i2t, t2i = i2t_t2i_ranks(sims, img_of_caption)
    if kind == "first_caption":  # i2t rank of each image's first caption only
        first = np.array([np.flatnonzero(img_of_caption == i)[0] for i in range(sims.shape[0])])
        pos = sims[np.arange(sims.shape[0]), first]
        i2t = (sims > pos[:, None]).sum(1)
    if kind == "per_caption":  # every caption of an image counted as its own i2t query
        pos = sims[img_of_caption, np.arange(sims.shape[1])]
        i2t = (sims[img_of_caption] > pos[:, None]).sum(1)
    lo = {"one_based": 1, "leq": -1}.get(kind, 0)  # counts rank + lo < k
    r_i2t, r_t2i = 100 * np.mean(i2t + lo < k), 100 * np.mean(t2i + lo < k)
    if kind == "fraction":
        return r_i2t / 100, r_t2i / 100
    if kind == "swapped":
        return r_t2i, r_i2t
    return r_i2t, r_t2i


RECALL_MISTAKES = (
    (
        "one_based",
        "off by one: ranks are 0-based (the true match in first place has rank 0) and R@K "
        "counts the queries with rank < K",
    ),
    ("leq", "off by one: R@K counts the queries whose 0-based rank is < K, not ≤ K"),
    (
        "swapped",
        "the two directions are swapped: i2t ranks captions for each image (rows), t2i images for "
        "each caption (columns)",
    ),
    ("fraction", "R@K is a percentage: multiply the fraction by 100"),
    (
        "first_caption",
        "i2t: an image is found when the best-ranked of ALL its captions is in the top K, "
        "not only its first caption",
    ),
    ("per_caption", "i2t has one query per image (its best-ranked caption), not one per caption"),
)


def _recall_cases():
    g = np.random.default_rng(0)
    five = np.repeat(np.arange(6), 5)
    uneven = np.array([0, 1, 1, 2, 2, 2, 3, 4, 4, 5, 5, 5])
    g.shuffle(uneven)
    sims = g.normal(size=(6, 30))
    sims[five, np.arange(30)] += 1.0  # a weak model: the true pairs score a little higher
    perfect = np.where(five[None, :] == np.arange(6)[:, None], 1.0, 0.0) + 0.01 * g.normal(size=(6, 30))
    return [
        ("6 images × 30 captions, K = 1", sims, five, 1),
        ("the same, K = 5", sims, five, 5),
        ("1 to 3 captions per image, in shuffled order, K = 2", g.normal(size=(6, 12)), uneven, 2),
        ("a perfect model, K = 1", perfect, five, 1),
        ("K larger than the gallery, K = 10", sims, five, 10),
    ]


def _recall_body(fn: Callable) -> str:
    for k, (case, sims, idx, kk) in enumerate(_recall_cases()):
        out = _call(fn, case, sims.copy(), idx.copy(), kk)
        out = _first_call(out) if k == 0 else out
        if isinstance(out, dict):
            out = (out.get("i2t"), out.get("t2i"))
        if not isinstance(out, tuple | list | np.ndarray) or len(out) != 2:
            raise _Wrong(f"on '{case}' it returned {out!r}; expected two numbers (i2t R@K, t2i R@K)")
        got = tuple(float(v) for v in out)
        want = _recall_variant(sims, idx, kk)
        if np.allclose(got, want, atol=1e-6):
            continue
        for kind, why in RECALL_MISTAKES:
            if np.allclose(got, _recall_variant(sims, idx, kk, kind), atol=1e-6):
                raise _Wrong(f"on '{case}': {why}")
        raise _Wrong(
            f"on '{case}' it returned ({got[0]:.4g}, {got[1]:.4g}), which is not what the protocol "
            "gives; work one small matrix by hand (notebook 06, section 1)"
        )
    return "matches daimlib.evaluate.i2t_t2i_ranks on 5 cases, uneven captions per image included"


def check_recall_at_k(fn: Callable | None) -> Feedback:
    """Check a student's R@K in both directions (VSE++ evalrank) against :func:`daimlib.evaluate.i2t_t2i_ranks`."""
    return _run("recall at K", fn, _recall_body, "my_recall_at_k")


# --- symmetric InfoNCE (notebook 14, the capstone) ---------------------------------------------


def _info_nce_variant(scores: torch.Tensor, tau: float, kind: str | None = None) -> torch.Tensor:
    """The symmetric InfoNCE in float64 (mean over the B pairs), or one of the usual mistakes."""
    S = scores.detach().to(torch.float64)
    B = S.shape[0]
    logits = S if kind == "no_temperature" else S * tau if kind == "times_temperature" else S / tau
    target = torch.arange(B)
    if kind == "positive_left_out":  # the denominator without the positive
        off = logits.masked_fill(torch.eye(B, dtype=torch.bool), float("-inf"))
        rows = (off.logsumexp(1) - logits.diagonal()).mean()
        cols = (off.logsumexp(0) - logits.diagonal()).mean()
    else:
        rows = F.cross_entropy(logits, target)  # image -> its caption
        cols = F.cross_entropy(logits.T, target)  # caption -> its image
    if kind == "rows_only":
        return rows
    if kind == "columns_only":
        return cols
    if kind == "no_half":
        return rows + cols
    if kind == "summed":
        return 0.5 * (rows + cols) * B
    return 0.5 * (rows + cols)


INFO_NCE_MISTAKES = (
    (
        "rows_only",
        "only one direction: the loss is symmetric, ½ (cross-entropy over each row: image -> caption "
        "+ cross-entropy over each column: caption -> image)",
    ),
    (
        "columns_only",
        "only one direction (the columns): add the rows' cross-entropy (image -> caption) and halve",
    ),
    ("no_temperature", "the temperature is ignored: the logits are scores / temperature"),
    ("times_temperature", "the scores are multiplied by the temperature; divide them by it"),
    ("no_half", "the two directions are added but not averaged: multiply their sum by ½"),
    ("summed", "summed over the batch: take the mean over the B pairs (as CLIP does)"),
    (
        "positive_left_out",
        "the positive is left out of the softmax's denominator; it belongs there (a cross-entropy "
        "over all B candidates, the true one included)",
    ),
)


def _info_nce_cases() -> list[tuple[str, torch.Tensor, float]]:
    g = torch.Generator().manual_seed(0)
    weak = torch.rand(6, 6, generator=g) * 2 - 1
    weak += 0.5 * torch.eye(6)  # a weak model: the diagonal a little higher
    skew = torch.rand(5, 5, generator=g) * 2 - 1  # no symmetry: rows and columns differ
    perfect = torch.eye(4) + 0.01 * torch.rand(4, 4, generator=g)
    return [
        ("6 pairs, temperature 0.1", weak, 0.1),
        ("5 pairs, not symmetric, temperature 0.5", skew, 0.5),
        ("the same, temperature 2", skew, 2.0),
        ("a near-perfect model, 4 pairs, temperature 0.05", perfect, 0.05),
        ("one pair (no negative: the loss is 0)", torch.tensor([[0.3]]), 0.1),
        ("cosines with temperature 0.01 (logits up to 100)", weak.clamp(-1, 1), 0.01),
    ]


def _scalar_of(out, case: str) -> torch.Tensor:
    t = _as_tensor(out, case)
    if t.numel() != 1:
        raise _Wrong(
            f"on '{case}' it returned shape {tuple(t.shape)}; expected one number (the batch's loss)"
        )
    return t.reshape(())


def _info_nce_grad_check(fn: Callable) -> None:
    case = "the gradient with respect to the scores"
    scores = _info_nce_cases()[1][1].clone().requires_grad_()
    out = _call(fn, case, scores, 0.5)
    if not isinstance(out, torch.Tensor) or out.grad_fn is None:
        raise _Wrong(
            "the value is right, but the result carries no gradient: compute it with torch operations on "
            "the scores tensor (no .item(), numpy or Python floats), or it cannot train a model"
        )
    (got,) = torch.autograd.grad(out.sum(), scores)
    ref = scores.detach().clone().requires_grad_()
    (want,) = torch.autograd.grad(info_nce(ref, 0.5), ref)
    if not _close(got.double(), want.double(), 1e-4):
        raise _Wrong(
            "the value is right but its gradient is not: does a detach() or an in-place edit cut it?"
        )


def _info_nce_body(fn: Callable) -> str:
    for k, (case, scores, tau) in enumerate(_info_nce_cases()):
        out = _call(fn, case, scores.clone(), tau)
        out = _first_call(out) if k == 0 else out
        got = _scalar_of(out, case)
        want = _info_nce_variant(scores, tau)
        if not torch.isfinite(got):
            raise _Wrong(
                f"on '{case}' it returned {float(got)}: exp() overflows when the logits are large; "
                "use torch.logsumexp or F.cross_entropy (they subtract the maximum first)"
            )
        if _close(got, want, 1e-4):
            continue
        for kind, why in INFO_NCE_MISTAKES:
            if _close(got, _info_nce_variant(scores, tau, kind), 1e-4):
                raise _Wrong(f"on '{case}': {why}")
        raise _Wrong(
            f"on '{case}' it returned {float(got):.5g}, which is not the symmetric InfoNCE; work the 2 x 2 "
            "example of notebook 14 by hand"
        )
    _info_nce_grad_check(fn)
    return (
        "matches daimlib.dual.info_nce on 6 cases (one pair, logits up to 100 included) and its gradient "
        "too: ready to train with"
    )


def check_info_nce(fn: Callable | None) -> Feedback:
    """Check a student's symmetric InfoNCE ``fn(scores [B, B], temperature)`` (mean over the batch)
    against :func:`daimlib.dual.info_nce`, value and gradient."""
    return _run("symmetric InfoNCE", fn, _info_nce_body, "my_info_nce")


# --- short answers ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Question:
    """A short question: ``kind`` "number" (rounded to ``decimals``), "ints" or "choice"; the answer
    is stored only as ``sha256(name + ":" + canonical answer)``."""

    notebook: str
    prompt: str
    kind: str
    digest: str
    hint: str
    decimals: int = 0
    options: tuple[str, ...] = ()


def _digest(name: str, canonical: str) -> str:
    return hashlib.sha256(f"{name}:{canonical}".encode()).hexdigest()[:20]


def _canonical(q: Question, value) -> list[str]:
    """The canonical strings of ``value`` (numbers: also one step either side, a tolerance of 1.5 units
    of the last decimal)."""
    if q.kind == "choice":
        return [str(value).strip().lower()]
    if q.kind == "ints":  # whole numbers only: 42 / 5 = 8.4 is not image 8 (no rounding to the answer)
        vals = [float(v) for v in ([value] if np.isscalar(value) else list(value))]
        if not all(v.is_integer() for v in vals):
            raise ValueError("not whole numbers")
        return [",".join(str(int(v)) for v in vals)]
    x = round(float(value), q.decimals)
    step = 10.0 ** (-q.decimals)
    return [f"{x + d * step:.{q.decimals}f}" for d in (-1, 0, 1)]


QUESTIONS: dict[str, Question] = {
    "00.img_of_caption": Question(
        "00",
        "A split stores 5 captions per image, those of one image consecutive. Which image does caption 42 "
        "belong to, i.e. what is img_of_caption[42]?",
        "ints",
        "2ec32bf1842a63c98bb2",
        "each image owns five consecutive captions, the first five being image zero's",
    ),
    "01.tokens_384": Question(
        "01",
        "Swin-B (patch 4) on 384 px images: how many image tokens at DAIM's low, mid and high level?",
        "ints",
        "621a38ce1e0d60999310",
        "stage k's grid side is the image side / (patch · 2^(k−1))",
    ),
    "05.collapse_loss": Question(
        "05",
        "All scores equal (a collapsed model), B = 58, m = 0.2: the value of the hardest-negative triplet "
        "loss, summed over the batch in both directions?",
        "number",
        "377749360922eb561122",
        "every hinge is m; count the hinges the summed loss keeps",
        1,
    ),
    "07.trigger_rows": Question(
        "07",
        "The paper's trigger (more than 45/58 of the rows) at batch B = 128: how many rows must at "
        "least rank their own caption first for the MOM to act?",
        "ints",
        "5e4d37e87f12692c20b0",
        "'more than' a fraction of 128 rows, and rows come in whole numbers",
    ),
    "08.gap": Question(
        "08",
        "A caption's true image scores 1.2; the other images 1.3, 0.9 and 1.1. What is p − h, its "
        "positive minus its hardest negative?",
        "number",
        "2288638586576701652c",
        "h is the best-scoring wrong image",
        2,
    ),
    "09.welch_t": Question(
        "09",
        "Two variants differ by 10 RSUM; each has a standard deviation of 8 over 5 seeds. Welch's t?",
        "number",
        "dbfa752d0177d7282263",
        "t = difference / sqrt(s1²/n1 + s2²/n2)",
        2,
    ),
    "10.tokens_per_image": Question(
        "10",
        "Swin-B at 224 px: how many image tokens of one image enter SCAN over the three levels in all?",
        "ints",
        "8ceef70ffdfbe3ba0cd8",
        "add the tokens of stages 2, 3 and 4 (notebook 01)",
    ),
    "04.reset_direction": Question(
        "04",
        "The margin is m = 0.3 and a step's boundary comes out at λ_MOM = 1.4. Does the update move the "
        "margin 'up', 'down', or leave it 'unchanged'?",
        "choice",
        "62e705997fa7c4db062f",
        "read step 4 of the MOM: which branch runs above the cap λ_max = 1, and towards which value does it move m?",
        options=("up", "down", "unchanged"),
    ),
    "11.embed_dim": Question(
        "11",
        "The imported checkpoint's patch_embed.proj.weight has shape [128, 3, 4, 4]. What Swin embed dim "
        "does the import read from it?",
        "ints",
        "73020f7872ad392806e3",
        "a convolution's weight is [out channels, in channels, kernel height, kernel width]",
    ),
    "12.scores_per_image": Question(
        "12",
        "The search encodes 100 test images with 5 captions each. How many scores does one image → captions "
        "query compute?",
        "ints",
        "85f1ac1ed3ec9e454851",
        "the image is scored against every encoded caption",
    ),
    "13.pairs_f8k": Question(
        "13",
        "Evaluating on Flickr8k's test split (1,000 images, 5 captions each): how many image-caption pairs "
        "does SCAN score at each level?",
        "ints",
        "1c919403aa60a76a216c",
        "every test image against every test caption, not only its own five",
    ),
}


def check_answer(name: str, value) -> Feedback:
    """Check a short answer of notebook ``name[:2]`` (see :data:`QUESTIONS`); says right or wrong with a
    hint, never the answer. ``value=None`` or ``...`` is "not attempted yet"."""
    if name not in QUESTIONS:
        raise ValueError(f"unknown question {name!r}; questions are {sorted(QUESTIONS)}")
    q = QUESTIONS[name]
    if value is None or value is Ellipsis:
        return Feedback(name, "not attempted", f"{q.prompt} Put your answer in place of None.")
    if q.kind == "choice" and str(value).strip().lower() not in q.options:
        return Feedback(name, "wrong", f"answer one of {list(q.options)}; got {value!r}")
    try:
        candidates = _canonical(q, value)
    except (TypeError, ValueError):
        what = "whole numbers" if q.kind == "ints" else "a number"
        return Feedback(name, "wrong", f"expected {what}; got {value!r}")
    if any(_digest(name, c) == q.digest for c in candidates):
        return Feedback(name, "right", "well done")
    return Feedback(name, "wrong", f"hint: {q.hint}")
