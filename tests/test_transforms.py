"""Every differentiable public op under the autograd transforms torch offers, on the kernel and the
reference backend: double backward (float64 gradgradcheck; the kernels differentiate their gradient through
the reference formula), ``torch.func.grad``/``jvp``/``vmap`` and forward-mode AD (the twins and the PyTorch
ops support them and agree with plain autograd and with a loop; a kernel refuses them with a RuntimeError
naming the op and the twin, never a silent zero)."""
import pytest
import torch
import torch.autograd.forward_ad as forward_ad

import depthmetric as dm

from .registry import COMPILED, OPS, rand

DIFFERENTIABLE = [op for op in OPS if op.grad]
IDS = dict(ids=lambda v: getattr(v, "name", str(v)))


def scalar_of(op):
    """(fn(x, backend) -> a scalar of the op's output, x): x is the op's first differentiable input (the first
    element of a list), every other argument fixed."""
    H = max(6, op.min_hw)
    B, C = (2, 3) if H == 6 else (1, 1)  # gradgradcheck's cost grows with the square of the input's size
    args, kwargs = op.make(B, C, H, H + 1)
    position = op.grad[0]
    x = args[position][0] if isinstance(args[position], list) else args[position]

    def fn(x, backend):
        call = list(args)
        call[position] = [x, *args[position][1:]] if isinstance(args[position], list) else x
        out = op.call(call, kwargs, backend)
        return out if out.dim() == 0 else out.pow(2).mean()
    return fn, x


@pytest.mark.parametrize("op,backend", [(op, b) for op in DIFFERENTIABLE for b in op.backends(kernel_backend="auto")],
                         **IDS)
def test_double_backward(op, backend):
    fn, x = scalar_of(op)
    x = x.clone().requires_grad_()
    grad, = torch.autograd.grad(fn(x, backend), x, create_graph=True)
    plain, = torch.autograd.grad(fn(x, backend), x)
    torch.testing.assert_close(grad.detach(), plain, rtol=1e-10, atol=1e-12)  # both paths, one gradient
    assert grad.requires_grad
    if op.smooth:
        assert torch.autograd.gradgradcheck(lambda x: fn(x, backend), (x,), eps=1e-6, atol=1e-5, rtol=1e-4)
        hvp, = torch.autograd.grad(grad, x, rand(*x.shape, seed=9))
        assert hvp.abs().max() > 0


@pytest.mark.parametrize("op", DIFFERENTIABLE, **IDS)
def test_func_transforms_on_the_twin_and_pytorch_ops(op):
    fn, x = scalar_of(op)
    backend = "reference" if op.takes_backend else None
    leaf = x.clone().requires_grad_()
    want, = torch.autograd.grad(fn(leaf, backend), leaf)
    torch.testing.assert_close(torch.func.grad(lambda x: fn(x, backend))(x), want, rtol=1e-12, atol=1e-14)
    v = rand(*x.shape, seed=7)
    if not op.forward_ad:  # PyTorch's own limit, named by PyTorch
        with pytest.raises(NotImplementedError, match="forward AD with grid_sampler_2d"):
            torch.func.jvp(lambda x: fn(x, backend), (x,), (v,))
    else:
        _, tangent = torch.func.jvp(lambda x: fn(x, backend), (x,), (v,))
        torch.testing.assert_close(tangent, (want * v).sum(), rtol=1e-10, atol=1e-14)
    stacked = torch.stack([x, x * 0.9 + 0.05])
    looped = torch.stack([fn(s, backend) for s in stacked])
    torch.testing.assert_close(torch.vmap(lambda x: fn(x, backend))(stacked), looped, rtol=1e-12, atol=1e-14)


@pytest.mark.skipif(not COMPILED, reason="extension not built")
@pytest.mark.parametrize("transform", ["grad", "jvp", "vmap", "jacrev", "forward_ad"])
@pytest.mark.parametrize("op", [op for op in DIFFERENTIABLE if op.kernel], **IDS)
def test_kernels_refuse_func_transforms_by_name(op, transform):
    fn, x = scalar_of(op)
    calls = {
        "grad": lambda: torch.func.grad(lambda x: fn(x, "auto"))(x),
        "jvp": lambda: torch.func.jvp(lambda x: fn(x, "auto"), (x,), (torch.ones_like(x),)),
        "vmap": lambda: torch.vmap(lambda x: fn(x, "auto"))(torch.stack([x, x])),
        "jacrev": lambda: torch.func.jacrev(lambda x: fn(x, "auto"))(x),
        "forward_ad": lambda: _dual_call(fn, x),
    }
    with pytest.raises(RuntimeError, match=rf"depthmetric\.{op.kernel}.*backend='reference'"):
        calls[transform]()


def _dual_call(fn, x):
    with forward_ad.dual_level():
        return fn(forward_ad.make_dual(x, torch.ones_like(x)), "auto")


def test_value_checks_still_run_outside_vmap_and_are_skipped_inside():
    img, img2 = rand(2, 3, 6, 7, seed=1), rand(2, 3, 6, 7, seed=2)
    bad = img.clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="x contains NaN"):
        torch.func.grad(lambda x: dm.ssim(x, img2, reduction="mean", backend="reference"))(bad)
    out = torch.vmap(lambda x: dm.ssim(x, img2, reduction="mean", backend="reference"))(torch.stack([bad, img]))
    assert out[0].isnan() and out[1].isfinite()
