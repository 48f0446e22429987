"""``evaluate --protocol paper`` against the separate calls it replaces, on a COCO-layout stand-in.

COCO's paper table has two rows, COCO 1K (the mean over 5 folds of 1,000 images) and COCO 5K, and
both come from the same 5,000 x 25,000 score matrix. Before the paper protocol they took two
``evaluate`` calls (``--protocol coco1k``, then ``--protocol coco5k``), each encoding every image
and caption and scoring every pair; the paper protocol encodes and scores once and reads both rows
from the one matrix. This script times both ways on the same model and data, in one process (model
loading and process start-up, the same for every call, are left out), side by side, and checks
that the metrics agree exactly.

Data: a generated MSCOCO-layout folder (:func:`daimlib.data.make_coco_layout`: the demo's pictures
and captions in ``dataset_coco.json`` + ``images/train2014``/``val2014``) with ``--test`` test
images; 5,000 (the default) is the COCO 5K size, so the rows are COCO 1K / COCO 5K; fewer keep the
rules on a smaller split. Model: the ``tiny`` preset (the demo's 64 px encoders, the tokenizer
built from the data) with random weights: timings do not depend on the weights. Usage::

    python benchmarks/bench_paper_protocol.py [--quick] [--test 5000] [--device cpu]

``--quick``: 250 test images (5 folds of 50), seconds to a minute on a CPU.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from _check import agrees, exit_code  # benchmarks/_check.py (run as a script from this folder)

from daimlib.config import load_preset
from daimlib.data import load_split, load_tokenizer, make_coco_layout, tokenize
from daimlib.evaluate import evaluate
from daimlib.model import DAIM
from daimlib.paper import evaluate_paper

STAGES = ("encode", "score", "rank")


def separate_calls(model, split, tok, cfg, device, batch: int) -> tuple[dict, dict]:
    """The two calls of before: ``coco1k`` then ``coco5k``, each encoding and scoring everything."""
    metrics, seconds = {}, {}
    for protocol in ("coco1k", "coco5k"):
        t0 = time.perf_counter()
        metrics[protocol], df = evaluate(
            model, split, tok, cfg, protocol=protocol, device=device, batch_size=batch, progress=False
        )
        seconds[protocol] = {**df.attrs["seconds"], "total": time.perf_counter() - t0}
    return metrics, seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="250 test images")
    ap.add_argument("--test", type=int, default=None, help="test images (default 5000: the COCO 5K size)")
    ap.add_argument("--root", default=None, help="the COCO-layout folder (generated if missing)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch-size", type=int, default=250)
    args = ap.parse_args(argv)
    n_test = args.test or (250 if args.quick else 5000)
    root = Path(args.root or f"runs/bench/coco_like_{n_test}")  # runs/ is ignored by git
    t0 = time.perf_counter()
    make_coco_layout(root, n_train=200, n_val=20, n_test=n_test, progress=True)
    print(
        f"COCO-layout stand-in: {n_test} test images, {time.perf_counter() - t0:.1f} s to generate or reuse"
    )
    cfg = load_preset("tiny", **{"data.num_workers": 0})
    torch.manual_seed(0)
    device = torch.device(args.device)
    split = load_split(root, "test", cfg)
    tok = load_tokenizer(cfg.text, root, data_cfg=cfg.data)
    model = DAIM.from_config(cfg).to(device).eval()
    with torch.no_grad():  # warm-up (first-call allocations), outside every timing
        img = model.encode_image(torch.zeros(8, 3, cfg.data.img_size, cfg.data.img_size, device=device))
        model.similarity(img, *model.encode_text(*[t.to(device) for t in tokenize(tok, split.captions[:8])]))

    def paper_call():
        t0 = time.perf_counter()
        res = evaluate_paper(
            model,
            split,
            tok,
            cfg,
            name="tiny (random weights)",
            device=device,
            batch_size=args.batch_size,
            progress=False,
        )
        return res, {**res.record["evaluation"]["seconds"], "total": time.perf_counter() - t0}

    # paper, the two calls, paper again: the paper protocol's time is the mean of its two runs, so
    # neither way gains from running first or last (warm caches, other jobs)
    paper, first = paper_call()
    sep_metrics, sep_s = separate_calls(model, split, tok, cfg, device, args.batch_size)
    _, second = paper_call()
    ctx = {k: (first[k] + second[k]) / 2 for k in first}
    print(
        f"\n{split.n_images} images x {split.n_captions} captions, tiny model, {device}, "
        f"{torch.get_num_threads()} threads; seconds"
    )
    print(
        f"{'stage':<8}{'--protocol paper':>18}{'coco1k call':>13}{'coco5k call':>13}{'both calls':>12}{'saved':>8}"
    )
    for stage in (*STAGES, "total"):
        mine = ctx[stage]
        a, b = sep_s["coco1k"][stage], sep_s["coco5k"][stage]
        print(f"{stage:<8}{mine:>18.2f}{a:>13.2f}{b:>13.2f}{a + b:>12.2f}{1 - mine / (a + b):>8.0%}")
    print(f"rows: {', '.join(dict.fromkeys(paper.table.index))}")
    gap = max(
        abs(paper.metrics[p][k] - float(sep_metrics[p][k])) for p in sep_metrics for k in sep_metrics[p]
    )
    return exit_code(agrees("metrics of the paper protocol vs the separate calls", gap, 0.0))


if __name__ == "__main__":
    sys.exit(main())
