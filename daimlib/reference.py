"""Read checkpoints written by the authors' code (DAIM and its parent HAT): safe loading and provenance.

The reference code trains with PyTorch Lightning 1.3 and saves ``.ckpt`` files with
``ModelCheckpoint`` (field notes section 4; the fixture README in
``tests/fixtures/reference_checkpoints`` describes the layout). Such a file is a zip-format torch
pickle holding ``state_dict`` (579 entries for Swin-B + BERT-base), ``hyper_parameters["config"]``
(the sacred config, with DAIM's adaptive margin written into ``config["margin"]``), epoch, step,
optimizer and scheduler states, and ``callbacks`` keyed by Lightning's ``ModelCheckpoint`` *class*.

Safe loading. Nothing here unpickles arbitrary objects: files are read with
``torch.load(weights_only=True, map_location="cpu")`` (the authors' storages are tagged ``cuda:0``)
and inert stand-ins for exactly the non-tensor globals these files name (:data:`STAND_INS`).
A pickle that names any other global is refused before it is loaded, with the global named.

The key mapping and the architecture read from the tensors are in :mod:`daimlib.reference_map`;
:func:`import_reference` puts it all together and writes a normal kit checkpoint folder.
"""

from __future__ import annotations

import io
import pickle
import pickletools
import re
import warnings
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .checkpoint import (
    META,
    CheckpointError,
    display_path,
    load_checkpoint,
    load_checkpoint_tokenizer,
    load_config,
    read_meta,
    save_checkpoint,
)
from .config import PRESETS, DAIMConfig, load_preset
from .losses import MatchingLoss
from .paths import sha256_file
from .reference_map import (
    ReferenceArch,
    build_config,
    check_foreign,
    infer_arch,
    map_state_dict,
    preset_family,
)


class LightningModelCheckpointStandIn:
    """Stand-in for ``pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint``.

    Lightning 1.3 keys ``ckpt["callbacks"]`` by the callback *class*; the class object is all the
    pickle references (nothing is constructed), so an empty class serves.
    """


class ReadOnlyDictStandIn(dict):
    """Stand-in for sacred's ``ReadOnlyDict`` (pickled as ``cls(plain_dict)``): a plain dict."""


class ReadOnlyListStandIn(list):
    """Stand-in for sacred's ``ReadOnlyList`` (pickled as ``cls(plain_list)``): a plain list."""


#: The non-tensor globals that reference checkpoints name, and their inert stand-ins.
STAND_INS: dict[str, type] = {
    "pytorch_lightning.callbacks.model_checkpoint.ModelCheckpoint": LightningModelCheckpointStandIn,
    "sacred.config.custom_containers.ReadOnlyDict": ReadOnlyDictStandIn,
    "sacred.config.custom_containers.ReadOnlyList": ReadOnlyListStandIn,
}

_ZIP_MAGIC = b"PK\x03\x04"


# --- what the pickle names ---------------------------------------------------------------------


def _pickle_bytes(path: Path) -> bytes:
    """The ``data.pkl`` record of a zip-format torch file (the legacy format is one pickle stream)."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head != _ZIP_MAGIC:
        return path.read_bytes()
    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
            if not names:
                raise CheckpointError(
                    f"{display_path(path)} is a zip archive without a data.pkl record: not a PyTorch "
                    "checkpoint. Expected a Lightning .ckpt or a torch.save file."
                )
            return z.read(names[0])
    except (zipfile.BadZipFile, EOFError, OSError) as e:
        raise CheckpointError(
            f"{display_path(path)} is truncated or damaged ({e}): its zip archive cannot be read. "
            "Download or copy the checkpoint again and compare its sha256 with the published one."
        ) from e


def list_globals(path: str | Path) -> list[str]:
    """Every global (``module.name``) the checkpoint's pickle names, in first-use order, without loading it.

    Reads the pickle opcodes only (``pickletools.genops``); nothing is imported or called.
    """
    path = Path(path)
    _require_file(path)
    data = _pickle_bytes(path)
    found: list[str] = []
    strings: list[str] = []  # recent string pushes, for STACK_GLOBAL (protocol >= 4)
    memo: dict[int, Any] = {}
    try:
        for op, arg, _pos in pickletools.genops(io.BytesIO(data)):
            name = op.name
            if name == "GLOBAL":
                found.append(str(arg).replace(" ", "."))
            elif name in ("SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE"):
                strings.append(arg)
            elif name == "MEMOIZE" and strings:
                memo[len(memo)] = strings[-1]
            elif name in ("BINPUT", "LONG_BINPUT", "PUT") and strings:
                memo[int(arg)] = strings[-1]
            elif name in ("BINGET", "LONG_BINGET", "GET") and isinstance(memo.get(int(arg)), str):
                strings.append(memo[int(arg)])
            elif name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
    except ValueError as e:  # pickletools: truncated or not a pickle
        raise CheckpointError(
            f"{display_path(path)} is not a readable pickle ({e}): the file is truncated or is not a "
            "PyTorch checkpoint. Expected a Lightning .ckpt, a torch.save state dict or a kit folder."
        ) from e
    return list(dict.fromkeys(found))


def _require_file(path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(
            f"{display_path(path)} does not exist: expected a reference checkpoint (.ckpt), a torch.save "
            "state dict or a daimlib checkpoint folder"
        )
    if path.stat().st_size == 0:
        raise CheckpointError(f"{display_path(path)} is empty (0 bytes): download or copy it again.")


def _unsafe_globals(path: Path) -> list[str]:
    """Globals outside torch's weights-only allow-list and outside :data:`STAND_INS`."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(str(path))
    except Exception:  # noqa: BLE001 - damaged archive: fall back to the opcode scan
        unsafe = [g for g in list_globals(path) if not torch_allows(g)]
    return [g for g in unsafe if g not in STAND_INS]


def torch_allows(name: str) -> bool:
    """Whether torch's weights-only unpickler allows the global ``name`` by default."""
    from torch._weights_only_unpickler import _get_allowed_globals

    return name in _get_allowed_globals()


def load_reference_file(path: str | Path) -> dict:
    """The object in a reference ``.ckpt`` / state-dict file, loaded weights-only onto the CPU.

    Raises :class:`CheckpointError` naming the global when the pickle needs one that is neither on
    torch's allow-list nor one of :data:`STAND_INS` (nothing of it runs), and when the file is
    truncated or not a checkpoint.
    """
    path = Path(path)
    _require_file(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head == _ZIP_MAGIC:
        refused = _unsafe_globals(path)
        if refused:
            raise CheckpointError(
                f"refused to load {display_path(path)}: its pickle names the global(s) {', '.join(refused)}, "
                "which are neither tensors, plain containers nor the Lightning/sacred classes that "
                "reference checkpoints hold. Unpickling it could run arbitrary code, so it is not loaded. "
                "Use a checkpoint from the authors' release or re-save its state_dict with plain tensors."
            )
    stand_ins = [(cls, name) for name, cls in STAND_INS.items()]
    try:
        with torch.serialization.safe_globals(stand_ins):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        text = str(e)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found is None and head != _ZIP_MAGIC:
            raise _not_a_checkpoint(
                path, text.strip().splitlines()[0] if text.strip() else type(e).__name__
            ) from e
        what = f"its pickle names the global {found.group(1)}" if found else "its pickle is not weights-only"
        raise CheckpointError(
            f"refused to load {display_path(path)}: {what}, which is neither a tensor, a plain container nor "
            "one of the Lightning/sacred classes reference checkpoints hold. Unpickling it could run "
            "arbitrary code, so it is not loaded."
        ) from e
    except Exception as e:  # noqa: BLE001 - torch raises many types on a damaged file
        if head == _ZIP_MAGIC:
            raise CheckpointError(
                f"{display_path(path)} is truncated or damaged ({str(e).splitlines()[0]}). Download or copy "
                "the checkpoint again and compare its sha256 with the published one."
            ) from e
        raise _not_a_checkpoint(path, str(e).splitlines()[0] if str(e) else type(e).__name__) from e
    if not isinstance(obj, dict):
        raise CheckpointError(
            f"{display_path(path)} holds a {type(obj).__name__}, not a checkpoint dict: expected a Lightning "
            ".ckpt (a dict with 'state_dict') or a state dict of tensors."
        )
    return obj


def _not_a_checkpoint(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"{display_path(path)} is not a PyTorch checkpoint ({why}). Expected a Lightning .ckpt written by "
        "the DAIM/HAT code, a torch.save state dict, or a daimlib checkpoint folder."
    )


# --- the reference's state and what it says about itself -------------------------------------


@dataclass
class ReferenceCheckpoint:
    """A reference checkpoint read from disk: tensors, stored config and provenance."""

    state_dict: dict[str, torch.Tensor]
    modules: list[str] | None  # ``state_dict._metadata`` keys: the pickled module list (None if absent)
    config: dict  # ``hyper_parameters["config"]`` ({} for a bare state dict)
    provenance: dict = field(default_factory=dict)

    @property
    def stored_margin(self) -> float | None:
        m = self.config.get("margin")
        return float(m) if isinstance(m, (int, float)) and not isinstance(m, bool) else None


def read_reference(path: str | Path) -> ReferenceCheckpoint:
    """Load a Lightning ``.ckpt`` or bare state-dict file of the reference code (safely, on the CPU)."""
    path = Path(path)
    obj = load_reference_file(path)
    if "state_dict" in obj and isinstance(obj["state_dict"], dict):
        sd, kind = obj["state_dict"], "lightning"
    elif obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        sd, kind = obj, "state_dict"
    else:
        raise CheckpointError(
            f"{display_path(path)} is a dict with keys {sorted(map(str, obj))[:8]} but no 'state_dict' and "
            "not only tensors: not a reference checkpoint. Expected a Lightning .ckpt or a state dict."
        )
    bad = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise CheckpointError(f"{display_path(path)}: state_dict entries that are not tensors: {bad[:10]}")
    meta = getattr(sd, "_metadata", None)
    hp = obj.get("hyper_parameters") if kind == "lightning" else None
    config = (
        dict(hp.get("config") or {}) if isinstance(hp, dict) and isinstance(hp.get("config"), dict) else {}
    )
    provenance = {
        "source_file": path.name,
        "source_sha256": sha256_file(path),
        "source_bytes": path.stat().st_size,
        "source_format": kind,
        "lightning_version": obj.get("pytorch-lightning_version"),
        "epoch": obj.get("epoch"),
        "global_step": obj.get("global_step"),
        "stored_config": {
            k: config.get(k)
            for k in ("datasets", "direction", "lambda_softmax", "margin", "vit", "tokenizer", "exp_name")
            if k in config
        },
    }
    return ReferenceCheckpoint(
        state_dict=dict(sd),
        modules=list(meta) if meta is not None else None,
        config=config,
        provenance=provenance,
    )


def detect_family(ref: ReferenceCheckpoint) -> tuple[str | None, dict]:
    """``("daim" | "hat" | None, signals)`` from what differs between the two codes (fixture README §1).

    The tensors are identical; the signals are the pickled module list (ContraNorm modules
    ``vit_model.contra`` / ``...norm3`` exist only in DAIM) and the stored config (``direction``
    t2i vs i2t, DAIM's extra keys). The module list wins when present: it is what decides the
    function computed.
    """
    signals: dict[str, str | None] = {"modules": None, "direction": None, "daim_only_keys": None}
    if ref.modules is not None:
        signals["modules"] = "daim" if "vit_model.contra" in ref.modules else "hat"
    direction = ref.config.get("direction")
    if direction in ("t2i", "i2t"):
        signals["direction"] = "daim" if direction == "t2i" else "hat"
    if ref.config:
        extra = {"dropout", "dim_feedforward", "positive_example", "negative_example"}
        signals["daim_only_keys"] = "daim" if extra <= set(ref.config) else "hat"
    votes = [v for v in signals.values() if v is not None]
    family = signals["modules"] or (votes[0] if votes and len(set(votes)) == 1 else None)
    if signals["modules"] is None and len(set(votes)) > 1:
        family = signals["direction"]
    disagree = sorted(k for k, v in signals.items() if v is not None and v != family)
    if family is not None and disagree:
        warnings.warn(
            f"the checkpoint's signals disagree: {signals}; taking {family!r} (the module list decides "
            "whether ContraNorm runs). Pass --preset to choose.",
            stacklevel=2,
        )
    return family, signals


def _dataset(ref: ReferenceCheckpoint) -> str:
    ds = str(ref.config.get("datasets") or "")
    ds = ds[0] if isinstance(ref.config.get("datasets"), list) and ref.config["datasets"] else ds
    if "coco" in str(ds).lower():
        return "coco"
    if "f30k" in str(ds).lower() or "flickr" in str(ds).lower():
        return "f30k"
    warnings.warn(
        "the checkpoint does not say which dataset it was trained on (no config['datasets']); "
        "assuming Flickr30K (preset *_f30k). Pass --preset daim_coco / hat_coco for MSCOCO.",
        stacklevel=3,
    )
    return "f30k"


def choose_preset(ref: ReferenceCheckpoint, preset: str | None, force: bool = False) -> tuple[str, str]:
    """``(preset name, detected family)``: ``daim_*``/``hat_*`` and F30K/COCO from the stored config.

    A preset of the other family is refused unless ``force``: ContraNorm has no weights, so the
    wrong family loads strictly and silently computes another function.
    """
    family, signals = detect_family(ref)
    if preset is None:
        if family is None:
            raise CheckpointError(
                "cannot tell whether this checkpoint is DAIM or HAT: it has neither a stored config "
                "(direction) nor a pickled module list. Pass --preset daim_f30k / hat_f30k / daim_coco / hat_coco."
            )
        return f"{family}_{_dataset(ref)}", family
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; presets are {sorted(PRESETS)}")
    wanted = preset_family(load_preset(preset))
    if family is not None and wanted != family:
        msg = (
            f"the checkpoint is a {family.upper()} checkpoint (signals {signals}) but preset {preset!r} builds "
            f"a {wanted.upper()} model. ContraNorm has no weights, so it would load strictly and compute "
            "another function (the fixture README measures a change of 0.77-0.93 in the similarity)."
        )
        if not force:
            raise CheckpointError(msg + f" Use the {family}_* preset, or pass --force if this is intended.")
        warnings.warn(msg + " Forced.", stacklevel=2)
    return preset, family or wanted


# --- the import ---------------------------------------------------------------------------------


@dataclass
class ImportResult:
    """What :func:`import_reference` built and wrote."""

    model: torch.nn.Module
    loss: torch.nn.Module  # daimlib.losses.MatchingLoss holding the imported margin
    cfg: DAIMConfig
    arch: ReferenceArch | None
    provenance: dict
    report: dict  # counts: mapped, dropped, buffers_checked
    out_dir: Path | None = None
    tokenizer_note: str = ""  # where the stored tokenizer came from, or why none was stored


def find_local_tokenizer(cfg: DAIMConfig, vocab_size: int, stored: dict | None = None) -> tuple[Any, str]:
    """The checkpoint's tokenizer found on this machine without the network, or ``(None, why)``.

    Tries the stored config's ``tokenizer``, then ``text.tokenizer``, ``text.weights`` and
    ``text.name`` of ``cfg`` (``bert-base-uncased`` for the paper presets): a folder, or a hub id
    already in the local Hugging Face cache (``local_files_only=True``; nothing is downloaded). A
    tokenizer with more entries than the checkpoint's ``vocab_size`` embeddings is passed over.
    Returns ``(tokenizer, "<source> (found locally)")``.
    """
    from transformers import AutoTokenizer

    tried, seen = [], set()
    for source in ((stored or {}).get("tokenizer"), cfg.text.tokenizer, cfg.text.weights, cfg.text.name):
        if not isinstance(source, str) or not source or source in ("data", "demo") or source in seen:
            continue
        seen.add(source)
        try:
            tok = AutoTokenizer.from_pretrained(source, local_files_only=True)
        except (OSError, ValueError, KeyError) as e:
            tried.append(f"{source}: not found locally ({type(e).__name__})")
            continue
        if len(tok) > vocab_size:
            tried.append(
                f"{source}: {len(tok):,} entries, more than the checkpoint's {vocab_size:,} embeddings"
            )
            continue
        return tok, f"{source} (found locally)"
    return None, "; ".join(tried) or "the checkpoint names no tokenizer"


def import_reference(
    path: str | Path,
    out: str | Path | None = None,
    preset: str | None = None,
    force: bool = False,
    text_heads: int | None = None,
    tokenizer: Any = "auto",
) -> ImportResult:
    """Import a DAIM/HAT reference checkpoint (or a kit folder) as a daimlib model; write it to ``out``.

    Args:
        path: a Lightning ``.ckpt``, a ``torch.save`` state dict of the reference model, or a
            daimlib checkpoint folder.
        out: checkpoint folder to write (``save_checkpoint`` layout, provenance in meta.json), or
            None to only build the model.
        preset: overrides the family/dataset read from the checkpoint (a preset of the other family
            needs ``force``).
        text_heads: BERT's attention-head count, the one size no tensor shape stores; default
            hidden / 64 (every released BERT).
        tokenizer: an HF tokenizer to store in the folder; ``"auto"`` (default) stores the one
            :func:`find_local_tokenizer` finds on this machine, so that the folder evaluates
            offline; ``None`` stores none. ``ImportResult.tokenizer_note`` says which.

    Returns an :class:`ImportResult`; the model is strictly loaded and in eval mode.
    """
    path = Path(path)
    if out is not None:
        _check_out(Path(out))
    if path.is_dir():  # a kit folder: "auto" keeps its own tokenizer, when it has one
        own = load_checkpoint_tokenizer(path) if (path / META).is_file() else None
        return _import_kit_folder(path, out, preset, own if isinstance(tokenizer, str) else tokenizer)
    ref = read_reference(path)
    check_foreign(ref.state_dict, display_path(path))
    preset_name, family = choose_preset(ref, preset, force)
    arch = infer_arch(ref.state_dict, text_heads=text_heads, image_size=ref.config.get("image_size"))
    cfg = build_config(load_preset(preset_name), arch, ref.config, family_preset_given=preset is not None)
    from .model import DAIM  # the model module is heavy; the importer's readers do not need it

    model = DAIM.from_config(cfg, pretrained=False)
    state, report = map_state_dict(ref.state_dict, model, display_path(path))
    model.load_state_dict(state, strict=True)  # map_state_dict has checked every key and shape
    model.eval()
    margin = ref.stored_margin if ref.stored_margin is not None else float(cfg.loss.margin)
    loss = MatchingLoss.from_config(cfg.loss)
    loss.margin_module.margin.fill_(margin)  # not in the state dict: config["margin"] (fixture README §1)
    provenance = {
        **ref.provenance,
        "family": family,
        "preset": preset_name,
        "margin": margin,
        "imported_with": "daimlib.reference.import_reference",
    }
    tokenizer, note = _choose_tokenizer(tokenizer, cfg, arch.vocab_size, ref.config)
    result = ImportResult(
        model=model, loss=loss, cfg=cfg, arch=arch, provenance=provenance, report=report, tokenizer_note=note
    )
    return _saved(result, out, tokenizer, "reference")


def _choose_tokenizer(tokenizer: Any, cfg: DAIMConfig, vocab_size: int, stored: dict) -> tuple[Any, str]:
    """``(tokenizer to store or None, note)``: the given one (checked against the embeddings), the
    one found locally for ``"auto"`` (:func:`find_local_tokenizer`), or none."""
    if tokenizer is None:
        return None, "none stored (not asked for)"
    if isinstance(tokenizer, str) and tokenizer == "auto":
        found, where = find_local_tokenizer(cfg, vocab_size, stored)
        return (found, f"stored from {where}") if found is not None else (None, f"none stored: {where}")
    if len(tokenizer) > vocab_size:
        raise ValueError(
            f"the tokenizer has {len(tokenizer):,} entries but the checkpoint's text encoder {vocab_size:,} "
            "embeddings: it is not this checkpoint's tokenizer (the released checkpoints use bert-base-uncased's); "
            "pass another --tokenizer DIR"
        )
    return tokenizer, "stored (given)"


def _saved(result: ImportResult, out, tokenizer, source: str) -> ImportResult:
    """``result``, written as a kit checkpoint folder to ``out`` first when one is given."""
    if out is not None:
        meta = {"provenance": result.provenance, "source": source}
        result.out_dir = save_checkpoint(
            out, result.model, result.cfg, meta=meta, tokenizer=tokenizer, loss=result.loss
        )
    return result


def _check_out(out: Path) -> None:
    """Refuse an ``out`` whose contents the import would replace but did not write (issue 13)."""
    if not out.exists():
        return
    if not out.is_dir():
        raise FileExistsError(f"--out {display_path(out)} is a file; give a new folder for the checkpoint")
    if not any(out.iterdir()):
        return
    try:
        meta = read_meta(out)
    except CheckpointError:
        meta = None
    if meta is None or meta.get("source") not in ("reference", "daimlib"):
        what = (
            "a checkpoint this kit did not import"
            if meta is not None
            else "files that are not a kit checkpoint"
        )
        raise FileExistsError(
            f"--out {display_path(out)} already holds {what}; importing would replace the whole folder. "
            "Choose a new folder (an earlier import into the same folder is replaced)."
        )


def _import_kit_folder(path: Path, out, preset, tokenizer) -> ImportResult:
    if not (path / META).is_file():
        raise CheckpointError(
            f"{display_path(path)} is a folder but not a daimlib checkpoint (no {META}); expected a reference "
            ".ckpt file or a kit checkpoint folder"
        )
    expect = load_preset(preset) if preset else None
    loss = MatchingLoss.from_config(load_config(path).loss)
    model, cfg, _ = load_checkpoint(path, strict=True, loss=loss, read_train_state=False)
    if expect is not None and preset_family(expect) != preset_family(cfg):
        raise CheckpointError(
            f"{display_path(path)} holds a {preset_family(cfg).upper()} model; preset {preset!r} is "
            f"{preset_family(expect).upper()}. A kit folder carries its own config: omit --preset."
        )
    provenance = {
        "source_file": path.name,
        "source_format": "daimlib",
        "source_meta_sha256": sha256_file(path / META),
    }
    model.eval()
    result = ImportResult(model=model, loss=loss, cfg=cfg, arch=None, provenance=provenance, report={})
    return _saved(result, out, tokenizer, "daimlib")
