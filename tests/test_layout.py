"""The data decides the format: layouts detected from the folder, the generated Flickr30K-layout
folder, and the ``tiny`` preset's tokenizer built from any folder's training captions."""

import json
import os
from pathlib import Path

import pytest
import torch
from PIL import Image

from daimlib.__main__ import main
from daimlib.config import load_preset
from daimlib.data import (
    DatasetFormatError,
    detect_layout,
    load_split,
    load_tokenizer,
    make_demo_dataset,
    make_f30k_layout,
    read_karpathy_json,
    tokenize,
)
from daimlib.data.f30k_like import FLICKR_SIZES

KARPATHY_IMAGE_KEYS = {"filename", "imgid", "sentences", "sentids", "split"}
KARPATHY_SENTENCE_KEYS = {"raw", "tokens", "imgid", "sentid"}


@pytest.fixture(scope="module")
def f30k(tmp_path_factory):
    root = tmp_path_factory.mktemp("f30k")
    make_f30k_layout(root, n_train=40, n_val=10, n_test=10, seed=3)
    return root


def _listing(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


# --- detection ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "files,layout",
    [
        (["dataset_demo.json"], "demo"),
        (["dataset_flickr30k.json"], "f30k"),
        (["dataset_coco.json"], "coco"),
        (["dataset_flickr8k.json"], "f8k"),
        (["annotations/coco_test_ids.npy"], "coco_ids"),
        (["dataset_flickr30k.json", "readme.txt", "images/1.jpg"], "f30k"),
    ],
)
def test_detect_layout_from_the_files_present(tmp_path, files, layout):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("{}")
    assert detect_layout(tmp_path) == layout


def test_empty_unknown_and_ambiguous_folders_are_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"dataset folder not found"):
        detect_layout(tmp_path / "nope")
    with pytest.raises(
        FileNotFoundError, match=r"the folder is empty.*f30k: dataset_flickr30k\.json.*coco_ids: "
    ):
        detect_layout(tmp_path)
    (tmp_path / "captions.txt").write_text("x")
    with pytest.raises(FileNotFoundError, match=r"it holds captions\.txt.*demo: dataset_demo\.json"):
        load_split(tmp_path, "test")
    (tmp_path / "dataset_flickr30k.json").write_text("{}")
    (tmp_path / "dataset_demo.json").write_text("{}")
    with pytest.raises(
        DatasetFormatError, match=r"several dataset layouts \(demo, f30k\).*data\.layout=NAME"
    ):
        load_split(tmp_path, "test")


def test_layout_override_reads_the_named_layout_of_an_ambiguous_folder(f30k, tmp_path):
    root = tmp_path / "both"
    root.mkdir()
    for name in ("dataset_flickr30k.json", "images"):
        os.symlink(f30k / name, root / name)
    (root / "dataset_demo.json").write_text("{}")
    cfg = load_preset("tiny", **{"data.layout": "f30k"})
    assert load_split(root, "test", cfg).n_images == 10
    cfg = load_preset("tiny", **{"data.json_name": "dataset_flickr30k.json"})
    assert load_split(root, "val", cfg).layout == "f30k"
    with pytest.raises(FileNotFoundError, match=r"data\.layout is 'coco'.*dataset_coco\.json"):
        load_split(root, "test", load_preset("tiny", **{"data.layout": "coco"}))


def test_demo_folder_is_read_without_any_file_name_in_the_preset(tmp_path):
    make_demo_dataset(tmp_path, size=(20, 10, 10), progress=False)
    assert load_preset("demo").data.json_name is None
    new = load_split(tmp_path, "test", load_preset("demo"))
    old = load_split(load_preset("demo").data, tmp_path, "test")  # the former argument order
    assert new.layout == old.layout == "demo" and new.captions == old.captions and new.n_images == 10
    assert load_split(tmp_path, "train").n_images == 20  # no config: defaults


# --- the generated Flickr30K-layout folder --------------------------------------------------


def test_f30k_like_json_has_exactly_the_karpathy_fields(f30k):
    data = read_karpathy_json(f30k / "dataset_flickr30k.json")
    assert set(data) == {"images", "dataset"} and data["dataset"] == "flickr30k"
    assert [r["split"] for r in data["images"]] == ["train"] * 40 + ["val"] * 10 + ["test"] * 10
    sentid = 0
    for imgid, rec in enumerate(data["images"]):
        assert set(rec) == KARPATHY_IMAGE_KEYS and rec["imgid"] == imgid
        assert len(rec["sentences"]) == 5 and rec["sentids"] == [s["sentid"] for s in rec["sentences"]]
        for s in rec["sentences"]:
            assert set(s) == KARPATHY_SENTENCE_KEYS and s["imgid"] == imgid and s["sentid"] == sentid
            assert s["raw"][0].isupper() and s["raw"].endswith(".")
            assert s["tokens"] == s["raw"].lower().replace(",", " ").replace(".", " ").split()
            sentid += 1
    names = [r["filename"] for r in data["images"]]
    assert len(set(names)) == len(names) and all(n[:-4].isdigit() and n.endswith(".jpg") for n in names)


def test_f30k_like_images_are_jpegs_of_flickr_sizes(f30k):
    split = load_split(f30k, "train")
    assert detect_layout(f30k) == "f30k" and split.image_root.name == "images"
    sizes = set()
    for p in split.image_paths:
        with Image.open(p) as im:
            assert im.format == "JPEG" and im.mode == "RGB" and im.size in FLICKR_SIZES
            sizes.add(im.size)
    assert len(sizes) >= 3  # several orientations and aspect ratios, not one


def test_f30k_like_is_deterministic_reused_and_refuses_foreign_folders(f30k, tmp_path):
    again = tmp_path / "again"
    make_f30k_layout(again, n_train=40, n_val=10, n_test=10, seed=3)
    assert (again / "dataset_flickr30k.json").read_bytes() == (f30k / "dataset_flickr30k.json").read_bytes()
    first = sorted((again / "images").iterdir())[0]
    assert first.read_bytes() == (f30k / "images" / first.name).read_bytes()
    before = _listing(again)
    make_f30k_layout(again, n_train=40, n_val=10, n_test=10, seed=3)  # same arguments: reused
    assert _listing(again) == before
    make_f30k_layout(again, n_train=20, n_val=5, n_test=5, seed=3, image_dir="flickr30k-images")
    assert not (again / "images").exists() and load_split(again, "test").image_root.name == "flickr30k-images"
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "holiday.jpg").write_bytes(b"precious")
    with pytest.raises(FileExistsError, match="not empty and was not written by make_f30k_layout"):
        make_f30k_layout(mine, 5, 5, 5)
    assert [p.name for p in mine.iterdir()] == ["holiday.jpg"]


def test_f30k_like_cli(tmp_path, capsys):
    assert (
        main(
            [
                "make-f30k-like",
                "--root",
                str(tmp_path / "d"),
                "--train",
                "6",
                "--val",
                "5",
                "--test",
                "5",
                "-q",
            ]
        )
        == 0
    )
    assert "Flickr30K-layout folder (6/5/5 images" in capsys.readouterr().out
    assert load_split(tmp_path / "d", "test").n_captions == 25
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "a.txt").write_text("mine")
    assert main(["make-f30k-like", "--root", str(tmp_path / "x"), "-q"]) == 2


# --- the tiny preset's tokenizer ------------------------------------------------------------


def test_tiny_tokenizer_is_built_from_training_captions_and_cached_outside_the_data(f30k, tmp_path):
    cfg = load_preset("tiny")
    before = _listing(f30k)
    tok = load_tokenizer(cfg.text, f30k, cache_dir=tmp_path / "cache")
    assert _listing(f30k) == before  # nothing written into the data folder
    (folder,) = list((tmp_path / "cache").iterdir())
    assert folder.name.startswith(f"wordpiece{cfg.text.model_kwargs['vocab_size']}-")
    assert len(tok) <= cfg.text.model_kwargs["vocab_size"]
    words = {w for c in load_split(f30k, "train").captions for w in c.lower().replace(",", " ").split()}
    unk = tok.convert_tokens_to_ids("[UNK]")
    for w in sorted(words)[:50]:  # every training word is spelled without [UNK]
        assert unk not in tok(w, add_special_tokens=False)["input_ids"], w
    ids, mask = tokenize(tok, load_split(f30k, "test").captions, cfg.text.max_len)
    assert int(ids.max()) < cfg.text.model_kwargs["vocab_size"] and mask.sum(1).min() > 2
    mtime = folder.stat().st_mtime_ns
    again = load_tokenizer(cfg.text, f30k, cache_dir=tmp_path / "cache")  # cached: the same folder, unchanged
    assert folder.stat().st_mtime_ns == mtime and again.get_vocab() == tok.get_vocab()


def test_tiny_tokenizer_depends_on_the_data_and_never_caches_inside_it(f30k, tmp_path):
    cfg = load_preset("tiny")
    demo = tmp_path / "demo"
    make_demo_dataset(demo, size=(20, 10, 10), progress=False)
    load_tokenizer(cfg.text, f30k, cache_dir=tmp_path / "cache")
    load_tokenizer(cfg.text, demo, cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one vocabulary per training-caption set
    with pytest.raises(ValueError, match="inside the data folder"):
        load_tokenizer(cfg.text, f30k, cache_dir=f30k / "cache")
    with pytest.raises(ValueError, match="no data_root"):
        load_tokenizer(cfg.text, None)


def test_tiny_model_runs_on_the_f30k_folder(f30k, tmp_path):
    from daimlib.data import CaptionDataset, build_transforms, collate
    from daimlib.model import DAIM

    cfg = load_preset("tiny")
    tok = load_tokenizer(cfg.text, f30k, cache_dir=tmp_path / "cache")
    ds = CaptionDataset(
        load_split(f30k, "train", cfg), tok, build_transforms(cfg.data, train=True), cfg.text.max_len
    )
    batch = collate([ds[j] for j in range(0, 40, 5)])
    assert batch["images"].shape == (8, 3, 64, 64)
    model = DAIM.from_config(cfg, pretrained=False).eval()
    with torch.no_grad():
        img = model.encode_image(batch["images"])
        txt, lens = model.encode_text(batch["input_ids"], batch["attention_mask"])
        sims = model.similarity(img, txt, lens)
    assert sims.shape == (8, 8) and torch.isfinite(sims).all()


@pytest.mark.slow  # trains a model
def test_tiny_preset_trains_and_evaluates_on_a_f30k_layout_folder_from_the_cli(tmp_path, monkeypatch, capsys):
    """Issue 14's researcher path on CPU: a Flickr30K-layout folder, preset tiny, no file name given."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAIM_CACHE_DIR", str(tmp_path / "cache"))
    assert main(["make-f30k-like", "--root", "f30k", "--train", "24", "--val", "5", "--test", "5", "-q"]) == 0
    before = _listing(tmp_path / "f30k")
    argv = [
        "train",
        "--preset",
        "tiny",
        "--data-root",
        "f30k",
        "--out",
        "run",
        "-q",
        "--device",
        "cpu",
        "--set",
        "train.max_steps=2",
        "train.batch_size=8",
        "train.eval_batch_size=10",
    ]
    assert main(argv) == 0
    assert (
        main(["evaluate", "--checkpoint", "run/best", "--data-root", "f30k", "--protocol", "demo", "-q"]) == 0
    )
    out = capsys.readouterr().out
    assert "tiny test, demo (5 images x 25 captions)" in out and "RSUM" in out
    assert _listing(tmp_path / "f30k") == before  # the data folder is read, never written
    assert [p.name.split("-")[0] for p in (tmp_path / "cache").iterdir()] == ["wordpiece2048"]


def test_data_identity_names_layout_hash_and_split_sizes(f30k, tmp_path):
    import hashlib
    import shutil

    from daimlib.data import data_identity, describe_data

    ident = data_identity(f30k)
    raw = (f30k / "dataset_flickr30k.json").read_bytes()
    want = hashlib.sha256(raw).hexdigest()
    assert ident == {
        "layout": "f30k",
        "files": ["dataset_flickr30k.json"],
        "sha256": want,
        "images": {"train": 40, "val": 10, "test": 10},
        "n_images": 60,
    }
    assert describe_data(f30k) == "f30k layout (dataset_flickr30k.json): train 40 / val 10 / test 10 images"
    copy = tmp_path / "copy"
    shutil.copytree(f30k, copy)
    assert data_identity(copy) == ident  # the same data elsewhere is the same data
    demo = tmp_path / "demo"
    make_demo_dataset(demo, size=(20, 10, 10), progress=False)
    assert data_identity(demo)["layout"] == "demo" and data_identity(demo)["sha256"] != ident["sha256"]


def test_coco_karpathy_images_may_sit_in_the_root_or_under_images(tmp_path):
    recs = [
        {
            "filename": f"{s}.jpg",
            "filepath": year,
            "split": s,
            "cocoid": i,
            "sentences": [{"raw": f"caption {k} of {s}"} for k in range(5)],
        }
        for i, (s, year) in enumerate([("train", "train2014"), ("test", "val2014")])
    ]
    for base in ("root", "images"):
        root = tmp_path / base
        folder = root if base == "root" else root / "images"
        for r in recs:
            (folder / r["filepath"]).mkdir(parents=True, exist_ok=True)
            Image.new("RGB", (5, 5), (len(r["split"]) * 30, 0, 0)).save(
                folder / r["filepath"] / r["filename"]
            )
        (root / "dataset_coco.json").write_text(json.dumps({"images": recs, "dataset": "coco"}))
        split = load_split(root, "test")
        assert detect_layout(root) == split.layout == "coco" and split.image_ids == [1]
        assert Path(split.image_paths[0]).resolve() == (folder / "val2014" / "test.jpg").resolve()
