"""SILogLoss: ZoeDepth and BTS forms against numpy, scale invariance, masking, interpolation, gradients."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import depthmetric as dm
from depthmetric import SILogLoss, silog_loss

from .registry import DEVICES, assert_close_scaled


def pair(B=2, H=12, W=15, seed=0, dtype=torch.float64, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, 1, H, W, generator=g, dtype=torch.float64) * 8 + 0.2
    pred = target * torch.exp(0.3 * torch.randn(B, 1, H, W, generator=g, dtype=torch.float64))
    target[torch.rand(B, 1, H, W, generator=g) < 0.25] = 0.0
    target[0, 0, 0, :2] = torch.tensor([float("nan"), float("inf")])
    return pred.to(device, dtype).requires_grad_(), target.to(device, dtype)


def np_silog(pred, target, valid, beta=0.15, eps=1e-7, variance_focus=None):
    g = np.log(pred[valid] + eps) - np.log(target[valid] + eps)  # pooled over the batch, as ZoeDepth
    if variance_focus is None:
        return 10 * np.sqrt(np.var(g, ddof=1) + beta * np.mean(g) ** 2)  # torch.var is unbiased
    return 10 * np.sqrt(np.mean(g ** 2) - variance_focus * np.mean(g) ** 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kwargs", [{}, dict(beta=0.5), dict(variance_focus=0.85), dict(beta=0.0, eps=0.0)])
def test_against_numpy(device, kwargs):
    pred, target = pair(device=device)
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(5)).to(device) < 0.8
    p, t, m = pred.detach().cpu().numpy(), target.cpu().numpy(), mask.cpu().numpy()
    valid = np.isfinite(t) & (np.nan_to_num(t) > 0)
    got = silog_loss(pred, target, **kwargs)
    assert got.item() == pytest.approx(np_silog(p, np.nan_to_num(t), valid, **kwargs), rel=1e-12)
    got = SILogLoss(**kwargs)(pred, target[:, 0], mask=mask)
    assert got.item() == pytest.approx(np_silog(p, np.nan_to_num(t), valid & m, **kwargs), rel=1e-12)


def test_bts_form_is_population_variance_of_zoedepth_form():
    pred, target = pair()
    n = int(dm._checks.valid_depth(target).sum())
    zoe = silog_loss(pred, target, beta=0.0) ** 2 * (n - 1) / n
    bts = silog_loss(pred, target, variance_focus=1.0) ** 2
    assert zoe.item() == pytest.approx(bts.item(), rel=1e-12)


def test_beta_zero_is_scale_invariant():
    pred, target = pair()
    base = silog_loss(pred, target, beta=0.0, eps=0.0)
    for s in (0.1, 3.7, 250.0):
        assert silog_loss(pred * s, target, beta=0.0, eps=0.0).item() == pytest.approx(base.item(), rel=1e-12)
    assert silog_loss(pred * 3.7, target).item() > silog_loss(pred, target).item()  # beta > 0 is not


def test_interpolates_like_zoedepth():
    pred, target = pair(H=24, W=30)
    small = pred.detach()[..., ::2, ::2]
    resized = F.interpolate(small, size=(24, 30), mode="bilinear", align_corners=True)
    assert silog_loss(small, target).item() == silog_loss(resized, target).item()
    with pytest.raises(ValueError, match="pred"):
        silog_loss(small, target, interpolate=False)


@pytest.mark.parametrize("kwargs", [{}, dict(variance_focus=0.85)])
def test_gradcheck(kwargs):
    pred, target = pair(B=2, H=4, W=5)
    assert torch.autograd.gradcheck(lambda p: silog_loss(p, target, **kwargs), (pred,))


@pytest.mark.parametrize("kwargs", [{}, dict(variance_focus=0.85)])
def test_no_valid_pixel_and_exact_prediction_give_zero_without_nan(kwargs):
    pred, target = pair()
    empty = torch.zeros_like(target)
    loss = silog_loss(pred, empty, **kwargs)
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))
    exact = target.nan_to_num(1.0, 1.0, 1.0).clamp(min=0.5).requires_grad_()
    loss = silog_loss(exact, exact.detach(), **kwargs)
    loss.backward()
    assert loss.item() == 0 and torch.isfinite(exact.grad).all()


def test_invalid_pixels_get_no_gradient_and_pooling_is_over_the_batch():
    pred, target = pair()
    silog_loss(pred, target).backward()
    invalid = ~dm._checks.valid_depth(target)
    assert torch.equal(pred.grad[invalid], torch.zeros_like(pred.grad[invalid]))
    assert (pred.grad[~invalid] != 0).all()
    both = silog_loss(pred, target)
    first = silog_loss(pred[:1], target[:1])
    assert both.item() != pytest.approx(first.item())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_accumulate_in_float32(dtype):
    """The loss (float32) and the gradient (in the input dtype) against float64 on the same rounded values,
    within tolerances scaled to their magnitude (the mean and variance sum over all pixels)."""
    pred, target = pair()
    low_p = pred.detach().to(dtype).requires_grad_()
    got = silog_loss(low_p, target.to(dtype))
    got.backward()
    ref_p = low_p.detach().double().requires_grad_()
    want = silog_loss(ref_p, target.to(dtype).double())
    want.backward()
    assert got.dtype == torch.float32 and low_p.grad.dtype == dtype
    assert_close_scaled(got, want, torch.float32, n_terms=pred.numel())
    assert_close_scaled(low_p.grad, ref_p.grad, dtype, n_terms=pred.numel())


@pytest.mark.parametrize("call, exc, name", [
    (lambda p, t: silog_loss(p.long(), t), TypeError, "pred"),
    (lambda p, t: silog_loss(p, t.int()), TypeError, "target"),
    (lambda p, t: silog_loss(p, t[:1]), ValueError, "target"),
    (lambda p, t: silog_loss(p.expand(-1, 3, -1, -1), t), ValueError, "pred"),
    (lambda p, t: silog_loss(p, t, mask=t), TypeError, "mask"),
    (lambda p, t: silog_loss(p.detach() * float("nan"), t), ValueError, "pred"),
    (lambda p, t: silog_loss(p, t, beta=-1.0), ValueError, "beta"),
    (lambda p, t: silog_loss(p, t, eps=float("inf")), ValueError, "eps"),
    (lambda p, t: SILogLoss(variance_focus=1.5), ValueError, "variance_focus"),
    (lambda p, t: SILogLoss(backend="gpu"), ValueError, "backend"),
    (lambda p, t: silog_loss(p, t, backend="cuda"), ValueError, "backend"),
])
def test_bad_input(call, exc, name):
    pred, target = pair()
    with pytest.raises(exc, match=name):
        call(pred, target)


@pytest.mark.parametrize("variance_focus", [None, 0.85])
def test_reduction_none_is_each_image_on_its_own(variance_focus):
    """Per-image SILog: image b's loss is the pooled loss of a batch holding image b alone (an image with no
    valid pixel gives 0); the mean reduction stays the batch-pooled loss, which differs from their mean."""
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(3, 1, 6, 7, generator=g, dtype=torch.float64) + 0.5
    target = torch.rand(3, 1, 6, 7, generator=g, dtype=torch.float64) * 3 + 0.2
    target[1] *= 2.5  # another scale per image: pooled and per-image statistics differ
    target[2] = 0  # no valid pixel
    per_image = silog_loss(pred, target, variance_focus=variance_focus, reduction="none")
    assert per_image.shape == (3,)
    for b in range(3):
        assert per_image[b].item() == pytest.approx(silog_loss(pred[b:b + 1], target[b:b + 1],
                                                               variance_focus=variance_focus).item(), rel=1e-12)
    assert per_image[2] == 0
    pooled = silog_loss(pred, target, variance_focus=variance_focus)
    assert abs(pooled.item() - per_image[:2].mean().item()) > 1e-3
    module = SILogLoss(variance_focus=variance_focus, reduction="none")
    torch.testing.assert_close(module(pred, target), per_image, rtol=0, atol=0)
    with pytest.raises(ValueError, match="reduction must be one of"):
        SILogLoss(reduction="max")
