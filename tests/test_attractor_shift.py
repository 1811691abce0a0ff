"""attractor_shift / AttractorShift: a value worked by hand and a numpy loop, kernel vs reference twin over
dtype x kind x reduction x gamma, centres that cross, dx == 0, gradients (gradcheck, gradgradcheck), opcheck,
compile, strides, zero sizes, memory, bad input."""
import math

import numpy as np
import pytest
import torch

import depthmetric as dm
from depthmetric.reference.attractor_shift import attractor_shift as reference_op

from .registry import DEVICES, assert_close_scaled, backend_of, needs_ext, rand

KINDS = ["inv", "exp"]
REDUCTIONS = ["mean", "sum"]
ACC = {torch.float64: torch.float64, torch.float32: torch.float32, torch.float16: torch.float32,
       torch.bfloat16: torch.float32}


def numpy_shift(c, a, alpha, gamma, kind, reduction):
    """ZoeDepth's step worked out one element at a time: for every b, k, i, j the shifts of the A attractors."""
    c, a = c.detach().double().cpu().numpy(), a.detach().double().cpu().numpy()
    B, K, H, W = c.shape
    A = a.shape[1]
    out = np.empty_like(c)
    for b in range(B):
        for k in range(K):
            for i in range(H):
                for j in range(W):
                    total = 0.0
                    for t in range(A):
                        dx = a[b, t, i, j] - c[b, k, i, j]
                        if kind == "inv":
                            total += dx / (1.0 + alpha * dx ** gamma)
                        else:
                            total += math.exp(-alpha * abs(dx) ** gamma) * dx
                    out[b, k, i, j] = c[b, k, i, j] + (total / A if reduction == "mean" else total)
    return torch.from_numpy(out)


def inputs(B=2, K=5, A=3, H=4, W=6, dtype=torch.float64, device="cpu", seed=0):
    c = rand(B, K, H, W, seed=seed, dtype=dtype).to(device).requires_grad_()
    a = rand(B, A, H, W, seed=seed + 1, dtype=dtype).to(device).requires_grad_()
    return c, a


def run(c, a, backend, weights=None, **kw):
    """The output and the gradients of both inputs for fixed output weights."""
    out = dm.attractor_shift(c, a, backend=backend, **kw)
    weights = rand(*out.shape, seed=9, dtype=out.dtype).to(out.device) if weights is None else weights
    return (out.detach(), *torch.autograd.grad(out, (c, a), weights))


def test_value_worked_by_hand():
    """One centre 0.5, one attractor 0.7: dx = 0.2; inv: 0.2 / (1 + 300 * 0.04) = 0.2 / 13;
    exp with gamma 1: exp(-300 * 0.2) * 0.2; two attractors averaged or summed."""
    c = torch.full((1, 1, 1, 1), 0.5, dtype=torch.float64)
    a = torch.tensor([0.7, 0.4], dtype=torch.float64).view(1, 2, 1, 1)
    out = dm.attractor_shift(c, a[:, :1], backend="cpu")
    assert out.item() == pytest.approx(0.5 + 0.2 / 13, rel=1e-15)
    out = dm.attractor_shift(c, a[:, :1], kind="exp", gamma=1, backend="cpu")
    assert out.item() == pytest.approx(0.5 + math.exp(-60.0) * 0.2, rel=1e-15)
    inv = lambda dx: dx / (1 + 300 * dx * dx)  # noqa: E731
    out = dm.attractor_shift(c, a, backend="cpu")
    assert out.item() == pytest.approx(0.5 + (inv(0.2) + inv(-0.1)) / 2, rel=1e-15)
    out = dm.attractor_shift(c, a, reduction="sum", backend="cpu")
    assert out.item() == pytest.approx(0.5 + inv(0.2) + inv(-0.1), rel=1e-15)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma,alpha", [(1, 0.5), (2, 300.0), (2, 3.0), (3, 0.5), (4, 2.0)])
def test_kernel_and_twin_match_the_numpy_loop(gamma, alpha, reduction, kind, device):
    c, a = inputs(B=2, K=4, A=3, H=3, W=5, device=device, seed=gamma)
    kw = dict(alpha=alpha, gamma=gamma, kind=kind, reduction=reduction)
    want = numpy_shift(c, a, **kw)
    for backend in (backend_of(device), "reference"):
        got = dm.attractor_shift(c, a, backend=backend, **kw)
        assert got.dtype == torch.float64 and got.shape == want.shape
        assert_close_scaled(got.cpu(), want, torch.float64, n_terms=3)
    shift = want - c.detach().cpu()  # the shifts are not lost in the centres: a wrong f fails
    assert shift.abs().max() > 1e-3


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_kernel_matches_twin(gamma, reduction, kind, dtype, device):
    """Over a shape crossing the CPU kernel's 64-column blocks; the twin runs in float64 on the same rounded
    inputs, so the comparison measures the kernel's own rounding (outputs carried in float32 for 16-bit input)."""
    A, K = 5, 6
    c, a = inputs(B=2, K=K, A=A, H=3, W=131, dtype=dtype, device=device, seed=gamma + 10)
    kw = dict(alpha=0.5 if kind == "inv" and gamma % 2 else 3.0, gamma=gamma, kind=kind, reduction=reduction)
    got = run(c, a, backend_of(device), **kw)
    c64, a64 = (x.detach().double().cpu().requires_grad_() for x in (c, a))
    want = run(c64, a64, "reference", weights=rand(*got[0].shape, seed=9, dtype=ACC[dtype]).double(), **kw)
    assert got[0].dtype == ACC[dtype] and got[1].dtype == dtype and got[2].dtype == dtype
    assert_close_scaled(got[0].cpu(), want[0], ACC[dtype], n_terms=A)
    for g, w in zip(got[1:], want[1:]):
        assert_close_scaled(g.cpu(), w, dtype, n_terms=A * K, factor=4.0)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_centres_that_cross(kind, device):
    """Three attractors at 0.5 pull the centres 0.49 and 0.51 past each other (a sum of slopes above 1): the
    step changes their order, and kernel, twin and the numpy loop agree on values and gradients."""
    c = torch.tensor([0.49, 0.51], dtype=torch.float64, device=device).view(1, 2, 1, 1).requires_grad_()
    a = torch.full((1, 3, 1, 1), 0.5, dtype=torch.float64, device=device).requires_grad_()
    kw = dict(alpha=300.0, gamma=2, kind=kind, reduction="sum")
    got = run(c, a, backend_of(device), **kw)
    want = run(c, a, "reference", **kw)
    assert got[0][0, 0] > got[0][0, 1]  # crossed
    torch.testing.assert_close(got[0].cpu(), numpy_shift(c, a, **kw), rtol=1e-14, atol=1e-15)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-13, atol=1e-15)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("gamma", [1, 2, 3])
def test_dx_exactly_zero(gamma, reduction, kind, device):
    """Every attractor on its centre (a == c): no shift, f'(0) = 1 for every kind and gamma (abs's gradient at
    0 is 0, as autograd has it), so grad_c = g (1 - s A) and grad_a = s sum_k g; the twin's autograd agrees."""
    c = rand(2, 1, 3, 70, seed=3).to(device)
    A = 4
    c_leaf, a_leaf = c.clone().requires_grad_(), c.expand(2, A, 3, 70).clone().requires_grad_()
    kw = dict(alpha=300.0, gamma=gamma, kind=kind, reduction=reduction)
    g = rand(2, 1, 3, 70, seed=4).to(device)
    out, grad_c, grad_a = run(c_leaf, a_leaf, backend_of(device), weights=g, **kw)
    s = 1 / A if reduction == "mean" else 1.0
    assert torch.equal(out, c)
    torch.testing.assert_close(grad_c, g * (1 - s * A), rtol=1e-15, atol=1e-15)
    torch.testing.assert_close(grad_a, (s * g).expand(2, A, 3, 70), rtol=1e-15, atol=1e-15)
    want = run(c_leaf, a_leaf, "reference", weights=g, **kw)
    for got, w in zip((out, grad_c, grad_a), want):
        torch.testing.assert_close(got, w, rtol=1e-15, atol=1e-15)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind,gamma,reduction", [("inv", 2, "mean"), ("inv", 1, "sum"), ("inv", 3, "mean"),
                                                  ("exp", 2, "sum"), ("exp", 3, "mean"), ("exp", 5, "sum")])
def test_gradcheck_and_gradgradcheck(kind, gamma, reduction, device):
    c, a = inputs(B=1, K=3, A=2, H=2, W=3, device=device, seed=gamma)
    kw = dict(alpha=0.5 if kind == "inv" and gamma % 2 else 3.0, gamma=gamma, kind=kind, reduction=reduction)
    fn = lambda c, a: dm.attractor_shift(c, a, backend=backend_of(device), **kw)  # noqa: E731
    assert torch.autograd.gradcheck(fn, (c, a))
    assert torch.autograd.gradgradcheck(fn, (c, a))  # through the twin (create_graph=True)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_one_gradient_asked_for(device):
    c, a = inputs(device=device)
    out = dm.attractor_shift(c, a.detach(), backend=backend_of(device))
    grad_c, = torch.autograd.grad(out.sum(), c)
    want, = torch.autograd.grad(dm.attractor_shift(c, a.detach(), backend="reference").sum(), c)
    torch.testing.assert_close(grad_c, want, rtol=1e-13, atol=1e-15)
    out = dm.attractor_shift(c.detach(), a, backend=backend_of(device))
    grad_a, = torch.autograd.grad(out.sum(), a)
    want, = torch.autograd.grad(dm.attractor_shift(c.detach(), a, backend="reference").sum(), a)
    torch.testing.assert_close(grad_a, want, rtol=1e-13, atol=1e-15)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    c, a = inputs(dtype=torch.float32, device=device)
    op = torch.ops.depthmetric.attractor_shift.default
    torch.library.opcheck(op, (c, a, 300.0, 2, 0, True))
    torch.library.opcheck(op, (c, a, 2.0, 3, 1, False))
    torch.library.opcheck(op, (c.detach().half(), a.detach().half(), 2.0, 1, 1, True))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("kind", KINDS)
def test_compile_fullgraph(kind, device):
    torch._dynamo.reset()
    c, a = inputs(dtype=torch.float32, device=device)
    step = dm.AttractorShift(alpha=3.0, kind=kind)

    def fn(c, a):
        return (step(c * 0.9, a) ** 2).mean()

    c1, a1 = c.detach().clone().requires_grad_(), a.detach().clone().requires_grad_()
    loss = torch.compile(fn, fullgraph=True)(c1, a1)
    loss.backward()
    eager = fn(c, a)
    eager.backward()
    torch.testing.assert_close(loss, eager, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(c1.grad, c.grad, rtol=1e-5, atol=1e-8)
    torch.testing.assert_close(a1.grad, a.grad, rtol=1e-5, atol=1e-8)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs(device):
    """channels_last centres, attractors sliced from a wider tensor and an expanded incoming gradient (a mean's)
    give what contiguous inputs give."""
    c, a = inputs(B=2, K=5, A=3, H=4, W=70, dtype=torch.float32, device=device)
    want = run(c, a, backend_of(device))
    wide = torch.stack([a.detach(), a.detach() + 1], 2).flatten(1, 2)[:, ::2]  # every other channel: strided
    assert not wide.is_contiguous() and torch.equal(wide, a.detach())
    c2 = c.detach().to(memory_format=torch.channels_last).requires_grad_()
    a2 = wide.requires_grad_()
    got = run(c2, a2, backend_of(device))
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-7)
    mean_grads = torch.autograd.grad(dm.attractor_shift(c2, a2, backend=backend_of(device)).mean(), (c2, a2))
    want_grads = torch.autograd.grad(dm.attractor_shift(c, a, backend="reference").mean(), (c, a))
    for g, w in zip(mean_grads, want_grads):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-9)


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("backend", ["kernel", "reference"])
def test_zero_centres_or_attractors(backend, device):
    """No centre (K == 0): an empty output, zero gradient for the attractors. No attractor (A == 0) summed: the
    centres unchanged, grad_c = g. No attractor averaged: an error naming attractors."""
    backend = backend_of(device) if backend == "kernel" else backend
    c, a = inputs(K=0, device=device)
    out = dm.attractor_shift(c, a, backend=backend)
    assert out.shape == (2, 0, 4, 6)
    grad_a, = torch.autograd.grad(out.sum(), a)
    assert torch.equal(grad_a, torch.zeros_like(a))
    c, a = inputs(A=0, device=device)
    out = dm.attractor_shift(c, a, reduction="sum", backend=backend)
    assert torch.equal(out, c.detach())
    grad_c, = torch.autograd.grad(out, c, torch.full_like(out, 2.0))
    assert torch.equal(grad_c, torch.full_like(c, 2.0))
    with pytest.raises(ValueError, match="attractors holds no attractor"):
        dm.attractor_shift(c, a, backend=backend)


@needs_ext
def test_nothing_of_size_bakhw_is_saved_or_allocated():
    """The kernel saves only its inputs for backward, and its forward + backward allocate no tensor near the
    B,A,K,h,w differences (the twin's, which ZoeDepth's layers build)."""
    c, a = inputs(B=2, K=32, A=16, H=16, W=24, dtype=torch.float32)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t.numel()) or t, lambda t: t):
        out = dm.attractor_shift(c, a, backend="cpu")
    assert max(saved) <= c.numel()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True) as prof:
        out = dm.attractor_shift(c, a, backend="cpu")
        torch.autograd.grad(out.sum(), (c, a))
    largest = max(e.cpu_memory_usage for e in prof.events())
    assert 0 < largest <= 4 * c.numel() * 4  # bytes: a few B,K,h,w float32 maps at most (one B,A,K,h,w is 64)


def test_module_matches_function():
    c, a = inputs()
    module = dm.AttractorShift(alpha=5.0, gamma=3, kind="exp", reduction="sum", backend="reference")
    want = dm.attractor_shift(c, a, alpha=5.0, gamma=3, kind="exp", reduction="sum", backend="reference")
    assert torch.equal(module(c, a), want)
    assert "alpha=5.0, gamma=3, kind='exp', reduction='sum'" in repr(module)
    assert dm.AttractorShift().alpha == 300.0  # ZoeDepth's effective alpha by default


def test_reference_is_zoedepths_formulation():
    """The twin against ZoeDepth's own expression: func(dist(A.unsqueeze(2) - b.unsqueeze(1)), dim=1) + b."""
    c, a = inputs(dtype=torch.float64)
    for kind, dist in (("inv", lambda dx: dx.div(1 + 300 * dx.pow(2))),
                       ("exp", lambda dx: torch.exp(-300 * (torch.abs(dx) ** 2)) * dx)):
        for reduction, func in (("mean", torch.mean), ("sum", torch.sum)):
            zoe = c + func(dist(a.unsqueeze(2) - c.unsqueeze(1)), dim=1)
            twin = reference_op(c, a, 300.0, 2, {"inv": 0, "exp": 1}[kind], reduction == "mean")
            torch.testing.assert_close(twin, zoe, rtol=0, atol=0)


@pytest.mark.parametrize("backend", ["auto", "reference"])
def test_bad_input(backend):
    if backend == "auto" and not dm.build_info()["compiled"]:
        pytest.skip("extension not built")
    c, a = inputs(dtype=torch.float32)
    call = lambda *x, **k: dm.attractor_shift(*x, backend=backend, **k)  # noqa: E731
    cases = [
        (lambda: call(c[0], a), ValueError, r"centers must be B,K,h,w"),
        (lambda: call(c, a[0]), ValueError, r"attractors must be B,A,h,w"),
        (lambda: call(c, a[:1]), ValueError, r"attractors must be B,A,h,w with the centers' B,h,w"),
        (lambda: call(c, a[..., :3]), ValueError, r"attractors must be B,A,h,w with the centers' B,h,w"),
        (lambda: call(c, a.double()), TypeError, r"attractors is torch.float64 but centers is torch.float32"),
        (lambda: call(c.long(), a), TypeError, r"centers must be float16"),
        (lambda: call(c, a.to("meta")), ValueError, r"attractors is on meta"),
        (lambda: call(c, a, kind="linear"), ValueError, r"kind must be one of \('inv', 'exp'\)"),
        (lambda: call(c, a, reduction="max"), ValueError, r"reduction must be one of \('mean', 'sum'\)"),
        (lambda: call(c, a, gamma=2.0), TypeError, r"gamma must be a positive int"),
        (lambda: call(c, a, gamma=True), TypeError, r"gamma must be a positive int"),
        (lambda: call(c, a, gamma=0), ValueError, r"gamma must be a positive int"),
        (lambda: call(c, a, alpha=math.inf), ValueError, r"alpha must be a finite number >= 0"),
        (lambda: call(c, a, alpha=-1.0), ValueError, r"alpha must be a finite number >= 0"),
        (lambda: call(c, a, alpha="300"), TypeError, r"alpha must be a number"),
        (lambda: call(c, torch.where(a > 0.5, math.nan, a)), ValueError, r"attractors contains NaN or Inf"),
        (lambda: call(c.detach() + math.inf, a), ValueError, r"centers contains NaN or Inf"),
        (lambda: dm.AttractorShift(gamma=-2), ValueError, r"gamma must be a positive int"),
        (lambda: dm.AttractorShift(kind="log"), ValueError, r"kind must be one of"),
    ]
    for fn, error, message in cases:
        with pytest.raises(error, match=message):
            fn()


@needs_ext
def test_compiled_op_checks_its_scalars():
    c, a = inputs(dtype=torch.float32)
    op = torch.ops.depthmetric.attractor_shift
    for args, message in [((c, a, 300.0, 0, 0, True), "gamma must be a positive integer, got 0"),
                          ((c, a, 300.0, 2, 2, True), r"kind must be 0 \(inv\) or 1 \(exp\), got 2"),
                          ((c, a, math.nan, 2, 0, True), "alpha must be a finite number >= 0"),
                          ((c, a[:, :0], 300.0, 2, 0, True), r"at least one attractor \(A >= 1\)"),
                          ((c, a.double(), 300.0, 2, 0, True), "attractors must have the centers' dtype")]:
        with pytest.raises(RuntimeError, match=message):
            op(*args)
