"""Every argument of every public op, class and helper, given a value of the wrong type or out of its domain,
gets a TypeError or ValueError whose message names it: the table lists valid calls, and the wrong values are
derived from each parameter's default (a string for a flag or a number, a number for a string, a bare
number for a sequence, a string for an optional object). Nothing is accepted silently, nothing fails deep
inside."""
import inspect
import math

import pytest
import torch

import depthmetric as dm

IMG, IMG2 = torch.rand(2, 3, 12, 12), torch.rand(2, 3, 12, 12)
DEPTH, PRED = torch.rand(2, 1, 12, 12) + 1, torch.rand(2, 1, 12, 12) + 1
FEATURES = torch.randn(2, 4, 12, 12)
K, T = torch.tensor([[5.0, 0, 3], [0, 5.0, 3], [0, 0, 1]]), torch.eye(4)

# name: (callable, positional arguments of a valid call, keyword arguments of a valid call)
CALLS = {
    "ssim": (dm.ssim, (IMG, IMG2), {}),
    "photometric_error": (dm.photometric_error, (IMG, IMG2), {}),
    "min_reprojection_loss": (dm.min_reprojection_loss, (IMG, [IMG2], [IMG2]), {}),
    "ReprojectionLoss": (dm.ReprojectionLoss, (), {}),
    "draw_identity_noise": (dm.draw_identity_noise, (2, IMG), {}),
    "multi_range_contrastive_loss": (dm.multi_range_contrastive_loss, (FEATURES, DEPTH), {}),
    "MultiRangeContrastiveLoss": (dm.MultiRangeContrastiveLoss, (), {}),
    "sample_shifts": (dm.sample_shifts, (2, 12, 12), {}),
    "silog_loss": (dm.silog_loss, (PRED, DEPTH), {}),
    "SILogLoss": (dm.SILogLoss, (), {}),
    "trimmed_mae_loss": (dm.trimmed_mae_loss, (PRED, DEPTH), {}),
    "TrimmedMAELoss": (dm.TrimmedMAELoss, (), {}),
    "multi_scale_derivative_loss": (dm.multi_scale_derivative_loss, (PRED, DEPTH), {}),
    "MultiScaleDerivativeLoss": (dm.MultiScaleDerivativeLoss, (), {}),
    "scale_shift_invariant_loss": (dm.scale_shift_invariant_loss, (PRED, DEPTH), {}),
    "ScaleShiftInvariantLoss": (dm.ScaleShiftInvariantLoss, (), {}),
    "edge_aware_smoothness": (dm.edge_aware_smoothness, (DEPTH, IMG), {}),
    "backproject": (dm.backproject, (DEPTH, torch.linalg.inv(K)), {}),
    "project": (dm.project, (dm.backproject(DEPTH, torch.linalg.inv(K)), K, T), {"height": 12, "width": 12}),
    "warp": (dm.warp, (IMG, DEPTH, T, K), {}),
    "metrics.compute": (dm.metrics.compute, (PRED, DEPTH), {}),
    "metrics.DepthMetrics": (dm.metrics.DepthMetrics, (), {}),
    "metrics.crop_window": (dm.metrics.crop_window, ("eigen", 480, 640), {}),
    "metrics.boundary_f1": (dm.metrics.boundary_f1, (PRED, DEPTH), {}),
    "metrics.boundary_recall": (dm.metrics.boundary_recall, (PRED, DEPTH > 1.5), {}),
    "set_finite_checks": (dm.set_finite_checks, (True,), {}),
}
# Arguments whose default does not say their type, with wrong values of their own.
WRONG = {
    "process_group": ["group"],
    "inv_K": ["K"],
    "height": ["12", 1.5], "width": ["12", 1.5],
    "min_depth": ["1", math.nan], "max_depth": ["10", -1.0],
    "variance_focus": ["0.85", 2.0],
    "mask": [[True]], "noise": [[0.0]], "shifts": [[[0, 1, 1]]], "sources": [3],
    "ids": [3.5],
}
SKIP = {"backend"}  # checked by every op through one helper, tested in test_package / test_ops


def wrong_values(param: inspect.Parameter):
    if param.name in WRONG:
        return WRONG[param.name]
    d = param.default
    if isinstance(d, bool):
        return ["no", 1]
    if isinstance(d, int):
        return ["3", 2.5, -1]
    if isinstance(d, float):
        return ["0.5", math.nan, -math.inf]
    if isinstance(d, str):
        return [3, "no-such-option"]
    if isinstance(d, (tuple, list, range)):
        return [3.0, ["x"]]
    if d is None:
        return ["x"]
    raise AssertionError(f"no wrong values for {param.name}={d!r}")


def cases():
    for name, (fn, args, kwargs) in CALLS.items():
        params = list(inspect.signature(fn).parameters.values())
        for k, param in enumerate(params):
            if param.default is inspect.Parameter.empty or param.name in SKIP or param.name in kwargs:
                if param.name not in kwargs:
                    continue
            if k < len(args):
                continue
            for value in wrong_values(param):
                yield pytest.param(name, param.name, value, id=f"{name}-{param.name}={value!r}")


def test_every_valid_call_runs():
    for name, (fn, args, kwargs) in CALLS.items():
        fn(*args, **kwargs)


@pytest.mark.parametrize("name,argument,value", list(cases()))
def test_wrong_argument_is_named(name, argument, value):
    fn, args, kwargs = CALLS[name]
    with pytest.raises((TypeError, ValueError), match=argument):
        fn(*args, **{**kwargs, argument: value})


def tensor_cases():
    for name, (fn, args, kwargs) in CALLS.items():
        params = list(inspect.signature(fn).parameters.values())
        for k, arg in enumerate(args):
            if isinstance(arg, torch.Tensor):
                for value in ([[1.0]], arg.long()):  # a list, an integer tensor
                    kind = "list" if isinstance(value, list) else str(value.dtype)
                    yield pytest.param(name, k, params[k].name, value, id=f"{name}-{params[k].name}-{kind}")


@pytest.mark.parametrize("name,position,argument,value", list(tensor_cases()))
def test_wrong_tensor_argument_is_named(name, position, argument, value):
    fn, args, kwargs = CALLS[name]
    args = list(args)
    args[position] = value
    with pytest.raises((TypeError, ValueError), match=argument):
        fn(*args, **kwargs)


# The examples users tripped over (issue 15), kept as written.
EXAMPLES = [  # (call, error, the argument the message must name)
    (lambda: dm.MultiRangeContrastiveLoss(margins=3.0), TypeError, "margins"),
    (lambda: dm.MultiRangeContrastiveLoss(margins=["3"] * 3), TypeError, "margins"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=[0.5, 1.0], margins=[3.0]), TypeError, r"ranges\[0\]"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=[(0.5, 1.0, 2.0)], margins=[3.0]), ValueError, r"ranges\[0\]"),
    (lambda: dm.MultiRangeContrastiveLoss(ranges=0.5, margins=[3.0]), TypeError, "ranges"),
    (lambda: dm.multi_range_contrastive_loss(FEATURES, DEPTH, generator=0), TypeError, "generator"),
    (lambda: dm.sample_shifts(2, 5, 6, n_within=-1), ValueError, "n_within"),
    (lambda: dm.sample_shifts(2, 5, 6, n_across=1.5), TypeError, "n_across"),
    (lambda: dm.sample_shifts(2.0, 5, 6), TypeError, "batch"),
    (lambda: dm.sample_shifts(2, 5, 6, generator=0), TypeError, "generator"),
    (lambda: dm.min_reprojection_loss(IMG, [IMG], [IMG], generator=0), TypeError, "generator"),
    (lambda: dm.metrics.boundary_f1(DEPTH, DEPTH, thresholds=5), TypeError, "thresholds"),
    (lambda: dm.metrics.boundary_f1(DEPTH, DEPTH, thresholds=["5"]), TypeError, "thresholds"),
    (lambda: dm.metrics.DepthMetrics(median_scaling="no"), TypeError, "median_scaling"),
    (lambda: dm.metrics.DepthMetrics(sync=1), TypeError, "sync"),
]


@pytest.mark.parametrize("call,error,name", EXAMPLES, ids=[c[2] + str(i) for i, c in enumerate(EXAMPLES)])
def test_examples_from_users(call, error, name):
    with pytest.raises(error, match=name):
        call()
