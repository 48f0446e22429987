"""Random checkpoints in the reference code's Lightning layout, built from a key manifest.

For tests and benchmarks only (issue 8: "a full-size-shaped random checkpoint in the reference
layout imports, loads strictly and runs one forward"). :func:`write_synthetic_reference` reads a
manifest (``daim_keys.tsv`` / ``hat_keys.tsv``: every ``state_dict`` key with shape, dtype and
kind), fills the parameters with random values and computes the buffers from Swin's definition
(Liu et al. 2021, section 3.2: relative position index and shifted-window mask) *independently of
timm*, so that the importer's buffer check compares two separate computations. The file has the
Lightning 1.3 top-level layout, the pickled module list (with DAIM's ContraNorm entries or not) and
``callbacks`` keyed by a class named ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``.
"""

from __future__ import annotations

import csv
import math
import re
import sys
import types
from collections import OrderedDict
from pathlib import Path

import torch

_MASK = re.compile(r"vit_model\.layers\.(\d+)\.blocks\.(\d+)\.attn_mask")


def relative_position_index(window: int) -> torch.Tensor:
    """``[w², w²]`` int64: index into the ``(2w-1)²`` relative-position bias table (Swin, section 3.2)."""
    ys, xs = torch.meshgrid(torch.arange(window), torch.arange(window), indexing="ij")
    coords = torch.stack([ys.flatten(), xs.flatten()])  # [2, N]
    rel = coords[:, :, None] - coords[:, None, :]  # [2, N, N]
    return (rel[0] + window - 1) * (2 * window - 1) + (rel[1] + window - 1)


def shifted_window_mask(resolution: int, window: int) -> torch.Tensor:
    """``[nW, w², w²]`` float32: 0 within a region, -100 across the regions a cyclic shift joins."""
    shift = window // 2
    labels = torch.zeros(resolution, resolution)
    cuts = (
        (0, resolution - window),
        (resolution - window, resolution - shift),
        (resolution - shift, resolution),
    )
    n = 0
    for y0, y1 in cuts:
        for x0, x1 in cuts:
            labels[y0:y1, x0:x1] = n
            n += 1
    k = resolution // window
    windows = labels.reshape(k, window, k, window).permute(0, 2, 1, 3).reshape(k * k, window * window)
    diff = windows[:, None, :] - windows[:, :, None]  # [nW, N, N]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


def read_manifest(path: str | Path) -> list[dict]:
    """The rows of a key table (``reference_key``, ``shape``, ``dtype``, ``kind``, ``daimlib_key``, ``note``)."""
    with open(path, newline="") as f:
        return list(csv.DictReader(f, delimiter="\t"))


def _tensor(row: dict, g: torch.Generator) -> torch.Tensor:
    key, shape = row["reference_key"], tuple(int(s) for s in row["shape"].strip("[]").split(",") if s.strip())
    if key.endswith("relative_position_index"):
        return relative_position_index(math.isqrt(shape[0]))
    m = _MASK.fullmatch(key)
    if m:
        window = math.isqrt(shape[1])
        return shifted_window_mask(math.isqrt(shape[0]) * window, window)
    if key.endswith(".bias") or "LayerNorm" in key or ".norm" in key:
        base = torch.ones(shape) if key.endswith(".weight") else torch.zeros(shape)
        return base + 0.02 * torch.randn(shape, generator=g)
    return 0.02 * torch.randn(shape, generator=g)


def _module_list(keys: list[str], family: str) -> list[str]:
    mods = {""}
    for k in keys:
        parts = k.split(".")[:-1]
        mods.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    if family == "daim":  # the parameter-free ContraNorm modules exist only in DAIM's module tree
        mods.add("vit_model.contra")
        mods.update(
            re.sub(r"\.attn$", ".norm3", m)
            for m in list(mods)
            if re.fullmatch(r"vit_model\.layers\.\d+\.blocks\.\d+\.attn", m)
        )
    return sorted(mods, key=lambda m: (m.count("."), m))


def write_synthetic_reference(
    manifest: str | Path, path: str | Path, family: str = "daim", seed: int = 0, dataset: str = "f30k"
) -> Path:
    """Write a random checkpoint in the reference layout for every ``state_dict`` row of ``manifest``."""
    g = torch.Generator().manual_seed(seed)
    rows = [r for r in read_manifest(manifest) if r["kind"] in ("param", "buffer")]
    sd = OrderedDict((r["reference_key"], _tensor(r, g)) for r in rows)
    sd._metadata = OrderedDict((m, {"version": 1}) for m in _module_list(list(sd), family))
    config = {
        "exp_name": f"finetune_irtr_{dataset}",
        "datasets": dataset,
        "image_size": 224,
        "max_text_len": 32,
        "direction": "t2i" if family == "daim" else "i2t",
        "lambda_softmax": 9,
        "margin": 0.2137 if family == "daim" else 0.2,
    }
    if family == "daim":
        config.update(dropout=0.1, dim_feedforward=2048, positive_example=[], negative_example=[])
    name = "pytorch_lightning.callbacks.model_checkpoint"
    mod = types.ModuleType(name)
    ModelCheckpoint = type("ModelCheckpoint", (), {"__module__": name})
    mod.ModelCheckpoint = ModelCheckpoint
    added = [m for m in ("pytorch_lightning", "pytorch_lightning.callbacks", name) if m not in sys.modules]
    for m in added:
        sys.modules[m] = mod if m == name else types.ModuleType(m)
    try:
        ckpt = {
            "epoch": 1,
            "global_step": 2500,
            "pytorch-lightning_version": "1.3.2",
            "state_dict": sd,
            "callbacks": {ModelCheckpoint: {"monitor": "best_irtr", "best_model_score": torch.tensor(1.0)}},
            "optimizer_states": [],
            "lr_schedulers": [],
            "hparams_name": "kwargs",
            "hyper_parameters": {"config": config},
        }
        torch.save(ckpt, path)
    finally:
        for m in added:
            sys.modules.pop(m, None)
    return Path(path)
