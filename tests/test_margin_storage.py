"""Where checkpoints keep the adaptive margin: the loss's state under ``loss.`` in model.safetensors,
and folders of the earlier layout (the margin as the model buffer ``margin_module.margin``) still load."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from daimlib.checkpoint import load_checkpoint, load_loss, load_model, save_checkpoint
from daimlib.config import load_preset
from daimlib.losses import AdaptiveMargin, MatchingLoss
from daimlib.model import DAIM

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model_cfg():
    cfg = load_preset("demo")
    torch.manual_seed(0)
    return DAIM.from_config(cfg).eval(), cfg


def _legacy_folder(path, model, cfg, margin):
    """A checkpoint folder in the layout of the code before the loss module: DAIM's children plus its
    ``margin_module`` buffer in one state dict (what ``save_checkpoint(dir, model, cfg)`` wrote)."""
    old = nn.Module()
    for name, child in model.named_children():
        old.add_module(name, child)
    old.margin_module = AdaptiveMargin(init=margin)
    save_checkpoint(path, old, cfg)
    return path


def test_new_layout_stores_the_margin_under_the_loss_prefix(tmp_path, model_cfg):
    model, cfg = model_cfg
    loss = MatchingLoss.from_config(cfg.loss)
    loss.margin.fill_(0.3717)
    save_checkpoint(tmp_path / "ck", model, cfg, loss=loss)
    keys = set(load_file(str(tmp_path / "ck" / "model.safetensors")))
    assert keys == set(model.state_dict()) | {"loss.margin_module.margin"}
    fresh = MatchingLoss.from_config(cfg.loss)
    loaded, _, _ = load_checkpoint(tmp_path / "ck", loss=fresh)
    assert float(fresh.margin) == pytest.approx(0.3717)
    assert float(load_loss(tmp_path / "ck").margin) == pytest.approx(0.3717)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), loaded.state_dict().values()))


def test_folder_of_the_old_layout_loads_model_and_margin(tmp_path, model_cfg):
    model, cfg = model_cfg
    folder = _legacy_folder(tmp_path / "old", model, cfg, margin=0.4242)
    keys = set(load_file(str(folder / "model.safetensors")))
    assert "margin_module.margin" in keys and not any(
        k.startswith("loss.") for k in keys
    )  # really the old layout
    loaded = load_model(folder)  # strict: the legacy key is the loss's, not an unexpected model key
    sd = model.state_dict()
    assert loaded.state_dict().keys() == sd.keys()
    assert all(torch.equal(loaded.state_dict()[k], sd[k]) for k in sd)
    x = torch.randn(2, 3, cfg.image.img_size, cfg.image.img_size)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model.encode_image(x), loaded.encode_image(x)))
    assert float(load_loss(folder).margin) == pytest.approx(0.4242)
    loss = MatchingLoss.from_config(cfg.loss)
    load_checkpoint(folder, loss=loss)
    assert float(loss.margin) == pytest.approx(0.4242)


def test_folder_without_a_margin_loads_the_model_and_warns_for_the_loss(tmp_path, model_cfg):
    model, cfg = model_cfg
    save_checkpoint(tmp_path / "nomargin", model, cfg)
    loss = MatchingLoss.from_config(cfg.loss)
    with pytest.warns(UserWarning, match="holds no margin"):
        load_checkpoint(tmp_path / "nomargin", loss=loss)
    assert float(loss.margin) == pytest.approx(cfg.loss.margin)
