"""ZoeDepth's GradL1Loss: against a numpy loop written from ZoeDepth's definition (squared magnitude, atan of
the ratio, the three-pixel mask, batch-pooled means), masking, edge cases, gradients, bad input named."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric import GradL1Loss, grad_l1_loss

from .registry import DEVICES, depth_pair


def np_grad_l1(pred, target, valid):
    """Loop over pixels (i, j), i, j >= 1, whose own, left and upper pixels are valid, over the whole batch:
    |m_p - m_t| + |a_p - a_t| with m = dx^2 + dy^2, a = atan(dy / (dx + 1e-10)); both means over those pixels.
    Returns (pooled, per image)."""
    B, _, H, W = pred.shape
    sums, counts = np.zeros(B), np.zeros(B)
    for b in range(B):
        for i in range(1, H):
            for j in range(1, W):
                if not (valid[b, 0, i, j] and valid[b, 0, i, j - 1] and valid[b, 0, i - 1, j]):
                    continue
                terms = []
                for x in (pred, target):
                    dx = x[b, 0, i, j] - x[b, 0, i, j - 1]
                    dy = x[b, 0, i, j] - x[b, 0, i - 1, j]
                    terms.append((dx * dx + dy * dy, math.atan(dy / (dx + 1e-10))))
                sums[b] += abs(terms[0][0] - terms[1][0]) + abs(terms[0][1] - terms[1][1])
                counts[b] += 1
    pooled = sums.sum() / counts.sum() if counts.sum() else 0.0
    return pooled, np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_against_numpy(device):
    pred, target = depth_pair(B=3, H=6, W=8, device=device)
    mask = (torch.rand(target.shape, generator=torch.Generator().manual_seed(4)) < 0.8).to(device)
    p, t, m = pred.cpu().numpy(), target.cpu().numpy(), mask.cpu().numpy()
    valid = np.isfinite(t) & (np.nan_to_num(t) > 0)
    want, want_images = np_grad_l1(p, np.nan_to_num(t), valid)
    assert grad_l1_loss(pred, target).item() == pytest.approx(want, rel=1e-12)
    want_masked, want_masked_images = np_grad_l1(p, np.nan_to_num(t), valid & m)
    assert GradL1Loss()(pred, target, mask).item() == pytest.approx(want_masked, rel=1e-12)
    got = GradL1Loss(reduction="none")(pred, target, mask)
    np.testing.assert_allclose(got.cpu().numpy(), want_masked_images, rtol=1e-12)


def test_offset_gives_zero_and_a_scale_changes_the_magnitudes_only():
    """A constant offset leaves every difference unchanged: the loss is 0. A scaled copy changes the
    magnitudes (squared: a factor s^2) and keeps the angles."""
    _, target = depth_pair(B=2, H=5, W=6, invalid=False)
    assert grad_l1_loss(target + 0.7, target).item() == pytest.approx(0.0, abs=1e-12)
    dx = target[..., 1:, 1:] - target[..., 1:, :-1]
    dy = target[..., 1:, 1:] - target[..., :-1, 1:]
    mag = (dx ** 2 + dy ** 2)
    want = (3.0 ** 2 - 1) * mag.mean().item()
    assert grad_l1_loss(3.0 * target, target).item() == pytest.approx(want, rel=1e-6)


def test_one_invalid_pixel_removes_the_three_gradients_that_read_it():
    pred, target = depth_pair(B=1, H=4, W=4, invalid=False)
    mask = torch.ones_like(target, dtype=torch.bool)
    mask[0, 0, 1, 1] = False
    _, per = np_grad_l1(pred.numpy(), target.numpy(), mask.numpy())
    assert grad_l1_loss(pred, target, mask).item() == pytest.approx(per[0], rel=1e-12)
    # pixels (1,1) itself, (1,2) (its left neighbour) and (2,1) (its upper neighbour) drop out: 9 - 3 = 6 left
    counted = mask[..., 1:, 1:] & mask[..., 1:, :-1] & mask[..., :-1, 1:]
    assert int(counted.sum()) == 6


@pytest.mark.parametrize("shape", [(2, 1, 1, 5), (2, 1, 5, 1), (0, 1, 5, 5)])
def test_too_small_or_empty_gives_zero_with_zero_gradient(shape):
    pred = torch.rand(shape, dtype=torch.float64).add(1).requires_grad_()
    loss = grad_l1_loss(pred, torch.ones(shape, dtype=torch.float64))
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_no_valid_pixel_gives_zero_not_nan():
    pred, target = depth_pair(B=2, H=4, W=5)
    pred.requires_grad_()
    loss = grad_l1_loss(pred, torch.zeros_like(target))
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))


def test_interpolates_like_zoedepth():
    pred, target = depth_pair(B=2, H=8, W=10)
    small = pred[..., ::2, ::2]
    resized = torch.nn.functional.interpolate(small, size=(8, 10), mode="bilinear", align_corners=True)
    assert grad_l1_loss(small, target).item() == grad_l1_loss(resized, target).item()
    with pytest.raises(ValueError, match="pred"):
        grad_l1_loss(small, target, interpolate=False)


def test_gradcheck():
    pred, target = depth_pair(B=2, H=4, W=5)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: grad_l1_loss(p, target), (pred,))


@pytest.mark.parametrize("call, exc, name", [
    (lambda p, t: grad_l1_loss(p.long(), t), TypeError, "pred"),
    (lambda p, t: grad_l1_loss(p, t.int()), TypeError, "target"),
    (lambda p, t: grad_l1_loss(p, t, mask=t), TypeError, "mask"),
    (lambda p, t: grad_l1_loss(p.detach() * math.nan, t), ValueError, "pred"),
    (lambda p, t: GradL1Loss(reduction="max"), ValueError, "reduction"),
    (lambda p, t: GradL1Loss(backend="gpu"), ValueError, "backend"),
    (lambda p, t: grad_l1_loss(p, t, normalize="world"), ValueError, "normalize"),
])
def test_bad_input(call, exc, name):
    pred, target = depth_pair(B=2, H=4, W=5)
    with pytest.raises(exc, match=name):
        call(pred, target)


def test_exported():
    assert {"grad_l1_loss", "GradL1Loss"} <= set(dm.__all__)
