"""Every differentiable public op under the autograd transforms torch offers, on the kernel and the
reference backend: double backward (float64 gradgradcheck; the kernels differentiate their gradient through
the reference formula), ``torch.func.grad``/``jvp``/``vmap`` and forward-mode AD (the twins and the PyTorch
ops support them and agree with plain autograd and with a loop; a kernel refuses them with a RuntimeError
naming the op and the twin, never a silent zero)."""
import pytest
import torch
import torch.autograd.forward_ad as forward_ad

import depthmetric as dm

COMPILED = dm.build_info()["compiled"]
K = torch.tensor([[5.0, 0, 3], [0, 5.0, 3], [0, 0, 1]], dtype=torch.float64)
T = torch.eye(4, dtype=torch.float64)
T[0, 3] = 0.05


def rand(*shape, seed=0, low=0.0, high=1.0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=g, dtype=torch.float64) * (high - low) + low


IMG, IMG2 = rand(2, 3, 6, 7, seed=1, low=0.1, high=0.9), rand(2, 3, 6, 7, seed=2, low=0.1, high=0.9)
DEPTH = rand(2, 1, 6, 7, seed=3, low=0.5, high=3.0)
PRED = rand(2, 1, 6, 7, seed=6, low=0.5, high=3.0)  # nowhere equal to DEPTH: |pred - depth| has no kink
SHIFTS = torch.tensor([[0, 1, 2], [1, 0, 0], [1, 2, 5]])
NOISE = 1e-5 * rand(1, 2, 6, 7, seed=4)

# name: (fn(x, backend) -> scalar, x, has a kernel)
OPS = {
    "ssim": (lambda x, b: dm.ssim(x, IMG2, reduction="mean", backend=b), IMG, True),
    "ssim gauss11": (lambda x, b: dm.ssim(x, IMG2, window="gauss11", reduction="mean", backend=b), IMG, True),
    "photometric_error": (lambda x, b: dm.photometric_error(x, IMG2, backend=b).mean(), IMG, True),
    "min_reprojection_loss": (lambda x, b: dm.min_reprojection_loss(IMG2, [x], [IMG2.flip(-1)], noise=NOISE,
                                                                    backend=b), IMG, True),
    "multi_range_contrastive_loss": (lambda x, b: dm.multi_range_contrastive_loss(
        x, DEPTH, shifts=SHIFTS, ranges=[(0.3, 1.0), (1.0, 3.0)], margins=[0.5, 1.0], backend=b),
        rand(2, 4, 6, 7, seed=5, low=-0.3, high=0.3), True),
    "silog_loss": (lambda x, b: dm.silog_loss(x, DEPTH, backend=b), PRED, False),
    "trimmed_mae_loss": (lambda x, b: dm.trimmed_mae_loss(x, DEPTH, backend=b), PRED, False),
    "multi_scale_derivative_loss": (lambda x, b: dm.multi_scale_derivative_loss(x, DEPTH, p=2, backend=b),
                                    PRED, False),
    "scale_shift_invariant_loss": (lambda x, b: dm.scale_shift_invariant_loss(x, DEPTH, backend=b),
                                   PRED, False),
    "edge_aware_smoothness": (lambda x, b: dm.edge_aware_smoothness(x, IMG), DEPTH, False),
    "warp": (lambda x, b: dm.warp(IMG, x, T, K).mean(), DEPTH, False),
    "backproject": (lambda x, b: dm.backproject(x, torch.linalg.inv(K)).pow(2).mean(), DEPTH, False),
}
KERNEL_OPS = [name for name, (_, _, kernel) in OPS.items() if kernel]
PAIRS = [(n, b) for n in OPS for b in (["reference", "auto"] if OPS[n][2] and COMPILED else ["reference"])]
NONLINEAR = ["ssim", "ssim gauss11", "photometric_error", "min_reprojection_loss", "silog_loss",
             "multi_scale_derivative_loss", "scale_shift_invariant_loss", "edge_aware_smoothness", "warp",
             "backproject"]  # the contrastive and trimmed L1 losses are piecewise linear: no second derivative


@pytest.mark.parametrize("name,backend", PAIRS)
def test_double_backward(name, backend):
    fn, x, _ = OPS[name]
    x = x.clone().requires_grad_()
    grad, = torch.autograd.grad(fn(x, backend), x, create_graph=True)
    plain, = torch.autograd.grad(fn(x, backend), x)
    torch.testing.assert_close(grad.detach(), plain, rtol=1e-10, atol=1e-12)  # both paths, one gradient
    assert grad.requires_grad
    if name in NONLINEAR:
        assert torch.autograd.gradgradcheck(lambda x: fn(x, backend), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
        hvp, = torch.autograd.grad(grad, x, rand(*x.shape, seed=9))
        assert hvp.abs().max() > 0


@pytest.mark.parametrize("name", OPS)
def test_func_transforms_on_the_twin_and_pytorch_ops(name):
    fn, x, _ = OPS[name]
    leaf = x.clone().requires_grad_()
    want, = torch.autograd.grad(fn(leaf, "reference"), leaf)
    torch.testing.assert_close(torch.func.grad(lambda x: fn(x, "reference"))(x), want, rtol=1e-12, atol=1e-14)
    v = rand(*x.shape, seed=7)
    if name == "warp":  # PyTorch's own limit, named by PyTorch
        with pytest.raises(NotImplementedError, match="forward AD with grid_sampler_2d"):
            torch.func.jvp(lambda x: fn(x, "reference"), (x,), (v,))
    else:
        _, tangent = torch.func.jvp(lambda x: fn(x, "reference"), (x,), (v,))
        torch.testing.assert_close(tangent, (want * v).sum(), rtol=1e-10, atol=1e-14)
    stacked = torch.stack([x, x * 0.9 + 0.05])
    looped = torch.stack([fn(s, "reference") for s in stacked])
    torch.testing.assert_close(torch.vmap(lambda x: fn(x, "reference"))(stacked), looped, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not COMPILED, reason="extension not built")
@pytest.mark.parametrize("transform", ["grad", "jvp", "vmap", "jacrev", "forward_ad"])
@pytest.mark.parametrize("name", KERNEL_OPS)
def test_kernels_refuse_func_transforms_by_name(name, transform):
    fn, x, _ = OPS[name]
    op = name.split(" ")[0]
    calls = {
        "grad": lambda: torch.func.grad(lambda x: fn(x, "auto"))(x),
        "jvp": lambda: torch.func.jvp(lambda x: fn(x, "auto"), (x,), (torch.ones_like(x),)),
        "vmap": lambda: torch.vmap(lambda x: fn(x, "auto"))(torch.stack([x, x])),
        "jacrev": lambda: torch.func.jacrev(lambda x: fn(x, "auto"))(x),
        "forward_ad": lambda: _dual_call(fn, x),
    }
    with pytest.raises(RuntimeError, match=rf"depthmetric\.{'ssim' if op == 'photometric_error' else op}.*"
                                           r"backend='reference'"):
        calls[transform]()


def _dual_call(fn, x):
    with forward_ad.dual_level():
        return fn(forward_ad.make_dual(x, torch.ones_like(x)), "auto")


def test_value_checks_still_run_outside_vmap_and_are_skipped_inside():
    bad = IMG.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        torch.func.grad(lambda x: dm.ssim(x, IMG2, reduction="mean", backend="reference"))(bad)
    out = torch.vmap(lambda x: dm.ssim(x, IMG2, reduction="mean", backend="reference"))(torch.stack([bad, IMG]))
    assert out[0].isnan() and out[1].isfinite()
