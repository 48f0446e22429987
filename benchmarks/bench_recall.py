"""Recall from a similarity matrix: exact ranks by counting (daimlib) vs a full argsort of both directions.

COCO 5K shape by default (5,000 images x 25,000 captions, float32); ``--quick``: 1,000 x 5,000.
Target (issue 3): at most 2 s and 300 MB extra memory on 2 CPU cores. Each method runs in its own
forked process; "extra memory" is the peak resident memory above the matrix itself (Linux
``VmHWM`` after resetting it). Usage::

    python benchmarks/bench_recall.py [--quick] [--images N] [--repeats R]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import sys
import time
from pathlib import Path

import numpy as np
from _check import agrees, exit_code  # benchmarks/_check.py (run as a script from this folder)

RANK_TOL = 0  # ranks are integers: any difference is a disagreement


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return -1


def argsort_ranks(sims: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reference-style ranks: a full argsort of every row and every column."""
    n_img = sims.shape[0]
    order = np.argsort(-sims, axis=1)  # [n_img, n_cap] caption order per image
    i2t = (idx[order] == np.arange(n_img)[:, None]).argmax(1)  # first own caption
    del order
    order = np.argsort(-sims, axis=0)  # [n_img, n_cap] image order per caption
    t2i = (order == idx[None, :]).argmax(0)
    return i2t, t2i


def _run(method: str, n_img: int, cpi: int, repeats: int, queue) -> None:
    # imported in the forked child only, so its memory baseline holds no parent state
    import torch  # noqa: PLC0415

    from daimlib.evaluate import i2t_t2i_ranks, recall_metrics  # noqa: PLC0415

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    idx = np.repeat(np.arange(n_img), cpi)
    sims = rng.standard_normal((n_img, n_img * cpi), dtype=np.float32)  # [n_img, n_cap]
    sims[idx, np.arange(idx.size)] += 2.0
    base = _status_kb("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # reset the peak resident size (VmHWM)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        if method == "counting (daimlib)":
            recall_metrics(sims, idx)
        else:
            ranks = argsort_ranks(sims, idx)
        times.append(time.perf_counter() - t0)
    if method == "counting (daimlib)":
        ranks = i2t_t2i_ranks(sims, idx)  # for the equality check, outside the timing
    extra_mb = (_status_kb("VmHWM") - base) / 1024
    queue.put((method, min(times), extra_mb, [r.tolist() for r in ranks]))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="1,000 x 5,000 instead of 5,000 x 25,000")
    ap.add_argument("--images", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    n_img = args.images or (1000 if args.quick else 5000)
    ctx = mp.get_context("fork")
    results = []
    for method in ("counting (daimlib)", "full argsort, both directions"):
        q = ctx.Queue()
        p = ctx.Process(target=_run, args=(method, n_img, 5, 1 if "argsort" in method else args.repeats, q))
        p.start()
        results.append(q.get())
        p.join()
    same = all(np.array_equal(a, b) for a, b in zip(results[0][3], results[1][3]))
    print(f"recall from a {n_img:,} x {5 * n_img:,} float32 matrix (ranks identical: {same})")
    print(f"{'method':<32}{'time (s)':>10}{'extra memory (MB)':>20}")
    for method, t, mb, _ in results:
        print(f"{method:<32}{t:>10.2f}{mb:>20.0f}")
    print(f"speed-up {results[1][1] / results[0][1]:.1f}x; target for 5,000 x 25,000: <= 2 s and <= 300 MB")
    worst = max(
        float(np.abs(np.asarray(a) - np.asarray(b)).max()) for a, b in zip(results[0][3], results[1][3])
    )
    return exit_code(agrees("ranks, counting vs argsort", worst, RANK_TOL))


if __name__ == "__main__":
    sys.exit(main())
