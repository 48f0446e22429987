"""The course book (scripts/build_book.py, `make book`) without a browser: every relative link of every
page leads to a file of the book, and no page names the machine it was built on.
(tests/test_browser.py opens it in Chromium where one is installed.)"""

import importlib.util
import re
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow  # every test reads the whole book, built once (8 s): `make unit` runs them

_spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
build_book = importlib.util.module_from_spec(_spec)
sys.modules["build_book"] = build_book
_spec.loader.exec_module(build_book)


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    out = tmp_path_factory.mktemp("book")
    assert build_book.main(["--out", str(out)]) == 0
    return out


def test_every_relative_link_of_the_book_leads_to_a_page_of_the_book(book):
    assert build_book.dangling_links(book) == []
    # the capstone's "next: none: back to the README" leads to the book's index, not to ../README.md
    capstone = next(book.glob("14_*.html")).read_text(encoding="utf-8")
    assert "../README.md" not in capstone and 'href="index.html"' in capstone


def test_no_page_names_the_machine_it_was_built_on(book):
    for page in book.glob("*.html"):
        text = re.sub(r"data:[\w/+.-]+;base64,[A-Za-z0-9+/=]+", "", page.read_text(encoding="utf-8"))
        assert str(REPO) not in text, page.name
        assert not re.search(r"(?<![\w/.])/(?:home|root|tmp|work)/\w", text), page.name


def test_a_link_the_book_cannot_resolve_fails_the_build(tmp_path, capsys):
    nb = REPO / "notebooks" / "14_capstone.ipynb"
    broken = tmp_path / "notebooks" / nb.name
    broken.parent.mkdir()
    broken.write_text(nb.read_text().replace("(../README.md)", "(../docs/not_in_the_book.md)"))
    assert build_book.main(["--out", str(tmp_path / "book"), str(broken)]) == 1
    assert "14_capstone.html: ../docs/not_in_the_book.md" in capsys.readouterr().err


def test_a_widget_app_becomes_a_note_and_no_page_fetches_the_widget_manager(book):
    """Notebook 12's app cell: in the book it said nothing offline (the widget manager comes from a
    CDN, and without a kernel it cannot search anyway); now a note says where the app runs."""
    search = next(book.glob("12_*.html")).read_text(encoding="utf-8")
    assert build_book.WIDGET_NOTE in search and build_book.WIDGET_VIEW not in search
    for page in book.glob("*.html"):
        assert "unpkg.com" not in page.read_text(encoding="utf-8"), page.name
