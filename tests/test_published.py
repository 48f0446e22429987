"""The published table holds only verified numbers, consistent with the protocol's arithmetic."""

from __future__ import annotations

import math

import pytest

from daimlib.published import BENCHMARK_NAMES, published_rows, published_table


def test_daim_and_hat_carry_no_numbers_only_their_abstract_claims():
    df = published_table().set_index("method")
    numeric = [c for c in df.columns if c.split()[-1] in ("i2t", "t2i", "RSUM")]
    assert len(numeric) == 9
    for m in ("DAIM", "HAT (ACM MM'23)"):
        assert df.loc[m, numeric].isna().all()
    assert "4.7% RSUM" in df.loc["DAIM", "claim"]
    assert "7.6%" in df.loc["HAT (ACM MM'23)", "claim"] and "16.7%" in df.loc["HAT (ACM MM'23)", "claim"]


def test_values_are_valid_recalls_and_rsum_bounds_hold():
    for b in BENCHMARK_NAMES:
        rows = published_rows(b)
        for method, r in rows.iterrows():
            if math.isnan(r["RSUM"]):
                assert math.isnan(r["R@1 i2t"]) and math.isnan(r["R@1 t2i"])
                continue
            assert 0 < r["R@1 t2i"] < r["R@1 i2t"] <= 100  # every verified row retrieves text better
            # RSUM = R@1+R@5+R@10 both ways, R@10 >= R@5 >= R@1 and <= 100:
            assert 3 * (r["R@1 i2t"] + r["R@1 t2i"]) <= r["RSUM"] + 1e-9 <= 600, (b, method)
            assert r["RSUM"] <= r["R@1 i2t"] + r["R@1 t2i"] + 400


def test_coco_1k_reads_higher_than_5k_for_every_method_with_both():
    df = published_table()
    both = df.dropna(subset=["COCO 1K RSUM", "COCO 5K RSUM"])
    assert len(both) == 3
    assert (both["COCO 1K RSUM"] > both["COCO 5K RSUM"]).all()


def test_field_notes_values_and_ensembles_marked():
    f30k = published_rows("f30k")
    assert tuple(f30k.loc["VSE++", ["R@1 i2t", "R@1 t2i", "RSUM"]]) == (52.9, 39.6, 409.8)
    assert tuple(published_rows("coco5k").loc["CLIP zero-shot", ["R@1 i2t", "R@1 t2i", "RSUM"]]) == (
        52.4,
        33.1,
        374.2,
    )
    assert math.isnan(published_rows("coco1k").loc["D2S-VSE", "RSUM"])
    df = published_table().set_index("method")
    assert df["ensemble"].to_dict() == {m: m.endswith("*") for m in df.index}
    with pytest.raises(ValueError, match="unknown benchmark"):
        published_rows("f8k")


def test_paper_block_keeps_rows_of_the_wrong_split_size_out():
    from daimlib.published import paper_block

    m = {"i2t_r1": 70.0, "t2i_r1": 55.0, "rsum": 480.0}
    table = paper_block(
        "f30k", {"kit, F30K 1K": (m, 1000), "kit, 100 images": (m, 100), "kit, not run": None}
    )
    published = published_rows("f30k").dropna(subset=["RSUM"])
    assert list(table.index[: len(published)]) == list(published.index)  # the verified rows first, unchanged
    assert table.loc["kit, F30K 1K", ["R@1 i2t", "R@1 t2i", "RSUM"]].tolist() == [70.0, 55.0, 480.0]
    small = table.loc["kit, 100 images"]
    assert math.isnan(small["RSUM"]) and math.isnan(small["R@1 i2t"])
    assert small["source"] == "not comparable: measured on 100 test images (F30K 1K needs 1,000)"
    assert table.loc["kit, not run", "source"] == "not run"
    coco = paper_block("coco1k", {"kit": (m, 1000)})  # 1,000 images is one fold, not COCO 1K
    assert math.isnan(coco.loc["kit", "RSUM"]) and "needs 5,000" in coco.loc["kit", "source"]
