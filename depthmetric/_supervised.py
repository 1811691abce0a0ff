"""Input handling and numerics shared by the supervised losses (``silog``, ``depth_losses``), the metrics
and the reference twins: a validated prediction/target depth pair, the prediction resized to the target,
and a square root with a finite gradient at 0."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from . import _checks


def checked_pair(pred, target, mask=None, target_name: str = "target", group=None):
    """Validated ``pred`` and ``target`` as ``B,1,H,W`` (``B,H,W`` accepted), on one device, and the optional
    boolean ``mask``; NaN/Inf in ``pred`` raise (see ``depthmetric.set_finite_checks``; ``group``: the one the
    op communicates over, ``distributed.op_group``)."""
    _checks.floating("pred", pred)
    pred = _checks.depth_map("pred", pred)
    target = _checks.depth_map(target_name, target, batch=pred.shape[0])
    _checks.same_device(**{"pred": pred, target_name: target})
    mask = _checks.mask_map("mask", mask, target)
    _checks.finite("pred", pred, group)
    return pred, target, mask


def resized_prediction(pred, target, interpolate: bool, target_name: str = "target", dtype=None):
    """``pred`` resized to the target's size (bilinear, ``align_corners=True`` as ZoeDepth, computed in
    ``dtype``, default ``pred``'s) when the sizes differ and ``interpolate``; a ValueError when not."""
    _checks.flag("interpolate", interpolate)
    if pred.shape[-2:] == target.shape[-2:]:
        return pred
    if not interpolate:
        raise ValueError(f"pred has size {tuple(pred.shape[-2:])} but {target_name} has "
                         f"{tuple(target.shape[-2:])}; pass interpolate=True to resize the prediction")
    return F.interpolate(pred.to(dtype or pred.dtype), size=target.shape[-2:], mode="bilinear", align_corners=True)


def prepare_pair(pred, target, mask=None, interpolate: bool = True, group=None):
    """Shared input handling of the supervised losses.

    Returns ``pred``, ``target`` (``B,1,H,W``, accumulation dtype, ``pred`` resized to the target's size
    with bilinear ``align_corners=True`` when they differ and ``interpolate``) and ``valid`` (``B,1,H,W``
    bool: the target is a valid depth, the prediction is finite and ``mask`` is True). Invalid entries of
    both maps are replaced by 1, so any elementwise math on them is finite and their gradient is exactly 0.
    """
    pred, target, mask = checked_pair(pred, target, mask, group=group)
    acc = torch.promote_types(_checks.accumulate_dtype(pred.dtype), _checks.accumulate_dtype(target.dtype))
    pred = resized_prediction(pred.to(acc), target, interpolate)
    target = target.to(acc)
    valid = _checks.valid_depth(target) & (pred.abs() < math.inf)  # finite pred (NaN fails the comparison)
    if mask is not None:
        valid = valid & mask
    return torch.where(valid, pred, 1.0), torch.where(valid, target, 1.0), valid


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not Inf/NaN) where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, x, 1.0).sqrt() * positive
