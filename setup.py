"""Builds depthmetric._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

`pip install .` works with build isolation: the CUDA toolkit is found through the nvcc on PATH (or CUDA_HOME),
its runtime library and headers in the toolkit or where torch's CUDA wheels put them. DEPTHMETRIC_WITH_CUDA=0
skips the CUDA kernels, =1 makes their absence an error; TORCH_CUDA_ARCH_LIST picks the architectures
(default: all of DEFAULT_CUDA_ARCHS; no GPU is needed to compile them). The library is built against torch's
stable ABI and Python's limited API, so the wheel (`cp310-abi3`) loads on Python 3.10+ and torch 2.11+.
"""
import glob
import os
import pathlib
import re
import shutil
import subprocess
import sysconfig

import torch
from setuptools import find_packages, setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def find_cuda_home(environ=os.environ, which=shutil.which) -> str | None:
    """The CUDA toolkit's root: CUDA_HOME or CUDA_PATH when set, else the toolkit of the nvcc on PATH, else
    /usr/local/cuda when it has nvcc. torch's own guess is the parent of nvcc's folder, which for a link or a
    wrapper script such as /usr/local/bin/nvcc is /usr/local, a folder without the CUDA runtime."""
    for name in ("CUDA_HOME", "CUDA_PATH"):
        if environ.get(name):
            return environ[name]
    nvcc = which("nvcc")
    if nvcc is not None:
        return nvcc_toolkit_root(nvcc)
    return "/usr/local/cuda" if os.path.exists("/usr/local/cuda/bin/nvcc") else None


def nvcc_toolkit_root(nvcc: str) -> str:
    """The toolkit an nvcc belongs to, as nvcc itself reports it (`-v -dryrun` prints `#$ TOP=<root>`), so a
    wrapper script leads to its toolkit too; else the parent of the folder of the file a link points to."""
    try:
        report = subprocess.run([nvcc, "-v", "-dryrun", "-E", "-x", "cu", os.devnull], capture_output=True,
                                text=True, timeout=60).stderr
    except (OSError, subprocess.TimeoutExpired):
        report = ""
    top = re.search(r"^#\$ TOP=(.+)$", report, re.M)
    return os.path.realpath(top.group(1).strip() if top else os.path.join(os.path.realpath(nvcc), "..", ".."))


def cuda_runtime_paths(cuda_home: str, site_packages: str, cuda_major: str, link_dir: str) -> tuple[list, list]:
    """(include dirs, library dirs) to add so that the CUDA kernels find cuda_runtime.h and link -lcudart.

    The headers of torch's nvidia wheels (site-packages/nvidia/cu<major>/ for CUDA 13, nvidia/cuda_runtime/
    before) are added only for a toolkit without cuda_runtime.h: the wheels may be of a newer CUDA minor release
    than the nvcc (an isolated build installs the newest torch, e.g. CUDA 13.2 headers beside nvcc 13.0), and
    CUDA's headers refuse a compiler of another release. The runtime library is the toolkit's, else the
    wheels', which may hold it only as libcudart.so.<major>: -lcudart needs the unversioned name, so a link
    libcudart.so in link_dir points at it (the built library records the SONAME, libcudart.so.<major>, either
    way)."""
    wheels = [os.path.join(site_packages, "nvidia", name) for name in (f"cu{cuda_major}", "cuda_runtime")]
    has_headers = os.path.exists(os.path.join(cuda_home, "include", "cuda_runtime.h"))
    includes = [] if has_headers else [os.path.join(w, "include") for w in wheels
                                       if os.path.isdir(os.path.join(w, "include"))]
    for lib in [os.path.join(cuda_home, "lib64"), os.path.join(cuda_home, "lib"),
                *(os.path.join(w, "lib") for w in wheels)]:
        if os.path.exists(os.path.join(lib, "libcudart.so")):
            return includes, [lib]
        if os.path.exists(os.path.join(lib, f"libcudart.so.{cuda_major}")):
            os.makedirs(link_dir, exist_ok=True)
            link = os.path.join(link_dir, "libcudart.so")
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.join(lib, f"libcudart.so.{cuda_major}"), link)
            return includes, [link_dir]
    raise RuntimeError(
        f"nvcc was found (CUDA toolkit {cuda_home}) but not the CUDA runtime library libcudart.so(.{cuda_major}): "
        f"not in {cuda_home}/lib64 nor in torch's nvidia wheels under {site_packages}; set CUDA_HOME to a "
        "complete toolkit, or DEPTHMETRIC_WITH_CUDA=0 for the CPU kernels only"
    )


def _with_cuda(cuda_home: str | None) -> bool:
    """Whether to build the CUDA kernels; when not, says why in one line."""
    flag = os.environ.get("DEPTHMETRIC_WITH_CUDA", "auto")
    if flag == "0":
        print("depthmetric: DEPTHMETRIC_WITH_CUDA=0: building the CPU kernels only")
        return False
    why_not = (f"torch {torch.__version__} is a build without CUDA" if torch.version.cuda is None
               else "nvcc was not found (not on PATH, no CUDA_HOME, no /usr/local/cuda)" if cuda_home is None
               else None)
    if why_not and flag == "1":
        raise RuntimeError(f"DEPTHMETRIC_WITH_CUDA=1 but {why_not}")
    if why_not:
        print(f"depthmetric: {why_not}: building the CPU kernels only")
    return why_not is None


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
    cuda_home = find_cuda_home()
    if cuda_home is not None:
        os.environ["CUDA_HOME"] = cuda_home  # torch.utils.cpp_extension reads it when first imported, below
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    with_cuda = _with_cuda(cuda_home)
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
    library_dirs = []
    if with_cuda:
        # torch's nvidia wheels sit beside torch (in an isolated build, in the build environment, not the venv).
        cuda_includes, library_dirs = cuda_runtime_paths(
            cuda_home, os.path.dirname(os.path.dirname(torch.__file__)), torch.version.cuda.split(".")[0],
            os.path.join(ROOT, "build", "cudart"))
        include_dirs += cuda_includes
    # The C++ standard is torch's.
    # No -fopenmp: torch::stable::parallel_for runs its work inside libtorch's own parallel backend.
    # -DUSE_CUDA declares the stable C shim's CUDA entry points (the current stream).
    # -fvisibility=hidden: torch's stable types are hidden, and so is everything of ours but PyInit__C.
    # -g0: Python's CFLAGS carry -g, whose debug info would make the libraries several times larger.
    extra = {"cxx": [*CXX_OPT_FLAGS, "-fvisibility=hidden", "-g0"],
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
        extensions.append(CUDAExtension("depthmetric._C_cuda", cu, library_dirs=library_dirs, **common))
    return extensions

# The version's one home is depthmetric/__init__.py (read as text: importing the package here would need a build).
VERSION = re.search(r'^__version__ = "([^"]+)"$', pathlib.Path(ROOT, "depthmetric", "__init__.py").read_text(),
                    re.M).group(1)

# Run by pip, build and `python setup.py` alike; tests import the functions above without building.
if __name__ == "__main__":
    ext_modules = _extensions()  # first: it sets CUDA_HOME before torch.utils.cpp_extension is imported
    from torch.utils.cpp_extension import BuildExtension

    setup(
        name="depthmetric",
        version=VERSION,
        description="Fused training losses and metrics for monocular depth estimation "
                    "(PyTorch C++/CUDA extension)",
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
        # No data in the library or the application: the real samples are a distribution of their own (samples/).
        package_data={"depthmetric": ["py.typed"]},
        ext_modules=ext_modules,
        cmdclass={"build_ext": BuildExtension},
        options={"bdist_wheel": {"py_limited_api": PY_LIMITED}},
        python_requires=">=3.10",
        # The library imports torch alone (tests/test_package.py checks it); the training application needs more.
        install_requires=["torch>=2.11"],
        extras_require={"train": ["numpy", "pillow", "tqdm", "matplotlib", "tensorboard", "pyyaml"],
                        "torchmetrics": ["torchmetrics>=1.0"]},  # depthmetric.metrics.DepthMetricsTM
        entry_points={"console_scripts": ["depthmetric=depthmetric.training.cli:main"]},
    )
