"""Builds depthmetric._C: the CPU kernels always, the CUDA kernels when torch has CUDA and nvcc is found.

DEPTHMETRIC_WITH_CUDA=0 skips the CUDA kernels, =1 makes their absence an error; TORCH_CUDA_ARCH_LIST picks
the architectures (no GPU is needed to compile them).
"""
import glob
import os
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


def _sources(with_cuda):
    cpp = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    cu = sorted(glob.glob("csrc/**/*.cu", recursive=True)) if with_cuda else []
    return cpp + cu


def _extension():
    with_cuda = _with_cuda()
    arch_list = os.environ.get("TORCH_CUDA_ARCH_LIST", "") if with_cuda else ""
    macros = [
        ("DEPTHMETRIC_WITH_CUDA", "1" if with_cuda else "0"),
        ("DEPTHMETRIC_CUDA_ARCHS", f'"{arch_list}"'),
        ("DEPTHMETRIC_TORCH_VERSION", f'"{torch.__version__}"'),
    ]
    include_dirs = [os.path.join(ROOT, "csrc")]
    # torch's CUDA headers include cusparse.h, which ships in the nvidia wheels rather than every toolkit.
    nvidia_include = os.path.join(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "include")
    if with_cuda and os.path.isdir(nvidia_include):
        include_dirs.append(nvidia_include)
    # -fno-trapping-math lets GCC turn the clamps of the per-pixel loops into vector selects (it only gives up
    # floating-point exception flags, which nothing reads; results are unchanged). The C++ standard is torch's.
    extra = {"cxx": ["-O3", "-fno-trapping-math"], "nvcc": ["-O3", "-lineinfo"]}
    # at::parallel_for opens its OpenMP region in the code of the library that calls it: without -fopenmp
    # here every CPU kernel runs on one thread. The runtime is torch's own libgomp (libtorch_cpu needs it).
    if "ATen parallel backend: OpenMP" in torch.__config__.parallel_info():
        extra["cxx"].append("-fopenmp")
    sources = _sources(with_cuda)
    kind = CUDAExtension if with_cuda else CppExtension
    print(
        f"depthmetric: compiling {len(sources)} sources, CPU kernels"
        + (f" + CUDA kernels for TORCH_CUDA_ARCH_LIST={arch_list or '(torch default)'}" if with_cuda else " only")
    )
    return kind(
        "depthmetric._C",
        sources,
        include_dirs=include_dirs,
        define_macros=macros,
        extra_compile_args=extra,
    )


setup(
    name="depthmetric",
    version="0.1.0",
    description="Fused training losses and metrics for monocular depth estimation (PyTorch C++/CUDA extension)",
    packages=find_packages(include=["depthmetric", "depthmetric.*"]),
    package_data={"depthmetric": ["data/samples/**/*"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": BuildExtension},
    python_requires=">=3.10",
    install_requires=["torch>=2.4", "numpy", "pillow", "tqdm", "matplotlib"],
    entry_points={"console_scripts": ["depthmetric=depthmetric.__main__:main"]},
)
