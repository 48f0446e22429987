"""Scoring cost of cross-attention (SCAN, three levels) against the dual encoder's cosine (daimlib.dual).

Both score N images against 5N captions from the same projected token sets of the demo's shapes
(levels of 16, 4 and 1 regions; captions of 8 to 32 tokens; D = 128). SCAN attends every word to
every region of every image, pair by pair (blocked, ``multilevel_similarity``); the dual encoder pools
each image and each caption to one unit vector and scores all pairs with one matrix product
(``cosine_similarity``). Printed per N: the median scoring time of each, their ratio, and the memory
each must keep for a gallery of N images (SCAN: every image's token sets; the dual encoder: one
embedding per image), with the peak allocated GPU memory of each scoring on CUDA. The check: the
cosine scores equal a per-pair loop on a corner of the largest matrix. Usage::

    python benchmarks/bench_dual_vs_scan.py [--quick] [--sizes 50 100 200] [--repeats R] [--threads T] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _check import agrees, exit_code  # noqa: E402

from daimlib.dual import cosine_similarity  # noqa: E402
from daimlib.similarity import multilevel_similarity  # noqa: E402

REGIONS = (16, 4, 1)  # the demo Swin's three levels at 64 px
MAX_LEN, DIM, PER_IMAGE = 32, 128, 5


def token_sets(n_img: int, device: str, seed: int = 0):
    """Random projected levels of the demo's shapes: images [n, R_l, D], captions [5n, 32, D], lengths."""
    g = torch.Generator().manual_seed(seed)
    img = [torch.randn(n_img, r, DIM, generator=g).to(device) for r in REGIONS]
    txt = [torch.randn(PER_IMAGE * n_img, MAX_LEN, DIM, generator=g).to(device) for _ in REGIONS]
    lens = torch.randint(8, MAX_LEN + 1, (PER_IMAGE * n_img,), generator=g).to(device)
    return img, txt, lens


def timed(fn, inputs: tuple, repeats: int, device: str) -> tuple[float, torch.Tensor, int | None]:
    """Median seconds over ``repeats`` runs after one warm-up, the last result, peak CUDA bytes (else None)."""
    out = fn(*inputs)
    times, peak = [], None
    for _ in range(repeats):
        if device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        out = fn(*inputs)
        if device == "cuda":
            torch.cuda.synchronize()
            peak = torch.cuda.max_memory_allocated() - base
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out, peak


def naive_cosine(img, txt, lens, n_img: int, n_cap: int) -> torch.Tensor:
    """Per pair: each level's mean region and mean real word, their cosine, the mean over levels."""
    out = torch.zeros(n_img, n_cap, dtype=torch.float64)
    for i in range(n_img):
        for j in range(n_cap):
            cos = []
            for v, t in zip(img, txt):
                a, b = v[i].double().mean(0), t[j, : int(lens[j])].double().mean(0)
                cos.append(float(a @ b) / float(a.norm() * b.norm()))
            out[i, j] = sum(cos) / len(cos)
    return out


def mib(n_bytes: float) -> str:
    return f"{n_bytes / 2**20:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 25, 50, 100 (seconds)")
    ap.add_argument("--full", action="store_true", help="N = 100, 250, 500, 1000 (minutes on a CPU)")
    ap.add_argument("--sizes", type=int, nargs="+", default=None, help="the N to time (default 50 100 200)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per method and N (median)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    sizes = args.sizes or (
        [25, 50, 100] if args.quick else [100, 250, 500, 1000] if args.full else [50, 100, 200]
    )
    dev = args.device
    print(
        f"scoring N images x {PER_IMAGE}N captions: regions {REGIONS}, captions of 8-{MAX_LEN} tokens, D = {DIM}, "
        f"3 levels; device {dev}, {torch.get_num_threads()} threads, median of {args.repeats}"
    )
    head = f"{'N':>5s} {'pairs':>9s} {'SCAN s':>9s} {'cosine s':>9s} {'ratio':>8s} {'SCAN keeps MiB':>15s} {'dual keeps MiB':>15s}"
    if dev == "cuda":
        head += f" {'SCAN peak MiB':>14s} {'cosine peak MiB':>16s}"
    print(head)
    ok = True
    for n in sizes:
        img, txt, lens = token_sets(n, dev)
        with torch.no_grad():
            t_scan, s_scan, p_scan = timed(multilevel_similarity, (img, txt, lens), args.repeats, dev)
            t_cos, s_cos, p_cos = timed(cosine_similarity, (img, txt, lens), args.repeats, dev)
        keeps_scan = sum(v.numel() for v in img) * 4  # fp32 token sets of the gallery
        keeps_dual = n * len(REGIONS) * DIM * 4  # one (levels x D) embedding per image
        line = (
            f"{n:5d} {n * PER_IMAGE * n:9,d} {t_scan:9.4f} {t_cos:9.4f} {t_scan / t_cos:7.0f}x "
            f"{mib(keeps_scan):>15s} {mib(keeps_dual):>15s}"
        )
        if dev == "cuda":
            line += f" {mib(p_scan):>14s} {mib(p_cos):>16s}"
        print(line)
        ok = ok and s_scan.shape == s_cos.shape == (n, PER_IMAGE * n) and bool(torch.isfinite(s_scan).all())
    corner = naive_cosine(img, txt, lens, 4, 12)
    ok_cos = agrees(
        "cosine scores vs a per-pair loop (4 x 12 corner)",
        float((s_cos[:4, :12].double().cpu() - corner).abs().max()),
        1e-5,
    )
    return exit_code(ok, ok_cos)


if __name__ == "__main__":
    sys.exit(main())
