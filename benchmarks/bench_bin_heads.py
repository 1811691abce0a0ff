"""Whole bin heads, fused vs the same head as its authors wrote it in plain PyTorch ("reference": the ops'
twins, which materialise ``B x bins x H x W`` probabilities and ``B x attractors x bins x h x w`` differences,
and for ZoeDepth its conditional MLP on the concatenation of the features and the upsampled embedding at full
resolution, where :class:`MetricBinsHead` upsamples the embedding's share of the first 1x1 conv instead).

- ``zoe_head``: :class:`MetricBinsHead` at ZoeDepth's default configuration (64 bins, embeddings of 128,
  attractors 16/8/4/1 on blocks at 1/16..1/2 resolution, the log-binomial head at full resolution), with
  DPT-BEiT-L's channel counts (256-channel blocks, a 1/32 bottleneck, 32 + 1 channels at full resolution):
  384x512 batch 2 is its training size.
- ``sql_head``: :class:`SelfQueryLayer` at SPIdepth's KITTI configuration (64-channel features at the
  192x640 input resolution, patches of 16, 128 queries, 128 bins).

A fwd_bwd call differentiates the heads' inputs (the harness asks for the leaves' gradients, not the weights'),
which runs every op's backward; the weights' own gradients would add the same to both backends.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.harness import Case, backend_arg
from depthmetric.training.models import MetricBinsHead, SelfQueryLayer

ZOE = dict(channels=256, last=33)
SQL = dict(channels=64, patch=16, queries=128, bins=128)

CASES = [
    Case("zoe_head", "B1 96x128", dict(B=1, H=96, W=128), sets=("quick",)),
    Case("zoe_head", "B2 384x512", dict(B=2, H=384, W=512), sets=("cpu", "cuda")),
    Case("zoe_head", "B1 480x640", dict(B=1, H=480, W=640), sets=("cpu",)),
    Case("zoe_head", "B8 384x512", dict(B=8, H=384, W=512), sets=("cuda",)),
    Case("sql_head", "B1 64x256", dict(B=1, H=64, W=256, queries=16), sets=("quick",)),
    Case("sql_head", "B2 192x640", dict(B=2, H=192, W=640, queries=128), sets=("cpu", "cuda")),
    Case("sql_head", "B1 160x512", dict(B=1, H=160, W=512, queries=128), sets=("cpu",)),
    Case("sql_head", "B8 192x640", dict(B=8, H=192, W=640, queries=128), sets=("cuda",)),
]


def _zoe_levels(H: int, W: int):
    """The bottleneck at 1/32 and the four blocks at 1/16, 1/8, 1/4, 1/2 of the input."""
    return (H // 32, W // 32), [(H >> s, W >> s) for s in (4, 3, 2, 1)]


def flops(case: Case, mode: str) -> float:
    """The heads' 1x1 convolutions and matrix products (2 per multiply-add) dominate; the fused parts add
    per pixel and bin a few operations (counted: logit, exp, product, sum = 8 per pixel-bin for the
    expectations, 6 per attractor-bin pair). Backward: twice the products, the fused parts once more."""
    B, H, W = (case.dims[k] for k in "BHW")
    if case.op == "zoe_head":
        (bh, bw), blocks = _zoe_levels(H, W)
        C, E, K = ZOE["channels"], 128, 64
        convs = bh * bw * (C * C + C * 256 + 256 * K + C * 128 + 128 * E)
        convs += sum(h * w * (C * 128 + 128 * E + E * 128 + 128 * a) for (h, w), a in zip(blocks, (16, 8, 4, 1)))
        cin = ZOE["last"] + E
        convs += H * W * (cin * (cin // 2) + (cin // 2) * 4)
        fused = sum(h * w * a * K * 6 for (h, w), a in zip(blocks, (16, 8, 4, 1))) + H * W * K * 8
        fwd = 2 * B * convs + B * fused
    else:
        Q, K, E, p = case.dims["queries"], SQL["bins"], SQL["channels"], SQL["patch"]
        pixels = H * W
        convs = pixels * (E * E * 9 + 2 * Q * E + Q * K) + (pixels // p ** 2) * E * E * p * p
        fwd = 2 * B * convs + B * pixels * K * 8
    return fwd if mode == "fwd" else 3 * fwd


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")
    to = dict(device=device, dtype=case.torch_dtype, generator=generator)
    if case.op == "zoe_head":
        (bh, bw), blocks = _zoe_levels(H, W)
        C = ZOE["channels"]
        return {"bottleneck": torch.randn(B, C, bh, bw, **to).requires_grad_(),
                "blocks": [torch.randn(B, C, h, w, **to).requires_grad_() for h, w in blocks],
                "last": torch.rand(B, ZOE["last"], H, W, **to).requires_grad_()}
    return {"features": torch.randn(B, SQL["channels"], H, W, **to).requires_grad_()}


def make_fn(case: Case, backend: str, device: torch.device):
    name = backend_arg(backend, device)
    torch.manual_seed(0)  # the same weights for every backend
    if case.op == "zoe_head":
        head = MetricBinsHead(ZOE["channels"], [ZOE["channels"]] * 4, ZOE["last"], backend=name)
        head = head.to(device=device, dtype=case.torch_dtype)
        if backend == "reference":  # ZoeDepth's conditional MLP: the concatenation at full resolution
            head._conditional = lambda last, e: head.conditional(torch.cat(
                [last, F.interpolate(e, size=last.shape[-2:], mode="bilinear", align_corners=True)], 1))
        return lambda i: head(i["bottleneck"], i["blocks"], i["last"]).mean()
    layer = SelfQueryLayer(SQL["channels"], SQL["channels"], SQL["patch"], case.dims["queries"], SQL["bins"],
                           backend=name).to(device=device, dtype=case.torch_dtype)
    return lambda i: layer(i["features"]).mean()
