"""Every public op under ``torch.autocast`` (CPU bfloat16 here; CUDA float16/bfloat16 where a GPU runs the
tests): from float32 inputs it returns what it returns outside autocast, in the same dtype (float32 results,
float64 only where the op says so), within bfloat16's rounding of the largest value compared, and its
gradients come back in the inputs' float32. The ops' arithmetic does not follow autocast's lower precision:
a network's float32 loss stays a float32 loss when the training step runs under autocast."""
import pytest
import torch

from .registry import DEVICES, OPS, backend_of, needs_ext

IDS = dict(ids=lambda v: getattr(v, "name", str(v)))
AUTOCAST = {"cpu": [torch.bfloat16], "cuda": [torch.float16, torch.bfloat16]}


def _grads(op, args, out):
    """Gradients of ``sum(out^2)``, taken outside autocast as torch recommends for backward passes."""
    leaves = op.leaves(args)
    if not leaves or not out.requires_grad:
        return []
    return list(torch.autograd.grad(out.float().pow(2).sum(), leaves))


@needs_ext
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("op", OPS, **IDS)
def test_autocast_keeps_the_ops_dtypes_and_values(op, device):
    for dtype in AUTOCAST[device]:
        for backend in op.backends(backend_of(device)):
            args, kwargs = op.make(2, 3, max(9, op.min_hw), max(10, op.min_hw), dtype=torch.float32, grad=True,
                                   device=device)
            want = op.call(args, kwargs, backend)
            want_grads = _grads(op, args, want)
            args, kwargs = op.make(2, 3, max(9, op.min_hw), max(10, op.min_hw), dtype=torch.float32, grad=True,
                                   device=device)
            with torch.autocast(device, dtype=dtype):
                got = op.call(args, kwargs, backend)
            grads = _grads(op, args, got)
            assert got.dtype == want.dtype, (op.name, backend, got.dtype, want.dtype)
            tol = 4 * torch.finfo(dtype).eps * max(1.0, want.detach().abs().max().item())
            torch.testing.assert_close(got.detach(), want.detach(), rtol=0, atol=tol,
                                       msg=lambda m: f"{op.name} ({backend}, {dtype}): {m}")
            for g, w, leaf in zip(grads, want_grads, op.leaves(args)):
                assert g.dtype == leaf.dtype == torch.float32, (op.name, g.dtype)
                gtol = 4 * torch.finfo(dtype).eps * max(1.0, w.abs().max().item())
                torch.testing.assert_close(g, w, rtol=0, atol=gtol, msg=lambda m: f"{op.name} gradient: {m}")
