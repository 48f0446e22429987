"""Ablations: DAIM's two modules switched on one at a time, as named config overrides.

Every variant is a set of dotted-key overrides applied to a preset. The baseline keeps the
preset's similarity direction (t2i for ``daim_*`` and ``demo``), so that each variant differs from
the baseline in exactly one thing; HAT itself (``hat_*`` / ``demo_hat``) also changes the direction
to i2t, and is a preset, not a variant.

============  =================================================================================
variant       what changes, relative to the preset
============  =================================================================================
baseline      no FDM anywhere, fixed margin (``loss.adaptive=False``)
fdm           + FDM as the reference code places it (every Swin block and the used stage outputs)
mom           + MOM (adaptive margin), no FDM
daim          + FDM + MOM: the method as the reference implements it
fdm_text      FDM on the text side only, after every BERT layer up to the highest used hidden
              state (the paper figure's placement, spec section 10 B1); fixed margin, so that it
              compares with ``fdm``
high_only     ``daim`` scored on the high level only (``similarity.level_weights=(0, 0, 1)``)
no_low        ``daim`` without the low level (weights ``(0, 1, 1)``): leave one level out
no_mid        ``daim`` without the mid level (weights ``(1, 0, 1)``)
no_high       ``daim`` without the high level (weights ``(1, 1, 0)``)
============  =================================================================================

:func:`ablate` trains and evaluates each variant for each seed, one run after another or
``jobs`` at a time in one-thread worker processes (then with step budgets only: runs at once ruin
each other's wall-clock budget, field notes section 7), and writes ``runs.csv`` (one row per run)
and ``summary.csv`` / ``summary.json`` (mean and std per variant). A run whose ``result.json``
matches the config, data and split is read back instead of being trained again; an interrupted run
is resumed (:mod:`daimlib.runs` holds the rule). :func:`combine` joins the ``runs.csv`` of several
ablations (variants run at different times or places) into one.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from daimlib import runlock

from . import runs
from . import train as _training
from .checkpoint import display_path, load_model, scoring_tokenizer
from .config import DAIMConfig, load_preset
from .data import load_split
from .evaluate import MIN_IMAGES, default_protocols, degenerate_problem, evaluate

log = logging.getLogger("daimlib.ablation")

_FDM_OFF = {"fdm.image_blocks": False, "fdm.image_stage_out": False, "fdm.text_layers": ()}
_FDM_IMAGE = {"fdm.image_blocks": True, "fdm.image_stage_out": True, "fdm.text_layers": ()}

VARIANTS: dict[str, str] = {
    "baseline": "no FDM, fixed margin (the preset's similarity direction kept)",
    "hat": "the baseline with image-to-text SCAN (HAT's direction): no FDM, fixed margin",
    "fdm": "+ FDM in the image encoder (reference placement), fixed margin",
    "mom": "+ MOM adaptive margin, no FDM",
    "daim": "+ FDM + MOM (the reference method)",
    "fdm_text": "FDM after every text layer instead of the image encoder, fixed margin",
    "high_only": "DAIM scored on the high level only (level weights 0, 0, 1)",
    "no_low": "DAIM without the low level (level weights 0, 1, 1)",
    "no_mid": "DAIM without the mid level (level weights 1, 0, 1)",
    "no_high": "DAIM without the high level (level weights 1, 1, 0)",
}
_LEAVE_OUT = {"no_low": 0, "no_mid": 1, "no_high": 2}

SUMMARY_METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


def variant_overrides(variant: str, cfg: DAIMConfig) -> dict[str, Any]:
    """The dotted-key overrides that turn ``cfg`` (a preset) into ``variant`` (see the module table)."""
    if variant == "baseline":
        return {**_FDM_OFF, "loss.adaptive": False}
    if variant == "hat":  # the comparison's HAT-style arm: only the direction differs from ``baseline``
        return {**_FDM_OFF, "loss.adaptive": False, "similarity.direction": "i2t"}
    if variant == "fdm":
        return {**_FDM_IMAGE, "loss.adaptive": False}
    if variant == "mom":
        return {**_FDM_OFF, "loss.adaptive": True}
    if variant == "daim":
        return {**_FDM_IMAGE, "loss.adaptive": True}
    if variant == "fdm_text":
        n_layers = max(cfg.text.hidden_states)  # layers above the highest used state cannot change the levels
        return {**_FDM_OFF, "fdm.text_layers": tuple(range(1, n_layers + 1)), "loss.adaptive": False}
    if variant == "high_only":
        n_levels = len(cfg.similarity.level_weights)  # any number of levels: all weight on the highest
        return {**_FDM_IMAGE, "loss.adaptive": True, "similarity.level_weights": (0.0,) * (n_levels - 1) + (1.0,)}
    if variant in _LEAVE_OUT:
        weights = list(cfg.similarity.level_weights)
        if len(weights) != 3:
            raise ValueError(f"{variant} assumes three levels (low, mid, high); this preset has {len(weights)}")
        weights[_LEAVE_OUT[variant]] = 0.0
        return {**_FDM_IMAGE, "loss.adaptive": True, "similarity.level_weights": tuple(weights)}
    raise ValueError(f"unknown ablation variant {variant!r}; variants are {list(VARIANTS)}")


def variant_config(preset: str, variant: str, seed: int = 0, **overrides: Any) -> DAIMConfig:
    """``preset`` with ``overrides`` (e.g. short budgets), then the variant's switches and the seed."""
    cfg = load_preset(preset, **overrides)
    cfg = cfg.replace(**variant_overrides(variant, cfg), **{"train.seed": int(seed)})
    cfg.name = f"{cfg.name}-{variant}-seed{seed}"
    return cfg


def summarize(runs: pd.DataFrame, metrics: tuple[str, ...] = SUMMARY_METRICS) -> pd.DataFrame:
    """Mean and sample std (ddof=1; NaN for a single seed) of each metric per variant, in run order.

    Columns ``<metric>_mean``, ``<metric>_std``, ``n_seeds`` and ``<metric>`` as a "mean ± std" string.
    """
    order = list(dict.fromkeys(runs["variant"]))
    present = [m for m in metrics if m in runs.columns]
    grouped = runs.groupby("variant", sort=False)[present]
    mean, std = grouped.mean(), grouped.std(ddof=1)
    out = pd.DataFrame(index=pd.Index(order, name="variant"))
    out["n_seeds"] = runs.groupby("variant", sort=False).size().reindex(order)
    for m in present:
        out[f"{m}_mean"] = mean[m].reindex(order)
        out[f"{m}_std"] = std[m].reindex(order)
    for m in present:
        out[m] = [
            f"{a:.1f}" + ("" if np.isnan(s) else f" ± {s:.1f}")
            for a, s in zip(out[f"{m}_mean"], out[f"{m}_std"])
        ]
    return out


def powered_summary(
    runs: pd.DataFrame, reference: str = "baseline", metric: str = "rsum", confidence: float = 0.95,
    target_power: float = 0.8, alpha: float = 0.05,
) -> pd.DataFrame:  # fmt: skip
    """Each variant's ``metric`` with a t interval, its difference from ``reference`` and what the
    design could detect (:mod:`daimlib.stats`).

    Columns: ``n``, ``mean``, ``ci_lo``, ``ci_hi`` (``confidence`` interval of the mean), ``sd``;
    ``diff`` (variant - reference, paired by seed over the seeds both have), ``diff_lo``,
    ``diff_hi``, ``p_paired`` (paired t-test), ``p_welch`` (Welch's t-test over all runs), and
    ``mdd`` (the minimal detectable difference: the smallest true difference a paired t-test at
    ``alpha`` finds with ``target_power``, for this number of seeds and the observed sd of the
    paired differences). The reference row has NaN in the comparison columns.
    """
    from . import stats

    if reference not in set(runs["variant"]):
        raise ValueError(f"reference variant {reference!r} is not among the runs ({sorted(set(runs['variant']))})")
    ref = runs[runs["variant"] == reference].set_index("seed")[metric]
    out = []
    for variant, g in runs.groupby("variant", sort=False):
        ci = stats.mean_ci(g[metric], confidence)
        row = {"variant": variant, "n": ci.n, "mean": ci.mean, "ci_lo": ci.lo, "ci_hi": ci.hi, "sd": ci.sd}
        nan = float("nan")
        row.update(diff=nan, diff_lo=nan, diff_hi=nan, p_paired=nan, p_welch=nan, mdd=nan)
        if variant != reference:
            mine = g.set_index("seed")[metric]
            common = sorted(set(mine.index) & set(ref.index))
            if len(common) >= 2:
                cmp = stats.paired_diff(ref.loc[common], mine.loc[common], confidence)
                row.update(diff=cmp.diff.mean, diff_lo=cmp.diff.lo, diff_hi=cmp.diff.hi, p_paired=cmp.p)
                if cmp.diff.sd > 0:
                    row["mdd"] = stats.min_detectable_difference(cmp.diff.sd, len(common), alpha, target_power)
            if len(mine) >= 2 and len(ref) >= 2:
                row["p_welch"] = stats.welch(ref, mine, confidence).p
        out.append(row)
    return pd.DataFrame(out).set_index("variant")


def _result_row(res, cfg, variant, seed, data_root, eval_split, progress, minutes) -> dict:
    """The test row of one finished run: its best checkpoint on ``eval_split`` under the first protocol."""
    protocol = default_protocols(cfg.data.dataset)[0]
    if eval_split == cfg.data.val_split and protocol == _training._val_protocol(cfg) and res.best_metrics:
        metrics = res.best_metrics  # the best checkpoint was already scored on this split
    else:
        model = load_model(res.best_dir) if (res.best_dir / "meta.json").exists() else res.model
        split = load_split(cfg.data, data_root, eval_split)
        tokenizer = scoring_tokenizer(res.best_dir, cfg, data_root)  # the checkpoint's own
        metrics, _ = evaluate(model, split, tokenizer, cfg, protocol=protocol,
                              progress=progress)  # fmt: skip
    margin = float(res.steps["margin"].iloc[-1]) if len(res.steps) else float(cfg.loss.margin)
    return dict(
        variant=variant, seed=seed, split=eval_split, protocol=protocol,
        **{k: float(v) for k, v in metrics.items()},
        best_epoch=res.best_epoch, best_val_select=res.epochs["select"].max() if "select" in res.epochs else None,
        final_margin=margin, steps=res.global_step, minutes=minutes, stopped=res.stopped,
    )  # fmt: skip


def _train_run(cfg, run_dir: Path, data_root, data: dict, progress: bool):
    """Train one ablation run with the kit's one reuse rule: reuse a finished run, resume an interrupted
    one, start an absent one; a run folder trained on other data is refused, never replaced."""
    val = cfg.data.val_split
    if runs.reuse_problem(run_dir, cfg, data_root, val) is None:
        return _training.train(cfg, data_root, run_dir, progress=progress, eval_split=val)
    record = runs.read_record(run_dir)
    trained_on = (record or {}).get("data", {}).get("sha256")
    if trained_on is not None and trained_on != data["sha256"]:
        raise ValueError(
            f"{display_path(run_dir)} was trained on other data than {display_path(data_root)}; "
            "choose another out_dir for this dataset (nothing was changed)"
        )
    if runs.resume_problem(run_dir, cfg) is None:
        log.info("resuming the interrupted run in %s", display_path(run_dir))
        return _training.train(cfg, data_root, run_dir, progress=progress, eval_split=val, resume=True)
    return _training.train(cfg, data_root, run_dir, progress=progress, eval_split=val, overwrite=True)


def _one_run(preset, variant, seed, data_root, out_dir: Path, eval_split, progress, overrides) -> dict:
    """Train (or reuse, or resume) one variant/seed run and return its result row (see :func:`ablate`)."""
    cfg = variant_config(preset, variant, seed, **overrides)
    run_dir = out_dir / f"{variant}_seed{seed}"
    result_file = run_dir / "result.json"
    data = runs.data_identity(data_root, cfg)
    saved = json.loads(result_file.read_text()) if result_file.exists() else None
    if saved is not None and DAIMConfig.from_dict(saved["config"]).diff(cfg):
        raise ValueError(
            f"{display_path(result_file)} was produced with a different config than requested; "
            "delete that run folder or choose another out_dir"
        )
    same_data = saved is not None and saved.get("data", {}).get("sha256") == data["sha256"]
    if same_data and saved.get("split") == eval_split:
        log.info("%s seed %d: reusing %s", variant, seed, display_path(result_file))
        return saved["row"]
    log.info("%s seed %d: training into %s", variant, seed, display_path(run_dir))
    t0 = time.time()
    res = _train_run(cfg, run_dir, data_root, data, progress)
    if res.stopped not in runs.FINISHED:
        raise KeyboardInterrupt(
            f"{variant} seed {seed} was interrupted at step {res.global_step}; its state is saved in "
            f"{display_path(run_dir)}; run the same ablation again to continue where it stopped"
        )
    minutes = (time.time() - t0) / 60
    if "elapsed_min" in res.epochs and len(res.epochs):  # the whole training, across resumes
        minutes = float(res.epochs["elapsed_min"].iloc[-1])
    row = _result_row(res, cfg, variant, seed, data_root, eval_split, progress, minutes)
    result_file.write_text(json.dumps({"row": row, "config": cfg.to_dict(), "data": data, "split": eval_split},
                                      indent=2, default=float) + "\n")  # fmt: skip
    return row


def job_gpus() -> list[str]:
    """The GPUs ``ablate(jobs=N)`` deals out to its workers, as ``CUDA_VISIBLE_DEVICES`` entries: the
    visible ones (that variable's entries, else ``0..n-1``); empty without CUDA."""
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return (listed or [str(i) for i in range(n)])[:n]


def _worker_init(counter=None, gpus: tuple[str, ...] = ()) -> None:
    """A worker of ``ablate(jobs=N)``: one torch thread, so N workers share N cores without oversubscribing;
    with several GPUs visible, worker k sees only GPU ``gpus[k % len(gpus)]`` (round-robin), as its cuda:0."""
    import torch

    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"
    if counter is not None and len(gpus) > 1:
        with counter.get_lock():
            k = counter.value
            counter.value += 1
        os.environ["CUDA_VISIBLE_DEVICES"] = gpus[k % len(gpus)]  # before this process first touches CUDA


def _run_parallel(tasks: list[tuple], jobs: int) -> list[dict]:
    """Run ``_one_run(*task)`` for every task in ``jobs`` worker processes; rows in task order."""
    import concurrent.futures as cf
    import multiprocessing as mp

    rows: list[dict | None] = [None] * len(tasks)
    ctx = mp.get_context("spawn")  # a fresh interpreter per worker: no torch state forked mid-use
    gpus = tuple(job_gpus())
    if len(gpus) > 1:
        log.info("%d jobs on %d GPUs (CUDA_VISIBLE_DEVICES %s, round-robin)", jobs, len(gpus), ",".join(gpus))
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx, initializer=_worker_init,
                                initargs=(ctx.Value("i", 0), gpus)) as pool:  # fmt: skip
        futures = {pool.submit(_one_run, *task): i for i, task in enumerate(tasks)}
        try:
            for fut in cf.as_completed(futures):
                rows[futures[fut]] = fut.result()
        except BaseException:
            for f in futures:
                f.cancel()
            raise
    return rows  # type: ignore[return-value]


def ablate(
    preset: str,
    variants: list[str] | tuple[str, ...] = ("baseline", "fdm", "mom", "daim"),
    seeds: int | list[int] = 1,
    data_root: str | os.PathLike = "data/demo",
    out_dir: str | os.PathLike = "runs/ablation",
    eval_split: str = "test",
    progress: bool = True,
    jobs: int = 1,
    **overrides: Any,
) -> pd.DataFrame:
    """Train and evaluate every variant for every seed, resumable run by run.

    ``seeds``: a count (seeds 0..n-1) or a list. ``overrides``: dotted keys applied to the preset
    before the variant (``**{"train.max_steps": 300}``). Each run trains with validation on the
    val split, and its best checkpoint is evaluated on ``eval_split`` under the dataset's first
    paper protocol (demo: whole split; F30K 1K; COCO 1K 5-fold). A run's ``result.json`` is reused
    only for the same config, data (:func:`daimlib.runs.data_identity`) and split; a finished run is
    never trained again, and an interrupted one (Ctrl-C) is resumed, never recorded as a result:
    Ctrl-C raises KeyboardInterrupt after the run saved its state, and the same call continues.
    ``jobs``: runs trained at once, each in its own process on one thread; with several GPUs visible,
    each worker process on its own GPU, dealt round-robin (:func:`job_gpus`; ``jobs=2`` on a 2-core
    CPU trains about 1.6x more runs per hour than one run on two threads,
    ``benchmarks/bench_train_step.py --parallel``). Runs at once share the machine, so a
    ``train.max_minutes`` budget would mean less training per run: use ``train.max_steps`` with
    ``jobs > 1``. To stop a parallel ablation, signal the whole process group (Ctrl-C does; from
    a script ``kill -TERM -- -<pgid>``): each worker then saves its run's state. A SIGTERM to the
    parent alone does not reach the workers. Returns one row per run (variant, seed, test metrics, best val score, final
    margin, minutes); the mean ± std table is ``df.attrs["summary"]`` (:func:`summarize`). Writes
    runs.csv, summary.csv, summary.json.
    """
    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown ablation variants {unknown}; variants are {list(VARIANTS)}")
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise ValueError("seeds must be a positive count or a non-empty list of seeds")
    if int(jobs) < 1:
        raise ValueError(f"jobs must be at least 1, got {jobs}")
    if jobs > 1 and overrides.get("train.max_minutes") is not None:
        raise ValueError("jobs > 1 with a train.max_minutes budget: runs at once share the CPU, so each would "
                         "train less; give the budget as train.max_steps")  # fmt: skip
    base = load_preset(preset, **overrides)
    n_eval = load_split(data_root, eval_split, base.data, check_files=False).n_images
    if n_eval < MIN_IMAGES:  # every rank 1: each variant would score RSUM 600 (issue 28)
        raise ValueError(f"ablate on the {eval_split!r} split: {degenerate_problem(n_eval)} (--split)")
    out_dir = Path(out_dir)
    with runlock.run_folder(out_dir, "ablate"):  # one ablation per folder at a time (issue 28)
        tasks = [(preset, v, s, data_root, out_dir, eval_split, progress and jobs == 1, overrides)
                 for v in variants for s in seed_list]  # fmt: skip
        if jobs == 1:
            rows = [_one_run(*task) for task in tasks]
        else:
            rows = _run_parallel(tasks, int(jobs))
        table = pd.DataFrame(rows)
        meta = {"preset": preset, "seeds": seed_list, "overrides": {k: str(v) for k, v in overrides.items()},
                # the preset as it resolved when this ran: a preset may change later
                "base_config": json.loads(load_preset(preset, **overrides).to_json())}  # fmt: skip
        return _write_results(table, out_dir, meta)


def _write_results(table: pd.DataFrame, out_dir: Path, meta: dict) -> pd.DataFrame:
    """runs.csv, summary.csv and summary.json (``meta`` + the summary) of ``table`` in ``out_dir``."""
    summary = summarize(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "runs.csv", index=False)
    summary.to_csv(out_dir / "summary.csv")
    (out_dir / "summary.json").write_text(
        json.dumps({**meta, "summary": summary.reset_index().to_dict(orient="records")}, indent=2, default=float)
        + "\n"
    )
    table.attrs["summary"] = summary
    return table


def combine(
    run_tables: list[str | os.PathLike], out_dir: str | os.PathLike, variants: list[str] | None = None
) -> pd.DataFrame:
    """One ablation from the ``runs.csv`` of several :func:`ablate` calls (e.g. variants run in
    different sessions or on different machines, each into its own folder).

    The rows are concatenated in file order (``variants``: keep only these, in this order). A
    (variant, seed) pair found twice is an error, as are runs scored on different splits or under
    different protocols. Writes runs.csv, summary.csv and summary.json (with the source files) into
    ``out_dir``, which may be one of the sources' folders; returns the runs as :func:`ablate` does.
    """
    if not run_tables:
        raise ValueError("combine needs at least one runs.csv")
    parts, settings = [], []
    for path in run_tables:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no runs table at {display_path(path)} (ablate writes OUT/runs.csv)")
        df = pd.read_csv(path)
        missing = [c for c in ("variant", "seed", "rsum") if c not in df.columns]
        if missing:
            raise ValueError(f"{display_path(path)} is not an ablation runs table: it lacks the columns {missing}")
        parts.append(df.assign(_source=display_path(path)))
        side = path.parent / "summary.json"  # what ablate recorded beside it: preset and overrides
        info = json.loads(side.read_text()) if side.is_file() else {}
        settings.append({"runs": display_path(path), "preset": info.get("preset"), "overrides": info.get("overrides")})
    table = pd.concat(parts, ignore_index=True)
    for col in ("split", "protocol"):
        if col in table.columns and table[col].nunique(dropna=False) > 1:
            seen = {v: sorted(set(g["_source"])) for v, g in table.groupby(col, dropna=False)}
            raise ValueError(f"the runs were scored on different {col}s: {seen}; combine runs of one {col} only")
    dup = table[table.duplicated(["variant", "seed"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        where = sorted(set(dup[(dup["variant"] == first["variant"]) & (dup["seed"] == first["seed"])]["_source"]))
        raise ValueError(f"{len(dup)} rows repeat a (variant, seed) pair, e.g. {first['variant']} seed "
                         f"{first['seed']} in {where}; keep each run in one table")  # fmt: skip
    if variants is not None:
        absent = [v for v in variants if v not in set(table["variant"])]
        if absent:
            raise ValueError(f"variants {absent} are in none of the tables (they hold {sorted(set(table['variant']))})")
        table = pd.concat([table[table["variant"] == v] for v in variants], ignore_index=True)
    sources = list(dict.fromkeys(table["_source"]))
    table = table.drop(columns="_source").reset_index(drop=True)
    settings = [x for x in settings if x["runs"] in sources]
    meta = {"seeds": sorted(int(s) for s in set(table["seed"]))}
    shared = {json.dumps({k: x[k] for k in ("preset", "overrides")}, sort_keys=True) for x in settings}
    if len(shared) == 1 and settings[0]["preset"] is not None:  # one preset and overrides for all: say it once
        meta.update(preset=settings[0]["preset"], overrides=settings[0]["overrides"])
    meta["combined_from"] = settings
    return _write_results(table, Path(out_dir), meta)
