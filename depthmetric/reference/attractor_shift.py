"""Reference twin of ``depthmetric::attractor_shift``: ZoeDepth's attractor update written plainly."""
from __future__ import annotations

import torch

KINDS = {"inv": 0, "exp": 1}  # the kernel's kind codes


def attractor_shift(
    centers: torch.Tensor,
    attractors: torch.Tensor,
    alpha: float,
    gamma: int,
    kind: int,
    mean: bool,
) -> torch.Tensor:
    """``c + reduce_a f(a - c)``: ``centers`` ``B,K,h,w``, ``attractors`` ``B,A,h,w``, returned ``B,K,h,w`` in the
    accumulation dtype (float32, float64 for float64), as the kernel computes it.

    ``kind`` 0 (inv): ``f(dx) = dx / (1 + alpha dx^gamma)``; 1 (exp): ``f(dx) = exp(-alpha |dx|^gamma) dx``;
    ``dx = a - c`` for every attractor and centre of a pixel (this materialises ``B,A,K,h,w``: it is the
    oracle, not the fast path). ``mean``: averaged over the A attractors, else summed.
    """
    acc = torch.float64 if centers.dtype == torch.float64 else torch.float32
    c, a = centers.to(acc), attractors.to(acc)
    dx = a.unsqueeze(2) - c.unsqueeze(1)  # B,A,K,h,w
    if kind == KINDS["inv"]:
        shifts = dx / (1 + alpha * dx.pow(gamma))
    else:
        shifts = torch.exp(-alpha * dx.abs().pow(gamma)) * dx
    delta = shifts.mean(dim=1) if mean else shifts.sum(dim=1)
    return c + delta
