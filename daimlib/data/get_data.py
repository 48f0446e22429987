"""``python -m daimlib get-data NAME --out DIR [--from SOURCE]``: Flickr8k, Flickr30K or MSCOCO in the
kit's Karpathy layout (``data/README.md``), from the Hugging Face hub, a local folder of a hub dataset's
files, or the original distribution.

What it writes is what :func:`daimlib.data.load_split` reads (``docs/field_notes.md`` section 2):

=========  ==========================  ======================================================
NAME       annotation file             images
=========  ==========================  ======================================================
flickr8k   ``dataset_flickr8k.json``   ``images/<filename>``
flickr30k  ``dataset_flickr30k.json``  ``flickr30k-images/<filename>``
coco       ``dataset_coco.json``       ``images/train2014/``, ``images/val2014/`` (``filepath``)
=========  ==========================  ======================================================

The JSON carries Karpathy's fields (``filename``, ``filepath`` for COCO, ``imgid``, ``sentids``,
``split`` in {train, val, test, restval}, ``sentences`` with ``raw``/``tokens``/``imgid``/``sentid``,
``cocoid`` for COCO). COCO's ``restval`` stays its own split value (``data.use_restval`` folds it in).

Sources (the readers live in :mod:`daimlib.data.get_data_sources`): a Karpathy ``dataset_*.json`` with
its image folder or zip; a CSV with a ``raw`` JSON list of captions, ``split`` and ``filename`` plus
the images (``nlphuji/flickr30k``); parquet shards as the hub stores them (an ``image`` struct
``{bytes, path}``, captions, a ``split`` column or the split in the file name); WebDataset tars
(``NNN.jpg`` + ``NNN.txt``, captions one per line, the split in the folder or tar name).

Image bytes are copied as they are (never re-encoded). Every file is written under a temporary name and
renamed when complete, and a file is taken as done only when its size equals the source's, so a re-run
after an interruption skips finished images and rewrites a half-written one. The annotation file is
written last; ``.daim_get_data.json`` says which source the folder came from and whether it is complete.
Verification: the image count per split equals the source's, every val/test image has at least 5
captions (the protocol, field notes section 1), every image file opens, and the kit's loader reads
each split.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from daimlib.data.get_data_sources import (
    GetDataError,
    Item,
    Source,
    count_items,
    detect_source,
    iter_items,
    sniff_extension,
)
from daimlib.data.images import DatasetFormatError

__all__ = ["TARGETS", "GetDataError", "GetDataResult", "HubUnreachableError", "get_data", "verify_output"]

MARKER = ".daim_get_data.json"


@dataclass(frozen=True)
class HubDefault:
    """The default hub source of a dataset: repo id, pinned revision, the files it needs and why."""

    repo_id: str
    revision: str
    allow_patterns: tuple[str, ...]
    pinned: str  # how the revision was pinned, said in the README and the offline message


@dataclass(frozen=True)
class Target:
    """One dataset ``get-data`` writes: its file names in the kit's layout and its Karpathy sizes."""

    name: str
    layout: str  # the kit's layout name (daimlib.data.layout.LAYOUTS)
    json_name: str
    image_dir: str
    sizes: dict[str, int]  # images per split in Karpathy's split files
    hub: HubDefault
    original: str  # what the original distribution is, for messages


TARGETS: dict[str, Target] = {
    "flickr8k": Target(
        "flickr8k",
        "f8k",
        "dataset_flickr8k.json",
        "images",
        {"train": 6000, "val": 1000, "test": 1000},
        HubDefault(
            "jxie/flickr8k",
            "main",
            ("data/*.parquet", "README.md"),
            "branch main (last commit seen: 56f58c9, short sha only; not verified offline)",
        ),
        "dataset_flickr8k.json (Karpathy's caption_datasets.zip) + Flickr8k_Dataset.zip or its folder",
    ),
    "flickr30k": Target(
        "flickr30k",
        "f30k",
        "dataset_flickr30k.json",
        "flickr30k-images",
        {"train": 29000, "val": 1014, "test": 1000},
        HubDefault(
            "nlphuji/flickr30k",
            "2b239befc81b6e3f035ce6bd52f5f4d60f5625f7",
            ("flickr_annotations_30k.csv", "flickr30k-images.zip", "README.md"),
            "commit 2b239be (read from a stored copy of the hub's file listing; not verified online)",
        ),
        "dataset_flickr30k.json (Karpathy's caption_datasets.zip) + flickr30k-images.zip or its folder",
    ),
    "coco": Target(
        "coco",
        "coco",
        "dataset_coco.json",
        "images",
        {"train": 82783, "restval": 30504, "val": 5000, "test": 5000},
        HubDefault(
            "bitmind/MS-COCO",
            "main",
            ("data/*.parquet", "README.md"),
            "branch main (no commit sha could be verified offline)",
        ),
        "dataset_coco.json (Karpathy's caption_datasets.zip) + COCO 2014 train2014.zip and val2014.zip "
        "(or their folders)",
    ),
}


class HubUnreachableError(GetDataError):
    """The hub could not be reached (offline, HF_HUB_OFFLINE=1, a proxy): the message says what to do."""


@dataclass
class GetDataResult:
    """What :func:`get_data` did: the folder, the images per split, whether it was already complete."""

    out: Path
    counts: dict[str, int]
    source: str
    fmt: str
    written: int = 0  # image files written by this call (0 on a re-run of a finished folder)
    skipped: int = 0  # image files found complete and kept
    seconds: float = 0.0
    already_complete: bool = False
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- the hub


def _download_files(repo_id: str, target: Target) -> str:
    """What to download, as ``hf download`` arguments every version of it reads: the default's file
    names as positional arguments, or its one glob as ``--include``; another repo whole."""
    if repo_id != target.hub.repo_id:
        return ""
    wanted = [p for p in target.hub.allow_patterns if p != "README.md"]
    if any("*" in p for p in wanted):
        return " " + " ".join(f'--include "{p}"' for p in wanted)
    return " " + " ".join(wanted)


def _offline_help(target: Target, repo_id: str, revision: str, out: Path) -> str:
    folder = f"{target.name}-src"
    return (
        f"Without a network: on a machine with one, run\n"
        f"  hf download {repo_id}{_download_files(repo_id, target)} --repo-type dataset --revision {revision} "
        f"--local-dir {folder}\n"
        f"(older huggingface_hub: huggingface-cli download with the same arguments), copy {folder}/ here and run\n"
        f"  python -m daimlib get-data {target.name} --out {out} --from {folder}\n"
        f"Or download the original distribution, {target.original}, into one folder and pass that folder "
        f"to --from (data/README.md, 'Real data in one command')."
    )


def _hub_error(exc: Exception, target: Target, repo_id: str, revision: str, out: Path) -> GetDataError:
    names = {c.__name__ for c in type(exc).__mro__}
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if "GatedRepoError" in names:
        return GetDataError(
            f"{repo_id} is gated on the hub: accept its terms on its page and log in "
            f"(hf auth login), then run the command again ({first})"
        )
    if "RepositoryNotFoundError" in names:
        return GetDataError(
            f"no dataset {repo_id!r} on the Hugging Face hub (or it is private): check the id "
            f"given to --from ({first})"
        )
    if "RevisionNotFoundError" in names:
        return GetDataError(f"{repo_id} has no revision {revision!r}: give another with --revision ({first})")
    return HubUnreachableError(
        f"cannot download {repo_id} (revision {revision}) from the Hugging Face hub: {first}\n"
        + _offline_help(target, repo_id, revision, out)
    )


def download(target: Target, repo_id: str, revision: str, out: Path) -> Path:
    """The local folder of ``repo_id`` at ``revision`` (huggingface_hub's ``snapshot_download``, which
    resumes interrupted downloads and reuses its cache); a clear error when the hub is unreachable."""
    patterns = (
        target.hub.allow_patterns
        if repo_id == target.hub.repo_id
        else ("*.parquet", "*.tar", "*.csv", "*.zip", "dataset_*.json", "README.md")
    )
    try:
        from huggingface_hub import snapshot_download

        path = snapshot_download(
            repo_id=repo_id, repo_type="dataset", revision=revision, allow_patterns=list(patterns)
        )
    except Exception as e:  # noqa: BLE001 - every failure becomes a message that says what to do
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES):
            raise  # the local disk, not the network: the command line names the folder
        raise _hub_error(e, target, repo_id, revision, out) from e
    return Path(path)


# ---------------------------------------------------------------- writing


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` under a temporary name beside ``path``, then rename: ``path`` is whole or absent."""
    tmp = path.with_name(f".{path.name}.part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _is_done(path: Path, size: int | None) -> bool:
    """A finished image: the file exists with the source's size (a half-written file never has it)."""
    return size is not None and path.is_file() and path.stat().st_size == size


def _safe_relpath(target: Target, rec: dict, where: str) -> Path:
    rel = Path(rec["filepath"]) / rec["filename"] if rec.get("filepath") else Path(rec["filename"])
    if rel.is_absolute() or ".." in rel.parts or not rec["filename"].strip():
        raise DatasetFormatError(
            f"{where}: the image name {str(rel)!r} would leave {target.image_dir}/; "
            "image names must be relative file names"
        )
    return rel


def _coco_fields(item: Item) -> tuple[str, int | None]:
    """COCO's ``filepath`` (train2014 / val2014) and ``cocoid``: from the source, else from the file name,
    else from Karpathy's rule (train is train2014; val, test and restval come from val2014)."""
    path = item.filepath or next((y for y in ("train2014", "val2014") if y in item.filename), "")
    path = path or ("train2014" if item.split == "train" else "val2014")
    cocoid = item.cocoid
    if cocoid is None:
        m = re.search(r"(\d+)\.\w+$", item.filename)
        cocoid = int(m.group(1)) if m else None
    return path, cocoid


def _new_record(target: Target, item: Item, n: int) -> dict:
    filename = item.filename
    if filename is None:  # no name in the source: number it, with the extension of its bytes
        filename = f"{item.split}_{n:06d}{sniff_extension(item.read())}"
    rec = {
        "filename": filename,
        "split": item.split,
        "captions": [],
        "tokens": [],
        "order": [],
        "size": item.size,
    }
    if target.name == "coco":
        rec["filepath"], rec["cocoid"] = _coco_fields(Item(**{**item.__dict__, "filename": filename}))
    return rec


def _add_item(target: Target, records: dict, item: Item) -> tuple[dict, bool]:
    """Merge ``item`` into ``records`` (keyed by file): a new image, or more captions of a known one
    (sources with one row per caption). The same name with other bytes or in another split is refused."""
    key = (item.filepath, item.filename) if item.filename is not None else ("", f"#{len(records)}")
    rec = records.get(key)
    if rec is None:
        rec = records[key] = _new_record(target, item, len(records))
        new = True
    else:
        new = False
        if rec["split"] != item.split:
            raise DatasetFormatError(
                f"{item.where}: image {item.filename} is in split {rec['split']!r} and "
                f"again in {item.split!r}; an image belongs to one split"
            )
        if item.size is not None and rec["size"] is not None and item.size != rec["size"]:
            raise DatasetFormatError(
                f"{item.where}: two different images are named {item.filename} "
                f"({rec['size']} and {item.size} bytes); file names must be unique"
            )
    rec["captions"].extend(item.captions)
    rec["tokens"].extend(item.tokens or [None] * len(item.captions))
    rec["order"].extend(item.sentids or [None] * len(item.captions))
    return rec, new


def _tokens(raw: str) -> list[str]:
    """Karpathy-style tokens of a caption: lower-cased words and numbers, punctuation dropped."""
    return re.findall(r"[a-z0-9]+(?:'[a-z]+)?", raw.lower())


def _annotation(target: Target, records: Iterable[dict]) -> dict:
    """The Karpathy JSON of the written images: ids in the order of the source."""
    images, sentid = [], 0
    for imgid, rec in enumerate(records):
        sents, caps = [], list(zip(rec["captions"], rec["tokens"]))
        if None not in rec["order"]:  # rows of one caption each: the source's caption order
            caps = [c for _, c in sorted(zip(rec["order"], caps), key=lambda oc: oc[0])]
        for raw, toks in caps:
            sents.append(
                {
                    "tokens": toks if toks is not None else _tokens(raw),
                    "raw": raw,
                    "imgid": imgid,
                    "sentid": sentid,
                }
            )
            sentid += 1
        out = {"filepath": rec["filepath"]} if "filepath" in rec else {}
        out.update(
            {
                "sentids": [s["sentid"] for s in sents],
                "filename": rec["filename"],
                "imgid": imgid,
                "split": rec["split"],
                "sentences": sents,
            }
        )
        if rec.get("cocoid") is not None:
            out["cocoid"] = rec["cocoid"]
        images.append(out)
    return {"images": images, "dataset": target.name}


def _convert(target: Target, source: Source, out: Path, progress: bool):
    """Write every image of the source (skipping finished ones); return the records and the counts."""
    image_root = out / target.image_dir
    records: dict = {}
    taken: set[Path] = set()
    written = skipped = 0
    bar = tqdm(
        total=count_items(source),
        unit="item",
        desc=f"{target.name}: images",
        disable=not progress,
        dynamic_ncols=True,
    )
    for item in iter_items(source):
        rec, new = _add_item(target, records, item)
        bar.update()
        if not new:
            continue
        path = image_root / _safe_relpath(target, rec, item.where)
        if path in taken:
            raise DatasetFormatError(
                f"{item.where}: a second image would be written to {path.relative_to(out)}; "
                "image file names must be unique in the dataset"
            )
        taken.add(path)
        if _is_done(path, item.size):
            skipped += 1
            continue
        data = item.read()
        if rec["size"] is None:
            rec["size"] = len(data)
        if path.is_file() and path.stat().st_size == len(data):
            skipped += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        _write_atomic(path, data)
        written += 1
    bar.close()
    return list(records.values()), written, skipped


# ---------------------------------------------------------------- verifying


def _image_problem(path: Path) -> str | None:
    """Why ``path`` does not open as an image (None when it does). JPEGs decode at 1/8 scale: every
    block is still read, so a truncated or corrupt file fails, at a fraction of the cost."""
    try:
        with Image.open(path) as im:
            if im.format == "JPEG":
                im.draft("RGB", (max(1, im.width // 8), max(1, im.height // 8)))
            im.load()
    except Exception as e:  # noqa: BLE001 - any failure to decode is the answer
        return f"{type(e).__name__}: {e}"
    return None


def _check_captions(annotation: dict, json_name: str) -> None:
    bare = [r["filename"] for r in annotation["images"] if not r["sentences"]]
    if bare:
        raise DatasetFormatError(
            f"verification failed: {len(bare)} images in {json_name} have no caption ({', '.join(bare[:5])}"
            f"{' ...' if len(bare) > 5 else ''}); the source lacks their captions: check it"
        )
    short = [
        (r["split"], r["filename"], len(r["sentences"]))
        for r in annotation["images"]
        if r["split"] in ("val", "test") and len(r["sentences"]) < 5
    ]
    if short:
        listing = "; ".join(f"{f} ({s}, {n} captions)" for s, f, n in short[:5])
        raise DatasetFormatError(
            f"verification failed: {len(short)} val/test images in {json_name} have fewer than 5 captions "
            f"({listing}{' ...' if len(short) > 5 else ''}); the evaluation protocol needs 5 per image. "
            "The source is incomplete or not a Karpathy split: check it, or get the dataset from the "
            "default source (run without --from)"
        )


def _check_images(paths: list[Path], root: Path, progress: bool) -> None:
    workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        results = list(
            tqdm(
                pool.map(_image_problem, paths),
                total=len(paths),
                unit="img",
                desc="verify: images open",
                disable=not progress,
                dynamic_ncols=True,
            )
        )
    bad = [(p, r) for p, r in zip(paths, results) if r is not None]
    if bad:
        listing = "; ".join(f"{p.relative_to(root)} ({r})" for p, r in bad[:3])
        raise DatasetFormatError(
            f"verification failed: {len(bad)} of {len(paths)} images do not open ({listing}"
            f"{' ...' if len(bad) > 3 else ''}). They are copied byte for byte, so the source holds them "
            "corrupt: re-download the source (or replace those files in it) and run the same command again"
        )


def verify_output(
    out: str | Path,
    name: str,
    expected: dict[str, int] | None = None,
    open_images: bool = True,
    progress: bool = False,
) -> dict[str, int]:
    """Check a folder ``get-data`` wrote; return its images per split.

    Checks: the folder's layout is the dataset's; the image count per split equals ``expected`` (the
    source's); every val/test image has at least 5 captions; every image file opens
    (``open_images``); and the kit's own loader (:func:`~daimlib.data.load_split`) reads train, val
    and test with its file checks. Raises :class:`DatasetFormatError` naming what is wrong.
    """
    from daimlib.data.karpathy import read_karpathy_json
    from daimlib.data.layout import detect_layout, load_split

    out, target = Path(out), TARGETS[name]
    if detect_layout(out) != target.layout:
        raise DatasetFormatError(f"verification failed: {out.name}/ is not in the {target.layout} layout")
    annotation = read_karpathy_json(out / target.json_name)
    counts: dict[str, int] = {}
    for rec in annotation["images"]:
        counts[rec["split"]] = counts.get(rec["split"], 0) + 1
    if expected is not None and counts != expected:
        raise DatasetFormatError(
            f"verification failed: {target.json_name} lists {counts} images per split, "
            f"the source has {expected}; run the same command again to finish it"
        )
    order = ("train", "restval", "val", "test")
    counts = dict(sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))
    _check_captions(annotation, target.json_name)
    for split in ("train", "val", "test"):
        if split in counts:
            load_split(out, split, check_files=True)
    if open_images:
        image_root = out / target.image_dir
        paths = [image_root / rec.get("filepath", "") / rec["filename"] for rec in annotation["images"]]
        _check_images(paths, out, progress)
    return counts


# ---------------------------------------------------------------- the command


def _read_marker(out: Path) -> dict | None:
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _check_out(out: Path, name: str, source: str) -> dict | None:
    """The marker of an earlier call on ``out`` (None for a new folder); refuse a folder holding
    anything else: another dataset, another source, or files get-data did not write."""
    if not out.exists() or not any(out.iterdir()):
        return None
    marker = _read_marker(out)
    if marker is None:
        raise FileExistsError(
            f"{out} is not empty and was not written by get-data (no {MARKER}); it may hold "
            "your data: give --out an empty or new folder"
        )
    if marker.get("name") != name or marker.get("source") != source:
        raise FileExistsError(
            f"{out} holds {marker.get('name')} from {marker.get('source')}, not {name} from {source}; give "
            "--out another folder (or delete this one) to convert this source"
        )
    return marker


def _source_label(target: Target, source: str | None, revision: str | None) -> str:
    """What the marker records as the source: the folder's absolute path or ``hf://datasets/ID@REVISION``
    (another revision is another source: its files may differ in content, not in size)."""
    if source is not None and Path(source).expanduser().exists():
        return str(Path(source).expanduser().resolve())
    repo_id = source or target.hub.repo_id
    rev = revision or (target.hub.revision if repo_id == target.hub.repo_id else "main")
    return f"hf://datasets/{repo_id}@{rev}"


def _resolve_source(target: Target, source: str | None, revision: str | None, out: Path) -> tuple[Path, str]:
    """(local folder, revision) for ``--from``: a folder here, or a hub dataset id (downloaded)."""
    if source is not None and Path(source).expanduser().exists():
        folder = Path(source).expanduser()
        if not folder.is_dir():
            raise GetDataError(f"--from {source} is a file; give the folder that holds the dataset's files")
        if revision:
            raise GetDataError(
                f"--revision {revision} picks a revision of a hub dataset, but --from {source} is a local folder "
                "(converted as it is); drop --revision, or give --from a hub dataset id (owner/name)"
            )
        return folder, ""
    repo_id = source or target.hub.repo_id
    if not re.fullmatch(r"[\w.-]+/[\w.-]+", repo_id):
        raise GetDataError(f"--from {source}: no such folder here, and not a hub dataset id (owner/name)")
    rev = revision or (target.hub.revision if repo_id == target.hub.repo_id else "main")
    try:
        return download(target, repo_id, rev, out), rev
    except GetDataError as e:
        if source is None:
            raise
        raise type(e)(
            f"{e}\n(--from {source}: no such folder here either; if you meant a local folder, check the path)"
        ) from e.__cause__


def _size_notes(target: Target, counts: dict[str, int]) -> list[str]:
    def listing(sizes):
        return ", ".join(f"{k} {v:,}" for k, v in sizes.items())

    if counts == target.sizes:
        return [f"the split sizes are Karpathy's ({listing(counts)})"]
    return [
        f"these are not Karpathy's split sizes for {target.name} ({listing(target.sizes)}): a subset or "
        "another split; the paper's protocols need the full test split"
    ]


def get_data(
    name: str,
    out: str | Path,
    source: str | None = None,
    revision: str | None = None,
    progress: bool = True,
    verify_images: bool = True,
) -> GetDataResult:
    """Write dataset ``name`` (``flickr8k``, ``flickr30k``, ``coco``) into ``out`` in the kit's Karpathy
    layout and verify it (module docstring). ``source``: a local folder, a hub dataset id, or None for
    the default hub mirror (``TARGETS[name].hub``, pinned); ``revision`` overrides the hub revision.
    Resumable: the same call after an interruption skips finished images; on a complete folder it only
    re-checks the annotation and the files (seconds)."""
    if name not in TARGETS:
        raise GetDataError(f"unknown dataset {name!r}; get-data knows {', '.join(TARGETS)}")
    target, out, t0 = TARGETS[name], Path(out), time.perf_counter()
    label = _source_label(target, source, revision)
    marker = _check_out(out, name, label)
    if marker and marker.get("complete"):
        counts = verify_output(out, name, expected=marker["images"], open_images=False)
        return GetDataResult(
            out,
            counts,
            label,
            marker["format"],
            seconds=time.perf_counter() - t0,
            already_complete=True,
            notes=_size_notes(target, counts),
        )
    src, rev = _resolve_source(target, source, revision, out)
    source_files = detect_source(src, target, exclude=out)
    out.mkdir(parents=True, exist_ok=True)
    state = {"name": name, "source": label, "revision": rev, "format": source_files.fmt, "complete": False}
    _write_atomic(out / MARKER, (json.dumps(state, indent=1) + "\n").encode())
    records, written, skipped = _convert(target, source_files, out, progress)
    annotation = _annotation(target, records)
    _write_atomic(out / target.json_name, json.dumps(annotation).encode("utf-8"))
    expected: dict[str, int] = {}
    for rec in records:
        expected[rec["split"]] = expected.get(rec["split"], 0) + 1
    counts = verify_output(out, name, expected=expected, open_images=verify_images, progress=progress)
    state.update(complete=True, images=counts)
    _write_atomic(out / MARKER, (json.dumps(state, indent=1) + "\n").encode())
    for part in out.rglob(".*.part"):  # temporaries of an interrupted earlier call
        part.unlink(missing_ok=True)
    return GetDataResult(
        out,
        counts,
        label,
        source_files.fmt,
        written,
        skipped,
        time.perf_counter() - t0,
        notes=_size_notes(target, counts),
    )
