"""Metric-depth losses: SILog, Depth Pro's trimmed MAE and multi-scale derivative loss, and the
scale-and-shift-invariant loss.

Sizes (shared with ``bench_depth_metric_sums``), on every device: NYU 480x640 x B8 (dense ground truth, 5%
invalid pixels) and KITTI 375x1242 x B4 (sparse like projected LiDAR: 15% valid). Ground truth is uniform
from NYU's 0.5 m and KITTI's 1 m to the data set's evaluation cap (``depthmetric.metrics.DATASETS``: 10 m,
80 m); the prediction is the dense depth times ``exp(0.1 * noise)`` and is the only input differentiated.
The losses have no compiled kernel (their docstrings say why): they run their one vectorised PyTorch
implementation (backend "pytorch").
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case

SIZES = [  # (label, dims, run sets)
    ("B2 1x24x32", dict(B=2, H=24, W=32, dataset="nyu"), ("quick",)),
    ("B8 1x480x640", dict(B=8, H=480, W=640, dataset="nyu"), ("cpu", "cuda")),
    ("B4 1x375x1242", dict(B=4, H=375, W=1242, dataset="kitti"), ("cpu", "cuda")),
]
_NEAREST = {"nyu": 0.5, "kitti": 1.0}  # metres
_VALID_FRACTION = {"nyu": 0.95, "kitti": 0.15}

# op -> (loss class, constructor arguments)
_LOSSES = {
    "silog": (depthmetric.SILogLoss, dict(beta=0.15)),
    "trimmed_mae": (depthmetric.TrimmedMAELoss, dict(trim=0.2)),
    "multiscale_derivative": (depthmetric.MultiScaleDerivativeLoss, dict(operator="scharr", p=1, scales=4)),
    "ssi": (depthmetric.ScaleShiftInvariantLoss, {}),
}

CASES = [Case(op, label, dims, sets=sets, backends=("pytorch",)) for op in _LOSSES for label, dims, sets in SIZES]

# Analytic floating-point operations per pixel (for the roofline floor; a multiply-add is 2, a comparison,
# division, log or exp 1), forward and backward. silog: validity (1), two logs and their difference (3),
# the sums of g and g^2 (3); backward 2 per pixel and 4 for the scalar's chain. trimmed_mae: |p - g| (2),
# the k-th value's selection (about 2 comparisons per pixel), the trimmed sum (2); backward a sign and a
# scale (2). multiscale_derivative: the difference (1), Scharr in x and y as two separable 3-tap filters
# each (24), |.| and sums (4), over 4 scales of a quarter of the pixels each (x 4/3, rounded up); backward
# the transposed filters (about as many). ssi: the least-squares sums (p, p^2, pg, g: 8), the aligned residual
# and its |.| sum (5); backward 6.
_FLOPS = {"silog": (7, 6), "trimmed_mae": (6, 2), "multiscale_derivative": (39, 39), "ssi": (13, 6)}


def flops(case: Case, mode: str) -> float:
    fwd, bwd = _FLOPS[case.op]
    pixels = case.dims["B"] * case.dims["H"] * case.dims["W"]
    return pixels * (fwd if mode == "fwd" else fwd + bwd)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")
    dataset = case.dims["dataset"]
    lo, hi = _NEAREST[dataset], depthmetric.metrics.DATASETS[dataset]["max_depth"]

    def rand() -> torch.Tensor:
        return torch.rand(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)

    dense = lo + (hi - lo) * rand()
    gt = torch.where(rand() < _VALID_FRACTION[dataset], dense, torch.zeros_like(dense))
    noise = torch.randn(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)
    pred = dense * torch.exp(0.1 * noise)
    return {"pred": pred.requires_grad_(case.backward), "gt": gt}


def make_fn(case: Case, backend: str, device: torch.device):
    cls, init = _LOSSES[case.op]
    loss = cls(**init)
    return lambda inputs: loss(inputs["pred"], inputs["gt"])
