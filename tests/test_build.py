"""The build: one stable-ABI, abi3 library that loads on every torch from its target version on.

The compiled libraries may call libtorch only through its stable C shim (``aoti_torch_*``, ``torch_*``): a
C++ symbol of c10/ATen/torch would tie them to the torch they were built with. The wheel is tagged
``cp310-abi3``. A GPU the build has no code for gets an error that says how to rebuild.
"""
import ast
import functools
import importlib.util
import pathlib
import re
import shutil
import subprocess
import sys

import pytest
import torch

import depthmetric as dm
from depthmetric import _ext

from .registry import needs_ext

ROOT = pathlib.Path(__file__).resolve().parents[1]
needs_nm = pytest.mark.skipif(shutil.which("nm") is None or shutil.which("c++filt") is None, reason="binutils")
STABLE_C_SHIM = re.compile(r"^(aoti_torch_|torch_)")
STD_LIBRARY = re.compile(r"^((typeinfo|vtable|VTT) for )?(std|__gnu_cxx|__cxxabiv1)::")


CMAKE_LIBRARY = ROOT / "build-cmake" / "libdepthmetric_ops.so"  # scripts/build_cmake.sh writes it


def built_libraries() -> list[pathlib.Path]:
    names = ["depthmetric._C"] + (["depthmetric._C_cuda"] if dm.build_info().get("cuda_built") else [])
    return [pathlib.Path(importlib.util.find_spec(name).origin) for name in names]


@functools.lru_cache(maxsize=None)
def cmake_library() -> pathlib.Path:
    """The CMake build's library, built here by ``scripts/build_cmake.sh`` (a few minutes, once) when a
    checkout's tests find none, so that the README's test command checks it wherever it runs."""
    if not CMAKE_LIBRARY.exists():
        if shutil.which("cmake") is None or not (ROOT / "CMakeLists.txt").exists():
            pytest.skip("cmake is not installed (or no CMakeLists.txt beside the tests)")
        subprocess.run(["bash", str(ROOT / "scripts" / "build_cmake.sh"), sys.executable], check=True)
    return CMAKE_LIBRARY


def library(which: str) -> pathlib.Path | None:
    """The Python module's libraries, or the CMake build's; None when this build has none of that kind."""
    if which == "cmake":
        return cmake_library()
    found = [p for p in built_libraries() if p.name.split(".")[0] == which]
    return found[0] if found else None


def test_cmake_library_loads_and_runs():
    """``torch.ops.load_library`` loads the CMake build and its ops run (in a process without the Python
    package, whose own library registers the same ops)."""
    code = ("import sys, torch; torch.ops.load_library(sys.argv[1]); f = torch.randn(2, 3, 4, 5); "
            "out = torch.ops.depthmetric.multi_range_contrastive(f, torch.rand(2, 4, 5) * 3, "
            "torch.tensor([[0, 1, 1], [1, 0, 0]]), 0.1, [0.5], [1.0], [3.0]); "
            "assert out[0].shape == (2, 4, 5), out[0].shape; "
            "print(torch.ops.depthmetric.ssim(f[:, :3].clamp(0, 1), f[:, :3].clamp(0, 1), 0, 0, False)[0].shape)")
    done = subprocess.run([sys.executable, "-c", code, str(cmake_library())], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "torch.Size([2, 3, 4, 5])"


def dynamic_symbols(path: pathlib.Path, *flags: str) -> set[str]:
    out = subprocess.run(["nm", "-D", *flags, str(path)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1].split("@")[0] for line in out.splitlines() if line.strip()}


@pytest.fixture(scope="module")
def libtorch_symbols() -> set[str]:
    """Every symbol libtorch's own libraries export."""
    lib = pathlib.Path(torch.__file__).parent / "lib"
    found = set()
    for name in ("libc10.so", "libtorch_cpu.so", "libtorch.so", "libc10_cuda.so", "libtorch_cuda.so"):
        if (lib / name).exists():
            found |= dynamic_symbols(lib / name, "--defined-only")
    return found


@needs_ext
@needs_nm
@pytest.mark.parametrize("which", ["_C", "_C_cuda", "cmake"])
def test_library_imports_only_the_stable_c_shim(which, libtorch_symbols):
    path = library(which)
    if path is None:
        pytest.skip(f"no {which} library in this build")
    undefined = dynamic_symbols(path, "--undefined-only")
    from_libtorch = sorted(undefined & libtorch_symbols)
    demangled = subprocess.run(["c++filt"], input="\n".join(from_libtorch), capture_output=True, text=True,
                               check=True).stdout.splitlines()
    assert any(STABLE_C_SHIM.match(s) for s in from_libtorch), "expected the library to call libtorch's C shim"
    # libtorch also exports a few C++ standard library instantiations; those are libstdc++'s, not torch's.
    unstable = [name for name in demangled if not STABLE_C_SHIM.match(name) and not STD_LIBRARY.match(name)]
    assert not unstable, f"{path.name} imports unstable libtorch symbols: {unstable[:10]}"


@needs_ext
def test_libraries_use_the_limited_python_api():
    for path in built_libraries():
        assert path.name.endswith(".abi3.so"), path.name


@needs_ext
def test_build_info_reports_the_stable_abi():
    info = dm.build_info()
    assert info["abi"] == "stable"
    assert info["torch_target"] == "2.11"
    assert info["built_with_torch"] and re.fullmatch(r"3\.\d+", info["built_with_python"])
    assert info["cuda"] == (info["cuda_built"] and torch.version.cuda is not None)


@needs_ext
def test_cuda_kernels_that_cannot_load_leave_the_cpu_kernels_and_say_why(monkeypatch):
    # Under a torch built for another CUDA major version, loading _C_cuda fails on its libcudart.so.<major>.
    if not dm.build_info()["cuda_built"] or torch.version.cuda is None:
        pytest.skip("needs the CUDA kernels built and a torch with CUDA")

    def cannot_load(path):
        raise OSError("libcudart.so.13: cannot open shared object file: No such file or directory")

    monkeypatch.setattr(torch.ops, "load_library", cannot_load)
    why = _ext._load_cuda_kernels()
    assert "libcudart.so.13" in why and f"CUDA {torch.version.cuda}" in why and dm.build_info()["built_with_torch"] in why


def setup_constants() -> dict:
    tree = ast.parse((ROOT / "setup.py").read_text())
    return {node.targets[0].id: ast.literal_eval(node.value) for node in tree.body
            if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
            and isinstance(node.value, (ast.Constant, ast.Tuple))}


@pytest.mark.skipif(not (ROOT / "setup.py").exists(), reason="no setup.py beside the tests")
def test_wheel_is_tagged_abi3(monkeypatch):
    from setuptools import Extension
    from setuptools.dist import Distribution

    # bdist_wheel's own tag for a package with an extension, with the options setup.py gives it.
    dist = Distribution({"name": "depthmetric", "ext_modules": [Extension("depthmetric._C", ["x.cpp"])],
                         "options": {"bdist_wheel": {"py_limited_api": setup_constants()["PY_LIMITED"]}}})
    command = dist.get_command_obj("bdist_wheel")
    command.ensure_finalized()
    python, abi, platform = command.get_tag()
    assert (python, abi) == ("cp310", "abi3")
    assert platform.startswith("linux")


@pytest.mark.parametrize("arch_list,capability,runs", [
    ("9.0", (9, 0), True),
    ("9.0", (8, 6), False),       # a cubin never runs on an older GPU
    ("8.0", (8, 6), True),        # ... but on a later minor of its major
    ("8.6", (8, 0), False),
    ("9.0", (10, 0), False),      # ... and not on a later major
    ("9.0+PTX", (10, 0), True),   # PTX is compiled by the driver for later GPUs
    ("9.0+PTX", (8, 9), False),
    ("7.5;8.0;9.0a", (9, 0), True),
    ("", (9, 0), False),
])
def test_arch_list_coverage(arch_list, capability, runs):
    assert _ext.arch_runs_on(arch_list, capability) is runs


def test_default_arch_list_covers_every_current_gpu():
    archs = setup_constants()["DEFAULT_CUDA_ARCHS"]
    gpus = {"T4": (7, 5), "A100": (8, 0), "RTX 3090 / A10": (8, 6), "Jetson Orin": (8, 7), "RTX 4090 / L4": (8, 9),
            "H100 / H200": (9, 0), "B200": (10, 0), "RTX 5090": (12, 0), "a future GPU": (13, 0)}
    assert [name for name, cc in gpus.items() if not _ext.arch_runs_on(archs, cc)] == []


def test_missing_arch_raises_with_the_rebuild_command():
    with pytest.raises(RuntimeError) as info:
        _ext.check_cuda_arch("9.0", (12, 0), "NVIDIA GeForce RTX 5090")
    text = str(info.value)
    assert "compute capability 12.0" in text and "NVIDIA GeForce RTX 5090" in text
    assert "'9.0'" in text and 'TORCH_CUDA_ARCH_LIST="12.0" pip install --no-build-isolation .' in text
    assert "no kernel image" not in text


@needs_ext
def test_first_cuda_call_checks_the_gpu_architecture(monkeypatch):
    """The check runs in use_kernel, before any kernel is launched (stand-in device functions: no GPU here)."""
    if not dm.build_info()["cuda"]:
        pytest.skip("CUDA kernels not loaded")
    _ext._check_device_arch.cache_clear()
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda index=None: (1, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda index=None: "an old GPU")
    with pytest.raises(RuntimeError, match=r"does not cover an old GPU \(compute capability 1\.0\)"):
        _ext.use_kernel("auto", torch.device("cuda", 0))
    _ext._check_device_arch.cache_clear()
