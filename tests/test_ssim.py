"""ssim / photometric_error: kernel vs reference twin, an independent scipy SSIM, gradients, opcheck, compile,
bad input."""
import warnings

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric import _checks
from depthmetric.reference import ssim as reference

from .registry import DEVICES, assert_close_scaled, backend_of, block_sizes, crossing, needs_ext



@pytest.fixture(autouse=True)
def exact_cudnn_conv():
    """The gauss11 twin convolves with cuDNN, which would use TF32 for float32 on Ampere and later."""
    with torch.backends.cudnn.flags(enabled=torch.backends.cudnn.enabled, allow_tf32=False):
        yield


CONFIGS = [("box3", "reflect"), ("gauss11", "same"), ("gauss11", "valid"), ("gauss11", "reflect")]
SHAPES = [(1, 3, 5, 7), (2, 3, 9, 13), (1, 1, 12, 11), (2, 2, 2, 3)]
TOL = {torch.float64: 1e-10, torch.float32: 1e-5}
# SSIM's gradient divides by the window variances (+ C2), which amplifies float32 rounding: two float32
# implementations differed by 1.6e-5 at one of 105 elements on an H100. The project's float32 tolerance.
GRAD_TOL = {torch.float64: 1e-10, torch.float32: 1e-4}


def fits(shape, window, padding):
    radius = 1 if window == "box3" else 5
    smallest = {"reflect": radius + 1, "same": 1, "valid": 2 * radius + 1}[padding]
    return min(shape[2:]) >= smallest


def images(shape, dtype, device, seed, n=2):
    g = torch.Generator().manual_seed(seed)
    return [torch.rand(shape, generator=g, dtype=torch.float64).to(device, dtype) for _ in range(n)]


def ssim_and_grads(x, y, weights, **kw):
    x = x.detach().clone().requires_grad_(True)
    y = y.detach().clone().requires_grad_(True)
    out = dm.ssim(x, y, **kw)
    (out * weights).sum().backward()
    return out.detach(), x.grad, y.grad


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("window,padding,shape", [(w, p, s) for w, p in CONFIGS for s in SHAPES if fits(s, w, p)])
def test_kernel_matches_reference(window, padding, shape, dtype, device):
    x, y = images(shape, dtype, device, seed=sum(shape))
    out_r = reference.ssim(x, y, window, padding)
    weights = torch.randn(out_r.shape, dtype=out_r.dtype, generator=torch.Generator().manual_seed(1)).to(device)
    kw = dict(window=window, padding=padding)
    out, gx, gy = ssim_and_grads(x, y, weights, backend=backend_of(device), **kw)
    out_r, gx_r, gy_r = ssim_and_grads(x, y, weights, backend="reference", **kw)
    assert out.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert gx.dtype == dtype and gy.dtype == dtype
    torch.testing.assert_close(out, out_r, rtol=TOL[dtype], atol=TOL[dtype])
    torch.testing.assert_close(gx, gx_r, rtol=GRAD_TOL[dtype], atol=GRAD_TOL[dtype])
    torch.testing.assert_close(gy, gy_r, rtol=GRAD_TOL[dtype], atol=GRAD_TOL[dtype])


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window,padding", CONFIGS)
def test_many_tiles_and_row_blocks(window, padding, device):
    """Sizes spanning several CUDA tiles (32 x 16) and every CPU block (csrc/ssim/cpu/ssim_blocks.h), with
    ragged edges."""
    x, y = images((1, 2, crossing(block_sizes("ssim"), 37), 70), torch.float64, device, seed=3)
    weights = torch.randn(dm.ssim(x, y, window, padding).shape, dtype=torch.float64, device=device)
    got = ssim_and_grads(x, y, weights, window=window, padding=padding, backend=backend_of(device))
    ref = ssim_and_grads(x, y, weights, window=window, padding=padding, backend="reference")
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window,padding", CONFIGS)
def test_strided_inputs(window, padding, device):
    """channels_last and sliced views are read in place and give the contiguous result."""
    x, y = images((2, 3, 14, 31), torch.float32, device, seed=5)
    x_cl = x.to(memory_format=torch.channels_last)
    wide = torch.rand(2, 3, 14, 62, device=device)
    wide[..., ::2] = y
    y_sl = wide[..., ::2]  # y read through a column stride of 2
    weights = torch.rand(dm.ssim(x, y, window, padding).shape, device=device)
    ref = ssim_and_grads(x, y, weights, window=window, padding=padding)
    got = ssim_and_grads(x_cl, y_sl, weights, window=window, padding=padding)
    for a, b in zip(got, ref):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("window,padding", CONFIGS)
def test_half_precision_against_float64_reference(window, padding, dtype, device):
    x, y = images((2, 3, 13, 17), dtype, device, seed=7)
    weights = torch.rand(dm.ssim(x, y, window, padding).shape, device=device, dtype=torch.float64)
    out, gx, gy = ssim_and_grads(x, y, weights.float(), window=window, padding=padding, backend=backend_of(device))
    out_r, gx_r, gy_r = ssim_and_grads(x.double(), y.double(), weights, window=window, padding=padding,
                                       backend="reference")
    assert out.dtype == torch.float32 and gx.dtype == dtype
    # The inputs are the same rounded values; what differs is float32 arithmetic and the 16-bit gradient.
    torch.testing.assert_close(out.double(), out_r, rtol=1e-4, atol=1e-4)
    # Each gradient element sums the window's terms of every output pixel its window covers.
    n_terms = (3 if window == "box3" else 11) ** 2
    assert_close_scaled(gx, gx_r, dtype, n_terms)
    assert_close_scaled(gy, gy_r, dtype, n_terms)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window,padding,shape", [("box3", "reflect", (1, 2, 4, 5)), ("gauss11", "same", (1, 1, 5, 6)),
                                                   ("gauss11", "valid", (1, 1, 12, 11))])
def test_gradcheck(window, padding, shape, device):
    x, y = (t.requires_grad_(True) for t in images(shape, torch.float64, device, seed=11))
    fn = lambda a, b: dm.ssim(a, b, window, padding, backend=backend_of(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn, (x, y))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window,padding", [("box3", "reflect"), ("gauss11", "valid")])
@pytest.mark.parametrize("with_partials", [True, False])
def test_opcheck(with_partials, window, padding, device):
    x, y = (t.requires_grad_(with_partials) for t in images((2, 2, 12, 13), torch.float32, device, seed=13))
    args = (x, y, dm.WINDOWS[window], dm.PADDINGS[padding], with_partials)
    torch.library.opcheck(torch.ops.depthmetric.ssim.default, args)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_no_partials_without_a_gradient(window, device):
    """Without a gradient to come the forward writes the SSIM map alone, and the same map; the CPU backward
    recomputes the partials when it is given none."""
    x, y = images((2, 3, 14, 19), torch.float32, device, seed=19)
    code = dm.WINDOWS[window], dm.PADDINGS["reflect" if window == "box3" else "same"]
    full, partials = torch.ops.depthmetric.ssim(x, y, *code)
    alone, none = torch.ops.depthmetric.ssim(x, y, *code, False)
    assert partials.shape == (4, *full.shape) and none.numel() == 0
    assert torch.equal(alone, full)
    x.requires_grad_(True)
    with torch.no_grad():
        assert torch.equal(dm.ssim(x, y, window, backend=backend_of(device)), full)
    grad = torch.rand_like(full)
    if device == "cpu":  # the CPU backward recomputes the partials it is not given: the same gradients
        recomputed = torch.ops.depthmetric._ssim_backward(grad, x.detach(), y, none, *code)
        saved = torch.ops.depthmetric._ssim_backward(grad, x.detach(), y, partials, *code)
        assert all(torch.equal(a, b) for a, b in zip(recomputed, saved))
    else:
        with pytest.raises(RuntimeError, match="partials must be 4,B,C,H',W'"):
            torch.ops.depthmetric._ssim_backward(grad, x.detach(), y, none, *code)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_only_the_gradients_asked_for_are_computed(window, device):
    """A gradient of one image alone is the same as when both are taken, and the other is neither computed
    nor allocated (empty from the op), through the op and through autograd."""
    x, y = images((2, 3, 14, 19), torch.float64, device, seed=23)
    code = dm.WINDOWS[window], dm.PADDINGS["reflect" if window == "box3" else "same"]
    out, partials = torch.ops.depthmetric.ssim(x, y, *code)
    grad = torch.rand_like(out)
    both = torch.ops.depthmetric._ssim_backward(grad, x, y, partials, *code)
    for need in ((True, False), (False, True)):
        got = torch.ops.depthmetric._ssim_backward(grad, x, y, partials, *code, *need)
        for g, full, wanted in zip(got, both, need):
            assert torch.equal(g, full) if wanted else g.numel() == 0
        torch.library.opcheck(torch.ops.depthmetric._ssim_backward.default, (grad, x, y, partials, *code, *need))
    xg, yg = x.clone().requires_grad_(), y.clone().requires_grad_()
    gx, = torch.autograd.grad(dm.ssim(xg, y, window, backend=backend_of(device)).sum(), xg)
    gy, = torch.autograd.grad(dm.ssim(x, yg, window, backend=backend_of(device)).sum(), yg)
    gx1, gy1 = torch.autograd.grad(dm.ssim(xg, yg, window, backend=backend_of(device)).sum(), (xg, yg))
    assert torch.equal(gx, gx1) and torch.equal(gy, gy1)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_backward_is_deterministic(window, device):
    x, y = images((2, 3, 40, 50), torch.float32, device, seed=17)
    weights = torch.rand(2, 3, 40, 50, device=device)
    first = ssim_and_grads(x, y, weights, window=window)
    second = ssim_and_grads(x, y, weights, window=window)
    for a, b in zip(first, second):
        assert torch.equal(a, b)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph_training_step(device):
    torch._dynamo.reset()
    x, y = images((2, 3, 12, 16), torch.float32, device, seed=19)
    conv = torch.nn.Conv2d(3, 3, 3, padding=1).to(device)

    @torch.compile(fullgraph=True)
    def step(inp, target):
        pred = torch.sigmoid(conv(inp))
        return (1 - dm.ssim(pred, target, "gauss11", reduction="mean")) + dm.photometric_error(pred, target).mean()

    loss = step(x, y)
    loss.backward()
    grad = conv.weight.grad.clone()
    conv.weight.grad = None
    pred = torch.sigmoid(conv(x))
    eager = (1 - dm.ssim(pred, y, "gauss11", reduction="mean")) + dm.photometric_error(pred, y).mean()
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(grad, conv.weight.grad, rtol=1e-4, atol=1e-6)


def scipy_ssim(x: np.ndarray, y: np.ndarray, padding: str) -> np.ndarray:
    """SSIM of one channel, written independently with scipy's Gaussian filter (sigma 1.5, 11 taps)."""
    from scipy.ndimage import gaussian_filter

    def filt(a):  # truncate * sigma = 5: an 11-tap kernel; zeros outside the image as "same" pads, or
        # the border mirrored without repeating it ("mirror", as ReflectionPad2d and kornia's "same")
        mode = "mirror" if padding == "reflect" else "constant"
        return gaussian_filter(a, sigma=1.5, truncate=5 / 1.5, mode=mode, cval=0.0)

    mx, my = filt(x), filt(y)
    vx, vy, cxy = filt(x * x) - mx * mx, filt(y * y) - my * my, filt(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = (2 * mx * my + c1) * (2 * cxy + c2) / ((mx * mx + my * my + c1) * (vx + vy + c2))
    return s[5:-5, 5:-5] if padding == "valid" else s


@needs_ext
@pytest.mark.parametrize("padding", ["same", "valid", "reflect"])
def test_gauss11_matches_scipy(padding):
    x, y = images((2, 3, 23, 29), torch.float64, "cpu", seed=23)
    got = dm.ssim(x, y, "gauss11", padding).numpy()
    for b in range(2):
        for c in range(3):
            expected = scipy_ssim(x[b, c].numpy(), y[b, c].numpy(), padding)
            np.testing.assert_allclose(got[b, c], expected, rtol=0, atol=1e-5)
    assert got.shape[-2:] == ((13, 19) if padding == "valid" else (23, 29))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("window", ["box3", "gauss11"])
def test_photometric_error_matches_reference(window, device):
    a, b = images((2, 3, 11, 14), torch.float64, device, seed=29)
    a.requires_grad_(True)
    pe = dm.photometric_error(a, b, alpha=0.85, window=window, backend=backend_of(device))
    (ga,) = torch.autograd.grad(pe.sum(), a)
    pe_r = dm.photometric_error(a, b, alpha=0.85, window=window, backend="reference")
    (ga_r,) = torch.autograd.grad(pe_r.sum(), a)
    assert pe.shape == (2, 1, 11, 14)
    torch.testing.assert_close(pe, pe_r)
    torch.testing.assert_close(ga, ga_r)


def test_photometric_error_hand_check():
    """Identical images: SSIM 1, error 0; alpha=0 leaves the mean absolute difference."""
    a, b = images((1, 3, 6, 7), torch.float64, "cpu", seed=31)
    zero = dm.photometric_error(a, a, backend="reference")
    torch.testing.assert_close(zero, torch.zeros_like(zero))
    l1 = dm.photometric_error(a, b, alpha=0.0, backend="reference")
    torch.testing.assert_close(l1, (a - b).abs().mean(1, keepdim=True))


def test_reduction_mean():
    x, y = images((2, 3, 9, 10), torch.float64, "cpu", seed=37)
    torch.testing.assert_close(dm.ssim(x, y, reduction="mean", backend="reference"),
                               dm.ssim(x, y, backend="reference").mean())


def test_bad_input():
    x, y = images((1, 3, 8, 9), torch.float32, "cpu", seed=41)
    with pytest.raises(ValueError, match="window"):
        dm.ssim(x, y, window="gauss7", backend="reference")
    with pytest.raises(ValueError, match="padding='same' does not go with window='box3'"):
        dm.ssim(x, y, window="box3", padding="same", backend="reference")
    with pytest.raises(ValueError, match="needs H and W >= 11"):
        dm.ssim(x, y, window="gauss11", padding="valid", backend="reference")
    with pytest.raises(ValueError, match="y has shape"):
        dm.ssim(x, y[:, :2], backend="reference")
    with pytest.raises(TypeError, match="y is torch.float64"):
        dm.ssim(x, y.double(), backend="reference")
    with pytest.raises(TypeError, match="x must be float16"):
        dm.ssim(x.int(), y, backend="reference")
    with pytest.raises(ValueError, match="x must be B,C,H,W"):
        dm.ssim(x[0], y[0], backend="reference")
    with pytest.raises(ValueError, match="y is on meta"):
        dm.ssim(x, y.to("meta"), backend="reference")
    with pytest.raises(ValueError, match="reduction"):
        dm.ssim(x, y, reduction="max", backend="reference")
    with pytest.raises(ValueError, match="alpha"):
        dm.photometric_error(x, y, alpha=1.5, backend="reference")
    with pytest.raises(ValueError, match="backend"):
        dm.ssim(x, y, backend="gpu")
    nan = x.clone()
    nan[0, 1, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        dm.ssim(nan, y, backend="reference")
    with pytest.raises(ValueError, match="y contains NaN"):
        dm.photometric_error(x, nan, backend="reference")


def test_outside_unit_range_warns_once(monkeypatch):
    monkeypatch.setattr(_checks, "_warned_outside_unit", False)
    x, y = images((1, 3, 6, 6), torch.float32, "cpu", seed=43)
    with pytest.warns(UserWarning, match=r"outside \[0, 1\]"):
        out = dm.ssim(x * 255, y, backend="reference")
    assert torch.isfinite(out).all()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.ssim(x - 1, y, backend="reference")
        dm.ssim(x, y, backend="reference")


def test_unit_range_warning_allows_rounding_and_prints_its_digits(monkeypatch):
    """A warped image can hold 1 + 2e-16 (rounding): no warning; a real excess prints enough digits."""
    monkeypatch.setattr(_checks, "_warned_outside_unit", False)
    x = torch.full((1, 3, 6, 6), 1.0 + 2e-16, dtype=torch.float64)
    assert float(x.max()) > 1.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dm.ssim(x, x.clone(), backend="reference")
    y = x.clone()
    y[0, 0, 0, 0] = 1.0001
    with pytest.warns(UserWarning, match=r"max 1\.0001\)"):
        dm.ssim(x, y, backend="reference")


def numpy_photometric_box3(a, b, alpha):
    """``alpha * clamp((1 - SSIM) / 2, 0, 1) + (1 - alpha) * |a - b|`` averaged over channels, with SSIM from
    3x3 box means of reflection-padded images (Monodepth2: sigma = E[x^2] - E[x]^2), written in numpy."""
    C1, C2 = 0.01**2, 0.03**2
    a, b = a.double().numpy(), b.double().numpy()
    pad = lambda x: np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), mode="reflect")  # noqa: E731
    H, W = a.shape[2:]

    def box(x):
        x = pad(x)
        return sum(x[:, :, i:i + H, j:j + W] for i in range(3) for j in range(3)) / 9

    mu_a, mu_b = box(a), box(b)
    s_a, s_b, s_ab = box(a * a) - mu_a**2, box(b * b) - mu_b**2, box(a * b) - mu_a * mu_b
    s = (2 * mu_a * mu_b + C1) * (2 * s_ab + C2) / ((mu_a**2 + mu_b**2 + C1) * (s_a + s_b + C2))
    pe = alpha * np.clip((1 - s) / 2, 0, 1) + (1 - alpha) * np.abs(a - b)
    return torch.from_numpy(pe.mean(1, keepdims=True))


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
@pytest.mark.parametrize("alpha", [0.85, 0.5])
def test_photometric_error_worked_values(alpha, backend):
    """Against values worked here, at 0 < alpha < 1 where both terms count. Two constant images 0.2 and 0.6:
    every window has zero variance, so SSIM = (2 * 0.2 * 0.6 + C1) / (0.2^2 + 0.6^2 + C1) and the error is
    alpha * (1 - SSIM) / 2 + (1 - alpha) * 0.4 everywhere. Random images: a numpy box3 SSIM."""
    C1 = 0.01**2
    ssim_const = (2 * 0.2 * 0.6 + C1) / (0.2**2 + 0.6**2 + C1)  # 0.60019..., the luminance term only
    want = alpha * (1 - ssim_const) / 2 + (1 - alpha) * 0.4
    a, b = torch.full((1, 3, 4, 5), 0.2, dtype=torch.float64), torch.full((1, 3, 4, 5), 0.6, dtype=torch.float64)
    got = dm.photometric_error(a, b, alpha=alpha, backend=backend)
    torch.testing.assert_close(got, torch.full((1, 1, 4, 5), want, dtype=torch.float64), rtol=1e-12, atol=1e-12)

    x, y = images((2, 3, 5, 6), torch.float64, "cpu", seed=17)
    got = dm.photometric_error(x, y, alpha=alpha, backend=backend)
    torch.testing.assert_close(got, numpy_photometric_box3(x, y, alpha), rtol=1e-10, atol=1e-10)


def test_modules_compute_what_their_functions_compute():
    g = torch.Generator().manual_seed(5)
    x, y = (torch.rand(2, 3, 12, 13, generator=g, dtype=torch.float64) for _ in range(2))
    disp = torch.rand(2, 1, 12, 13, generator=g, dtype=torch.float64) + 0.1
    module = dm.SSIM("gauss11", "valid", reduction="mean", backend="reference")
    assert module(x, y).item() == dm.ssim(x, y, "gauss11", "valid", reduction="mean", backend="reference").item()
    assert "padding='valid'" in repr(module)
    torch.testing.assert_close(dm.PhotometricError(0.5, backend="reference")(x, y),
                               dm.photometric_error(x, y, 0.5, backend="reference"), rtol=0, atol=0)
    assert dm.EdgeAwareSmoothnessLoss()(disp, x).item() == dm.edge_aware_smoothness(disp, x).item()
    torch.testing.assert_close(dm.SSIMLoss(reduction="none", backend="reference")(x, y),
                               ((1 - dm.ssim(x, y, backend="reference")) / 2).clamp(0, 1), rtol=0, atol=0)
    with pytest.raises(ValueError, match="padding='valid' does not go with window='box3'"):
        dm.SSIM("box3", "valid")
    with pytest.raises(ValueError, match="alpha must be"):
        dm.PhotometricError(1.5)
