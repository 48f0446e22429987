"""``dead_weight_rows`` and ``save_checkpoint(trim=...)``: the rows the demo export leaves out can
never change an output, and a trimmed checkpoint loads as the full model with zeros there."""

import json

import pytest
import torch

from daimlib.checkpoint import WEIGHTS, CheckpointError, load_model, save_checkpoint
from daimlib.config import load_preset
from daimlib.losses import MatchingLoss
from daimlib.model import DAIM, dead_weight_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DAIM.from_config(load_preset("demo")).eval()


def _batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(4, 3, 64, 64, generator=g)
    ids = torch.randint(5, 500, (4, 12), generator=g)
    ids[:, 0], ids[:, -1] = 2, 3
    return images, ids, torch.ones_like(ids)


def _scores(m, batch):
    images, ids, mask = batch
    with torch.no_grad():
        return m({"images": images, "input_ids": ids, "attention_mask": mask}).scores


def test_the_demo_swin_has_one_single_token_window_and_only_its_query_key_rows_are_dead(model):
    # 64 px, patch 8: stage grids 8x8, 4x4, 2x2, 1x1; only the last stage's window holds one token.
    # Its width is embed 32 x 2^3 = 256, so qkv has 3 x 256 rows: query 0-255, key 256-511, value 512-767
    dead = dead_weight_rows(model)
    assert dead == {
        "image_encoder.backbone.layers.3.blocks.0.attn.qkv.weight": (512, 768),
        "image_encoder.backbone.layers.3.blocks.0.attn.qkv.bias": (512, 768),
    }
    # at 224 px (the paper's Swin) no window holds a single token: nothing is dead
    assert (
        dead_weight_rows(
            DAIM.from_config(
                load_preset("demo", **{"image.img_size": 224, "data.img_size": 224, "data.resize": 224})
            )
        )
        == {}
    )


def test_any_values_in_the_dead_rows_give_the_same_outputs_and_no_gradient_reaches_them(model):
    batch = _batch()
    before = _scores(model, batch)
    other = DAIM.from_config(model.cfg).eval()
    other.load_state_dict(model.state_dict())
    state = other.state_dict()
    for key, (start, _) in dead_weight_rows(other).items():
        state[key][:start] = 100 * torch.randn_like(state[key][:start])  # in place: the module's tensors
    assert torch.equal(_scores(other, batch), before)
    # and training never moves them: their gradient is exactly zero
    other.train()
    images, ids, mask = batch
    scores = other({"images": images, "input_ids": ids, "attention_mask": mask}).scores
    MatchingLoss.from_config(other.cfg.loss)(scores, step=0).loss.backward()
    params = dict(other.named_parameters())
    for key, (start, _) in dead_weight_rows(other).items():
        grad = params[key].grad
        assert (
            grad is not None
            and torch.count_nonzero(grad[:start]) == 0
            and torch.count_nonzero(grad[start:]) > 0
        )


def test_a_trimmed_checkpoint_stores_the_kept_rows_and_loads_zeros_elsewhere(model, tmp_path):
    dead = dead_weight_rows(model)
    save_checkpoint(tmp_path / "ck", model, model.cfg, trim=dead)
    meta = json.loads((tmp_path / "ck" / "meta.json").read_text())
    assert meta["trimmed"]["image_encoder.backbone.layers.3.blocks.0.attn.qkv.weight"] == {
        "shape": [768, 256],
        "rows": [512, 768],
    }
    loaded = load_model(tmp_path / "ck").eval()
    full = model.state_dict()
    for key, value in loaded.state_dict().items():
        want = full[key].clone()
        if key in dead:
            want[: dead[key][0]] = 0
        assert torch.equal(value, want), key
    assert torch.equal(_scores(loaded, _batch()), _scores(model, _batch()))
    untrimmed = tmp_path / "full"
    save_checkpoint(untrimmed, model, model.cfg)
    saved = (untrimmed / WEIGHTS).stat().st_size - (tmp_path / "ck" / WEIGHTS).stat().st_size
    assert saved == 512 * 256 * 4 + 512 * 4  # the query and key rows of weight and bias, float32


def test_trimming_refuses_bad_rows_and_a_damaged_record_is_an_error(model, tmp_path):
    with pytest.raises(ValueError, match="cannot trim"):
        save_checkpoint(tmp_path / "bad", model, model.cfg, trim={"no.such.key": (0, 1)})
    key = "image_encoder.backbone.layers.3.blocks.0.attn.qkv.weight"
    with pytest.raises(ValueError, match="cannot trim"):
        save_checkpoint(tmp_path / "bad", model, model.cfg, trim={key: (512, 4096)})
    save_checkpoint(tmp_path / "ck", model, model.cfg, trim=dead_weight_rows(model))
    meta_path = tmp_path / "ck" / "meta.json"
    meta = json.loads(meta_path.read_text())
    meta["trimmed"][key]["rows"] = [0, 768]  # says more rows than the file holds
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="trimmed record"):
        load_model(tmp_path / "ck")
