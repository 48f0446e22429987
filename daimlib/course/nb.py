"""Notebook support: the one setup cell, repo-relative paths, and the demo data on demand.

Every notebook starts with::

    from daimlib.course import nb
    env = nb.setup(seed=0, device=DEVICE)      # seeds, device, plot defaults, repo-relative paths
    data_root = nb.data_root(DATA)             # "demo" -> data/demo (generated when missing)

Paths printed by these helpers are relative to the repository root, so executed notebooks carry
no machine paths.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from pathlib import Path
from types import SimpleNamespace

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from daimlib import TrainResult, runs, train
from daimlib.checkpoint import has_tokenizer, load_checkpoint_tokenizer, load_loss, load_model
from daimlib.config import DAIMConfig, flatten, load_preset
from daimlib.course.variants import variant_overrides
from daimlib.data import make_demo_dataset, tokenize
from daimlib.evaluate import encode_split, similarity_matrix, split_identity
from daimlib.history import EPOCHS_CSV, STEPS_CSV
from daimlib.model import DAIM
from daimlib.paths import display_path, figures_dir, output_root, repo_path, repo_root, run_root
from daimlib.runtime import resolve_device, seed_everything
from daimlib.tables import read_csv

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
    (``<output>/runs``), ``device`` and ``seed``. Prints one line with repo-relative paths only (and
    the output folder when ``$DAIM_OUTPUT_DIR`` moves it: the runs a notebook reuses are there).
    """
    root = repo_root()
    dev = resolve_device(device)
    seed_everything(seed)
    plot_defaults()
    quiet_warnings()
    env = SimpleNamespace(
        root=root,
        data=root / "data",
        figures=figures_dir(),
        output=output_root(),
        runs=run_root(),
        device=dev,
        seed=seed,
    )
    if verbose:
        # where runs, caches and figures go when $DAIM_OUTPUT_DIR moves them (make demo: runs/executed)
        moved = f" | outputs: {rel(env.output)}" if env.output != root else ""
        print(
            f"repo root: . | data: {rel(env.data)} | device: {dev} | seed: {seed} | torch {torch.__version__}"
            + moved
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
    flat = flatten(cfg.to_dict())
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

    The shipped ``models/<arm>`` (``daimlib.course.demo_models``; trained from scratch with ``retrain=True``)
    is used when the notebook runs the arm's own config (``PRESET`` = ``arm``, no ``OVERRIDES``) on the
    demo data (``DATA="demo"``) with ``checkpoint="auto"``. Otherwise, and in a smoke run where the arm
    is not shipped (training it takes about 50 minutes: the shipped arms took 49 to 55), the notebook falls back to
    :func:`model_for`: with ``checkpoint="auto"`` the run of ``cfg`` under ``out_root`` when notebook 05
    trained one, else random weights. Prints which model it is and why.

    Returns ``(model in eval mode, description, DemoModel or None)``.
    """
    from daimlib.course import demo_models

    why = None
    if checkpoint != "auto":
        why = f"CHECKPOINT={checkpoint!r} asks for another model"
    elif str(data) != "demo":
        why = "DATA is not the demo data"
    elif cfg.to_dict() != load_preset(arm).to_dict():
        why = f"the config is not the shipped {arm!r} preset's (PRESET={cfg.name!r} or OVERRIDES differ)"
    elif smoke and not demo_models.is_shipped(arm):
        why = f"{arm!r} is not shipped here and a smoke run does not train it (about 50 minutes)"
    if why is None and smoke and retrain:
        print(
            "RETRAIN=True is ignored in a smoke run (training takes about 50 minutes): loading the shipped model"
        )
        retrain = False
    if why is None:
        training = retrain or not demo_models.is_shipped(
            arm
        )  # only training reads the data (and makes it when missing)
        root = data_root("demo") if training else _repo_path("data/demo")
        dm = demo_models.load(
            arm, retrain=retrain, data_root=root, device=device, progress=False, verbose=False
        )
        dm.model.to(device).eval()
        how = "trained here (RETRAIN=True)" if retrain else f"shipped in {rel(dm.source)}"
        desc = (
            f"model: the trained demo model {arm!r} ({how}; {int(dm.steps['step'].iloc[-1]) + 1} training steps, "
            f"{dm.minutes:.0f} min wall-clock to train; recorded test RSUM {dm.test_metrics['rsum']:.1f} of 600)"
        )
        print(desc)
        return dm.model, desc, dm
    folder = checkpoint
    if (
        checkpoint == "auto"
    ):  # only a run of this preset on this data (notebook 05 trains it), never one on other data
        run = Path(out_root if out_root is not None else output_dir(data, smoke)) / cfg.name / "best"
        folder = run if _repo_path(run).is_dir() else None
    print(
        f"not the trained demo model: {why}; falling back to "
        + (
            "a checkpoint"
            if folder is not None
            else "random weights (what the cells below show is untrained)"
        )
    )
    model, desc = model_for(cfg, checkpoint=folder, device=device)
    return model, desc, None


# --- load-else-train, cached test scores, text search (notebooks 05-09) -----------------------


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
    tokenizer's vocabulary hash, the split's size and its annotation file's sha256); reused while the
    key matches, else recomputed with :func:`daimlib.evaluate.encode_split` +
    :func:`daimlib.evaluate.similarity_matrix` (the evaluation protocol's matrix, spec section 7).
    When the run's checkpoint carries its own tokenizer (the vocabulary its text encoder was trained
    on) and ``tokenizer`` differs from it, the run's own is used and a note says so: captions encoded
    with another vocabulary score at chance. Returns a float32 numpy array.
    """
    run = _repo_path(run_dir)
    weights = _weights_sha256(run / "best") or _weights_sha256(run / "last")
    tokenizer = _run_tokenizer(run, tokenizer)
    return _cached_scores(run, weights, model, split, tokenizer, cfg, split_name, device, progress, recompute)


def _vocab_sha256(tokenizer) -> str | None:
    """A hash of a tokenizer's vocabulary (token -> id), or None for one without ``get_vocab``."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return None
    return hashlib.sha256(json.dumps(sorted(get_vocab().items())).encode()).hexdigest()


def _run_tokenizer(run: Path, tokenizer):
    """``tokenizer``, or the run checkpoint's own when it carries one with another vocabulary."""
    own_dir = next((d for d in (run / "best", run / "last") if d.is_dir() and has_tokenizer(d)), None)
    if own_dir is None:
        return tokenizer
    own = load_checkpoint_tokenizer(own_dir)
    if own is None or _vocab_sha256(own) == _vocab_sha256(tokenizer):
        return tokenizer
    print(
        f"note: scored with the tokenizer saved in {display_path(own_dir)} (the vocabulary this run was "
        "trained on); the one passed has another vocabulary"
    )
    return own


def _cached_scores(
    folder: Path,
    weights_sha256,
    model,
    split,
    tokenizer,
    cfg,
    split_name,
    device,
    progress,
    recompute: bool = False,
):
    """The one score cache: ``<folder>/sims_<split_name>.npy`` beside its JSON key (the weights'
    sha256, the tokenizer's vocabulary hash, the split's sizes and its annotation file's sha256: the
    same sizes on other data, or captions encoded with another vocabulary, are scored again); without
    a weight hash nothing is cached."""
    key = {
        "weights_sha256": weights_sha256,
        "tokenizer_vocab_sha256": _vocab_sha256(tokenizer),
        "split": split_name,
        "n_images": split.n_images,
        "n_captions": split.n_captions,
        "annotations_sha256": split_identity(split).get("annotations_sha256"),
    }
    npy, key_file = folder / f"sims_{split_name}.npy", folder / f"sims_{split_name}.json"
    if (
        not recompute
        and weights_sha256
        and npy.is_file()
        and key_file.is_file()
        and json.loads(key_file.read_text()) == key
    ):
        return np.load(npy)
    feats = encode_split(
        model,
        split,
        tokenizer,
        cfg.data,
        max_len=cfg.text.max_len,
        device=device,
        batch_size=cfg.train.eval_batch_size,
        amp=cfg.train.amp,
        progress=progress,
    )
    sims = similarity_matrix(model, feats, progress=progress)  # [n_img, n_cap]
    if weights_sha256:
        folder.mkdir(parents=True, exist_ok=True)
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
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a whole number of results, at least 1, got {k!r}")
    k = min(int(k), scores.numel())
    top = torch.topk(scores, k)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()


# --- the three-arm comparison (notebooks 05, 06, 08) --------------------------------------------

# the order of the comparison: each arm differs from the one before it in one named thing
ARM_ORDER = ("hat", "baseline", "daim")
ARM_ROLES = {
    "hat": "HAT-style (i2t SCAN, no FDM, fixed margin)",
    "baseline": "t2i baseline (t2i SCAN, no FDM, fixed margin)",
    "daim": "DAIM (t2i SCAN + FDM + MOM)",
}
DEMO_ARMS = {"hat": "demo_hat", "baseline": "demo_baseline", "daim": "demo"}
# the two gaps of the comparison: (name, from arm, to arm, what changes)
GAPS = (
    ("direction", "hat", "baseline", "SCAN direction i2t -> t2i"),
    ("FDM+MOM", "baseline", "daim", "ContraNorm + adaptive margin added"),
)


def comparison_configs(preset: str = "demo", baseline: str = "auto", **overrides) -> dict[str, DAIMConfig]:
    """The configs of the three arms of ``preset``: ``{"hat", "baseline", "daim"}`` (in that order).

    ``daim`` is the preset; ``baseline`` the preset without FDM and MOM (``demo_baseline`` for the
    demo); ``hat`` the baseline with HAT's image-to-text SCAN (the preset's own HAT preset when it
    has one: ``demo_hat``, ``hat_f30k``, ``hat_coco``; ``baseline`` names another preset for it).
    ``overrides`` (dotted keys) apply to all three.
    """
    daim = load_preset(preset, **overrides)
    if preset == "demo":
        base = load_preset("demo_baseline", **overrides)
    else:
        base = load_preset(preset, **overrides)
        base = base.replace(**variant_overrides("baseline", base))
        base.name = f"{preset}_baseline"  # names its run folder (a preset's name is not an override)
    hat_preset = {"demo": "demo_hat", "daim_f30k": "hat_f30k", "daim_coco": "hat_coco"}.get(preset)
    if baseline != "auto":
        hat_preset = baseline
    if hat_preset:
        hat = load_preset(hat_preset, **overrides)
    else:
        hat = load_preset(preset, **overrides)
        hat = hat.replace(**variant_overrides("hat", hat))
        hat.name = f"{preset}_hat"
    return {"hat": hat, "baseline": base, "daim": daim}


def uses_shipped_models(
    data, preset: str, smoke: bool = False, overrides=None, baseline: str = "auto"
) -> bool:
    """Whether a notebook compares the shipped demo models (``models/``): the demo data, the demo
    preset and its own baselines, no overrides, not a smoke run. Otherwise it trains short runs."""
    return str(data) == "demo" and preset == "demo" and not smoke and not overrides and baseline == "auto"


def _weights_sha256(folder: Path) -> str | None:
    meta = folder / "meta.json"
    if not meta.is_file():
        return None
    return json.loads(meta.read_text())["files"]["model.safetensors"]["sha256"]


def load_comparison(
    data,
    preset: str,
    data_root,
    out_root,
    device="cpu",
    smoke: bool = False,
    retrain: bool = False,
    overrides=None,
    baseline: str = "auto",
    train_steps: int = 300,
    seed: int = 0,
    verbose: bool = True,
) -> dict[str, SimpleNamespace]:
    """The arms of the comparison, ``{"hat", "baseline", "daim"} -> arm`` (fewer when one is missing).

    On the demo data with the demo preset (:func:`uses_shipped_models`) each arm is the shipped
    model ``models/<arm>`` (:func:`daimlib.course.demo_models.load`; trained from scratch with
    ``retrain=True``, about 50 CPU-minutes per arm); a shipped arm missing from the checkout is
    skipped with a printed note (never trained behind the reader's back). Otherwise (other data, another
    preset, overrides, a smoke run) each arm is a short run of ``train_steps`` steps, trained or
    reused with :func:`load_or_train` under ``out_root`` (what notebook 05 trains), and the
    function says so.

    Each arm: ``key``, ``name`` (its preset or run name), ``label`` (for tables and legends),
    ``role``, ``model`` (eval mode), ``cfg``, ``tokenizer``, ``steps`` / ``epochs`` (histories), ``test`` (the
    recorded test metrics of a shipped model, else None), ``source`` (its folder), ``shipped``,
    ``score_dir`` / ``weights_sha256`` (where :func:`arm_scores` caches its score matrices).
    """
    overrides = dict(overrides or {})
    if uses_shipped_models(data, preset, smoke, overrides, baseline):
        return _shipped_arms(data_root, device, retrain, verbose)
    if verbose:
        why = (
            "a smoke run"
            if smoke
            else f"DATA={str(data)!r}, PRESET={preset!r}" + (", OVERRIDES" if overrides else "")
        )
        print(
            f"the shipped demo models are for the demo data and preset only ({why}): "
            f"each arm is a short run of {train_steps} steps instead, trained here or reused"
        )
    budget = {"train.max_steps": train_steps, "train.seed": seed, **overrides}
    return _short_run_arms(
        comparison_configs(preset, baseline, **budget), data_root, out_root, device, retrain, verbose
    )


def _arm(key: str, name: str, **fields) -> SimpleNamespace:
    """One arm of :func:`load_comparison`: its key, name, label and role, and the given fields."""
    label = f"{ARM_ROLES[key].split(' (')[0]} ({name})"
    return SimpleNamespace(key=key, name=name, label=label, role=ARM_ROLES[key], **fields)


def _shipped_arms(data_root, device, retrain: bool, verbose: bool) -> dict[str, SimpleNamespace]:
    """The shipped ``models/<arm>`` of every arm in the checkout (retrained with ``retrain``)."""
    from daimlib.course import demo_models  # noqa: PLC0415 - demo_models imports this module's neighbours

    arms: dict[str, SimpleNamespace] = {}
    for key in ARM_ORDER:
        arm = DEMO_ARMS[key]
        if not retrain and not demo_models.is_shipped(arm):
            if verbose:
                print(
                    f"{arm}: not shipped in this checkout ({rel(demo_models.model_dir(arm))} missing): left out "
                    f"(train it with `{demo_models.COMMAND}`, or set RETRAIN = True)"
                )
            continue
        dm = demo_models.load(
            arm, retrain=retrain, data_root=data_root, device=device, progress=False, verbose=verbose
        )
        arms[key] = _arm(
            key,
            arm,
            model=dm.model,
            cfg=dm.cfg,
            tokenizer=dm.tokenizer,
            steps=dm.steps,
            epochs=dm.epochs,
            test=dict(dm.test_metrics),
            source=dm.source,
            shipped=not retrain,
            score_dir=run_root() / "demo_models_scores" / arm,
            weights_sha256=_weights_sha256(dm.source / "best"),
        )
    return arms


def _short_run_arms(configs: dict, data_root, out_root, device, retrain: bool, verbose: bool):
    """Each config of ``configs`` (key -> config) trained under ``out_root``, or its finished run reused."""
    from daimlib.checkpoint import scoring_tokenizer  # noqa: PLC0415 - the checkpoint's own tokenizer

    arms: dict[str, SimpleNamespace] = {}
    for key, cfg in configs.items():
        model, res = load_or_train(
            cfg,
            Path(out_root) / cfg.name,
            data_root,
            device=device,
            progress=False,
            retrain=retrain,
            verbose=verbose,
        )
        arms[key] = _arm(
            key,
            cfg.name,
            model=model,
            cfg=cfg,
            tokenizer=scoring_tokenizer(res.out_dir / "last", cfg, data_root),
            steps=res.steps,
            epochs=res.epochs,
            test=None,
            source=res.out_dir,
            shipped=False,
            score_dir=res.out_dir,
            weights_sha256=_weights_sha256(res.out_dir / "best"),
        )
    return arms


def arm_scores(arm, split, tokenizer=None, split_name: str = "test", device="cpu", progress: bool = False):
    """The ``[n_img, n_cap]`` score matrix of one arm of :func:`load_comparison` on ``split``.

    Cached in ``arm.score_dir`` (``runs/demo_models_scores/<arm>`` for a shipped model, never
    inside ``models/``; the run folder for a short run) under a key of the weights' sha256 and the
    split's identity, so a re-exported model or other data is scored again. Returns float32 numpy.
    """
    return _cached_scores(
        Path(arm.score_dir),
        arm.weights_sha256,
        arm.model,
        split,
        tokenizer if tokenizer is not None else arm.tokenizer,
        arm.cfg,
        split_name,
        device,
        progress,
    )


# --- the seed spread of an ablation ------------------------------------------------------------


def seed_spread(runs_df, metric: str = "rsum") -> pd.DataFrame:
    """Per variant: seeds (n), mean, sample standard deviation (ddof=1; NaN for one seed), min, max of
    ``metric``, and the mean final margin when the runs record it."""
    from daimlib.course.stats import powered_summary  # the one seed-statistics table

    if runs_df.empty:
        return pd.DataFrame(columns=["n", "mean", "sd", "min", "max"])
    out = powered_summary(runs_df, reference=None, metric=metric)[
        ["n", "mean", "sd", "min", "max"]
    ].sort_index()
    if "final_margin" in runs_df:  # whether the MOM acted within the ablation's budget (0.2 = it did not)
        out["final margin (mean)"] = runs_df.groupby("variant")["final_margin"].mean()
    return out


def paired_gap(runs_df, a: str, b: str, metric: str = "rsum") -> dict:
    """``metric`` of variant ``b`` minus variant ``a``, paired by seed: seeds both have (n), the
    mean difference and its sample standard deviation over seeds (NaN below two pairs)."""
    if runs_df.empty:
        return {"n": 0, "mean": float("nan"), "sd": float("nan")}
    wide = runs_df[runs_df["variant"].isin([a, b])].pivot_table(
        index="seed", columns="variant", values=metric
    )
    if a not in wide or b not in wide:
        return {"n": 0, "mean": float("nan"), "sd": float("nan")}
    d = (wide[b] - wide[a]).dropna()
    return {
        "n": int(d.size),
        "mean": float(d.mean()) if d.size else float("nan"),
        "sd": float(d.std(ddof=1)) if d.size > 1 else float("nan"),
    }


def gap_table(values: dict, runs_df=None, metric: str = "rsum", arms=None, long_runs=None) -> pd.DataFrame:
    """The two gaps of the comparison (:data:`GAPS`) of ``values`` (``{"hat" | "baseline" | "daim": value}``),
    with the seed spread of the powered ablation beside each when ``runs_df`` is given.

    Each gap's spread is the sd of its paired differences over seeds (baseline - hat, daim -
    baseline). An ablation without the ``hat`` variant (the i2t arm) gives the direction gap the t2i
    baseline's seed sd times √2 instead (the sd of a difference of two independent runs with that
    sd). ``arms`` (``{key: arm}``) names the columns.

    ``long_runs`` (:func:`long_run_seeds`: the full-budget runs of each arm, several seeds) adds the
    gap of the seed means with Welch's 95 % interval and p (``daimlib.course.stats.welch``; both as text,
    so that a notebook's ``.round(1)`` keeps p's two decimals); pass it only
    when ``values`` come from the shipped demo models, the seed-0 runs it includes.
    """
    rows = []
    spread = seed_spread(runs_df, metric) if runs_df is not None else None
    for name, a, b, what in GAPS:
        if a not in values or b not in values:
            continue
        row = {
            "gap": name,
            "changes": what,
            "from": arms[a].name if arms else a,
            "to": arms[b].name if arms else b,
            f"{metric} from": values[a],
            f"{metric} to": values[b],
            "gap (to - from)": values[b] - values[a],
        }
        if spread is not None:
            if name == "direction" and paired_gap(runs_df, "hat", "baseline", metric)["n"] > 1:
                pg = paired_gap(runs_df, "hat", "baseline", metric)
                row.update(
                    {
                        "seed sd of a gap (300 steps)": pg["sd"],
                        "seeds": pg["n"],
                        "spread from": "paired baseline - hat",
                    }
                )
            elif name == "direction":
                n = int(spread.loc["baseline", "n"]) if "baseline" in spread.index else 0
                sd = float(spread.loc["baseline", "sd"]) * math.sqrt(2) if n > 1 else float("nan")
                row.update(
                    {"seed sd of a gap (300 steps)": sd, "seeds": n, "spread from": "baseline sd x sqrt 2"}
                )
            else:
                pg = paired_gap(runs_df, "baseline", "daim", metric)
                row.update(
                    {
                        "seed sd of a gap (300 steps)": pg["sd"],
                        "seeds": pg["n"],
                        "spread from": "paired daim - baseline",
                    }
                )
        if long_runs is not None and len(long_runs):
            row.update(_long_gap(long_runs, a, b, metric))
        rows.append(row)
    return pd.DataFrame(rows).set_index("gap") if rows else pd.DataFrame()


def _long_gap(long_runs: pd.DataFrame, a: str, b: str, metric: str) -> dict:
    """Mean ``metric`` of arm ``b`` minus arm ``a`` over their full-budget seeds, with Welch's interval."""
    from daimlib.course import stats

    if metric not in long_runs:
        return {}
    x = long_runs.loc[long_runs["arm"] == a, metric].astype(float).tolist()
    y = long_runs.loc[long_runs["arm"] == b, metric].astype(float).tolist()
    out = {
        "12-epoch seeds (from, to)": f"{len(x)}, {len(y)}",
        "12-epoch gap of the seed means": (np.mean(y) - np.mean(x)) if x and y else float("nan"),
    }
    if min(len(x), len(y)) >= 2:
        c = stats.welch(x, y)
        out.update({"95% CI (Welch)": f"[{c.diff.lo:+.1f}, {c.diff.hi:+.1f}]", "p (Welch)": f"{c.p:.2f}"})
    else:
        out.update({"95% CI (Welch)": "needs 2 seeds of each", "p (Welch)": ""})
    return out
