"""The training history: one CSV row per step and per epoch, optionally the same scalars in TensorBoard.

``history_steps.csv``: step, epoch, lr, loss, margin, every MOM statistic (activation, μ/σ of the
positives and negatives, λ, branch), hardest, step_s. ``history_epochs.csv``: the epoch's mean
loss, margin, lr and the validation recalls. With ``train.tensorboard=true`` the numeric columns
also go to ``<out>/tb/`` through ``torch.utils.tensorboard.SummaryWriter`` (``train/*`` per step,
``val/*`` per epoch). Writes are idempotent per key (a step, an epoch row), so finishing a step
that an interrupt cut short never duplicates its row; on resume the CSVs are cut back to the rows
the checkpoint counts.
"""

from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path

from .paths import display_path
from .tables import read_csv  # noqa: F401 - one copy (daimlib.tables), importable from here

STEP_COLUMNS = ("step", "epoch", "lr", "loss", "margin")  # then every MOM statistic, then step_s
STEPS_CSV = "history_steps.csv"
EPOCHS_CSV = "history_epochs.csv"
TB_DIR = "tb"


def truncate_csv(path: Path, rows: int) -> None:
    """Keep the header and the first ``rows`` data rows (drop rows written after the checkpoint)."""
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    if len(lines) > rows + 1:
        tmp = path.with_suffix(".csv.tmp")
        tmp.write_text("".join(lines[: rows + 1]))
        os.replace(tmp, path)


class CsvLog:
    """Append rows to a CSV (header from the first row; flushed every ``flush_every`` rows).

    Each row is formatted first and written with one ``write`` call, and ``last_key`` names the
    last row written, so the caller can tell whether a row it was writing reached the file.
    """

    def __init__(self, path: Path, enabled: bool, flush_every: int = 1):
        self.path, self.enabled, self.flush_every = path, enabled, max(1, flush_every)
        self.columns: list[str] | None = None
        self.rows = 0
        self.last_key = None
        self._f = None
        if enabled and path.exists():
            with open(path, newline="") as f:
                reader = csv.reader(f)
                self.columns = next(reader, None)
                self.rows = sum(1 for _ in reader)

    def write(self, row: dict, key=None) -> None:
        if key is not None and key == self.last_key:
            return  # already written (a step finished after an interrupt)
        if self.enabled:
            if self._f is None:
                new = self.columns is None
                if new:
                    self.columns = list(row)
                self._f = open(self.path, "a", newline="")
                if new:
                    self._f.write(",".join(self.columns) + "\r\n")
            buf = io.StringIO()
            csv.DictWriter(buf, fieldnames=self.columns, extrasaction="ignore", restval="").writerow(row)
            self._f.write(buf.getvalue())
        self.last_key = key
        self.rows += 1
        if self.enabled and self.rows % self.flush_every == 0:
            self._f.flush()

    def flush(self) -> None:
        if self._f is not None:
            self._f.flush()

    def close(self) -> None:
        if self._f is not None:
            self._f.flush()
            self._f.close()
            self._f = None


def _tensorboard_writer(folder: Path, purge_step: int | None):
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency: the tensorboard package
    except ImportError as e:
        raise ValueError(
            "train.tensorboard=true needs the tensorboard package, which is not installed; "
            "pip install tensorboard, or set train.tensorboard=false"
        ) from e
    if folder.is_symlink() and not folder.exists():
        raise ValueError(
            f"{folder.parent.name}/{folder.name} is a symbolic link to {display_path(os.readlink(folder))}, which does not exist "
            "(a dangling link): TensorBoard cannot write there. Create that folder, remove the link, or set "
            "train.tensorboard=false"
        )
    if folder.exists() and not folder.is_dir():
        raise ValueError(
            f"{folder.parent.name}/{folder.name} is a file, not a folder: TensorBoard cannot write "
            "there; move it away or set train.tensorboard=false"
        )
    return SummaryWriter(log_dir=str(folder), purge_step=purge_step)


def _numeric(row: dict) -> dict[str, float]:
    out = {}
    for k, v in row.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and math.isfinite(float(v)):
            out[k] = float(v)
    return out


class HistoryLogger:
    """Both history CSVs of a run (and TensorBoard), resumed at the rows a checkpoint counts."""

    def __init__(
        self,
        out_dir: Path,
        enabled: bool,
        flush_every: int = 10,
        tensorboard: bool = False,
        resume_rows: tuple[int, int] | None = None,
        global_step: int = 0,
    ):
        self.out_dir = Path(out_dir)
        if enabled and resume_rows is not None:
            truncate_csv(self.out_dir / STEPS_CSV, resume_rows[0])
            truncate_csv(self.out_dir / EPOCHS_CSV, resume_rows[1])
        self.steps = CsvLog(self.out_dir / STEPS_CSV, enabled, flush_every=flush_every)
        self.epochs = CsvLog(self.out_dir / EPOCHS_CSV, enabled)
        if resume_rows is not None:
            self.steps.rows, self.epochs.rows = resume_rows
        self.tb = None
        if enabled and tensorboard:
            self.tb = _tensorboard_writer(
                self.out_dir / TB_DIR, global_step if resume_rows is not None else None
            )

    @property
    def rows(self) -> tuple[int, int]:
        return self.steps.rows, self.epochs.rows

    def log_step(self, row: dict) -> None:
        """One optimisation step's row (idempotent per step)."""
        if self.steps.last_key == row["step"]:
            return
        self.steps.write(row, key=row["step"])
        if self.tb is not None:
            for k, v in _numeric(row).items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(f"train/{k}", v, row["step"])

    def log_epoch(self, row: dict, key) -> None:
        """One epoch's row (idempotent per ``key``)."""
        if self.epochs.last_key == key:
            return
        self.epochs.write(row, key=key)
        if self.tb is not None:
            for k, v in _numeric(row).items():
                if k not in ("step", "epoch"):
                    self.tb.add_scalar(
                        f"val/{k}" if k not in ("loss", "margin", "lr") else f"epoch/{k}", v, row["step"]
                    )

    def flush(self) -> None:
        self.steps.flush()
        self.epochs.flush()
        if self.tb is not None:
            self.tb.flush()

    def close(self) -> None:
        self.steps.close()
        self.epochs.close()
        if self.tb is not None:
            self.tb.close()
            self.tb = None
