"""The method map is drawn from the config: its numbers match the model that config builds, its
switches follow the config, its text never overlaps, and the notebook table covers every notebook."""

import itertools
import re
from pathlib import Path

import matplotlib
import pandas as pd
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from daimlib.config import load_preset  # noqa: E402
from daimlib.course.method_map import (  # noqa: E402
    METHOD_COLUMNS,
    STAR,
    draw_method_map,
    markdown_table,
    method_facts,
    method_table,
    save_method_maps,
)
from daimlib.model import DAIM  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def _joined(fig) -> str:
    return "\n".join(_texts(fig))


@pytest.fixture(scope="module")
def paper_facts():
    return method_facts(load_preset("daim_f30k"))


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_paper_facts_match_the_spec_table(paper_facts):
    """Spec 1.1/1.2: Swin-B at 224 px, stages 2/3/4 -> 784/196/49 tokens of 256/512/1024, BERT 4/10/12."""
    f = paper_facts
    assert f.tokens == tuple((224 // (4 * 2**s)) ** 2 for s in (1, 2, 3)) == (784, 196, 49)
    assert [f.stage_dims[s] for s in f.stages] == [256, 512, 1024]
    assert f.depths == (2, 2, 18, 2) and f.heads == (4, 8, 16, 32)
    assert (f.patch, f.window) == (4, 7)
    assert f.hidden_states == (4, 10, 12) and (f.text_layers, f.text_width) == (12, 768)
    assert f.levels == ("low", "mid", "high")


def test_demo_facts_match_a_real_forward_pass(tiny_cfg):
    """The token counts and widths drawn for the demo are the shapes its model really produces."""
    f = method_facts(tiny_cfg)
    model = DAIM.from_config(tiny_cfg).eval()
    with torch.no_grad():
        feats = model.image_encoder(torch.zeros(1, 3, tiny_cfg.image.img_size, tiny_cfg.image.img_size))
    assert f.tokens == tuple(x.shape[1] for x in feats) == (16, 4, 1)
    assert tuple(f.stage_dims[s] for s in f.stages) == tuple(x.shape[2] for x in feats)
    assert f.text_layers == model.text_encoder.bert.config.num_hidden_layers


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_figure_shows_the_numbers_of_the_config(paper_facts):
    fig = draw_method_map(load_preset("daim_f30k"), facts=paper_facts)
    text = _joined(fig)
    for expected in (
        "784 tokens × 256",
        "196 tokens × 512",
        "49 tokens × 1024",
        "hidden_states[4]",
        "hidden_states[10]",
        "hidden_states[12]",
        "SCAN t2i, $\\lambda_{\\mathrm{SCAN}}$=9",
        "18 blocks, 16 heads",
        "α=0.3",
        "45 of 58 rows right",
        "Linear → 768",
    ):
        assert expected in text, expected
    assert text.count(f"{STAR} CN in each block") == 4  # every stage's blocks carry ContraNorm
    plt.close(fig)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_figure_follows_the_switches(paper_facts):
    """HAT: no ContraNorm, i2t, fixed margin; a changed λ, a weight and text-side FDM appear."""
    hat = load_preset("hat_f30k")
    fig = draw_method_map(hat)
    text = _joined(fig)
    assert STAR + " CN" not in text and "SCAN i2t" in text and "fixed margin $m$ = 0.2" in text
    assert "MOM: adaptive margin" not in text and "(no MOM)" in text
    plt.close(fig)
    cfg = load_preset("daim_f30k").replace(
        **{
            "similarity.lambda_softmax": 5.0,
            "similarity.level_weights": (1.0, 0.5, 1.0),
            "fdm.text_layers": (10,),
            "fdm.image_blocks": False,
        }
    )
    fig = draw_method_map(cfg)
    text = _joined(fig)
    assert (
        "SCAN t2i, $\\lambda_{\\mathrm{SCAN}}$=5" in text
        and "weight 0.5" in text
        and f"{STAR} CN after layer 10" in text
    )
    assert f"{STAR} CN in each block" not in text
    plt.close(fig)


def test_two_levels_give_two_scan_boxes(tiny_cfg):
    cfg = tiny_cfg.replace(
        **{"image.stages": (2, 3), "text.hidden_states": (2, 3), "similarity.level_weights": (1.0, 1.0)}
    )
    fig = draw_method_map(cfg)
    texts = _texts(fig)
    assert sum(t.startswith("SCAN t2i") for t in texts) == 2
    assert any(t.startswith("level 1: 4 tokens") for t in texts) and "range [-2, 2]" in _joined(fig)
    plt.close(fig)


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
@pytest.mark.parametrize("preset", ["daim_f30k", "demo", "hat_f30k"])
def test_no_two_texts_overlap(preset):
    """Readability: the rendered bounding boxes of the figure's texts are pairwise disjoint."""
    fig = draw_method_map(load_preset(preset))
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in fig.axes[0].texts if t.get_text()]
    clashes = [(a, b) for (a, ba), (b, bb) in itertools.combinations(boxes, 2) if ba.overlaps(bb)]
    assert not clashes, clashes[:3]
    plt.close(fig)


@pytest.mark.docs
def test_method_table_covers_every_notebook():
    table = method_table()
    assert list(table.columns) == list(METHOD_COLUMNS[1:])
    numbers = sorted(p.name[:2] for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert set(numbers) <= set(table.index), set(numbers) - set(table.index)
    assert table.notna().all().all() and (table.map(len) > 5).all().all()


def _markdown_rows(text: str) -> list[list[str]]:
    """The cells of a Markdown table, split on unescaped pipes, escapes undone."""
    rows = []
    for line in text.splitlines():
        cells = re.split(r"(?<!\\)\|", line.strip())[1:-1]
        rows.append([c.strip().replace("\\|", "|") for c in cells])
    return rows


def test_method_table_as_markdown_shows_every_cell_whole():
    """Notebook 00 shows the table as Markdown: every cell whole (pandas cuts long cells to '…')."""
    table = method_table()
    rows = _markdown_rows(markdown_table(table))
    assert rows[0] == ["notebook", *METHOD_COLUMNS[1:]] and set("".join(rows[1])) <= {"-"}
    assert len(rows) == 2 + len(table)
    for (key, row), cells in zip(table.iterrows(), rows[2:]):
        assert cells == [key, *row.tolist()]
    assert "…" not in markdown_table(table)
    odd = pd.DataFrame({"a|b": ["x | y", "two\nlines"]}, index=pd.Index(["1", "2"], name="k"))
    assert _markdown_rows(markdown_table(odd)) == [
        ["k", "a|b"],
        ["---", "---"],
        ["1", "x | y"],
        ["2", "two lines"],
    ]


@pytest.mark.slow  # over half a second: `make unit` runs it, `make test-fast` skips it
def test_save_method_maps_writes_both_presets(tmp_path):
    paths = save_method_maps(root=tmp_path)
    assert paths == ["figures/method_map.png", "figures/method_map_demo.png"]
    for p in paths:
        assert (tmp_path / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (REPO / "figures" / "method_map.png").exists()
