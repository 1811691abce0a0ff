"""Reference twin of ``depthmetric::bin_expectation``: AdaBins/SQLdepth's bin head written plainly
(interpolate the centres, softmax over the bins, sum of probabilities times centres)."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def resample_centers(centers: torch.Tensor, H: int, W: int) -> torch.Tensor:
    """``B,K,h,w`` centres at ``H,W``: as they are when ``h,w == H,W``, else ``F.interpolate`` bilinear with
    ``align_corners=True`` (a ``1,1`` source is copied to every pixel)."""
    B, K, h, w = centers.shape
    if (h, w) == (H, W):
        return centers
    if B * K * H * W == 0:  # interpolate refuses an empty output; nothing is read
        return centers[:, :, :1, :1].expand(B, K, H, W)
    return F.interpolate(centers, size=(H, W), mode="bilinear", align_corners=True)


def expectation(y: torch.Tensor, centers: torch.Tensor, out_dtype: torch.dtype,
                return_probs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """depth = sum_k softmax_k(y) c_k (``y`` ``B,K,H,W`` logits in the accumulation dtype, ``centers``
    ``B,K,h,w``) and the probabilities (detached; empty unless asked for)."""
    B, K, H, W = y.shape
    c = resample_centers(centers.to(y.dtype), H, W)
    probs = torch.softmax(y, 1)
    depth = (probs * c).sum(1, keepdim=True)
    probs = probs.detach().to(out_dtype) if return_probs else y.new_empty(0, dtype=out_dtype)
    return depth.to(out_dtype), probs


def bin_expectation(logits: torch.Tensor, centers: torch.Tensor, temperature: torch.Tensor,
                    return_probs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(depth B,1,H,W, probs B,K,H,W or empty)`` of ``softmax(logits / temperature)`` over dim 1 (``logits``
    ``B,K,H,W``, ``centers`` ``B,K,h,w``, ``temperature`` ``B,1,H,W`` in the accumulation dtype)."""
    acc = accumulate_dtype(logits.dtype)
    return expectation(logits.to(acc) / temperature.to(acc), centers, logits.dtype, return_probs)
