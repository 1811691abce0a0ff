"""Metric3D v2's hierarchical depth normalisation loss (hdn_loss / HDNLoss) and its random regions
(draw_hdn_regions): values worked independently in numpy loops (HDNRandomLoss's and HDSNRandomLoss's
formulas written out), depth ranges, boxes and labels alone and together, ties, even and odd counts, empty
and one-pixel regions, an all-invalid image, float32 vs float64, gradients against a float64 autograd
formula with materialised masks, gradcheck, kernel vs twin, chunking, compile, errors naming the argument."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric import hdn

from .registry import COMPILED, depth_pair, needs_ext

BACKENDS = ["reference", "cpu"] if COMPILED else ["reference"]
EPS = 1e-6


def lower_median(v):
    return np.sort(v)[(v.size - 1) // 2]


# ---------------------------------------------------------------------------------------------------------
# Inputs and the regions as numpy masks.

def inputs(B=3, H=13, W=18, dtype=torch.float64, seed=0, ties=False):
    """A pair with holes of every kind and a last image without valid pixels, and regions of every kind:
    empty ones (a range beyond the data, a box outside the image, an unused label), a one-pixel box, a box
    reaching outside the image, an open range."""
    pred, gt = depth_pair(B, H, W, dtype=torch.float64, seed=seed)
    gt[0, 0, 2, 4] = 5.0  # the one-pixel box's pixel is valid
    if ties:
        pred, gt = (pred * 4).round() / 4 + 0.25, (gt * 2).round() / 2
    ranges = torch.tensor([[1.0, 4.0], [3.0, 12.1], [100.0, 200.0], [-math.inf, 2.5]], dtype=torch.float64)
    boxes = torch.tensor([[0, H // 2, 0, W], [H // 3, H, W // 4, W], [2, 3, 4, 5], [50, 60, 0, 5], [-3, 4, -1, 6]])
    g = torch.Generator().manual_seed(seed + 11)
    labels = torch.randint(-1, 3, (B, H, W), generator=g)
    return (pred.to(dtype), gt.to(dtype), ranges.expand(B, 4, 2).contiguous(), boxes.expand(B, 5, 4).contiguous(),
            labels)


def np_regions(t, m, ranges=None, boxes=None, labels=None, num_labels=0):
    """[(b, mask)] for every region in the loss's order: per image, the ranges, the boxes, the label ids."""
    B, H, W = t.shape
    rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
    out = []
    for b in range(B):
        if ranges is not None:
            for lo, hi in ranges[b]:
                out.append((b, m[b] & (t[b] >= lo) & (t[b] < hi)))
        if boxes is not None:
            for y0, y1, x0, x1 in boxes[b]:
                out.append((b, m[b] & (rows >= y0) & (rows < y1) & (cols >= x0) & (cols < x1)))
        if labels is not None:
            for k in range(num_labels):
                out.append((b, m[b] & (labels[b] == k)))
        if ranges is None and boxes is None and labels is None:
            out.append((b, m[b].copy()))
    return out


def np_hdn(p, t, m, regions, mad_over):
    """(mean, per image) of Metric3D's loss, each region's statistics in a loop."""
    B = p.shape[0]
    sums, counts = np.zeros(B), np.zeros(B)
    for b, member in regions:
        n = int(member.sum())
        if n == 0:
            continue
        normalised = []
        for x in (p[b], t[b]):
            med = lower_median(x[member])
            if mad_over == "region":
                s = np.abs(x[member] - med).sum() / (n + 1e-6)
            else:  # over the image's valid pixels
                s = np.abs(x[m[b]] - med).sum() / (n + 1e-10)
            normalised.append((x[member] - med) / (s + 1e-6))
        total = 0.0
        for pn, tn in zip(*normalised):
            total += abs(tn - pn)
        sums[b] += total
        counts[b] += n
    return sums.sum() / (counts.sum() + EPS), sums / (counts + EPS)


def np_inputs(pred, gt):
    g = gt.double().numpy()[:, 0]
    m = np.isfinite(g) & (g > 0)
    return pred.double().numpy()[:, 0], np.where(m, g, 0.0), m


KINDS = {
    "ranges": lambda r, b, lab: dict(depth_ranges=r),
    "boxes": lambda r, b, lab: dict(boxes=b),
    "labels": lambda r, b, lab: dict(labels=lab, num_labels=4),  # id 3 is unused: an empty region
    "all": lambda r, b, lab: dict(depth_ranges=r, boxes=b, labels=lab, num_labels=4),
    "whole": lambda r, b, lab: {},
}


def np_kind(kwargs, t, m):
    return np_regions(t, m, None if kwargs.get("depth_ranges") is None else kwargs["depth_ranges"].numpy(),
                      None if kwargs.get("boxes") is None else kwargs["boxes"].numpy(),
                      None if kwargs.get("labels") is None else kwargs["labels"].numpy(), kwargs.get("num_labels", 0))


# ---------------------------------------------------------------------------------------------------------
# Values.

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("mad_over", ["region", "image"])
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("H,W", [(13, 18), (8, 9)])
def test_against_numpy(H, W, kind, mad_over, ties, dtype, backend):
    pred, gt, ranges, boxes, labels = inputs(H=H, W=W, dtype=dtype, ties=ties)
    kwargs = KINDS[kind](ranges, boxes, labels)
    p, t, m = np_inputs(pred, gt)
    want_mean, want_images = np_hdn(p, t, m, np_kind(kwargs, t, m), mad_over)
    assert want_mean > 0.05 and want_images[-1] == 0  # something to compare; the last image has no valid pixel
    tol = dict(rtol=2e-5, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-11, atol=1e-13)
    got = dm.hdn_loss(pred, gt, **kwargs, mad_over=mad_over, backend=backend)
    assert got.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    torch.testing.assert_close(got.double(), torch.tensor(want_mean, dtype=torch.float64), **tol)
    per_image = dm.HDNLoss(mad_over=mad_over, reduction="none", backend=backend)(pred, gt, None, **kwargs)
    torch.testing.assert_close(per_image.double(), torch.tensor(want_images), **tol)


def test_kinds_given_together_are_the_sum_of_their_regions():
    """Metric3D concatenates interval, crop and semantic masks: R1 + R2 regions, not their intersections."""
    pred, gt, ranges, boxes, labels = inputs()
    p, t, m = np_inputs(pred, gt)
    alone = (dict(depth_ranges=ranges), dict(boxes=boxes))
    counts = [sum(int(member.sum()) for _, member in np_kind(kw, t, m)) for kw in alone]
    sums = [dm.hdn_loss(pred, gt, **kw) * (n + EPS) for kw, n in zip(alone, counts)]
    both = dm.hdn_loss(pred, gt, depth_ranges=ranges, boxes=boxes)
    torch.testing.assert_close(both, sum(sums) / (sum(counts) + EPS), rtol=1e-12, atol=0)


def test_the_mask_and_no_region_argument():
    pred, gt, *_ = inputs(B=2)
    mask = torch.rand(2, 1, 13, 18, generator=torch.Generator().manual_seed(3)) > 0.3
    full = torch.tensor([0, 13, 0, 18]).expand(2, 1, 4)
    torch.testing.assert_close(dm.hdn_loss(pred, gt, mask), dm.hdn_loss(pred, gt, mask, boxes=full), rtol=1e-14,
                               atol=0)
    p, t, m = np_inputs(pred, gt)
    m &= mask.numpy()[:, 0]
    want, _ = np_hdn(p, t, m, np_regions(t, m), "region")
    torch.testing.assert_close(dm.hdn_loss(pred, gt, mask[:, 0]), torch.tensor(want, dtype=torch.float64),
                               rtol=1e-11, atol=0)


def test_all_invalid_and_empty_regions_give_zero_with_a_zero_gradient():
    pred, gt, ranges, boxes, _ = inputs(B=2)
    x = pred.clone().requires_grad_()
    for backend in BACKENDS:
        for kwargs in (dict(depth_ranges=ranges), dict(boxes=boxes), {}):
            loss = dm.hdn_loss(x, torch.zeros_like(gt), **kwargs, backend=backend)
            grad, = torch.autograd.grad(loss, x)
            assert loss.item() == 0 and torch.equal(grad, torch.zeros_like(grad))
        loss = dm.hdn_loss(x, gt, depth_ranges=ranges[:, 2:3], backend=backend)  # [100, 200): nothing
        assert loss.item() == 0


def test_a_one_pixel_region_adds_its_count_and_nothing_else():
    """One pixel: both maps minus their median are 0, so it adds 0 to the sum and 1 to the count."""
    pred, gt, *_ = inputs(B=2)
    box = torch.tensor([[0, 13, 0, 9]]).expand(2, 1, 4)
    pixel = torch.tensor([[0, 13, 0, 9], [2, 3, 4, 5]]).expand(2, 2, 4)
    p, t, m = np_inputs(pred, gt)
    n = int(m[0, :, :9].sum())
    for backend in BACKENDS:
        torch.testing.assert_close(dm.hdn_loss(pred, gt, boxes=pixel, backend=backend) * (n + 1 + EPS),
                                   dm.hdn_loss(pred, gt, boxes=box, backend=backend) * (n + EPS), rtol=1e-12, atol=0)


@pytest.mark.parametrize("mad_over", ["region", "image"])
def test_chunks_and_backends_agree(mad_over, monkeypatch):
    """The region pass in chunks of one region (a boundary between every two) and in one chunk, with the
    compiled path's host-read runs and crops and without, on both backends: values and gradients."""
    pred, gt, ranges, boxes, labels = inputs(H=11, W=14)
    kwargs = dict(depth_ranges=ranges, boxes=boxes, labels=labels, num_labels=4, mad_over=mad_over)
    results = []
    for chunk, host in ((hdn.CHUNK, True), (hdn.CHUNK, False), (1, False)):
        monkeypatch.setattr(hdn, "CHUNK", chunk)
        monkeypatch.setattr(hdn, "HOST_INDEX", host)
        for backend in BACKENDS:
            x = pred.clone().requires_grad_()
            loss = dm.hdn_loss(x, gt, **kwargs, backend=backend)
            results.append((loss, *torch.autograd.grad(loss, x)))
    for loss, grad in results[1:]:
        torch.testing.assert_close(loss, results[0][0], rtol=1e-12, atol=0)
        torch.testing.assert_close(grad, results[0][1], rtol=1e-10, atol=1e-13)


def test_float32_follows_float64():
    pred, gt, ranges, boxes, _ = inputs(H=16, W=21)
    for backend in BACKENDS:
        wide = dm.hdn_loss(pred, gt, depth_ranges=ranges, boxes=boxes, backend=backend)
        narrow = dm.hdn_loss(pred.float(), gt.float(), depth_ranges=ranges, boxes=boxes, backend=backend)
        torch.testing.assert_close(narrow.double(), wide, rtol=2e-5, atol=0)


# ---------------------------------------------------------------------------------------------------------
# Gradients.

def torch_hdn(p, t, m, regions, mad_over):
    """Metric3D's formula in float64 autograd with materialised masks: the prediction's median detached, its
    MAD not."""
    total, count = p.sum() * 0, 0
    for b, member in regions:
        member = torch.from_numpy(member)
        n = int(member.sum())
        if n == 0:
            continue
        normalised = []
        for x in (p[b], t[b]):
            med = x.detach()[member].sort().values[(n - 1) // 2]
            if mad_over == "region":
                s = (x[member] - med).abs().sum() / (n + 1e-6)
            else:
                s = (x[torch.from_numpy(m[b])] - med).abs().sum() / (n + 1e-10)
            normalised.append((x[member] - med) / (s + 1e-6))
        total = total + (normalised[1] - normalised[0]).abs().sum()
        count += n
    return total / (count + EPS)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("ties", [False, True])
@pytest.mark.parametrize("mad_over", ["region", "image"])
@pytest.mark.parametrize("kind", ["ranges", "boxes", "labels", "all"])
def test_gradient_matches_the_autograd_formula(kind, mad_over, ties, backend):
    pred, gt, ranges, boxes, labels = inputs(ties=ties)
    kwargs = KINDS[kind](ranges, boxes, labels)
    p, t, m = np_inputs(pred, gt)
    x = pred[:, 0].clone().requires_grad_()
    want = torch_hdn(x, torch.from_numpy(t), m, np_kind(kwargs, t, m), mad_over)
    want_grad, = torch.autograd.grad(want, x)
    y = pred.clone().requires_grad_()
    got = dm.hdn_loss(y, gt, **kwargs, mad_over=mad_over, backend=backend)
    grad, = torch.autograd.grad(got, y)
    torch.testing.assert_close(got, want, rtol=1e-11, atol=0)
    torch.testing.assert_close(grad[:, 0], want_grad, rtol=1e-9, atol=1e-12)
    assert want_grad.abs().max() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("mad_over", ["region", "image"])
def test_gradcheck_away_from_the_medians(mad_over, backend):
    """float64 gradcheck over every pixel that is no region's median (the median carries no gradient, as in
    Metric3D, so a finite difference at a median pixel differs by design); distinct values."""
    pred, gt, ranges, boxes, labels = inputs(B=2, H=6, W=7, seed=4)
    kwargs = dict(depth_ranges=ranges, boxes=boxes[:, :2], labels=labels, num_labels=3, mad_over=mad_over)
    p, t, m = np_inputs(pred, gt)
    medians = np.zeros(p.shape, bool)
    for b, member in np_kind(kwargs, t, m):
        if member.any():
            medians[b] |= member & (p[b] == lower_median(p[b][member]))
    free = torch.from_numpy(~medians)[:, None]
    assert free.sum() > 40

    def fn(values):
        full = pred.clone()
        full[free] = values
        return dm.hdn_loss(full, gt, **kwargs, backend=backend)
    assert torch.autograd.gradcheck(fn, (pred[free].clone().requires_grad_(),))


def test_the_prediction_median_carries_no_gradient_and_the_target_none():
    """One region of three pixels: p = (1, 2, 4), t = (1, 2, 3). med_p = 2, s_p = 3 / (3 + 1e-6); the gradient
    at the median pixel is the MAD's alone: sign(0) = 0 there, so only the direct term -sign(d) / (s + eps)."""
    pred = torch.tensor([[[[1.0, 2.0, 4.0]]]], dtype=torch.float64, requires_grad=True)
    gt = torch.tensor([[[[1.0, 2.0, 3.0]]]], dtype=torch.float64, requires_grad=True)
    for backend in BACKENDS:
        loss = dm.hdn_loss(pred, gt, backend=backend)
        gp, gt_grad = torch.autograd.grad(loss, (pred, gt), allow_unused=True)
        assert gt_grad is None or torch.equal(gt_grad, torch.zeros_like(gt_grad))
        sp, st = 3 / (3 + 1e-6) + 1e-6, 2 / (3 + 1e-6) + 1e-6
        d = np.array([-1 / st + 1 / sp, 0.0, 1 / st - 2 / sp])  # t_hat - p_hat
        want_loss = np.abs(d).sum() / (3 + EPS)
        # d p_hat_i / d p_j = delta_ij / sp - (p_i - 2) sign(p_j - 2) / (sp^2 (3 + 1e-6)); the median is constant
        sign_p = np.sign([-1.0, 0.0, 2.0])
        want = np.array([sum(-np.sign(d[i]) * ((i == j) / sp - [-1.0, 0.0, 2.0][i] * sign_p[j] / (sp ** 2 * (3 + 1e-6)))
                             for i in range(3)) for j in range(3)]) / (3 + EPS)
        torch.testing.assert_close(loss, torch.tensor(want_loss, dtype=torch.float64), rtol=1e-12, atol=0)
        torch.testing.assert_close(gp.flatten(), torch.from_numpy(want), rtol=1e-10, atol=1e-14)


@needs_ext
@pytest.mark.parametrize("mad_over", ["region", "image"])
def test_double_backward_of_the_kernel_path_is_the_reference_formula(mad_over):
    """create_graph=True: the compiled path's gradient is the plain formula's, itself differentiable (the
    image MADs recomputed inside, so their path is counted once)."""
    pred, gt, ranges, boxes, _ = inputs(B=2, H=7, W=8)
    grads = []
    for backend in ("cpu", "reference"):
        x = pred.clone().requires_grad_()
        loss = dm.hdn_loss(x, gt, depth_ranges=ranges, boxes=boxes, mad_over=mad_over, backend=backend)
        g, = torch.autograd.grad(loss, x, create_graph=True)
        plain, = torch.autograd.grad(dm.hdn_loss(x, gt, depth_ranges=ranges, boxes=boxes, mad_over=mad_over,
                                                 backend=backend), x)
        assert g.requires_grad
        torch.testing.assert_close(g.detach(), plain, rtol=1e-10, atol=1e-13)
        hvp, = torch.autograd.grad((g * torch.linspace(0, 1, g.numel()).view_as(g)).sum(), x)
        grads.append((g.detach(), hvp))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-13)


@needs_ext
def test_compile_fullgraph():
    torch._dynamo.reset()
    pred, gt, ranges, boxes, labels = inputs(B=2, H=12, W=14, dtype=torch.float32)
    loss_fn = dm.HDNLoss()
    kwargs = dict(depth_ranges=ranges, boxes=boxes, labels=labels, num_labels=4)
    x0, x1 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    compiled = torch.compile(lambda v: loss_fn(v, gt, None, **kwargs), fullgraph=True)(x1)
    eager = loss_fn(x0, gt, None, **kwargs)
    compiled.backward()
    eager.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(x1.grad, x0.grad)


# ---------------------------------------------------------------------------------------------------------
# Errors.

def test_errors_name_the_argument():
    pred, gt, ranges, boxes, labels = inputs(B=2, H=5, W=6)
    bad = [
        (dict(boxes=boxes[..., :3]), ValueError, "boxes must be B,R,4"),
        (dict(boxes=boxes[:1]), ValueError, "boxes must be B,R,4"),
        (dict(boxes=boxes.double()), TypeError, "boxes must be an integer"),
        (dict(depth_ranges=ranges[..., :1]), ValueError, "depth_ranges must be B,R,2"),
        (dict(depth_ranges=ranges.long()), TypeError, "depth_ranges must be an floating"),
        (dict(depth_ranges=ranges.tolist()), TypeError, "depth_ranges must be a torch.Tensor"),
        (dict(labels=labels.double(), num_labels=3), TypeError, "labels must be an integer label map"),
        (dict(labels=labels.bool(), num_labels=3), TypeError, "labels must be an integer label map"),
        (dict(labels=labels[:, :3], num_labels=3), ValueError, "labels must have the values' shape"),
        (dict(labels=labels, num_labels=-1), ValueError, "num_labels must be >= 0"),
        (dict(labels=labels, num_labels=2.0), TypeError, "num_labels must be an int"),
        (dict(mad_over="pixel"), ValueError, "mad_over must be one of"),
        (dict(reduction="max"), ValueError, "reduction must be one of"),
        (dict(normalize="world"), ValueError, "normalize must be one of"),
        (dict(interpolate="no"), TypeError, "interpolate must be True or False"),
    ]
    for kwargs, error, message in bad:
        with pytest.raises(error, match=message):
            dm.hdn_loss(pred, gt, **kwargs)
    with pytest.raises(ValueError, match="mad_over must be one of"):
        dm.HDNLoss(mad_over="batch")
    with pytest.raises(ValueError, match="boxes is on meta"):
        dm.hdn_loss(pred, gt, boxes=boxes.to("meta"))


def test_labels_default_to_their_largest_id():
    pred, gt, _, _, labels = inputs()
    torch.testing.assert_close(dm.hdn_loss(pred, gt, labels=labels), dm.hdn_loss(pred, gt, labels=labels,
                                                                                 num_labels=3), rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------------------
# draw_hdn_regions.

def test_draw_is_reproducible_and_shaped():
    target = depth_pair(3, 64, 80, seed=2)[1]
    a = dm.draw_hdn_regions(target, generator=torch.Generator().manual_seed(5))
    b = dm.draw_hdn_regions(target, generator=torch.Generator().manual_seed(5))
    c = dm.draw_hdn_regions(target, generator=torch.Generator().manual_seed(6))
    assert set(a) == {"depth_ranges", "boxes"}
    assert a["depth_ranges"].shape == (3, 10, 2) and a["depth_ranges"].dtype == torch.float64
    assert a["boxes"].shape == (3, 20, 4) and a["boxes"].dtype == torch.int64
    for k in a:
        assert torch.equal(a[k], b[k]) and not torch.equal(a[k], c[k])
    assert dm.hdn_loss(depth_pair(3, 64, 80, seed=2)[0], target, **a) > 0


def test_drawn_ranges_follow_metric3d():
    """lo = a + u (b - a), u in [0, 0.75); hi = a + v (b - a), v uniform between lo + 0.1 (lo in metres, as
    Metric3D's code has it) and 1 - 1e-6; per image from its valid min a and max b; 0, 0 without any."""
    g = torch.Generator().manual_seed(0)
    target = torch.cat([0.1 + 0.4 * torch.rand(1, 1, 30, 40, generator=g, dtype=torch.float64),  # below 0.9 m
                        2 + 60 * torch.rand(1, 1, 30, 40, generator=g, dtype=torch.float64),
                        torch.zeros(1, 1, 30, 40, dtype=torch.float64)])
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[1, 0, :, :20] = False
    regions = dm.draw_hdn_regions(target, mask, n_ranges=500, n_boxes=3, generator=torch.Generator().manual_seed(1))
    lo, hi = regions["depth_ranges"].unbind(-1)
    for b in range(2):
        valid = target[b][mask[b]]
        a, span = valid.min().item(), valid.max().item() - valid.min().item()
        u, v = (lo[b] - a) / span, (hi[b] - a) / span
        assert 0 <= u.min() and u.max() < 0.75 and u.max() > 0.7 and u.min() < 0.05
        low = lo[b] + 0.1
        w = (v - low) / ((1 - 1e-6) - low)  # the uniform draw behind v, in [0, 1)
        assert 0 <= w.min() and w.max() < 1 and w.max() > 0.95 and w.min() < 0.05
    assert (hi[0] <= target[0].max() + 1e-12).all()  # depths below 0.9 m: hi within the range
    assert (hi[1] >= target[1][mask[1]].max() - 1e-6 * 60).all()  # beyond: every interval reaches the maximum
    assert torch.equal(regions["depth_ranges"][2], torch.zeros(500, 2, dtype=torch.float64))


def test_drawn_boxes_follow_metric3d():
    """Heights from int(0.125 H) .. int(0.5 H) - 1 (12 .. 49), widths likewise (15 .. 59), tops from
    0 .. H - int(0.125 H) - 1, lefts likewise, all without replacement; clipped to the image."""
    target = torch.ones(2, 1, 100, 120)
    boxes = dm.draw_hdn_regions(target, n_boxes=30, generator=torch.Generator().manual_seed(2))["boxes"]
    assert torch.equal(boxes[0], boxes[1])  # one draw for the batch
    y0, y1, x0, x1 = boxes[0].unbind(-1)
    assert (0 <= y0).all() and (y0 < 100 - 12).all() and (0 <= x0).all() and (x0 < 120 - 15).all()
    assert y0.max() > 70 and x0.max() > 85
    assert (y1 <= 100).all() and (x1 <= 120).all() and (y1 > y0).all() and (x1 > x0).all()
    heights, widths = (y1 - y0)[y1 < 100], (x1 - x0)[x1 < 120]
    assert heights.min() >= 12 and heights.max() < 50 and widths.min() >= 15 and widths.max() < 60
    assert len(set(y0.tolist())) == 30 and len(set(x0.tolist())) == 30  # without replacement
    assert len(set(heights.tolist())) == len(heights) and len(set(widths.tolist())) == len(widths)
    with pytest.raises(ValueError, match="n_boxes must be at most 38"):
        dm.draw_hdn_regions(target, n_boxes=39)


def test_draw_errors_name_the_argument():
    target = torch.ones(2, 1, 64, 64)
    for kwargs, error, message in [(dict(n_ranges=-1), ValueError, "n_ranges"), (dict(n_boxes=2.0), TypeError, "n_boxes"),
                                   (dict(generator=0), TypeError, "generator"),
                                   (dict(mask=torch.ones(2, 1, 64, 63, dtype=torch.bool)), ValueError, "mask")]:
        with pytest.raises(error, match=message):
            dm.draw_hdn_regions(target, **kwargs)
    with pytest.raises(TypeError, match="target must be a floating-point depth map"):
        dm.draw_hdn_regions(target.long())
