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
from typing import Any

import torch

from . import _autograd, _checks, _ext
from .reference import order_statistics as _reference

__all__ = ["region_median", "trimmed_sum"]

KEEP_RULES = _reference.KEEP_RULES
TRIM_OVER = ("image", "batch")


def _map(name: str, x: object, batch: int | None = None) -> torch.Tensor:
    """``B,1,H,W`` (``B,H,W`` accepted) as ``B,H,W``."""
    x = _checks.tensor(name, x)
    if x.dim() == 4 and x.shape[1] == 1:
        x = x[:, 0]
    if x.dim() != 3:
        raise ValueError(f"{name} must be B,1,H,W or B,H,W, got shape {tuple(x.shape)}")
    if batch is not None and x.shape[0] != batch:
        raise ValueError(f"{name} has batch size {x.shape[0]} but values have {batch}")
    return x


def _like(name: str, x: object, values: torch.Tensor) -> torch.Tensor:
    """A map of ``values``' shape (``B,H,W``, ``B,1,H,W`` accepted) and device, as ``B,H,W``."""
    x = _map(name, x)
    if x.shape != values.shape:
        raise ValueError(f"{name} must have the values' shape {tuple(values.shape)} (B,H,W), got {tuple(x.shape)}")
    if x.device != values.device:
        raise ValueError(f"{name} is on {x.device} but values is on {values.device}")
    return x


def _descriptor(name: str, x: object, B: int, width: int, dtype: torch.dtype,
                device: torch.device) -> torch.Tensor:
    """A ``B,R,width`` region descriptor of ``dtype``'s kind (floating or integer) on ``device``, as a
    contiguous ``dtype`` tensor."""
    x = _checks.tensor(name, x)
    if x.dim() != 3 or x.shape[0] != B or x.shape[2] != width:
        raise ValueError(f"{name} must be B,R,{width} with the values' B = {B}, got shape {tuple(x.shape)}")
    if x.is_floating_point() != dtype.is_floating_point or x.dtype == torch.bool:
        kind = "floating-point" if dtype.is_floating_point else "integer"
        raise TypeError(f"{name} must be an {kind} tensor, got {x.dtype}")
    if x.device != device:
        raise ValueError(f"{name} is on {x.device} but values is on {device}")
    return x.to(dtype).contiguous()


def regions(
    values: torch.Tensor,
    *,
    boxes: torch.Tensor | None = None,
    depth_ranges: torch.Tensor | None = None,
    key: torch.Tensor | None = None,
    labels: torch.Tensor | None = None,
    num_labels: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The kernel's region arguments ``(key, labels, boxes, ranges, ids)`` for ``values`` (``B,H,W``): one
    region per image when none is given; else ``R`` regions, each the intersection of what is given (boxes
    ``B,R,4`` as ``y0,y1,x0,x1``; ``depth_ranges`` ``B,R,2`` ``[lo, hi)`` of ``key``; label ids
    ``0..num_labels-1`` of ``labels``)."""
    B, H, W = values.shape
    dev = values.device
    sizes: dict[str, int] = {}
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


def order_statistics(values: torch.Tensor, valid: torch.Tensor, key: torch.Tensor, labels: torch.Tensor,
                     boxes: torch.Tensor, ranges: torch.Tensor, ids: torch.Tensor, trim: float = 1.0,
                     keep_rule: int = 0, with_median: bool = True,
                     backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """The raw op, ``(stats, counts)``: ``B,R,4`` (median, MAD, trimmed sum, threshold) and ``B,R,5`` int64
    (n, median flat index, below, equal, sum of signs); see ``csrc/order_statistics/order_statistics.cpp``."""
    if _ext.use_kernel(backend, values.device):
        _autograd.check_untransformed("depthmetric.order_statistics", (values,))
        return torch.ops.depthmetric.order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule,
                                                       with_median)
    return _reference.order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median)


def _values_and_valid(name: str, values: object, mask: object) -> tuple[torch.Tensor, torch.Tensor]:
    """The checked floating ``B,H,W`` map and its bool ``B,H,W`` valid map (all True without ``mask``)."""
    values = _map(name, _checks.floating(name, values))
    valid = torch.ones(values.shape, dtype=torch.bool, device=values.device) if mask is None else _like(
        "mask", mask, values)
    if valid.dtype != torch.bool:
        raise TypeError(f"mask must be a bool tensor, got {valid.dtype}")
    _checks.finite(name, values)
    return values, valid


def region_median(values: torch.Tensor, mask: torch.Tensor | None = None, *, boxes: torch.Tensor | None = None,
                  depth_ranges: torch.Tensor | None = None, key: torch.Tensor | None = None,
                  labels: torch.Tensor | None = None, num_labels: int | None = None,
                  backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(median, mad, count)`` of each region, ``B,R`` (accumulation dtype: float32, float64 for float64;
    count int64).

    ``values``: ``B,1,H,W`` or ``B,H,W`` floating (NaN/Inf raise); ``mask`` (bool, same shape)
    marks the pixels that count, default all. Regions: one per image by default; ``boxes`` ``B,R,4``
    (``y0,y1,x0,x1``, clipped to the image), ``depth_ranges`` ``B,R,2`` (``[lo, hi)`` of ``key``, e.g. the
    ground truth), ``labels`` ``B,H,W`` ints with ``num_labels`` (region r: the pixels labelled r); those
    given intersect (and must agree on R). An empty region gives 0, 0, 0 (and no gradient).

    The median is the lower middle element; MAD is ``mean |x - median|``; gradients as autograd gives them
    for ``torch.median`` (the one selected element, the lowest flat index among ties) and through the MAD.

    Args:
        values: the map whose statistics are taken, floating (float16, bfloat16, float32 or float64)
            ``B,1,H,W`` or ``B,H,W``; NaN/Inf raise. Gets the gradient of the median and the MAD.
        mask: optional bool map of the values' shape (``B,1,H,W`` or ``B,H,W``) and device; ``False``
            excludes a pixel from every region. Default ``None``: every pixel counts.
        boxes: optional ``B,R,4`` integer tensor on the values' device, ``y0, y1, x0, x1`` per region (the
            pixels ``y0 <= y < y1``, ``x0 <= x < x1``, clipped to the image). Default ``None``: no box.
        depth_ranges: optional ``B,R,2`` floating tensor on the values' device, ``[lo, hi)`` of ``key`` per
            region (compared in float64; ``-inf``/``inf`` leave a side open). Needs ``key``. Default
            ``None``: no interval.
        key: the map ``depth_ranges`` select by (e.g. the ground-truth depth), ``B,1,H,W`` or ``B,H,W`` of
            the values' shape and device, cast to the values' dtype; data, no gradient. Default ``None``:
            the values themselves.
        labels: optional integer label map, ``B,1,H,W`` or ``B,H,W`` of the values' shape and device: region
            ``r`` holds the pixels labelled ``r``, ``0 <= r < num_labels`` (other ids are in no region).
            Needs ``num_labels``. Default ``None``: no label map.
        num_labels: the number of label regions ``R``, an int >= 0 (with ``labels``). Default ``None``.
        backend: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``: the compiled ``order_statistics`` kernel of
            the values' device; ``"reference"``: the twin (sorts; supports ``torch.func`` transforms).

    Returns:
        ``(median, mad, count)``, each ``B,R`` (``R = 1`` without region arguments). The median and the MAD
        are float32 (float64 for float64 values), the count of each region's valid pixels int64; an empty
        region gives 0, 0, 0.

    Raises:
        TypeError: a non-tensor or non-floating ``values``, a non-bool mask, ``boxes`` not integer,
            ``depth_ranges`` not floating, ``labels`` not an integer map, ``num_labels`` not an int (or
            missing with ``labels``).
        ValueError: maps or descriptors of the wrong shape or device, region arguments that disagree on
            ``R``, ``depth_ranges`` without ``key``, a negative ``num_labels``, NaN/Inf in ``values``, a bad
            ``backend`` value (or one for another device).
        RuntimeError: ``backend`` other than ``"reference"`` without the compiled extension (or its CUDA
            kernels for CUDA inputs), or with inputs under a ``torch.func`` transform or forward-mode AD.
    """
    values, valid = _values_and_valid("values", values, mask)
    key, labels, boxes, ranges, ids = regions(values, boxes=boxes, depth_ranges=depth_ranges, key=key,
                                              labels=labels, num_labels=num_labels)
    _ext.check_backend(backend, values.device)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, 1.0, 0, True, backend)
    return stats[..., 0], stats[..., 1], counts[..., 0]


def trimmed_sum(residual: torch.Tensor, mask: torch.Tensor | None = None, *, trim: float = 0.2, keep: str = "drop",
                over: str = "image", backend: str = "auto") -> tuple[torch.Tensor, torch.Tensor]:
    """``(sum, kept)``: the sum of the ``kept`` smallest ``|residual|`` over the valid pixels of each image
    (``over="image"``, ``B``) or of the whole batch pooled (``over="batch"``, one value, shape ``1``).

    ``keep="drop"`` keeps ``n - floor(trim n)`` (Depth Pro), ``"keep"`` keeps ``floor((1 - trim) n)``
    (MiDaS's ``int(n * (1 - trim))``). The gradient is ``sign(residual)`` at the kept pixels (values tied at
    the cut share it), 0 elsewhere. Selection, no sort.

    Args:
        residual: the residual map, floating (float16, bfloat16, float32 or float64) ``B,1,H,W`` or
            ``B,H,W``; its absolute values are trimmed and summed. NaN/Inf raise.
        mask: optional bool map of the residual's shape (``B,1,H,W`` or ``B,H,W``) and device; ``False``
            excludes a pixel. Default ``None``: every pixel counts.
        trim: the fraction of the largest ``|residual|`` to drop, a number in [0, 1]. Default 0.2.
        keep: how the kept count is rounded: ``"drop"`` (default, Depth Pro): ``n - floor(trim n)``;
            ``"keep"`` (MiDaS): ``floor((1 - trim) n)``.
        over: ``"image"`` (default): per image; ``"batch"``: the valid pixels of the whole batch pooled.
        backend: ``"auto"`` (default), ``"cpu"`` or ``"cuda"``: the compiled ``order_statistics`` kernel of
            the residual's device; ``"reference"``: the twin (sorts; supports ``torch.func`` transforms).

    Returns:
        ``(sum, kept)``, each of shape ``B`` (``over="image"``) or ``1`` (``over="batch"``). The sum of the
        kept smallest ``|residual|`` is float32 (float64 for float64 residuals), the kept count int64; both
        are 0 without valid pixels.

    Raises:
        TypeError: a non-tensor or non-floating ``residual``, a non-bool mask, ``trim`` not a number.
        ValueError: a ``residual`` or ``mask`` of the wrong shape or device, ``trim`` outside [0, 1], a bad
            ``keep``, ``over`` or ``backend`` value (or a backend for another device), NaN/Inf in ``residual``.
        RuntimeError: ``backend`` other than ``"reference"`` without the compiled extension (or its CUDA
            kernels for CUDA inputs), or with inputs under a ``torch.func`` transform or forward-mode AD.
    """
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
    def _(values: torch.Tensor, valid: torch.Tensor, key: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
          ranges: torch.Tensor, ids: torch.Tensor, trim: float, keep_rule: int,
          with_median: bool) -> tuple[torch.Tensor, torch.Tensor]:
        B, R = boxes.shape[:2]
        return (values.new_empty((B, R, 4), dtype=_checks.accumulate_dtype(values.dtype)),
                values.new_empty((B, R, 5), dtype=torch.int64))

    @torch.library.register_fake("depthmetric::_order_statistics_backward")
    def _(grad: torch.Tensor, values: torch.Tensor, valid: torch.Tensor, key: torch.Tensor, labels: torch.Tensor,
          boxes: torch.Tensor, ranges: torch.Tensor, ids: torch.Tensor, trim: float, keep_rule: int,
          stats: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
        return values.new_empty(values.shape)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, with_median = inputs
        ctx.params = (trim, keep_rule)
        ctx.with_median = with_median
        ctx.save_for_backward(values, valid, key, labels, boxes, ranges, ids, *output)

    def backward(ctx: Any, grad_stats: torch.Tensor | None, grad_counts: torch.Tensor | None) -> tuple[Any, ...]:
        values, valid, key, labels, boxes, ranges, ids, stats, counts = ctx.saved_tensors
        none = (None,) * 9
        if grad_stats is None or not ctx.needs_input_grad[0]:
            return (None, *none)
        region = (valid, key, labels, boxes, ranges, ids)
        trim, keep_rule = ctx.params
        with_median = ctx.with_median
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grad, = _autograd.reference_vjp(
                lambda v: _reference.order_statistics(v, *region, trim, keep_rule, with_median)[0], (values,),
                grad_stats, (True,))
            return (grad, *none)
        grad = torch.ops.depthmetric._order_statistics_backward(grad_stats, values, *region, trim, keep_rule, stats,
                                                                counts)
        return (grad, *none)

    torch.library.register_autograd("depthmetric::order_statistics", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()


def image_median(values: torch.Tensor, valid: torch.Tensor, backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The losses' fast path (inputs already checked): ``(median, count)`` of each image's valid pixels,
    ``values`` and ``valid`` ``B,H,W``; the median carries torch.median's gradient."""
    key, labels, boxes, ranges, ids = regions(values)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, 1.0, 0, True, backend)
    return stats[:, 0, 0], counts[:, 0, 0]


def image_trimmed_sum(values: torch.Tensor, valid: torch.Tensor, trim: float, keep_rule: int,
                      backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The losses' fast path: ``(sum, count)`` of the kept smallest ``values`` (already ``>= 0``) of each image
    (``B,H,W``; reshape to ``1,B*H,W`` to pool a batch) and its valid count."""
    key, labels, boxes, ranges, ids = regions(values)
    stats, counts = order_statistics(values, valid, key, labels, boxes, ranges, ids, trim, keep_rule, False, backend)
    return stats[:, 0, 2], counts[:, 0, 0]
