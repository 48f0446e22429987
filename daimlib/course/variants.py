"""DAIM's modules switched on one at a time: the variants of a preset, as dotted-key overrides.

The one definition of the FDM / MOM / SCAN-direction switches that the ablations
(``python -m experiments ablate``) and the notebooks' three-arm comparison share. The baseline
keeps the preset's similarity direction (t2i for ``daim_*`` and ``demo``), so that each variant
differs from the baseline in exactly one thing.

============  =================================================================================
variant       what changes, relative to the preset
============  =================================================================================
baseline      no FDM anywhere, fixed margin (``loss.adaptive=False``)
hat           the baseline with image-to-text SCAN (HAT's direction)
fdm           + FDM as the reference code places it (every Swin block and the used stage outputs)
mom           + MOM (adaptive margin), no FDM
daim          + FDM + MOM: the method as the reference implements it
fdm_text      FDM on the text side only, after every BERT layer up to the highest used hidden
              state (the paper figure's placement, spec section 10 B1); fixed margin
high_only     ``daim`` scored on the high level only (``similarity.level_weights=(0, 0, 1)``)
no_low        ``daim`` without the low level (weights ``(0, 1, 1)``): leave one level out
no_mid        ``daim`` without the mid level (weights ``(1, 0, 1)``)
no_high       ``daim`` without the high level (weights ``(1, 1, 0)``)
dual          the baseline as a dual encoder: pooled global embeddings scored by a cosine
              (``similarity.kind=cosine``), trained with the symmetric InfoNCE (``loss.kind=infonce``)
============  =================================================================================
"""

from __future__ import annotations

from typing import Any

from daimlib.config import DAIMConfig, load_preset

FDM_OFF = {"fdm.image_blocks": False, "fdm.image_stage_out": False, "fdm.text_layers": ()}
FDM_IMAGE = {"fdm.image_blocks": True, "fdm.image_stage_out": True, "fdm.text_layers": ()}

VARIANTS: dict[str, str] = {
    "baseline": "no FDM, fixed margin (the preset's similarity direction kept)",
    "hat": "the baseline with image-to-text SCAN (HAT's direction): no FDM, fixed margin",
    "fdm": "+ FDM in the image encoder (reference placement), fixed margin",
    "mom": "+ MOM adaptive margin, no FDM",
    "daim": "+ FDM + MOM (the reference method)",
    "fdm_text": "FDM after every text layer instead of the image encoder, fixed margin",
    "high_only": "DAIM scored on the high level only (level weights 0, 0, 1)",
    "no_low": "DAIM without the low level (level weights 0, 1, 1)",
    "no_mid": "DAIM without the mid level (level weights 1, 0, 1)",
    "no_high": "DAIM without the high level (level weights 1, 1, 0)",
    "dual": "the baseline as a dual encoder: cosine of pooled global embeddings, symmetric InfoNCE",
}
_LEAVE_OUT = {"no_low": 0, "no_mid": 1, "no_high": 2}
_SWITCHES = {
    "baseline": {**FDM_OFF, "loss.adaptive": False},
    "hat": {**FDM_OFF, "loss.adaptive": False, "similarity.direction": "i2t"},
    "fdm": {**FDM_IMAGE, "loss.adaptive": False},
    "mom": {**FDM_OFF, "loss.adaptive": True},
    "daim": {**FDM_IMAGE, "loss.adaptive": True},
    "dual": {**FDM_OFF, "loss.adaptive": False, "similarity.kind": "cosine", "loss.kind": "infonce"},
}


def variant_overrides(variant: str, cfg: DAIMConfig) -> dict[str, Any]:
    """The dotted-key overrides that turn ``cfg`` (a preset) into ``variant`` (see the module table)."""
    if variant in _SWITCHES:
        return dict(_SWITCHES[variant])
    if variant == "fdm_text":
        n_layers = max(cfg.text.hidden_states)  # layers above the highest used state cannot change the levels
        return {**FDM_OFF, "fdm.text_layers": tuple(range(1, n_layers + 1)), "loss.adaptive": False}
    if variant == "high_only":
        n_levels = len(cfg.similarity.level_weights)  # any number of levels: all weight on the highest
        return {**_SWITCHES["daim"], "similarity.level_weights": (0.0,) * (n_levels - 1) + (1.0,)}
    if variant in _LEAVE_OUT:
        weights = list(cfg.similarity.level_weights)
        if len(weights) != 3:
            raise ValueError(
                f"{variant} assumes three levels (low, mid, high); this preset has {len(weights)}"
            )
        weights[_LEAVE_OUT[variant]] = 0.0
        return {**_SWITCHES["daim"], "similarity.level_weights": tuple(weights)}
    raise ValueError(f"unknown ablation variant {variant!r}; variants are {list(VARIANTS)}")


def variant_config(preset: str, variant: str, seed: int = 0, **overrides: Any) -> DAIMConfig:
    """``preset`` with ``overrides`` (e.g. short budgets), then the variant's switches and the seed."""
    cfg = load_preset(preset, **overrides)
    cfg = cfg.replace(**variant_overrides(variant, cfg), **{"train.seed": int(seed)})
    cfg.name = f"{cfg.name}-{variant}-seed{seed}"
    return cfg
