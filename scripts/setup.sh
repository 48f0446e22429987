#!/usr/bin/env bash
# Set up DAIM Kit in ./.venv: a virtual environment, a torch build that fits this machine, the
# package (editable) with its dev tools, and a Jupyter kernel. Safe to run again: it only installs
# what is missing. Environment knobs:
#   PYTHON=python3.11        the interpreter to build the venv from (default: python3)
#   TORCH_SPEC="torch==2.5.1 torchvision==0.20.1"   pin a torch pair (default: the newest pair pip allows)
#   TORCH_INDEX_URL=...      e.g. PyTorch's CPU wheel index, for a small CPU-only install
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=.venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PY --version 2>&1)"
  "$PY" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
if ! "$VENV/bin/python" -c "import torch, torchvision" >/dev/null 2>&1; then
  echo "[setup] installing torch + torchvision (${TORCH_SPEC:-newest allowed pair}); this is the slow step"
  # shellcheck disable=SC2086
  "${PIP[@]}" install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} ${TORCH_SPEC:-torch torchvision} 2>&1 \
    | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import torch, torchvision" || { echo "[setup] torch did not install; see above" >&2; exit 1; }
fi
if ! "$VENV/bin/python" -c "import daimlib, nbval, timm, transformers" >/dev/null 2>&1 \
   || [ pyproject.toml -nt "$VENV/.daimlib-installed" ]; then
  echo "[setup] installing daimlib and its dependencies (editable, with dev extras)"
  "${PIP[@]}" install -q -e ".[dev]" 2>&1 | grep -v "is ignored: it is neither a file nor a directory" || true
  "$VENV/bin/python" -c "import daimlib, nbval, timm, transformers" || { echo "[setup] install failed" >&2; exit 1; }
  touch "$VENV/.daimlib-installed"
fi
"$VENV/bin/python" - <<'PY'
import platform, torch, torchvision, timm, transformers
print(f"[setup] ready: Python {platform.python_version()}, torch {torch.__version__} "
      f"(CUDA available: {torch.cuda.is_available()}), torchvision {torchvision.__version__}, "
      f"timm {timm.__version__}, transformers {transformers.__version__}")
PY
