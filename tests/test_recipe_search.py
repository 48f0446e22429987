"""experiments/recipe_search.py: the collected table is what the run folders hold (hand-made folders),
and the committed results/recipe_search/runs.csv agrees with the shipped model it quotes."""

import json
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS_DOC = REPO / "docs" / "results.md"  # the page that quotes the demo models' seed runs


from experiments import recipe_search as rs  # noqa: E402

KEYS = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]


def _run_folder(path: Path, val_rsums, best, sha="abc", test=None, shipped=False, warmup_end=150):
    path.mkdir(parents=True)
    n = len(val_rsums)
    steps = range(312 * n)  # the step history: sum of hinges before warmup_end, hardest negatives from it on
    pd.DataFrame(
        {
            "step": steps,
            "loss": [806.4 if k < 150 else 5.0 for k in steps],
            "n_correct": [k % 4 for k in steps],
            "hardest": [k >= warmup_end for k in steps],
        }
    ).to_csv(path / "history_steps.csv", index=False)
    (path / "config.json").write_text(
        json.dumps({"train": {"batch_size": 64}, "loss": {"margin": 0.2, "warmup_steps": 150}})
    )
    pd.DataFrame(
        {
            "epoch": range(n),
            "step": [312 * (e + 1) for e in range(n)],
            "rsum": val_rsums,
            "best": best,
            "epoch_s": [100.0 + e for e in range(n)],
            "elapsed_min": [2.0 * (e + 1) for e in range(n)],
        }
    ).to_csv(path / "history_epochs.csv", index=False)
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
    _run_folder(
        runs / "step6",
        [340.0, 390.0, 395.25, 391.0],
        [True, True, True, False],
        test=dict(zip(KEYS, [31.0, 61.0, 76.0, 36.0, 86.0, 96.0])),
        warmup_end=437,
    )
    (runs / "step4").mkdir(parents=True)  # started, not scored: left out
    table = rs.collect(runs, tmp_path / "out", "data/demo")
    assert list(table["recipe"]) == ["shipped", "step6"]
    assert table["warmup_end"].tolist() == [150, 437]  # the first step with hardest negatives
    # steps 140-149 at half the equal-scores loss 2 * 64 * 63 * 0.2 = 1612.8; rows right 0, 1, 2, 3, 0, ... after
    assert table["flat_ratio_end_fixed"].tolist() == pytest.approx([0.5, 0.5])
    assert table["rows_right_after_warmup"].tolist() == pytest.approx([1.5, 1.5])
    s6 = table.set_index("recipe").loc["step6"]
    assert s6["best_epoch"] == 2 and s6["best_val_rsum"] == 395.25 and s6["last_val_rsum"] == 391.0
    assert s6["epochs"] == 4 and s6["steps"] == 4 * 312 and s6["wall_minutes"] == 8.0
    assert s6["test_rsum"] == pytest.approx(31 + 61 + 76 + 36 + 86 + 96)
    assert s6["val_rsum_by_epoch"] == "340.0 390.0 395.2 391.0"
    assert s6["overrides"] == rs.NARROW + " train.lr_step=6"
    assert table.set_index("recipe").loc["shipped", "best_epoch"] == 1
    assert pd.read_csv(tmp_path / "out" / "runs.csv")["test_rsum"].tolist() == pytest.approx(
        table["test_rsum"].tolist()
    )


def test_collect_keeps_committed_rows_of_recipes_not_run_here(tmp_path, monkeypatch):
    """Run folders do not outlive a session: a recipe finished earlier keeps its committed row, one
    finished here replaces its row, one never finished stays out."""
    monkeypatch.setattr(rs, "REPO", tmp_path)
    monkeypatch.setattr(rs, "train_fit", _fake_fit)
    _run_folder(tmp_path / "models" / "demo", [350.0, 380.5], [True, True], shipped=True)
    runs, out = tmp_path / "runs", tmp_path / "out"
    _run_folder(runs / "step6", [340.0, 390.0], [True, True])
    first = rs.collect(runs, out, "data/demo")
    (tmp_path / "runs2").mkdir()
    _run_folder(
        tmp_path / "runs2" / "wide",
        [360.0, 401.5],
        [True, True],
        test=dict(zip(KEYS, [40.0, 70.0, 85.0, 41.0, 90.0, 97.0])),
    )
    second = rs.collect(tmp_path / "runs2", out, "data/demo").set_index("recipe")
    assert list(second.index) == ["shipped", "step6", "wide"]  # RECIPES order
    assert second.loc["wide", "test_rsum"] == pytest.approx(40 + 70 + 85 + 41 + 90 + 97)
    kept = first.set_index("recipe").loc["step6"]
    for col in ("test_rsum", "best_val_rsum", "val_rsum_by_epoch", "overrides", "data_sha256"):
        assert str(second.loc["step6", col]) == str(kept[col])
    assert pd.read_csv(out / "runs.csv")["recipe"].tolist() == ["shipped", "step6", "wide"]


def test_collect_refuses_recipes_scored_on_different_data(tmp_path, monkeypatch):
    monkeypatch.setattr(rs, "REPO", tmp_path)
    monkeypatch.setattr(rs, "train_fit", _fake_fit)
    _run_folder(tmp_path / "models" / "demo", [350.0], [True], sha="aaa", shipped=True)
    _run_folder(tmp_path / "runs" / "step6", [350.0], [True], sha="bbb")
    with pytest.raises(ValueError, match="different data"):
        rs.collect(tmp_path / "runs", tmp_path / "out", "data/demo")


@pytest.mark.docs
def test_committed_table_quotes_the_shipped_model_and_known_recipes():
    path = REPO / "results" / "recipe_search" / "runs.csv"
    table = pd.read_csv(path).set_index("recipe")
    shipped = json.loads((REPO / "models" / "demo" / "metrics.json").read_text())
    for k in [*KEYS, "rsum"]:
        assert table.loc["shipped", f"test_{k}"] == pytest.approx(shipped["test"][k])
    assert set(table.index) <= set(rs.RECIPES)
    assert {"shipped", "wide"} <= set(table.index)
    # the recipes name their Swin: NARROW is the preset's (the shipped models'), WIDE twice as wide
    from daimlib.config import load_preset

    narrow, wide = (json.loads(x.split("=", 1)[1]) for x in (rs.NARROW, rs.WIDE))
    assert narrow == load_preset("demo").image.timm_kwargs == load_preset("demo_hat").image.timm_kwargs
    assert wide == {**narrow, "embed_dim": 64, "num_heads": [2, 4, 8, 16]}
    assert set(rs.PRESET) <= set(rs.RECIPES) and set(rs.PRESET.values()) <= {"demo_hat", "demo_baseline"}
    for name, row in table.iterrows():
        overrides = "" if pd.isna(row["overrides"]) else row["overrides"]
        assert overrides == " ".join(rs.RECIPES[name][1])
        assert row["test_rsum"] == pytest.approx(sum(row[f"test_{k}"] for k in KEYS), abs=0.05)
        assert row["data_sha256"] == shipped["data"]["sha256"]


@pytest.mark.docs
def test_wide_hat_warmup_table_is_the_committed_losses():
    """The README's warm-up table is recomputed from wide_hat_warmup.csv, and what it says holds:
    the equal-scores loss is 2*B*(B-1)*m, wide seed 0 stays at it, the shipped narrow arm leaves it."""
    import re

    losses = pd.read_csv(REPO / "results" / "recipe_search" / "wide_hat_warmup.csv")
    readme = (REPO / "results" / "recipe_search" / "README.md").read_text()
    flat = 2 * 64 * 63 * 0.2
    assert f"{flat:.1f}" in readme
    for probe, g in losses.groupby("probe", sort=False):
        assert (g["step"].to_numpy() == range(len(g))).all(), probe
        first, last = g["loss"].iloc[:10].mean(), g["loss"].iloc[-10:].mean()
        row = re.search(
            rf"\| `{re.escape(probe)}` \| (\w+) \| (\d+) \| [^|]+ \| (\d+) \| (\d+) \| ([\d.]+) \| ([\d.]+) \| ([^|]+) \|",
            readme,
        )
        assert row, f"README has no row for {probe}"
        assert [row.group(1), int(row.group(2)), int(row.group(3)), int(row.group(4))] == [
            g["swin"].iloc[0],
            g["seed"].iloc[0],
            g["warmup_steps"].iloc[0],
            len(g),
        ]
        assert float(row.group(5)) == pytest.approx(first, abs=0.05) and float(row.group(6)) == pytest.approx(
            last, abs=0.05
        )
        # "starts at step": a naive scan for the first 10-step window whose mean is below 90 % of flat
        loss = g["loss"].tolist()
        start = next((i for i in range(9, len(loss)) if sum(loss[i - 9 : i + 1]) / 10 < 0.9 * flat), None)
        assert row.group(7).strip() == (str(start) if start is not None else f"none in {len(g)}"), probe
    by = losses.groupby("probe")["loss"]
    assert abs(by.mean()["wide_hat"] - flat) < 0.01 * flat  # never left the flat start
    assert by.apply(lambda x: x.iloc[-10:].mean())["shipped_demo_hat"] < 0.25 * flat


@pytest.mark.docs
def test_the_seed_difference_both_readmes_quote_is_the_committed_rows():
    table = pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv").set_index("recipe")
    a, b = table.loc["wide", "test_rsum"], table.loc["wide_seed1", "test_rsum"]
    gap = f"{a - b:.1f}"
    for readme in (RESULTS_DOC, REPO / "results" / "recipe_search" / "README.md"):
        text = readme.read_text()
        assert f"differ by {gap} test RSUM" in text and f"{b:.1f}" in text and f"{a:.1f}" in text, readme
    # the README table's rows are the committed ones
    text = RESULTS_DOC.read_text()
    for name in ("shipped", "wide", "wide_seed1", "wide_seed2", "seed1", "wide_baseline", "wide_hat"):
        row = table.loc[name]
        assert f"| {row['test_rsum']:.1f} | {row['train500_rsum']:.1f} |" in text.replace("**", ""), name


def _seed_table(values: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame({"recipe": list(values), "test_rsum": list(values.values())})


def test_seed_summary_against_hand_worked_numbers():
    from scipy import stats as st

    from daimlib.course.stats import seeds_needed

    table, cmps = rs.seed_summary(
        _seed_table(
            {
                "shipped": 390.0,
                "seed1": 400.0,
                "wide": 430.0,
                "wide_seed1": 440.0,
                "wide_seed2": 450.0,
                "step6": 1.0,
                "hat_shipped": 350.0,
                "hat_seed1": 80.0,
                "baseline_shipped": 398.0,
            }
        )
    )
    t = table.set_index("group")
    assert t.loc["narrow", "mean"] == pytest.approx(395.0) and t.loc["wide", "mean"] == pytest.approx(440.0)
    assert t.loc["narrow", "sd"] == pytest.approx(50**0.5) and t.loc["wide", "sd"] == pytest.approx(10.0)
    h = 12.7062047 * 50**0.5 / 2**0.5  # t_{0.975, 1} * sd / sqrt(2)
    assert t.loc["narrow", "95% CI"] == f"[{395 - h:.1f}, {395 + h:.1f}]"
    assert t.loc["wide", "test RSUM per seed"] == "430.0 440.0 450.0"
    assert t.loc["hat", "test RSUM per seed"] == "350.0 80.0" and t.loc["hat", "mean"] == pytest.approx(215.0)
    assert t.loc["baseline", "seeds"] == 1 and t.loc["baseline", "95% CI"] == "-"
    c = cmps["width"]  # wide - narrow
    ref = st.ttest_ind([430.0, 440.0, 450.0], [390.0, 400.0], equal_var=False)
    assert c["diff"] == pytest.approx(45.0) and c["p"] == pytest.approx(ref.pvalue)
    se = (50 / 2 + 100 / 3) ** 0.5
    df = se**4 / ((50 / 2) ** 2 / 1 + (100 / 3) ** 2 / 2)
    assert c["df"] == pytest.approx(df) and c["hi"] - c["diff"] == pytest.approx(st.t.ppf(0.975, df) * se)
    pooled = ((1 * 50 + 2 * 100) / 3) ** 0.5
    assert c["pooled_sd"] == pytest.approx(pooled)
    assert c["seeds_needed"] == seeds_needed(45.0, pooled, paired=False)
    # one baseline seed: the direction and FDM+MOM differences cannot be tested yet
    assert cmps["direction"] is None and cmps["fdm_mom"] is None


def test_seed_summary_direction_is_baseline_minus_hat():
    from scipy import stats as st

    values = {
        "hat_shipped": 350.0,
        "hat_seed1": 80.0,
        "hat_seed2": 300.0,
        "baseline_shipped": 398.0,
        "baseline_seed1": 402.0,
    }
    _, cmps = rs.seed_summary(_seed_table(values))
    c = cmps["direction"]
    assert c["diff"] == pytest.approx(400.0 - 730.0 / 3)  # t2i minus i2t
    ref = st.ttest_ind([398.0, 402.0], [350.0, 80.0, 300.0], equal_var=False)
    assert c["p"] == pytest.approx(ref.pvalue) and c["lo"] < 0 < c["hi"] is not None
    assert cmps["width"] is None


def test_seed_summary_needs_two_seeds_of_each():
    with pytest.raises(ValueError, match="two finished seeds"):
        rs.seed_summary(_seed_table({"shipped": 390.0, "wide": 430.0, "wide_seed1": 440.0}))


@pytest.mark.docs
def test_readmes_quote_the_committed_seed_summary(capsys):
    """What ``recipe_search.py --seeds`` prints from the committed runs.csv is what the READMEs say."""
    rs.print_seed_summary(REPO / "results" / "recipe_search" / "runs.csv")
    printed = [line for line in capsys.readouterr().out.strip().splitlines() if line]
    results = (REPO / "results" / "recipe_search" / "README.md").read_text()
    for line in printed:  # the table and one line per comparison
        assert line in results, line
    _, cmps = rs.seed_summary(pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv"))
    readme = RESULTS_DOC.read_text()
    for name, c in cmps.items():
        assert c is not None, f"{name}: runs.csv lacks the seeds of {rs.COMPARISONS[name][:2]}"
        assert f"{c['diff']:+.1f} test RSUM (95% CI [{c['lo']:.1f}, {c['hi']:.1f}]" in readme, name


@pytest.mark.docs
def test_the_arms_by_seed_table_and_the_numbers_beside_it_are_the_committed_rows():
    """README's table of the three arms by seed, and what both READMEs say of the i2t arm's seeds,
    recomputed from runs.csv (seed k of an arm: the k-th recipe of its SEED_GROUPS entry)."""
    import statistics

    table = pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv").set_index("recipe")
    readme = RESULTS_DOC.read_text()
    for arm, group in (("demo_hat", "hat"), ("demo_baseline", "baseline"), ("demo", "narrow")):
        x = [float(table.loc[r, "test_rsum"]) for r in rs.SEED_GROUPS[group][1]]
        cells = "".join(f" {v:.1f} |" for v in x) + " |" * (4 - len(x))
        row = f"| `{arm}` |{cells} {statistics.mean(x):.1f} ± {statistics.stdev(x):.1f} |"
        assert row in readme, row
    # the two i2t seeds that never start, and the one that beats every other run
    results = (REPO / "results" / "recipe_search" / "README.md").read_text()
    stuck = table.loc[["hat_seed1", "hat_seed3"]]
    assert (stuck["test_rsum"] < 100).all()
    assert (
        f"best\n  val RSUM {stuck['best_val_rsum'].iloc[0]:.1f} and {stuck['best_val_rsum'].iloc[1]:.1f}"
        in results
    )
    assert f"{stuck['train500_rsum'].iloc[0]:.1f} and {stuck['train500_rsum'].iloc[1]:.1f} on 500" in results
    best = table["test_rsum"].idxmax()
    assert best == "hat_seed2" and (table["test_rsum"] >= 450).sum() == 1
    assert f"**{table.loc[best, 'test_rsum']:.1f}**" in results and "only one above 450" in results
    base = [float(table.loc[r, "test_rsum"]) for r in rs.SEED_GROUPS["baseline"][1]]
    assert f"agree within {max(base) - min(base):.1f}" in results
    pairs = zip(
        rs.SEED_GROUPS["narrow"][1], rs.SEED_GROUPS["baseline"][1]
    )  # DAIM and baseline of seeds 0, 1, 2
    d = [table.loc[a, "test_rsum"] - table.loc[b, "test_rsum"] for a, b in pairs]
    assert (
        f"by seed, {d[0]:.1f} (seed 0), {d[1]:.1f} (seed 1) and {d[2]:+.1f} (seed 2)".replace("-", "−")
        in results
    )
    daim = [float(table.loc[r, "test_rsum"]) for r in rs.SEED_GROUPS["narrow"][1]]
    assert (
        f"DAIM's three\n  within {max(daim) - min(daim):.1f} ({min(daim):.1f} to {max(daim):.1f})" in results
    )


@pytest.mark.docs
def test_the_demo_hat_preset_notes_quote_its_seeds():
    from daimlib.config import PRESET_NOTES

    table = pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv").set_index("recipe")["test_rsum"]
    notes = " ".join(PRESET_NOTES["demo_hat"][1].split())
    hat = [table[r] for r in rs.SEED_GROUPS["hat"][1]]
    base = [table[r] for r in rs.SEED_GROUPS["baseline"][1]]
    assert (
        f"test RSUM {hat[0]:.1f} (seed 0, the shipped model), {hat[1]:.1f}, {hat[2]:.1f} and {hat[3]:.1f}"
        in notes
    )
    assert f"reach {min(base):.1f}-{max(base):.1f}" in notes


@pytest.mark.docs
def test_the_warmup_table_and_what_the_readme_says_of_it_are_the_committed_rows(capsys):
    """``--warmup`` prints from runs.csv what the results README shows, and its reading holds: every run
    whose warm-up was at most 0.25 of the flat loss by step 150 trained, every run at 0.6 or more that
    switched at step 150 stalled, and the adaptive warm-up ended later and scored higher on the same seeds."""
    rs.print_warmup_table(REPO / "results" / "recipe_search" / "runs.csv")
    printed = [line for line in capsys.readouterr().out.splitlines() if line]
    results = (REPO / "results" / "recipe_search" / "README.md").read_text()
    assert len(printed) >= 2 + 14
    for line in printed:
        assert line in results, line
    t = (
        pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv")
        .set_index("recipe")
        .loc[
            [
                r
                for r in rs.WARMUP_RUNS
                if r in set(pd.read_csv(REPO / "results" / "recipe_search" / "runs.csv")["recipe"])
            ]
        ]
    )
    fixed = t[~t.index.str.endswith("_adaptive")]  # the fixed 150-step warm-up
    assert (fixed["warmup_end"] == 150).all()
    started, stalled = (
        fixed[fixed["flat_ratio_end_fixed"] <= 0.25],
        fixed[fixed["flat_ratio_end_fixed"] >= 0.6],
    )
    assert len(started) + len(stalled) == len(fixed) and len(stalled) == 3
    assert (started["test_rsum"] > 340).all() and (stalled["test_rsum"] < 100).all()
    assert started["rows_right_after_warmup"].min() > 2 * stalled["rows_right_after_warmup"].max() > 0
    for seed in (1, 3):  # the stalled seeds: a longer warm-up, and they train
        a, f = t.loc[f"hat_seed{seed}_adaptive"], t.loc[f"hat_seed{seed}"]
        assert a["flat_ratio_end_fixed"] == f["flat_ratio_end_fixed"]  # the same run up to step 150
        assert a["warmup_end"] > 150 and a["test_rsum"] > f["test_rsum"] + 50
        assert f"{a['test_rsum']:.1f}" in results and f"{int(a['warmup_end'])}" in results
    adaptive = t[t.index.str.endswith("_adaptive")]
    assert (
        adaptive["rows_right_after_warmup"] > 2 * stalled["rows_right_after_warmup"].max()
    ).all()  # all four train
    # seeds 0 and 2 had left the flat start by step 150: the adaptive rule ends their warm-up within 20 steps of it
    assert (adaptive.loc[["hat_seed0_adaptive", "hat_seed2_adaptive"], "warmup_end"] <= 170).all()
    probes = pd.read_csv(REPO / "results" / "recipe_search" / "adaptive_warmup_probes.csv").set_index("probe")
    assert (
        probes.loc["hat_seed1_until0.1", "warmup_end"] == t.loc["hat_seed1_adaptive", "warmup_end"]
    )  # same rule, same run
    for name, r in probes.iterrows():
        assert f"{r['rows_right_steps_500_699']:.1f}" in results, name
