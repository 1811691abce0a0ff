"""bin_expectation / BinExpectation: against values worked by loops here (bilinear align_corners resampling,
softmax, expectation), kernel vs reference twin over dtypes x centre shapes, peaked and flat distributions,
gradients (gradcheck), opcheck, torch.compile, meta, zero sizes, return_probs and the errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import depthmetric as dm
from depthmetric.bin_expectation import pixel_map
from depthmetric.reference.bin_expectation import bin_expectation as reference_op

from .registry import DEVICES, assert_close_scaled, backend_of, needs_ext, rand, randn

LOW_PRECISION = [torch.float16, torch.bfloat16]


def bilinear_loop(c: np.ndarray, H: int, W: int) -> np.ndarray:
    """``B,K,h,w`` -> ``B,K,H,W`` with bilinear align_corners=True, one output pixel at a time (float64)."""
    B, K, h, w = c.shape
    out = np.zeros((B, K, H, W))

    def taps(n_in, n_out, d):
        real = (n_in - 1) / (n_out - 1) * d if n_out > 1 else 0.0
        i0 = min(int(math.floor(real)), n_in - 1)
        return i0, min(i0 + 1, n_in - 1), min(max(real - i0, 0.0), 1.0)

    for y in range(H):
        y0, y1, ly = taps(h, H, y)
        for x in range(W):
            x0, x1, lx = taps(w, W, x)
            out[:, :, y, x] = ((1 - ly) * ((1 - lx) * c[:, :, y0, x0] + lx * c[:, :, y0, x1])
                               + ly * ((1 - lx) * c[:, :, y1, x0] + lx * c[:, :, y1, x1]))
    return out


def expectation_loop(logits: np.ndarray, c_up: np.ndarray, T: np.ndarray) -> np.ndarray:
    """sum_k softmax_k(logits / T) c_k per pixel, by a loop over pixels (``T`` ``B,1,H,W``)."""
    B, K, H, W = logits.shape
    out = np.zeros((B, 1, H, W))
    for b in range(B):
        for y in range(H):
            for x in range(W):
                z = logits[b, :, y, x] / T[b, 0, y, x]
                e = np.exp(z - z.max())
                out[b, 0, y, x] = (e * c_up[b, :, y, x]).sum() / e.sum()
    return out


def inputs(B=2, K=5, H=7, W=9, hw=(3, 4), dtype=torch.float64, seed=0, scale=2.0):
    logits = (scale * randn(B, K, H, W, seed=seed)).to(dtype)
    shape = (B, K) if hw is None else (B, K, *hw)
    centers = rand(*shape, seed=seed + 1, low=0.5, high=10.0).to(dtype)
    return logits, centers


CENTER_SHAPES = {"B,K": None, "B,K,1,1": (1, 1), "smaller": (3, 4), "equal": (7, 9), "larger": (9, 11)}


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
@pytest.mark.parametrize("hw", list(CENTER_SHAPES.values()), ids=list(CENTER_SHAPES))
def test_matches_loops(hw, backend):
    logits, centers = inputs(hw=hw)
    T = rand(2, 1, 7, 9, seed=3, low=0.5, high=2.0)
    got = dm.bin_expectation(logits, centers, temperature=T, backend=backend)
    c4 = centers.numpy() if centers.dim() == 4 else centers.numpy()[:, :, None, None]
    want = expectation_loop(logits.numpy(), bilinear_loop(c4, 7, 9), T.numpy())
    assert_close_scaled(got, torch.from_numpy(want), torch.float64, n_terms=5)


def test_bilinear_loop_is_pytorchs_interpolate():
    """The loop above is the resampling the op reproduces: F.interpolate(bilinear, align_corners=True)."""
    c = rand(2, 3, 4, 5, seed=2)
    for H, W in ((7, 9), (1, 6), (5, 1), (3, 2)):
        torch.testing.assert_close(torch.from_numpy(bilinear_loop(c.numpy(), H, W)),
                                   F.interpolate(c, (H, W), mode="bilinear", align_corners=True), rtol=0, atol=1e-13)


def grads_of(fn, leaves, weights):
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, weights)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hw,size", [(None, (7, 9)), ((1, 1), (7, 9)), ((3, 4), (7, 9)), ((7, 9), (7, 9)),
                                     ((1, 3), (1, 9)), ((4, 1), (7, 1)), ((3, 4), (21, 40)), ((9, 11), (7, 9)),
                                     ((12, 10), (40, 33))],
                         ids=["B,K", "B,K,1,1", "smaller", "equal", "H=1", "W=1", "large", "larger", "blocks"])
def test_kernel_matches_twin(hw, size, dtype, device):
    """The kernel (in ``dtype``) against the twin in float64 on the same rounded inputs, forward and the
    gradients of logits, centres and a per-pixel temperature, within tolerances scaled by each result."""
    H, W = size
    logits, centers = inputs(H=H, W=W, hw=hw, dtype=dtype)
    T = rand(2, 1, H, W, seed=4, low=0.5, high=2.0)
    weights = rand(2, 1, H, W, seed=5)
    leaves = [logits, centers, T]

    def run(backend, to):
        xs = [x.detach().to(**to).requires_grad_() for x in leaves]
        fn = lambda l, c, t: dm.bin_expectation(l, c, temperature=t, backend=backend)  # noqa: E731
        return grads_of(fn, xs, weights.to(**to))

    got, got_grads = run(backend_of(device), dict(device=device))
    want, want_grads = run("reference", dict(dtype=torch.float64))
    K = logits.shape[1]
    assert got.dtype == dtype and got.shape == (2, 1, H, W)
    assert_close_scaled(got.cpu(), want, dtype, n_terms=K)
    n_pixels = H * W  # a per-image centre sums the gradient of every pixel
    for g, w, n in zip(got_grads[:2], want_grads[:2], (K, n_pixels * K)):
        assert_close_scaled(g.cpu(), w, dtype, n_terms=n, factor=8.0)
    # dL/dT = -(1/T^2) sum_k d_k logits_k is a sum whose terms cancel (sum_k d_k = 0): its rounding scales
    # with the terms, |d_k logits_k| / T^2, not with the result (the twin's autograd has the same).
    x, c, t = (v.detach().double() for v in leaves)
    c_up = F.interpolate(c if c.dim() == 4 else c[:, :, None, None], (H, W), mode="bilinear", align_corners=True)
    probs = torch.softmax(x / t, 1)
    terms = weights * probs * (c_up - want).abs() * x.abs() / t ** 2
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    tol = 8 * (torch.finfo(dtype).eps + math.sqrt(K) * torch.finfo(acc).eps) * terms.sum(1).max().item()
    torch.testing.assert_close(got_grads[2].cpu().double(), want_grads[2], rtol=0, atol=tol)


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
def test_flat_and_peaked_distributions(backend):
    logits, centers = inputs(hw=None)
    flat = dm.bin_expectation(torch.zeros_like(logits), centers, backend=backend)
    torch.testing.assert_close(flat, centers.mean(1)[:, None, None, None].expand_as(flat), rtol=1e-14, atol=0)
    winner = logits.argmax(1, keepdim=True)
    peaked = torch.full_like(logits, -1e4).scatter(1, winner, 1e4)  # exp underflows to 0 for the losers
    depth = dm.bin_expectation(peaked, centers, backend=backend)
    torch.testing.assert_close(depth, centers[:, :, None, None].expand_as(logits).gather(1, winner), rtol=0, atol=0)
    big = dm.bin_expectation(logits * 1e3, centers, temperature=1e3, backend=backend)  # no overflow
    torch.testing.assert_close(big, dm.bin_expectation(logits, centers, backend=backend), rtol=1e-12, atol=0)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [None, (3, 4), (5, 6)], ids=["B,K", "smaller", "equal"])
@pytest.mark.parametrize("temperature", ["map", "0-d", "number"])
def test_gradcheck(temperature, hw, device):
    logits, centers = inputs(B=2, K=3, H=5, W=6, hw=hw)
    T = {"map": rand(2, 1, 5, 6, seed=7, low=0.5, high=2.0), "0-d": torch.tensor(0.7, dtype=torch.float64),
         "number": 0.7}[temperature]
    leaves = [logits.to(device).requires_grad_(), centers.to(device).requires_grad_()]
    if isinstance(T, torch.Tensor):
        leaves.append(T.to(device).requires_grad_())
        fn = lambda l, c, t: dm.bin_expectation(l, c, temperature=t, backend=backend_of(device))  # noqa: E731
    else:
        fn = lambda l, c: dm.bin_expectation(l, c, temperature=T, backend=backend_of(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn, tuple(leaves))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    logits, centers = inputs(K=4, H=6, W=7, hw=(3, 4))
    T = rand(2, 1, 6, 7, seed=3, low=0.5, high=2.0)
    op = torch.ops.depthmetric.bin_expectation
    for return_probs in (False, True):
        torch.library.opcheck(op, (logits.to(device), centers.to(device), T.to(device), return_probs))
    torch.library.opcheck(op, (logits.to(device), centers[:, :, :1, :1].to(device), T.to(device), False))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    logits, centers = inputs(hw=(3, 4))
    logits, centers = logits.to(device), centers.to(device)

    def step(l, c, t):
        return dm.bin_expectation(l, c, temperature=t).square().mean()

    T = torch.tensor(0.9, dtype=torch.float64, device=device)
    leaves = [x.clone().requires_grad_() for x in (logits, centers, T)]
    compiled = torch.compile(step, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(compiled, leaves)
    eager_leaves = [x.clone().requires_grad_() for x in (logits, centers, T)]
    eager = step(*eager_leaves)
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=0)
    for g, w in zip(grads, torch.autograd.grad(eager, eager_leaves)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", ["reference"] + (["cpu"] if dm.build_info()["compiled"] else []))
def test_return_probs(backend):
    logits, centers = inputs(hw=(3, 4))
    logits.requires_grad_()
    depth, probs = dm.bin_expectation(logits, centers, temperature=0.5, return_probs=True, backend=backend)
    assert probs.shape == logits.shape and probs.dtype == logits.dtype and not probs.requires_grad
    torch.testing.assert_close(probs, torch.softmax(logits.detach() / 0.5, 1), rtol=1e-13, atol=1e-15)
    up = F.interpolate(centers, (7, 9), mode="bilinear", align_corners=True)
    torch.testing.assert_close(depth.detach(), (probs * up).sum(1, keepdim=True), rtol=1e-13, atol=0)
    assert torch.equal(depth, dm.bin_expectation(logits, centers, temperature=0.5, backend=backend))
    depth.sum().backward()  # the probabilities are a side output: the gradient is the depth's
    assert logits.grad is not None


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_meta_and_zero_sizes(backend):
    if backend == "auto" and not dm.build_info()["compiled"]:
        pytest.skip("extension not built")
    logits, centers = torch.empty(2, 5, 7, 9, device="meta"), torch.empty(2, 5, device="meta")
    depth, probs = dm.bin_expectation(logits, centers, return_probs=True, backend=backend)
    assert depth.shape == (2, 1, 7, 9) and probs.shape == (2, 5, 7, 9) and depth.device.type == "meta"
    for shape in ((0, 5, 7, 9), (2, 5, 0, 9), (2, 5, 7, 0)):
        l = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        c = rand(shape[0], 5, 3, 4).requires_grad_()
        depth, probs = dm.bin_expectation(l, c, return_probs=True, backend=backend)
        assert depth.shape == (shape[0], 1, *shape[2:]) and probs.shape == shape
        gl, gc = torch.autograd.grad(depth.sum(), (l, c), allow_unused=True)
        assert gc is None or torch.equal(gc, torch.zeros_like(c))


def test_number_temperature_is_a_stride_0_view():
    t = pixel_map("temperature", 0.5, torch.zeros(2, 3, 4, 5, dtype=torch.float16))
    assert t.shape == (2, 1, 4, 5) and t.stride() == (0, 0, 0, 0) and t.dtype == torch.float32
    t = pixel_map("temperature", torch.full((2, 4, 5), 0.5), torch.zeros(2, 3, 4, 5))  # B,H,W
    assert t.shape == (2, 1, 4, 5)


def test_module_matches_function():
    logits, centers = inputs(hw=(3, 4))
    head = dm.BinExpectation(temperature=0.8, backend="reference")
    torch.testing.assert_close(head(logits, centers), dm.bin_expectation(logits, centers, temperature=0.8,
                                                                         backend="reference"))
    assert "temperature=0.8" in repr(head)
    assert "B,K" in dm.bin_expectation.__doc__ and "align_corners=True" in dm.bin_expectation.__doc__


def test_bad_input():
    logits, centers = inputs(hw=(3, 4))
    cases = [
        (lambda: dm.bin_expectation(logits[0], centers), ValueError, "logits must be B,K,H,W"),
        (lambda: dm.bin_expectation(logits.long(), centers), TypeError, "logits must be float"),
        (lambda: dm.bin_expectation(logits[:, :0], centers[:, :0]), ValueError, "logits has no bins"),
        (lambda: dm.bin_expectation(logits, centers[:, :4]), ValueError, "centers has 4 bins but logits has 5"),
        (lambda: dm.bin_expectation(logits, centers[:1]), ValueError, "centers has batch size 1"),
        (lambda: dm.bin_expectation(logits, centers[..., 0]), ValueError, "centers must be B,K"),
        (lambda: dm.bin_expectation(logits, centers[:, :, :0]), ValueError, "centers must have h, w >= 1"),
        (lambda: dm.bin_expectation(logits, centers.float()), TypeError, "centers must have the dtype of logits"),
        (lambda: dm.bin_expectation(logits, centers.to("meta")), ValueError, "centers is on meta"),
        (lambda: dm.bin_expectation(logits, centers, temperature=0.0), ValueError, "temperature must be a finite"),
        (lambda: dm.bin_expectation(logits, centers, temperature=math.inf), ValueError, "temperature"),
        (lambda: dm.bin_expectation(logits, centers, temperature="1"), TypeError, "temperature must be a number"),
        (lambda: dm.bin_expectation(logits, centers, temperature=torch.ones(3, 7, 9)), ValueError,
         "temperature must be a number, a 0-d tensor"),
        (lambda: dm.bin_expectation(logits, centers, temperature=torch.ones(2, 1, 7, 9).long()), TypeError,
         "temperature must be float"),
        (lambda: dm.bin_expectation(logits, centers, return_probs=1), TypeError, "return_probs"),
        (lambda: dm.bin_expectation(logits, centers, backend="gpu"), ValueError, "backend"),
        (lambda: dm.BinExpectation(temperature=-1.0), ValueError, "temperature"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    for name, bad in (("logits", logits.clone()), ("centers", centers.clone())):
        bad.view(-1)[1] = math.nan
        args = (bad, centers) if name == "logits" else (logits, bad)
        with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
            dm.bin_expectation(*args)
    with pytest.raises(ValueError, match="temperature contains NaN or Inf"):
        dm.bin_expectation(logits, centers, temperature=torch.tensor(math.inf))


@needs_ext
def test_direct_kernel_call_rejects_a_temperature_of_the_wrong_dtype():
    logits, centers = inputs(hw=(3, 4), dtype=torch.float32)
    with pytest.raises(RuntimeError, match="temperature must be Float"):
        torch.ops.depthmetric.bin_expectation(logits, centers, torch.ones(2, 1, 7, 9, dtype=torch.float64))
