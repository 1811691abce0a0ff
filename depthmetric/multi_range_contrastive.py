"""MetricDepth's multi-range contrastive loss (the paper's Sec. III), fused on CPU and CUDA.

The loss regularises a feature map with pairs (anchor pixel, sample pixel): samples come from the same map
rolled by random (row, column) shifts ("within") and from other images of the batch ("across"). A pair is
positive when the depth differential is below ``r_p``, a negative of subgroup ``j`` when it falls in
``ranges[j]``, ignored otherwise or when either depth is invalid. The compiled kernel reads each sample
feature at its shifted index instead of materialising ``N`` rolled copies of the feature map.
"""
from __future__ import annotations

import math
from typing import Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from . import _autograd, _checks, _ext, distributed
from .reference import multi_range_contrastive as _reference

__all__ = [
    "MultiRangeContrastiveLoss",
    "multi_range_contrastive_loss",
    "sample_shifts",
    "PRESETS",
]

# (r_p, ranges, margins) of the paper's tables: Table I (NYU), Table II (KITTI), Table VII (uniform, best row).
PRESETS: dict[str, dict[str, Any]] = {
    "nyu-lt": dict(r_p=0.1, ranges=[(0.5, 1.0), (1.0, 1.5), (1.5, 2.0)], margins=[3.0, 6.0, 8.0]),
    "nyu-bts": dict(r_p=0.1, ranges=[(0.5, 1.0), (1.0, 1.5), (1.5, 2.0)], margins=[2.0, 4.0, 6.0]),
    "nyu-newcrfs": dict(r_p=0.1, ranges=[(0.5, 1.0), (1.0, 1.5)], margins=[5.0, 9.0]),
    "kitti-lt": dict(r_p=0.1, ranges=[(1.0, 5.0), (5.0, 10.0), (10.0, 15.0)], margins=[2.0, 3.0, 3.5]),
    "kitti-bts": dict(r_p=0.1, ranges=[(1.0, 5.0), (5.0, 10.0)], margins=[1.0, 1.5]),
    "kitti-newcrfs": dict(r_p=0.1, ranges=[(1.0, 5.0), (5.0, 10.0)], margins=[4.0, 7.0]),
    "uniform": dict(r_p=0.1, ranges=[(0.5, math.inf)], margins=[4.0]),
}

MAX_RANGES = 8  # csrc/multi_range_contrastive/pair_math.h kMaxRanges


def sample_shifts(
    batch: int,
    height: int,
    width: int,
    n_within: int = 10,
    n_across: int = 4,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw the paper's sample shifts, to pass as ``shifts=`` to :func:`multi_range_contrastive_loss`.

    Args:
        batch: ``B``, the number of images (an int >= 0).
        height: ``H`` of the feature map (an int >= 0).
        width: ``W`` of the feature map (an int >= 0).
        n_within: the shifts within an image: ``s_h`` from ``[1, H-1]`` and ``s_w`` from ``[1, W-1]`` (an axis
            of size 1 is not shifted; with ``H == W == 1`` there are none). Default 10.
        n_across: the shifts across images: ``s_k`` from ``[1, B-1]`` (none when ``B == 1``). Default 4.
        generator: the generator to draw from; ``None`` (default): torch's global CPU RNG.

    Returns:
        An ``N,3`` int64 tensor of (batch, row, column) shifts, within-image ones first, on the generator's
        device (CPU by default).

    Raises:
        TypeError: a size that is not an int, a ``generator`` that is not a ``torch.Generator``.
        ValueError: a negative size.
    """
    for name, value in (("batch", batch), ("height", height), ("width", width), ("n_within", n_within),
                        ("n_across", n_across)):
        _checks.count(name, value)
    generator = _checks.generator("generator", generator)
    device = generator.device if generator is not None else torch.device("cpu")

    def draw(size: int, n: int) -> torch.Tensor:
        if size <= 1:
            return torch.zeros(n, dtype=torch.long, device=device)
        return torch.randint(1, size, (n,), generator=generator, device=device)

    n_within = n_within if (height > 1 or width > 1) else 0
    n_across = n_across if batch > 1 else 0
    zeros_w = torch.zeros(n_within, dtype=torch.long, device=device)
    zeros_a = torch.zeros(n_across, dtype=torch.long, device=device)
    within = torch.stack([zeros_w, draw(height, n_within), draw(width, n_within)], dim=1)
    across = torch.stack([draw(batch, n_across), zeros_a, zeros_a], dim=1)
    return torch.cat([within, across])


def _check_distributed(normalize: str, across: str, process_group: distributed.ProcessGroup | None) -> None:
    distributed.check_normalize(normalize, process_group)
    _checks.choice("across", across, distributed.SCOPES)


def _drop_identity(shifts: torch.Tensor, B: int, H: int, W: int) -> torch.Tensor:
    """Shifts drawn on another rank for its batch size can be no shift at all here (``s_k = B``): such a pair
    is a pixel with itself, which sample_shifts never draws, so it is dropped."""
    sizes = torch.tensor([B, H, W])
    return shifts[(shifts.remainder(sizes) != 0).any(1)]


def _draw_shifts(B: int, H: int, W: int, n_within: int, n_across: int, generator: torch.Generator | None,
                 group: distributed.ProcessGroup | None, across: str) -> torch.Tensor:
    """One call's shifts (``B``: the images samples come from), drawn on the group's first rank and sent to
    every rank, so that all ranks use the same shifts in a step."""
    _checks.generator("generator", generator)  # on every rank, before the first rank draws
    shifts = distributed.broadcast_from_first(lambda: sample_shifts(B, H, W, n_within, n_across, generator), group)
    if group is not None and across == "local":
        shifts = _drop_identity(shifts, B, H, W)
    return shifts


def _check_shifts(shifts: object, features: torch.Tensor) -> None:
    if not (isinstance(shifts, torch.Tensor) and shifts.dtype == torch.long and shifts.dim() == 2
            and shifts.shape[1] == 3):
        raise ValueError("shifts must be an int64 tensor of shape N,3 (batch, row, column shifts)")
    _checks.index_device("shifts", shifts, "features", features.device)


def _check_config(r_p: object, ranges: object, margins: object, n_within: object, n_across: object,
                  reduction: str) -> tuple[float, list[tuple[float, float]], list[float]]:
    threshold = _checks.real("r_p", r_p)
    if not (threshold > 0 and math.isfinite(threshold)):
        raise ValueError(f"r_p must be a positive finite number, got {r_p!r}")
    if isinstance(ranges, (str, bytes)) or not isinstance(ranges, Iterable):
        raise TypeError(f"ranges must be a sequence of (lo, hi) pairs, got {ranges!r}")
    pairs = [_checks.numbers(f"ranges[{j}]", r, length=2) for j, r in enumerate(ranges)]
    ranges = [(lo, hi) for lo, hi in pairs]
    margins = _checks.numbers("margins", margins)
    if len(margins) != len(ranges):
        raise ValueError(f"len(margins) ({len(margins)}) must equal len(ranges) ({len(ranges)})")
    if len(ranges) > MAX_RANGES:
        raise ValueError(f"ranges supports at most {MAX_RANGES} subgroups, got {len(ranges)}")
    for j, (lo, hi) in enumerate(ranges):
        if not lo < hi:
            raise ValueError(f"ranges[{j}] = {(lo, hi)} must have lo < hi")
        if lo < threshold:
            raise ValueError(f"ranges[{j}] starts at {lo}, below r_p = {r_p}: positives and negatives would overlap")
        if j and lo < ranges[j - 1][1]:
            raise ValueError(f"ranges must be sorted and non-overlapping, but ranges[{j}] = {(lo, hi)} "
                             f"starts before ranges[{j - 1}] ends")
    for j, m in enumerate(margins):
        if not (m >= 0 and math.isfinite(m)):
            raise ValueError(f"margins[{j}] must be a finite number >= 0, got {m}")
    _checks.count("n_within", n_within)
    _checks.count("n_across", n_across)
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    return threshold, ranges, margins


def _prepare_depth(depth: torch.Tensor, mask: torch.Tensor | None, features: torch.Tensor) -> torch.Tensor:
    """``B,H,W`` depth at the feature resolution (nearest), masked pixels set invalid, in the accumulation dtype."""
    B, _, H, W = features.shape
    depth = _checks.depth_map("depth", depth, batch=B)
    mask = _checks.mask_map("mask", mask, depth)
    _checks.same_device(features=features, depth=depth)
    acc = _checks.accumulate_dtype(features.dtype)
    depth = depth.to(acc)
    if mask is not None:
        depth = depth.masked_fill(~mask, 0.0)
    if depth.shape[-2:] != (H, W):
        depth = F.interpolate(depth, size=(H, W), mode="nearest")  # never averages valid with invalid depth
    return depth[:, 0].contiguous()


def multi_range_contrastive_loss(
    features: torch.Tensor,
    depth: torch.Tensor,
    mask: torch.Tensor | None = None,
    *,
    r_p: float = 0.1,
    ranges: Sequence[tuple[float, float]] = PRESETS["nyu-lt"]["ranges"],
    margins: Sequence[float] = PRESETS["nyu-lt"]["margins"],
    n_within: int = 10,
    n_across: int = 4,
    shifts: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    reduction: str = "mean",
    normalize: str = "local",
    across: str = "local",
    process_group: distributed.ProcessGroup | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """MetricDepth's multi-range contrastive loss (Eq. 13) of ``features`` under ground truth ``depth``.

    A pair (anchor pixel, sample pixel) is positive when the depth differential is below ``r_p``, a negative
    of subgroup ``j`` when it falls in ``ranges[j]`` (hinge with ``margins[j]``), ignored otherwise or when
    either depth is invalid; samples are the feature map rolled by ``shifts``.

    Args:
        features: the feature map, floating ``B,C,H,W`` (``C >= 1``); the gradient flows into it.
        depth: the ground truth, ``B,1,H,W`` or ``B,H,W``, metres (``<= 0``, NaN or Inf is invalid); resized
            to the feature resolution with nearest-neighbour sampling.
        mask: optional bool map of ``depth``'s shape; ``False`` is invalid. Default ``None``.
        r_p: the positive threshold on the depth differential, > 0. Default 0.1.
        ranges: the negatives' subgroups, sorted non-overlapping ``(lo, hi)`` pairs with ``lo >= r_p``, at
            most 8. Default: the ``"nyu-lt"`` preset's.
        margins: one hinge margin ``>= 0`` per range. Default: the ``"nyu-lt"`` preset's.
        n_within: the number of within-image shifts drawn when ``shifts`` is not given. Default 10.
        n_across: the number of across-image shifts drawn. Default 4.
        shifts: ``N,3`` int64 (batch, row, column) roll shifts, on the CPU or the features' device; makes a
            call reproducible. Default ``None``: drawn by :func:`sample_shifts` from ``generator``.
        generator: the generator of the shifts when they are not given. Default ``None``: the global RNG.
        reduction: ``"mean"`` (default): the summed pair losses divided by the number of counted pairs (0
            when none is counted); ``"sum"``: Eq. 13; ``"none"``: the per-pixel sum over samples.
        normalize: ``"local"`` (default) or ``"global"`` (see below).
        across: ``"local"`` (default) or ``"global"`` (see below).
        process_group: the ``torch.distributed`` group; ``None`` (default): the default group if initialised.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The loss, a scalar (``"mean"``, ``"sum"``) or ``B,1,H,W`` (``"none"``), float32 (float64 for float64
        features).

    Raises:
        TypeError: non-floating features, non-floating depth, a non-bool mask, a bad ``generator``.
        ValueError: shapes that do not match, invalid ``r_p``/``ranges``/``margins``, bad ``shifts``, NaN/Inf
            features, a bad choice argument.
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.

    Under ``torch.distributed`` (an initialised default group, or ``process_group``):

    * Shifts not passed in are drawn on the group's first rank (from ``generator``, or torch's global RNG,
      there) and sent to every rank, so all ranks use the same shifts in a step whatever their seeds; every
      rank must call the loss, as every rank runs each DDP step.
    * ``normalize="global"`` divides by the number of counted pairs of the global batch (``"sum"``: sums the
      global batch), summed over the ranks, so every rank returns the global-batch loss and DDP's averaged
      gradients are those of one process holding the global batch. ``"local"`` divides by this rank's count.
    * ``across="global"`` draws the across-image samples from the global batch (the ranks' batches
      concatenated in rank order; ``s_k`` in ``[1, B_global - 1]``): the feature maps and depths of all ranks
      are gathered (autograd-aware: each rank's features receive the gradient of every pair they take part
      in, on any rank), and the kernel reads each sample from the gathered map at its shifted index, without
      rolled copies. Cost: the gathered map takes ``world_size`` times this rank's feature map (and depth) in
      memory and one all-gather of it per call; the backward produces the gradient of the whole gathered map
      and sums it over the ranks (an all-reduce of the same size; NCCL with equal batches: a
      reduce-scatter); the loss itself still costs what this rank's anchors cost. With ``"local"``, samples
      come from this rank's images only (none across images when it has one).

    Example:
        >>> import torch, depthmetric
        >>> features, depth = torch.randn(2, 8, 12, 16), 0.5 + 3 * torch.rand(2, 1, 12, 16)
        >>> depthmetric.multi_range_contrastive_loss(features, depth).shape
        torch.Size([])
    """
    _checks.floating("features", features)
    _checks.ndim("features", features, 4, "B,C,H,W")
    _checks.channels("features", features)
    r_p, range_list, margin_list = _check_config(r_p, ranges, margins, n_within, n_across, reduction)
    _check_distributed(normalize, across, process_group)
    depth = _prepare_depth(depth, mask, features)
    if shifts is not None:
        _check_shifts(shifts, features)
    group = distributed.active_group(process_group)
    # The checks go collective only when the call communicates anyway (every rank makes it then).
    communicates = shifts is None or normalize == "global" or across == "global"
    _checks.finite("features", features, group if communicates else None)
    B, _, H, W = features.shape
    window = (0, B)  # the anchors: this rank's images, first and count
    if across == "global" and group is not None:
        features, start = distributed.all_gather_batch(features, group, "features")
        depth, _ = distributed.all_gather_batch(depth, group, "depth")
        window, B = (start, B), features.shape[0]
    if shifts is None:
        shifts = _draw_shifts(B, H, W, n_within, n_across, generator, group, across)

    if _ext.use_kernel(backend, features.device):
        _autograd.check_untransformed("depthmetric.multi_range_contrastive_loss", (features, depth))
        lo, hi = [r[0] for r in range_list], [r[1] for r in range_list]
        loss, count, _ = torch.ops.depthmetric.multi_range_contrastive(
            features, depth, shifts.to(features.device), r_p, lo, hi, margin_list, *window
        )
    else:
        if shifts.device.type == "meta":
            raise ValueError("shifts on the meta device hold no values for the reference twin to roll by; pass "
                             "them on the CPU, or use the compiled op (backend='auto') for shape inference")
        loss, count = _reference.multi_range_contrastive(features, depth, shifts.cpu(), r_p, range_list,
                                                         margin_list, *window)

    if reduction == "none":
        return loss.unsqueeze(1)
    if reduction == "sum":
        return distributed.all_reduce_sum(loss.sum(), group) if normalize == "global" else loss.sum()
    return distributed.global_mean(loss.sum(), count.sum(), normalize, process_group)


class MultiRangeContrastiveLoss(nn.Module):
    """Drop-in module for MetricDepth's regularising loss ``L_re`` (Eq. 13), applied to the feature map
    before the prediction layer. Training loss (Eq. 14): ``L = L_depth + weight * L_re``.

    >>> import torch
    >>> from depthmetric import MultiRangeContrastiveLoss
    >>> features = torch.randn(2, 8, 12, 16, requires_grad=True)
    >>> depth = 0.5 + 3 * torch.rand(2, 1, 12, 16)
    >>> loss_fn = MultiRangeContrastiveLoss.preset("nyu-lt")
    >>> loss = loss_fn(features, depth)          # features B,C,H,W; depth B,1,H,W in metres
    >>> loss.shape
    torch.Size([])

    Args:
        r_p: the positive threshold on the depth differential, > 0. Default 0.1.
        ranges: the negatives' subgroups, sorted ``(lo, hi)`` pairs. Default: the ``"nyu-lt"`` preset's.
        margins: one hinge margin per range. Default: the ``"nyu-lt"`` preset's.
        n_within: the within-image shifts drawn per call. Default 10.
        n_across: the across-image shifts drawn per call. Default 4.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"``.
        across: ``"local"`` (default) or ``"global"``.
        process_group: the ``torch.distributed`` group; ``None`` (default): the default group if initialised.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(features, depth, mask=None, *, generator=None, shifts=None)``: what
        :func:`multi_range_contrastive_loss` returns.

    Raises:
        TypeError, ValueError: a bad argument, named (see :func:`multi_range_contrastive_loss`).
    """

    def __init__(
        self,
        r_p: float = 0.1,
        ranges: Sequence[tuple[float, float]] = PRESETS["nyu-lt"]["ranges"],
        margins: Sequence[float] = PRESETS["nyu-lt"]["margins"],
        n_within: int = 10,
        n_across: int = 4,
        reduction: str = "mean",
        normalize: str = "local",
        across: str = "local",
        process_group: distributed.ProcessGroup | None = None,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        self.r_p, self.ranges, self.margins = _check_config(r_p, ranges, margins, n_within, n_across, reduction)
        self.n_within, self.n_across, self.reduction = n_within, n_across, reduction
        _check_distributed(normalize, across, process_group)
        self.normalize, self.across, self.process_group = normalize, across, process_group
        _ext.check_backend(backend)
        self.backend = backend

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> "MultiRangeContrastiveLoss":
        """The module with the paper's settings.

        Args:
            name: ``nyu-lt``, ``nyu-bts``, ``nyu-newcrfs``, ``kitti-lt``, ``kitti-bts``, ``kitti-newcrfs``
                (Tables I, II) or ``uniform`` (Table VII's best: one range ``(0.5, inf)``, margin 4).
            **overrides: constructor arguments that replace the preset's.

        Returns:
            A new :class:`MultiRangeContrastiveLoss`.

        Raises:
            ValueError: an unknown preset.
        """
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def draw_shifts(self, features: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """The shifts this loss would draw for ``features`` from ``generator``, to pass as ``shifts=``.

        Drawn outside a ``torch.compile(fullgraph=True)`` region (Dynamo cannot trace a ``torch.Generator``),
        they keep a compiled step reproducible: the same seed gives the same loss as an eager call with
        ``generator=``. Under ``torch.distributed`` every rank must call it (the shifts are drawn on the first
        rank; with ``across="global"``, over the global batch).

        Args:
            features: the feature map, ``B,C,H,W``.
            generator: the generator to draw from; ``None`` (default): the global RNG.

        Returns:
            ``N,3`` int64 shifts on the CPU (or the generator's device), as :func:`sample_shifts`.
        """
        _checks.tensor("features", features)
        _checks.ndim("features", features, 4, "B,C,H,W")
        group = distributed.active_group(self.process_group)
        B, _, H, W = features.shape
        if self.across == "global" and group is not None:
            B = int(distributed.all_reduce_count(torch.tensor(B, device=features.device), group))
        return _draw_shifts(B, H, W, self.n_within, self.n_across, generator, group, self.across)

    def forward(self, features: torch.Tensor, depth: torch.Tensor, mask: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None, shifts: torch.Tensor | None = None) -> torch.Tensor:
        """The loss of ``features`` under ``depth``.

        Args:
            features: the feature map, floating ``B,C,H,W``.
            depth: the ground truth, ``B,1,H,W`` or ``B,H,W``, metres.
            mask: optional bool map of ``depth``'s shape; ``False`` is invalid. Default ``None``.
            generator: the generator of the shifts when they are not given. Default ``None``.
            shifts: ``N,3`` int64 shifts, e.g. from :meth:`draw_shifts`. Default ``None``: drawn.

        Returns:
            What :func:`multi_range_contrastive_loss` returns.
        """
        return multi_range_contrastive_loss(
            features, depth, mask, r_p=self.r_p, ranges=self.ranges, margins=self.margins, n_within=self.n_within,
            n_across=self.n_across, shifts=shifts, generator=generator, reduction=self.reduction,
            normalize=self.normalize, across=self.across, process_group=self.process_group, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"r_p={self.r_p}, ranges={self.ranges}, margins={self.margins}, n_within={self.n_within}, "
                f"n_across={self.n_across}, reduction={self.reduction!r}, normalize={self.normalize!r}, "
                f"across={self.across!r}, backend={self.backend!r}")


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    @torch.library.register_fake("depthmetric::multi_range_contrastive")
    def _(features: torch.Tensor, depth: torch.Tensor, shifts: torch.Tensor, r_p: float, range_lo: list[float],
          range_hi: list[float], margins: list[float], anchor_start: int = 0,
          anchor_count: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, _, H, W = features.shape
        A = B - anchor_start if anchor_count is None else anchor_count
        return (
            depth.new_empty((A, H, W)),
            depth.new_empty((A, H, W), dtype=torch.int32),
            depth.new_empty((shifts.shape[0], A, H, W)),
        )

    @torch.library.register_fake("depthmetric::_multi_range_contrastive_backward")
    def _(grad_loss: torch.Tensor, features: torch.Tensor, shifts: torch.Tensor, coef: torch.Tensor,
          anchor_start: int = 0) -> torch.Tensor:
        return torch.empty_like(features)

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, ...]) -> None:
        features, depth, shifts, r_p, range_lo, range_hi, margins = inputs[:7]
        ctx.anchor_start = inputs[7] if len(inputs) > 7 else 0
        ctx.rule = r_p, list(zip(range_lo, range_hi)), margins  # for the twin, under create_graph
        ctx.save_for_backward(features, shifts, output[2], depth)

    def backward(ctx: Any, grad_loss: torch.Tensor, grad_count: torch.Tensor | None,
                 grad_coef: torch.Tensor | None) -> tuple[Any, ...]:
        features, shifts, coef, depth = ctx.saved_tensors
        grad = None
        if ctx.needs_input_grad[0] and torch.is_grad_enabled():  # create_graph=True: differentiable again
            grad, = _autograd.reference_vjp(
                lambda f: _reference.multi_range_contrastive(f, depth, shifts.cpu(), ctx.rule[0], ctx.rule[1],
                                                             ctx.rule[2], ctx.anchor_start, grad_loss.shape[0])[0],
                (features,), grad_loss, [True])
        elif ctx.needs_input_grad[0]:
            grad = torch.ops.depthmetric._multi_range_contrastive_backward(grad_loss, features, shifts, coef,
                                                                            ctx.anchor_start)
        return grad, None, None, None, None, None, None, None, None

    torch.library.register_autograd(
        "depthmetric::multi_range_contrastive", backward, setup_context=setup_context
    )


if _ext.extension_loaded():
    _register_kernels()
