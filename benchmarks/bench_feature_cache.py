"""Seconds per frozen-phase epoch with and without the feature cache, on the same data, side by side.

Three trainings of one epoch each (``daimlib.train.train``, no validation) with a preset whose
encoders are frozen (default ``laptop_f8k_offline``: the wheel encoders, no network):

- ``frozen_live``: the deterministic frozen phase (eval-mode encoders, centre crops) computed live,
  every step runs both encoders: the "without cache" column;
- ``frozen`` epoch 0: the same, with the cache built on first use (both encoders run once over the
  training split, then the heads train from the memory-mapped features);
- ``frozen`` epoch 1: an epoch from the finished cache (what every later frozen epoch costs);
- with ``--reference``, also ``off`` (the reference: train-mode encoders, random crops).

The check: the first epoch's losses of ``frozen`` and ``frozen_live`` agree (fp32 cache: 1e-4
relative; fp16: 2e-2), so the speed-up is of the same computation. Data: a generated Flickr30K-layout
folder of ``--train-images`` images (5 captions each) unless ``--data-root`` is given. Usage::

    python benchmarks/bench_feature_cache.py [--train-images 200] [--threads 2] [--dtype fp32]
        [--preset laptop_f8k_offline] [--data-root DIR] [--reference] [--quick]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _check import agrees, exit_code  # noqa: E402


def _run(cfg_over: dict, preset: str, data, out: Path, epochs: int):
    from daimlib.config import load_preset
    from daimlib.train import train

    over = {"train.epochs": epochs, "train.freeze_epochs": epochs, "data.num_workers": 0, **cfg_over}
    cfg = load_preset(preset, **over)
    t0 = time.time()
    res = train(cfg, data, out, progress=False, eval_split=None)
    return res, time.time() - t0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="laptop_f8k_offline")
    ap.add_argument("--data-root", default=None, help="a dataset folder (default: a generated one)")
    ap.add_argument("--train-images", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="fp32", choices=("fp32", "fp16"))
    ap.add_argument("--reference", action="store_true", help="also time the reference setting 'off'")
    ap.add_argument("--quick", action="store_true", help="40 training images (run_all's quick mode)")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from daimlib.data import make_f30k_layout

    work = Path(tempfile.mkdtemp(prefix="bench_feature_cache-"))
    os.environ["DAIM_CACHE_DIR"] = str(work / "cache")  # a fresh cache: epoch 0 builds it
    n_train = 40 if args.quick else args.train_images
    data = args.data_root
    if data is None:
        data = work / "data"
        make_f30k_layout(data, n_train=n_train, n_val=5, n_test=5, seed=0)
    common = {"train.feature_cache_dtype": args.dtype}
    rows = []
    live, t_live = _run({**common, "train.feature_cache": "frozen_live"}, args.preset, data, work / "live", 1)
    rows.append(("frozen_live (no cache)", float(live.epochs["epoch_s"].iloc[0])))
    cached, _ = _run({**common, "train.feature_cache": "frozen"}, args.preset, data, work / "cached", 2)
    rows.append(("frozen, epoch 0 (builds the cache)", float(cached.epochs["epoch_s"].iloc[0])))
    rows.append(("frozen, epoch 1 (from the cache)", float(cached.epochs["epoch_s"].iloc[1])))
    if args.reference:
        off, _ = _run({"train.feature_cache": "off"}, args.preset, data, work / "off", 1)
        rows.append(("off (reference: train mode, random crops)", float(off.epochs["epoch_s"].iloc[0])))
    steps = len(live.steps)
    print(
        f"# {args.preset}, {steps} steps of batch {live.cfg.train.batch_size} per epoch "
        f"({steps * live.cfg.train.batch_size} captions), {torch.get_num_threads()} threads, "
        f"cache {args.dtype}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(f"{'setting':<44} {'s/epoch':>9} {'s/step':>8} {'speed-up':>9}")
    base = rows[0][1]
    for name, sec in rows:
        print(f"{name:<44} {sec:9.1f} {sec / steps:8.3f} {base / sec:8.1f}x")
    first = cached.steps[cached.steps["epoch"] == 0]["loss"].to_numpy()
    ref = live.steps["loss"].to_numpy()
    rel = float(abs(first - ref).max() / max(abs(ref).max(), 1e-12))
    return exit_code(
        agrees("frozen vs frozen_live losses (relative)", rel, 1e-4 if args.dtype == "fp32" else 2e-2)
    )


if __name__ == "__main__":
    sys.exit(main())
