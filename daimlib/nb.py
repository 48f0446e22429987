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

    folder = Path(root)
    if not folder.is_absolute():
        folder = repo_root() / folder
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
    folder = Path(data)
    if not folder.is_absolute():
        folder = repo_root() / folder
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
        folder = Path(checkpoint)
        if not folder.is_absolute():
            folder = repo_root() / folder
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


# load_or_train(...) (checkpoint else train) is added here with daimlib.train / daimlib.checkpoint.
