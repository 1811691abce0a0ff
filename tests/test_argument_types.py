"""Arguments of the wrong Python type get a TypeError (a wrong value a ValueError) that names them, never an
error from deep inside ("'float' object is not iterable")."""
import pytest
import torch

import depthmetric as dm

F, D = torch.randn(2, 4, 5, 6), torch.rand(2, 1, 5, 6) + 1
IMAGE = torch.rand(1, 3, 8, 8)

CASES = [  # (call, error, the argument the message must name)
    (lambda: dm.MultiRangeContrastiveLoss(margins=3.0), TypeError, "margins"),
    (lambda: dm.MultiRangeContrastiveLoss(margins=["3"] * 3), TypeError, "margins"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=[0.5, 1.0], margins=[3.0]), TypeError, r"ranges\[0\]"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=[(0.5, 1.0, 2.0)], margins=[3.0]), ValueError, r"ranges\[0\]"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=0.5, margins=[3.0]), TypeError, "ranges"),
    (lambda: dm.multi_range_contrastive_loss(F, D, generator=0), TypeError, "generator"),
    (lambda: dm.sample_shifts(2, 5, 6, n_within=-1), ValueError, "n_within"),
    (lambda: dm.sample_shifts(2, 5, 6, n_across=1.5), TypeError, "n_across"),
    (lambda: dm.sample_shifts(2.0, 5, 6), TypeError, "batch"),
    (lambda: dm.sample_shifts(2, 5, 6, generator=0), TypeError, "generator"),
    (lambda: dm.min_reprojection_loss(IMAGE, [IMAGE], [IMAGE], generator=0), TypeError, "generator"),
    (lambda: dm.metrics.boundary_f1(D, D, thresholds=5), TypeError, "thresholds"),
    (lambda: dm.metrics.boundary_f1(D, D, thresholds=["5"]), TypeError, "thresholds"),
    (lambda: dm.metrics.DepthMetrics(median_scaling="no"), TypeError, "median_scaling"),
    (lambda: dm.metrics.DepthMetrics(sync=1), TypeError, "sync"),
]


@pytest.mark.parametrize("call,error,name", CASES, ids=[c[2] + str(i) for i, c in enumerate(CASES)])
def test_wrong_argument_is_named(call, error, name):
    with pytest.raises(error, match=name):
        call()
