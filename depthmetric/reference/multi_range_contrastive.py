"""Reference twin of ``depthmetric::multi_range_contrastive``: MetricDepth's loss with materialised rolls."""
from __future__ import annotations

import torch

from .._checks import valid_depth
from .._supervised import safe_sqrt  # sqrt with a zero (not NaN) gradient at 0


def multi_range_contrastive(
    features: torch.Tensor,
    depth: torch.Tensor,
    shifts: torch.Tensor,
    r_p: float,
    ranges: list[tuple[float, float]],
    margins: list[float],
    anchor_start: int = 0,
    anchor_count: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel loss summed over samples (``A,H,W``, accumulation dtype) and counted pairs (``A,H,W`` int32)
    of the anchor images ``anchor_start .. anchor_start + A - 1`` (default: all ``B``).

    ``features`` is ``B,C,H,W``; ``depth`` is ``B,H,W`` in the accumulation dtype with invalid pixels
    ``<= 0``/NaN/Inf; ``shifts`` is ``N,3`` int64 of (batch, row, column) shifts, each applied as
    ``torch.roll`` to both features and depth (over all ``B`` images).
    """
    acc = depth.dtype
    anchors = slice(anchor_start, depth.shape[0] if anchor_count is None else anchor_start + anchor_count)
    f = features.to(acc)
    valid = valid_depth(depth)
    # Zero, but a function of the features: with no counted pair the loss still has a (zero) gradient.
    loss = 0.0 * f[anchors].sum(1)
    count = torch.zeros(loss.shape, dtype=torch.int32, device=depth.device)
    for sb, sh, sw in shifts.tolist():
        f_s = torch.roll(f, (sb, sh, sw), dims=(0, 2, 3))[anchors]
        d_s = torch.roll(depth, (sb, sh, sw), dims=(0, 1, 2))[anchors]
        pair_valid = valid[anchors] & torch.roll(valid, (sb, sh, sw), dims=(0, 1, 2))[anchors]
        dist = safe_sqrt((f[anchors] - f_s).pow(2).sum(1))
        dr = (depth[anchors] - d_s).abs()
        positive = pair_valid & (dr < r_p)
        loss = loss + torch.where(positive, dist, 0.0)
        count += positive
        for (lo, hi), margin in zip(ranges, margins):
            negative = pair_valid & (dr > lo) & (dr <= hi)
            loss = loss + torch.where(negative, torch.relu(margin - dist), 0.0)
            count += negative
    return loss, count
