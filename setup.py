"""Builds depthmetric._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

DEPTHMETRIC_WITH_CUDA=0 skips the CUDA kernels, =1 makes their absence an error; TORCH_CUDA_ARCH_LIST picks
the architectures (default: all of DEFAULT_CUDA_ARCHS; no GPU is needed to compile them). The library is
built against torch's stable ABI and Python's limited API, so the wheel (`cp310-abi3`) loads on Python 3.10+
and torch 2.11+.
"""
import glob
import os
import pathlib
import re
import sysconfig

import torch
from setuptools import find_packages, setup
from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CppExtension, CUDAExtension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _with_cuda():
    flag = os.environ.get("DEPTHMETRIC_WITH_CUDA", "auto")
    possible = torch.version.cuda is not None and CUDA_HOME is not None
    if flag == "0":
        return False
    if flag == "1" and not possible:
        raise RuntimeError(
            f"DEPTHMETRIC_WITH_CUDA=1 but torch.version.cuda={torch.version.cuda!r}, CUDA_HOME={CUDA_HOME!r}"
        )
    return possible


# The stable ABI: the library uses only torch's stable C shim and header-only API, so one build loads on
# torch TORCH_TARGET (2.11) and every later release, and only Python's limited API (abi3, Python 3.10+).
TORCH_TARGET = (2, 11)
PY_LIMITED = "cp310"
# Every architecture CUDA 13 and current torch builds support, plus PTX of the newest for later GPUs.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;8.9;9.0;10.0;12.0+PTX"
# The host compiler's optimisation flags (CMakeLists.txt reads them from here). -fno-trapping-math lets GCC
# turn the clamps of the per-pixel loops into vector selects and -fno-math-errno lets it vectorise sqrt: they
# give up floating-point exception flags and errno, which nothing reads; results are unchanged. No -march:
# the wheel runs on any x86-64 (benchmarks/results/NOTES_cpu.md measures what AVX2 would add).
CXX_OPT_FLAGS = ["-O3", "-fno-trapping-math", "-fno-math-errno"]


def _cuda_arch_list():
    """TORCH_CUDA_ARCH_LIST when set, else every supported architecture (the wheel carries them all)."""
    archs = os.environ.get("TORCH_CUDA_ARCH_LIST") or DEFAULT_CUDA_ARCHS
    os.environ["TORCH_CUDA_ARCH_LIST"] = archs  # torch.utils.cpp_extension reads the same variable
    return archs


def _extensions():
    with_cuda = _with_cuda()
    arch_list = _cuda_arch_list() if with_cuda else ""
    target = "0x{:02x}{:02x}000000000000".format(*TORCH_TARGET)
    macros = [
        ("DEPTHMETRIC_WITH_CUDA", "1" if with_cuda else "0"),
        ("DEPTHMETRIC_CUDA_ARCHS", f'"{arch_list}"'),
        ("DEPTHMETRIC_TORCH_VERSION", f'"{torch.__version__}"'),
        ("DEPTHMETRIC_TORCH_TARGET", '"{}.{}"'.format(*TORCH_TARGET)),
        ("DEPTHMETRIC_PYTHON_VERSION", f'"{sysconfig.get_python_version()}"'),
        ("TORCH_TARGET_VERSION", target),
        ("Py_LIMITED_API", "0x030A0000"),
    ]
    include_dirs = [os.path.join(ROOT, "csrc")]
    # The CUDA runtime headers of torch's nvidia wheels, for toolkits that lack some of them.
    nvidia_include = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "include")
    if with_cuda and os.path.isdir(nvidia_include):
        include_dirs.append(nvidia_include)
    # The C++ standard is torch's.
    # No -fopenmp: torch::stable::parallel_for runs its work inside libtorch's own parallel backend.
    # -DUSE_CUDA declares the stable C shim's CUDA entry points (the current stream).
    # -fvisibility=hidden: torch's stable types are hidden, and so is everything of ours but PyInit__C.
    extra = {"cxx": [*CXX_OPT_FLAGS, "-fvisibility=hidden"],
             "nvcc": ["-O3", "-lineinfo", "-DUSE_CUDA", "-Xcompiler", "-fvisibility=hidden"]}
    # The CPU kernels, the schemas and the Python module in depthmetric._C; the CUDA kernels in
    # depthmetric._C_cuda, a library of its own that needs libtorch_cuda and libcudart, so that the same wheel
    # also loads (CPU kernels only) under a torch without CUDA. _ext loads it when torch has CUDA.
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True))
    print(
        f"depthmetric: compiling {len(cpp)} C++ sources (stable ABI, torch >= {TORCH_TARGET[0]}.{TORCH_TARGET[1]})"
        + (f" and {len(cu)} CUDA sources for TORCH_CUDA_ARCH_LIST={arch_list}" if with_cuda else ", no CUDA kernels")
    )
    common = dict(include_dirs=include_dirs, define_macros=macros, extra_compile_args=extra, py_limited_api=True)
    extensions = [CppExtension("depthmetric._C", cpp, **common)]
    if with_cuda:
        extensions.append(CUDAExtension("depthmetric._C_cuda", cu, **common))
    return extensions

# The version's one home is depthmetric/__init__.py (read as text: importing the package here would need a build).
VERSION = re.search(r'^__version__ = "([^"]+)"$', pathlib.Path(ROOT, "depthmetric", "__init__.py").read_text(),
                    re.M).group(1)

setup(
    name="depthmetric",
    version=VERSION,
    description="Fused training losses and metrics for monocular depth estimation (PyTorch C++/CUDA extension)",
    long_description=pathlib.Path(ROOT, "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    # The code's licence (SPDX).
    license_expression="BSD-3-Clause",
    license_files=["LICENSE"],
    classifiers=[
        "Programming Language :: Python :: 3",
        "Programming Language :: C++",
        "Environment :: GPU :: NVIDIA CUDA",
        "Operating System :: POSIX :: Linux",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
        "Topic :: Scientific/Engineering :: Image Processing",
    ],
    packages=find_packages(include=["depthmetric", "depthmetric.*"]),
    ext_modules=_extensions(),
    cmdclass={"build_ext": BuildExtension},
    options={"bdist_wheel": {"py_limited_api": PY_LIMITED}},
    python_requires=">=3.10",
    # The library imports torch alone (tests/test_package.py checks it); the training application needs more.
    install_requires=["torch>=2.11"],
    extras_require={"train": ["numpy", "pillow", "tqdm", "matplotlib", "tensorboard", "pyyaml"]},
    entry_points={"console_scripts": ["depthmetric=depthmetric.training.cli:main"]},
)
