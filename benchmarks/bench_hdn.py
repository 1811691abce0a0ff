"""Metric3D v2's hierarchical depth normalisation loss (``hdn_loss``) with Metric3D's random regions: 10
ground-truth depth intervals and 20 boxes per image (``draw_hdn_regions``), at Metric3D's 616x1064 training
crop, batch 2 (and NYU's 480x640, batch 4).

- ``kernel``: the library (medians and MADs selected by the ``order_statistics`` kernel, the region pass in
  chunks, recomputed in the backward);
- ``reference``: the same loss on the twin (which sorts every materialised region), quick set only;
- ``metric3d``: the loss as Metric3D computes it, written here from its formula: per image, the regions'
  ``H x W`` masks materialised, in groups of 4 as ``HDNRandomLoss`` loops them, each map's median by
  ``torch.nanmedian`` over NaN-filled copies, the MAD and the normalised L1 over the masks.

Ground truth uniform in 0.5..10 m with 5% invalid pixels; the prediction is it times ``exp(0.1 * noise)``
and the only input differentiated.
"""
from __future__ import annotations

import torch

import depthmetric
from benchmarks.bench_order_statistics import make_inputs as order_statistics_inputs
from benchmarks.harness import Case, backend_arg

_QUICK = dict(B=2, H=24, W=40, ranges=3, boxes=4)
_METRIC3D = dict(B=2, H=616, W=1064, ranges=10, boxes=20)  # Metric3D v2's crop; HDN's intervals, HDSN's boxes
_NYU = dict(B=4, H=480, W=640, ranges=10, boxes=20)


def _label(d: dict) -> str:
    return f"B{d['B']} 1x{d['H']}x{d['W']} R{d['ranges']}+{d['boxes']}"


CASES = [
    Case("hdn_loss", _label(_QUICK), _QUICK, sets=("quick",), backends=("kernel", "reference", "metric3d")),
    *(Case("hdn_loss", _label(d), d, sets=("cpu", "cuda"), backends=("kernel", "metric3d")) for d in (_METRIC3D, _NYU)),
]


def flops(case: Case, mode: str) -> float:
    """Per pixel of each region: membership (2), both maps centred and scaled (4), the residual and its
    absolute value (3), the sums (2); the medians' selection about 2 per pixel per map. Backward about as
    many again."""
    d = case.dims
    region_pixels = d["B"] * d["H"] * d["W"] * (d["ranges"] + d["boxes"])
    return region_pixels * 15 * (1 if mode == "fwd" else 2)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    """The order-statistics bench's depth pair (95% valid ground truth, a log-normal prediction) and
    Metric3D's random regions drawn for it."""
    inputs = order_statistics_inputs(case, device, generator)
    seed = int(torch.randint(0, 2 ** 31 - 1, (1,), device=device, generator=generator))
    regions = depthmetric.draw_hdn_regions(inputs["gt"], n_ranges=case.dims["ranges"], n_boxes=case.dims["boxes"],
                                           generator=torch.Generator().manual_seed(seed))
    return {**inputs, **regions}


def _metric3d_masks(gt, valid, ranges, boxes):
    """One image's region masks, ``R,1,H,W`` bool: the depth intervals, then the boxes."""
    H, W = gt.shape[-2:]
    lo, hi = ranges[:, 0].view(-1, 1, 1, 1).to(gt.dtype), ranges[:, 1].view(-1, 1, 1, 1).to(gt.dtype)
    in_range = (gt >= lo) & (gt < hi) & valid
    rows = torch.arange(H, device=gt.device).view(1, 1, H, 1)
    cols = torch.arange(W, device=gt.device).view(1, 1, 1, W)
    y0, y1, x0, x1 = (boxes[:, k].view(-1, 1, 1, 1) for k in range(4))
    in_box = (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1) & valid
    return torch.cat([in_range, in_box])


def _metric3d_group(pred, gt, masks, eps=1e-6):
    """The normalised L1 summed over a group of masks (``N,1,H,W``), each map by its nanmedian and MAD."""
    N = masks.shape[0]
    n = masks.flatten(1).sum(1).view(N, 1, 1, 1) + eps
    out = []
    for x, detach in ((pred, True), (gt, False)):
        source = x.detach() if detach else x
        filled = torch.where(masks, source.expand_as(masks), float("nan"))
        med = filled.flatten(1).nanmedian(1).values.view(N, 1, 1, 1)
        med = torch.where(torch.isnan(med), 0.0, med)
        s = ((x - med).abs() * masks).flatten(1).sum(1).view(N, 1, 1, 1) / n
        out.append((x - med) / (s + eps))
    return ((out[1] - out[0]).abs() * masks).sum()


def _metric3d_loss(pred, gt, depth_ranges, boxes, group=4, eps=1e-6):
    valid = gt > 0
    total, count = pred.new_zeros(()), 0
    for b in range(pred.shape[0]):
        masks = _metric3d_masks(gt[b], valid[b], depth_ranges[b], boxes[b])
        for k in range(0, masks.shape[0], group):
            chunk = masks[k:k + group]
            total = total + _metric3d_group(pred[b], gt[b], chunk, eps)
            count = count + chunk.sum()
    return total / (count + eps)


def make_fn(case: Case, backend: str, device: torch.device):
    if backend == "metric3d":
        return lambda i: _metric3d_loss(i["pred"], i["gt"], i["depth_ranges"], i["boxes"])
    loss = depthmetric.HDNLoss(backend=backend_arg(backend, device))
    return lambda i: loss(i["pred"], i["gt"], i["gt"] > 0, depth_ranges=i["depth_ranges"], boxes=i["boxes"])
