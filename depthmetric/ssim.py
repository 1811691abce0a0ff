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

import torch
from torch import nn

from . import _autograd, _checks, _ext
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
                 group=None) -> None:
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
    """SSIM map of images ``x``, ``y`` (``B,C,H,W`` in [0, 1]), differentiable in both.

    ``padding`` defaults to the window's own: ``"reflect"`` for ``box3`` (its only one), ``"same"`` for
    ``gauss11`` (``"valid"`` crops 5 pixels per side, ``"reflect"`` reflects the border). Returns
    ``B,C,H',W'`` (``reduction="none"``), its mean (0 for an empty batch) or its sum, in float32 (float64 for float64 input). This is SSIM itself; Monodepth2's module returns
    ``clamp((1 - SSIM) / 2, 0, 1)``, which :func:`photometric_error` applies. NaN/Inf pixels raise a
    ``ValueError``; values outside [0, 1] are warned about once.
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
    a: torch.Tensor, b: torch.Tensor, alpha: float = 0.85, window: str = "box3", backend: str = "auto"
) -> torch.Tensor:
    """``alpha * clamp((1 - SSIM(a, b)) / 2, 0, 1) + (1 - alpha) * |a - b|``, each averaged over channels.

    SPIdepth Eq. 2 / Monodepth2's ``compute_reprojection_loss``; ``B,1,H,W`` in float32 (float64 for
    float64). ``box3`` pads by reflection, ``gauss11`` with zeros, so the map keeps the input size.
    """
    padding = check_window(window, None)
    check_alpha(alpha)
    check_images(("a", "b"), (a, b), window, padding)
    ssim_fn = _kernel_ssim if _ext.use_kernel(backend, a.device) else None
    return _reference.photometric_error(a, b, alpha, window, ssim_fn=ssim_fn)


def ssim_loss(x: torch.Tensor, y: torch.Tensor, window: str = "box3", padding: str | None = None, *,
              reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """The structural dissimilarity ``clamp((1 - SSIM(x, y)) / 2, 0, 1)`` (Monodepth2's ``SSIM`` module, kornia's
    ``ssim_loss``), per pixel and channel (``reduction="none"``: ``B,C,H',W'``), averaged (default) or summed;
    the arguments and errors as :func:`ssim`."""
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    return _reduce_map(_reference.dissimilarity(ssim(x, y, window, padding, backend=backend)), reduction)


class SSIM(nn.Module):
    """:func:`ssim` as a module: ``SSIM(window, padding, reduction, backend)(x, y)``; kornia's ``SSIM`` and
    pytorch-msssim's ``SSIM`` (with ``window="gauss11"``) or Monodepth2's (``box3``, which returns
    ``clamp((1 - SSIM) / 2, 0, 1)``: that is :class:`PhotometricError` with ``alpha=1``)."""

    def __init__(self, window: str = "box3", padding: str | None = None, reduction: str = "none",
                 backend: str = "auto"):
        super().__init__()
        self.window, self.padding = window, check_window(window, padding)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        _ext.check_backend(backend)
        self.backend = backend

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim(x, y, self.window, self.padding, self.reduction, self.backend)

    def extra_repr(self) -> str:
        return (f"window={self.window!r}, padding={self.padding!r}, reduction={self.reduction!r}, "
                f"backend={self.backend!r}")


class SSIMLoss(SSIM):
    """:func:`ssim_loss` as a module: ``SSIMLoss(window, padding, reduction, backend)(x, y)``."""

    def __init__(self, window: str = "box3", padding: str | None = None, reduction: str = "mean",
                 backend: str = "auto"):
        super().__init__(window, padding, reduction, backend)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return ssim_loss(x, y, self.window, self.padding, reduction=self.reduction, backend=self.backend)


class PhotometricError(nn.Module):
    """:func:`photometric_error` as a module (Monodepth2's ``compute_reprojection_loss``): ``B,1,H,W``."""

    def __init__(self, alpha: float = 0.85, window: str = "box3", backend: str = "auto"):
        super().__init__()
        self.alpha, self.window = check_alpha(alpha), window
        check_window(window, None)
        _ext.check_backend(backend)
        self.backend = backend

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return photometric_error(a, b, self.alpha, self.window, self.backend)

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, window={self.window!r}, backend={self.backend!r}"


def _reduce_map(out: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "none":
        return out
    return out.sum() if reduction == "sum" else _checks.mean(out)


def check_alpha(alpha) -> float:
    if not 0 <= _checks.real("alpha", alpha) <= 1:
        raise ValueError(f"alpha must be a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    def out_size(n: int, window: int, padding: int) -> int:
        return n - 2 * (1 if window == 0 else 5) if padding == PADDINGS["valid"] else n

    @torch.library.register_fake("depthmetric::ssim")
    def _(x, y, window, padding, with_partials=True):
        B, C, H, W = x.shape
        acc = _checks.accumulate_dtype(x.dtype)
        shape = (B, C, out_size(H, window, padding), out_size(W, window, padding))
        return x.new_empty(shape, dtype=acc), x.new_empty((4, *shape) if with_partials else (0,), dtype=acc)

    @torch.library.register_fake("depthmetric::_ssim_backward")
    def _(grad, x, y, partials, window, padding, need_x=True, need_y=True):
        return (torch.empty_like(x) if need_x else x.new_empty(0)), (torch.empty_like(y) if need_y else y.new_empty(0))

    def setup_context(ctx, inputs, output):
        x, y, window, padding = inputs[:4]
        ctx.window, ctx.padding = window, padding
        ctx.save_for_backward(x, y, output[1])

    names = ({code: name for name, code in WINDOWS.items()}, {code: name for name, code in PADDINGS.items()})

    def backward(ctx, grad, grad_partials):
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
