"""Result tables: the paper's column order, and exports for a paper (CSV, Markdown, LaTeX).

A leaf module (pandas only). :func:`results_table` turns named metric dicts (the keys of
:func:`daimlib.evaluate.recall_metrics`) into a DataFrame in the paper's column order (R@1, R@5,
R@10 for image-to-text, then text-to-image, then RSUM); :func:`write_table` writes any table as
``.csv``, ``.md`` and ``.tex`` side by side; :func:`read_csv` reads a history CSV that may be
missing or empty (a run stopped before its first row).
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

# the paper's column order: R@1 R@5 R@10 for i2t, then t2i, then RSUM
PAPER_COLUMNS = {
    "i2t_r1": "i2t R@1",
    "i2t_r5": "i2t R@5",
    "i2t_r10": "i2t R@10",
    "t2i_r1": "t2i R@1",
    "t2i_r5": "t2i R@5",
    "t2i_r10": "t2i R@10",
    "rsum": "RSUM",
}
TABLE_FORMATS = ("csv", "md", "tex")


def results_table(rows, decimals: int | None = 1) -> pd.DataFrame:
    """A DataFrame in the paper's column order from named metric dicts.

    ``rows``: ``{name: metrics}`` or a list of ``(name, metrics)``; metrics as
    :func:`daimlib.evaluate.recall_metrics`.
    """
    items = list(rows.items()) if isinstance(rows, dict) else list(rows)
    data = []
    for name, m in items:
        missing = [k for k in PAPER_COLUMNS if k not in m]
        if missing:
            raise ValueError(f"row {name!r} lacks metrics {missing}; expected recall_metrics() keys")
        data.append({PAPER_COLUMNS[k]: float(m[k]) for k in PAPER_COLUMNS})
    df = pd.DataFrame(data, index=[str(n) for n, _ in items], columns=list(PAPER_COLUMNS.values()))
    return df.round(decimals) if decimals is not None else df


def latex_escape(text: str) -> str:
    for a, b in (
        ("\\", r"\textbackslash{}"),
        ("&", r"\&"),
        ("%", r"\%"),
        ("$", r"\$"),
        ("#", r"\#"),
        ("_", r"\_"),
        ("{", r"\{"),
        ("}", r"\}"),
        ("~", r"\textasciitilde{}"),
        ("^", r"\^{}"),
    ):
        text = text.replace(a, b)
    return text


def _cell(v, decimals: int) -> str:
    if isinstance(v, float):
        return "-" if v != v else f"{v:.{decimals}f}"  # NaN: not available
    return str(v)


def to_markdown(df: pd.DataFrame, decimals: int = 1) -> str:
    """A GitHub-flavoured Markdown table (index as the first column; NaN as ``-``)."""
    head = [str(df.index.name or "")] + [str(c) for c in df.columns]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join([" --- "] + [" ---: "] * len(df.columns)) + "|"]
    for name, row in df.iterrows():
        cells = [str(name)] + [_cell(v, decimals) for v in row.tolist()]
        lines.append("| " + " | ".join(c.replace("|", r"\|") for c in cells) + " |")
    return "\n".join(lines) + "\n"


def to_latex(
    df: pd.DataFrame, decimals: int = 1, caption: str | None = None, label: str | None = None
) -> str:
    """A booktabs LaTeX ``tabular`` (in a ``table`` float when ``caption`` is given); NaN as ``-``."""
    spec = "l" + "r" * len(df.columns)
    body = [
        r"\begin{tabular}{" + spec + "}",
        r"\toprule",
        " & ".join([latex_escape(str(df.index.name or ""))] + [latex_escape(str(c)) for c in df.columns])
        + r" \\",
        r"\midrule",
    ]
    for name, row in df.iterrows():
        cells = [latex_escape(str(name))] + [latex_escape(_cell(v, decimals)) for v in row.tolist()]
        body.append(" & ".join(cells) + r" \\")
    body += [r"\bottomrule", r"\end{tabular}"]
    if caption is None:
        return "\n".join(body) + "\n"
    out = [r"\begin{table}[t]", r"\centering", r"\caption{" + latex_escape(caption) + "}"]
    if label:
        out.append(r"\label{" + label + "}")
    return "\n".join(out + body + [r"\end{table}"]) + "\n"


def write_table(
    df: pd.DataFrame,
    stem: str | os.PathLike,
    decimals: int = 1,
    formats: tuple[str, ...] = TABLE_FORMATS,
    caption: str | None = None,
) -> list[Path]:
    """Write ``df`` as ``<stem>.csv`` (full precision), ``<stem>.md`` and ``<stem>.tex`` (rounded to
    ``decimals``); returns the files written. ``stem`` has no suffix (``runs/demo/eval_best_test``).
    """
    unknown = [f for f in formats if f not in TABLE_FORMATS]
    if unknown:
        raise ValueError(f"unknown table formats {unknown}; choose from {list(TABLE_FORMATS)}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        path = stem.parent / f"{stem.name}.{fmt}"
        if fmt == "csv":
            df.to_csv(path)
        elif fmt == "md":
            path.write_text(to_markdown(df, decimals))
        else:
            path.write_text(to_latex(df, decimals, caption=caption))
        written.append(path)
    return written


def read_csv(path: str | os.PathLike) -> pd.DataFrame:
    """A CSV as a DataFrame; an empty DataFrame when the file is missing or empty."""
    path = Path(path)
    return pd.read_csv(path) if path.is_file() and path.stat().st_size > 0 else pd.DataFrame()
