"""``evaluate --protocol paper``: every row from one encoding, equal to separate evaluations; the
paper-format table and its files; the split across torch.distributed ranks."""

from __future__ import annotations

import dataclasses
import json
import re
import socket

import numpy as np
import pandas as pd
import pytest
import torch

from daimlib.config import load_preset
from daimlib.evaluate import METRIC_KEYS, evaluate
from daimlib.paper import (
    MEASURED,
    METRICS,
    PaperResult,
    evaluate_paper,
    paper_protocols,
    paper_stem,
    paper_table,
    write_paper,
)
from daimlib.published import published_rows

pytestmark = pytest.mark.usefixtures("one_torch_thread")
N_TEST = 25  # COCO-layout stand-in: 5 folds of 5 images


@pytest.fixture(scope="module")
def coco_like(tmp_path_factory):
    from daimlib.data import load_split, load_tokenizer, make_coco_layout

    root = tmp_path_factory.mktemp("coco_like")
    make_coco_layout(root, n_train=30, n_val=5, n_test=N_TEST)
    cfg = load_preset("tiny", **{"data.num_workers": 0, "train.eval_batch_size": 16})
    split = load_split(root, "test", cfg)
    tok = load_tokenizer(cfg.text, root, data_cfg=cfg.data)
    return root, cfg, split, tok


def _model(cfg):
    from daimlib.model import DAIM

    torch.manual_seed(0)
    return DAIM.from_config(cfg).eval()


def _images(split, a: int, b: int):
    """Images a..b-1 of ``split`` with their captions, renumbered from 0 (an independent sub-split)."""
    keep = (split.img_of_caption >= a) & (split.img_of_caption < b)
    idx = keep.nonzero().flatten().tolist()
    return dataclasses.replace(
        split,
        image_paths=split.image_paths[a:b],
        image_ids=split.image_ids[a:b],
        meta=split.meta[a:b],
        captions=[split.captions[j] for j in idx],
        img_of_caption=split.img_of_caption[keep] - a,
        caption_meta=None,
        caption_ids=None,
    )


def test_a_coco_layout_admits_coco1k_and_coco5k_and_others_their_own_rows(coco_like):
    assert coco_like[2].layout == "coco" and (coco_like[2].n_images, coco_like[2].n_captions) == (25, 125)
    assert paper_protocols("coco") == paper_protocols("coco_ids") == ("coco1k", "coco5k")
    assert paper_protocols("f30k") == ("f30k",) and paper_protocols("f8k") == ("f8k",)
    assert paper_protocols("demo") == paper_protocols(None) == ("demo",)


@pytest.mark.slow  # 6 encodings of a tiny model: ~15-30 s on 2 busy cores
def test_coco_rows_from_one_matrix_equal_separate_1k_fold_and_5k_evaluations(coco_like):
    _, cfg, split, tok = coco_like
    model = _model(cfg)
    res = evaluate_paper(model, split, tok, cfg, name="tiny", progress=False, return_sims=True)
    assert set(res.metrics) == {"coco1k", "coco5k"}
    # COCO 5K: a separate call on the whole split
    whole = evaluate(model, split, tok, cfg, protocol="coco5k", progress=False)[0]
    # COCO 1K: each fold of N_TEST / 5 images encoded and evaluated on its own, then the mean
    fold = N_TEST // 5
    folds = [
        evaluate(model, _images(split, k * fold, (k + 1) * fold), tok, cfg, protocol="demo", progress=False)[
            0
        ]
        for k in range(5)
    ]
    for key in METRIC_KEYS:
        assert res.metrics["coco5k"][key] == pytest.approx(whole[key], abs=1e-6), key
        assert res.metrics["coco1k"][key] == pytest.approx(np.mean([f[key] for f in folds]), abs=1e-6), key
    assert res.sims.shape == (N_TEST, 5 * N_TEST)


def _fake_metrics(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    m = {k: float(rng.uniform(0, 100)) for k in METRIC_KEYS}
    m["rsum"] = sum(m[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return m


def test_the_paper_table_puts_published_rows_only_beside_a_benchmark_at_its_size():
    per = {"coco1k": _fake_metrics(0), "coco5k": _fake_metrics(1)}
    full = paper_table(per, n_images=5000, n_captions=25000, name="mine")
    for protocol, label in (("coco1k", "COCO 1K"), ("coco5k", "COCO 5K")):
        block = full.loc[[label]].set_index("method")
        pub = published_rows(protocol).dropna(subset=["RSUM"])
        assert list(block.index) == [*pub.index, "mine"]
        assert block.loc[pub.index, "RSUM"].tolist() == pub["RSUM"].tolist()
        assert block.loc[pub.index, "i2t R@1"].tolist() == pub["R@1 i2t"].tolist()
        assert block.loc[pub.index, "i2t R@5"].isna().all()  # published sources give R@1 and RSUM only
        assert block.loc["mine", METRICS].tolist() == [
            per[protocol][k] for k in METRIC_KEYS if "med" not in k and "mean" not in k
        ]
        assert block.loc["mine", "source"] == MEASURED
    small = paper_table(per, n_images=500, n_captions=2500, name="mine")
    assert list(small["method"]) == ["mine", "mine"]  # another size: no published row beside it
    assert all("not COCO" in label for label in small.index)
    f8k = paper_table({"f8k": _fake_metrics(2)}, n_images=1000, n_captions=5000, name="mine")
    assert list(f8k.index) == ["Flickr8k 1K"] and list(f8k["method"]) == ["mine"]  # no verified F8K numbers


def _result() -> PaperResult:
    per = {"coco1k": _fake_metrics(3), "coco5k": _fake_metrics(4)}
    table = paper_table(per, n_images=5000, n_captions=25000, name="daim_coco (best)")
    notes = ["protocol: paper; batch 58 per process x 1 process(es)", "a note with | and _ and 50%"]
    record = {
        "metrics": per,
        "notes": notes,
        "table": json.loads(table.reset_index().to_json(orient="records")),
    }
    return PaperResult(table=table, metrics=per, notes=notes, record=record)


def _cell(v) -> str:
    return "-" if isinstance(v, float) and np.isnan(v) else f"{v:.1f}" if isinstance(v, float) else str(v)


def test_the_paper_files_parse_back_to_the_table(tmp_path):
    res = _result()
    paths = write_paper(res, tmp_path / "eval_best_test_paper")
    assert [p.suffix for p in paths] == [".csv", ".md", ".tex", ".json"]
    back = pd.read_csv(paths[0], index_col=0)
    pd.testing.assert_frame_equal(back, res.table, check_exact=False, rtol=1e-12)
    want = [
        [str(b), *[_cell(v) for v in row]]
        for b, row in zip(res.table.index, res.table.itertuples(index=False))
    ]
    md = paths[1].read_text().splitlines()
    assert md[0].split(" | ")[1:3] == ["method", "i2t R@1"]
    md_rows = [re.split(r"(?<!\\) \| ", line.strip("| ")) for line in md[2 : 2 + len(res.table)]]
    assert [[c.replace("\\|", "|") for c in r] for r in md_rows] == want
    assert all(f"- {n}" in md for n in res.notes)
    tex = paths[2].read_text()
    body = tex.split("\\midrule\n")[1].split("\n\\bottomrule")[0].splitlines()
    tex_rows = [
        [c.replace("\\_", "_").replace("\\%", "%") for c in line.removesuffix(" \\\\").split(" & ")]
        for line in body
    ]
    assert tex_rows == want
    assert "50\\%" in tex.split("\\end{tabular}")[1]  # the notes under the table, escaped
    rec = json.loads(paths[3].read_text())
    assert rec["metrics"] == res.metrics and rec["notes"] == res.notes
    back_json = pd.DataFrame(rec["table"]).set_index("benchmark")
    pd.testing.assert_frame_equal(back_json.astype(res.table.dtypes.to_dict()), res.table, rtol=1e-12)


def test_a_shipped_models_results_go_to_the_ignored_runs_folder(tmp_path):
    from daimlib.paths import repo_root

    stem = paper_stem(repo_root() / "models" / "demo" / "best", "test_paper")
    assert stem.relative_to(repo_root()).as_posix() == "runs/eval/models/demo/eval_best_test_paper"
    assert paper_stem(tmp_path / "run" / "best", "test_paper") == tmp_path / "run" / "eval_best_test_paper"


# --- the command, and torchrun ---------------------------------------------------------------------


@pytest.mark.slow  # a checkpoint written and evaluated through the CLI: ~10-20 s
def test_evaluate_protocol_paper_writes_every_file_with_the_notes(coco_like, tmp_path, capsys):
    from daimlib.__main__ import main
    from daimlib.checkpoint import save_checkpoint

    root, cfg, split, tok = coco_like
    save_checkpoint(
        tmp_path / "run" / "best", _model(cfg), cfg, tokenizer=tok, meta={"kind": "best", "epoch": 3}
    )
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path / "run" / "best"),
            "--data-root",
            str(root),
            "--protocol",
            "paper",
            "-q",
            "--set",
            "train.eval_batch_size=20",
        ]
    )
    assert rc == 0, capsys.readouterr().err
    stem = tmp_path / "run" / "eval_best_test_paper"
    rec = json.loads(stem.with_suffix(".json").read_text())
    assert rec["protocols"] == ["coco1k", "coco5k"] and rec["evaluation"]["encode_batch_per_process"] == 20
    assert rec["evaluation"]["processes"] == 1 and rec["evaluation"]["gpus"] == 0
    assert (
        rec["checkpoint"]["epoch"] == 3
        and rec["checkpoint"]["train_batch_per_process"] == cfg.train.batch_size
    )
    notes = " ".join(rec["notes"])
    assert "encoding batch 20 per process" in notes and "no GPU" in notes and "epoch 3" in notes
    assert all(stem.with_suffix(s).is_file() for s in (".csv", ".md", ".tex"))


def test_evaluate_set_refuses_a_key_of_the_model_and_names_the_ones_it_takes(tmp_path, capsys):
    from daimlib.__main__ import main

    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(tmp_path),
            "--data-root",
            str(tmp_path),
            "--protocol",
            "demo",
            "--set",
            "similarity.direction=i2t",
        ]
    )
    err = capsys.readouterr().err
    assert rc == 2 and "similarity.direction" in err and "text.tokenizer" in err and "data.*" in err


def _dist_worker(rank: int, port: int, root: str, out: str) -> None:
    import torch.distributed as dist

    from daimlib.data import load_split, load_tokenizer
    from daimlib.evaluate import encode_split

    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        torch.set_num_threads(1)
        cfg = load_preset("tiny", **{"data.num_workers": 0, "train.eval_batch_size": 16})
        split, tok = load_split(root, "test", cfg), load_tokenizer(cfg.text, root, data_cfg=cfg.data)
        model = _model(cfg)
        feats = encode_split(model, split, tok, cfg.data, progress=False, shard=True)
        res = evaluate_paper(model, split, tok, cfg, name="tiny", progress=False, return_sims=True)
        torch.save(
            {
                "held": feats.img_levels[0].shape[0],
                "offset": feats.img_offset,
                "metrics": res.metrics,
                "sims": torch.from_numpy(res.sims),
                "processes": res.record["evaluation"]["processes"],
            },
            f"{out}/rank{rank}.pt",
        )
    finally:
        dist.destroy_process_group()


@pytest.mark.slow  # two gloo processes encode and score: ~20-40 s
def test_two_gloo_processes_split_the_work_and_give_the_one_process_matrix_and_metrics(coco_like, tmp_path):
    import torch.multiprocessing as mp

    root, cfg, split, tok = coco_like
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(
        _dist_worker, args=(port, str(root), str(tmp_path)), nprocs=2, join=True, start_method="spawn"
    )
    single = evaluate_paper(_model(cfg), split, tok, cfg, name="tiny", progress=False, return_sims=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [(r["held"], r["offset"]) for r in ranks] == [
        (13, 0),
        (12, 13),
    ]  # each rank encoded its images only
    for r in ranks:
        assert r["processes"] == 2
        torch.testing.assert_close(r["sims"], torch.from_numpy(single.sims), atol=1e-5, rtol=1e-5)
        for p in single.metrics:
            assert r["metrics"][p] == pytest.approx(single.metrics[p], abs=1e-9)
