"""NaN/Inf in network outputs and images raise a ValueError naming the argument in every op that reads them
outside the kernels too (the ops with kernels check theirs in tests/test_<op>.py)."""
import math

import pytest
import torch

import depthmetric as dm


def with_nan(x, value=math.nan):
    x = x.clone()
    x.view(-1)[3] = value
    return x


DISP, IMAGE = torch.rand(2, 1, 6, 7) + 0.1, torch.rand(2, 3, 6, 7)
DEPTH, K, T = torch.rand(2, 1, 6, 7) + 1, torch.tensor([[5.0, 0, 3], [0, 5.0, 3], [0, 0, 1]]), torch.eye(4)
TARGET = torch.rand(1, 3, 8, 8)
NOISE = 1e-5 * torch.rand(1, 1, 8, 8)

CASES = [  # (call, error, message)
    (lambda: dm.edge_aware_smoothness(with_nan(DISP), IMAGE), ValueError, "disp contains NaN or Inf"),
    (lambda: dm.edge_aware_smoothness(DISP, with_nan(IMAGE, math.inf)), ValueError, "image contains NaN or Inf"),
    (lambda: dm.warp(IMAGE, with_nan(DEPTH), T, K), ValueError, "depth contains NaN or Inf"),
    (lambda: dm.warp(with_nan(IMAGE, -math.inf), DEPTH, T, K), ValueError, "image contains NaN or Inf"),
    (lambda: dm.min_reprojection_loss(TARGET, [TARGET], [TARGET], noise=with_nan(NOISE), backend="reference"),
     ValueError, "noise contains NaN or Inf"),
    (lambda: dm.min_reprojection_loss(TARGET, [TARGET], [TARGET], noise=torch.zeros(1, 1, 8, 8, dtype=torch.long),
                                      backend="reference"), TypeError, "noise must be float"),
]


@pytest.mark.parametrize("call,error,message", CASES, ids=[c[2] for c in CASES])
def test_non_finite_input_is_named(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_finite_inputs_still_run_and_the_checks_can_be_switched_off():
    assert torch.isfinite(dm.edge_aware_smoothness(DISP, IMAGE))
    assert torch.isfinite(dm.warp(IMAGE, DEPTH, T, K)).all()
    dm.set_finite_checks(False)
    try:
        assert torch.isnan(dm.edge_aware_smoothness(with_nan(DISP), IMAGE))
    finally:
        dm.set_finite_checks(True)
