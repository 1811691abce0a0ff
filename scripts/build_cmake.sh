#!/usr/bin/env bash
# Builds the operator library with CMake against libtorch (for C++ users): build-cmake/libdepthmetric_ops.so,
# which torch.ops.load_library loads. Uses the python given as $1 (default .venv/bin/python) for torch's
# CMake config. torch's CMake config wants CUDA's runtime and nvrtc even for CPU code when torch has CUDA:
# the toolkit has the first, torch's nvidia wheel the second. tests/test_build.py runs this when the library
# is missing, so the README's test command checks it wherever it runs; .ci/run runs it before the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${1:-.venv/bin/python}

PREFIX=$("$PY" -c 'import torch; print(torch.utils.cmake_prefix_path)')
NVIDIA=$("$PY" -c 'import sysconfig, os; print(os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13"))')
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
FLAGS=(-DCMAKE_PREFIX_PATH="$PREFIX" -DCMAKE_BUILD_TYPE=Release)
if [ -d "$NVIDIA" ]; then
  export CPATH="$NVIDIA/include${CPATH:+:$CPATH}"
  FLAGS+=(-DCUDA_TOOLKIT_ROOT_DIR="$CUDA_HOME" -DCUDA_nvrtc_LIBRARY="$NVIDIA/lib/libnvrtc.so.13")
fi
cmake -S . -B build-cmake "${FLAGS[@]}" > build-cmake.log 2>&1 || { cat build-cmake.log; exit 1; }
cmake --build build-cmake -j"${MAX_JOBS:-2}" >> build-cmake.log 2>&1 || { tail -50 build-cmake.log; exit 1; }
echo "build-cmake/libdepthmetric_ops.so built (log: build-cmake.log)"
