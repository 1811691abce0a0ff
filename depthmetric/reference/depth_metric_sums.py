"""Reference twin of ``depthmetric::depth_metric_sums``: the per-image sums of the evaluation metrics,
vectorised PyTorch (one tensor per term)."""
from __future__ import annotations

import torch

from .._checks import accumulate_dtype, valid_depth

# Columns of the B,10 output, in the kernel's order (csrc/depth_metric_sums/metric_math.h).
SUMS = ("count", "abs_rel", "sq_rel", "sq_err", "log_err", "log_err_sq", "abs_log_err", "delta1", "delta2",
        "delta3")


def in_range(gt: torch.Tensor, min_depth: float, max_depth: float, closed: bool) -> torch.Tensor:
    """The evaluated depths: ``min_depth < gt < max_depth``, strictly as Monodepth2, BTS and ZoeDepth
    count them (a NYU depth capped at exactly 10 m is left out), or the closed interval."""
    if closed:
        return (gt >= min_depth) & (gt <= max_depth)
    return (gt > min_depth) & (gt < max_depth)


def depth_metric_sums(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor | None,
    scale: torch.Tensor | None,
    min_depth: float,
    max_depth: float,
    window: tuple[int, int, int, int],
    closed: bool = False,
) -> torch.Tensor:
    """``B,10`` float64 sums over the counted pixels of each image (columns :data:`SUMS`).

    ``pred``, ``gt``: ``B,1,H,W`` of one float dtype; per-pixel math runs in its accumulation dtype.
    A pixel inside ``window = (row0, row1, col0, col1)`` counts when ``gt`` is finite, ``> 0`` and in
    ``(min_depth, max_depth)`` (``[min_depth, max_depth]`` when ``closed``; see :func:`in_range`), ``mask``
    (``B,1,H,W`` bool, optional) is True, and the prediction, multiplied by ``scale`` (``B`` float64,
    optional) and clamped to ``[min_depth, max_depth]``, is finite and ``> 0``.
    """
    acc = accumulate_dtype(pred.dtype)
    r0, r1, c0, c1 = window
    p = pred[:, 0, r0:r1, c0:c1].to(acc)
    g = gt[:, 0, r0:r1, c0:c1].to(acc)
    valid = valid_depth(g) & in_range(g, min_depth, max_depth, closed)
    if mask is not None:
        valid &= mask[:, 0, r0:r1, c0:c1]
    if scale is not None:
        p = p * scale.to(acc).view(-1, 1, 1)
    p = p.clamp(min_depth, max_depth)
    valid &= valid_depth(p)
    p, g = torch.where(valid, p, 1.0), torch.where(valid, g, 1.0)  # counted terms of the others are 0
    d = p - g
    err = torch.log(p) - torch.log(g)
    ratio = torch.maximum(g / p, p / g)
    terms = [valid, d.abs() / g, d * d / g, d * d, err, err * err, err.abs(),
             valid & (ratio < 1.25), valid & (ratio < 1.25 ** 2), valid & (ratio < 1.25 ** 3)]
    return torch.stack([t.sum((1, 2), dtype=torch.float64) for t in terms], dim=1)
