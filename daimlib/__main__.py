"""Command line of DAIM Kit: ``python -m daimlib <command> ...`` (also installed as ``daim``).

Commands: make-demo-data, make-f30k-like, train, evaluate, ablate, bench. ``python -m daimlib <command> --help``
explains each one. Multi-GPU: ``torchrun --nproc_per_node=N -m daimlib train ...``.
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
  torchrun --nproc_per_node=4 -m daimlib train --preset daim_coco --data-root data/coco --out runs/coco

pretrained weights on a machine without internet: --set image.weights=PATH text.weights=DIR
(a timm .safetensors/.pth file and a transformers save_pretrained folder).
"""


def _add_set(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--set", nargs="+", action="extend", default=[], metavar="KEY=VALUE",
        help="config overrides as dotted keys, e.g. --set train.epochs=3 train.lr=1e-4 loss.adaptive=false",
    )  # fmt: skip


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
    p.add_argument("--preset", required=True, help="preset name (see daimlib.config.PRESETS)")
    p.add_argument("--data-root", required=True, help="dataset folder (Karpathy JSON + images)")
    p.add_argument("--out", required=True, help="run folder for checkpoints and history")
    _add_set(p)
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from OUT/last (exactly: as if never stopped)")  # fmt: skip
    p.add_argument("--overwrite", action="store_true",
                   help="replace the kit run in --out (deletes only the files the kit wrote)")  # fmt: skip
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--no-val", action="store_true", help="skip validation (no best checkpoint)")

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
        "the .json with the data's identity (layout, annotation file sha256) and the split sizes.",
    )
    p.add_argument("--checkpoint", required=True, help="checkpoint folder (e.g. runs/demo/best)")
    p.add_argument("--data-root", required=True, help="dataset folder")
    p.add_argument("--protocol", choices=["demo", "f30k", "coco1k", "coco5k"], required=True)
    p.add_argument("--split", default="test", help="split to evaluate (default test)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1, mps (default auto)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="encoding batch size (default train.eval_batch_size)"
    )
    p.add_argument("--ties", choices=["pessimistic", "optimistic"], default="pessimistic",
                   help="how a negative tied with the positive counts (default pessimistic: against it)")  # fmt: skip
    p.add_argument("--features", choices=["auto", "fp32"], default=None,
                   help="feature cache precision: auto = half on a GPU, fp32 on a CPU (default); fp32 everywhere")  # fmt: skip
    p.add_argument("--strict", action="store_true",
                   help="refuse a split whose size is not the protocol's (f30k: 1,000 images; coco: 5,000)")  # fmt: skip

    p = sub.add_parser(
        "ablate",
        parents=[common],
        help="train + evaluate ablation variants per seed; writes a mean ± std table",
        description="Train and test-evaluate each variant (baseline, fdm, mom, daim, fdm_text, high_only; "
        "see daimlib.ablation) for each seed, one run after another, into OUT/<variant>_seed<k>; writes "
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
    _add_set(p)

    p = sub.add_parser(
        "bench",
        parents=[common],
        help="run the benchmark scripts and print their tables",
        description="Run every script in benchmarks/ (quick, reduced sizes by default) and print their "
        "comparison tables.",
    )
    p.add_argument("--full", action="store_true", help="full sizes (meant for a GPU; slow on a CPU)")
    p.add_argument("--only", nargs="+", default=None, help="run only these scripts (names without .py)")
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


def cmd_train(args) -> int:
    from .checkpoint import display_path
    from .config import load_preset, parse_overrides
    from .train import train

    cfg = load_preset(args.preset, **parse_overrides(args.set))
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
    from .checkpoint import load_checkpoint
    from .data import load_split, load_tokenizer
    from .evaluate import data_identity, evaluate, protocol_problem
    from .paths import display_path
    from .runtime import torch_device
    from .tables import write_table

    device = torch_device(args.device or "auto")
    model, cfg, _ = load_checkpoint(args.checkpoint, device=device, strict=True)
    model.to(device).eval()
    split = load_split(cfg.data, args.data_root, args.split)
    problem = protocol_problem(args.protocol, split.n_images)
    if problem and args.strict:
        raise ValueError(
            f"{problem}; --strict refuses it (drop --strict to label the table with the real sizes)"
        )
    if problem:
        print(f"note: {problem}; the table is labelled with the real sizes", file=sys.stderr)
    tokenizer = load_tokenizer(cfg.text, args.data_root)
    metrics, table = evaluate(model, split, tokenizer, cfg, protocol=args.protocol, device=device,
                              batch_size=args.batch_size, progress=not args.quiet, ties=args.ties,
                              features=args.features)  # fmt: skip
    table.index = [f"{cfg.name} {args.split}, {table.index[0]}"]
    _print_table(table, f"{display_path(args.checkpoint)}:")
    ckpt = Path(args.checkpoint)
    stem = ckpt.resolve().parent / f"eval_{ckpt.resolve().name}_{args.split}_{args.protocol}"
    written = write_table(table, stem, caption=f"{cfg.name}, {args.split} split, {table.index[0]}")
    record = {
        "checkpoint": display_path(args.checkpoint), "split": args.split, "protocol": args.protocol,
        "paper_protocol": problem is None and args.protocol != "demo", "protocol_note": problem,
        "ties": args.ties, "features": args.features or getattr(cfg.train, "eval_features", "auto"),
        "data": data_identity(split), "metrics": {k: float(v) for k, v in metrics.items()},
    }  # fmt: skip
    stem.with_suffix(".json").write_text(json.dumps(record, indent=2) + "\n")
    print("written: " + ", ".join(display_path(p) for p in [*written, stem.with_suffix(".json")]))
    return 0


def cmd_ablate(args) -> int:
    from .ablation import ablate
    from .checkpoint import display_path
    from .config import parse_overrides

    try:
        runs = ablate(args.preset, args.variants, args.seeds, args.data_root, args.out, eval_split=args.split,
                      progress=not args.quiet, **parse_overrides(args.set))  # fmt: skip
    except KeyboardInterrupt as e:  # the interrupted run saved its state; nothing was recorded as a result
        print(f"interrupted: {e or 'Ctrl-C'}", file=sys.stderr)
        return 130
    summary = runs.attrs["summary"]
    cols = ["n_seeds"] + [c for c in ("i2t_r1", "t2i_r1", "rsum") if c in summary.columns]
    print(summary[cols].to_string())
    print(
        f"written: {display_path(Path(args.out) / 'runs.csv')}, {display_path(Path(args.out) / 'summary.csv')}"
    )
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


COMMANDS = {
    "make-demo-data": cmd_make_demo_data,
    "make-f30k-like": cmd_make_f30k_like,
    "train": cmd_train,
    "evaluate": cmd_evaluate,
    "ablate": cmd_ablate,
    "bench": cmd_bench,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    quiet = args.quiet or int(os.environ.get("RANK", "0")) > 0  # under torchrun, rank 0 speaks
    args.quiet = quiet
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(name)s: %(message)s")
    from .checkpoint import CheckpointError
    from .train import NonFiniteError, PretrainedWeightsError

    try:
        return COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, FileExistsError, CheckpointError, PretrainedWeightsError,
            NonFiniteError) as e:  # fmt: skip
        # errors a user can cause carry a message saying what to do: show it without a traceback
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
