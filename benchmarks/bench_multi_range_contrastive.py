"""MetricDepth's multi-range contrastive loss: fused kernel vs the reference twin, which
materialises one rolled copy of the feature map per sample shift.

Sizes: B8 C64 240x320, B8 C32 480x640 and B4 C128 120x160 (GPU), with N = 10 within-image
+ 4 across-image shifts and the "nyu-lt" preset. The CPU default set is the CPU target size
B4 C64 120x160 plus B2 C32 240x320 (a half-resolution NYU feature map); the reference needs about 30 s per
fwd+bwd at B8 C64 240x320 on 2 cores, too slow for the default set. Depth is uniform in [1, 3] m so about
two thirds of the pairs are counted (positives below 0.1 m, negatives in (0.5, 2] m), as in a real scene
where most sampled pairs fall in some range.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

N_WITHIN, N_ACROSS = 10, 4

CASES = [
    Case("multi_range_contrastive", "B2 C8 12x16", dict(B=2, C=8, H=12, W=16), sets=("quick",)),
    Case("multi_range_contrastive", "B4 C64 120x160", dict(B=4, C=64, H=120, W=160), sets=("cpu", "cuda")),
    Case("multi_range_contrastive", "B2 C32 240x320", dict(B=2, C=32, H=240, W=320), sets=("cpu",)),
    Case("multi_range_contrastive", "B4 C128 120x160", dict(B=4, C=128, H=120, W=160), sets=("cuda",)),
    Case("multi_range_contrastive", "B8 C64 240x320", dict(B=8, C=64, H=240, W=320), sets=("cuda",)),
    Case("multi_range_contrastive", "B8 C32 480x640", dict(B=8, C=32, H=480, W=640), sets=("cuda",)),
]


def flops(case: Case, mode: str) -> float:
    """Analytic floating-point operations (for the roofline floor; a multiply-add is 2, a comparison,
    division or square root 1). Forward, per pair (one per anchor pixel and shift): the squared feature
    distance, a difference and a multiply-add per channel (3C); the depth differential and its class
    (|d_a - d_s| 2, positive 1, 3 ranges x 2 comparisons), sqrt, 1/l, the hinge (2) and the sum (1): 15.
    Backward, per pixel: its own feature times the sum of its pair weights (C), and per pair it is in as
    anchor and as sample, a pair weight (the incoming gradient times the saved coefficient, 1) and a
    multiply-add per channel (2C), each: N (4C + 2) + C."""
    B, C, H, W = (case.dims[k] for k in "BCHW")
    N = N_WITHIN + N_ACROSS
    fwd = B * H * W * N * (3 * C + 15)
    return fwd if mode == "fwd" else fwd + B * H * W * (N * (4 * C + 2) + C)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, C, H, W = (case.dims[k] for k in "BCHW")
    features = torch.randn(B, C, H, W, device=device, dtype=case.torch_dtype, generator=generator)
    depth = 1 + 2 * torch.rand(B, 1, H, W, device=device, generator=generator)
    cpu_generator = torch.Generator().manual_seed(int(torch.randint(2**31, (1,), generator=generator,
                                                                    device=device)))
    shifts = depthmetric.sample_shifts(B, H, W, N_WITHIN, N_ACROSS, cpu_generator)
    return {"features": features.requires_grad_(), "depth": depth, "shifts": shifts}


def make_fn(case: Case, backend: str, device: torch.device):
    name = backend_arg(backend, device)

    def fn(inputs: dict) -> torch.Tensor:
        return depthmetric.multi_range_contrastive_loss(
            inputs["features"], inputs["depth"], shifts=inputs["shifts"], backend=name,
            **depthmetric.PRESETS["nyu-lt"],
        )

    return fn
