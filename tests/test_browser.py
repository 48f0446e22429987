"""JupyterLab in a real browser (issue 11 items 1 and 2): start JupyterLab on localhost, drive Debian's
headless Chromium with Playwright, run notebook 00's first cells and see their output, then run
notebook 12 and type a caption into the search app and see its results change; then open the course
book (`make book`, built here into a temporary folder) offline: its index and a notebook page.

Nothing downloads a browser: Playwright drives /usr/bin/chromium (``apt-get install chromium``).
Without it the test skips, except under CI (``CI=true``), where a missing browser is a failure.
Screenshots go to ``runs/browser/`` (ignored by git). The notebooks run from copies in a temporary
folder (beside links to ``daimlib/`` and ``pyproject.toml``), so no autosave touches the tracked
notebooks (notebook 00 cut after its first five cells); notebook 12 gets a small generated demo folder
and no runs (the random-weight model).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from daimlib.data import make_demo_dataset

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = Path(os.environ.get("DAIM_CHROMIUM", "/usr/bin/chromium"))
SHOTS = REPO / "runs" / "browser"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() == "true"

pytestmark = pytest.mark.slow


def _require(ok: bool, why: str) -> None:
    if ok:
        return
    if IN_CI:
        pytest.fail(f"{why} (CI=true: .ci/run installs it, so this is a failure, not a skip)")
    pytest.skip(f"{why}; install it with: apt-get install -y chromium && pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def playwright_api():
    _require(CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK), f"no Chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional: skip/fail below
    except ImportError:
        _require(False, "the playwright package is not installed")
    return sync_playwright


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _workdir(tmp: Path) -> Path:
    """A repository look-alike: links to daimlib/ and pyproject.toml, copies of the notebooks."""
    (tmp / "notebooks").mkdir()
    for name in ("daimlib", "pyproject.toml"):
        (tmp / name).symlink_to(REPO / name)
    return tmp


def _notebook_12_for(tmp: Path, data_root: Path) -> None:
    nb = json.loads((REPO / "notebooks" / "12_interactive_search.ipynb").read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            src = re.sub(r"^DATA = .*$", f"DATA = {str(data_root)!r}", src, flags=re.M)
            cell["source"] = re.sub(r"^N_IMAGES = .*$", "N_IMAGES = 12", src, flags=re.M)
    (tmp / "notebooks" / "12_interactive_search.ipynb").write_text(json.dumps(nb))


N_FIRST = 3  # notebook 00 up to its third code cell: parameters, setup and the environment check


def _first_cells_of_00(tmp: Path) -> None:
    """Notebook 00 cut after its first cells (run in the browser with Run All, which selects no
    cell by position and so cannot run more than these)."""
    nb = json.loads((REPO / "notebooks" / "00_setup_and_data.ipynb").read_text())
    code = [  # the Colab install cell (scripts/colab.py) does nothing here and is not counted
        i
        for i, c in enumerate(nb["cells"])
        if c["cell_type"] == "code" and c["metadata"].get("daimkit_course") != "colab"
    ]
    nb["cells"] = nb["cells"][: code[N_FIRST - 1] + 1]  # up to its N_FIRST-th code cell, whatever the prose
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            cell.update(outputs=[], execution_count=None)
    (tmp / "notebooks" / "00_setup_and_data.ipynb").write_text(json.dumps(nb))


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """JupyterLab on 127.0.0.1 (free port, a token, no browser of its own); yields (base URL, root)."""
    tmp = _workdir(tmp_path_factory.mktemp("lab"))
    _first_cells_of_00(tmp)
    make_demo_dataset(tmp / "demo_small", seed=0, size="small", progress=False)
    _notebook_12_for(tmp, tmp / "demo_small")
    settings = tmp / ".lab-settings" / "@jupyterlab" / "apputils-extension"
    settings.mkdir(parents=True)
    (settings / "notification.jupyterlab-settings").write_text(
        '{"fetchNews": "false", "checkForUpdates": false}'
    )
    tracker = tmp / ".lab-settings" / "@jupyterlab" / "notebook-extension"
    tracker.mkdir(parents=True)
    (tracker / "tracker.jupyterlab-settings").write_text('{"windowingMode": "none"}')  # render every cell
    port, token = _free_port(), secrets.token_hex(16)
    env = {
        **os.environ,
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / ".lab-settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / ".lab-workspaces"),
        "JUPYTER_RUNTIME_DIR": str(tmp / ".runtime"),
        "OMP_NUM_THREADS": "1",
        "PYTHONPATH": str(REPO),
    }
    cmd = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        "--ip=127.0.0.1",
        f"--port={port}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={tmp}",
        "--ServerApp.port_retries=0",
        "--LabApp.extension_manager=readonly",
        "--LabApp.news_url=None",  # nothing fetched from outside
    ] + (["--allow-root"] if os.geteuid() == 0 else [])
    log = open(tmp / "lab.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(
                        f"JupyterLab did not start:\n{(tmp / 'lab.log').read_text()[-3000:]}"
                    ) from None
                time.sleep(0.5)
        yield base, token
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def chromium(playwright_api):
    """One headless Chromium for the module (Playwright's sync API allows one instance per thread)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    with playwright_api() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=FLAGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture(scope="module")
def page(chromium, lab):
    pg = chromium.new_page(viewport={"width": 1400, "height": 1100})
    pg.set_default_timeout(120_000)
    yield pg
    pg.close()


PANEL = ".jp-NotebookPanel:not(.lm-mod-hidden)"


def _open(page, lab, notebook: str) -> None:
    base, token = lab
    page.goto(f"{base}/lab/tree/notebooks/{notebook}?token={token}")
    page.locator(f"{PANEL} .jp-Cell").first.wait_for()
    page.locator(f'{PANEL} .jp-Notebook-ExecutionIndicator[data-status="idle"]').wait_for()
    page.locator(".jp-StatusBar-Widget", has_text="| Idle").first.wait_for()  # the kernel is connected


def _run_until(page, run, locator, name: str, tries: int = 3, seconds: float = 60) -> None:
    """``run()`` (a menu command) until ``locator`` appears: a command issued while the freshly
    started kernel is still connecting can be dropped, so it is issued again (the cells are
    idempotent). Keeps a screenshot and the notebook text on failure."""
    for attempt in range(tries):
        run()
        try:
            locator.wait_for(timeout=seconds * 1000)
            return
        except Exception:
            if attempt == tries - 1:
                page.screenshot(path=str(SHOTS / f"{name}_failed.png"))
                (SHOTS / f"{name}_failed.txt").write_text(page.locator(PANEL).inner_text())
                raise


def _menu(page, menu: str, item: str) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text=menu).first.click()
    page.locator(".lm-Menu-itemLabel", has_text=item).first.click()


def _wait(page, locator, name: str) -> None:
    """Wait for ``locator``; on a timeout keep a screenshot and the notebook's text for diagnosis."""
    try:
        locator.wait_for()
    except Exception:
        page.screenshot(path=str(SHOTS / f"{name}_failed.png"))
        (SHOTS / f"{name}_failed.txt").write_text(page.locator(PANEL).inner_text())
        raise


def test_notebook_00_runs_its_first_cells_in_jupyterlab(page, lab):
    _open(page, lab, "00_setup_and_data.ipynb")
    outputs = page.locator(f"{PANEL} .jp-OutputArea-output")

    setup_line = outputs.filter(has_text="repo root: . | data: data | device:").first
    _run_until(page, lambda: _menu(page, "Run", "Run All Cells"), setup_line, "00")
    versions = outputs.filter(has_text="| torch ").filter(has_text="timm ").first
    _wait(page, versions, "00")
    page.screenshot(path=str(SHOTS / "00_setup_and_data.png"))
    assert f"python {sys.version_info.major}.{sys.version_info.minor}" in versions.inner_text()
    assert page.locator(f"{PANEL} [data-mime-type='application/vnd.jupyter.stderr']").count() == 0


def test_notebook_12_search_answers_a_typed_caption(page, lab):
    _open(page, lab, "12_interactive_search.ipynb")
    results = page.locator(".daim-results")
    _run_until(
        page,
        lambda: _menu(page, "Run", "Run All Cells"),
        results.filter(has_text="top images for").first,
        "12",
        seconds=120,
    )
    first = results.first.inner_text()
    box = page.locator(".daim-query input")
    box.fill("a small green triangle")
    box.press("Enter")
    _wait(page, results.filter(has_text="top images for a small green triangle").first, "12")
    results.first.scroll_into_view_if_needed()
    page.screenshot(path=str(SHOTS / "12_interactive_search.png"))
    after = results.first.inner_text()
    assert after != first
    assert after.count("score") == 3  # top k = 3 results listed
    assert "random weights" in page.locator(PANEL).inner_text()


# --- the course book (`make book`): its index and a notebook page, offline --------------------------


def _load_build_book():
    import importlib.util  # noqa: PLC0415

    spec = importlib.util.spec_from_file_location("build_book", REPO / "scripts" / "build_book.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def book(tmp_path_factory):
    """The book built from the committed notebooks into a temporary folder (what `make book` runs)."""
    build_book = _load_build_book()
    out = tmp_path_factory.mktemp("book")
    notebooks = build_book.notebook_files()
    build_book.build(out, notebooks)
    return out, build_book, notebooks


@pytest.fixture(scope="module")
def offline_page(chromium):
    pg = chromium.new_page(viewport={"width": 1400, "height": 1100})
    pg.set_default_timeout(60_000)
    pg.route(re.compile(r"^https?://"), lambda route: route.abort())  # the book must work offline
    yield pg
    pg.close()


def test_the_book_index_lists_every_notebook_and_opens_a_page_with_its_figures(book, offline_page):
    out, build_book, notebooks = book
    page = offline_page
    page.goto((out / "index.html").as_uri())
    titles = [build_book.title_of(nbformat_read(nb), nb.stem) for nb in notebooks]
    links = page.locator("ol a")
    assert links.count() == len(notebooks) >= 14
    assert [links.nth(i).inner_text() for i in range(links.count())] == titles
    # a notebook page, reached by clicking its entry: its title, its prose, a figure that rendered
    k = next(i for i, nb in enumerate(notebooks) if nb.name.startswith("02_"))
    links.nth(k).click()
    page.wait_for_url(f"**/{notebooks[k].stem}.html")
    assert page.locator("h1").first.inner_text().strip().rstrip("¶").strip() == titles[k]
    figures = page.locator(".jp-OutputArea-output img")
    assert figures.count() >= 1, "no figure in the rendered notebook"
    sizes = figures.first.evaluate("img => [img.complete, img.naturalWidth, img.naturalHeight]")
    assert sizes[0] and sizes[1] > 100 and sizes[2] > 100, sizes
    assert page.locator(".jp-CodeCell").count() >= 5
    page.screenshot(path=str(SHOTS / "book_02.png"))
    # links between notebooks lead to rendered pages, never to .ipynb files
    hrefs = page.locator("a[href]").evaluate_all("els => els.map(e => e.getAttribute('href'))")
    assert not [h for h in hrefs if re.match(r"^\d\d_\w+\.ipynb", h)], hrefs
    method_map = [h for h in hrefs if h.endswith("method_map.png")]  # linked from the header, copied along
    assert method_map == ["figures/method_map.png"] and (out / method_map[0]).is_file()
    nav = page.locator("nav.daim-book-nav")
    assert nav.locator('a[href="index.html"]').count() == 1 and titles[k + 1] in nav.inner_text()
    nxt = next(h for h in hrefs if h.startswith("03_") and h.endswith(".html"))
    page.goto((out / nxt).as_uri())
    assert page.locator("h1").first.inner_text().strip().rstrip("¶").strip() == titles[k + 1]


def nbformat_read(path: Path):
    import nbformat  # noqa: PLC0415

    return nbformat.read(path, as_version=4)
