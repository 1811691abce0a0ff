"""Tensor arguments that are wrong as a whole, for every op of the registry on every backend: one argument
on another device than the op's first input (a meta tensor among CPU ones, as a shape-inference helper left
behind) is a ValueError naming it and its device, never "Cannot copy out of meta tensor" from deep inside;
a disparity whose mean over an image is not above zero (the op normalises by it) is a ValueError naming it."""
import pytest
import torch

from .registry import OPS


def tensors(op, args, kwargs):
    """(name, where) of every tensor argument but the first: a position, or a keyword."""
    out = [(name, i) for i, (name, a) in enumerate(zip(op.param_names, args))
           if i > 0 and (isinstance(a, torch.Tensor) or (isinstance(a, list) and a))]
    return out + [(name, name) for name, a in kwargs.items() if isinstance(a, torch.Tensor)]


def on_meta(value):
    return [v.to("meta") for v in value] if isinstance(value, list) else value.to("meta")


CASES = [pytest.param(op, name, where, backend, id=f"{op.name}-{name}-{backend}")
         for op in OPS for name, where in tensors(op, *op.make(2, 3, 12, 12, fixed=True))
         for backend in op.backends()]


@pytest.mark.parametrize("op,argument,where,backend", CASES)
def test_an_argument_on_another_device_is_named(op, argument, where, backend):
    args, kwargs = op.make(2, 3, 12, 12, fixed=True)
    if isinstance(where, str):
        kwargs[where] = on_meta(kwargs[where])
    else:
        args[where] = on_meta(args[where])
    with pytest.raises(ValueError, match=rf"{argument}(\[\d+\])? is on meta"):
        op.call(args, kwargs, backend)


@pytest.mark.parametrize("mean", [-1e-7, 0.0, -0.5])  # -1e-7: mean + the op's 1e-7 == 0 would give NaN
@pytest.mark.parametrize("op,argument", [(op, name) for op in OPS for name in op.positive],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_a_disparity_mean_not_above_zero_is_named(op, argument, mean):
    args, kwargs = op.make(2, 3, 6, 7, fixed=True)
    position = op.param_names.index(argument)
    args[position] = args[position].clone()
    args[position][1] = mean
    with pytest.raises(ValueError, match=rf"{argument} must have a positive mean per image, got {mean:.6g} for image 1"):
        op.call(args, kwargs)
