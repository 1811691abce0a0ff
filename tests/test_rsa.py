"""RSA: inverse_affine_depth and rsa_loss against numpy loops written from RSA's training code, its range,
count epsilon and batch sum, the Huber and L2 kinds, gradients, bad input named."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric import RSALoss, inverse_affine_depth, rsa_loss

from .registry import DEVICES, depth_pair


def np_rsa(pred, target, min_depth=1e-3, max_depth=10.0, kind="l1", delta=1.0):
    """Per image: the error sum over the pixels with min < gt < max, / (n + 1e-6), times (n + 1e-6) / (H W);
    summed over the batch. Returns (sum, per image)."""
    B, _, H, W = target.shape
    per_image = []
    for b in range(B):
        total, n = 0.0, 0
        for i in range(H):
            for j in range(W):
                t, p = target[b, 0, i, j], pred[b, 0, i, j]
                if not (np.isfinite(t) and min_depth < t < max_depth):
                    continue
                d = p - t
                if kind == "l1":
                    e = abs(d)
                elif kind == "l2":
                    e = d * d
                else:
                    e = 0.5 * d * d if abs(d) < delta else delta * (abs(d) - 0.5 * delta)
                total += e
                n += 1
        count = n + 1e-6
        per_image.append(total / count * (count / (H * W)))
    return sum(per_image), np.array(per_image)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", ["l1", "huber", "l2"])
def test_rsa_loss_against_numpy(device, kind):
    pred, target = depth_pair(B=3, H=7, W=9, device=device)
    pred.requires_grad_()
    p, t = pred.detach().cpu().numpy(), target.cpu().numpy()
    want, want_images = np_rsa(p, t, kind=kind)
    assert rsa_loss(pred, target, kind=kind).item() == pytest.approx(want, rel=1e-12)
    got = RSALoss(kind=kind, reduction="none")(pred, target)
    np.testing.assert_allclose(got.detach().cpu().numpy(), want_images, rtol=1e-12)
    assert want_images[-1] == 0  # depth_pair's last image has no valid pixel
    assert rsa_loss(pred, target, kind=kind, reduction="mean").item() == pytest.approx(want / 3, rel=1e-12)


def test_range_is_strict_and_configurable():
    """RSA keeps min < gt < max: a ground truth at max_depth (or min_depth) exactly is left out."""
    pred = torch.full((1, 1, 2, 2), 5.0, dtype=torch.float64)
    target = torch.tensor([[[[10.0, 9.0], [1e-3, 20.0]]]], dtype=torch.float64)
    # only the 9 m pixel counts: |5 - 9| / (1 + 1e-6) * (1 + 1e-6) / 4
    assert rsa_loss(pred, target).item() == pytest.approx(4 / 4, rel=1e-12)
    assert rsa_loss(pred, target, max_depth=80.0).item() == pytest.approx((5 + 4 + 15) / 4, rel=1e-12)
    assert rsa_loss(pred, target, min_depth=0.0, max_depth=80.0).item() == pytest.approx(
        (5 + 4 + abs(5 - 1e-3) + 15) / 4, rel=1e-12)


def test_weight_is_the_valid_fraction_with_rsa_count_epsilon():
    """One valid pixel of 4: the mean error (over 1 + 1e-6) times the valid fraction (1 + 1e-6) / 4."""
    pred = torch.tensor([[[[3.0, 1.0], [1.0, 1.0]]]], dtype=torch.float64)
    target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]], dtype=torch.float64)
    count = 1 + 1e-6
    assert rsa_loss(pred, target).item() == pytest.approx(2.0 / count * (count / 4), rel=1e-15)


def test_mask_and_interpolation():
    pred, target = depth_pair(B=2, H=8, W=10)
    mask = torch.rand(target.shape, generator=torch.Generator().manual_seed(1)) < 0.7
    masked = torch.where(mask, target, 0.0)
    assert rsa_loss(pred, target, mask).item() == pytest.approx(rsa_loss(pred, masked).item(), rel=1e-12)
    small = pred[..., ::2, ::2]
    resized = torch.nn.functional.interpolate(small, size=(8, 10), mode="bilinear", align_corners=True)
    assert rsa_loss(small, target).item() == rsa_loss(resized, target).item()
    with pytest.raises(ValueError, match="pred"):
        rsa_loss(small, target, interpolate=False)


def test_empty_gives_zero_with_zero_gradient():
    pred, target = depth_pair(B=2, H=4, W=5)
    pred.requires_grad_()
    loss = rsa_loss(pred, torch.zeros_like(target))
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))
    assert rsa_loss(pred[..., :0], target[..., :0]).item() == 0


@pytest.mark.parametrize("kind", ["huber", "l2"])
def test_gradcheck(kind):
    pred, target = depth_pair(B=2, H=3, W=4)
    pred.requires_grad_()
    assert torch.autograd.gradcheck(lambda p: rsa_loss(p, target, kind=kind), (pred,))


def np_inverse_affine(rel, scale, shift, eps):
    B = rel.shape[0]
    out = np.empty_like(rel)
    for b in range(B):
        out[b] = 1.0 / (scale[b] * rel[b] + shift[b] + eps)
    return out


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("eps", [1e-8, 0.0])
def test_inverse_affine_depth_against_numpy(device, eps):
    g = torch.Generator().manual_seed(0)
    rel = (torch.rand(3, 1, 4, 5, generator=g, dtype=torch.float64) * 2).to(device)
    scale = (torch.rand(3, generator=g, dtype=torch.float64) + 0.5).to(device)
    shift = (torch.rand(3, generator=g, dtype=torch.float64) * 0.2).to(device)
    want = np_inverse_affine(rel.cpu().numpy(), scale.cpu().numpy(), shift.cpu().numpy(), eps)
    for s, t in ((scale, shift), (scale[:, None], shift[:, None]), (scale.view(3, 1, 1, 1), shift.view(3, 1, 1, 1)),
                 (scale.view(3, 1, 1, 1).expand_as(rel), shift.view(3, 1, 1, 1).expand_as(rel))):
        got = inverse_affine_depth(rel, s, t, eps=eps)
        np.testing.assert_allclose(got.cpu().numpy(), want, rtol=1e-15)
    flat = inverse_affine_depth(rel[:, 0], scale, shift, eps=eps)  # B,H,W in, B,H,W out
    assert flat.shape == (3, 4, 5)
    np.testing.assert_allclose(flat.cpu().numpy(), want[:, 0], rtol=1e-15)


def test_inverse_affine_default_eps_is_rsa_training_eps():
    rel, one = torch.zeros(1, 1, 1, 1, dtype=torch.float64), torch.ones(1, dtype=torch.float64)
    assert inverse_affine_depth(rel, one, one).item() == 1 / (1 + 1e-8)


def test_inverse_affine_gradcheck_and_rsa_pipeline():
    g = torch.Generator().manual_seed(3)
    rel = torch.rand(2, 1, 3, 4, generator=g, dtype=torch.float64) + 0.2
    scale = (torch.rand(2, generator=g, dtype=torch.float64) + 0.5).requires_grad_()
    shift = (torch.rand(2, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    assert torch.autograd.gradcheck(lambda r, s, t: inverse_affine_depth(r, s, t),
                                    (rel.requires_grad_(), scale, shift))
    gt = torch.rand(2, 1, 3, 4, generator=g, dtype=torch.float64) * 5 + 0.5
    loss = RSALoss()(inverse_affine_depth(rel.detach(), scale, shift), gt)
    loss.backward()  # RSA trains the scale and shift heads through the map
    assert scale.grad.abs().min() > 0 and shift.grad.abs().min() > 0


@pytest.mark.parametrize("call, exc, name", [
    (lambda p, t: rsa_loss(p.long(), t), TypeError, "pred"),
    (lambda p, t: rsa_loss(p, t.int()), TypeError, "target"),
    (lambda p, t: rsa_loss(p, t[:1]), ValueError, "target"),
    (lambda p, t: rsa_loss(p.detach() * math.nan, t), ValueError, "pred"),
    (lambda p, t: rsa_loss(p, t, kind="l3"), ValueError, "kind"),
    (lambda p, t: rsa_loss(p, t, min_depth=-1.0), ValueError, "min_depth"),
    (lambda p, t: rsa_loss(p, t, max_depth=1e-3), ValueError, "max_depth"),
    (lambda p, t: rsa_loss(p, t, delta=0.0), ValueError, "delta"),
    (lambda p, t: RSALoss(reduction="max"), ValueError, "reduction"),
    (lambda p, t: RSALoss(backend="gpu"), ValueError, "backend"),
    (lambda p, t: inverse_affine_depth(p, t[:1, 0, 0, 0], t[:, 0, 0, 0]), ValueError, "scale"),
    (lambda p, t: inverse_affine_depth(p, p[:, 0, 0, 0], p[:, :, :1]), ValueError, "shift"),
    (lambda p, t: inverse_affine_depth(p.expand(-1, 2, -1, -1), p[:, 0, 0, 0], p[:, 0, 0, 0]), ValueError, "rel"),
    (lambda p, t: inverse_affine_depth(p, p[:, 0, 0, 0].int(), p[:, 0, 0, 0]), TypeError, "scale"),
    (lambda p, t: inverse_affine_depth(p, p[:, 0, 0, 0] * math.inf, p[:, 0, 0, 0]), ValueError, "scale"),
    (lambda p, t: inverse_affine_depth(p, p[:, 0, 0, 0], p[:, 0, 0, 0], eps=-1.0), ValueError, "eps"),
])
def test_bad_input(call, exc, name):
    pred, target = depth_pair(B=2, H=4, W=5)
    with pytest.raises(exc, match=name):
        call(pred, target)


def test_exported():
    assert {"inverse_affine_depth", "rsa_loss", "RSALoss"} <= set(dm.__all__)
