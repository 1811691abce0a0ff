"""log_binomial_expectation / LogBinomialExpectation: against ZoeDepth's LogBinomial and the expectation worked
by loops here, kernel vs reference twin over dtypes x centre shapes, p exactly at 0, eps and 1 (the clamps'
inclusive edges), t at ZoeDepth's bounds, gradcheck, opcheck, torch.compile, meta, zero sizes, return_probs
and the errors."""
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import depthmetric as dm

from .registry import DEVICES, assert_close_scaled, backend_of, needs_ext, rand

EPS = 1e-4
BACKENDS = ["reference"] + (["cpu"] if dm.build_info()["compiled"] else [])


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


def log_binom(n: float, k: float) -> float:
    """ZoeDepth's Stirling log(n choose k)."""
    n, k = n + 1e-7, k + 1e-7
    return n * math.log(n) - k * math.log(k) - (n - k) * math.log(n - k + 1e-7)


def zoedepth_loop(p, t, c_up, eps=EPS):
    """Per pixel: ZoeDepth's LogBinomial logits, softmax, expectation over c_up; and dL/dp (for dL/ddepth = 1)
    with torch.clamp's inclusive gradient rule, by the chain rule written out."""
    B, K, H, W = c_up.shape
    depth, grad_p = np.zeros((B, 1, H, W)), np.zeros((B, 1, H, W))
    for b in range(B):
        for y in range(H):
            for x in range(W):
                pv, tv = p[b, 0, y, x], t[b, 0, y, x]
                pc, qc = min(max(pv, eps), 1.0), min(max(1 - pv, eps), 1.0)
                logits = np.array([(log_binom(K - 1, k) + k * math.log(pc) + (K - 1 - k) * math.log(qc)) / tv
                                   for k in range(K)])
                e = np.exp(logits - logits.max())
                prob = e / e.sum()
                d = (prob * c_up[b, :, y, x]).sum()
                depth[b, 0, y, x] = d
                a = 1 / pc if eps <= pv <= 1 else 0.0
                q = 1 / qc if eps <= 1 - pv <= 1 else 0.0
                dl = prob * (c_up[b, :, y, x] - d)
                grad_p[b, 0, y, x] = sum(dl[k] * (k * a - (K - 1 - k) * q) for k in range(K)) / tv
    return depth, grad_p


def inputs(B=2, K=6, H=5, W=7, hw=(3, 4), dtype=torch.float64, seed=0):
    p = rand(B, 1, H, W, seed=seed, low=0.02, high=0.98).to(dtype)
    t = rand(B, 1, H, W, seed=seed + 1, low=0.3, high=2.0)
    centers = rand(*((B, K) if hw is None else (B, K, *hw)), seed=seed + 2, low=0.5, high=10.0).to(dtype)
    return p, t, centers


def upsampled(centers, H, W):
    c4 = centers.detach().double().numpy()
    return bilinear_loop(c4 if c4.ndim == 4 else c4[:, :, None, None], H, W)


CENTER_SHAPES = {"B,K": None, "B,K,1,1": (1, 1), "smaller": (3, 4), "equal": (5, 7)}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("hw", list(CENTER_SHAPES.values()), ids=list(CENTER_SHAPES))
def test_matches_zoedepth_loops(hw, backend):
    p, t, centers = inputs(hw=hw)
    p[0, 0, 0, :4] = torch.tensor([0.0, EPS, 1.0, 1 - EPS], dtype=torch.float64)  # the clamps' edges
    p.requires_grad_()
    depth = dm.log_binomial_expectation(p, t, centers, backend=backend)
    grad, = torch.autograd.grad(depth.sum(), p)
    want, want_grad = zoedepth_loop(p.detach().numpy(), t.numpy(), upsampled(centers, 5, 7))
    assert_close_scaled(depth, torch.from_numpy(want), torch.float64, n_terms=6)
    assert_close_scaled(grad, torch.from_numpy(want_grad), torch.float64, n_terms=6, factor=8.0)


def test_clamp_gradient_is_inclusive_at_both_bounds():
    """At p == 1 only the clamp of p passes (dL/dp from the k log p terms), at p == 0 only that of 1 - p, at
    p == eps both; this torch's own torch.clamp blocks at the bounds, which the op does not follow."""
    from depthmetric.reference.log_binomial_expectation import clamp_inclusive

    x = torch.tensor([0.0, EPS, 0.5, 1.0], dtype=torch.float64, requires_grad=True)
    grad, = torch.autograd.grad(clamp_inclusive(x, EPS, 1.0).sum(), x)
    assert grad.tolist() == [0.0, 1.0, 1.0, 1.0]
    p = torch.tensor([0.0, EPS, 1.0], dtype=torch.float64).view(1, 1, 1, 3)
    centers = rand(1, 5, seed=1, low=0.5, high=10.0)
    for backend in BACKENDS:
        leaf = p.clone().requires_grad_()
        grad, = torch.autograd.grad(dm.log_binomial_expectation(leaf, 1.0, centers, backend=backend).sum(), leaf)
        _, want = zoedepth_loop(p.numpy(), np.ones((1, 1, 1, 3)), upsampled(centers, 1, 3))
        torch.testing.assert_close(grad, torch.from_numpy(want), rtol=1e-10, atol=1e-12)
        assert grad[0, 0, 0, 2] != 0 and grad[0, 0, 0, 1] != 0


def test_logits_are_zoedepths_module():
    """The twin's logits are ZoeDepth's LogBinomial.forward written out (float64 buffers here)."""
    from depthmetric.reference.log_binomial_expectation import log_binomial_logits

    p, t, _ = inputs()
    K = 6
    k_idx = torch.arange(K, dtype=torch.float64).view(1, -1, 1, 1)
    n = torch.tensor([K - 1.0], dtype=torch.float64).view(1, -1, 1, 1)
    lb = (n + 1e-7) * torch.log(n + 1e-7) - (k_idx + 1e-7) * torch.log(k_idx + 1e-7) - (n - k_idx) * torch.log(
        n - k_idx + 1e-7)
    one_minus = torch.clamp(1 - p, EPS, 1)
    y = lb + k_idx * torch.log(torch.clamp(p, EPS, 1)) + (n - k_idx) * torch.log(one_minus)
    torch.testing.assert_close(log_binomial_logits(p, t, K, EPS), y / t, rtol=1e-14, atol=1e-12)


def grads_of(fn, leaves, weights):
    out = fn(*leaves)
    return out.detach(), torch.autograd.grad(out, leaves, weights)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("hw,size", [(None, (5, 7)), ((1, 1), (5, 7)), ((3, 4), (5, 7)), ((5, 7), (5, 7)),
                                     ((1, 3), (1, 7)), ((3, 1), (5, 1)), ((12, 16), (24, 32)), ((9, 11), (5, 7)),
                                     ((17, 5), (40, 9))],
                         ids=["B,K", "B,K,1,1", "smaller", "equal", "H=1", "W=1", "large", "larger", "blocks"])
def test_kernel_matches_twin(hw, size, dtype, device):
    """The kernel (p and centres in ``dtype``) against the twin in float64 on the same rounded inputs."""
    H, W = size
    p, t, centers = inputs(H=H, W=W, hw=hw, dtype=dtype)
    weights = rand(2, 1, H, W, seed=5)
    leaves = [p, t, centers]

    def run(backend, to):
        xs = [x.detach().to(**to).requires_grad_() for x in leaves]
        fn = lambda p, t, c: dm.log_binomial_expectation(p, t, c, backend=backend)  # noqa: E731
        return grads_of(fn, xs, weights.to(**to))

    got, got_grads = run(backend_of(device), dict(device=device))
    want, want_grads = run("reference", dict(dtype=torch.float64))
    K = centers.shape[1]
    assert got.dtype == dtype and got.shape == (2, 1, H, W)
    assert_close_scaled(got.cpu(), want, dtype, n_terms=K)
    # dL/dp and dL/dt sum K terms that cancel (sum_k dL/dl_k = 0) and scale with K / t: a factor K more room.
    for g, w, n in zip(got_grads, want_grads, (K, K, H * W * K)):
        assert_close_scaled(g.cpu(), w, dtype, n_terms=n, factor=8.0 * K)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("t", [0.0212, 50.0], ids=["t=0.0212", "t=50"])
def test_p_at_the_clamps_edges_and_t_at_zoedepths_bounds(t, device):
    """p exactly 0, eps, 1 - eps, 1 (and past them) with t at ZoeDepth's bounds: the kernel's value and
    gradients are the twin's (the clamps' gradient passing at their bounds, inclusive)."""
    if not dm.build_info()["compiled"]:
        pytest.skip("extension not built")
    edges = torch.tensor([0.0, EPS / 2, EPS, 2 * EPS, 0.5, 1 - EPS, 1.0], dtype=torch.float64)
    p = edges.view(1, 1, 1, -1).expand(2, 1, 3, -1).contiguous()
    tt = torch.full((2, 1, 3, 7), t, dtype=torch.float64)
    centers = rand(2, 16, 2, 3, seed=3, low=0.5, high=10.0)
    weights = rand(2, 1, 3, 7, seed=4)
    results = []
    for backend in ("reference", backend_of(device)):
        leaves = [x.to(device).requires_grad_() for x in (p, tt, centers)]
        out = dm.log_binomial_expectation(*leaves, backend=backend)
        results.append((out.detach().cpu(), [g.cpu() for g in torch.autograd.grad(out, leaves, weights.to(device))]))
    (got, got_grads), (want, want_grads) = results[1], results[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for g, w in zip(got_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-9 * max(1.0, w.abs().max().item()))
    assert got_grads[0][..., 0].abs().max() > 0  # p == 0: clamp(1 - p) passes the gradient


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("hw", [None, (3, 4), (5, 6)], ids=["B,K", "smaller", "equal"])
def test_gradcheck(hw, device):
    p, t, centers = inputs(K=4, H=5, W=6, hw=hw)
    leaves = tuple(x.to(device).requires_grad_() for x in (p, t, centers))
    fn = lambda p, t, c: dm.log_binomial_expectation(p, t, c, backend=backend_of(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn, leaves)
    fn0 = lambda p, c: dm.log_binomial_expectation(p, 0.7, c, backend=backend_of(device))  # noqa: E731
    assert torch.autograd.gradcheck(fn0, (leaves[0], leaves[2]))  # a number t
    t0 = torch.tensor(0.7, dtype=torch.float64, device=device, requires_grad=True)
    assert torch.autograd.gradcheck(fn, (leaves[0], t0, leaves[2]))  # a 0-d t


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    p, t, centers = inputs(K=4, H=6, W=7, hw=(3, 4))
    op = torch.ops.depthmetric.log_binomial_expectation
    for return_probs in (False, True):
        torch.library.opcheck(op, (p.to(device), t.to(device), centers.to(device), EPS, return_probs))
    torch.library.opcheck(op, (p.to(device), t.to(device), centers[:, :, :1, :1].to(device), 1e-3, False))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_compile_fullgraph(device):
    p, t, centers = (x.to(device) for x in inputs(hw=(3, 4)))

    def step(p, t, c):
        return dm.log_binomial_expectation(p, t, c).square().mean()

    leaves = [x.clone().requires_grad_() for x in (p, t, centers)]
    compiled = torch.compile(step, fullgraph=True)(*leaves)
    grads = torch.autograd.grad(compiled, leaves)
    eager_leaves = [x.clone().requires_grad_() for x in (p, t, centers)]
    eager = step(*eager_leaves)
    torch.testing.assert_close(compiled, eager, rtol=1e-12, atol=0)
    for g, w in zip(grads, torch.autograd.grad(eager, eager_leaves)):
        torch.testing.assert_close(g, w, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize("backend", BACKENDS)
def test_return_probs_and_shapes(backend):
    p, t, centers = inputs(hw=(3, 4))
    depth, probs = dm.log_binomial_expectation(p[:, 0], t[:, 0], centers, return_probs=True, backend=backend)
    assert depth.shape == (2, 1, 5, 7) and probs.shape == (2, 6, 5, 7) and not probs.requires_grad
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 5, 7, dtype=torch.float64), rtol=0, atol=1e-14)
    up = F.interpolate(centers, (5, 7), mode="bilinear", align_corners=True)
    torch.testing.assert_close(depth, (probs * up).sum(1, keepdim=True), rtol=1e-13, atol=0)
    assert torch.equal(depth, dm.log_binomial_expectation(p, t, centers, backend=backend))
    one = dm.log_binomial_expectation(p, t, centers[:, :1], backend=backend)  # one bin: its centre
    torch.testing.assert_close(one, F.interpolate(centers[:, :1], (5, 7), mode="bilinear", align_corners=True),
                               rtol=1e-14, atol=0)


@pytest.mark.parametrize("backend", ["reference", "auto"])
def test_meta_and_zero_sizes(backend):
    if backend == "auto" and not dm.build_info()["compiled"]:
        pytest.skip("extension not built")
    p, centers = torch.empty(2, 1, 7, 9, device="meta"), torch.empty(2, 5, 3, 4, device="meta")
    depth, probs = dm.log_binomial_expectation(p, torch.empty(2, 1, 7, 9, device="meta"), centers,
                                               return_probs=True, backend=backend)
    assert depth.shape == (2, 1, 7, 9) and probs.shape == (2, 5, 7, 9) and depth.device.type == "meta"
    for shape in ((0, 1, 7, 9), (2, 1, 0, 9), (2, 1, 7, 0)):
        pz = torch.zeros(shape, dtype=torch.float64, requires_grad=True)
        c = rand(shape[0], 5, 3, 4).requires_grad_()
        depth = dm.log_binomial_expectation(pz, 1.0, c, backend=backend)
        assert depth.shape == shape
        gp, gc = torch.autograd.grad(depth.sum(), (pz, c), allow_unused=True)
        assert gc is None or torch.equal(gc, torch.zeros_like(c))


def test_module_matches_function():
    p, t, centers = inputs(hw=(3, 4))
    head = dm.LogBinomialExpectation(eps=1e-3, backend="reference")
    torch.testing.assert_close(head(p, t, centers),
                               dm.log_binomial_expectation(p, t, centers, eps=1e-3, backend="reference"))
    assert "eps=0.001" in repr(head)
    doc = dm.log_binomial_expectation.__doc__
    assert "ZoeDepth" in doc and "lb(n, k)" in doc and "bounds included" in doc


def test_bad_input():
    p, t, centers = inputs(hw=(3, 4))
    cases = [
        (lambda: dm.log_binomial_expectation(p.expand(2, 2, 5, 7), t, centers), ValueError, "p must be B,H,W or"),
        (lambda: dm.log_binomial_expectation(p.long(), t, centers), TypeError, "p must be float"),
        (lambda: dm.log_binomial_expectation(p, [[1.0]], centers), TypeError, "t must be a number"),
        (lambda: dm.log_binomial_expectation(p, 0.0, centers), ValueError, "t must be a finite number > 0"),
        (lambda: dm.log_binomial_expectation(p, t[:, :, :4], centers), ValueError, "t must be a number, a 0-d"),
        (lambda: dm.log_binomial_expectation(p, t, centers[:, :0]), ValueError, "centers has no bins"),
        (lambda: dm.log_binomial_expectation(p, t, centers[:1]), ValueError, "centers has batch size 1 but p"),
        (lambda: dm.log_binomial_expectation(p, t, centers.float()), TypeError, "centers must have the dtype of p"),
        (lambda: dm.log_binomial_expectation(p, t, centers, eps=0.0), ValueError, "eps must be a number in"),
        (lambda: dm.log_binomial_expectation(p, t, centers, eps="1e-4"), TypeError, "eps must be a number"),
        (lambda: dm.log_binomial_expectation(p, t.to("meta"), centers), ValueError, "t is on meta"),
        (lambda: dm.LogBinomialExpectation(eps=2.0), ValueError, "eps"),
    ]
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    for name in ("p", "t", "centers"):
        args = dict(p=p.clone(), t=t.clone(), centers=centers.clone())
        args[name].view(-1)[2] = math.nan
        with pytest.raises(ValueError, match=f"{name} contains NaN or Inf"):
            dm.log_binomial_expectation(args["p"], args["t"], args["centers"])
