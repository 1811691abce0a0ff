"""multi_range_contrastive: kernel vs reference twin, gradients, opcheck, compile, the paper's example, bad input."""
import math

import pytest
import torch

import depthmetric as dm
from depthmetric import multi_range_contrastive_loss as mrc_loss
from depthmetric.reference.multi_range_contrastive import multi_range_contrastive as reference_op

from .registry import DEVICES, assert_close_scaled, backend_of, contrastive_inputs, needs_ext


SHAPES = [  # B, C, H, W: B=1 (no across samples), H=1 / W=1 (one axis not shifted), odd sizes
    (1, 3, 4, 5),
    (2, 4, 1, 7),
    (2, 3, 6, 1),
    (3, 5, 7, 9),
    (4, 8, 5, 6),
]
TOL = {torch.float64: 1e-6, torch.float32: 1e-4}


def loss_and_grad(features, depth, backend, weights=None, **kw):
    """The loss and the gradient of its sum (weighted by ``weights`` for ``reduction="none"``) in the features."""
    f = features.detach().clone().requires_grad_(True)
    loss = mrc_loss(f, depth, backend=backend, **kw)
    (loss if weights is None else loss * weights).sum().backward()
    return loss.detach(), f.grad


def assert_matches_float64_reference(features, depth, shifts, device, loss_tol=None, grad_tol=None):
    """The kernel's loss and gradient at ``features``' precision against the reference twin in float64 (on the
    same rounded features). With no tolerances given, each is scaled to the reference's magnitude: eps of the
    dtype the result is carried in (float32 for the loss, the features' for the gradient) times the length of
    its sums (all pairs for the loss, the 2 N pairs each pixel is in for the gradient)."""
    loss, grad = loss_and_grad(features, depth, backend_of(device), shifts=shifts)
    loss_r, grad_r = loss_and_grad(features.double(), depth, "reference", shifts=shifts)
    assert grad.dtype == features.dtype
    if loss_tol is None:
        assert_close_scaled(loss, loss_r, torch.float32, n_terms=shifts.shape[0] * depth.numel())
    else:
        torch.testing.assert_close(loss.double(), loss_r, rtol=loss_tol, atol=loss_tol)
    if grad_tol is None:
        assert_close_scaled(grad, grad_r, features.dtype, n_terms=2 * shifts.shape[0])
    else:
        torch.testing.assert_close(grad.double(), grad_r, rtol=grad_tol, atol=grad_tol)
    return loss


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_kernel_matches_reference(shape, dtype, device, reduction):
    features, depth, g = contrastive_inputs(shape, dtype, device, seed=sum(shape) + 100 * len(reduction))
    shifts = dm.sample_shifts(shape[0], shape[2], shape[3], 10, 4, generator=g)
    backend = backend_of(device)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    weights = None
    if reduction == "none":
        weights = torch.rand(shape[0], 1, shape[2], shape[3], generator=g, dtype=torch.float64).to(device, acc)
    kw = dict(shifts=shifts, reduction=reduction, ranges=[(0.5, 1.0), (1.0, 1.5), (1.5, 2.0)])
    loss, grad = loss_and_grad(features, depth, backend, weights, **kw)
    loss_r, grad_r = loss_and_grad(features, depth, "reference", weights, **kw)
    assert loss.dtype == acc and grad.dtype == dtype
    assert loss.shape == ((shape[0], 1, shape[2], shape[3]) if reduction == "none" else ())
    torch.testing.assert_close(loss, loss_r, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(grad, grad_r, rtol=TOL[dtype], atol=TOL[dtype])


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_against_float64_reference(dtype, device):
    features, depth, g = contrastive_inputs((3, 16, 8, 10), dtype, device, seed=3)
    shifts = dm.sample_shifts(3, 8, 10, 10, 4, generator=g)
    loss = assert_matches_float64_reference(features, depth, shifts, device)
    assert loss.dtype == torch.float32


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_many_shifts_cross_the_chunk_boundary(dtype, device):
    """More shifts than the CUDA kernel holds in registers at once (16): later chunks add to the gradient."""
    features, depth, g = contrastive_inputs((3, 6, 9, 11), dtype, device, seed=5)
    shifts = dm.sample_shifts(3, 9, 11, 30, 7, generator=g)
    if dtype == torch.float64:
        assert_matches_float64_reference(features, depth, shifts, device, loss_tol=1e-6, grad_tol=1e-6)
    else:
        assert_matches_float64_reference(features, depth, shifts, device)


@needs_ext
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_wide_rows_split_images_into_several_cpu_row_bands(dtype):
    """The CPU kernels give a task a band of rows whose buffers take about 1 MiB: at W = 3000 and 14 shifts a
    band is 1 to 3 rows, so an 8-row image is split and the shifted rows cross the bands."""
    features, depth, g = contrastive_inputs((3, 2, 8, 3000), dtype, "cpu", seed=8)
    shifts = dm.sample_shifts(3, 8, 3000, 10, 4, generator=g)
    tol = 1e-6 if dtype == torch.float64 else 1e-4
    assert_matches_float64_reference(features, depth, shifts, "cpu", loss_tol=tol, grad_tol=tol)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_all_invalid_gives_zero_loss_and_zero_grad(device):
    features, _, _ = contrastive_inputs((2, 3, 4, 5), torch.float32, device, seed=0)
    depth = torch.zeros(2, 1, 4, 5, device=device)
    for backend in ("auto", "reference"):
        loss, grad = loss_and_grad(features, depth, backend)
        assert loss.item() == 0.0 and torch.count_nonzero(grad) == 0


@pytest.mark.parametrize("backend", ["reference"] + (["auto"] if dm.build_info()["compiled"] else []))
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("case", ["1x1 map", "no shifts"])
def test_no_counted_pair_gives_zero_with_a_zero_gradient(case, reduction, backend):
    """With no counted pair the loss is 0 with a zero gradient on every backend (not a constant
    without grad_fn, on which backward() raises)."""
    shape = (2, 4, 1, 1) if case == "1x1 map" else (2, 4, 3, 3)
    features = torch.randn(shape, requires_grad=True)
    depth = torch.rand(shape[0], 1, *shape[2:]) + 1
    kw = dict(n_across=0) if case == "1x1 map" else dict(shifts=torch.zeros(0, 3, dtype=torch.long))
    loss = mrc_loss(features, depth, reduction=reduction, backend=backend, **kw)
    loss.sum().backward()
    assert torch.count_nonzero(loss) == 0 and features.grad is not None
    assert torch.count_nonzero(features.grad) == 0


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_zero_distance_gradient_is_zero_not_nan(device):
    features = torch.ones(2, 4, 3, 3, device=device)  # every pair is at distance 0
    depth = torch.full((2, 1, 3, 3), 2.0, device=device)  # every pair positive
    loss, grad = loss_and_grad(features, depth, "auto")
    assert loss.item() == 0.0 and torch.isfinite(grad).all() and torch.count_nonzero(grad) == 0


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("layout", ["channels_last", "sliced", "transposed"])
def test_strided_features_are_read_in_place(layout, device):
    features, depth, g = contrastive_inputs((2, 5, 6, 7), torch.float64, device, seed=11)
    if layout == "channels_last":
        strided = features.contiguous(memory_format=torch.channels_last)
    elif layout == "sliced":
        strided = torch.randn(2, 10, 6, 14, dtype=torch.float64, device=device)[:, ::2, :, ::2]
        strided.copy_(features)
    else:
        strided = features.transpose(2, 3).contiguous().transpose(2, 3)
    assert not strided.is_contiguous()
    shifts = dm.sample_shifts(2, 6, 7, generator=g)
    loss, grad = loss_and_grad(strided, depth, "auto", shifts=shifts)
    loss_r, grad_r = loss_and_grad(features, depth, "reference", shifts=shifts)
    torch.testing.assert_close(loss, loss_r)
    torch.testing.assert_close(grad, grad_r)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_backward_is_bitwise_deterministic(device):
    features, depth, g = contrastive_inputs((4, 32, 12, 16), torch.float32, device, seed=2)
    shifts = dm.sample_shifts(4, 12, 16, generator=g)
    _, first = loss_and_grad(features, depth, "auto", shifts=shifts)
    _, second = loss_and_grad(features, depth, "auto", shifts=shifts)
    assert torch.equal(first, second)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_float64_gradcheck(device):
    features, depth, g = contrastive_inputs((2, 3, 4, 5), torch.float64, device, seed=7, invalid=0.1)
    shifts = dm.sample_shifts(2, 4, 5, 6, 2, generator=g)
    features.requires_grad_(True)
    for reduction in ("mean", "none"):
        assert torch.autograd.gradcheck(
            lambda f: mrc_loss(f, depth, shifts=shifts, reduction=reduction, ranges=[(0.3, 1.0), (1.0, math.inf)],
                               margins=[2.0, 4.0]),
            (features,),
        )


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16])
def test_opcheck(dtype, device):
    features, depth, g = contrastive_inputs((2, 3, 4, 5), dtype, device, seed=1)
    features.requires_grad_(True)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    shifts = dm.sample_shifts(2, 4, 5, 4, 2, generator=g).to(device)
    args = (features, depth[:, 0].to(acc), shifts, 0.1, [0.5, 1.0], [1.0, 2.0], [3.0, 6.0])
    torch.library.opcheck(torch.ops.depthmetric.multi_range_contrastive.default, args)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("anchors", [(0, 1), (1, 2), (3, 1), (2, 0)])
def test_anchor_window_matches_reference(anchors, dtype, device):
    """The op's anchor images (across="global": this rank's images of the gathered batch) against the twin:
    loss and count of the anchors only, and the gradient over the whole batch from their pairs alone."""
    features, depth, g = contrastive_inputs((4, 5, 6, 7), dtype, device, seed=sum(anchors))
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, 0.0)[:, 0].to(dtype)
    shifts = torch.tensor([[0, 1, 2], [1, 0, 0], [3, 2, 5], [2, 0, 0]], device=device)
    rule = (0.1, [0.5, 1.0], [1.0, 2.0], [3.0, 6.0])
    leaf = features.detach().requires_grad_()
    loss, count, _ = torch.ops.depthmetric.multi_range_contrastive(leaf, depth, shifts, *rule, *anchors)
    assert loss.shape == (anchors[1], 6, 7)
    weights = torch.rand(loss.shape, generator=g, dtype=loss.dtype).to(device)
    (loss * weights).sum().backward()
    twin = features.detach().requires_grad_()
    ranges = list(zip(rule[1], rule[2]))
    want_loss, want_count = reference_op(twin, depth, shifts.cpu(), rule[0], ranges, rule[3], *anchors)
    (want_loss * weights).sum().backward()
    tol = dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-12)
    assert torch.equal(count, want_count)
    torch.testing.assert_close(loss, want_loss, **tol)
    torch.testing.assert_close(leaf.grad, twin.grad, **tol)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_anchor_window_gradcheck_and_opcheck(device):
    features, depth, g = contrastive_inputs((3, 2, 4, 5), torch.float64, device, seed=4, invalid=0.1)
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, 0.0)[:, 0]
    shifts = torch.tensor([[1, 1, 2], [2, 0, 0], [0, 3, 1]], device=device)
    rule = (0.1, [0.3, 1.0], [1.0, 4.0], [2.0, 4.0])
    features.requires_grad_(True)
    assert torch.autograd.gradcheck(
        lambda f: torch.ops.depthmetric.multi_range_contrastive(f, depth, shifts, *rule, 1, 2)[0], (features,))
    torch.library.opcheck(torch.ops.depthmetric.multi_range_contrastive.default, (features, depth, shifts, *rule, 1, 2))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_training_step_under_torch_compile_fullgraph(device):
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).to(device)
    image = torch.rand(2, 3, 8, 10, generator=g).to(device)
    depth = (0.5 + 3 * torch.rand(2, 1, 8, 10, generator=g)).to(device)
    shifts = dm.sample_shifts(2, 8, 10, generator=g)
    loss_fn = dm.MultiRangeContrastiveLoss.preset("nyu-lt")

    def step(x):
        return loss_fn(conv(x), depth, shifts=shifts)

    eager = step(image)
    eager.backward()
    eager_grad = conv.weight.grad.clone()
    conv.weight.grad = None
    compiled = torch.compile(step, fullgraph=True)(image)
    compiled.backward()
    torch.testing.assert_close(compiled, eager)
    torch.testing.assert_close(conv.weight.grad, eager_grad)


def test_reference_matches_the_papers_definition_on_a_2x2_example():
    # Pixels (h, w) with 2-channel features and depths; one diagonal within-shift (1, 1) and one along W (0, 1).
    features = torch.tensor([[[0.0, 1.0], [1.0, 3.0]], [[0.0, 1.0], [3.0, 4.0]]], dtype=torch.float64)[None]
    # features[0, :, h, w]: (0,0)->(0,0) (0,1)->(1,1) (1,0)->(1,3) (1,1)->(3,4)
    depth = torch.tensor([[1.0, 1.05], [2.2, 1.6]], dtype=torch.float64)[None, None]
    shifts = torch.tensor([[0, 1, 1], [0, 0, 1]])
    # Shift (1,1): (0,0)<->(1,1): Dr 0.6 -> negative of range (0.5,1], margin 3, l = 5 -> max(0, 3-5) = 0 (x2);
    #              (0,1)<->(1,0): Dr 1.15 -> range (1,1.5], margin 6, l = 2 -> 4 (x2).
    # Shift (0,1): (0,0)<->(0,1): Dr 0.05 < r_p -> positive, l = sqrt(2) (x2);
    #              (1,0)<->(1,1): Dr 0.6 -> margin 3, l = sqrt(5) -> 3 - sqrt(5) (x2).
    expected_sum = 0 + 8 + 2 * math.sqrt(2) + 2 * (3 - math.sqrt(5))
    kw = dict(shifts=shifts, r_p=0.1, ranges=[(0.5, 1.0), (1.0, 1.5), (1.5, 2.0)], margins=[3, 6, 8],
              backend="reference")
    assert mrc_loss(features, depth, reduction="sum", **kw).item() == pytest.approx(expected_sum, abs=1e-12)
    assert mrc_loss(features, depth, reduction="mean", **kw).item() == pytest.approx(expected_sum / 8, abs=1e-12)
    per_pixel = mrc_loss(features, depth, reduction="none", **kw)[0, 0]
    assert per_pixel[0, 1].item() == pytest.approx(4 + math.sqrt(2), abs=1e-12)
    # An invalid anchor drops its pairs; a differential between r_p and the first range is ignored too.
    depth_holes = depth.clone()
    depth_holes[0, 0, 1, 0] = 0.0
    depth_holes[0, 0, 0, 1] = 1.3  # Dr to (0,0) is 0.3: in the gap (0.1, 0.5]
    loss, count = reference_op(features, depth_holes[:, 0], shifts, 0.1, [(0.5, 1.0), (1.0, 1.5), (1.5, 2.0)],
                               [3.0, 6.0, 8.0])
    # (0,0) and (1,1) keep their diagonal negative; every other pair touches the hole or lies in the gap.
    assert count.tolist() == [[[1, 0], [0, 1]]]
    if dm.build_info()["compiled"]:
        out = torch.ops.depthmetric.multi_range_contrastive(features, depth_holes[:, 0], shifts, 0.1,
                                                            [0.5, 1.0, 1.5], [1.0, 1.5, 2.0], [3.0, 6.0, 8.0])
        assert torch.equal(out[1], count)
        torch.testing.assert_close(out[0], loss)


@needs_ext
def test_depth_is_resized_nearest_and_mask_invalidates():
    features, depth, g = contrastive_inputs((2, 4, 6, 8), torch.float64, "cpu", seed=9, invalid=0.0)
    big = depth.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)  # nearest downsampling recovers depth
    shifts = dm.sample_shifts(2, 6, 8, generator=g)
    torch.testing.assert_close(mrc_loss(features, big, shifts=shifts), mrc_loss(features, depth, shifts=shifts))
    mask = torch.rand(depth.shape, generator=g) > 0.3
    masked = mrc_loss(features, depth, shifts=shifts, mask=mask)
    holes = mrc_loss(features, depth.masked_fill(~mask, 0.0), shifts=shifts)
    torch.testing.assert_close(masked, holes)
    assert mrc_loss(features, depth[:, 0], shifts=shifts).item() == mrc_loss(features, depth, shifts=shifts).item()


def test_sample_shifts_follow_the_paper():
    g = torch.Generator().manual_seed(0)
    s = dm.sample_shifts(4, 6, 9, 10, 4, generator=g)
    assert s.shape == (14, 3) and s.dtype == torch.long
    within, across = s[:10], s[10:]
    assert (within[:, 0] == 0).all() and ((within[:, 1] >= 1) & (within[:, 1] <= 5)).all()
    assert ((within[:, 2] >= 1) & (within[:, 2] <= 8)).all()
    assert ((across[:, 0] >= 1) & (across[:, 0] <= 3)).all() and (across[:, 1:] == 0).all()
    assert torch.equal(s, dm.sample_shifts(4, 6, 9, 10, 4, generator=torch.Generator().manual_seed(0)))
    assert dm.sample_shifts(1, 6, 9, 10, 4).shape == (10, 3)  # B == 1: no across samples
    h1 = dm.sample_shifts(2, 1, 9, 10, 4)
    assert (h1[:10, 1] == 0).all() and (h1[:10, 2] >= 1).all()  # H == 1: rows not shifted
    assert dm.sample_shifts(2, 1, 1, 10, 4).shape == (4, 3)  # H == W == 1: no within samples


def test_generator_makes_calls_reproducible():
    features, depth, _ = contrastive_inputs((3, 4, 5, 6), torch.float64, "cpu", seed=4)
    a = mrc_loss(features, depth, generator=torch.Generator().manual_seed(1), backend="reference")
    b = mrc_loss(features, depth, generator=torch.Generator().manual_seed(1), backend="reference")
    assert a.item() == b.item()


def test_presets_are_the_papers_tables():
    assert dm.PRESETS["nyu-lt"]["margins"] == [3.0, 6.0, 8.0]
    assert dm.PRESETS["kitti-lt"]["ranges"] == [(1.0, 5.0), (5.0, 10.0), (10.0, 15.0)]
    uniform = dm.MultiRangeContrastiveLoss.preset("uniform")
    assert uniform.ranges == [(0.5, math.inf)] and uniform.margins == [4.0]
    with pytest.raises(ValueError, match="unknown preset"):
        dm.MultiRangeContrastiveLoss.preset("nyu")


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(ranges=[(1.0, 1.5), (0.5, 1.0)], margins=[3, 6]), ValueError, "sorted"),
        (dict(ranges=[(0.5, 1.2), (1.0, 1.5)], margins=[3, 6]), ValueError, "sorted and non-overlapping"),
        (dict(ranges=[(0.05, 1.0)], margins=[3]), ValueError, "below r_p"),
        (dict(ranges=[(0.5, 1.0)], margins=[3, 6]), ValueError, "len\\(margins\\)"),
        (dict(ranges=[(0.5, 1.0)], margins=[-1]), ValueError, "margins\\[0\\]"),
        (dict(n_within=-1), ValueError, "n_within"),
        (dict(n_across=1.5), TypeError, "n_across"),
        (dict(reduction="avg"), ValueError, "reduction"),
        (dict(backend="gpu"), ValueError, "backend"),
        (dict(r_p=0.0), ValueError, "r_p"),
    ],
)
def test_bad_configuration_is_rejected(kwargs, error, match):
    features, depth, _ = contrastive_inputs((2, 3, 4, 5), torch.float32, "cpu", seed=0)
    with pytest.raises(error, match=match):
        mrc_loss(features, depth, **kwargs)


def test_bad_tensors_are_rejected():
    features, depth, _ = contrastive_inputs((2, 3, 4, 5), torch.float32, "cpu", seed=0)
    with pytest.raises(TypeError, match="features"):
        mrc_loss(features.to(torch.int32), depth)
    with pytest.raises(ValueError, match="features"):
        mrc_loss(features[0], depth)
    with pytest.raises(ValueError, match="depth"):
        mrc_loss(features, depth.expand(2, 2, 4, 5))
    with pytest.raises(ValueError, match="batch size"):
        mrc_loss(features, depth[:1])
    with pytest.raises(TypeError, match="depth"):
        mrc_loss(features, depth.long())
    with pytest.raises(TypeError, match="mask"):
        mrc_loss(features, depth, mask=depth > 1)  # fine
        mrc_loss(features, depth, mask=(depth > 1).float())
    with pytest.raises(ValueError, match="NaN"):
        mrc_loss(features.masked_fill(features > 1, math.nan), depth)
    with pytest.raises(ValueError, match="shifts"):
        mrc_loss(features, depth, shifts=torch.zeros(3, 2, dtype=torch.long))
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match="depth is on"):
            mrc_loss(features.cuda(), depth)
    with pytest.raises(ValueError, match="backend='cuda'"):
        mrc_loss(features, depth, backend="cuda")


@needs_ext
def test_direct_op_call_checks_its_inputs():
    features, depth, _ = contrastive_inputs((2, 3, 4, 5), torch.float32, "cpu", seed=0)
    shifts = torch.zeros(1, 3, dtype=torch.long)
    with pytest.raises(RuntimeError, match="accumulation dtype"):
        torch.ops.depthmetric.multi_range_contrastive(features, depth[:, 0].double(), shifts, 0.1, [], [], [])
    with pytest.raises(RuntimeError, match="same length"):
        torch.ops.depthmetric.multi_range_contrastive(features, depth[:, 0].float(), shifts, 0.1, [0.5], [], [])


@needs_ext
def test_compiled_step_draws_reproducible_shifts_outside_the_graph():
    """The documented path for torch.compile(fullgraph=True) with reproducible randomness: draw_shifts from a
    seeded generator outside the graph gives, inside it, the loss of an eager call with that generator."""
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(3)
    features = torch.randn(3, 4, 8, 10, generator=g)
    depth = 0.5 + 3 * torch.rand(3, 1, 8, 10, generator=g)
    loss_fn = dm.MultiRangeContrastiveLoss.preset("nyu-lt")
    compiled = torch.compile(lambda f, s: loss_fn(f, depth, shifts=s), fullgraph=True)
    runs = [compiled(features, loss_fn.draw_shifts(features, torch.Generator().manual_seed(7))) for _ in range(2)]
    eager = loss_fn(features, depth, generator=torch.Generator().manual_seed(7))
    assert torch.equal(runs[0], runs[1])
    torch.testing.assert_close(runs[0], eager, rtol=1e-6, atol=0)
    assert not torch.equal(eager, loss_fn(features, depth, generator=torch.Generator().manual_seed(8)))
    with pytest.raises(TypeError, match="features must be a torch.Tensor"):
        loss_fn.draw_shifts(None)


def test_a_generator_inside_a_compiled_region_names_the_way_out():
    torch._dynamo.reset()
    g = torch.Generator().manual_seed(0)
    features, depth = torch.randn(2, 4, 6, 6), 0.5 + 3 * torch.rand(2, 1, 6, 6)
    with pytest.raises(Exception, match="draw_shifts or sample_shifts"):
        torch.compile(lambda f: dm.multi_range_contrastive_loss(f, depth, generator=g, backend="reference"),
                      fullgraph=True)(features)


def worked_contrastive(features, depth, shifts, r_p, ranges, margins):
    """The loss by a plain loop over the pairs, from the definition (MetricDepth Eq. 12): the sample of anchor
    pixel (b, h, w) under shift (sb, sh, sw) is torch.roll's, pixel ((b - sb) % B, (h - sh) % H, (w - sw) % W);
    a pair of valid depths is positive when |Dr| < r_p (loss: the feature distance l), a negative of range j
    when lo_j < |Dr| <= hi_j (loss: max(0, m_j - l)), ignored otherwise. Returns the per-pixel sums, the
    number of counted pairs, and the pairs counted per class and per boundary hit, in float64 (numpy)."""
    import numpy as np

    f = features.double().numpy()
    d = depth.double().numpy()[:, 0]
    B, _, H, W = f.shape
    per_pixel = np.zeros((B, H, W))
    count = 0
    hits = {"dr == r_p": 0, **{f"dr == {v}": 0 for lo_hi in ranges for v in lo_hi}}
    for sb, sh, sw in shifts.tolist():
        for b in range(B):
            for h in range(H):
                for w in range(W):
                    bs, hs, ws = (b - sb) % B, (h - sh) % H, (w - sw) % W
                    da, ds = d[b, h, w], d[bs, hs, ws]
                    if not (np.isfinite(da) and np.isfinite(ds) and da > 0 and ds > 0):
                        continue
                    dr = abs(da - ds)
                    hits["dr == r_p"] += dr == r_p
                    for lo, hi in ranges:
                        hits[f"dr == {lo}"] += dr == lo
                        hits[f"dr == {hi}"] += dr == hi
                    dist = math.sqrt(sum((f[b, c, h, w] - f[bs, c, hs, ws]) ** 2 for c in range(f.shape[1])))
                    if dr < r_p:
                        per_pixel[b, h, w] += dist
                        count += 1
                    for (lo, hi), m in zip(ranges, margins):
                        if lo < dr <= hi:
                            per_pixel[b, h, w] += max(0.0, m - dist)
                            count += 1
    return per_pixel, count, hits


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_depth_differences_on_the_range_boundaries(dtype, backend):
    """Depths on a 0.5 m grid (exact in float32 and float64) put pair differentials exactly on r_p and on
    both ends of every range: a pair at |Dr| == r_p is not positive, one at lo is not in the range, one at hi
    is; the loss must equal the plain loop's."""
    r_p, ranges, margins = 0.5, [(0.5, 1.0), (1.0, 2.0)], [2.5, 4.0]
    g = torch.Generator().manual_seed(21)
    B, C, H, W = 2, 3, 3, 4
    depth = 0.5 * torch.randint(1, 7, (B, 1, H, W), generator=g).double()  # 0.5 .. 3.0 m
    depth[1, 0, 2, 3] = 0.0  # one invalid pixel
    features = torch.randn(B, C, H, W, generator=g, dtype=torch.float64).to(dtype)
    shifts = torch.tensor([[0, 0, 1], [0, 1, 0], [0, 2, 3], [0, 1, 2], [1, 0, 0], [1, 1, 1]])
    per_pixel, count, hits = worked_contrastive(features, depth, shifts, r_p, ranges, margins)
    assert all(n >= 3 for n in hits.values()), hits  # every boundary is hit by several pairs
    kw = dict(r_p=r_p, ranges=ranges, margins=margins, shifts=shifts, backend=backend)
    tol = dict(rtol=1e-12, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    got = mrc_loss(features, depth.to(dtype), reduction="none", **kw)
    torch.testing.assert_close(got[:, 0].double(), torch.from_numpy(per_pixel), **tol)
    got_mean = mrc_loss(features, depth.to(dtype), reduction="mean", **kw)
    torch.testing.assert_close(got_mean.double(), torch.tensor(per_pixel.sum() / count, dtype=torch.float64), **tol)
