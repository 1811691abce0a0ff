"""SSIM: Monodepth2's box3 and the image-quality gauss11, kernel vs the reference twin, and for gauss11 the
peers pytorch-msssim, kornia and fused-ssim when installed (optional; a missing one is listed as skipped).

Sizes (shared by the other image ops' bench files): B12 3x192x640 (KITTI at Monodepth2's default
resolution), B8 3x320x1024 and B1 3x1080x1920 on the GPU. The CPU default set keeps B12 3x192x640 and adds
B1 3x375x1242 (one KITTI frame at full resolution, a third of the pixels): the two larger sizes would take
the 2-core CPU run past ten minutes (the references and peers need seconds per call there). Images are
uniform in [0, 1]; ``x`` is ``y`` blended with noise (a warped image that mostly agrees).

Only ``x`` (the prediction) is differentiated, as a training step does; fused-ssim gives a gradient only for
its first image. The gauss11 peers use their own border handling: pytorch-msssim only has "valid"
(cropped) output, kornia's "same" pads by reflection, fused-ssim's "same" pads with zeros like ours; the
work per pixel is the same.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg, optional_import

_GAUSS_PEERS = ("pytorch-msssim", "kornia", "fused-ssim")
_PEER_MODULES = {"pytorch-msssim": "pytorch_msssim", "kornia": "kornia", "fused-ssim": "fused_ssim"}

_QUICK = dict(B=2, H=24, W=40)
_SIZES = [  # (dims, run sets)
    (dict(B=12, H=192, W=640), ("cpu", "cuda")),
    (dict(B=1, H=375, W=1242), ("cpu",)),
    (dict(B=8, H=320, W=1024), ("cuda",)),
    (dict(B=1, H=1080, W=1920), ("cuda",)),
]


def _label(d: dict) -> str:
    return f"B{d['B']} 3x{d['H']}x{d['W']}"


def image_cases(op: str, backends: tuple[str, ...]) -> list[Case]:
    """``op``'s cases at the image sizes above."""
    cases = [Case(op, _label(_QUICK), _QUICK, sets=("quick",), backends=backends)]
    cases += [Case(op, _label(d), d, sets=sets, backends=backends) for d, sets in _SIZES]
    return cases


def image(case: Case, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """A ``B,3,H,W`` image of the case, uniform in [0, 1]."""
    B, H, W = (case.dims[k] for k in "BHW")
    return torch.rand(B, 3, H, W, device=device, dtype=case.torch_dtype, generator=generator)


CASES = image_cases("ssim_box3", ("kernel", "reference")) + image_cases("ssim_gauss11", ("kernel", "reference")
                                                                        + _GAUSS_PEERS)

# Analytic floating-point operations (for the roofline floor), per pixel and channel unless said otherwise.
# A multiply, add, division, square root, comparison or clamp side is 1, a multiply-add 2; a separable
# window of 2r+1 taps costs 2r+1 multiply-adds per axis and map (box3: 12, gauss11: 44). SSIM of one set of
# moments: 18 (luminance and contrast terms, one division); its three partials for a gradient in x (mu_x,
# E[x^2], E[xy]; 15) times the incoming gradient (3); the gradient of one pixel from the three transposed
# window sums, d_mx + 2 d_sq x + d_xy y (5). Only x is differentiated.
SSIM_FLOPS, SSIM_PARTIALS_FLOPS, GRAD_COMBINE_FLOPS = 18, 15 + 3, 5
_RADII = {"ssim_box3": 1, "ssim_gauss11": 5}


def window_flops(r: int) -> int:
    return 2 * 2 * (2 * r + 1)


def flops(case: Case, mode: str) -> float:
    B, H, W = (case.dims[k] for k in "BHW")
    pixels, C = B * H * W, 3
    win = window_flops(_RADII[case.op])
    # x^2, y^2, xy (3), 5 windows, SSIM, the mean (1); backward: partials, 3 transposed windows, gradient.
    fwd = C * (3 + 5 * win + SSIM_FLOPS + 1)
    bwd = C * (SSIM_PARTIALS_FLOPS + 3 * win + GRAD_COMBINE_FLOPS)
    return pixels * (fwd if mode == "fwd" else fwd + bwd)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    target = image(case, device, generator)
    return {"x": (0.8 * target + 0.2 * image(case, device, generator)).requires_grad_(), "y": target}


def _peer(backend: str, device: torch.device):
    module = optional_import(_PEER_MODULES[backend])
    if module is None:
        return f"{backend} is not installed (optional peer)"
    if backend == "pytorch-msssim":
        return lambda i: module.ssim(i["x"], i["y"], data_range=1.0, size_average=True)
    if backend == "kornia":
        return lambda i: module.metrics.ssim(i["x"], i["y"], 11, max_val=1.0, padding="same").mean()
    if device.type != "cuda":
        return "fused-ssim runs on CUDA only"
    return lambda i: module.fused_ssim(i["x"], i["y"], padding="same", train=True)


def make_fn(case: Case, backend: str, device: torch.device):
    if backend in _GAUSS_PEERS:
        return _peer(backend, device)
    window, padding = ("box3", "reflect") if case.op == "ssim_box3" else ("gauss11", "same")
    name = backend_arg(backend, device)
    return lambda i: depthmetric.ssim(i["x"], i["y"], window=window, padding=padding, reduction="mean", backend=name)
