"""SSIM and the photometric error of self-supervised depth (SPIdepth Eq. 2), fused on CPU and CUDA.

``window="box3"`` with reflection padding is Monodepth2's SSIM (3x3 mean, ``nn.ReflectionPad2d(1)``);
``window="gauss11"`` (sigma 1.5) with ``padding="same"`` (zero padding) or ``"valid"`` (cropped by 5) matches
pytorch-msssim and fused-ssim; ``padding="reflect"`` reflects the border as kornia's ``padding="same"`` does.
The compiled op computes the window moments and the SSIM in one pass and
keeps only four per-pixel partial derivatives for backward (no mu/sigma maps; none at all when no gradient
is wanted, e.g. under ``torch.no_grad()``, nor for box3 on CPU, whose backward recomputes them); the backward is a gather
of the transposed window, deterministic, and maps gradients through reflection padding exactly as
autograd through ``ReflectionPad2d`` does.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

from . import _autograd, _checks, _ext, distributed
from ._precision import full_precision
from .reference import ssim as _reference

__all__ = ["ssim", "ssim_loss", "photometric_error", "SSIM", "SSIMLoss", "PhotometricError", "WINDOWS", "PADDINGS"]

WINDOWS = {"box3": 0, "gauss11": 1}  # codes of csrc/ssim/ssim_math.h
PADDINGS = {"reflect": 0, "same": 1, "valid": 2}
_PADDINGS_OF = {"box3": ("reflect",), "gauss11": ("same", "valid", "reflect")}
_RADIUS = {"box3": 1, "gauss11": 5}


def check_window(window: str, padding: str | None) -> str:
    """Validate the window/padding pair and return the padding (``None`` means the window's default)."""
    _checks.choice("window", window, WINDOWS)
    if padding is None:
        return _PADDINGS_OF[window][0]
    if padding not in _PADDINGS_OF[window]:
        raise ValueError(f"padding={padding!r} does not go with window={window!r}; use one of "
                         f"{_PADDINGS_OF[window]} (box3 is Monodepth2's reflect-padded SSIM, gauss11 pads with "
                         "zeros ('same'), crops ('valid') or reflects ('reflect', kornia's 'same'))")
    return padding


def check_images(names: tuple[str, ...], images: tuple[torch.Tensor, ...], window: str, padding: str,
                 group: distributed.ProcessGroup | None = None) -> None:
    """Same shape, dtype and device; floating B,C,H,W; big enough for the window; finite (collective over
    ``group``, the one the op communicates over); [0, 1] warned."""
    first = images[0]
    for name, x in zip(names, images):
        _checks.floating(name, x)
        _checks.ndim(name, x, 4, "B,C,H,W")
        if x.shape != first.shape:
            raise ValueError(f"{name} has shape {tuple(x.shape)} but {names[0]} has {tuple(first.shape)}")
        if x.dtype != first.dtype:
            raise TypeError(f"{name} is {x.dtype} but {names[0]} is {first.dtype}")
    _checks.channels(names[0], first)
    _checks.same_device(**dict(zip(names, images)))
    r = _RADIUS[window]
    smallest = {"reflect": r + 1, "same": 1, "valid": 2 * r + 1}[padding]
    if min(first.shape[-2:]) < smallest:
        raise ValueError(f"{names[0]} is {tuple(first.shape[-2:])} (H,W); window={window!r} with "
                         f"padding={padding!r} needs H and W >= {smallest}")
    _checks.check_values(dict(zip(names, images)), unit_range=True, group=group)


def _kernel_ssim(x: torch.Tensor, y: torch.Tensor, window: str, padding: str) -> torch.Tensor:
    _autograd.check_untransformed("depthmetric.ssim", (x, y))
    # The four per-pixel partials are only written when a backward can follow (5x the map's bytes saved),
    # and never on CPU: there the backward recomputes the moments in less time than it takes to write the
    # partials to fresh memory (page faults) and read them back (benchmarks/results/NOTES_cpu.md).
    with_partials = (torch.is_grad_enabled() and (x.requires_grad or y.requires_grad)
                     and x.device.type != "cpu")
    return torch.ops.depthmetric.ssim(x, y, WINDOWS[window], PADDINGS[padding], with_partials)[0]


@full_precision
def ssim(
    x: torch.Tensor,
    y: torch.Tensor,
    window: str = "box3",
    padding: str | None = None,
    reduction: str = "none",
    backend: str = "auto",
) -> torch.Tensor:
    """SSIM map of images ``x``, ``y``, differentiable in both.

    This is SSIM itself; Monodepth2's module returns ``clamp((1 - SSIM) / 2, 0, 1)``, which
    :func:`ssim_loss` and :func:`photometric_error` apply. Symmetric in ``x`` and ``y``.

    Args:
        x: an image, floating ``B,C,H,W`` (``C >= 1``), values in [0, 1].
        y: the other image, of ``x``'s shape, dtype and device.
        window: ``"box3"`` (default; Monodepth2's 3x3 mean) or ``"gauss11"`` (11x11 Gaussian, sigma 1.5).
        padding: ``None`` (default): the window's own, ``"reflect"`` for ``box3`` (its only one), ``"same"``
            (zeros) for ``gauss11``; ``gauss11`` also takes ``"valid"`` (crops 5 pixels per side) and
            ``"reflect"``.
        reduction: ``"none"`` (default): the map; ``"mean"`` (0 for an empty batch) or ``"sum"``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The ``B,C,H',W'`` SSIM map (``H' = H`` but with ``"valid"``: ``H - 10``), or its mean or sum, in
        float32 (float64 for float64 input).

    Raises:
        TypeError: a non-tensor or integer image, or ``x`` and ``y`` of different dtypes.
        ValueError: not ``B,C,H,W``, different shapes or devices, no channel, an image smaller than the
            window needs, NaN/Inf pixels, a bad choice argument. Values outside [0, 1] are warned about once.
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    padding = check_window(window, padding)
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    check_images(("x", "y"), (x, y), window, padding)
    if _ext.use_kernel(backend, x.device):
        out = _kernel_ssim(x, y, window, padding)
    else:
        out = _reference.ssim(x, y, window, padding)
    return _reduce_map(out, reduction)


@full_precision
def photometric_error(
    x: torch.Tensor, y: torch.Tensor, alpha: float = 0.85, window: str = "box3", backend: str = "auto"
) -> torch.Tensor:
    """``alpha * clamp((1 - SSIM(x, y)) / 2, 0, 1) + (1 - alpha) * |x - y|``, each averaged over channels.

    SPIdepth Eq. 2 / Monodepth2's ``compute_reprojection_loss(pred, target)``, which is symmetric in its two
    images, hence named as :func:`ssim`'s (a warped frame and the target frame, in either order).

    Args:
        x: an image, floating ``B,C,H,W`` (``C >= 1``), values in [0, 1], e.g. a warped frame.
        y: the other image, of ``x``'s shape, dtype and device, e.g. the target frame.
        alpha: the SSIM weight, in [0, 1]. Default 0.85.
        window: ``"box3"`` (default; reflection padding) or ``"gauss11"`` (zero padding): the map keeps the
            input size.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The per-pixel error, ``B,1,H,W``, float32 (float64 for float64).

    Raises:
        TypeError, ValueError: as :func:`ssim`; ValueError also for ``alpha`` outside [0, 1].
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    padding = check_window(window, None)
    check_alpha(alpha)
    check_images(("x", "y"), (x, y), window, padding)
    ssim_fn = _kernel_ssim if _ext.use_kernel(backend, x.device) else None
    return _reference.photometric_error(x, y, alpha, window, ssim_fn=ssim_fn)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: str = "box3", padding: str | None = None, *,
              reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """The structural dissimilarity ``clamp((1 - SSIM(x, y)) / 2, 0, 1)`` (Monodepth2's ``SSIM`` module, kornia's
    ``ssim_loss``).

    Args:
        x: an image, floating ``B,C,H,W``, values in [0, 1].
        y: the other image, of ``x``'s shape, dtype and device.
        window: ``"box3"`` (default) or ``"gauss11"``, as :func:`ssim`.
        padding: ``None`` (default: the window's own) or a padding of the window, as :func:`ssim`.
        reduction: ``"mean"`` (default), ``"sum"``, or ``"none"``: per pixel and channel.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The mean (default) or sum, or with ``reduction="none"`` the ``B,C,H',W'`` map, float32 (float64 for
        float64).

    Raises:
        TypeError, ValueError, RuntimeError: as :func:`ssim`.
    """
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    return _reduce_map(_reference.dissimilarity(ssim(x, y, window, padding, backend=backend)), reduction)


class SSIM(nn.Module):
    """:func:`ssim` as a module: ``SSIM(window, padding, reduction, backend)(x, y)``; kornia's ``SSIM`` and
    pytorch-msssim's ``SSIM`` (with ``window="gauss11"``) or Monodepth2's (``box3``, which returns
    ``clamp((1 - SSIM) / 2, 0, 1)``: that is :class:`SSIMLoss`, or :class:`PhotometricError` with ``alpha=1``).

    Args:
        window: ``"box3"`` (default) or ``"gauss11"``.
        padding: ``None`` (default: the window's own) or a padding of the window (see :func:`ssim`).
        reduction: ``"none"`` (default), ``"mean"`` or ``"sum"``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``module(x, y)`` on two ``B,C,H,W`` images: what :func:`ssim` returns.

    Raises:
        ValueError: a bad choice argument or a padding that does not go with the window.
    """

    def __init__(self, window: str = "box3", padding: str | None = None, reduction: str = "none",
                 backend: str = "auto") -> None:
        super().__init__()
        self.window, self.padding = window, check_window(window, padding)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        _ext.check_backend(backend)
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The SSIM of ``x`` and ``y``.

        Args:
            x: an image, floating ``B,C,H,W`` in [0, 1].
            y: the other image, of ``x``'s shape, dtype and device.

        Returns:
            What :func:`ssim` returns.
        """
        return ssim(x, y, self.window, self.padding, self.reduction, self.backend)

    def extra_repr(self) -> str:
        return (f"window={self.window!r}, padding={self.padding!r}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


class SSIMLoss(SSIM):
    """:func:`ssim_loss` as a module: ``SSIMLoss(window, padding, reduction, backend)(x, y)``.

    Args:
        window: ``"box3"`` (default) or ``"gauss11"``.
        padding: ``None`` (default: the window's own) or a padding of the window (see :func:`ssim`).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``module(x, y)`` on two ``B,C,H,W`` images: what :func:`ssim_loss` returns.

    Raises:
        ValueError: a bad choice argument or a padding that does not go with the window.
    """

    def __init__(self, window: str = "box3", padding: str | None = None, reduction: str = "mean",
                 backend: str = "auto") -> None:
        super().__init__(window, padding, reduction, backend)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The structural dissimilarity of ``x`` and ``y``.

        Args:
            x: an image, floating ``B,C,H,W`` in [0, 1].
            y: the other image, of ``x``'s shape, dtype and device.

        Returns:
            What :func:`ssim_loss` returns.
        """
        return ssim_loss(x, y, self.window, self.padding, reduction=self.reduction, backend=self.backend)


class PhotometricError(nn.Module):
    """:func:`photometric_error` as a module (Monodepth2's ``compute_reprojection_loss``).

    Args:
        alpha: the SSIM weight, in [0, 1]. Default 0.85.
        window: ``"box3"`` (default) or ``"gauss11"``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``module(x, y)`` on two ``B,C,H,W`` images: the ``B,1,H,W`` error of
        :func:`photometric_error`.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or an unknown window or backend.
    """

    def __init__(self, alpha: float = 0.85, window: str = "box3", backend: str = "auto") -> None:
        super().__init__()
        self.alpha, self.window = check_alpha(alpha), window
        check_window(window, None)
        _ext.check_backend(backend)
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The photometric error of ``x`` and ``y``.

        Args:
            x: an image, floating ``B,C,H,W`` in [0, 1], e.g. a warped frame.
            y: the other image, of ``x``'s shape, dtype and device, e.g. the target frame.

        Returns:
            The ``B,1,H,W`` error of :func:`photometric_error`.
        """
        return photometric_error(x, y, self.alpha, self.window, self.backend)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, window={self.window!r}, backend={self.backend!r}"


def _reduce_map(out: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return out
    return out.sum() if reduction == "sum" else _checks.mean(out)


def check_alpha(alpha: object) -> float:
    value = _checks.real("alpha", alpha)
    if not 0 <= value <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return value


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    def out_size(n: int, window: int, padding: int) -> int:
        return n - 2 * (1 if window == 0 else 5) if padding == PADDINGS["valid"] else n

    @torch.library.register_fake("depthmetric::ssim")
    def _(x: torch.Tensor, y: torch.Tensor, window: int, padding: int,
          with_partials: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        B, C, H, W = x.shape
        acc = _checks.accumulate_dtype(x.dtype)
        shape = (B, C, out_size(H, window, padding), out_size(W, window, padding))
        return x.new_empty(shape, dtype=acc), x.new_empty((4, *shape) if with_partials else (0,), dtype=acc)

    @torch.library.register_fake("depthmetric::_ssim_backward")
    def _(grad: torch.Tensor, x: torch.Tensor, y: torch.Tensor, partials: torch.Tensor, window: int, padding: int,
          need_x: bool = True, need_y: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(y) if need_y else y.new_empty(0))

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        x, y, window, padding = inputs[:4]
        ctx.window, ctx.padding = window, padding
        ctx.save_for_backward(x, y, output[1])

    names = ({code: name for name, code in WINDOWS.items()}, {code: name for name, code in PADDINGS.items()})

    def backward(ctx: Any, grad: torch.Tensor, grad_partials: torch.Tensor | None) -> tuple[Any, ...]:
        x, y, partials = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            window, padding = names[0][ctx.window], names[1][ctx.padding]
            grad_x, grad_y = _autograd.reference_vjp(lambda x, y: _reference.ssim(x, y, window, padding), (x, y),
                                                     grad, ctx.needs_input_grad[:2])
            return grad_x, grad_y, None, None, None
        # grad goes as it comes (from a mean, an expanded scalar): both kernels read it through its strides.
        need_x, need_y = ctx.needs_input_grad[:2]
        grad_x, grad_y = torch.ops.depthmetric._ssim_backward(grad, x, y, partials, ctx.window, ctx.padding,
                                                              need_x, need_y)
        return grad_x if need_x else None, grad_y if need_y else None, None, None, None

    torch.library.register_autograd("depthmetric::ssim", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()
