"""Edge-aware disparity smoothness (SPIdepth Eq. 3; Monodepth2's ``get_smooth_loss``).

Plain vectorised PyTorch: a handful of elementwise ops and two means over images that the training loop
already holds, so a fused kernel would save little; autograd gives the backward.
"""
from __future__ import annotations

import torch
from torch import nn

from . import _checks

__all__ = ["edge_aware_smoothness", "EdgeAwareSmoothnessLoss"]

# Monodepth2 normalises with ``disp / (disp.mean(2, True).mean(3, True) + 1e-7)``; kept for its numbers
# (a mean <= 0, which would divide by ~0 or flip the sign, is an error).
_MEAN_EPS = 1e-7


def edge_aware_smoothness(disp: torch.Tensor, image: torch.Tensor, *, reduction: str = "mean") -> torch.Tensor:
    """``mean(|dx d*| exp(-mean_c |dx I|)) + mean(|dy d*| exp(-mean_c |dy I|))`` with ``d* = d / mean(d)``.

    ``disp`` is ``B,1,H,W`` (or ``B,H,W``) disparity, ``image`` the ``B,C,H,W`` colour image at the same
    resolution. The mean of ``d`` is taken per image over ``H,W`` (plus 1e-7, as Monodepth2 does); ``dx``
    and ``dy`` are forward differences, so the two means run over ``B*H*(W-1)`` and ``B*(H-1)*W`` values.
    The image only weights the loss (its gradient still flows if it requires grad, as in Monodepth2). A
    disparity whose mean is not > 0 in some image raises a ``ValueError`` (the loss divides by it).
    Returns a scalar (0 for an empty batch), float32 for 16/32-bit input and float64 for float64 input;
    ``reduction="none"`` gives the ``B`` per-image losses (the same two means over each image's own
    differences; their mean is the batch's loss) and ``"sum"`` their sum. NaN/Inf in either input raise a
    ``ValueError`` (see ``depthmetric.set_finite_checks``).

    Args:
        disp: the disparity, floating ``B,1,H,W`` or ``B,H,W`` with ``H, W >= 2`` and a positive mean per
            image.
        image: the colour image that weights the loss, floating ``B,C,H,W`` at the disparity's resolution.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (the ``B`` per-image losses).

    Returns:
        A scalar (0 for an empty batch) or the ``B`` per-image losses, float32 (float64 for float64 input).

    Raises:
        TypeError: a non-tensor or non-floating input.
        ValueError: shapes or devices that do not match, a disparity smaller than 2x2 or with a mean <= 0,
            NaN/Inf values, a bad ``reduction``.
    """
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    _checks.image("image", image)
    _checks.floating("disp", disp)
    disp = _checks.depth_map("disp", disp, batch=image.shape[0])
    _checks.same_device(disp=disp, image=image)
    _checks.image_sized("disp", disp, image)
    if disp.shape[2] < 2 or disp.shape[3] < 2:
        raise ValueError(f"disp must be at least 2x2 to have both gradients, got shape {tuple(disp.shape)}")
    _checks.check_values({"disp": disp, "image": image})  # a NaN/Inf would turn the loss NaN
    dtype = _checks.accumulate_dtype(torch.promote_types(disp.dtype, image.dtype))
    d = disp.to(dtype)
    img = image.to(dtype)
    mean = _checks.positive_per_image("disp", d.mean(dim=(2, 3), keepdim=True), "mean per image")
    d = d / (mean + _MEAN_EPS)
    weight_x = torch.exp(-(img[..., :, 1:] - img[..., :, :-1]).abs().mean(1, keepdim=True))
    weight_y = torch.exp(-(img[..., 1:, :] - img[..., :-1, :]).abs().mean(1, keepdim=True))
    terms_x = (d[..., :, 1:] - d[..., :, :-1]).abs() * weight_x
    terms_y = (d[..., 1:, :] - d[..., :-1, :]).abs() * weight_y
    if reduction == "mean":
        return _checks.mean(terms_x) + _checks.mean(terms_y)
    per_image = terms_x.mean((1, 2, 3)) + terms_y.mean((1, 2, 3))
    return per_image if reduction == "none" else per_image.sum()


class EdgeAwareSmoothnessLoss(nn.Module):
    """:func:`edge_aware_smoothness` as a module (Monodepth2's ``get_smooth_loss``): ``(disp, image) -> loss``.

    Args:
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.

    Returns:
        Called as ``loss_fn(disp, image)``: what :func:`edge_aware_smoothness` returns.

    Raises:
        ValueError: a bad ``reduction``.
    """

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)

    def forward(self, disp: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        """The smoothness of ``disp`` weighted by the edges of ``image``.

        Args:
            disp: the disparity, ``B,1,H,W`` or ``B,H,W``.
            image: the colour image, ``B,C,H,W`` at the disparity's resolution.

        Returns:
            What :func:`edge_aware_smoothness` returns.
        """
        return edge_aware_smoothness(disp, image, reduction=self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"
