"""The min-reprojection loss with auto-masking (Monodepth2's, two sources), kernel vs the reference twin, at
SSIM's image sizes (see ``bench_ssim``). Warped images are the target blended with noise (as a reprojection
that mostly agrees), the unwarped sources are independent; only the warped images are differentiated (they
carry the prediction's gradient in a training step).
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.bench_ssim import GRAD_COMBINE_FLOPS, SSIM_FLOPS, image, image_cases, window_flops
from benchmarks.harness import Case, backend_arg

N_SOURCES = 2

CASES = image_cases("min_reprojection", ("kernel", "reference"))


def flops(case: Case, mode: str) -> float:
    """Per channel: the target's window mean and E[y^2] (1 product, 2 windows); per candidate (2 warped,
    2 identity sources) x^2 and xy (2), 3 windows, SSIM, the clamped (1 - S) / 2 (4) and the L1 term weighted
    into the channel sum (5). Per pixel: tie-breaking noise on the identity errors (2), the minimum of 4 (3),
    the mean (1). Backward per warped image and channel: SSIM's partials (15), the selection, clamp slope and
    weight (5), 3 transposed windows, the gradient (5) and the L1 sign (3). Box3 windows throughout."""
    B, H, W = (case.dims[k] for k in "BHW")
    pixels, C, win = B * H * W, 3, window_flops(1)
    fwd = C * (1 + 2 * win + 2 * N_SOURCES * (2 + 3 * win + SSIM_FLOPS + 4 + 5)) + 2 + 3 + 1
    bwd = N_SOURCES * C * (15 + 5 + 3 * win + GRAD_COMBINE_FLOPS + 3)
    return pixels * (fwd if mode == "fwd" else fwd + bwd)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    target = image(case, device, generator)
    warped = [(0.8 * target + 0.2 * image(case, device, generator)).requires_grad_() for _ in range(N_SOURCES)]
    return {"target": target, "warped": warped, "sources": [image(case, device, generator) for _ in range(N_SOURCES)]}


def make_fn(case: Case, backend: str, device: torch.device):
    name = backend_arg(backend, device)
    # one generator per backend, seeded alike, for the auto-mask's tie-breaking noise
    generator = torch.Generator(device=device).manual_seed(0)
    return lambda i: depthmetric.min_reprojection_loss(i["warped"], i["target"], i["sources"], alpha=0.85,
                                                       automask=True, generator=generator, backend=name)
