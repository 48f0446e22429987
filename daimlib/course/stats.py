"""Small-sample statistics for seed ablations: intervals, tests and what a design can detect.

An ablation on a CPU has few seeds (5-10 per variant), so every statement here uses Student's t,
not the normal approximation:

- :func:`mean_ci`: mean and a two-sided t interval (95 % by default);
- :func:`paired_diff`: variant minus reference, paired by seed (the same seed gives both runs the
  same data order and initialisation, so pairing removes that shared noise), with its interval
  and the paired t-test's p-value;
- :func:`welch`: the unpaired comparison (Welch's t-test, unequal variances), for runs that do not
  share seeds;
- :func:`min_detectable_difference`: the smallest true difference the design detects with the
  given power (80 % by default) at the given level, from the exact noncentral t distribution;
  :func:`power` is its inverse and :func:`seeds_needed` the number of seeds for a target difference.

Everything takes plain sequences of numbers (one per seed) and returns floats, so a table is one
``pd.DataFrame`` of calls: :func:`powered_summary`, the one seed-statistics table of the kit.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
from scipy import integrate, optimize
from scipy import stats as st

__all__ = [
    "powered_summary",
    "Interval",
    "mean_ci",
    "paired_diff",
    "welch",
    "power",
    "min_detectable_difference",
    "seeds_needed",
]


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided t interval (``lo``, ``hi``), ``n`` values and sample ``sd``."""

    mean: float
    lo: float
    hi: float
    n: int
    sd: float
    confidence: float = 0.95

    @property
    def half_width(self) -> float:
        return (self.hi - self.lo) / 2

    def __str__(self) -> str:
        return (
            f"{self.mean:.1f} ± {self.half_width:.1f}"
            if math.isfinite(self.half_width)
            else f"{self.mean:.1f}"
        )

    def as_dict(self) -> dict:
        return asdict(self)


def _values(x: Sequence[float], what: str) -> np.ndarray:
    a = np.asarray(list(x), dtype=float)
    if a.ndim != 1 or a.size == 0 or not np.isfinite(a).all():
        raise ValueError(f"{what}: expected a non-empty list of finite numbers, got {list(x)!r}")
    return a


def mean_ci(x: Sequence[float], confidence: float = 0.95) -> Interval:
    """Mean of ``x`` with the two-sided Student-t interval ``mean ± t_{n-1} · sd / sqrt(n)``.

    One value gives an infinite interval (no spread can be estimated from one seed).
    """
    a = _values(x, "mean_ci")
    n, m = a.size, float(a.mean())
    if n < 2:
        return Interval(m, -math.inf, math.inf, n, math.nan, confidence)
    sd = float(a.std(ddof=1))
    h = float(st.t.ppf(0.5 + confidence / 2, n - 1)) * sd / math.sqrt(n)
    return Interval(m, m - h, m + h, n, sd, confidence)


@dataclass(frozen=True)
class Comparison:
    """``b - a``: the difference of means, its interval, the test statistic and two-sided p-value."""

    diff: Interval
    t: float
    p: float
    df: float
    test: str

    def as_dict(self) -> dict:
        return {
            "diff": self.diff.mean,
            "diff_lo": self.diff.lo,
            "diff_hi": self.diff.hi,
            "t": self.t,
            "p": self.p,
            "df": self.df,
            "test": self.test,
        }


def paired_diff(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """``b - a`` paired element by element (same seed in both): mean difference, t interval, and
    the paired t-test (two-sided). Needs at least two pairs."""
    x, y = _values(a, "paired_diff a"), _values(b, "paired_diff b")
    if x.size != y.size:
        raise ValueError(f"paired_diff needs one value per seed in both lists, got {x.size} and {y.size}")
    if x.size < 2:
        raise ValueError("paired_diff needs at least two seeds")
    d = y - x
    ci = mean_ci(d, confidence)
    n = d.size
    sd = float(d.std(ddof=1))
    if sd == 0:
        t = math.copysign(math.inf, ci.mean) if ci.mean else 0.0
        p = 0.0 if ci.mean else 1.0
    else:
        t = ci.mean / (sd / math.sqrt(n))
        p = float(2 * st.t.sf(abs(t), n - 1))
    return Comparison(ci, float(t), p, float(n - 1), "paired t")


def welch(a: Sequence[float], b: Sequence[float], confidence: float = 0.95) -> Comparison:
    """``mean(b) - mean(a)`` for independent samples: Welch's t-test and its interval
    (Welch-Satterthwaite degrees of freedom). Needs at least two values in each."""
    x, y = _values(a, "welch a"), _values(b, "welch b")
    if x.size < 2 or y.size < 2:
        raise ValueError("welch needs at least two values in each sample")
    va, vb = x.var(ddof=1) / x.size, y.var(ddof=1) / y.size
    se = math.sqrt(va + vb)
    diff = float(y.mean() - x.mean())
    if se == 0:
        return Comparison(
            Interval(diff, diff, diff, x.size + y.size, 0.0, confidence),
            math.inf if diff else 0.0,
            0.0 if diff else 1.0,
            math.inf,
            "Welch t",
        )
    df = (va + vb) ** 2 / (va**2 / (x.size - 1) + vb**2 / (y.size - 1))
    t = diff / se
    h = float(st.t.ppf(0.5 + confidence / 2, df)) * se
    return Comparison(
        Interval(diff, diff - h, diff + h, x.size + y.size, math.nan, confidence),
        float(t),
        float(2 * st.t.sf(abs(t), df)),
        float(df),
        "Welch t",
    )


def _df_and_scale(n: int, paired: bool) -> tuple[int, float]:
    """Degrees of freedom and the standard error per unit sd: paired (n pairs, sd of the differences)
    or two independent groups of n each (sd of one run)."""
    if paired:
        return n - 1, 1 / math.sqrt(n)
    return 2 * n - 2, math.sqrt(2 / n)


def power(delta: float, sd: float, n: int, alpha: float = 0.05, paired: bool = True) -> float:
    """Probability that the two-sided t-test at level ``alpha`` rejects when the true difference is
    ``delta``: exact, from the noncentral t distribution. ``sd``: of the paired differences
    (``paired``) or of one run (two groups of ``n``)."""
    if n < 2 or sd <= 0:
        raise ValueError(f"power needs n >= 2 and sd > 0, got n={n}, sd={sd}")
    df, scale = _df_and_scale(n, paired)
    nc = delta / (sd * scale)
    tc = float(st.t.ppf(1 - alpha / 2, df))
    p = float(st.nct.sf(tc, df, nc) + st.nct.cdf(-tc, df, nc))
    if not math.isfinite(
        p
    ):  # scipy's noncentral t can fail (small df, far tails): integrate over the chi-square

        def rejects(v: float) -> float:  # P(|Z + nc| > tc * sqrt(v / df)) for V = v
            c = tc * math.sqrt(v / df)
            return (st.norm.sf(c - nc) + st.norm.cdf(-c - nc)) * st.chi2.pdf(v, df)

        p = float(integrate.quad(rejects, 0, math.inf, limit=200)[0])
    return min(max(p, 0.0), 1.0)


def min_detectable_difference(
    sd: float, n: int, alpha: float = 0.05, target_power: float = 0.8, paired: bool = True
) -> float:
    """The smallest true difference detected with probability ``target_power`` by a two-sided
    t-test at level ``alpha`` with ``n`` seeds (see :func:`power` for ``sd`` and ``paired``).
    For large ``n`` it tends to ``(z_{1-alpha/2} + z_{power}) · sd · scale`` (2.80 · sd/√n paired)."""
    if not 0 < target_power < 1 or not 0 < alpha < 1:
        raise ValueError("alpha and target_power must lie in (0, 1)")
    df, scale = _df_and_scale(n, paired)
    hi = 2 * float(st.t.ppf(1 - alpha / 2, df)) * sd * scale
    while power(hi, sd, n, alpha, paired) < target_power:
        hi *= 2
    return float(
        optimize.brentq(lambda d: power(d, sd, n, alpha, paired) - target_power, 0.0, hi, xtol=1e-9 * sd)
    )


def seeds_needed(
    delta: float,
    sd: float,
    alpha: float = 0.05,
    target_power: float = 0.8,
    paired: bool = True,
    max_n: int = 10_000,
) -> int:
    """The fewest seeds (per variant) whose design detects ``delta`` with ``target_power``."""
    if delta <= 0:
        raise ValueError("delta must be positive")
    for n in range(2, max_n + 1):
        if power(delta, sd, n, alpha, paired) >= target_power:
            return n
    raise ValueError(f"more than {max_n} seeds would be needed")


def _versus(ref: pd.Series, mine: pd.Series, confidence: float, alpha: float, target_power: float) -> dict:
    """``mine - ref`` (both indexed by seed): paired over the common seeds, Welch over all, and the
    minimal detectable difference of the paired design."""
    nan = float("nan")
    row = dict(diff=nan, diff_lo=nan, diff_hi=nan, p_paired=nan, p_welch=nan, mdd=nan)
    common = sorted(set(mine.index) & set(ref.index))
    if len(common) >= 2:
        cmp = paired_diff(ref.loc[common], mine.loc[common], confidence)
        row.update(diff=cmp.diff.mean, diff_lo=cmp.diff.lo, diff_hi=cmp.diff.hi, p_paired=cmp.p)
        if cmp.diff.sd > 0:
            row["mdd"] = min_detectable_difference(cmp.diff.sd, len(common), alpha, target_power)
    if len(mine) >= 2 and len(ref) >= 2:
        row["p_welch"] = welch(ref, mine, confidence).p
    return row


def powered_summary(
    runs: pd.DataFrame,
    reference: str | None = "baseline",
    metric: str = "rsum",
    confidence: float = 0.95,
    target_power: float = 0.8,
    alpha: float = 0.05,
) -> pd.DataFrame:
    """The kit's one seed-statistics table: per variant (in run order) ``metric``'s seeds ``n``,
    ``mean``, the ``confidence`` t interval ``ci_lo`` / ``ci_hi``, ``sd`` (ddof=1; NaN for one seed),
    ``min``, ``max``; with a ``reference`` variant also ``diff`` (variant - reference, paired by seed
    over the seeds both have), ``diff_lo``, ``diff_hi``, ``p_paired`` (paired t-test), ``p_welch``
    (Welch's t-test over all runs) and ``mdd`` (the minimal detectable difference: the smallest true
    difference a paired t-test at ``alpha`` finds with ``target_power``, for this number of seeds and
    the observed sd of the paired differences). The reference row has NaN in the comparison columns.
    """
    if reference is not None and reference not in set(runs["variant"]):
        raise ValueError(
            f"reference variant {reference!r} is not among the runs ({sorted(set(runs['variant']))})"
        )
    ref = runs[runs["variant"] == reference].set_index("seed")[metric] if reference is not None else None
    out = []
    for variant, g in runs.groupby("variant", sort=False):
        x = g[metric].dropna()
        ci = mean_ci(x, confidence)
        row = {
            "variant": variant,
            "n": ci.n,
            "mean": ci.mean,
            "ci_lo": ci.lo,
            "ci_hi": ci.hi,
            "sd": ci.sd,
            "min": float(x.min()),
            "max": float(x.max()),
        }
        if ref is not None:
            mine = g.set_index("seed")[metric]
            row.update(
                _versus(ref, mine, confidence, alpha, target_power)
                if variant != reference
                else _versus(ref.iloc[:0], mine.iloc[:0], confidence, alpha, target_power)
            )
        out.append(row)
    return pd.DataFrame(out).set_index("variant")
