"""daimlib.nb: the notebooks' setup cell, repo-relative paths and config tables."""

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from daimlib import nb
from daimlib.config import load_preset

REPO = Path(__file__).resolve().parents[1]


def test_repo_root_found_from_a_subfolder(monkeypatch):
    monkeypatch.chdir(REPO / "tests")
    assert nb.repo_root() == REPO
    assert (nb.repo_root() / "pyproject.toml").is_file()


def test_repo_root_outside_the_tree_falls_back_to_the_package_location(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    assert nb.repo_root() == Path(nb.__file__).resolve().parents[1]


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


def test_model_for_auto_without_a_run_says_where_it_looked():
    cfg = load_preset("demo")
    cfg.name = "no_such_run_for_tests"
    _, desc = nb.model_for(cfg, checkpoint="auto", verbose=False)
    assert desc.endswith("(no checkpoint at runs/no_such_run_for_tests/best; notebook 05 trains one)")
