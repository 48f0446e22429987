"""A stand-in for a hub dataset: generated pictures in the exact file schema of the Flickr8k hub mirror.

Notebook 13 runs the real-data pipeline (``get-data`` -> train -> evaluate -> search) offline. The
source it converts is this stand-in: the parquet shards of the default Flickr8k mirror
(``jxie/flickr8k``, see :mod:`daimlib.data.get_data`): ``data/<split>-00000-of-00001-<hash>.parquet``
with ``split`` in the file name (train, validation, test), an ``image`` struct ``{bytes, path}``
holding the JPEG bytes and five caption columns ``caption_0`` ... ``caption_4``. The pictures and
captions are the generated scenes of :func:`daimlib.data.f30k_like.make_f30k_layout` (shapes on
Flickr-sized canvases), so a model trained on them learns shapes, never photographs: the
stand-in tests the plumbing, not the method. A ``README.md`` in the folder says so.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from daimlib.data.f30k_like import make_f30k_layout

HUB_SPLITS = (("train", "train"), ("val", "validation"), ("test", "test"))  # Karpathy -> the mirror's name
STANDIN_NOTE = (
    "# STAND-IN, not Flickr8k\n\nGenerated pictures (coloured shapes) and generated captions, written by "
    "daimlib.data.standin.make_flickr8k_standin in the file schema of the Flickr8k hub mirror "
    "(parquet: image {bytes, path}, caption_0 ... caption_4; the split in the file name).\n"
)


def make_flickr8k_standin(
    root: str | Path, n_train: int = 120, n_val: int = 20, n_test: int = 20, seed: int = 0
) -> Path:
    """Write the stand-in source into ``root`` (three parquet shards under ``root/data`` and a README);
    the same arguments give the same pictures and captions. Returns ``root``. Needs pyarrow."""
    try:
        import pyarrow as pa  # noqa: PLC0415 - optional (the `data` extra)
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError as err:
        raise ImportError('the stand-in source is parquet: pip install pyarrow (or ".[data]")') from err
    root = Path(root)
    (root / "data").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        json_path = make_f30k_layout(Path(tmp) / "gen", n_train, n_val, n_test, seed=seed)
        records = json.loads(json_path.read_text(encoding="utf-8"))["images"]
        struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
        for split, hub_name in HUB_SPLITS:
            part = [r for r in records if r["split"] == split]
            images = [
                {"bytes": (json_path.parent / "images" / r["filename"]).read_bytes(), "path": None}
                for r in part
            ]
            cols = {"image": pa.array(images, type=struct)}
            for j in range(5):
                cols[f"caption_{j}"] = pa.array([r["sentences"][j]["raw"] for r in part], type=pa.string())
            pq.write_table(pa.table(cols), root / "data" / f"{hub_name}-00000-of-00001-standin.parquet")
    (root / "README.md").write_text(STANDIN_NOTE, encoding="utf-8")
    return root
