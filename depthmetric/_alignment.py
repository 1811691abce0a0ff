"""Per-image alignment of a prediction to a target, shared by the supervised losses (one home each):
MiDaS's least-squares scale and shift, and the median/MAD normalisation (MiDaS's ssitrim, Depth Pro's
non-metric data, Video Depth Anything)."""
from __future__ import annotations

import torch

from . import order_statistics

ALIGNS = ("none", "median_mad", "least_squares")
MEDIAN_OVER = ("valid", "all")
MAD_FLOOR = 1e-6  # MiDaS's and Video Depth Anything's clamp of the scale


def least_squares_fit(pred: torch.Tensor, target: torch.Tensor,
                      valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per image (``B,1,H,W``), the least-squares ``s, t`` minimising ``sum (s * pred + t - target)^2`` over
    the valid pixels, computed from centred sums; when the valid predictions are (numerically) constant,
    ``s = 0`` and ``t`` = the mean target. Returns ``s, t, count`` (``B``), differentiable in ``pred``."""
    dims = (1, 2, 3)
    m = valid.to(pred.dtype)
    count = m.sum(dims)
    n = count.clamp(min=1)
    p0, g0 = pred * m, target * m
    p_mean, g_mean = p0.sum(dims) / n, g0.sum(dims) / n
    pc = (pred - p_mean.view(-1, 1, 1, 1)) * m
    gc = (target - g_mean.view(-1, 1, 1, 1)) * m
    var, cov = pc.pow(2).sum(dims), (pc * gc).sum(dims)
    # Rounding leaves |pred - mean| ~ eps * |pred| for constant pred: treat such a spread as none.
    tiny = (64 * torch.finfo(pred.dtype).eps) ** 2
    determined = var > tiny * p0.pow(2).sum(dims)
    s = torch.where(determined, cov / torch.where(determined, var, 1.0), 0.0)
    return s, g_mean - s * p_mean, count


def median_mad_normalize(x: torch.Tensor, valid: torch.Tensor, backend: str,
                         median_over: str = "valid") -> torch.Tensor:
    """``(x - median) / max(s, 1e-6)`` per image (``B,1,H,W``), ``s = mean over the valid pixels of
    |x - median|``. ``median_over="valid"``: the median of the valid pixels (MiDaS's paper); ``"all"``: of
    every pixel with the invalid ones as zeros (Video Depth Anything's ``median(mask * x)``). The median
    carries torch.median's gradient (to the one element it selects). An image without valid pixels gets
    median 0."""
    B, _, H, W = x.shape
    ok = valid[:, 0]
    if median_over == "all":
        values, region = torch.where(ok, x[:, 0], 0.0), torch.ones_like(ok)
    else:
        values, region = x[:, 0], ok
    med, _ = order_statistics.image_median(values, region, backend)
    med = med.view(B, 1, 1, 1)
    n = ok.sum((1, 2)).clamp(min=1).to(x.dtype).view(B, 1, 1, 1)
    s = (torch.where(valid, (x - med).abs(), 0.0).sum((2, 3), keepdim=True) / n).clamp(min=MAD_FLOOR)
    return (x - med) / s


def align_pair(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, align: str,
               backend: str) -> tuple[torch.Tensor, torch.Tensor]:
    """``pred, target`` after ``align``: ``"none"``; ``"median_mad"`` (both maps normalised by their own
    median and MAD over the valid pixels, Depth Pro's non-metric data); ``"least_squares"`` (the prediction
    mapped by MiDaS's per-image scale and shift onto the target)."""
    if align == "median_mad":
        return median_mad_normalize(pred, valid, backend), median_mad_normalize(target, valid, backend)
    if align == "least_squares":
        s, t, _ = least_squares_fit(pred, target, valid)
        return s.view(-1, 1, 1, 1) * pred + t.view(-1, 1, 1, 1), target
    return pred, target
