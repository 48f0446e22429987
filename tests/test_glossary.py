"""docs/glossary.md defines what issue 10 asks for and gives each clashing symbol one meaning."""

import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.docs  # glossary text, not behaviour: make test runs it, make test-fast skips it

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def _terms(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\*\*(.+?)\*\*", text, flags=re.M)}


def test_glossary_defines_the_terms_of_the_issue():
    text = GLOSSARY.read_text()
    terms = " ".join(_terms(text))
    for term in (
        "AMP",
        "EMA",
        "HAT.",
        "UMAP",
        "R@K",
        "RSUM",
        "Karpathy split",
        "window attention",
        "F30K 1K, COCO 1K, COCO 5K",
        "MOM",
        "ContraNorm, FDM",
        "SCAN",
    ):
        assert term in terms, term


def test_glossary_resolves_the_symbol_clashes():
    text = GLOSSARY.read_text()
    assert r"\lambda_{\text{SCAN}}" in text and r"\lambda_{\text{MOM}}" in text
    assert "`similarity.lambda_softmax`" in text and "`gaussian_boundary`" in text
    assert "**batch size only**" in text and "$a, b, c$" in text
    # no bare λ in a formula of the symbol tables (λ_SCAN / λ_MOM, or the code name lam)
    bare = [
        line for line in text.splitlines() if line.startswith("| $") and re.search(r"\\lambda(?!_)", line)
    ]
    assert all("\\lambda;" in line or "\\lambda_" in line for line in bare), bare


def test_glossary_has_no_machine_paths():
    assert not re.search(r"/(work|tmp|root|home)/", GLOSSARY.read_text())


def test_glossary_states_the_trigger_and_the_cap_the_presets_use():
    """The glossary's MOM constants are the presets' values (a changed preset makes this fail)."""
    from fractions import Fraction

    from daimlib.config import load_preset

    text = GLOSSARY.read_text()
    (f_row,) = [line for line in text.splitlines() if line.startswith("| $f$ |")]
    for preset in ("daim_f30k", "demo"):
        frac = Fraction(load_preset(preset).loss.activation_fraction).limit_denominator(100)
        assert f"{frac.numerator}/{frac.denominator}" in f_row, (preset, frac, f_row)
    assert "0.4" not in f_row  # the lowered demo trigger is gone from the presets
    (cap_row,) = [line for line in text.splitlines() if "`loss.lam_max`" in line]
    loss = load_preset("demo").loss
    assert f"cap on the boundary, {loss.lam_max:g}" in cap_row and f"above it, {loss.lam_reset:g}" in cap_row


def test_glossary_names_every_branch_the_mom_logs():
    import re as _re

    src = (GLOSSARY.parents[1] / "daimlib" / "losses.py").read_text()
    branches = set(_re.findall(r'branch = "(\w+)"', src))
    assert branches >= {"inactive", "no_root", "negative", "reset", "ema"}
    entry = GLOSSARY.read_text().split("**MOM branch.**")[1].split("\n\n")[0]
    for b in branches | {"disabled"}:
        assert f"`{b}`" in entry, b


def test_glossary_gives_the_dual_encoders_terms_and_its_temperature_apart_from_contranorms():
    """Notebooks 06 and 14 teach a dual encoder trained with InfoNCE at temperature τ; the glossary
    had neither term, and its only τ was ContraNorm's (1, not 0.05)."""
    from daimlib.config import load_preset

    text = GLOSSARY.read_text()
    terms = " ".join(_terms(text))
    assert "Dual encoder." in terms and "InfoNCE" in terms
    (row,) = [line for line in text.splitlines() if "`loss.temperature`" in line]
    assert row.startswith(r"| $\tau$ |") and f"{load_preset('demo_dual').loss.temperature:g}" in row
    (cn_row,) = [line for line in text.splitlines() if "`fdm.tau`" in line]
    assert f"temperature, {load_preset('demo').fdm.tau:g}" in cn_row and "InfoNCE" in cn_row


def test_glossary_defines_the_statistics_of_notebook_09_and_the_frozen_feature_cache():
    """Session 6 spends its discussion time on 09's statistics; 10 and 13 train on frozen encoders."""
    terms = " ".join(_terms(GLOSSARY.read_text()))
    for term in (
        "Confidence interval",
        "p-value",
        "Paired test",
        "minimal detectable difference",
        "Frozen backbone",
    ):
        assert term in terms, term
