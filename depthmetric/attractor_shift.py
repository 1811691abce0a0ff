"""ZoeDepth's attractor update of bin centres (SPEC section 6), fused on CPU and CUDA.

Per pixel, every bin centre ``c_k`` moves by the pull of the ``A`` attractors ``a`` of its pixel:
``c_k + reduce_a f(a - c_k)``. The compiled op computes it per pixel and centre without materialising the
``B,A,K,h,w`` differences ZoeDepth's layers build, and its backward recomputes ``f'`` from the inputs (nothing
but the inputs is saved), gathering both gradients deterministically (no atomics).
"""
from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from . import _autograd, _checks, _ext
from .reference import attractor_shift as _reference

__all__ = ["attractor_shift", "AttractorShift"]

KINDS = _reference.KINDS  # "inv": 0, "exp": 1 (csrc/attractor_shift/attractor_shift_math.h)
REDUCTIONS = ("mean", "sum")  # over the attractors, as ZoeDepth's attractor layers' ``kind``


def check_parameters(alpha: object, gamma: object, kind: str, reduction: str) -> tuple[float, int]:
    """alpha a finite number >= 0, gamma a positive int, kind and reduction among their choices."""
    a = _checks.real("alpha", alpha)
    if not (math.isfinite(a) and a >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {a!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, int):
        raise TypeError(f"gamma must be a positive int (ZoeDepth's exponent), got {type(gamma).__name__} {gamma!r}")
    if gamma < 1:
        raise ValueError(f"gamma must be a positive int, got {gamma}")
    _checks.choice("kind", kind, KINDS)
    _checks.choice("reduction", reduction, REDUCTIONS)
    return a, gamma


def _check_tensors(centers: torch.Tensor, attractors: torch.Tensor, reduction: str) -> None:
    _checks.ndim("centers", _checks.floating("centers", centers), 4, "B,K,h,w")
    _checks.ndim("attractors", _checks.floating("attractors", attractors), 4, "B,A,h,w")
    if attractors.dtype != centers.dtype:
        raise TypeError(f"attractors is {attractors.dtype} but centers is {centers.dtype}")
    _checks.same_device(centers=centers, attractors=attractors)
    B, _, h, w = centers.shape
    if attractors.shape[0] != B or attractors.shape[2:] != centers.shape[2:]:
        raise ValueError(f"attractors must be B,A,h,w with the centers' B,h,w = ({B}, A, {h}, {w}), "
                         f"got {tuple(attractors.shape)}")
    if reduction == "mean" and attractors.shape[1] == 0:
        raise ValueError(f"attractors holds no attractor (shape {tuple(attractors.shape)}): reduction='mean' "
                         "averages over A >= 1 of them")
    _checks.check_values({"centers": centers, "attractors": attractors})


def attractor_shift(
    centers: torch.Tensor,
    attractors: torch.Tensor,
    *,
    alpha: float = 300.0,
    gamma: int = 2,
    kind: str = "inv",
    reduction: str = "mean",
    backend: str = "auto",
) -> torch.Tensor:
    """ZoeDepth's attractor update of bin centres: ``out = c + reduce_a f(a - c)``.

    ``centers``: ``B,K,h,w`` bin centres; ``attractors``: ``B,A,h,w`` attractor points of the same pixels
    (the same ``B,h,w``, dtype and device; float16, bfloat16, float32 or float64). Per pixel and centre ``c_k``,
    with ``dx = a - c_k`` for each attractor ``a``:

    - ``kind="inv"`` (ZoeDepth's ``inv_attractor``): ``f(dx) = dx / (1 + alpha * dx**gamma)``;
    - ``kind="exp"`` (``exp_attractor``): ``f(dx) = exp(-alpha * |dx|**gamma) * dx``;

    ``dx**gamma`` is ``torch.pow`` with the integer exponent ``gamma`` (a negative ``dx`` keeps its sign for odd
    ``gamma``; with ``"inv"`` and an odd ``gamma`` the denominator can reach 0, as in ZoeDepth).
    ``reduction`` is ``"mean"`` or ``"sum"`` over the ``A`` attractors (ZoeDepth's layers' ``kind``).
    Returns the shifted centres ``B,K,h,w`` in float32 (float64 for float64), unsorted and unclipped (ZoeDepth's
    normed layer sorts and clips after this step). Gradients reach both inputs, as autograd gives them through
    the formula (``|dx|``'s gradient at ``dx == 0`` is 0, so ``f'(0) = 1``); double backward runs through the
    reference twin. The ``B,A,K,h,w`` differences are never stored.

    ZoeDepth's attractor layers call ``exp_attractor``/``inv_attractor`` without their configured ``alpha``, so
    those layers act with the functions' default ``alpha=300`` whatever the config says; this op uses the
    ``alpha`` it is given (pass 300, the default, to reproduce ZoeDepth).

    Args:
        centers: the bin centres, floating ``B,K,h,w``.
        attractors: the attractor points of the same pixels, ``B,A,h,w`` with the centres' ``B,h,w``, dtype
            and device.
        alpha: the attraction strength, a finite number >= 0. Default 300 (what ZoeDepth's layers use).
        gamma: the exponent, a positive int. Default 2.
        kind: ``"inv"`` (default) or ``"exp"``.
        reduction: ``"mean"`` (default) or ``"sum"`` over the attractors.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The shifted centres, ``B,K,h,w``, float32 (float64 for float64).

    Raises:
        TypeError: a wrong dtype, mixed dtypes, ``gamma`` not an int.
        ValueError: a wrong shape or device, NaN/Inf values in either input, ``alpha`` not a finite number
            >= 0, ``gamma`` < 1, an unknown ``kind`` or ``reduction``, or no attractor (``A == 0``) to
            average.
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    alpha, gamma = check_parameters(alpha, gamma, kind, reduction)
    _check_tensors(centers, attractors, reduction)
    mean = reduction == "mean"
    if _ext.use_kernel(backend, centers.device):
        _autograd.check_untransformed("depthmetric.attractor_shift", (centers, attractors))
        return torch.ops.depthmetric.attractor_shift(centers, attractors, alpha, gamma, KINDS[kind], mean)
    return _reference.attractor_shift(centers, attractors, alpha, gamma, KINDS[kind], mean)


class AttractorShift(nn.Module):
    """ZoeDepth's attractor step as a module: ``AttractorShift()(centers, attractors)`` shifts ``B,K,h,w``
    bin centres towards ``B,A,h,w`` attractors. See :func:`attractor_shift` for the formula and arguments.

    >>> import torch
    >>> from depthmetric import AttractorShift
    >>> centers = torch.linspace(1, 8, 8).reshape(1, 8, 1, 1).expand(2, 8, 3, 3).contiguous()  # B,K,h,w
    >>> attractors = 10 * torch.rand(2, 4, 3, 3)                                              # B,A,h,w
    >>> step = AttractorShift(alpha=300.0, gamma=2, kind="inv", reduction="mean")
    >>> new_centers = step(centers, attractors)
    >>> new_centers.shape
    torch.Size([2, 8, 3, 3])

    Args:
        alpha: the attraction strength, >= 0. Default 300.
        gamma: the exponent, a positive int. Default 2.
        kind: ``"inv"`` (default) or ``"exp"``.
        reduction: ``"mean"`` (default) or ``"sum"`` over the attractors.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``step(centers, attractors)``: what :func:`attractor_shift` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    def __init__(self, alpha: float = 300.0, gamma: int = 2, kind: str = "inv", reduction: str = "mean",
                 backend: str = "auto") -> None:
        super().__init__()
        self.alpha, self.gamma = check_parameters(alpha, gamma, kind, reduction)
        _ext.check_backend(backend)
        self.kind, self.reduction, self.backend = kind, reduction, backend

    def forward(self, centers: torch.Tensor, attractors: torch.Tensor) -> torch.Tensor:
        """The centres shifted towards the attractors.

        Args:
            centers: the bin centres, ``B,K,h,w``.
            attractors: the attractor points, ``B,A,h,w``.

        Returns:
            What :func:`attractor_shift` returns.
        """
        return attractor_shift(centers, attractors, alpha=self.alpha, gamma=self.gamma, kind=self.kind,
                               reduction=self.reduction, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, gamma={self.gamma}, kind={self.kind!r}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    def dense_like(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:  # the kernels allocate contiguous
        return t.new_empty(t.shape, dtype=dtype)

    @torch.library.register_fake("depthmetric::attractor_shift")
    def _(centers: torch.Tensor, attractors: torch.Tensor, alpha: float, gamma: int, kind: int,
          mean: bool) -> torch.Tensor:
        return dense_like(centers, _checks.accumulate_dtype(centers.dtype))

    @torch.library.register_fake("depthmetric::_attractor_shift_backward")
    def _(grad: torch.Tensor, centers: torch.Tensor, attractors: torch.Tensor, alpha: float, gamma: int, kind: int,
          mean: bool) -> tuple[torch.Tensor, torch.Tensor]:
        return dense_like(centers, centers.dtype), dense_like(attractors, attractors.dtype)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
        centers, attractors, alpha, gamma, kind, mean = inputs
        ctx.params = (alpha, gamma, kind, mean)
        ctx.save_for_backward(centers, attractors)  # only the inputs: the backward recomputes f'

    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
        centers, attractors = ctx.saved_tensors
        need = ctx.needs_input_grad[:2]
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grad_c, grad_a = _autograd.reference_vjp(lambda c, a: _reference.attractor_shift(c, a, *ctx.params),
                                                     (centers, attractors), grad, need)
            return grad_c, grad_a, None, None, None, None
        # grad goes as it comes (from a mean, an expanded scalar): both kernels read it through its strides.
        grad_c, grad_a = torch.ops.depthmetric._attractor_shift_backward(grad, centers, attractors, *ctx.params)
        return grad_c if need[0] else None, grad_a if need[1] else None, None, None, None, None

    torch.library.register_autograd("depthmetric::attractor_shift", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()
