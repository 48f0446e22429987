"""``python -m experiments <command>``: the experiments' command line (ablate, ablate-combine, demo-models).

The library's command line (``python -m daimlib``) trains and evaluates one model; these commands
orchestrate many runs. They share its argument helpers (``--set``, ``--config``, the weight flags).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from daimlib.__main__ import add_config_args, config_overrides, device_arg, run_cli

EPILOG = """\
examples:
  python -m experiments ablate --preset demo --variants baseline daim --seeds 2 --data-root data/demo \\
      --out runs/ablation --set train.max_minutes=2
  python -m experiments demo-models --data-root data/demo
  python -m experiments.recipe_search --seeds
"""


def _add_ablate(sub, common) -> None:
    p = sub.add_parser(
        "ablate",
        parents=[common],
        help="train + evaluate ablation variants per seed; writes a mean ± std table",
        description="Train and test-evaluate each variant (baseline, hat, fdm, mom, daim, fdm_text, high_only, "
        "no_low, no_mid, no_high; see daimlib.course.variants) for each seed, one run after another, into "
        "OUT/<variant>_seed<k>; writes OUT/runs.csv and OUT/summary.csv/.json (mean ± std per variant). "
        "Finished runs (same config, data and split) are reused; Ctrl-C exits 130 without recording the "
        "interrupted run, and the same command continues it where it stopped.",
    )
    p.add_argument("--preset", required=True)
    p.add_argument("--variants", nargs="+", default=["baseline", "fdm", "mom", "daim"])
    p.add_argument("--seeds", type=int, default=1, help="number of seeds (0..N-1)")
    p.add_argument("--data-root", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--split", default="test", help="split the best checkpoints are evaluated on")
    p.add_argument(
        "--jobs",
        type=int,
        default=1,
        help="runs trained at once, each in its own one-thread process (with train.max_steps budgets)",
    )
    add_config_args(p)


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
    p.add_argument(
        "--out", required=True, help="folder for the combined runs.csv and summary (may be a source's)"
    )
    p.add_argument("--variants", nargs="+", default=None, help="keep only these variants, in this order")


def _add_demo_models(sub, common) -> None:
    p = sub.add_parser(
        "demo-models",
        parents=[common],
        help="train (resumably) and export the shipped demo models: demo, demo_baseline, demo_hat",
        description="Train each arm with its preset into RUNS/<arm> (a finished run of the same config and "
        "data is reused, an interrupted one resumed), then write its best checkpoint in half precision to "
        "models/<arm> with its histories and the test metrics of the exported weights (metrics.json). "
        "See experiments/demo_models.py.",
    )
    p.add_argument(
        "--arms",
        nargs="+",
        default=["demo", "demo_baseline", "demo_hat"],
        choices=["demo", "demo_baseline", "demo_hat"],
    )
    p.add_argument("--data-root", default="data/demo", help="the generated demo data (make-demo-data)")
    p.add_argument("--runs", default=None, help="where the training runs go (default runs/demo_models)")
    p.add_argument("--device", type=device_arg, default="cpu")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m experiments",
        description=__doc__.split("\n\n")[0],
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars, warnings only")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_ablate(sub, common)
    _add_ablate_combine(sub, common)
    _add_demo_models(sub, common)
    return parser


def _print_ablation(runs, out: str) -> None:
    from daimlib.paths import display_path

    summary = runs.attrs["summary"]
    cols = ["n_seeds"] + [c for c in ("i2t_r1", "t2i_r1", "rsum") if c in summary.columns]
    print(summary[cols].to_string())
    print(f"written: {display_path(Path(out) / 'runs.csv')}, {display_path(Path(out) / 'summary.csv')}")


def cmd_ablate(args) -> int:
    from experiments.ablation import ablate

    try:
        runs = ablate(
            args.preset,
            args.variants,
            args.seeds,
            args.data_root,
            args.out,
            eval_split=args.split,
            progress=not args.quiet,
            jobs=args.jobs,
            **config_overrides(args),
        )
    except KeyboardInterrupt as e:  # the interrupted run saved its state; nothing was recorded as a result
        print(f"interrupted: {e or 'Ctrl-C'}", file=sys.stderr)
        return 130
    _print_ablation(runs, args.out)
    return 0


def cmd_ablate_combine(args) -> int:
    from experiments.ablation import combine

    _print_ablation(combine(args.tables, args.out, variants=args.variants), args.out)
    return 0


def cmd_demo_models(args) -> int:
    from experiments.demo_models import main_export

    try:
        main_export(
            args.arms, args.data_root, out_root=args.runs, device=args.device, progress=not args.quiet
        )
    except KeyboardInterrupt as e:
        print(
            f"interrupted{f' ({e})' if str(e) else ''}: the arm being trained saved its state and nothing "
            "was exported; run the same command to continue",
            file=sys.stderr,
        )
        return 130
    except RuntimeError as e:  # a run that cannot be exported (main_export says why)
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


COMMANDS = {"ablate": cmd_ablate, "ablate-combine": cmd_ablate_combine, "demo-models": cmd_demo_models}


def main(argv: list[str] | None = None) -> int:
    return run_cli(build_parser(), COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
