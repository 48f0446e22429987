"""Ablations: each variant of :mod:`daimlib.course.variants` trained and tested for several seeds.

``python -m experiments ablate ...`` runs :func:`ablate`; notebook 09 runs a short one live and
reads the committed powered one (``results/ablation_powered``) with :func:`ablation_runs`.

:func:`ablate` trains and evaluates each variant for each seed, one run after another or
``jobs`` at a time in one-thread worker processes (then with step budgets only: runs at once ruin
each other's wall-clock budget, field notes section 7), and writes ``runs.csv`` (one row per run:
the columns the notebooks read) and ``summary.csv`` / ``summary.json`` (mean and std per variant).
A run whose ``result.json`` matches the config, data and split is read back instead of being
trained again; an interrupted run is resumed (:mod:`daimlib.runs` holds the rule). :func:`combine`
joins the ``runs.csv`` of several ablations (variants run at different times or places) into one.
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

from daimlib import runlock, runs
from daimlib import train as _training  # the public face: daimlib.train(...) trains
from daimlib.checkpoint import load_model, scoring_tokenizer
from daimlib.config import DAIMConfig, load_preset
from daimlib.course.variants import VARIANTS, variant_config
from daimlib.data import load_split
from daimlib.evaluate import MIN_IMAGES, default_protocols, degenerate_problem, evaluate
from daimlib.paths import display_path, repo_path, run_root
from daimlib.tables import read_csv

log = logging.getLogger("experiments.ablation")

SUMMARY_METRICS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")


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


def _result_row(res, cfg, variant, seed, data_root, eval_split, progress, minutes) -> dict:
    """The test row of one finished run: its best checkpoint on ``eval_split`` under the first protocol."""
    protocol = default_protocols(cfg.data.dataset)[0]
    validated_under = default_protocols(cfg.data.dataset)[-1]  # what train() scores the whole val split with
    if eval_split == cfg.data.val_split and protocol == validated_under and res.best_metrics:
        metrics = res.best_metrics  # the best checkpoint was already scored on this split
    else:
        model = load_model(res.best_dir) if (res.best_dir / "meta.json").exists() else res.model
        split = load_split(cfg.data, data_root, eval_split)
        tokenizer = scoring_tokenizer(res.best_dir, cfg, data_root)  # the checkpoint's own
        metrics, _ = evaluate(model, split, tokenizer, cfg, protocol=protocol, progress=progress)
    margin = float(res.steps["margin"].iloc[-1]) if len(res.steps) else float(cfg.loss.margin)
    return dict(
        variant=variant,
        seed=seed,
        split=eval_split,
        protocol=protocol,
        **{k: float(v) for k, v in metrics.items()},
        best_epoch=res.best_epoch,
        best_val_select=res.epochs["select"].max() if "select" in res.epochs else None,
        final_margin=margin,
        steps=res.global_step,
        minutes=minutes,
        stopped=res.stopped,
    )


def _train_run(cfg, run_dir: Path, data_root, data: dict, progress: bool):
    """Train one ablation run with the kit's one reuse rule: reuse a finished run, resume an interrupted
    one, start an absent one; a run folder trained on other data is refused, never replaced."""
    val = cfg.data.val_split
    if runs.reuse_problem(run_dir, cfg, data_root, val) is None:
        return _training(cfg, data_root, run_dir, progress=progress, eval_split=val)
    record = runs.read_record(run_dir)
    trained_on = (record or {}).get("data", {}).get("sha256")
    if trained_on is not None and trained_on != data["sha256"]:
        raise ValueError(
            f"{display_path(run_dir)} was trained on other data than {display_path(data_root)}; "
            "choose another out_dir for this dataset (nothing was changed)"
        )
    if runs.resume_problem(run_dir, cfg) is None:
        log.info("resuming the interrupted run in %s", display_path(run_dir))
        return _training(cfg, data_root, run_dir, progress=progress, eval_split=val, resume=True)
    return _training(cfg, data_root, run_dir, progress=progress, eval_split=val, overwrite=True)


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
    result_file.write_text(
        json.dumps(
            {"row": row, "config": cfg.to_dict(), "data": data, "split": eval_split}, indent=2, default=float
        )
        + "\n"
    )
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
    with cf.ProcessPoolExecutor(
        max_workers=jobs, mp_context=ctx, initializer=_worker_init, initargs=(ctx.Value("i", 0), gpus)
    ) as pool:
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
        raise ValueError(
            "jobs > 1 with a train.max_minutes budget: runs at once share the CPU, so each would "
            "train less; give the budget as train.max_steps"
        )
    base = load_preset(preset, **overrides)
    n_eval = load_split(data_root, eval_split, base.data, check_files=False).n_images
    if n_eval < MIN_IMAGES:  # every rank 1: each variant would score RSUM 600 (issue 28)
        raise ValueError(f"ablate on the {eval_split!r} split: {degenerate_problem(n_eval)} (--split)")
    out_dir = Path(out_dir)
    with runlock.run_folder(out_dir, "ablate"):  # one ablation per folder at a time (issue 28)
        tasks = [
            (preset, v, s, data_root, out_dir, eval_split, progress and jobs == 1, overrides)
            for v in variants
            for s in seed_list
        ]
        if jobs == 1:
            rows = [_one_run(*task) for task in tasks]
        else:
            rows = _run_parallel(tasks, int(jobs))
        table = pd.DataFrame(rows)
        meta = {
            "preset": preset,
            "seeds": seed_list,
            "overrides": {k: str(v) for k, v in overrides.items()},
            # the preset as it resolved when this ran: a preset may change later
            "base_config": json.loads(load_preset(preset, **overrides).to_json()),
        }
        return _write_results(table, out_dir, meta)


def _write_results(table: pd.DataFrame, out_dir: Path, meta: dict) -> pd.DataFrame:
    """runs.csv, summary.csv and summary.json (``meta`` + the summary) of ``table`` in ``out_dir``."""
    summary = summarize(table)
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "runs.csv", index=False)
    summary.to_csv(out_dir / "summary.csv")
    (out_dir / "summary.json").write_text(
        json.dumps(
            {**meta, "summary": summary.reset_index().to_dict(orient="records")}, indent=2, default=float
        )
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
            raise ValueError(
                f"{display_path(path)} is not an ablation runs table: it lacks the columns {missing}"
            )
        parts.append(df.assign(_source=display_path(path)))
        side = path.parent / "summary.json"  # what ablate recorded beside it: preset and overrides
        info = json.loads(side.read_text()) if side.is_file() else {}
        settings.append(
            {"runs": display_path(path), "preset": info.get("preset"), "overrides": info.get("overrides")}
        )
    table = pd.concat(parts, ignore_index=True)
    for col in ("split", "protocol"):
        if col in table.columns and table[col].nunique(dropna=False) > 1:
            seen = {v: sorted(set(g["_source"])) for v, g in table.groupby(col, dropna=False)}
            raise ValueError(
                f"the runs were scored on different {col}s: {seen}; combine runs of one {col} only"
            )
    dup = table[table.duplicated(["variant", "seed"], keep=False)]
    if len(dup):
        first = dup.iloc[0]
        where = sorted(
            set(dup[(dup["variant"] == first["variant"]) & (dup["seed"] == first["seed"])]["_source"])
        )
        raise ValueError(
            f"{len(dup)} rows repeat a (variant, seed) pair, e.g. {first['variant']} seed "
            f"{first['seed']} in {where}; keep each run in one table"
        )
    if variants is not None:
        absent = [v for v in variants if v not in set(table["variant"])]
        if absent:
            raise ValueError(
                f"variants {absent} are in none of the tables (they hold {sorted(set(table['variant']))})"
            )
        table = pd.concat([table[table["variant"] == v] for v in variants], ignore_index=True)
    sources = list(dict.fromkeys(table["_source"]))
    table = table.drop(columns="_source").reset_index(drop=True)
    settings = [x for x in settings if x["runs"] in sources]
    meta = {"seeds": sorted(int(s) for s in set(table["seed"]))}
    shared = {json.dumps({k: x[k] for k in ("preset", "overrides")}, sort_keys=True) for x in settings}
    if (
        len(shared) == 1 and settings[0]["preset"] is not None
    ):  # one preset and overrides for all: say it once
        meta.update(preset=settings[0]["preset"], overrides=settings[0]["overrides"])
    meta["combined_from"] = settings
    return _write_results(table, Path(out_dir), meta)


# --- reading a finished ablation (notebooks 05, 06, 08, 09) -------------------------------------

ABLATION_CSV = "results/ablation_powered/runs.csv"


def ablation_runs(csv: str | os.PathLike | None = None, run_dir: str | os.PathLike | None = None):
    """The finished runs of the powered ablation as a DataFrame (one row per run: variant, seed,
    rsum, the recalls, steps, ...) and where they were read from.

    ``results/ablation_powered/runs.csv`` (committed) when it exists, else the ``result.json`` of
    every finished run under ``runs/ablation_powered/`` (an ablation still running). Returns
    ``(runs, source)``; ``runs`` is empty (and ``source`` says so) when neither exists.
    """
    csv = repo_path(csv or ABLATION_CSV)
    if csv.is_file():
        return read_csv(csv), display_path(csv)
    folder = repo_path(run_dir) if run_dir is not None else run_root() / "ablation_powered"
    rows = []
    for path in sorted(folder.glob("*/result.json")):
        row = json.loads(path.read_text()).get("row")
        if row:
            rows.append(row)
    if rows:
        return pd.DataFrame(rows), f"{display_path(folder)}/*/result.json ({len(rows)} finished runs)"
    return pd.DataFrame(
        columns=["variant", "seed", "rsum"]
    ), f"none ({display_path(csv)} and {display_path(folder)} not found)"
