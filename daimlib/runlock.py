"""A run folder is owned while it is written: one exclusive lock file per folder (issue 28 item 1).

``train``, ``ablate`` and ``demo-models`` hold :func:`run_folder` around everything they write into
their output folder. The lock is ``<folder>/.daimlib.lock``, created with ``O_CREAT | O_EXCL`` (only
one process can create it) and holding its owner's pid, host, command and start time as JSON. A second
process aiming at the same folder gets :class:`RunBusyError` at once, naming the holder; nothing is
written. The lock is removed on every way out of the block (return, exception, Ctrl-C, SIGTERM turned
into an exception); a process killed outright (SIGKILL, power loss) leaves it behind, and the next run
on the same host sees that its pid no longer runs (or now belongs to a younger process) and takes the
folder over with a warning. A lock written on another host cannot be checked from here: the message
says which host and which file to delete once that run is known to be gone.

The same block checks the path before anything is created (a file where a folder should be, a name
longer than the file system allows) and, when the command fails before writing anything, removes the
folders it created, so a failed start leaves no empty ``--out`` behind.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import logging
import os
import socket
from pathlib import Path

from .paths import display_path

log = logging.getLogger("daimlib.runlock")

LOCK_NAME = ".daimlib.lock"


class RunBusyError(FileExistsError):
    """Another process (or a lock it left on another host) owns the run folder."""


def _proc_start(pid: int) -> str | None:
    """The start time of process ``pid`` in clock ticks since boot (Linux), or None when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22 of proc(5), counted after the command name


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        return True
    except OSError:
        return True
    return True


def read_lock(folder: str | os.PathLike) -> dict | None:
    """The owner recorded in ``folder``'s lock file, or None when the folder is not locked."""
    path = Path(folder) / LOCK_NAME
    try:
        owner = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {}  # half-written or damaged: a lock all the same, owner unknown
    return owner if isinstance(owner, dict) else {}


def is_stale(owner: dict) -> bool:
    """Whether a lock's owner is provably gone: same host, and its pid no longer runs (or was reused)."""
    if owner.get("host") != socket.gethostname() or not isinstance(owner.get("pid"), int):
        return False
    pid = owner["pid"]
    if not _alive(pid):
        return True
    started = owner.get("proc_start")
    return started is not None and _proc_start(pid) not in (None, started)


def describe(owner: dict) -> str:
    if not owner:
        return "an unknown process (its lock file is unreadable)"
    return (
        f"{owner.get('command', '?')} (pid {owner.get('pid', '?')} on host {owner.get('host', '?')}, "
        f"since {owner.get('started_utc', '?')})"
    )


def check_folder_path(folder: str | os.PathLike, flag: str = "--out") -> None:
    """Refuse, before anything is created, a path the file system will refuse: a file where a folder
    should be, or a name longer than the file system allows (``ENAMETOOLONG``)."""
    folder = Path(folder)
    for part in folder.parts:
        if len(os.fsencode(part)) > 255:
            raise ValueError(
                f"{flag}: the folder name {part[:24]}... is {len(os.fsencode(part))} bytes long; file systems "
                "allow at most 255 bytes per name. Choose a shorter name."
            )
    for p in (folder, *folder.parents):
        if p.exists() or p.is_symlink():
            if not p.is_dir():
                what = "a dangling symbolic link" if p.is_symlink() and not p.exists() else "a file"
                raise FileExistsError(
                    f"{flag} {display_path(folder)}: {display_path(p)} is {what}, not a folder; choose another "
                    f"{flag} (nothing was written)"
                )
            break


def _created_chain(folder: Path) -> list[Path]:
    """The folders ``mkdir(parents=True)`` of ``folder`` would create, deepest first."""
    out = []
    for p in (folder, *folder.parents):
        if p.exists():
            break
        out.append(p)
    return out


def acquire(folder: Path, command: str) -> Path:
    """Create ``folder``'s lock file or raise :class:`RunBusyError` (a stale lock is replaced)."""
    path = folder / LOCK_NAME
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "command": command,
        "proc_start": _proc_start(os.getpid()),
        "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
    }
    for _ in range(3):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = read_lock(folder)
            if owner is None:
                continue  # released meanwhile: try again
            if not is_stale(owner):
                host_note = (
                    ""
                    if owner.get("host") in (None, socket.gethostname())
                    else f"; it was written on another host, so if no run is active there, delete {display_path(path)}"
                )
                raise RunBusyError(
                    f"{display_path(folder)} is in use by {describe(owner)}; two runs writing one folder would "
                    f"mix their histories and checkpoints. Wait for it to finish, stop it, or choose another "
                    f"folder{host_note}"
                ) from None
            log.warning(
                "%s: taking over the lock left by %s, which no longer runs",
                display_path(folder),
                describe(owner),
            )
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(json.dumps(me) + "\n")
        return path
    raise RunBusyError(f"{display_path(folder)}: could not take its lock {display_path(path)}; try again")


def release(path: Path) -> None:
    """Remove a lock file if it is still this process's."""
    owner = read_lock(path.parent)
    if owner and owner.get("pid") == os.getpid() and owner.get("host") == socket.gethostname():
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


@contextlib.contextmanager
def run_folder(folder: str | os.PathLike, command: str, enabled: bool = True, flag: str = "--out"):
    """Own ``folder`` for the block: check its path, create it, hold its lock (see the module doc).

    ``enabled=False`` (the other ranks of a ``torchrun`` job; rank 0 holds the lock) does nothing.
    On an exception, the folders this call created are removed again when nothing was written into them.
    """
    if not enabled:
        yield None
        return
    folder = Path(folder)
    check_folder_path(folder, flag)
    created = _created_chain(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            raise ValueError(
                f"{flag} {display_path(folder)}: the path is too long for this file system"
            ) from None
        raise
    try:
        lock = acquire(folder, command)
    except BaseException:
        _remove_empty(created)
        raise
    try:
        yield lock
    except BaseException:
        release(lock)
        _remove_empty(created)
        raise
    release(lock)


def _remove_empty(created: list[Path]) -> None:
    for p in created:  # deepest first
        with contextlib.suppress(OSError):
            p.rmdir()  # only an empty folder goes
