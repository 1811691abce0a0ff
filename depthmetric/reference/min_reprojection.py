"""Reference twin of ``depthmetric::min_reprojection``: Monodepth2's ``compute_losses`` written plainly."""
from __future__ import annotations

import torch

from .ssim import photometric_error


def min_reprojection(
    target: torch.Tensor,
    warped: list[torch.Tensor],
    sources: list[torch.Tensor],
    noise: torch.Tensor,
    alpha: float,
    mean_sources: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-pixel loss (``B,H,W``, accumulation dtype) and winner index (``B,H,W`` int64).

    Candidates in order: ``pe(warped[s], target)`` for s < S, then (auto-masking, ``sources`` non-empty)
    ``pe(sources[s], target) + noise[s]``; the first minimum wins (``torch.argmin``). With ``mean_sources``
    the warped average competes with the identity average (Monodepth2's ``avg_reprojection``), winner 0 or S.
    Only the warped images get gradients: target and sources are detached, as in Monodepth2 no network
    produced them.
    """
    S = len(warped)
    target = target.detach()
    pe_w = torch.cat([photometric_error(w, target, alpha) for w in warped], 1)  # B,S,H,W
    pe_id = None
    if sources:
        pe_id = torch.cat([photometric_error(s.detach(), target, alpha) for s in sources], 1)
        pe_id = pe_id + noise.to(pe_id.dtype).transpose(0, 1)
    if mean_sources:
        means = [pe_w.mean(1, keepdim=True)] + ([pe_id.mean(1, keepdim=True)] if pe_id is not None else [])
        averaged = torch.cat(means, 1)
        idx = averaged.argmin(1, keepdim=True)
        return averaged.gather(1, idx)[:, 0], idx[:, 0] * S
    combined = pe_w if pe_id is None else torch.cat([pe_w, pe_id], 1)
    idx = combined.argmin(1, keepdim=True)
    return combined.gather(1, idx)[:, 0], idx[:, 0]
