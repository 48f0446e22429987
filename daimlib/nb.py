"""Notebook support: the one setup cell, repo-relative paths, and the demo data on demand.

Every notebook starts with::

    from daimlib import nb
    env = nb.setup(seed=0, device=DEVICE)      # seeds, device, plot defaults, repo-relative paths
    data_root = nb.data_root(DATA)             # "demo" -> data/demo (generated when missing)

Paths printed by these helpers are relative to the repository root, so executed notebooks carry
no machine paths.
"""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from daimlib import runs
from daimlib.checkpoint import load_loss, load_model
from daimlib.config import DAIMConfig, _flatten, load_preset
from daimlib.data import make_demo_dataset, tokenize
from daimlib.evaluate import data_identity, encode_split, similarity_matrix
from daimlib.model import DAIM
from daimlib.paths import display_path, figures_dir, output_root, repo_path, repo_root, run_root
from daimlib.runtime import resolve_device, seed_everything
from daimlib.tables import read_csv
from daimlib.train import EPOCHS_CSV, STEPS_CSV, TrainResult, train

# the notebooks' names for the leaf helpers (one copy each, in daimlib.paths / daimlib.runtime)
rel = display_path
_repo_path = repo_path


def plot_defaults() -> None:
    """Small, consistent figures: 100 dpi, light grid, no top/right spines, PNG inline output."""
    plt.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 100,
            "figure.figsize": (6.0, 3.5),
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "font.size": 9,
            "axes.titlesize": 10,
        }
    )


def _format_warning(message, category, filename, lineno, line=None) -> str:
    """Warnings as ``Category: message`` only: no source file path in notebook outputs."""
    return f"{category.__name__}: {message}\n"


def quiet_warnings() -> None:
    """Show warnings without their file paths, and drop tqdm's 'IProgress not found' notice
    (without ipywidgets, tqdm falls back to its text bar, which is fine in a notebook)."""
    warnings.formatwarning = _format_warning
    warnings.filterwarnings("ignore", message="IProgress not found")


def setup(seed: int = 0, device: str = "auto", verbose: bool = True) -> SimpleNamespace:
    """The setup cell of every notebook: seed everything, pick the device, set plot defaults.

    Also makes warnings print without source paths (:func:`quiet_warnings`).

    Returns a namespace with ``root`` (absolute ``Path``; print it with :func:`rel`), ``data``
    (``root/data``), ``figures`` (the demo data's figure folder, :func:`figures_dir`: ``root/figures``,
    or under ``$DAIM_OUTPUT_DIR`` when set), ``output`` (``$DAIM_OUTPUT_DIR`` or ``root``), ``runs``
    (``<output>/runs``), ``device`` and ``seed``. Prints one line with repo-relative paths only.
    """
    root = repo_root()
    dev = resolve_device(device)
    seed_everything(seed)
    plot_defaults()
    quiet_warnings()
    env = SimpleNamespace(
        root=root, data=root / "data", figures=figures_dir(), output=output_root(), runs=run_root(),
        device=dev, seed=seed,
    )  # fmt: skip
    if verbose:
        print(
            f"repo root: . | data: {rel(env.data)} | device: {dev} | seed: {seed} | torch {torch.__version__}"
        )
    return env


def ensure_demo_data(
    root: str | os.PathLike = "data/demo", size: str | tuple[int, int, int] = "default", seed: int = 0
) -> Path:
    """Generate the demo dataset at ``root`` (repo-relative) unless it is already there.

    :func:`daimlib.data.make_demo_dataset` reuses a dataset made with the same size and seed
    whose images are all present, and (re)generates it otherwise. Prints which of the two
    happened, with the image count. Returns the absolute folder.
    """
    folder = _repo_path(root)
    json_path = folder / "dataset_demo.json"
    before = json_path.stat().st_mtime_ns if json_path.exists() else None
    make_demo_dataset(folder, seed=seed, size=size)
    n = len(json.loads(json_path.read_text())["images"])
    if before is not None and json_path.stat().st_mtime_ns == before:
        print(f"demo data found: {rel(folder)} ({n} images)")
    else:
        print(f"demo data generated: {rel(folder)} ({n} images, size={size!r}, seed={seed})")
    return folder


def data_root(data: str = "demo", size: str | tuple[int, int, int] = "default") -> Path:
    """The notebooks' ``DATA`` parameter -> a dataset folder.

    ``"demo"`` -> ``data/demo`` (generated when missing); anything else is a folder (absolute or
    relative to the repository root) that must exist.
    """
    if data == "demo":
        return ensure_demo_data("data/demo", size=size)
    folder = _repo_path(data)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"DATA={data!r}: expected a dataset folder (Karpathy JSON + images/, see data/README.md) "
            f"but {rel(folder)} does not exist; use DATA='demo' for the generated demo dataset"
        )
    return folder


def figure_path(name: str, data: str | os.PathLike | None = "demo", smoke: bool = False) -> Path:
    """Where the figure ``name`` of a notebook run on ``data`` goes (the PNG; a PDF sits beside it).

    The full demo run: the tracked ``figures/<name>.png``; a smoke run or any other dataset
    folder: ``runs/[smoke/][<folder name>/]figures/<name>.png`` (:func:`output_dir`), so they never
    overwrite the tracked figures; all under ``$DAIM_OUTPUT_DIR`` when set
    (:func:`daimlib.paths.figures_dir`). Save with ``viz.save_figure(fig, name, data=DATA,
    smoke=SMOKE)``, which uses the same rule.
    """
    stem = name[:-4] if name.endswith((".png", ".pdf")) else name
    if not stem or "/" in stem or "\\" in stem or stem.startswith("."):
        raise ValueError(f"figure name must be a plain file stem like 'margin_evolution', got {name!r}")
    return figures_dir(data, smoke) / f"{stem}.png"


def output_dir(data: str | os.PathLike | None = "demo", smoke: bool = False) -> Path:
    """Where a notebook run on ``data`` keeps its runs and caches: ``runs`` for the full demo run,
    else ``runs/[smoke/][<folder name>]`` (:func:`daimlib.paths.run_root`; under
    ``$DAIM_OUTPUT_DIR`` when set)."""
    return run_root(data, smoke)


def config_table(cfg, keys=None):
    """A two-column pandas table (``key``, ``value``) of a config's dotted keys, for display.

    ``keys``: dotted keys or section prefixes to keep (``["image", "loss.margin"]``); all when None.
    """
    flat = _flatten(cfg.to_dict())
    if keys is not None:
        keys = list(keys)
        flat = {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in keys)}
    return pd.DataFrame({"key": list(flat), "value": [str(v) for v in flat.values()]}).set_index("key")


def model_for(cfg, checkpoint: str | os.PathLike | None = "auto", device: str = "cpu", verbose: bool = True):
    """The model a teaching notebook looks at: trained weights when a checkpoint exists, else random.

    ``checkpoint``: ``"auto"`` uses ``runs/<cfg.name>/best`` (under ``$DAIM_OUTPUT_DIR`` when set)
    when that folder exists (notebook 05 writes it) and random initial weights otherwise; ``None`` always builds random weights; any
    other value is a checkpoint folder (absolute or repo-relative) that must exist. Returns
    ``(model in eval mode on device, description)`` and prints the description.
    """
    folder = None
    if checkpoint == "auto":
        candidate = run_root() / cfg.name / "best"
        folder = candidate if candidate.is_dir() else None
        missing_note = f" (no checkpoint at {rel(candidate)}; notebook 05 trains one)"
    elif checkpoint is not None:
        folder = _repo_path(checkpoint)
        if not folder.is_dir():
            raise FileNotFoundError(
                f"checkpoint folder {rel(folder)} not found; expected a folder written by "
                "`python -m daimlib train` (e.g. runs/demo/best), or use checkpoint='auto' or None"
            )
    if folder is not None:
        model = load_model(folder, device=device)
        desc = f"model: trained weights from {rel(folder)}"
    else:
        model = DAIM.from_config(cfg, pretrained=False).to(device).eval()
        desc = f"model: {cfg.name} with random initial weights" + (
            missing_note if checkpoint == "auto" else ""
        )
    if verbose:
        print(desc)
    return model, desc


def trained_demo_model(
    cfg,
    data: str | os.PathLike = "demo",
    out_root: str | os.PathLike | None = None,
    checkpoint: str | os.PathLike | None = "auto",
    retrain: bool = False,
    smoke: bool = False,
    arm: str = "demo",
    device: str = "cpu",
):
    """The model a teaching notebook (01-03) looks at: the shipped trained demo model when it fits.

    The shipped ``models/<arm>`` (``daimlib.demo_models``; trained from scratch with ``retrain=True``)
    is used when the notebook runs the arm's own config (``PRESET`` = ``arm``, no ``OVERRIDES``) on the
    demo data (``DATA="demo"``) with ``checkpoint="auto"``. Otherwise, and in a smoke run where the arm
    is not shipped (training it takes about 21 minutes on one idle core), the notebook falls back to
    :func:`model_for`: with ``checkpoint="auto"`` the run of ``cfg`` under ``out_root`` when notebook 05
    trained one, else random weights. Prints which model it is and why.

    Returns ``(model in eval mode, description, DemoModel or None)``.
    """
    from daimlib import demo_models

    why = None
    if checkpoint != "auto":
        why = f"CHECKPOINT={checkpoint!r} asks for another model"
    elif str(data) != "demo":
        why = "DATA is not the demo data"
    elif cfg.to_dict() != load_preset(arm).to_dict():
        why = f"the config is not the shipped {arm!r} preset's (PRESET={cfg.name!r} or OVERRIDES differ)"
    elif smoke and not demo_models.is_shipped(arm):
        why = f"{arm!r} is not shipped here and a smoke run does not train it (about 21 minutes)"
    if why is None and smoke and retrain:
        print("RETRAIN=True is ignored in a smoke run (training takes about 21 minutes): loading the shipped model")
        retrain = False
    if why is None:
        training = retrain or not demo_models.is_shipped(arm)  # only training reads the data (and makes it when missing)
        root = data_root("demo") if training else _repo_path("data/demo")
        dm = demo_models.load(arm, retrain=retrain, data_root=root, device=device, progress=False, verbose=False)
        dm.model.to(device).eval()
        how = "trained here (RETRAIN=True)" if retrain else f"shipped in {rel(dm.source)}"
        desc = (f"model: the trained demo model {arm!r} ({how}; {int(dm.steps['step'].iloc[-1]) + 1} training steps, "
                f"{dm.minutes:.0f} min wall-clock to train; recorded test RSUM {dm.test_metrics['rsum']:.1f} of 600)")  # fmt: skip
        print(desc)
        return dm.model, desc, dm
    folder = checkpoint
    if checkpoint == "auto":  # only a run of this preset on this data (notebook 05 trains it), never one on other data
        run = Path(out_root if out_root is not None else output_dir(data, smoke)) / cfg.name / "best"
        folder = run if _repo_path(run).is_dir() else None
    print(f"not the trained demo model: {why}; falling back to "
          + ("a checkpoint" if folder is not None else "random weights (what the cells below show is untrained)"))
    model, desc = model_for(cfg, checkpoint=folder, device=device)
    return model, desc, None


# --- load-else-train, cached test scores, text search (notebooks 05-09) -----------------------


def data_fingerprint(cfg, data_root: str | os.PathLike) -> dict:
    """What a trained run depends on besides its config: the data's identity (layout, the sha256 of
    its annotation file, image count and split sizes; :func:`daimlib.runs.data_identity`, the one
    the training loop records in ``run.json``). A copy of the same data elsewhere is the same data."""
    return runs.data_identity(_repo_path(data_root), cfg)


def _reuse_problem(run: Path, cfg, data_root: str | os.PathLike, eval_split) -> str | None:
    """Why the run folder cannot be reused for ``cfg`` on ``data_root`` (None when it can): the one
    rule of :func:`daimlib.runs.reuse_problem`, which the CLI and ``train()`` itself also apply."""
    problem = runs.reuse_problem(run, cfg, _repo_path(data_root), eval_split)
    return None if problem is None else f"{rel(run)}: {problem}"


def load_run(run_dir: str | os.PathLike, device: str = "cpu"):
    """A finished run folder written by :func:`daimlib.train.train` -> ``TrainResult``.

    ``model`` is the ``best`` checkpoint (``last`` when the run had no validation) in eval mode;
    ``loss`` its :class:`~daimlib.losses.MatchingLoss` with the trained margin; ``steps`` /
    ``epochs`` are the history CSVs; ``best_metrics``, ``global_step`` and ``stopped`` come from
    the checkpoints' meta.json.
    """
    run = _repo_path(run_dir)
    last_meta = run / "last" / "meta.json"
    if not last_meta.is_file():
        raise FileNotFoundError(
            f"{rel(run)} holds no finished run (expected {rel(last_meta)}); train one with nb.load_or_train "
            "or `python -m daimlib train`"
        )
    last = json.loads(last_meta.read_text())
    best_dir = run / "best"
    best = json.loads((best_dir / "meta.json").read_text()) if (best_dir / "meta.json").is_file() else None
    ckpt = best_dir if best else run / "last"
    model = load_model(ckpt, device=device)
    return TrainResult(
        model=model,
        cfg=DAIMConfig.from_json(run / "config.json"),
        out_dir=run,
        steps=read_csv(run / STEPS_CSV),
        epochs=read_csv(run / EPOCHS_CSV),
        best_metrics=dict(best.get("metrics", {})) if best else {},
        best_epoch=best.get("epoch") if best else None,
        global_step=int(last.get("step", 0)),
        stopped=str(last.get("stopped", "completed")),
        loss=load_loss(ckpt, device=device),  # the MatchingLoss with the checkpoint's trained margin
    )


def load_or_train(
    preset,
    run_dir: str | os.PathLike | None = None,
    data_root: str | os.PathLike = "data/demo",
    device: str = "cpu",
    progress: bool = True,
    eval_split: str | None = "val",
    retrain: bool = False,
    verbose: bool = True,
    **overrides,
):
    """Load a finished run when it was trained with the same config and data, else train it.

    The "load the checkpoint if it exists, else train" cell of the notebooks (UvA style).
    ``preset``: a preset name or a :class:`~daimlib.config.DAIMConfig`; ``overrides``: dotted keys
    (``**{"train.max_steps": 300}``). ``run_dir`` defaults to ``runs/<cfg.name>`` (where
    :func:`model_for` looks; under ``$DAIM_OUTPUT_DIR`` when set). The run is reused when it was
    trained with exactly this config on the same data, finished, and (with validation) has a
    ``best`` checkpoint: the one rule :func:`daimlib.runs.reuse_problem`, read from the
    ``run.json`` that ``train()`` writes and applied by the CLI too, so a run trained by the CLI
    is reused here. Otherwise it is trained again from scratch (``overwrite=True``, which removes
    only the kit's own files), and the reason is printed. Returns ``(model, TrainResult)`` where
    the model is the ``best`` checkpoint in eval mode, so a reloaded run gives the same model as a
    fresh one.
    """
    if isinstance(preset, DAIMConfig):
        cfg = preset.replace(**overrides)
    else:
        cfg = load_preset(preset, **overrides)
    run = _repo_path(run_dir) if run_dir is not None else run_root() / cfg.name
    data = _repo_path(data_root)
    problem = "retrain=True" if retrain else _reuse_problem(run, cfg, data, eval_split)
    if problem is None:
        result = load_run(run, device=device)
        if verbose:
            print(
                f"{cfg.name}: loaded {rel(run)} ({result.global_step} steps, stopped by {result.stopped}; "
                "same config and data)"
            )
        return result.model, result
    if verbose:
        print(f"{cfg.name}: training into {rel(run)} ({problem})")
    # overwrite=True replaces only what the kit wrote (daimlib.runs.clear_run); a folder that is not a
    # kit run is refused by train() itself
    train(cfg, data, run, device=device, progress=progress, eval_split=eval_split, overwrite=True)
    result = load_run(run, device=device)
    if verbose:
        minutes = (
            float(result.epochs["elapsed_min"].iloc[-1]) if "elapsed_min" in result.epochs else float("nan")
        )
        print(f"{cfg.name}: {result.global_step} steps in {minutes:.1f} min (stopped by {result.stopped})")
    return result.model, result


def load_or_score(
    run_dir: str | os.PathLike,
    model,
    split,
    tokenizer,
    cfg,
    split_name: str = "test",
    device: str = "cpu",
    progress: bool = False,
    recompute: bool = False,
):
    """The ``[n_img, n_cap]`` score matrix of ``model`` on ``split``, cached in the run folder.

    Stored as ``<run_dir>/sims_<split_name>.npy`` with a JSON key (the checkpoint's weight hash, the
    split's size and its annotation file's sha256); reused while the key matches, else recomputed with
    :func:`daimlib.evaluate.encode_split` + :func:`daimlib.evaluate.similarity_matrix` (the
    evaluation protocol's matrix, spec section 7). Returns a float32 numpy array.
    """
    run = _repo_path(run_dir)
    meta_path = next(
        (p for p in (run / "best" / "meta.json", run / "last" / "meta.json") if p.is_file()), None
    )
    weights = json.loads(meta_path.read_text())["files"]["model.safetensors"]["sha256"] if meta_path else None
    ident = data_identity(split)
    key = {
        "weights_sha256": weights,
        "split": split_name,
        "n_images": split.n_images,
        "n_captions": split.n_captions,
        "annotations_sha256": ident.get("annotations_sha256"),  # the same sizes on other data: recomputed
    }
    npy, key_file = run / f"sims_{split_name}.npy", run / f"sims_{split_name}.json"
    if (
        not recompute
        and weights is not None
        and npy.is_file()
        and key_file.is_file()
        and json.loads(key_file.read_text()) == key
    ):
        return np.load(npy)
    feats = encode_split(
        model, split, tokenizer, cfg.data, max_len=cfg.text.max_len, device=device,
        batch_size=cfg.train.eval_batch_size, amp=cfg.train.amp, progress=progress,
    )  # fmt: skip
    sims = similarity_matrix(model, feats, progress=progress)  # [n_img, n_cap]
    if weights is not None:
        run.mkdir(parents=True, exist_ok=True)
        np.save(npy, sims)
        key_file.write_text(json.dumps(key) + "\n")
    return sims


def search_images(query: str, model, tokenizer, cfg, img_levels, k: int = 5):
    """Text-to-image search: score one typed caption against encoded images with the model's
    similarity (SCAN over every level, spec section 2) and return the ``k`` best.

    ``img_levels``: the images' level features, e.g. ``encode_split(...).img_levels`` (n_levels x
    ``[n_img, R, D]``). Returns ``(indices [k], scores [k])`` as numpy arrays, best first.
    """
    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty caption, got {query!r}")
    device = img_levels[0].device
    ids, mask = tokenize(tokenizer, [query], cfg.text.max_len)  # [1, L]
    with torch.no_grad():
        txt_levels, lengths = model.encode_text(ids.to(device), mask.to(device))
        txt = [lv.float()[:, : int(lengths.max())] for lv in txt_levels]  # n_levels x [1, L, D]
        scores = model.similarity([lv.float() for lv in img_levels], txt, lengths)[:, 0]  # [n_img]
    k = min(int(k), scores.numel())
    top = torch.topk(scores, k)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()
