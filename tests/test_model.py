"""DAIM model: the paper-size preset's shapes, one full-size training step, and the forward contract."""

import pytest
import torch

from daimlib.config import load_preset
from daimlib.losses import MatchingLoss, triplet_loss
from daimlib.model import DAIM, MatchOutput
from daimlib.similarity import scan_t2i


def _batch(B, L=12, vocab=512, img=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(4, L + 1, (B,), generator=g)
    return dict(
        images=torch.randn(B, 3, img, img, generator=g),
        input_ids=torch.randint(0, vocab, (B, L), generator=g),
        attention_mask=(torch.arange(L)[None] < lens[:, None]).long(),
    )


@pytest.mark.slow  # builds Swin-B + BERT-base: ~30 s idle, ~80 s on a loaded 2-core machine
def test_daim_f30k_random_init_levels_and_one_training_step():
    cfg = load_preset("daim_f30k")
    model = DAIM.from_config(cfg).train()
    batch = _batch(2, L=10, vocab=30522, img=224)
    img_levels = model.encode_image(batch["images"])
    assert [tuple(x.shape) for x in img_levels] == [(2, 784, 768), (2, 196, 768), (2, 49, 768)]
    assert model.image_encoder.out_dims == [256, 512, 1024]
    model.text_encoder.eval()  # compare without dropout
    with torch.no_grad():
        levels, lengths = model.text_encoder(batch["input_ids"], batch["attention_mask"])
        own = model.text_encoder.bert(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], output_hidden_states=True
        ).hidden_states
    assert len(own) == 13 and model.text_encoder.bert.config.num_hidden_layers == 12
    for lvl, k in zip(levels, (4, 10, 12)):
        torch.testing.assert_close(lvl, own[k])
    assert lengths.tolist() == batch["attention_mask"].sum(1).tolist()
    model.train()
    loss = MatchingLoss.from_config(cfg.loss)(model(batch).scores, step=0).loss
    loss.backward()
    assert torch.isfinite(loss)
    assert model.img_proj[0].weight.grad is not None and model.txt_proj[2].weight.grad is not None
    assert model.image_encoder.backbone.patch_embed.proj.weight.grad is not None


def test_projection_init_is_normal_0_02_with_zero_bias(tiny_cfg):
    model = DAIM.from_config(tiny_cfg)
    w = torch.cat([p.weight.flatten() for p in [*model.img_proj, *model.txt_proj]])
    assert abs(w.std().item() - 0.02) < 0.002 and abs(w.mean().item()) < 0.002
    assert all(torch.all(p.bias == 0) for p in [*model.img_proj, *model.txt_proj])


def test_forward_scores_are_the_summed_t2i_scan_of_the_encoded_levels(tiny_cfg):
    model = DAIM.from_config(tiny_cfg).eval()
    batch = _batch(5)
    with torch.no_grad():
        out = model(batch)
        iv = model.encode_image(batch["images"])
        tv, lens = model.encode_text(batch["input_ids"], batch["attention_mask"])
    want = sum(scan_t2i(v, t, lens, 9.0) for v, t in zip(iv, tv))
    assert isinstance(out, MatchOutput) and out.img_index is None
    torch.testing.assert_close(out.scores, want, atol=1e-5, rtol=0)
    assert out.scores.dtype == torch.float32


def test_model_holds_no_margin_and_its_scores_carry_the_gradient_to_the_loss(tiny_cfg):
    model = DAIM.from_config(tiny_cfg).train()
    assert not any("margin" in k for k in model.state_dict())  # the margin is the loss's state
    batch = _batch(4)
    batch["img_index"] = torch.tensor([0, 1, 0, 2])
    out = model(batch)
    assert torch.equal(out.img_index, batch["img_index"])
    loss = MatchingLoss.from_config(tiny_cfg.loss)(out.scores, step=0, img_index=out.img_index)
    loss.loss.backward()
    assert model.img_proj[0].weight.grad is not None and model.txt_proj[-1].weight.grad is not None


def test_model_then_loss_equals_the_triplet_loss_of_the_scores(tiny_cfg):
    model = DAIM.from_config(tiny_cfg).eval()
    loss_fn = MatchingLoss.from_config(tiny_cfg.loss).eval()
    with torch.no_grad():
        out = model(_batch(5))
        lo = loss_fn(out.scores)
    assert lo.loss.item() == pytest.approx(triplet_loss(out.scores, 0.2, hardest=True).item(), abs=1e-4)
    assert lo.margin == pytest.approx(0.2) and lo.hardest


def test_two_level_model_encodes_two_levels_and_scores_their_weighted_sum(tiny_cfg):
    cfg = tiny_cfg.replace(
        **{"image.stages": (1, 2), "text.hidden_states": (2, 3), "similarity.level_weights": (1.0, 0.5)}
    )
    model = DAIM.from_config(cfg).eval()
    assert len(model.img_proj) == len(model.txt_proj) == 2
    batch = _batch(3)
    with torch.no_grad():
        iv = model.encode_image(batch["images"])
        tv, lens = model.encode_text(batch["input_ids"], batch["attention_mask"])
        s = model(batch).scores
    assert len(iv) == len(tv) == 2
    want = scan_t2i(iv[0], tv[0], lens, 9.0) + 0.5 * scan_t2i(iv[1], tv[1], lens, 9.0)
    torch.testing.assert_close(s, want, atol=1e-5, rtol=0)


def test_freezing_backbones_keeps_heads_trainable_and_modes_untouched(tiny_cfg):
    model = DAIM.from_config(tiny_cfg).train()
    model.set_backbones_trainable(False)
    assert not any(p.requires_grad for p in model.backbone_parameters())
    assert all(p.requires_grad for p in model.head_parameters())
    assert model.image_encoder.training and model.text_encoder.bert.training
    n_all = sum(p.numel() for p in model.parameters())
    n_split = sum(p.numel() for p in model.backbone_parameters()) + sum(
        p.numel() for p in model.head_parameters()
    )
    assert n_all == n_split
    model.set_backbones_trainable(True)
    assert all(p.requires_grad for p in model.parameters())


def test_similarity_is_fp32_under_autocast(tiny_cfg):
    model = DAIM.from_config(tiny_cfg).eval()
    batch = _batch(3)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        iv = model.encode_image(batch["images"])
        tv, lens = model.encode_text(batch["input_ids"], batch["attention_mask"])
        s = model.similarity(iv, tv, lens)
    assert s.dtype == torch.float32
    want = sum(scan_t2i(v.float(), t.float(), lens) for v, t in zip(iv, tv))
    torch.testing.assert_close(s, want, atol=1e-5, rtol=0)


def test_mismatched_level_counts_raise(tiny_cfg):
    with pytest.raises(
        ValueError, match="image.stages has 3.*level_weights 2"
    ):  # refused when the config is built
        DAIM.from_config(tiny_cfg.replace(**{"similarity.level_weights": [1.0, 1.0]}))
    model = DAIM.from_config(tiny_cfg)
    b = _batch(3)
    b["images"] = b["images"][:2]
    with pytest.raises(ValueError, match="2 images but 3 captions"):
        model(b)
