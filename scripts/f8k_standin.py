"""A Flickr8k-sized stand-in SOURCE for ``python -m daimlib get-data flickr8k --from DIR`` (timing the
conversion without the real photographs, which cannot be redistributed).

    python scripts/f8k_standin.py DIR [--format parquet|karpathy] [--images 8091] [--size 500x375]

``parquet``: what the default mirror (jxie/flickr8k) holds: ``data/{train,validation,test}-*.parquet``
with an ``image`` struct {bytes, path} and ``caption_0`` ... ``caption_4`` (8,000 rows: 6,000 / 1,000 /
1,000). ``karpathy``: the original distribution: ``dataset_flickr8k.json`` (8,000 images) and
``Flickr8k_Dataset.zip`` holding ``--images`` JPEGs (8,091 as the real download, whose extra 91 no split
lists). The pictures are smooth random fields with grain, JPEG quality 90 (about 70 KB at 500 x 375;
the real photographs average about 135 KB); the captions are numbered sentences. The same arguments give
the same bytes.
"""

from __future__ import annotations

import argparse
import io
import json
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

SPLITS = (("train", 6000), ("val", 1000), ("test", 1000))


_GRAIN: dict = {}


def _grain(size: tuple[int, int]) -> np.ndarray:
    """One fixed field of grain per size (a random crop of it per picture: drawing it anew is slow)."""
    if size not in _GRAIN:
        rng = np.random.default_rng(12345)
        _GRAIN[size] = rng.normal(0, 12, (size[1] + 64, size[0] + 64, 3)).astype(np.int16)
    return _GRAIN[size]


def picture(seed: int, size: tuple[int, int]) -> bytes:
    """A JPEG of a smooth random colour field with grain (compresses like a photograph)."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize(size, Image.BICUBIC)
    dy, dx = rng.integers(0, 64, 2)
    grain = _grain(size)[dy : dy + size[1], dx : dx + size[0]]
    pixels = np.clip(np.asarray(coarse, dtype=np.int16) + grain, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def records(n_images: int) -> list[dict]:
    out, n = [], 0
    for split, count in SPLITS:
        for _ in range(count):
            out.append(
                {
                    "split": split,
                    "filename": f"{1000000 + 7919 * n}_{n:05x}.jpg",
                    "captions": [
                        f"A photograph numbered {n}, described for the {j + 1}th time." for j in range(5)
                    ],
                }
            )
            n += 1
    for k in range(n_images - n):  # in the image zip only, as in the real download
        out.append({"split": None, "filename": f"{2000000 + k}_extra.jpg", "captions": []})
    return out


def write_parquet(dst: Path, recs: list[dict], size) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    (dst / "data").mkdir(parents=True, exist_ok=True)
    image_type = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    for split, hf in (("train", "train"), ("val", "validation"), ("test", "test")):
        part = [(i, r) for i, r in enumerate(recs) if r["split"] == split]
        images = [{"bytes": picture(i, size), "path": None} for i, _ in tqdm(part, desc=f"{hf} images")]
        cols = {"image": pa.array(images, type=image_type)}
        cols.update({f"caption_{j}": pa.array([r["captions"][j] for _, r in part]) for j in range(5)})
        pq.write_table(pa.table(cols), dst / "data" / f"{hf}-00000-of-00001.parquet")


def write_karpathy(dst: Path, recs: list[dict], size) -> None:
    dst.mkdir(parents=True, exist_ok=True)
    images, sid = [], 0
    for i, r in enumerate(x for x in recs if x["split"] is not None):
        sents = [
            {
                "tokens": c.lower().rstrip(".").replace(",", "").split(),
                "raw": c,
                "imgid": i,
                "sentid": sid + j,
            }
            for j, c in enumerate(r["captions"])
        ]
        images.append(
            {
                "sentids": [s["sentid"] for s in sents],
                "imgid": i,
                "sentences": sents,
                "split": r["split"],
                "filename": r["filename"],
            }
        )
        sid += len(sents)
    (dst / "dataset_flickr8k.json").write_text(json.dumps({"images": images, "dataset": "flickr8k"}))
    with zipfile.ZipFile(dst / "Flickr8k_Dataset.zip", "w", zipfile.ZIP_STORED) as zf:
        for i, r in enumerate(tqdm(recs, desc="images")):
            zf.writestr(f"Flicker8k_Dataset/{r['filename']}", picture(i, size))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dst", help="folder to write the stand-in source into")
    ap.add_argument("--format", choices=["parquet", "karpathy"], default="parquet")
    ap.add_argument("--images", type=int, default=8091, help="images in the zip (karpathy; at least 8,000)")
    ap.add_argument("--size", default="500x375", help="image width x height (default 500x375)")
    args = ap.parse_args(argv)
    size = tuple(int(v) for v in args.size.lower().split("x"))
    recs = records(max(args.images, 8000))
    (write_parquet if args.format == "parquet" else write_karpathy)(Path(args.dst), recs, size)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
