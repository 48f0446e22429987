"""The run record and the one rule for reusing a finished run (a leaf: imports config and data.layout).

:func:`daimlib.train.train` writes ``<out>/run.json`` when a run starts and again when it stops:
the config (and its sha256), the budget, the identity of the data it trained on, the evaluation
split, how it stopped, and the versions of Python, torch, timm, transformers and the git commit.
:func:`reuse_problem` reads it back: a run is reused only when it finished (completed or stopped
by its budget, never interrupted), with the same config, on the same data, with the same
validation split. The CLI (``train`` on an existing ``--out``), ``ablate`` and the notebooks
(``nb.load_or_train``) all ask this one function.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import shutil
import subprocess
from pathlib import Path

from .config import DAIMConfig
from .data.layout import data_identity  # the one data identity (layout, sha256, split sizes)
from .paths import display_path

RUN_RECORD = "run.json"
FORMAT = "daimlib-run"
FINISHED = ("completed", "max_steps", "max_minutes")  # budget stops finish a run of that budget
# What the kit writes into a run folder; ``--overwrite`` deletes these names and nothing else.
KIT_FILES = ("run.json", "config.json", "history_steps.csv", "history_epochs.csv", "data.json", "result.json")
KIT_DIRS = ("last", "best", "tb")
KIT_GLOBS = (
    ".last.old-*",
    ".best.old-*",
    ".last.tmp-*",
    ".best.tmp-*",
    "sims_*.npy",
    "sims_*.json",
    "history_*.csv.tmp",
)


def config_sha256(cfg: DAIMConfig) -> str:
    """sha256 of the config's canonical JSON (every field, the budget included)."""
    return hashlib.sha256(json.dumps(cfg.to_dict(), sort_keys=True).encode()).hexdigest()


def git_commit() -> str | None:
    """The commit of the checkout daimlib runs from, or None (not a git checkout, no git)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    commit = out.stdout.strip()
    return commit if out.returncode == 0 and len(commit) == 40 else None


def versions() -> dict:
    """Versions of Python, daimlib, torch, timm, transformers and the git commit (None if unknown)."""
    found = {"python": platform.python_version()}
    for pkg in ("daimlib", "torch", "timm", "transformers"):
        try:
            found[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            found[pkg] = None
    found["git_commit"] = git_commit()
    return found


def read_record(run_dir: str | os.PathLike) -> dict | None:
    """The run.json of a run folder, or None when there is none (or it is unreadable)."""
    path = Path(run_dir) / RUN_RECORD
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) and record.get("format") == FORMAT else None


def write_record(
    run_dir: str | os.PathLike,
    cfg: DAIMConfig,
    data: dict,
    *,
    stopped: str,
    global_step: int,
    epoch: int,
    eval_split: str | None,
    extra: dict | None = None,
) -> dict:
    """Write ``<run_dir>/run.json`` atomically (``stopped="running"`` while the run trains)."""
    tc = cfg.train
    record = {
        "format": FORMAT,
        "finished": stopped in FINISHED,
        "stopped": stopped,
        "global_step": int(global_step),
        "epoch": int(epoch),
        "config_sha256": config_sha256(cfg),
        "config": cfg.to_dict(),
        "budget": {"epochs": tc.epochs, "max_steps": tc.max_steps, "max_minutes": tc.max_minutes},
        "data": data,
        "eval_split": eval_split,
        "versions": versions(),
        "updated_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    path = Path(run_dir) / RUN_RECORD
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str) + "\n")
    os.replace(tmp, path)
    return record


def _config_problem(saved: dict, cfg: DAIMConfig) -> str | None:
    try:
        diff = DAIMConfig.from_dict(saved).diff(cfg)
    except (TypeError, ValueError, KeyError) as e:
        return f"its recorded config is unreadable ({type(e).__name__})"
    if diff:
        shown = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in list(diff.items())[:4])
        return f"it was trained with another config ({shown})"
    return None


def reuse_problem(
    run_dir: str | os.PathLike, cfg: DAIMConfig, data_root: str | os.PathLike, eval_split: str | None = "val"
) -> str | None:
    """Why ``run_dir`` cannot be reused as the run of ``cfg`` on ``data_root`` (None when it can).

    The rule: a run record that says finished (not interrupted), the same config, the same data
    identity (:func:`data_identity`), the same validation split, and its checkpoints on disk.
    """
    run = Path(run_dir)
    record = read_record(run)
    if record is None:
        return f"no run record ({RUN_RECORD}) in the folder"
    if not record.get("finished"):
        return f"the run did not finish (stopped: {record.get('stopped')})"
    problem = _config_problem(record.get("config", {}), cfg)
    if problem:
        return problem
    want = data_identity(data_root, cfg)
    have = record.get("data") or {}
    keys = ("layout", "sha256", "n_images", "images", "caption_ids")
    if any(have.get(k) != want.get(k) for k in keys):
        return "it was trained on other data (the dataset's JSON or its split sizes differ)"
    if record.get("eval_split") != eval_split:
        return f"it was validated on {record.get('eval_split')!r}, not {eval_split!r}"
    if not (run / "last" / "meta.json").is_file():
        return "its last/ checkpoint is missing"
    if eval_split is not None and not (run / "best" / "meta.json").is_file():
        return "its best/ checkpoint is missing"
    return None


def resume_problem(run_dir: str | os.PathLike, cfg: DAIMConfig) -> str | None:
    """Why an unfinished run in ``run_dir`` cannot be resumed with ``cfg`` (None when it can)."""
    run = Path(run_dir)
    record = read_record(run)
    if record is None or record.get("finished"):
        return "no unfinished run to resume"
    if not (run / "last" / "meta.json").is_file() and not any(run.glob(".last.old-*/meta.json")):
        return "no last/ checkpoint"
    return _config_problem(record.get("config", {}), cfg)


def _is_kit_checkpoint(folder: Path) -> bool:
    try:
        return json.loads((folder / "meta.json").read_text()).get("format") == "daimlib-checkpoint"
    except (OSError, json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        return False


def is_kit_run(run_dir: str | os.PathLike) -> bool:
    """Whether a folder is a run folder the kit wrote: its marker, a kit run record (``run.json``).

    Nothing else counts (issue 28): a ``config.json`` that happens to parse (``{}`` does, as the
    default config) or a checkpoint inside are no proof that the other files are the kit's.
    """
    return read_record(run_dir) is not None


def checkpoint_folder_problem(folder: str | os.PathLike) -> str | None:
    """Why ``folder`` cannot be a run folder because it is (or lies inside) a checkpoint folder, or None.

    ``--out runs/x/last`` would otherwise nest a run inside a checkpoint (and ``--overwrite`` delete its
    config.json); run folders hold checkpoints, never the other way round.
    """
    folder = Path(folder)
    for p in (folder, *folder.parents):
        if _is_kit_checkpoint(p):
            inside = "" if p == folder else f" (it lies inside the checkpoint folder {p.name}/)"
            return (
                f"{display_path(folder)} is a checkpoint folder{inside}, not a run folder: a run writes its "
                f"checkpoints into <out>/last and <out>/best; give --out the run folder (e.g. "
                f"{display_path(p.parent)}) or a new one. Nothing was changed."
            )
        if p.parent == p:
            break
    return None


def clear_run(run_dir: str | os.PathLike) -> list[str]:
    """Delete what the kit wrote into a run folder (:data:`KIT_FILES`, :data:`KIT_DIRS`,
    :data:`KIT_GLOBS`) and nothing else; returns the names removed. A ``last``/``best`` folder that
    is not a kit checkpoint is refused, not deleted."""
    run = Path(run_dir)
    for d in ("last", "best"):
        if (run / d).exists() and not _is_kit_checkpoint(run / d):
            raise FileExistsError(
                f"{run.name}/{d} is not a DAIM Kit checkpoint (no kit meta.json); refusing to delete it. "
                "Move it away or choose another --out."
            )
    targets = [run / n for n in KIT_FILES] + [run / n for n in KIT_DIRS]
    targets += [p for g in KIT_GLOBS for p in run.glob(g)]
    removed = []
    for p in targets:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(p.name)
    return removed
