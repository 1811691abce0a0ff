"""Masked order statistics per region and the losses built on them, by selection (the order_statistics
kernel) against sorting.

- ``region_median``: each image's median and MAD of the valid pixels; the kernel vs the twin (which sorts
  every region) and ``torch.median`` per image (a loop over the batch, as MiDaS's ``normalize_prediction_robust``
  runs it).
- ``midas_loss``: MiDaS / Depth Anything's ssitrim + 0.5 x gradient matching (4 scales) with Video Depth
  Anything's semantics (median over all pixels, trimming the batch's pooled residuals, divided by the batch's
  valid count) at Depth Anything's 518x518, batch 4 (and MiDaS's 384x384, batch 8): the kernel, the twin, and ``vda``: Video Depth Anything's
  ``TrimmedProcrustesLoss`` formulation written here from its description (per-image ``torch.median``, a sort
  of the pooled residuals): the sort-based version the kernel replaces.
- ``trimmed_mae``: Depth Pro's trimmed MAE (trim 0.2) on the kernel vs ``sort``: the library's former
  implementation (every image's errors sorted), at NYU 480x640 x B8, KITTI 375x1242 x B4 and 518x518 x B4.

Ground truth uniform in 0.5..10 m with 5% invalid pixels; the prediction is it times ``exp(0.1 * noise)`` and
the only input differentiated.
"""
from __future__ import annotations

import math

import torch

import depthmetric
from benchmarks.harness import Case, backend_arg

_QUICK = dict(B=2, H=24, W=32)
_DA = dict(B=4, H=518, W=518)
_NYU, _KITTI = dict(B=8, H=480, W=640), dict(B=4, H=375, W=1242)
_MIDAS = dict(B=8, H=384, W=384)  # MiDaS's training crop


def _label(d: dict) -> str:
    return f"B{d['B']} 1x{d['H']}x{d['W']}"


CASES = []
for op, backends, sizes in [
    ("region_median", ("kernel", "reference", "torch_median"), [(_DA, ("cpu", "cuda")), (_NYU, ("cpu", "cuda"))]),
    ("midas_loss", ("kernel", "reference", "vda"), [(_DA, ("cpu", "cuda")), (_MIDAS, ("cpu", "cuda"))]),
    ("trimmed_mae", ("kernel", "sort"), [(_DA, ("cpu", "cuda")), (_NYU, ("cpu", "cuda")), (_KITTI, ("cpu", "cuda"))]),
]:
    CASES.append(Case(op, _label(_QUICK), _QUICK, sets=("quick",), backends=backends))
    CASES += [Case(op, _label(d), d, sets=sets, backends=backends) for d, sets in sizes]

# Per pixel: validity and |x - m| with its sum (4), about 2 comparisons of the selection and the passes over the
# region (4); the losses add the normalisation (4), the residual (2) and for midas_loss 4 scales of differences
# (about 10 x 4/3). Backward about as many.
_FLOPS = {"region_median": 8, "midas_loss": 34, "trimmed_mae": 6}


def flops(case: Case, mode: str) -> float:
    pixels = case.dims["B"] * case.dims["H"] * case.dims["W"]
    return pixels * _FLOPS[case.op] * (1 if mode == "fwd" else 2)


def make_inputs(case: Case, device: torch.device, generator: torch.Generator) -> dict:
    B, H, W = (case.dims[k] for k in "BHW")

    def rand() -> torch.Tensor:
        return torch.rand(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)

    dense = 0.5 + 9.5 * rand()
    gt = torch.where(rand() < 0.95, dense, torch.zeros_like(dense))
    noise = torch.randn(B, 1, H, W, device=device, dtype=case.torch_dtype, generator=generator)
    return {"pred": (dense * torch.exp(0.1 * noise)).requires_grad_(case.backward), "gt": gt}


def _vda_normalize(x, mask):
    """Video Depth Anything's normalisation: the median of mask * x over every pixel (torch.median per image),
    the mean absolute deviation over the valid pixels, clamped at 1e-6; median 0, scale 1 without valid pixels."""
    B = x.shape[0]
    flat, m = x.reshape(B, -1), mask.reshape(B, -1).to(x.dtype)
    count = m.sum(1)
    med = torch.stack([(f * w).median() for f, w in zip(flat, m)])
    med = torch.where(count > 0, med, 0.0)
    s = torch.where(count > 0, ((flat - med[:, None]).abs() * m).sum(1) / count.clamp(min=1), 1.0).clamp(min=1e-6)
    return ((flat - med[:, None]) / s[:, None]).reshape(x.shape)


def _vda_loss(pred, gt, trim=0.2, alpha=0.5, scales=4):
    mask = gt > 0
    p, t = _vda_normalize(pred, mask), _vda_normalize(gt, mask)
    res = (p - t)[mask].abs()
    kept = res.sort().values[: int(res.numel() * (1.0 - trim))]
    data = kept.sum() / mask.sum()  # VDA's TrimmedMAELoss: over M, not the MiDaS paper's 2M
    m = mask.to(pred.dtype)
    diff = (p - t) * m
    grad = pred.new_zeros(())
    for k in range(scales):
        s = 2 ** k
        d, mk = diff[..., ::s, ::s], m[..., ::s, ::s]
        gx = (d[..., 1:] - d[..., :-1]).abs() * mk[..., 1:] * mk[..., :-1]
        gy = (d[..., 1:, :] - d[..., :-1, :]).abs() * mk[..., 1:, :] * mk[..., :-1, :]
        grad = grad + (gx.sum() + gy.sum()) / mk.sum().clamp(min=1)
    return data + alpha * grad


def _sort_trimmed_mae(pred, gt, trim=0.2):
    valid = gt > 0
    err = torch.where(valid, (pred - gt).abs(), math.inf).flatten(1)
    ordered, _ = err.sort(dim=1)
    n = valid.flatten(1).sum(1)
    keep = n - torch.floor(n.to(torch.float64) * trim).to(n.dtype)
    kept = torch.arange(ordered.shape[1], device=pred.device) < keep[:, None]
    per_image = torch.where(kept, ordered, 0.0).sum(1) / keep.clamp(min=1).to(pred.dtype)
    return per_image[n > 0].mean()


def _torch_median(pred, gt):
    valid = gt > 0
    out = []
    for x, v in zip(pred[:, 0], valid[:, 0]):
        values = x[v]
        med = values.median()
        out.append(med + (values - med).abs().mean())
    return torch.stack(out).sum()


def make_fn(case: Case, backend: str, device: torch.device):
    if case.op == "region_median":
        if backend == "torch_median":
            return lambda i: _torch_median(i["pred"], i["gt"])
        name = backend_arg(backend, device)

        def fn(i):
            med, mad, _ = depthmetric.region_median(i["pred"], i["gt"] > 0, backend=name)
            return (med + mad).sum()
        return fn
    if case.op == "midas_loss":
        if backend == "vda":
            return lambda i: _vda_loss(i["pred"], i["gt"])
        loss = depthmetric.MiDaSLoss(median_over="all", trim_over="batch", pool="batch", halve=False,
                                     backend=backend_arg(backend, device))
        return lambda i: loss(i["pred"], i["gt"])
    if backend == "sort":
        return lambda i: _sort_trimmed_mae(i["pred"], i["gt"])
    loss = depthmetric.TrimmedMAELoss(trim=0.2, backend=backend_arg(backend, device))
    return lambda i: loss(i["pred"], i["gt"])
