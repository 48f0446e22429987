"""A small folder in the Flickr30K Karpathy layout, generated from the demo's scenes (for CI and tests).

What a researcher's Flickr30K folder looks like, at any size and in seconds: ``dataset_flickr30k.json``
with every Karpathy field (``filename``, ``imgid``, ``sentids``, ``split``, ``sentences`` with
``raw``/``tokens``/``imgid``/``sentid``; ``"dataset": "flickr30k"``) and nothing the demo adds (no
``scene``, no ``claims``, no ``demo_spec``), plus JPEGs of Flickr sizes (500 x 333, 375 x 500 ...)
with numeric file names in ``images/`` (or ``flickr30k-images/``). The pictures are the demo's
rendered shapes, centred on a canvas of the photo's size, and the captions the demo's, written
the way Flickr30K's are ("A small red circle to the left of a big blue square.").

A hidden ``.daim_generated.json`` beside them records the arguments, so a second call with the same
arguments reuses the folder and a folder the generator did not write is never overwritten.

:func:`make_coco_layout` writes the same pictures and captions in the MSCOCO Karpathy layout
(``dataset_coco.json`` with ``filepath``/``cocoid``, ``images/train2014/`` and ``images/val2014/``,
COCO file names): with 5,000 test images it is a stand-in of the COCO 5K test on which COCO 1K
(5 folds) and COCO 5K are defined.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

from PIL import Image
from tqdm.auto import tqdm

from daimlib.data.demo import DemoSpec, make_captions, next_scene, render_scene

FLICKR_SIZES = ((500, 333), (500, 375), (375, 500), (333, 500), (500, 281), (500, 400))  # (width, height)
MARKER = ".daim_generated.json"
JSON_NAME = "dataset_flickr30k.json"
COCO_JSON_NAME = "dataset_coco.json"


def _flickr_text(text: str) -> tuple[str, list[str]]:
    """A demo caption as Flickr30K writes it: capitalised, final full stop; tokens lower-cased words."""
    words = text.replace(" ,", ",").strip()
    raw = words[0].upper() + words[1:] + "."
    tokens = [w for w in text.lower().replace(",", " ").split() if w]
    return raw, tokens


def _picture(scene: dict, size: tuple[int, int], base: int) -> Image.Image:
    """The scene drawn in a square of the shorter side, centred on a canvas of ``size``."""
    w, h = size
    side = min(w, h)
    f = side / base
    scaled = {
        "background": scene["background"],
        "objects": [{**o, "x": o["x"] * f, "y": o["y"] * f, "r": o["r"] * f} for o in scene["objects"]],
    }
    canvas = Image.new("RGB", (w, h), tuple(scene["background"]))
    canvas.paste(render_scene(scaled, side, supersample=1), ((w - side) // 2, (h - side) // 2))
    return canvas


def _check_target(dst: Path, args: dict, overwrite: bool, json_name: str = JSON_NAME) -> bool:
    """True when ``dst`` already holds this exact folder; refuse a folder the generator did not write."""
    marker = dst / MARKER
    if not dst.exists() or not any(dst.iterdir()):
        return False
    if not marker.is_file():
        raise FileExistsError(
            f"{dst.name}/ is not empty and was not written by make_f30k_layout or make_coco_layout (no {MARKER}); "
            "it may be your data: choose an empty or new folder"
        )
    try:
        same = json.loads(marker.read_text(encoding="utf-8")) == args
    except json.JSONDecodeError:
        same = False
    if same and (dst / json_name).is_file() and not overwrite:
        return True
    for name in (JSON_NAME, COCO_JSON_NAME, MARKER):
        (dst / name).unlink(missing_ok=True)
    for folder in ("images", "flickr30k-images"):
        shutil.rmtree(dst / folder, ignore_errors=True)
    return False


def _scene_records(rng: random.Random, spec: DemoSpec, sizes: dict[str, int], progress: bool, desc: str):
    """``(split, scene, photo size, captions)`` for ``sizes[split]`` new scenes per split, in order."""
    bar = tqdm(total=sum(sizes.values()), desc=desc, disable=not progress, leave=False)
    for split, n in sizes.items():
        made: list[dict] = []
        seen: set[tuple] = set()
        for _ in range(n):
            scene = next_scene(rng, spec, made, seen)
            size = FLICKR_SIZES[rng.randrange(len(FLICKR_SIZES))]
            yield (
                split,
                scene,
                size,
                [_flickr_text(text) for text, _claims in make_captions(rng, scene, spec)],
            )
            bar.update()
    bar.close()


def make_f30k_layout(
    dst: str | Path,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 100,
    seed: int = 0,
    image_dir: str = "images",
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write a Flickr30K-layout folder of ``n_train``/``n_val``/``n_test`` images; return its JSON path.

    The same arguments give the same files (byte-identical JSON and images); a folder made with the
    same arguments is reused unless ``overwrite``. ``image_dir``: ``"images"`` or
    ``"flickr30k-images"`` (both are Flickr30K layouts the loader detects). About 1,200 images in a
    few seconds.
    """
    if image_dir not in ("images", "flickr30k-images"):
        raise ValueError(f"image_dir must be 'images' or 'flickr30k-images', got {image_dir!r}")
    sizes = (n_train, n_val, n_test)
    if any(not isinstance(n, int) or n < 1 for n in sizes):
        raise ValueError(f"n_train, n_val and n_test must be positive integers, got {sizes}")
    dst = Path(dst)
    args = {"n_train": n_train, "n_val": n_val, "n_test": n_test, "seed": seed, "image_dir": image_dir}
    if _check_target(dst, args, overwrite):
        return dst / JSON_NAME
    spec = DemoSpec()  # the demo's scenes and captions, drawn on a 64 px grid and scaled up
    rng = random.Random(seed)
    (dst / image_dir).mkdir(parents=True, exist_ok=True)
    names: set[int] = set()
    records, sentid = [], 0
    bar = tqdm(total=sum(sizes), desc="f30k-like images", disable=not progress, leave=False)
    for split, n in zip(("train", "val", "test"), sizes):
        made: list[dict] = []
        seen: set[tuple] = set()
        for _ in range(n):
            scene = next_scene(rng, spec, made, seen)
            number = rng.randrange(10**8, 10**10)
            while number in names:
                number = rng.randrange(10**8, 10**10)
            names.add(number)
            fname = f"{number}.jpg"
            size = FLICKR_SIZES[rng.randrange(len(FLICKR_SIZES))]
            _picture(scene, size, spec.image_size).save(dst / image_dir / fname, format="JPEG", quality=90)
            imgid = len(records)
            sents = []
            for text, _claims in make_captions(rng, scene, spec):
                raw, tokens = _flickr_text(text)
                sents.append({"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid})
                sentid += 1
            records.append(
                {
                    "sentids": [s["sentid"] for s in sents],
                    "imgid": imgid,
                    "sentences": sents,
                    "split": split,
                    "filename": fname,
                }
            )
            bar.update()
    bar.close()
    json_path = dst / JSON_NAME
    json_path.write_text(json.dumps({"images": records, "dataset": "flickr30k"}), encoding="utf-8")
    (dst / MARKER).write_text(json.dumps(args) + "\n", encoding="utf-8")
    return json_path


def make_coco_layout(
    dst: str | Path,
    n_train: int = 1000,
    n_val: int = 100,
    n_test: int = 5000,
    seed: int = 0,
    overwrite: bool = False,
    progress: bool = False,
) -> Path:
    """Write an MSCOCO-layout folder of ``n_train``/``n_val``/``n_test`` images; return its JSON path.

    ``dataset_coco.json`` as Karpathy's (``filepath`` ``train2014``/``val2014``, ``filename``
    ``COCO_<year>_<12-digit id>.jpg``, ``cocoid``, ``imgid``, ``sentids``, ``split``, ``sentences``;
    ``"dataset": "coco"``), the train images under ``images/train2014/``, val and test under
    ``images/val2014/`` as in COCO; the pictures and captions are the demo's (:func:`make_f30k_layout`).
    The default 5,000 test images are the size of the COCO 5K test (COCO 1K = its 5 folds), about 25 s.
    The same arguments give the same files; a folder made with them is reused unless ``overwrite``.
    """
    sizes = {"train": n_train, "val": n_val, "test": n_test}
    if any(not isinstance(n, int) or n < 1 for n in sizes.values()):
        raise ValueError(f"n_train, n_val and n_test must be positive integers, got {tuple(sizes.values())}")
    dst = Path(dst)
    args = {"layout": "coco", **{f"n_{k}": v for k, v in sizes.items()}, "seed": seed}
    if _check_target(dst, args, overwrite, COCO_JSON_NAME):
        return dst / COCO_JSON_NAME
    spec = DemoSpec()
    rng = random.Random(seed)
    ids = rng.sample(range(1, 600_000), sum(sizes.values()))  # distinct COCO-like image ids
    records, sentid = [], 0
    for imgid, (split, scene, size, caps) in enumerate(
        _scene_records(rng, spec, sizes, progress, "coco-like images")
    ):
        year = "train2014" if split == "train" else "val2014"
        fname = f"COCO_{year}_{ids[imgid]:012d}.jpg"
        (dst / "images" / year).mkdir(parents=True, exist_ok=True)
        _picture(scene, size, spec.image_size).save(dst / "images" / year / fname, format="JPEG", quality=90)
        sents = [
            {"tokens": tokens, "raw": raw, "imgid": imgid, "sentid": sentid + k}
            for k, (raw, tokens) in enumerate(caps)
        ]
        sentid += len(sents)
        records.append(
            {
                "filepath": year,
                "sentids": [x["sentid"] for x in sents],
                "filename": fname,
                "imgid": imgid,
                "split": split,
                "sentences": sents,
                "cocoid": ids[imgid],
            }
        )
    json_path = dst / COCO_JSON_NAME
    json_path.write_text(json.dumps({"images": records, "dataset": "coco"}), encoding="utf-8")
    (dst / MARKER).write_text(json.dumps(args) + "\n", encoding="utf-8")
    return json_path
