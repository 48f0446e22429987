"""SCAN text-to-image scores: daimlib's batched ``scan_t2i`` vs a per-caption loop of the reference's shape.

The reference (``xattn_score_t2i``) loops over captions and scores each one against all images at
once with two ``bmm`` calls (raw scores, then the attended vectors a_w). ``scan_t2i`` scores blocks
of images x captions from one matrix product, buckets captions by length, reuses the raw scores for
the cosine numerator and takes |a_w|² from the per-image Gram matrix. Same inputs, same scores.

Default (issue 2): 128 images x 640 captions, 49 regions, 2..20 words, D = 256; target >= 3x on
2 CPU cores. ``--quick``: 32 images x 160 captions. Usage::

    python benchmarks/bench_scan.py [--quick] [--repeats R] [--threads T]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daimlib.similarity import scan_t2i  # noqa: E402


def reference_loop_t2i(
    img: torch.Tensor, txt: torch.Tensor, lens: torch.Tensor, lam: float = 9.0
) -> torch.Tensor:
    """Spec 2.1 t2i, one caption at a time against all images (the reference code's loop shape)."""
    n_img = img.shape[0]
    cols = []
    for c in range(txt.shape[0]):
        n = int(lens[c])
        cap = txt[c, :n].unsqueeze(0).expand(n_img, n, txt.shape[2])  # [n_img, n, D]
        s = torch.bmm(img, cap.transpose(1, 2))  # [n_img, R, n]
        s = F.leaky_relu(s, 0.1)
        s = s / (s.norm(dim=2, keepdim=True) + 1e-8)  # L2 over words
        alpha = torch.softmax(lam * s.transpose(1, 2), dim=2)  # [n_img, n, R]: over regions
        ctx = torch.bmm(alpha, img)  # [n_img, n, D]: attended vectors a_w
        cos = (cap * ctx).sum(2) / (cap.norm(dim=2) * ctx.norm(dim=2)).clamp_min(1e-8)
        cols.append(cos.mean(1))
    return torch.stack(cols, 1)  # [n_img, n_cap]


def timed(fn, repeats: int) -> tuple[float, torch.Tensor]:
    out = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="32 images x 160 captions")
    ap.add_argument("--full", action="store_true", help="the default sizes (accepted for run_all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, --quick 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    if args.threads:
        torch.set_num_threads(args.threads)
    n_img, n_cap = (32, 160) if args.quick else (128, 640)
    R, L, D = 49, 20, 256
    g = torch.Generator().manual_seed(0)
    img = torch.randn(n_img, R, D, generator=g)  # [n_img, R, D]
    txt = torch.randn(n_cap, L, D, generator=g)  # [n_cap, L, D]
    lens = torch.randint(2, L + 1, (n_cap,), generator=g)  # [n_cap]
    with torch.no_grad():
        t_ref, s_ref = timed(lambda: reference_loop_t2i(img, txt, lens), args.repeats)
        t_new, s_new = timed(lambda: scan_t2i(img, txt, lens), args.repeats)
        t_dir, s_dir = timed(lambda: scan_t2i(img, txt, lens, use_gram=False), args.repeats)
    rows = [
        ("reference loop (per caption)", t_ref, s_ref),
        ("scan_t2i (blocked, Gram |a|^2)", t_new, s_new),
        ("scan_t2i (blocked, direct a_w)", t_dir, s_dir),
    ]
    print(
        f"SCAN t2i, {n_img} images x {n_cap} captions, R={R}, L<={L} (mean {lens.float().mean():.1f}), D={D}, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}"
    )
    print(f"{'method':34s} {'time (s)':>9s} {'speed-up':>9s} {'max |diff|':>11s}")
    for name, t, s in rows:
        print(f"{name:34s} {t:9.3f} {t_ref / t:8.2f}x {(s - s_ref).abs().max().item():11.2e}")
    ok = all((s - s_ref).abs().max().item() < 1e-4 for _, _, s in rows)
    print("same scores to 1e-4:", "yes" if ok else "NO")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
