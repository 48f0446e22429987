"""The dual-encoder baseline (daimlib.dual): cosine scores of global embeddings against a naive double
loop, the symmetric InfoNCE against a hand-worked 2 x 2 example and a naive loop, gradients, the config
switches (defaults unchanged, demo_dual = demo_baseline + two switches) and a short training run."""

from __future__ import annotations

import math

import pytest
import torch

from daimlib.config import DAIMConfig, load_preset
from daimlib.dual import cosine_similarity, info_nce, pool_text
from daimlib.losses import MatchingLoss, triplet_loss
from daimlib.model import DAIM
from daimlib.similarity import multilevel_similarity


def _levels(n_img=3, n_cap=4, R=(5, 3, 1), L=6, D=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    img = [torch.randn(n_img, r, D, generator=g, dtype=torch.float64) for r in R]
    txt = [torch.randn(n_cap, L, D, generator=g, dtype=torch.float64) for _ in R]
    lens = torch.randint(1, L + 1, (n_cap,), generator=g)
    lens[0] = L  # one full-length caption
    return img, txt, lens


def _naive_cosine(img, txt, lens, weights):
    """Per pair and level: mean of the regions, mean of the caption's real words, their cosine;
    the pair's score is the weighted mean of the levels' cosines."""
    n_img, n_cap = img[0].shape[0], txt[0].shape[0]
    out = torch.zeros(n_img, n_cap, dtype=torch.float64)
    total = sum(weights)
    for i in range(n_img):
        for j in range(n_cap):
            s = 0.0
            for w, v, t in zip(weights, img, txt):
                a = sum(v[i, r] for r in range(v.shape[1])) / v.shape[1]
                b = sum(t[j, k] for k in range(int(lens[j]))) / int(lens[j])
                s += w / total * float(a @ b) / (math.sqrt(float(a @ a)) * math.sqrt(float(b @ b)))
            out[i, j] = s
    return out


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0), (0.5, 2.0, 0.0)])
def test_cosine_matrix_equals_a_naive_double_loop(weights):
    img, txt, lens = _levels()
    got = cosine_similarity(img, txt, lens, weights)
    want = _naive_cosine(img, txt, lens, weights)
    assert got.shape == (3, 4)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=0)
    assert float(got.abs().max()) <= 1 + 1e-6


def test_padding_never_enters_the_caption_embedding():
    img, txt, lens = _levels()
    changed = [t.clone() for t in txt]
    for t in changed:
        for j, n in enumerate(lens.tolist()):
            t[j, n:] = 1e3  # garbage in the padded positions
    torch.testing.assert_close(cosine_similarity(img, changed, lens), cosine_similarity(img, txt, lens))
    # and the pooled caption is the mean of its first lens[j] tokens
    torch.testing.assert_close(pool_text(txt[0], lens)[1].double(), txt[0][1, : int(lens[1])].mean(0))


def test_cosine_scores_are_invariant_to_scaling_a_token_set():
    img, txt, lens = _levels()
    scaled = [3.0 * v for v in img]  # a global embedding is normalised: its length never counts
    torch.testing.assert_close(cosine_similarity(scaled, txt, lens), cosine_similarity(img, txt, lens))


def test_info_nce_of_a_hand_worked_2x2_example():
    # S = [[0.5, 0.1], [0.3, 0.2]], temperature 0.1 -> logits [[5, 1], [3, 2]]
    # rows (image -> caption): -log e^5/(e^5+e^1) = log(1+e^-4);  -log e^2/(e^3+e^2) = log(1+e^1)
    # columns (caption -> image): -log e^5/(e^5+e^3) = log(1+e^-2);  -log e^2/(e^1+e^2) = log(1+e^-1)
    rows = (math.log(1 + math.exp(-4)) + math.log(1 + math.exp(1))) / 2
    cols = (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1))) / 2
    S = torch.tensor([[0.5, 0.1], [0.3, 0.2]])
    assert float(info_nce(S, 0.1)) == pytest.approx(0.5 * (rows + cols), rel=1e-6)
    assert float(info_nce(S, 0.1, reduction="sum")) == pytest.approx(rows + cols, rel=1e-6)


def _naive_info_nce(S, tau, keep):
    B = len(S)
    total = 0.0
    for i in range(B):
        den_row = sum(math.exp(S[i][j] / tau) for j in range(B) if keep[i][j])
        den_col = sum(math.exp(S[j][i] / tau) for j in range(B) if keep[j][i])
        total += -math.log(math.exp(S[i][i] / tau) / den_row) - math.log(math.exp(S[i][i] / tau) / den_col)
    return total / (2 * B)


@pytest.mark.parametrize("tau", [0.05, 0.5, 2.0])
def test_info_nce_equals_a_naive_loop(tau):
    g = torch.Generator().manual_seed(1)
    S = torch.rand(6, 6, generator=g, dtype=torch.float64) * 2 - 1
    keep = [[True] * 6 for _ in range(6)]
    assert float(info_nce(S, tau)) == pytest.approx(_naive_info_nce(S.tolist(), tau, keep), rel=1e-9)
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = mask[3, 3] = True  # pairs 0 and 1 share an image; the diagonal stays
    keep = [[not bool(mask[i, j]) or i == j for j in range(6)] for i in range(6)]
    assert float(info_nce(S, tau, neg_mask=mask)) == pytest.approx(
        _naive_info_nce(S.tolist(), tau, keep), rel=1e-9
    )


def test_info_nce_is_symmetric_in_images_and_captions_and_refuses_bad_input():
    S = torch.randn(5, 5)
    torch.testing.assert_close(info_nce(S, 0.07), info_nce(S.T, 0.07))
    with pytest.raises(ValueError, match="square"):
        info_nce(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="temperature"):
        info_nce(S, 0.0)


def test_gradients_flow_through_the_cosine_and_the_loss():
    img, txt, lens = _levels(n_img=4, n_cap=4)
    img = [v.requires_grad_() for v in img]
    txt = [t.requires_grad_() for t in txt]
    info_nce(cosine_similarity(img, txt, lens), 0.1).backward()
    for x in [*img, *txt]:
        assert x.grad is not None and torch.isfinite(x.grad).all() and float(x.grad.abs().sum()) > 0
    for t in txt:  # padded positions get no gradient
        for j, n in enumerate(lens.tolist()):
            assert float(t.grad[j, n:].abs().sum()) == 0


def _dual_cfg(**over):
    return load_preset("demo_dual", **over)


def test_demo_dual_is_demo_baseline_with_two_switches_and_round_trips():
    base, dual = load_preset("demo_baseline"), load_preset("demo_dual")
    assert base.diff(dual) == {
        "name": ("demo_baseline", "demo_dual"),
        "similarity.kind": ("scan", "cosine"),
        "loss.kind": ("triplet", "infonce"),
    }
    assert DAIMConfig.from_json(dual.to_json()) == dual
    assert DAIMConfig.from_json(load_preset("demo").to_json()).similarity.kind == "scan"
    # a config written before the switches existed reads as SCAN + triplet
    old = base.to_dict()
    del old["similarity"]["kind"], old["loss"]["kind"], old["loss"]["temperature"]
    assert DAIMConfig.from_dict(old) == base
    from daimlib.config_rules import ConfigError

    with pytest.raises(ConfigError, match="similarity.kind"):
        load_preset("demo", **{"similarity.kind": "dot"})
    with pytest.raises(ConfigError, match="loss.temperature"):
        load_preset("demo", **{"loss.temperature": 0.0})


def _batch(B=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, 500, (B, 12), generator=g)
    mask = torch.ones(B, 12, dtype=torch.long)
    mask[1, 7:] = 0
    return {"images": torch.randn(B, 3, 64, 64, generator=g), "input_ids": ids, "attention_mask": mask}


def test_the_model_switches_between_scan_and_cosine_on_the_same_weights():
    torch.manual_seed(0)
    scan_model = DAIM.from_config(load_preset("demo_baseline")).eval()
    dual_model = DAIM.from_config(_dual_cfg()).eval()
    dual_model.load_state_dict(scan_model.state_dict())  # the same parameters: only the score differs
    b = _batch()
    with torch.no_grad():
        img = scan_model.encode_image(b["images"])
        txt, lens = scan_model.encode_text(b["input_ids"], b["attention_mask"])
        torch.testing.assert_close(
            scan_model(b).scores, multilevel_similarity(img, txt, lens, weights=(1.0, 1.0, 1.0))
        )
        torch.testing.assert_close(dual_model(b).scores, cosine_similarity(img, txt, lens))


def test_matching_loss_switches_between_triplet_and_infonce():
    S = torch.randn(6, 6)
    default = MatchingLoss.from_config(load_preset("demo_baseline").loss).eval()
    assert default.kind == "triplet"
    torch.testing.assert_close(default(S, step=10**6).loss, triplet_loss(S, 0.2, hardest=True))
    dual = MatchingLoss.from_config(_dual_cfg(**{"loss.temperature": 0.2}).loss).train()
    out = dual(S, step=0)
    torch.testing.assert_close(out.loss, info_nce(S, 0.2, reduction="sum"))  # the demo's reduction: sum
    assert out.hardest is False and "mu_pos" in out.stats  # the MOM statistics are still logged


def test_a_dual_model_trains_end_to_end_with_gradients_in_every_part():
    torch.manual_seed(0)
    model = DAIM.from_config(_dual_cfg()).train()
    loss_fn = MatchingLoss.from_config(_dual_cfg().loss).train()
    loss_fn(model(_batch()).scores, step=0).loss.backward()
    for part in (model.img_proj, model.txt_proj, model.image_encoder, model.text_encoder):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and sum(float(g.abs().sum()) for g in grads) > 0


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.usefixtures("one_torch_thread")
def test_train_runs_the_dual_switches_and_evaluates(demo_root, tmp_path):
    from daimlib.train import train

    cfg = _dual_cfg(
        **{
            "train.batch_size": 8,
            "train.epochs": 1,
            "data.train_split": "val",
            "data.val_split": "test",
            "train.eval_batch_size": 64,
        }
    )
    res = train(cfg, demo_root, tmp_path / "run", progress=False, eval_split="test")
    assert res.global_step == 25 // 8 and res.stopped == "completed"
    assert res.steps["loss"].map(math.isfinite).all()
    assert not res.steps["hardest"].any()
    # an untrained-for-long model, but a real evaluation through the cosine path: recalls in [0, 100]
    r = res.best_metrics
    assert 0 <= r["rsum"] <= 600 and {"i2t_r1", "t2i_r1"} <= set(r)
    assert DAIMConfig.from_json(res.out_dir / "config.json") == cfg


def test_info_nce_from_swaps_the_loss_only_inside_its_block():
    from daimlib.dual import info_nce_from

    S = torch.randn(5, 5)
    loss_fn = MatchingLoss.from_config(_dual_cfg().loss).train()  # reduction "sum"
    calls = []

    def doubled(scores, temperature):
        calls.append(temperature)
        return 2 * info_nce(scores, temperature)

    with info_nce_from(doubled):
        inside = loss_fn(S, step=0).loss
    outside = loss_fn(S, step=0).loss
    torch.testing.assert_close(inside, 2 * 5 * info_nce(S, 0.05))  # the mean times B for "sum"
    torch.testing.assert_close(outside, info_nce(S, 0.05, reduction="sum"))
    assert calls == [0.05]
    masked = MatchingLoss.from_config(_dual_cfg(**{"loss.mask_same_image": True}).loss)
    with info_nce_from(doubled), pytest.raises(ValueError, match="neg_mask"):
        masked(S, img_index=torch.arange(5))
