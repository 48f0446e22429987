"""Where things are and how paths are shown: the repository root, repo-relative display, output folders.

A leaf module (standard library only), so that plots, notebooks, the CLI and the checkpoint code
share one rule each:

- :func:`repo_root`: the DAIM Kit checkout the user works in;
- :func:`display_path` (also :func:`rel`): a path as printed in messages, notebook outputs and
  result files, never a machine path (the kit's committed outputs must not carry an absolute path of the machine);
- :func:`output_root`, :func:`figures_dir`: where figures and other notebook outputs go; the
  tracked ``figures/`` holds the demo data's figures only, and the environment variable
  ``DAIM_OUTPUT_DIR`` redirects every output (``make demo`` keeps a student's clone clean with it).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

_MARKERS = ("pyproject.toml", "daimlib")
OUTPUT_ENV = "DAIM_OUTPUT_DIR"
DEMO_DATA = "data/demo"


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


def _root_or_none() -> Path | None:
    try:
        return repo_root()
    except FileNotFoundError:
        return None


def repo_path(path: str | os.PathLike) -> Path:
    """``path`` as given if absolute, else relative to the repository root."""
    p = Path(path)
    return p if p.is_absolute() else repo_root() / p


def display_path(path: str | os.PathLike) -> str:
    """``path`` as the kit prints it, as a POSIX string: never a machine path.

    In order: relative to the repository root when it lies inside it (``"data/demo"``, ``"."``);
    else relative to the working directory when below it; else the path as given when it was
    given relative; else ``<outside>/<last two parts>``.
    """
    given = Path(path)
    p = (given if given.is_absolute() else Path.cwd() / given).resolve()
    for base in (_root_or_none(), Path.cwd().resolve()):
        if base is None:
            continue
        try:
            out = p.relative_to(base).as_posix()
        except ValueError:
            continue
        return out if out else "."
    if not given.is_absolute():
        return given.as_posix()
    return "<outside>/" + "/".join(p.parts[-2:])


rel = display_path  # the notebooks' name


def output_root() -> Path:
    """Where outputs go: ``$DAIM_OUTPUT_DIR`` (absolute, or relative to the repository root) when
    set, else the repository root (then figures land in the tracked ``figures/``)."""
    env = os.environ.get(OUTPUT_ENV, "").strip()
    if env:
        return repo_path(env)
    return repo_root()


def is_demo_data(data: str | os.PathLike | None) -> bool:
    """Whether a notebook's ``DATA`` names the generated demo data (``"demo"`` or ``data/demo``)."""
    if data is None or str(data) == "demo":
        return True
    root = _root_or_none()
    if root is None:
        return False
    return repo_path(data).resolve() == (root / DEMO_DATA).resolve()


def run_root(data: str | os.PathLike | None = None, smoke: bool = False) -> Path:
    """The folder a notebook run on ``data`` writes its runs, caches and (off the demo) figures to.

    The full demo run: ``<output root>/runs`` (runs at ``runs/<preset>``); a smoke run adds
    ``smoke/``; any other dataset folder adds its folder name: ``runs/[smoke/]<folder name>``, so
    nothing made on other data is reused or overwritten (issue 14). ``<output root>`` is the
    repository root, or ``$DAIM_OUTPUT_DIR`` when set.
    """
    out = output_root() / "runs"
    if smoke:
        out = out / "smoke"
    if not is_demo_data(data):
        out = out / (repo_path(data).resolve().name or "data")
    return out


def figures_dir(data: str | os.PathLike | None = None, smoke: bool = False) -> Path:
    """The folder for the figures of a notebook run on ``data`` (issue 14: only the full demo run
    writes the tracked figures).

    - the demo data (``None``, ``"demo"`` or ``data/demo``), not a smoke run: ``<output root>/figures``,
      i.e. the tracked ``figures/`` unless ``DAIM_OUTPUT_DIR`` is set;
    - otherwise ``<run root>/figures`` (:func:`run_root`): ``runs/[smoke/][<folder name>/]figures``.
    """
    if is_demo_data(data) and not smoke:
        return output_root() / "figures"
    return run_root(data, smoke) / "figures"


CACHE_ENV = "DAIM_CACHE_DIR"


def cache_root() -> Path:
    """Where the kit caches what it builds (tokenizers, converted weights, frozen features):
    ``$DAIM_CACHE_DIR``, else ``runs/cache`` of the checkout the package runs from (beside the runs,
    ignored by git), else ``~/.cache/daimlib``."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "pyproject.toml").is_file() and (checkout / "daimlib").is_dir():
        return checkout / "runs" / "cache"
    return Path.home() / ".cache" / "daimlib"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 4 MiB chunks (the kit's one file digest)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()
