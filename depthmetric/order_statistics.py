"""Masked order statistics per region (SPEC section 7), fused on CPU and CUDA: per region the count ``n``,
the median, the mean absolute deviation from it and a trimmed sum, by selection (no sort).

A region is a set of pixels of one image: its valid pixels (``mask``), optionally restricted to a box
``y0:y1, x0:x1``, to a half-open interval ``[lo, hi)`` of a key map (e.g. ground-truth depth ranges, Metric3D's
HDN) and to one label id of a label map. The op never builds ``B x R x H x W`` masks: the CPU kernel copies
each region's values into a scratch buffer in row chunks with a histogram of the top 16 bits of their
order-preserving integer keys, and selects with ``std::nth_element`` among the members of the bucket that
holds the rank (a region alone, e.g. a batch pooled for trimming, spreads its chunks over the threads); the
CUDA kernel gives a block one region and bisects on the same keys. Both are deterministic.

Conventions (torch's): the median is the lower middle element (sorted index ``(n - 1) // 2``); its gradient
reaches one element, the lowest flat index (``i * W + j``) among the values equal to it, as ``torch.median``
gives its gradient to the one element it returns. ``MAD = mean |x - median|`` differentiates through both
(``sign(0) = 0``). The trimmed sum keeps the ``keep`` smallest values; its gradient is 1 at the kept values,
and values tied at the cut share the kept part equally (``(keep - below) / equal`` each).
"""
from __future__ import annotations

import math

import torch

from . import _autograd, _checks, _ext
from .reference import order_statistics as _reference

__all__ = ["region_median", "trimmed_sum"]

KEEP_RULES = _reference.KEEP_RULES
TRIM_OVER = ("image", "batch")


def _map(name, x, batch=None) -> torch.Tensor:
    """``B,1,H,W`` (``B,H,W`` accepted) as ``B,H,W``."""
    x = _checks.tensor(name, x)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must be B,1,H,W or B,H,W, got shape {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]} but values have {batch}")
    return x


def _like(name, x, values) -> torch.Tensor:
    x = _map(name, x)
    if x.shape != values.shape:
        raise ValueError(f"{name} must have the values' shape {tuple(values.shape)} (B,H,W), got {tuple(x.shape)}")
    if x.device != values.device:
        raise ValueError(f"{name} is on {x.device} but values is on {values.device}")
    return x


def _descriptor(name, x, B, width, dtype, device) -> torch.Tensor:
    x = _checks.tensor(name, x)
    if x.dim() != 3 or x.shape[0] != B or x.shape[2] != width:
        raise ValueError(f"{name} must be B,R,{width} with the values' B = {B}, got shape {tuple(x.shape)}")
    if x.is_floating_point() != dtype.is_floating_point or x.dtype == torch.bool:
        kind = "floating-point" if dtype.is_floating_point else "integer"
        raise TypeError(f"{name} must be an {kind} tensor, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but values is on {device}")
    return x.to(dtype).contiguous()


def regions(values, *, boxes=None, depth_ranges=None, key=None, labels=None, num_labels=None):
    """The kernel's region arguments ``(key, labels, boxes, ranges, ids)`` for ``values`` (``B,H,W``): one
    region per image when none is given; else ``R`` regions, each the intersection of what is given (boxes
    ``B,R,4`` as ``y0,y1,x0,x1``; ``depth_ranges`` ``B,R,2`` ``[lo, hi)`` of ``key``; label ids
    ``0..num_labels-1`` of ``labels``)."""
    B, H, W = values.shape
    dev = values.device
    sizes = {}
    if num_labels is not None:
        _checks.count("num_labels", num_labels)
    if boxes is not None:
        boxes = _descriptor("boxes", boxes, B, 4, torch.int64, dev)
        sizes["boxes"] = boxes.shape[1]
    if depth_ranges is not None:
        depth_ranges = _descriptor("depth_ranges", depth_ranges, B, 2, torch.float64, dev)
        sizes["depth_ranges"] = depth_ranges.shape[1]
        if key is None:
            raise ValueError("depth_ranges select pixels by a key map: pass key (the ground-truth depth)")
    if labels is not None:
        labels = _like("labels", labels, values)
        if labels.is_floating_point() or labels.dtype == torch.bool:
            raise TypeError(f"labels must be an integer label map, got {labels.dtype}")
        labels = labels.to(torch.int64)
        sizes["labels"] = _checks.count("num_labels", num_labels)
    if len(set(sizes.values())) > 1:
        raise ValueError(f"the region arguments give different region counts R: {sizes}")
    R = next(iter(sizes.values())) if sizes else 1
    if boxes is None:
        boxes = torch.tensor([0, H, 0, W], dtype=torch.int64, device=dev).expand(B, R, 4).contiguous()
    if depth_ranges is None:
        depth_ranges = torch.tensor([-math.inf, math.inf], dtype=torch.float64, device=dev).expand(B, R, 2).contiguous()
    key = values.detach() if key is None else _like("key", key, values).detach().to(values.dtype)
    if labels is None:
        labels = torch.zeros((), dtype=torch.int64, device=dev).expand(B, H, W)
        ids = torch.full((B, R), -1, dtype=torch.int64, device=dev)
    else:
        ids = torch.arange(R, dtype=torch.int64, device=dev).expand(B, R).contiguous()
    return key, labels, boxes, depth_ranges, ids


def order_statistics(values, valid, key, labels, boxes, ranges, ids, trim=1.0, keep_rule=0, with_median=True,
                     backend="auto"):
    """The raw op, ``(stats, counts)``: ``B,R,4`` (median, MAD, trimmed sum, threshold) and ``B,R,5`` int64
    (n, median flat index, below, equal, sum of signs); see ``csrc/order_statistics/order_statistics.cpp``."""
    if _ext.use_kernel(backend, values.device):
        _autograd.check_untransformed("depthmetric.order_statistics", (values,))
        return torch.ops.depthmetric.order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule,
                                                       with_median)
    return _reference.order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median)


def _values_and_valid(name, values, mask):
    values = _map(name, _checks.floating(name, values))
    valid = torch.ones(values.shape, dtype=torch.bool, device=values.device) if mask is None else _like(
        "mask", mask, values)
    if valid.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {valid.dtype}")
    _checks.finite(name, values)
    return values, valid


def region_median(values, mask=None, *, boxes=None, depth_ranges=None, key=None, labels=None, num_labels=None,
                  backend: str = "auto"):
    """``(median, mad, count)`` of each region, ``B,R`` (accumulation dtype: float32, float64 for float64;
    count int64). ``values``: ``B,1,H,W`` or ``B,H,W`` floating (NaN/Inf raise); ``mask`` (bool, same shape)
    marks the pixels that count, default all. Regions: one per image by default; ``boxes`` ``B,R,4``
    (``y0,y1,x0,x1``, clipped to the image), ``depth_ranges`` ``B,R,2`` (``[lo, hi)`` of ``key``, e.g. the
    ground truth), ``labels`` ``B,H,W`` ints with ``num_labels`` (region r: the pixels labelled r); those
    given intersect (and must agree on R). An empty region gives 0, 0, 0 (and no gradient).

    The median is the lower middle element; MAD is ``mean |x - median|``; gradients as autograd gives them
    for ``torch.median`` (the one selected element, the lowest flat index among ties) and through the MAD.
    """
    values, valid = _values_and_valid("values", values, mask)
    key, labels, boxes, ranges, ids = regions(values, boxes=boxes, depth_ranges=depth_ranges, key=key,
                                              labels=labels, num_labels=num_labels)
    _ext.check_backend(backend, values.device)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, 1.0, 0, True, backend)
    return stats[..., 0], stats[..., 1], counts[..., 0]


def trimmed_sum(residual, mask=None, *, trim: float = 0.2, keep: str = "drop", over: str = "image",
                backend: str = "auto"):
    """``(sum, kept)``: the sum of the ``kept`` smallest ``|residual|`` over the valid pixels of each image
    (``over="image"``, ``B``) or of the whole batch pooled (``over="batch"``, one value, shape ``1``).
    ``keep="drop"`` keeps ``n - floor(trim n)`` (Depth Pro), ``"keep"`` keeps ``floor((1 - trim) n)``
    (MiDaS's ``int(n * (1 - trim))``). The gradient is ``sign(residual)`` at the kept pixels (values tied at
    the cut share it), 0 elsewhere. Selection, no sort."""
    trim = _checks.real("trim", trim)
    if not 0 <= trim <= 1:
        raise ValueError(f"trim must be a number in [0, 1], got {trim!r}")
    _checks.choice("keep", keep, KEEP_RULES)
    _checks.choice("over", over, TRIM_OVER)
    residual, valid = _values_and_valid("residual", residual, mask)
    _ext.check_backend(backend, residual.device)
    values = residual.abs()
    if over == "batch":
        B, H, W = values.shape
        values, valid = values.reshape(1, B * H, W), valid.reshape(1, B * H, W)
    key, labels, boxes, ranges, ids = regions(values)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, KEEP_RULES[keep], False,
                                     backend)
    n = counts[:, 0, 0]
    if keep == "drop":
        kept = n - torch.floor(n.double() * trim).long()
    else:
        kept = torch.floor(n.double() * (1.0 - trim)).long()
    return stats[:, 0, 2], kept.clamp(min=0)


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    @torch.library.register_fake("depthmetric::order_statistics")
    def _(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median):
        B, R = boxes.shape[:2]
        return (values.new_empty((B, R, 4), dtype=_checks.accumulate_dtype(values.dtype)),
                values.new_empty((B, R, 5), dtype=torch.int64))

    @torch.library.register_fake("depthmetric::_order_statistics_backward")
    def _(grad, values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, stats, counts):
        return values.new_empty(values.shape)

    def setup_context(ctx, inputs, output):
        values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median = inputs
        ctx.params = (trim, keep_rule)
        ctx.with_median = with_median
        ctx.save_for_backward(values, valid, key, labels, boxes, ranges, ids, *output)

    def backward(ctx, grad_stats, grad_counts):
        values, valid, key, labels, boxes, ranges, ids, stats, counts = ctx.saved_tensors
        none = (None,) * 9
        if grad_stats is None or not ctx.needs_input_grad[0]:
            return (None, *none)
        region = (valid, key, labels, boxes, ranges, ids)
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grad, = _autograd.reference_vjp(
                lambda v: _reference.order_statistics(v, *region, *ctx.params, ctx.with_median)[0], (values,), grad_stats, (True,))
            return (grad, *none)
        grad = torch.ops.depthmetric._order_statistics_backward(grad_stats, values, *region, *ctx.params, stats,
                                                                counts)
        return (grad, *none)

    torch.library.register_autograd("depthmetric::order_statistics", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()


def image_median(values, valid, backend):
    """The losses' fast path (inputs already checked): ``(median, count)`` of each image's valid pixels,
    ``values`` and ``valid`` ``B,H,W``; the median carries torch.median's gradient."""
    key, labels, boxes, ranges, ids = regions(values)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, 1.0, 0, True, backend)
    return stats[:, 0, 0], counts[:, 0, 0]


def image_trimmed_sum(values, valid, trim, keep_rule, backend):
    """The losses' fast path: ``(sum, count)`` of the kept smallest ``values`` (already ``>= 0``) of each image
    (``B,H,W``; reshape to ``1,B*H,W`` to pool a batch) and its valid count."""
    key, labels, boxes, ranges, ids = regions(values)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, False, backend)
    return stats[:, 0, 2], counts[:, 0, 0]
