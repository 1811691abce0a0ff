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


def region_members(valid, key, labels, box, lo, hi, label_id, H, W) -> torch.Tensor:
    """The ``H,W`` bool map of one region of one image: valid, inside the box (clipped), ``lo <= key < hi``
    and, for ``label_id >= 0``, ``labels == label_id``."""
    y0, y1, x0, x1 = (min(max(int(v), 0), lim) for v, lim in zip(box, (H, H, W, W)))
    inside = torch.zeros(H, W, dtype=torch.bool, device=valid.device)
    inside[y0:y1, x0:x1] = True
    k = key.double()
    member = valid & inside & (lo <= k) & (k < hi)
    if label_id >= 0:
        member = member & (labels == label_id)
    return member


def order_statistics(values, valid, key, labels, boxes, ranges, ids, trim: float, keep_rule: int):
    """``(stats, counts)`` of every region (b, r), as the kernel returns them (``B,R,4`` in the
    accumulation dtype, ``B,R,5`` int64; slots ``STATS`` and ``COUNTS``). The median is the lower middle
    element (sorted index ``(n - 1) // 2``) taken at the lowest flat index among equal values, so its
    gradient reaches that element; the MAD is ``mean |x - median|``; the trimmed sum is
    ``sum(x < thr) + (keep - below) * mean(x == thr)`` with ``thr`` the ``keep``-th smallest value (the tied
    values at the cut share its gradient equally)."""
    acc = torch.float64 if values.dtype == torch.float64 else torch.float32
    B, H, W = values.shape
    R = boxes.shape[1]
    x = values.to(acc)
    stats_rows, count_rows = [], []
    for b in range(B):
        for r in range(R):
            lo, hi = (float(v) for v in ranges[b, r])
            member = region_members(valid[b], key[b], labels[b], boxes[b, r].tolist(), lo, hi, int(ids[b, r]), H, W)
            flat = member.flatten().nonzero().flatten()
            v = x[b].flatten()[flat]
            n = v.numel()
            zero = x.sum() * 0  # zeros that carry a (zero) gradient
            if n == 0:
                stats_rows.append(torch.stack([zero] * 4))
                count_rows.append(torch.tensor([0, -1, 0, 0, 0], dtype=torch.int64))
                continue
            ordered = v.detach().sort(stable=True).values
            med_value = ordered[(n - 1) // 2]
            pick = int((v.detach() == med_value).nonzero()[0])
            med = v[pick]
            mad = (v - med).abs().mean()
            sign_sum = int(torch.sign(v.detach() - med_value).sum())
            keep = kept_count(n, trim, keep_rule)
            if keep:
                thr = ordered[keep - 1]
                below, at = v.detach() < thr, v.detach() == thr
                trimmed = v[below].sum() + (keep - int(below.sum())) * v[at].mean()
                row = [int(below.sum()), int(at.sum())]
            else:
                thr, trimmed, row = zero.detach(), zero, [0, 0]
            stats_rows.append(torch.stack([med, mad, trimmed, thr.to(acc) + zero.detach()]))
            count_rows.append(torch.tensor([n, int(flat[pick]), *row, sign_sum], dtype=torch.int64))
    stats = torch.stack(stats_rows).reshape(B, R, 4) if stats_rows else x.new_zeros(B, R, 4)
    counts = torch.stack(count_rows).reshape(B, R, 5) if count_rows else torch.zeros(B, R, 5, dtype=torch.int64)
    return stats, counts.to(values.device)
