"""MiDaS's median-normalised losses (Ranftl et al., "Towards robust monocular depth estimation", ssitrim and
gradient matching), as Depth Anything trains with them, with options that reproduce Video Depth Anything's
``TrimmedProcrustesLoss`` (SPEC section 7).

Both maps are normalised per image: ``(x - median) / max(s, 1e-6)``, ``s = mean over the valid pixels of
|x - median|`` (``depthmetric._alignment.median_mad_normalize``; the medians carry torch.median's gradient).

- :func:`ssi_trimmed_loss`: ``1 / (2M) * sum`` of the kept smallest ``|p^ - t^|``, ``M`` the valid count
  (``halve=False``: ``1 / M``, as Video Depth Anything's code divides); the kept count is MiDaS's
  ``int((1 - trim) * n)``. Selected by the ``order_statistics`` kernel, no sort.
- :func:`gradient_matching_loss`: ``sum over scales k < scales of (sum |grad_x R| + |grad_y R|) / M_k``,
  ``R = mask * (p^ - t^)`` subsampled with stride ``2^k``, a difference counted where both pixels are valid.
- :class:`MiDaSLoss`: ssitrim ``+ alpha *`` gradient matching, the normalisation computed once.

On the compiled kernel (eager, a target without gradient) the three run as one fused step whose backward is
written out (``_FusedTerms``: the same values, a few passes instead of autograd's graph of every elementwise
step); the twin, ``torch.compile``, ``torch.func`` transforms and double backward go through the plain graph.

Options named by what they do (defaults: the MiDaS paper's; ``median_over="all", trim_over="batch",
pool="batch", halve=False`` is Video Depth Anything's): ``median_over="valid"|"all"`` (the median over every pixel, the
invalid ones as zeros), ``trim_over="image"|"batch"`` (trim the batch's pooled residuals), ``pool="image"|
"batch"`` (each image divided by its own count and the images averaged, or the batch's sums divided by the
batch's valid count; ``pool="batch"`` needs ``reduction="mean"``, and ``trim_over="batch"`` needs
``pool="batch"``). ``reduction``/``normalize``/``process_group`` as in ``depthmetric.depth_losses`` (with
``trim_over="batch"`` under ``normalize="global"`` each rank trims its own batch; the divisor is global).
"""
from __future__ import annotations

from typing import Any

import torch

from . import _alignment, _autograd, _checks, _ext, distributed, order_statistics
from ._supervised import PairLoss
from .depth_losses import POOLS, _check_reduction, _prepare, _reduce
from .distributed import ProcessGroup

Tensor = torch.Tensor
# (kept trimmed sums, their valid counts, per scale and image the gradient-matching sums, their counts)
Terms = tuple[Tensor, Tensor, Tensor, Tensor]

__all__ = ["ssi_trimmed_loss", "gradient_matching_loss", "midas_loss", "SSITrimmedLoss", "GradientMatchingLoss",
           "MiDaSLoss"]


def _check_options(trim: float | None, scales: int | None, median_over: str, trim_over: str | None, pool: str,
                   reduction: str, halve: bool | None = None) -> None:
    """The options' checks; ``trim`` / ``scales`` / ``trim_over`` / ``halve`` None where a loss has no such
    option."""
    if halve is not None:
        _checks.flag("halve", halve)
    if trim is not None and not 0 <= _checks.real("trim", trim) < 1:
        raise ValueError(f"trim must be a number in [0, 1), got {trim!r}")
    if scales is not None and _checks.count("scales", scales) < 1:
        raise ValueError(f"scales must be an int >= 1, got {scales!r}")
    _checks.choice("median_over", median_over, _alignment.MEDIAN_OVER)
    _checks.choice("pool", pool, POOLS)
    if trim_over is not None:
        _checks.choice("trim_over", trim_over, POOLS)
    _check_reduction(reduction)
    if pool == "batch" and reduction != "mean":
        raise ValueError("pool='batch' is one mean over the batch's pixels: it needs reduction='mean'")
    if trim_over == "batch" and pool != "batch":
        raise ValueError("trim_over='batch' trims the batch's pooled residuals: it needs pool='batch'")


def _pooled(total: Tensor, count: Tensor, has: Tensor, pool: str, reduction: str, normalize: str,
            process_group: ProcessGroup | None) -> Tensor:
    """Per image ``total / count`` averaged (``pool="image"``), or ``sum total / sum count``."""
    if pool == "batch":
        return distributed.global_mean(total.sum(), count.sum(), normalize, process_group)
    return _reduce(total / count.clamp(min=1).to(total.dtype), has, reduction, normalize, process_group)


def _terms_composite(x: Tensor, t: Tensor, valid: Tensor, median_over: str, trim: float | None, trim_over: str,
                     scales: int, backend: str) -> Terms:
    """The losses' sums on the prepared maps, as a plain autograd graph (the twin's path, and the fused path's
    double backward): ``(kept, n, gm, counts)``: the trimmed sums of ``|p^ - t^|`` over the valid pixels of
    each image (``trim_over="image"``, ``B``) or of the batch (``1``) and their valid counts (``trim`` None:
    empty), and per scale and image the gradient-matching sums and valid counts (``scales, B``)."""
    p = _alignment.median_mad_normalize(x, valid, backend, median_over)
    q = _alignment.median_mad_normalize(t, valid, backend, median_over)
    kept, n, gm, counts = (x.new_zeros(0) for _ in range(4))
    if trim is not None:
        err, ok = torch.where(valid, p - q, 0.0).abs()[:, 0], valid[:, 0]
        if trim_over == "batch":
            B, H, W = err.shape
            err, ok = err.reshape(1, B * H, W), ok.reshape(1, B * H, W)
        kept, n = order_statistics.image_trimmed_sum(err, ok, trim, 1, backend)
    if scales:
        m = valid.to(p.dtype)
        diff = (p - q) * m
        sums, cnts = [], []
        for k in range(scales):
            step = 2 ** k
            d, mk = diff[..., ::step, ::step], m[..., ::step, ::step]
            gx = ((d[..., 1:] - d[..., :-1]).abs() * mk[..., 1:] * mk[..., :-1]).sum((1, 2, 3))
            gy = ((d[..., 1:, :] - d[..., :-1, :]).abs() * mk[..., 1:, :] * mk[..., :-1, :]).sum((1, 2, 3))
            sums.append(gx + gy)
            cnts.append(valid[..., ::step, ::step].sum((1, 2, 3)))
        gm, counts = torch.stack(sums), torch.stack(cnts)
    return kept, n, gm, counts


def _fused_normalize(x: Tensor, valid: Tensor, m: Tensor, count: Tensor,
                     median_over: str) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """``median_mad_normalize``'s forward on the kernel (the same values; the masks as multiplications by the
    valid map ``m``, the maps being finite), returning what the fused backward needs: ``(x^, x - median, s
    before its clamp, s, the median's flat index, whether it is a valid pixel)``."""
    B, _, H, W = x.shape
    if median_over == "all":  # the median of mask * x over every pixel
        values, region = x[:, 0] * m[:, 0], torch.ones((), dtype=torch.bool, device=x.device).expand(B, H, W)
    else:
        values, region = x[:, 0], valid[:, 0]
    key, labels, boxes, ranges, ids = order_statistics.regions(values)
    stats, stat_counts = torch.ops.depthmetric.order_statistics(values, region, key, labels, boxes, ranges, ids, 1.0,
                                                                0, True)
    centred = x - stats[:, 0, 0].view(B, 1, 1, 1)
    raw = centred.abs().mul_(m).sum((2, 3), keepdim=True) / count
    scale = raw.clamp(min=_alignment.MAD_FLOOR)
    index = stat_counts[:, 0, 1]
    picked = (index >= 0) & (m.view(B, H * W).gather(1, index.clamp(min=0)[:, None])[:, 0] > 0)
    return centred / scale, centred, raw, scale, index, picked


class _FusedTerms(torch.autograd.Function):
    """``_terms_composite`` on the order_statistics kernel with a backward written out: the gradient of the
    trimmed sums (the kernel's backward: 1 at the kept, the tied share at the cut; times the residual's sign),
    of the gradient matching (the signs of the differences, saved by the forward) and through the
    normalisation (``1 / s``, the MAD's ``sign(x - median)`` and the median's one element) in a few passes,
    instead of autograd's graph of every elementwise step. The forward gives the composite's values (masks as
    multiplications by the valid map: the maps are finite). Double backward differentiates the composite."""

    @staticmethod
    def forward(ctx: Any, x: Tensor, t: Tensor, valid: Tensor, median_over: str, trim: float | None,
                trim_over: str, scales: int, backend: str) -> Terms:
        B, _, H, W = x.shape
        m = valid.to(x.dtype)
        count = valid.sum((2, 3), keepdim=True).clamp(min=1).to(x.dtype)
        p, centred, raw, scale, index, picked = _fused_normalize(x, valid, m, count, median_over)
        q = _fused_normalize(t, valid, m, count, median_over)[0]
        residual = p.sub_(q).mul_(m)  # (p^ - t^) at the valid pixels, 0 elsewhere
        kept, n, gm, counts = (x.new_zeros(0) for _ in range(4))
        trimmed: tuple[Tensor, ...] = ()
        if trim is not None:
            values, ok = residual.abs()[:, 0], valid[:, 0]
            if trim_over == "batch":
                values, ok = values.reshape(1, B * H, W), ok.reshape(1, B * H, W)
            region = order_statistics.regions(values)
            stats, stat_counts = torch.ops.depthmetric.order_statistics(values, ok, *region, trim, 1, False)
            kept, n = stats[:, 0, 2], stat_counts[:, 0, 0]
            trimmed = (values, ok, *region, stats, stat_counts)
        signs = []
        if scales:
            sums, cnts = [], []
            for k in range(scales):
                step = 2 ** k
                d, mk = residual[..., ::step, ::step], m[..., ::step, ::step]
                dx, dy = d[..., 1:] - d[..., :-1], d[..., 1:, :] - d[..., :-1, :]
                # sign(difference) where both pixels are valid: |difference| = difference * that sign
                sx = torch.sign(dx).mul_(mk[..., 1:]).mul_(mk[..., :-1])
                sy = torch.sign(dy).mul_(mk[..., 1:, :]).mul_(mk[..., :-1, :])
                sums.append(dx.mul_(sx).sum((1, 2, 3)) + dy.mul_(sy).sum((1, 2, 3)))
                cnts.append(valid[..., ::step, ::step].sum((1, 2, 3)))
                signs += [sx, sy]
            gm, counts = torch.stack(sums), torch.stack(cnts)
        ctx.options = (median_over, trim, trim_over, scales, backend, len(trimmed))
        ctx.mark_non_differentiable(n, counts)
        ctx.save_for_backward(x, t, valid, m, residual, centred, raw, scale, index, picked, *trimmed, *signs)
        return kept, n, gm, counts

    @staticmethod
    def backward(ctx: Any, g_kept: Tensor | None, g_n: Tensor | None, g_gm: Tensor | None,
                 g_counts: Tensor | None) -> tuple[Tensor | None, ...]:
        median_over, trim, trim_over, scales, backend, n_trimmed = ctx.options
        x, t, valid, m, residual, centred, raw, scale, index, picked, *rest = ctx.saved_tensors
        trimmed, signs = rest[:n_trimmed], rest[n_trimmed:]
        none = (None,) * 7
        if not ctx.needs_input_grad[0]:
            return (None, *none)
        if torch.is_grad_enabled():  # create_graph=True: the composite's graph, differentiable again
            kept, _, gm, _ = _terms_composite(x, t, valid, median_over, trim, trim_over, scales, backend)
            outs = [(o, g) for o, g in ((kept, g_kept), (gm, g_gm)) if o.numel() and g is not None]
            grads = torch.autograd.grad([o for o, _ in outs], x, [g for _, g in outs], create_graph=True,
                                        allow_unused=True)[0]
            return (torch.zeros_like(x) if grads is None else grads, *none)
        B, _, H, W = x.shape
        if trimmed and g_kept is not None:
            *args, stats, stat_counts = trimmed
            g_stats = torch.zeros_like(stats)
            g_stats[:, 0, 2] = g_kept
            weight = torch.ops.depthmetric._order_statistics_backward(g_stats, *args, trim, 1, stats, stat_counts)
            grad = torch.sign(residual).mul_(weight.view(B, 1, H, W))
        else:
            grad = torch.zeros_like(x)
        if scales and g_gm is not None:
            for k in range(scales):
                step = 2 ** k
                gk = g_gm[k].view(B, 1, 1, 1)
                view = grad[..., ::step, ::step]
                sx, sy = signs[2 * k], signs[2 * k + 1]
                view[..., 1:].addcmul_(sx, gk)
                view[..., :-1].addcmul_(sx, gk, value=-1)
                view[..., 1:, :].addcmul_(sy, gk)
                view[..., :-1, :].addcmul_(sy, gk, value=-1)
        # Through x^ = (x - median) / s, s = max(mean_valid |x - median|, floor): 1 / s, the scale's share
        # sign(x - median) / n at the valid pixels, and minus the total at the median's one element.
        count = valid.sum((2, 3), keepdim=True).clamp(min=1).to(x.dtype)
        g_scale = -(grad * centred).sum((2, 3), keepdim=True) / (scale * scale)
        g_raw = torch.where(raw >= _alignment.MAD_FLOOR, g_scale, 0.0) / count
        grad = grad.div_(scale).addcmul_(torch.sign(centred).mul_(m), g_raw)
        g_median = -grad.sum((1, 2, 3))
        flat, rows, at = grad.view(B, H * W), torch.arange(B, device=x.device), index.clamp(min=0)
        flat[rows, at] = flat[rows, at] + torch.where(picked, g_median, 0.0)  # one element per image
        return (grad, *none)


def _fused(x: Tensor, t: Tensor, valid: Tensor, backend: str) -> bool:
    """The fused path: the compiled kernel, eager, a target without gradient, no torch.func transform (the
    composite raises for those, naming the twin) and a non-empty batch."""
    return (backend != "reference" and not torch.compiler.is_compiling() and not t.requires_grad
            and x.device.type in ("cpu", "cuda") and x.numel() > 0 and x.dim() == 4 and x.shape[1] == 1
            and not _autograd.is_transformed(x) and _ext.use_kernel(backend, x.device))


def _terms(pred: Tensor, target: Tensor, mask: Tensor | None, interpolate: bool, median_over: str, trim: float | None,
           trim_over: str, scales: int, reduction: str, normalize: str, process_group: ProcessGroup | None,
           backend: str) -> Terms:
    x, t, valid = _prepare(pred, target, mask, interpolate, backend, reduction, normalize, process_group)
    if _fused(x, t, valid, backend):
        return _FusedTerms.apply(x, t, valid, median_over, trim, trim_over, scales, backend)
    return _terms_composite(x, t, valid, median_over, trim, trim_over, scales, backend)


def _ssi_from(kept: Tensor, n: Tensor, halve: bool, pool: str, reduction: str, normalize: str,
              process_group: ProcessGroup | None) -> Tensor:
    """The kept sums over ``2M`` (``halve``, MiDaS's paper) or over ``M`` (Video Depth Anything's code)."""
    return _pooled(kept / 2 if halve else kept, n, n > 0, pool, reduction, normalize, process_group)


def _gradient_from(gm: Tensor, counts: Tensor, pool: str, reduction: str, normalize: str,
                   process_group: ProcessGroup | None) -> Tensor:
    """MiDaS's reductions of the per-scale sums: per scale the batch's sum over its valid count (``pool=
    "batch"``, reduction_batch_based), summed over the scales; or per image the scales' sums over their
    counts, reduced over the images."""
    if pool == "batch":
        total = gm[0].sum() * 0  # a zero that carries a (zero) gradient
        for k in range(gm.shape[0]):
            total = total + distributed.global_mean(gm[k].sum(), counts[k].sum(), normalize, process_group)
        return total
    loss = (gm * 0).sum(0)
    for k in range(gm.shape[0]):
        loss = loss + gm[k] / counts[k].clamp(min=1).to(gm.dtype)
    return _reduce(loss, (counts > 0).any(0), reduction, normalize, process_group)


def ssi_trimmed_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, *, trim: float = 0.2,
                     median_over: str = "valid", trim_over: str = "image", pool: str = "image", halve: bool = True,
                     reduction: str = "mean", interpolate: bool = True, normalize: str = "local",
                     process_group: ProcessGroup | None = None, backend: str = "auto") -> Tensor:
    r"""MiDaS's ssitrim: both maps median/MAD-normalised, the ``int((1 - trim) n)`` smallest absolute residuals
    summed over ``2M`` (the module docstring has the options).

    .. math::
        L_{ssitrim} = \frac{1}{2M} \sum_{i=1}^{\lfloor (1 - trim) M \rfloor} |\hat p_i - \hat t_i|_{(i)},
        \qquad \hat x = \frac{x - \operatorname{median}(x)}{\max(\frac{1}{M}\sum |x - \operatorname{median}(x)|,
        10^{-6})}

    >>> import torch
    >>> from depthmetric import ssi_trimmed_loss
    >>> gt = 1 + torch.arange(16.0).view(1, 1, 4, 4)
    >>> float(ssi_trimmed_loss(3 * gt + 2, gt))   # invariant to scale and shift
    0.0

    Args:
        pred: the predicted depth (or disparity), floating ``B,1,H,W`` or ``B,H,W``.
        target: the ground truth, ``B,1,H,W`` or ``B,H,W`` (valid where finite and > 0).
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        trim: the fraction of the largest residuals dropped, in [0, 1). Default 0.2 (MiDaS).
        median_over: ``"valid"`` (default): the median of the valid pixels; ``"all"``: of every pixel, the
            invalid ones as zeros (Video Depth Anything).
        trim_over: ``"image"`` (default): each image trims its own residuals; ``"batch"``: the batch's pooled
            residuals (Video Depth Anything; needs ``pool="batch"``).
        pool: ``"image"`` (default): each image over its own count, the images averaged; ``"batch"``: the
            batch's sum over the batch's valid count (needs ``reduction="mean"``).
        halve: divide by ``2M`` as the MiDaS paper (default True); ``False`` divides by ``M`` as Video Depth
            Anything's ``TrimmedMAELoss`` does.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the ``B`` per-image losses).
        interpolate: resize a prediction of another size to the target's. Default True.
        normalize: ``"local"`` (default) or ``"global"``: the divisor over the global batch under
            ``torch.distributed`` (each rank trims its own residuals).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``), float32 (float64 for
        float64 inputs).

    Raises:
        TypeError: a non-tensor or non-floating map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value or combination.
        RuntimeError: the compiled kernel asked for but not built.
    """
    _check_options(trim, None, median_over, trim_over, pool, reduction, halve)
    common = (reduction, normalize, process_group)
    kept, n, _, _ = _terms(pred, target, mask, interpolate, median_over, trim, trim_over, 0, *common, backend)
    return _ssi_from(kept, n, halve, pool, *common)


def gradient_matching_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, *, scales: int = 4,
                           median_over: str = "valid", pool: str = "image", reduction: str = "mean",
                           interpolate: bool = True, normalize: str = "local",
                           process_group: ProcessGroup | None = None, backend: str = "auto") -> Tensor:
    r"""MiDaS's multi-scale gradient matching on the median/MAD-normalised maps.

    .. math::
        L_{reg} = \sum_{k=0}^{scales-1} \frac{1}{M_k} \sum_i |\nabla_x R^k_i| + |\nabla_y R^k_i|,
        \qquad R = mask \cdot (\hat p - \hat t) \text{ at stride } 2^k

    a difference counted where both of its pixels are valid.

    >>> import torch
    >>> from depthmetric import gradient_matching_loss
    >>> gt = 1 + torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> round(float(gradient_matching_loss(0.5 * gt - 3, gt)), 4)   # zero up to float32 rounding
    0.0

    Args:
        pred: the predicted depth (or disparity), floating ``B,1,H,W`` or ``B,H,W``.
        target: the ground truth, ``B,1,H,W`` or ``B,H,W`` (valid where finite and > 0).
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        scales: the number of strided levels, >= 1. Default 4.
        median_over: ``"valid"`` (default) or ``"all"``, as :func:`ssi_trimmed_loss`.
        pool: ``"image"`` (default) or ``"batch"`` (per scale the batch's sum over its valid count, MiDaS's
            batch-based reduction; needs ``reduction="mean"``).
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        interpolate: resize a prediction of another size to the target's. Default True.
        normalize: ``"local"`` (default) or ``"global"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``).

    Raises:
        TypeError: a non-tensor or non-floating map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value or combination.
        RuntimeError: the compiled kernel asked for but not built.
    """
    _check_options(None, scales, median_over, None, pool, reduction)
    common = (reduction, normalize, process_group)
    _, _, gm, counts = _terms(pred, target, mask, interpolate, median_over, None, "image", scales, *common, backend)
    return _gradient_from(gm, counts, pool, *common)


def _check_alpha(alpha: float) -> float:
    if not _checks.real("alpha", alpha) >= 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    return float(alpha)


def midas_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None, *, alpha: float = 0.5, scales: int = 4,
               trim: float = 0.2, median_over: str = "valid", trim_over: str = "image", pool: str = "image",
               halve: bool = True, reduction: str = "mean", interpolate: bool = True, normalize: str = "local",
               process_group: ProcessGroup | None = None, backend: str = "auto") -> Tensor:
    r"""MiDaS / Depth Anything: :func:`ssi_trimmed_loss` ``+ alpha *`` :func:`gradient_matching_loss` on one
    normalisation of both maps. Video Depth Anything's ``TrimmedProcrustesLoss`` (loss/loss.py) is
    ``median_over="all", trim_over="batch", pool="batch", halve=False``.

    .. math::
        L = L_{ssitrim} + \alpha \, L_{reg}

    >>> import torch
    >>> from depthmetric import midas_loss
    >>> gt = 1 + torch.rand(2, 1, 16, 16, generator=torch.Generator().manual_seed(0))
    >>> vda = dict(median_over="all", trim_over="batch", pool="batch", halve=False)
    >>> round(float(midas_loss(2 * gt + 1, gt, **vda)), 4)
    0.0

    Args:
        pred: the predicted depth (or disparity), floating ``B,1,H,W`` or ``B,H,W``.
        target: the ground truth, ``B,1,H,W`` or ``B,H,W`` (valid where finite and > 0).
        mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
        alpha: the gradient term's weight, >= 0 (0 skips it). Default 0.5.
        scales: the gradient term's levels, >= 1. Default 4.
        trim: as :func:`ssi_trimmed_loss`. Default 0.2.
        median_over: as :func:`ssi_trimmed_loss`. Default ``"valid"``.
        trim_over: as :func:`ssi_trimmed_loss`. Default ``"image"``.
        pool: as :func:`ssi_trimmed_loss`, for both terms. Default ``"image"``.
        halve: as :func:`ssi_trimmed_loss`. Default True.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        interpolate: resize a prediction of another size to the target's. Default True.
        normalize: ``"local"`` (default) or ``"global"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        A scalar (``"mean"``, ``"sum"``) or the ``B`` per-image losses (``"none"``).

    Raises:
        TypeError: a non-tensor or non-floating map, a non-bool mask, a bad option type.
        ValueError: shapes that do not match, NaN/Inf in ``pred``, a bad option value or combination.
        RuntimeError: the compiled kernel asked for but not built.
    """
    _check_options(trim, scales, median_over, trim_over, pool, reduction, halve)
    alpha = _check_alpha(alpha)
    common = (reduction, normalize, process_group)
    kept, n, gm, counts = _terms(pred, target, mask, interpolate, median_over, trim, trim_over,
                                 scales if alpha else 0, *common, backend)
    data = _ssi_from(kept, n, halve, pool, *common)
    if alpha == 0:
        return data
    return data + alpha * _gradient_from(gm, counts, pool, *common)


class SSITrimmedLoss(PairLoss):
    """MiDaS's ssitrim as a module; see :func:`ssi_trimmed_loss`.

    Args:
        trim: the fraction of the largest residuals dropped. Default 0.2.
        median_over: ``"valid"`` (default) or ``"all"``.
        trim_over: ``"image"`` (default) or ``"batch"``.
        pool: ``"image"`` (default) or ``"batch"``.
        halve: over ``2M`` (default True) or ``M``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`ssi_trimmed_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(ssi_trimmed_loss)

    def __init__(self, trim: float = 0.2, median_over: str = "valid", trim_over: str = "image", pool: str = "image",
                 halve: bool = True, reduction: str = "mean", normalize: str = "local",
                 process_group: ProcessGroup | None = None, backend: str = "auto") -> None:
        _check_options(trim, None, median_over, trim_over, pool, reduction, halve)
        super().__init__(trim=float(trim), median_over=median_over, trim_over=trim_over, pool=pool, halve=halve,
                         reduction=reduction, normalize=normalize, process_group=process_group, backend=backend)


class GradientMatchingLoss(PairLoss):
    """MiDaS's multi-scale gradient matching as a module; see :func:`gradient_matching_loss`.

    Args:
        scales: the number of strided levels. Default 4.
        median_over: ``"valid"`` (default) or ``"all"``.
        pool: ``"image"`` (default) or ``"batch"``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`gradient_matching_loss`
        returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(gradient_matching_loss)

    def __init__(self, scales: int = 4, median_over: str = "valid", pool: str = "image", reduction: str = "mean",
                 normalize: str = "local", process_group: ProcessGroup | None = None, backend: str = "auto") -> None:
        _check_options(None, scales, median_over, None, pool, reduction)
        super().__init__(scales=scales, median_over=median_over, pool=pool, reduction=reduction, normalize=normalize,
                         process_group=process_group, backend=backend)


class MiDaSLoss(PairLoss):
    """MiDaS / Depth Anything's loss as a module; see :func:`midas_loss` (Video Depth Anything's
    ``TrimmedProcrustesLoss``: ``MiDaSLoss(median_over="all", trim_over="batch", pool="batch", halve=False)``).

    Args:
        alpha: the gradient term's weight. Default 0.5.
        scales: the gradient term's levels. Default 4.
        trim: the fraction of the largest residuals dropped. Default 0.2.
        median_over: ``"valid"`` (default) or ``"all"``.
        trim_over: ``"image"`` (default) or ``"batch"``.
        pool: ``"image"`` (default) or ``"batch"``.
        halve: the trimmed term over ``2M`` (default True) or ``M``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"``.
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`midas_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(midas_loss)

    def __init__(self, alpha: float = 0.5, scales: int = 4, trim: float = 0.2, median_over: str = "valid",
                 trim_over: str = "image", pool: str = "image", halve: bool = True, reduction: str = "mean",
                 normalize: str = "local", process_group: ProcessGroup | None = None, backend: str = "auto") -> None:
        _check_options(trim, scales, median_over, trim_over, pool, reduction, halve)
        super().__init__(alpha=_check_alpha(alpha), scales=scales, trim=float(trim), median_over=median_over,
                         trim_over=trim_over, pool=pool, halve=halve, reduction=reduction, normalize=normalize,
                         process_group=process_group, backend=backend)
