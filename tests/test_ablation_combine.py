"""ablation.combine: joining the runs.csv of several ablate calls (hand-made tables, hand-worked stats)."""

import json
import statistics

import pandas as pd
import pytest

from experiments.__main__ import main
from experiments.ablation import combine


def _runs(variant, seeds, rsums, split="test"):
    return pd.DataFrame(
        {
            "variant": variant,
            "seed": seeds,
            "split": split,
            "protocol": "demo",
            "t2i_r1": [r / 10 for r in rsums],
            "rsum": rsums,
        }
    )


def _write(tmp_path, name, *frames):
    path = tmp_path / name / "runs.csv"
    path.parent.mkdir(parents=True)
    pd.concat(frames, ignore_index=True).to_csv(path, index=False)
    return path


def test_combine_concatenates_and_summarises_like_a_hand_computation(tmp_path):
    a = _write(tmp_path, "a", _runs("baseline", [0, 1, 2], [250.0, 262.0, 241.0]))
    b = _write(
        tmp_path,
        "b",
        _runs("no_low", [0, 1, 2], [300.5, 280.0, 291.5]),
        _runs("no_mid", [0, 1], [10.0, 30.0]),
    )
    out = tmp_path / "all"
    runs = combine([a, b], out)
    assert list(runs["variant"]) == ["baseline"] * 3 + ["no_low"] * 3 + ["no_mid"] * 2
    summary = pd.read_csv(out / "summary.csv").set_index("variant")
    for variant, values in {
        "baseline": [250.0, 262.0, 241.0],
        "no_low": [300.5, 280.0, 291.5],
        "no_mid": [10.0, 30.0],
    }.items():
        assert summary.loc[variant, "n_seeds"] == len(values)
        assert summary.loc[variant, "rsum_mean"] == pytest.approx(statistics.mean(values))
        assert summary.loc[variant, "rsum_std"] == pytest.approx(statistics.stdev(values))
    assert summary.loc["no_mid", "rsum"] == "20.0 ± 14.1"  # mean 20, sample sd sqrt(200)
    meta = json.loads((out / "summary.json").read_text())
    assert meta["seeds"] == [0, 1, 2] and [m["runs"][-10:] for m in meta["combined_from"]] == [
        "a/runs.csv",
        "b/runs.csv",
    ]
    assert "preset" not in meta  # neither source recorded one
    assert pd.read_csv(out / "runs.csv").shape == (8, 6)


def test_combine_carries_the_sources_preset_and_overrides(tmp_path):
    a = _write(tmp_path, "a", _runs("baseline", [0], [1.0]))
    b = _write(tmp_path, "b", _runs("fdm", [0], [2.0]))
    same = {"preset": "demo", "seeds": [0], "overrides": {"train.max_steps": "300"}}
    for p in (a, b):
        (p.parent / "summary.json").write_text(json.dumps(same))
    combine([a, b], tmp_path / "all")
    meta = json.loads((tmp_path / "all" / "summary.json").read_text())
    assert meta["preset"] == "demo" and meta["overrides"] == {"train.max_steps": "300"}
    (b.parent / "summary.json").write_text(json.dumps({**same, "overrides": {"train.max_steps": "40"}}))
    combine([a, b], tmp_path / "mixed")
    meta = json.loads((tmp_path / "mixed" / "summary.json").read_text())
    assert "overrides" not in meta
    assert [m["overrides"]["train.max_steps"] for m in meta["combined_from"]] == ["300", "40"]


def test_combine_keeps_the_chosen_variants_in_order_and_may_write_over_a_source(tmp_path):
    a = _write(tmp_path, "a", _runs("baseline", [0, 1], [1.0, 2.0]), _runs("fdm", [0, 1], [3.0, 4.0]))
    b = _write(tmp_path, "b", _runs("no_high", [0, 1], [5.0, 6.0]))
    runs = combine([a, b], a.parent, variants=["no_high", "baseline"])
    assert list(runs["variant"]) == ["no_high", "no_high", "baseline", "baseline"]
    assert list(pd.read_csv(a)["rsum"]) == [5.0, 6.0, 1.0, 2.0]
    with pytest.raises(ValueError, match="in none of the tables"):
        combine([b], tmp_path / "x", variants=["fdm"])


def test_combine_refuses_a_run_twice_other_splits_and_foreign_files(tmp_path):
    a = _write(tmp_path, "a", _runs("baseline", [0, 1], [1.0, 2.0]))
    b = _write(tmp_path, "b", _runs("baseline", [1, 2], [2.5, 3.0]))
    with pytest.raises(ValueError, match="baseline seed 1"):
        combine([a, b], tmp_path / "out")
    c = _write(tmp_path, "c", _runs("fdm", [0], [1.0], split="val"))
    with pytest.raises(ValueError, match="different splits"):
        combine([a, c], tmp_path / "out")
    other = tmp_path / "other.csv"
    pd.DataFrame({"x": [1]}).to_csv(other, index=False)
    with pytest.raises(ValueError, match="lacks the columns"):
        combine([other], tmp_path / "out")
    with pytest.raises(FileNotFoundError):
        combine([tmp_path / "nowhere" / "runs.csv"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_ablate_combine_command_prints_the_table_and_exits_2_on_a_user_error(tmp_path, capsys):
    a = _write(tmp_path, "a", _runs("baseline", [0, 1], [250.0, 260.0]))
    b = _write(tmp_path, "b", _runs("no_low", [0, 1], [270.0, 280.0]))
    assert main(["ablate-combine", str(a), str(b), "--out", str(tmp_path / "all")]) == 0
    out = capsys.readouterr().out
    assert "255.0 ± 7.1" in out and "275.0 ± 7.1" in out and "runs.csv" in out
    assert main(["ablate-combine", str(a), str(a), "--out", str(tmp_path / "all")]) == 2
    assert "repeat a (variant, seed) pair" in capsys.readouterr().err
