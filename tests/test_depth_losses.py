"""Depth Pro's trimmed MAE and multi-scale derivative losses and the SSI loss, against numpy."""
import numpy as np
import pytest
import torch

from depthmetric import (
    MultiScaleDerivativeLoss,
    ScaleShiftInvariantLoss,
    TrimmedMAELoss,
    multi_scale_derivative_loss,
    scale_shift_invariant_loss,
    trimmed_mae_loss,
)

from .registry import DEVICES, assert_close_scaled

LOSSES = [trimmed_mae_loss, multi_scale_derivative_loss, scale_shift_invariant_loss]


def pair(B=3, H=20, W=26, seed=0, dtype=torch.float64, device="cpu", holes=True):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(B, 1, H, W, generator=g, dtype=torch.float64) + 0.1
    pred = target + 0.2 * torch.randn(B, 1, H, W, generator=g, dtype=torch.float64)
    if holes:
        target[torch.rand(B, 1, H, W, generator=g) < 0.1] = 0.0
        target[0, 0, 1, :2] = torch.tensor([float("nan"), float("inf")])
        target[-1] = 0.0  # an image with no valid pixel
    return pred.to(device, dtype).requires_grad_(), target.to(device, dtype)


def valid_np(target, mask=None):
    t = target.cpu().numpy()[:, 0]
    v = np.isfinite(t) & (np.nan_to_num(t) > 0)
    return v if mask is None else v & mask.cpu().numpy()[:, 0]


def batch_mean(per_image):
    kept = [v for v in per_image if v is not None]
    return np.mean(kept) if kept else 0.0


# ---------- numpy twins, written independently ----------

def np_trimmed(pred, target, valid, trim):
    out = []
    for p, t, v in zip(pred, target, valid):
        e = np.sort(np.abs(p[v] - t[v]))
        n = e.size
        out.append(None if n == 0 else e[: n - int(np.floor(n * trim))].mean())
    return out


SCHARR = np.array([[-3, 0, 3], [-10, 0, 10], [-3, 0, 3]], float) / 32
LAPLACE = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], float)


def correlate_valid(x, k):
    H, W = x.shape
    return sum(k[a, b] * x[a:H - 2 + a, b:W - 2 + b] for a in range(3) for b in range(3))


def np_derivative(pred, target, valid, operator, p, scales):
    kernels = [SCHARR, SCHARR.T] if operator == "scharr" else [LAPLACE]
    support = np.any([k != 0 for k in kernels], axis=0)
    out = []
    for pr, t, v in zip(pred, target, valid):
        d = np.where(v, pr - np.nan_to_num(t), 0.0)
        per_scale = []
        for j in range(scales):
            if j:
                h, w = d.shape[0] // 2 * 2, d.shape[1] // 2 * 2
                d = d[:h, :w].reshape(h // 2, 2, w // 2, 2).mean((1, 3))
                v = v[:h, :w].reshape(h // 2, 2, w // 2, 2).all((1, 3))
            if min(d.shape) < 3:
                break
            ok = correlate_valid((~v).astype(float), support.astype(float)) == 0
            term = sum(np.abs(correlate_valid(d, k)) ** p for k in kernels)
            if ok.any():
                per_scale.append(term[ok].mean())
        out.append(np.mean(per_scale) if per_scale else None)
    return out


def np_ssi(pred, target, valid):
    out = []
    for p, t, v in zip(pred, target, valid):
        if not v.any():
            out.append(None)
            continue
        A = np.stack([p[v], np.ones(v.sum())], 1)
        (s, b), *_ = np.linalg.lstsq(A, t[v], rcond=None)
        out.append(np.abs(s * p[v] + b - t[v]).mean())
    return out


def numpy_loss(fn, pred, target, valid, **kwargs):
    p, t = pred.detach().cpu().numpy()[:, 0], np.nan_to_num(target.cpu().numpy()[:, 0])
    if fn is trimmed_mae_loss:
        return np_trimmed(p, t, valid, kwargs.get("trim", 0.2))
    if fn is multi_scale_derivative_loss:
        return np_derivative(p, t, valid, kwargs.get("operator", "scharr"), kwargs.get("p", 1),
                             kwargs.get("scales", 4))
    return np_ssi(p, t, valid)


CASES = [
    (trimmed_mae_loss, {}), (trimmed_mae_loss, dict(trim=0.0)), (trimmed_mae_loss, dict(trim=0.5)),
    (multi_scale_derivative_loss, {}), (multi_scale_derivative_loss, dict(operator="laplace", p=2, scales=3)),
    (multi_scale_derivative_loss, dict(operator="scharr", p=2, scales=1)),
    (scale_shift_invariant_loss, {}),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("fn, kwargs", CASES)
def test_against_numpy(device, fn, kwargs):
    pred, target = pair(device=device)
    mask = (torch.rand(target.shape, generator=torch.Generator().manual_seed(9)) < 0.9).to(device)
    for m in (None, mask):
        want = numpy_loss(fn, pred, target, valid_np(target, m), **kwargs)
        per_image = fn(pred, target, m, reduction="none", **kwargs)
        np.testing.assert_allclose(per_image.detach().cpu().numpy(), [0.0 if w is None else w for w in want],
                                   rtol=1e-10, atol=1e-12)
        assert fn(pred, target[:, 0], m, **kwargs).item() == pytest.approx(batch_mean(want), rel=1e-10)


def test_modules_match_functions():
    pred, target = pair()
    assert TrimmedMAELoss(0.3)(pred, target) == trimmed_mae_loss(pred, target, trim=0.3)
    assert MultiScaleDerivativeLoss("laplace", 2, 2)(pred, target) == multi_scale_derivative_loss(
        pred, target, operator="laplace", p=2, scales=2)
    assert ScaleShiftInvariantLoss()(pred, target) == scale_shift_invariant_loss(pred, target)


def test_known_values():
    pred, target = pair(holes=False)
    t = target.detach()
    assert scale_shift_invariant_loss(3.0 * t - 0.7, t).item() == pytest.approx(0.0, abs=1e-12)
    assert scale_shift_invariant_loss(-2.0 * t + 5.0, t).item() == pytest.approx(0.0, abs=1e-12)
    constant = torch.full_like(t, 2.0)  # no scale to fit: the best shift, t = mean(target)
    want = (t - t.mean((1, 2, 3), keepdim=True)).abs().mean((1, 2, 3)).mean()
    assert scale_shift_invariant_loss(constant, t).item() == pytest.approx(want.item(), rel=1e-12)
    # Derivatives ignore a constant offset; Scharr is exact on a ramp and Laplace on a quadratic.
    assert multi_scale_derivative_loss(t + 4.0, t).item() == pytest.approx(0.0, abs=1e-12)
    x = torch.arange(12.0, dtype=torch.float64).expand(1, 1, 12, 12)
    assert multi_scale_derivative_loss(2 * x, x, scales=1).item() == pytest.approx(1.0, rel=1e-12)
    assert multi_scale_derivative_loss(x * x / 2, torch.zeros_like(x) + 1, operator="laplace",
                                       scales=1).item() == pytest.approx(1.0, rel=1e-12)
    errors = torch.tensor([[0.1, 0.2, 0.3, 0.4, 5.0]], dtype=torch.float64).view(1, 1, 1, 5)
    assert trimmed_mae_loss(errors + 1.0, torch.ones_like(errors)).item() == pytest.approx(0.25, rel=1e-12)


@pytest.mark.parametrize("fn, kwargs", CASES)
def test_gradcheck(fn, kwargs):
    pred, target = pair(B=2, H=7, W=8, holes=False)
    target[0, 0, 2, 3] = 0.0
    if fn is multi_scale_derivative_loss:
        kwargs = {**kwargs, "scales": min(kwargs.get("scales", 4), 2)}
    assert torch.autograd.gradcheck(lambda p: fn(p, target, **kwargs), (pred,))


@pytest.mark.parametrize("fn", LOSSES)
def test_no_valid_pixel_gives_zero_and_zero_gradient(fn):
    pred, target = pair()
    loss = fn(pred, torch.zeros_like(target))
    loss.backward()
    assert loss.item() == 0 and torch.equal(pred.grad, torch.zeros_like(pred))
    pred.grad = None
    fn(pred, target).backward()  # the empty last image gets no gradient, invalid pixels neither
    assert torch.equal(pred.grad[-1], torch.zeros_like(pred.grad[-1]))
    assert torch.isfinite(pred.grad).all()
    assert fn(pred, target, reduction="none")[-1].item() == 0


@pytest.mark.parametrize("fn", LOSSES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32])
def test_low_precision_inputs_accumulate_in_float32(fn, dtype):
    """The loss (float32) and the gradient (in the input dtype) against float64 on the same rounded values,
    within tolerances scaled to their magnitude (each sums over all pixels)."""
    pred, target = pair(holes=False)
    low_p, low_t = pred.detach().to(dtype).requires_grad_(), target.to(dtype)
    got = fn(low_p, low_t)
    got.backward()
    ref_p = low_p.detach().double().requires_grad_()
    want = fn(ref_p, low_t.double())
    want.backward()
    assert got.dtype == torch.float32 and low_p.grad.dtype == dtype
    assert_close_scaled(got, want, torch.float32, n_terms=pred.numel())
    assert_close_scaled(low_p.grad, ref_p.grad, dtype, n_terms=pred.numel())


@pytest.mark.parametrize("call, exc, name", [
    (lambda p, t: trimmed_mae_loss(p, t, trim=1.0), ValueError, "trim"),
    (lambda p, t: TrimmedMAELoss(trim=-0.1), ValueError, "trim"),
    (lambda p, t: multi_scale_derivative_loss(p, t, operator="sobel"), ValueError, "operator"),
    (lambda p, t: MultiScaleDerivativeLoss(p=3), ValueError, "p must"),
    (lambda p, t: MultiScaleDerivativeLoss(scales=0), ValueError, "scales"),
    (lambda p, t: ScaleShiftInvariantLoss(reduction="max"), ValueError, "reduction"),
    (lambda p, t: scale_shift_invariant_loss(p.int(), t), TypeError, "pred"),
    (lambda p, t: scale_shift_invariant_loss(p, t[:2]), ValueError, "target"),
    (lambda p, t: trimmed_mae_loss(p, t, mask=(t > 0.5).int()), TypeError, "mask"),
    (lambda p, t: trimmed_mae_loss(p, t, backend="fast"), ValueError, "backend"),
])
def test_bad_input(call, exc, name):
    pred, target = pair()
    with pytest.raises(exc, match=name):
        call(pred, target)


def test_ssi_batch_pool_is_zoedepths_one_mean_over_the_batch():
    """ZoeDepth's ScaleAndShiftInvariantLoss: one L1 mean over all valid pixels of the batch; ours per image
    by default. An independent numpy least-squares fit per image gives both numbers."""
    g = torch.Generator().manual_seed(3)
    pred = torch.rand(2, 1, 6, 7, generator=g, dtype=torch.float64) + 0.5
    target = torch.rand(2, 1, 6, 7, generator=g, dtype=torch.float64) + 0.5
    mask = torch.ones(2, 1, 6, 7, dtype=torch.bool)
    mask[1, :, 2:] = False  # unequal valid counts: 42 and 14
    residuals = []
    for b in range(2):
        p, t = pred[b][mask[b]].numpy(), target[b][mask[b]].numpy()
        (s, shift), *_ = np.linalg.lstsq(np.stack([p, np.ones_like(p)], 1), t, rcond=None)
        residuals.append(np.abs(s * p + shift - t))
    per_image = np.mean([r.mean() for r in residuals])
    batch = np.concatenate(residuals).mean()
    assert abs(per_image - batch) > 1e-3  # the two conventions differ here
    assert float(scale_shift_invariant_loss(pred, target, mask)) == pytest.approx(per_image, rel=1e-10)
    assert float(scale_shift_invariant_loss(pred, target, mask, pool="batch")) == pytest.approx(batch, rel=1e-10)
    assert float(ScaleShiftInvariantLoss(pool="batch")(pred, target, mask)) == pytest.approx(batch, rel=1e-10)
    with pytest.raises(ValueError, match="pool"):
        scale_shift_invariant_loss(pred, target, pool="pixels")
    with pytest.raises(ValueError, match="reduction='mean'"):
        scale_shift_invariant_loss(pred, target, pool="batch", reduction="none")
