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


def test_index_holds_the_subset_and_all_its_captions(index, demo):
    _, split = demo
    assert index.n_images == N_IMAGES and not index.trained
    assert index.captions == [c for i in range(N_IMAGES) for c in split.captions_of(i)]
    assert np.array_equal(index.img_of_caption, np.repeat(np.arange(N_IMAGES), 5))
    assert index.img_levels[0].shape[0] == N_IMAGES and index.txt_levels[0].shape[0] == len(index.captions)


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


def _fake_run(run, cfg, data_root=None):
    model = DAIM.from_config(cfg)
    save_checkpoint(run / "best", model, cfg, meta={"step": 12})
    cfg.to_json(run / "config.json")
    if data_root is not None:
        name = "dataset_demo.json"
        digest = hashlib.sha256((data_root / name).read_bytes()).hexdigest()
        (run / "data.json").write_text(json.dumps({"json": name, "json_sha256": digest}))


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
    (runs / "unfinished").mkdir()
    (runs / "unfinished" / "config.json").write_text("{}")
    assert [c.checkpoint.parent.name for c in W.available_models(runs, root)] == ["cli_same_data", "demo"]
    choices = W.available_models(runs, root, max_depth=3)
    assert [c.checkpoint.parent.name for c in choices] == ["seed0", "cli_same_data", "demo"]
    assert all(c.trained and "12 steps" in c.label for c in choices)
    model, got_cfg = W.load_choice(choices[2])
    assert not model.training and got_cfg.name == "demo"


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


def test_static_output_prints_both_directions(demo, capsys):
    root, split = demo
    app = W.SearchApp(W.available_models(root / "no-runs", root), split, root, n_images=N_IMAGES)
    app.static("a big red circle", image=1)
    out = capsys.readouterr().out
    assert "caption -> images: 'a big red circle'" in out and "image 1 -> captions" in out
    assert "random weights" in out
