"""Every argument of every public op, class and helper, given a value of the wrong type or out of its domain,
gets a TypeError or ValueError whose message names it: the table lists valid calls, and the wrong values are
derived from each parameter's default (a string for a flag or a number, a number for a string, a bare
number for a sequence, a string for an optional object). Nothing is accepted silently, nothing fails deep
inside."""
import inspect

import pytest
import torch

import depthmetric as dm

from .registry import HELPERS, OPS, rand, wrong_values

SKIP = {"backend"}  # checked by every op through one helper (_checks.choice), tested in test_package


def _calls():
    """name: (callable, positional arguments of a valid call, keyword arguments of a valid call), for every
    op of the registry (its function and its module), every helper."""
    calls, seen = {}, set()
    for op in OPS:
        if op.fn in seen:  # one function, several registry rows (ssim's windows)
            continue
        seen.add(op.fn)
        args, kwargs = op.make(2, 3, 12, 12, dtype=torch.float32, fixed=False)
        calls[op.name] = (op.fn, tuple(args), kwargs)
        if op.module is not None:
            calls[op.module.__name__] = (op.module, (), {})
    return {**calls, **HELPERS}


CALLS = _calls()


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


# The examples users tripped over, kept as written.
IMG, FEATURES, DEPTH = rand(2, 3, 12, 12), rand(2, 4, 12, 12, low=-1), rand(2, 1, 12, 12, low=1, high=2)
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
    (lambda: dm.min_reprojection_loss([IMG], IMG, [IMG], generator=0), TypeError, "generator"),
    (lambda: dm.metrics.boundary_f1(DEPTH, DEPTH, thresholds=5), TypeError, "thresholds"),
    (lambda: dm.metrics.boundary_f1(DEPTH, DEPTH, thresholds=["5"]), TypeError, "thresholds"),
    (lambda: dm.metrics.DepthMetrics(median_scaling="no"), TypeError, "median_scaling"),
    (lambda: dm.metrics.DepthMetrics(sync=1), TypeError, "sync"),
]


@pytest.mark.parametrize("call,error,name", EXAMPLES, ids=[c[2] + str(i) for i, c in enumerate(EXAMPLES)])
def test_examples_from_users(call, error, name):
    with pytest.raises(error, match=name):
        call()
