"""ZoeDepth's attractor step (``inv``, gamma 2, alpha 300, mean over attractors), the fused kernel vs the
reference twin and ZoeDepth's own plain-PyTorch formulation, ``func(dist(A.unsqueeze(2) - b.unsqueeze(1)),
dim=1)`` (written here from its one line: ZoeDepth is not a package to import), which builds the
``B,A,K,h,w`` differences and every intermediate of ``dist`` for autograd to keep.

Sizes: ZoeDepth-N's finest attractor layer at a 384x512 input (B2, 16 attractors, 64 bins, 96x128: the
issue's CPU target) and a coarser layer (8 attractors at 48x64); on the GPU a batch of 8 at 96x128 and
192x256. Centres and attractors are uniform in [0, 1] (ZoeDepth's normed bins); both get gradients, as in
training.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

_BACKENDS = ("kernel", "reference", "zoedepth")
_QUICK = dict(B=1, A=4, K=8, H=8, W=12)
_SIZES = [  # (dims, run sets)
    (dict(B=2, A=16, K=64, H=96, W=128), ("cpu",)),
    (dict(B=2, A=8, K=64, H=48, W=64), ("cpu",)),
    (dict(B=8, A=16, K=64, H=96, W=128), ("cuda",)),
    (dict(B=8, A=16, K=64, H=192, W=256), ("cuda",)),
]
ALPHA, GAMMA = 300.0, 2


def _label(d: dict) -> str:
    return f"B{d['B']} {d['A']}a {d['K']}k {d['H']}x{d['W']}"


CASES = [Case("attractor_shift", _label(_QUICK), _QUICK, sets=("quick",), backends=_BACKENDS)]
CASES += [Case("attractor_shift", _label(d), d, sets=sets, backends=_BACKENDS) for d, sets in _SIZES]


def flops(case: Case, mode: str) -> float:
    """Per pixel, centre and attractor: the difference, dx^2, the scaled denominator (2), the division and the
    sum (6); per pixel and centre the mean and the step (2). Backward per pixel, centre and attractor: the
    difference, dx^2, the denominator (2), its reciprocal, the slope r (1 - alpha gamma p r) (4), its sum
    and g f' into the attractor's sum (3); per pixel and centre g (1 - s sum) (3), per attractor s sum (1)."""
    B, A, K, H, W = (case.dims[k] for k in "BAKHW")
    pixels = B * H * W
    fwd = pixels * K * (6 * A + 2)
    bwd = pixels * (K * (12 * A + 3) + A)
    return fwd if mode == "fwd" else fwd + bwd


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, A, K, H, W = (case.dims[k] for k in "BAKHW")
    rand = lambda *shape: torch.rand(shape, device=device, dtype=case.torch_dtype, generator=generator)  # noqa: E731
    return {"centers": rand(B, K, H, W).requires_grad_(), "attractors": rand(B, A, H, W).requires_grad_()}


def _zoedepth(centers: torch.Tensor, attractors: torch.Tensor) -> torch.Tensor:
    """ZoeDepth's non-memory-efficient attractor step with inv_attractor, as its layers run it."""
    dx = attractors.unsqueeze(2) - centers.unsqueeze(1)
    return centers + torch.mean(dx.div(1 + ALPHA * dx.pow(GAMMA)), dim=1)


def make_fn(case: Case, backend: str, device: torch.device):
    if backend == "zoedepth":
        return lambda i: _zoedepth(i["centers"], i["attractors"]).sum()
    name = backend_arg(backend, device)
    return lambda i: depthmetric.attractor_shift(i["centers"], i["attractors"], alpha=ALPHA, gamma=GAMMA,
                                                 kind="inv", reduction="mean", backend=name).sum()
