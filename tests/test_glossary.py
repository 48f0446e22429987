"""docs/glossary.md defines what issue 10 asks for and gives each clashing symbol one meaning."""

import re
from pathlib import Path

GLOSSARY = Path(__file__).resolve().parents[1] / "docs" / "glossary.md"


def _terms(text: str) -> set[str]:
    return {m.group(1) for m in re.finditer(r"^\*\*(.+?)\*\*", text, flags=re.M)}


def test_glossary_defines_the_terms_of_the_issue():
    text = GLOSSARY.read_text()
    terms = " ".join(_terms(text))
    for term in ("AMP", "EMA", "HAT.", "UMAP", "R@K", "RSUM", "Karpathy split", "window attention",
                 "F30K 1K, COCO 1K, COCO 5K", "MOM", "ContraNorm, FDM", "SCAN"):  # fmt: skip
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
