"""The demo training step on a CPU: steps/s before and after the step's speed-ups, side by side.

One step = a batch from the caption-level DataLoader (decode, RandomResizedCrop, normalise),
``DAIM.forward`` (both encoders, three SCAN levels), ``MatchingLoss``, backward, AdamW, as
``daimlib.train.train_step`` runs it, with the ``demo`` preset (batch 64) on the generated demo
data. Each setting runs in its own process (the allocator setting only takes effect in a fresh one):

- ``before``: glibc's default allocator, SCAN in one large block under autograd (the old CPU
  training path), every image decoded from disk each time it is drawn;
- ``+ allocator``: :func:`daimlib.runtime.tune_cpu_allocator` (freed activations reused);
- ``+ SCAN blocks``: cache-sized SCAN blocks in training too, captions cut per block;
- ``+ t2i backward``: the hand-written backward of the t2i SCAN block
  (``daimlib.similarity._T2IBlock``) instead of autograd's;
- ``after``: all three, plus decoded images cached (``train()`` on a CPU does all of this except the
  t2i backward, which is off by default: ``daimlib.similarity.FUSED_T2I_BACKWARD``).

Results are equal up to float rounding: the script checks that the first steps' losses of every
setting agree with ``before``'s to 1e-5 relative (same seed, same batches; reordered float sums
differ in the last bits, nothing more). ``--parallel`` also times two one-thread
processes side by side (how ``ablate --jobs 2`` uses two cores). Usage::

    python benchmarks/bench_train_step.py [--steps 20] [--threads 2] [--rounds 3] [--parallel] [--data-root data/demo]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SETTINGS = {
    "before": dict(allocator=False, blocks=False, cache=False, fused=False),
    "+ allocator": dict(allocator=True, blocks=False, cache=False, fused=False),
    "+ SCAN blocks": dict(allocator=False, blocks=True, cache=False, fused=False),
    "+ t2i backward": dict(allocator=False, blocks=False, cache=False, fused=True),
    "after": dict(allocator=True, blocks=True, cache=True, fused=True),
}
WARMUP = 3
LOSS_STEPS = 5  # steps whose losses must agree across settings


def worker(setting: str, steps: int, threads: int, data_root: str, preset: str) -> dict:
    """Time ``steps`` training steps under ``setting`` in this process; returns the timings."""
    import torch

    torch.set_num_threads(threads)
    opts = SETTINGS[setting]
    from daimlib import runtime
    from daimlib import similarity as S

    if opts["allocator"]:
        runtime.tune_cpu_allocator()
    if not opts["blocks"]:
        S.CPU_BLOCK_BYTES = S.GPU_BLOCK_BYTES  # the old path: one block for the whole batch under autograd
    S.FUSED_T2I_BACKWARD = opts["fused"]
    from torch.utils.data import DataLoader

    from daimlib.config import load_preset
    from daimlib.data import load_split, load_tokenizer
    from daimlib.data.datasets import CaptionDataset, build_transforms, collate
    from daimlib.losses import MatchingLoss
    from daimlib.model import DAIM

    cfg = load_preset(preset)
    tok = load_tokenizer(cfg.text, data_root)
    split = load_split(cfg.data, data_root, "train")
    ds = CaptionDataset(
        split, tok, build_transforms(cfg.data, train=True), cfg.text.max_len, cache_images=opts["cache"]
    )
    gen = torch.Generator().manual_seed(0)
    dl = DataLoader(
        ds,
        batch_size=cfg.train.batch_size,
        shuffle=True,
        collate_fn=collate,
        drop_last=True,
        generator=gen,
        num_workers=0,
    )
    torch.manual_seed(0)
    model = DAIM.from_config(cfg).train()
    loss_fn = MatchingLoss.from_config(cfg.loss)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.train.lr)
    it = iter(dl)
    losses, times = [], []
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        batch = next(it)
        out = model(batch)
        lo = loss_fn(out.scores, step=i, img_index=out.img_index)
        lo.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        losses.append(float(lo.loss.detach()))
    t = times[WARMUP:]
    return {
        "setting": setting,
        "threads": threads,
        "steps": steps,
        "s_per_step": sum(t) / len(t),
        "losses": losses[:LOSS_STEPS],
    }


def _spawn(setting: str, args, threads: int) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    env.pop("DAIM_CPU_ALLOCATOR", None)
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        setting,
        "--steps",
        str(args.steps),
        "--threads",
        str(threads),
        "--data-root",
        args.data_root,
        "--preset",
        args.preset,
    ]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)


def _result(proc: subprocess.Popen) -> dict:
    out, _ = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"a benchmark worker failed (exit {proc.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps per setting (after 3 warm-up steps)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of each single-process setting")
    ap.add_argument("--data-root", default="data/demo")
    ap.add_argument("--preset", default="demo")
    ap.add_argument(
        "--rounds",
        type=int,
        default=3,
        help="rounds of all settings in turn; the median per setting is reported (robust to a busy machine)",
    )
    ap.add_argument(
        "--parallel",
        action="store_true",
        help="also time every setting as two one-thread processes side by side",
    )
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker, args.steps, args.threads, args.data_root, args.preset)))
        return 0
    if not (Path(args.data_root) / "dataset.json").exists() and not any(Path(args.data_root).glob("*.json")):
        raise SystemExit(
            f"no demo data at {args.data_root}: run `python -m daimlib make-demo-data --root {args.data_root}`"
        )
    from _check import agrees, exit_code

    load = os.getloadavg()[0]
    rounds = [[_result(_spawn(s, args, args.threads)) for s in SETTINGS] for _ in range(max(1, args.rounds))]
    rows = []
    for k in range(len(SETTINGS)):  # the median round of each setting (settings alternate within a round)
        ordered = sorted((r[k] for r in rounds), key=lambda r: r["s_per_step"])
        rows.append(ordered[len(ordered) // 2])
    base = rows[0]
    print(
        f"# demo training step (preset {args.preset}, batch 64), {args.steps} timed steps, {args.threads} thread(s), "
        f"median of {len(rounds)} round(s); load average at the start: {load:.1f}"
    )
    print(f"{'setting':<16}{'ms/step':>10}{'steps/s':>10}{'speed-up':>10}")
    for r in rows:
        print(
            f"{r['setting']:<16}{1000 * r['s_per_step']:>10.1f}{1 / r['s_per_step']:>10.2f}"
            f"{base['s_per_step'] / r['s_per_step']:>9.2f}x"
        )
    checks = []
    for r in rows[1:]:
        diff = max(abs(a - b) / max(1.0, abs(b)) for a, b in zip(r["losses"], base["losses"]))
        checks.append(
            agrees(f"'{r['setting']}' first {LOSS_STEPS} losses vs 'before' (relative)", diff, 1e-5)
        )
    if args.parallel:  # two one-thread processes of the same setting at once, in rounds as above
        prounds = []
        for _ in range(max(1, args.rounds)):
            row = []
            for setting in SETTINGS:
                procs = [_spawn(setting, args, 1) for _ in range(2)]
                res = [_result(p) for p in procs]
                row.append((setting, sum(1 / r["s_per_step"] for r in res), [r["s_per_step"] for r in res]))
            prounds.append(row)
        print(
            f"# two 1-thread processes side by side (as `ablate --jobs 2`), median of {len(prounds)} round(s)"
        )
        print(f"{'setting':<16}{'steps/s (both)':>16}{'ms/step each':>16}{'speed-up':>10}")
        base_rate = None
        for k, setting in enumerate(SETTINGS):
            ordered = sorted((r[k] for r in prounds), key=lambda r: r[1])
            _, rate, each = ordered[len(ordered) // 2]
            base_rate = base_rate or rate
            print(
                f"{setting:<16}{rate:>16.2f}{1000 * each[0]:>8.0f}{1000 * each[1]:>8.0f}{rate / base_rate:>9.2f}x"
            )
    return exit_code(*checks)


if __name__ == "__main__":
    sys.exit(main())
