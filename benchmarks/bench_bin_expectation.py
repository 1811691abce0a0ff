"""AdaBins/SQLdepth's bin head, ``depth = sum_k softmax_k(logits / T) c_k``: the kernel vs the reference twin,
which is the plain-PyTorch formulation those heads write (``torch.softmax(logits, dim=1)``, the centres
interpolated with ``F.interpolate(bilinear, align_corners=True)`` when per pixel, ``(probs * centers).sum(1)``).
Logits and centres are differentiated (a training step); T = 1 as AdaBins has it. Per-image centres
(``B,K``, AdaBins' adaptive bins) and per-pixel centres at half resolution.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

BACKENDS = ("kernel", "reference")


def _case(d: dict, sets) -> Case:
    centres = "B,K" if d["h"] is None else f"{d['h']}x{d['w']}"
    return Case("bin_expectation", f"B{d['B']} K{d['K']} {d['H']}x{d['W']} c{centres}", d, sets=sets,
                backends=BACKENDS)


CASES = [
    _case(dict(B=2, K=16, H=24, W=40, h=None, w=None), ("quick",)),
    _case(dict(B=4, K=128, H=192, W=640, h=None, w=None), ("cpu", "cuda")),  # the CPU target
    _case(dict(B=2, K=64, H=96, W=320, h=48, w=160), ("cpu",)),
    _case(dict(B=8, K=256, H=240, W=320, h=120, w=160), ("cuda",)),
]


def flops(case: Case, mode: str) -> float:
    """Per pixel and bin: the tempered logit (1), the maximum (1), exp (1, counted as one), the sum and the
    weighted sum (4) and the centre resampled (2 lerps of 3 and one more: 9). Backward per pixel and bin:
    prob from the log-sum-exp (2), the centre again (9), g prob (c - depth) (3), dL/dlogit (1), the
    temperature's term (2) and the centres' gather (2)."""
    B, K, H, W = (case.dims[k] for k in "BKHW")
    per_bin = 1 + 1 + 1 + 4 + 9
    fwd = B * H * W * K * per_bin
    return fwd if mode == "fwd" else fwd + B * H * W * K * (2 + 9 + 3 + 1 + 2 + 2)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, K, H, W, h, w = (case.dims[k] for k in ("B", "K", "H", "W", "h", "w"))
    dtype = case.torch_dtype
    logits = torch.randn(B, K, H, W, device=device, dtype=dtype, generator=generator).requires_grad_()
    shape = (B, K) if h is None else (B, K, h, w)
    centers = (0.001 + 10 * torch.rand(shape, device=device, dtype=dtype, generator=generator)).requires_grad_()
    return {"logits": logits, "centers": centers}


def make_fn(case: Case, backend: str, device: torch.device):
    name = backend_arg(backend, device)
    return lambda i: depthmetric.bin_expectation(i["logits"], i["centers"], backend=name).mean()
