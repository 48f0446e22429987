"""Ranking protocol against a brute-force VSE++ evalrank, and the blocked evaluation pipeline."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from daimlib.evaluate import (
    METRIC_KEYS,
    EncodedSplit,
    coco_fold5,
    fold_metrics,
    i2t_t2i_ranks,
    protocol_metrics,
    recall_metrics,
    results_table,
    similarity_matrix,
)


def evalrank_bruteforce(sims: np.ndarray, img_of_caption: np.ndarray) -> dict[str, float]:
    """VSE++ i2t/t2i written the slow way: one argsort per query."""
    n_img, n_cap = sims.shape
    i2t = np.zeros(n_img)
    for i in range(n_img):
        order = np.argsort(sims[i])[::-1]
        i2t[i] = min(np.where(order == j)[0][0] for j in np.where(img_of_caption == i)[0])
    t2i = np.zeros(n_cap)
    for j in range(n_cap):
        order = np.argsort(sims[:, j])[::-1]
        t2i[j] = np.where(order == img_of_caption[j])[0][0]
    out = {}
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * len(np.where(r < k)[0]) / len(r)
        out[f"{name}_medr"] = np.floor(np.median(r)) + 1
        out[f"{name}_meanr"] = r.mean() + 1
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def random_problem(n_img: int, cpi: int, seed: int, signal: float = 1.5):
    rng = np.random.default_rng(seed)
    img_of_caption = np.repeat(np.arange(n_img), cpi)
    sims = rng.standard_normal((n_img, n_img * cpi))
    sims[img_of_caption, np.arange(n_img * cpi)] += signal  # some retrieval signal, scores distinct
    return sims.astype(np.float64), img_of_caption


@pytest.mark.parametrize(
    "n_img,cpi,seed,chunk", [(7, 5, 0, 3), (40, 5, 1, 16), (123, 5, 2, 256), (30, 3, 3, 7)]
)
def test_recall_metrics_equal_bruteforce_evalrank(n_img, cpi, seed, chunk):
    sims, idx = random_problem(n_img, cpi, seed)
    got = recall_metrics(sims, idx, chunk=chunk)
    want = evalrank_bruteforce(sims, idx)
    assert list(got) == list(METRIC_KEYS)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(want[k], abs=1e-9), k


def test_float32_tensor_input_gives_the_same_metrics_as_numpy():
    sims, idx = random_problem(50, 5, 4)
    sims = sims.astype(np.float32)
    assert recall_metrics(torch.from_numpy(sims), torch.from_numpy(idx)) == recall_metrics(sims, idx)


def test_hand_worked_two_image_example():
    # image 0 owns captions 0,1; image 1 owns captions 2,3
    sims = np.array([[0.9, 0.1, 0.5, 0.2], [0.3, 0.8, 0.4, 0.7]])
    idx = np.array([0, 0, 1, 1])
    i2t, t2i = i2t_t2i_ranks(sims, idx)
    # image 0: caption 0 (0.9) is first -> rank 0; image 1: best own caption 3 (0.7) is behind caption 1 (0.8)
    assert i2t.tolist() == [0, 1]
    # caption 0: 0.9 > 0.3 -> 0; caption 1: 0.1 < 0.8 -> 1; caption 2: 0.4 < 0.5 -> 1; caption 3: 0.7 > 0.2 -> 0
    assert t2i.tolist() == [0, 1, 1, 0]
    m = recall_metrics(sims, idx)
    assert m["i2t_r1"] == 50.0 and m["i2t_r5"] == 100.0
    assert m["t2i_r1"] == 50.0 and m["t2i_r10"] == 100.0
    assert m["i2t_medr"] == 1.0  # floor(median([0, 1]) = 0.5) + 1
    assert m["t2i_meanr"] == 1.5
    assert m["rsum"] == 50 + 100 + 100 + 50 + 100 + 100


def ranks_naive(sims: np.ndarray, img_of_caption: np.ndarray, ties: str) -> tuple[np.ndarray, np.ndarray]:
    """Tie-aware ranks by a plain loop over every (query, candidate) pair, from the definition:
    a *negative* counts against the positive when it scores above it, or equal under "pessimistic".
    An image's own captions are never negatives."""
    n_img, n_cap = sims.shape
    beats = (lambda neg, pos: neg >= pos) if ties == "pessimistic" else (lambda neg, pos: neg > pos)
    i2t = np.zeros(n_img, dtype=np.int64)
    for i in range(n_img):
        best_own = max(sims[i, j] for j in range(n_cap) if img_of_caption[j] == i)
        i2t[i] = sum(1 for j in range(n_cap) if img_of_caption[j] != i and beats(sims[i, j], best_own))
    t2i = np.zeros(n_cap, dtype=np.int64)
    for j in range(n_cap):
        own = img_of_caption[j]
        t2i[j] = sum(1 for i in range(n_img) if i != own and beats(sims[i, j], sims[own, j]))
    return i2t, t2i


@pytest.mark.parametrize("ties", ["pessimistic", "optimistic"])
@pytest.mark.parametrize(
    "n_img,cpi,levels,seed,chunk", [(6, 5, 3, 0, 4), (15, 3, 2, 1, 7), (9, 2, 5, 2, 300)]
)
def test_tie_rule_equals_a_naive_loop_on_heavily_tied_scores(ties, n_img, cpi, levels, seed, chunk):
    rng = np.random.default_rng(seed)
    idx = np.repeat(np.arange(n_img), cpi)
    sims = rng.integers(0, levels, size=(n_img, n_img * cpi)).astype(np.float32)  # few values: many ties
    got = i2t_t2i_ranks(sims, idx, chunk=chunk, ties=ties)
    want = ranks_naive(sims, idx, ties)
    assert got[0].tolist() == want[0].tolist() and got[1].tolist() == want[1].tolist()


def test_default_tie_rule_gives_a_constant_score_model_the_lowest_recall_not_100():
    n_img, cpi = 12, 5
    idx = np.repeat(np.arange(n_img), cpi)
    sims = np.full((n_img, n_img * cpi), 0.3)  # a collapsed model: every score equal
    i2t, t2i = i2t_t2i_ranks(sims, idx)
    # hand-worked: every other image's caption (55) is ahead of each image, every other image (11) of each caption
    assert set(i2t.tolist()) == {n_img * cpi - cpi} and set(t2i.tolist()) == {n_img - 1}
    m = recall_metrics(sims, idx)
    assert m["rsum"] == 0.0 and m["i2t_medr"] == 56 and m["t2i_medr"] == 12
    assert recall_metrics(sims, idx, ties="optimistic")["rsum"] == 600.0  # the named opposite option


def test_an_images_own_tied_captions_do_not_count_against_it():
    # image 0 owns captions 0-2, all tied at 0.9; image 1 owns 3-4; caption 3 ties image 0's best
    sims = np.array([[0.9, 0.9, 0.9, 0.9, 0.1], [0.2, 0.3, 0.1, 0.8, 0.7]])
    idx = np.array([0, 0, 0, 1, 1])
    i2t, t2i = i2t_t2i_ranks(sims, idx)
    # image 0: its own tied captions 1, 2 are not negatives; caption 3 (image 1's) ties it -> rank 1
    assert i2t.tolist() == [1, 0]
    # caption 3: image 0 scores 0.9 > 0.8 -> 1; the others are clear
    assert t2i.tolist() == [0, 0, 0, 1, 0]
    i2t_opt, _ = i2t_t2i_ranks(sims, idx, ties="optimistic")
    assert i2t_opt.tolist() == [0, 0]
    sims[0, 3] = 0.5  # no tie with a negative left: both rules agree, the own ties cost nothing
    assert i2t_t2i_ranks(sims, idx)[0].tolist() == [0, 0]


def test_ranking_has_one_home_in_metrics():
    from daimlib import evaluate, metrics

    assert evaluate.recall_metrics is metrics.recall_metrics and evaluate.coco_fold5 is metrics.coco_fold5
    assert evaluate.i2t_t2i_ranks is metrics.i2t_t2i_ranks


def test_unknown_tie_rule_is_refused():
    with pytest.raises(ValueError, match="ties must be one of"):
        i2t_t2i_ranks(np.eye(2), np.array([0, 1]), ties="random")


def test_coco_fold5_is_mean_of_sequential_folds_each_equal_to_bruteforce():
    sims, idx = random_problem(50, 5, 5)
    folds = fold_metrics(sims, idx)
    assert len(folds) == 5
    for f, m in enumerate(folds):
        rows = slice(10 * f, 10 * (f + 1))
        cols = slice(50 * f, 50 * (f + 1))
        want = evalrank_bruteforce(sims[rows, cols], idx[cols] - 10 * f)
        for k in METRIC_KEYS:
            assert m[k] == pytest.approx(want[k]), (f, k)
    mean = coco_fold5(sims, idx)
    for k in METRIC_KEYS:
        assert mean[k] == pytest.approx(np.mean([m[k] for m in folds]))
    # a fold sees only 1/5 of the distractors, so the 1K protocol reads higher than the full one
    assert mean["rsum"] > recall_metrics(sims, idx)["rsum"]
    assert protocol_metrics(sims, idx, "coco1k") == mean
    assert protocol_metrics(sims, idx, "coco5k") == recall_metrics(sims, idx)


def test_fold5_uses_caption_index_not_position_when_captions_are_shuffled():
    sims, idx = random_problem(20, 5, 6)
    perm = np.random.default_rng(0).permutation(sims.shape[1])
    a = coco_fold5(sims, idx)
    b = coco_fold5(sims[:, perm], idx[perm])
    for k in METRIC_KEYS:
        assert a[k] == pytest.approx(b[k])


@pytest.mark.parametrize(
    "sims,idx,match",
    [
        (np.zeros((2, 3)), np.array([0, 1]), "3 caption columns"),
        (np.zeros((2, 2)), np.array([0, 2]), r"\[0, 2\)"),
        (np.zeros((3, 2)), np.array([0, 1]), "have none"),
        (np.full((2, 2), np.nan), np.array([0, 1]), "NaN"),
        (np.zeros(4), np.array([0, 1]), "2-D"),
    ],
)
def test_bad_inputs_raise_clear_errors(sims, idx, match):
    with pytest.raises(ValueError, match=match):
        recall_metrics(sims, idx)


def test_fold5_needs_a_multiple_of_five_images():
    sims, idx = random_problem(12, 5, 0)
    with pytest.raises(ValueError, match="multiple of 5"):
        coco_fold5(sims, idx)
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_metrics(sims, idx, "coco2k")


def test_results_table_has_paper_column_order():
    sims, idx = random_problem(10, 5, 0)
    df = results_table({"a": recall_metrics(sims, idx), "b": coco_fold5(sims, idx)})
    assert list(df.columns) == ["i2t R@1", "i2t R@5", "i2t R@10", "t2i R@1", "t2i R@5", "t2i R@10", "RSUM"]
    assert list(df.index) == ["a", "b"]
    with pytest.raises(ValueError, match="lacks metrics"):
        results_table({"x": {"rsum": 1.0}})


# --- blocked similarity against a direct per-pair computation ------------------------------


class TinyScorer(nn.Module):
    """A model with DAIM's evaluation API whose score depends on the caption length mask."""

    def similarity(self, img_levels, txt_levels, txt_lens):
        total = 0
        for v, t in zip(img_levels, txt_levels):  # v [ni, R, D], t [nc, L, D]
            mask = (torch.arange(t.shape[1])[None, :] < txt_lens[:, None]).float()  # [nc, L]
            s = torch.einsum("ird,cld->icrl", v, t).amax(2)  # [ni, nc, L]
            total = total + (s * mask).sum(-1) / txt_lens.float()
        return total


def test_similarity_matrix_blocks_equal_per_pair_scores():
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([3, 5, 2, 4, 5, 1, 2])
    feats = EncodedSplit(
        img_levels=[torch.randn(9, r, 4, generator=g) for r in (6, 3, 2)],
        txt_levels=[torch.randn(7, 5, 4, generator=g) for _ in range(3)],
        txt_lens=lens,
        img_of_caption=torch.tensor([0, 0, 1, 2, 3, 4, 5]),
    )
    model = TinyScorer()
    blocked = similarity_matrix(model, feats, img_block=4, cap_block=3, progress=False)
    assert blocked.shape == (9, 7) and blocked.dtype == np.float32
    for i in range(9):
        for j in range(7):
            one = model.similarity(
                [lv[i : i + 1] for lv in feats.img_levels],
                [lv[j : j + 1, : lens[j]] for lv in feats.txt_levels],
                lens[j : j + 1],
            )
            assert blocked[i, j] == pytest.approx(float(one), abs=1e-5)


# --- the real model on the small demo split ----------------------------------------------


@pytest.fixture(scope="module")
def demo_small(tmp_path_factory):
    from daimlib.data import make_demo_dataset

    root = tmp_path_factory.mktemp("demo_eval")
    make_demo_dataset(root, seed=0, size="small", progress=False)
    return root


@pytest.mark.slow  # 15-50 s on 2 busy cores: a demo model encodes and scores 50 x 250 pairs
def test_evaluate_tiny_daim_matrix_equals_per_pair_similarity(demo_small):
    from daimlib import model as model_mod
    from daimlib.config import load_preset
    from daimlib.data import build_transforms, load_image, load_split, load_tokenizer, tokenize
    from daimlib.evaluate import evaluate

    cfg = load_preset("demo")
    torch.manual_seed(0)
    model = model_mod.DAIM.from_config(cfg).eval()
    split = load_split(cfg.data, demo_small, "test")
    tok = load_tokenizer(cfg.text, demo_small)
    metrics, df, sims = evaluate(
        model, split, tok, cfg, batch_size=50, img_block=25, cap_block=125, progress=False, return_sims=True
    )
    assert sims.shape == (50, 250)
    assert metrics == recall_metrics(sims, split.img_of_caption)
    assert list(df.index) == ["demo (50 images x 250 captions)"] and df.attrs["n_images"] == 50
    assert df["RSUM"].iloc[0] == pytest.approx(metrics["rsum"], abs=0.05)
    tf = build_transforms(cfg.data, train=False)
    rng = np.random.default_rng(0)
    with torch.no_grad():
        for i, j in zip(rng.integers(0, 50, 8), rng.integers(0, 250, 8)):
            img = model.encode_image(tf(load_image(split.image_paths[i]))[None])
            ids, mask = tokenize(tok, [split.captions[j]], cfg.text.max_len)
            n = int(mask.sum())  # this caption alone, unpadded
            txt, lens = model.encode_text(ids[:, :n], mask[:, :n])
            assert sims[i, j] == pytest.approx(float(model.similarity(img, txt, lens)), abs=1e-4)


def _dist_worker(rank: int, world: int, port: int, feats: EncodedSplit, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        from daimlib.evaluate import _rank_slice

        assert _rank_slice(7) == ((0, 4, 4) if rank == 0 else (4, 7, 4))  # this rank scores only its slice
        sims = similarity_matrix(TinyScorer(), feats, img_block=2, cap_block=4, progress=False)
        np.save(f"{out_dir}/rank{rank}.npy", sims)
    finally:
        dist.destroy_process_group()


def test_distributed_ranks_score_slices_and_gather_the_full_matrix(tmp_path):
    import socket

    import torch.multiprocessing as mp

    g = torch.Generator().manual_seed(1)
    feats = EncodedSplit(
        img_levels=[torch.randn(7, r, 4, generator=g) for r in (5, 3, 2)],  # 7 images: uneven slices 4 + 3
        txt_levels=[torch.randn(6, 4, 4, generator=g) for _ in range(3)],
        txt_lens=torch.tensor([4, 2, 3, 1, 4, 2]),
        img_of_caption=torch.tensor([0, 1, 2, 3, 4, 5]),
    )
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _dist_worker, args=(2, port, feats, str(tmp_path)), nprocs=2, join=True, start_method="fork"
    )
    single = similarity_matrix(TinyScorer(), feats, img_block=3, cap_block=5, progress=False)
    for rank in range(2):
        np.testing.assert_allclose(np.load(tmp_path / f"rank{rank}.npy"), single, atol=1e-6)


# --- any number of levels, feature precision, protocol sizes ----------------------------------


class LevelsModel(nn.Module):
    """DAIM's evaluation API with ``n_levels`` levels: image levels are pooled pixel blocks, text
    levels embedded tokens; scores come from :class:`TinyScorer` (independent of the kit's model)."""

    def __init__(self, n_levels: int, dim: int = 4, vocab: int = 1024):
        super().__init__()
        self.n_levels = n_levels
        self.proj = nn.Linear(3, dim)
        self.emb = nn.Embedding(vocab, dim)

    def encode_image(self, images):  # [B, 3, H, W] -> n_levels x [B, R, D]
        out = []
        for k in range(self.n_levels):
            pooled = nn.functional.adaptive_avg_pool2d(images, 2 ** (self.n_levels - k - 1))
            out.append(self.proj(pooled.flatten(2).transpose(1, 2)))
        return out

    def encode_text(self, input_ids, attention_mask):
        e = self.emb(input_ids.clamp_max(self.emb.num_embeddings - 1))
        return [e * (k + 1) for k in range(self.n_levels)], attention_mask.sum(1)

    def similarity(self, img_levels, txt_levels, txt_lens):
        return TinyScorer().similarity(img_levels, txt_levels, txt_lens)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("n_levels", [1, 2, 4])
def test_evaluate_handles_any_number_of_levels(demo_small, n_levels):
    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import encode_split, evaluate

    cfg = load_preset("demo")
    split, tok = load_split(cfg.data, demo_small, "test"), load_tokenizer(cfg.text, demo_small)
    model = LevelsModel(n_levels).eval()
    feats = encode_split(model, split, tok, cfg.data, max_len=cfg.text.max_len, progress=False)
    assert feats.n_levels == n_levels and len(feats.txt_levels) == n_levels
    assert [lv.shape[1] for lv in feats.img_levels] == [4 ** (n_levels - k - 1) for k in range(n_levels)]
    metrics, df, sims = evaluate(model, split, tok, cfg, protocol="demo", progress=False, return_sims=True)
    direct = TinyScorer().similarity(feats.img_levels, feats.txt_levels, feats.txt_lens).numpy()
    np.testing.assert_allclose(sims, direct, rtol=1e-5, atol=1e-5)
    assert metrics == recall_metrics(sims, split.img_of_caption)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_encoding_leaves_the_global_random_generators_untouched(demo_small):
    import random

    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import encode_split

    cfg = load_preset("demo")
    split, tok = load_split(cfg.data, demo_small, "test"), load_tokenizer(cfg.text, demo_small)
    model = LevelsModel(2).eval()  # its initialisation draws from the global generator: before the snapshot
    before = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    encode_split(model, split, tok, cfg.data, max_len=cfg.text.max_len, progress=False)
    assert torch.equal(before[0], torch.get_rng_state())  # validation never shifts the training stream
    assert np.array_equal(before[1], np.random.get_state()[1]) and before[2] == random.getstate()


def test_feature_precision_is_fp32_on_a_cpu_and_switchable_on_a_gpu():
    from daimlib.evaluate import feature_dtype

    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert feature_dtype("auto", None, cpu) == torch.float32
    assert feature_dtype("auto", torch.bfloat16, cuda) == torch.bfloat16  # the documented default on a GPU
    assert feature_dtype("auto", None, cuda) == torch.float16
    assert feature_dtype("fp32", torch.bfloat16, cuda) == torch.float32  # the switch
    with pytest.raises(ValueError, match="features must be one of"):
        feature_dtype("fp64", None, cpu)


def test_protocol_sizes_are_checked_and_labels_carry_the_real_sizes():
    from daimlib.evaluate import protocol_label, protocol_problem

    assert protocol_problem("f30k", 1000) is None and protocol_problem("coco5k", 5000) is None
    assert protocol_problem("coco1k", 5000) is None and protocol_problem("demo", 7) is None
    msg = protocol_problem("f30k", 100)
    assert "1,000 test images" in msg and "100" in msg and "not comparable" in msg
    assert "5,000" in protocol_problem("coco1k", 1000)
    assert protocol_label("f30k", 1000, 5000) == "F30K 1K"
    assert protocol_label("coco1k", 5000, 25000) == "COCO 1K"
    lab = protocol_label("f30k", 100, 500)
    assert "100 images x 500 captions" in lab and "not F30K 1K" in lab
    assert "5 folds of 20 images" in protocol_label("coco1k", 100, 500)
    with pytest.raises(ValueError, match="unknown protocol"):
        protocol_problem("coco2k", 5000)


def test_evaluate_labels_a_small_split_and_strict_refuses_it(demo_small):
    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import evaluate

    cfg = load_preset("demo")
    split, tok = load_split(cfg.data, demo_small, "test"), load_tokenizer(cfg.text, demo_small)
    _, df = evaluate(LevelsModel(2).eval(), split, tok, cfg, protocol=("f30k", "coco1k"), progress=False)
    assert list(df.index) == [
        "f30k rule on 50 images x 250 captions (not F30K 1K)",
        "coco1k rule (5 folds of 10 images) on 50 images x 250 captions (not COCO 1K)",
    ]
    assert df.attrs["paper_protocol"] == {"f30k": False, "coco1k": False} and df.attrs["n_captions"] == 250
    with pytest.raises(ValueError, match="defined on 1,000 test images but this split has 50"):
        evaluate(LevelsModel(2).eval(), split, tok, cfg, protocol="f30k", progress=False, strict=True)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_a_protocol_on_another_datasets_test_split_of_its_size_is_not_labelled_as_published(
    demo_small, tmp_path
):
    """1,000 test images of Flickr30K are not 'Flickr8k 1K' (nor Flickr8k's 'F30K 1K'): the data's layout
    decides too, so the row is labelled with the data and strict refuses it."""
    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer, make_f30k_layout
    from daimlib.evaluate import evaluate

    make_f30k_layout(tmp_path / "f30k", n_train=5, n_val=5, n_test=1000)
    cfg = load_preset("tiny")
    split = load_split(cfg.data, tmp_path / "f30k", "test")
    tok = load_tokenizer(load_preset("demo").text, demo_small)  # the model below clamps any id
    assert split.layout == "f30k" and split.n_images == 1000
    _, df = evaluate(LevelsModel(1).eval(), split, tok, cfg, protocol=("f8k", "f30k"), progress=False)
    assert list(df.index) == [
        "f8k rule on 1,000 images x 5,000 captions of f30k data (not Flickr8k 1K)",
        "F30K 1K",
    ]
    assert df.attrs["paper_protocol"] == {"f8k": False, "f30k": True}
    with pytest.raises(
        ValueError, match="defined on the Flickr8k test split but this data is in the f30k layout"
    ):
        evaluate(LevelsModel(1).eval(), split, tok, cfg, protocol="f8k", progress=False, strict=True)


def test_coco1k_on_a_split_it_cannot_fold_is_refused_before_any_encoding(demo_small):
    """7 images cannot make COCO 1K's 5 folds: said before encoding the split (on COCO, minutes on a GPU), with
    the flag that picks a size that folds; the same for the paper protocol on COCO data."""
    from daimlib.config import load_preset
    from daimlib.data import first_images, load_split, load_tokenizer
    from daimlib.evaluate import evaluate

    class NeverEncodes(LevelsModel):
        def encode_image(self, images):
            raise AssertionError("encoded before the fold check")

    cfg = load_preset("demo")
    split = first_images(load_split(cfg.data, demo_small, "test"), 7)
    tok = load_tokenizer(cfg.text, demo_small)
    for protocol in ("coco1k", ("coco1k", "coco5k")):
        with pytest.raises(ValueError, match=r"7 images cannot be split into 5 equal folds.*--images N"):
            evaluate(NeverEncodes(1).eval(), split, tok, cfg, protocol=protocol, progress=False)
    metrics, _ = evaluate(LevelsModel(1).eval(), split, tok, cfg, protocol="coco5k", progress=False)
    assert 0 <= metrics["rsum"] <= 600  # no folds, no refusal


def test_a_collapsed_model_scores_rsum_0_through_the_pipeline_and_for_model_selection(demo_small):
    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import evaluate
    from daimlib.train import selection_score

    cfg = load_preset("demo")
    split, tok = load_split(cfg.data, demo_small, "test"), load_tokenizer(cfg.text, demo_small)
    model = LevelsModel(2).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()  # every feature 0: every score equal
    metrics, _, sims = evaluate(model, split, tok, cfg, protocol="demo", progress=False, return_sims=True)
    assert np.unique(sims).size == 1
    assert (
        metrics["rsum"] == 0.0 and selection_score(metrics, "rsum") == 0.0
    )  # training's best uses this default
    assert selection_score(metrics, "r1_sum") == 0.0
    optimistic, _ = evaluate(model, split, tok, cfg, protocol="demo", progress=False, ties="optimistic")
    assert optimistic["rsum"] == 600.0
