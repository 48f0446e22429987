"""Shared fixtures: the tiny demo configuration and a fixed seed."""

import pytest
import torch

from daimlib.config import load_preset
from daimlib.data import make_demo_dataset

TINY_DEMO = (24, 5, 5)  # train, val, test images of the tiny demo dataset the training tests share


@pytest.fixture
def tiny_cfg():
    """The ``demo`` preset: 64 px Swin with patch 8 (16/4/1 tokens) + 3-layer BERT of width 128, D = 128."""
    return load_preset("demo")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from a second thread, and when other processes keep the cores busy,
    OpenMP threads waiting on each other make a step ~10x slower (measured: a 6-step run took 45 s
    with 2 threads and 4 s with 1 at load 8 on 2 cores). Use with
    ``pytestmark = pytest.mark.usefixtures("one_torch_thread")``."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="session")
def demo_root(tmp_path_factory):
    """A tiny demo dataset (24/5/5 images), generated once per session and shared by the training tests."""
    root = tmp_path_factory.getbasetemp() / "demo_tiny"
    if not (root / "dataset_demo.json").exists():
        make_demo_dataset(root, seed=0, size=TINY_DEMO, progress=False)
    return root


@pytest.fixture(scope="session")
def default_demo_root(tmp_path_factory):
    """The default demo dataset (what ``make-demo-data`` writes: 500 test images), generated once per session
    (about 15 s) for the tests that need its real sizes. Read-only: copy it before changing anything."""
    root = tmp_path_factory.getbasetemp() / "demo_default" / "demo"
    if not (root / "dataset_demo.json").exists():
        make_demo_dataset(root, seed=0, progress=False)
    return root


@pytest.fixture
def other_demo_data(demo_root, tmp_path):
    """A copy of :func:`demo_root` with one caption changed: the same layout and sizes, other data."""
    import json
    import shutil

    other = tmp_path / "other_data"
    shutil.copytree(demo_root, other)
    data = json.loads((other / "dataset_demo.json").read_text())
    data["images"][0]["sentences"][0]["raw"] = "a different caption"
    (other / "dataset_demo.json").write_text(json.dumps(data))
    return other
