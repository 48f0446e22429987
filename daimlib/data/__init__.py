"""Data: dataset layouts detected from the folder, one split type, images, tokenizers, torch datasets
and the generated demo and Flickr30K-like datasets.

See ``data/README.md`` for where the real datasets come from and the expected layout.
"""

from daimlib.data.coco_ids import COCO_IDS, CocoIdSplit, load_coco_ids
from daimlib.data.datasets import CaptionDataset, ImageDataset, TextDataset, build_transforms, collate
from daimlib.data.demo import (
    DemoSpec,
    caption_is_true,
    caption_match_counts,
    caption_uniqueness,
    make_demo_dataset,
    render_scene,
)
from daimlib.data.f30k_like import make_coco_layout, make_f30k_layout
from daimlib.data.images import DatasetFormatError, ImageNotFoundError, load_image, unwrap_worker_error
from daimlib.data.karpathy import KarpathySplit, load_karpathy, read_karpathy_json
from daimlib.data.layout import (
    LAYOUTS,
    data_identity,
    describe_data,
    detect_layout,
    has_coco_id_layout,
    load_split,
    resolve_layout,
)
from daimlib.data.split import Split, clean_caption, first_images
from daimlib.data.tokenizer import (
    build_wordpiece_tokenizer,
    check_vocabulary_fits,
    data_tokenizer,
    load_tokenizer,
    tokenize,
)

__all__ = [
    "COCO_IDS",
    "CocoIdSplit",
    "load_coco_ids",
    "has_coco_id_layout",
    "CaptionDataset",
    "ImageDataset",
    "TextDataset",
    "build_transforms",
    "collate",
    "DemoSpec",
    "caption_is_true",
    "caption_match_counts",
    "caption_uniqueness",
    "make_demo_dataset",
    "render_scene",
    "make_f30k_layout",
    "make_coco_layout",
    "DatasetFormatError",
    "ImageNotFoundError",
    "load_image",
    "unwrap_worker_error",
    "KarpathySplit",
    "load_karpathy",
    "read_karpathy_json",
    "LAYOUTS",
    "data_identity",
    "describe_data",
    "detect_layout",
    "load_split",
    "resolve_layout",
    "Split",
    "clean_caption",
    "first_images",
    "build_wordpiece_tokenizer",
    "check_vocabulary_fits",
    "data_tokenizer",
    "load_tokenizer",
    "tokenize",
]
