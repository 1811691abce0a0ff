"""Metric-depth losses and the evaluation pass (issue 4): SILog, Depth Pro's trimmed MAE and multi-scale
derivative loss, the scale-and-shift-invariant loss, and ``depthmetric.metrics.compute``.

Sizes are the issue's, on every device: NYU 480x640 x B8 (dense ground truth, 5% invalid pixels) and
KITTI 375x1242 x B4 (sparse like projected LiDAR: 15% valid). Ground truth is uniform in the data set's
range (NYU 0.5-10 m, KITTI 1-80 m); the prediction is the dense depth times ``exp(0.1 * noise)`` and is the
only input differentiated. The losses have no compiled kernel (their docstrings say why): they run their
one vectorised PyTorch implementation (backend "pytorch"). The metric pass has a fused kernel
(``depthmetric::depth_metric_sums``) and runs kernel vs reference; it is forward only.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

_SIZES = [  # (label, dims, run sets)
    ("B2 1x24x32", dict(B=2, H=24, W=32, dataset="nyu"), ("quick",)),
    ("B8 1x480x640", dict(B=8, H=480, W=640, dataset="nyu"), ("cpu", "cuda")),
    ("B4 1x375x1242", dict(B=4, H=375, W=1242, dataset="kitti"), ("cpu", "cuda")),
]
_DATASETS = {"nyu": (0.5, 10.0, 0.95), "kitti": (1.0, 80.0, 0.15)}  # depth range (m), valid fraction

# op -> (how to reach it in depthmetric, constructor arguments or None for a function, backends)
_OPS = {
    "silog": ("SILogLoss", dict(beta=0.15), ("pytorch",)),
    "trimmed_mae": ("TrimmedMAELoss", dict(trim=0.2), ("pytorch",)),
    "multiscale_derivative": ("MultiScaleDerivativeLoss", dict(operator="scharr", p=1, scales=4), ("pytorch",)),
    "ssi": ("ScaleShiftInvariantLoss", {}, ("pytorch",)),
    "metrics": ("metrics.compute", None, ("kernel", "reference")),
}

CASES = [
    Case(op, label, dims, sets=sets, backends=backends, backward=init is not None)
    for op, (_, init, backends) in _OPS.items()
    for label, dims, sets in _SIZES
]


# Analytic floating-point operations per pixel (for the roofline floor; a multiply-add is 2, a comparison,
# division, log or exp 1), forward and backward. silog: validity (1), two logs and their difference (3),
# the sums of g and g^2 (3); backward 2 per pixel and 4 for the scalar's chain. trimmed_mae: |p - g| (2),
# the k-th value's selection (about 2 comparisons per pixel), the trimmed sum (2); backward a sign and a
# scale (2). multiscale_derivative: the difference (1), Scharr in x and y as two separable 3-tap filters
# each (24), |.| and sums (4), over 4 scales of a quarter of the pixels each (x 4/3, rounded up); backward
# the transposed filters (about as many). ssi: the least-squares sums (p, p^2, pg, g: 8), the aligned residual
# and its |.| sum (5); backward 6. metrics (the fused sums, forward only): range and validity (6), clamp (2),
# difference and ratio (2), one log, max ratio (2), |d| (1), the 10 sums with their terms (20).
_FLOPS = {"silog": (7, 6), "trimmed_mae": (6, 2), "multiscale_derivative": (39, 39), "ssi": (13, 6),
          "metrics": (34, 0)}


def flops(case: Case, mode: str) -> float:
    fwd, bwd = _FLOPS[case.op]
    pixels = case.dims["B"] * case.dims["H"] * case.dims["W"]
    return pixels * (fwd if mode == "fwd" else fwd + bwd)


def _resolve(path: str):
    obj = depthmetric
    for part in path.split("."):
        obj = getattr(obj, part, None)
    return obj


def unavailable(op: str) -> str | None:
    path = _OPS[op][0]
    if not callable(_resolve(path)):
        return f"depthmetric.{path} is not available in this checkout (issue 4, branch metrics)"
    return None


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")
    lo, hi, valid_fraction = _DATASETS[case.dims["dataset"]]

    def rand() -> torch.Tensor:
        return torch.rand(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)

    dense = lo + (hi - lo) * rand()
    gt = torch.where(rand() < valid_fraction, dense, torch.zeros_like(dense))
    noise = torch.randn(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)
    pred = dense * torch.exp(0.1 * noise)
    return {"pred": pred.requires_grad_(case.backward), "gt": gt}


def make_fn(case: Case, backend: str, device: torch.device):
    path, init, _ = _OPS[case.op]
    op = _resolve(path)
    kwargs = {} if backend == "pytorch" else {"backend": backend_arg(backend, device)}
    if init is None:  # the metric pass: forward only, no gradient
        dataset = case.dims["dataset"]

        def metrics(inputs: dict):
            with torch.no_grad():
                return op(inputs["pred"], inputs["gt"], dataset=dataset, **kwargs)

        return metrics
    loss = op(**init, **kwargs)
    return lambda inputs: loss(inputs["pred"], inputs["gt"])
