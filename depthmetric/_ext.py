"""The compiled extension and the choice between it and the pure-PyTorch reference twins.

Every public op takes ``backend="auto" | "cuda" | "cpu" | "reference"``. ``auto`` runs the compiled kernel
for the inputs' device and raises (never falls back) when that kernel was not built; ``reference`` runs
the pure-PyTorch twin in ``depthmetric.reference``.
"""
from __future__ import annotations

import torch

BACKENDS = ("auto", "cuda", "cpu", "reference")

BUILD_HINT = (
    "build it from the repository root with `pip install --no-build-isolation .` (see README.md), "
    "or pass backend='reference' to run the pure-PyTorch implementation"
)

try:
    from . import _C  # noqa: F401  (importing registers torch.ops.depthmetric.*)

    _IMPORT_ERROR: Exception | None = None
except ImportError as error:  # the package is usable with backend="reference" without a build
    _C = None
    _IMPORT_ERROR = error


def extension_loaded() -> bool:
    return _C is not None


def build_info() -> dict:
    """What the compiled extension contains: CPU kernels, CUDA kernels and their architectures, ops."""
    if _C is None:
        return {"compiled": False, "error": str(_IMPORT_ERROR), "hint": BUILD_HINT}
    # torch.ops.depthmetric lists only the ops already looked up; the dispatcher's registry lists them all.
    ops = sorted(
        {name.split("::")[1].split(".")[0] for name in torch._C._dispatch_get_all_op_names()
         if name.startswith("depthmetric::") and not name.startswith("depthmetric::_")}
    )
    return {
        "compiled": True,
        "cpu": True,
        "cuda": bool(_C.with_cuda),
        "cuda_arch_list": _C.cuda_arch_list,
        "built_with_torch": _C.torch_version,
        "running_torch": torch.__version__,
        "ops": ops,
    }


def check_backend(backend: str, device: torch.device | None = None) -> None:
    """``backend`` is one of BACKENDS and, given the inputs' ``device``, a named device ("cpu"/"cuda") is it.

    Modules call it without a device at construction; ops without a compiled kernel call it per call.
    """
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if device is not None and backend in ("cpu", "cuda") and device.type != backend:
        raise ValueError(f"backend={backend!r} was asked for but the inputs are on {device}")


def use_kernel(backend: str, device: torch.device) -> bool:
    """True to run the compiled kernel, False for the reference twin; raises when ``backend`` can't be honoured."""
    check_backend(backend, device)
    if backend == "reference":
        return False
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"no compiled kernel for device {device}; pass backend='reference'")
    if _C is None:
        raise RuntimeError(f"depthmetric's compiled extension is not available ({_IMPORT_ERROR}); {BUILD_HINT}")
    if device.type == "cuda" and not _C.with_cuda:
        raise RuntimeError(
            "depthmetric was built without its CUDA kernels (torch without CUDA or nvcc not found at build "
            f"time); rebuild with CUDA, or pass backend='reference'. build_info(): {build_info()}"
        )
    return True
