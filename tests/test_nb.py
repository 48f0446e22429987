"""daimlib.course.nb: the notebooks' setup cell, repo-relative paths and config tables."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from daimlib.config import load_preset
from daimlib.course import nb

REPO = Path(__file__).resolve().parents[1]


def test_repo_root_found_from_a_subfolder(monkeypatch):
    monkeypatch.chdir(REPO / "tests")
    assert nb.repo_root() == REPO
    assert (nb.repo_root() / "pyproject.toml").is_file()


def test_repo_root_outside_the_tree_falls_back_to_the_package_location(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert nb.repo_root() == Path(nb.__file__).resolve().parents[2]


def test_rel_gives_posix_paths_relative_to_the_root_and_hides_outside_paths(monkeypatch, tmp_path):
    monkeypatch.chdir(REPO / "tests")
    assert nb.rel(REPO / "data" / "demo") == "data/demo"
    assert nb.rel("../figures/x.png") == "figures/x.png"  # relative to the working directory
    assert nb.rel(REPO) == "."
    outside = nb.rel(tmp_path / "a" / "b.txt")
    assert outside == "<outside>/a/b.txt" and str(tmp_path) not in outside


def test_setup_seeds_every_generator_reproducibly(capsys):
    draws = []
    for _ in range(2):
        nb.setup(seed=123, verbose=False)
        draws.append((random.random(), np.random.rand(), torch.rand(3).tolist()))
    assert draws[0] == draws[1]
    nb.setup(seed=124, verbose=False)
    assert torch.rand(3).tolist() != draws[0][2]


def test_setup_prints_only_repo_relative_paths_and_returns_the_layout(capsys, monkeypatch):
    monkeypatch.chdir(REPO / "tests")
    env = nb.setup(seed=0)
    out = capsys.readouterr().out
    assert str(REPO) not in out and "data: data" in out and f"device: {env.device}" in out
    assert env.root == REPO and env.data == REPO / "data" and env.figures == REPO / "figures"
    assert env.device == nb.resolve_device("auto")


def test_setup_says_where_outputs_go_when_daim_output_dir_moves_them(capsys, monkeypatch):
    """A JupyterLab session reuses `make demo`'s runs only under its DAIM_OUTPUT_DIR: the setup line says
    which output folder this kernel uses (and nothing when it is the repository itself)."""
    monkeypatch.delenv("DAIM_OUTPUT_DIR", raising=False)
    nb.setup(seed=0)
    assert "outputs:" not in capsys.readouterr().out
    monkeypatch.setenv("DAIM_OUTPUT_DIR", "runs/executed")
    env = nb.setup(seed=0)
    out = capsys.readouterr().out
    assert out.rstrip().endswith("| outputs: runs/executed") and str(REPO) not in out
    assert env.runs == REPO / "runs" / "executed" / "runs"


def test_setup_sets_the_small_figure_defaults():
    import matplotlib.pyplot as plt

    plt.rcParams["figure.dpi"] = 300
    nb.setup(verbose=False)
    assert plt.rcParams["figure.dpi"] == 100 and plt.rcParams["savefig.dpi"] == 100


def test_resolve_device_auto_picks_an_available_device_and_rejects_unknown_names():
    dev = nb.resolve_device("auto")
    if torch.cuda.is_available():
        assert dev == "cuda"
    else:
        assert dev in ("cpu", "mps")
    assert nb.resolve_device("cpu") == "cpu"
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        nb.resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_resolve_device_explicit_cuda_without_gpu_says_what_to_do():
    with pytest.raises(RuntimeError, match="no CUDA GPU; use 'auto' or 'cpu'"):
        nb.resolve_device("cuda")


def test_data_root_for_a_missing_folder_names_it_relative_and_suggests_demo():
    with pytest.raises(FileNotFoundError, match=r"data/no_such_dataset does not exist; use DATA='demo'"):
        nb.data_root("data/no_such_dataset")


def test_data_root_accepts_an_existing_folder(tmp_path):
    assert nb.data_root(str(tmp_path)) == tmp_path


def test_config_table_lists_the_selected_dotted_keys_with_their_values():
    cfg = load_preset("demo")
    t = nb.config_table(cfg, ["loss.margin", "image"])
    assert t.loc["loss.margin", "value"] == str(cfg.loss.margin)
    assert t.loc["image.img_size", "value"] == "64"
    assert all(k == "loss.margin" or k.startswith("image.") for k in t.index)
    assert len(nb.config_table(cfg)) > len(t)


def test_setup_makes_warnings_print_without_file_paths(capsys):
    import warnings

    nb.setup(verbose=False)
    text = warnings.formatwarning("careful", UserWarning, str(REPO / "daimlib" / "x.py"), 3)
    assert text == "UserWarning: careful\n" and str(REPO) not in text


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_ensure_demo_data_generates_once_then_reuses_and_regenerates_for_another_seed(tmp_path, capsys):
    import json

    folder = nb.ensure_demo_data(tmp_path / "demo", size=(10, 5, 5), seed=0)
    first = capsys.readouterr().out
    assert first.startswith("demo data generated: <outside>/") and "(20 images" in first
    data = json.loads((folder / "dataset_demo.json").read_text())
    assert len(data["images"]) == 20 and (folder / "images" / data["images"][0]["filename"]).is_file()
    mtime = (folder / "dataset_demo.json").stat().st_mtime_ns

    nb.ensure_demo_data(folder, size=(10, 5, 5), seed=0)
    assert capsys.readouterr().out.startswith("demo data found:")
    assert (folder / "dataset_demo.json").stat().st_mtime_ns == mtime

    nb.ensure_demo_data(folder, size=(10, 5, 5), seed=1)
    assert capsys.readouterr().out.startswith("demo data generated:")
    assert json.loads((folder / "dataset_demo.json").read_text())["images"] != data["images"]


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_model_for_loads_a_checkpoint_folder_or_builds_random_weights(tmp_path, capsys):
    from daimlib.checkpoint import save_checkpoint
    from daimlib.model import DAIM

    cfg = load_preset("demo")
    torch.manual_seed(0)
    trained = DAIM.from_config(cfg)
    save_checkpoint(tmp_path / "best", trained, cfg)
    loaded, desc = nb.model_for(cfg, checkpoint=tmp_path / "best")
    assert desc.startswith("model: trained weights from <outside>/") and not loaded.training
    for (k, a), (k2, b) in zip(trained.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k

    torch.manual_seed(1)
    fresh, desc = nb.model_for(cfg, checkpoint=None)
    assert desc == "model: demo with random initial weights"
    w = "img_proj.0.weight"
    assert not torch.equal(fresh.state_dict()[w], trained.state_dict()[w])
    with pytest.raises(FileNotFoundError, match="checkpoint folder .* not found"):
        nb.model_for(cfg, checkpoint=tmp_path / "nothing")


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_model_for_auto_without_a_run_says_where_it_looked():
    cfg = load_preset("demo")
    cfg.name = "no_such_run_for_tests"
    _, desc = nb.model_for(cfg, checkpoint="auto", verbose=False)
    assert desc.endswith("(no checkpoint at runs/no_such_run_for_tests/best; notebook 05 trains one)")


# --- load_or_train / load_or_score / search_images (notebooks 05-09) ------------------------------


@pytest.fixture(scope="module")
def tiny_demo(tmp_path_factory):
    """A tiny demo dataset (24/5/5 images); runs train on its val split (25 captions, 3 steps of 8)."""
    from daimlib.data import make_demo_dataset

    root = tmp_path_factory.mktemp("nb_demo")
    make_demo_dataset(root, seed=0, size=(24, 5, 5), progress=False)
    return root


TINY_RUN = {
    "train.batch_size": 8,
    "train.epochs": 1,
    "train.max_steps": 2,
    "data.train_split": "val",
    "data.val_split": "test",
    "loss.warmup_steps": 1,
    "train.eval_batch_size": 64,
}


def _same_state(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def tiny_run(tiny_demo, tmp_path_factory):
    """One real 2-step run trained by load_or_train (nothing there yet)."""
    run = tmp_path_factory.mktemp("nb_runs") / "run"
    model, res = nb.load_or_train("demo", run, tiny_demo, progress=False, verbose=False, **TINY_RUN)
    return run, model, res


class _Retrained(Exception):
    pass


def _forbid_training(monkeypatch):
    import daimlib.train as train_mod

    def fake_train(*a, **k):
        raise _Retrained

    monkeypatch.setattr(train_mod, "train", fake_train)
    monkeypatch.setattr(nb, "train", fake_train)  # nb imports train at the top


@pytest.mark.slow  # trains a model
def test_load_or_train_trains_once_then_reloads_the_same_best_model_and_history(
    tiny_demo, tiny_run, monkeypatch
):
    from pandas.testing import assert_frame_equal

    run, model, res = tiny_run
    assert res.global_step == 2 and res.stopped == "max_steps" and len(res.steps) == 2
    assert (run / "best" / "meta.json").is_file() and (run / "run.json").is_file()
    assert not model.training
    _forbid_training(monkeypatch)
    model2, res2 = nb.load_or_train("demo", run, tiny_demo, progress=False, verbose=False, **TINY_RUN)
    assert _same_state(model, model2)
    assert_frame_equal(res.steps, res2.steps)
    assert res2.best_metrics == pytest.approx(res.best_metrics) and res2.global_step == 2


@pytest.mark.slow  # trains a model
def test_load_or_train_trains_again_when_the_config_or_the_data_changed(
    tiny_demo, tiny_run, tmp_path, monkeypatch, capsys
):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    _forbid_training(monkeypatch)
    nb.load_or_train("demo", run, data, progress=False, verbose=False, **TINY_RUN)  # copied run: reused
    with pytest.raises(_Retrained):
        nb.load_or_train("demo", run, data, progress=False, **{**TINY_RUN, "train.max_steps": 3})
    assert "another config (train.max_steps: 2 -> 3)" in capsys.readouterr().out
    json_path = data / "dataset_demo.json"
    json_path.write_text(json_path.read_text() + "\n")  # same JSON content, other bytes: other data
    with pytest.raises(_Retrained):
        nb.load_or_train("demo", run, data, progress=False, **TINY_RUN)
    assert "trained on other data" in capsys.readouterr().out
    with pytest.raises(_Retrained):
        nb.load_or_train("demo", run, tiny_demo, progress=False, retrain=True, **TINY_RUN)


@pytest.mark.slow  # trains a model
def test_a_run_trained_by_train_itself_is_reused_by_the_notebooks(tiny_demo, tmp_path, monkeypatch, capsys):
    from daimlib.config import load_preset
    from daimlib.train import train

    run = tmp_path / "cli_run"
    trained = train(
        load_preset("demo", **TINY_RUN), tiny_demo, run, progress=False, eval_split="val"
    )  # as the CLI
    _forbid_training(monkeypatch)
    model, res = nb.load_or_train("demo", run, tiny_demo, progress=False, **TINY_RUN)
    assert res.global_step == 2 and "loaded" in capsys.readouterr().out
    # best = the state at the budget stop here: the same weights and the same trained margin come back
    assert _same_state(model, trained.model) and float(res.loss.margin) == float(trained.loss.margin)
    with pytest.raises(_Retrained):  # validated on another split: not this run
        nb.load_or_train("demo", run, tiny_demo, progress=False, eval_split=None, **TINY_RUN)


@pytest.mark.slow  # trains a model (a few steps)
def test_load_or_score_equals_the_evaluation_matrix_and_is_read_back_from_the_cache(
    tiny_demo, tiny_run, monkeypatch
):
    import daimlib.evaluate as ev
    from daimlib.data import load_split, load_tokenizer

    run, model, res = tiny_run
    cfg = res.cfg
    split, tok = load_split(cfg.data, tiny_demo, "test"), load_tokenizer(cfg.text, tiny_demo)
    sims = nb.load_or_score(run, model, split, tok, cfg, "test")
    feats = ev.encode_split(model, split, tok, cfg.data, max_len=cfg.text.max_len, progress=False)
    direct = ev.similarity_matrix(model, feats, progress=False)
    assert sims.shape == (5, 25) and np.allclose(sims, direct, atol=1e-6)
    assert (run / "sims_test.npy").is_file()
    monkeypatch.setattr(nb, "similarity_matrix", lambda *a, **k: pytest.fail("recomputed a cached matrix"))
    assert np.array_equal(nb.load_or_score(run, model, split, tok, cfg, "test"), sims)


@pytest.mark.slow  # trains a model
def test_load_or_score_recomputes_for_other_data_of_the_same_size(tiny_demo, tiny_run, tmp_path, monkeypatch):
    import json
    import shutil

    from daimlib.data import load_split, load_tokenizer

    run, model, res = tiny_run
    cfg = res.cfg
    nb.load_or_score(
        run, model, load_split(cfg.data, tiny_demo, "test"), load_tokenizer(cfg.text, tiny_demo), cfg
    )
    other = tmp_path / "other"
    shutil.copytree(tiny_demo, other)
    js = other / "dataset_demo.json"
    data = json.loads(js.read_text())
    test_recs = [r for r in data["images"] if r["split"] == "test"]
    test_recs[0]["sentences"][0]["raw"] = test_recs[0]["sentences"][0]["raw"] + " today"  # same sizes
    test_recs[0]["sentences"][0]["tokens"] = test_recs[0]["sentences"][0]["tokens"] + ["today"]
    js.write_text(json.dumps(data))
    calls = []
    real = nb.similarity_matrix
    monkeypatch.setattr(nb, "similarity_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    split = load_split(cfg.data, other, "test")
    nb.load_or_score(run, model, split, load_tokenizer(cfg.text, other), cfg)
    assert calls == [1]  # another annotation file: not the cached matrix


@pytest.mark.slow  # trains a model (a few steps)
def test_load_or_score_scores_with_the_runs_own_vocabulary_and_keys_its_cache_by_it(
    tiny_demo, tiny_run, tmp_path, monkeypatch, capsys
):
    """Notebook 06 scored its fresh runs with the shipped models' tokenizer (another vocabulary: the
    captions became other token ids, RSUM at chance), and notebook 14 then read that matrix back from
    the cache, whose key named no tokenizer."""
    import json
    import shutil

    from daimlib.checkpoint import load_checkpoint_tokenizer
    from daimlib.data import load_split, load_tokenizer

    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    for f in run.glob("sims_*"):
        f.unlink()
    model, cfg = tiny_run[1], tiny_run[2].cfg
    split, own = load_split(cfg.data, tiny_demo, "test"), load_tokenizer(cfg.text, tiny_demo)
    shipped = load_checkpoint_tokenizer(REPO / "models" / "demo" / "best")
    assert shipped.get_vocab() != own.get_vocab()
    passed_other = nb.load_or_score(run, model, split, shipped, cfg)
    assert "scored with the tokenizer saved in" in capsys.readouterr().out
    right = nb.load_or_score(run, model, split, own, cfg, recompute=True)
    np.testing.assert_allclose(passed_other, right, atol=1e-6)
    key_file = run / "sims_test.json"
    key = json.loads(key_file.read_text())
    assert key["tokenizer_vocab_sha256"] == nb._vocab_sha256(own)
    key_file.write_text(json.dumps({**key, "tokenizer_vocab_sha256": "another vocabulary"}))
    calls, real = [], nb.similarity_matrix
    monkeypatch.setattr(nb, "similarity_matrix", lambda *a, **k: calls.append(1) or real(*a, **k))
    nb.load_or_score(run, model, split, own, cfg)
    assert calls == [1]  # cached under another vocabulary: scored again


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_search_images_ranks_images_like_the_full_similarity_column(tiny_demo, tiny_cfg):
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import encode_split, similarity_matrix
    from daimlib.model import DAIM

    model = DAIM.from_config(tiny_cfg).eval()
    split, tok = load_split(tiny_cfg.data, tiny_demo, "test"), load_tokenizer(tiny_cfg.text, tiny_demo)
    feats = encode_split(model, split, tok, tiny_cfg.data, max_len=tiny_cfg.text.max_len, progress=False)
    column = similarity_matrix(model, feats, progress=False)[:, 7]  # caption 7 against every image
    idx, scores = nb.search_images(split.captions[7], model, tok, tiny_cfg, feats.img_levels, k=3)
    assert list(idx) == list(np.argsort(-column, kind="stable")[:3])
    assert np.allclose(scores, column[idx], atol=1e-5)
    with pytest.raises(ValueError, match="non-empty caption"):
        nb.search_images("  ", model, tok, tiny_cfg, feats.img_levels)


# --- the notebook sequence's rules (issue 5), checked on the committed notebooks -------------

NOTEBOOKS = sorted((REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


def _cells(path):
    import json

    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def _text(cell) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_has_parameters_setup_figure_exercise_and_summary(path):
    import re

    cells = _cells(path)
    params = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(params) == 1, "exactly one code cell tagged 'parameters' (papermill)"
    for name in ("DATA", "PRESET", "DEVICE"):
        assert f"\n{name} =" in "\n" + _text(params[0]), f"parameters cell lacks {name}"
    code = [_text(c) for c in cells if c["cell_type"] == "code"]
    assert sum("nb.setup(" in src for src in code) == 1, "one setup cell calling nb.setup(...)"
    markdown = [_text(c) for c in cells if c["cell_type"] == "markdown"]
    assert markdown[0].lstrip().startswith("# ")
    # one list of learning objectives, in the title cell or the "At a glance" header right after it
    assert sum("After this notebook you can:" in m for m in markdown[:2]) == 1
    assert not any("Learning goals" in m for m in markdown), (
        "a second objectives list (merged into the header)"
    )
    assert any("<details>" in m for m in markdown), "an exercise with its solution folded in <details>"
    assert any(re.search(r"^## Summary", m, re.M) for m in markdown), "a '## Summary' section"
    figures = [
        o
        for c in cells
        if c["cell_type"] == "code"
        for o in c.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert figures, "at least one figure in the committed outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_small_and_its_outputs_hold_no_machine_paths(path):
    import json
    import re

    assert path.stat().st_size < 2_000_000
    outputs = json.dumps([c.get("outputs", []) for c in _cells(path) if c["cell_type"] == "code"])
    outputs = re.sub(r'"image/png": "[^"]*"', "", outputs)  # base64 images can contain any letters
    assert str(REPO) not in outputs
    assert not re.search(r"(/home/|/Users/|/root/|/tmp/|[A-Z]:\\\\\\\\Users)", outputs), (
        "machine path in outputs"
    )
    errors = [o for c in _cells(path) for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, f"committed with an error output: {errors[:1]}"
