"""ContraNorm (the FDM): fused ``daimlib.fdm.contranorm`` vs the explicit N×N softmax, forward + backward.

The explicit form builds softmax(x̂x̂ᵀ) as an [B, N, N] matrix (3136² per image at Swin-B stage 1);
the fused form calls ``scaled_dot_product_attention`` (q = k = x̂, v = x) and never stores it.
Default (issue 2): B = 4, N = 3136, C = 128; target peak memory >= 4x lower, time no worse.
``--quick``: N = 784. Each method runs in its own process; "peak extra memory" is the growth of the
process's peak resident memory (Linux ``VmHWM``, reset through ``/proc/self/clear_refs``) during one
forward + backward, above the inputs. Usage::

    python benchmarks/bench_contranorm.py [--quick] [--repeats R]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from daimlib.fdm import contranorm  # noqa: E402


def explicit_contranorm(x: torch.Tensor, scale: float = 0.1, tau: float = 1.0) -> torch.Tensor:
    """(1+s)x − s·softmax(x̂x̂ᵀ/τ)x with the [B, N, N] matrix materialised."""
    xh = F.normalize(x, dim=-1)
    a = torch.softmax(xh @ xh.transpose(1, 2) / tau, dim=-1)  # [B, N, N]
    return (1 + scale) * x - scale * (a @ x)


METHODS = {"explicit": explicit_contranorm, "fused (SDPA)": contranorm}


def _hwm_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _step(fn, x, grad):
    y = fn(x)
    y.backward(grad)
    x.grad = None


def _worker(name: str, shape: tuple[int, int, int], repeats: int, queue) -> None:
    fn = METHODS[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).requires_grad_(True)  # [B, N, C]
    grad = torch.randn(*shape, generator=g)
    small = torch.randn(shape[0], 64, shape[2]).requires_grad_(True)  # warm up kernels, not memory
    _step(fn, small, torch.ones_like(small))
    base = _rss_kb()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        reset = True
    except OSError:
        reset = False
    _step(fn, x, grad)
    peak = _hwm_kb() - base if reset else -1
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        _step(fn, x, grad)
        times.append(time.perf_counter() - t0)
    queue.put((peak / 1024, statistics.median(times)))


def run(name, shape, repeats):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_worker, args=(name, shape, repeats, q))
    p.start()
    out = q.get()
    p.join()
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="N = 784 instead of 3136")
    ap.add_argument("--full", action="store_true", help="the default sizes (accepted for run_all)")
    ap.add_argument("--repeats", type=int, default=None, help="timed runs (default 3, --quick 1)")
    args = ap.parse_args(argv)
    if args.repeats is None:
        args.repeats = 1 if args.quick else 3
    shape = (4, 784, 128) if args.quick else (4, 3136, 128)
    # correctness first (small, in this process)
    x = torch.randn(2, 200, 32, dtype=torch.float64)
    err = (contranorm(x) - explicit_contranorm(x)).abs().max().item()
    res = {name: run(name, shape, args.repeats) for name in METHODS}
    print(
        f"ContraNorm forward+backward, B={shape[0]}, N={shape[1]}, C={shape[2]}, fp32, CPU, "
        f"{torch.get_num_threads()} threads, median of {args.repeats}; max |fused - explicit| = {err:.1e}"
    )
    print(f"{'method':14s} {'peak extra MB':>14s} {'time (s)':>9s}")
    for name, (mb, t) in res.items():
        print(f"{name:14s} {mb:14.1f} {t:9.3f}")
    (m_e, t_e), (m_f, t_f) = res["explicit"], res["fused (SDPA)"]
    if m_f > 0:
        print(f"memory ratio explicit/fused: {m_e / m_f:.1f}x; time ratio explicit/fused: {t_e / t_f:.2f}x")
    return 0 if err < 1e-10 else 1


if __name__ == "__main__":
    sys.exit(main())
