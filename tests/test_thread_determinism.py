"""The CPU kernels give bitwise the same maps and gradients at any number of threads: work is split by rows
or blocks of rows and every output element is written by one task, with no reduction whose order depends on
the split. Every op with a kernel, at a size crossing each of its CPU blocks."""
import pytest
import torch

from .registry import KERNEL_OPS, needs_ext, rand

pytestmark = needs_ext


def at_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def outputs_and_grads(op):
    """The op's output and the gradients of its inputs, weighted by fixed random weights (a sum in torch
    would bring in the thread dependence of torch's own reduction order)."""
    args, kwargs = op.make(*op.block_shape(), dtype=torch.float32, grad=True)
    out = op.call(args, kwargs, "cpu")
    leaves = op.leaves(args)
    if not leaves:
        return [out]
    weights = rand(*out.shape, seed=3, dtype=out.dtype)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_outputs=weights)]


@pytest.mark.parametrize("op", KERNEL_OPS, ids=lambda op: op.name)
def test_bitwise_identical_across_thread_counts(op):
    one = at_threads(1, lambda: outputs_and_grads(op))
    for threads in (2, 3):
        other = at_threads(threads, lambda: outputs_and_grads(op))
        for a, b in zip(one, other):
            if a.dim() == 0:  # a loss reduced by torch, whose own summation order follows the thread count
                torch.testing.assert_close(a, b, rtol=1e-6, atol=0)
            else:
                assert torch.equal(a, b), f"{op.name} differs at {threads} threads"
