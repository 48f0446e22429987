"""Data: Karpathy-format splits, images, tokenizers, torch datasets and the generated demo dataset.

See ``data/README.md`` for where the real datasets come from and the expected layout.
"""

from daimlib.data.coco_ids import COCO_IDS, CocoIdSplit, has_coco_id_layout
from daimlib.data.datasets import CaptionDataset, ImageDataset, TextDataset, build_transforms, collate
from daimlib.data.demo import (
    DemoSpec,
    caption_is_true,
    caption_match_counts,
    caption_uniqueness,
    make_demo_dataset,
    render_scene,
)
from daimlib.data.karpathy import (
    DatasetFormatError,
    KarpathySplit,
    load_image,
    load_split,
    read_karpathy_json,
)
from daimlib.data.tokenizer import build_wordpiece_tokenizer, load_tokenizer, tokenize

__all__ = [
    "COCO_IDS", "CocoIdSplit", "has_coco_id_layout",
    "CaptionDataset", "ImageDataset", "TextDataset", "build_transforms", "collate",
    "DemoSpec", "caption_is_true", "caption_match_counts", "caption_uniqueness", "make_demo_dataset",
    "render_scene", "DatasetFormatError", "KarpathySplit", "load_image", "load_split", "read_karpathy_json",
    "build_wordpiece_tokenizer", "load_tokenizer", "tokenize",
]  # fmt: skip
