"""depthmetric::depth_metric_sums, the fused per-image sums of the evaluation metrics: the kernel against its
twin (depthmetric.reference.depth_metric_sums) over dtypes, shapes, masks, scales, crops and both interval
rules, its own float32 log over the whole float range, strided inputs, opcheck, and its input errors."""
import math

import pytest
import torch

from depthmetric import _ext
from depthmetric.metrics import compute
from depthmetric.reference.depth_metric_sums import depth_metric_sums as reference_sums

from .registry import DEVICES, assert_close_scaled, depth_pair, needs_ext


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 17, 31), (3, 1, 64, 80)])
def test_kernel_matches_reference(device, dtype, shape):
    """Each sum against the twin's (float64, from the same rounded inputs) within a tolerance scaled by that
    sum's own magnitude and the image's pixel count (``assert_close_scaled``): a zero, negated or 1.5x column
    fails at every dtype; a column the twin finds all zero (no valid pixel) must be exactly zero."""
    pred, gt = depth_pair(*shape[:1], *shape[2:], device=device, dtype=dtype, seed=sum(shape),
                           invalid=shape[0] > 1)
    H, W = shape[2:]
    mask = (torch.rand(shape, generator=torch.Generator().manual_seed(sum(shape))) < 0.8).to(device)
    scale = torch.rand(shape[0], dtype=torch.float64, device=device) + 0.5
    window = [H // 5, H - H // 7, W // 6, W]
    for args in ((None, None, 0.0, math.inf, [0, H, 0, W]), (mask, scale, 0.1, 8.0, window)):
        for closed in (False, True):
            got = torch.ops.depthmetric.depth_metric_sums(pred, gt, *args, closed)
            want = reference_sums(pred, gt, *args[:4], tuple(args[4]), closed)
            assert got.dtype == torch.float64 and got.shape == (shape[0], 10)
            for column in range(10):
                if want[:, column].abs().max() == 0:
                    assert (got[:, column] == 0).all(), column
                else:
                    # depth_pair's predictions lie within a few % of the truth, so p - g and log p - log g
                    # cancel, amplifying the float32/64 rounding ~150x relative to the result (factor 256);
                    # in 16 bits the inputs' own rounding, which the twin shares, is all that is left over.
                    factor = 2.0 if dtype in (torch.float16, torch.bfloat16) else 256.0
                    assert_close_scaled(got[:, column], want[:, column], dtype, n_terms=H * W, factor=factor)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_kernel_logs_over_the_whole_float_range(device):
    """The float32 kernel takes its own vectorisable log (csrc/depth_metric_sums/metric_math.h): ratios from
    subnormal to near the float maximum, powers of two and 1 give the float64 reference's log sums."""
    g = torch.Generator().manual_seed(11)
    exponents = torch.rand(4, 1, 16, 64, generator=g, dtype=torch.float64) * 170 - 130  # 2^-130 .. 2^40
    pred = torch.exp2(exponents).float()
    pred.view(-1)[:8] = torch.tensor([1.0, 2.0, 0.5, 2.0**-126, 2.0**-149, 3e38, 1.0 - 2**-24, 1.0 + 2**-23])
    assert (pred > 0).all() and (pred < 2.0**-126).sum() > 50  # subnormal ratios among them
    gt = torch.ones_like(pred)
    got = torch.ops.depthmetric.depth_metric_sums(pred.to(device), gt.to(device), None, None, 0.0, math.inf,
                                                  [0, 16, 0, 64], False).cpu()
    want = reference_sums(pred.double(), gt.double(), None, None, 0.0, math.inf, (0, 16, 0, 64), False)
    logs = [4, 5, 6]  # log_err, log_err_sq, abs_log_err
    torch.testing.assert_close(got[:, logs], want[:, logs], rtol=1e-7, atol=0)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_kernel_reads_strided_inputs_and_is_deterministic(device):
    pred, gt = depth_pair(B=2, H=33, W=70, device=device, dtype=torch.float32)
    wide_p = pred.transpose(-1, -2).contiguous().transpose(-1, -2)  # column-major
    wide_g = torch.cat([gt, torch.zeros_like(gt)], -1)[..., :70]  # a slice of a wider map
    args = (None, None, 1e-3, 10.0, [3, 30, 5, 60])
    a = torch.ops.depthmetric.depth_metric_sums(wide_p, wide_g, *args)
    b = torch.ops.depthmetric.depth_metric_sums(pred.contiguous(), gt, *args)
    assert torch.equal(a, b)
    assert torch.equal(a, torch.ops.depthmetric.depth_metric_sums(wide_p, wide_g, *args))


@needs_ext
def test_kernel_opcheck():
    pred, gt = depth_pair(B=2, H=9, W=11, dtype=torch.float32)
    mask = torch.rand(pred.shape) < 0.7
    scale = torch.rand(2, dtype=torch.float64) + 0.5
    torch.library.opcheck(torch.ops.depthmetric.depth_metric_sums.default,
                          (pred, gt, mask, scale, 1e-3, 10.0, [1, 8, 0, 11]))
    torch.library.opcheck(torch.ops.depthmetric.depth_metric_sums.default,
                          (pred, gt, None, None, 0.0, math.inf, [0, 9, 0, 11]))
    torch.library.opcheck(torch.ops.depthmetric.depth_metric_sums.default,
                          (pred, gt, mask, scale, 1e-3, 10.0, [1, 8, 0, 11], True))  # the closed interval


@needs_ext
def test_kernel_input_errors():
    pred, gt = depth_pair(B=2, H=9, W=11, dtype=torch.float32)
    with pytest.raises(RuntimeError, match="window"):
        torch.ops.depthmetric.depth_metric_sums(pred, gt, None, None, 0.0, 10.0, [0, 10, 0, 11])
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.depthmetric.depth_metric_sums(pred, gt.double(), None, None, 0.0, 10.0, [0, 9, 0, 11])


def test_auto_raises_without_kernel(monkeypatch):
    monkeypatch.setattr(_ext, "_C", None)
    pred, gt = depth_pair(B=1)
    with pytest.raises(RuntimeError, match="reference"):
        compute(pred, gt)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_depths_exactly_on_the_range_bounds(device, dtype):
    """Ground truth exactly at min_depth and max_depth: the default range is open (Monodepth2, BTS, ZoeDepth:
    min < gt < max), the closed one counts both; the count column is exact, kernel and twin alike."""
    lo, hi = 0.5, 8.0  # representable in every dtype here
    gt = torch.tensor([[lo, hi, 1.0, 2.0, 7.5, 0.25, 9.0, lo, hi, 3.0]], dtype=dtype).view(1, 1, 1, 10).to(device)
    pred = torch.full_like(gt, 2.0)
    for closed, inside in ((False, 4), (True, 8)):
        got = torch.ops.depthmetric.depth_metric_sums(pred, gt, None, None, lo, hi, [0, 1, 0, 10], closed)
        want = reference_sums(pred, gt, None, None, lo, hi, (0, 1, 0, 10), closed)
        assert got[0, 0].item() == want[0, 0].item() == inside, (closed, got[0, 0].item(), want[0, 0].item())
