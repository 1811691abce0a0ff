"""Depth Pro's training losses and the scale-and-shift-invariant loss (MiDaS).

All three are masked and computed per image: each image's loss is the mean over its own valid pixels, and
``reduction="mean"`` averages the images that have at least one valid pixel (an image without any adds
nothing instead of pulling the mean towards 0; the loss is 0, with zero gradient, when no image has one).
``reduction="none"`` returns the ``B`` per-image losses (0 for an image without valid pixels).
Under ``torch.distributed``, ``normalize="global"`` averages the images of the global batch instead (the sum
and the image count summed over the ranks of ``process_group``, default the whole world; see
``depthmetric.distributed``), so that DDP's averaged gradients are those of one process with the whole batch.

A pixel is valid when the target is finite and ``> 0`` and ``mask`` (optional, bool) is True; the
prediction is never masked by its own value (a bad prediction must receive a gradient) but must be finite
(NaN/Inf raise, see ``depthmetric.set_finite_checks``). A prediction of another size is resized to the
target's (bilinear, ``align_corners=True``) when ``interpolate``.

The trimmed MAE selects its kept residuals with the ``order_statistics`` kernel (no per-image sort); the
derivative loss runs two small convolutions per scale; ``backend`` picks the kernel or its twin for the
selection (and the medians of ``align="median_mad"``) and is only checked by the other losses.

``align`` (trimmed MAE and derivative loss): ``"none"``; ``"median_mad"`` shifts each image's prediction and
target by their medians over the valid pixels and divides them by their MAD (Depth Pro's non-metric data);
``"least_squares"`` maps the prediction onto the target by MiDaS's per-image scale and shift (as
:func:`scale_shift_invariant_loss` fits it). See ``depthmetric._alignment``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _alignment, _checks, _ext, distributed, order_statistics
from ._supervised import PairLoss, prepare_pair

__all__ = [
    "TrimmedMAELoss",
    "MultiScaleDerivativeLoss",
    "ScaleShiftInvariantLoss",
    "trimmed_mae_loss",
    "multi_scale_derivative_loss",
    "scale_shift_invariant_loss",
]

OPERATORS = ("scharr", "laplace")


def _check_reduction(reduction: str) -> None:
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)


def _reduce(per_image: torch.Tensor, has_valid: torch.Tensor, reduction: str, normalize: str,
            process_group: distributed.ProcessGroup | None = None) -> torch.Tensor:
    if reduction == "none":
        return per_image
    if reduction == "sum":
        return per_image.sum()
    return distributed.global_mean(per_image.sum(), has_valid.sum(), normalize, process_group)


def _prepare(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None, interpolate: bool, backend: str,
             reduction: str, normalize: str,
             process_group: distributed.ProcessGroup | None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    _check_reduction(reduction)
    distributed.check_normalize(normalize, process_group)
    pred, target, valid = prepare_pair(pred, target, mask, interpolate, distributed.op_group(normalize, process_group))
    _ext.check_backend(backend, pred.device)
    return pred, target, valid


def _check_trim(trim: object) -> None:
    if not 0 <= _checks.real("trim", trim) < 1:
        raise ValueError(f"trim must be a number in [0, 1), got {trim!r}")


def trimmed_mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                     trim: float = 0.2, align: str = "none", reduction: str = "mean", interpolate: bool = True,
                     normalize: str = "local", process_group: distributed.ProcessGroup | None = None,
                     backend: str = "auto") -> torch.Tensor:
    """Depth Pro's ``L_MAE`` with the worst ``trim`` fraction of pixels of each image discarded.

    Meant for canonical inverse depth (Depth Pro's ``C``), but any map works. Per image with ``n`` valid
    pixels (after ``align``), the ``floor(trim * n)`` largest absolute errors are dropped and the other
    ``n - floor(trim * n)`` averaged (ties at the cut share the gradient: the sum is the same). The kept
    errors are selected by the ``order_statistics`` kernel, without sorting.

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, metres; NaN/Inf raise.
        target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``, metres; a pixel is valid where it is finite
            and > 0.
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        trim: the fraction of each image's largest errors dropped, in [0, 1). Default 0.2.
        align: ``"none"`` (default), ``"median_mad"`` (each image's prediction and target shifted by their
            medians and divided by their MAD) or ``"least_squares"`` (the prediction mapped onto the target by
            MiDaS's per-image scale and shift).
        reduction: ``"mean"`` (default): the mean over the images with a valid pixel; ``"sum"``; ``"none"``:
            the ``B`` per-image losses.
        interpolate: resize a prediction of another size to the target's (bilinear, ``align_corners=True``);
            ``False`` makes a size mismatch a ValueError. Default True.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``: the selection's kernel or twin.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``), float32 (float64 for
        float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating depth map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value.
    """
    _check_trim(trim)
    _checks.choice("align", align, _alignment.ALIGNS)
    pred, target, valid = _prepare(pred, target, mask, interpolate, backend, reduction, normalize, process_group)
    pred, target = _alignment.align_pair(pred, target, valid, align, backend)
    err = torch.where(valid, pred - target, 0.0).abs()[:, 0]
    kept_sum, n = order_statistics.image_trimmed_sum(err, valid[:, 0], trim, 0, backend)
    keep = n - torch.floor(n.to(torch.float64) * trim).to(n.dtype)
    per_image = kept_sum / keep.clamp(min=1).to(pred.dtype)
    return _reduce(per_image, n > 0, reduction, normalize, process_group)


def _stencils(operator: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """``K,1,3,3`` derivative stencils: Scharr x and y normalised by 1/32 (a unit ramp has derivative 1), or
    the 4-neighbour Laplacian (``x^2/2`` has Laplacian 1)."""
    if operator == "scharr":
        gx = torch.tensor([[-3.0, 0.0, 3.0], [-10.0, 0.0, 10.0], [-3.0, 0.0, 3.0]], dtype=dtype) / 32
        weight = torch.stack([gx, gx.t()])
    else:
        weight = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]], dtype=dtype)[None]
    return weight[:, None].to(device)


def _check_derivative_config(operator: str, p: object, scales: object) -> None:
    _checks.choice("operator", operator, OPERATORS)
    if isinstance(p, bool) or p not in (1, 2):
        raise ValueError(f"p must be 1 or 2, got {p!r}")
    if _checks.count("scales", scales) < 1:
        raise ValueError(f"scales must be an int >= 1, got {scales!r}")


def multi_scale_derivative_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                                operator: str = "scharr", p: int = 1, scales: int = 4, align: str = "none",
                                reduction: str = "mean", interpolate: bool = True, normalize: str = "local",
                                process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> torch.Tensor:
    """Depth Pro's multi-scale derivative loss ``1/M sum_j 1/N_j sum_i |grad C_i^j - grad Chat_i^j|^p``.

    ``grad`` is the Scharr gradient (x and y, ``|.|^p`` summed over both) or the Laplacian, applied without
    padding; a derivative counts only where every pixel its stencil reads is valid. Scale ``j + 1`` blurs and
    halves scale ``j`` with a 2x2 box average (floor of odd sizes); a coarse pixel is valid when its four
    fine pixels are. Each image averages the scales where it has at least one valid derivative (a scale
    without any, e.g. sparse LiDAR or a tiny image, is left out rather than counted as 0).

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, metres; NaN/Inf raise.
        target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``, metres; a pixel is valid where it is finite
            and > 0.
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        operator: ``"scharr"`` (default; first order) or ``"laplace"`` (second order).
        p: the error norm, 1 (default) or 2.
        scales: ``M``, the number of scales, >= 1. Default 4.
        align: ``"none"`` (default), ``"median_mad"`` (each image's prediction and target shifted by their
            medians and divided by their MAD) or ``"least_squares"`` (the prediction mapped onto the target by
            MiDaS's per-image scale and shift).
        reduction: ``"mean"`` (default): the mean over the images with a valid pixel; ``"sum"``; ``"none"``:
            the ``B`` per-image losses.
        interpolate: resize a prediction of another size to the target's (bilinear, ``align_corners=True``);
            ``False`` makes a size mismatch a ValueError. Default True.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``), float32 (float64 for
        float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating depth map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value.
    """
    _check_derivative_config(operator, p, scales)
    _checks.choice("align", align, _alignment.ALIGNS)
    pred, target, valid = _prepare(pred, target, mask, interpolate, backend, reduction, normalize, process_group)
    pred, target = _alignment.align_pair(pred, target, valid, align, backend)
    weight = _stencils(operator, pred.dtype, pred.device)
    support = (weight != 0).any(0, keepdim=True).to(pred.dtype)
    diff = torch.where(valid, pred - target, 0.0)
    # zeros that carry a (zero) gradient even when no scale fits the image
    scale_sum = (diff * 0).sum((1, 2, 3))
    scale_count = torch.zeros_like(scale_sum)
    for j in range(scales):
        if j:
            diff = F.avg_pool2d(diff, 2)
            valid = F.avg_pool2d(valid.to(pred.dtype), 2) == 1
        if min(diff.shape[-2:]) < 3:
            break
        stencil_ok = F.conv2d((~valid).to(pred.dtype), support) == 0
        term = F.conv2d(diff, weight).abs().pow(p).sum(1, keepdim=True)
        n = stencil_ok.sum((1, 2, 3))
        total = torch.where(stencil_ok, term, 0.0).sum((1, 2, 3))
        scale_sum = scale_sum + total / n.clamp(min=1).to(pred.dtype)
        scale_count = scale_count + (n > 0).to(pred.dtype)
    per_image = scale_sum / scale_count.clamp(min=1)
    return _reduce(per_image, scale_count > 0, reduction, normalize, process_group)


POOLS = ("image", "batch")


def scale_shift_invariant_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                               reduction: str = "mean", pool: str = "image", interpolate: bool = True,
                               normalize: str = "local", process_group: distributed.ProcessGroup | None = None,
                               backend: str = "auto") -> torch.Tensor:
    """Scale-and-shift-invariant loss (MiDaS): per image, the least-squares ``s, t`` minimising
    ``sum (s * pred + t - target)^2`` over the valid pixels, then the mean of ``|s * pred + t - target|``.

    ``pool="image"`` (default) averages each image's pixels, then the images; ``pool="batch"`` takes one mean
    over the valid pixels of the whole batch, as ZoeDepth's ``ScaleAndShiftInvariantLoss`` does (images with
    more valid pixels weigh more; with ``reduction="mean"`` only; ``normalize="global"`` pools the pixels of
    the global batch).

    ``s, t`` are differentiable functions of ``pred`` (as in MiDaS), computed from centred sums for
    accuracy. When the valid predictions are (numerically) constant the scale is undetermined: ``s = 0`` and
    ``t`` = the mean target (the best shift-only fit).

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, metres; NaN/Inf raise.
        target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``, metres; a pixel is valid where it is finite
            and > 0.
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        reduction: ``"mean"`` (default): the mean over the images with a valid pixel; ``"sum"``; ``"none"``:
            the ``B`` per-image losses.
        pool: ``"image"`` (default) or ``"batch"`` (one mean over the batch's valid pixels; ``"mean"`` only).
        interpolate: resize a prediction of another size to the target's (bilinear, ``align_corners=True``);
            ``False`` makes a size mismatch a ValueError. Default True.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``), float32 (float64 for
        float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating depth map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value, ``pool="batch"`` without ``reduction="mean"``.
    """
    _checks.choice("pool", pool, POOLS)
    if pool == "batch" and reduction != "mean":
        raise ValueError("pool='batch' is one mean over the batch's pixels: it needs reduction='mean'")
    pred, target, valid = _prepare(pred, target, mask, interpolate, backend, reduction, normalize, process_group)
    dims = (1, 2, 3)
    m = valid.to(pred.dtype)
    s, t, count = _alignment.least_squares_fit(pred, target, valid)
    n = count.clamp(min=1)
    residual = (s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1) - target).abs() * m
    if pool == "batch":
        return distributed.global_mean(residual.sum(), count.sum(), normalize, process_group)
    per_image = residual.sum(dims) / n
    return _reduce(per_image, count > 0, reduction, normalize, process_group)


class TrimmedMAELoss(PairLoss):
    """Depth Pro's trimmed mean absolute error on canonical inverse depth; see :func:`trimmed_mae_loss`.

    Args:
        trim: the fraction of each image's largest errors dropped, in [0, 1). Default 0.2.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.
        align: ``"none"`` (default), ``"median_mad"`` (each image's prediction and target shifted by their
            medians and divided by their MAD) or ``"least_squares"`` (the prediction mapped onto the target by
            MiDaS's per-image scale and shift).

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`trimmed_mae_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(trimmed_mae_loss)

    def __init__(self, trim: float = 0.2, reduction: str = "mean", normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto", align: str = "none") -> None:
        _check_trim(trim)
        _checks.choice("align", align, _alignment.ALIGNS)
        super().__init__(trim=float(trim), align=align, reduction=reduction, normalize=normalize,
                         process_group=process_group, backend=backend)


class MultiScaleDerivativeLoss(PairLoss):
    """Depth Pro's ``L_{*,p,M}``: ``operator="scharr"`` (first order) or ``"laplace"`` (second order), error
    norm ``p``, ``scales`` = M; see :func:`multi_scale_derivative_loss`.

    Args:
        operator: ``"scharr"`` (default) or ``"laplace"``.
        p: the error norm, 1 (default) or 2.
        scales: the number of scales, >= 1. Default 4.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.
        align: ``"none"`` (default), ``"median_mad"`` (each image's prediction and target shifted by their
            medians and divided by their MAD) or ``"least_squares"`` (the prediction mapped onto the target by
            MiDaS's per-image scale and shift).

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`multi_scale_derivative_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(multi_scale_derivative_loss)

    def __init__(self, operator: str = "scharr", p: int = 1, scales: int = 4, reduction: str = "mean",
                 normalize: str = "local", process_group: distributed.ProcessGroup | None = None, backend: str = "auto",
                 align: str = "none") -> None:
        _check_derivative_config(operator, p, scales)
        _checks.choice("align", align, _alignment.ALIGNS)
        super().__init__(operator=operator, p=p, scales=scales, align=align, reduction=reduction, normalize=normalize,
                         process_group=process_group, backend=backend)


class ScaleShiftInvariantLoss(PairLoss):
    """MiDaS-style scale-and-shift-invariant loss; see :func:`scale_shift_invariant_loss`.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        pool: ``"image"`` (default) or ``"batch"``.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`scale_shift_invariant_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(scale_shift_invariant_loss)

    def __init__(self, reduction: str = "mean", pool: str = "image", normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> None:
        _checks.choice("pool", pool, POOLS)
        super().__init__(reduction=reduction, pool=pool, normalize=normalize, process_group=process_group,
                         backend=backend)
