"""Every public op with a zero-size batch, channel or spatial dimension, on the kernel and the reference
backend: an empty batch or image gives the documented empty map or zero loss with a zero gradient, both
backends alike; what cannot be computed (no channels, an image smaller than the op's window) is a
ValueError naming the argument."""
import pytest
import torch

import depthmetric as dm

BACKENDS = ["reference"] + (["cpu"] if dm.build_info()["compiled"] else [])
K = torch.tensor([[5.0, 0, 3], [0, 5.0, 3], [0, 0, 1]])
T = torch.eye(4)


def image(B, C, H, W, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(B, C, H, W, generator=g, dtype=torch.float64).requires_grad_()


def depth(B, H, W, seed=1):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(B, 1, H, W, generator=g, dtype=torch.float64) + 1).requires_grad_()


# name: (call(B, C, H, W, backend) -> (output, leaves), argument named by a no-channel error or None when the
# op has no channels, argument named by a too-small-image error or None when an empty image is computed)
OPS = {
    "ssim": (lambda B, C, H, W, b: (lambda x, y: (dm.ssim(x, y, backend=b), [x, y]))(
        image(B, C, H, W), image(B, C, H, W, 1)), "x", "x"),
    "ssim mean": (lambda B, C, H, W, b: (lambda x, y: (dm.ssim(x, y, reduction="mean", backend=b), [x, y]))(
        image(B, C, H, W), image(B, C, H, W, 1)), "x", "x"),
    "ssim gauss11": (lambda B, C, H, W, b: (lambda x, y: (dm.ssim(x, y, window="gauss11", backend=b), [x, y]))(
        image(B, C, H, W), image(B, C, H, W, 1)), "x", "x"),
    "photometric_error": (lambda B, C, H, W, b: (lambda x, y: (dm.photometric_error(x, y, backend=b), [x]))(
        image(B, C, H, W), image(B, C, H, W, 1)), "a", "a"),
    "min_reprojection_loss": (lambda B, C, H, W, b: (lambda t, w, s: (
        dm.min_reprojection_loss(t, [w], [s], backend=b), [w]))(
        image(B, C, H, W), image(B, C, H, W, 1), image(B, C, H, W, 2)), "target", "target"),
    "multi_range_contrastive_loss": (lambda B, C, H, W, b: (lambda f: (
        dm.multi_range_contrastive_loss(f, depth(B, H, W) * 3, backend=b), [f]))(image(B, C, H, W)),
        "features", None),
    "silog_loss": (lambda B, C, H, W, b: (lambda p: (dm.silog_loss(p, depth(B, H, W, 2), backend=b), [p]))(
        depth(B, H, W)), None, None),
    "trimmed_mae_loss": (lambda B, C, H, W, b: (lambda p: (dm.trimmed_mae_loss(p, depth(B, H, W, 2), backend=b),
                                                           [p]))(depth(B, H, W)), None, None),
    "multi_scale_derivative_loss": (lambda B, C, H, W, b: (lambda p: (
        dm.multi_scale_derivative_loss(p, depth(B, H, W, 2), backend=b), [p]))(depth(B, H, W)), None, None),
    "scale_shift_invariant_loss": (lambda B, C, H, W, b: (lambda p: (
        dm.scale_shift_invariant_loss(p, depth(B, H, W, 2), backend=b), [p]))(depth(B, H, W)), None, None),
    "edge_aware_smoothness": (lambda B, C, H, W, b: (lambda d, i: (dm.edge_aware_smoothness(d, i), [d, i]))(
        depth(B, H, W), image(B, C, H, W)), "image", "disp"),
    "backproject": (lambda B, C, H, W, b: (lambda d: (dm.backproject(d, K), [d]))(depth(B, H, W)), None, None),
    "project": (lambda B, C, H, W, b: (lambda d: (dm.project(dm.backproject(d, K), K, T, H, W), [d]))(
        depth(B, H, W)), None, "height"),
    "warp": (lambda B, C, H, W, b: (lambda i, d: (dm.warp(i, d, T, K), [i, d]))(image(B, C, H, W), depth(B, H, W)),
             "image", "image"),
    "metrics.compute": (lambda B, C, H, W, b: (dm.metrics.compute(depth(B, H, W).detach(), depth(B, H, W, 2).detach(),
                                                                  backend=b)["AbsRel"], []), None, None),
    "boundary_f1": (lambda B, C, H, W, b: (dm.metrics.boundary_f1(depth(B, H, W).detach(), depth(B, H, W, 2).detach()),
                                           []), None, None),
    "boundary_recall": (lambda B, C, H, W, b: (dm.metrics.boundary_recall(
        depth(B, H, W).detach(), depth(B, H, W, 2).detach() > 1.5), []), None, None),
}
DIMS = {"B=0": (0, 3, 16, 16), "C=0": (2, 0, 16, 16), "H=0": (2, 3, 0, 16), "W=0": (2, 3, 16, 0)}


def expected_error(name, dims):
    _, no_channels, too_small = OPS[name]
    if dims == "C=0":
        return no_channels
    if dims in ("H=0", "W=0"):
        return too_small
    return None


@pytest.mark.parametrize("dims", DIMS)
@pytest.mark.parametrize("name", OPS)
def test_zero_size(name, dims):
    if dims == "C=0" and OPS[name][1] is None:
        pytest.skip("the op has no channel dimension")
    argument = expected_error(name, dims)
    outputs = []
    for backend in BACKENDS:
        if argument is not None:
            with pytest.raises(ValueError, match=argument):
                OPS[name][0](*DIMS[dims], backend)
            continue
        out, leaves = OPS[name][0](*DIMS[dims], backend)
        assert torch.equal(out, torch.zeros_like(out)), f"{backend}: {out}"  # an empty map, or 0 per image
        if leaves:
            grads = torch.autograd.grad(out.sum(), leaves, allow_unused=True)
            for leaf, grad in zip(leaves, grads):
                grad = torch.zeros_like(leaf) if grad is None else grad
                assert grad.shape == leaf.shape and torch.equal(grad, torch.zeros_like(leaf))
        outputs.append(out.detach())
    for other in outputs[1:]:
        assert torch.equal(outputs[0], other)
