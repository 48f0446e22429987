"""daimlib.course.viz: plots return figures that show exactly the data given, checked against numpy."""

import math

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from PIL import Image  # noqa: E402

from daimlib.course import viz  # noqa: E402
from daimlib.course.stats import powered_summary  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _bar_heights(ax):
    return np.array([p.get_height() for p in ax.patches if isinstance(p, matplotlib.patches.Rectangle)])


def test_pairwise_cosines_match_naive_double_loop():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 3))
    naive = []
    for b in range(2):
        for i in range(5):
            for j in range(i + 1, 5):
                u, v = x[b, i], x[b, j]
                naive.append(u @ v / (math.sqrt(u @ u) * math.sqrt(v @ v)))
    np.testing.assert_allclose(viz.pairwise_cosines(torch.tensor(x)), naive, rtol=1e-12)
    assert viz.pairwise_cosines(x[0]).shape == (10,)


def test_pairwise_cosines_of_identical_tokens_are_one():
    x = np.tile([[1.0, 2.0, -1.0]], (4, 1))
    np.testing.assert_allclose(viz.pairwise_cosines(x), np.ones(6))


def test_gaussian_pdf_integrates_to_one_and_peaks_at_mean():
    grid = np.linspace(-10, 14, 20001)
    d = viz.gaussian_pdf(grid, 2.0, 1.5)
    assert abs(np.trapezoid(d, grid) - 1.0) < 1e-6
    assert abs(grid[d.argmax()] - 2.0) < 1e-2
    assert abs(d.max() - 1 / (1.5 * math.sqrt(2 * math.pi))) < 1e-6


def test_pca_projection_recovers_dominant_direction_and_variance():
    rng = np.random.default_rng(1)
    direction = np.array([3.0, 4.0, 0.0, 0.0]) / 5.0
    t = rng.normal(size=200) * 10
    x = t[:, None] * direction + rng.normal(size=(200, 4)) * 0.01
    xy, used = viz.project_2d(x, method="pca")
    assert used == "pca" and xy.shape == (200, 2)
    # first coordinate is the (centred) position along the dominant direction, up to sign
    c = np.corrcoef(xy[:, 0], t)[0, 1]
    assert abs(c) > 0.9999
    # variance of the projection equals the top eigenvalue of the covariance
    top_eig = np.linalg.eigvalsh(np.cov(x.T, bias=True))[-1]
    assert abs(xy[:, 0].var() - top_eig) / top_eig < 1e-9


def test_umap_request_falls_back_to_pca_for_tiny_inputs():
    x = np.random.default_rng(0).normal(size=(8, 5))
    xy, used = viz.project_2d(x, method="umap")
    assert used == "pca" and xy.shape == (8, 2)


def test_project_2d_rejects_bad_method_and_shape():
    with pytest.raises(ValueError, match="umap' or 'pca"):
        viz.project_2d(np.zeros((4, 3)), method="tsne")
    with pytest.raises(ValueError, match=r"\[N, D\]"):
        viz.project_2d(np.zeros((2, 4, 3)), method="pca")


def test_score_distributions_draw_histograms_gaussians_and_boundary():
    rng = np.random.default_rng(0)
    pos, neg = rng.normal(1.5, 0.3, 300), rng.normal(0.2, 0.1, 900)
    fig = viz.plot_score_distributions(pos, neg, boundary=0.7, margin=0.2, bins=30)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    heights = _bar_heights(ax)
    assert heights.size == 60  # two histograms of 30 bins
    lo, hi = min(pos.min(), neg.min()), max(pos.max(), neg.max())
    pad = 0.05 * (hi - lo)
    edges = np.linspace(lo - pad, hi + pad, 31)
    np.testing.assert_allclose(heights[:30], np.histogram(pos, edges, density=True)[0], rtol=1e-9)
    np.testing.assert_allclose(heights[30:], np.histogram(neg, edges, density=True)[0], rtol=1e-9)
    # fitted Gaussian curves use the sample mean and the unbiased std
    curves = [ln for ln in ax.lines if len(ln.get_xdata()) == 400]
    assert len(curves) == 2
    gx, gy = curves[0].get_xdata(), curves[0].get_ydata()
    np.testing.assert_allclose(gy, viz.gaussian_pdf(gx, pos.mean(), pos.std(ddof=1)), rtol=1e-12)
    vlines = sorted(ln.get_xdata()[0] for ln in ax.lines if len(ln.get_xdata()) == 2)
    assert vlines == pytest.approx([0.2, 0.7])


def test_score_distributions_need_two_samples_each():
    with pytest.raises(ValueError, match="at least 2"):
        viz.plot_score_distributions([1.0], [0.1, 0.2])


def _history(n=50):
    rng = np.random.default_rng(0)
    active = (np.arange(n) % 3 == 0).astype(int)
    return pd.DataFrame(
        {
            "step": np.arange(n),
            "margin": 0.2 + 0.001 * np.arange(n),
            "lam": np.where(active == 1, 0.3, np.nan),
            "mu_pos": 1.5 + rng.normal(0, 0.05, n),
            "sigma_pos": np.full(n, 0.3),
            "mu_neg": np.full(n, 0.19),
            "sigma_neg": np.full(n, 0.01),
            "active": active,
            "n_correct": np.arange(n) % 40,
        }
    )


def test_margin_evolution_plots_margin_lambda_trigger_and_running_rate():
    h = _history()
    fig = viz.plot_margin_evolution(h, trigger=25)
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # three panels + twin axis for the rate
    a0, a1, a2, a2r = fig.axes
    np.testing.assert_allclose(a0.lines[0].get_ydata(), h["margin"])
    lam_points = a0.collections[0].get_offsets()
    assert len(lam_points) == int(h["active"].sum())  # only the steps where the MOM acted
    np.testing.assert_allclose(np.asarray(lam_points)[:, 1], 0.3)
    trig = [ln for ln in a2.lines if np.allclose(ln.get_ydata(), 25)]
    assert trig, "trigger line missing"
    rate = a2r.lines[0].get_ydata()
    np.testing.assert_allclose(rate, np.cumsum(h["active"]) / np.arange(1, len(h) + 1))
    np.testing.assert_allclose(a1.lines[0].get_ydata(), h["mu_pos"])
    assert a2.get_ylim()[0] == 0  # counts are read against zero


def test_margin_evolution_scales_the_count_panel_to_the_batch_size():
    h = _history().assign(n_rows=64)
    a2 = viz.plot_margin_evolution(h).axes[2]
    assert a2.get_ylim() == pytest.approx((0, 64 * viz.HEADROOM))


def test_margin_evolution_accepts_aliases_and_needs_a_margin_column():
    h = _history().rename(columns={"lam": "lambda", "active": "activated"})
    fig = viz.plot_margin_evolution(h, smooth=5)
    assert len(fig.axes[0].collections[0].get_offsets()) == int(h["activated"].sum())
    with pytest.raises(ValueError, match="margin"):
        viz.plot_margin_evolution(h.drop(columns=["margin"]))


def test_margin_evolution_draws_into_given_axes():
    fig, axes = plt.subplots(1, 3)
    out = viz.plot_margin_evolution(_history(), ax=axes)
    assert out is fig
    with pytest.raises(ValueError, match="needs 3 axes"):
        viz.plot_margin_evolution(_history(), ax=axes[:2])


def test_cosine_histograms_count_every_pair_per_setting():
    rng = np.random.default_rng(0)
    before = rng.normal(size=(12, 6))
    after = {"s=0.1": before * 1.1, "s=0.5": before - before.mean(0)}
    fig = viz.plot_cosine_histograms(before, after, bins=20)
    ax = fig.axes[0]
    step_patches = [p for p in ax.patches if not p.get_fill()]
    assert len(step_patches) == 3
    assert [t.get_text().split(" (")[0] for t in ax.get_legend().get_texts()] == ["before", "s=0.1", "s=0.5"]
    mean_before = viz.pairwise_cosines(before).mean()
    assert f"{mean_before:.3f}" in ax.get_legend().get_texts()[0].get_text()


def test_embedding_projection_colours_each_label_and_checks_lengths():
    rng = np.random.default_rng(0)
    feats = np.concatenate([rng.normal(0, 1, (10, 8)), rng.normal(5, 1, (10, 8))])
    labels = ["image"] * 10 + ["caption"] * 10
    fig = viz.plot_embedding_projection(feats, labels, method="pca", pairs=[(i, i + 10) for i in range(10)])
    ax = fig.axes[0]
    assert [len(c.get_offsets()) for c in ax.collections] == [10, 10]
    assert len(ax.lines) == 10
    assert ax.get_title().endswith("PCA")
    with pytest.raises(ValueError, match="one label per row"):
        viz.plot_embedding_projection(feats, labels[:5], method="pca")


def test_attention_to_pixels_gives_each_token_its_own_block():
    attn = np.arange(6, dtype=float)  # grid 2 x 3, row-major
    px = viz.attention_to_pixels(attn, (2, 3), (4, 6))
    expected = np.kron(attn.reshape(2, 3), np.ones((2, 2)))
    np.testing.assert_array_equal(px, expected)
    with pytest.raises(ValueError, match="6 weights"):
        viz.attention_to_pixels(attn, (4, 4), (8, 8))


def test_attention_on_image_one_panel_per_word():
    img = Image.new("RGB", (32, 32), (200, 10, 10))
    attn = torch.softmax(torch.randn(3, 16), dim=-1)
    fig = viz.plot_attention_on_image(img, attn, (4, 4), words=["a", "red", "circle"], ncols=2)
    titled = [a for a in fig.axes if a.get_title()]
    assert [a.get_title() for a in titled] == ["a", "red", "circle"]
    heat = titled[1].images[1].get_array()
    np.testing.assert_allclose(heat, viz.attention_to_pixels(attn[1], (4, 4), (32, 32)), rtol=1e-6)
    with pytest.raises(ValueError, match="2 words"):
        viz.plot_attention_on_image(img, attn, (4, 4), words=["a", "b"])


def test_attention_on_image_draws_one_row_into_a_given_axes():
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    fig, axes = plt.subplots(1, 2)
    out = viz.plot_attention_on_image(img, np.arange(4.0), (2, 2), words=["low"], ax=axes[1])
    assert out is fig and axes[1].get_title() == "low" and not axes[0].images
    np.testing.assert_array_equal(
        axes[1].images[1].get_array(), np.kron(np.arange(4.0).reshape(2, 2), np.ones((8, 8)))
    )
    with pytest.raises(ValueError, match="one row"):
        viz.plot_attention_on_image(img, np.ones((2, 4)), (2, 2), ax=axes[0])


def test_retrieval_grid_t2i_shows_images_in_score_order_and_frames_hits():
    imgs = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(6)]
    caps = [f"caption {j}" for j in range(4)]
    scores = np.random.default_rng(0).normal(size=(6, 4))
    gt = np.array([0, 1, 2, 3])
    fig = viz.plot_retrieval_grid(imgs, caps, scores, queries=[2], k=3, gt=gt)
    axes = fig.axes
    order = np.argsort(-scores[:, 2])[:3]
    assert [a.get_title() for a in axes] == [f"#{r + 1}  {scores[i, 2]:.3f}" for r, i in enumerate(order)]
    for a, i in zip(axes, order):
        assert a.images[0].get_array()[0, 0, 0] == i * 20
        assert (a.spines["left"].get_linewidth() == 4) == (i == 2)


def test_retrieval_grid_i2t_lists_top_captions_and_ticks_ground_truth():
    imgs = [np.zeros((4, 4, 3), dtype=np.uint8)] * 2
    caps = ["a", "b", "c", "d"]
    scores = np.array([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.8]])
    fig = viz.plot_retrieval_grid(imgs, caps, scores, queries=[0], k=2, gt=[0, 0, 1, 1], direction="i2t")
    text = fig.axes[1].texts[0].get_text().splitlines()
    assert text == ["[x] #1 0.900  b", "[ ] #2 0.500  c"]
    with pytest.raises(ValueError, match="2 images x 4 captions"):
        viz.plot_retrieval_grid(imgs[:1], caps, scores)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_show_image_grid_accepts_pil_arrays_and_tensors():
    items = [Image.new("RGB", (10, 10)), np.zeros((10, 10, 3)), torch.rand(3, 10, 10)]
    fig = viz.show_image_grid(items, titles=["x", "y", "z"], ncols=2)
    shown = [a for a in fig.axes if a.images]
    assert len(shown) == 3 and shown[2].images[0].get_array().shape == (10, 10, 3)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_training_curves_one_line_per_run_and_clear_error_for_unknown_column():
    h1 = pd.DataFrame({"step": range(5), "loss": [5, 4, 3, 2, 1], "margin": [0.2] * 5})
    h2 = pd.DataFrame({"step": range(5), "loss": [6, 5, 4, 3, 2]})
    fig = viz.plot_training_curves({"DAIM": h1, "HAT": h2}, columns=("loss", "margin"))
    loss_ax, margin_ax = fig.axes
    assert len(loss_ax.lines) == 2 and len(margin_ax.lines) == 1
    np.testing.assert_allclose(loss_ax.lines[1].get_ydata(), h2["loss"])
    smooth = viz.plot_training_curves({"DAIM": h1}, columns=("loss",), smooth=2)
    np.testing.assert_allclose(smooth.axes[0].lines[0].get_ydata(), [5, 4.5, 3.5, 2.5, 1.5])
    with pytest.raises(ValueError, match="available columns"):
        viz.plot_training_curves({"DAIM": h1}, columns=("rsum",))


def test_save_figure_writes_small_png_and_returns_repo_relative_path(tmp_path):
    fig = viz.plot_score_distributions([1.0, 1.2, 1.1], [0.1, 0.3, 0.2])
    path = viz.save_figure(fig, "scores", root=tmp_path)
    assert path == "figures/scores.png"
    data = (tmp_path / path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) < 200_000
    with pytest.raises(ValueError, match="plain file stem"):
        viz.save_figure(fig, "../escape", root=tmp_path)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_save_figure_pdf_beside_the_png_and_reproducible(tmp_path):
    fig = viz.plot_score_distributions([1.0, 1.2, 1.1], [0.1, 0.3, 0.2])
    path = viz.save_figure(fig, "scores", root=tmp_path, pdf=True)
    pdf = (tmp_path / path).with_suffix(".pdf")
    first = pdf.read_bytes()
    assert first[:5] == b"%PDF-" and b"CreationDate" not in first
    viz.save_figure(fig, "scores", root=tmp_path, pdf=True)
    assert pdf.read_bytes() == first  # a re-run rewrites the same bytes
    assert not (tmp_path / "figures" / "other.pdf").exists()
    viz.save_figure(fig, "other", root=tmp_path)
    assert not (tmp_path / "figures" / "other.pdf").exists()  # PDF only when asked


def test_user_data_figures_go_to_the_run_folder_never_the_tracked_figures(monkeypatch, tmp_path):
    from daimlib.paths import figures_dir, repo_root

    monkeypatch.delenv("DAIM_OUTPUT_DIR", raising=False)
    root = repo_root()
    assert figures_dir() == figures_dir("demo") == figures_dir("data/demo") == root / "figures"
    assert figures_dir(tmp_path / "my_f30k") == root / "runs" / "my_f30k" / "figures"
    assert figures_dir("data/f30k") == root / "runs" / "f30k" / "figures"
    assert figures_dir("demo", smoke=True) == root / "runs" / "smoke" / "figures"
    assert figures_dir(tmp_path / "my_f30k", smoke=True) == root / "runs" / "smoke" / "my_f30k" / "figures"


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_daim_output_dir_redirects_every_figure(monkeypatch, tmp_path):
    from daimlib.course import nb

    out = tmp_path / "out"
    monkeypatch.setenv("DAIM_OUTPUT_DIR", str(out))
    fig = viz.plot_score_distributions([1.0, 1.2, 1.1], [0.1, 0.3, 0.2])
    shown = viz.save_figure(fig, "scores", pdf=True)
    assert (out / "figures" / "scores.png").is_file() and (out / "figures" / "scores.pdf").is_file()
    assert str(tmp_path) not in shown and shown.endswith("figures/scores.png")
    viz.save_figure(fig, "scores", data=tmp_path / "flickr")
    assert (out / "runs" / "flickr" / "figures" / "scores.png").is_file()
    assert nb.figure_path("scores", "demo") == out / "figures" / "scores.png"
    assert nb.figure_path("x", tmp_path / "flickr") == out / "runs" / "flickr" / "figures" / "x.png"
    env = nb.setup(verbose=False)
    assert env.figures == out / "figures" and env.runs == out / "runs" and env.output == out
    assert (
        nb.output_dir("demo") == out / "runs"
        and nb.output_dir(tmp_path / "f", smoke=True) == out / "runs" / "smoke" / "f"
    )
    viz.save_figure(fig, "s", smoke=True)
    assert (out / "runs" / "smoke" / "figures" / "s.png").is_file() and not (
        out / "figures" / "s.png"
    ).exists()
    with pytest.raises(ValueError, match="plain file stem"):
        nb.figure_path("../x", "demo")


# --- feature separation and ablation plots ---------------------------------------------------------


def test_positive_and_hardest_negative_match_a_naive_loop_both_ways():
    rng = np.random.default_rng(0)
    img_of_caption = np.repeat(np.arange(4), 3)  # 4 images x 3 captions
    sims = rng.normal(size=(4, 12))
    pos, hard = viz.positive_and_hardest_negative(sims, img_of_caption, "t2i")
    for j in range(12):
        g = img_of_caption[j]
        assert pos[j] == sims[g, j]
        assert hard[j] == max(sims[i, j] for i in range(4) if i != g)
    pos, hard = viz.positive_and_hardest_negative(sims, img_of_caption, "i2t")
    for i in range(4):
        assert pos[i] == max(sims[i, j] for j in range(12) if img_of_caption[j] == i)
        assert hard[i] == max(sims[i, j] for j in range(12) if img_of_caption[j] != i)
    with pytest.raises(ValueError, match="direction"):
        viz.positive_and_hardest_negative(sims, img_of_caption, "both")


def test_separation_auc_equals_the_pairwise_win_rate_with_half_ties():
    rng = np.random.default_rng(1)
    pos = np.round(rng.normal(1.0, 1.0, 40), 1)  # rounded: plenty of ties
    neg = np.round(rng.normal(0.0, 1.0, 55), 1)
    naive = np.mean([[1.0 if p > n else 0.5 if p == n else 0.0 for n in neg] for p in pos])
    assert viz.separation_auc(pos, neg) == pytest.approx(naive, abs=1e-12)
    assert viz.separation_auc([2, 3], [0, 1]) == 1.0
    assert viz.separation_auc([0, 1], [2, 3]) == 0.0
    assert viz.separation_auc([1, 1], [1, 1, 1]) == 0.5


def test_mean_pool_tokens_averages_only_the_valid_tokens_of_each_item():
    x = torch.arange(2 * 4 * 3, dtype=torch.float32).reshape(2, 4, 3)
    pooled = viz.mean_pool_tokens(x, torch.tensor([2, 4]))
    assert np.allclose(pooled[0], x[0, :2].mean(0).numpy()) and np.allclose(pooled[1], x[1].mean(0).numpy())
    assert np.allclose(viz.mean_pool_tokens(x), x.mean(1).numpy())
    with pytest.raises(ValueError, match="valid tokens"):
        viz.mean_pool_tokens(x, [0, 3])


# --- figures that show what they claim (issue 10): labels, palettes, legends, honest axes, ground truth ---


def _data_axes(fig):
    """The axes that plot data (not colour bars, not image panels)."""
    return [a for a in fig.axes if not a.images and a.get_label() != "<colorbar>"]


def _figures_of_every_plot():
    rng = np.random.default_rng(0)
    return {
        "margin_evolution": viz.plot_margin_evolution(_history().assign(n_rows=64), trigger=25),
        "score_distributions": viz.plot_score_distributions(
            rng.normal(1.5, 0.3, 50), rng.normal(0.2, 0.1, 50), 0.7, 0.2
        ),
        "cosine_histograms": viz.plot_cosine_histograms(rng.normal(size=(8, 4)), rng.normal(size=(8, 4))),
        "embedding_projection": viz.plot_embedding_projection(
            rng.normal(size=(20, 5)), ["a"] * 10 + ["b"] * 10, method="pca"
        ),
        "training_curves": viz.plot_training_curves(
            {"DAIM": pd.DataFrame({"step": range(5), "loss": [5.0, 4, 3, 2, 1]})}, columns=("loss",)
        ),
    }


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("name", list(_figures_of_every_plot()))
def test_every_data_axis_is_labelled_and_step_axes_name_their_unit(name):
    fig = _figures_of_every_plot()[name]
    for a in _data_axes(fig):
        xlabels = [
            b.get_xlabel().strip() for b in a.get_shared_x_axes().get_siblings(a)
        ]  # a twin shares its x label
        assert any(xlabels) and a.get_ylabel().strip(), (name, a.get_title())
        if "step" in a.get_xlabel():
            assert "(" in a.get_xlabel(), a.get_xlabel()  # "training step (batches)", not a bare "step"


def _points_in_display(ax):
    """Every drawn data point of ``ax`` in display coordinates: line vertices, scatter offsets, bar tops."""
    pts = [
        np.column_stack([ln.get_xdata(), ln.get_ydata()]).astype(float)
        for ln in ax.lines
        if len(ln.get_xdata()) > 2
    ]
    pts += [np.asarray(c.get_offsets(), dtype=float) for c in ax.collections if len(c.get_offsets())]
    for p in ax.patches:  # bars: a grid of points over the whole bar; histogram outlines: their vertices
        if isinstance(p, matplotlib.patches.Rectangle) and p.get_height() > 0:
            gx, gy = np.meshgrid(np.linspace(0, 1, 5), np.linspace(0, 1, 20))
            pts.append(
                np.column_stack(
                    [p.get_x() + gx.ravel() * p.get_width(), p.get_y() + gy.ravel() * p.get_height()]
                )
            )
        elif isinstance(p, matplotlib.patches.Polygon):
            pts.append(np.asarray(p.get_xy(), dtype=float))
    pts = np.concatenate(pts) if pts else np.zeros((0, 2))
    pts = pts[np.isfinite(pts).all(axis=1)]
    return ax.transData.transform(pts) if len(pts) else pts


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("name", list(_figures_of_every_plot()))
def test_no_legend_covers_a_data_point(name):
    fig = _figures_of_every_plot()[name]
    fig.canvas.draw()
    legends = [a.get_legend() for a in fig.axes if a.get_legend() is not None]
    assert legends, f"{name}: no legend"
    for leg in legends:
        box = leg.get_window_extent()
        for a in _data_axes(fig):
            pts = _points_in_display(a)
            inside = (pts[:, 0] > box.x0) & (pts[:, 0] < box.x1) & (pts[:, 1] > box.y0) & (pts[:, 1] < box.y1)
            assert not inside.any(), f"{name}: the legend covers {int(inside.sum())} data points"
        labelled = [t.get_text() for t in leg.get_texts()]
        assert all(labelled), labelled


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_kit_palette_is_seaborns_colorblind_palette_and_every_curve_uses_it():
    import seaborn as sns
    from matplotlib.colors import to_hex

    assert [c.lower() for c in viz.PALETTE] == sns.color_palette("colorblind").as_hex()
    allowed = {c.lower() for c in viz.PALETTE} | {to_hex(viz.BOUNDARY_COLOR), "#000000"}
    figs = _figures_of_every_plot()
    for name in ("margin_evolution", "score_distributions", "cosine_histograms", "training_curves"):
        for a in figs[name].axes:
            for ln in a.lines:
                if len(ln.get_xdata()) > 2:
                    assert to_hex(ln.get_color()) in allowed, (name, ln.get_label(), ln.get_color())
    for c in figs["embedding_projection"].axes[0].collections:
        assert to_hex(c.get_facecolor()[0], keep_alpha=False) in allowed


def test_margin_evolution_names_n_i_a_statistic_not_a_negative_score():
    fig = viz.plot_margin_evolution(_history())
    labels = [t.get_text() for t in fig.axes[1].get_legend().get_texts()]
    (neg,) = [t for t in labels if "n_i" in t]
    assert "statistic" in neg and "not a score" in neg
    assert not any(t.startswith("negatives") for t in labels)


def test_the_ablation_axis_is_cut_to_the_data_and_says_so():
    """(Its labels and legend: tests/test_viz_ablation.py; one legend under both panels.)"""
    runs = pd.DataFrame(
        {
            "variant": ["baseline"] * 3 + ["daim"] * 3,
            "seed": [0, 1, 2] * 2,
            "rsum": [306, 310, 314, 320, 325, 330.0],
        }
    )
    ax = viz.plot_ablation(runs, powered_summary(runs)).axes[0]
    assert _bar_heights(ax).size == 0  # dots and intervals: no bar lengths on a cut axis
    lo, hi = ax.get_xlim()
    assert 290 < lo < 306 and hi > 330  # zoomed to the runs, all of them inside
    assert "axis cut to the data" in ax.get_xlabel()


def _grid_case():
    imgs = [np.full((8, 8, 3), i * 20, dtype=np.uint8) for i in range(6)]
    caps = [f"caption {j}" for j in range(4)]
    scores = np.random.default_rng(3).normal(size=(6, 4))
    return imgs, caps, scores


def test_retrieval_grid_marks_the_true_image_with_a_frame_colour_and_a_text():
    imgs, caps, scores = _grid_case()
    q = 1
    order = np.argsort(-scores[:, q])
    gt = np.zeros(4, dtype=int)
    gt[q] = order[1]  # the true image is ranked 2nd
    fig = viz.plot_retrieval_grid(imgs, caps, scores, queries=[q], k=3, gt=gt)
    panels = [a for a in fig.axes if a.images]
    marked = [a for a in panels if "true image" in a.get_xlabel()]
    assert marked == [panels[1]]
    from matplotlib.colors import to_hex

    assert to_hex(panels[1].spines["top"].get_edgecolor()) == to_hex(viz.GT_COLOR)
    assert all(
        to_hex(a.spines["top"].get_edgecolor()) != to_hex(viz.GT_COLOR) for a in panels if a is not panels[1]
    )
    assert not [t for a in fig.axes for t in a.texts if "not in the top" in t.get_text()]


def test_retrieval_grid_says_when_the_true_image_is_not_in_the_top_k_and_gives_its_rank():
    imgs, caps, scores = _grid_case()
    q = 2
    order = np.argsort(-scores[:, q])
    gt = np.zeros(4, dtype=int)
    gt[q] = order[4]  # 5th best: outside a top 3
    fig = viz.plot_retrieval_grid(imgs, caps, scores, queries=[q], k=3, gt=gt)
    notes = [t.get_text() for a in fig.axes for t in a.texts if "not in the top 3" in t.get_text()]
    assert len(notes) == 1 and "rank: 5" in notes[0] and "of 6" in notes[0]
    assert not [a for a in fig.axes if "true image" in a.get_xlabel()]


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_retrieval_grid_i2t_notes_a_query_without_a_true_caption_in_the_top_k():
    imgs = [np.zeros((4, 4, 3), dtype=np.uint8)] * 2
    scores = np.array([[0.1, 0.9, 0.5, 0.0], [0.3, 0.2, 0.1, 0.8]])
    fig = viz.plot_retrieval_grid(
        imgs, list("abcd"), scores, queries=[1], k=2, gt=[1, 0, 0, 1], direction="i2t"
    )
    text = fig.axes[1].texts[0].get_text().splitlines()
    # image 1's captions are 0 and 3; its top 2 are caption 3 (a hit): no note
    assert text[0].startswith("[x] #1 0.800") and len(text) == 2
    fig = viz.plot_retrieval_grid(
        imgs, list("abcd"), scores, queries=[0], k=2, gt=[1, 0, 0, 1], direction="i2t"
    )
    text = fig.axes[1].texts[0].get_text().splitlines()
    # image 0's captions are 1 and 2, ranked 1st and 2nd: hits; with gt=[0, 1, 1, 0] they rank 3rd and 4th
    assert all(line.startswith("[x]") for line in text)
    fig = viz.plot_retrieval_grid(
        imgs, list("abcd"), scores, queries=[0], k=2, gt=[0, 1, 1, 0], direction="i2t"
    )
    text = fig.axes[1].texts[0].get_text().splitlines()
    assert text[-1] == "no true caption in the top 2 (best true caption: rank 3 of 4)"


def test_attention_grid_shares_one_colour_scale_with_one_labelled_bar():
    img = Image.new("RGB", (16, 16))
    attn = torch.softmax(torch.randn(3, 4), dim=-1)
    fig = viz.plot_attention_on_image(img, attn, (2, 2), words=["a", "b", "c"])
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(bars) == 1 and bars[0].get_ylabel() == "attention weight"
    heats = [a.images[1] for a in fig.axes if len(a.images) == 2]  # image + heat map in each panel
    assert len(heats) == 3
    assert all(h.get_clim() == pytest.approx((0.0, float(attn.max()))) for h in heats)
    assert bars[0].get_ylim() == pytest.approx((0.0, float(attn.max())))
    fig = viz.plot_attention_on_image(img, attn, (2, 2), vmax=1.0)  # a scale given: used as it is
    assert {a.images[1].get_clim() for a in fig.axes if len(a.images) == 2} == {(0.0, 1.0)}


def _scene():
    """Two demo objects, centres in pixels of a 64 px image (the demo's layout)."""
    return {
        "objects": [
            {"shape": "circle", "colour": "red", "size": "big", "x": 10.5, "y": 12.0, "r": 8.5},
            {"shape": "square", "colour": "green", "size": "small", "x": 50.0, "y": 40.25, "r": 5.0},
        ],
        "background": [50, 50, 50],
    }


def test_scene_words_name_every_object_as_a_caption_does():
    assert viz.scene_words(_scene()) == ["big red circle", "small green square"]
    assert viz.scene_words(_scene(), keys=("colour",)) == ["red", "green"]


@pytest.mark.parametrize("side", [64, 128])
def test_colour_names_are_written_on_the_objects_themselves(side):
    from daimlib.data.demo import COLOURS, render_scene

    scene = _scene()
    img = render_scene(scene, image_size=64).resize((side, side), Image.NEAREST)
    fig, ax = plt.subplots()
    ax.imshow(img)
    texts = viz.label_scene_objects(ax, scene)
    assert [t.get_text() for t in texts] == ["red", "green"]
    pixels = np.asarray(img)
    for t, obj in zip(texts, scene["objects"]):
        x, y = t.get_position()
        scale = side / 64
        assert (x, y) == pytest.approx((obj["x"] * scale - 0.5, obj["y"] * scale - 0.5))
        # the label sits on the object: the pixel under it has the object's colour
        under = pixels[int(round(y)), int(round(x))].astype(int)
        assert np.abs(under - np.array(COLOURS[obj["colour"]])).max() < 30, (obj["colour"], under)
    with pytest.raises(ValueError, match="imshow"):
        viz.label_scene_objects(plt.subplots()[1], scene)


def test_image_grid_labels_the_objects_of_each_image_given_its_scene():
    imgs = [np.zeros((64, 64, 3), dtype=np.uint8)] * 2
    fig = viz.show_image_grid(imgs, titles=["x", "y"], scenes=[_scene(), None])
    shown = [a for a in fig.axes if a.images]
    assert [t.get_text() for t in shown[0].texts] == ["red", "green"] and not shown[1].texts
    with pytest.raises(ValueError, match="1 scenes given for 2 images"):
        viz.show_image_grid(imgs, scenes=[_scene()])


def test_attention_panels_carry_the_colour_names_of_the_scene():
    img = np.zeros((64, 64, 3), dtype=np.uint8)
    fig = viz.plot_attention_on_image(img, np.ones((2, 16)) / 16, (4, 4), words=["a", "b"], scene=_scene())
    panels = [a for a in fig.axes if len(a.images) == 2]
    assert all([t.get_text() for t in a.texts] == ["red", "green"] for a in panels) and len(panels) == 2


def test_score_matrices_share_one_scale_and_ring_each_rows_best():
    rng = np.random.default_rng(0)
    mats = {"low": rng.normal(size=(4, 4)), "sum S": 3 + rng.normal(size=(4, 4))}
    fig = viz.plot_score_matrices(mats, scale_label="SCAN score")
    panels = [a for a in fig.axes if a.images]
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    lo = min(m.min() for m in mats.values())
    hi = max(m.max() for m in mats.values())
    assert [a.get_title() for a in panels] == ["low", "sum S"]
    assert all(a.images[0].get_clim() == pytest.approx((lo, hi)) for a in panels)
    assert len(bars) == 1 and bars[0].get_ylabel() == "SCAN score"
    for a, m in zip(panels, mats.values()):
        rings = a.collections[0].get_offsets()
        np.testing.assert_array_equal(rings[:, 0], m.argmax(axis=1))
        np.testing.assert_array_equal(rings[:, 1], np.arange(4))
        np.testing.assert_array_equal(a.images[0].get_array(), m)


def test_margin_evolution_smoothed_counts_keep_the_raw_per_step_counts_visible():
    h = _history().assign(n_rows=64)
    a2 = viz.plot_margin_evolution(h, trigger=25, smooth=5).axes[2]
    raw = [ln for ln in a2.lines if "per step" in ln.get_label()]
    mean = [ln for ln in a2.lines if "mean of 5 steps" in ln.get_label()]
    assert len(raw) == 1 and len(mean) == 1
    np.testing.assert_array_equal(raw[0].get_ydata(), h["n_correct"].astype(float))
    np.testing.assert_allclose(mean[0].get_ydata(), h["n_correct"].rolling(5, min_periods=1).mean())


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_pdf_switch_writes_a_pdf_beside_every_png(tmp_path, monkeypatch):
    fig, ax = plt.subplots()
    ax.plot([0, 1], [0, 1])
    monkeypatch.delenv(viz.PDF_ENV, raising=False)
    viz.save_figure(fig, "off", folder=tmp_path)
    monkeypatch.setenv(viz.PDF_ENV, "1")
    viz.save_figure(fig, "on", folder=tmp_path)
    viz.save_figure(fig, "asked_off", folder=tmp_path, pdf=False)  # an explicit pdf= wins over the switch
    plt.close(fig)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["asked_off.png", "off.png", "on.pdf", "on.png"]
    assert (tmp_path / "on.pdf").read_bytes().startswith(b"%PDF")


def test_without_umap_learn_the_projection_is_pca_and_says_so(monkeypatch, capsys):
    import sys

    monkeypatch.setitem(sys.modules, "umap", None)  # as if umap-learn were not installed
    x = np.random.default_rng(0).normal(size=(20, 5))
    xy, used = viz.project_2d(x, method="umap")
    assert used == "pca" and "PCA instead" in capsys.readouterr().out
    assert np.allclose(xy, viz.project_2d(x, method="pca")[0])


# --- notebook 03: token cosines per level; notebook 05: the collapse, on one colour scale ---------


def _level_sets():
    rng = np.random.default_rng(1)
    off = [rng.normal(size=(4, 9, 6)) + 2.0, rng.normal(size=(4, 4, 6))]
    on = [rng.normal(size=(4, 9, 6)) + 1.0, rng.normal(size=(4, 4, 6))]
    base = [rng.normal(size=(4, 9, 6)), rng.normal(size=(4, 4, 6)) - 0.5]
    return {"hooks off": off, "FDM on": on, "baseline": base}


def test_cosine_histograms_by_level_one_panel_per_level_and_pairs_counted_within_each_image():
    sets = _level_sets()
    fig = viz.plot_cosine_histograms_by_level(sets, ["low", "mid"], bins=15)
    assert len(fig.axes) == 2
    for k, ax in enumerate(fig.axes):
        outlines = [p for p in ax.patches if not p.get_fill()]
        assert len(outlines) == 3  # one outline per set
        # each outline's bars add up to the pairs within each image: B * N(N-1)/2 token pairs per set
        n_tok = sets["hooks off"][k].shape[1]
        for outline in outlines:
            xy = outline.get_xy()  # a step outline: (edge, 0), (edge, h0), (edge, h0), (edge, h1), ...
            heights = xy[1 : 2 * 15 : 2, 1]
            assert heights.sum() == 4 * n_tok * (n_tok - 1) // 2
        # the title gives every set's mean cosine, in legend order, from an independent loop
        means = []
        for toks in sets.values():
            x = np.asarray(toks[k], dtype=float)
            vals = [
                x[b, i] @ x[b, j] / (np.linalg.norm(x[b, i]) * np.linalg.norm(x[b, j]))
                for b in range(x.shape[0])
                for i in range(x.shape[1])
                for j in range(i + 1, x.shape[1])
            ]
            means.append(f"{np.mean(vals):.3f}")
        assert ax.get_title().endswith("mean cosine " + " / ".join(means))
        # told apart by line style, not colour alone
        assert len({p.get_linestyle() for p in outlines}) == 3


def test_cosine_histograms_by_level_has_one_legend_that_overlaps_no_panel():
    fig = viz.plot_cosine_histograms_by_level(_level_sets(), ["low", "mid"])
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    assert len(fig.legends) == 1 and all(ax.get_legend() is None for ax in fig.axes)
    texts = [t.get_text() for t in fig.legends[0].get_texts()]
    assert texts == ["hooks off (filled, solid)", "FDM on (dashed)", "baseline (dotted)"]
    box = fig.legends[0].get_window_extent(renderer)
    boxes = [ax.get_tightbbox(renderer) for ax in fig.axes]  # each panel with its labels and title
    for b in boxes:
        assert not box.overlaps(b), "the legend overlaps a panel"
        assert b.width > 0.3 * fig.bbox.width  # panels are not squeezed
    assert not boxes[0].overlaps(boxes[1]), "the two panels overlap"


def test_cosine_histograms_by_level_refuses_a_set_with_the_wrong_number_of_levels():
    sets = _level_sets()
    sets["baseline"] = sets["baseline"][:1]
    with pytest.raises(ValueError, match="1 levels of tokens but 2"):
        viz.plot_cosine_histograms_by_level(sets, ["low", "mid"])


def test_collapse_puts_every_score_matrix_on_one_scale_with_one_labelled_colour_bar():
    rng = np.random.default_rng(2)
    flat = 0.6 + 0.01 * rng.normal(size=(8, 8))  # a collapsed model: all scores nearly equal
    spread = torch.tensor(0.4 * rng.normal(size=(8, 8)))
    curves = {
        "hardest": (np.arange(5), np.array([1.4, 1.2, 1.1, 1.05, 1.02])),
        "sum": (np.arange(5), np.linspace(1, 0.6, 5)),
    }
    fig = viz.plot_collapse(curves, {"hardest": flat, "sum": spread})
    panels = [a for a in fig.axes if a.images]
    bars = [a for a in fig.axes if a.get_label() == "<colorbar>"]
    assert len(panels) == 2 and len(bars) == 1
    lo, hi = min(flat.min(), float(spread.min())), max(flat.max(), float(spread.max()))
    for a in panels:
        assert a.images[0].get_clim() == pytest.approx((lo, hi))  # shared vmin / vmax
    np.testing.assert_allclose(panels[0].images[0].get_array(), flat)
    assert "score" in bars[0].get_ylabel() and "same scale" in bars[0].get_ylabel()
    loss_ax = fig.axes[0]
    drawn = [ln for ln in loss_ax.lines if ln.get_label() in curves]
    assert [ln.get_label() for ln in drawn] == ["hardest", "sum"]
    assert drawn[0].get_linestyle() != drawn[1].get_linestyle()
    np.testing.assert_allclose(drawn[1].get_ydata(), np.linspace(1, 0.6, 5))
    assert any(np.allclose(ln.get_ydata(), 1.0) for ln in loss_ax.lines)  # the equal-scores line


def test_collapse_needs_a_matrix():
    with pytest.raises(ValueError, match="no score matrices"):
        viz.plot_collapse({"a": ([0, 1], [1, 1])}, {})
