"""The three-arm comparison of notebooks 05, 06 and 08 (issue 9 items 3-4, issue 10): the arms'
configs differ one thing at a time, the seed spread and the gaps are what numpy computes, score
matrices are cached by weights and data, and the SCAN invariances notebook 08's exercise states.
"""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from daimlib.config import flatten
from daimlib.course import nb
from daimlib.similarity import scan
from experiments import recipe_search as rs
from experiments.ablation import ablation_runs


def _diff(a, b) -> set[str]:
    fa, fb = flatten(a.to_dict()), flatten(b.to_dict())
    return {k for k in set(fa) | set(fb) if k not in ("name", "notes") and str(fa.get(k)) != str(fb.get(k))}


# --- the arms ---------------------------------------------------------------------------------


@pytest.mark.parametrize("preset", ["demo", "daim_f30k", "tiny"])
def test_each_step_of_the_comparison_changes_one_named_thing(preset):
    cfgs = nb.comparison_configs(preset, **{"train.max_steps": 7})
    assert list(cfgs) == list(nb.ARM_ORDER) == ["hat", "baseline", "daim"]
    assert _diff(cfgs["hat"], cfgs["baseline"]) == {"similarity.direction"}
    assert (cfgs["hat"].similarity.direction, cfgs["baseline"].similarity.direction) == ("i2t", "t2i")
    fdm_mom = _diff(cfgs["baseline"], cfgs["daim"])
    assert "loss.adaptive" in fdm_mom and "fdm.image_blocks" in fdm_mom
    assert all(k == "loss.adaptive" or k.startswith("fdm.") for k in fdm_mom), fdm_mom
    assert all(c.train.max_steps == 7 for c in cfgs.values())  # the overrides reach every arm
    assert len({c.name for c in cfgs.values()}) == 3  # three run folders


def test_the_demo_arms_are_the_shipped_presets():
    cfgs = nb.comparison_configs("demo")
    assert (
        {k: c.name for k, c in cfgs.items()}
        == nb.DEMO_ARMS
        == {"hat": "demo_hat", "baseline": "demo_baseline", "daim": "demo"}
    )


def test_shipped_models_only_for_the_demo_data_and_preset():
    assert nb.uses_shipped_models("demo", "demo")
    assert not nb.uses_shipped_models("demo", "demo", smoke=True)
    assert not nb.uses_shipped_models("demo", "tiny")
    assert not nb.uses_shipped_models("runs/smoke/data/f30k_like", "demo")
    assert not nb.uses_shipped_models("demo", "demo", overrides={"train.lr": 1e-3})
    assert not nb.uses_shipped_models("demo", "demo", baseline="hat_f30k")


# --- the seed spread ---------------------------------------------------------------------------


def _runs(rng, variants=("baseline", "daim"), seeds=range(5), drop=()):
    rows = [
        {"variant": v, "seed": s, "rsum": float(rng.normal(250, 10)), "t2i_r1": float(rng.normal(15, 2))}
        for v in variants
        for s in seeds
        if (v, s) not in drop
    ]
    return pd.DataFrame(rows)


def test_seed_spread_is_numpys():
    rng = np.random.default_rng(1)
    runs = _runs(rng, drop={("daim", 3)})
    spread = nb.seed_spread(runs)
    for v in ("baseline", "daim"):
        x = runs.loc[runs["variant"] == v, "rsum"].to_numpy()
        assert spread.loc[v, "n"] == x.size
        assert spread.loc[v, "mean"] == pytest.approx(x.mean())
        assert spread.loc[v, "sd"] == pytest.approx(np.std(x, ddof=1))
        assert (spread.loc[v, "min"], spread.loc[v, "max"]) == (x.min(), x.max())
    assert "final margin (mean)" not in spread
    runs["final_margin"] = np.where(runs["variant"] == "daim", 0.9, 0.2)
    assert nb.seed_spread(runs)["final margin (mean)"].to_dict() == pytest.approx(
        {"baseline": 0.2, "daim": 0.9}
    )


def test_paired_gap_pairs_by_seed():
    rng = np.random.default_rng(2)
    runs = _runs(rng, drop={("daim", 3), ("baseline", 0)})
    g = nb.paired_gap(runs, "baseline", "daim")
    common = [1, 2, 4]
    by = {(r.variant, r.seed): r.rsum for r in runs.itertuples()}
    d = np.array([by["daim", s] - by["baseline", s] for s in common])
    assert g["n"] == 3
    assert g["mean"] == pytest.approx(d.mean())
    assert g["sd"] == pytest.approx(np.std(d, ddof=1))
    assert nb.paired_gap(runs, "baseline", "fdm")["n"] == 0  # a variant not run yet


def test_gap_table_values_and_the_spread_beside_each_gap():
    rng = np.random.default_rng(3)
    runs = _runs(rng)
    t = nb.gap_table({"hat": 150.0, "baseline": 260.0, "daim": 255.0}, runs)
    assert list(t.index) == ["direction", "FDM+MOM"]
    assert t.loc["direction", "gap (to - from)"] == pytest.approx(110.0)
    assert t.loc["FDM+MOM", "gap (to - from)"] == pytest.approx(-5.0)
    base = runs.loc[runs["variant"] == "baseline", "rsum"].to_numpy()
    assert t.loc["direction", "seed sd of a gap (300 steps)"] == pytest.approx(
        np.std(base, ddof=1) * math.sqrt(2)
    )
    assert t.loc["FDM+MOM", "seed sd of a gap (300 steps)"] == pytest.approx(
        nb.paired_gap(runs, "baseline", "daim")["sd"]
    )
    # with an i2t variant in the ablation the direction gap is paired too
    runs_hat = pd.concat([runs, _runs(rng, variants=("hat",))])
    t2 = nb.gap_table({"hat": 150.0, "baseline": 260.0, "daim": 255.0}, runs_hat)
    assert t2.loc["direction", "seed sd of a gap (300 steps)"] == pytest.approx(
        nb.paired_gap(runs_hat, "hat", "baseline")["sd"]
    )
    # a missing arm drops its gaps; no ablation: no spread columns
    t3 = nb.gap_table({"baseline": 260.0, "daim": 255.0})
    assert list(t3.index) == ["FDM+MOM"] and "seeds" not in t3


def _recipe_csv(path, values: dict[str, float]):
    keys = ["i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10"]
    rows = [{"recipe": r, **{f"test_{k}": v / 6 for k in keys}, "test_rsum": v} for r, v in values.items()]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_long_run_seeds_and_their_welch_gap(tmp_path):
    from scipy import stats as st

    csv = _recipe_csv(
        tmp_path / "runs.csv",
        {
            "hat_shipped": 350.0,
            "hat_seed1": 80.0,
            "hat_seed3": 300.0,
            "baseline_shipped": 398.0,
            "baseline_seed1": 402.0,
            "shipped": 394.0,
            "wide": 438.0,
        },
    )
    long = rs.long_run_seeds(csv)
    # seeds come from each recipe's place in LONG_RUN_RECIPES; recipes of other groups are not arms
    assert [tuple(r) for r in long[["arm", "seed", "rsum"]].itertuples(index=False)] == [
        ("hat", 0, 350.0),
        ("hat", 1, 80.0),
        ("hat", 3, 300.0),
        ("baseline", 0, 398.0),
        ("baseline", 1, 402.0),
        ("daim", 0, 394.0),
    ]
    assert long.loc[0, "t2i_r1"] == pytest.approx(350.0 / 6)
    t = nb.gap_table({"hat": 350.0, "baseline": 398.0, "daim": 394.0}, long_runs=long)
    d = t.loc["direction"]
    assert d["gap (to - from)"] == pytest.approx(48.0)  # the seed-0 values passed in
    assert d["12-epoch gap of the seed means"] == pytest.approx(400.0 - 730.0 / 3)
    assert d["12-epoch seeds (from, to)"] == "3, 2"
    p = st.ttest_ind([398.0, 402.0], [350.0, 80.0, 300.0], equal_var=False).pvalue
    assert d["p (Welch)"] == f"{p:.2f}"
    se = (np.var([350.0, 80.0, 300.0], ddof=1) / 3 + np.var([398.0, 402.0], ddof=1) / 2) ** 0.5
    df = se**4 / (
        (np.var([350.0, 80.0, 300.0], ddof=1) / 3) ** 2 / 2 + (np.var([398.0, 402.0], ddof=1) / 2) ** 2 / 1
    )
    half = st.t.ppf(0.975, df) * se
    assert (
        d["95% CI (Welch)"]
        == f"[{d['12-epoch gap of the seed means'] - half:+.1f}, {d['12-epoch gap of the seed means'] + half:+.1f}]"
    )
    f = t.loc["FDM+MOM"]  # one DAIM seed: a mean gap but no interval
    assert f["12-epoch gap of the seed means"] == pytest.approx(394.0 - 400.0)
    assert f["95% CI (Welch)"] == "needs 2 seeds of each" and f["p (Welch)"] == ""
    assert rs.long_run_seeds(tmp_path / "missing.csv").empty


def test_long_run_recipes_are_the_recipe_search_seed_groups():
    for arm, group in (("hat", "hat"), ("baseline", "baseline"), ("daim", "narrow")):
        assert list(rs.LONG_RUN_RECIPES[arm]) == rs.SEED_GROUPS[group][1]
        for k, recipe in enumerate(rs.LONG_RUN_RECIPES[arm]):  # the k-th recipe trains seed k
            overrides = rs.RECIPES[recipe][1]
            assert (f"train.seed={k}" in overrides) if k else not any("train.seed" in o for o in overrides)
            assert rs.PRESET.get(recipe, "demo") == nb.DEMO_ARMS[arm] or recipe in rs.SHIPPED
        assert rs.SHIPPED[rs.LONG_RUN_RECIPES[arm][0]] == nb.DEMO_ARMS[arm]
    for k, recipe in enumerate(
        rs.ADAPTIVE_HAT_RECIPES
    ):  # the i2t arm again, seed k, with the adaptive warm-up
        overrides = rs.RECIPES[recipe][1]
        assert rs.PRESET[recipe] == nb.DEMO_ARMS["hat"] and "loss.warmup_until=0.1" in overrides
        assert (f"train.seed={k}" in overrides) if k else not any("train.seed" in o for o in overrides)


def test_warmup_runs_are_the_recipe_rows_of_the_arms_and_the_adaptive_seeds(tmp_path):
    cols = {"warmup_end": 150, "flat_ratio_end_fixed": 0.2, "rows_right_after_warmup": 30.0}
    rows = [
        {"recipe": "hat_shipped", "test_rsum": 350.0, **cols},
        {
            "recipe": "hat_seed3",
            "test_rsum": 77.5,
            **cols,
            "flat_ratio_end_fixed": 0.69,
            "rows_right_after_warmup": 5.5,
        },
        {
            "recipe": "hat_seed3_adaptive",
            "test_rsum": 257.5,
            **cols,
            "warmup_end": 712,
            "flat_ratio_end_fixed": 0.69,
        },
        {"recipe": "seed1", "test_rsum": 398.8, **cols},
        {"recipe": "wide", "test_rsum": 438.3, **cols},
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "runs.csv", index=False)
    wu = rs.warmup_runs(tmp_path / "runs.csv")
    assert [tuple(r) for r in wu.itertuples(index=False)] == [
        ("hat", 0, "fixed 150", 0.2, 150, 30.0, 350.0),
        ("hat", 3, "fixed 150", 0.69, 150, 5.5, 77.5),
        ("daim", 1, "fixed 150", 0.2, 150, 30.0, 398.8),
        ("hat", 3, "adaptive", 0.69, 712, 30.0, 257.5),
    ]
    assert rs.warmup_runs(tmp_path / "missing.csv").empty
    committed = rs.warmup_runs()  # the committed rows: seed k of the adaptive arm is the recipe's train.seed
    for seed in committed.loc[committed["warm-up"] == "adaptive", "seed"]:
        assert rs.ADAPTIVE_HAT_RECIPES[seed] == f"hat_seed{seed}_adaptive"


def test_ablation_runs_from_result_files_else_the_committed_csv(tmp_path):
    rows = [{"variant": "baseline", "seed": s, "rsum": 240.0 + s} for s in range(3)]
    for r in rows:
        d = tmp_path / "runs" / f"{r['variant']}_seed{r['seed']}"
        d.mkdir(parents=True)
        (d / "result.json").write_text(json.dumps({"row": r, "config": {}}))
    (tmp_path / "runs" / "unfinished").mkdir()  # a run without result.json is not counted
    runs, source = ablation_runs(csv=tmp_path / "runs.csv", run_dir=tmp_path / "runs")
    assert sorted(runs["rsum"]) == [240.0, 241.0, 242.0] and "3 finished runs" in source
    pd.DataFrame([{"variant": "daim", "seed": 0, "rsum": 1.0}]).to_csv(tmp_path / "runs.csv", index=False)
    runs, source = ablation_runs(csv=tmp_path / "runs.csv", run_dir=tmp_path / "runs")
    assert list(runs["variant"]) == ["daim"] and source.endswith("runs.csv")
    empty, source = ablation_runs(csv=tmp_path / "no.csv", run_dir=tmp_path / "nothing")
    assert empty.empty and source.startswith("none")


# --- cached score matrices ---------------------------------------------------------------------


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.usefixtures("one_torch_thread")
def test_arm_scores_are_cached_by_weights_and_data(tiny_cfg, demo_root, tmp_path):
    from daimlib.data import load_split, load_tokenizer
    from daimlib.model import DAIM

    split = load_split(tiny_cfg.data, demo_root, "test")
    model = DAIM.from_config(tiny_cfg).eval()
    arm = SimpleNamespace(
        model=model,
        cfg=tiny_cfg,
        tokenizer=load_tokenizer(tiny_cfg.text, demo_root),
        score_dir=tmp_path / "scores",
        weights_sha256="a" * 64,
    )
    first = nb.arm_scores(arm, split)
    assert first.shape == (split.n_images, split.n_captions)
    with (
        torch.no_grad()
    ):  # the same model scored pair by pair: the matrix is its scores, not a copy of another
        from daimlib.data import CaptionDataset, build_transforms, collate

        pairs = CaptionDataset(
            split, arm.tokenizer, build_transforms(tiny_cfg.data, train=False), tiny_cfg.text.max_len
        )
        b = collate([pairs[j] for j in range(split.n_captions)])
        img = model.encode_image(b["images"][:: split.n_captions // split.n_images])
        txt, lens = model.encode_text(b["input_ids"], b["attention_mask"])
        direct = model.similarity(img, txt, lens).numpy()
    np.testing.assert_allclose(first, direct, atol=1e-4)
    npy = tmp_path / "scores" / "sims_test.npy"
    np.save(npy, first + 1.0)  # a cache with the same key is read back as it is
    np.testing.assert_allclose(nb.arm_scores(arm, split), first + 1.0)
    arm.weights_sha256 = "b" * 64  # other weights: scored again
    np.testing.assert_allclose(nb.arm_scores(arm, split), first, atol=1e-5)
    arm.weights_sha256, arm.score_dir = None, tmp_path / "never"  # no weight hash: nothing is written
    nb.arm_scores(arm, split)
    assert not (tmp_path / "never").exists()


# --- notebook 08, exercise 1: what SCAN's scores do and do not depend on -----------------------


@pytest.mark.parametrize("direction", ["t2i", "i2t"])
def test_scan_changes_under_an_offset_but_not_under_rotation_or_rescaling(direction):
    g = torch.Generator().manual_seed(0)
    img = torch.randn(6, 4, 16, generator=g)
    txt = torch.randn(10, 7, 16, generator=g)
    lens = torch.tensor([7, 5, 3, 7, 2, 6, 4, 7, 1, 5])
    s0 = scan(img, txt, lens, direction)
    offset = torch.randn(16, generator=g)
    assert (
        scan(img + offset, txt, lens, direction) - s0
    ).abs().max() > 1e-2  # a global offset changes scores
    q, _ = torch.linalg.qr(torch.randn(16, 16, generator=g))
    torch.testing.assert_close(scan(img @ q, txt @ q, lens, direction), s0, atol=1e-5, rtol=1e-5)
    a = torch.rand(6, 1, 1, generator=g) * 5 + 0.1  # one positive factor per image
    c = torch.rand(10, 1, 1, generator=g) * 5 + 0.1  # one per caption
    torch.testing.assert_close(scan(img * a, txt * c, lens, direction), s0, atol=1e-5, rtol=1e-5)
    w = torch.ones(10, 7, 1)
    w[:, 0] = 3.0  # rescaling one word of every caption is not divided out
    assert (scan(img, txt * w, lens, direction) - s0).abs().max() > 1e-3


# --- the readings of 03, 04, 05, 06 and 08 quote only what their cells printed (issue 9 item 7) ---

_NUMBER = __import__("re").compile(r"[−-]?\d+\.\d+")


@pytest.mark.parametrize(
    "notebook, heading",
    [
        ("05_training.ipynb", "What the long runs show"),
        ("06_evaluation_and_tables.ipynb", "Reading the tables"),
        ("08_feature_separation.ipynb", "The numbers of this run"),
        ("09_ablation.ipynb", "What the table says"),
        ("05_training.ipynb", "Reading the runs"),
        ("05_training.ipynb", "Reading the live run"),
        ("03_feature_discriminability.ipynb", "**Comparison 1"),
        ("03_feature_discriminability.ipynb", "DAIM's $s = 0.1$ is a gentle push"),
        ("03_feature_discriminability.ipynb", "With attention only"),
        ("04_adaptive_margin.ipynb", "- **reference**"),
    ],
)
def test_every_decimal_of_the_gap_readings_is_printed_above(notebook, heading):
    from pathlib import Path

    cells = json.loads((Path(__file__).resolve().parents[1] / "notebooks" / notebook).read_text())["cells"]
    k = next(
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(heading)
    )
    text = []
    for c in cells[:k]:
        for o in c.get("outputs", []):
            text.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    printed = np.array([float(x.replace("−", "-")) for x in _NUMBER.findall("\n".join(text))])
    for quoted in _NUMBER.findall("".join(cells[k]["source"])):
        x, places = float(quoted.replace("−", "-")), len(quoted.split(".")[1])
        close = np.abs(np.round(printed, places) - x) < 0.5 * 10**-places + 1e-9
        assert close.any(), f"{notebook} {heading!r} quotes {quoted}, which no code cell above prints"
