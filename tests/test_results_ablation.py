"""The committed powered ablation (results/ablation_powered) against what the README and notebook 09 say.

Every figure is recomputed here from runs.csv with scipy directly (not through daimlib.course.stats), so a
re-run of the ablation that changes the numbers fails this test until the prose is updated.
"""

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import optimize
from scipy import stats as st

pytestmark = pytest.mark.docs  # committed results, not behaviour: make test runs it, make test-fast skips it

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "results" / "ablation_powered"
VARIANTS = ["baseline", "hat", "fdm", "mom", "daim", "fdm_text", "high_only", "no_low", "no_mid", "no_high"]
NUMBER = re.compile(r"[−-]?\d+\.\d+")


@pytest.fixture(scope="module")
def runs():
    return pd.read_csv(RESULTS / "runs.csv")


def _interval(x):
    x = np.asarray(x, float)
    half = st.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return x.mean(), x.mean() - half, x.mean() + half


def _mdd(sd, n):
    df, tc = n - 1, st.t.ppf(0.975, n - 1)

    def power(delta):
        nc = delta / (sd / math.sqrt(n))
        p = st.nct.sf(tc, df, nc) + st.nct.cdf(-tc, df, nc)
        return p if np.isfinite(p) else 1.0  # scipy's nct gives NaN far in the tail, where power is 1

    return optimize.brentq(lambda d: power(d) - 0.8, 1e-9, 10 * sd)


def _s(x):  # the README's signed style: +6.3, −13.6
    return f"{x:+.1f}".replace("-", "−")


def test_design_ten_variants_five_paired_seeds_300_steps(runs):
    assert list(dict.fromkeys(runs["variant"])) == VARIANTS
    for v, g in runs.groupby("variant"):
        assert sorted(g["seed"]) == [0, 1, 2, 3, 4], v
    assert (runs["steps"] == 300).all() and (runs["split"] == "test").all()
    summary = json.loads((RESULTS / "summary.json").read_text())
    assert [r["variant"] for r in summary["summary"]] == VARIANTS


def test_readme_table_is_the_committed_runs(runs):
    readme = (REPO / "docs" / "results.md").read_text()
    pairs = runs.pivot(index="seed", columns="variant", values="rsum")
    for v in VARIANTS:
        m, lo, hi = _interval(pairs[v])
        row = f"| `{v}` | {m:.1f} [{lo:.1f}, {hi:.1f}] |"
        if v != "baseline":
            d = pairs[v] - pairs["baseline"]
            dm, dlo, dhi = _interval(d)
            t = dm / (d.std(ddof=1) / math.sqrt(len(d)))
            p = 2 * st.t.sf(abs(t), len(d) - 1)
            p_text = "< 0.01" if p < 0.01 else f"{p:.2f}"
            row += f" {_s(dm)} [{_s(dlo)}, {_s(dhi)}] | {p_text} | {_mdd(d.std(ddof=1), len(d)):.1f} |"
        assert row in readme, f"README's ablation row for {v} should read: {row}"


def _cells():
    return json.loads((REPO / "notebooks" / "09_ablation.ipynb").read_text())["cells"]


def _outputs_before(cells, k):
    text = []
    for c in cells[:k]:
        for o in c.get("outputs", []):
            text.append("".join(o.get("text", "")) + "".join(o.get("data", {}).get("text/plain", "")))
    return [float(x.replace("−", "-")) for x in NUMBER.findall("\n".join(text))]


@pytest.mark.parametrize(
    "heading", ["What the short runs show", "Reading the powered ablation", "What the table says"]
)
def test_every_decimal_in_09s_readings_is_printed_above(heading):
    """A decimal number in these markdown cells must be one a code cell above printed (to its rounding)."""
    cells = _cells()
    k = next(
        i
        for i, c in enumerate(cells)
        if c["cell_type"] == "markdown" and "".join(c["source"]).startswith(heading)
    )
    printed = np.array(_outputs_before(cells, k))
    for text in NUMBER.findall("".join(cells[k]["source"])):
        x = float(text.replace("−", "-"))
        places = len(text.split(".")[1])
        close = np.abs(np.round(printed, places) - x) < 0.5 * 10**-places + 1e-9
        assert close.any(), f"{heading!r} quotes {text}, which no code cell above prints"


def test_the_encoder_these_runs_used_is_recorded_and_its_command_reproduces_it():
    """The runs were made with the demo preset's Swin (embed 32); summary.json names it and the README's
    re-run command passes it explicitly, so that a later preset change cannot redefine the design."""
    from daimlib.config import load_preset

    used = json.loads((RESULTS / "summary.json").read_text())["image_encoder"]["timm_kwargs"]
    assert used["embed_dim"] == 32 and used["num_heads"] == [1, 2, 4, 8]
    readme = (RESULTS / "README.md").read_text()
    m = re.search(r"NARROW='image\.timm_kwargs=(\{.*?\})'", readme)
    assert m and json.loads(m.group(1)) == used
    cfg = load_preset("demo", **{"image.timm_kwargs": json.loads(m.group(1))})
    assert cfg.image.timm_kwargs == used == load_preset("demo").image.timm_kwargs
    assert '"$NARROW"' in readme


def test_the_i2t_seeds_the_readme_quotes(runs):
    """The hat variant's seeds split into runs that train and runs near chance; README quotes them."""
    hat = runs[runs["variant"] == "hat"].set_index("seed")["rsum"]
    started, stuck = hat[hat > 100], hat[hat <= 100]
    assert list(started.index) == [0, 2] and list(stuck.index) == [1, 3, 4]
    text = " ".join((REPO / "docs" / "results.md").read_text().split())
    assert f"seeds 0 and 2 (test RSUM {started[0]:.1f}, {started[2]:.1f})" in text
    assert f"on seeds 1, 3 and 4 ({stuck[1]:.1f}, {stuck[3]:.1f}, {stuck[4]:.1f};" in text
    base = runs[runs["variant"] == "baseline"].set_index("seed")["rsum"]
    assert f"(+{(base - hat).mean():.1f})" in text
