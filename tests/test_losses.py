"""Triplet loss (hand-worked example) and the adaptive margin (MOM, spec section 4)."""

import math

import pytest
import torch

from daimlib.losses import AdaptiveMargin, MatchingLoss, gaussian_boundary, triplet_loss

# rows images, cols captions; diagonal positives
S3 = torch.tensor([[0.9, 0.5, 0.1], [0.8, 0.7, 0.2], [0.3, 0.4, 0.6]])


def test_triplet_loss_hand_worked_3x3_sum_of_hinges():
    # m = 0.2. image rows: [m + S_ij - S_ii]_+
    # row0: 0.2+0.5-0.9=-0.2->0, 0.2+0.1-0.9->0                  = 0
    # row1: 0.2+0.8-0.7=0.3, 0.2+0.2-0.7->0                       = 0.3
    # row2: 0.2+0.3-0.6=-0.1->0, 0.2+0.4-0.6=0.0                 = 0
    # caption cols: [m + S_ij - S_jj]_+
    # col0: 0.2+0.8-0.9=0.1, 0.2+0.3-0.9->0                       = 0.1
    # col1: 0.2+0.5-0.7=0.0, 0.2+0.4-0.7->0                       = 0
    # col2: 0.2+0.1-0.6->0, 0.2+0.2-0.6=-0.2->0                  = 0
    loss = triplet_loss(S3, 0.2, hardest=False)
    assert loss.item() == pytest.approx(0.4, abs=1e-6)
    assert triplet_loss(S3, 0.2, hardest=False, reduction="mean").item() == pytest.approx(0.4 / 3, abs=1e-6)


def test_triplet_loss_hand_worked_3x3_hardest_negative():
    # m = 0.5: rows: row0 max(0.1, 0)=0.1; row1 max(0.6, 0)=0.6; row2 max(0.2, 0.3)=0.3 -> 1.0
    # cols: col0 max(0.4, 0)=0.4; col1 max(0.3, 0.2)=0.3; col2 max(0, 0.1)=0.1 -> 0.8
    loss = triplet_loss(S3, torch.tensor(0.5), hardest=True)
    assert loss.item() == pytest.approx(1.8, abs=1e-6)
    all_neg = triplet_loss(S3, 0.5, hardest=False)
    # sum: rows 0.1+0 + 0.6+0 + 0.2+0.3 = 1.2 ; cols 0.4+0 + 0.3+0.2 + 0+0.1 = 1.0
    assert all_neg.item() == pytest.approx(2.2, abs=1e-6)


def test_hardest_mode_gives_gradient_only_to_hardest_negatives_and_positives():
    S = S3.clone().requires_grad_(True)
    triplet_loss(S, 0.5, hardest=True).backward()
    # hardest per row: (0,1), (1,0), (2,1); per column: (1,0), (0,1), (1,2)
    hard = {(0, 1), (1, 0), (2, 1), (1, 2)}
    for i in range(3):
        for j in range(3):
            if i != j:
                assert (S.grad[i, j] != 0) == ((i, j) in hard), (i, j)
    assert S.grad[(0, 2)] == 0 and S.grad[(2, 0)] == 0
    assert S.grad[(1, 0)] == 2  # hardest for row 1 and for column 0


def test_neg_mask_removes_pairs_from_the_negatives():
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[1, 0] = True  # e.g. caption 0 also describes image 1
    # m=0.2 sum mode: the 0.3 (row1) and 0.1 (col0) terms both come from (1,0)
    assert triplet_loss(S3, 0.2, hardest=False, neg_mask=mask).item() == pytest.approx(0.0, abs=1e-6)


def _normal_pdf(x, mu, sd):
    return math.exp(-0.5 * ((x - mu) / sd) ** 2) / (sd * math.sqrt(2 * math.pi))


@pytest.mark.parametrize(
    "mu_p, sd_p, mu_n, sd_n, alpha",
    [(2.0, 0.3, 0.17, 0.008, 0.3), (0.8, 0.1, 0.3, 0.15, 0.3), (1.5, 0.5, 0.2, 0.05, 0.5)],
)
def test_gaussian_boundary_satisfies_weighted_density_equality(mu_p, sd_p, mu_n, sd_n, alpha):
    lam, e = gaussian_boundary(mu_p, sd_p, mu_n, sd_n, alpha)
    assert e > 0
    lhs = math.log(alpha) + math.log(_normal_pdf(lam, mu_p, sd_p))
    rhs = math.log(_normal_pdf(lam, mu_n, sd_n))
    assert lhs == pytest.approx(rhs, abs=1e-4)


def test_gaussian_boundary_negative_discriminant_gives_nan():
    # equal variances, A = 0: E = B^2 > 0, so use A<0 with C making E negative
    lam, e = gaussian_boundary(0.0, 0.1, 0.0, 1.0, 1e-6)
    assert e <= 0 and math.isnan(lam)


def _scores_with_correct_rows(B, n_correct, pos=1.0, neg=0.2, jitter=0.05, seed=0):
    g = torch.Generator().manual_seed(seed)
    S = neg + jitter * torch.randn(B, B, generator=g)
    S.diagonal().copy_(pos + 0.3 * torch.randn(B, generator=g))
    for i in range(n_correct, B):  # make these rows wrong: an off-diagonal above the positive
        S[i, (i + 1) % B] = S[i, i] + 0.5
    return S


def test_no_update_at_or_below_the_activation_count():
    mom = AdaptiveMargin()  # more than 45 of 58 rows needed
    st = mom.update(_scores_with_correct_rows(58, 45))
    assert st["n_correct"] == 45 and not st["activated"] and st["margin"] == pytest.approx(0.2)
    assert math.isnan(st["lam"]) and st["n_rows"] == 58
    st = mom.update(_scores_with_correct_rows(58, 46))
    assert st["n_correct"] == 46 and st["activated"]


def _expected_update(S, m, alpha=0.3, ema=0.1, neg_stat="reference"):
    B = S.shape[0]
    p, n = [], []
    for i in range(B):
        row = S[i].double()
        if row[i] >= row.max():
            p.append(float(row[i]))
            if neg_stat == "reference":
                n.append(m + float((row - row[i]).mean()) / (B - 1))
            elif neg_stat == "mean_offdiag":
                n.append((float(row.sum()) - float(row[i])) / (B - 1))
            else:
                n.append(max(float(row[j]) for j in range(B) if j != i))
    p, n = torch.tensor(p, dtype=torch.float64), torch.tensor(n, dtype=torch.float64)
    lam, e = gaussian_boundary(float(p.mean()), float(p.std()), float(n.mean()), float(n.std()), alpha)
    return lam, e, p, n


@pytest.mark.parametrize("neg_stat", ["reference", "mean_offdiag", "hardest"])
def test_update_statistics_match_a_loop_over_rows(neg_stat):
    S = _scores_with_correct_rows(20, 18)
    mom = AdaptiveMargin(activation_fraction=0.5, neg_stat=neg_stat)
    lam, e, p, n = _expected_update(S, 0.2, neg_stat=neg_stat)
    st = mom.update(S)
    assert st["n_correct"] == 18
    assert st["mu_pos"] == pytest.approx(float(p.mean())) and st["sigma_pos"] == pytest.approx(float(p.std()))
    assert st["mu_neg"] == pytest.approx(float(n.mean())) and st["sigma_neg"] == pytest.approx(float(n.std()))
    if math.isfinite(lam):
        assert st["lam"] == pytest.approx(lam)


def _mom_with_stats(mu_p, sd_p, mu_n, sd_n, init=0.2):
    """A MOM whose samples are fixed to two hand-set 2-point samples with the given mean/std."""
    mom = AdaptiveMargin(init=init, activation_fraction=0.0)
    d_p, d_n = sd_p / math.sqrt(2), sd_n / math.sqrt(2)  # unbiased std of {mu-d, mu+d} = d*sqrt(2)
    mom.samples = lambda scores, margin=None: (
        torch.tensor([mu_p - d_p, mu_p + d_p], dtype=torch.float64),
        torch.tensor([mu_n - d_n, mu_n + d_n], dtype=torch.float64),
    )
    return mom


def test_ema_branch_moves_margin_toward_lambda():
    mom = _mom_with_stats(0.8, 0.1, 0.3, 0.15)
    lam, _ = gaussian_boundary(0.8, 0.1, 0.3, 0.15, 0.3)
    assert 0 <= lam <= 1
    st = mom.update(torch.zeros(2, 2))
    assert st["branch"] == "ema" and st["margin"] == pytest.approx(0.9 * 0.2 + 0.1 * lam, abs=1e-6)


def test_lambda_above_one_resets_toward_0_2():
    mom = _mom_with_stats(3.0, 0.3, 1.5, 0.05, init=0.5)
    lam, _ = gaussian_boundary(3.0, 0.3, 1.5, 0.05, 0.3)
    assert lam > 1
    st = mom.update(torch.zeros(2, 2))
    assert st["branch"] == "reset" and st["margin"] == pytest.approx(0.9 * 0.5 + 0.1 * 0.2, abs=1e-6)


def test_negative_lambda_leaves_margin_unchanged():
    mom = _mom_with_stats(-1.0, 0.3, -2.0, 0.05, init=0.3)
    lam, _ = gaussian_boundary(-1.0, 0.3, -2.0, 0.05, 0.3)
    assert lam < 0
    st = mom.update(torch.zeros(2, 2))
    assert st["branch"] == "negative" and st["margin"] == pytest.approx(0.3)


def test_non_positive_discriminant_leaves_margin_unchanged():
    mom = _mom_with_stats(0.0, 0.1, 0.0, 1.0, init=0.3)
    mom.alpha = 1e-6
    st = mom.update(torch.zeros(2, 2))
    assert st["branch"] == "no_root" and st["margin"] == pytest.approx(0.3) and math.isnan(st["lam"])


def test_disabled_module_reports_statistics_but_keeps_the_margin():
    S = _scores_with_correct_rows(20, 18)
    mom = AdaptiveMargin(activation_fraction=0.5, enabled=False)
    st = mom.update(S)
    assert st["activated"] and math.isfinite(st["mu_pos"]) and st["margin"] == pytest.approx(0.2)


def test_margin_buffer_survives_a_state_dict_round_trip():
    mom = _mom_with_stats(0.8, 0.1, 0.3, 0.15)
    mom.update(torch.zeros(2, 2))
    state = mom.state_dict()
    assert "margin" in state
    fresh = AdaptiveMargin()
    assert float(fresh.margin) == pytest.approx(0.2)
    fresh.load_state_dict(state)
    assert float(fresh.margin) == float(mom.margin) != pytest.approx(0.2)


@pytest.mark.parametrize("sd_p,sd_n", [(0.0, 0.1), (0.1, 0.0), (0.0, 0.0)])
def test_degenerate_spread_has_no_boundary_and_leaves_the_margin_unchanged(sd_p, sd_n):
    """The reference divides by σp (nan E, rejected by its E > 0 test): the margin stays."""
    lam, e = gaussian_boundary(0.8, sd_p, 0.3, sd_n, 0.3)
    assert math.isnan(lam) and not e > 0
    mom = _mom_with_stats(0.8, sd_p, 0.3, sd_n, init=0.3)
    st = mom.update(torch.zeros(2, 2))
    assert st["activated"] and st["branch"] == "no_root" and st["margin"] == pytest.approx(0.3)
    assert float(mom.margin) == pytest.approx(0.3)


def test_batch_of_two_equal_positives_leaves_the_margin_unchanged():
    """B = 2 with both rows right and equal positives: σp = 0 (was a ZeroDivisionError)."""
    S = torch.tensor([[0.9, 0.1], [0.3, 0.9]])
    mom = AdaptiveMargin(init=0.25, activation_fraction=0.0)
    st = mom.update(S)
    assert st["n_correct"] == 2 and st["sigma_pos"] == 0.0
    assert st["branch"] == "no_root" and float(mom.margin) == pytest.approx(0.25)


# --- MatchingLoss: the module the loop calls after the model ------------------------------------


def test_matching_loss_warmup_is_sum_of_hinges_then_hardest():
    loss_fn = MatchingLoss(AdaptiveMargin(enabled=False), hardest=True, warmup_steps=5)
    early, late = loss_fn(S3, step=4), loss_fn(S3, step=5)
    assert not early.hardest and late.hardest and loss_fn(S3).hardest  # step None: past the warm-up
    assert early.loss.item() == pytest.approx(0.4, abs=1e-6)  # the hand-worked sum of hinges above
    assert late.loss.item() == pytest.approx(triplet_loss(S3, 0.2, hardest=True).item())
    assert early.stats["hardest"] is False and late.stats["hardest"] is True


def test_flat_ratio_is_the_sum_of_hinges_over_its_equal_scores_value():
    loss_fn = MatchingLoss(AdaptiveMargin(enabled=False))
    # S3 at m = 0.2: the hand-worked sum of hinges is 0.4; equal scores: 2 * 3 * 2 = 12 hinges of 0.2 = 2.4
    assert loss_fn.flat_ratio(S3, 0.2) == pytest.approx(0.4 / 2.4, abs=1e-6)
    assert loss_fn.flat_ratio(torch.full((4, 4), 0.37), 0.2) == pytest.approx(1.0)
    assert loss_fn.flat_ratio(torch.eye(4), 0.2) == 0.0  # every negative below its positive by 1 > m
    mask = torch.zeros(3, 3, dtype=torch.bool)
    mask[0, 1] = mask[1, 0] = True  # two captions of one image: 2 of the 12 hinges drop out of both sums
    want = triplet_loss(S3, 0.2, hardest=False, neg_mask=mask).item() / (0.2 * 10)
    assert loss_fn.flat_ratio(S3, 0.2, mask) == pytest.approx(want, abs=1e-6)


def test_adaptive_warmup_waits_for_the_model_to_leave_the_flat_start_then_stays_hardest():
    flat, learned = torch.full((3, 3), 0.5), torch.eye(3)  # ratio 1 and ratio 0
    loss_fn = MatchingLoss(
        AdaptiveMargin(enabled=False), hardest=True, warmup_steps=2, warmup_until=0.5
    ).train()
    seen = []
    for step, S in enumerate([learned, learned, flat, flat, S3, flat, learned]):
        out = loss_fn(S, step=step)
        seen.append((out.hardest, out.stats["flat_ratio"]))
        want = triplet_loss(S, 0.2, hardest=out.hardest).item()
        assert out.loss.item() == pytest.approx(want, abs=1e-6)
    hardest = [h for h, _ in seen]
    # steps 0-1: the fixed part (no check, even on a learned batch); 2-3 flat: the sum goes on;
    # step 4: S3's ratio 1/6 <= 0.5 ends it; from then on hardest, even on a flat batch (latched)
    assert hardest == [False, False, False, False, True, True, True] and loss_fn.warmup_end == 4
    ratios = [r for _, r in seen]
    assert all(math.isnan(r) for r in ratios[:2] + ratios[5:])
    assert ratios[2:5] == pytest.approx([1.0, 1.0, 1 / 6], abs=1e-6)
    assert loss_fn(flat).hardest  # step None: past the warm-up


def test_adaptive_warmup_is_capped_and_off_by_default_and_in_eval_mode():
    flat = torch.full((3, 3), 0.5)
    capped = MatchingLoss(
        AdaptiveMargin(enabled=False), warmup_steps=1, warmup_until=0.2, warmup_max_steps=3
    ).train()
    assert [capped(flat, step=k).hardest for k in range(5)] == [False, False, False, True, True]
    assert capped.warmup_end == 3
    fixed = MatchingLoss(AdaptiveMargin(enabled=False), warmup_steps=2).train()
    assert [fixed(flat, step=k).hardest for k in range(4)] == [False, False, True, True]
    assert "flat_ratio" not in fixed(flat, step=0).stats and fixed.warmup_end is None
    frozen = MatchingLoss(AdaptiveMargin(enabled=False), warmup_steps=0, warmup_until=0.5).eval()
    assert not frozen(torch.eye(3), step=5).hardest and frozen.warmup_end is None  # eval mode only reads
    for bad in ({"warmup_until": 1.0}, {"warmup_until": -0.1}, {"warmup_steps": 5, "warmup_max_steps": 3}):
        with pytest.raises(ValueError, match="warmup"):
            MatchingLoss(AdaptiveMargin(enabled=False), **bad)


def test_matching_loss_moves_the_margin_in_training_mode_only_and_the_hinge_uses_the_new_one():
    loss_fn = MatchingLoss(AdaptiveMargin(activation_fraction=0.0), hardest=False)
    loss_fn.margin_module.samples = lambda s, m=None: (
        torch.tensor([0.7, 0.9], dtype=torch.float64),
        torch.tensor([0.2, 0.45], dtype=torch.float64),
    )
    loss_fn.eval()
    out = loss_fn(S3)
    assert float(loss_fn.margin) == pytest.approx(0.2) and out.margin == pytest.approx(0.2)
    loss_fn.train()
    out = loss_fn(S3)
    assert out.stats["activated"] and out.margin != pytest.approx(0.2)
    assert out.margin == pytest.approx(out.stats["margin"]) == pytest.approx(float(loss_fn.margin))
    assert out.loss.item() == pytest.approx(triplet_loss(S3, out.margin, hardest=False).item(), rel=1e-6)


def test_matching_loss_masks_same_image_pairs_from_the_negatives():
    S = torch.tensor(
        [[0.9, 0.5, 0.8, 0.1], [0.4, 0.7, 0.2, 0.3], [0.85, 0.1, 0.6, 0.2], [0.0, 0.3, 0.1, 0.5]]
    )
    idx = torch.tensor([0, 1, 0, 2])
    mask = torch.zeros(4, 4, dtype=torch.bool)
    mask[0, 2] = mask[2, 0] = True
    on = MatchingLoss(AdaptiveMargin(enabled=False), hardest=False, mask_same_image=True).eval()
    off = MatchingLoss(AdaptiveMargin(enabled=False), hardest=False).eval()
    want = triplet_loss(S, 0.2, hardest=False, neg_mask=mask)
    assert on(S, img_index=idx).loss.item() == pytest.approx(want.item())
    assert off(S, img_index=idx).loss.item() == pytest.approx(triplet_loss(S, 0.2, hardest=False).item())
    assert want.item() != pytest.approx(triplet_loss(S, 0.2, hardest=False).item())


def test_matching_loss_from_config_carries_every_knob():
    from daimlib.config import load_preset

    cfg = load_preset(
        "demo",
        **{
            "loss.warmup_steps": 7,
            "loss.margin": 0.35,
            "loss.adaptive": False,
            "loss.mask_same_image": True,
            "loss.reduction": "mean",
        },
    )
    loss_fn = MatchingLoss.from_config(cfg.loss)
    assert (loss_fn.warmup_steps, loss_fn.mask_same_image, loss_fn.reduction) == (7, True, "mean")
    assert float(loss_fn.margin) == pytest.approx(0.35) and not loss_fn.margin_module.enabled
    assert list(loss_fn.state_dict()) == [
        "margin_module.margin"
    ]  # the warm-up's end is train state, not a weight
    adaptive = MatchingLoss.from_config(
        load_preset("demo", **{"loss.warmup_until": 0.3, "loss.warmup_max_steps": 900}).loss
    )
    assert (adaptive.warmup_until, adaptive.warmup_max_steps) == (0.3, 900)


def test_non_square_scores_raise():
    with pytest.raises(ValueError, match=r"\[B, B\]"):
        triplet_loss(torch.zeros(3, 4), 0.2)
    with pytest.raises(ValueError, match=r"\(3, 4\)"):
        AdaptiveMargin().update(torch.zeros(3, 4))


def _ddp_worker(rank, world, init_file, scores, out_q):
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        mom = AdaptiveMargin(activation_fraction=0.5)
        st = mom.update(scores[rank])
        out_q.put((rank, st["margin"], st["n_correct"], st["n_rows"], st["lam"]))
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # spawns two gloo processes: ~10-30 s
def test_distributed_update_uses_the_global_batch_on_every_rank(tmp_path):
    import torch.multiprocessing as tmp

    scores = [_scores_with_correct_rows(12, 10, seed=1), _scores_with_correct_rows(12, 7, seed=2)]
    ctx = tmp.get_context("spawn")
    q = ctx.Queue()
    procs = [
        ctx.Process(target=_ddp_worker, args=(r, 2, str(tmp_path / "init"), scores, q)) for r in range(2)
    ]
    for p in procs:
        p.start()
    results = sorted(q.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
    # independent: pool the two ranks' samples by hand
    ps, ns = zip(*(AdaptiveMargin().samples(s) for s in scores))
    p_all, n_all = torch.cat(ps), torch.cat(ns)
    assert p_all.numel() == 17
    lam, _ = gaussian_boundary(
        float(p_all.mean()), float(p_all.std()), float(n_all.mean()), float(n_all.std()), 0.3
    )
    want = 0.2 if not math.isfinite(lam) or lam < 0 else 0.9 * 0.2 + 0.1 * (0.2 if lam > 1 else lam)
    for _, margin, n_correct, n_rows, _ in results:
        assert n_correct == 17 and n_rows == 24  # 17 > 0.5 * 24: activated on the global batch
        assert margin == pytest.approx(want, abs=1e-6)
    assert results[0][1] == results[1][1]
