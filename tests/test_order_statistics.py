"""order_statistics (region_median, trimmed_sum): values worked in numpy loops (the lower-middle median
emulated on np.sort, ties, even and odd counts, empty and one-pixel regions, an all-invalid image, boxes,
depth ranges, label ids), the tie rules of the gradients, kernel vs twin over dtypes and sizes, float64
gradcheck, opcheck, compile, bad input."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric.order_statistics import order_statistics, regions

from .registry import COMPILED, DEVICES, assert_close_scaled, backend_of, needs_ext

BACKENDS = ["reference", "cpu"] if COMPILED else ["reference"]


def numpy_region_stats(values, valid, members):
    """(median, mad, n) of each region given as a list of (b, H x W bool array); the median is the lower
    middle element of the sorted values (np.median would average the two middle ones of an even count)."""
    out = []
    for b, member in members:
        v = values[b][valid[b] & member]
        if v.size == 0:
            out.append((0.0, 0.0, 0))
            continue
        med = np.sort(v)[(v.size - 1) // 2]
        out.append((med, float(np.mean(np.abs(v - med))), v.size))
    return out


def numpy_trimmed(values, valid, trim, rule):
    """The sum of the kept smallest |values| of each image (a loop over its valid pixels)."""
    sums = []
    for b in range(values.shape[0]):
        v = np.sort(np.abs(values[b][valid[b]]))
        n = v.size
        keep = n - math.floor(n * trim) if rule == "drop" else math.floor(n * (1.0 - trim))
        sums.append(float(v[:keep].sum()))
    return sums


def grid_values(B, H, W, dtype, seed):
    """Values on a grid of 0.25 (many ties) and a mask with holes; the last image has no valid pixel."""
    g = torch.Generator().manual_seed(seed)
    values = (torch.randint(0, 9, (B, H, W), generator=g).double() / 4 - 1).to(dtype)
    valid = torch.rand(B, H, W, generator=g) > 0.3
    valid[-1] = False
    return values, valid


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("H,W", [(1, 1), (3, 4), (5, 5), (6, 9)])  # 1 pixel, even and odd counts
def test_region_median_against_numpy(H, W, dtype, backend):
    values, valid = grid_values(3, H, W, dtype, seed=H * W)
    med, mad, n = dm.region_median(values, valid, backend=backend)
    want = numpy_region_stats(values.double().numpy(), valid.numpy(), [(b, np.ones((H, W), bool)) for b in range(3)])
    for b, (m, d, count) in enumerate(want):
        assert int(n[b, 0]) == count
        assert float(med[b, 0]) == m  # a selected element: exact
        assert math.isclose(float(mad[b, 0]), d, rel_tol=1e-6, abs_tol=1e-7)
    assert n[-1, 0] == 0 and med[-1, 0] == 0 and mad[-1, 0] == 0  # the all-invalid image


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_boxes_ranges_and_labels_against_numpy(dtype, backend):
    B, H, W = 2, 7, 10
    values, valid = grid_values(B, H, W, dtype, seed=3)
    valid[-1] = torch.rand(H, W, generator=torch.Generator().manual_seed(1)) > 0.3
    g = torch.Generator().manual_seed(2)
    key = (4 * torch.rand(B, H, W, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(-1, 4, (B, H, W), generator=g)  # -1: in no label region
    boxes = torch.tensor([[0, 7, 0, 10], [2, 3, 4, 5], [-3, 4, 6, 20], [5, 2, 0, 10]]).expand(B, 4, 4)  # 1 px, clipped, empty
    ranges = torch.tensor([[0.0, 1.0], [1.0, 2.5], [0.5, 4.0], [3.9, 3.95]], dtype=torch.float64).expand(B, 4, 2)
    rows, cols = np.arange(H)[:, None], np.arange(W)[None, :]
    k, lab = key.double().numpy(), labels.numpy()
    for kind, kw, member_of in [
        ("boxes", dict(boxes=boxes), lambda b, r: (rows >= max(0, int(boxes[b, r, 0]))) & (rows < int(boxes[b, r, 1]))
         & (cols >= max(0, int(boxes[b, r, 2]))) & (cols < int(boxes[b, r, 3]))),
        ("ranges", dict(depth_ranges=ranges, key=key), lambda b, r: (k[b] >= float(ranges[b, r, 0]))
         & (k[b] < float(ranges[b, r, 1]))),
        ("labels", dict(labels=labels, num_labels=4), lambda b, r: lab[b] == r),
    ]:
        med, mad, n = dm.region_median(values, valid, backend=backend, **kw)
        members = [(b, member_of(b, r)) for b in range(B) for r in range(4)]
        want = numpy_region_stats(values.double().numpy(), valid.numpy(), members)
        if kind == "boxes":
            assert (n[:, 3] == 0).all()  # the empty box was computed
        for (b, _), (m, d, count), r in zip(members, want, list(range(4)) * B):
            assert int(n[b, r]) == count, (kind, b, r)
            assert float(med[b, r]) == m, (kind, b, r)
            assert math.isclose(float(mad[b, r]), d, rel_tol=1e-6, abs_tol=1e-7), (kind, b, r)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("trim,rule", [(0.2, "drop"), (0.3, "drop"), (0.3, "keep"), (0.0, "drop"), (1.0, "keep")])
def test_trimmed_sum_against_numpy(trim, rule, dtype, backend):
    values, valid = grid_values(3, 7, 10, dtype, seed=11)
    s, kept = dm.trimmed_sum(values, valid, trim=trim, keep=rule, backend=backend)
    want = numpy_trimmed(values.double().numpy(), valid.numpy(), trim, rule)
    torch.testing.assert_close(s.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-6)
    pooled, pooled_kept = dm.trimmed_sum(values, valid, trim=trim, keep=rule, over="batch", backend=backend)
    want = numpy_trimmed(values.double().numpy().reshape(1, -1), valid.numpy().reshape(1, -1), trim, rule)
    torch.testing.assert_close(pooled.double(), torch.tensor(want, dtype=torch.float64), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trim_count_boundary(backend):
    """n = 7, trim = 0.3: Depth Pro drops floor(2.1) = 2 (keeps 5); MiDaS keeps int(7 * 0.7) = int(4.8999...) = 4.
    n = 10, trim = 0.2: both keep 8 (10 * 0.2 is exactly 2)."""
    values = torch.arange(1.0, 8.0, dtype=torch.float64).view(1, 1, 7)
    assert dm.trimmed_sum(values, trim=0.3, keep="drop", backend=backend)[0].item() == 15.0
    assert dm.trimmed_sum(values, trim=0.3, keep="keep", backend=backend)[0].item() == 10.0
    values = torch.arange(1.0, 11.0, dtype=torch.float64).view(1, 2, 5)
    assert dm.trimmed_sum(values, trim=0.2, backend=backend)[0].item() == 36.0
    assert dm.trimmed_sum(values, trim=0.2, keep="keep", backend=backend)[0].item() == 36.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_median_gradient_reaches_the_lowest_tied_index(backend):
    """Values 3 2 2 | 1 2 5 (n = 6): the lower middle is the third smallest, 2, held at flat indices 1, 2, 4;
    the gradient goes to index 1 alone (torch.median's gradient reaches the one element it returns)."""
    x = torch.tensor([[[3.0, 2.0, 2.0], [1.0, 2.0, 5.0]]], dtype=torch.float64, requires_grad=True)
    med, mad, n = dm.region_median(x, backend=backend)
    assert med.item() == 2.0 and n.item() == 6
    g, = torch.autograd.grad(med.sum(), x, retain_graph=True)
    assert g.flatten().tolist() == [0, 1, 0, 0, 0, 0]
    # MAD = mean |x - 2| = (1 + 0 + 0 + 1 + 0 + 3) / 6; its gradient: sign(x - 2) / 6, and the median's
    # share -(sum of signs) / 6 = -1 / 6 at index 1.
    assert math.isclose(mad.item(), 5 / 6)
    g, = torch.autograd.grad(mad.sum(), x)
    torch.testing.assert_close(g.flatten(), torch.tensor([1, -1, 0, -1, 0, 1], dtype=torch.float64) / 6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_trimmed_gradient_is_the_sign_at_the_kept(backend):
    """|r| = 1 3 2 2 4 (n = 5, trim 0.4 drops 2): keeps 1, 2, 2 (sum 5); the gradient is sign(r) there. With the
    cut inside ties (|r| = 1 2 2 2 5, keep 2 of 5 with trim 0.6) the tied share (2 - 1) / 3 each."""
    r = torch.tensor([[[1.0, -3.0, 2.0, -2.0, 4.0]]], dtype=torch.float64, requires_grad=True)
    s, kept = dm.trimmed_sum(r, trim=0.4, backend=backend)
    assert s.item() == 5.0 and kept.item() == 3
    g, = torch.autograd.grad(s.sum(), r)
    assert g.flatten().tolist() == [1, 0, 1, -1, 0]
    r = torch.tensor([[[1.0, 2.0, -2.0, 2.0, 5.0]]], dtype=torch.float64, requires_grad=True)
    s, kept = dm.trimmed_sum(r, trim=0.6, backend=backend)
    assert s.item() == 3.0 and kept.item() == 2
    g, = torch.autograd.grad(s.sum(), r)
    torch.testing.assert_close(g.flatten(), torch.tensor([1, 1 / 3, -1 / 3, 1 / 3, 0], dtype=torch.float64))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 13, 21), (3, 33, 65)])
def test_kernel_matches_twin(shape, dtype, device):
    """Random values (float16/bfloat16 upcast), a strided view, several regions of every kind; the stats,
    counts and the gradient of every statistic."""
    B, H, W = shape
    g = torch.Generator().manual_seed(H * W)
    values = torch.randn(B, W, H, generator=g, dtype=torch.float64).to(dtype).transpose(1, 2).to(device)
    values = values.round(decimals=1) if dtype == torch.float64 else values  # ties in float64
    valid = torch.rand(B, H, W, generator=g) > 0.2
    valid[:, 0, 0] = True
    valid = valid.to(device)
    key = values.detach().abs()
    boxes = torch.tensor([[0, H, 0, W], [1, H, 0, W // 2 + 1], [0, H, 0, W]]).expand(B, 3, 4).to(device)
    ranges = torch.tensor([[-math.inf, math.inf], [0.1, 1.0], [0.5, math.inf]], dtype=torch.float64).expand(B, 3, 2)
    args = regions(values, boxes=boxes, depth_ranges=ranges.to(device), key=key)
    x = values.detach().requires_grad_()
    out = {}
    for backend in ("reference", backend_of(device)):
        stats, counts = order_statistics(x, valid, *args, 0.25, 0, True, backend)
        weights = torch.rand(stats.shape, generator=torch.Generator().manual_seed(5), dtype=stats.dtype).to(device)
        weights[..., 3] = 0  # the threshold is not differentiable
        grad, = torch.autograd.grad((stats * weights).sum(), x)
        out[backend] = stats.detach(), counts, grad
    (s0, c0, g0), (s1, c1, g1) = out.values()
    assert torch.equal(c0, c1)
    n = H * W
    assert_close_scaled(s1, s0.double(), dtype, n)
    assert g1.dtype == dtype
    torch.testing.assert_close(g1.double(), g0.double(), rtol=1e-5, atol=1e-6 if dtype != torch.bfloat16 else 1e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradcheck(backend):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)  # distinct: no ties
    mask = torch.rand(2, 5, 6, generator=g) > 0.2
    boxes = torch.tensor([[0, 5, 0, 6], [1, 4, 2, 6]]).expand(2, 2, 4)
    assert torch.autograd.gradcheck(lambda v: torch.stack(dm.region_median(v, mask, boxes=boxes, backend=backend)[:2]),
                                    (x,))
    assert torch.autograd.gradcheck(lambda v: dm.trimmed_sum(v, mask, trim=0.3, backend=backend)[0], (x,))
    assert torch.autograd.gradgradcheck(lambda v: dm.region_median(v, mask, backend=backend)[1], (x,))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    values, valid = grid_values(2, 5, 7, torch.float32, seed=1)
    values, valid = values.to(device).requires_grad_(), valid.to(device)
    args = regions(values, boxes=torch.tensor([[0, 5, 0, 7], [1, 3, 2, 7]]).expand(2, 2, 4).to(device))
    op = torch.ops.depthmetric.order_statistics.default
    torch.library.opcheck(op, (values, valid, *args, 0.2, 0, True))
    torch.library.opcheck(op, (values.detach().double(), valid, args[0].double(), *args[1:], 0.5, 1, False))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 1, 8, 9, generator=g).to(device).requires_grad_()
    mask = (torch.rand(2, 1, 8, 9, generator=g) > 0.2).to(device)

    def fn(v):
        med, mad, n = dm.region_median(v * 2, mask)
        s, kept = dm.trimmed_sum(v - 0.1, mask, trim=0.2)
        return med.sum() + mad.sum() + (s / kept).sum()

    x1 = x.detach().clone().requires_grad_()
    loss = torch.compile(fn, fullgraph=True)(x1)
    loss.backward()
    eager = fn(x)
    eager.backward()
    torch.testing.assert_close(loss, eager)
    torch.testing.assert_close(x1.grad, x.grad)


@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_input(backend):
    v = torch.rand(2, 1, 4, 5)
    with pytest.raises(ValueError, match="mask must have the values' shape"):
        dm.region_median(v, torch.ones(2, 4, 6, dtype=torch.bool), backend=backend)
    with pytest.raises(TypeError, match="mask must be a bool"):
        dm.region_median(v, torch.ones(2, 4, 5), backend=backend)
    with pytest.raises(ValueError, match="values contains NaN"):
        dm.region_median(v.clone().fill_(math.nan), backend=backend)
    with pytest.raises(ValueError, match="boxes must be B,R,4"):
        dm.region_median(v, boxes=torch.zeros(2, 3, 3, dtype=torch.int64), backend=backend)
    with pytest.raises(TypeError, match="boxes must be an integer"):
        dm.region_median(v, boxes=torch.zeros(2, 3, 4), backend=backend)
    with pytest.raises(ValueError, match="pass key"):
        dm.region_median(v, depth_ranges=torch.zeros(2, 3, 2), backend=backend)
    with pytest.raises(TypeError, match="labels must be an integer"):
        dm.region_median(v, labels=torch.zeros(2, 4, 5), num_labels=2, backend=backend)
    with pytest.raises(ValueError, match="different region counts"):
        dm.region_median(v, boxes=torch.zeros(2, 3, 4, dtype=torch.int64), labels=torch.zeros(2, 4, 5, dtype=torch.int64),
                         num_labels=2, backend=backend)
    with pytest.raises(ValueError, match="trim must be a number in"):
        dm.trimmed_sum(v, trim=1.5, backend=backend)
    with pytest.raises(ValueError, match="keep must be one of|keep"):
        dm.trimmed_sum(v, keep="all", backend=backend)
