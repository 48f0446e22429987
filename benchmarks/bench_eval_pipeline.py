"""The whole evaluation of the demo test split with the demo model: daimlib vs a reference-style pipeline.

Stages timed on the same model and inputs:

- daimlib: each image encoded once (image-level loader), each caption once, fp32 caches on a
  CPU; similarity over image x caption blocks; exact ranks by counting;
- reference-style (DAIM/HAT ``evaluation.py``, spec sections 7 and 10 A4): a caption-level loader
  that encodes every image once per caption, float64 feature copies per caption, images
  subsampled ``[::5]``, the similarity in a loop over captions, and ranks by one argsort per query.

The model is the ``demo`` preset with random weights (timings do not depend on the weights). Usage::

    python benchmarks/bench_eval_pipeline.py [--quick] [--root data/demo] [--device cpu]

``--quick`` uses the small demo dataset (50 test images, 250 captions) in ``data/demo_small``.
On the full test split the reference-style caption loop is timed on ``--ref-captions`` captions
(default 250) and scaled linearly to all 2,500 (it would take many minutes on a CPU).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _check import agrees, exit_code  # benchmarks/_check.py (run as a script from this folder)

from daimlib.config import load_preset
from daimlib.data import (
    CaptionDataset,
    build_transforms,
    collate,
    load_split,
    load_tokenizer,
    make_demo_dataset,
    tokenize,
)
from daimlib.evaluate import encode_split, recall_metrics, similarity_matrix
from daimlib.model import DAIM

SIM_TOL = 1e-5  # fp32 scores of two orders of summation
RECALL_TOL = 1e-9  # the recalls must be identical


def evalrank_loop(sims: np.ndarray, img_of_caption: np.ndarray) -> dict[str, float]:
    """VSE++ evalrank as the reference runs it: one argsort per query."""
    n_img, n_cap = sims.shape
    i2t = np.array(
        [
            min(np.where(np.argsort(sims[i])[::-1] == j)[0][0] for j in np.where(img_of_caption == i)[0])
            for i in range(n_img)
        ]
    )
    t2i = np.array([np.where(np.argsort(sims[:, j])[::-1] == img_of_caption[j])[0][0] for j in range(n_cap)])
    out = {}
    for name, r in (("i2t", i2t), ("t2i", t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * float(np.mean(r < k))
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


@torch.no_grad()
def reference_style(
    model, split, tok, cfg, device, batch_size: int, n_loop: int | None, kit_sims: np.ndarray
):
    """Encode per caption (images 5x, float64 copies), loop over captions for the similarity.

    The caption loop runs over the first ``n_loop`` captions and its time is scaled to all of
    them (the loop's cost is linear in the captions); the ranking loop runs on ``kit_sims``
    where the reference matrix is partial.
    """
    times = {}
    t0 = time.perf_counter()
    ds = CaptionDataset(split, tok, build_transforms(cfg.data, train=False), cfg.text.max_len)
    loader = torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=False, collate_fn=collate)
    img_feats, txt_feats, lens = [[], [], []], [[], [], []], []
    for batch in loader:
        img = model.encode_image(batch["images"].to(device))  # the image again for every caption
        txt, ln = model.encode_text(batch["input_ids"].to(device), batch["attention_mask"].to(device))
        for k in range(3):
            img_feats[k].append(img[k].double().cpu())
            txt_feats[k].append(txt[k].double().cpu())
        lens.append(ln.cpu())
    img_levels = [torch.cat(p)[::5] for p in img_feats]  # the reference's [::5]: 5 captions per image
    txt_levels = [torch.cat(p) for p in txt_feats]
    txt_lens = torch.cat(lens)
    feat_mb = sum(torch.cat(p).numel() * 8 for p in img_feats + txt_feats) / 2**20
    times["encoding"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    n_img, n_cap = img_levels[0].shape[0], txt_levels[0].shape[0]
    n_loop = n_cap if n_loop is None else min(n_loop, n_cap)
    sims = np.zeros((n_img, n_loop))
    img32 = [lv.float().to(device) for lv in img_levels]
    for j in range(n_loop):  # one caption against every image
        n = int(txt_lens[j])
        txt = [lv[j : j + 1, :n].float().to(device) for lv in txt_levels]
        sims[:, j] = model.similarity(img32, txt, txt_lens[j : j + 1].to(device)).double().cpu().numpy()[:, 0]
    times["similarity"] = (time.perf_counter() - t0) * n_cap / n_loop
    t0 = time.perf_counter()
    metrics = evalrank_loop(sims if n_loop == n_cap else kit_sims, split.img_of_caption.numpy())
    times["ranking"] = time.perf_counter() - t0
    return times, sims, metrics, feat_mb


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="small demo dataset (50 test images)")
    ap.add_argument("--root", default=None, help="demo data folder (generated if missing)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument(
        "--ref-captions",
        type=int,
        default=250,
        help="captions the reference-style loop runs over (time scaled to all); --quick: all",
    )
    args = ap.parse_args(argv)
    root = Path(args.root or ("data/demo_small" if args.quick else "data/demo"))
    make_demo_dataset(root, seed=0, size="small" if args.quick else "default", progress=False)
    cfg = load_preset("demo")
    torch.manual_seed(0)
    device = torch.device(args.device)
    model = DAIM.from_config(cfg).to(device).eval()
    split = load_split(cfg.data, root, "test")
    tok = load_tokenizer(cfg.text, root)

    with torch.no_grad():  # warm-up (first-call allocations), outside every timing
        img = model.encode_image(torch.zeros(8, 3, cfg.data.img_size, cfg.data.img_size, device=device))
        txt, lens = model.encode_text(
            *[t.to(device) for t in tokenize(tok, split.captions[:8], cfg.text.max_len)]
        )
        model.similarity(img, txt, lens)

    kit = {}
    t0 = time.perf_counter()
    feats = encode_split(
        model, split, tok, cfg.data, cfg.text.max_len, device, args.batch_size, progress=False
    )
    kit["encoding"] = time.perf_counter() - t0
    kit_mb = sum(t.numel() * t.element_size() for t in feats.img_levels + feats.txt_levels) / 2**20
    t0 = time.perf_counter()
    sims = similarity_matrix(model, feats, progress=False)
    kit["similarity"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    metrics = recall_metrics(sims, split.img_of_caption)
    kit["ranking"] = time.perf_counter() - t0
    print("daimlib stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in kit.items()), flush=True)

    n_loop = None if args.quick else args.ref_captions
    ref, ref_sims, ref_metrics, ref_mb = reference_style(
        model, split, tok, cfg, device, args.batch_size, n_loop, sims
    )
    diff = float(np.abs(ref_sims - sims[:, : ref_sims.shape[1]]).max())
    same = all(abs(metrics[k] - ref_metrics[k]) < 1e-9 for k in ref_metrics)
    print(
        f"demo test split: {split.n_images} images x {split.n_captions} captions, demo model, {device}, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"{'stage':<14}{'daimlib (s)':>13}{'reference-style (s)':>22}{'speed-up':>10}")
    for stage in ("encoding", "similarity", "ranking"):
        print(f"{stage:<14}{kit[stage]:>13.2f}{ref[stage]:>22.2f}{ref[stage] / kit[stage]:>9.1f}x")
    tk, tr = sum(kit.values()), sum(ref.values())
    print(f"{'total':<14}{tk:>13.2f}{tr:>22.2f}{tr / tk:>9.1f}x")
    print(
        f"cached features: {kit_mb:.0f} MB (daimlib) vs {ref_mb:.0f} MB (reference-style float64 per caption)"
    )
    print(
        f"max |S_daimlib - S_reference| = {diff:.2e}; identical recalls: {same}; RSUM {metrics['rsum']:.1f}"
    )
    recall_gap = max(abs(metrics[k] - ref_metrics[k]) for k in ref_metrics)
    return exit_code(agrees("score matrix", diff, SIM_TOL), agrees("recalls", recall_gap, RECALL_TOL))


if __name__ == "__main__":
    sys.exit(main())
