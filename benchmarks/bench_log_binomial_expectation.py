"""ZoeDepth's metric-bins head, ``LogBinomial`` then ``sum_k prob_k c_k``: the kernel vs the reference twin,
which is the plain-PyTorch formulation ZoeDepth writes (the ``B,K,H,W`` log-binomial logits from clamped
logs of p and 1 - p over ``t``, ``torch.softmax`` over the bins, the centres ``F.interpolate``d bilinear with
``align_corners=True`` to the output size, ``(probs * centers).sum(1)``). p, t and the centres are
differentiated (a training step); the centres at half resolution as ZoeDepth's seed bins, or per image.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

BACKENDS = ("kernel", "reference")


def _case(d: dict, sets) -> Case:
    centres = "B,K" if d["h"] is None else f"{d['h']}x{d['w']}"
    return Case("log_binomial_expectation", f"B{d['B']} K{d['K']} {d['H']}x{d['W']} c{centres}", d, sets=sets,
                backends=BACKENDS)


CASES = [
    _case(dict(B=2, K=16, H=24, W=40, h=12, w=20), ("quick",)),
    _case(dict(B=2, K=64, H=384, W=512, h=192, w=256), ("cpu", "cuda")),  # the CPU target
    _case(dict(B=4, K=64, H=192, W=640, h=None, w=None), ("cpu",)),
    _case(dict(B=8, K=64, H=384, W=512, h=192, w=256), ("cuda",)),
]


def flops(case: Case, mode: str) -> float:
    """Per pixel: the clamped logs and 1/t (8). Per pixel and bin: the logit (5), the maximum (1), exp (1),
    the sums (4), the centre resampled (9). Backward per pixel and bin: prob (2), the centre (9),
    g prob (c - depth) (3), the sums for p and t (6), the centres' gather (2); per pixel dL/dp, dL/dt (8)."""
    B, K, H, W = (case.dims[k] for k in "BKHW")
    pixels = B * H * W
    fwd = pixels * (8 + K * (5 + 1 + 1 + 4 + 9))
    return fwd if mode == "fwd" else fwd + pixels * (8 + K * (2 + 9 + 3 + 6 + 2))


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, K, H, W, h, w = (case.dims[k] for k in ("B", "K", "H", "W", "h", "w"))
    dtype = case.torch_dtype
    p = torch.rand(B, 1, H, W, device=device, dtype=dtype, generator=generator).requires_grad_()
    t = (0.1 + torch.rand(B, 1, H, W, device=device, dtype=dtype, generator=generator)).requires_grad_()
    shape = (B, K) if h is None else (B, K, h, w)
    centers = (0.001 + 10 * torch.rand(shape, device=device, dtype=dtype, generator=generator)).requires_grad_()
    return {"p": p, "t": t, "centers": centers}


def make_fn(case: Case, backend: str, device: torch.device):
    name = backend_arg(backend, device)
    return lambda i: depthmetric.log_binomial_expectation(i["p"], i["t"], i["centers"], backend=name).mean()
