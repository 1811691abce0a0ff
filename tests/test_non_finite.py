"""NaN/Inf in network outputs and images raise a ValueError naming the argument, in every op of the registry
(its ``finite`` arguments) on every backend; the checks can be switched off."""
import math

import pytest
import torch

import depthmetric as dm

from .registry import OPS


def with_value(x, value):
    """``x`` (a tensor, or the first of a list) with one element replaced by ``value``."""
    if isinstance(x, list):
        return [with_value(x[0], value), *x[1:]]
    x = x.clone()
    x.view(-1)[3] = value
    return x


CASES = [pytest.param(op, name, value, backend, id=f"{op.name}-{name}={value}-{backend}")
         for op in OPS for name in op.finite for value in (math.nan, math.inf, -math.inf)
         for backend in op.backends()]


@pytest.mark.parametrize("op,argument,value,backend", CASES)
def test_non_finite_input_is_named(op, argument, value, backend):
    args, kwargs = op.make(2, 3, 12, 12, fixed=True)
    if argument in kwargs:
        kwargs[argument] = with_value(kwargs[argument], value)
    else:
        position = op.param_names.index(argument)
        args[position] = with_value(args[position], value)
    with pytest.raises(ValueError, match=rf"{argument}(\[0\])? contains NaN or Inf"):
        op.call(args, kwargs, backend)


@pytest.mark.parametrize("op", OPS, ids=lambda op: op.name)
def test_the_registry_names_every_floating_argument(op):
    """Every floating tensor argument of an op's valid call is either checked (``finite``) or said not to be
    (``unchecked``), so a new argument cannot slip past this test."""
    args, kwargs = op.make(2, 3, 12, 12, fixed=True)
    named = {**dict(zip(op.param_names, args)), **kwargs}
    first = {name: a[0] if isinstance(a, list) and a else a for name, a in named.items()}
    floats = {name for name, a in first.items() if isinstance(a, torch.Tensor) and a.is_floating_point()}
    assert floats == set(op.finite) | set(op.unchecked)


def test_finite_inputs_still_run_and_the_checks_can_be_switched_off():
    disp, image = torch.rand(2, 1, 6, 7) + 0.1, torch.rand(2, 3, 6, 7)
    assert torch.isfinite(dm.edge_aware_smoothness(disp, image))
    dm.set_finite_checks(False)
    try:
        assert torch.isnan(dm.edge_aware_smoothness(with_value(disp, math.nan), image))
    finally:
        dm.set_finite_checks(True)
