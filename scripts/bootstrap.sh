#!/usr/bin/env bash
# Sets up depthmetric from nothing: a virtual environment in .venv with torch (the CUDA 13.0 build, so the
# CUDA kernels compile even without a GPU), the test tools, the samples (samples/), and the package built in
# place (CPU kernels always; CUDA kernels when nvcc is found) against torch's stable ABI. Safe to run again:
# it only rebuilds what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
TORCH_SPEC=${DEPTHMETRIC_TORCH:-torch==2.14.1}

if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip setuptools wheel
.venv/bin/python -m pip install -q "$TORCH_SPEC" -r requirements-dev.txt
# The real RGB-D samples the main job and the tests read: a distribution of their own (third-party data under
# non-commercial terms, see samples/README.md), kept out of the library.
.venv/bin/python -m pip install -q ./samples

if [ -z "${CUDA_HOME:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDA_HOME=/usr/local/cuda
fi
# TORCH_CUDA_ARCH_LIST unset: every architecture of setup.py's DEFAULT_CUDA_ARCHS (82 s on 2 cores);
# set it, e.g. "9.0", to build for your GPU alone.
export MAX_JOBS=${MAX_JOBS:-2}

# Build in place, incrementally (ninja recompiles only what changed, so running this again is quick), and put
# the checkout on the venv's path. `pip install .` is the install for your own env.
.venv/bin/python setup.py -q build_ext --inplace
SITE=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$PWD" > "$SITE/depthmetric-checkout.pth"
.venv/bin/python -c "import depthmetric, json; print('depthmetric build:', json.dumps(depthmetric.build_info()))"
