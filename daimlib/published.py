"""Published retrieval numbers that were actually verified, with their sources.

Copied from ``docs/field_notes.md`` section 3 (R@1 i2t / R@1 t2i / RSUM on F30K 1K,
COCO 1K 5-fold and COCO 5K). Nothing here is invented: a value no source gave is NaN ("n/s").
The DAIM paper's own tables are not publicly available, so the DAIM and HAT rows carry only
their abstracts' relative claims, as text.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pandas as pd

NS = math.nan  # not seen in any source
BENCHMARKS = ("f30k", "coco1k", "coco5k")
BENCHMARK_NAMES = {"f30k": "F30K 1K", "coco1k": "COCO 1K", "coco5k": "COCO 5K"}
# test images each benchmark is defined on: the F30K 1K test; the COCO 5K test (COCO 1K = its 5 folds)
BENCHMARK_IMAGES = {"f30k": 1000, "coco1k": 5000, "coco5k": 5000}
_TABLE = "third-party table (Paranioar/Cross-modal_Retrieval_Tutorial)"

# method, backbone, ensemble, {benchmark: (R@1 i2t, R@1 t2i, RSUM)}, source, claim
PUBLISHED = [
    (
        "VSE++",
        "ResNet-152 + GRU",
        False,
        {"f30k": (52.9, 39.6, 409.8), "coco1k": (64.6, 52.0, 478.6), "coco5k": (41.3, 30.3, 355.7)},
        _TABLE,
        "",
    ),
    (
        "SCAN*",
        "BUTD + BiGRU",
        True,
        {"f30k": (67.4, 48.6, 465.0), "coco1k": (72.7, 58.8, 507.9), "coco5k": (50.4, 38.6, 410.9)},
        _TABLE,
        "",
    ),
    (
        "GPO*",
        "WSL grid + BERT",
        True,
        {"f30k": (88.7, 76.1, 555.1), "coco1k": (85.6, 73.1, 548.1), "coco5k": (68.1, 52.7, 474.7)},
        _TABLE,
        "",
    ),
    ("D2S-VSE", "Swin 224 + BERT", False, {"f30k": (87.2, 73.0, 548.7)}, "liuyyy111/d2s-vse README", ""),
    (
        "CLIP zero-shot",
        "ViT-B/16 (OpenAI)",
        False,
        {"f30k": (82.2, 62.2, 517.6), "coco5k": (52.4, 33.1, 374.2)},
        "open_clip retrieval results CSV",
        "",
    ),
    (
        "HAT (ACM MM'23)",
        "Swin-B 224 + BERT",
        False,
        {},
        "HAT README; arXiv 2308.04343 abstract",
        "abstract: relative R@1 gains over the previous SOTA of 7.6% (i2t) and 16.7% (t2i) on MSCOCO, "
        "4.4% (i2t) and 11.6% (t2i) on Flickr30K; absolute numbers n/s",
    ),
    (
        "DAIM",
        "Swin-B 224 + BERT",
        False,
        {},
        "DAIM README / abstract (Hudjkfhdsjfhdjkg/DAIM)",
        "abstract: '4.7% RSUM gain on MSCOCO' over the state of the art (absolute or relative, and which COCO "
        "split, not stated); tables n/s",
    ),
]


def published_table() -> pd.DataFrame:
    """All verified rows: one per method, columns ``<benchmark> <metric>`` (NaN = n/s).

    Columns: method, backbone, ensemble, ``F30K 1K R@1 i2t`` ... ``COCO 5K RSUM``, source, claim.
    ``*`` in a method name marks a 2-model ensemble (averaged similarity matrices).
    """
    rows = []
    for method, backbone, ensemble, nums, source, claim in PUBLISHED:
        row = {"method": method, "backbone": backbone, "ensemble": ensemble}
        for b in BENCHMARKS:
            vals = nums.get(b, (NS, NS, NS))
            for name, v in zip(("R@1 i2t", "R@1 t2i", "RSUM"), vals):
                row[f"{BENCHMARK_NAMES[b]} {name}"] = v
        row["source"], row["claim"] = source, claim
        rows.append(row)
    return pd.DataFrame(rows)


def published_rows(benchmark: str = "f30k") -> pd.DataFrame:
    """The rows of one benchmark (``f30k``, ``coco1k``, ``coco5k``), indexed by method.

    Columns ``R@1 i2t, R@1 t2i, RSUM, backbone, source``, ready to sit beside the kit's own
    :func:`daimlib.evaluate.results_table` rows (whose ``i2t R@1``/``t2i R@1``/``RSUM`` match).
    """
    if benchmark not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {benchmark!r}; benchmarks are {list(BENCHMARKS)}")
    full = published_table()
    prefix = BENCHMARK_NAMES[benchmark]
    out = full[["method", f"{prefix} R@1 i2t", f"{prefix} R@1 t2i", f"{prefix} RSUM", "backbone", "source"]]
    out = out.rename(
        columns={f"{prefix} R@1 i2t": "R@1 i2t", f"{prefix} R@1 t2i": "R@1 t2i", f"{prefix} RSUM": "RSUM"}
    )
    return out.set_index("method")


def paper_block(
    benchmark: str, measured: Mapping[str, tuple[Mapping, int] | None], decimals: int = 1
) -> pd.DataFrame:
    """The paper-format table of one benchmark: the verified published rows, then the kit's own.

    ``measured``: ``{row name: (metrics, n_test_images)}`` (metrics as
    :func:`daimlib.evaluate.recall_metrics`; ``None`` = not run). A row measured on a split whose
    size is not the benchmark's (:data:`BENCHMARK_IMAGES`: F30K 1K needs 1,000 test images, COCO
    1K/5K 5,000) is kept out: its numbers stay empty and its ``source`` says why, so a 100-image
    split is never tabled beside published F30K numbers. Columns ``R@1 i2t, R@1 t2i, RSUM, source``.
    """
    table = published_rows(benchmark)[["R@1 i2t", "R@1 t2i", "RSUM", "source"]].dropna(subset=["RSUM"])
    need = BENCHMARK_IMAGES[benchmark]
    for name, entry in measured.items():
        if entry is None:
            table.loc[name] = [np.nan, np.nan, np.nan, "not run"]
            continue
        metrics, n_images = entry
        if int(n_images) != need:
            note = (
                f"not comparable: measured on {int(n_images):,} test images "
                f"({BENCHMARK_NAMES[benchmark]} needs {need:,})"
            )
            table.loc[name] = [np.nan, np.nan, np.nan, note]
            continue
        table.loc[name] = [
            float(metrics["i2t_r1"]),
            float(metrics["t2i_r1"]),
            float(metrics["rsum"]),
            "measured",
        ]
    return table.astype({"R@1 i2t": float, "R@1 t2i": float, "RSUM": float}).round(decimals)
