"""Monodepth2's edge-aware smoothness at SSIM's image sizes (see ``bench_ssim``): it has no compiled kernel,
so its one PyTorch implementation runs (backend "pytorch"); the disparity is differentiated."""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.bench_ssim import image, image_cases
from benchmarks.harness import Case

CASES = image_cases("edge_aware_smoothness", ("pytorch",))


def flops(case: Case, mode: str) -> float:
    """Disparity normalised by its mean (2); x and y differences of disparity (2) and of the image (6), image
    differences' absolute values averaged over channels (10), two exp, two products, two sums. Backward:
    through the products and differences (about half the forward)."""
    pixels = case.dims["B"] * case.dims["H"] * case.dims["W"]
    fwd = 26
    return pixels * (fwd if mode == "fwd" else fwd + fwd // 2)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")
    target = image(case, device, generator)  # drawn first, as the inputs of the published results were
    disp = 0.01 + torch.rand(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)
    return {"disp": disp.requires_grad_(), "image": target}


def make_fn(case: Case, backend: str, device: torch.device):
    return lambda i: depthmetric.edge_aware_smoothness(i["disp"], i["image"])
