"""viz.plot_ablation (the one ablation plot): what it draws is the data (hand-computed means, paired
differences and t intervals), and its legends sit outside the data area."""

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pandas as pd
import pytest
from matplotlib.container import ErrorbarContainer
from scipy import stats as sps

from daimlib.course.stats import powered_summary
from daimlib.course.viz import plot_ablation

RSUM = {  # variant -> test RSUM of seeds 0..3 (made up; no_low's seed 3 is an outlier near the axis end)
    "baseline": [250.0, 262.0, 241.0, 255.0],
    "fdm": [259.0, 270.0, 240.0, 266.0],
    "no_low": [221.0, 230.0, 219.0, 190.0],
}


@pytest.fixture(scope="module")
def drawn():
    runs = pd.DataFrame(
        [{"variant": v, "seed": s, "rsum": x} for v, xs in RSUM.items() for s, x in enumerate(xs)]
    )
    table = powered_summary(runs, reference="baseline", metric="rsum")
    fig = plot_ablation(runs, table, claimed={"claimed": 11.8, "4.7 points": 4.7}, title="t")
    fig.canvas.draw()
    yield fig
    import matplotlib.pyplot as plt

    plt.close(fig)


def _diamonds(ax):
    """(x, y, lower error, upper error) of every errorbar drawn on ``ax``."""
    out = []
    for c in ax.containers:
        if isinstance(c, ErrorbarContainer):
            line, _, (bars,) = c.lines
            for x, y, seg in zip(line.get_xdata(), line.get_ydata(), bars.get_segments()):
                out.append((float(x), float(y), float(x - seg[0][0]), float(seg[1][0] - x)))
    return sorted(out, key=lambda t: t[1])


def _t_interval(xs):
    xs = np.asarray(xs, dtype=float)
    half = sps.t.ppf(0.975, xs.size - 1) * xs.std(ddof=1) / np.sqrt(xs.size)
    return xs.mean(), half


def test_left_panel_draws_each_variants_mean_and_t_interval(drawn):
    left = drawn.axes[0]
    got = _diamonds(left)
    assert len(got) == 3
    for row, ((x, y, lo, hi), v) in enumerate(zip(got, RSUM)):  # rows in table order: y = 0, 1, 2
        assert y == pytest.approx(row)
        mean, half = _t_interval(RSUM[v])
        assert x == pytest.approx(mean) and lo == pytest.approx(half) and hi == pytest.approx(half)
    lo_x, hi_x = left.get_xlim()
    assert lo_x <= min(min(xs) for xs in RSUM.values()) and hi_x >= max(max(xs) for xs in RSUM.values())
    assert lo_x > 0, "the axis is cut to the data, not started at zero"


def test_right_panel_draws_the_paired_differences(drawn):
    right = drawn.axes[1]
    got = _diamonds(right)
    assert len(got) == 2  # no interval on the reference's row (y = 0)
    for row, ((x, y, lo, hi), v) in enumerate(zip(got, ["fdm", "no_low"]), start=1):
        assert y == pytest.approx(row)
        d = np.subtract(RSUM[v], RSUM["baseline"])
        mean, half = _t_interval(d)
        assert x == pytest.approx(mean) and lo == pytest.approx(half) and hi == pytest.approx(half)
    claimed = sorted(float(ln.get_xdata()[0]) for ln in right.get_lines() if ln.get_color() == "#D55E00")
    assert claimed == pytest.approx([4.7, 11.8])


def test_the_legend_sits_below_both_panels_not_on_the_runs(drawn):
    renderer = drawn.canvas.get_renderer()
    assert all(ax.get_legend() is None for ax in drawn.axes), (
        "a legend inside the axes can hide runs and intervals"
    )
    (leg,) = drawn.legends
    box = leg.get_window_extent(renderer)
    labels = [t.get_text() for t in leg.get_texts()]
    assert any(lab.startswith("mean") for lab in labels) and {"claimed", "4.7 points"} <= set(labels)
    for ax in drawn.axes:
        assert box.y1 <= ax.xaxis.label.get_window_extent(renderer).y0 + 1, "the legend covers an axis label"
    assert box.y0 >= 0 and box.x0 >= 0 and box.x1 <= drawn.bbox.width + 1, (
        "the legend is cut off at the figure's edge"
    )


def test_one_seed_per_variant_draws_the_runs_without_intervals():
    """A first ablation with --seeds 1 has no interval (NaN): the plot still draws, its axis spans the runs."""
    import matplotlib.pyplot as plt

    runs = pd.DataFrame(
        [
            {"variant": v, "seed": 0, "rsum": x}
            for v, x in {"baseline": 250.0, "fdm": 262.0, "no_low": 221.0}.items()
        ]
    )
    table = powered_summary(runs, reference="baseline", metric="rsum")
    assert not np.isfinite(table["ci_lo"]).any()  # the case: no finite interval from one seed
    fig = plot_ablation(runs, table)
    fig.canvas.draw()
    lo, hi = fig.axes[0].get_xlim()
    assert np.isfinite([lo, hi]).all() and lo < 221.0 and hi > 262.0
    # the right panel: one paired difference per variant other than the reference, at 262-250 and 221-250
    dots = np.concatenate([c.get_offsets()[:, 0] for c in fig.axes[1].collections if len(c.get_offsets())])
    assert sorted(np.round(dots, 6)) == [-29.0, 12.0]
    plt.close(fig)
