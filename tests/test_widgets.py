"""daimlib.course.widgets, the classroom search of notebook 12 (issue 11 item 2): the scores and rankings
against the model's own full similarity matrix, the drawn attention against SCAN's score, the model
list against run folders made here, and the ipywidgets app reacting to a typed caption."""

from __future__ import annotations

import hashlib
import json

import matplotlib
import numpy as np
import pytest
import torch

from daimlib.checkpoint import save_checkpoint
from daimlib.config import load_preset
from daimlib.course import widgets as W
from daimlib.data import load_split, make_demo_dataset
from daimlib.model import DAIM
from daimlib.similarity import scan_t2i

matplotlib.use("Agg")
pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_IMAGES = 12


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("widgets_demo")
    make_demo_dataset(root, seed=0, size="small", progress=False)
    return root, load_split(root, "test", load_preset("demo"))


@pytest.fixture(scope="module")
def index(demo):
    root, split = demo
    (choice,) = W.available_models(root / "no-runs", root)
    return W.build_index(choice, split, root, n_images=N_IMAGES)


def _full_matrix(index):
    with torch.no_grad():
        return index.model.similarity(index.img_levels, index.txt_levels, index.txt_lens)  # [n_img, n_cap]


def test_attention_rows_are_distributions_and_reproduce_scan_t2i():
    g = torch.Generator().manual_seed(1)
    v, t = torch.randn(16, 8, generator=g), torch.randn(5, 8, generator=g)  # [R, D], [L, D]
    alpha = W.scan_t2i_attention(v, t, lambda_softmax=9.0)  # [L, R]
    assert alpha.shape == (5, 16)
    assert torch.allclose(alpha.sum(1), torch.ones(5), atol=1e-6) and (alpha >= 0).all()
    attended = alpha @ v  # [L, D]: a_w
    by_hand = torch.nn.functional.cosine_similarity(t, attended, dim=1, eps=1e-8).mean()
    assert torch.allclose(by_hand, scan_t2i(v[None], t[None], torch.tensor([5]), 9.0)[0, 0], atol=1e-5)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_index_holds_the_subset_and_all_its_captions(index, demo):
    _, split = demo
    assert index.n_images == N_IMAGES and not index.trained
    assert index.captions == [c for i in range(N_IMAGES) for c in split.captions_of(i)]
    assert np.array_equal(index.img_of_caption, np.repeat(np.arange(N_IMAGES), 5))
    assert index.img_levels[0].shape[0] == N_IMAGES and index.txt_levels[0].shape[0] == len(index.captions)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_text_to_image_ranks_by_the_models_scores_for_that_caption(index):
    j = 7  # a caption of the index, typed as a query: its column of the full matrix
    column = _full_matrix(index)[:, j].numpy()
    table = W.text_to_image(index, index.captions[j], k=4)
    assert list(table["image"]) == list(np.argsort(-column, kind="stable")[:4])
    assert np.allclose(table["score"], np.sort(column)[::-1][:4], atol=1e-5)


def test_image_to_text_ranks_all_captions_and_marks_its_own(index):
    row = _full_matrix(index)[3].numpy()
    table = W.image_to_text(index, 3, k=6)
    expected = np.argsort(-row, kind="stable")[:6]
    assert list(table["caption"]) == [index.captions[j] for j in expected]
    assert np.allclose(table["score"], row[expected], atol=1e-6)
    assert list(table["own"]) == [bool(index.img_of_caption[j] == 3) for j in expected]
    with pytest.raises(ValueError, match=r"0\.\.11"):
        W.image_to_text(index, N_IMAGES)


def test_word_attention_names_the_query_words_on_the_levels_grid(index):
    words, attn, grid = W.word_attention(index, "a big red circle", image=2, level=0)
    assert words == ["a", "big", "red", "circle"]
    assert grid == (4, 4) and attn.shape == (4, 16)  # demo preset: 16 low-level tokens
    assert np.allclose(attn.sum(1), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="level must be in 0..2"):
        W.word_attention(index, "a circle", image=0, level=3)


def test_the_figures_have_one_row_per_result(index):
    fig = W.plot_text_query(index, "a big red circle", k=2)
    titled = [a.get_title() for a in fig.axes if a.get_title()]
    assert sum(t.startswith("#") for t in titled) == 2 and {"big", "red", "circle"} <= set(titled)
    assert "NOT a trained model" in fig._suptitle.get_text()
    fig = W.plot_image_query(index, 0, k=5)
    assert len(fig.axes[1].patches) >= 5  # the seaborn bars


def test_attention_panels_share_one_colour_scale(index):
    fig = W.plot_text_query(index, "a big red circle", k=3)
    heats = [im for a in fig.axes for im in a.get_images() if im.get_cmap().name == "inferno"]
    assert len(heats) >= 6  # 3 images x at least 2 words
    largest = max(float(np.max(im.get_array())) for im in heats)
    (clim,) = {im.get_clim() for im in heats}  # one scale ...
    assert clim == (0.0, pytest.approx(largest))  # ... from 0 to the largest weight shown
    assert sum(a.get_label() == "<colorbar>" for a in fig.axes) == 1


def test_image_query_zooms_the_score_axis_and_wraps_captions_at_words(index):
    table = W.image_to_text(index, 2, k=5)
    fig = W.plot_image_query(index, 2, k=5, wrap=20)
    ax = fig.axes[1]
    lo, hi = ax.get_xlim()
    assert lo > 0 or table["score"].min() <= 0  # not from zero when all scores are positive
    assert lo < table["score"].min() and hi > table["score"].max()
    labels = [t.get_text() for t in ax.get_yticklabels()]
    for rank, (label, caption) in enumerate(zip(labels, table["caption"]), start=1):
        assert label.replace("\n", " ") == f"#{rank} {caption}"  # whole caption, broken only at spaces
        assert all(len(line) <= 20 or " " not in line for line in label.split("\n"))
    texts = [t.get_text().strip() for t in ax.texts]
    assert texts == [f"{v:.4f}" for v in table["score"]]  # every score printed on its bar


def _fake_run(run, cfg, data_root=None):
    model = DAIM.from_config(cfg)
    save_checkpoint(run / "best", model, cfg, meta={"step": 12})
    cfg.to_json(run / "config.json")
    if data_root is not None:
        name = "dataset_demo.json"
        digest = hashlib.sha256((data_root / name).read_bytes()).hexdigest()
        (run / "data.json").write_text(json.dumps({"json": name, "json_sha256": digest}))


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_available_models_lists_finished_runs_and_skips_others(tmp_path, demo):
    root, _ = demo
    cfg = load_preset("demo")
    runs = tmp_path / "runs"
    _fake_run(runs / "demo", cfg, data_root=root)
    _fake_run(runs / "ablation" / "daim" / "seed0", cfg)
    _fake_run(runs / "other_data", cfg)
    (runs / "other_data" / "data.json").write_text(
        json.dumps({"json": "dataset_demo.json", "json_sha256": "0" * 64})
    )
    _fake_run(runs / "cli_other_data", cfg)  # train's run.json records the data it was trained on
    (runs / "cli_other_data" / "run.json").write_text(
        json.dumps({"format": "daimlib-run", "data": {"sha256": "1" * 64}})
    )
    _fake_run(runs / "cli_same_data", cfg)
    digest = hashlib.sha256((root / "dataset_demo.json").read_bytes()).hexdigest()
    (runs / "cli_same_data" / "run.json").write_text(
        json.dumps({"format": "daimlib-run", "data": {"sha256": digest}})
    )
    _fake_run(runs / "executed" / "x", cfg)  # run outputs of `make demo`, not a model
    collapsed = runs / "05_collapse_warmup0"  # notebook 05's collapse demo: never validated, only last/
    save_checkpoint(collapsed / "last", DAIM.from_config(cfg), cfg, meta={"step": 40})
    cfg.to_json(collapsed / "config.json")
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "config.json").write_text("{}")
    assert [c.checkpoint.parent.name for c in W.available_models(runs, root)] == ["cli_same_data", "demo"]
    choices = W.available_models(runs, root, max_depth=3)
    assert [c.checkpoint.parent.name for c in choices] == ["seed0", "cli_same_data", "demo"]
    assert all(c.trained and "12 steps" in c.label for c in choices)
    model, got_cfg = W.load_choice(choices[2])
    assert not model.training and got_cfg.name == "demo"


def _fake_shipped(models, arm, cfg, sha):
    save_checkpoint(models / arm / "best", DAIM.from_config(cfg), cfg, meta={"step": 3})
    cfg.to_json(models / arm / "best" / "config.json")
    (models / arm / "metrics.json").write_text(json.dumps({"arm": arm, "steps": 3, "data": {"sha256": sha}}))


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_available_models_offers_the_shipped_models_first(tmp_path, demo):
    root, _ = demo
    cfg = load_preset("demo")
    digest = hashlib.sha256((root / "dataset_demo.json").read_bytes()).hexdigest()
    models = tmp_path / "models"
    for arm in ("demo_hat", "demo", "demo_baseline"):
        _fake_shipped(models, arm, cfg, digest)
    _fake_shipped(models, "other_data", cfg, "2" * 64)  # trained on other data: not offered
    (models / "README.md").write_text("not a model")
    _fake_run(tmp_path / "runs" / "mine", cfg, data_root=root)
    choices = W.available_models(tmp_path / "runs", root, models_root=models)
    assert [c.checkpoint.parent.name for c in choices] == ["demo", "demo_baseline", "demo_hat", "mine"]
    assert all(c.trained for c in choices) and "shipped" in choices[0].label
    assert "shipped" not in choices[-1].label
    # shipped models alone are enough: no random-weight fallback
    only = W.available_models(tmp_path / "no-runs", root, models_root=models)
    assert len(only) == 3 and all(c.trained for c in only)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_the_repositorys_shipped_models_are_offered_on_the_demo_data():
    from daimlib.course import demo_models

    data_root = demo_models.repo_root() / "data" / "demo"
    if not (data_root / "dataset_demo.json").is_file() or not demo_models.is_shipped("demo"):
        pytest.skip("needs data/demo and the shipped models/")
    choices = W.available_models(data_root / "no-runs-here", data_root)
    shipped = [c for c in choices if "shipped" in c.label]
    assert [c.checkpoint.parent.name for c in shipped] == ["demo", "demo_baseline", "demo_hat"]
    assert all(c.checkpoint.parent.parent.name == "models" for c in shipped)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_compare_puts_two_models_side_by_side(demo, tmp_path):
    root, split = demo
    cfg = load_preset("demo")
    _fake_run(tmp_path / "runs" / "a", cfg, data_root=root)
    random_choice = W.available_models(tmp_path / "none", root)[0]
    trained = W.available_models(tmp_path / "runs", root)[0]
    a = W.build_index(trained, split, root, n_images=N_IMAGES)
    b = W.build_index(random_choice, split, root, n_images=N_IMAGES)
    table = W.compare_text_to_image([a, b], "a small blue square", k=3)
    for idx, name in zip((a, b), table.columns.get_level_values(0).unique()):
        expected = W.text_to_image(idx, "a small blue square", k=3)
        assert list(table[name]["image"]) == list(expected["image"])
    fig = W.plot_compare_query([a, b], "a small blue square")
    heats = [im for ax in fig.axes for im in ax.get_images() if im.get_cmap().name == "inferno"]
    assert len({im.get_clim() for im in heats}) == 1


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_no_run_means_one_labelled_random_model_that_is_always_the_same(tmp_path, demo):
    root, _ = demo
    (choice,) = W.available_models(tmp_path / "empty", root)
    assert not choice.trained and "random weights" in choice.label and "NOT a trained model" in choice.label
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    a, _ = W.load_choice(choice)
    assert torch.equal(torch.rand(3), expected), "loading the random model moved the global RNG"
    torch.manual_seed(6)
    b, _ = W.load_choice(choice)
    sa, sb = a.state_dict(), b.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_app_answers_a_typed_caption_and_a_picked_image(demo, capsys):
    pytest.importorskip("ipywidgets")
    root, split = demo
    app = W.SearchApp(W.available_models(root / "no-runs", root), split, root, n_images=N_IMAGES)
    app.show()
    first = app.results.value
    assert "a big red circle" in first and first.count("<li>") == 3
    app.query_box.value = "a small blue square"
    assert app.results.value != first and "a small blue square" in app.results.value
    app.k_slider.value = 5
    assert app.results.value.count("<li>") == 5
    before = app.captions_html.value
    app.image_picker.value = 4
    assert app.captions_html.value != before and "image 4" in app.captions_html.value
    assert "random weights" in app.status.value


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_static_output_prints_both_directions(demo, capsys):
    root, split = demo
    app = W.SearchApp(W.available_models(root / "no-runs", root), split, root, n_images=N_IMAGES)
    app.static("a big red circle", image=1)
    out = capsys.readouterr().out
    assert "caption -> images: 'a big red circle'" in out and "image 1 -> captions" in out
    assert "random weights" in out


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_without_ipywidgets_the_app_cell_says_so_and_shows_the_static_view(demo, capsys, monkeypatch):
    """Notebook 12's app cell where ipywidgets is missing (a kernel without the notebook extra): it
    used to raise ImportError, stopping "Run All" before the notebook's check."""
    root, split = demo
    monkeypatch.setattr(W, "ipywidgets", None)
    app = W.SearchApp(W.available_models(root / "no-runs", root), split, root, n_images=N_IMAGES)
    assert app.show() is None
    out = capsys.readouterr().out
    assert "needs ipywidgets" in out and "caption -> images: 'a big red circle'" in out
    assert "image 0 -> captions" in out
