"""What a valid DAIM configuration is: each field's type, the enumerations, the ranges and the rules
that tie fields together. Checked when a config is built (``DAIMConfig.__post_init__``, presets,
overrides, JSON), in well under a millisecond and before any model code runs, so a misconfiguration
names its key instead of failing inside timm, transformers or the training loop (issue 12, item 6).

The type rules also parse what the command line gives (``--set key=value``): booleans in any common
spelling (true/false, yes/no, on/off, 1/0), integers that are integers (``3``, ``1e3``; not ``3.5``),
JSON lists for tuples, ``none``/``null`` for optional fields; NaN and infinities are refused.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from typing import Any

TRUE_WORDS = ("true", "yes", "on", "1", "t", "y")
FALSE_WORDS = ("false", "no", "off", "0", "f", "n")
NONE_WORDS = ("none", "null")

INITS = ("auto", "pretrained", "random")
CHOICES: dict[str, tuple] = {
    "image.init": INITS,
    "text.init": INITS,
    "similarity.kind": ("scan", "cosine"),
    "similarity.direction": ("t2i", "i2t", "both"),
    "loss.kind": ("triplet", "infonce"),
    "loss.reduction": ("sum", "mean"),
    "loss.neg_stat": ("reference", "mean_offdiag", "hardest"),
    "loss.negatives": ("local", "global"),
    "data.dataset": ("f30k", "coco", "flickr8k", "demo", "any"),
    "data.layout": (None, "demo", "f30k", "coco", "coco_ids", "f8k"),
    "train.optimizer": ("adam", "adamw"),
    "train.amp": ("auto", "bf16", "fp16", "off"),
    "train.select_on": ("r1_sum", "rsum"),
    "train.eval_features": ("auto", "fp32"),
    "train.feature_cache": ("off", "frozen", "frozen_live"),
    "train.feature_cache_dtype": ("fp16", "fp32"),
}

# (lower bound, inclusive?), (upper bound, inclusive?) per numeric key; None = unbounded
RANGES: dict[str, tuple[tuple[float, bool] | None, tuple[float, bool] | None, str]] = {
    "image.img_size": ((8, True), None, "pixels"),
    "image.drop_path_rate": ((0, True), (1, False), "a probability"),
    "text.max_len": ((3, True), None, "[CLS] + at least one token + [SEP]"),
    "fdm.scale": ((0, True), None, "0 turns ContraNorm off"),
    "fdm.tau": ((0, False), None, "a softmax temperature"),
    "similarity.lambda_softmax": ((0, False), None, "a softmax inverse temperature"),
    "similarity.embed_dim": ((1, True), None, "the projection size"),
    "loss.warmup_steps": ((0, True), None, "steps"),
    "loss.warmup_until": ((0, True), (1, False), "a fraction of the equal-scores loss (0 = a fixed warm-up)"),
    "loss.warmup_max_steps": ((0, True), None, "steps (0 = no cap)"),
    "loss.margin": ((0, True), None, "a triplet margin"),
    "loss.temperature": ((0, False), None, "an InfoNCE softmax temperature"),
    "loss.alpha": ((0, False), None, "the MOM prior ratio"),
    "loss.activation_fraction": ((0, True), (1, True), "a fraction of batch rows"),
    "loss.ema": ((0, True), (1, True), "an EMA weight"),
    "loss.lam_max": ((0, False), None, "a margin"),
    "loss.lam_reset": ((0, True), None, "a margin"),
    "data.img_size": ((8, True), None, "pixels"),
    "data.resize": ((8, True), None, "pixels"),
    "data.num_workers": ((0, True), None, "DataLoader worker processes"),
    "train.epochs": ((1, True), None, "epochs"),
    "train.batch_size": ((2, True), None, "a triplet loss needs at least one negative per row"),
    "train.lr": ((0, False), None, "a learning rate"),
    "train.weight_decay": ((0, True), None, "a decay factor"),
    "train.lr_step": ((1, True), None, "epochs"),
    "train.lr_gamma": ((0, False), None, "a decay factor"),
    "train.freeze_epochs": ((0, True), None, "epochs"),
    "train.grad_clip": ((0, False), None, "a gradient norm"),
    "train.seed": ((0, True), (2**32, False), "a seed NumPy accepts"),
    "train.max_steps": ((1, True), None, "steps"),
    "train.max_minutes": ((0, False), None, "minutes"),
    "train.eval_every": ((1, True), None, "epochs between validations (0 would never validate)"),
    "train.eval_batch_size": ((1, True), None, "items per encoding batch"),
    "train.log_every": ((1, True), None, "steps"),
    "train.val_images": ((1, True), None, "images of the val split"),
}

BERT_BASE = {"num_hidden_layers": 12, "max_position_embeddings": 512, "vocab_size": 30522}
SWIN_STAGES = 4  # every timm Swin has four stages


class ConfigError(ValueError):
    """A configuration value has the wrong type, is out of range or contradicts another field."""


# --- one value against its field's type ------------------------------------------------------


def _parse_cli(value: str, hint, key: str):
    """A command-line string -> a Python value for a non-string field."""
    low = value.strip().lower()
    if low in NONE_WORDS and _allows_none(hint):
        return None
    if low.lstrip("+-") in ("nan", "inf", "infinity"):
        refuse_constant(value.strip(), key)
    if _base(hint) is bool:
        if low in TRUE_WORDS:
            return True
        if low in FALSE_WORDS:
            return False
        raise ConfigError(f"{key}: expected a boolean (true/false, yes/no, on/off, 1/0), found {value!r}")
    try:
        return json.loads(value, parse_constant=lambda c: refuse_constant(c, key))
    except json.JSONDecodeError:
        raise ConfigError(f"{key}: cannot read {value!r} as {_describe(hint)}") from None


def refuse_constant(c: str, key: str):
    raise ConfigError(f"{key}: {c} is not allowed; every config number must be finite")


def _allows_none(hint) -> bool:
    return typing.get_origin(hint) in (typing.Union, types.UnionType) and type(None) in typing.get_args(hint)


def _base(hint):
    """``X | None`` -> X; other hints unchanged."""
    if _allows_none(hint):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        return args[0] if len(args) == 1 else hint
    return hint


def _describe(hint) -> str:
    base = _base(hint)
    origin = typing.get_origin(base)
    if origin is tuple:
        return "a list like [1, 2]"
    name = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", dict: "a JSON object"}
    text = name.get(base, name.get(origin, str(base)))
    return text + (" or none" if _allows_none(hint) else "")


def check_finite(value, key: str) -> None:
    """Refuse NaN and infinities anywhere inside ``value`` (numbers, lists, dicts)."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{key}: {value} is not allowed; every config number must be finite")
    if isinstance(value, list | tuple):
        for v in value:
            check_finite(v, key)
    if isinstance(value, dict):
        for k, v in value.items():
            check_finite(v, f"{key}.{k}")


def coerce_value(value: Any, hint, key: str) -> Any:
    """``value`` (from JSON, Python or the command line) as the type ``hint`` of field ``key``."""
    base = _base(hint)
    if isinstance(value, str) and base is str and _allows_none(hint) and value.strip().lower() in NONE_WORDS:
        return None
    if isinstance(value, str) and base is not str:
        value = _parse_cli(value, hint, key)
    check_finite(value, key)
    if value is None:
        if _allows_none(hint):
            return None
        raise ConfigError(f"{key}: expected {_describe(hint)}, found none")
    origin = typing.get_origin(base)
    if base is bool:
        if isinstance(value, bool):
            return value
    elif base is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
    elif base is float:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    elif base is str:
        if isinstance(value, str):
            return value
    elif base is dict or origin is dict:
        if isinstance(value, dict):
            return dict(value)
    elif origin is tuple:
        if isinstance(value, list | tuple):
            return _coerce_tuple(value, base, key)
    else:
        return value  # a type these rules do not know: left as it is
    raise ConfigError(f"{key}: expected {_describe(hint)}, found {type(value).__name__} {value!r}")


def _coerce_tuple(value, hint, key: str) -> tuple:
    args = typing.get_args(hint)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(coerce_value(v, args[0], f"{key}[{i}]") for i, v in enumerate(value))
    if len(value) != len(args):
        raise ConfigError(f"{key}: expected a list of {len(args)} values, found {len(value)}: {list(value)}")
    return tuple(coerce_value(v, a, f"{key}[{i}]") for i, (v, a) in enumerate(zip(value, args)))


# --- the whole config ------------------------------------------------------------------------


def _check_range(key: str, value) -> None:
    if value is None or key not in RANGES:
        return
    low, high, what = RANGES[key]
    bad_low = low is not None and (value < low[0] if low[1] else value <= low[0])
    bad_high = high is not None and (value > high[0] if high[1] else value >= high[0])
    if bad_low or bad_high:
        lo = "" if low is None else f"{'>=' if low[1] else '>'} {low[0]}"
        hi = "" if high is None else f"{'<=' if high[1] else '<'} {high[0]}"
        raise ConfigError(f"{key} must be {' and '.join(s for s in (lo, hi) if s)} ({what}); found {value}")


def check_key(key: str, value) -> None:
    """The rules of one key on its own (choice, range, finite): what ``--set`` checks at parse time."""
    check_finite(value, key)
    _check_choices({key: value})
    if isinstance(value, int | float) and not isinstance(value, bool):
        _check_range(key, value)


def _check_choices(flat: dict) -> None:
    for key, options in CHOICES.items():
        if key in flat and flat[key] not in options:
            shown = "|".join("none" if o is None else str(o) for o in options)
            raise ConfigError(f"{key} must be one of {shown}; found {flat[key]!r}")


def _check_levels(cfg) -> None:
    n = (len(cfg.image.stages), len(cfg.text.hidden_states), len(cfg.similarity.level_weights))
    if 0 in n or len(set(n)) != 1:
        raise ConfigError(
            f"level counts differ or are zero: image.stages has {n[0]}, text.hidden_states {n[1]}, "
            f"similarity.level_weights {n[2]}; all three list the same levels (low, mid, high)"
        )
    if any(w < 0 for w in cfg.similarity.level_weights) or not any(cfg.similarity.level_weights):
        raise ConfigError(
            f"similarity.level_weights must be >= 0 and not all 0; found {cfg.similarity.level_weights}"
        )
    # Swin: four stages (or timm_kwargs' depths); other timm backbones: their feature_info, checked at build
    swin = "swin" in cfg.image.name
    n_stages = len(cfg.image.timm_kwargs.get("depths", [0] * SWIN_STAGES)) if swin else 10**6
    stages = cfg.image.stages
    if list(stages) != sorted(set(stages)) or not all(0 <= s < n_stages for s in stages):
        raise ConfigError(
            f"image.stages must be increasing 0-based stage indices in "
            f"{f'0..{n_stages - 1}' if swin else 'the backbone feature_info'}; found {stages}"
        )


def _check_cache(cfg) -> None:
    tc = cfg.train
    if tc.feature_cache != "off" and tc.freeze_epochs == 0:
        raise ConfigError(
            f"train.feature_cache is {tc.feature_cache!r} but train.freeze_epochs is 0: features are cached only "
            "while the encoders are frozen; set train.freeze_epochs > 0 or train.feature_cache=off"
        )


def _check_image(cfg) -> None:
    ic, dc = cfg.image, cfg.data
    if ic.img_size != dc.img_size:
        raise ConfigError(
            f"image.img_size is {ic.img_size} but data.img_size is {dc.img_size}: the crop the data gives must be "
            f"the size the Swin encoder is built for; set both to one value"
        )
    if dc.resize < dc.img_size:
        raise ConfigError(
            f"data.resize ({dc.resize}) must be >= data.img_size ({dc.img_size}): Resize, then CenterCrop"
        )
    lo, hi = dc.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"data.crop_scale must satisfy 0 < low <= high <= 1; found {dc.crop_scale}")
    if any(s <= 0 for s in dc.std):
        raise ConfigError(f"data.std must be > 0 per channel; found {dc.std}")
    kw = ic.timm_kwargs
    patch = kw.get("patch_size", 4)
    if not isinstance(patch, int) or patch < 1 or ic.img_size < patch:
        raise ConfigError(
            f"image.timm_kwargs.patch_size ({patch}) must be an integer in 1..image.img_size ({ic.img_size})"
        )
    depths, heads = kw.get("depths"), kw.get("num_heads")
    if depths is not None and heads is not None and len(depths) != len(heads):
        raise ConfigError(
            f"image.timm_kwargs: depths {depths} and num_heads {heads} must have one entry per stage"
        )
    if heads is not None and "embed_dim" in kw:
        for i, h in enumerate(heads):
            if (kw["embed_dim"] * 2**i) % h:
                raise ConfigError(
                    f"image.timm_kwargs: stage {i} has width {kw['embed_dim'] * 2**i}, not divisible by num_heads[{i}] = {h}"
                )


def _check_init(cfg) -> None:
    for stream in ("image", "text"):
        sc = getattr(cfg, stream)
        if sc.init == "random" and sc.weights is not None:
            raise ConfigError(
                f"{stream}.weights is set but {stream}.init is 'random': random initial weights load no file; "
                f"unset one of them"
            )


def _check_text(cfg) -> None:
    tc = cfg.text
    arch = dict(BERT_BASE, **(tc.model_kwargs or {}))
    known = tc.model_kwargs is not None or tc.weights is None and tc.name.endswith("bert-base-uncased")
    if known:
        if tc.max_len > arch["max_position_embeddings"]:
            raise ConfigError(
                f"text.max_len ({tc.max_len}) exceeds the text encoder's {arch['max_position_embeddings']} positions "
                f"(max_position_embeddings); lower text.max_len"
            )
        n = arch["num_hidden_layers"]
        if any(not 0 <= k <= n for k in tc.hidden_states):
            raise ConfigError(
                f"text.hidden_states must index 0..{n} (0 = embeddings); found {tc.hidden_states}"
            )
        if any(not 1 <= k <= n for k in cfg.fdm.text_layers):
            raise ConfigError(
                f"fdm.text_layers are 1-based BERT layers in 1..{n}; found {cfg.fdm.text_layers}"
            )
        width, heads = arch.get("hidden_size", 768), arch.get("num_attention_heads", 12)
        if width % heads:
            raise ConfigError(
                f"text.model_kwargs: hidden_size {width} is not divisible by num_attention_heads {heads}"
            )
    if tc.tokenizer == "data" and not (tc.model_kwargs or tc.init == "random"):
        raise ConfigError(
            "text.tokenizer is 'data' (a vocabulary built from the training captions) but the text encoder is "
            "pretrained: its embeddings belong to its own tokenizer. Use text.model_kwargs or text.init=random"
        )


def flatten(d: dict, prefix: str = "") -> dict:
    """Nested config dict -> dotted keys (``timm_kwargs`` / ``model_kwargs`` stay whole)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and k not in ("timm_kwargs", "model_kwargs"):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def validate(cfg, flat: dict | None = None) -> None:
    """Raise :class:`ConfigError` naming the first key that breaks a rule (types are checked on set)."""
    flat = flatten(dataclasses.asdict(cfg)) if flat is None else flat
    _check_choices(flat)
    for key, value in flat.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            _check_range(key, value)
        check_finite(value, key)
    _check_levels(cfg)
    _check_image(cfg)
    _check_init(cfg)
    _check_text(cfg)
    _check_cache(cfg)
