"""An imported checkpoint evaluates offline without extra flags when this machine has its tokenizer,
and otherwise the advice names flags that exist (issue 25 item 4).

The tokenizer is put where ``transformers`` looks without the network: a Hugging Face cache (its
``models--<id>/snapshots/<rev>`` layout) under ``bert-base-uncased``, the id the paper presets name.
Every command runs in its own process with ``HF_HUB_OFFLINE=1``, as on a machine without internet.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "tests" / "fixtures" / "reference_checkpoints" / "tiny_daim_reference.ckpt"
TINY_VOCAB = 1000  # the tiny fixture's embeddings (tiny_configs.json)

pytestmark = pytest.mark.slow  # four CLI processes, each importing torch/timm/transformers: ~40-90 s


def _fake_hub_cache(cache: Path, captions: list[str]) -> None:
    """A WordPiece tokenizer stored as the hub cache stores bert-base-uncased (refs/main -> snapshot)."""
    from daimlib.data import build_wordpiece_tokenizer

    repo = cache / "models--bert-base-uncased"
    snapshot = repo / "snapshots" / ("0" * 40)
    build_wordpiece_tokenizer(captions, snapshot, vocab_size=200)
    (snapshot / "config.json").write_text('{"model_type": "bert"}')  # as the hub's copy has one
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)


def _run(args: list[str], cache: Path) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_HUB_CACHE": str(cache),
        "PYTHONPATH": str(ROOT),
        "OMP_NUM_THREADS": "1",
        "DAIM_CACHE_DIR": str(cache.parent / "daim_cache"),
    }
    return subprocess.run(
        [sys.executable, "-m", "daimlib", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def _evaluate(out: Path, data: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    return _run(
        [
            "evaluate",
            "--checkpoint",
            str(out),
            "--data-root",
            str(data),
            "--protocol",
            "demo",
            "--images",
            "3",
            "-q",
            "--set",
            "data.num_workers=0",
            *extra,
        ],
        cache,
    )


def test_import_stores_the_locally_found_tokenizer_and_evaluate_needs_no_flag(demo_root, tmp_path):
    from daimlib.data import load_split

    cache = tmp_path / "hub"
    _fake_hub_cache(cache, load_split(demo_root, "train").captions)
    out = tmp_path / "imported"
    imp = _run(["import-reference", str(CKPT), "--out", str(out), "--text-heads", "2"], cache)
    assert imp.returncode == 0, imp.stderr
    assert "tokenizer: stored from bert-base-uncased (found locally)" in imp.stdout
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    ev = _evaluate(out, demo_root, cache)
    assert ev.returncode == 0, ev.stderr
    assert "RSUM" in ev.stdout


def test_without_a_local_tokenizer_the_advice_names_flags_that_work(demo_root, tmp_path):
    empty = tmp_path / "empty_hub"
    empty.mkdir()
    out = tmp_path / "imported"
    imp = _run(["import-reference", str(CKPT), "--out", str(out), "--text-heads", "2"], empty)
    assert imp.returncode == 0, imp.stderr
    assert "--tokenizer DIR" in imp.stderr and "--set text.tokenizer=DIR" in imp.stderr
    assert not (out / "tokenizer").exists()
    ev = _evaluate(out, demo_root, empty)
    assert ev.returncode == 2 and "--set text.tokenizer=DIR" in ev.stderr and "Traceback" not in ev.stderr
    # following the advice works: the demo data's own tokenizer folder (1000 embeddings fit it)
    ok = _evaluate(out, demo_root, empty, f"text.tokenizer={demo_root / 'tokenizer'}")
    assert ok.returncode == 0, ok.stderr
