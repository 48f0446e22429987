"""get-data (daimlib.data.get_data): every source format converted from stand-ins built here in the
exact schema of the real sources, checked against the stand-ins independently; resumability,
verification failures, the default hub call and the offline message. No test touches the network."""

from __future__ import annotations

import csv
import io
import json
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from daimlib.__main__ import main  # noqa: E402
from daimlib.data import describe_data, load_split  # noqa: E402
from daimlib.data import get_data as gd  # noqa: E402
from daimlib.data.images import DatasetFormatError  # noqa: E402

# ---------------------------------------------------------------- stand-in images and records


def _pixels(seed: int, size=(24, 16)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)


def _encode(seed: int, fmt: str = "JPEG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_pixels(seed)).save(buf, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _records(
    splits: dict[str, int], seed: int = 0, coco: bool = False, extra_caps: bool = False
) -> list[dict]:
    """Stand-in images: split, file name, captions (5; COCO-like 5-7), bytes (every 4th a PNG)."""
    out, n = [], 0
    for split, count in splits.items():
        for _ in range(count):
            fmt = "PNG" if n % 4 == 3 else "JPEG"
            ext = ".png" if fmt == "PNG" else ".jpg"
            year = "train2014" if split == "train" else "val2014"
            name = f"COCO_{year}_{100000 + n:012d}{ext}" if coco else f"{1000 + 37 * n}_{n:04x}{ext}"
            k = 5 + (n % 3 if extra_caps else 0)
            caps = [f"Picture {n} of the {split} split, caption number {j}." for j in range(k)]
            out.append(
                {
                    "split": split,
                    "filename": name,
                    "captions": caps,
                    "bytes": _encode(seed + n, fmt),
                    "fmt": fmt,
                    "seed": seed + n,
                    "year": year,
                    "cocoid": 100000 + n,
                }
            )
            n += 1
    return out


F8K = {"train": 6, "val": 3, "test": 5}
F30K = {"train": 7, "val": 2, "test": 5}
COCO = {"train": 5, "restval": 3, "val": 2, "test": 5}

# ---------------------------------------------------------------- sources in the real schemas


def _hf_features_meta(features: dict) -> dict:
    """The schema metadata datasets writes into a parquet shard (features of the dataset card)."""
    return {b"huggingface": json.dumps({"info": {"features": features}}).encode()}


def _image_struct(recs, with_path: bool):
    return pa.array(
        [{"bytes": r["bytes"], "path": r["filename"] if with_path else None} for r in recs],
        type=pa.struct([("bytes", pa.binary()), ("path", pa.string())]),
    )


def make_nlphuji_parquet(root: Path, recs: list[dict], shards: int = 2) -> Path:
    """nlphuji/flickr30k as parquet (its loading script's features; the parquet-converter's layout):
    image {bytes, path}, caption list of 5, sentids list of str, split, img_id, filename; one HF split."""
    features = {
        "image": {"_type": "Image"},
        "caption": [{"dtype": "string", "_type": "Value"}],
        "sentids": [{"dtype": "string", "_type": "Value"}],
        "split": {"dtype": "string", "_type": "Value"},
        "img_id": {"dtype": "string", "_type": "Value"},
        "filename": {"dtype": "string", "_type": "Value"},
    }
    per = -(-len(recs) // shards)
    for s in range(shards):
        part = recs[s * per : (s + 1) * per]
        table = pa.table(
            {
                "image": _image_struct(part, with_path=True),
                "caption": pa.array([r["captions"] for r in part], type=pa.list_(pa.string())),
                "sentids": pa.array([[str(5 * i + j) for j in range(5)] for i, _ in enumerate(part)]),
                "split": pa.array([r["split"] for r in part]),
                "img_id": pa.array([str(i) for i, _ in enumerate(part)]),
                "filename": pa.array([r["filename"] for r in part]),
            }
        ).replace_schema_metadata(_hf_features_meta(features))
        (root / "TEST" / "test").mkdir(parents=True, exist_ok=True)
        pq.write_table(table, root / "TEST" / "test" / f"{s:04d}.parquet")
    return root


def make_jxie_parquet(root: Path, recs: list[dict]) -> Path:
    """jxie/flickr8k: image {bytes, path=None}, caption_0 ... caption_4; the split only in the file
    names (data/train-00000-of-00001-<hash>.parquet, validation-..., test-...)."""
    (root / "data").mkdir(parents=True, exist_ok=True)
    for split, hf in (("train", "train"), ("val", "validation"), ("test", "test")):
        part = [r for r in recs if r["split"] == split]
        cols = {"image": _image_struct(part, with_path=False)}
        cols.update({f"caption_{j}": pa.array([r["captions"][j] for r in part]) for j in range(5)})
        pq.write_table(pa.table(cols), root / "data" / f"{hf}-00000-of-00001-0123456789abcdef.parquet")
    return root


def make_bitmind_parquet(root: Path, recs: list[dict]) -> Path:
    """bitmind/MS-COCO: one row per caption: image, filepath, sentids, filename, imgid, split (train /
    restval / val / test), sentences {tokens, raw, imgid, sentid}, cocoid; HF splits train (train +
    restval), validation, test; rows of one image need not be adjacent."""
    sent = pa.struct(
        [
            ("tokens", pa.list_(pa.string())),
            ("raw", pa.string()),
            ("imgid", pa.int32()),
            ("sentid", pa.int32()),
        ]
    )
    (root / "data").mkdir(parents=True, exist_ok=True)
    sid = 0
    for hf, splits in (("train", ("train", "restval")), ("validation", ("val",)), ("test", ("test",))):
        rows = []
        for i, r in enumerate(recs):
            if r["split"] in splits:
                for c in r["captions"]:
                    rows.append((i, r, c, sid))
                    sid += 1
        rows = rows[::2] + rows[1::2]  # interleave: an image's rows are not consecutive
        table = pa.table(
            {
                "image": _image_struct([r for _, r, _, _ in rows], with_path=False),
                "filepath": pa.array([r["year"] for _, r, _, _ in rows]),
                "sentids": pa.array([[s] for *_, s in rows], type=pa.list_(pa.int32())),
                "filename": pa.array([r["filename"] for _, r, _, _ in rows]),
                "imgid": pa.array([i for i, *_ in rows], type=pa.int32()),
                "split": pa.array([r["split"] for _, r, _, _ in rows]),
                "sentences": pa.array(
                    [
                        {
                            "tokens": c.lower().rstrip(".").replace(",", "").split(),
                            "raw": c,
                            "imgid": i,
                            "sentid": s,
                        }
                        for i, _, c, s in rows
                    ],
                    type=sent,
                ),
                "cocoid": pa.array([r["cocoid"] for _, r, _, _ in rows], type=pa.int32()),
            }
        )
        pq.write_table(table, root / "data" / f"{hf}-00000-of-00001.parquet")
    return root


def make_wds(root: Path, recs: list[dict], per_tar: int = 3) -> Path:
    """clip-benchmark's wds_*: <split>/<n>.tar of s<NNNNNNN>.jpg + s<NNNNNNN>.txt (captions joined by
    newlines), keys numbered per split."""
    for split in dict.fromkeys(r["split"] for r in recs):
        part = [r for r in recs if r["split"] == split]
        (root / split).mkdir(parents=True, exist_ok=True)
        for t in range(0, len(part), per_tar):
            with tarfile.open(root / split / f"{t // per_tar}.tar", "w") as tf:
                for k, r in enumerate(part[t : t + per_tar], start=t):
                    ext = "png" if r["fmt"] == "PNG" else "jpg"
                    for name, data in (
                        (f"s{k:07d}.{ext}", r["bytes"]),
                        (f"s{k:07d}.txt", "\n".join(r["captions"]).encode()),
                    ):
                        info = tarfile.TarInfo(name)
                        info.size = len(data)
                        tf.addfile(info, io.BytesIO(data))
    return root


def karpathy_json(recs: list[dict], dataset: str) -> dict:
    images, sid = [], 0
    for i, r in enumerate(recs):
        sents = [
            {
                "tokens": c.lower().rstrip(".").replace(",", "").split(),
                "raw": c,
                "imgid": i,
                "sentid": sid + j,
            }
            for j, c in enumerate(r["captions"])
        ]
        rec = {
            "sentids": [s["sentid"] for s in sents],
            "imgid": i,
            "sentences": sents,
            "split": r["split"],
            "filename": r["filename"],
        }
        if dataset == "coco":
            rec.update(filepath=r["year"], cocoid=r["cocoid"])
        images.append(rec)
        sid += len(sents)
    return {"images": images, "dataset": dataset}


def make_karpathy(root: Path, recs, dataset: str, json_name: str, folder: str, zipped: bool) -> Path:
    """The original distribution: Karpathy's JSON + the image folder, or the image zip as downloaded."""
    root.mkdir(parents=True, exist_ok=True)
    (root / json_name).write_text(json.dumps(karpathy_json(recs, dataset)))
    for r in recs:
        sub = f"{r['year']}/" if dataset == "coco" else f"{folder}/"
        if zipped:
            zname = root / f"{sub.rstrip('/')}.zip"
            with zipfile.ZipFile(zname, "a") as zf:
                zf.writestr(sub + r["filename"], r["bytes"])
        else:
            (root / sub).mkdir(parents=True, exist_ok=True)
            (root / sub / r["filename"]).write_bytes(r["bytes"])
    return root


def make_nlphuji_csv(root: Path, recs: list[dict]) -> Path:
    """nlphuji/flickr30k's own files: flickr_annotations_30k.csv (raw and sentids as JSON lists, split,
    filename, img_id) + flickr30k-images.zip (flickr30k-images/<filename>)."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "flickr_annotations_30k.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["raw", "sentids", "split", "filename", "img_id"])
        for i, r in enumerate(recs):
            w.writerow(
                [
                    json.dumps(r["captions"]),
                    json.dumps([5 * i + j for j in range(5)]),
                    r["split"],
                    r["filename"],
                    i,
                ]
            )
    with zipfile.ZipFile(root / "flickr30k-images.zip", "w") as zf:
        for r in recs:
            zf.writestr(f"flickr30k-images/{r['filename']}", r["bytes"])
    return root


# ---------------------------------------------------------------- independent checks


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def check_against(out: Path, name: str, recs: list[dict], named: bool = True) -> None:
    """The written folder against the stand-in: counts, captions, bytes and pixels, the kit's loader."""
    target = gd.TARGETS[name]
    data = json.loads((out / target.json_name).read_text())
    assert data["dataset"] == name
    got = data["images"]
    counts = {}
    for r in recs:
        counts[r["split"]] = counts.get(r["split"], 0) + 1
    assert {s: sum(g["split"] == s for g in got) for s in counts} == counts
    assert len(got) == len(recs)
    by_name = {g["filename"]: g for g in got}
    for r in recs:
        g = (
            by_name[r["filename"]]
            if named
            else [x for x in got if x["split"] == r["split"]][
                [q for q in recs if q["split"] == r["split"]].index(r)
            ]
        )
        assert g["split"] == r["split"]
        assert [s["raw"] for s in g["sentences"]] == r["captions"]
        assert g["sentids"] == [s["sentid"] for s in g["sentences"]]
        path = out / target.image_dir / g.get("filepath", "") / g["filename"]
        assert path.read_bytes() == r["bytes"]  # copied, not re-encoded
        if r["fmt"] == "PNG":  # lossless: the pixels the stand-in was made of
            assert np.array_equal(np.asarray(Image.open(path).convert("RGB")), _pixels(r["seed"]))
        if name == "coco":
            assert g["filepath"] == r["year"] and g["cocoid"] == r["cocoid"]
    assert sum(p.is_file() for p in (out / target.image_dir).rglob("*")) == len(recs)  # nothing else
    sids = [s["sentid"] for g in got for s in g["sentences"]]
    assert sids == list(range(len(sids)))
    test = load_split(out, "test")
    test_recs = [r for r in recs if r["split"] == "test"]
    assert test.n_images == len(test_recs) and test.n_captions == 5 * len(test_recs)
    line = describe_data(out)
    assert line.startswith(f"{target.layout} layout") and f"test {len(test_recs)}" in line
    assert not list(out.rglob(".*.part"))
    assert json.loads((out / gd.MARKER).read_text())["complete"] is True


# ---------------------------------------------------------------- every source format


@pytest.mark.parametrize("fmt", ["nlphuji_parquet", "wds", "json_folder", "json_zip", "nlphuji_csv"])
def test_flickr30k_every_source_format_round_trips(tmp_path, fmt):
    recs = _records(F30K)
    src = tmp_path / "src"
    if fmt == "nlphuji_parquet":
        make_nlphuji_parquet(src, recs)
    elif fmt == "wds":
        make_wds(src, recs)
    elif fmt == "nlphuji_csv":
        make_nlphuji_csv(src, recs)
    else:
        make_karpathy(src, recs, "flickr30k", "dataset_flickr30k.json", "flickr30k-images", fmt == "json_zip")
    res = gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)
    assert res.counts == F30K and res.written == len(recs) and res.skipped == 0
    expected_fmt = {"nlphuji_parquet": "parquet", "nlphuji_csv": "csv", "wds": "wds"}.get(fmt, "karpathy")
    assert res.fmt == expected_fmt
    if fmt == "wds":  # no file names in the tars: named <split>_<key>.<ext>
        for r in recs:
            k = [q for q in recs if q["split"] == r["split"]].index(r)
            r["filename"] = f"{r['split']}_s{k:07d}.{'png' if r['fmt'] == 'PNG' else 'jpg'}"
    check_against(tmp_path / "out", "flickr30k", recs)
    assert (tmp_path / "out" / "flickr30k-images").is_dir()


def test_flickr8k_from_jxie_parquet_without_file_names(tmp_path):
    recs = _records(F8K)
    res = gd.get_data(
        "flickr8k", tmp_path / "out", source=str(make_jxie_parquet(tmp_path / "src", recs)), progress=False
    )
    assert res.counts == F8K
    check_against(tmp_path / "out", "flickr8k", recs, named=False)
    got = json.loads((tmp_path / "out" / "dataset_flickr8k.json").read_text())["images"]
    # shards in name order (test, train, validation); unnamed images numbered in that order, with the
    # extension of their bytes
    assert [g["filename"][:-4] for g in got] == [f"{g['split']}_{i:06d}" for i, g in enumerate(got)]
    assert [g["split"] for g in got] == ["test"] * 5 + ["train"] * 6 + ["val"] * 3
    for g in got:
        head = (tmp_path / "out" / "images" / g["filename"]).read_bytes()[:4]
        assert g["filename"].endswith(".png") == (head == b"\x89PNG")
    assert sum(g["filename"].endswith(".png") for g in got) == sum(r["fmt"] == "PNG" for r in recs) > 0


@pytest.mark.parametrize("fmt", ["bitmind_parquet", "json_zip", "wds"])
def test_coco_keeps_restval_and_year_folders(tmp_path, fmt):
    recs = _records(COCO, coco=True, extra_caps=True)
    src = tmp_path / "src"
    if fmt == "bitmind_parquet":
        make_bitmind_parquet(src, recs)
    elif fmt == "wds":
        make_wds(src, recs)
        for r in recs:
            k = [q for q in recs if q["split"] == r["split"]].index(r)
            r["filename"] = f"{r['split']}_s{k:07d}.{'png' if r['fmt'] == 'PNG' else 'jpg'}"
            r["cocoid"] = k  # the key's number: the only id a tar carries
    else:
        make_karpathy(src, recs, "coco", "dataset_coco.json", "", zipped=True)
    res = gd.get_data("coco", tmp_path / "out", source=str(src), progress=False)
    assert res.counts == COCO
    check_against(tmp_path / "out", "coco", recs)
    out = tmp_path / "out"
    assert sorted(p.name for p in (out / "images").iterdir()) == ["train2014", "val2014"]
    from daimlib.config import DataConfig

    train = load_split(out, "train", DataConfig(use_restval=True))
    assert train.n_images == COCO["train"] + COCO["restval"]
    assert load_split(out, "train").n_images == COCO["train"]
    test = load_split(out, "test")
    assert all(len(test.captions_of(i)) == 5 for i in range(test.n_images))  # first 5 of 5-7


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_train_data_loading_reads_the_result(tmp_path):
    from daimlib.config import load_preset
    from daimlib.data import CaptionDataset, build_transforms, data_tokenizer

    recs = _records(F8K)
    make_karpathy(tmp_path / "src", recs, "flickr8k", "dataset_flickr8k.json", "Flicker8k_Dataset", False)
    gd.get_data("flickr8k", tmp_path / "out", source=str(tmp_path / "src"), progress=False)
    cfg = load_preset("tiny")
    split = load_split(tmp_path / "out", "train", cfg)
    tokenizer, _ = data_tokenizer(tmp_path / "out", 128, cache_dir=tmp_path / "cache")
    ds = CaptionDataset(split, tokenizer, build_transforms(cfg.data, train=True), cfg.text.max_len)
    assert len(ds) == 5 * F8K["train"]
    sample = ds[7]
    assert tuple(sample["image"].shape) == (3, cfg.data.img_size, cfg.data.img_size)
    assert split.captions[7] == recs[1]["captions"][2]


# ---------------------------------------------------------------- resumability


def test_interrupted_conversion_resumes_to_the_same_result(tmp_path, monkeypatch):
    recs = _records(F30K)
    src = make_nlphuji_parquet(tmp_path / "src", recs)
    gd.get_data("flickr30k", tmp_path / "ref", source=str(src), progress=False)
    real = gd._write_atomic
    calls = {"n": 0}

    def crash_on_the_sixth(path: Path, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 6:  # a crash mid-write: half the bytes under the final name
            path.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt("simulated interruption")
        real(path, data)

    monkeypatch.setattr(gd, "_write_atomic", crash_on_the_sixth)
    with pytest.raises(KeyboardInterrupt):
        gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)
    out = tmp_path / "out"
    assert not (out / "dataset_flickr30k.json").exists()
    assert json.loads((out / gd.MARKER).read_text())["complete"] is False
    monkeypatch.setattr(gd, "_write_atomic", real)
    res = gd.get_data("flickr30k", out, source=str(src), progress=False)
    assert res.skipped == 4 and res.written == len(recs) - 4  # 4 whole files kept, the half one redone
    ref, got = _tree(tmp_path / "ref"), _tree(out)
    ref.pop(gd.MARKER), got.pop(gd.MARKER)
    assert got == ref
    again = gd.get_data("flickr30k", out, source=str(src), progress=False)
    assert again.already_complete and again.counts == F30K


def test_out_folder_of_other_data_is_refused(tmp_path):
    recs = _records(F30K)
    src = make_nlphuji_csv(tmp_path / "src", recs)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not written by get-data"):
        gd.get_data("flickr30k", tmp_path / "mine", source=str(src), progress=False)
    gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)
    with pytest.raises(FileExistsError, match="holds flickr30k"):
        gd.get_data("flickr8k", tmp_path / "out", source=str(src), progress=False)


# ---------------------------------------------------------------- verification failures


def test_corrupt_image_fails_verification_naming_it(tmp_path):
    recs = _records(F30K)
    recs[4]["bytes"] = recs[4]["bytes"][: len(recs[4]["bytes"]) // 3]  # a truncated JPEG
    src = make_nlphuji_parquet(tmp_path / "src", recs)
    with pytest.raises(
        DatasetFormatError, match=r"1 of 14 images do not open \(flickr30k-images/" + recs[4]["filename"]
    ):
        gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)
    assert json.loads((tmp_path / "out" / gd.MARKER).read_text())["complete"] is False


def test_test_image_with_four_captions_fails_verification(tmp_path):
    recs = _records(F8K)
    bad = next(r for r in recs if r["split"] == "test")
    bad["captions"] = bad["captions"][:4]
    src = make_wds(tmp_path / "src", recs)
    with pytest.raises(
        DatasetFormatError, match=r"1 val/test images .* fewer than 5 captions .*test, 4 captions"
    ):
        gd.get_data("flickr8k", tmp_path / "out", source=str(src), progress=False)


def test_a_train_image_without_captions_fails_verification(tmp_path):
    recs = _records(F30K)
    recs[1]["captions"] = []
    src = make_karpathy(
        tmp_path / "src", recs, "flickr30k", "dataset_flickr30k.json", "flickr30k-images", False
    )
    with pytest.raises(
        DatasetFormatError,
        match=f"1 images in dataset_flickr30k.json have no caption \\({recs[1]['filename']}\\)",
    ):
        gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)


def test_missing_images_of_a_karpathy_json_are_listed(tmp_path):
    recs = _records(F30K)
    src = make_karpathy(
        tmp_path / "src", recs, "flickr30k", "dataset_flickr30k.json", "flickr30k-images", False
    )
    (src / "flickr30k-images" / recs[2]["filename"]).unlink()
    with pytest.raises(gd.GetDataError, match=rf"1 of 14 images .* missing \({recs[2]['filename']}\)"):
        gd.get_data("flickr30k", tmp_path / "out", source=str(src), progress=False)


def test_one_file_name_in_two_splits_or_for_two_images_is_refused(tmp_path):
    recs = _records(F30K)
    recs[9]["filename"] = recs[0]["filename"]  # a test image named as a train image
    with pytest.raises(
        DatasetFormatError, match=f"image {recs[0]['filename']} is in split 'train' and again in 'test'"
    ):
        gd.get_data(
            "flickr30k",
            tmp_path / "a",
            source=str(make_nlphuji_parquet(tmp_path / "s1", recs)),
            progress=False,
        )
    recs = _records(F30K)
    recs[1]["filename"] = recs[0]["filename"]  # two train images, one name
    with pytest.raises(DatasetFormatError, match=f"two different images are named {recs[0]['filename']}"):
        gd.get_data(
            "flickr30k",
            tmp_path / "b",
            source=str(make_nlphuji_parquet(tmp_path / "s2", recs)),
            progress=False,
        )


def test_unknown_folder_says_what_each_format_needs(tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "notes.txt").write_text("x")
    with pytest.raises(gd.GetDataError, match="no flickr8k source recognised .* parquet: \\*.parquet"):
        gd.get_data("flickr8k", tmp_path / "out", source=str(tmp_path / "src"), progress=False)


# ---------------------------------------------------------------- the default hub source


@pytest.mark.parametrize("name", ["flickr8k", "flickr30k", "coco"])
def test_default_source_calls_the_hub_with_the_pinned_repo_and_revision(tmp_path, monkeypatch, name):
    import huggingface_hub

    target = gd.TARGETS[name]
    recs = _records({"flickr8k": F8K, "flickr30k": F30K, "coco": COCO}[name], coco=name == "coco")
    snapshot = tmp_path / "snapshot"
    if name == "flickr8k":
        make_jxie_parquet(snapshot, recs)
    elif name == "flickr30k":
        make_nlphuji_csv(snapshot, recs)
    else:
        make_bitmind_parquet(snapshot, recs)
    calls = []

    def fake_snapshot_download(**kwargs):
        calls.append(kwargs)
        return str(snapshot)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    res = gd.get_data(name, tmp_path / "out", progress=False)
    assert calls == [
        {
            "repo_id": target.hub.repo_id,
            "repo_type": "dataset",
            "revision": target.hub.revision,
            "allow_patterns": list(target.hub.allow_patterns),
        }
    ]
    assert res.source == f"hf://datasets/{target.hub.repo_id}@{target.hub.revision}"
    with pytest.raises(FileExistsError, match="holds .* from hf://datasets/.*@.*, not .*@v2"):  # other files
        gd.get_data(name, tmp_path / "out", revision="v2", progress=False)
    assert {"flickr8k": "jxie/flickr8k", "flickr30k": "nlphuji/flickr30k", "coco": "bitmind/MS-COCO"}[
        name
    ] == (target.hub.repo_id)
    if name == "flickr30k":
        assert target.hub.revision == "2b239befc81b6e3f035ce6bd52f5f4d60f5625f7"
    check_against(tmp_path / "out", name, recs, named=name != "flickr8k")


def test_offline_default_fails_with_the_command_to_run(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf_home"))  # an empty cache: nothing to fall back on
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path / "hf_home" / "hub"))
    with pytest.raises(gd.HubUnreachableError) as err:
        gd.get_data("flickr30k", tmp_path / "out", progress=False)
    msg = str(err.value)
    assert "cannot download nlphuji/flickr30k (revision 2b239befc81b6e3f035ce6bd52f5f4d60f5625f7)" in msg
    assert (
        "outgoing traffic has been disabled" in msg
    )  # huggingface_hub's own offline refusal: no request made
    assert (
        "hf download nlphuji/flickr30k flickr_annotations_30k.csv flickr30k-images.zip --repo-type dataset "
        "--revision 2b239befc81b6e3f035ce6bd52f5f4d60f5625f7 --local-dir flickr30k-src"
    ) in msg
    assert f"python -m daimlib get-data flickr30k --out {tmp_path / 'out'} --from flickr30k-src" in msg
    assert "dataset_flickr30k.json" in msg  # the original distribution, as the other way
    assert not (tmp_path / "out").exists()
    rc = main(["get-data", "flickr30k", "--out", str(tmp_path / "out")])  # the command line: no traceback
    assert rc == 2 and "error: cannot download nlphuji/flickr30k" in capsys.readouterr().err


def test_network_error_becomes_the_offline_message(tmp_path, monkeypatch):
    import huggingface_hub

    def no_network(**kwargs):
        raise ConnectionError("Failed to resolve 'huggingface.co'")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", no_network)
    with pytest.raises(gd.HubUnreachableError, match="(?s)Failed to resolve.*--from coco-src") as err:
        gd.get_data("coco", tmp_path / "out", progress=False)
    assert (
        'hf download bitmind/MS-COCO --include "data/*.parquet" --repo-type dataset --revision main'
        in str(err.value)
    )


def test_a_full_disk_during_download_is_not_called_offline(tmp_path, monkeypatch):
    import errno

    import huggingface_hub

    def disk_full(**kwargs):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "cache"))

    monkeypatch.setattr(huggingface_hub, "snapshot_download", disk_full)
    with pytest.raises(OSError) as err:
        gd.get_data("flickr8k", tmp_path / "out", progress=False)
    assert err.value.errno == errno.ENOSPC and not isinstance(err.value, gd.GetDataError)


def test_a_missing_local_folder_given_as_source_is_named(tmp_path, monkeypatch):
    import huggingface_hub

    class RepositoryNotFoundError(Exception):  # huggingface_hub's name; its constructor needs a response
        pass

    def not_found(**kwargs):
        raise RepositoryNotFoundError("404 Client Error: Repository Not Found")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", not_found)
    with pytest.raises(
        gd.GetDataError,
        match="(?s)no dataset 'data/f8k-src' on the Hugging Face hub.*"
        "--from data/f8k-src: no such folder here either",
    ):
        gd.get_data("flickr8k", tmp_path / "out", source="data/f8k-src", progress=False)


def test_cli_get_data_from_a_local_folder(tmp_path, capsys):
    recs = _records(F8K)
    src = make_karpathy(tmp_path / "src", recs, "flickr8k", "dataset_flickr8k.json", "Flickr8k_Dataset", True)
    with zipfile.ZipFile(src / "Flickr8k_Dataset.zip", "a") as zf:  # as the real download: macOS forks, and
        for r in recs[:3]:  # images the split file does not list
            zf.writestr(f"__MACOSX/Flickr8k_Dataset/._{r['filename']}", b"resource fork")
        zf.writestr("Flickr8k_Dataset/unlisted_1.jpg", _encode(99))
    assert main(["get-data", "flickr8k", "--out", str(tmp_path / "out"), "--from", str(src), "-q"]) == 0
    text = capsys.readouterr().out
    assert "train 6 / val 3 / test 5 images" in text and "not Karpathy's split sizes" in text
    check_against(tmp_path / "out", "flickr8k", recs)
    assert main(["get-data", "flickr8k", "--out", str(tmp_path / "out"), "--from", str(src), "-q"]) == 0
    assert "already complete" in capsys.readouterr().out


def test_cli_next_command_names_the_written_folder_from_any_working_directory(tmp_path, monkeypatch, capsys):
    """The printed ``next: python -m daimlib train ...`` runs as printed: its --data-root is the folder written,
    also for an --out outside the repository and the working directory (not an ``<outside>/...`` label)."""
    import shlex

    src = make_karpathy(tmp_path / "src", _records(F8K), "flickr8k", "dataset_flickr8k.json", "images", False)
    out = tmp_path / "elsewhere" / "f8k"
    (tmp_path / "cwd").mkdir()
    monkeypatch.chdir(tmp_path / "cwd")
    assert main(["get-data", "flickr8k", "--out", str(out), "--from", str(src), "-q"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("next: "))
    argv = shlex.split(line[len("next: ") :])
    data_root = Path(argv[argv.index("--data-root") + 1])
    assert data_root.is_dir() and data_root.resolve() == out.resolve()
    load_split(data_root, "test")  # the layout train reads
    monkeypatch.chdir(src)  # a relative --out is printed as typed, valid where the command ran
    assert main(["get-data", "flickr8k", "--out", "../rel_out", "--from", ".", "-q"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("next: "))
    argv = shlex.split(line[len("next: ") :])
    assert (Path(argv[argv.index("--data-root") + 1]).resolve()) == (tmp_path / "rel_out").resolve()


def test_a_revision_with_a_local_folder_is_refused_not_ignored(tmp_path, capsys):
    """--revision pins a hub download; with --from DIR it was silently ignored (the folder converted as it is)."""
    src = make_karpathy(tmp_path / "src", _records(F8K), "flickr8k", "dataset_flickr8k.json", "images", False)
    argv = ["get-data", "flickr8k", "--out", str(tmp_path / "out"), "--from", str(src), "-q"]
    assert main([*argv, "--revision", "abc123"]) == 2
    assert "--revision abc123 picks a revision of a hub dataset" in capsys.readouterr().err
    assert not (tmp_path / "out" / "dataset_flickr8k.json").exists()
    assert main(argv) == 0  # without it: converted


def test_cli_ctrl_c_exits_130_and_says_how_to_continue(tmp_path, monkeypatch, capsys):
    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(gd, "get_data", interrupted)
    assert main(["get-data", "coco", "--out", str(tmp_path / "out"), "-q"]) == 130
    assert "run the same command to continue" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["parquet", "karpathy"])
def test_the_flickr8k_sized_standin_script_converts_to_karpathy_sizes(tmp_path, fmt):
    """scripts/f8k_standin.py (the source of the speed figures in data/README.md), at a tiny image size."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "f8k_standin", Path(__file__).parents[1] / "scripts" / "f8k_standin.py"
    )
    standin = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(standin)
    assert standin.main([str(tmp_path / "src"), "--format", fmt, "--size", "16x12"]) == 0
    res = gd.get_data("flickr8k", tmp_path / "out", source=str(tmp_path / "src"), progress=False)
    assert res.counts == gd.TARGETS["flickr8k"].sizes == {"train": 6000, "val": 1000, "test": 1000}
    assert res.written == 8000 and res.notes[0].startswith("the split sizes are Karpathy's")
    test = load_split(tmp_path / "out", "test")
    assert test.n_captions == 5000 and test.captions[0].startswith("A photograph numbered 7000,")
