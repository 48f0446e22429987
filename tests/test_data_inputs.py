"""Bad data a user (or a hostile file) can bring: each a clear, named error before work starts
(issue 13), and a generator that never writes into a user's dataset (issue 14 item 4)."""

import json
import os

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from daimlib.__main__ import main
from daimlib.data import (
    DatasetFormatError,
    ImageDataset,
    ImageNotFoundError,
    build_transforms,
    clean_caption,
    load_image,
    load_split,
    make_demo_dataset,
    unwrap_worker_error,
)
from daimlib.data.karpathy import load_karpathy

CAPS = ["a dog runs", "a brown dog", "dog on grass", "the dog plays", "a happy dog"]


def _rec(fname, split="test", caps=CAPS, **extra):
    return {"filename": fname, "split": split, "sentences": [{"raw": c} for c in caps], **extra}


def _folder(tmp_path, records, images=(), json_name="dataset_flickr30k.json"):
    (tmp_path / "images").mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(images):
        Image.new("RGB", (6, 4), (40 * i % 256, 90, 10)).save(tmp_path / "images" / name)
    (tmp_path / json_name).write_text(json.dumps({"images": records, "dataset": "flickr30k"}))
    return tmp_path


# --- malformed JSON fields ------------------------------------------------------------------


@pytest.mark.parametrize(
    "record,match",
    [
        (
            _rec("a.jpg", split=["train", "test"]),
            r"images\[0\] field 'split' must be a string, found list.*one split",
        ),
        (_rec(123), r"images\[0\] field 'filename' must be a string, found int 123"),
        (_rec("   "), r"images\[0\] has an empty 'filename'"),
        (_rec("a.jpg", filepath=["x"]), r"field 'filepath' must be a string"),
        ("not a record", r"images\[0\] must be an object, got str"),
    ],
)
def test_malformed_fields_name_the_record_and_the_field(tmp_path, record, match):
    root = _folder(tmp_path, [record], ["a.jpg"])
    with pytest.raises(DatasetFormatError, match=match):
        load_split(root, "test")


def test_non_finite_numbers_in_the_json_are_refused(tmp_path):
    root = _folder(tmp_path, [_rec("a.jpg", imgid=0)], ["a.jpg"])
    text = (root / "dataset_flickr30k.json").read_text().replace('"imgid": 0', '"imgid": NaN')
    (root / "dataset_flickr30k.json").write_text(text)
    with pytest.raises(DatasetFormatError, match="non-finite number nan"):
        load_split(root, "test")


# --- paths that leave the data root ---------------------------------------------------------


@pytest.mark.parametrize(
    "record",
    [
        _rec("../dataset_flickr30k.json"),
        _rec("/etc/hostname"),
        _rec("a.jpg", filepath="../../"),
        _rec("x/../../a.jpg"),
    ],
)
def test_image_paths_escaping_the_image_folder_are_refused(tmp_path, record):
    root = _folder(tmp_path, [record], ["a.jpg"])
    with pytest.raises(
        DatasetFormatError, match=r"images\[0\] names the file .* outside the image folder images/"
    ):
        load_split(root, "test")


def test_symlinked_files_inside_the_image_folder_are_fine(tmp_path):
    store = tmp_path / "elsewhere"
    store.mkdir()
    Image.new("RGB", (6, 4)).save(store / "real.jpg")
    root = _folder(tmp_path / "d", [_rec("link.jpg"), _rec("sub/./b.jpg")], ["b.jpg"])
    (root / "images" / "sub").mkdir()
    os.symlink(store / "real.jpg", root / "images" / "link.jpg")
    os.symlink(root / "images" / "b.jpg", root / "images" / "sub" / "b.jpg")
    assert load_split(root, "test").n_images == 2


# --- images ---------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [40, 100])  # 1,600 px: Pillow's warning zone; 10,000 px: its error zone
def test_decompression_bombs_are_refused_naming_the_file(tmp_path, monkeypatch, side):
    Image.new("RGB", (side, side)).save(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(
        DatasetFormatError, match=r"refusing image bomb\.png: it decodes to more than 1,000 pixels"
    ):
        load_image(tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 20_000)
    assert load_image(tmp_path / "bomb.png").size == (side, side)


# --- captions -------------------------------------------------------------------------------


def test_invisible_characters_are_removed_and_an_invisible_caption_is_an_error(tmp_path):
    assert clean_caption("a\u200bdog\u200d runs\ufeff") == "a dog runs"
    assert clean_caption(" a\tbrown\n dog\u2028") == "a brown dog"
    assert clean_caption("\u200b\u200c\ufeff \u2060") == ""
    caps = ["\ufeffa dog runs"] + CAPS[1:4] + ["\u200b\u200c\ufeff"]
    root = _folder(tmp_path, [_rec("a.jpg", caps=caps)], ["a.jpg"])
    with pytest.raises(DatasetFormatError, match=r"sentences\[4\] is a caption of invisible characters only"):
        load_split(root, "test")
    caps[4] = "a dog\u200b again"
    root = _folder(tmp_path, [_rec("a.jpg", caps=caps)], ["a.jpg"])
    assert load_split(root, "test").captions == ["a dog runs", *CAPS[1:4], "a dog again"]


# --- duplicate images -----------------------------------------------------------------------


def test_an_image_listed_twice_is_an_error_in_test_and_a_warning_in_training(tmp_path):
    root = _folder(tmp_path, [_rec("a.jpg"), _rec("b.jpg"), _rec("a.jpg")], ["a.jpg", "b.jpg"])
    with pytest.raises(
        DatasetFormatError, match=r"split test of dataset_flickr30k\.json: 1 images are listed more"
    ):
        load_split(root, "test")
    assert load_split(root, "test", check_files=False).n_images == 3  # the fast path checks no files
    train = [
        dict(r, split="train") for r in json.loads((root / "dataset_flickr30k.json").read_text())["images"]
    ]
    root = _folder(tmp_path, train + [_rec("b.jpg")], ["a.jpg", "b.jpg"])
    with pytest.warns(UserWarning, match=r"a\.jpg = a\.jpg.*false negatives"):
        assert load_split(root, "train").n_images == 3


def test_a_byte_identical_copy_under_another_name_counts_as_a_duplicate(tmp_path):
    root = _folder(tmp_path, [_rec("a.jpg"), _rec("b.jpg"), _rec("copy.jpg")], ["a.jpg", "b.jpg"])
    (root / "images" / "copy.jpg").write_bytes((root / "images" / "a.jpg").read_bytes())
    with pytest.raises(DatasetFormatError, match=r"identical bytes: a\.jpg = copy\.jpg"):
        load_split(root, "test")
    split = load_split(root, "test", check_files=False)
    assert split.duplicate_images() == [[0, 2]]


# --- errors inside DataLoader workers -------------------------------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_worker_errors_carry_the_original_message(tmp_path):
    root = _folder(tmp_path, [_rec("a.jpg"), _rec("b.jpg")], ["a.jpg", "b.jpg"])
    split = load_karpathy(root / "dataset_flickr30k.json", root / "images", "test")
    (root / "images" / "b.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DatasetFormatError) as direct:
        load_image(split.image_paths[1])
    loader = DataLoader(
        ImageDataset(split, build_transforms(split_cfg(), train=False)), batch_size=1, num_workers=1
    )
    with pytest.raises(DatasetFormatError) as err:
        list(loader)
    assert str(err.value).startswith(str(direct.value)) and "in DataLoader worker process 0" in str(err.value)
    assert "Traceback" not in str(err.value)
    (root / "images" / "b.jpg").unlink()
    with pytest.raises(ImageNotFoundError) as err:
        list(loader)
    assert str(err.value).startswith("image file not found: b.jpg") and isinstance(
        err.value, FileNotFoundError
    )
    wrapped = RuntimeError(
        "Caught RuntimeError in DataLoader worker process 3.\nOriginal Traceback (most recent call last):\n"
        '  File "x.py", line 1, in <module>\nRuntimeError: out of shared memory\n'
    )
    clean = unwrap_worker_error(wrapped)
    assert (
        type(clean) is RuntimeError and str(clean) == "out of shared memory (in DataLoader worker process 3)"
    )
    plain = ValueError("nothing wrapped")
    assert unwrap_worker_error(plain) is plain


def split_cfg():
    from daimlib.config import load_preset

    return load_preset("tiny").data


# --- the demo generator never writes into a user's dataset ----------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_make_demo_data_refuses_a_folder_that_is_not_demo_data(tmp_path, capsys):
    user = _folder(tmp_path / "f30k", [_rec("a.jpg")], ["a.jpg"])
    before = sorted(p.name for p in (user / "images").iterdir())
    with pytest.raises(
        FileExistsError, match=r"f30k/ is not empty and holds no demo data \(it has dataset_flickr30k"
    ):
        make_demo_dataset(user, size=(5, 5, 5), progress=False)
    assert main(["make-demo-data", "--root", str(user), "--size", "small", "-q"]) == 2
    assert "holds no demo data" in capsys.readouterr().err
    assert (
        sorted(p.name for p in (user / "images").iterdir()) == before
        and not (user / "dataset_demo.json").exists()
    )
    demo = tmp_path / "demo"
    make_demo_dataset(demo, size=(5, 5, 5), progress=False)
    make_demo_dataset(demo, size=(6, 5, 5), progress=False)  # its own folder: regenerated
    assert load_split(demo, "train").n_images == 6
    (tmp_path / "empty").mkdir()
    make_demo_dataset(tmp_path / "empty", size=(5, 5, 5), progress=False)
    assert torch.is_tensor(load_split(tmp_path / "empty", "test").img_of_caption)


# --- a tokenizer must fit the text encoder's embeddings ---------------------------------------


def _oversized_tokenizer(demo_root, folder, n_embeddings: int):
    """A WordPiece vocabulary of the demo captions behind 600 made-up words: the captions' own words get ids
    beyond ``n_embeddings``, as with a tokenizer of another (larger) model."""
    from transformers import AutoTokenizer

    from daimlib.data import build_wordpiece_tokenizer

    captions = load_split(demo_root, "train", check_files=False).captions
    junk = [" ".join(f"qq{i}x{j}" for j in range(10)) for i in range(60)] * 50
    build_wordpiece_tokenizer(junk + captions, folder, vocab_size=4 * n_embeddings)
    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    ids = tok(captions[:20])["input_ids"]
    assert len(tok) > n_embeddings and max(max(x) for x in ids) >= n_embeddings  # it would index past them
    return tok


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.usefixtures("one_torch_thread")
def test_a_tokenizer_larger_than_the_text_embeddings_is_refused_naming_both_sizes(
    demo_root, tmp_path, capsys
):
    """Train and evaluate stop with both sizes named, not with torch's 'IndexError: index out of range in
    self' from inside the embedding lookup (a device-side assert on a GPU)."""
    from daimlib.config import load_preset
    from daimlib.evaluate import encode_split
    from daimlib.model import DAIM

    cfg = load_preset("demo")
    n_embeddings = cfg.text.model_kwargs["vocab_size"]
    tok = _oversized_tokenizer(demo_root, tmp_path / "tok", n_embeddings)
    model = DAIM.from_config(cfg, pretrained=False)
    split = load_split(demo_root, "test")
    with pytest.raises(ValueError, match=rf"{len(tok):,} tokens .* {n_embeddings:,} token embeddings"):
        encode_split(model, split, tok, cfg.data, device="cpu", progress=False)
    argv = ["train", "--preset", "demo", "--data-root", str(demo_root), "--out", str(tmp_path / "run")]
    argv += ["--set", f"text.tokenizer={tmp_path / 'tok'}", "train.epochs=1", "data.num_workers=0", "-q"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"{n_embeddings:,} token embeddings" in err and "text.model_kwargs.vocab_size" in err
    assert not (tmp_path / "run" / "last").exists()  # refused before any step
