"""Photometric ops (issue 3): SSIM (Monodepth2's box3 and the image-quality gauss11), the min-reprojection
loss with auto-masking, kernel vs the reference twin, and for gauss11 SSIM the peers pytorch-msssim, kornia
and fused-ssim when installed (optional; a missing one is listed as skipped); edge-aware smoothness, which
has no kernel, runs its PyTorch implementation (backend "pytorch").

Sizes are the issue's: B12 3x192x640 (KITTI at Monodepth2's default resolution), B8 3x320x1024 and
B1 3x1080x1920 on the GPU. The CPU default set keeps B12 3x192x640 and adds B1 3x375x1242 (one KITTI frame
at full resolution, a third of the pixels): the two larger sizes would take the 2-core CPU run past ten
minutes (the references and peers need seconds per call there). Images are uniform in [0, 1]; warped images are the
target blended with noise (as a reprojection that mostly agrees), the unwarped sources are independent.

Every op is differentiated in its first image only (the prediction: SSIM's ``x``, the warped images), as
a training step does; fused-ssim gives a gradient only for its first image. The gauss11 peers use their own
border handling: pytorch-msssim only has "valid" (cropped) output, kornia's "same" pads by reflection,
fused-ssim's "same" pads with zeros like ours; the work per pixel is the same.
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


def _cases(op: str, backends: tuple[str, ...]) -> list[Case]:
    cases = [Case(op, _label(_QUICK), _QUICK, sets=("quick",), backends=backends)]
    cases += [Case(op, _label(d), d, sets=sets, backends=backends) for d, sets in _SIZES]
    return cases


CASES = (
    _cases("ssim_box3", ("kernel", "reference"))
    + _cases("ssim_gauss11", ("kernel", "reference") + _GAUSS_PEERS)
    + _cases("min_reprojection", ("kernel", "reference"))
    + _cases("edge_aware_smoothness", ("pytorch",))
)

# Analytic floating-point operations (for the roofline floor), per pixel and channel unless said otherwise.
# A multiply, add, division, square root, comparison or clamp side is 1, a multiply-add 2; a separable
# window of 2r+1 taps costs 2r+1 multiply-adds per axis and map (box3: 12, gauss11: 44). SSIM of one set of
# moments: 18 (luminance and contrast terms, one division); its three partials for a gradient in x (mu_x,
# E[x^2], E[xy]; 15) times the incoming gradient (3); the gradient of one pixel from the three transposed
# window sums, d_mx + 2 d_sq x + d_xy y (5). Only x (the warped images) is differentiated.
_RADII = {"ssim_box3": 1, "ssim_gauss11": 5, "min_reprojection": 1}
_SSIM, _SSIM_PARTIALS, _GRAD_COMBINE = 18, 15 + 3, 5


def _window_flops(r: int) -> int:
    return 2 * 2 * (2 * r + 1)


def flops(case: Case, mode: str) -> float:
    B, H, W = (case.dims[k] for k in "BHW")
    pixels, C = B * H * W, 3
    if case.op == "edge_aware_smoothness":
        # disparity normalised by its mean (2); x and y differences of disparity (2) and of the image (6),
        # image differences' absolute values averaged over channels (10), two exp, two products, two sums.
        # Backward: through the products and differences (about half the forward).
        fwd = 26
        return pixels * (fwd if mode == "fwd" else fwd + fwd // 2)
    win = _window_flops(_RADII[case.op])
    if case.op == "min_reprojection":
        # Per channel: the target's window mean and E[y^2] (1 product, 2 windows); per candidate (2 warped,
        # 2 identity sources) x^2 and xy (2), 3 windows, SSIM, the clamped (1 - S) / 2 (4) and the L1 term
        # weighted into the channel sum (5). Per pixel: tie-breaking noise on the identity errors (2), the
        # minimum of 4 (3), the mean (1). Backward per warped image and channel: SSIM's partials (15), the
        # selection, clamp slope and weight (5), 3 transposed windows, the gradient (5) and the L1 sign (3).
        fwd = C * (1 + 2 * win + 2 * N_SOURCES * (2 + 3 * win + _SSIM + 4 + 5)) + 2 + 3 + 1
        bwd = N_SOURCES * C * (15 + 5 + 3 * win + _GRAD_COMBINE + 3)
    else:
        # x^2, y^2, xy (3), 5 windows, SSIM, the mean (1); backward: partials, 3 transposed windows, gradient.
        fwd = C * (3 + 5 * win + _SSIM + 1)
        bwd = C * (_SSIM_PARTIALS + 3 * win + _GRAD_COMBINE)
    return pixels * (fwd if mode == "fwd" else fwd + bwd)


_API = {"ssim_box3": "ssim", "ssim_gauss11": "ssim", "min_reprojection": "min_reprojection_loss",
        "edge_aware_smoothness": "edge_aware_smoothness"}
N_SOURCES = 2


def unavailable(op: str) -> str | None:
    name = _API[op]
    if not callable(getattr(depthmetric, name, None)):
        return f"depthmetric.{name} is not available in this checkout (issue 3, branch photometric)"
    return None


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")

    def image() -> torch.Tensor:
        return torch.rand(B, 3, H, W, device=device, dtype=case.torch_dtype, generator=generator)

    target = image()
    if case.op == "min_reprojection":
        warped = [(0.8 * target + 0.2 * image()).requires_grad_() for _ in range(N_SOURCES)]
        return {"target": target, "warped": warped, "sources": [image() for _ in range(N_SOURCES)]}
    if case.op == "edge_aware_smoothness":
        disp = 0.01 + torch.rand(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)
        return {"disp": disp.requires_grad_(), "image": target}
    return {"x": (0.8 * target + 0.2 * image()).requires_grad_(), "y": target}


def _peer(case: Case, backend: str, device: torch.device):
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
        return _peer(case, backend, device)
    op = getattr(depthmetric, _API[case.op])
    kwargs = {} if backend == "pytorch" else {"backend": backend_arg(backend, device)}

    if case.op == "ssim_box3":
        return lambda i: op(i["x"], i["y"], window="box3", padding="reflect", reduction="mean", **kwargs)
    if case.op == "ssim_gauss11":
        return lambda i: op(i["x"], i["y"], window="gauss11", padding="same", reduction="mean", **kwargs)
    if case.op == "edge_aware_smoothness":
        return lambda i: op(i["disp"], i["image"], **kwargs)
    # one generator per backend, seeded alike, for the auto-mask's tie-breaking noise
    generator = torch.Generator(device=device).manual_seed(0)
    return lambda i: op(i["target"], i["warped"], i["sources"], alpha=0.85, automask=True,
                        generator=generator, **kwargs)
