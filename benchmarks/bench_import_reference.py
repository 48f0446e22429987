"""Import time of a reference checkpoint (issue 8 item 8): ``import-reference`` on a full-size-shaped file.

Builds a random checkpoint in the authors' Lightning layout from the full-size key table
(``tests/fixtures/reference_checkpoints/daim_keys.tsv``: Swin-B + BERT-base, 579 entries, 199 M
parameters; ``write_synthetic_reference`` in ``tests/reference_synth.py``) in a temporary folder, then
times ``python -m daimlib import-reference`` on it in a fresh process (what a user runs), and one
CPU forward of the imported model at batch 1 (1 image, 1 caption). Nothing is kept.
``--quick``: the tiny DAIM fixture instead (seconds). Usage::

    python benchmarks/bench_import_reference.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the synthetic reference checkpoint is a test helper
FIX = ROOT / "tests" / "fixtures" / "reference_checkpoints"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the tiny fixture instead of a full-size file")
    args = ap.parse_args(argv)
    import torch
    from reference_synth import write_synthetic_reference

    from daimlib.checkpoint import load_model

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        if args.quick:
            ckpt, extra = FIX / "tiny_daim_reference.ckpt", ["--text-heads", "2"]
        else:
            ckpt, extra = write_synthetic_reference(FIX / "daim_keys.tsv", tmp / "full.ckpt"), []
        build_s = time.perf_counter() - t0
        size_mb = ckpt.stat().st_size / 2**20
        cmd = [
            sys.executable,
            "-m",
            "daimlib",
            "import-reference",
            str(ckpt),
            "--out",
            str(tmp / "kit"),
            *extra,
        ]
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        t0 = time.perf_counter()
        out = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=tmp)
        import_s = time.perf_counter() - t0
        if out.returncode != 0:
            print(out.stdout, out.stderr, sep="\n")
            return 1
        t0 = time.perf_counter()
        model = load_model(tmp / "kit")
        load_s = time.perf_counter() - t0
        size = model.cfg.image.img_size
        ids = (
            torch.tensor([[101, 2023, 2003, 1037, 3231, 102, 0, 0]])
            % model.text_encoder.bert.config.vocab_size
        )
        t0 = time.perf_counter()
        with torch.no_grad():
            img = model.encode_image(torch.rand(1, 3, size, size))
            txt, lens = model.encode_text(ids, (ids > 0).long())
            model.similarity(img, txt, lens)
        fwd_s = time.perf_counter() - t0
    n = sum(p.numel() for p in model.parameters())
    print(
        f"checkpoint: {'tiny fixture' if args.quick else 'full-size random (daim_keys.tsv)'}, "
        f"{size_mb:.0f} MiB, {n / 1e6:.1f} M parameters; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {os.cpu_count()} CPUs"
    )
    print("| step | seconds |\n|---|---|")
    if not args.quick:
        print(f"| build the random .ckpt (not part of an import) | {build_s:.1f} |")
    print(f"| `python -m daimlib import-reference` (process start to folder written) | {import_s:.1f} |")
    print(f"| `load_model` of the written folder | {load_s:.1f} |")
    print(f"| one forward at batch 1 (1 image {size} px, 1 caption) | {fwd_s:.2f} |")
    print("import-reference printed:\n" + out.stdout.replace(str(tmp) + os.sep, "").rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
