"""Checkpoint folders: the format, save and load, and a DAIM built from a folder's own config.

Layout of a checkpoint folder (``runs/<name>/last``, ``runs/<name>/best``)::

    model.safetensors   the model's state_dict, and the loss's state under the prefix ``loss.``
                        (folders written before the loss module existed hold the MOM margin as
                        ``margin_module.margin`` and still load)
    config.json         the DAIMConfig that builds the model (``DAIMConfig.from_json``)
    train_state.pt      optimizer, scheduler, AMP scaler, epoch, step, RNG states, history position
                        (optional; plain tensors and containers only, read with weights_only=True)
    tokenizer/          the tokenizer files (``save_pretrained``), when the model was saved with one
    meta.json           format version, library versions, size and sha256 of every file, metrics

Nothing is ever unpickled as arbitrary objects: weights go through safetensors, the training state
through ``torch.load(weights_only=True)``. Writes are atomic: the folder is written under a temporary
name (``.<name>.tmp-*``, removed by the next save if a process was killed) and renamed into place; a
crash between the two renames leaves the previous folder as ``.<name>.old-*``, which the loader finds.
Every file's size and sha256 in meta.json is checked on load, and a needed file meta.json does not
list, a listed file that is gone, or an unlisted weight file is an error (:func:`check_listing`).

The model and loss classes are imported inside the functions that build them, so that
:mod:`daimlib.hub` (and through it the model) can use this module without loading the loss.
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import pickle
import re
import shutil
import tempfile
import uuid
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from . import __version__
from .config import DAIMConfig
from .paths import display_path, sha256_file
from .runtime import no_hub

FORMAT = "daimlib-checkpoint"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TRAIN_STATE = "train_state.pt"
META = "meta.json"
TOKENIZER = "tokenizer"
_FILE_MODE, _DIR_MODE = 0o666, 0o777  # before the umask, as open() / mkdir() use them
LOSS_PREFIX = "loss."  # the loss module's state (the adaptive margin) inside model.safetensors
LEGACY_MARGIN_KEY = "margin_module.margin"  # where the margin lived while it was a model buffer

# Config keys that do not change the function of a loaded model: where the *initial* weights
# came from (the checkpoint replaces them) and descriptive text.
_CFG_KEYS_IGNORED = ("image.weights", "text.weights")
_CFG_MODEL_SECTIONS = ("image", "text", "fdm", "similarity", "loss")


# disk full, quota, read-only file system, no permission: a user's disk problem, not a kit bug
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM})


class CheckpointError(RuntimeError):
    """A checkpoint folder that is missing, incomplete, truncated, unsafe or built from another config."""


# --- writing ---------------------------------------------------------------------------------


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # not supported on this platform (Windows)
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, write) -> None:
    """Call ``write(tmp_path)``, fsync the result and move it onto ``path`` with ``os.replace``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _normal_permissions(folder: Path) -> None:
    """mkdtemp/mkstemp create 0700/0600; give the finished folder the modes open()/mkdir() would."""
    mask = _umask()
    for p in [folder, *folder.rglob("*")]:
        try:
            os.chmod(p, (_DIR_MODE if p.is_dir() else _FILE_MODE) & ~mask)
        except OSError:  # not supported here (some network filesystems, Windows)
            pass


def clean_stale_temporaries(directory: str | os.PathLike) -> list[Path]:
    """Remove the temporary folders a killed save of ``directory`` left beside it; returns them.

    Only the kit's own names are touched: ``.<name>.tmp-XXXXXXXX`` folders (``tempfile.mkdtemp``
    suffixes) in the same parent. Backups ``.<name>.old-*`` are left to the loader.
    """
    directory = Path(directory)
    pattern = re.compile(rf"\.{re.escape(directory.name)}\.tmp-[A-Za-z0-9_]{{8}}")
    removed = []
    if directory.parent.is_dir():
        for p in directory.parent.iterdir():
            if pattern.fullmatch(p.name) and p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
                removed.append(p)
    return removed


def _file_records(folder: Path) -> dict[str, dict]:
    """``{relative posix path: {bytes, sha256}}`` of every file below ``folder`` (no hidden names)."""
    out = {}
    for f in sorted(folder.rglob("*")):
        rel = f.relative_to(folder)
        if f.is_file() and not any(part.startswith(".") for part in rel.parts) and rel.as_posix() != META:
            out[rel.as_posix()] = {"bytes": f.stat().st_size, "sha256": sha256_file(f)}
    return out


def _unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside a DistributedDataParallel / DataParallel wrapper."""
    return getattr(model, "module", model)


def save_checkpoint(
    directory: str | os.PathLike,
    model: torch.nn.Module,
    cfg: DAIMConfig,
    train_state: dict | None = None,
    meta: dict | None = None,
    tokenizer: Any = None,
    loss: torch.nn.Module | None = None,
    trim: dict[str, tuple[int, int]] | None = None,
    state_dict: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``model``'s weights, ``cfg`` and (optionally) the training state to ``directory``, atomically.

    ``loss`` (a :class:`daimlib.losses.MatchingLoss`): its state (the adaptive margin) is stored in
    model.safetensors under the prefix ``loss.``, so the weights file carries the margin.

    ``train_state`` may hold tensors, numbers, strings, and lists/tuples/dicts of them (what
    ``torch.load(weights_only=True)`` accepts); ``meta`` is any JSON-serialisable dict (epoch,
    metrics, ...) stored in meta.json; ``tokenizer`` (an HF tokenizer; default the model's
    ``tokenizer`` attribute when it has one) is saved in ``tokenizer/`` so that evaluating the
    checkpoint never needs the hub. ``trim`` ({key: (start, stop)}) stores only those rows of a
    weight, for rows that provably never affect an output (:func:`daimlib.model.dead_weight_rows`);
    meta.json records the full shape and the loaders put zeros back in the other rows.
    ``state_dict``: the weights to write instead of ``model.state_dict()`` (a CPU snapshot taken
    earlier, while the model trains on). Returns the folder path.
    """
    directory = Path(directory)
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    clean_stale_temporaries(directory)
    model = _unwrap(model)
    if tokenizer is None:
        tokenizer = getattr(model, "tokenizer", None)
    state, trimmed = _state_to_save(model.state_dict() if state_dict is None else state_dict, loss, trim)
    if trimmed:
        meta = {**(meta or {}), "trimmed": trimmed}

    def fill(tmp_dir: Path) -> dict:
        _atomic_write(tmp_dir / WEIGHTS, lambda p: save_file(state, p, metadata={"format": FORMAT}))
        _atomic_write(tmp_dir / CONFIG, lambda p: Path(p).write_text(cfg.to_json() + "\n"))
        if train_state is not None:
            _atomic_write(tmp_dir / TRAIN_STATE, lambda p: torch.save(train_state, p))
        if tokenizer is not None:
            tokenizer.save_pretrained(str(tmp_dir / TOKENIZER))
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "daimlib": __version__,
            "torch": torch.__version__,
            "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "files": _file_records(tmp_dir),
            **(meta or {}),
        }

    try:
        return _write_folder(directory, fill)
    except BaseException as e:
        _raise_disk_error(e, directory)
        raise


def _write_folder(directory: Path, fill) -> Path:
    """Write a checkpoint folder atomically: ``fill(tmp_dir)`` writes the files into a temporary folder
    beside ``directory`` and returns meta.json's content; the finished folder replaces ``directory``.
    On any error the temporary folder is removed and the previous ``directory`` stays (or is put back)."""
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
    old_dir = None
    try:
        info = fill(tmp_dir)
        _atomic_write(
            tmp_dir / META, lambda p: Path(p).write_text(json.dumps(info, indent=2, default=str) + "\n")
        )
        _normal_permissions(tmp_dir)
        old_dir = _install(tmp_dir, directory)
    except BaseException:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        if old_dir is not None and old_dir.exists() and not directory.exists():
            os.replace(old_dir, directory)  # put the previous checkpoint back
        raise
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return directory


def _state_to_save(weights: dict, loss, trim) -> tuple[dict, dict]:
    """Detached CPU copies of the weights (safetensors refuses tensors that share storage: tied
    weights, views), the loss's state under ``loss.``, and the ``trim`` rows: ``(state, trimmed)``."""
    state = {k: v.detach().to("cpu").contiguous().clone() for k, v in weights.items()}
    if loss is not None:
        state.update(
            {LOSS_PREFIX + k: v.detach().to("cpu").contiguous().clone() for k, v in loss.state_dict().items()}
        )
    trimmed = {}
    for key, (start, stop) in (trim or {}).items():
        if key not in state or not 0 <= start < stop <= state[key].shape[0]:
            raise ValueError(f"cannot trim {key!r} to rows [{start}, {stop})")
        trimmed[key] = {"shape": list(state[key].shape), "rows": [start, stop]}
        state[key] = state[key][start:stop].contiguous().clone()
    return state, trimmed


def _raise_disk_error(e: BaseException, directory: Path) -> None:
    """A full disk, a quota or a read-only folder as a CheckpointError that says what to do."""
    disk = isinstance(e, OSError) and e.errno in DISK_ERRNOS
    if disk or isinstance(e, SafetensorError):  # safetensors reports a full disk as its own error
        kept = "the previous checkpoint there is kept" if directory.exists() else "nothing was written"
        why = (e.strerror or str(e)) if isinstance(e, OSError) else _safetensors_io_reason(e)
        raise CheckpointError(
            f"cannot write the checkpoint {display_path(directory)}: {why} ({kept}); free "
            "space on that disk, make the folder writable, or choose another --out"
        ) from e


def _safetensors_io_reason(e: Exception) -> str:
    """The OS reason inside a SafetensorError (``... message: "No space left on device" ...``)."""
    m = re.search(r'message: "([^"]+)"', str(e))
    return m.group(1) if m else f"safetensors could not write the weights ({e})"


def _install(tmp_dir: Path, directory: Path) -> Path | None:
    """Move the finished ``tmp_dir`` onto ``directory`` (the previous folder renamed aside first);
    returns where the previous folder now is (the caller removes it), None when there was none."""
    _fsync_dir(tmp_dir)
    old_dir = None
    if directory.exists():
        old_dir = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
        os.replace(directory, old_dir)
    try:
        os.replace(tmp_dir, directory)
    except BaseException:
        if old_dir is not None and old_dir.exists() and not directory.exists():
            os.replace(old_dir, directory)  # put the previous checkpoint back
        raise
    _fsync_dir(directory.parent)
    return old_dir


def link_checkpoint(
    source: str | os.PathLike,
    directory: str | os.PathLike,
    meta: dict | None = None,
    drop: tuple[str, ...] = (TRAIN_STATE,),
) -> Path:
    """``directory`` as a copy of the checkpoint folder ``source`` without the files ``drop``, written
    without writing the weights again: each file is a hard link to ``source``'s (a copy where the
    filesystem has none), and meta.json is ``source``'s with ``meta`` merged in (a None value removes
    that key).

    This is how a run's ``best/`` is made from ``last/`` when the epoch just saved is the best: one
    write of the weights per epoch instead of two. Hard links stay valid when ``source`` is later
    replaced (:func:`save_checkpoint` writes a new folder and renames it; it never writes into the
    files). The sizes and sha256 recorded for ``source``'s files are kept, not recomputed. Atomic
    like :func:`save_checkpoint`.
    """
    source, directory = Path(source), Path(directory)
    info = read_meta(source)
    files = {k: v for k, v in info.get("files", {}).items() if k.split("/")[0] not in drop}
    info = {k: v for k, v in {**info, **(meta or {}), "files": files}.items() if v is not None}
    clean_stale_temporaries(directory)

    def fill(tmp_dir: Path) -> dict:
        for rel in files:
            dst = tmp_dir / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(source / rel, dst)
            except OSError:  # no hard links here (some network or FAT filesystems)
                shutil.copy2(source / rel, dst)
        return info

    return _write_folder(directory, fill)


# --- reading ---------------------------------------------------------------------------------

_WARNED_BACKUPS: set[str] = set()  # one warning per backup folder and process, however often it is read


def _resolve_dir(directory: str | os.PathLike) -> Path:
    directory = Path(directory)
    if directory.is_dir():
        return directory
    # A crash between the two renames of save_checkpoint leaves only the previous folder.
    olds = sorted(directory.parent.glob(f".{directory.name}.old-*"), key=lambda p: p.stat().st_mtime)
    if olds and (olds[-1] / META).is_file():
        if str(olds[-1].resolve()) in _WARNED_BACKUPS:
            return olds[-1]
        _WARNED_BACKUPS.add(str(olds[-1].resolve()))
        warnings.warn(
            f"checkpoint folder {display_path(directory)} is missing (a save was interrupted); "
            f"loading the previous checkpoint {display_path(olds[-1])}",
            stacklevel=3,
        )
        return olds[-1]
    last = directory.parent / "last"
    if directory.name == "best" and (last / META).is_file():  # a run that never validated
        raise CheckpointError(
            f"no checkpoint folder at {display_path(directory)}: this run has no best/ (it was trained without "
            f"validation, --no-val, or stopped before its first); its checkpoint is {display_path(last)}"
        )
    raise CheckpointError(
        f"no checkpoint folder at {display_path(directory)}: expected a folder with {WEIGHTS}, {CONFIG} "
        f"and {META} (written by daimlib.checkpoint.save_checkpoint or `python -m daimlib train`). "
        "Check the path; runs keep theirs in <out>/last and <out>/best."
    )


def _run_folder_hint(directory: Path) -> str:
    """`` It is a run folder: ...`` when ``directory`` holds a run's checkpoints (``best/``, ``last/``), else ""."""
    inside = [directory / k for k in ("best", "last") if (directory / k / META).is_file()]
    if not inside:
        return ""
    return (
        f" It is a run folder: give one of its checkpoints, {' or '.join(display_path(p) for p in inside)}."
    )


def read_meta(directory: str | os.PathLike) -> dict:
    """The meta.json of a checkpoint folder (format, versions, file sizes/hashes, metrics)."""
    directory = _resolve_dir(directory)
    path = directory / META
    if not path.is_file():
        present = sorted(p.name for p in directory.iterdir())
        raise CheckpointError(
            f"{display_path(path)} is missing: {display_path(directory)} is not a complete daimlib checkpoint "
            f"(expected {WEIGHTS}, {CONFIG}, {META}; found {present}).{_run_folder_hint(directory)}"
        )
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{display_path(path)} is not valid JSON ({e}); the file is damaged.") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise CheckpointError(f"{display_path(path)}: format {found!r}, expected {FORMAT!r}.")
    files = meta.get("files")
    bad = not isinstance(files, dict) or any(
        not isinstance(v, dict) or not isinstance(v.get("bytes"), int) or not isinstance(v.get("sha256"), str)
        for v in files.values()
    )
    if bad:
        raise CheckpointError(
            f'{display_path(path)}: its "files" entry must map each file name to {{"bytes", "sha256"}} (found '
            f"{type(files).__name__}); without it nothing in the folder can be checked. The file was edited or "
            "damaged: copy the checkpoint again."
        )
    return meta


def _check_file(directory: Path, name: str, meta: dict, verify: bool) -> Path:
    path = directory / name
    expected = meta["files"].get(name)
    if expected is None:
        raise CheckpointError(
            f"checkpoint file {display_path(path)} is not listed in {display_path(directory / META)}: every file "
            "a checkpoint needs is recorded there with its sha256 when it is written, so an entry that is gone "
            "means the folder was edited. Copy the checkpoint again, or use the run's other checkpoint (last/best)."
        )
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {display_path(path)} is missing; meta.json lists it.")
    size = path.stat().st_size
    if size != expected["bytes"]:
        raise CheckpointError(
            f"checkpoint file {display_path(path)} is truncated or damaged: {size} bytes on disk, "
            f"{expected['bytes']} bytes when it was written. An interrupted copy or a full disk does "
            "this; copy the checkpoint again, or use the run's other checkpoint (last/best)."
        )
    if verify and sha256_file(path) != expected["sha256"]:
        raise CheckpointError(
            f"checkpoint file {display_path(path)} is corrupted: its sha256 differs from the one recorded "
            "in meta.json. Copy the checkpoint again, or use the run's other checkpoint (last/best)."
        )
    return path


WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt", ".pkl", ".pickle", ".npz", ".npy", ".h5")


def check_listing(directory: Path, meta: dict) -> None:
    """Every file the record lists is present, and no weight file lies in the folder unrecorded.

    A weight-like file that meta.json does not list (a second ``.safetensors``, a ``pytorch_model.bin``)
    is refused: the folder no longer is the checkpoint that was written, and which weights a reader
    would pick is ambiguous.
    """
    missing = sorted(n for n in meta["files"] if not (directory / n).is_file())
    if missing:
        raise CheckpointError(
            f"{display_path(directory)} lacks {', '.join(missing)}, which meta.json lists; the checkpoint is "
            "incomplete: copy it again, or use the run's other checkpoint (last/best)."
        )
    extra = sorted(
        f.relative_to(directory).as_posix()
        for f in directory.rglob("*")
        if f.is_file()
        and f.suffix.lower() in WEIGHT_SUFFIXES
        and f.relative_to(directory).as_posix() not in meta["files"]
    )
    if extra:
        raise CheckpointError(
            f"{display_path(directory)} holds weight files that meta.json does not list: {', '.join(extra)}; "
            "the folder is not the checkpoint that was written. Move them out of the folder."
        )


def load_config(directory: str | os.PathLike, verify: bool = True) -> DAIMConfig:
    """The DAIMConfig stored in a checkpoint folder, checked against the sha256 in meta.json."""
    directory = _resolve_dir(directory)
    path = directory / CONFIG
    if not path.is_file():
        raise CheckpointError(
            f"{display_path(path)} is missing; the checkpoint cannot say which model it holds."
            + _run_folder_hint(directory)
        )
    meta = read_meta(directory)
    check_listing(directory, meta)
    try:
        _check_file(directory, CONFIG, meta, verify)
    except CheckpointError as e:
        raise CheckpointError(
            f"{e} A config.json that differs from the one saved with the weights would build another "
            "model around them; restore the original config.json."
        ) from None
    try:
        return DAIMConfig.from_json(path)
    except (ValueError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{display_path(path)} does not describe a DAIMConfig: {e}") from e


def model_config_diff(saved: DAIMConfig, current: DAIMConfig) -> dict[str, tuple[Any, Any]]:
    """Differences in the keys that define the model's function (not data/train/name/notes)."""
    diff = saved.diff(current)
    return {
        k: v
        for k, v in diff.items()
        if k.split(".", 1)[0] in _CFG_MODEL_SECTIONS and k not in _CFG_KEYS_IGNORED
    }


def _format_keys(keys: list[str], limit: int = 20) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def load_state_into(model: torch.nn.Module, state: dict[str, torch.Tensor], strict: bool, where: str) -> None:
    """``model.load_state_dict`` that lists missing, unexpected and wrongly shaped keys in one error."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in set(own) & set(state)
        if tuple(own[k].shape) != tuple(state[k].shape)
    )
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches: {_format_keys(shapes)}")
    if strict and missing:
        problems.append(
            f"{len(missing)} missing keys (in the model, not in the checkpoint): {_format_keys(missing)}"
        )
    if strict and unexpected:
        problems.append(
            f"{len(unexpected)} unexpected keys (in the checkpoint, not in the model): {_format_keys(unexpected)}"
        )
    if problems:
        raise CheckpointError(
            f"{where} does not fit the model: " + "; ".join(problems) + ". The checkpoint was written by a "
            "different model configuration or code version; build the model from the checkpoint's own "
            "config.json (daimlib.checkpoint.load_checkpoint without a model does; so do `evaluate` and "
            "load_model)."
        )
    model.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)


def _refuse_non_finite(model: torch.nn.Module, where: str) -> None:
    """A weight that holds NaN/Inf makes every score NaN: name the tensors instead of failing in the ranks.
    (Training never saves such weights: its guard stops before the update; so the file was damaged.)"""
    bad = [
        n for n, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all())
    ]
    if bad:
        raise CheckpointError(
            f"{where} holds non-finite weights (NaN/Inf) in {len(bad)} tensor(s): {_format_keys(bad, 5)}; every "
            "score of this model would be NaN. Use the run's other checkpoint (last/best), or train again "
            "(a lower train.lr, or train.grad_clip, if the run diverged)."
        )


def untrim(state: dict[str, torch.Tensor], meta: dict, where: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Restore the weights ``save_checkpoint(trim=...)`` stored in part: zeros outside the kept rows."""
    for key, info in (meta.get("trimmed") or {}).items():
        start, stop = info["rows"]
        part = state.get(key)
        if part is None or part.shape[0] != stop - start or list(part.shape[1:]) != info["shape"][1:]:
            raise CheckpointError(f"{where}: {key} does not match its trimmed record in meta.json ({info})")
        full = part.new_zeros(info["shape"])
        full[start:stop] = part
        state[key] = full
    return state


def split_loss_state(state: dict[str, torch.Tensor]) -> tuple[dict, dict]:
    """(model keys, loss keys without their prefix) of a model.safetensors state.

    Today's layout keeps the loss under ``loss.``; the earlier one kept the margin as the model
    buffer ``margin_module.margin`` (both map to the loss's ``margin_module.margin``).
    """
    model_state, loss_state = {}, {}
    for k, v in state.items():
        if k.startswith(LOSS_PREFIX):
            loss_state[k[len(LOSS_PREFIX) :]] = v
        elif k == LEGACY_MARGIN_KEY:
            loss_state.setdefault(k, v)
        else:
            model_state[k] = v
    return model_state, loss_state


def load_train_state(
    directory: str | os.PathLike, device: str | torch.device = "cpu", verify: bool = True
) -> dict | None:
    """The training state of a checkpoint folder, read with ``torch.load(weights_only=True)`` only.

    Returns None when the folder has no train_state.pt (e.g. a ``best`` checkpoint). A file that
    holds anything but tensors and plain containers (a pickle that would import or call code) is
    refused without being executed.
    """
    directory = _resolve_dir(directory)
    meta = read_meta(directory)
    if TRAIN_STATE not in meta["files"] and not (directory / TRAIN_STATE).exists():
        return None
    path = _check_file(directory, TRAIN_STATE, meta, verify)
    try:
        return torch.load(path, map_location=device, weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"refused to load {display_path(path)}: it contains Python objects other than tensors and plain "
            f"containers, and unpickling it could run arbitrary code ({first}). daimlib never writes such "
            "files. Do not load it with weights_only=False unless you trust its source completely."
        ) from e
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {display_path(path)}: the file is damaged or truncated ({e})."
        ) from e


def load_checkpoint_into(
    model: torch.nn.Module,
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    strict: bool = True,
    expect_cfg: DAIMConfig | None = None,
    verify: bool = True,
    read_train_state: bool = True,
    loss: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, DAIMConfig, dict | None]:
    """Load a checkpoint folder into ``model``: ``(model, cfg, train_state)``.

    With ``strict`` (the default), missing or unexpected weight keys and
    differences between the saved config and ``expect_cfg`` (or ``model.cfg``) in the sections that
    define the model (image, text, fdm, similarity, loss) raise a CheckpointError listing them.
    ``train_state`` is None when the folder has none, or when ``read_train_state`` is False (loading
    for evaluation: then only model.safetensors, config.json and meta.json are read). ``loss`` (a
    :class:`daimlib.losses.MatchingLoss`) receives the stored margin (:func:`split_loss_state`;
    a folder without one leaves the loss's initial margin, with a warning).
    """
    directory = _resolve_dir(directory)
    meta = read_meta(directory)
    cfg = load_config(directory, verify=verify)
    reference = expect_cfg if expect_cfg is not None else getattr(_unwrap(model), "cfg", None)
    if strict and reference is not None:
        diff = model_config_diff(cfg, reference)
        if diff:
            lines = [f"{k}: checkpoint {a!r} vs requested {b!r}" for k, (a, b) in diff.items()]
            raise CheckpointError(
                f"{display_path(directory / CONFIG)} describes a different model than the one requested: "
                + "; ".join(lines)
                + ". Load the checkpoint with its own config (daimlib.checkpoint.load_checkpoint without a "
                "model, or `python -m daimlib evaluate --checkpoint` on it); to continue a run, resume it with "
                "the config it was trained with (its config.json: --config PATH/config.json)."
            )
    weights = _check_file(directory, WEIGHTS, meta, verify)
    try:
        state = load_file(str(weights), device=str(device))
    except (SafetensorError, OSError, ValueError) as e:
        raise CheckpointError(
            f"cannot read {display_path(weights)}: the file is damaged or truncated ({e})."
        ) from e
    state = untrim(state, meta, display_path(weights))
    state, loss_state = split_loss_state(state)
    target = _unwrap(model)
    target.to(device)
    load_state_into(target, state, strict, display_path(weights))
    _refuse_non_finite(target, display_path(weights))
    if loss is not None:
        if loss_state:
            load_state_into(loss, loss_state, strict, f"{display_path(weights)} (loss state)")
        else:
            warnings.warn(
                f"{display_path(weights)} holds no margin; the loss keeps its initial one", stacklevel=2
            )
    train_state = load_train_state(directory, device=device, verify=verify) if read_train_state else None
    return model, cfg, train_state


def load_loss(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """The :class:`daimlib.losses.MatchingLoss` of a checkpoint folder: its config's ``loss``
    section with the stored (trained) margin, in eval mode."""
    directory = _resolve_dir(directory)
    meta = read_meta(directory)
    cfg = load_config(directory)
    weights = _check_file(directory, WEIGHTS, meta, verify=True)
    from .losses import MatchingLoss

    loss = MatchingLoss.from_config(cfg.loss)
    _, loss_state = split_loss_state(load_file(str(weights), device=str(device)))
    if not loss_state:
        raise CheckpointError(f"{display_path(weights)} holds no margin (no {LOSS_PREFIX}* key)")
    load_state_into(loss, loss_state, True, f"{display_path(weights)} (loss state)")
    return loss.to(device).eval()


def has_tokenizer(directory: str | os.PathLike) -> bool:
    """Whether a checkpoint folder carries its tokenizer (``tokenizer/``)."""
    return (_resolve_dir(directory) / TOKENIZER).is_dir()


def load_checkpoint_tokenizer(directory: str | os.PathLike, verify: bool = True):
    """The tokenizer saved in a checkpoint folder, or None for folders written without one.

    Its files are checked against meta.json like the weights; nothing is downloaded.
    """
    directory = _resolve_dir(directory)
    folder = directory / TOKENIZER
    if not folder.is_dir():
        return None
    if not any(folder.iterdir()):
        raise CheckpointError(
            f"the tokenizer folder {display_path(folder)} is empty; the checkpoint was saved with a tokenizer "
            "and its files are gone: copy the checkpoint again (or remove the empty folder to fall back on the "
            "data's tokenizer)"
        )
    meta = read_meta(directory)
    check_listing(directory, meta)
    for f in sorted(folder.rglob("*")):
        if f.is_file():  # every tokenizer file is checked: an unlisted one is an error
            _check_file(directory, f.relative_to(directory).as_posix(), meta, verify)
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    except Exception as e:  # noqa: BLE001 - the tokenizers library raises a bare Exception on a damaged file
        raise CheckpointError(f"cannot read the tokenizer in {display_path(folder)}: {e}") from e


# --- a DAIM from a folder ------------------------------------------------------------------------


def _build_offline(cfg: DAIMConfig, directory) -> torch.nn.Module:
    """``DAIM.from_config(cfg, pretrained=False)`` without the network: a checkpoint supplies every weight,
    and a text model named by a hub id needs only its architecture, from the local cache (issue 28)."""
    try:
        from .model import DAIM

        with no_hub():
            return DAIM.from_config(cfg, pretrained=False)
    except (RuntimeError, OSError, ValueError) as e:
        if cfg.text.model_kwargs:
            raise
        raise CheckpointError(
            f"{display_path(directory)}: its config.json names the hub text model {cfg.text.weights or cfg.text.name!r}, "
            "whose architecture (its config.json) is not in the local Hugging Face cache, and loading a checkpoint "
            "never goes online. On a machine with internet run AutoConfig.from_pretrained(NAME) once (or copy "
            "~/.cache/huggingface/hub from one), then load again."
        ) from e


def load_checkpoint(
    directory: str | os.PathLike,
    device: str | torch.device = "cpu",
    strict: bool = True,
    model: torch.nn.Module | None = None,
    expect_cfg: DAIMConfig | None = None,
    verify: bool = True,
    read_train_state: bool = True,
    loss: torch.nn.Module | None = None,
) -> tuple[torch.nn.Module, DAIMConfig, dict | None]:
    """Load a checkpoint folder: ``(model, cfg, train_state)``.

    The model is built from the folder's own config.json unless ``model`` is given, in which case
    the weights are loaded into it (then, with ``strict``, a config that differs from ``expect_cfg``
    or ``model.cfg`` in the model's sections is an error). The other arguments are those of
    :func:`load_checkpoint_into`.
    """
    if model is None:
        model = _build_offline(load_config(directory, verify=verify), directory)
    return load_checkpoint_into(
        model,
        directory,
        device=device,
        strict=strict,
        expect_cfg=expect_cfg,
        verify=verify,
        read_train_state=read_train_state,
        loss=loss,
    )


def scoring_tokenizer(directory: str | os.PathLike | None, cfg: DAIMConfig, data_root=None):
    """The tokenizer to score a checkpoint with: the one saved in the checkpoint folder (the vocabulary
    its text encoder was trained on), else the config's (:func:`daimlib.data.load_tokenizer`, from
    ``data_root`` for the demo and ``data`` tokenizers). ``directory=None`` (a model never saved): the
    config's."""
    from .data import load_tokenizer

    if directory is None:
        return load_tokenizer(cfg.text, data_root, data_cfg=cfg.data)
    saved = load_checkpoint_tokenizer(directory) if has_tokenizer(directory) else None
    if saved is not None:
        return saved
    try:
        with no_hub():  # scoring a checkpoint never goes online (issue 28)
            return load_tokenizer(cfg.text, data_root, data_cfg=cfg.data)
    except OSError as e:
        raise CheckpointError(
            f"{display_path(directory)} carries no tokenizer/ folder, and the tokenizer its config names is not "
            f"on this machine ({e})"
        ) from e


def load_model(directory: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """A trained DAIM from a checkpoint folder, strictly loaded and in eval mode.

    Reads model.safetensors, config.json and meta.json only (each checked against its recorded
    sha256); the training state is not needed to evaluate, so a damaged train_state.pt is ignored.
    """
    model, _, _ = load_checkpoint(directory, device=device, strict=True, read_train_state=False)
    return model.eval()
