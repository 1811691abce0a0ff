"""Every public op with a zero-size batch, channel or spatial dimension, on the kernel and the reference
backend: an empty batch or image gives the documented empty map or zero loss with a zero gradient, both
backends alike; what cannot be computed (no channels, an image smaller than the op's window) is a
ValueError naming the argument (the registry's ``no_channels`` and ``too_small``)."""
import pytest
import torch

from .registry import OPS

DIMS = {"B=0": (0, 3, 16, 16), "C=0": (2, 0, 16, 16), "H=0": (2, 3, 0, 16), "W=0": (2, 3, 16, 0)}


def expected_error(op, dims):
    if dims == "C=0":
        return op.no_channels
    if dims in ("H=0", "W=0"):
        return op.too_small
    return None


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_zero_size(op, dims):
    if dims == "C=0" and op.no_channels is None:
        pytest.skip("the op has no channel dimension")
    argument = expected_error(op, dims)
    outputs = []
    for backend in op.backends():
        args, kwargs = op.make(*DIMS[dims], fixed=False, grad=True)
        if argument is not None:
            with pytest.raises(ValueError, match=argument):
                op.call(args, kwargs, backend)
            continue
        out = op.call(args, kwargs, backend)
        assert torch.equal(out, torch.zeros_like(out)), f"{backend}: {out}"  # an empty map, or 0 per image
        leaves = op.leaves(args)
        if leaves:
            grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
            for leaf, grad in zip(leaves, grads):
                grad = torch.zeros_like(leaf) if grad is None else grad
                assert grad.shape == leaf.shape and torch.equal(grad, torch.zeros_like(leaf))
        outputs.append(out.detach())
    for other in outputs[1:]:
        assert torch.equal(outputs[0], other)
