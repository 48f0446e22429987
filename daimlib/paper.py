"""The paper's table from one command: ``python -m daimlib evaluate --protocol paper``.

One encoding of the test split, then every row the dataset admits (spec section 7, field notes
section 3): Flickr30K gives F30K 1K; MSCOCO gives COCO 1K (the mean over the 5 folds of 1,000
images) and COCO 5K, both from the *same* 5,000 x 25,000 matrix (the 1K folds are its diagonal
blocks); Flickr8k gives Flickr8k 1K; the demo data its whole test split. A split of another size
keeps the protocol's rule with its real sizes in the label (:func:`daimlib.evaluate.protocol_label`)
and stands without published rows.

The result is the paper-format table (:func:`paper_table`): per benchmark, the verified published
rows of :mod:`daimlib.published` with their sources, then the measured row with all six recalls
and RSUM; written as CSV, Markdown, LaTeX and JSON (:func:`write_paper`) with notes saying the
protocol, the batch sizes, the GPU count and where the checkpoint came from. Under ``torchrun``
the encoding and the scoring are split across the ranks (:func:`daimlib.evaluate.evaluate`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist

from daimlib.checkpoint import CheckpointError, load_train_state, read_meta
from daimlib.evaluate import (
    PROTOCOL_NAMES,
    evaluate,
    protocol_label,
    protocol_problem,
    split_identity,
)
from daimlib.paths import display_path, output_root, repo_root
from daimlib.published import BENCHMARKS, published_rows
from daimlib.tables import PAPER_COLUMNS, latex_escape, to_latex, to_markdown

# the rows each dataset layout admits (daimlib.data.LAYOUTS); any other data: its whole test split
PAPER_ROWS = {
    "f30k": ("f30k",),
    "coco": ("coco1k", "coco5k"),
    "coco_ids": ("coco1k", "coco5k"),
    "f8k": ("f8k",),
}
METRICS = list(PAPER_COLUMNS.values())  # i2t R@1 R@5 R@10, t2i R@1 R@5 R@10, RSUM
COLUMNS = ["method", *METRICS, "source"]
MEASURED = "measured here"


def paper_protocols(layout: str | None) -> tuple[str, ...]:
    """The protocols of the paper's table that a dataset of ``layout`` admits (:data:`PAPER_ROWS`)."""
    return PAPER_ROWS.get(layout or "", ("demo",))


def paper_table(per: Mapping[str, Mapping], n_images: int, n_captions: int, name: str) -> pd.DataFrame:
    """The paper-format table: index ``benchmark``, columns ``method``, the paper's seven metric
    columns and ``source``, one block per protocol of ``per`` (``{protocol: recall metrics}``).

    A block of a published benchmark measured at its size (F30K 1K on 1,000 test images, COCO 1K/5K
    on 5,000) holds the verified published rows first (:func:`daimlib.published.published_rows`;
    they give R@1 both ways and RSUM, the other cells are NaN = not stated), then ``name``'s row.
    Any other block (Flickr8k, the demo, a split of another size) holds the measured row alone,
    labelled with its real sizes. Values at full precision; the writers round.
    """
    rows = []
    for protocol, m in per.items():
        label = protocol_label(protocol, n_images, n_captions)
        if protocol in BENCHMARKS and protocol_problem(protocol, n_images) is None:
            pub = published_rows(protocol).dropna(subset=["RSUM"])
            for method, r in pub.iterrows():
                rows.append(
                    {
                        "benchmark": label,
                        "method": method,
                        "i2t R@1": r["R@1 i2t"],
                        "t2i R@1": r["R@1 t2i"],
                        "RSUM": r["RSUM"],
                        "source": r["source"],
                    }
                )
        measured = {PAPER_COLUMNS[k]: float(m[k]) for k in PAPER_COLUMNS}
        rows.append({"benchmark": label, "method": name, **measured, "source": MEASURED})
    df = pd.DataFrame(rows, columns=["benchmark", *COLUMNS]).set_index("benchmark")
    return df.astype(dict.fromkeys(METRICS, float))


# --- where the checkpoint came from, and the notes ----------------------------------------------


def _training_world(folder: Path) -> int | None:
    """Processes that trained a kit run: its run.json, else the ``world_size`` saved in ``last/``."""
    run = folder.parent / "run.json"
    if run.is_file():
        try:
            rec = json.loads(run.read_text())
        except json.JSONDecodeError:
            rec = {}
        for where in (rec, rec.get("distributed") or {}):
            if isinstance(where, dict) and isinstance(where.get("world_size"), int):
                return where["world_size"]
    for cand in (folder, folder.parent / "last"):
        try:
            state = load_train_state(cand) if (cand / "meta.json").is_file() else None
        except CheckpointError:
            state = None
        if state and isinstance(state.get("world_size"), int):
            return int(state["world_size"])
    return None


def checkpoint_provenance(folder: str | os.PathLike, cfg) -> dict:
    """Where a checkpoint folder came from, for the table's notes: imported from the authors'
    ``.ckpt`` (file, sha256, Lightning epoch and step) or trained by the kit (epoch, step, training
    batch per process and the processes that trained it, when recorded)."""
    folder = Path(folder)
    meta = read_meta(folder)
    out: dict = {"checkpoint": display_path(folder), "preset": cfg.name}
    prov = meta.get("provenance") or {}
    if meta.get("source") == "reference":
        keep = (
            "source_file",
            "source_sha256",
            "lightning_version",
            "epoch",
            "global_step",
            "family",
            "margin",
        )
        out["imported"] = {k: prov.get(k) for k in keep}
        return out
    out.update({k: meta[k] for k in ("kind", "epoch", "step", "select_on") if k in meta})
    out["train_batch_per_process"] = int(cfg.train.batch_size)
    world = _training_world(folder)
    out["train_processes"] = world
    if world is not None:
        out["train_global_batch"] = world * int(cfg.train.batch_size)
    return out


def evaluation_context(device, batch_size: int, features: str, ties: str, seconds: Mapping) -> dict:
    """How the evaluation ran: processes, GPUs, encoding batch, feature precision, tie rule, seconds."""
    device = torch.device(device)
    world = dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1
    gpus = world if device.type == "cuda" else 0
    out = {
        "processes": world,
        "device": device.type,
        "gpus": gpus,
        "encode_batch_per_process": int(batch_size),
        "features": features,
        "ties": ties,
        "seconds": {k: round(float(v), 3) for k, v in seconds.items()},
    }
    if gpus:
        out["gpu_name"] = torch.cuda.get_device_name(device)
    return out


def _checkpoint_note(prov: Mapping) -> str:
    where = f"checkpoint {prov['checkpoint']} (preset {prov['preset']})"
    imp = prov.get("imported")
    if imp:
        sha = str(imp.get("source_sha256") or "?")[:16]
        return (
            f"{where}: imported from the authors' {imp.get('source_file')} (sha256 {sha}..., Lightning "
            f"{imp.get('lightning_version')}, epoch {imp.get('epoch')}, step {imp.get('global_step')}, "
            f"{str(imp.get('family')).upper()}); its training batch and GPU count are not recorded in the file"
        )
    world = prov.get("train_processes")
    trained = (
        f"trained at batch {prov['train_batch_per_process']} per process x {world} process(es) = global batch "
        f"{prov['train_global_batch']}"
        if world
        else f"trained at batch {prov['train_batch_per_process']} per process (process count not recorded)"
    )
    when = ", ".join(f"{k} {prov[k]}" for k in ("kind", "epoch", "step") if k in prov)
    return f"{where}: {when}; {trained}"


def paper_notes(
    split_name: str, sizes: Mapping, protocols, ctx: Mapping, prov: Mapping | None, data: Mapping
) -> list[str]:
    """The table's notes: protocol, evaluation (processes, GPUs, batch, seconds), checkpoint, data, sources."""
    rows = ", ".join(
        PROTOCOL_NAMES[p] if protocol_problem(p, sizes["n_images"]) is None else protocol_label(p, **sizes)
        for p in protocols
    )
    sec = ctx["seconds"]
    folds = ""
    if "coco1k" in protocols:  # the 1K folds are diagonal blocks of the one matrix
        fold = sizes["n_images"] // 5
        folds = (
            f"; the coco1k row is the mean over 5 folds of {fold:,} images (their diagonal blocks of the "
            f"one {sizes['n_images']:,}-image matrix)"
        )
    gpu = f"{ctx['gpus']} GPU(s) ({ctx['gpu_name']})" if ctx["gpus"] else "no GPU"
    notes = [
        f"protocol: evaluate --protocol paper; one encoding of the {split_name} split ({sizes['n_images']:,} images x "
        f"{sizes['n_captions']:,} captions), then {rows}{folds}; ties {ctx['ties']} (a negative tied with the "
        "positive ranks above it)",
        f"evaluation: {ctx['processes']} process(es) on {ctx['device']}, {gpu}; encoding batch "
        f"{ctx['encode_batch_per_process']} per process; features {ctx['features']}; {sec['encode']:.1f} s encoding, "
        f"{sec['score']:.1f} s scoring, {sec['rank']:.1f} s ranking",
    ]
    if prov:
        notes.append(_checkpoint_note(prov))
    sha = data.get("annotations_sha256")
    notes.append(
        f"data: {data.get('layout')} layout"
        + (f", {data.get('annotations')} sha256 {sha[:16]}..." if sha else "")
    )
    notes.append(
        "published rows: daimlib.published (verified, each with its source; '-' = not stated in any "
        "source found); the DAIM and HAT papers' tables are not public, so neither has a row"
    )
    if any(protocol_problem(p, sizes["n_images"]) for p in protocols):
        notes.append(
            "a row labelled 'not ...' is the protocol's rule on a split of another size: it is not "
            "comparable with published numbers and stands without them"
        )
    return notes


# --- torchrun ---------------------------------------------------------------------------------------


def join_process_group(device: str | None = None) -> tuple[torch.device, int, bool]:
    """``(device, rank, joined)`` for ``evaluate``: under ``torchrun`` (``WORLD_SIZE`` > 1) join the
    process group its environment describes (NCCL with one GPU per process, gloo on CPUs), so that
    the ranks split the encoding and the scoring; otherwise ``(device, 0, False)``."""
    from daimlib.runtime import torch_device

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or dist.is_initialized():
        rank = dist.get_rank() if dist.is_initialized() else 0
        return torch_device(device or "auto"), rank, False
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    if use_cuda:
        torch.cuda.set_device(local_rank)
    return torch.device("cuda", local_rank) if use_cuda else torch.device("cpu"), dist.get_rank(), True


def leave_process_group(joined: bool) -> None:
    """Leave the process group :func:`join_process_group` joined (no-op when it joined none)."""
    if joined and dist.is_initialized():
        dist.destroy_process_group()


# --- one call, and the files ----------------------------------------------------------------------


@dataclass
class PaperResult:
    """What :func:`evaluate_paper` measured: the paper-format table, the metrics per protocol, the notes
    and the JSON record; ``sims`` the ``[n_img, n_cap]`` matrix when asked for."""

    table: pd.DataFrame
    metrics: dict[str, dict[str, float]]
    notes: list[str]
    record: dict
    sims: np.ndarray | None = field(default=None, repr=False)


def evaluate_paper(
    model,
    split,
    tokenizer,
    cfg,
    name: str,
    checkpoint=None,
    device=None,
    batch_size=None,
    ties: str = "pessimistic",
    features: str | None = None,
    progress: bool = True,
    split_name: str = "test",
    return_sims: bool = False,
) -> PaperResult:
    """Every row of the paper's table that ``split``'s dataset admits, from one encoding
    (:func:`paper_protocols`, :func:`daimlib.evaluate.evaluate`), as :func:`paper_table` with notes.

    ``name``: the measured rows' method name; ``checkpoint``: its folder (provenance in the notes).
    """
    protocols = paper_protocols(getattr(split, "layout", None))
    device = torch.device(device) if device is not None else next(model.parameters()).device
    batch_size = batch_size or cfg.train.eval_batch_size
    features = features or getattr(cfg.train, "eval_features", "auto")
    metrics, df, sims = evaluate(
        model,
        split,
        tokenizer,
        cfg,
        protocol=protocols,
        device=device,
        batch_size=batch_size,
        progress=progress,
        ties=ties,
        features=features,
        return_sims=True,
    )
    per = {protocols[0]: metrics} if len(protocols) == 1 else metrics
    per = {p: {k: float(v) for k, v in m.items()} for p, m in per.items()}
    sizes = {"n_images": int(split.n_images), "n_captions": int(split.n_captions)}
    table = paper_table(per, name=name, **sizes)
    ctx = evaluation_context(device, batch_size, features, ties, df.attrs["seconds"])
    prov = checkpoint_provenance(checkpoint, cfg) if checkpoint is not None else None
    data = split_identity(split)
    notes = paper_notes(split_name, sizes, protocols, ctx, prov, data)
    record = {
        "protocol": "paper",
        "protocols": list(protocols),
        "split": split_name,
        **sizes,
        "paper_protocol": df.attrs["paper_protocol"],
        "metrics": per,
        "evaluation": ctx,
        "checkpoint": prov,
        "data": data,
        "notes": notes,
        "table": json.loads(table.reset_index().to_json(orient="records")),
    }
    return PaperResult(
        table=table, metrics=per, notes=notes, record=record, sims=sims if return_sims else None
    )


def paper_stem(checkpoint: str | os.PathLike, part: str) -> Path:
    """Where the files of ``evaluate --protocol paper`` go: ``eval_<checkpoint>_<part>`` beside the
    checkpoint folder, except for a shipped model under the repository's tracked ``models/``, whose
    results go to the ignored ``<output root>/runs/eval/models/<model>/`` (the clone stays clean)."""
    ckpt = Path(checkpoint).resolve()
    name = f"eval_{ckpt.name}_{part}"
    try:
        shipped = (repo_root() / "models").resolve()
        inside = ckpt.parent.relative_to(shipped)
    except (FileNotFoundError, ValueError):
        return ckpt.parent / name
    return output_root() / "runs" / "eval" / "models" / inside / name


def write_paper(
    result: PaperResult, stem: str | os.PathLike, decimals: int = 1, caption: str | None = None
) -> list[Path]:
    """Write ``<stem>.csv`` (the table at full precision), ``.md`` (the table rounded, then the notes),
    ``.tex`` (a booktabs table float, the notes under it) and ``.json`` (the record: metrics, notes,
    evaluation, checkpoint, data and the table's rows). Returns the files written."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.parent / f"{stem.name}.{ext}" for ext in ("csv", "md", "tex", "json")]
    result.table.to_csv(paths[0])
    notes_md = "".join(f"- {n}\n" for n in result.notes)
    paths[1].write_text(to_markdown(result.table, decimals) + "\nNotes:\n\n" + notes_md)
    tex = to_latex(result.table, decimals, caption=caption or "Image-text retrieval, paper protocol")
    notes_tex = "\\par\\smallskip{\\footnotesize " + "; ".join(latex_escape(n) for n in result.notes) + "}\n"
    paths[2].write_text(tex.replace("\\end{table}", notes_tex + "\\end{table}"))
    paths[3].write_text(json.dumps(result.record, indent=2) + "\n")
    return paths
