"""Full-size DAIM speed and memory on one GPU: a training step, and a COCO-5K-sized evaluation.

Part 1, training step: Swin-B 224 + BERT-base (the ``daim_coco`` preset, randomly initialised:
speed does not depend on the weights), batch 58, AMP, random images and captions; once with the
backbones frozen (epochs 0-10 of the reference schedule) and once unfrozen. Reports images/s and
peak GPU memory.

Part 2, evaluation at COCO-5K size: 5,000 images x 25,000 captions, random token features of the
real sizes (784/196/49 image tokens and 32 caption tokens of width 768, cached in fp16), scored
with daimlib's blocked similarity (``daimlib.evaluate.similarity_matrix``) on a slice of the
images and scaled linearly to 5,000 (the work is linear in the number of images); and the same
scores computed the reference's way (a Python loop per caption over shards of 128 images, spec
section 2.3) on a smaller slice, scaled to the full matrix. Also checks that both ways agree.

On a machine without CUDA, or with ``--quick``, everything runs at a reduced size (the demo
model, a few hundred images), and the table says so. Usage::

    python benchmarks/gpu_step.py            # full size on a GPU
    python benchmarks/gpu_step.py --quick    # reduced size (CPU or GPU), seconds
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daimlib.config import load_preset  # noqa: E402
from daimlib.evaluate import EncodedSplit, similarity_matrix  # noqa: E402
from daimlib.losses import MatchingLoss  # noqa: E402
from daimlib.model import DAIM  # noqa: E402
from daimlib.train import _amp  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _gib(x: float) -> str:
    return "n/a (CPU)" if math.isnan(x) else f"{x:.2f} GiB"


def _peak_gib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else float("nan")


def _random_batch(cfg, batch: int, vocab: int, device: torch.device, gen: torch.Generator) -> dict:
    size = cfg.image.img_size
    L = cfg.text.max_len
    lens = torch.randint(8, L + 1, (batch,), generator=gen)  # [B] caption lengths incl. [CLS]/[SEP]
    mask = (torch.arange(L)[None, :] < lens[:, None]).long()  # [B, L]
    ids = torch.randint(min(1000, vocab // 2), vocab, (batch, L), generator=gen) * mask  # [B, L], 0 = [PAD]
    return {
        "images": torch.randn(batch, 3, size, size, generator=gen).to(device),  # [B, 3, H, W]
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "img_index": torch.arange(batch, device=device),
        "caption_index": torch.arange(batch, device=device),
    }


def bench_train_step(cfg, batch: int, steps: int, warmup: int, device: torch.device, frozen: bool) -> dict:
    """Mean seconds per optimisation step (forward, backward, Adam) and peak memory."""

    torch.manual_seed(0)
    model = DAIM.from_config(cfg, pretrained=False).to(device)
    model.set_backbones_trainable(not frozen)
    model.train()
    loss_fn = MatchingLoss.from_config(cfg.loss).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    amp_dtype, use_scaler = _amp(cfg, device)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    vocab = (cfg.text.model_kwargs or {}).get("vocab_size", 30522)
    gen = torch.Generator().manual_seed(0)
    data = _random_batch(cfg, batch, vocab, device, gen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    times = []
    for i in range(warmup + steps):
        _sync(device)
        t0 = time.perf_counter()
        with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else torch.enable_grad():
            scores = model(data).scores
        loss = loss_fn(
            scores, step=10**9, img_index=data["img_index"]
        ).loss  # past any warm-up: hardest negatives
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    sec = sum(times) / len(times)
    peak = _peak_gib(device)
    del model, opt
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"s_per_step": sec, "images_per_s": batch / sec, "peak_gib": peak}


def reference_t2i_loop(img_levels, txt_levels, lens, lambda_softmax: float, shard: int = 128) -> torch.Tensor:
    """The reference's evaluation: for each caption, t2i SCAN against shards of 128 images (spec 2.1, 2.3).

    A direct port of the formula, one caption at a time: s = v.t, LeakyReLU(0.1), L2 over the
    caption's words per region, softmax over regions with lambda, attended vector per word,
    mean cosine over the caption's L words; the levels are summed.
    """
    n_img, n_cap = img_levels[0].shape[0], txt_levels[0].shape[0]
    sims = torch.zeros(n_img, n_cap, dtype=torch.float32, device=img_levels[0].device)  # [n_img, n_cap]
    for img_all, txt_all in zip(img_levels, txt_levels):
        for a in range(0, n_img, shard):
            img = img_all[a : a + shard].float()  # [b, R, D]
            for j in range(n_cap):
                t = txt_all[j, : int(lens[j])].float()  # [L, D]
                s = F.leaky_relu(img @ t.T, 0.1)  # [b, R, L]
                s = s / (s.norm(dim=2, keepdim=True) + 1e-8)  # L2 over words, per region
                attn = torch.softmax(lambda_softmax * s, dim=1)  # [b, R, L] softmax over regions
                att_vec = attn.transpose(1, 2) @ img  # [b, L, D]
                cos = F.cosine_similarity(
                    t.unsqueeze(0).expand_as(att_vec), att_vec, dim=2, eps=1e-8
                )  # [b, L]
                sims[a : a + shard, j] += cos.mean(dim=1)
    return sims


def bench_eval(
    cfg, n_img: int, n_cap_per_img: int, slice_img: int, ref_img: int, ref_cap: int, device
) -> dict:
    """Blocked similarity on ``slice_img`` images x all captions, and the reference loop on a small slice."""

    torch.manual_seed(0)
    model = DAIM.from_config(cfg, pretrained=False).to(device).eval()
    n_cap = n_img * n_cap_per_img
    tokens = [t for t in _level_tokens(cfg)]
    D, L = cfg.similarity.embed_dim, cfg.text.max_len
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    gen = torch.Generator(device=device).manual_seed(0)
    img_levels = [
        torch.randn(n_img, R, D, device=device, dtype=dtype, generator=gen) for R in tokens
    ]  # [n_img, R, D]
    txt_levels = [
        torch.randn(n_cap, L, D, device=device, dtype=dtype, generator=gen) for _ in tokens
    ]  # [n_cap, L, D]
    lens = torch.randint(8, L + 1, (n_cap,), device=device, generator=gen)  # [n_cap]
    img_of_caption = torch.arange(n_cap, device=device) // n_cap_per_img
    feats_gib = sum(t.numel() * t.element_size() for t in img_levels + txt_levels) / 2**30

    part = EncodedSplit([lv[:slice_img] for lv in img_levels], txt_levels, lens, img_of_caption)
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        sims = similarity_matrix(model, part, progress=False)  # [slice_img, n_cap]
    _sync(device)
    blocked_s = (time.perf_counter() - t0) * n_img / slice_img
    peak = _peak_gib(device)

    ref_parts = ([lv[:ref_img] for lv in img_levels], [lv[:ref_cap] for lv in txt_levels])
    _sync(device)
    t0 = time.perf_counter()
    with torch.no_grad():
        ref = reference_t2i_loop(*ref_parts, lens[:ref_cap], cfg.similarity.lambda_softmax)
    _sync(device)
    ref_s = (time.perf_counter() - t0) * (n_img / ref_img) * (n_cap / ref_cap)
    diff = float((torch.as_tensor(sims[:ref_img, :ref_cap]) - ref.cpu()).abs().max())
    return {
        "n_img": n_img,
        "n_cap": n_cap,
        "slice_img": slice_img,
        "ref_img": ref_img,
        "ref_cap": ref_cap,
        "blocked_min": blocked_s / 60,
        "reference_min": ref_s / 60,
        "peak_gib": peak,
        "features_gib": feats_gib,
        "max_abs_diff": diff,
    }


def _level_tokens(cfg) -> list[int]:
    """Tokens per level for the image size: Swin stage k has (img/4 / 2^k)^2 tokens (784/196/49 at 224)."""
    side = cfg.image.img_size // 4
    return [(side // 2**k) ** 2 for k in cfg.image.stages]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="reduced sizes (the default without CUDA)")
    ap.add_argument("--device", default=None, help="cuda or cpu (default: cuda if available)")
    ap.add_argument("--steps", type=int, default=None, help="timed training steps (default 10, quick 3)")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    quick = args.quick or device.type != "cuda"
    name = (
        torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    if quick:
        cfg = load_preset("demo")
        batch, steps, warmup = 16, args.steps or 2, 1
        ev = dict(n_img=100, n_cap_per_img=5, slice_img=100, ref_img=8, ref_cap=25)
        size_note = "REDUCED SIZE (--quick or no GPU): demo model (Swin 64 px, 3-layer BERT-128), batch 16, 100 x 500 eval"
    else:
        cfg = load_preset("daim_coco")
        batch, steps, warmup = cfg.train.batch_size, args.steps or 10, 3
        ev = dict(n_img=5000, n_cap_per_img=5, slice_img=500, ref_img=128, ref_cap=200)
        size_note = "FULL SIZE: Swin-B 224 + BERT-base, batch 58, AMP; COCO 5K = 5,000 x 25,000"
    print(f"# DAIM GPU benchmark on {name}; torch {torch.__version__}")
    print(f"# {size_note}")
    rows = []
    for frozen in (True, False):
        r = bench_train_step(cfg, batch, steps, warmup, device, frozen)
        label = "train step, backbones frozen" if frozen else "train step, all trainable"
        rows.append(
            (
                label,
                f"{r['images_per_s']:.1f} img/s",
                f"{r['s_per_step'] * 1000:.0f} ms/step",
                _gib(r["peak_gib"]),
            )
        )
    e = bench_eval(cfg, device=device, **ev)
    rows.append(
        (
            f"eval {e['n_img']} x {e['n_cap']}, blocked (timed on {e['slice_img']} images, scaled)",
            f"{e['blocked_min']:.2f} min",
            f"features {e['features_gib']:.2f} GiB",
            _gib(e["peak_gib"]),
        )
    )
    rows.append(
        (
            f"eval {e['n_img']} x {e['n_cap']}, reference loop (timed on {e['ref_img']} x {e['ref_cap']}, scaled)",
            f"{e['reference_min']:.2f} min",
            f"speed-up x{e['reference_min'] / max(e['blocked_min'], 1e-9):.0f}",
            "",
        )
    )
    widths = [max(len(str(r[i])) for r in rows + [("what", "speed", "detail", "peak mem")]) for i in range(4)]
    header = ("what", "speed", "detail", "peak mem")
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print(" | ".join(str(c).ljust(w) for c, w in zip(r, widths)))
    ok = math.isfinite(e["max_abs_diff"]) and e["max_abs_diff"] < 1e-3
    print(
        f"# blocked vs reference loop on the slice: max |diff| = {e['max_abs_diff']:.2e} ({'agree' if ok else 'DISAGREE'})"
    )
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
