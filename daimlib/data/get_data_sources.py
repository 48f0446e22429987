"""The source formats ``get-data`` reads (:mod:`daimlib.data.get_data`), each turned into a stream of
:class:`Item` (one image with its captions, or one caption row of an image):

- ``karpathy``: the original distribution, a ``dataset_{flickr8k,flickr30k,coco}.json`` (field notes
  section 2) with its images in folders or zips anywhere below the source folder (found by file name).
- ``csv``: a table with a ``raw`` column (a JSON list of the captions), ``split`` and ``filename``
  (``sentids``, ``img_id`` optional), with the images in a folder or zip: the files of the hub's
  ``nlphuji/flickr30k`` (``flickr_annotations_30k.csv`` + ``flickr30k-images.zip``).
- ``parquet``: shards as the hub stores them: an ``image`` struct ``{bytes, path}``; captions as a list
  (``caption``, ``captions``, ``alt_text``), as ``caption_0`` ... ``caption_4``, or Karpathy
  ``sentences`` (a list, or one struct per row: rows of one image are merged); the split from a
  ``split`` column, else from the file name (``data/test-00000-of-00001.parquet``,
  ``default/train/0000.parquet``); ``filename``/``file_name``, ``filepath``, ``cocoid`` when present.
- ``wds``: WebDataset tars (clip-benchmark's ``wds_*``): members ``KEY.jpg`` + ``KEY.txt`` with the
  captions one per line, the split from the folder or tar name (``test/0.tar``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from daimlib.data.images import DatasetFormatError
from daimlib.data.split import clean_caption

IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")
SPLIT_NAMES = {
    "train": "train",
    "val": "val",
    "validation": "val",
    "valid": "val",
    "dev": "val",
    "test": "test",
    "restval": "restval",
}
FORMAT_NEEDS = (
    "karpathy: dataset_<name>.json + the images (folder or zip); csv: a table with raw/split/filename columns "
    "+ the images (nlphuji/flickr30k's files); parquet: *.parquet shards with an image column; "
    "wds: *.tar WebDataset shards (KEY.jpg + KEY.txt) in split-named folders"
)


class GetDataError(ValueError):
    """get-data cannot go on; the message says what was expected, what was found and what to do."""


@dataclass
class Item:
    """One image (or one caption row of an image) of a source."""

    split: str  # train, val, test or restval
    filename: str | None  # None: the source names no file (get-data numbers it)
    captions: list[str]
    read: Callable[[], bytes]  # the image file's bytes, as stored in the source
    size: int | None  # their length when known without reading them
    where: str  # the source file (and row) for messages
    filepath: str = ""  # COCO: train2014 / val2014
    tokens: list[list[str]] | None = None
    cocoid: int | None = None
    sentids: list[int] | None = None  # the source's caption ids: captions of merged rows keep their order


def sniff_extension(data: bytes) -> str:
    """The file extension of image bytes (``.jpg``, ``.png``, ...), from their header."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt = im.format
    except Exception as e:  # noqa: BLE001
        raise DatasetFormatError(f"image bytes of an unnamed image are not an image ({e})") from e
    return {"JPEG": ".jpg", "PNG": ".png", "WEBP": ".webp", "GIF": ".gif", "BMP": ".bmp"}.get(fmt, ".img")


def split_name(value, where: str) -> str:
    """A Karpathy split name (``validation``/``valid``/``dev`` are ``val``); unknown names are refused."""
    name = SPLIT_NAMES.get(str(value).strip().lower()) if value is not None else None
    if name is None:
        raise DatasetFormatError(
            f"{where}: unknown split {value!r}; expected one of {', '.join(SPLIT_NAMES)}"
        )
    return name


def split_from_path(rel: Path) -> str | None:
    """The split a shard's path names (``data/test-00000-of-00001.parquet``, ``test/0.tar``), or None."""
    for part in reversed([*rel.parent.parts, rel.name.split(".")[0]]):
        head = re.split(r"[-_.]", part.lower())[0]
        if head in SPLIT_NAMES:
            return SPLIT_NAMES[head]
    return None


def _clean(raws: list, where: str) -> list[str]:
    out = []
    for k, raw in enumerate(raws):
        if not isinstance(raw, str) or not clean_caption(raw):
            raise DatasetFormatError(f"{where}: caption {k} is {raw!r}, not a non-empty text")
        out.append(raw.strip())
    return out


def captions_of(rec: dict, where: str) -> tuple[list[str], list[list[str]] | None, list[int] | None]:
    """The captions of one row of a table source, with the Karpathy tokens and caption ids when the
    source has them (else None)."""
    if rec.get("sentences") is not None:
        sents = rec["sentences"] if isinstance(rec["sentences"], list) else [rec["sentences"]]
        raws = [s.get("raw") if isinstance(s, dict) else s for s in sents]
        toks = [s.get("tokens") if isinstance(s, dict) else None for s in sents]
        ids = [s.get("sentid") if isinstance(s, dict) else None for s in sents]
        return (
            _clean(raws, where),
            toks if all(isinstance(t, list) for t in toks) else None,
            ids if all(isinstance(i, int) for i in ids) else None,
        )
    for key in ("caption", "captions", "alt_text", "text"):
        if rec.get(key) is not None:
            value = rec[key]
            return _clean([value] if isinstance(value, str) else list(value), where), None, None
    numbered = sorted((int(k[8:]), k) for k in rec if re.fullmatch(r"caption_\d+", k))
    if numbered:
        return _clean([rec[k] for _, k in numbered if rec[k] is not None], where), None, None
    raise DatasetFormatError(
        f"{where}: no caption column (looked for sentences, caption, captions, alt_text, "
        f"text, caption_0 ...); the columns are {sorted(rec)}"
    )


# ---------------------------------------------------------------- finding the files


@dataclass
class Source:
    """A source folder: its format, the files that hold the data and (karpathy/csv) its images."""

    fmt: str
    root: Path
    files: list[Path]
    images: list[Path] = field(default_factory=list)
    zips: list[Path] = field(default_factory=list)


def _scan(root: Path, exclude: Path | None) -> dict[str, list[Path]]:
    """The files below ``root`` by kind, in name order (hidden folders and ``exclude`` skipped)."""
    kinds: dict[str, list[Path]] = {k: [] for k in ("json", "csv", "parquet", "tar", "zip", "image")}
    skip = exclude.resolve() if exclude is not None and exclude.exists() else None
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".") and (here / d).resolve() != skip)
        for name in sorted(filenames):
            ext = os.path.splitext(name)[1].lower()
            kind = "image" if ext in IMAGE_EXTS else ext[1:]
            if kind in kinds and not name.startswith("."):
                kinds[kind].append(here / name)
    return kinds


def _is_caption_csv(path: Path) -> bool:
    with open(path, newline="", encoding="utf-8") as fh:
        header = next(csv.reader(fh), [])
    return {"raw", "split", "filename"} <= set(header)


def detect_source(root: Path, target, exclude: Path | None = None) -> Source:
    """The format of a source folder (module docstring), checked in the order karpathy, csv, parquet,
    wds; an error listing what the folder holds when none fits."""
    found = _scan(root, exclude)
    jsons = {p.name: p for p in found["json"] if p.name.startswith("dataset_")}
    if target.json_name in jsons:
        return Source("karpathy", root, [jsons[target.json_name]], found["image"], found["zip"])
    if jsons:
        raise GetDataError(
            f"{root} holds {', '.join(sorted(jsons))}, not {target.json_name}: it is another "
            f"dataset's split file; {target.name} needs {target.json_name}"
        )
    csvs = [p for p in found["csv"] if _is_caption_csv(p)]
    if csvs:
        return Source("csv", root, csvs[:1], found["image"], found["zip"])
    if found["parquet"]:
        return Source("parquet", root, found["parquet"])
    if found["tar"]:
        return Source("wds", root, found["tar"])
    held = ", ".join(f"{len(v)} {k}" for k, v in found.items() if v) or "nothing"
    raise GetDataError(
        f"no {target.name} source recognised in {root} (it holds {held}). Each format needs: "
        f"{FORMAT_NEEDS}. See data/README.md, 'Real data in one command'"
    )


class ImageIndex:
    """Image files by file name, in folders and zips below a source folder (folders win over zips)."""

    def __init__(self, images: list[Path], zips: list[Path]):
        self._loc: dict[str, tuple] = {}
        self._zips: dict[Path, zipfile.ZipFile] = {}
        for path in images:
            self._loc.setdefault(path.name, ("file", path, None))
        for zpath in zips:
            zf = self._zips[zpath] = zipfile.ZipFile(zpath)
            for info in zf.infolist():
                name = info.filename.rsplit("/", 1)[-1]
                hidden = name.startswith(".") or "__MACOSX/" in info.filename  # macOS resource forks
                if not info.is_dir() and not hidden and os.path.splitext(name)[1].lower() in IMAGE_EXTS:
                    self._loc.setdefault(name, ("zip", zf, info))

    def locate(self, filename: str) -> tuple[Callable[[], bytes], int] | None:
        """(read the bytes, their size) of the image named ``filename``, or None."""
        loc = self._loc.get(filename.rsplit("/", 1)[-1])
        if loc is None:
            return None
        kind, where, info = loc
        if kind == "file":
            return where.read_bytes, where.stat().st_size
        return (lambda: where.read(info)), info.file_size

    def close(self) -> None:
        for zf in self._zips.values():
            zf.close()

    def require(self, names: list[str], root: Path, zips: list[Path]) -> None:
        missing = [n for n in names if n.rsplit("/", 1)[-1] not in self._loc]
        if missing:
            looked = f"the image files below {root}" + (
                f" and in {', '.join(z.name for z in zips)}" if zips else ""
            )
            raise GetDataError(
                f"{len(missing)} of {len(names)} images of the split file are missing ({', '.join(missing[:5])}"
                f"{' ...' if len(missing) > 5 else ''}); looked in {looked}. Put the dataset's image folder or zip "
                "into the source folder and run the same command again"
            )


# ---------------------------------------------------------------- the readers


def _karpathy_items(src: Source, index: ImageIndex) -> Iterator[Item]:
    from daimlib.data.karpathy import caption_text, check_record, read_karpathy_json

    json_path = src.files[0]
    data = read_karpathy_json(json_path)
    for i, rec in enumerate(data["images"]):
        check_record(rec, i, json_path.name)
    index.require([rec["filename"] for rec in data["images"]], src.root, src.zips)
    for i, rec in enumerate(data["images"]):
        where = f"{json_path.name}: images[{i}] ({rec['filename']})"
        caps = [caption_text(s, i, k, rec["filename"]) for k, s in enumerate(rec["sentences"])]
        toks = [s.get("tokens") for s in rec["sentences"]]
        read, size = index.locate(rec["filename"])
        yield Item(
            split_name(rec["split"], where),
            rec["filename"],
            caps,
            read,
            size,
            where,
            filepath=rec.get("filepath") or "",
            cocoid=rec.get("cocoid"),
            tokens=toks if all(isinstance(t, list) for t in toks) else None,
        )


def _csv_items(src: Source, index: ImageIndex) -> Iterator[Item]:
    path = src.files[0]
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    index.require([row["filename"] for row in rows], src.root, src.zips)
    for i, row in enumerate(rows):
        where = f"{path.name}: row {i + 1} ({row['filename']})"
        try:
            raws = json.loads(row["raw"])
        except json.JSONDecodeError as e:
            raise DatasetFormatError(f"{where}: 'raw' is not a JSON list of captions ({e})") from e
        if not isinstance(raws, list):
            raise DatasetFormatError(
                f"{where}: 'raw' must be a JSON list of captions, got {type(raws).__name__}"
            )
        read, size = index.locate(row["filename"])
        yield Item(split_name(row["split"], where), row["filename"], _clean(raws, where), read, size, where)


def _parquet_image(image, where: str, shard: Path) -> tuple[bytes, str | None]:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image), None
    if not isinstance(image, dict):
        raise DatasetFormatError(
            f"{where}: the image column holds {type(image).__name__}, not {{bytes, path}}"
        )
    data, path = image.get("bytes"), image.get("path")
    if data is None and path and (shard.parent / path).is_file():
        data = (shard.parent / path).read_bytes()
    if data is None:
        raise DatasetFormatError(
            f"{where}: the image has no bytes (path {path!r} is not a file beside the "
            "shard); download the dataset's parquet files with their images"
        )
    return data, path


def _pyarrow_parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise GetDataError(
            'reading parquet needs pyarrow: pip install "daimlib[data]" (or pip install pyarrow)'
        ) from e
    return pq


def _parquet_items(src: Source) -> Iterator[Item]:
    pq = _pyarrow_parquet()
    for shard in src.files:
        rel = shard.relative_to(src.root)
        pf, path_split, row = pq.ParquetFile(shard), split_from_path(rel), 0
        image_col = next((c for c in ("image", "img", "jpg") if c in pf.schema_arrow.names), None)
        if image_col is None:
            raise DatasetFormatError(
                f"{rel}: no image column (image, img or jpg); columns: {pf.schema_arrow.names}"
            )
        for batch in pf.iter_batches(batch_size=64):
            for rec in batch.to_pylist():
                where = f"{rel}: row {row}"
                row += 1
                data, ipath = _parquet_image(rec[image_col], where, shard)
                if rec.get("split") is None and path_split is None:
                    raise DatasetFormatError(f"{where}: no 'split' column and no split in the file name")
                split = split_name(rec["split"] if rec.get("split") is not None else path_split, where)
                name = (
                    rec.get("filename")
                    or rec.get("file_name")
                    or (ipath.rsplit("/", 1)[-1] if ipath else None)
                )
                caps, toks, ids = captions_of(rec, where)
                yield Item(
                    split,
                    name,
                    caps,
                    (lambda d=data: d),
                    len(data),
                    where,
                    filepath=rec.get("filepath") or "",
                    tokens=toks,
                    cocoid=rec.get("cocoid"),
                    sentids=ids,
                )


def _tar_samples(tf: tarfile.TarFile) -> Iterator[tuple[str, dict[str, tarfile.TarInfo]]]:
    """(key, {extension: member}) of consecutive members sharing a key (WebDataset convention)."""
    key, group = None, {}
    for member in tf:
        if not member.isfile():
            continue
        folder, _, base = member.name.rpartition("/")
        stem, _, ext = base.partition(".")
        k = f"{folder}/{stem}" if folder else stem
        if k != key and group:
            yield key, group
            group = {}
        key, group[ext.lower()] = k, member
    if group:
        yield key, group


def _wds_items(src: Source) -> Iterator[Item]:
    for shard in src.files:
        rel = shard.relative_to(src.root)
        split = split_from_path(rel)
        if split is None:
            raise GetDataError(
                f"{rel}: no split in the folder or tar name (e.g. test/0.tar); put each split's "
                "tars in a folder named after it (train, val, test)"
            )
        with tarfile.open(shard) as tf:
            for key, group in _tar_samples(tf):
                where = f"{rel}: sample {key}"
                img = next((e for e in group if "." + e in IMAGE_EXTS), None)
                if img is None or "txt" not in group:
                    raise DatasetFormatError(
                        f"{where}: expected an image (jpg, png, ...) and a txt member, found {sorted(group)}"
                    )
                text = tf.extractfile(group["txt"]).read().decode("utf-8")
                caps = _clean([c for c in text.splitlines() if c.strip()], where)
                name = f"{split}_{key.rsplit('/', 1)[-1]}.{img}"
                member = group[img]
                yield Item(split, name, caps, (lambda m=member: tf.extractfile(m).read()), member.size, where)


def iter_items(src: Source) -> Iterator[Item]:
    """Every item of the source, in its order."""
    if src.fmt == "parquet":
        yield from _parquet_items(src)
        return
    if src.fmt == "wds":
        yield from _wds_items(src)
        return
    index = ImageIndex(src.images, src.zips)
    try:
        yield from (_karpathy_items if src.fmt == "karpathy" else _csv_items)(src, index)
    finally:
        index.close()


def count_items(src: Source) -> int | None:
    """How many items :func:`iter_items` yields (for the progress bar), when cheap to know."""
    if src.fmt == "parquet":
        pq = _pyarrow_parquet()
        return sum(pq.ParquetFile(f).metadata.num_rows for f in src.files)
    if src.fmt == "karpathy":
        from daimlib.data.karpathy import read_karpathy_json

        return len(read_karpathy_json(src.files[0])["images"])
    return None
