"""Input handling and numerics shared by the supervised losses (``silog``, ``depth_losses``), the metrics
and the reference twins: a validated prediction/target depth pair, the prediction resized to the target,
a square root with a finite gradient at 0, and the module form of a loss of a prediction and a target."""
from __future__ import annotations

import math
from typing import Any, Callable, ClassVar

import torch
import torch.nn as nn
import torch.nn.functional as F

from . import _checks, _ext, distributed


def checked_pair(pred: object, target: object, mask: object = None, target_name: str = "target",
                 group: distributed.ProcessGroup | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Validated ``pred`` and ``target`` as ``B,1,H,W`` (``B,H,W`` accepted), on one device, and the optional
    boolean ``mask``; NaN/Inf in ``pred`` raise (see ``depthmetric.set_finite_checks``; ``group``: the one the
    op communicates over, ``distributed.op_group``)."""
    _checks.floating("pred", pred)
    pred_map = _checks.depth_map("pred", pred)
    target_map = _checks.depth_map(target_name, target, batch=pred_map.shape[0])
    _checks.same_device(**{"pred": pred_map, target_name: target_map})
    mask_map = _checks.mask_map("mask", mask, target_map)
    _checks.finite("pred", pred_map, group)
    return pred_map, target_map, mask_map


def resized_prediction(pred: torch.Tensor, target: torch.Tensor, interpolate: bool, target_name: str = "target",
                       dtype: torch.dtype | None = None) -> torch.Tensor:
    """``pred`` resized to the target's size (bilinear, ``align_corners=True`` as ZoeDepth, computed in
    ``dtype``, default ``pred``'s) when the sizes differ and ``interpolate``; a ValueError when not."""
    _checks.flag("interpolate", interpolate)
    if pred.shape[-2:] == target.shape[-2:]:
        return pred
    if not interpolate:
        raise ValueError(f"pred has size {tuple(pred.shape[-2:])} but {target_name} has "
                         f"{tuple(target.shape[-2:])}; pass interpolate=True to resize the prediction")
    return F.interpolate(pred.to(dtype or pred.dtype), size=target.shape[-2:], mode="bilinear", align_corners=True)


def prepare_pair(pred: object, target: object, mask: object = None, interpolate: bool = True,
                 group: distributed.ProcessGroup | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Shared input handling of the supervised losses.

    Returns ``pred``, ``target`` (``B,1,H,W``, accumulation dtype, ``pred`` resized to the target's size
    with bilinear ``align_corners=True`` when they differ and ``interpolate``) and ``valid`` (``B,1,H,W``
    bool: the target is a valid depth, the prediction is finite and ``mask`` is True). Invalid entries of
    both maps are replaced by 1, so any elementwise math on them is finite and their gradient is exactly 0.
    """
    p, t, m = checked_pair(pred, target, mask, group=group)
    acc = torch.promote_types(_checks.accumulate_dtype(p.dtype), _checks.accumulate_dtype(t.dtype))
    p = resized_prediction(p.to(acc), t, interpolate)
    t = t.to(acc)
    valid = _checks.valid_depth(t) & (p.abs() < math.inf)  # finite p (NaN fails the comparison)
    if m is not None:
        valid = valid & m
    return torch.where(valid, p, 1.0), torch.where(valid, t, 1.0), valid


def safe_sqrt(x: torch.Tensor) -> torch.Tensor:
    """``sqrt(max(x, 0))`` whose gradient is 0 (not Inf/NaN) where ``x <= 0``."""
    positive = x > 0
    return torch.where(positive, x, 1.0).sqrt() * positive


class LossModule(nn.Module):
    """The module form of a loss function: a subclass names its function (``loss_fn = staticmethod(fn)``),
    checks its own options and passes them all, as the function's keyword arguments, to ``super().__init__``;
    the options every loss shares (``reduction``, ``normalize`` with ``process_group``, ``backend``) are
    checked here. Subclasses define ``forward`` for their inputs."""

    loss_fn: ClassVar[Callable[..., torch.Tensor]]

    def __init__(self, **options: Any) -> None:
        super().__init__()
        if "reduction" in options:
            _checks.choice("reduction", options["reduction"], _checks.REDUCTIONS)
        if "normalize" in options:
            distributed.check_normalize(options["normalize"], options.get("process_group"))
        if "backend" in options:
            _ext.check_backend(options["backend"])
        self.options = options

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v!r}" for k, v in self.options.items() if k != "process_group")


class PairLoss(LossModule):
    """The module form of a loss function ``fn(pred, target, mask=None, *, interpolate=True, **options)``."""

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None,
                interpolate: bool = True) -> torch.Tensor:
        """The loss of ``pred`` against ``target``, with the module's options.

        Args:
            pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``.
            target: the ground-truth depth, ``B,1,H,W`` or ``B,H,W`` (valid where finite and > 0).
            mask: optional bool map of the target's shape; ``False`` excludes a pixel. Default ``None``.
            interpolate: resize a prediction of another size to the target's. Default True.

        Returns:
            What the module's function (named in the class docstring) returns with these options.
        """
        return self.loss_fn(pred, target, mask, interpolate=interpolate, **self.options)
