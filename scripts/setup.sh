#!/usr/bin/env bash
# Creates .venv/ and installs chattune into it, with the torch build that fits this machine.
#   CHATTUNE_TORCH=cpu|cuda   force a build (default: cuda when nvidia-smi sees a GPU, else cpu)
#   CHATTUNE_LLAMA=cpu        on a CUDA machine, accept a CPU build of llama.cpp (the chat) without nvcc
# On a CUDA machine torch comes from PyTorch's own index, in the CUDA build the driver runs (+cu130 or
# +cu126), llama-cpp-python is compiled with CUDA when nvcc is present, and setup stops with one line
# naming the fix when torch cannot see the GPU or llama.cpp cannot offload to it.
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
stop() { echo "chattune setup: $1" >&2; exit 1; }

if [ "$CHATTUNE_TORCH" = cuda ]; then
  # cu130 needs driver 580+ and compute capability 7.5+; cu126 runs on driver 525.60+ (engine/hardware.py).
  TORCH_BUILD=$(PYTHONPATH=. "$PYTHON" -m engine.hardware torch-build) \
    || stop "no CUDA build of torch fits this machine: $TORCH_BUILD (update the NVIDIA driver, or accept the CPU with CHATTUNE_TORCH=cpu make setup)"
else
  TORCH_BUILD=cpu
fi
echo "chattune setup: torch build = $TORCH_BUILD"

[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
PIP=".venv/bin/python -m pip"
$PIP install --quiet --upgrade pip

# The torch that is there is kept only when it is the build chosen (cu126 <-> CUDA 12.6, cpu <-> none).
installed=$(.venv/bin/python -c "import torch; c = torch.version.cuda; print('cu' + c.replace('.', '') if c else 'cpu')" 2>/dev/null || true)
if [ "$installed" != "$TORCH_BUILD" ]; then
  if [ "$TORCH_BUILD" = cpu ]; then
    # The +cpu local version never matches a CUDA wheel, so no CUDA packages come along.
    # It is found in pip's configured find-links/indexes, else in PyTorch's CPU index.
    $PIP install "torch==$TORCH_VERSION+cpu" \
      || $PIP install "torch==$TORCH_VERSION+cpu" --extra-index-url https://download.pytorch.org/whl/cpu
  else
    # A plain torch==X could match a +cpu wheel in pip's find-links, and PyPI's build may need a newer
    # driver: the local version pins the CUDA build, from PyTorch's index.
    $PIP install "torch==$TORCH_VERSION+$TORCH_BUILD" --extra-index-url "https://download.pytorch.org/whl/$TORCH_BUILD"
  fi
fi

LLAMA_GPU=no
if [ "$CHATTUNE_TORCH" = cuda ] && [ "${CHATTUNE_LLAMA:-}" != cpu ]; then
  NVCC=$(command -v nvcc || { [ -x /usr/local/cuda/bin/nvcc ] && echo /usr/local/cuda/bin/nvcc; } || true)
  [ -n "$NVCC" ] || stop "nvcc (the CUDA toolkit) is not installed, so llama.cpp (the chat) cannot be built for the GPU: install the CUDA toolkit and run setup again, or accept a CPU chat with CHATTUNE_LLAMA=cpu make setup"
  LLAMA_GPU=yes
  if ! ls .venv/lib/python*/site-packages/llama_cpp/lib/libggml-cuda* >/dev/null 2>&1; then
    # Built from source (--no-binary) without pip's wheel cache, which would hand back the CPU build.
    echo "chattune setup: compiling llama-cpp-python with CUDA ($NVCC; several minutes)"
    CUDACXX="$NVCC" CMAKE_ARGS="-DGGML_CUDA=on" CMAKE_BUILD_PARALLEL_LEVEL="$(nproc)" \
      $PIP install --no-cache-dir --force-reinstall --no-deps --no-binary llama-cpp-python \
        "$(grep -o '"llama-cpp-python[^"]*"' pyproject.toml | tr -d '"')"
  fi
fi

# llama-cpp-python compiles from source the first time (about 5 minutes on 2 cores); pip caches the wheel.
$PIP install -e ".[test]"
.venv/bin/python -c "import torch; print('chattune setup: torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu')"
if [ "$CHATTUNE_TORCH" = cuda ]; then
  .venv/bin/python -m engine.doctor --setup-check "$LLAMA_GPU" || exit 1
fi
