"""The compiled extension and the choice between it and the pure-PyTorch reference twins.

Every op with a compiled kernel takes ``backend="auto" | "cuda" | "cpu" | "reference"`` (the PyTorch-only
supervised losses take it too and only check it). ``auto`` runs the compiled kernel for the inputs' device
and raises (never falls back) when that kernel was not built; ``reference`` runs the pure-PyTorch twin in
``depthmetric.reference``.
"""
from __future__ import annotations

import functools
import importlib.util
from typing import Any

import torch

from . import _checks

BACKENDS = ("auto", "cuda", "cpu", "reference")

BUILD_HINT = (
    "build it from the repository root with `pip install --no-build-isolation .` (see README.md), "
    "or pass backend='reference' to run the pure-PyTorch implementation"
)

try:
    from . import _C  # type: ignore[attr-defined]  # noqa: F401  (a compiled module; importing registers torch.ops.depthmetric.* and their CPU kernels)

    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # the package is usable with backend="reference" without a build
    _C = None
    _IMPORT_ERROR = error


def _load_cuda_kernels() -> str | None:
    """Loads depthmetric._C_cuda (the CUDA kernels) when it was built and torch has CUDA; returns why not."""
    if _C is None or not _C.with_cuda:
        return "built without CUDA kernels (torch without CUDA or nvcc not found at build time)"
    if torch.version.cuda is None:  # the library needs libtorch_cuda, which a CPU build of torch lacks
        return f"this torch ({torch.__version__}) is a build without CUDA"
    spec = importlib.util.find_spec(f"{__package__}._C_cuda")
    if spec is None or spec.origin is None:
        return "the CUDA kernel library depthmetric/_C_cuda*.so is missing"
    try:
        torch.ops.load_library(spec.origin)
    except OSError as error:  # e.g. its CUDA runtime (libcudart.so.<major>) is not the one this torch ships
        return (f"the CUDA kernels were built with torch {_C.torch_version} and need that CUDA major version's "
                f"runtime; this torch ({torch.__version__}) is built for CUDA {torch.version.cuda}: {error}")
    return None


_CUDA_MISSING = _load_cuda_kernels()

def extension_loaded() -> bool:
    return _C is not None


def build_info() -> dict[str, Any]:
    """What the compiled extension contains: CPU kernels, CUDA kernels and their architectures, ops.

    Returns:
        A dict. Without a build: ``{"compiled": False, "error": ..., "hint": ...}``. With one:
        ``"compiled"`` (True), ``"abi"`` (``"stable"``), ``"torch_target"`` (the oldest torch the build loads
        on), ``"cpu"`` (True), ``"cuda"`` (the CUDA kernels loaded), ``"cuda_built"`` (they were compiled),
        ``"cuda_arch_list"``, ``"built_with_torch"``, ``"built_with_python"``, ``"running_torch"`` and
        ``"ops"`` (the compiled ops' names, sorted).
    """
    if _C is None:
        return {"compiled": False, "error": str(_IMPORT_ERROR), "hint": BUILD_HINT}
    # torch.ops.depthmetric lists only the ops already looked up; the dispatcher's registry lists them all.
    ops = sorted(
        {name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
         if name.startswith("depthmetric::") and not name.startswith("depthmetric::_")}
    )
    return {
        "compiled": True,
        "abi": "stable",
        "torch_target": _C.torch_target,  # the oldest torch the build loads on
        "cpu": True,
        "cuda": _CUDA_MISSING is None,
        "cuda_built": bool(_C.with_cuda),
        "cuda_arch_list": _C.cuda_arch_list,
        "built_with_torch": _C.torch_version,
        "built_with_python": _C.python_version,
        "running_torch": torch.__version__,
        "ops": ops,
    }


def parse_arch_list(arch_list: str) -> list[tuple[int, int, bool]]:
    """``"8.6;9.0+PTX"`` -> ``[(8, 6, False), (9, 0, True)]`` (major, minor, with PTX)."""
    out = []
    for entry in arch_list.replace(",", ";").replace(" ", ";").split(";"):
        if entry:
            ptx = entry.endswith("+PTX")
            major, minor = entry.removesuffix("+PTX").rstrip("af").split(".")
            out.append((int(major), int(minor), ptx))
    return out


def arch_runs_on(arch_list: str, capability: tuple[int, int]) -> bool:
    """Whether a build for ``arch_list`` has code for a GPU of compute ``capability``: a cubin runs on its own
    major version at the same or a later minor, PTX is compiled by the driver for any later GPU."""
    return any(
        (major == capability[0] and minor <= capability[1]) or (ptx and (major, minor) <= capability)
        for major, minor, ptx in parse_arch_list(arch_list)
    )


def check_cuda_arch(arch_list: str, capability: tuple[int, int], name: str = "this GPU") -> None:
    """Raises the error a user should see, instead of CUDA's "no kernel image is available", when the build
    has no code for the GPU."""
    if not arch_runs_on(arch_list, capability):
        cc = f"{capability[0]}.{capability[1]}"
        raise RuntimeError(
            f"depthmetric's CUDA kernels were built for TORCH_CUDA_ARCH_LIST={arch_list!r}, which does not cover "
            f"{name} (compute capability {cc}); rebuild for it with "
            f"`TORCH_CUDA_ARCH_LIST=\"{cc}\" pip install --no-build-isolation .`, or pass backend='reference'"
        )


@functools.lru_cache(maxsize=None)
def _check_device_arch(index: int) -> None:
    check_cuda_arch(_C.cuda_arch_list, torch.cuda.get_device_capability(index), torch.cuda.get_device_name(index))


def check_backend(backend: str, device: torch.device | None = None) -> None:
    """``backend`` is one of BACKENDS and, given the inputs' ``device``, a named device ("cpu"/"cuda") is it.

    Modules call it without a device at construction; ops without a compiled kernel call it per call.
    """
    _checks.choice("backend", backend, BACKENDS)
    if device is not None and backend in ("cpu", "cuda") and device.type != backend:
        raise ValueError(f"backend={backend!r} was asked for but the inputs are on {device}")


def use_kernel(backend: str, device: torch.device) -> bool:
    """True to run the compiled kernel, False for the reference twin; raises when ``backend`` can't be honoured."""
    check_backend(backend, device)
    if backend == "reference":
        return False
    if device.type == "meta":  # shapes only: the op's fake kernel answers, no compiled code runs
        return _C is not None
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"no compiled kernel for device {device}; pass backend='reference'")
    if _C is None:
        raise RuntimeError(f"depthmetric's compiled extension is not available ({_IMPORT_ERROR}); {BUILD_HINT}")
    if device.type == "cuda":
        if _CUDA_MISSING is not None:
            raise RuntimeError(
                f"depthmetric's CUDA kernels are not available: {_CUDA_MISSING}; rebuild with CUDA, or pass "
                f"backend='reference'. build_info(): {build_info()}"
            )
        _check_device_arch(device.index if device.index is not None else torch.cuda.current_device())
    return True
