"""daimlib.course.stats against hand-worked numbers, textbook formulas and a Monte Carlo simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from daimlib.course import stats


def test_mean_ci_hand_worked():
    # [1, 2, 3]: mean 2, sd 1, t_{0.975, 2} = 4.302653 -> half-width 4.302653 / sqrt(3) = 2.484138
    ci = stats.mean_ci([1.0, 2.0, 3.0])
    assert ci.mean == 2.0 and ci.sd == pytest.approx(1.0) and ci.n == 3
    assert ci.half_width == pytest.approx(4.302653 / math.sqrt(3), rel=1e-6)
    assert str(ci) == "2.0 ± 2.5"


def test_mean_ci_of_one_value_is_unbounded_and_bad_input_is_refused():
    ci = stats.mean_ci([5.0])
    assert ci.mean == 5.0 and ci.lo == -math.inf and ci.hi == math.inf
    with pytest.raises(ValueError):
        stats.mean_ci([])
    with pytest.raises(ValueError):
        stats.mean_ci([1.0, float("nan")])


def test_paired_diff_matches_the_formula_on_differences():
    a = [250.0, 260.0, 240.0, 255.0, 245.0]
    b = [256.0, 263.0, 249.0, 254.0, 251.0]
    d = np.array(b) - np.array(a)  # 6, 3, 9, -1, 6: mean 4.6, sd sqrt(14.3)
    cmp = stats.paired_diff(a, b)
    assert cmp.diff.mean == pytest.approx(4.6)
    t = 4.6 / (math.sqrt(np.var(d, ddof=1)) / math.sqrt(5))
    assert cmp.t == pytest.approx(t) and cmp.df == 4
    # two-sided p from the t(4) distribution, by numerical integration of its density (independent of scipy.stats)
    x = np.linspace(abs(t), 200, 400_001)
    dens = math.gamma(2.5) / (math.sqrt(4 * math.pi) * math.gamma(2)) * (1 + x**2 / 4) ** -2.5
    assert cmp.p == pytest.approx(2 * np.trapezoid(dens, x), rel=1e-4)
    with pytest.raises(ValueError):
        stats.paired_diff([1.0, 2.0], [1.0])


def test_pairing_removes_the_shared_seed_noise():
    rng = np.random.default_rng(0)
    seed_effect = rng.normal(0, 20, 8)
    a = 250 + seed_effect + rng.normal(0, 1, 8)
    b = 255 + seed_effect + rng.normal(0, 1, 8)
    assert stats.paired_diff(a, b).p < 0.01 < stats.welch(a, b).p


def test_welch_matches_the_welch_satterthwaite_formula():
    a, b = [1.0, 2.0, 3.0, 4.0], [2.0, 4.0, 6.0, 8.0, 10.0]
    va, vb = np.var(a, ddof=1) / 4, np.var(b, ddof=1) / 5
    df = (va + vb) ** 2 / (va**2 / 3 + vb**2 / 4)
    cmp = stats.welch(a, b)
    assert cmp.diff.mean == pytest.approx(6.0 - 2.5)
    assert cmp.t == pytest.approx(3.5 / math.sqrt(va + vb)) and cmp.df == pytest.approx(df)


def test_power_at_the_minimal_detectable_difference_by_simulation():
    sd, n = 10.0, 5
    mdd = stats.min_detectable_difference(sd, n)
    assert stats.power(mdd, sd, n) == pytest.approx(0.8, abs=1e-6)
    # Monte Carlo: paired differences ~ N(mdd, sd), the paired t-test at 5 % rejects ~80 % of the time
    rng = np.random.default_rng(1)
    d = rng.normal(mdd, sd, size=(20_000, n))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(n))
    assert np.mean(np.abs(t) > 2.776445) == pytest.approx(0.8, abs=0.015)  # t_{0.975, 4}


def test_mdd_tends_to_the_normal_formula_and_seeds_needed_inverts_it():
    sd = 3.0
    big = stats.min_detectable_difference(sd, 2000)
    assert big == pytest.approx((1.959964 + 0.841621) * sd / math.sqrt(2000), rel=2e-3)
    assert stats.min_detectable_difference(sd, 5) > stats.min_detectable_difference(sd, 10)
    n = stats.seeds_needed(5.0, 10.0)
    assert stats.power(5.0, 10.0, n) >= 0.8 > stats.power(5.0, 10.0, n - 1)
    # two independent groups need about twice the seeds of a paired design with the same sd
    assert stats.seeds_needed(5.0, 10.0, paired=False) > stats.seeds_needed(5.0, 10.0)


def test_power_with_two_seeds_by_simulation():
    # df = 1, where scipy's noncentral t is least reliable: compare with a direct simulation
    rng = np.random.default_rng(2)
    d = rng.normal(30.0, 10.0, size=(200_000, 2))
    t = d.mean(1) / (d.std(1, ddof=1) / math.sqrt(2))
    assert stats.power(30.0, 10.0, 2) == pytest.approx(
        np.mean(np.abs(t) > 12.706205), abs=0.01
    )  # t_{0.975, 1}
