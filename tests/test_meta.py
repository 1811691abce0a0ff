"""Every public op on meta tensors (shape inference, as torch.compile's fake tensors and model summaries do
it): the value checks are skipped where there are no values, the compiled ops answer through their fake
kernels, the reference twins run on meta as PyTorch does, and the output has the documented shape."""
import pytest
import torch

import depthmetric as dm

BACKENDS = ["reference"] + (["auto"] if dm.build_info()["compiled"] else [])


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


K, T = torch.eye(3, device="meta").expand(2, 3, 3), torch.eye(4, device="meta").expand(2, 4, 4)
SHIFTS = torch.tensor([[0, 1, 2], [1, 0, 0]]).to("meta")
OPS = {  # name: (call(backend), output shape)
    "ssim": (lambda b: dm.ssim(meta(2, 3, 8, 8), meta(2, 3, 8, 8), backend=b), (2, 3, 8, 8)),
    "ssim gauss11 valid": (lambda b: dm.ssim(meta(2, 3, 16, 16), meta(2, 3, 16, 16), window="gauss11",
                                            padding="valid", backend=b), (2, 3, 6, 6)),
    "photometric_error": (lambda b: dm.photometric_error(meta(2, 3, 8, 8), meta(2, 3, 8, 8), backend=b),
                          (2, 1, 8, 8)),
    "min_reprojection_loss": (lambda b: dm.min_reprojection_loss(meta(2, 3, 8, 8), [meta(2, 3, 8, 8)],
                                                                 [meta(2, 3, 8, 8)], backend=b), ()),
    "multi_range_contrastive_loss": (lambda b: dm.multi_range_contrastive_loss(meta(2, 4, 8, 8), meta(2, 1, 8, 8),
                                                                               backend=b), ()),
    "multi_range_contrastive_loss none": (lambda b: dm.multi_range_contrastive_loss(
        meta(2, 4, 8, 8), meta(2, 1, 8, 8), reduction="none", backend=b), (2, 1, 8, 8)),
    "silog_loss": (lambda b: dm.silog_loss(meta(2, 1, 8, 8), meta(2, 1, 8, 8), backend=b), ()),
    "trimmed_mae_loss": (lambda b: dm.trimmed_mae_loss(meta(2, 1, 8, 8), meta(2, 1, 8, 8), backend=b), ()),
    "multi_scale_derivative_loss": (lambda b: dm.multi_scale_derivative_loss(meta(2, 1, 16, 16), meta(2, 1, 16, 16),
                                                                             reduction="none", backend=b), (2,)),
    "scale_shift_invariant_loss": (lambda b: dm.scale_shift_invariant_loss(meta(2, 1, 8, 8), meta(2, 1, 8, 8),
                                                                           backend=b), ()),
    "edge_aware_smoothness": (lambda b: dm.edge_aware_smoothness(meta(2, 1, 8, 8), meta(2, 3, 8, 8)), ()),
    "backproject": (lambda b: dm.backproject(meta(2, 1, 8, 8), K), (2, 4, 64)),
    "warp": (lambda b: dm.warp(meta(2, 3, 8, 8), meta(2, 1, 8, 8), T, K), (2, 3, 8, 8)),
    "metrics.compute": (lambda b: dm.metrics.compute(meta(2, 1, 8, 8), meta(2, 1, 8, 8), backend=b)["AbsRel"], ()),
    "DepthMetrics.update": (lambda b: dm.metrics.DepthMetrics(backend=b).update(meta(2, 1, 8, 8), meta(2, 1, 8, 8))
                            ["per_image"]["RMSE"], (2,)),
    "boundary_f1": (lambda b: dm.metrics.boundary_f1(meta(2, 1, 8, 8), meta(2, 1, 8, 8)), (2,)),
    "boundary_recall": (lambda b: dm.metrics.boundary_recall(meta(2, 1, 8, 8), meta(2, 1, 8, 8, dtype=torch.bool)),
                        (2,)),
    "project": (lambda b: dm.project(meta(2, 4, 64), K, T, 8, 8), (2, 8, 8, 2)),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", OPS)
def test_op_infers_its_shape_on_meta(name, backend):
    call, shape = OPS[name]
    out = call(backend)
    assert out.device.type == "meta" and tuple(out.shape) == shape


def test_meta_shifts_run_the_compiled_op_and_name_the_problem_for_the_twin():
    if dm.build_info()["compiled"]:
        out = dm.multi_range_contrastive_loss(meta(2, 4, 8, 8), meta(2, 1, 8, 8), shifts=SHIFTS)
        assert out.device.type == "meta" and out.shape == ()
    with pytest.raises(ValueError, match="shifts on the meta device"):
        dm.multi_range_contrastive_loss(meta(2, 4, 8, 8), meta(2, 1, 8, 8), shifts=SHIFTS, backend="reference")
