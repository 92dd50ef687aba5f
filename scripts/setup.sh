#!/usr/bin/env bash
# Creates .venv/ and installs chattune into it, with the torch build that fits this machine.
#   CHATTUNE_TORCH=cpu|cuda   force a build (default: cuda when nvidia-smi sees a GPU, else cpu)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
TORCH_VERSION=${TORCH_VERSION:-2.13.0}

if [ -z "${CHATTUNE_TORCH:-}" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    CHATTUNE_TORCH=cuda
  else
    CHATTUNE_TORCH=cpu
  fi
fi
echo "chattune setup: torch build = $CHATTUNE_TORCH"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  if [ "$CHATTUNE_TORCH" = cuda ]; then
    # PyPI's Linux torch wheel is the CUDA build.
    $PIP install "torch==$TORCH_VERSION"
  else
    # The +cpu local version never matches a CUDA wheel, so no CUDA packages come along.
    # It is found in pip's configured find-links/indexes, else in PyTorch's CPU index.
    $PIP install "torch==$TORCH_VERSION+cpu" \
      || $PIP install "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  fi
fi

# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip caches the wheel.
$PIP install -e ".[test]"
.venv/bin/python -c "import torch; print('chattune setup: torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
