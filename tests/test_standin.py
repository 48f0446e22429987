"""daimlib.data.standin: the Flickr8k hub-mirror stand-in has the mirror's schema and the generated
scenes' pictures and captions, read back with pyarrow and PIL (independently of get-data)."""

import io
import json

import pytest
from PIL import Image

from daimlib.data.f30k_like import make_f30k_layout
from daimlib.data.standin import make_flickr8k_standin

pq = pytest.importorskip("pyarrow.parquet")


def test_schema_split_files_and_content(tmp_path):
    root = make_flickr8k_standin(tmp_path / "src", n_train=5, n_val=2, n_test=3, seed=1)
    shards = sorted(p.name for p in (root / "data").glob("*.parquet"))
    assert shards == [f"{s}-00000-of-00001-standin.parquet" for s in ("test", "train", "validation")]
    assert "STAND-IN" in (root / "README.md").read_text()
    ref = json.loads(make_f30k_layout(tmp_path / "ref", 5, 2, 3, seed=1).read_text())["images"]
    for split, hub, n in (("train", "train", 5), ("val", "validation", 2), ("test", "test", 3)):
        table = pq.read_table(root / "data" / f"{hub}-00000-of-00001-standin.parquet")
        assert table.column_names == ["image", *(f"caption_{j}" for j in range(5))] and table.num_rows == n
        rows = table.to_pylist()
        want = [r for r in ref if r["split"] == split]
        for row, rec in zip(rows, want):
            assert [row[f"caption_{j}"] for j in range(5)] == [s["raw"] for s in rec["sentences"][:5]]
            assert row["image"]["path"] is None
            assert row["image"]["bytes"] == (tmp_path / "ref" / "images" / rec["filename"]).read_bytes()
            assert Image.open(io.BytesIO(row["image"]["bytes"])).format == "JPEG"
