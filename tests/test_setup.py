"""scripts/setup.sh: CPU-first torch, the fallback when PyTorch's CPU index is unreachable, loud pip
failures and the named Jupyter kernel (issues 11.3, 11.1 and 12.9).

The decision logic runs for real in the script's dry-run mode (it prints the pip commands instead
of running them); "a GPU" and "the CPU index" are pointed at files and localhost servers made here,
so nothing leaves the machine. The failure tests run the script against a fake venv whose
``python`` records its arguments and answers like pip would.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SETUP = REPO / "scripts" / "setup.sh"
IGNORED_NOTE = "WARNING: Location 'file:///x/simple/a/' is ignored: it is neither a file nor a directory."


def _copy_setup(tmp_path: Path) -> Path:
    (tmp_path / "scripts").mkdir()
    shutil.copy(SETUP, tmp_path / "scripts" / "setup.sh")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    return tmp_path / "scripts" / "setup.sh"


def _run(script: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    base = {"PATH": os.environ.get("PATH", ""), "HOME": os.environ.get("HOME", "/"), "PYTHON": sys.executable}
    return subprocess.run(
        ["bash", str(script), *args], env={**base, **env}, capture_output=True, text=True, timeout=60
    )


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again on exit: connections are refused


class _Index(http.server.BaseHTTPRequestHandler):
    hits: list[str] = []

    def do_HEAD(self):  # noqa: N802 - http.server's naming
        type(self).hits.append(self.path)
        self.send_response(200)
        self.end_headers()

    do_GET = do_HEAD

    def log_message(self, *args):
        pass


@pytest.fixture
def local_index():
    """A localhost HTTP server standing in for PyTorch's CPU index; yields (url, hits)."""
    _Index.hits = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Index)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/whl/cpu", _Index.hits
    finally:
        server.shutdown()
        server.server_close()


def _no_gpu(tmp_path: Path) -> dict:
    return {"DAIM_NVIDIA_SMI": "no-such-nvidia-smi", "DAIM_NVIDIA_PROC": str(tmp_path / "no-driver")}


def _torch_command(out: str) -> str:
    lines = [ln for ln in out.splitlines() if "dry run:" in ln and "pip install" in ln and "torch" in ln]
    assert len(lines) == 1, out
    return lines[0]


def test_no_gpu_and_cpu_index_unreachable_falls_back_to_the_default_index(tmp_path):
    script = _copy_setup(tmp_path)
    url = f"http://127.0.0.1:{_closed_port()}/whl/cpu"
    res = _run(
        script, {**_no_gpu(tmp_path), "TORCH_CPU_INDEX_URL": url, "DAIM_PROBE_TIMEOUT": "2"}, "--dry-run"
    )
    assert res.returncode == 0, res.stderr
    assert "did not answer" in res.stdout and url in res.stdout
    cmd = _torch_command(res.stdout)
    assert "--index-url" not in cmd and cmd.endswith("torch torchvision")
    assert not (tmp_path / ".venv").exists(), "a dry run must not create the venv"


def test_no_gpu_and_cpu_index_reachable_takes_the_cpu_wheels(tmp_path, local_index):
    url, hits = local_index
    script = _copy_setup(tmp_path)
    res = _run(script, {**_no_gpu(tmp_path), "TORCH_CPU_INDEX_URL": url}, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert f"--index-url {url} torch torchvision" in _torch_command(res.stdout)
    assert hits, "the CPU index was never probed"


def test_a_gpu_means_the_default_index_without_probing(tmp_path, local_index):
    url, hits = local_index
    script = _copy_setup(tmp_path)
    driver = tmp_path / "driver"
    driver.write_text("NVRM version: test\n")
    env = {
        "DAIM_NVIDIA_SMI": "no-such-nvidia-smi",
        "DAIM_NVIDIA_PROC": str(driver),
        "TORCH_CPU_INDEX_URL": url,
    }
    res = _run(script, {**env, "DAIM_SETUP_DRY_RUN": "1"})
    assert res.returncode == 0, res.stderr
    assert "NVIDIA GPU is present" in res.stdout
    assert "--index-url" not in _torch_command(res.stdout)
    assert hits == [], "with a GPU the CPU index must not be probed"


def test_an_explicit_torch_index_wins(tmp_path):
    script = _copy_setup(tmp_path)
    res = _run(script, {**_no_gpu(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/mine"}, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "--index-url http://127.0.0.1:9/mine torch torchvision" in _torch_command(res.stdout)


def test_make_demo_installs_the_notebook_extra_only(tmp_path):
    script = _copy_setup(tmp_path)
    env = {**_no_gpu(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/x", "DAIM_SETUP_EXTRAS": "notebook"}
    res = _run(script, env, "--dry-run")
    assert res.returncode == 0, res.stderr
    assert "pip install -q -e .[notebook]" in res.stdout and ".[dev]" not in res.stdout
    demo = (REPO / "Makefile").read_text().split("\ndemo:", 1)[1].split("\n\n", 1)[0]
    assert "DAIM_SETUP_EXTRAS=notebook bash scripts/setup.sh" in demo
    assert _run(script, {**env, "DAIM_SETUP_EXTRAS": "everything"}, "--dry-run").returncode == 2


def test_dry_run_lists_the_dev_install_and_the_named_kernel(tmp_path):
    script = _copy_setup(tmp_path)
    res = _run(script, {**_no_gpu(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/x"}, "--dry-run")
    assert "pip install -q -e .[dev]" in res.stdout
    assert (
        '-m ipykernel install --sys-prefix --name daim-kit --display-name "Python (DAIM Kit)"' in res.stdout
    )


def _fake_venv(root: Path, pip_exit: int) -> Path:
    """``.venv/bin/python`` that logs its arguments; ``-m pip`` prints the local-index note and
    exits ``pip_exit`` (0 also makes later imports succeed); ``-c`` imports succeed after that."""
    bin_dir = root / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    log, installed = root / "calls.log", root / "installed"
    fake = bin_dir / "python"
    fake.write_text(
        "#!/usr/bin/env bash\n"
        f'echo "$*" >> "{log}"\n'
        'case "$*" in\n'
        f'  *"-m pip"*) echo "{IGNORED_NOTE}" >&2; [ {pip_exit} -eq 0 ] && touch "{installed}"; exit {pip_exit};;\n'
        f'  "-c "*) [ -e "{installed}" ];;\n'
        "  *) exit 0;;\n"
        "esac\n"
    )
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    return log


def test_a_failing_pip_stops_setup_with_its_exit_code(tmp_path):
    script = _copy_setup(tmp_path)
    log = _fake_venv(tmp_path, pip_exit=7)
    res = _run(script, {**_no_gpu(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/x"})
    assert res.returncode == 7, (res.stdout, res.stderr)
    assert "FAILED: pip install" in res.stderr and "exited with 7" in res.stderr
    assert "-e .[dev]" not in log.read_text(), "setup went on after pip failed"


def test_a_quiet_successful_pip_passes_and_the_kernel_is_registered_in_the_venv(tmp_path):
    script = _copy_setup(tmp_path)
    log = _fake_venv(tmp_path, pip_exit=0)
    res = _run(script, {**_no_gpu(tmp_path), "TORCH_INDEX_URL": "http://127.0.0.1:9/x"})
    assert res.returncode == 0, (res.stdout, res.stderr)
    assert "is ignored" not in res.stdout + res.stderr, "the local-index noise should be filtered"
    calls = log.read_text()
    assert (
        "-m pip --disable-pip-version-check install -q --index-url http://127.0.0.1:9/x torch torchvision"
        in calls
    )
    assert "install -q -e .[dev]" in calls
    assert "-m ipykernel install --sys-prefix --name daim-kit --display-name Python (DAIM Kit)" in calls
    assert (tmp_path / ".venv" / ".daimlib-installed").exists()
