"""Frozen encoders, cached features: the multi-level features of a frozen stream, computed once.

While both backbones are frozen (spec section 1.5: the paper presets' first 11 epochs; the laptop
preset for good) only the six projections train. Their inputs, the encoders' level features, are
then a fixed function of each image and caption *if nothing random acts inside or before the
encoders*. The reference does not meet that condition: it keeps dropout (BERT 0.1) and DropPath
(Swin 0.1) active in the frozen modules and crops every image at random (RandomResizedCrop +
flip). ``train.feature_cache`` chooses:

- ``"off"`` (every paper preset): the reference behaviour, encoders run every step;
- ``"frozen"``: during the frozen epochs the encoders run in eval mode (no dropout, no DropPath),
  images get the evaluation transform (Resize + CenterCrop, no flip), and the level features of
  every training image and caption are computed once into memory-mapped ``.npy`` files; the heads
  train from them (:class:`CachedPairs`). From the first unfrozen epoch on, training is as ``"off"``.
- ``"frozen_live"``: the same deterministic frozen phase computed live every step (no cache): the
  control against which ``"frozen"`` is exact (an fp32 cache gives the same losses to float
  tolerance, ``tests/test_feature_cache.py``) and the benchmark's "without cache" column.

FDM inside a frozen Swin: ContraNorm has no parameters and no randomness, so the cache holds the
features *after* it (blocks and stage outputs); it acts exactly as without the cache. What a cache
cannot do is let the backbone adapt to ContraNorm: that needs unfrozen epochs (the reference's
epochs >= 11), which train from images again.

Staleness: each stream's cache is a folder named by a sha256 key over the format version, the
stream's weights (every tensor of its ``state_dict``, including the frozen stage LayerNorms), the
model config that shapes its output (levels, FDM), the preprocessing (the evaluation transform's
repr; the token ids, which carry tokenizer, captions and ``max_len``), the data (every image file's
bytes, in split order) and the storage dtype. A different weight, file, crop size or tokenizer
gives a different folder; a folder is only read when its manifest's sha256s match its files
(a partial or corrupt cache raises :class:`FeatureCacheError`; training then rebuilds it).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .data import CaptionDataset, ImageDataset, build_transforms, collate, tokenize

log = logging.getLogger("daimlib.feature_cache")
FORMAT = "daim-feature-cache-v1"
MANIFEST = "manifest.json"
_DTYPES = {"fp16": np.float16, "fp32": np.float32}
_CHUNK = 1 << 22


class FeatureCacheError(RuntimeError):
    """A cache folder that is partial, corrupt or of another key."""


# --- keys -----------------------------------------------------------------------------------------


def state_sha256(module: torch.nn.Module) -> str:
    """sha256 over a module's ``state_dict``: names, dtypes, shapes and bytes of every tensor."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def files_sha256(paths) -> str:
    """sha256 over the bytes of ``paths`` in order (each file's own digest, then the list's)."""
    h = hashlib.sha256()
    for p in paths:
        f = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(_CHUNK), b""):
                f.update(chunk)
        h.update(f.digest())
    return h.hexdigest()


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def image_key(model, cfg, image_paths, dtype: str) -> str:
    """The image stream's cache key: weights, image + FDM config, eval transform, image bytes, dtype."""
    return _digest(
        {
            "format": FORMAT,
            "stream": "image",
            "dtype": dtype,
            "weights": state_sha256(model.image_encoder),
            "image": dataclasses.asdict(cfg.image),
            "fdm": [cfg.fdm.image_blocks, cfg.fdm.image_stage_out, cfg.fdm.scale, cfg.fdm.tau],
            "transform": repr(build_transforms(cfg.data, train=False)),
            "images": files_sha256(image_paths),
        }
    )


def text_key(model, cfg, input_ids: torch.Tensor, dtype: str) -> str:
    """The text stream's cache key: weights, text + FDM config, the token ids (tokenizer, captions, max_len)."""
    ids = input_ids.contiguous().numpy()
    return _digest(
        {
            "format": FORMAT,
            "stream": "text",
            "dtype": dtype,
            "weights": state_sha256(model.text_encoder),
            "hidden_states": list(cfg.text.hidden_states),
            "fdm": [list(cfg.fdm.text_layers), cfg.fdm.scale, cfg.fdm.tau],
            "ids": hashlib.sha256(ids.tobytes()).hexdigest(),
            "shape": list(ids.shape),
        }
    )


# --- one stream's folder ------------------------------------------------------------------------------


def _file_sha256(path: Path) -> str:
    return files_sha256([path])


def _write_manifest(folder: Path, key: str, meta: dict) -> None:
    files = sorted(p.name for p in folder.glob("*.npy"))
    manifest = dict(format=FORMAT, key=key, files={n: _file_sha256(folder / n) for n in files}, **meta)
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=1))


def open_stream(folder: str | os.PathLike, key: str, verify: bool = True) -> tuple[dict, dict]:
    """The arrays of a finished cache folder, memory-mapped: ``(arrays by file stem, manifest)``.

    Raises :class:`FeatureCacheError` when the manifest is missing (a partial build), names another key,
    or (``verify``) a file's sha256 differs from the manifest's (a corrupt or truncated file).
    """
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as e:
        raise FeatureCacheError(f"{folder.name}: no readable {MANIFEST} (a partial or damaged cache)") from e
    if manifest.get("format") != FORMAT or manifest.get("key") != key:
        raise FeatureCacheError(f"{folder.name}: the manifest is of another format or key")
    arrays = {}
    for name, digest in manifest["files"].items():
        path = folder / name
        if not path.is_file() or (verify and _file_sha256(path) != digest):
            raise FeatureCacheError(
                f"{folder.name}/{name} is missing or its sha256 differs from the manifest "
                "(a corrupt or partial cache)"
            )
        try:
            arrays[Path(name).stem] = np.load(path, mmap_mode="r")
        except ValueError as e:
            raise FeatureCacheError(f"{folder.name}/{name} is not a readable .npy file") from e
    return arrays, manifest


def _build_stream(folder: Path, key: str, fill, desc: str) -> None:
    """Run ``fill(tmp_folder) -> meta`` in a temporary sibling folder, write the manifest, then rename
    it into place (atomic: a crash leaves no folder that :func:`open_stream` would accept)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.partial-", dir=folder.parent))
    try:
        with torch.no_grad():
            meta = fill(tmp)
        _write_manifest(tmp, key, meta)
        if not folder.exists():  # another process (a DDP rank) may have finished first: keep its copy
            os.replace(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("%s: cached in %s", desc, folder.name)


def _get_stream(cache_dir: Path, stream: str, key: str, fill, desc: str) -> dict:
    folder = cache_dir / f"{stream}-{key[:32]}"
    if folder.exists():
        try:
            return open_stream(folder, key)[0]
        except FeatureCacheError as e:
            log.warning("%s; rebuilding it", e)
            shutil.rmtree(folder, ignore_errors=True)
    _build_stream(folder, key, fill, desc)
    return open_stream(folder, key, verify=False)[0]


def _autocast(device: torch.device, dtype):
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _fill_images(model, cfg, split, device, amp_dtype, dtype, progress):
    enc = model.image_encoder.eval()
    ds = ImageDataset(split, build_transforms(cfg.data, train=False))
    loader = DataLoader(
        ds, batch_size=cfg.train.eval_batch_size, collate_fn=collate, num_workers=cfg.data.num_workers
    )

    def fill(tmp: Path) -> dict:
        arrays, shapes = None, []
        for batch in tqdm(loader, desc="caching image features", disable=not progress, leave=False):
            with _autocast(device, amp_dtype):
                levels = enc(batch["images"].to(device))  # each [b, R_l, C_l]
            if arrays is None:
                shapes = [(len(ds), *lv.shape[1:]) for lv in levels]
                arrays = [
                    np.lib.format.open_memmap(tmp / f"level{i}.npy", mode="w+", dtype=dtype, shape=s)
                    for i, s in enumerate(shapes)
                ]
            idx = batch["img_index"].numpy()
            for arr, lv in zip(arrays, levels):
                arr[idx] = lv.float().cpu().numpy().astype(dtype)
        for arr in arrays or []:
            _check_finite(arr, "image")
            arr.flush()
        return {"n": len(ds), "shapes": [list(s) for s in shapes]}

    return fill


def _fill_text(model, cfg, input_ids, attention_mask, device, amp_dtype, dtype, progress):
    enc = model.text_encoder.eval()
    lengths = attention_mask.sum(1)  # [N]
    offsets = np.zeros(len(lengths) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum(lengths.numpy())
    order = torch.argsort(lengths, descending=True, stable=True)  # similar lengths together: less padding
    bs = cfg.train.eval_batch_size

    def fill(tmp: Path) -> dict:
        np.save(tmp / "offsets.npy", offsets)
        width, arrays = enc.hidden_size, []
        for k in range(len(enc.hidden_states)):
            arrays.append(
                np.lib.format.open_memmap(
                    tmp / f"level{k}.npy", mode="w+", dtype=dtype, shape=(int(offsets[-1]), width)
                )
            )
        for s in tqdm(
            range(0, len(order), bs), desc="caching text features", disable=not progress, leave=False
        ):
            idx = order[s : s + bs]
            lb = int(lengths[idx].max())
            with _autocast(device, amp_dtype):
                levels, _ = enc(input_ids[idx, :lb].to(device), attention_mask[idx, :lb].to(device))
            keep = attention_mask[idx, :lb].bool()  # [b, lb]
            rows = np.concatenate([np.arange(offsets[j], offsets[j + 1]) for j in idx.tolist()])
            for arr, lv in zip(arrays, levels):
                arr[rows] = lv.float().cpu()[keep].numpy().astype(dtype)
        for arr in arrays:
            _check_finite(arr, "text")
            arr.flush()
        return {"n": len(lengths), "width": width}

    return fill


def _check_finite(arr: np.ndarray, stream: str) -> None:
    if not np.isfinite(arr).all():
        raise FeatureCacheError(
            f"the {stream} features hold non-finite values (fp16 overflow?); "
            "set train.feature_cache_dtype=fp32"
        )


# --- the training side ------------------------------------------------------------------------------


class CachedPairs(Dataset):
    """Caption-level training pairs from cached features: ``{image_feats: [R_l, C_l] per level,
    text_feats: [L, H] per level (zeros past the caption), attention_mask [L], img_index, caption_index}``.
    Same length and order as :class:`daimlib.data.CaptionDataset`, so the sampler is shared."""

    def __init__(self, image: dict, text: dict, attention_mask: torch.Tensor, img_of_caption):
        self.img = [image[f"level{i}"] for i in range(len([k for k in image if k.startswith("level")]))]
        self.txt = [text[f"level{i}"] for i in range(len([k for k in text if k.startswith("level")]))]
        self.offsets, self.mask = text["offsets"], attention_mask
        self.img_of_caption = np.asarray(img_of_caption)

    def __len__(self) -> int:
        return len(self.mask)

    def __getstate__(self) -> dict:  # DataLoader workers under "spawn": send file names, not the arrays
        d = dict(self.__dict__)
        d["img"], d["txt"] = [a.filename for a in self.img], [a.filename for a in self.txt]
        d["offsets"] = self.offsets.filename
        return d

    def __setstate__(self, d: dict) -> None:
        d["img"], d["txt"] = [[np.load(f, mmap_mode="r") for f in d[k]] for k in ("img", "txt")]
        d["offsets"] = np.load(d["offsets"], mmap_mode="r")
        self.__dict__.update(d)

    def __getitem__(self, j: int) -> dict:
        i = int(self.img_of_caption[j])
        a, b = int(self.offsets[j]), int(self.offsets[j + 1])
        txt = []
        for arr in self.txt:
            t = torch.zeros(self.mask.shape[1], arr.shape[1])
            t[: b - a] = torch.from_numpy(np.array(arr[a:b], dtype=np.float32))
            txt.append(t)
        return {
            "image_feats": [torch.from_numpy(np.array(arr[i], dtype=np.float32)) for arr in self.img],
            "text_feats": txt,
            "attention_mask": self.mask[j],
            "img_index": i,
            "caption_index": j,
        }


def collate_cached(items: list[dict]) -> dict:
    """Stack :class:`CachedPairs` items into the batch ``DAIM.forward`` takes (features per level)."""
    out = {
        k: [torch.stack([it[k][lv] for it in items]) for lv in range(len(items[0][k]))]
        for k in ("image_feats", "text_feats")
    }
    out["attention_mask"] = torch.stack([it["attention_mask"] for it in items])
    for key in ("img_index", "caption_index"):
        out[key] = torch.tensor([it[key] for it in items], dtype=torch.long)
    return out


def default_cache_dir() -> Path:
    """``<daimlib cache>/features``: ``$DAIM_CACHE_DIR`` or ``runs/cache`` of the checkout (ignored by git)."""
    from .paths import cache_root

    return cache_root() / "features"


def cached_pairs(
    model, cfg, split, tokenizer, device, amp_dtype=None, cache_dir=None, progress: bool = True
) -> CachedPairs:
    """The training split's frozen-encoder features, from the cache or computed into it (both streams)."""
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    dtype_name = cfg.train.feature_cache_dtype
    dtype = _DTYPES[dtype_name]
    ids, mask = tokenize(tokenizer, split.captions, cfg.text.max_len)
    was = model.training
    try:
        image = _get_stream(
            cache_dir,
            "image",
            image_key(model, cfg, split.image_paths, dtype_name),
            _fill_images(model, cfg, split, device, amp_dtype, dtype, progress),
            f"{split.n_images} images",
        )
        text = _get_stream(
            cache_dir,
            "text",
            text_key(model, cfg, ids, dtype_name),
            _fill_text(model, cfg, ids, mask, device, amp_dtype, dtype, progress),
            f"{split.n_captions} captions",
        )
    finally:
        model.train(was)
    return CachedPairs(image, text, mask, split.img_of_caption)


@dataclasses.dataclass
class EpochSource:
    """What one training epoch reads: its dataset and collate (cached features, or images)."""

    dataset: Dataset
    collate: object
    cached: bool


def epoch_source(ctx, frozen: bool) -> EpochSource:
    """The data of an epoch of :func:`daimlib.train.train` under ``train.feature_cache``: the
    training images ("off", or any unfrozen epoch), the evaluation-transformed images
    ("frozen_live"), or the cached features ("frozen", built on first use and kept on ``ctx``)."""
    mode = ctx.cfg.train.feature_cache
    if mode == "off" or not frozen:
        return EpochSource(ctx.dataset, collate, False)
    split = ctx.dataset.split
    if mode == "frozen_live":
        ds = CaptionDataset(
            split, ctx.tokenizer, build_transforms(ctx.cfg.data, train=False), ctx.cfg.text.max_len
        )
        return EpochSource(ds, collate, False)
    if getattr(ctx, "feature_pairs", None) is None:
        ctx.feature_pairs = cached_pairs(
            ctx.model,
            ctx.cfg,
            split,
            ctx.tokenizer,
            ctx.device,
            ctx.amp_dtype,
            progress=ctx.progress and ctx.dd.main,
        )
    return EpochSource(ctx.feature_pairs, collate_cached, True)


def frozen_train_mode(cfg) -> bool:
    """Whether frozen encoders stay in train mode: ``train.frozen_train_mode`` unless a feature cache
    setting ("frozen", "frozen_live") turns dropout and DropPath off while frozen."""
    return cfg.train.frozen_train_mode and cfg.train.feature_cache == "off"
