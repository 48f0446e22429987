"""Schedule and capacity variants of the demo DAIM: train each, score its best checkpoint on the test
split, and collect one row per recipe (issue 9: how far can the demo model go within about 30 CPU-minutes?).

    OMP_NUM_THREADS=1 python -m experiments.recipe_search step4 step6        # train + evaluate what is missing
    python -m experiments.recipe_search --collect results/recipe_search      # runs.csv from the finished ones
    python -m experiments.recipe_search --seeds                            # seeds of one recipe: spread, test

Every recipe is a demo preset (``demo``, or ``PRESET[name]`` for another arm; same tiny encoders,
same code path as the paper presets) with the overrides in ``RECIPES``, which name the Swin, so a
row does not depend on what the preset's Swin is today; ``shipped`` is the preset itself, read from
``models/demo`` instead of being trained again. Runs go to ``--runs`` (default
``runs/recipe/<name>``, ignored by git); an interrupted run continues from its ``last/`` checkpoint
(``train --resume``), a finished one is reused; ``--collect`` keeps the committed row of a recipe
that has no finished run here. Scoring is ``python -m daimlib evaluate --protocol demo --split
test`` on the run's ``best/`` (selected on the val split during training), as for the shipped
models; the collected table adds the same checkpoint's fit on the first 500 *training* images
(``train500_*``, what ``evaluate --split train --images 500`` prints), which tells underfitting
from overfitting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

from daimlib.paths import repo_path
from daimlib.tables import read_csv

REPO = Path(__file__).resolve().parents[1]

# the full-budget (12-epoch) runs of each demo arm, several seeds (SEED_GROUPS "hat", "baseline" and
# "narrow" below are these); seed 0 is the shipped model. Notebooks 05, 06, 08 and 09 read them.
LONG_RUNS_CSV = "results/recipe_search/runs.csv"
LONG_RUN_RECIPES = {
    "hat": ("hat_shipped", "hat_seed1", "hat_seed2", "hat_seed3"),
    "baseline": ("baseline_shipped", "baseline_seed1", "baseline_seed2"),
    "daim": ("shipped", "seed1", "seed2"),
}


def long_run_seeds(csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """The full-budget runs of the three demo arms (12 epochs each, the shipped recipe, several
    seeds): one row per run with ``arm``, ``seed``, ``recipe``, the test recalls and ``rsum``, from
    the committed ``results/recipe_search/runs.csv`` (empty when it is missing). Seed 0 of each arm
    is its shipped model in ``models/``."""
    path = repo_path(csv or LONG_RUNS_CSV)
    cols = ["arm", "seed", "recipe", "rsum"]
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    table = read_csv(path).set_index("recipe")
    rows = []
    for arm, recipes in LONG_RUN_RECIPES.items():
        for seed, recipe in enumerate(recipes):  # the recipes are seeds 0, 1, 2, ... in this order
            if recipe in table.index:
                r = table.loc[recipe]
                rows.append(
                    {
                        "arm": arm,
                        "seed": seed,
                        "recipe": recipe,
                        **{
                            k: float(r[f"test_{k}"])
                            for k in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10")
                        },
                        "rsum": float(r["test_rsum"]),
                    }
                )
    return pd.DataFrame(rows, columns=None if rows else cols)


# the i2t arm's seeds trained again with the adaptive warm-up (loss.warmup_until=0.1), seed k = k-th entry
ADAPTIVE_HAT_RECIPES = (
    "hat_seed0_adaptive",
    "hat_seed1_adaptive",
    "hat_seed2_adaptive",
    "hat_seed3_adaptive",
)


def warmup_runs(csv: str | os.PathLike | None = None) -> pd.DataFrame:
    """How far the warm-up of each 12-epoch run had come, and what followed: one row per run of
    ``LONG_RUN_RECIPES`` (warm-up "fixed 150") and ``ADAPTIVE_HAT_RECIPES`` ("adaptive") in the
    committed ``results/recipe_search/runs.csv``, with the mean loss of steps 140-149 over its
    equal-scores value ``2B(B-1)m`` (1: nothing learned), the step the warm-up ended at, the batch
    rows (of 64) ranked right over the 500 steps after, and the test RSUM. Empty when it is missing."""
    path = repo_path(csv or LONG_RUNS_CSV)
    cols = [
        "arm",
        "seed",
        "warm-up",
        "L_sum / equal-scores, steps 140-149",
        "warm-up ended at step",
        "rows right (of 64), 500 steps after",
        "test RSUM",
    ]
    if not path.is_file():
        return pd.DataFrame(columns=cols)
    table = read_csv(path).set_index("recipe")
    if "warmup_end" not in table.columns:  # a runs.csv collected before the warm-up columns
        return pd.DataFrame(columns=cols)
    groups = [(arm, "fixed 150", recipes) for arm, recipes in LONG_RUN_RECIPES.items()]
    groups.append(("hat", "adaptive", ADAPTIVE_HAT_RECIPES))
    rows = []
    for arm, warmup, recipes in groups:
        for seed, recipe in enumerate(recipes):
            if recipe in table.index:
                r = table.loc[recipe]
                rows.append(
                    dict(
                        zip(
                            cols,
                            [
                                arm,
                                seed,
                                warmup,
                                float(r["flat_ratio_end_fixed"]),
                                int(r["warmup_end"]),
                                float(r["rows_right_after_warmup"]),
                                float(r["test_rsum"]),
                            ],
                        )
                    )
                )
    return pd.DataFrame(rows, columns=cols)


WIDE = (
    'image.timm_kwargs={"embed_dim": 64, "depths": [1, 1, 2, 1], "num_heads": [2, 4, 8, 16], '
    '"window_size": 4, "patch_size": 8}'
)
# the demo preset's Swin (the shipped models'); named explicitly so that a row stays reproducible
NARROW = (
    'image.timm_kwargs={"embed_dim": 32, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8], '
    '"window_size": 4, "patch_size": 8}'
)
# name -> (what it changes, config overrides on the ``demo`` preset, or on PRESET[name]). Every recipe
# but ``shipped`` names its Swin, so that a row stays reproducible if the preset's Swin changes.
RECIPES: dict[str, tuple[str, list[str]]] = {
    "shipped": ("the demo preset: Swin embed 32, 12 epochs, lr 5e-4, StepLR(9, 0.1) (models/demo)", []),
    "hat_shipped": ("the demo_hat preset as shipped (models/demo_hat, seed 0)", []),
    "baseline_shipped": ("the demo_baseline preset as shipped (models/demo_baseline, seed 0)", []),
    "step6": ("lr decay after 6 epochs (5e-4 -> 5e-5 for the last 6)", [NARROW, "train.lr_step=6"]),
    "step4": ("lr decay after 4 and 8 epochs (5e-4, 5e-5, 5e-6)", [NARROW, "train.lr_step=4"]),
    "wide": ("a Swin twice as wide (embed 64: channels 64-512, heads 2-16)", [WIDE]),
    "patch4": (
        "Swin patch 4 instead of 8 (64/16/4 tokens at stages 2/3/4 instead of 16/4/1)",
        [
            'image.timm_kwargs={"embed_dim": 32, "depths": [1, 1, 2, 1], "num_heads": [1, 2, 4, 8], '
            '"window_size": 4, "patch_size": 4}'
        ],
    ),
    # can the wide Swin carry the three-arm comparison? its t2i baseline, its HAT-style (i2t) arm (as
    # shipped and with a longer warm-up), and DAIM with that warm-up
    "wide_baseline": ("the demo_baseline arm (t2i SCAN, no FDM, fixed margin) with the wide Swin", [WIDE]),
    "wide_hat": ("the demo_hat arm (i2t SCAN, no FDM, fixed margin) with the wide Swin", [WIDE]),
    "wide_hat_warm300": ("wide_hat with 300 warm-up steps instead of 150", [WIDE, "loss.warmup_steps=300"]),
    "wide_warm300": ("wide with 300 warm-up steps instead of 150", [WIDE, "loss.warmup_steps=300"]),
    # second seeds: is wide's gain over the preset larger than the seed-to-seed spread?
    "seed1": ("the demo preset, seed 1", [NARROW, "train.seed=1"]),
    "seed2": ("the demo preset, seed 2", [NARROW, "train.seed=2"]),
    "wide_seed1": ("wide, seed 1", [WIDE, "train.seed=1"]),
    "wide_seed2": ("wide, seed 2", [WIDE, "train.seed=2"]),
    # the narrow i2t arm starts late on seeds 1-3 (wide_hat_warmup.csv): what does that cost it?
    "hat_seed1": ("the demo_hat arm (i2t SCAN, no FDM, fixed margin), seed 1", [NARROW, "train.seed=1"]),
    "hat_seed2": ("the demo_hat arm, seed 2", [NARROW, "train.seed=2"]),
    "hat_seed3": ("the demo_hat arm, seed 3", [NARROW, "train.seed=3"]),
    # and the t2i baseline's seeds, for the direction gap (baseline - hat) at the full budget
    "baseline_seed1": (
        "the demo_baseline arm (t2i SCAN, no FDM, fixed margin), seed 1",
        [NARROW, "train.seed=1"],
    ),
    "baseline_seed2": ("the demo_baseline arm, seed 2", [NARROW, "train.seed=2"]),
}
# the i2t seeds again with the adaptive warm-up: the sum of hinges goes on past step 150 until a batch's sum is
# down to 10 % of its equal-scores value (the t2i arms are there by step 150), at most 4 epochs
ADAPTIVE_WARMUP = ["loss.warmup_until=0.1", "loss.warmup_max_steps=1248"]
for _k, _name in enumerate(ADAPTIVE_HAT_RECIPES):
    RECIPES[_name] = (
        f"the demo_hat arm, seed {_k}, with the adaptive warm-up (loss.warmup_until=0.1, at most 1248 steps)",
        [NARROW, *([f"train.seed={_k}"] if _k else []), *ADAPTIVE_WARMUP],
    )
# the seeds of one recipe (seed 0 first): group -> (what it is, recipes). ``shipped``,
# ``hat_shipped`` and ``baseline_shipped`` are the shipped models (models/, seed 0)
# (the three arms' groups are LONG_RUN_RECIPES above, which the notebooks read)
SEED_GROUPS: dict[str, tuple[str, list[str]]] = {
    "narrow": ("DAIM, the demo preset (Swin embed 32)", list(LONG_RUN_RECIPES["daim"])),
    "wide": ("DAIM, Swin embed 64", ["wide", "wide_seed1", "wide_seed2"]),
    "hat": ("demo_hat: i2t SCAN, no FDM, fixed margin (Swin embed 32)", list(LONG_RUN_RECIPES["hat"])),
    "baseline": (
        "demo_baseline: t2i SCAN, no FDM, fixed margin (Swin embed 32)",
        list(LONG_RUN_RECIPES["baseline"]),
    ),
    "hat_adaptive": (
        "demo_hat with the adaptive warm-up (loss.warmup_until=0.1)",
        list(ADAPTIVE_HAT_RECIPES),
    ),
}
# the differences --seeds tests (name -> (group, minus group, what the difference changes))
COMPARISONS: dict[str, tuple[str, str, str]] = {
    "width": ("wide", "narrow", "Swin embed 64 instead of 32 (DAIM)"),
    "direction": ("baseline", "hat", "SCAN t2i instead of i2t (no FDM, fixed margin)"),
    "fdm_mom": ("narrow", "baseline", "FDM + MOM added to the t2i baseline"),
    "warmup": (
        "hat_adaptive",
        "hat",
        "the adaptive warm-up instead of 150 fixed steps (the i2t arm, same seeds)",
    ),
    "direction_adaptive": (
        "baseline",
        "hat_adaptive",
        "SCAN t2i instead of i2t, the i2t arm with the adaptive warm-up",
    ),
}
# recipes that are shipped models, read from models/<folder> instead of trained
SHIPPED = {"shipped": "demo", "hat_shipped": "demo_hat", "baseline_shipped": "demo_baseline"}
# the preset each recipe changes (default ``demo``)
PRESET = {
    "wide_baseline": "demo_baseline",
    "wide_hat": "demo_hat",
    "wide_hat_warm300": "demo_hat",
    "hat_seed1": "demo_hat",
    "hat_seed2": "demo_hat",
    "hat_seed3": "demo_hat",
    "baseline_seed1": "demo_baseline",
    "baseline_seed2": "demo_baseline",
    **dict.fromkeys(ADAPTIVE_HAT_RECIPES, "demo_hat"),
}


def _run(cmd: list[str], log: Path) -> None:
    with log.open("a") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        subprocess.run(cmd, cwd=REPO, stdout=fh, stderr=subprocess.STDOUT, check=True)


def train_and_score(name: str, runs: Path, data_root: str) -> Path:
    """Train recipe ``name`` into ``runs/name`` (resumed or reused) and evaluate its best checkpoint."""
    _, overrides = RECIPES[name]
    out = runs / name
    out.mkdir(parents=True, exist_ok=True)
    log = runs / f"{name}.log"
    py = [sys.executable, "-m", "daimlib"]
    train = [
        *py,
        "train",
        "-q",
        "--preset",
        PRESET.get(name, "demo"),
        "--data-root",
        data_root,
        "--out",
        str(out),
        "--device",
        "cpu",
    ]
    if overrides:
        train += ["--set", *overrides]
    if (out / "last").is_dir() and any((out / "last").iterdir()):
        train.append("--resume")
    print(
        f"[recipe] {name}: training into {os.path.relpath(out, REPO)} (log: {os.path.relpath(log, REPO)})",
        flush=True,
    )
    _run(train, log)
    result = out / "eval_best_test_demo.json"
    if not result.is_file():
        _run(
            [
                *py,
                "evaluate",
                "-q",
                "--checkpoint",
                str(out / "best"),
                "--data-root",
                data_root,
                "--protocol",
                "demo",
                "--split",
                "test",
                "--device",
                "cpu",
            ],
            log,
        )
    return result


def _scored(path: Path) -> tuple[dict, str]:
    """The test recalls of an ``eval_*.json`` (``metrics``) or a shipped model's ``metrics.json``
    (``test``), and the sha256 of the annotation file they were measured on."""
    doc = json.loads(path.read_text())
    m = doc.get("test") or doc.get("metrics") or {}
    keys = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"]
    missing = [k for k in keys if k not in m]
    if missing:
        raise KeyError(f"{path}: no {missing} in its metrics")
    data = doc.get("data", {})
    return {f"test_{k}": float(m[k]) for k in keys}, data.get("annotations_sha256") or data.get(
        "sha256"
    ) or ""


def train_fit(ckpt: Path, cache: Path, data_root: str, n: int = 500) -> dict:
    """RSUM and R@1 of checkpoint ``ckpt`` on the first ``n`` images of the *train* split (what
    ``evaluate --split train --images n`` prints): how well the model fits data it was trained on.
    Cached in ``cache`` (a JSON file)."""
    if cache.is_file():
        return json.loads(cache.read_text())
    from daimlib.checkpoint import load_checkpoint, load_checkpoint_tokenizer
    from daimlib.data import load_split, load_tokenizer
    from daimlib.data.split import first_images
    from daimlib.evaluate import evaluate

    model, cfg, _ = load_checkpoint(ckpt, strict=True, read_train_state=False)
    split = first_images(load_split(cfg.data, REPO / data_root, "train"), n)
    tok = load_checkpoint_tokenizer(ckpt) or load_tokenizer(cfg.text, REPO / data_root)
    metrics, _ = evaluate(model.eval(), split, tok, cfg, protocol="demo", device="cpu", progress=False)
    out = {f"train{n}_{k}": float(metrics[k]) for k in ("i2t_r1", "t2i_r1", "rsum")}
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(out, indent=2) + "\n")
    return out


def row(name: str, run_dir: Path, metrics_file: Path, fit: dict) -> dict:
    hist = pd.read_csv(run_dir / "history_epochs.csv")
    best = hist[hist["best"].astype(str) == "True"].iloc[-1]
    what, overrides = RECIPES[name]
    test, data_sha = _scored(metrics_file)
    steps = pd.read_csv(run_dir / "history_steps.csv", usecols=["step", "loss", "n_correct", "hardest"])
    hard = steps.loc[steps["hardest"].astype(str) == "True", "step"]
    end = int(hard.min()) if len(hard) else -1
    cfg_file = (
        run_dir / "config.json" if (run_dir / "config.json").is_file() else run_dir / "best" / "config.json"
    )
    cfg = json.loads(cfg_file.read_text())
    flat = (
        2 * cfg["train"]["batch_size"] * (cfg["train"]["batch_size"] - 1) * cfg["loss"]["margin"]
    )  # L_sum at equal scores
    w = int(cfg["loss"]["warmup_steps"])
    before = steps[steps["step"].between(w - 10, w - 1)]  # the last 10 steps of the fixed warm-up
    after = steps[steps["step"].between(end, end + 499)] if end >= 0 else steps.iloc[:0]
    return {
        "recipe": name,
        "what": what,
        "overrides": " ".join(overrides),
        "epochs": len(hist),
        "steps": int(hist["step"].iloc[-1]),
        "best_epoch": int(best["epoch"]),
        "best_val_rsum": float(best["rsum"]),
        "last_val_rsum": float(hist["rsum"].iloc[-1]),
        "warmup_end": end,  # the first step with hardest negatives
        # how far the warm-up had come by the end of its fixed steps (1 = no better than equal scores), and
        # how many of a batch's rows ranked their own caption first over the 500 steps after it ended
        "flat_ratio_end_fixed": float(before["loss"].mean() / flat) if len(before) else float("nan"),
        "rows_right_after_warmup": float(after["n_correct"].mean()) if len(after) else float("nan"),
        **test,
        **fit,
        "first_epoch_s": float(hist["epoch_s"].iloc[0]),
        "wall_minutes": float(hist["elapsed_min"].iloc[-1]),
        "val_rsum_by_epoch": " ".join(f"{r:.1f}" for r in hist["rsum"]),
        "data_sha256": data_sha,
    }


def collect(runs: Path, out: Path, data_root: str) -> pd.DataFrame:
    """``out/runs.csv`` with one row per recipe: measured from ``runs/<name>`` where that run finished
    here; else the row already in ``out/runs.csv`` is kept (run folders do not outlive a session)."""
    rows = []
    old = out / "runs.csv"
    kept = pd.read_csv(old, keep_default_na=False).set_index("recipe") if old.is_file() else None
    for name in RECIPES:
        if name in SHIPPED:
            shipped = REPO / "models" / SHIPPED[name]
            if not (shipped / "metrics.json").is_file():
                print(
                    f"[recipe] {name}: no {os.path.relpath(shipped / 'metrics.json', REPO)}; left out",
                    flush=True,
                )
                continue
            fit = train_fit(shipped / "best", runs / f"{name}_fit_train500.json", data_root)
            rows.append(row(name, shipped, shipped / "metrics.json", fit))
            continue
        result = runs / name / "eval_best_test_demo.json"
        if result.is_file():
            fit = train_fit(runs / name / "best", runs / name / "fit_train500.json", data_root)
            rows.append(row(name, runs / name, result, fit))
        elif kept is not None and name in kept.index:
            print(
                f"[recipe] {name}: no finished run here; its row is kept from {os.path.relpath(old, REPO)}",
                flush=True,
            )
            rows.append({"recipe": name, **kept.loc[name].to_dict()})
        else:
            print(f"[recipe] {name}: not finished (no {os.path.relpath(result, REPO)}); left out", flush=True)
    table = pd.DataFrame(rows)
    if table["data_sha256"].nunique() > 1:
        raise ValueError(
            "the recipes were scored on different data (annotation sha256 differ): "
            + ", ".join(f"{r}: {h[:12]}" for r, h in zip(table["recipe"], table["data_sha256"]))
        )
    out.mkdir(parents=True, exist_ok=True)
    table.to_csv(out / "runs.csv", index=False)
    print(table.drop(columns=["what", "val_rsum_by_epoch", "data_sha256"]).to_string(index=False))
    print(f"[recipe] wrote {os.path.relpath(out / 'runs.csv', REPO)}")
    return table


def seed_summary(table: pd.DataFrame) -> tuple[pd.DataFrame, dict]:
    """Test RSUM per seed of each group in ``SEED_GROUPS`` (the rows of ``table`` it has), with the
    mean, sd and two-sided 95 % t interval; and for each of ``COMPARISONS`` (group minus group):
    Welch's t-test with its interval, and how many seeds per group a two-group t-test needs to detect
    a true difference of that size with 80 % power at the 5 % level, given the pooled sd of one run.
    A comparison with fewer than two seeds on a side is ``None``; if none can be made, ValueError."""
    from daimlib.course import stats

    by = table.set_index("recipe")["test_rsum"].astype(float)
    values = {g: [by[n] for n in names if n in by.index] for g, (_, names) in SEED_GROUPS.items()}
    long = pd.DataFrame(
        [{"variant": g, "seed": i, "test_rsum": v} for g, x in values.items() for i, v in enumerate(x)],
        columns=["variant", "seed", "test_rsum"],
    )
    summ = stats.powered_summary(long, reference=None, metric="test_rsum")  # the kit's one seed table
    sds = summ["sd"].to_dict()
    rows = [
        {
            "group": g,
            "what": SEED_GROUPS[g][0],
            "seeds": int(r["n"]),
            "test RSUM per seed": " ".join(f"{v:.1f}" for v in values[g]),
            "mean": r["mean"],
            "sd": r["sd"],
            "95% CI": f"[{r['ci_lo']:.1f}, {r['ci_hi']:.1f}]" if r["n"] > 1 else "-",
        }
        for g, r in summ.iterrows()
    ]
    out = {}
    for name, (ga, gb, _) in COMPARISONS.items():
        a, b = values[ga], values[gb]
        if min(len(a), len(b)) < 2:
            out[name] = None
            continue
        cmp = stats.welch(b, a)  # a - b
        pooled = (((len(a) - 1) * sds[ga] ** 2 + (len(b) - 1) * sds[gb] ** 2) / (len(a) + len(b) - 2)) ** 0.5
        need = stats.seeds_needed(abs(cmp.diff.mean), pooled, paired=False) if cmp.diff.mean else None
        out[name] = {
            "diff": cmp.diff.mean,
            "lo": cmp.diff.lo,
            "hi": cmp.diff.hi,
            "p": cmp.p,
            "df": cmp.df,
            "pooled_sd": pooled,
            "seeds_needed": need,
        }
    if all(v is None for v in out.values()):
        raise ValueError(
            "no seed comparison can be made: each needs two finished seeds of both groups; "
            f"runs.csv has { ({g: len(v) for g, v in values.items()}) } (SEED_GROUPS: {SEED_GROUPS})"
        )
    return pd.DataFrame(rows), out


def print_seed_summary(csv: Path) -> None:
    """What ``--seeds`` prints: :func:`seed_summary` of the committed ``runs.csv``, as markdown."""
    table, cmps = seed_summary(pd.read_csv(csv))
    lines = [
        "| group | what | seeds | test RSUM per seed | mean | sd | 95% CI |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, r in table.iterrows():
        sd = f"{r['sd']:.1f}" if r["seeds"] > 1 else "-"
        lines.append(
            f"| {r['group']} | {r['what']} | {r['seeds']} | {r['test RSUM per seed']} | {r['mean']:.1f} | {sd} "
            f"| {r['95% CI']} |"
        )
    print("\n".join(lines) + "\n")
    for name, (ga, gb, what) in COMPARISONS.items():
        c = cmps[name]
        if c is None:
            print(f"{ga} - {gb} ({what}): not enough seeds (two of each needed)")
            continue
        print(
            f"{ga} - {gb} ({what}): {c['diff']:+.1f} test RSUM, 95% CI [{c['lo']:.1f}, {c['hi']:.1f}] "
            f"(Welch t, df {c['df']:.1f}, p = {c['p']:.2f}); pooled sd of one run {c['pooled_sd']:.1f}; "
            f"seeds per group to detect {abs(c['diff']):.1f} with 80% power: {c['seeds_needed']}"
        )


# the runs of --warmup, in its order: the t2i runs, the i2t runs that trained, those that stalled, and the
# stalled seeds again with the adaptive warm-up
WARMUP_RUNS = (
    "shipped",
    "seed1",
    "seed2",
    "baseline_shipped",
    "baseline_seed1",
    "baseline_seed2",
    "wide_baseline",
    "hat_shipped",
    "hat_seed2",
    "hat_seed1",
    "hat_seed3",
    "wide_hat",
    "hat_seed0_adaptive",
    "hat_seed1_adaptive",
    "hat_seed2_adaptive",
    "hat_seed3_adaptive",
)


def print_warmup_table(csv: Path) -> None:
    """What ``--warmup`` prints: for each run of ``WARMUP_RUNS`` in ``runs.csv``, how far its warm-up had come
    by step 150, where it ended, how many batch rows ranked right after it, and the test RSUM (markdown)."""
    table = pd.read_csv(csv).set_index("recipe")
    print(
        "| recipe | SCAN | Swin | seed | L_sum / equal-scores value, steps 140-149 | warm-up ended at step "
        "| rows of 64 ranked right, 500 steps after | test RSUM |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name in WARMUP_RUNS:
        if name not in table.index:
            continue
        r = table.loc[name]
        preset = PRESET.get(name) or SHIPPED.get(name, "demo")  # a shipped folder is named after its preset
        scan = "i2t" if preset == "demo_hat" else "t2i"
        swin = "wide" if WIDE in str(r["overrides"]) else "narrow"
        seed = next(
            (int(t.split("=")[1]) for t in str(r["overrides"]).split() if t.startswith("train.seed=")), 0
        )
        print(
            f"| `{name}` | {scan} | {swin} | {seed} | {r['flat_ratio_end_fixed']:.3f} | {int(r['warmup_end'])} "
            f"| {r['rows_right_after_warmup']:.1f} | {r['test_rsum']:.1f} |"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "recipes",
        nargs="*",
        help=f"recipes to train and score: {', '.join(n for n in RECIPES if n not in SHIPPED)}",
    )
    ap.add_argument("--runs", default="runs/recipe", help="run folders (default runs/recipe)")
    ap.add_argument("--data-root", default="data/demo")
    ap.add_argument(
        "--collect", metavar="DIR", default=None, help="write DIR/runs.csv from the finished recipes"
    )
    ap.add_argument(
        "--seeds",
        action="store_true",
        help="print the seed summary (SEED_GROUPS) of results/recipe_search/runs.csv and exit",
    )
    ap.add_argument(
        "--warmup",
        action="store_true",
        help="print how far each run's warm-up had come, and what followed, from results/recipe_search/runs.csv",
    )
    args = ap.parse_args(argv)
    if args.warmup:
        print_warmup_table(REPO / "results" / "recipe_search" / "runs.csv")
        return 0
    if args.seeds:
        print_seed_summary(REPO / "results" / "recipe_search" / "runs.csv")
        return 0
    runs = (REPO / args.runs).resolve()
    unknown = [r for r in args.recipes if r not in RECIPES or r in SHIPPED]
    if unknown:
        ap.error(f"unknown recipe(s) {unknown}; known: {[n for n in RECIPES if n not in SHIPPED]}")
    for name in args.recipes:
        train_and_score(name, runs, args.data_root)
    if args.collect:
        collect(runs, REPO / args.collect, args.data_root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
