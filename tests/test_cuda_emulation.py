"""Every CUDA kernel of the package, run on the CPU: tests/cuda_emulation builds the .cu files for the host
with a launch that runs each block's threads as OS threads (``__syncthreads`` a barrier, ``__shared__``
arrays statics, ``__shfl_down_sync`` an exchange between warp barriers), registered as
``torch.ops.depthmetric_emulated.*``, and the results must match the CPU kernels. This checks the kernels' indexing, tiling, reflection, selection, reduction and gather logic on
machines without a GPU (CI); speed, and whatever only the GPU compiler or hardware can get wrong, still need
a GPU run of the CUDA tests."""
import math

import pytest
import torch

import depthmetric as dm

from .registry import KERNEL_OPS, ROOT, contrastive_inputs, depth_pair, needs_ext, scene

pytestmark = needs_ext
KERNELS = sorted({op.kernel for op in KERNEL_OPS})


def emulated_sources() -> str:
    """One translation unit: the emulated launch first, then each kernel's schema and CUDA files, so they
    register as torch.ops.depthmetric_emulated.* (the emulation's launch header takes the place of csrc's)."""
    lines = ['#include "common/cuda_launch.cuh"', "STABLE_TORCH_LIBRARY(depthmetric_emulated, m) {}"]
    for kernel in KERNELS:
        lines.append(f'#include "{kernel}/{kernel}.cpp"')
        lines += [f'#include "{kernel}/cuda/{cu.name}"' for cu in sorted((ROOT / "csrc" / kernel / "cuda").glob("*.cu"))]
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def emulated(tmp_path_factory):
    from torch.utils.cpp_extension import load

    build = tmp_path_factory.mktemp("cuda_emulation")
    source = build / "emulated_ops.cpp"
    source.write_text(emulated_sources())
    load(name="depthmetric_cuda_emulation", sources=[str(source)],
         extra_include_paths=[str(ROOT / "tests" / "cuda_emulation"), str(ROOT / "csrc")],
         extra_cflags=["-O1", "-fvisibility=hidden"], build_directory=str(build), is_python_module=False)
    return torch.ops.depthmetric_emulated


@pytest.mark.parametrize("kernel", KERNELS)
def test_every_kernel_of_the_registry_is_compared(kernel):
    assert f"test_{kernel}_matches_cpu_kernel" in globals(), f"no emulation test compares {kernel}"


TOL = {torch.float64: 1e-12, torch.float32: 1e-4, torch.float16: 1e-2}  # float32: summation order differs


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 3, 2, 2), (2, 3, 9, 13), (1, 1, 17, 35)])
@pytest.mark.parametrize("n_sources", [1, 2, 4])
@pytest.mark.parametrize("automask,mean_sources", [(True, False), (False, False), (True, True), (False, True)])
def test_min_reprojection_matches_cpu_kernel(emulated, automask, mean_sources, n_sources, shape, dtype):
    target, warped, sources, g = scene(shape, n_sources, dtype, "cpu", seed=n_sources + shape[2])
    if not automask:
        sources = []
    warped[-1] = warped[-1].transpose(2, 3).contiguous().transpose(2, 3)  # a strided (non-contiguous) view
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    noise = 1e-5 * torch.randn(len(sources), *target.shape[:1], *target.shape[2:], generator=g, dtype=acc)
    noise = noise if sources else noise.new_empty(0)
    args = (target, warped, sources, noise, 0.85, mean_sources)
    loss, winner = emulated.min_reprojection(*args)
    cpu_loss, cpu_winner = torch.ops.depthmetric.min_reprojection(*args)
    torch.testing.assert_close(loss, cpu_loss, rtol=TOL[dtype], atol=TOL[dtype])
    assert torch.equal(winner, cpu_winner)

    # The gradient of a mean arrives as an expanded scalar; the CUDA backward reads it through its strides.
    grad_loss = torch.rand((), generator=g, dtype=acc).expand_as(loss)
    bwd = (target, warped, winner, 0.85, mean_sources)
    grads = emulated._min_reprojection_backward(grad_loss, *bwd)
    cpu_grads = torch.ops.depthmetric._min_reprojection_backward(grad_loss.contiguous(), *bwd)
    for got, want in zip(grads, cpu_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape,anchors", [((1, 3, 4, 5), (0, 1)), ((2, 5, 7, 9), (0, 2)), ((3, 4, 5, 6), (1, 1))])
@pytest.mark.parametrize("n_shifts", [0, 3, 40])  # 40: past the backward's 16-shift chunks
def test_multi_range_contrastive_matches_cpu_kernel(emulated, n_shifts, shape, anchors, dtype):
    features, depth, g = contrastive_inputs(shape, dtype, "cpu", seed=n_shifts + shape[1])
    features = features.transpose(2, 3).contiguous().transpose(2, 3)  # strided features
    B, _, H, W = shape
    shifts = torch.stack([torch.randint(0, n, (n_shifts,), generator=g) for n in (B, H, W)], 1)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    depth = torch.where(torch.isfinite(depth) & (depth > 0), depth, 0.0)[:, 0].to(acc)
    args = (features, depth, shifts, 0.1, [0.5, 1.0, 1.5], [1.0, 1.5, 2.0], [3.0, 6.0, 8.0], *anchors)
    loss, count, coef = emulated.multi_range_contrastive(*args)
    cpu_loss, cpu_count, cpu_coef = torch.ops.depthmetric.multi_range_contrastive(*args)
    assert torch.equal(count, cpu_count)
    torch.testing.assert_close(loss, cpu_loss, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(coef, cpu_coef, rtol=TOL[dtype], atol=TOL[dtype])

    grad_loss = torch.rand(loss.shape, generator=g, dtype=acc)
    grad = emulated._multi_range_contrastive_backward(grad_loss, features, shifts, coef, anchors[0])
    cpu_grad = torch.ops.depthmetric._multi_range_contrastive_backward(grad_loss, features, shifts, cpu_coef,
                                                                        anchors[0])
    assert grad.dtype == dtype
    torch.testing.assert_close(grad, cpu_grad, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("window,padding", [("box3", "reflect"), ("gauss11", "same"), ("gauss11", "valid"),
                                            ("gauss11", "reflect")])
@pytest.mark.parametrize("shape", [(1, 2, 11, 11), (2, 3, 21, 37)])
def test_ssim_matches_cpu_kernel(emulated, shape, window, padding, dtype):
    g = torch.Generator().manual_seed(shape[2] + len(window))
    x = torch.rand(shape, generator=g).to(dtype)
    y = torch.rand(shape, generator=g).to(dtype).transpose(2, 3).contiguous().transpose(2, 3)
    args = (x, y, dm.WINDOWS[window], dm.PADDINGS[padding])
    out, partials = emulated.ssim(*args, True)
    cpu_out, cpu_partials = torch.ops.depthmetric.ssim(*args)
    torch.testing.assert_close(out, cpu_out, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(partials, cpu_partials, rtol=TOL[dtype], atol=TOL[dtype])
    alone, none = emulated.ssim(*args, False)  # no backward to follow: the map alone
    assert torch.equal(alone, out) and none.numel() == 0

    grad = torch.rand(out.shape, generator=g, dtype=out.dtype).transpose(2, 3).contiguous().transpose(2, 3)
    grads = emulated._ssim_backward(grad, x, y, partials, *args[2:])  # grad through its strides
    cpu_grads = torch.ops.depthmetric._ssim_backward(grad, x, y, cpu_partials, *args[2:])
    for got, want in zip(grads, cpu_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])
    for need in ((True, False), (False, True)):  # a gradient not needed comes back empty, the other the same
        masked = emulated._ssim_backward(grad, x, y, partials, *args[2:], *need)
        for got, full, wanted in zip(masked, grads, need):
            assert torch.equal(got, full) if wanted else got.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 17, 31), (3, 1, 64, 80)])
def test_depth_metric_sums_matches_cpu_kernel(emulated, shape, dtype):
    B, _, H, W = shape
    pred, gt = depth_pair(B, H, W, dtype=dtype, seed=sum(shape), invalid=B > 1)
    pred = pred.transpose(2, 3).contiguous().transpose(2, 3)  # strided
    g = torch.Generator().manual_seed(B)
    mask = torch.rand(shape, generator=g) < 0.8
    scale = torch.rand(B, generator=g, dtype=torch.float64) + 0.5
    window = [H // 5, H - H // 7, W // 6, W]
    for args in ((None, None, 0.0, math.inf, [0, H, 0, W], False), (mask, scale, 0.1, 8.0, window, True)):
        got = emulated.depth_metric_sums(pred, gt, *args)
        want = torch.ops.depthmetric.depth_metric_sums(pred, gt, *args)
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-9)  # float64 sums, other order


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("kind,gamma,mean", [(0, 2, True), (0, 3, False), (1, 1, True), (1, 5, False)])
@pytest.mark.parametrize("shape,n_attractors", [((1, 1, 1, 1), 1), ((2, 5, 7, 9), 3), ((1, 3, 4, 70), 16),
                                                ((2, 4, 3, 5), 19), ((1, 2, 3, 4), 0)])  # 19: past a tile of 16
def test_attractor_shift_matches_cpu_kernel(emulated, shape, n_attractors, kind, gamma, mean, dtype):
    if mean and n_attractors == 0:
        pytest.skip("no attractor to average: an error, tested in test_attractor_shift")
    g = torch.Generator().manual_seed(sum(shape) + n_attractors)
    B, K, H, W = shape
    centers = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    centers = centers.transpose(2, 3).contiguous().transpose(2, 3)  # strided
    attractors = torch.rand(B, n_attractors, H, W, generator=g, dtype=torch.float64).to(dtype)
    attractors[..., 0] = centers[:, :1, :, 0] if n_attractors else attractors[..., 0]  # dx == 0 exactly
    args = (centers, attractors, 0.8, gamma, kind, mean)
    out = emulated.attractor_shift(*args)
    want = torch.ops.depthmetric.attractor_shift(*args)
    torch.testing.assert_close(out, want, rtol=TOL[dtype], atol=TOL[dtype])

    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.rand((), generator=g, dtype=acc).expand_as(out)  # an expanded scalar, read through its strides
    grads = emulated._attractor_shift_backward(grad, *args)
    cpu_grads = torch.ops.depthmetric._attractor_shift_backward(grad.contiguous(), *args)
    for got, want in zip(grads, cpu_grads):
        assert got.dtype == dtype
        torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])
BIN_SHAPES = [  # (B, K, H, W), centres' (h, w): per image, smaller, equal, a single row
    ((1, 3, 4, 5), (1, 1)), ((2, 4, 7, 9), (3, 4)), ((1, 2, 5, 6), (5, 6)), ((2, 3, 1, 7), (1, 3))]


def _compare_bins(emulated, name, args, extra, grad_shape, dtype, g):
    for return_probs in (False, True):
        got = getattr(emulated, name)(*args, *extra, return_probs)
        want = getattr(torch.ops.depthmetric, name)(*args, *extra, return_probs)
        for a, b in zip(got, want):
            torch.testing.assert_close(a, b, rtol=TOL[dtype], atol=TOL[dtype])
    stats = want[1]
    # The gradient of a sum arrives as an expanded scalar; the CUDA backward reads it through its strides.
    grad = torch.rand((), generator=g, dtype=torch.float64).to(dtype).expand(grad_shape)
    backward = f"_{name}_backward"
    full = getattr(emulated, backward)(grad, *args, stats, *extra)
    want = getattr(torch.ops.depthmetric, backward)(grad.contiguous(), *args, stats, *extra)
    for a, b in zip(full, want):
        torch.testing.assert_close(a, b, rtol=TOL[dtype], atol=TOL[dtype])
    for need in ((True, False, False), (False, True, False), (False, False, True)):  # one gradient at a time
        masked = getattr(emulated, backward)(grad, *args, stats, *extra, *need)
        for got, all_of_them, wanted in zip(masked, full, need):
            assert torch.equal(got, all_of_them) if wanted else got.numel() == 0


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape,centers_hw", BIN_SHAPES)
def test_bin_expectation_matches_cpu_kernel(emulated, shape, centers_hw, dtype):
    B, K, H, W = shape
    g = torch.Generator().manual_seed(H * W + K)
    logits = (3 * torch.randn(shape, generator=g, dtype=torch.float64)).to(dtype)
    logits = logits.transpose(2, 3).contiguous().transpose(2, 3)  # strided
    centers = (0.5 + 9.5 * torch.rand(B, K, *centers_hw, generator=g, dtype=torch.float64)).to(dtype)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    temperature = torch.tensor(0.8, dtype=acc).expand(B, 1, H, W)  # one number: a stride-0 view
    _compare_bins(emulated, "bin_expectation", (logits, centers, temperature), (), (B, 1, H, W), dtype, g)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape,centers_hw", BIN_SHAPES)
def test_log_binomial_expectation_matches_cpu_kernel(emulated, shape, centers_hw, dtype):
    B, K, H, W = shape
    g = torch.Generator().manual_seed(H * W + K)
    p = torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)
    p.view(-1)[:3] = torch.tensor([0.0, 1.0, 1e-4], dtype=torch.float64)[: p.numel()]  # the clamps' edges
    p = p.to(dtype).transpose(2, 3).contiguous().transpose(2, 3)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    t = (0.0212 + 2 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)).to(acc)
    centers = (0.5 + 9.5 * torch.rand(B, K, *centers_hw, generator=g, dtype=torch.float64)).to(dtype)
    _compare_bins(emulated, "log_binomial_expectation", (p, t, centers), (1e-4,), (B, 1, H, W), dtype, g)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(1, 1, 1), (2, 5, 7), (2, 17, 40)])
@pytest.mark.parametrize("trim,keep_rule,with_median", [(0.2, 0, True), (0.35, 1, True), (1.0, 0, True),
                                                       (0.0, 1, True), (0.2, 1, False)])
def test_order_statistics_matches_cpu_kernel(emulated, shape, trim, keep_rule, with_median, dtype):
    """Regions of every kind (whole image, boxes partly outside, depth ranges, label ids, an empty one), with
    ties (values on a grid of 8), both keep rules; the backward with a gradient on every statistic."""
    B, H, W = shape
    g = torch.Generator().manual_seed(H * W + keep_rule)
    values = (torch.randint(0, 8, shape, generator=g).double() / 4 - 0.5).to(dtype)
    values = values.transpose(1, 2).contiguous().transpose(1, 2)  # strided
    valid = torch.rand(shape, generator=g) > 0.25
    key = (3 * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)
    labels = torch.randint(-1, 3, shape, generator=g)
    boxes = torch.tensor([[0, H, 0, W], [-2, H // 2 + 1, W // 3, W + 5], [0, H, 0, W], [0, H, 0, W], [3, 1, 0, W]])
    ranges = torch.tensor([[-math.inf, math.inf]] * 3 + [[0.5, 2.0], [-math.inf, math.inf]], dtype=torch.float64)
    ids = torch.tensor([-1, -1, 1, -1, -1])
    args = (values, valid, key, labels, boxes.expand(B, 5, 4).contiguous(), ranges.expand(B, 5, 2).contiguous(),
            ids.expand(B, 5).contiguous(), trim, keep_rule)
    stats, counts = emulated.order_statistics(*args, with_median)
    cpu_stats, cpu_counts = torch.ops.depthmetric.order_statistics(*args, with_median)
    assert torch.equal(counts, cpu_counts)
    tol = {torch.float64: 1e-12, torch.float32: 1e-5, torch.float16: 1e-5}[dtype]
    torch.testing.assert_close(stats, cpu_stats, rtol=tol, atol=tol)
    grad = torch.rand(B, 5, 4, generator=g, dtype=stats.dtype)
    got = emulated._order_statistics_backward(grad, *args, stats, counts)
    want = torch.ops.depthmetric._order_statistics_backward(grad, *args, cpu_stats, cpu_counts)
    assert got.dtype == dtype
    torch.testing.assert_close(got, want, rtol=tol, atol=tol)
