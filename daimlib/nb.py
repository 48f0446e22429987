"""Notebook support: the one setup cell, repo-relative paths, and the demo data on demand.

Every notebook starts with::

    from daimlib import nb
    env = nb.setup(seed=0, device=DEVICE)      # seeds, device, plot defaults, repo-relative paths
    data_root = nb.data_root(DATA)             # "demo" -> data/demo (generated when missing)

Paths printed by these helpers are relative to the repository root, so executed notebooks carry
no machine paths.
"""

from __future__ import annotations

import os
import random
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np

_MARKERS = ("pyproject.toml", "daimlib")


def _is_root(p: Path) -> bool:
    return all((p / m).exists() for m in _MARKERS)


def repo_root() -> Path:
    """The repository root: the first folder at or above the working directory that holds both
    ``pyproject.toml`` and ``daimlib/``; otherwise the folder above this package (editable install).
    """
    cwd = Path.cwd().resolve()
    for p in (cwd, *cwd.parents):
        if _is_root(p):
            return p
    here = Path(__file__).resolve().parents[1]
    if _is_root(here):
        return here
    raise FileNotFoundError(
        "could not find the DAIM Kit repository root (a folder with pyproject.toml and daimlib/) at or "
        f"above the working directory {cwd.name!r}; start Jupyter from inside the repository"
    )


def _repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if absolute, else relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p


def rel(path: str | os.PathLike) -> str:
    """``path`` relative to the repository root as a POSIX string (``"data/demo"``).

    A path outside the repository is shown as ``<outside>/<last two parts>`` so that no machine
    path ends up in an executed notebook.
    """
    p = Path(path)
    root = repo_root()
    p = (p if p.is_absolute() else Path.cwd() / p).resolve()
    try:
        out = p.relative_to(root).as_posix()
        return out if out else "."
    except ValueError:
        return "<outside>/" + "/".join(p.parts[-2:])


def resolve_device(device: str = "auto") -> str:
    """``"auto"`` -> ``"cuda"`` if available, else ``"mps"`` if available, else ``"cpu"``.

    An explicit device that is not available raises with what was found.
    """
    import torch  # noqa: PLC0415

    if device == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    kind = str(device).split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            f"DEVICE={device!r} was asked for but this torch build sees no CUDA GPU; use 'auto' or 'cpu'"
        )
    if kind == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise RuntimeError(f"DEVICE={device!r} was asked for but MPS is not available; use 'auto' or 'cpu'")
    if kind not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; expected 'auto', 'cpu', 'cuda', 'cuda:N' or 'mps'")
    return str(device)


def seed_everything(seed: int = 0) -> None:
    """Seed Python's ``random``, numpy and torch (CPU and all GPUs)."""
    import torch  # noqa: PLC0415

    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def plot_defaults() -> None:
    """Small, consistent figures: 100 dpi, light grid, no top/right spines, PNG inline output."""
    import matplotlib.pyplot as plt  # noqa: PLC0415

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
    (``root/data``), ``figures`` (``root/figures``), ``runs`` (``root/runs``), ``device`` and
    ``seed``. Prints one line with repo-relative paths only.
    """
    import torch  # noqa: PLC0415

    root = repo_root()
    dev = resolve_device(device)
    seed_everything(seed)
    plot_defaults()
    quiet_warnings()
    env = SimpleNamespace(
        root=root, data=root / "data", figures=root / "figures", runs=root / "runs", device=dev, seed=seed
    )
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
    import json  # noqa: PLC0415

    from daimlib.data import make_demo_dataset  # noqa: PLC0415

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


def config_table(cfg, keys=None):
    """A two-column pandas table (``key``, ``value``) of a config's dotted keys, for display.

    ``keys``: dotted keys or section prefixes to keep (``["image", "loss.margin"]``); all when None.
    """
    import pandas as pd  # noqa: PLC0415

    from daimlib.config import _flatten  # noqa: PLC0415

    flat = _flatten(cfg.to_dict())
    if keys is not None:
        keys = list(keys)
        flat = {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in keys)}
    return pd.DataFrame({"key": list(flat), "value": [str(v) for v in flat.values()]}).set_index("key")


def model_for(cfg, checkpoint: str | os.PathLike | None = "auto", device: str = "cpu", verbose: bool = True):
    """The model a teaching notebook looks at: trained weights when a checkpoint exists, else random.

    ``checkpoint``: ``"auto"`` uses ``runs/<cfg.name>/best`` when that folder exists (notebook 05
    writes it) and random initial weights otherwise; ``None`` always builds random weights; any
    other value is a checkpoint folder (absolute or repo-relative) that must exist. Returns
    ``(model in eval mode on device, description)`` and prints the description.
    """
    from daimlib.model import DAIM  # noqa: PLC0415 - heavy import, only when a model is needed

    folder = None
    if checkpoint == "auto":
        candidate = repo_root() / "runs" / cfg.name / "best"
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
        from daimlib.checkpoint import load_model  # noqa: PLC0415

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


# --- load-else-train, cached test scores, text search (notebooks 05-09) -----------------------


def data_fingerprint(cfg, data_root: str | os.PathLike) -> dict:
    """What a trained run depends on besides its config: the dataset's Karpathy JSON (sha256; the
    folder is recorded for information, a copy of the same data elsewhere counts as the same)."""
    import hashlib  # noqa: PLC0415

    from daimlib.data.layout import resolve_layout  # noqa: PLC0415

    json_path = resolve_layout(_repo_path(data_root), cfg.data).source  # the detected layout's file
    if not json_path.is_file():
        raise FileNotFoundError(
            f"expected the dataset file {rel(json_path)} (data.json_name of preset {cfg.name!r}) but it does not "
            "exist; generate the demo data with nb.data_root('demo') or see data/README.md"
        )
    digest = hashlib.sha256(json_path.read_bytes()).hexdigest()
    return {"data_root": rel(json_path.parent), "json": json_path.name, "json_sha256": digest}


def _reuse_problem(run: Path, cfg, fingerprint: dict, eval_split) -> str | None:
    """Why the run folder cannot be reused for ``cfg`` (None when it can)."""
    import json  # noqa: PLC0415

    from daimlib.config import DAIMConfig  # noqa: PLC0415

    if not (run / "last" / "meta.json").is_file():
        return f"no finished run in {rel(run)}"
    try:
        saved = DAIMConfig.from_json(run / "config.json")
    except (OSError, ValueError) as e:
        return f"{rel(run / 'config.json')} is unreadable ({type(e).__name__})"
    diff = saved.diff(cfg)
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:4])
        return f"{rel(run)} was trained with another config ({shown})"
    meta = json.loads((run / "last" / "meta.json").read_text())
    if meta.get("stopped") == "interrupted":
        return f"the run in {rel(run)} was interrupted"
    if eval_split is not None and not (run / "best" / "meta.json").is_file():
        return f"{rel(run)} has no best/ checkpoint"
    marker = run / "data.json"
    if (
        not marker.is_file()
        or json.loads(marker.read_text()).get("json_sha256") != fingerprint["json_sha256"]
    ):
        return f"{rel(run)} was trained on other data (or its data.json is missing)"
    return None


def load_run(run_dir: str | os.PathLike, device: str = "cpu"):
    """A finished run folder written by :func:`daimlib.train.train` -> ``TrainResult``.

    ``model`` is the ``best`` checkpoint (``last`` when the run had no validation) in eval mode;
    ``steps`` / ``epochs`` are the history CSVs; ``best_metrics``, ``global_step`` and ``stopped``
    come from the checkpoints' meta.json.
    """
    import json  # noqa: PLC0415

    import pandas as pd  # noqa: PLC0415

    from daimlib.checkpoint import load_model  # noqa: PLC0415
    from daimlib.config import DAIMConfig  # noqa: PLC0415
    from daimlib.train import EPOCHS_CSV, STEPS_CSV, TrainResult  # noqa: PLC0415

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
    model = load_model(best_dir if best else run / "last", device=device)

    def read(name):
        path = run / name
        return pd.read_csv(path) if path.is_file() and path.stat().st_size else pd.DataFrame()

    return TrainResult(
        model=model,
        cfg=DAIMConfig.from_json(run / "config.json"),
        out_dir=run,
        steps=read(STEPS_CSV),
        epochs=read(EPOCHS_CSV),
        best_metrics=dict(best.get("metrics", {})) if best else {},
        best_epoch=best.get("epoch") if best else None,
        global_step=int(last.get("step", 0)),
        stopped=str(last.get("stopped", "completed")),
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
    :func:`model_for` looks). The run is reused when its ``config.json`` equals the requested
    config exactly, its ``data.json`` matches the dataset's JSON hash, it was not interrupted and
    (with validation) has a ``best`` checkpoint; otherwise it is trained again from scratch
    (``overwrite=True``), and the reason is printed. Returns ``(model, TrainResult)`` where the
    model is the ``best`` checkpoint in eval mode, so a reloaded run gives the same model as a
    fresh one.
    """
    import json  # noqa: PLC0415

    from daimlib.config import DAIMConfig, load_preset  # noqa: PLC0415

    if isinstance(preset, DAIMConfig):
        cfg = preset.replace(**overrides)
    else:
        cfg = load_preset(preset, **overrides)
    run = _repo_path(run_dir if run_dir is not None else Path("runs") / cfg.name)
    data = _repo_path(data_root)
    fingerprint = data_fingerprint(cfg, data)
    problem = "retrain=True" if retrain else _reuse_problem(run, cfg, fingerprint, eval_split)
    if problem is None:
        result = load_run(run, device=device)
        if verbose:
            print(
                f"{cfg.name}: loaded {rel(run)} ({result.global_step} steps, stopped by {result.stopped}; "
                "same config and data)"
            )
        return result.model, result
    from daimlib.train import train  # noqa: PLC0415 - heavy import, only when training

    if verbose:
        print(f"{cfg.name}: training into {rel(run)} ({problem})")
    (run / "data.json").unlink(missing_ok=True)
    result = train(cfg, data, run, device=device, progress=progress, eval_split=eval_split, overwrite=True)
    (run / "data.json").write_text(json.dumps(fingerprint, indent=2) + "\n")
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

    Stored as ``<run_dir>/sims_<split_name>.npy`` with a JSON key (the checkpoint's weight hash and
    the split's size); reused while the key matches, else recomputed with
    :func:`daimlib.evaluate.encode_split` + :func:`daimlib.evaluate.similarity_matrix` (the
    evaluation protocol's matrix, spec section 7). Returns a float32 numpy array.
    """
    import json  # noqa: PLC0415

    from daimlib.evaluate import encode_split, similarity_matrix  # noqa: PLC0415

    run = _repo_path(run_dir)
    meta_path = next(
        (p for p in (run / "best" / "meta.json", run / "last" / "meta.json") if p.is_file()), None
    )
    weights = json.loads(meta_path.read_text())["files"]["model.safetensors"]["sha256"] if meta_path else None
    key = {
        "weights_sha256": weights,
        "split": split_name,
        "n_images": split.n_images,
        "n_captions": split.n_captions,
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
    similarity (SCAN over the three levels, spec section 2) and return the ``k`` best.

    ``img_levels``: the images' level features, e.g. ``encode_split(...).img_levels`` (3 x
    ``[n_img, R, D]``). Returns ``(indices [k], scores [k])`` as numpy arrays, best first.
    """
    import torch  # noqa: PLC0415

    from daimlib.data import tokenize  # noqa: PLC0415

    if not isinstance(query, str) or not query.strip():
        raise ValueError(f"query must be a non-empty caption, got {query!r}")
    device = img_levels[0].device
    ids, mask = tokenize(tokenizer, [query], cfg.text.max_len)  # [1, L]
    with torch.no_grad():
        txt_levels, lengths = model.encode_text(ids.to(device), mask.to(device))
        txt = [lv.float()[:, : int(lengths.max())] for lv in txt_levels]  # 3 x [1, L, D]
        scores = model.similarity([lv.float() for lv in img_levels], txt, lengths)[:, 0]  # [n_img]
    k = min(int(k), scores.numel())
    top = torch.topk(scores, k)
    return top.indices.cpu().numpy(), top.values.cpu().numpy()
