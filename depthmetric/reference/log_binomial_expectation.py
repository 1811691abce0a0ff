"""Reference twin of ``depthmetric::log_binomial_expectation``: ZoeDepth's ``LogBinomial`` (Stirling
``log_binom``, clamped logs of ``p`` and ``1 - p``, divided by the temperature) followed by the softmax
expectation over the centres, written plainly."""
from __future__ import annotations

import torch

from .bin_expectation import accumulate_dtype, expectation


def log_binomial_table(K: int, dtype: torch.dtype, device: torch.device | str | None) -> torch.Tensor:
    """ZoeDepth's ``log_binom(K-1, k)`` for ``k < K`` (``n' = n + 1e-7``, ``k' = k + 1e-7``), in float64."""
    eps = 1e-7
    n = torch.full((K,), K - 1.0, dtype=torch.float64, device=device) + eps
    k = torch.arange(K, dtype=torch.float64, device=device) + eps
    return (n * torch.log(n) - k * torch.log(k) - (n - k) * torch.log(n - k + eps)).to(dtype)


def clamp_inclusive(x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
    """``torch.clamp(x, lo, hi)`` whose gradient passes where ``lo <= x <= hi``, the bounds included, as
    ``torch.clamp``'s does up to torch 2.13 (torch 2.14's blocks it at ``x == lo`` and ``x == hi``): written
    out, so that the twin does not change with the installed torch."""
    return torch.where((x >= lo) & (x <= hi), x, torch.clamp(x, lo, hi).detach())


def log_binomial_logits(p: torch.Tensor, t: torch.Tensor, K: int, eps: float) -> torch.Tensor:
    """``B,K,H,W`` logits of ZoeDepth's ``LogBinomial`` for ``p`` and ``t`` (``B,1,H,W``), in ``p``'s dtype."""
    lb = log_binomial_table(K, p.dtype, p.device).view(1, K, 1, 1)
    k = torch.arange(K, dtype=p.dtype, device=p.device).view(1, K, 1, 1)
    one_minus_p = clamp_inclusive(1 - p, eps, 1)
    p = clamp_inclusive(p, eps, 1)
    return (lb + k * torch.log(p) + (K - 1 - k) * torch.log(one_minus_p)) / t


def log_binomial_expectation(p: torch.Tensor, t: torch.Tensor, centers: torch.Tensor, eps: float,
                             return_probs: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(depth B,1,H,W, probs B,K,H,W or empty)``: ``p`` ``B,1,H,W``, ``t`` ``B,1,H,W`` (accumulation dtype),
    ``centers`` ``B,K,h,w``; computed in the accumulation dtype."""
    acc = accumulate_dtype(p.dtype)
    y = log_binomial_logits(p.to(acc), t.to(acc), centers.shape[1], eps)
    return expectation(y, centers, p.dtype, return_probs)
