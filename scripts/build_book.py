"""Build the course book: a static HTML site of the committed, executed notebooks (``make book``).

Each ``notebooks/NN_*.ipynb`` is rendered with nbconvert's HTML exporter from its committed outputs
(nothing is executed), images embedded, so every page stands alone; the session plan and the glossary
(``docs/*.md``) become pages too, and an ``index.html`` lists them all. Links between notebooks and to
those two pages are rewritten to the rendered pages, and a figure a notebook links to (the method
map) is copied along; a bar on each page links the index and the neighbouring notebooks; an
interactive app's output (ipywidgets: notebooks 12 and 13) becomes a note saying it runs in JupyterLab. Everything
works offline: nothing is downloaded at build time (a page asks a CDN for MathJax when it is opened,
so offline its formulas show as TeX).

This is not Jupyter Book: Jupyter Book 2 (MyST) downloads its HTML theme from api.mystmd.org when it
builds, which CI cannot reach.

    python scripts/build_book.py --out runs/book
"""

from __future__ import annotations

import argparse
import html
import json
import logging
import re
import sys
import time
from pathlib import Path

import nbformat
from nbconvert import HTMLExporter

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS = REPO / "notebooks"
# docs pages rendered into the book: (source, page name, title in the index)
PAGES = [
    ("docs/session_plan.md", "session_plan.html", "Session plan (teachers)"),
    ("docs/glossary.md", "glossary.html", "Glossary"),
]
NOTEBOOK_NAME = re.compile(r"^\d\d_[A-Za-z0-9_]+\.ipynb$")


def notebook_files(folder: Path = NOTEBOOKS) -> list[Path]:
    return sorted(p for p in folder.glob("*.ipynb") if NOTEBOOK_NAME.match(p.name))


def title_of(nb: nbformat.NotebookNode, fallback: str) -> str:
    """The first markdown heading of the notebook (its ``# NN · Title`` line)."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def rewrite_links(page: str, names: dict[str, str]) -> str:
    """``href="02_x.ipynb"`` -> ``href="02_x.html"``; ``../docs/glossary.md#x`` -> ``glossary.html#x``."""

    def repl(m: re.Match) -> str:
        target, anchor = m.group(2), m.group(3) or ""
        key = target.split("/")[-1] if target.endswith(".ipynb") else target
        return f'{m.group(1)}"{names[key]}{anchor}"' if key in names else m.group(0)

    return re.sub(r'(href=)"([^"#]+?)(#[^"]*)?"', repl, page)


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_NOTE = (
    "<p><em>An interactive app (ipywidgets) runs here when the notebook runs in JupyterLab; "
    "a static page cannot run it.</em></p>"
)


def without_widgets(nb: nbformat.NotebookNode) -> int:
    """Replace each widget view among the outputs by a note saying where the app runs, and drop the
    saved widget state: a static page has no kernel, and the widget manager would be fetched from a CDN
    (offline, the output stayed blank). Returns how many views were replaced."""
    n = 0
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if WIDGET_VIEW in out.get("data", {}):
                out["data"] = {"text/html": WIDGET_NOTE}
                n += 1
    nb.metadata.pop("widgets", None)
    return n


def with_nav(page: str, prev: tuple[str, str] | None = None, nxt: tuple[str, str] | None = None) -> str:
    """A bar at the top of the page: the index, and the previous and next notebooks (href, title)."""
    parts = ['<a href="index.html">DAIM Kit: the course book</a>']
    for label, link in (("previous", prev), ("next", nxt)):
        if link:
            parts.append(f'{label}: <a href="{link[0]}">{html.escape(link[1])}</a>')
    bar = f'<nav class="daim-book-nav" style="padding:0.5em 1em;border-bottom:1px solid #ccc">{" · ".join(parts)}</nav>'
    return re.sub(r"(<body[^>]*>)", lambda m: m.group(1) + bar, page, count=1)


def render_markdown_page(md: Path, exporter: HTMLExporter) -> str:
    """A markdown file rendered by the same exporter, as a notebook of one markdown cell."""
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell(md.read_text())])
    nb.metadata["title"] = md.stem
    body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(md.parent)}})
    return body


def index_page(entries: list[tuple[str, str]], pages: list[tuple[str, str]]) -> str:
    items = "\n".join(f'<li><a href="{href}">{html.escape(title)}</a></li>' for href, title in entries)
    extra = "\n".join(f'<li><a href="{href}">{html.escape(title)}</a></li>' for href, title in pages)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>DAIM Kit: the course book</title>
<style>body{{font-family:sans-serif;max-width:46em;margin:2em auto;line-height:1.5}}</style></head>
<body>
<h1>DAIM Kit: the course book</h1>
<p>The kit's notebooks as committed: executed on the demo data on a CPU, rendered to HTML without
running anything. To run them yourself: <code>make demo</code>, then
<code>.venv/bin/jupyter lab notebooks/</code>.</p>
<h2>Notebooks</h2>
<ol start="0">
{items}
</ol>
<h2>For the course</h2>
<ul>
{extra}
</ul>
</body></html>
"""


def build(out: Path, notebooks: list[Path]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    exporter = HTMLExporter(template_name="lab", embed_images=True)
    exporter.log.setLevel(logging.ERROR)  # not one warning per figure without alt text
    names = {nb.name: nb.with_suffix(".html").name for nb in notebooks}
    names.update({f"../{src}": page for src, page, _ in PAGES})
    names["../README.md"] = "index.html"  # the kit's front page; in the book, its index
    (out / "figures").mkdir(exist_ok=True)  # figures the notebooks link to (the method map), copied
    for figure in sorted(
        {m for nb in notebooks for m in re.findall(r"\(\.\./(figures/[\w.-]+\.png)\)", nb.read_text())}
    ):
        if (REPO / figure).is_file():
            (out / figure).write_bytes((REPO / figure).read_bytes())
            names[f"../{figure}"] = figure
    written = []
    books = [nbformat.read(path, as_version=4) for path in notebooks]
    entries = [(names[path.name], title_of(nb, path.stem)) for path, nb in zip(notebooks, books)]
    for k, (path, nb) in enumerate(zip(notebooks, books)):
        nb.metadata["title"] = entries[k][1]
        without_widgets(nb)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"path": str(path.parent)}})
        prev, nxt = entries[k - 1] if k else None, entries[k + 1] if k + 1 < len(entries) else None
        page = out / names[path.name]
        page.write_text(with_nav(rewrite_links(body, names), prev, nxt), encoding="utf-8")
        written.append(page)
    pages = []
    for src, name, title in PAGES:
        if (REPO / src).is_file():
            body = render_markdown_page(REPO / src, exporter)
            (out / name).write_text(
                with_nav(rewrite_links(body, {**names, **{Path(s).name: p for s, p, _ in PAGES}})),
                encoding="utf-8",
            )
            written.append(out / name)
            pages.append((name, title))
    (out / "index.html").write_text(index_page(entries, pages), encoding="utf-8")
    (out / "book.json").write_text(
        json.dumps({"notebooks": [e[0] for e in entries], "pages": [p[0] for p in pages]}, indent=1) + "\n"
    )
    return [out / "index.html", *written]


def dangling_links(out: Path) -> list[str]:
    """Every relative ``href``/``src`` of the book's pages that names no file of the book (a link the
    build did not rewrite, e.g. to a repository file the book does not carry), as ``page: target``."""
    found = []
    for page in sorted(out.glob("*.html")):
        for target in re.findall(r'(?:href|src)="([^"#]*)[^"]*"', page.read_text(encoding="utf-8")):
            if target and not re.match(r"^[a-z][a-z0-9+.-]*:", target) and not (out / target).is_file():
                found.append(f"{page.name}: {html.unescape(target)}")
    return found


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--out", type=Path, default=REPO / "runs" / "book", help="output folder (default runs/book)"
    )
    ap.add_argument("notebooks", nargs="*", type=Path, help="notebooks (default: notebooks/NN_*.ipynb)")
    args = ap.parse_args(argv)
    notebooks = args.notebooks or notebook_files()
    start = time.perf_counter()
    written = build(args.out, notebooks)
    try:
        shown = args.out.resolve().relative_to(REPO)
    except ValueError:
        shown = args.out
    print(
        f"[book] {len(notebooks)} notebooks, {len(written) - 1 - len(notebooks)} pages and the index "
        f"in {time.perf_counter() - start:.1f} s: {shown}/index.html"
    )
    dangling = dangling_links(args.out)
    if dangling:
        print("[book] links that lead nowhere in the book:", *dangling, sep="\n  ", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
