"""Time per epoch of a laptop preset on a Flickr8k-sized folder, measured on a fraction and extrapolated.

Flickr8k (Karpathy split): 8,091 images, 40,455 captions; train 6,091 images here (the Karpathy
train 6,000 plus the 91 images outside its splits, so that the folder has Flickr8k's size), val 1,000,
test 1,000. Building a whole stand-in folder and its cache takes long on a shared 2-core machine, so
this script times a fraction and scales each part linearly by what it processes:

1. the cache build (both frozen encoders over ``--images`` training images and their 5 captions
   each): seconds per image (+ its captions) -> x 6,091;
2. ``--steps`` training steps from the cache: seconds per step -> x (30,455 captions // batch);
3. one validation on ``train.val_images`` val images (the preset validates on the first 250).

An epoch from the cache = 2 + 3; the first epoch adds 1 (the cache is reused by every later run
with the same weights, data and preprocessing). Images are generated stand-ins
(``daimlib.data.make_f30k_layout``: Flickr-sized JPEGs) unless ``--data-root`` names a real folder.
Usage::

    python scripts/time_laptop_preset.py [--preset laptop_f8k_offline] [--images 200] [--steps 20] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

F8K = {"images": 8091, "train_images": 6091, "captions": 40455, "train_captions": 6091 * 5}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default=None, help="default: daimlib.pretrained.pick_laptop_preset()")
    ap.add_argument("--images", type=int, default=200, help="training images of the timed fraction")
    ap.add_argument("--steps", type=int, default=20, help="training steps timed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    from daimlib import feature_cache as fc
    from daimlib.config import load_preset
    from daimlib.data import first_images, load_split, load_tokenizer, make_f30k_layout
    from daimlib.model import DAIM
    from daimlib.pretrained import pick_laptop_preset
    from daimlib.runtime import seed_everything
    from daimlib.train import train

    preset = args.preset or pick_laptop_preset()
    work = Path(tempfile.mkdtemp(prefix="time_laptop-"))
    os.environ["DAIM_CACHE_DIR"] = str(work / "cache")
    cfg = load_preset(preset, **{"train.max_steps": args.steps, "train.epochs": 1, "train.freeze_epochs": 1})
    data = args.data_root
    if data is None:
        data = work / "data"
        t = time.time()
        make_f30k_layout(data, n_train=args.images, n_val=cfg.train.val_images or 250, n_test=5, seed=0)
        print(
            f"# generated {args.images} + {cfg.train.val_images} stand-in images in {time.time() - t:.0f} s"
        )
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# {preset}, {torch.get_num_threads()} threads; before: {uptime}")
    # 1. the cache build, on the fraction (the same model train() builds: same seed, same weights)
    seed_everything(cfg.train.seed)
    model = DAIM.from_config(cfg, pretrained=True)
    split = load_split(cfg.data, data, "train")
    split = first_images(split, min(args.images, split.n_images))
    tok = load_tokenizer(cfg.text, data)
    t = time.time()
    fc.cached_pairs(model, cfg, split, tok, torch.device("cpu"), progress=True)
    build = time.time() - t
    del model
    # 2 + 3. steps from the cache, then one validation
    t = time.time()
    res = train(cfg, data, work / "run", progress=True)
    total = time.time() - t
    steps = res.steps["step_s"].to_numpy()
    per_step = float(sorted(steps)[len(steps) // 2])
    epoch_s = float(res.epochs["epoch_s"].iloc[0])
    val = total - epoch_s  # validation + checkpoints + set-up outside the epoch
    n_steps = F8K["train_captions"] // cfg.train.batch_size
    per_image = build / split.n_images
    full_build = per_image * F8K["train_images"]
    epoch = n_steps * per_step + val
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# after: {uptime}")
    print(f"{'part':<52} {'measured':>16} {'Flickr8k-sized':>16}")
    print(
        f"{'cache build (both encoders, images + 5 captions)':<52} {per_image:10.3f} s/img "
        f"{full_build / 60:12.1f} min"
    )
    print(
        f"{'training step from the cache (median)':<52} {per_step:11.3f} s/step "
        f"{n_steps * per_step / 60:12.1f} min"
    )
    print(
        f"{'validation (' + str(cfg.train.val_images) + ' val images) + checkpoints':<52} {val:13.1f} s "
        f"{val / 60:12.1f} min"
    )
    print(
        f"{'epoch from the cache (' + str(n_steps) + ' steps + validation)':<52} {'':>16} {epoch / 60:12.1f} min"
    )
    print(f"{'first epoch (cache build + epoch)':<52} {'':>16} {(full_build + epoch) / 60:12.1f} min")
    n_ep = load_preset(preset).train.epochs
    print(
        f"{'the preset: ' + str(n_ep) + ' epochs (build once)':<52} {'':>16} "
        f"{(full_build + n_ep * epoch) / 60:12.1f} min"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
