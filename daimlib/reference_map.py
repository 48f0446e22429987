"""Reference checkpoint -> daimlib: key mapping and the architecture read from tensor shapes.

The mapping (fixture README section 1, ``daim_keys.tsv`` / ``hat_keys.tsv``; tested against both
full-size manifests row by row):

- ``cross_modal_{image,text}_transform_1 / _2 / (plain)`` -> ``{img,txt}_proj.0 / .1 / .2``
  (Swin stages 2/3/4, BERT layers 4/10/12);
- ``vit_model.layers.i.downsample.*`` -> ``image_encoder.backbone.layers.{i+1}.downsample.*``
  (timm >= 0.9 merges patches at the start of a stage; no permutation);
- ``vit_model.norm_1 / norm_2`` -> ``image_encoder.stage_norms.1 / .2``; other ``vit_model.*`` ->
  ``image_encoder.backbone.*``;
- ``text_transformer.{embeddings,encoder}.*`` -> ``text_encoder.bert.*``;
- dropped: ``vit_model.norm_0`` (computed, never used) and BERT's pooler (frozen, unused);
- buffers timm recomputes (``relative_position_index``, ``attn_mask``, BERT ``position_ids``) are
  compared with the kit model's own and dropped: a difference means another geometry.

The margin is not in the state dict (``hyper_parameters["config"]["margin"]``); the importer sets it.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass

import torch

from .checkpoint import CheckpointError
from .config import DAIMConfig

_PROJ = re.compile(r"cross_modal_(image|text)_transform(_1|_2)?\.(weight|bias)")
_BLOCK_MASK = re.compile(r"vit_model\.layers\.\d+\.blocks\.\d+\.attn_mask")
_DOWNSAMPLE = re.compile(r"vit_model\.layers\.(\d+)\.downsample\.(.+)")
_STAGE_NORM = re.compile(r"vit_model\.norm_(\d+)\.(weight|bias)")
_BUFFER_SUFFIXES = (".relative_position_index", ".position_ids")

DROPPED = {
    "vit_model.norm_0.": "stage-1 LayerNorm: computed by the reference, its output never used",
    "text_transformer.pooler.": "BERT pooler: frozen and unused; daimlib builds BERT without a pooler",
}

# Swin-B patch4 window7 224 and BERT-base: the sizes of the released checkpoints (and presets).
SWIN_B = dict(
    embed_dim=128,
    depths=(2, 2, 18, 2),
    num_heads=(4, 8, 16, 32),
    window_size=7,
    patch_size=4,
    mlp_ratio=4.0,
    img_size=224,
)
BERT_BASE = dict(
    vocab_size=30522,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=512,
    type_vocab_size=2,
)
BERT_HEAD_WIDTH = 64  # every released BERT (base 768/12, large 1024/16)


def reference_to_kit(key: str) -> tuple[str, str]:
    """``(kind, target)`` for one reference key: kind "param", "buffer", "drop" (target = reason) or "unknown"."""
    m = _PROJ.fullmatch(key)
    if m:
        level = {"_1": 0, "_2": 1, None: 2}[m.group(2)]
        return "param", f"{'img' if m.group(1) == 'image' else 'txt'}_proj.{level}.{m.group(3)}"
    for prefix, reason in DROPPED.items():
        if key.startswith(prefix):
            return "drop", reason
    kind = "buffer" if _BLOCK_MASK.fullmatch(key) or key.endswith(_BUFFER_SUFFIXES) else "param"
    m = _STAGE_NORM.fullmatch(key)
    if m:
        return kind, f"image_encoder.stage_norms.{m.group(1)}.{m.group(2)}"
    m = _DOWNSAMPLE.fullmatch(key)
    if m:
        return kind, f"image_encoder.backbone.layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
    if key.startswith("vit_model."):
        return kind, "image_encoder.backbone." + key[len("vit_model.") :]
    if key.startswith(("text_transformer.embeddings.", "text_transformer.encoder.")):
        return kind, "text_encoder.bert." + key[len("text_transformer.") :]
    return "unknown", ""


def check_foreign(sd: dict, where: str) -> None:
    """Refuse state dicts that are not the reference model's (a plain timm Swin, a BERT, a kit model)."""
    prefixes = ("vit_model.", "text_transformer.", "cross_modal_")
    if any(k.startswith(prefixes) for k in sd):
        return
    keys = list(sd)
    if any(k.startswith("image_encoder.") or k.startswith("txt_proj.") for k in keys):
        what = (
            "a daimlib model state dict (load it with daimlib.checkpoint; import-reference takes its folder)"
        )
    elif any(k.startswith(("layers.0.blocks.", "patch_embed.")) for k in keys):
        what = "a plain timm Swin state dict (an image backbone alone)"
    elif any(re.match(r"(bert\.)?embeddings\.word_embeddings\.weight", k) for k in keys):
        what = "a plain BERT state dict (a text encoder alone)"
    else:
        what = "a state dict of some other model"
    raise CheckpointError(
        f"{where} is {what}, not a DAIM/HAT reference checkpoint: none of its {len(keys)} keys (e.g. "
        f"{', '.join(keys[:3])}) starts with vit_model., text_transformer. or cross_modal_. Expected the "
        "Lightning .ckpt the DAIM/HAT code writes (or its state_dict)."
    )


@dataclass
class ReferenceArch:
    """Sizes of both streams and the projections, read from tensor shapes (:func:`infer_arch`)."""

    embed_dim: int
    depths: tuple[int, ...]
    num_heads: tuple[int, ...]
    window_size: int
    patch_size: int
    mlp_ratio: float
    img_size: int
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int
    type_vocab_size: int
    proj_dim: int

    def to_dict(self) -> dict:
        return asdict(self)

    def swin(self) -> dict:
        keys = ("embed_dim", "depths", "num_heads", "window_size", "patch_size", "mlp_ratio", "img_size")
        return {k: getattr(self, k) for k in keys}

    def bert(self) -> dict:
        return {k: getattr(self, k) for k in BERT_BASE}


def _need(sd: dict, key: str) -> torch.Tensor:
    if key not in sd:
        raise CheckpointError(
            f"the checkpoint has no {key!r}, which the reference model always has; the architecture cannot "
            "be read. Is it a complete DAIM/HAT checkpoint?"
        )
    return sd[key]


def _indices(sd: dict, pattern: str) -> list[int]:
    rx = re.compile(pattern)
    return sorted({int(m.group(1)) for k in sd if (m := rx.match(k))})


def _swin_sizes(sd: dict, image_size) -> dict:
    proj = _need(sd, "vit_model.patch_embed.proj.weight")  # [C0, 3, p, p]
    stages = _indices(sd, r"vit_model\.layers\.(\d+)\.")
    if stages != list(range(4)):
        raise CheckpointError(
            f"expected a 4-stage Swin (vit_model.layers.0-3); the checkpoint has stages {stages}"
        )
    depths = tuple(len(_indices(sd, rf"vit_model\.layers\.{i}\.blocks\.(\d+)\.")) for i in stages)
    tables = [_need(sd, f"vit_model.layers.{i}.blocks.0.attn.relative_position_bias_table") for i in stages]
    side = math.isqrt(tables[0].shape[0])  # (2w - 1)^2 rows
    if side * side != tables[0].shape[0] or side % 2 == 0:
        raise CheckpointError(f"relative_position_bias_table has {tables[0].shape[0]} rows, not (2w-1)^2")
    window, patch = (side + 1) // 2, int(proj.shape[-1])
    fc1 = _need(sd, "vit_model.layers.0.blocks.0.mlp.fc1.weight")
    img = None
    for i in stages:  # a shifted block's mask: [windows, w^2, w^2], windows = (img / (p 2^i w))^2
        mask = sd.get(f"vit_model.layers.{i}.blocks.1.attn_mask")
        if mask is not None and mask.dim() == 3:
            img = math.isqrt(mask.shape[0]) * window * patch * 2**i
            break
    if img is None:
        img = int(image_size) if isinstance(image_size, int) else 224
    return dict(
        embed_dim=int(proj.shape[0]),
        depths=depths,
        num_heads=tuple(int(t.shape[1]) for t in tables),
        window_size=window,
        patch_size=patch,
        mlp_ratio=fc1.shape[0] / fc1.shape[1],
        img_size=img,
    )


def _bert_sizes(sd: dict, text_heads: int | None) -> dict:
    p = "text_transformer.embeddings."
    words = _need(sd, p + "word_embeddings.weight")  # [V, H]
    hidden = int(words.shape[1])
    layers = _indices(sd, r"text_transformer\.encoder\.layer\.(\d+)\.")
    if text_heads is None:
        if hidden % BERT_HEAD_WIDTH:
            raise CheckpointError(
                f"BERT's attention-head count is stored in no tensor shape, and hidden size {hidden} is not a "
                f"multiple of {BERT_HEAD_WIDTH} (the head width of every released BERT). Say it: --text-heads N "
                "(import_reference(..., text_heads=N))."
            )
        text_heads = hidden // BERT_HEAD_WIDTH
    if hidden % text_heads:
        raise ValueError(f"text_heads={text_heads} does not divide BERT's hidden size {hidden}")
    return dict(
        vocab_size=int(words.shape[0]),
        hidden_size=hidden,
        num_hidden_layers=len(layers),
        num_attention_heads=int(text_heads),
        intermediate_size=int(
            _need(sd, "text_transformer.encoder.layer.0.intermediate.dense.weight").shape[0]
        ),
        max_position_embeddings=int(_need(sd, p + "position_embeddings.weight").shape[0]),
        type_vocab_size=int(_need(sd, p + "token_type_embeddings.weight").shape[0]),
    )


def infer_arch(sd: dict, text_heads: int | None = None, image_size=None) -> ReferenceArch:
    """Widths, depths, heads, window, patch, image size, vocabulary and positions from tensor shapes.

    Swin heads and window come from ``relative_position_bias_table`` ``[(2w-1)^2, heads]``, the image
    size from a shifted block's ``attn_mask`` (the stored ``image_size`` when no stage has one). BERT's
    head count is in no shape: ``text_heads``, else hidden / 64.
    """
    proj = _need(sd, "cross_modal_image_transform.weight")  # [D, C3]
    return ReferenceArch(
        **_swin_sizes(sd, image_size), **_bert_sizes(sd, text_heads), proj_dim=int(proj.shape[0])
    )


def preset_family(cfg: DAIMConfig) -> str:
    """ "daim" when the config runs ContraNorm in the image stream, else "hat"."""
    on = (cfg.fdm.image_blocks or cfg.fdm.image_stage_out) and cfg.fdm.scale != 0
    return "daim" if on else "hat"


def build_config(
    base: DAIMConfig, arch: ReferenceArch, stored: dict, family_preset_given: bool
) -> DAIMConfig:
    """``base`` (a paper preset) resized to ``arch``; SCAN direction, λ and HAT's fixed margin from ``stored``.

    With an explicit preset the preset's direction and λ win (a warning names any difference).
    """
    import warnings

    cfg = base.replace()
    swin = arch.swin()
    if swin != SWIN_B:
        kw = {"embed_dim": arch.embed_dim, "depths": list(arch.depths), "num_heads": list(arch.num_heads)}
        for k in ("window_size", "patch_size", "mlp_ratio"):
            if swin[k] != SWIN_B[k]:
                kw[k] = swin[k]
        cfg.image.name, cfg.image.timm_kwargs = "swin_base_patch4_window7_224", kw
    cfg.image.img_size = cfg.data.img_size = arch.img_size
    if arch.img_size != SWIN_B["img_size"]:
        cfg.data.resize = round(arch.img_size * 256 / 224)
    if arch.bert() != BERT_BASE:
        cfg.text.model_kwargs = {**arch.bert(), "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    if arch.num_hidden_layers < max(cfg.text.hidden_states):
        raise CheckpointError(
            f"the text encoder has {arch.num_hidden_layers} layers; the reference reads layers "
            f"{list(cfg.text.hidden_states)} (1-based), so this is not a DAIM/HAT checkpoint"
        )
    cfg.similarity.embed_dim = arch.proj_dim
    for key, field in (("direction", "direction"), ("lambda_softmax", "lambda_softmax")):
        value = stored.get(key)
        if value is None:
            continue
        value = float(value) if field == "lambda_softmax" else value
        if not family_preset_given:
            setattr(cfg.similarity, field, value)
        elif getattr(cfg.similarity, field) != value:
            warnings.warn(
                f"the checkpoint was trained with {key}={value!r}; the preset uses "
                f"{getattr(cfg.similarity, field)!r}",
                stacklevel=3,
            )
    margin = stored.get("margin")
    if not cfg.loss.adaptive and isinstance(margin, (int, float)):
        cfg.loss.margin = float(margin)  # HAT: the fixed margin it trained with
    if isinstance(stored.get("max_text_len"), int) and stored["max_text_len"] <= arch.max_position_embeddings:
        cfg.text.max_len = stored["max_text_len"]
    return cfg


def _kit_buffers(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_buffers())


def map_state_dict(sd: dict, model: torch.nn.Module, where: str) -> tuple[dict, dict]:
    """The kit state dict for ``model`` from a reference ``sd`` (without the margin), and counts.

    Every kit parameter must receive exactly one tensor of its shape; recomputed buffers must equal
    the kit's. Missing, extra (unmapped), duplicated, reshaped keys and differing buffers raise one
    :class:`CheckpointError` listing them all.
    """
    own = model.state_dict()
    buffers = _kit_buffers(model)
    state: dict[str, torch.Tensor] = {}
    source: dict[str, str] = {}
    extra, reshaped, buffer_diff, duplicated = [], [], [], []
    n_drop = n_buf = 0
    for key, tensor in sd.items():
        kind, target = reference_to_kit(key)
        if kind == "drop":
            n_drop += 1
        elif kind == "buffer":
            mine = buffers.get(target)
            if mine is None:
                extra.append(key)
            elif tuple(mine.shape) != tuple(tensor.shape) or not torch.equal(mine.to(tensor.dtype), tensor):
                buffer_diff.append(f"{key} {tuple(tensor.shape)} vs kit {tuple(mine.shape)}")
            else:
                n_buf += 1
        elif kind == "unknown" or target not in own or target == "margin_module.margin":
            extra.append(key)
        elif target in state:
            duplicated.append(f"{key} and {source[target]} -> {target}")
        elif tuple(own[target].shape) != tuple(tensor.shape):
            reshaped.append(
                f"{key}: checkpoint {tuple(tensor.shape)} vs kit {target} {tuple(own[target].shape)}"
            )
        else:
            state[target] = tensor.detach().to(own[target].dtype)
            source[target] = key
    missing = sorted(
        k
        for k in own
        if k not in state and k != "margin_module.margin" and not any(r.startswith(f"{k}:") for r in reshaped)
    )
    missing = [m for m in missing if not any(f" vs kit {m} " in r for r in reshaped)]
    problems = []
    for name, items in (
        ("extra keys (not part of the DAIM/HAT model)", extra),
        ("reshaped keys", reshaped),
        ("keys mapped twice", duplicated),
        ("buffers that differ from the kit's geometry (another architecture)", buffer_diff),
        ("missing keys (kit parameters with no tensor in the checkpoint)", missing),
    ):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            problems.append(f"{len(items)} {name}: {shown}")
    if problems:
        raise CheckpointError(
            f"{where} does not match the DAIM/HAT reference model: "
            + "; ".join(problems)
            + ". A renamed key "
            "shows up as one extra and one missing key. The file was written by other code or was edited."
        )
    return state, {"mapped": len(state), "dropped": n_drop, "buffers_checked": n_buf}
