"""Notebooks 00-03: the model choice of ``nb.trained_demo_model``, the numbers their prose quotes from
the cells above it, the method table shown whole, and the colour names written on the demo images."""

import json
import re
from pathlib import Path

import nbformat
import pytest
import torch
from safetensors.torch import load_file

from daimlib.checkpoint import WEIGHTS, save_checkpoint
from daimlib.config import load_preset
from daimlib.course import demo_models, nb
from daimlib.model import DAIM

pytestmark = pytest.mark.usefixtures("one_torch_thread")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


def _same_weights(model, state) -> bool:
    own = model.state_dict()
    return set(own) == set(state) and all(torch.equal(own[k].float(), state[k].float()) for k in state)


def test_falls_back_to_random_weights_off_the_demo_data(tmp_path, capsys):
    cfg = load_preset("demo")
    model, desc, dm = nb.trained_demo_model(cfg, data=str(tmp_path), out_root=tmp_path)
    assert dm is None and "random initial weights" in desc
    assert "DATA is not the demo data" in capsys.readouterr().out
    # random weights: the same as a freshly built model with the same seed, not a trained one
    torch.manual_seed(0)
    model, _, _ = nb.trained_demo_model(cfg, data=str(tmp_path), out_root=tmp_path)
    torch.manual_seed(0)
    assert _same_weights(model, DAIM.from_config(cfg).state_dict())


def test_other_config_or_checkpoint_none_falls_back(capsys):
    _, _, dm = nb.trained_demo_model(load_preset("demo", **{"similarity.embed_dim": 64}), data="demo")
    assert dm is None and "OVERRIDES differ" in capsys.readouterr().out
    _, desc, dm = nb.trained_demo_model(load_preset("demo"), data="demo", checkpoint=None)
    assert dm is None and "random initial weights" in desc


def test_falls_back_to_the_run_of_notebook_05_when_there_is_one(tmp_path):
    cfg = load_preset("demo")
    trained = DAIM.from_config(cfg)
    with torch.no_grad():
        for p in trained.parameters():
            p.add_(0.5)  # weights no fresh model has
    save_checkpoint(tmp_path / cfg.name / "best", trained, cfg)
    model, desc, dm = nb.trained_demo_model(cfg, data=str(tmp_path / "data"), out_root=tmp_path)
    assert dm is None and "trained weights from" in desc
    assert _same_weights(model, trained.state_dict())


def test_a_smoke_run_never_trains(monkeypatch, capsys):
    monkeypatch.setattr(demo_models, "is_shipped", lambda arm: False)

    def no_training(*args, **kwargs):
        raise AssertionError("a smoke run must not train the demo model")

    monkeypatch.setattr(demo_models, "load", no_training)
    _, desc, dm = nb.trained_demo_model(load_preset("demo"), data="demo", smoke=True, retrain=True)
    assert dm is None and "random initial weights" in desc
    assert "smoke run does not train" in capsys.readouterr().out


@pytest.mark.skipif(not demo_models.is_shipped("demo"), reason="models/demo is not shipped in this checkout")
def test_loads_the_shipped_weights():
    model, desc, dm = nb.trained_demo_model(load_preset("demo"), data="demo")
    assert dm is not None and dm.arm == "demo" and "trained demo model 'demo'" in desc
    shipped = load_file(demo_models.model_dir("demo") / "best" / WEIGHTS)  # read independently of the loader
    meta = json.loads((demo_models.model_dir("demo") / "best" / "meta.json").read_text())
    for key, info in meta.get("trimmed", {}).items():  # rows left out of the file load as zeros
        full = torch.zeros(info["shape"], dtype=shipped[key].dtype)
        full[info["rows"][0] : info["rows"][1]] = shipped[key]
        shipped[key] = full
    weights = {k: v for k, v in shipped.items() if k in model.state_dict()}
    assert len(weights) == len(model.state_dict()) and _same_weights(model, weights)
    assert not model.training and next(model.parameters()).dtype == torch.float32


# --- the prose quotes what the cell above printed ------------------------------------------------


def _cells(name):
    return nbformat.read(NOTEBOOKS / name, as_version=4).cells


def _text(cell) -> str:
    out = []
    for o in cell.get("outputs", []):
        if o.get("output_type") == "stream":
            out.append(o["text"])
        elif "text/plain" in o.get("data", {}):
            out.append(o["data"]["text/plain"])
    return "".join(out)


def _next_markdown(cells, i):
    return next(c.source for c in cells[i + 1 :] if c.cell_type == "markdown")


@pytest.mark.docs
def test_02_prose_quotes_the_printed_diagonal_count():
    cells = _cells("02_cross_attention_similarity.ipynb")
    i, m = next(
        (i, m)
        for i, c in enumerate(cells)
        if c.cell_type == "code"
        and (
            m := re.search(
                r"trained model\s+rows \(images\) whose own caption scores highest: (\d+) of (\d+)", _text(c)
            )
        )
    )
    rows, n = m.groups()
    assert f"{rows} of {n} rows" in _next_markdown(cells, i)
    assert int(rows) > int(n) / 2, "the trained model's diagonal should win in most rows"


@pytest.mark.docs
def test_03_prose_says_which_toy_token_moves_most():
    cells = _cells("03_feature_discriminability.ipynb")
    i, m = next(
        (i, m)
        for i, c in enumerate(cells)
        if c.cell_type == "code"
        and (m := re.search(r"how far each token moves, \|x' - x\|: \[([^\]]+)\]", _text(c)))
    )
    moves = m.group(1).split()
    prose = _next_markdown(cells, i)
    assert all(v in prose for v in moves), f"the prose should quote the printed distances {moves}"
    most = max(range(3), key=lambda k: float(moves[k]))
    assert most == 2 and "third token moves most" in prose


@pytest.mark.docs
def test_00_shows_the_method_table_whole():
    """The committed output of 00's table is the Markdown of every cell, none cut to '…' by pandas."""
    from daimlib.course.method_map import markdown_table, method_table

    shown = [
        o["data"]["text/markdown"]
        for c in _cells("00_setup_and_data.ipynb")
        if c.cell_type == "code" and "method_table()" in c.source
        for o in c.get("outputs", [])
        if "text/markdown" in o.get("data", {})
    ]
    assert len(shown) == 1 and "…" not in shown[0]
    assert shown[0] == markdown_table(method_table())


@pytest.mark.docs
def test_02_prose_quotes_the_printed_attention_masses():
    """Section 5's prose quotes, per kind of word, the masses the table above it printed."""
    cells = _cells("02_cross_attention_similarity.ipynb")
    i = next(
        i for i, c in enumerate(cells) if c.cell_type == "code" and "attention mass on the named" in _text(c)
    )
    rows = {
        m.group(1): m.groups()[1:]
        for m in re.finditer(
            r"^(colour|shape)\s+\d+\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)", _text(cells[i]), flags=re.M
        )
    }
    assert set(rows) == {"colour", "shape"}
    prose = _next_markdown(cells, i + 1)  # the figure cell sits between the table and the prose
    for kind, (trained, random_w, uniform) in rows.items():
        assert all(v in prose for v in (trained, random_w, uniform)), (kind, trained, random_w, uniform)
    assert float(rows["colour"][0]) > float(rows["colour"][2]), "colour words should beat uniform attention"


@pytest.mark.docs
@pytest.mark.parametrize(
    "name", ["00_setup_and_data", "01_dual_stream_encoders", "02_cross_attention_similarity"]
)
def test_demo_images_carry_their_colour_names(name):
    """Every cell of 00-02 that draws a demo image writes the objects' colour names on it."""
    draws = [
        c.source
        for c in _cells(f"{name}.ipynb")
        if c.cell_type == "code"
        and re.search(r"show_image_grid\(|plot_attention_on_image\(|imshow\(pil_images", c.source)
    ]
    assert draws
    for src in draws:
        assert re.search(r"scenes?=|label_scene_objects\(", src), src[:200]
