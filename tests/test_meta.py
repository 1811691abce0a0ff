"""Every public op on meta tensors (shape inference, as torch.compile's fake tensors and model summaries do
it): the value checks are skipped where there are no values, the compiled ops answer through their fake
kernels, the reference twins run on meta as PyTorch does, and the output has the documented shape."""
import pytest
import torch

import depthmetric as dm

from .registry import OPS


@pytest.mark.parametrize("op,backend", [(op, b) for op in OPS for b in op.backends(kernel_backend="auto")],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_op_infers_its_shape_on_meta(op, backend):
    B, C, H, W = 2, 3, 16, 16
    args, kwargs = op.make(B, C, H, W, fixed=False, device="meta")
    out = op.call(args, kwargs, backend)
    assert out.device.type == "meta" and tuple(out.shape) == op.out_shape(B, C, H, W)


def test_meta_shifts_run_the_compiled_op_and_name_the_problem_for_the_twin():
    features, depth = torch.empty(2, 4, 8, 8, device="meta"), torch.empty(2, 1, 8, 8, device="meta")
    shifts = torch.tensor([[0, 1, 2], [1, 0, 0]]).to("meta")
    if dm.build_info()["compiled"]:
        out = dm.multi_range_contrastive_loss(features, depth, shifts=shifts)
        assert out.device.type == "meta" and out.shape == ()
    with pytest.raises(ValueError, match="shifts on the meta device"):
        dm.multi_range_contrastive_loss(features, depth, shifts=shifts, backend="reference")
