"""The compiled ops check the shapes of their own arguments (csrc/common/check.h check_shape), so a
direct caller of ``torch.ops.depthmetric.*`` (or a wrong backward input) gets an error naming the argument
and its layout instead of reading out of bounds. One row per checked argument, on every device."""
import pytest
import torch

import depthmetric as dm

from .registry import DEVICES, KERNEL_OPS, needs_ext

pytestmark = needs_ext

B, C, H, W = 2, 3, 6, 7
ops = torch.ops.depthmetric if dm.build_info()["compiled"] else None


def _images(device, n=1, channels=C):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(B, channels, H, W, generator=g).to(device) for _ in range(n)]


def _noise(device, s=1, h=H):
    return 1e-5 * torch.randn(s, B, h, W).to(device)


def _contrastive(device, depth_shape=(B, H, W), anchors=(0, B)):
    features, = _images(device, channels=4)
    shifts = torch.tensor([[0, 1, 2]], device=device)
    return ops.multi_range_contrastive(features, torch.rand(depth_shape, device=device), shifts, 0.1, [], [], [],
                                       *anchors)


def _contrastive_backward(device, grad_shape=(B, H, W), coef_shape=(1, B, H, W), anchor_start=0):
    features, = _images(device, channels=4)
    shifts = torch.tensor([[0, 1, 2]], device=device)
    return ops._multi_range_contrastive_backward(torch.rand(grad_shape, device=device), features, shifts,
                                                 torch.rand(coef_shape, device=device), anchor_start)


def _reprojection(device, warped_h=H, noise_h=H):
    target, source = _images(device, 2)
    warped = torch.rand(B, C, warped_h, W, device=device)
    return ops.min_reprojection(target, [warped], [source], _noise(device, h=noise_h), 0.85, False)


def _reprojection_backward(device, grad_shape=(B, H, W), winner_shape=(B, H, W)):
    target, warped = _images(device, 2)
    winner = torch.zeros(winner_shape, dtype=torch.long, device=device)
    return ops._min_reprojection_backward(torch.rand(grad_shape, device=device), target, [warped], winner, 0.85,
                                          False)


def _ssim(device, y_w=W):
    x, = _images(device)
    return ops.ssim(x, torch.rand(B, C, H, y_w, device=device), 0, 0)


def _ssim_backward(device, grad_shape=(B, C, H, W), partials_shape=(4, B, C, H, W)):
    x, y = _images(device, 2)
    return ops._ssim_backward(torch.rand(grad_shape, device=device), x, y, torch.rand(partials_shape, device=device),
                              0, 0)


def _metric_sums(device, gt_shape=(B, 1, H, W), mask_shape=(B, 1, H, W), scale_shape=(B,)):
    pred = torch.rand(B, 1, H, W, device=device) + 0.5
    gt = torch.rand(gt_shape, device=device) + 0.5
    mask = torch.ones(mask_shape, dtype=torch.bool, device=device)
    scale = torch.ones(scale_shape, dtype=torch.float64, device=device)
    return ops.depth_metric_sums(pred, gt, mask, scale, 1e-3, 10.0, [0, H, 0, W])


CASES = {  # kernel: [(call, wrong argument, expected message)]
    "multi_range_contrastive": [
        (_contrastive, dict(depth_shape=(B, H, W + 1)), r"depth must be B,H,W of features = \[2, 6, 7\]"),
        (_contrastive, dict(anchors=(1, 2)), r"anchor images 1\.\.3 must lie in the batch of 2"),
        (_contrastive_backward, dict(grad_shape=(B, H, W + 1)),
         r"grad_loss must be A,H,W = \[2, 6, 7\], got \[2, 6, 8\]"),
        (_contrastive_backward, dict(coef_shape=(2, B, H, W)), r"coef must be N,A,H,W = \[1, 2, 6, 7\]"),
        (_contrastive_backward, dict(anchor_start=1), r"anchor images 1\.\.3 must lie in the batch of 2"),
    ],
    "min_reprojection": [
        (_reprojection, dict(warped_h=H - 1), r"warped must be the target's B,C,H,W = \[2, 3, 6, 7\]"),
        (_reprojection, dict(noise_h=H + 1), r"noise must be S,B,H,W = \[1, 2, 6, 7\], got \[1, 2, 7, 7\]"),
        (_reprojection_backward, dict(grad_shape=(B, H, W, 1)), r"grad_loss must be B,H,W"),
        (_reprojection_backward, dict(winner_shape=(B, 1, H, W)), r"winner must be B,H,W"),
    ],
    "ssim": [
        (_ssim, dict(y_w=W - 1), r"y must be x's B,C,H,W = \[2, 3, 6, 7\], got \[2, 3, 6, 6\]"),
        (_ssim_backward, dict(grad_shape=(B, C, H, W - 1)), r"grad must be the SSIM map's B,C,H',W'"),
        (_ssim_backward, dict(partials_shape=(5, B, C, H, W)), r"partials must be 4,B,C,H',W' = \[4, 2, 3, 6, 7\]"),
    ],
    "depth_metric_sums": [
        (_metric_sums, dict(gt_shape=(B, 1, H, W + 1)), r"gt must be pred's B,1,H,W = \[2, 1, 6, 7\]"),
        (_metric_sums, dict(mask_shape=(B, H, W)), r"mask must be pred's B,1,H,W"),
        (_metric_sums, dict(scale_shape=(B + 1,)), r"scale must be \(B,\) = \[2\], got \[3\]"),
    ],
}


def _attractor(device, attractors_shape=(B, 4, H, W)):
    centers, = _images(device)
    return ops.attractor_shift(centers, torch.rand(attractors_shape, device=device), 300.0, 2, 0, True)


def _attractor_backward(device, grad_shape=(B, C, H, W)):
    centers, = _images(device)
    return ops._attractor_shift_backward(torch.rand(grad_shape, device=device), centers,
                                         torch.rand(B, 4, H, W, device=device), 300.0, 2, 0, True)


CASES["attractor_shift"] = [
    (_attractor, dict(attractors_shape=(B, 4, H, W + 1)),
     r"attractors must be B,A,h,w with the centers' B,h,w = \[2, 4, 6, 7\], got \[2, 4, 6, 8\]"),
    (_attractor, dict(attractors_shape=(B + 1, 4, H, W)), r"attractors must be B,A,h,w with the centers' B,h,w"),
    (_attractor, dict(attractors_shape=(B, 4, H)),
     r"attractors \(B,A,h,w\) must have 4 dimensions, got shape \[2, 4, 6\]"),
    (_attractor_backward, dict(grad_shape=(B, C + 1, H, W)),
     r"grad must be the centers' B,K,h,w = \[2, 3, 6, 7\], got \[2, 4, 6, 7\]"),
]


def _bins(device, centers_shape=(B, C, 3, 4), temperature_shape=(B, 1, H, W)):
    logits = torch.randn(B, C, H, W).to(device)
    return ops.bin_expectation(logits, torch.rand(centers_shape).to(device), torch.ones(temperature_shape).to(device))


def _bins_backward(device, grad_shape=(B, 1, H, W), stats_shape=(2, B, H, W)):
    logits, centers, temperature = torch.randn(B, C, H, W), torch.rand(B, C, 3, 4), torch.ones(B, 1, H, W)
    args = [torch.rand(grad_shape), logits, centers, temperature, torch.rand(stats_shape)]
    return ops._bin_expectation_backward(*[a.to(device) for a in args])


def _log_binomial(device, t_shape=(B, 1, H, W), centers_shape=(B, C, 3, 4), eps=1e-4):
    p, t, centers = torch.rand(B, 1, H, W), torch.ones(t_shape), torch.rand(centers_shape)
    return ops.log_binomial_expectation(p.to(device), t.to(device), centers.to(device), eps)


def _log_binomial_backward(device, grad_shape=(B, 1, H, W), stats_shape=(2, B, H, W)):
    p, t, centers = torch.rand(B, 1, H, W), torch.ones(B, 1, H, W), torch.rand(B, C, 3, 4)
    args = [torch.rand(grad_shape), p, t, centers, torch.rand(stats_shape)]
    return ops._log_binomial_expectation_backward(*[a.to(device) for a in args], 1e-4)


CASES["bin_expectation"] = [
    (_bins, dict(centers_shape=(B + 1, C, 3, 4)),
     r"centers must be B,K,h,w with B,K = \[2, 3\] and h, w >= 1, got \[3, 3, 3, 4\]"),
    (_bins, dict(centers_shape=(B, C, 0, 4)), r"centers must be B,K,h,w with B,K = \[2, 3\] and h, w >= 1"),
    (_bins, dict(temperature_shape=(B, 1, H, W + 1)), r"temperature must be B,1,H,W = \[2, 1, 6, 7\], got \[2, 1, 6, 8\]"),
    (_bins_backward, dict(grad_shape=(B, H, W)), r"grad must be B,1,H,W = \[2, 1, 6, 7\], got \[2, 6, 7\]"),
    (_bins_backward, dict(stats_shape=(1, B, H, W)), r"stats must be 2,B,H,W = \[2, 2, 6, 7\], got \[1, 2, 6, 7\]"),
]
CASES["log_binomial_expectation"] = [
    (_log_binomial, dict(t_shape=(B, 1, H + 1, W)), r"t must be B,1,H,W = \[2, 1, 6, 7\], got \[2, 1, 7, 7\]"),
    (_log_binomial, dict(centers_shape=(B, C, 3)), r"centers \(B,K,h,w\) must have 4 dimensions, got shape \[2, 3, 3\]"),
    (_log_binomial, dict(centers_shape=(B, 0, 3, 4)), r"centers must have at least one bin"),
    (_log_binomial, dict(eps=1.0), r"eps must be in \(0, 1\), got 1"),
    (_log_binomial_backward, dict(grad_shape=(B, 1, H, W + 1)), r"grad must be B,1,H,W = \[2, 1, 6, 7\]"),
    (_log_binomial_backward, dict(stats_shape=(2, B, H, W, 1)), r"stats must be 2,B,H,W = \[2, 2, 6, 7\]"),
]


def _order_args(device, values_shape=(B, H, W), valid_shape=(B, H, W), boxes_shape=(B, 2, 4), ranges_shape=(B, 2, 2),
                ids_shape=(B, 2)):
    values = torch.rand(values_shape)
    valid = torch.ones(valid_shape, dtype=torch.bool)
    labels = torch.zeros(B, H, W, dtype=torch.int64)
    boxes = torch.tensor([0, H, 0, W]).expand(boxes_shape).contiguous() if boxes_shape[-1:] == (4,) else torch.zeros(
        boxes_shape, dtype=torch.int64)
    ranges = torch.tensor([0.0, 1.0], dtype=torch.float64).expand(ranges_shape).contiguous() if ranges_shape[-1:] == (
        2,) else torch.zeros(ranges_shape, dtype=torch.float64)
    ids = torch.full(ids_shape, -1, dtype=torch.int64)
    return [a.to(device) for a in (values, valid, values.clone(), labels, boxes, ranges, ids)]


def _order(device, **shapes):
    return ops.order_statistics(*_order_args(device, **shapes), 0.2, 0, True)


def _order_backward(device, grad_shape=(B, 2, 4), stats_shape=(B, 2, 4), counts_shape=(B, 2, 5)):
    args = _order_args(device)
    stats = torch.zeros(stats_shape, device=device)
    counts = torch.zeros(counts_shape, dtype=torch.int64, device=device)
    return ops._order_statistics_backward(torch.rand(grad_shape, device=device), *args, 0.2, 0, stats, counts)


CASES["order_statistics"] = [
    (_order, dict(values_shape=(B, 1, H, W)), r"values \(B,H,W\) must have 3 dimensions, got shape \[2, 1, 6, 7\]"),
    (_order, dict(valid_shape=(B, H, W + 1)), r"valid must be the values' B,H,W = \[2, 6, 7\], got \[2, 6, 8\]"),
    (_order, dict(boxes_shape=(B, 2, 3)), r"boxes must be B,R,4 with the values' B = \[2, 2, 4\], got \[2, 2, 3\]"),
    (_order, dict(ranges_shape=(B, 3, 2)), r"ranges must be B,R,2 with the boxes' B,R = \[2, 2, 2\], got \[2, 3, 2\]"),
    (_order, dict(ids_shape=(B, 1)), r"ids must be B,R with the boxes' B,R = \[2, 2\], got \[2, 1\]"),
    (_order_backward, dict(grad_shape=(B, 2, 5)), r"grad must be B,R,4 = \[2, 2, 4\], got \[2, 2, 5\]"),
    (_order_backward, dict(stats_shape=(B, 1, 4)), r"stats must be B,R,4 = \[2, 2, 4\], got \[2, 1, 4\]"),
    (_order_backward, dict(counts_shape=(B, 2, 4)), r"counts must be B,R,5 = \[2, 2, 5\], got \[2, 2, 4\]"),
]


def test_every_kernel_of_the_registry_has_its_shape_cases():
    assert {op.kernel for op in KERNEL_OPS} <= set(CASES)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("call, wrong, message", [case for cases in CASES.values() for case in cases],
                         ids=lambda v: getattr(v, "__name__", None))
def test_compiled_op_rejects_a_wrong_shape(call, wrong, message, device):
    call(device)  # the same call with every shape right runs
    with pytest.raises(RuntimeError, match=message):
        call(device, **wrong)

