"""Reference twin of ``depthmetric::order_statistics``: masked order statistics per region, by sorting each
region's values (the oracle, not the fast path)."""
from __future__ import annotations

import math

import torch

KEEP_RULES = {"drop": 0, "keep": 1}  # the kernel's keep_rule codes
STATS = ("median", "mad", "trimmed", "threshold")  # the slots of stats (B,R,4)
COUNTS = ("count", "median_index", "below", "equal", "sign_sum")  # the slots of counts (B,R,5)


def kept_count(n: int, trim: float, keep_rule: int) -> int:
    """How many of ``n`` values the trimmed sum keeps: ``n - floor(trim n)`` (rule 0, Depth Pro) or
    ``floor((1 - trim) n)`` (rule 1, MiDaS's ``int(len * (1 - trim))``), within [0, n]."""
    keep = n - math.floor(n * trim) if keep_rule == 0 else math.floor(n * (1.0 - trim))
    return min(max(keep, 0), n)


def region_members(valid: torch.Tensor, key: torch.Tensor, labels: torch.Tensor, boxes: torch.Tensor,
                   ranges: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """The ``B,R,H*W`` bool maps of the regions: valid, inside the box (clipped), ``lo <= key < hi`` and, for
    ``id >= 0``, ``labels == id`` (the twin materialises them; the kernels never do)."""
    B, H, W = valid.shape
    R = boxes.shape[1]
    rows = torch.arange(H, device=valid.device).view(1, 1, H, 1)
    cols = torch.arange(W, device=valid.device).view(1, 1, 1, W)
    y0, y1, x0, x1 = (boxes[..., k].view(B, R, 1, 1) for k in range(4))
    inside = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)
    k = key.double().unsqueeze(1)
    lo, hi = ranges[..., 0].view(B, R, 1, 1), ranges[..., 1].view(B, R, 1, 1)
    label_ok = (ids.view(B, R, 1, 1) < 0) | (labels.unsqueeze(1) == ids.view(B, R, 1, 1))
    return (valid.unsqueeze(1) & inside & (lo <= k) & (k < hi) & label_ok).flatten(2)


def order_statistics(values: torch.Tensor, valid: torch.Tensor, key: torch.Tensor, labels: torch.Tensor,
                     boxes: torch.Tensor, ranges: torch.Tensor, ids: torch.Tensor, trim: float, keep_rule: int,
                     with_median: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """``(stats, counts)`` of every region (b, r), as the kernel returns them (``B,R,4`` in the
    accumulation dtype, ``B,R,5`` int64; slots ``STATS`` and ``COUNTS``). The median is the lower middle
    element (sorted index ``(n - 1) // 2``) taken at the lowest flat index among equal values, so its
    gradient reaches that element; the MAD is ``mean |x - median|``; the trimmed sum is
    ``sum(x < thr) + (keep - below) * mean(x == thr)`` with ``thr`` the ``keep``-th smallest value (the tied
    values at the cut share its gradient equally). An empty region gives zeros and median index -1, and so
    do the median's slots (median, MAD, median index, sign sum) without ``with_median``."""
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    B, H, W = values.shape
    R = boxes.shape[1]
    member = region_members(valid, key, labels, boxes, ranges, ids)  # B,R,HW
    x = values.to(acc).reshape(B, 1, H * W).expand(B, R, H * W)
    n = member.sum(-1)
    zero = torch.zeros((), dtype=acc, device=values.device)
    # one padding column, so that the gathers of empty regions (and of 0 x 0 images) stay in bounds
    ordered = torch.where(member, x.detach(), math.inf).sort(dim=-1, stable=True).values
    ordered = torch.cat([ordered, ordered.new_zeros(B, R, 1)], -1)
    nth = lambda q: ordered.gather(-1, q.clamp(0, H * W).unsqueeze(-1)).squeeze(-1)  # noqa: E731
    med_value = torch.where(n > 0, nth((n - 1).div(2, rounding_mode="floor")), 0.0)
    hit = member & (x.detach() == med_value.unsqueeze(-1))
    pick = torch.cat([hit, hit.new_zeros(B, R, 1)], -1).to(torch.int8).argmax(-1)  # the first (lowest flat index) of the ties
    padded = torch.cat([x, x.new_zeros(B, R, 1)], -1)
    med = torch.where(n > 0, padded.gather(-1, pick.unsqueeze(-1)).squeeze(-1), zero)
    count = n.clamp(min=1).to(acc)
    mad = torch.where(member, (x - med.unsqueeze(-1)).abs(), zero).sum(-1) / count
    sign_sum = torch.where(member, torch.sign(x.detach() - med_value.unsqueeze(-1)), zero).sum(-1).to(torch.int64)
    if keep_rule == 0:
        keep = n - torch.floor(n.double() * trim).to(torch.int64)
    else:
        keep = torch.floor(n.double() * (1.0 - trim)).to(torch.int64)
    keep = torch.minimum(keep.clamp(min=0), n)
    thr = torch.where(keep > 0, nth(keep - 1), 0.0)
    below = member & (x.detach() < thr.unsqueeze(-1))
    at = member & (x.detach() == thr.unsqueeze(-1))
    n_below, n_at = below.sum(-1), at.sum(-1)
    tied = torch.where(at, x, zero).sum(-1) / n_at.clamp(min=1).to(acc)
    trimmed = torch.where(below, x, zero).sum(-1) + (keep - n_below).to(acc) * tied
    trimmed = torch.where(keep > 0, trimmed, zero)
    has = keep > 0
    if not with_median:
        med, mad, sign_sum, n_med = zero.expand(B, R), zero.expand(B, R), sign_sum * 0, n * 0
    else:
        n_med = n
    stats = torch.stack([med, mad, trimmed, thr.to(acc)], -1)
    counts = torch.stack([n, torch.where(n_med > 0, pick, -1), torch.where(has, n_below, 0), torch.where(has, n_at, 0),
                          torch.where(n > 0, sign_sum, 0)], -1)
    return stats, counts
