"""ZoeDepth's gradient loss ``GradL1Loss`` (``zoedepth/trainers/loss.py``): the L1 distance of the depth maps'
squared gradient magnitudes plus the L1 distance of their gradient angles.

Vectorised PyTorch, no compiled kernel: two shifted differences, an ``atan`` and two masked means, which
PyTorch runs at memory speed. ``backend`` is accepted for a uniform API and only checked.
"""
from __future__ import annotations

import torch

from . import _checks, _ext, distributed
from ._supervised import PairLoss, prepare_pair

__all__ = ["grad_l1_loss", "GradL1Loss"]

ANGLE_EPS = 1e-10  # ZoeDepth's: added to the x difference before the division


def _gradient(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ZoeDepth's ``grad``: backward differences at pixel ``(i, j)``, ``i, j >= 1``: ``dx = x[i,j] - x[i,j-1]``,
    ``dy = x[i,j] - x[i-1,j]``; returns ``dx^2 + dy^2`` and ``atan(dy / (dx + 1e-10))``."""
    dx = x[..., 1:, 1:] - x[..., 1:, :-1]
    dy = x[..., 1:, 1:] - x[..., :-1, 1:]
    return dx.pow(2) + dy.pow(2), torch.atan(dy / (dx + ANGLE_EPS))


def grad_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
                 reduction: str = "mean", interpolate: bool = True, normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> torch.Tensor:
    """ZoeDepth's ``GradL1Loss``: ``mean |m_pred - m_target| + mean |a_pred - a_target|``.

    ``pred``, ``target``: ``B,1,H,W`` or ``B,H,W`` depth. At every pixel ``(i, j)`` with ``i, j >= 1``, from the
    backward differences ``dx = x[i,j] - x[i,j-1]`` and ``dy = x[i,j] - x[i-1,j]``: ``m = dx^2 + dy^2`` (the
    *squared* magnitude, as ZoeDepth computes it) and ``a = atan(dy / (dx + 1e-10))`` (ZoeDepth's angle: a
    slope angle in ``(-pi/2, pi/2)``, not ``atan2``). A pixel counts when it and its left and upper
    neighbours are valid (ZoeDepth's ``grad_mask``: ``mask[1:,1:] & mask[1:,:-1] & mask[:-1,1:]``), both means
    run over those pixels of the whole batch (ZoeDepth indexes ``[mask_g]`` over the batch), and the two
    means are added with weight 1 each.

    Validity: ZoeDepth takes the mask as given (its trainers pass ``min_depth < target < max_depth``); here a
    pixel is valid when the target is a valid depth (finite, > 0) and ``mask`` (optional, bool) is True, so
    ``mask=None`` uses every valid target. With no counted pixel (or ``H, W < 2``) the loss is 0 with a zero
    gradient (ZoeDepth's ``l1_loss`` of empty tensors gives NaN). NaN/Inf predictions raise (see
    ``depthmetric.set_finite_checks``). A prediction of another size is resized to the target's (bilinear,
    ``align_corners=True``, as ZoeDepth) when ``interpolate``. Returns float32 (float64 for float64 inputs);
    ``reduction="none"`` gives the ``B`` per-image losses, each over its own image's pixels, ``"sum"`` their sum.

    Under ``torch.distributed``, ``normalize="global"`` pools the counted pixels of the global batch (both
    sums and the count summed over the ranks of ``process_group``, see ``depthmetric.distributed``).

    Args:
        pred: predicted depth, ``B,1,H,W`` or ``B,H,W``, floating.
        target: ground-truth depth, same layout; NaN, Inf and values ``<= 0`` are invalid pixels.
        mask: optional bool mask of the target's shape; False pixels are left out.
        reduction: ``"mean"`` (pooled over the batch) or ``"none"`` (``B`` per-image losses).
        interpolate: resize a prediction of another size to the target's.
        normalize: ``"local"`` (this rank's pixels) or ``"global"`` (the global batch's).
        process_group: the group of ``normalize="global"`` (default: the whole world).
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"`` (see :data:`depthmetric.BACKENDS`);
            accepted for a uniform API and checked against the inputs' device: this loss is vectorised
            PyTorch either way.

    Returns:
        A scalar tensor, or ``B`` values with ``reduction="none"``.

    Raises:
        ValueError: an unknown ``reduction`` or ``normalize``; NaN/Inf in ``pred``.
    """
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    distributed.check_normalize(normalize, process_group)
    group = distributed.op_group(normalize, process_group)
    pred, target, valid = prepare_pair(pred, target, mask, interpolate, group)
    _ext.check_backend(backend, pred.device)
    mag_p, ang_p = _gradient(pred)
    mag_t, ang_t = _gradient(target)
    counted = valid[..., 1:, 1:] & valid[..., 1:, :-1] & valid[..., :-1, 1:]
    err = torch.where(counted, (mag_p - mag_t).abs() + (ang_p - ang_t).abs(), 0.0)
    if reduction != "mean":
        per_image = err.sum((1, 2, 3)) / counted.sum((1, 2, 3)).clamp(min=1).to(err.dtype)
        return per_image if reduction == "none" else per_image.sum()
    return distributed.global_mean(err.sum(), counted.sum(), normalize, process_group)


class GradL1Loss(PairLoss):
    """Drop-in module for ZoeDepth's ``GradL1Loss``: ``GradL1Loss()(pred, target, mask)``; see
    :func:`grad_l1_loss`.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default): this rank's pixels; ``"global"``: the global batch's under
            ``torch.distributed`` (see :mod:`depthmetric.distributed`).
        process_group: the group of ``normalize="global"``; ``None`` (default): the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`grad_l1_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(grad_l1_loss)

    def __init__(self, reduction: str = "mean", normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> None:
        super().__init__(reduction=reduction, normalize=normalize, process_group=process_group, backend=backend)
