"""One GPU check of the paper path, in at most 8 minutes on one H100; one table.

Rows (paper size: the ``daim_coco`` preset, Swin-B 224 + BERT-base, random initial weights and
random inputs: speed and memory do not depend on the weights):

1. training step (AMP bf16; ``train.tf32`` on) with the backbones frozen and unfrozen: s/step and
   peak memory at batch 58, and at the largest batch that fits (doubling from 58 until out of
   memory, then bisection, each probe one step; capped by ``--max-batch`` and a time budget);
2. a 1-process NCCL DDP run of :func:`daimlib.train.train` on a generated demo-layout folder at
   paper size, one frozen epoch then one unfrozen (the DDP re-wrap, no ``find_unused_parameters``);
3. the COCO-5K 3-level evaluation at full size: 5,000 random 224 px images and 25,000 random
   captions encoded (``daimlib.evaluate.encode_split``'s model calls, features in half
   precision), scored 5,000 x 25,000 (``similarity_matrix``) with TF32 on and off. A scoring whose
   projection from a 100-image slice would break the budget is timed on a slice and scaled (the
   work is linear in the images), and the row says so;
4. ``train.compile`` (``torch.compile`` of both encoders) on and off: first step (compiles) and
   s/step after.

Checks (exit 1 when one fails), each against fp32 on the same inputs and weights:
- training scores ``[58, 58]`` under bf16 autocast + TF32: max |diff| <= 0.05 and the loss within
  2% (scores are sums of three cosines, in [-3, 3]);
- evaluation scores with TF32: max |diff| <= 5e-3 on the rows scored both ways;
- compiled vs eager loss (both bf16): within 1%.

``--cpu-smoke`` runs the same code paths at tiny sizes (the demo preset, gloo, 40 x 200 evaluation,
``torch.compile(backend="eager")``) in about a minute on a CPU; CI runs it
(``tests/test_gpu_check.py``). Usage::

    python benchmarks/gpu_check.py              # on a GPU
    python benchmarks/gpu_check.py --cpu-smoke  # anywhere
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import socket
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from daimlib.config import load_preset  # noqa: E402
from daimlib.evaluate import EncodedSplit, similarity_matrix  # noqa: E402
from daimlib.losses import MatchingLoss  # noqa: E402
from daimlib.model import DAIM  # noqa: E402
from daimlib.runtime import amp_settings, tf32  # noqa: E402

TOL_TRAIN_SCORES, TOL_TRAIN_LOSS, TOL_EVAL_TF32, TOL_COMPILE_LOSS = 0.05, 0.02, 5e-3, 0.01
COMPILE_RESERVE_S = 180  # kept for the compile rows (Swin-B + BERT-base compile with their backward)


class Budget:
    def __init__(self, minutes: float):
        self.t0, self.seconds = time.perf_counter(), minutes * 60

    def left(self) -> float:
        return self.seconds - (time.perf_counter() - self.t0)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _peak(device) -> str:
    return (
        f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB" if device.type == "cuda" else "n/a (CPU)"
    )


def _reset_peak(device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _cfg(smoke: bool):
    if smoke:
        return load_preset("demo", **{"train.amp": "auto"})
    return load_preset("daim_coco", **{"image.init": "random", "text.init": "random"})


def _batch(cfg, batch: int, device, seed: int = 0, images: bool = True) -> dict:
    """Random captions (lengths 8..L) and, with ``images``, random images made on ``device``."""
    g = torch.Generator().manual_seed(seed)
    L, vocab = cfg.text.max_len, (cfg.text.model_kwargs or {}).get("vocab_size", 30522)
    lens = torch.randint(8, L + 1, (batch,), generator=g)
    mask = (torch.arange(L)[None, :] < lens[:, None]).long()  # [B, L]
    ids = torch.randint(100, vocab, (batch, L), generator=g) * mask
    out = {
        "input_ids": ids.to(device),
        "attention_mask": mask.to(device),
        "img_index": torch.arange(batch, device=device),
    }
    if images:
        gd = torch.Generator(device=device).manual_seed(seed)
        size = cfg.image.img_size
        out["images"] = torch.randn(batch, 3, size, size, generator=gd, device=device)  # [B, 3, H, W]
    return out


def _model(cfg, device, frozen: bool):
    torch.manual_seed(0)
    model = DAIM.from_config(cfg, pretrained=False).to(device)
    model.set_backbones_trainable(not frozen)
    return model.train()


def _loss_of(model, loss_fn, data, amp_dtype, device):
    with torch.autocast(device.type, dtype=amp_dtype) if amp_dtype else contextlib.nullcontext():
        scores = model(data).scores
    return scores, loss_fn(scores, step=10**9, img_index=data["img_index"]).loss


def train_steps(model, cfg, data, device, steps: int, amp=True, first: dict | None = None) -> float:
    """Mean s/step over ``steps`` steps after one untimed step (forward, loss, backward, Adam); ``first``
    receives the first step's seconds and loss."""
    amp_dtype, use_scaler = amp_settings(cfg.train.amp if amp else "off", device)
    loss_fn = MatchingLoss.from_config(cfg.loss).to(device)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
    times = []
    for _ in range(steps + 1):
        _sync(device)
        t0 = time.perf_counter()
        _, loss = _loss_of(model, loss_fn, data, amp_dtype, device)
        if first is not None and not times:
            first["loss"] = float(loss.detach())
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        times.append(time.perf_counter() - t0)
    if first is not None:
        first["seconds"] = times[0]
    return sum(times[1:]) / steps


def _fits(model, cfg, device, batch: int) -> bool:
    try:
        train_steps(model, cfg, _batch(cfg, batch, device), device, steps=1)
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        model.zero_grad(set_to_none=True)
        _reset_peak(device)


def largest_batch(model, cfg, device, start: int, cap: int, seconds: float) -> int:
    """The largest batch in [start, cap] one training step fits at: doubling, then bisection."""
    t_end = time.perf_counter() + seconds
    lo, hi = start, None
    while hi is None and lo < cap and time.perf_counter() < t_end:
        nxt = min(2 * lo, cap)
        if _fits(model, cfg, device, nxt):
            lo = nxt
        else:
            hi = nxt
    while hi is not None and hi - lo > max(2, lo // 16) and time.perf_counter() < t_end:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if _fits(model, cfg, device, mid) else (lo, mid)
    return lo


def check_precision(cfg, device, batch: int) -> dict:
    """Training scores and loss under AMP + TF32 against fp32 (TF32 off), same weights and batch."""
    model = _model(cfg, device, frozen=False).eval()  # no dropout: the two passes see the same network
    loss_fn = MatchingLoss.from_config(cfg.loss).to(device).eval()
    data = _batch(cfg, batch, device, seed=1)
    amp_dtype, _ = amp_settings(cfg.train.amp, device)
    with torch.no_grad():
        with tf32(False, device):
            s32, l32 = _loss_of(model, loss_fn, data, None, device)
        with tf32(True, device):
            s16, l16 = _loss_of(model, loss_fn, data, amp_dtype, device)
    return {
        "scores": float((s16.float() - s32).abs().max()),
        "loss": abs(float(l16) - float(l32)) / max(abs(float(l32)), 1e-12),
    }


def precision_name(cfg, device) -> str:
    """What :func:`check_precision` compares with fp32 here: the AMP dtype ``train.amp`` picks on this device
    (bf16 from Ampere on, fp16 before), with TF32 where the GPU has it (Ampere and newer); a CPU has neither."""
    device = torch.device(device)
    amp_dtype, _ = amp_settings(cfg.train.amp, device)
    has_tf32 = device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8
    parts = [{torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype), "TF32" if has_tf32 else None]
    return "+".join(p for p in parts if p) or "fp32 (no AMP, no TF32 here)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ddp_run(cfg, device, smoke: bool) -> dict:
    """:func:`daimlib.train.train` in a 1-process group (NCCL on CUDA, gloo on a CPU): 1 frozen + 1 unfrozen epoch."""
    import torch.distributed as dist

    from daimlib.data import make_demo_dataset
    from daimlib.train import train

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "data"
        make_demo_dataset(root, seed=0, size=(24, 5, 5) if smoke else (64, 10, 5), progress=False)
        batch = 8 if smoke else 58
        over = {
            "text.tokenizer": "demo",
            "train.batch_size": batch,
            "train.epochs": 2,
            "train.freeze_epochs": 1,
            "train.eval_batch_size": 64,
            "data.num_workers": 2,
            "train.val_images": None,
        }
        if not smoke:  # BERT-base's vocabulary holds the demo tokenizer's 512 ids
            over["data.dataset"] = "demo"
        run_cfg = cfg.replace(**over)
        os.environ.update(
            MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="1", RANK="0", LOCAL_RANK="0"
        )
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", rank=0, world_size=1)
        try:
            t0 = time.perf_counter()
            res = train(
                run_cfg, root, Path(tmp) / "run", progress=False, eval_split="val", device=str(device)
            )
            seconds = time.perf_counter() - t0
            ok = res.stopped == "completed" and (Path(tmp) / "run" / "best" / "meta.json").is_file()
            return {"ok": ok, "steps": res.global_step, "seconds": seconds, "backend": dist.get_backend()}
        finally:
            dist.destroy_process_group()


def eval_coco5k(cfg, device, smoke: bool, budget: Budget) -> dict:
    """Encode n_img random images and 5 n_img captions, then score them with TF32 on and off."""
    n_img = 40 if smoke else 5000
    n_cap = 5 * n_img
    model = DAIM.from_config(cfg, pretrained=False).to(device).eval()
    amp_dtype, _ = amp_settings(cfg.train.amp, device)
    half = amp_dtype or torch.float32
    bs = 64 if smoke else 256
    out = {}
    _reset_peak(device)
    _sync(device)
    t0 = time.perf_counter()
    img_levels, txt_levels, lens = None, None, []
    with torch.no_grad(), torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        for a in range(0, n_img, bs):
            size = cfg.image.img_size
            levels = model.encode_image(torch.randn(min(bs, n_img - a), 3, size, size, device=device))
            img_levels = (
                [x.to(half) for x in levels]
                if img_levels is None
                else [torch.cat([c, x.to(half)]) for c, x in zip(img_levels, levels)]
            )
        for a in range(0, n_cap, 4 * bs):
            b = _batch(cfg, min(4 * bs, n_cap - a), device, seed=10**6 + a, images=False)
            levels, ln = model.encode_text(b["input_ids"], b["attention_mask"])
            txt_levels = (
                [x.to(half) for x in levels]
                if txt_levels is None
                else [torch.cat([c, x.to(half)]) for c, x in zip(txt_levels, levels)]
            )
            lens.append(ln)
    _sync(device)
    out["encode_s"] = time.perf_counter() - t0
    lens = torch.cat(lens)
    img_of = torch.arange(n_cap, device=device) // 5

    def score(rows: int, allow: bool):
        part = EncodedSplit([x[:rows] for x in img_levels], txt_levels, lens, img_of)
        _sync(device)
        t = time.perf_counter()
        with tf32(allow, device), torch.no_grad():
            sims = similarity_matrix(model, part, progress=False)
        _sync(device)
        return torch.as_tensor(sims), time.perf_counter() - t

    probe = min(n_img, 100)
    _, t_probe = score(probe, True)
    per_img = t_probe / probe
    spare = budget.left() - (5 if smoke else COMPILE_RESERVE_S)  # what the two scorings may take
    rows = n_img if per_img * n_img * 2.2 < spare else max(probe, int(spare / 2.2 / per_img))
    rows = min(rows, n_img)
    s_tf32, t_tf32 = score(rows, True)
    s_fp32, t_fp32 = score(rows, False)
    scale = n_img / rows
    out.update(
        rows=rows,
        n_img=n_img,
        n_cap=n_cap,
        tf32_s=t_tf32 * scale,
        fp32_s=t_fp32 * scale,
        diff=float((s_tf32 - s_fp32).abs().max()),
        peak=_peak(device),
    )
    return out


def compile_rows(cfg, device, batch: int, smoke: bool) -> dict:
    """s/step with the encoders compiled (the first step compiles) and eager, and the first step's losses.
    Dropout off (eval mode, gradients on): the two models compute the same function."""
    out = {}
    for compiled in (False, True):
        model = _model(cfg, device, frozen=False).eval()
        if compiled:
            model.compile_encoders(**({"backend": "eager"} if smoke else {}))
        first: dict = {}
        step_s = train_steps(model, cfg, _batch(cfg, batch, device, seed=2), device, 3, first=first)
        out[compiled] = {"first_s": first["seconds"], "loss": first["loss"], "step_s": step_s}
        del model
        _reset_peak(device)
    out["diff"] = abs(out[True]["loss"] - out[False]["loss"]) / max(abs(out[False]["loss"]), 1e-12)
    return out


def _table(rows) -> None:
    header = ("what", "result", "detail")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(3)]
    for r in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |")


def _verdict(name: str, value: float, tol: float, failures: list) -> str:
    ok = math.isfinite(value) and value <= tol
    if not ok:
        failures.append(name)
    return f"{value:.2e} (tolerance {tol:g}: {'ok' if ok else 'EXCEEDED'})"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--cpu-smoke",
        "--quick",
        action="store_true",
        help="tiny sizes on the CPU (the code paths, in about a minute); the default without CUDA",
    )
    ap.add_argument(
        "--budget-min", type=float, default=8.0, help="minutes the whole check may take (default 8)"
    )
    ap.add_argument("--max-batch", type=int, default=1024, help="upper end of the largest-batch search")
    args = ap.parse_args(argv)
    smoke = args.cpu_smoke or not torch.cuda.is_available()
    if not args.cpu_smoke and smoke:
        print("# no CUDA GPU here: running --cpu-smoke (the code paths at tiny sizes)")
    device = torch.device("cpu" if smoke else "cuda")
    budget = Budget(args.budget_min)
    cfg = _cfg(smoke)
    b0 = 8 if smoke else cfg.train.batch_size
    name = "CPU" if smoke else torch.cuda.get_device_name(device)
    print(
        f"# gpu_check on {name}; torch {torch.__version__}; {'CPU SMOKE (tiny sizes)' if smoke else 'paper size'}"
    )
    rows, failures = [], []
    prec, mixed = check_precision(cfg, device, b0), precision_name(cfg, device)
    rows.append(
        (
            f"{mixed} vs fp32: training scores, max |diff|",
            _verdict("train scores", prec["scores"], TOL_TRAIN_SCORES, failures),
            f"batch {b0}",
        )
    )
    rows.append(
        (
            f"{mixed} vs fp32: loss, relative",
            _verdict("train loss", prec["loss"], TOL_TRAIN_LOSS, failures),
            f"batch {b0}",
        )
    )
    with tf32(True, device):
        for frozen in (True, False):
            phase = "frozen" if frozen else "unfrozen"
            model = _model(cfg, device, frozen)
            _reset_peak(device)
            s = train_steps(model, cfg, _batch(cfg, b0, device), device, steps=2 if smoke else 5)
            rows.append((f"train step, {phase}, batch {b0}", f"{s:.3f} s/step", f"peak {_peak(device)}"))
            _reset_peak(device)
            cap = 16 if smoke else args.max_batch
            big = largest_batch(model, cfg, device, b0, cap, seconds=10 if smoke else 35)
            s = train_steps(model, cfg, _batch(cfg, big, device), device, steps=2)
            rows.append(
                (
                    f"train step, {phase}, largest batch found: {big}",
                    f"{s:.3f} s/step",
                    f"peak {_peak(device)}" + (" (search capped)" if big >= cap else ""),
                )
            )
            del model
            _reset_peak(device)
    d = ddp_run(cfg, device, smoke)
    if not d["ok"]:
        failures.append("ddp")
    rows.append(
        (
            f"DDP 1 process ({d['backend']}), frozen + unfrozen epoch",
            "ran" if d["ok"] else "FAILED",
            f"{d['steps']} steps + 2 validations + checkpoints in {d['seconds']:.1f} s",
        )
    )
    e = eval_coco5k(cfg, device, smoke, budget)
    how = "" if e["rows"] == e["n_img"] else f", timed on {e['rows']} images and scaled"
    rows.append((f"eval encode {e['n_img']} images + {e['n_cap']} captions", f"{e['encode_s']:.1f} s", ""))
    rows.append(
        (f"eval score {e['n_img']} x {e['n_cap']}, TF32", f"{e['tf32_s']:.1f} s", f"peak {e['peak']}{how}")
    )
    rows.append((f"eval score {e['n_img']} x {e['n_cap']}, fp32", f"{e['fp32_s']:.1f} s", how.lstrip(", ")))
    rows.append(
        (
            "TF32 vs fp32: eval scores, max |diff|",
            _verdict("eval tf32", e["diff"], TOL_EVAL_TF32, failures),
            f"{e['rows']} x {e['n_cap']}",
        )
    )
    if budget.left() > (10 if smoke else COMPILE_RESERVE_S - 30):
        c = compile_rows(cfg, device, b0, smoke)
        for compiled in (False, True):
            r = c[compiled]
            rows.append(
                (
                    f"torch.compile {'on' if compiled else 'off'}, unfrozen, batch {b0}",
                    f"{r['step_s']:.3f} s/step",
                    f"first step {r['first_s']:.1f} s" + (" (compiles)" if compiled else ""),
                )
            )
        rows.append(
            (
                "compile vs eager: loss, relative",
                _verdict("compile", c["diff"], TOL_COMPILE_LOSS, failures),
                "",
            )
        )
    else:
        rows.append(("torch.compile on/off", "skipped", f"{budget.left():.0f} s of the budget left"))
    _table(rows)
    spent = args.budget_min * 60 - budget.left()
    print(
        f"# {spent / 60:.1f} min; {'FAILED: ' + ', '.join(failures) if failures else 'all checks within tolerance'}"
    )
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
