"""Plots the notebooks share: margin evolution, score distributions, projections, retrieval grids.

Every ``plot_*`` function returns the matplotlib ``Figure`` (so a notebook can save it with
:func:`save_figure` and a test can inspect it) and draws into ``ax`` when one is given. Inputs
may be numpy arrays, torch tensors or lists. Nothing here calls ``plt.show()``: Jupyter shows the
returned figure, scripts save it.

Paper links: :func:`plot_margin_evolution` and :func:`plot_score_distributions` draw the margin
optimisation module (MOM, spec section 4: two fitted Gaussians, the boundary lambda, the EMA
margin); :func:`plot_cosine_histograms` the feature discriminability module (ContraNorm, spec
section 3); :func:`plot_attention_on_image` the SCAN text-to-image attention (spec section 2.1);
:func:`plot_retrieval_grid` the retrieval protocol (spec section 7).
"""

from __future__ import annotations

import math
import os
import textwrap
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib import patheffects
from matplotlib.figure import Figure
from matplotlib.transforms import ScaledTranslation

from daimlib.course.stats import mean_ci
from daimlib.metrics import positive_and_hardest_negative, separation_auc, to_numpy  # noqa: F401 - re-exported
from daimlib.paths import display_path, figures_dir, repo_path

# The kit's palette: seaborn's "colorblind" (Okabe-Ito-like), safe for the common colour-vision
# deficiencies. Every plot here takes its colours from it (matplotlib's default cycle is not used).
PALETTE = (
    "#0173B2",
    "#DE8F05",
    "#029E73",
    "#D55E00",
    "#CC78BC",
    "#CA9161",
    "#FBAFE4",
    "#949494",
    "#ECE133",
    "#56B4E9",
)
POS_COLOR, NEG_COLOR, BOUNDARY_COLOR = PALETTE[0], PALETTE[3], "#222222"
GT_COLOR, OTHER_COLOR = PALETTE[1], "#BBBBBB"  # retrieval grids: the true match, the other results
LINESTYLES = ("-", "--", ":", "-.")  # one per compared set: told apart by line, not only by colour
LINE_NAMES = {"-": "solid", "--": "dashed", ":": "dotted", "-.": "dash-dot"}  # named in the legends
PDF_ENV = "DAIM_FIGURES_PDF"  # "1": save_figure writes a PDF beside every PNG
HEADROOM = 1.35  # count panel of plot_margin_evolution: y range above the batch size, for the legends
# Axis labels with their units (scores are unitless: a sum of three level cosines, in [-3, 3]).
SCORE_LABEL = "score S (sum of 3 level cosines)"
STEP_LABEL = "training step (batches)"
METRIC_LABELS = {
    "rsum": "RSUM (sum of the six R@K, %; max 600)",
    "r1_sum": "R@1 i2t + R@1 t2i (%; max 200)",
    "loss": "loss (triplet hinges summed over the batch)",
    "margin": "margin m (score units)",
    "lam": r"boundary $\lambda_{\text{MOM}}$ (score units)",
    "n_correct": "rows ranked right (per batch)",
    "lr": "learning rate",
    "step_s": "seconds per step",
    **{f"{d}_r{k}": f"R@{k} {d} (%)" for d in ("i2t", "t2i") for k in (1, 5, 10)},
}


def metric_label(name: str) -> str:
    """The axis label (with its unit) for a history or metric column; the name itself when unknown."""
    return METRIC_LABELS.get(name, name)


def legend_below(ax, ncol: int = 2, fontsize: float = 8, handles=None, labels=None, **kw):
    """A legend under the axes, below its tick labels and x label: outside the data area, so it
    hides no data. Returns the legend, or None when nothing is labelled.

    Call it after the axes' x label is set: the gap is measured (in inches, so it stays right when
    ``tight_layout`` resizes the axes) from the axes' bottom to the bottom of its tick labels and label.
    """
    if handles is None:
        handles, labels = ax.get_legend_handles_labels()
    if not handles:
        return None
    fig = ax.figure
    try:
        renderer = fig.canvas.get_renderer()
        below = (ax.get_window_extent(renderer).y0 - ax.get_tightbbox(renderer).y0) / fig.dpi
    except (AttributeError, TypeError, ValueError):  # a canvas without a renderer: a typical height
        below = 0.5
    shift = ax.transAxes + ScaledTranslation(0, -(max(below, 0.0) + 0.04), fig.dpi_scale_trans)
    return ax.legend(
        handles,
        labels,
        loc="upper center",
        bbox_to_anchor=(0.5, 0.0),
        bbox_transform=shift,
        ncol=ncol,
        fontsize=fontsize,
        frameon=False,
        **kw,
    )


# Column names of a training history (one row per step) and the aliases accepted for each.
HISTORY_COLUMNS = {
    "step": ("step", "global_step", "iteration"),
    "margin": ("margin", "m"),
    "lam": ("lam", "lambda", "boundary", "lambda_"),
    "mu_pos": ("mu_pos", "pos_mean", "mu_p"),
    "sigma_pos": ("sigma_pos", "pos_std", "sigma_p"),
    "mu_neg": ("mu_neg", "neg_mean", "mu_n"),
    "sigma_neg": ("sigma_neg", "neg_std", "sigma_n"),
    "active": ("active", "activated", "updated", "mom_active"),
    "n_correct": ("n_correct", "correct", "num_correct", "n_right"),
    "n_rows": ("n_rows", "batch_size", "batch"),
}


# --- small numeric helpers (tested against naive computations) ------------------------------


def gaussian_pdf(x, mu: float, sigma: float) -> np.ndarray:
    """Normal density N(x; mu, sigma) (the densities the MOM fits, spec section 4 step 3)."""
    x = np.asarray(x, dtype=np.float64)
    sigma = max(float(sigma), 1e-12)
    return np.exp(-0.5 * ((x - mu) / sigma) ** 2) / (sigma * math.sqrt(2.0 * math.pi))


def pairwise_cosines(x) -> np.ndarray:
    """Cosine similarities of all distinct token pairs of ``x`` [N, C] (or [B, N, C], pooled over B).

    Returns the strict upper triangle (N(N-1)/2 values per set), the quantity ContraNorm pushes
    down (spec section 3). Zero rows count as cosine 0.
    """
    x = to_numpy(x)
    if x.ndim == 2:
        x = x[None]
    if x.ndim != 3:
        raise ValueError(f"pairwise_cosines expects [N, C] or [B, N, C] tokens, got shape {x.shape}")
    n = x.shape[1]
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    xn = x / np.maximum(norms, 1e-12)
    cos = xn @ xn.transpose(0, 2, 1)  # [B, N, N]
    iu = np.triu_indices(n, k=1)
    return cos[:, iu[0], iu[1]].reshape(-1)


def project_2d(feats, method: str = "umap", seed: int = 0) -> tuple[np.ndarray, str]:
    """Project ``feats`` [N, D] to 2-D; returns ``(xy [N, 2], method actually used)``.

    ``method="pca"`` centres the features and projects them on the top two right singular
    vectors (signs fixed so the largest coordinate of each axis is positive). ``"umap"`` uses
    umap-learn (cosine metric, the optional ``umap`` extra) and falls back to PCA when umap-learn is
    missing or N < 16, saying so in the output (the plot's title names the method used as well).
    """
    x = to_numpy(feats)
    if x.ndim != 2:
        raise ValueError(f"project_2d expects features [N, D], got shape {x.shape}; flatten levels first")
    if method not in ("umap", "pca"):
        raise ValueError(f"method must be 'umap' or 'pca', got {method!r}")
    if method == "umap" and x.shape[0] >= 16:
        try:
            import umap  # noqa: PLC0415 - slow import (numba), only when asked for
        except ImportError:
            print(
                "UMAP asked for, but umap-learn is not installed (pip install 'daimlib[umap]'): "
                "projecting with PCA instead"
            )
        else:
            n_neighbors = min(15, x.shape[0] - 1)
            reducer = umap.UMAP(n_components=2, n_neighbors=n_neighbors, metric="cosine", random_state=seed)
            with (
                warnings.catch_warnings()
            ):  # "n_jobs overridden by setting random_state": intended (reproducible)
                warnings.filterwarnings("ignore", message="n_jobs value", category=UserWarning)
                return np.asarray(reducer.fit_transform(x), dtype=np.float64), "umap"
    xc = x - x.mean(axis=0, keepdims=True)
    _, _, vt = np.linalg.svd(xc, full_matrices=False)
    comps = vt[:2]  # [2, D]
    xy = xc @ comps.T  # [N, 2]
    signs = np.sign(xy[np.abs(xy).argmax(axis=0), range(xy.shape[1])])
    xy = xy * np.where(signs == 0, 1.0, signs)
    if xy.shape[1] < 2:  # a single feature dimension
        xy = np.concatenate([xy, np.zeros((xy.shape[0], 2 - xy.shape[1]))], axis=1)
    return xy, "pca"


def _find_column(df, key: str, required: bool = False):
    for name in HISTORY_COLUMNS.get(key, (key,)):
        if name in df.columns:
            return name
    if required:
        raise ValueError(
            f"history has no {key!r} column (accepted names {HISTORY_COLUMNS.get(key, (key,))}); "
            f"its columns are {list(df.columns)}. Pass the history written by daimlib.train."
        )
    return None


def _new_axes(ax, n: int, figsize):
    """Use the given axes (one or a sequence of n) or make a 1 x n figure."""
    if ax is None:
        fig, axes = plt.subplots(1, n, figsize=figsize, squeeze=False)
        return fig, list(axes[0])
    axes = list(np.atleast_1d(ax).ravel())
    if len(axes) != n:
        raise ValueError(f"this plot needs {n} axes, got {len(axes)}; pass ax=None to make a new figure")
    return axes[0].figure, axes


# --- margin optimisation module ------------------------------------------------------------


def _rolling_mean(series, smooth: int) -> np.ndarray:
    """Rolling mean of a pandas series over ``smooth`` rows (one row at least), as a numpy array."""
    return series.rolling(max(1, smooth), min_periods=1).mean().to_numpy()


def _margin_panel(ax, df, x, margin_col: str) -> None:
    """Panel 1 of :func:`plot_margin_evolution`: the margin m and lambda_MOM where the MOM acted."""
    ax.plot(x, df[margin_col].to_numpy(), color=BOUNDARY_COLOR, lw=2, label="margin $m$")
    lam_col, act_col = _find_column(df, "lam"), _find_column(df, "active")
    if lam_col is not None:
        lam = df[lam_col].to_numpy(dtype=float)
        keep = np.isfinite(lam)
        if act_col is not None:
            keep &= df[act_col].to_numpy().astype(bool)
        ax.scatter(
            x[keep],
            lam[keep],
            s=8,
            color=NEG_COLOR,
            alpha=0.6,
            label=rf"boundary $\lambda_{{\text{{MOM}}}}$ (steps it acted: {int(keep.sum())})",
        )
    ax.set(xlabel=STEP_LABEL, ylabel="margin, boundary (score units)", title="margin and boundary")
    legend_below(ax, ncol=1)


def _score_panel(ax, df, x, smooth: int) -> None:
    """Panel 2 of :func:`plot_margin_evolution`: mean +/- std of the p_i and of the statistic n_i."""
    names = {
        "pos": r"positives $p_i = S_{ii}$",
        "neg": r"negative statistic $n_i$ ($m$ minus a gap; not a score)",
    }
    for key, color in (("pos", POS_COLOR), ("neg", NEG_COLOR)):
        mu_col, sd_col = _find_column(df, f"mu_{key}"), _find_column(df, f"sigma_{key}")
        if mu_col is None:
            continue
        mu = _rolling_mean(df[mu_col].astype(float), smooth)
        ax.plot(x, mu, color=color, label=names[key] + r" $\mu \pm \sigma$")
        if sd_col is not None:
            sd = _rolling_mean(df[sd_col].astype(float), smooth)
            ax.fill_between(x, mu - sd, mu + sd, color=color, alpha=0.2)
    ax.set(xlabel=STEP_LABEL, ylabel=SCORE_LABEL, title="the two samples the MOM fits")
    legend_below(ax, ncol=1)


def _count_curves(ax, df, x, smooth: int) -> None:
    """The rows ranked right per batch (raw and smoothed when ``smooth`` > 1), if the history has them."""
    corr_col = _find_column(df, "n_correct")
    if corr_col is None:
        return
    counts = df[corr_col].astype(float)
    if smooth > 1:  # the raw counts too: single steps above the trigger stay visible under the rolling mean
        ax.plot(
            x, counts.to_numpy(), color=PALETTE[4], lw=0.5, alpha=0.3, label="rows ranked right, per step"
        )
    ax.plot(
        x,
        _rolling_mean(counts, smooth),
        color=PALETTE[4],
        lw=2,
        label=f"rows ranked right (mean of {smooth} steps)" if smooth > 1 else "rows ranked right",
    )


def _activation_rate_axis(ax, df, x, act_col: str) -> tuple[list, list]:
    """A right y axis on ``ax`` with the running fraction of steps the MOM acted; its legend entries."""
    rate = df[act_col].astype(float).expanding().mean().to_numpy()
    right = ax.twinx()
    right.plot(
        x, rate, color=PALETTE[2], lw=1.2, ls="-.", label="fraction of steps the MOM acted (running)"
    )  # dash-dot: a count curve under it stays visible
    right.set_ylim(-0.02, HEADROOM)
    right.set_yticks([0, 0.25, 0.5, 0.75, 1.0])
    right.set_ylabel("fraction of steps (0-1)")
    right.grid(False)
    return right.get_legend_handles_labels()


def _activation_panel(ax, df, x, smooth: int, trigger) -> None:
    """Panel 3 of :func:`plot_margin_evolution`: rows ranked right, the trigger and the activation rate."""
    _count_curves(ax, df, x, smooth)
    if trigger is not None:
        ax.axhline(float(trigger), color="k", ls="--", lw=1, label=f"trigger > {float(trigger):.4g}")
    ax.set(xlabel=STEP_LABEL, ylabel="rows ranked right (per batch)", title="MOM activation")
    rows_col = _find_column(df, "n_rows")
    if rows_col is not None:
        ax.set_ylim(0, HEADROOM * float(df[rows_col].max()))  # room above for the legends
    elif ax.lines:
        ax.set_ylim(bottom=0)
    handles, labels = ax.get_legend_handles_labels()
    act_col = _find_column(df, "active")
    if act_col is not None:
        h2, l2 = _activation_rate_axis(ax, df, x, act_col)
        handles, labels = handles + h2, labels + l2
    if handles:  # one legend for both y axes, under the panel
        legend_below(ax, ncol=1, handles=handles, labels=labels)


def plot_margin_evolution(history_df, trigger=None, ax=None, smooth: int = 1) -> Figure:
    """The MOM over training (spec section 4): three panels against the training step.

    1. margin m and the boundary lambda_MOM of the steps where the MOM acted;
    2. mean +/- std of the positive scores p_i and of the negative statistic n_i. The n_i are
       **not** scores of negative pairs: the reference computes n_i = m + mean_j(S_ij - S_ii)/(B-1),
       the current margin minus a small gap (spec section 4), and the legend says so;
    3. rows ranked right per batch (``n_correct``) beside the trigger line, and the running
       activation rate (right axis).

    ``history_df``: a pandas DataFrame with one row per step and columns ``step, margin`` and,
    when present, ``lam, mu_pos, sigma_pos, mu_neg, sigma_neg, active, n_correct, n_rows`` (aliases in
    ``HISTORY_COLUMNS``). ``trigger``: the count of correct rows the MOM needs (e.g. 45 for the
    paper, ``activation_fraction * batch_size`` in general); drawn as a dashed line.
    ``smooth``: rolling-mean window (in rows) for the noisy per-step curves; ``ax``: None or three
    axes. Every legend sits under its panel, outside the data."""
    df = history_df.reset_index(drop=True)
    step_col = _find_column(df, "step")
    x = df[step_col].to_numpy() if step_col else np.arange(len(df))
    margin_col = _find_column(df, "margin", required=True)
    fig, (a0, a1, a2) = _new_axes(ax, 3, (13, 4.2))
    _margin_panel(a0, df, x, margin_col)
    _score_panel(a1, df, x, smooth)
    _activation_panel(a2, df, x, smooth, trigger)
    fig.tight_layout()
    return fig


def plot_score_distributions(
    pos,
    neg,
    boundary: float | None = None,
    margin: float | None = None,
    ax=None,
    bins: int = 40,
    labels: tuple[str, str] = ("positive pairs", "negative pairs"),
    title: str | None = None,
    xlabel: str = SCORE_LABEL,
) -> Figure:
    """Histograms of positive and negative scores with their fitted Gaussians (spec section 4).

    The Gaussians use the sample mean and the unbiased standard deviation, as the MOM does.
    ``boundary`` (e.g. the MOM's lambda, where alpha N_p = N_n) is drawn as a solid vertical
    line and ``margin`` as a dashed one. The overlap of the two densities is shaded: it is the
    area the paper's figure labels "Minimize S". ``xlabel``: what the values are (with units).
    The legend sits under the axes, so it hides no bar.
    """
    p, n = to_numpy(pos).ravel(), to_numpy(neg).ravel()
    if p.size < 2 or n.size < 2:
        raise ValueError(f"need at least 2 positive and 2 negative scores, got {p.size} and {n.size}")
    fig, (a,) = _new_axes(ax, 1, (6, 3.4))
    lo, hi = min(p.min(), n.min()), max(p.max(), n.max())
    pad = 0.05 * (hi - lo + 1e-12)
    edges = np.linspace(lo - pad, hi + pad, bins + 1)
    grid = np.linspace(edges[0], edges[-1], 400)
    dens = []
    for vals, color, name in ((p, POS_COLOR, labels[0]), (n, NEG_COLOR, labels[1])):
        mu, sd = float(vals.mean()), float(vals.std(ddof=1))
        a.hist(vals, bins=edges, density=True, color=color, alpha=0.35, label=f"{name} (n={vals.size})")
        d = gaussian_pdf(grid, mu, sd)
        dens.append(d)
        a.plot(grid, d, color=color, lw=2, label=rf"$\mathcal{{N}}$({mu:.3g}, {sd:.2g})")
    a.fill_between(grid, np.minimum(*dens), color="grey", alpha=0.35, label="overlap")
    if boundary is not None:
        a.axvline(
            float(boundary),
            color=BOUNDARY_COLOR,
            lw=2,
            label=rf"boundary $\lambda_{{\text{{MOM}}}}$ = {float(boundary):.3g}",
        )
    if margin is not None:
        a.axvline(
            float(margin), color=BOUNDARY_COLOR, lw=1.5, ls="--", label=f"margin m = {float(margin):.3g}"
        )
    a.set(xlabel=xlabel, ylabel="density (per score unit)", title=title or "score distributions")
    legend_below(a, ncol=2, fontsize=7)
    fig.tight_layout()
    return fig


# --- feature discriminability ---------------------------------------------------------------


def plot_cosine_histograms(
    before,
    after,
    labels: tuple[str, str] = ("before", "after"),
    ax=None,
    bins: int = 50,
    title: str | None = None,
) -> Figure:
    """Histograms of pairwise token cosines before and after ContraNorm (spec section 3).

    ``before``: tokens [N, C] or [B, N, C]. ``after``: the same shape, or a dict
    ``{label: tokens}`` to compare several settings (e.g. one per ContraNorm scale). The mean
    cosine of each set and its line style (the first set also filled) are printed in its legend
    entry, so the sets are told apart without colour.
    """
    sets = {labels[0]: before}
    if isinstance(after, Mapping):
        sets.update(after)
    else:
        sets[labels[1]] = after
    cos = {k: pairwise_cosines(v) for k, v in sets.items()}
    fig, (a,) = _new_axes(ax, 1, (6, 3.4))
    edges = np.linspace(min(c.min() for c in cos.values()), max(c.max() for c in cos.values()), bins + 1)
    colors = PALETTE
    for i, (k, c) in enumerate(cos.items()):
        ls = LINESTYLES[i % len(LINESTYLES)]
        if (
            i == 0
        ):  # the reference set filled; every set an outline with its own line style (no colour needed)
            a.hist(c, bins=edges, histtype="stepfilled", alpha=0.3, color=colors[0])
        a.hist(
            c,
            bins=edges,
            histtype="step",
            lw=1.8,
            ls=ls,
            color=colors[i % len(colors)],
            label=f"{k} (mean {c.mean():.3f}, {'filled, ' if i == 0 else ''}{LINE_NAMES[ls]})",
        )
    a.set(
        xlabel="cosine similarity of a token pair (-1 to 1)",
        ylabel="token pairs (count)",
        title=title or "pairwise cosines",
    )
    legend_below(a, ncol=min(3, len(cos)))
    fig.tight_layout()
    return fig


def plot_cosine_histograms_by_level(
    sets: Mapping[str, Sequence],
    levels: Sequence[str],
    bins: int = 40,
    what: str = "token pairs within an image",
) -> Figure:
    """Pairwise token cosines of several models, one panel per level (the FDM in the image stream,
    spec section 3).

    ``sets``: ``{name: [tokens of level 0, tokens of level 1, ...]}``, each ``[B, N, C]`` (pairs are
    taken within each of the B images); ``levels``: the panel names, one per entry of each list.
    The first set is drawn filled (the reference), every set as an outline with its own line style,
    so the sets are told apart without colour. Each panel's title gives the mean cosine of every set
    in legend order; one legend for the figure, below the panels, where it covers nothing.
    """
    names = list(sets)
    if not names:
        raise ValueError("plot_cosine_histograms_by_level got no sets; pass {name: [tokens per level]}")
    for name, toks in sets.items():
        if len(toks) != len(levels):
            raise ValueError(f"set {name!r} has {len(toks)} levels of tokens but {len(levels)} level names")
    n = len(levels)
    fig, axes = plt.subplots(1, n, figsize=(5.0 * n, 4.2), squeeze=False, layout="constrained")
    for k, (a, level) in enumerate(zip(axes[0], levels)):
        cos = {name: pairwise_cosines(sets[name][k]) for name in names}
        edges = np.linspace(
            min(c.min() for c in cos.values()), max(c.max() for c in cos.values()) + 1e-9, bins + 1
        )
        for i, (name, c) in enumerate(cos.items()):
            color = PALETTE[i % len(PALETTE)]
            if i == 0:
                a.hist(c, bins=edges, histtype="stepfilled", alpha=0.3, color=color)
            a.hist(
                c,
                bins=edges,
                histtype="step",
                lw=1.8,
                ls=LINESTYLES[i % len(LINESTYLES)],
                color=color,
                label=name,
            )
        means = " / ".join(f"{c.mean():.3f}" for c in cos.values())
        a.set(
            xlabel="cosine of a token pair (-1 to 1)",
            ylabel="token pairs (count)",
            title=f"{level} level: {what}\nmean cosine {means}",
        )
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(
        handles,
        [
            f"{lab} ({'filled, ' if i == 0 else ''}{LINE_NAMES[LINESTYLES[i % len(LINESTYLES)]]})"
            for i, lab in enumerate(labels)
        ],
        loc="outside lower center",
        ncol=min(3, len(labels)),
        fontsize=9,
        frameon=False,
    )
    return fig


def plot_collapse(
    curves: Mapping[str, tuple],
    matrices: Mapping[str, object],
    cmap: str = "viridis",
) -> Figure:
    """The hardest-negative collapse (notebook 05): rescaled training losses and score matrices.

    ``curves``: ``{run name: (steps, loss / loss at equal scores)}``, drawn with a dashed line at 1
    ("no better than equal scores"); ``matrices``: ``{run name: S}`` ([B, B], rows images, columns
    captions), one panel each, all on **one** colour scale (shared vmin / vmax) with one labelled
    colour bar, so a flat matrix looks flat beside one with structure.
    """
    if not matrices:
        raise ValueError("plot_collapse got no score matrices; pass {run name: S}")
    mats = {k: to_numpy(v).astype(np.float64) for k, v in matrices.items()}
    vmin = min(float(m.min()) for m in mats.values())
    vmax = max(float(m.max()) for m in mats.values())
    n = len(mats)
    fig, axes = plt.subplots(
        1, n + 1, figsize=(4.3 * (n + 1) + 0.8, 3.9), layout="constrained", width_ratios=[1.25] + [1] * n
    )
    a = axes[0]
    for i, (name, (xs, ys)) in enumerate(curves.items()):
        a.plot(
            to_numpy(xs),
            to_numpy(ys),
            color=PALETTE[i % len(PALETTE)],
            ls=LINESTYLES[i % len(LINESTYLES)],
            lw=1.6,
            label=name,
        )
    a.axhline(1.0, color=BOUNDARY_COLOR, ls=(0, (2, 3)), lw=1, label="equal scores (ratio 1)")
    a.set(xlabel=STEP_LABEL, ylabel="loss / its value at equal scores", title="training loss, rescaled")
    a.legend(fontsize=8, loc="best")
    for ax, (name, m) in zip(axes[1:], mats.items()):
        im = ax.imshow(m, cmap=cmap, vmin=vmin, vmax=vmax)
        ax.set(title=f"{name}:\nS on a val batch", xlabel="caption", ylabel="image")
    bar = fig.colorbar(im, ax=list(axes[1:]), fraction=0.05, shrink=0.9)
    bar.set_label("score S, same scale in every panel")
    return fig


def plot_embedding_projection(
    feats,
    labels,
    method: str = "umap",
    ax=None,
    pairs=None,
    title: str | None = None,
    seed: int = 0,
    max_pairs: int = 60,
) -> Figure:
    """2-D projection (UMAP, or PCA as the fast fallback) of embeddings coloured by label.

    ``feats`` [N, D] (e.g. mean-pooled image and caption tokens of one level, stacked);
    ``labels`` [N] (strings or ints: modality, class, ...). ``pairs``: optional list of
    (i, j) index pairs joined by thin lines (an image and its caption), at most ``max_pairs``.
    The title says which method was actually used.
    """
    labels = np.asarray(labels)
    x = to_numpy(feats)
    if labels.shape[0] != x.shape[0]:
        raise ValueError(
            f"labels has {labels.shape[0]} entries but feats has {x.shape[0]} rows; give one label per row"
        )
    xy, used = project_2d(x, method=method, seed=seed)
    fig, (a,) = _new_axes(ax, 1, (4.8, 4.2))
    if pairs is not None:
        for i, j in list(pairs)[:max_pairs]:
            a.plot(xy[[i, j], 0], xy[[i, j], 1], color="grey", lw=0.5, alpha=0.5, zorder=1)
    uniq = list(dict.fromkeys(labels.tolist()))
    markers = "o^sDvP*X"  # beyond the palette's 10 colours, the marker tells labels apart
    for k, lab in enumerate(uniq):
        sel = labels == lab
        a.scatter(
            xy[sel, 0],
            xy[sel, 1],
            s=10,
            color=PALETTE[k % len(PALETTE)],
            marker=markers[(k // len(PALETTE)) % len(markers)],
            label=f"{lab} (n={int(sel.sum())})",
            alpha=0.8,
            zorder=2,
        )
    unit = "arbitrary units" if used == "umap" else "feature units"
    a.set(
        xticks=[],
        yticks=[],
        xlabel=f"{used.upper()} 1 ({unit})",
        ylabel=f"{used.upper()} 2 ({unit})",
        title=f"{title + ': ' if title else ''}{used.upper()}",
    )
    legend_below(a, ncol=2 if len(uniq) > 1 else 1, fontsize=7, markerscale=1.5)
    fig.tight_layout()
    return fig


# --- images, attention and retrieval --------------------------------------------------------


def _as_image(img) -> np.ndarray:
    """PIL image, HWC array or CHW tensor -> HWC array in [0, 1] (or uint8)."""
    if hasattr(img, "convert"):  # PIL
        return np.asarray(img.convert("RGB"))
    arr = to_numpy(img) if hasattr(img, "detach") else np.asarray(img)
    if arr.ndim == 3 and arr.shape[0] in (1, 3) and arr.shape[-1] not in (1, 3):
        arr = arr.transpose(1, 2, 0)
    if arr.dtype != np.uint8:
        lo, hi = float(arr.min()), float(arr.max())
        arr = (arr - lo) / (hi - lo) if hi > 1.0 or lo < 0.0 else arr  # undo normalisation for display
    return arr.squeeze()


def scene_words(scene: Mapping, keys: Sequence[str] = ("size", "colour", "shape")) -> list[str]:
    """The caption words of each object of a demo scene, e.g. ``["big red triangle", "small green circle"]``.

    ``scene``: a demo scene as the dataset JSON stores it (``split.meta[i]["scene"]``: a list of
    ``objects``, each with its ``size``, ``colour`` and ``shape``); ``keys``: which words, in order."""
    return [" ".join(str(obj[k]) for k in keys) for obj in scene["objects"]]


def label_scene_objects(
    ax, scene: Mapping, scene_size: int = 64, keys: Sequence[str] = ("colour",), fontsize: float = 6.5
) -> list:
    """Write each object's colour name (``keys``: also "size", "shape") on the object itself, at its
    centre, white with a black outline, so a reader who cannot tell red from green or orange by eye
    can still check a demo caption against the picture. Returns the text artists, one per object.

    ``scene``: a demo scene (``split.meta[i]["scene"]``), whose object centres ``x``, ``y`` are pixels of
    a ``scene_size`` image; they are scaled to the first image drawn in ``ax`` (any size)."""
    if not ax.images:
        raise ValueError("label_scene_objects: draw the image into ax first (ax.imshow)")
    h, w = ax.images[0].get_array().shape[:2]
    sx, sy = w / scene_size, h / scene_size
    stroke = [patheffects.withStroke(linewidth=2, foreground="black")]
    return [
        ax.text(
            obj["x"] * sx - 0.5,  # imshow puts pixel k's centre at k: its left edge at -0.5
            obj["y"] * sy - 0.5,
            words,
            ha="center",
            va="center",
            fontsize=fontsize,
            color="white",
            fontweight="bold",
            path_effects=stroke,
            clip_on=True,
        )
        for obj, words in zip(scene["objects"], scene_words(scene, keys))
    ]


def show_image_grid(
    images, titles=None, ncols: int = 5, size: float = 2.0, wrap: int = 28, scenes=None, scene_size: int = 64
) -> Figure:
    """Images (PIL, HWC arrays or CHW tensors) in a grid, each with an optional wrapped title.

    ``scenes``: the demo scene of each image (``split.meta[i]["scene"]``, or None for an image without
    one): each object's colour name is written on it (:func:`label_scene_objects`)."""
    images = list(images)
    if not images:
        raise ValueError("show_image_grid got no images")
    if scenes is not None and len(scenes) != len(images):
        raise ValueError(f"{len(scenes)} scenes given for {len(images)} images")
    ncols = max(1, min(ncols, len(images)))
    nrows = math.ceil(len(images) / ncols)
    wrapped = [textwrap.fill(str(t), wrap) for t in titles] if titles is not None else None
    lines = max((w.count("\n") + 1 for w in wrapped), default=0) if wrapped else 0
    row_h = size + 0.13 * lines + 0.1  # room for the wrapped titles (7 pt lines)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, row_h * nrows), squeeze=False)
    for k, a in enumerate(axes.ravel()):
        a.axis("off")
        if k < len(images):
            a.imshow(_as_image(images[k]))
            if wrapped is not None:
                a.set_title(wrapped[k], fontsize=7)
            if scenes is not None and scenes[k] is not None:
                label_scene_objects(a, scenes[k], scene_size)
    fig.tight_layout()
    return fig


def attention_to_pixels(attn, grid_hw: tuple[int, int], image_hw: tuple[int, int]) -> np.ndarray:
    """Token weights [R] (R = h*w, row-major, as Swin flattens its grid) -> a [H, W] map.

    Each token's weight fills its own block of pixels (nearest-neighbour upsampling), so the
    map shows exactly which patch the weight belongs to.
    """
    a = to_numpy(attn).ravel()
    h, w = grid_hw
    if a.size != h * w:
        raise ValueError(f"attention has {a.size} weights but the grid {h}x{w} has {h * w} tokens")
    H, W = image_hw
    rows = np.minimum((np.arange(H) * h) // H, h - 1)
    cols = np.minimum((np.arange(W) * w) // W, w - 1)
    return a.reshape(h, w)[rows[:, None], cols[None, :]]


def plot_attention_on_image(
    image,
    attn,
    grid_hw: tuple[int, int],
    words=None,
    ncols: int = 4,
    alpha: float = 0.55,
    size: float = 2.2,
    ax=None,
    colorbar: bool | None = None,
    scale_label: str = "attention weight",
    vmax: float | None = None,
    scene: Mapping | None = None,
    scene_size: int = 64,
) -> Figure:
    """SCAN text-to-image attention drawn on the image (spec section 2.1).

    ``attn``: [R] weights of one word over the R = h*w image tokens, or [n_words, R] for several
    words (one panel each, titled by ``words``). Each panel shows the image with the weights of
    its tokens as a heat map on top. All panels share **one** colour scale, from 0 to ``vmax``
    (default: the largest weight of any panel), so equal colours mean equal weights across the
    figure; one colour bar, labelled ``scale_label``, serves them all.
    ``ax``: draw a single row of weights into this axes (pass the same ``vmax`` to every panel of a
    figure). ``colorbar``: default on for a grid, off when drawing into a given ``ax``.
    ``scene``: the demo scene of the image: each object's colour name is written on it in every panel
    (:func:`label_scene_objects`).
    """
    img = _as_image(image)
    att = to_numpy(attn)
    if att.ndim == 1:
        att = att[None]
    if att.ndim != 2:
        raise ValueError(f"attn must be [R] or [n_words, R], got shape {att.shape}")
    if words is not None and len(words) != att.shape[0]:
        raise ValueError(f"{len(words)} words given for {att.shape[0]} attention rows")
    n = att.shape[0]
    top = max(float(att.max()), 1e-12) if vmax is None else float(vmax)
    if ax is not None:
        if n != 1:
            raise ValueError(f"ax= takes one row of attention weights, got {n}; pass ax=None for a grid")
        fig, axes = ax.figure, np.array([[ax]])
    else:
        ncols = max(1, min(ncols, n))
        nrows = math.ceil(n / ncols)
        width = size * ncols + (0.8 if colorbar is not False else 0.0)  # room for the one colour bar
        fig, axes = plt.subplots(
            nrows, ncols, figsize=(width, (size + 0.3) * nrows), squeeze=False, layout="constrained"
        )
    hw = img.shape[:2]
    shown = None
    for k, a in enumerate(axes.ravel()):
        a.axis("off")
        if k >= n:
            continue
        heat = attention_to_pixels(att[k], grid_hw, hw)
        a.imshow(img)
        shown = a.imshow(heat, cmap="inferno", alpha=alpha, vmin=0.0, vmax=top)
        if scene is not None:
            label_scene_objects(a, scene, scene_size)
        a.set_title(str(words[k]) if words is not None else f"row {k}", fontsize=8)
    if colorbar if colorbar is not None else ax is None:
        bar = fig.colorbar(shown, ax=axes.ravel().tolist(), fraction=0.03, pad=0.02)
        bar.set_label(scale_label, fontsize=7)
        bar.ax.tick_params(labelsize=6)
    return fig


def plot_score_matrices(
    matrices: Mapping[str, object], scale_label: str = "score", marks: bool = True, size: float = 3.0
) -> Figure:
    """Score matrices side by side (rows images, columns captions), one panel each, titled by their
    key, on **one** shared colour scale (vmin/vmax over all of them) with one labelled colour bar,
    so the same colour is the same score in every panel. ``marks``: a ring on each row's highest score.
    """
    mats = {name: to_numpy(m) for name, m in matrices.items()}
    if not mats:
        raise ValueError("plot_score_matrices got no matrices")
    lo = min(float(m.min()) for m in mats.values())
    hi = max(float(m.max()) for m in mats.values())
    fig, axes = plt.subplots(
        1, len(mats), figsize=(size * len(mats) + 0.8, size), squeeze=False, layout="constrained"
    )
    for a, (name, m) in zip(axes[0], mats.items()):
        shown = a.imshow(m, cmap="viridis", vmin=lo, vmax=hi)
        if marks:
            best = m.argmax(axis=1)
            a.scatter(best, range(len(best)), marker="o", s=18, facecolors="none", edgecolors="white")
        a.set(title=name, xlabel="caption j (of image j)", ylabel="image i")
        a.grid(False)
    bar = fig.colorbar(shown, ax=axes[0].tolist(), fraction=0.03, pad=0.02)
    bar.set_label(scale_label, fontsize=8)
    return fig


def _framed_result(ax, image, title: str, hit: bool) -> None:
    """One retrieved image without ticks, titled; framed in ``GT_COLOR`` and labelled when it is the true one."""
    ax.imshow(_as_image(image))
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(True)
        sp.set_color(GT_COLOR if hit else OTHER_COLOR)
        sp.set_linewidth(4 if hit else 1)
    ax.set_title(title, fontsize=8)
    if hit:
        ax.set_xlabel("✓ true image", fontsize=8, fontweight="bold", color="black")


def _t2i_row(row, images, caption: str, col_scores: np.ndarray, k: int, true_image) -> None:
    """One text-to-image row: the caption's k best images, the true one framed or its rank noted."""
    order = np.argsort(-col_scores, kind="stable")
    top = order[:k]
    for c, i in enumerate(top):
        hit = true_image is not None and true_image == i
        _framed_result(row[c], images[i], f"#{c + 1}  {col_scores[i]:.3f}", hit)
    if true_image is not None and true_image not in top:
        rank = int(np.flatnonzero(order == true_image)[0]) + 1
        row[-1].text(
            1.08,
            0.5,
            f"true image\nnot in the top {k}\n(its rank: {rank}\nof {len(col_scores)})",
            transform=row[-1].transAxes,
            ha="left",
            va="center",
            fontsize=8,
        )
    row[0].set_ylabel(textwrap.fill(caption, 22), fontsize=7, rotation=0, ha="right", va="center")


def _i2t_row(row, image, captions: Sequence[str], row_scores: np.ndarray, q: int, k: int, gt) -> None:
    """One image-to-text row: the image, then its k best captions ticked ``[x]`` when true, with a note."""
    row[0].imshow(_as_image(image))
    row[0].axis("off")
    ranked = np.argsort(-row_scores, kind="stable")
    top = ranked[:k]
    lines = []
    for c, j in enumerate(top):
        mark = "[x]" if gt is not None and gt[j] == q else "[ ]"
        lines.append(f"{mark} #{c + 1} {row_scores[j]:.3f}  {textwrap.shorten(captions[j], 60)}")
    true_caps = np.flatnonzero(gt == q) if gt is not None else []
    if len(true_caps) and not np.isin(top, true_caps).any():
        ranks = np.flatnonzero(np.isin(ranked, true_caps)) + 1
        lines.append(
            f"no true caption in the top {k} (best true caption: rank {ranks[0]} of {len(row_scores)})"
        )
    row[1].axis("off")
    row[1].text(0, 0.5, "\n".join(lines), va="center", fontsize=8, family="monospace")


def plot_retrieval_grid(
    images,
    captions: Sequence[str],
    scores,
    queries: Sequence[int] = (0,),
    k: int = 5,
    gt=None,
    direction: str = "t2i",
    size: float = 1.8,
) -> Figure:
    """Top-k retrieval results (spec section 7's layout: ``scores[i, j] = S(image i, caption j)``).

    ``direction="t2i"``: each query is a caption index; its row shows the k best images, with
    their scores; with ``gt`` (the image index of every caption, ``img_of_caption``) the true
    image is framed in ``GT_COLOR`` and labelled "✓ true image", and a row whose true image is
    not among the k shown says so on its right, with the true image's rank.
    ``direction="i2t"``: each query is an image index; its row shows the image and its k best captions,
    ticked ``[x]`` when ``gt[caption] == image``, with a note when no true caption is among them."""
    s = to_numpy(scores)
    n_img, n_cap = s.shape
    if len(images) != n_img or len(captions) != n_cap:
        raise ValueError(
            f"scores is {n_img} images x {n_cap} captions but got {len(images)} images and {len(captions)} captions"
        )
    if direction not in ("t2i", "i2t"):
        raise ValueError(f"direction must be 't2i' or 'i2t', got {direction!r}")
    gt = None if gt is None else np.asarray(gt)
    queries = list(queries)
    if direction == "t2i":
        k = min(k, n_img)
        fig, axes = plt.subplots(
            len(queries),
            k,
            figsize=(size * k + (1.6 if gt is not None else 0), (size + 0.6) * len(queries)),
            squeeze=False,
        )
        for r, q in enumerate(queries):
            _t2i_row(axes[r], images, captions[q], s[:, q], k, None if gt is None else gt[q])
    else:
        k = min(k, n_cap)
        fig, axes = plt.subplots(
            len(queries),
            2,
            figsize=(size + 5.5, (size + 0.3) * len(queries)),
            squeeze=False,
            gridspec_kw={"width_ratios": [1, 3]},
        )
        for r, q in enumerate(queries):
            _i2t_row(axes[r], images[q], captions, s[q], q, k, gt)
    fig.tight_layout()
    return fig


# --- training ----------------------------------------------------------------------------------


def plot_training_curves(
    histories: Mapping[str, object],
    columns: Sequence[str] = ("loss", "margin"),
    x: str = "step",
    smooth: int = 1,
) -> Figure:
    """One panel per history column, one line per run: ``histories = {"DAIM": df, "HAT": df}``.

    Columns a run lacks are skipped for that run; a column no run has raises with the list of
    available columns. ``smooth`` is a rolling-mean window in rows.
    """
    if not histories:
        raise ValueError("plot_training_curves got no histories; pass {run name: history DataFrame}")
    available = set().union(*(set(df.columns) for df in histories.values()))
    missing = [c for c in columns if c not in available]
    if missing:
        raise ValueError(f"no history has the columns {missing}; available columns: {sorted(available)}")
    fig, axes = _new_axes(None, len(columns), (4.3 * len(columns), 3.2))
    for a, col in zip(axes, columns):
        for name, df in histories.items():
            if col not in df.columns:
                continue
            xs = df[x].to_numpy() if x in df.columns else np.arange(len(df))
            ys = df[col].astype(float).rolling(max(1, smooth), min_periods=1).mean().to_numpy()
            a.plot(xs, ys, label=name, lw=1.5, color=PALETTE[list(histories).index(name) % len(PALETTE)])
        a.set(xlabel=STEP_LABEL if x == "step" else metric_label(x), ylabel=metric_label(col), title=col)
        legend_below(a, ncol=min(3, len(histories)))
    fig.tight_layout()
    return fig


# --- saving ------------------------------------------------------------------------------------


def save_figure(
    fig: Figure,
    name: str,
    dpi: int = 100,
    root: str | Path | None = None,
    pdf: bool | None = None,
    data: str | Path | None = None,
    folder: str | Path | None = None,
    smoke: bool = False,
) -> str:
    """Write ``fig`` as ``<folder>/<name>.png`` (and ``.pdf`` beside it, for a paper); return
    the PNG's path as the kit prints it (repo-relative, e.g. ``"figures/margin_evolution.png"``).

    ``pdf``: ``True`` / ``False``; ``None`` (default) follows the switch ``DAIM_FIGURES_PDF=1``, so a
    whole notebook run (``DAIM_FIGURES_PDF=1 make notebooks``) also writes every figure as PDF.

    The folder, first match wins:

    - ``folder`` (absolute or relative to the repository root);
    - ``root``: ``<root>/figures``;
    - :func:`daimlib.paths.figures_dir` of ``data`` and ``smoke``: the tracked ``figures/`` for the
      full demo run (``data=None`` or ``"demo"``), ``runs/[smoke/][<data folder>/]figures/``
      otherwise, all under ``$DAIM_OUTPUT_DIR`` when that variable is set.

    The PDF carries no creation date, so re-running a notebook rewrites the same bytes.
    """
    if not name or "/" in name or "\\" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain file stem like 'margin_evolution', got {name!r}")
    if folder is not None:
        out_dir = repo_path(folder)
    elif root is not None:
        out_dir = Path(root) / "figures"
    else:
        out_dir = figures_dir(data, smoke)
    stem = name[:-4] if name.endswith((".png", ".pdf")) else name
    out = out_dir / f"{stem}.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=dpi, bbox_inches="tight")
    if pdf is None:
        pdf = os.environ.get(PDF_ENV, "0").strip().lower() in ("1", "true", "yes", "on")
    if pdf:
        fig.savefig(out.with_suffix(".pdf"), bbox_inches="tight", metadata={"CreationDate": None})
    if root is not None:
        return out.relative_to(Path(root)).as_posix()
    return display_path(out)


# --- ablations (notebook 09) and feature separation (notebook 08) -----------------------------------


def _mean_diamond(ax, x, y, xerr, **kw) -> None:
    """A mean as a black diamond with its interval as horizontal error bars (both ablation panels)."""
    ax.errorbar(x, y, xerr=xerr, fmt="D", color="black", ms=5, capsize=4, lw=1.2, **kw)


def _runs_panel(ax, runs: pd.DataFrame, table: pd.DataFrame, metric: str, palette, confidence: float) -> None:
    """Left panel of :func:`plot_ablation`: every run, and each variant's mean with its interval."""
    order = list(table.index)
    sns.stripplot(
        data=runs,
        x=metric,
        y="variant",
        order=order,
        hue="variant",
        palette=palette,
        size=5,
        jitter=0.15,
        alpha=0.75,
        legend=False,
        ax=ax,
    )
    _mean_diamond(
        ax,
        table["mean"],
        np.arange(len(order)),
        [table["mean"] - table["ci_lo"], table["ci_hi"] - table["mean"]],
        label=f"mean ± {confidence:.0%} interval",
    )
    # a variant with one seed has no finite interval: the axis then spans the runs alone
    ends = np.concatenate([runs[metric], table["ci_lo"], table["ci_hi"]]).astype(float)
    lo, hi = float(np.min(ends[np.isfinite(ends)])), float(np.max(ends[np.isfinite(ends)]))
    pad = 0.06 * (hi - lo or 1.0)
    ax.set_xlim(lo - pad, hi + pad)
    ax.set(
        xlabel=f"{metric.upper()} (points of 600, on the split the title names; axis cut to the data: dots and intervals, not bars)",
        ylabel="variant",
        title="every run, and the mean with its interval",
    )


def _difference_panel(
    ax, runs: pd.DataFrame, table: pd.DataFrame, metric: str, reference: str, palette, confidence: float
) -> None:
    """Right panel of :func:`plot_ablation` (its data): each variant minus ``reference``, paired by seed."""
    ref = runs[runs["variant"] == reference].set_index("seed")[metric]
    for y, v in zip(np.arange(len(table.index)), table.index):
        if v == reference:
            continue
        mine = runs[runs["variant"] == v].set_index("seed")[metric]
        common = sorted(set(mine.index) & set(ref.index))
        d = (mine.loc[common] - ref.loc[common]).to_numpy(dtype=float)
        ax.scatter(
            d,
            np.full(d.size, y) + np.random.default_rng(y).uniform(-0.15, 0.15, d.size),
            s=18,
            color=palette[v],
            alpha=0.75,
            zorder=2,
        )
        if d.size >= 2:
            ci = mean_ci(d, confidence)
            _mean_diamond(ax, [ci.mean], [y], [[ci.mean - ci.lo], [ci.hi - ci.mean]], zorder=3)


def _difference_guides(ax, table: pd.DataFrame, metric: str, reference: str, claimed) -> None:
    """Right panel of :func:`plot_ablation` (its guides): zero, the ± MDD band, the claimed effects."""
    ax.axvline(0, color="0.3", lw=1)
    mdd = table.loc[table.index != reference, "mdd"].dropna()
    if len(mdd):
        m = float(mdd.median())
        ax.axvspan(-m, m, color="0.85", zorder=0, label=f"± minimal detectable difference (median {m:.1f})")
    for (label, size), ls in zip((claimed or {}).items(), ["--", ":", "-."]):
        ax.axvline(size, color="#D55E00", ls=ls, lw=1.3, label=label)
    ax.set(
        xlabel=f"{metric.upper()} difference from {reference}, paired by seed (points)",
        title=f"effect of each switch vs {reference}",
    )


def plot_ablation(
    runs: pd.DataFrame,
    table: pd.DataFrame,
    metric: str = "rsum",
    reference: str = "baseline",
    claimed: dict[str, float] | None = None,
    confidence: float = 0.95,
    title: str | None = None,
) -> Figure:
    """The kit's one ablation plot (notebook 09: the short runs and the powered ablation). Two panels. Left: ``metric`` of every run (one dot per seed) with each variant's mean and
    its t interval. Right: each variant minus ``reference``, paired by seed (dots per seed, mean and
    interval), the zero line, the band ± the minimal detectable difference of the design
    (``table["mdd"]`` from :func:`daimlib.course.stats.powered_summary`, which makes ``table``) and the ``claimed`` effects
    (label -> size, e.g. the paper's claimed gain) as vertical lines.
    """
    order = list(table.index)
    palette = dict(zip(order, sns.color_palette("colorblind", len(order))))
    fig, (a, b) = plt.subplots(1, 2, figsize=(12.5, 0.45 * len(order) + 2.8), sharey=True)
    _runs_panel(a, runs, table, metric, palette, confidence)
    _difference_panel(b, runs, table, metric, reference, palette, confidence)
    _difference_guides(b, table, metric, reference, claimed)
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


def mean_pool_tokens(tokens, lengths=None) -> np.ndarray:
    """Mean over the tokens of each item: ``[N, L, D]`` -> ``[N, D]`` (the pooling of the reference's
    t-SNE plots, spec section 1.4). With ``lengths`` [N], only the first ``lengths[i]`` tokens of
    item i count (captions: [CLS] ... [SEP], padding excluded).
    """
    x = to_numpy(tokens)
    if x.ndim != 3:
        raise ValueError(f"mean_pool_tokens expects tokens [N, L, D], got shape {x.shape}")
    if lengths is None:
        return x.mean(axis=1)
    n = to_numpy(lengths).astype(np.int64).ravel()
    if n.size != x.shape[0] or n.min(initial=1) < 1 or n.max(initial=1) > x.shape[1]:
        raise ValueError(
            f"lengths must give 1..{x.shape[1]} valid tokens for each of the {x.shape[0]} items; got {n.tolist()[:8]}"
        )
    valid = np.arange(x.shape[1])[None, :] < n[:, None]  # [N, L]
    return (x * valid[..., None]).sum(axis=1) / n[:, None]
