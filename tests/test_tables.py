"""daimlib.tables: results tables in the paper's order, written as CSV, Markdown and LaTeX."""

import math

import pandas as pd
import pytest

from daimlib import evaluate, history, tables, train

M = {
    "i2t_r1": 50.0,
    "i2t_r5": 80.25,
    "i2t_r10": 90.0,
    "t2i_r1": 40.0,
    "t2i_r5": 70.0,
    "t2i_r10": 85.5,
    "rsum": 415.75,
    "i2t_medr": 1.0,
}


def test_one_copy_and_old_names_still_import():
    assert evaluate.results_table is tables.results_table
    assert history.read_csv is tables.read_csv and train.read_csv is tables.read_csv


def test_write_table_writes_csv_markdown_and_latex_with_the_same_numbers(tmp_path):
    df = tables.results_table({"DAIM_demo & 5% test": M, "baseline": {**M, "rsum": math.nan}})
    written = tables.write_table(df, tmp_path / "sub" / "eval", caption="test split")
    assert [p.name for p in written] == ["eval.csv", "eval.md", "eval.tex"]
    back = pd.read_csv(tmp_path / "sub" / "eval.csv", index_col=0)
    assert back.loc["baseline", "i2t R@5"] == pytest.approx(80.2) and math.isnan(back.loc["baseline", "RSUM"])
    md = (tmp_path / "sub" / "eval.md").read_text().splitlines()
    assert md[0] == "|  | i2t R@1 | i2t R@5 | i2t R@10 | t2i R@1 | t2i R@5 | t2i R@10 | RSUM |"
    assert md[2] == "| DAIM_demo & 5% test | 50.0 | 80.2 | 90.0 | 40.0 | 70.0 | 85.5 | 415.8 |"
    assert md[3].endswith("| - |")  # NaN shown as "-"
    tex = (tmp_path / "sub" / "eval.tex").read_text()
    assert r"\caption{test split}" in tex and r"\toprule" in tex and tex.count(r"\\") == 3
    assert r"DAIM\_demo \& 5\% test & 50.0 & 80.2 & 90.0 & 40.0 & 70.0 & 85.5 & 415.8 \\" in tex
    with pytest.raises(ValueError, match="unknown table formats"):
        tables.write_table(df, tmp_path / "x", formats=("xlsx",))


def test_read_csv_of_a_missing_or_empty_file_is_an_empty_frame(tmp_path):
    assert tables.read_csv(tmp_path / "nope.csv").empty
    (tmp_path / "empty.csv").write_text("")
    assert tables.read_csv(tmp_path / "empty.csv").empty
    (tmp_path / "h.csv").write_text("step,loss\n0,1.5\n")
    assert tables.read_csv(tmp_path / "h.csv")["loss"].tolist() == [1.5]
