"""The powered ablation's figure (notebook 09): every run a dot, each variant's mean with its 95 %
interval, and the paired differences from the baseline beside what the design could detect."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from daimlib.course import stats


def plot_powered_ablation(
    runs: pd.DataFrame,
    table: pd.DataFrame,
    metric: str = "rsum",
    reference: str = "baseline",
    claimed: dict[str, float] | None = None,
    confidence: float = 0.95,
    title: str | None = None,
) -> Figure:
    """Two panels. Left: ``metric`` of every run (one dot per seed) with each variant's mean and
    its t interval. Right: each variant minus ``reference``, paired by seed (dots per seed, mean and
    interval), the zero line, the band ± the minimal detectable difference of the design
    (``table["mdd"]`` from :func:`daimlib.course.stats.powered_summary`) and the ``claimed`` effects
    (label -> size, e.g. the paper's claimed gain) as vertical lines.
    """
    order = list(table.index)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.5, 0.45 * len(order) + 2.8), sharey=True)
    sns.stripplot(data=runs, x=metric, y="variant", order=order, hue="variant", palette=palette, size=5,
                  jitter=0.15, alpha=0.75, legend=False, ax=a)  # fmt: skip
    ys = np.arange(len(order))
    a.errorbar(table["mean"], ys, xerr=[table["mean"] - table["ci_lo"], table["ci_hi"] - table["mean"]],
               fmt="D", color="black", ms=5, capsize=4, lw=1.2, label=f"mean ± {confidence:.0%} interval")  # fmt: skip
    lo = float(min(runs[metric].min(), table["ci_lo"].min()))
    hi = float(max(runs[metric].max(), table["ci_hi"].max()))
    pad = 0.06 * (hi - lo or 1.0)
    a.set_xlim(lo - pad, hi + pad)
    a.set(xlabel=f"test {metric.upper()} (points of 600; axis cut to the data: dots and intervals, not bars)",
          ylabel="variant", title="every run, and the mean with its interval")  # fmt: skip

    ref = runs[runs["variant"] == reference].set_index("seed")[metric]
    for y, v in zip(ys, order):
        if v == reference:
            continue
        mine = runs[runs["variant"] == v].set_index("seed")[metric]
        common = sorted(set(mine.index) & set(ref.index))
        d = (mine.loc[common] - ref.loc[common]).to_numpy(dtype=float)
        b.scatter(d, np.full(d.size, y) + np.random.default_rng(y).uniform(-0.15, 0.15, d.size), s=18,
                  color=palette[v], alpha=0.75, zorder=2)  # fmt: skip
        if d.size >= 2:
            ci = stats.mean_ci(d, confidence)
            b.errorbar([ci.mean], [y], xerr=[[ci.mean - ci.lo], [ci.hi - ci.mean]], fmt="D", color="black",
                       ms=5, capsize=4, lw=1.2, zorder=3)  # fmt: skip
    b.axvline(0, color="0.3", lw=1)
    mdd = table.loc[table.index != reference, "mdd"].dropna()
    if len(mdd):
        m = float(mdd.median())
        b.axvspan(-m, m, color="0.85", zorder=0, label=f"± minimal detectable difference (median {m:.1f})")
    styles = ["--", ":", "-."]
    for (label, size), ls in zip((claimed or {}).items(), styles):
        b.axvline(size, color="#D55E00", ls=ls, lw=1.3, label=label)
    b.set(xlabel=f"{metric.upper()} difference from {reference}, paired by seed (points)",
          title=f"effect of each switch vs {reference}")  # fmt: skip
    # one legend for both panels, under them, where it cannot hide a run or an interval
    handles, labels = [], []
    for ax in (a, b):
        h, lab = ax.get_legend_handles_labels()
        handles, labels = handles + h, labels + lab
    fig.legend(handles, labels, loc="lower center", ncol=2, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.55 / fig.get_figheight(), 1, 1))  # 0.55 in at the bottom for the legend
    return fig
