"""scripts/recipe_search.py: the collected table is what the run folders hold (hand-made folders),
and the committed results/recipe_search/runs.csv agrees with the shipped model it quotes."""

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("recipe_search", REPO / "scripts" / "recipe_search.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


rs = _load()
KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


def _run_folder(path: Path, val_rsums, best, sha="abc", test=None, shipped=False):
    path.mkdir(parents=True)
    n = len(val_rsums)
    pd.DataFrame({"epoch": range(n), "step": [312 * (e + 1) for e in range(n)], "rsum": val_rsums,
                  "best": best, "epoch_s": [100.0 + e for e in range(n)],
                  "elapsed_min": [2.0 * (e + 1) for e in range(n)]}).to_csv(path / "history_epochs.csv", index=False)  # fmt: skip
    test = test or dict(zip(KEYS, [30.0, 60.0, 75.0, 35.0, 85.0, 95.0]))
    test = {**test, "rsum": sum(test[k] for k in KEYS)}
    if shipped:
        (path / "metrics.json").write_text(json.dumps({"test": test, "data": {"sha256": sha}}))
    else:
        (path / "eval_best_test_demo.json").write_text(
            json.dumps({"metrics": test, "data": {"annotations_sha256": sha}})
        )
    return path


def _fake_fit(ckpt, cache, data_root, n=500):
    return {"train500_rsum": 400.0 + len(str(ckpt)) % 7}


def test_collect_reads_best_epoch_test_metrics_and_curve(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "REPO", tmp_path)
    monkeypatch.setattr(rs, "train_fit", _fake_fit)
    _run_folder(tmp_path / "models" / "demo", [350.0, 380.5, 379.0], [True, True, False], shipped=True)
    runs = tmp_path / "runs"
    _run_folder(runs / "step6", [340.0, 390.0, 395.25, 391.0], [True, True, True, False],
                test=dict(zip(KEYS, [31.0, 61.0, 76.0, 36.0, 86.0, 96.0])))  # fmt: skip
    (runs / "step4").mkdir(parents=True)  # started, not scored: left out
    table = rs.collect(runs, tmp_path / "out", "data/demo")
    assert list(table["recipe"]) == ["shipped", "step6"]
    s6 = table.set_index("recipe").loc["step6"]
    assert s6["best_epoch"] == 2 and s6["best_val_rsum"] == 395.25 and s6["last_val_rsum"] == 391.0
    assert s6["epochs"] == 4 and s6["steps"] == 4 * 312 and s6["wall_minutes"] == 8.0
    assert s6["test_rsum"] == pytest.approx(31 + 61 + 76 + 36 + 86 + 96)
    assert s6["val_rsum_by_epoch"] == "340.0 390.0 395.2 391.0"
    assert s6["overrides"] == "train.lr_step=6"
    assert table.set_index("recipe").loc["shipped", "best_epoch"] == 1
    assert pd.read_csv(tmp_path / "out" / "runs.csv")["test_rsum"].tolist() == pytest.approx(
        table["test_rsum"].tolist()
    )


def test_collect_refuses_recipes_scored_on_different_data(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "REPO", tmp_path)
    monkeypatch.setattr(rs, "train_fit", _fake_fit)
    _run_folder(tmp_path / "models" / "demo", [350.0], [True], sha="aaa", shipped=True)
    _run_folder(tmp_path / "runs" / "step6", [350.0], [True], sha="bbb")
    with pytest.raises(ValueError, match="different data"):
        rs.collect(tmp_path / "runs", tmp_path / "out", "data/demo")


def test_committed_table_quotes_the_shipped_model_and_known_recipes():
    path = REPO / "results" / "recipe_search" / "runs.csv"
    table = pd.read_csv(path).set_index("recipe")
    shipped = json.loads((REPO / "models" / "demo" / "metrics.json").read_text())
    for k in [*KEYS, "rsum"]:
        assert table.loc["shipped", f"test_{k}"] == pytest.approx(shipped["test"][k])
    assert set(table.index) <= set(rs.RECIPES)
    for name, row in table.iterrows():
        overrides = "" if pd.isna(row["overrides"]) else row["overrides"]
        assert overrides == " ".join(rs.RECIPES[name][1])
        assert row["test_rsum"] == pytest.approx(sum(row[f"test_{k}"] for k in KEYS), abs=0.05)
        assert row["data_sha256"] == shipped["data"]["sha256"]
