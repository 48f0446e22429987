"""Hugging Face Hub access: the one reachability probe, and ``save_pretrained`` / ``from_pretrained``.

- the reachability probe (:func:`daimlib.runtime.hub_reachable`) is used, not defined, here;
- :class:`DAIMHubMixin` gives :class:`daimlib.model.DAIM` the interface users of timm, open_clip
  and transformers expect, through ``huggingface_hub.ModelHubMixin``:
  ``model.save_pretrained(dir)``, ``DAIM.from_pretrained(dir_or_repo_id)``, ``model.push_to_hub(repo_id)``.
  The folder it writes *is* a kit checkpoint folder (``daimlib.checkpoint``: model.safetensors,
  config.json, meta.json with sha256s, optional tokenizer/) plus a generated model card
  (README.md: preset, data, metrics, margin, provenance). Every existing kit checkpoint folder
  (``runs/<name>/best``, an imported reference checkpoint) loads with ``from_pretrained``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from huggingface_hub import ModelHubMixin

from .checkpoint import (
    CONFIG,
    META,
    TOKENIZER,
    TRAIN_STATE,
    WEIGHTS,
    CheckpointError,
    display_path,
    load_checkpoint_into,
    load_checkpoint_tokenizer,
    load_config,
    load_loss,
    read_meta,
    save_checkpoint,
)
from .runtime import DEFAULT_ENDPOINT, hub_reachable

MODEL_CARD = "README.md"
_KIT_NAMES = {WEIGHTS, CONFIG, META, TRAIN_STATE, TOKENIZER, MODEL_CARD}


def _looks_local(name: str) -> bool:
    """A path rather than a hub repo id (``owner/name``)."""
    return (
        name.startswith((".", "/", "~"))
        or name.count("/") > 1
        or os.sep in name.replace("/", "")
        or (os.altsep is not None and os.altsep in name)
    )


DATASETS = {
    "demo": "daimlib-demo (generated shapes and captions)",
    "f30k": "flickr30k",
    "f8k": "flickr8k",
    "coco": "mscoco",
    "coco_ids": "mscoco",
}
CITATION = """@article{wang_daim,
  title  = {High Feature Distinguishability for Adaptive Image-text Matching with Dual-stream Transformers},
  author = {Wang, Y. and Huang, W. and Xie, Y. and Chen, S. and Peng, W. and Tang, M. and Fang, M. and Zhang, W.}
}"""
_SPLITS = {"metrics": "validation", "test_metrics": "test"}  # meta.json key -> the split its numbers are on
UNKNOWN_DATA = "unknown"  # a preset for any folder (tiny) on a checkpoint that does not record its data


def card_dataset(cfg, meta: dict) -> str:
    """The dataset a checkpoint was trained on, for its card: the preset's (``data.dataset``), else the layout
    training recorded in meta.json (``data``: a preset for any folder, such as ``tiny``), else ``unknown``."""
    name = {"flickr8k": "f8k"}.get(cfg.data.dataset, cfg.data.dataset)  # the config's name -> the layout's
    if name not in DATASETS:
        name = (meta.get("data") or {}).get("layout")
    return DATASETS.get(name, UNKNOWN_DATA)


def _eval_results(cfg, meta: dict):
    """One ``EvalResult`` per recorded metric, each naming its split (the checkpoint's validation
    metrics under ``metrics``; the test split's under ``test_metrics``, when the saver recorded them)."""
    from huggingface_hub import EvalResult

    dataset = card_dataset(cfg, meta)
    out = []
    for key, kind in _SPLITS.items():
        split = cfg.data.val_split if kind == "validation" else cfg.data.test_split
        for name, value in (meta.get(key) or {}).items():
            out.append(
                EvalResult(
                    task_type="image-text-retrieval",
                    dataset_type=dataset,
                    dataset_name=dataset,
                    dataset_split=split,
                    metric_type=name,
                    metric_value=float(value),
                    metric_name=f"{name} ({kind} split)",
                )
            )
    return out


def _metric_rows(cfg, meta: dict) -> list[str]:
    rows = []
    for key, kind in _SPLITS.items():
        split = cfg.data.val_split if kind == "validation" else cfg.data.test_split
        rows += [f"| {k} | {float(v):.2f} | {kind} (`{split}`) |" for k, v in (meta.get(key) or {}).items()]
    if not rows:
        return [
            "No metrics were recorded with this checkpoint; evaluate it with `python -m daimlib evaluate`."
        ]
    note = (
        ""
        if meta.get("test_metrics")
        else "\n\nThe validation metrics are those the checkpoint was selected "
        "on; no test-split metrics were recorded with it (`python -m daimlib evaluate --split test`)."
    )
    return ["| metric | value | split |", "|---|---|---|", *rows, note]


def usage_example(model) -> str:
    """The card's example: load the folder the card sits in, score two images against three captions.
    It runs as written inside the saved folder (``tests/test_hub.py`` executes it)."""
    cfg = model.cfg
    vocab = int(model.text_encoder.bert.config.vocab_size)
    return f"""import torch

from daimlib import DAIM

model = DAIM.from_pretrained(".")  # this folder (run it here), a path to it, or its hub repo id
images = torch.rand(2, 3, {cfg.image.img_size}, {cfg.image.img_size})  # two images, normalised as daimlib.data.build_transforms does
input_ids = torch.randint(1, {vocab}, (3, 12))  # three captions of 12 token ids (daimlib.data.tokenize)
attention_mask = torch.ones_like(input_ids)
with torch.no_grad():
    img = model.encode_image(images)  # one [2, tokens, D] tensor per level
    txt, lengths = model.encode_text(input_ids, attention_mask)
    scores = model.similarity(img, txt, lengths)  # [2 images, 3 captions]
print(tuple(scores.shape))"""


def _provenance(meta: dict) -> list[str]:
    prov = meta.get("provenance") or {}
    if not prov:
        return [f"Saved by daimlib {meta.get('daimlib', '?')} (torch {meta.get('torch', '?')})."]
    lines = [f"- {k}: `{v}`" for k, v in prov.items() if not isinstance(v, dict)]
    return lines + [
        f"- {k}: " + ", ".join(f"{a}=`{b}`" for a, b in v.items())
        for k, v in prov.items()
        if isinstance(v, dict)
    ]


def _encoder(c, kwargs: dict) -> str:
    """What the encoder really is: a pretrained hub model, or that architecture built from ``kwargs`` and
    trained from scratch (the demo presets)."""
    pretrained = c.weights is not None or c.init == "pretrained" or (c.init == "auto" and not kwargs)
    if pretrained:
        return f"`{c.name}` (pretrained weights" + (
            f" from a local file, `{c.weights}`)" if c.weights else ")"
        )
    return f"`{c.name}`'s architecture resized to {kwargs} (random initial weights, trained from scratch)"


def model_card(model, meta: dict | None = None):
    """The model card of a saved DAIM as a ``huggingface_hub.ModelCard`` (its metadata a
    ``ModelCardData``): the real encoder names, the dataset, metrics named by their split, the
    margin, provenance, a usage example that runs as written, limitations and the citation."""
    from huggingface_hub import ModelCard, ModelCardData

    cfg, meta = model.cfg, meta or {}
    loss = getattr(model, "hub_loss", None)
    margin = "not stored" if loss is None else f"{float(loss.margin):.6f}"
    dataset = card_dataset(cfg, meta)
    data = ModelCardData(
        library_name="daimlib",
        license="mit",
        model_name=cfg.name,
        datasets=None if dataset == UNKNOWN_DATA else [dataset],
        tags=["image-text-matching", "cross-modal-retrieval", "daim", "model_hub_mixin"],
        base_model=[
            c.name
            for c, kw in ((cfg.image, cfg.image.timm_kwargs), (cfg.text, cfg.text.model_kwargs))
            if "pretrained weights" in _encoder(c, dict(kw or {})) and not c.weights
        ]
        or None,
        eval_results=_eval_results(cfg, meta) or None,
    )
    body = [
        f"# {cfg.name}: DAIM image-text matching",
        "",
        f"A dual-stream image-text matching model saved by DAIM Kit (`daimlib`), SCAN similarity over "
        f"{len(cfg.similarity.level_weights)} levels, "
        + (
            f"trained on {dataset}."
            if dataset != UNKNOWN_DATA
            else "trained on data this checkpoint does not name."
        ),
        "",
        "| | |",
        "|---|---|",
        f"| preset | `{cfg.name}` |",
        f"| data | {dataset}" + (f" (`{cfg.data.json_name}`)" if cfg.data.json_name else "") + " |",
        f"| image encoder | {_encoder(cfg.image, dict(cfg.image.timm_kwargs))}, {cfg.image.img_size} px |",
        f"| text encoder | {_encoder(cfg.text, dict(cfg.text.model_kwargs or {}))} |",
        f"| FDM (ContraNorm) | blocks {cfg.fdm.image_blocks}, stage outputs {cfg.fdm.image_stage_out}, scale {cfg.fdm.scale} |",
        f"| SCAN | {cfg.similarity.direction}, lambda {cfg.similarity.lambda_softmax:g}, D = {cfg.similarity.embed_dim} |",
        f"| margin | {margin} ({'adaptive, MOM' if cfg.loss.adaptive else 'fixed'}) |",
        f"| parameters | {sum(p.numel() for p in model.parameters()):,} |",
        "",
        "## Metrics",
        "",
        *_metric_rows(cfg, meta),
        "",
        "## Provenance",
        "",
        *_provenance(meta),
        "",
        "## Use",
        "",
        "```python",
        usage_example(model),
        "```",
        "",
        "The folder is a DAIM Kit checkpoint: `python -m daimlib evaluate --checkpoint FOLDER ...` reads it too.",
        "",
        "## Limitations",
        "",
        "- The numbers above are those recorded with this checkpoint, on the split each row names; they are not "
        "the paper's and say nothing about other data.",
        "- The demo presets use tiny encoders trained from scratch on generated shapes: they show the method, "
        "they do not retrieve natural images.",
        "- The kit reproduces DAIM from the abstract, the architecture figures and the reference code; details the "
        "paper alone would settle may differ (docs/daim_spec.md lists the choices).",
        "",
        "## Citation",
        "",
        "```bibtex",
        CITATION,
        "```",
        "",
    ]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body))


def model_card_text(model, meta: dict | None = None) -> str:
    """The model card (README.md) of a saved DAIM, as text (:func:`model_card`)."""
    return str(model_card(model, meta))


class DAIMHubMixin(
    ModelHubMixin, library_name="daimlib", license="mit", tags=["image-text-matching", "daim"]
):
    """``save_pretrained`` / ``from_pretrained`` / ``push_to_hub`` for DAIM (issue 11 item 4).

    ``hub_meta`` (a dict on the instance: "metrics", "provenance", ...) is written into meta.json
    and the model card, and the loss given to :meth:`attach_loss` (a
    :class:`daimlib.losses.MatchingLoss`: the trained margin) into model.safetensors;
    ``from_pretrained`` fills both from the folder it reads (``model.hub_loss``).
    """

    def attach_loss(self, loss):
        """Keep ``loss`` (its margin) with the model for saving, without making it a submodule."""
        object.__setattr__(self, "hub_loss", loss)
        return self

    def _save_pretrained(self, save_directory: Path) -> None:
        save_directory = Path(save_directory)
        foreign = (
            sorted(p.name for p in save_directory.iterdir() if p.name not in _KIT_NAMES)
            if (save_directory.is_dir())
            else []
        )
        if foreign:
            raise FileExistsError(
                f"{display_path(save_directory)} holds files that are not part of a DAIM checkpoint "
                f"({', '.join(foreign[:5])}); save_pretrained replaces the whole folder, so choose an empty "
                "or new folder"
            )
        meta = dict(getattr(self, "hub_meta", None) or {})
        keep = {
            k: v
            for k, v in meta.items()
            if k in ("metrics", "test_metrics", "provenance", "kind", "epoch", "step", "source", "data")
        }
        tokenizer = getattr(self, "tokenizer", None)
        save_checkpoint(
            save_directory,
            self,
            self.cfg,
            meta=keep,
            tokenizer=tokenizer,
            loss=getattr(self, "hub_loss", None),
        )
        saved = read_meta(save_directory)
        (save_directory / MODEL_CARD).write_text(model_card_text(self, saved))

    def push_to_hub(self, repo_id: str, *args: Any, **kwargs: Any):
        """``ModelHubMixin.push_to_hub``, refused at once (nothing created or uploaded) when the hub is
        unreachable or ``HF_HUB_OFFLINE`` is set, with a message naming the endpoint and the repo."""
        if not hub_reachable():
            endpoint = os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT
            raise ConnectionError(
                f"push_to_hub({repo_id!r}): the hub at {endpoint} cannot be reached (or HF_HUB_OFFLINE is set), "
                f"so nothing was created or uploaded to {repo_id!r}. Save it with save_pretrained(FOLDER) and push "
                "from a machine with internet, or set HF_ENDPOINT to a hub mirror you can reach."
            )
        return super().push_to_hub(repo_id, *args, **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any):
        """A DAIM from a kit checkpoint folder or a hub repo id (strictly loaded, eval mode).

        Offline (``hub_reachable()`` False) a repo id is looked up in the local cache only.
        ``device=`` (default "cpu") places the model.
        """
        name = str(pretrained_model_name_or_path)
        if not Path(name).exists() and _looks_local(name):
            raise CheckpointError(
                f"no checkpoint folder at {display_path(name)}: from_pretrained takes a folder written by "
                "save_pretrained / the kit (model.safetensors, config.json, meta.json) or a hub repo id "
                "such as owner/name"
            )
        if not Path(name).is_dir():
            local_only = bool(kwargs.pop("local_files_only", False)) or not hub_reachable()
            pretrained_model_name_or_path = _download(name, local_only, kwargs)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @classmethod
    def _from_pretrained(
        cls,
        *,
        model_id: str,
        revision=None,
        cache_dir=None,
        force_download=False,
        local_files_only=False,
        token=None,
        device: str = "cpu",
        **kwargs: Any,
    ):
        folder = Path(model_id)  # from_pretrained has already fetched a repo id into a local folder
        model = cls.from_config(load_config(folder), pretrained=False)
        load_checkpoint_into(model, folder, device=device, strict=True, read_train_state=False)
        model.hub_meta = read_meta(folder)
        try:  # the trained margin, when the folder holds one (daimlib.losses.MatchingLoss)
            model.attach_loss(load_loss(folder, device=device))
        except CheckpointError:
            model.attach_loss(None)
        model.tokenizer = load_checkpoint_tokenizer(folder)
        return model.eval()


def _download(repo_id: str, local_only: bool, kwargs: dict) -> str:
    """``snapshot_download`` of a hub repo (the cache only when ``local_only``), with an error naming the way out."""
    from huggingface_hub import snapshot_download

    opts = {k: kwargs.pop(k) for k in ("revision", "cache_dir", "force_download", "token") if k in kwargs}
    try:
        return snapshot_download(repo_id=repo_id, local_files_only=local_only, **opts)
    except Exception as e:  # noqa: BLE001 - hub errors come in many types; name the id and the way out
        where = (
            "the local cache (the hub is unreachable or HF_HUB_OFFLINE is set)" if local_only else "the hub"
        )
        raise CheckpointError(
            f"cannot get {repo_id!r} from {where} ({type(e).__name__}). Give a local checkpoint folder, or "
            "download the repository on a machine with internet (huggingface_hub.snapshot_download)."
        ) from e
