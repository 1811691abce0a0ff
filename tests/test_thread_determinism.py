"""The CPU kernels give bitwise the same results and gradients at any number of threads (issue 14): work is
split by rows or blocks of rows and every output element is written by one task, with no reduction whose
order depends on the split."""
import pytest
import torch

import depthmetric as dm

pytestmark = pytest.mark.skipif(not dm.build_info()["compiled"], reason="extension not built")


def rand(*shape, seed, lo=0.0, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(*shape, generator=g)


def at_threads(n, fn):
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        return fn()
    finally:
        torch.set_num_threads(before)


def loss_and_grads(loss, leaves, weights=None):
    """loss's output and its gradients (weighted by ``weights`` for a map: a sum in torch would bring in the
    thread dependence of torch's own reduction order)."""
    leaves = [t.detach().clone().requires_grad_(True) for t in leaves]
    out = loss(*leaves)
    return [out.detach(), *torch.autograd.grad(out, leaves, grad_outputs=weights)]


# Sizes with several row blocks per plane (the backward tasks are 64-row blocks) and odd widths.
CASES = {
    "ssim_box3": lambda: loss_and_grads(
        lambda x, y: dm.ssim(x, y, "box3", backend="cpu"),
        [rand(2, 3, 150, 77, seed=1), rand(2, 3, 150, 77, seed=2)], rand(2, 3, 150, 77, seed=3)),
    "ssim_gauss11": lambda: loss_and_grads(
        lambda x, y: dm.ssim(x, y, "gauss11", backend="cpu"),
        [rand(2, 3, 150, 77, seed=1), rand(2, 3, 150, 77, seed=2)], rand(2, 3, 150, 77, seed=3)),
    "min_reprojection": lambda: loss_and_grads(
        lambda a, b: dm.min_reprojection_loss(rand(2, 3, 140, 61, seed=4), [a, b],
                                              [rand(2, 3, 140, 61, seed=5), rand(2, 3, 140, 61, seed=6)],
                                              generator=torch.Generator().manual_seed(0), backend="cpu"),
        [rand(2, 3, 140, 61, seed=7), rand(2, 3, 140, 61, seed=8)]),
    "multi_range_contrastive": lambda: loss_and_grads(
        lambda f: dm.multi_range_contrastive_loss(
            f, rand(2, 1, 40, 52, seed=10, lo=1.0, hi=3.0),
            shifts=dm.sample_shifts(2, 40, 52, 10, 4, torch.Generator().manual_seed(0)), backend="cpu",
            **dm.PRESETS["nyu-lt"]),
        [torch.randn(2, 16, 40, 52, generator=torch.Generator().manual_seed(9))]),
    "metrics": lambda: [v for k, v in sorted(dm.metrics.compute(
        rand(3, 1, 120, 161, seed=11, lo=0.5, hi=10.0), rand(3, 1, 120, 161, seed=12, lo=0.5, hi=10.0),
        dataset="nyu", crop=None, backend="cpu")["per_image"].items())],
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_bitwise_identical_across_thread_counts(op):
    one = at_threads(1, CASES[op])
    for threads in (2, 3):
        other = at_threads(threads, CASES[op])
        assert all(torch.equal(a, b) for a, b in zip(one, other)), f"{op} differs at {threads} threads"
