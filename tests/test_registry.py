"""The op registry covers the package, and every op with a kernel agrees with its twin.

A public op (``depthmetric.__all__``, ``depthmetric.metrics.__all__``) or a compiled op
(``torch.ops.depthmetric.*``) without a registry entry fails here, so a forgotten op is a red test; so does a
kernel without a twin in ``depthmetric.reference``, a CPU block size outside its op's blocks header, and a
test file importing another."""
import inspect
import re

import pytest
import torch

import depthmetric as dm
from depthmetric import _checks

from .registry import (BLOCK_CONSTANT, COMPILED, DEVICES, HELPERS, KERNEL_OPS, OPS, ROOT, backend_of, block_sizes,
                       public_callables, rand, twin)

IDS = dict(ids=lambda v: getattr(v, "name", str(v)))


def covered(ops=OPS) -> set:
    return {op.fn for op in ops} | {op.module for op in ops if op.module} | {fn for fn, _, _ in HELPERS.values()}


@pytest.mark.parametrize("name", sorted(public_callables()))
def test_every_public_callable_has_a_registry_entry(name):
    assert public_callables()[name] in covered(), f"{name} is public but has no entry in tests/registry.py"


@pytest.mark.skipif(not COMPILED, reason="extension not built")
def test_every_compiled_op_has_a_registry_entry():
    missing = set(dm.build_info()["ops"]) - {op.kernel for op in KERNEL_OPS}
    assert not missing, f"compiled ops without a registry entry: {sorted(missing)}"


@pytest.mark.parametrize("kernel", sorted({op.kernel for op in KERNEL_OPS}))
def test_every_kernel_has_its_twin(kernel):
    assert callable(getattr(twin(kernel), kernel)), f"depthmetric.reference.{kernel} has no {kernel}()"


def test_the_coverage_check_fails_without_an_entry():
    """The check above is not vacuous: dropping one entry leaves its op and its module uncovered."""
    without = covered([op for op in OPS if op.name != "silog_loss"])
    assert dm.silog_loss not in without and dm.SILogLoss not in without


def test_no_test_file_imports_another():
    for path in (ROOT / "tests").glob("test_*.py"):
        assert not re.search(r"^from \.test_|^from tests\.test_|^import tests\.test_", path.read_text(), re.M), path


@pytest.mark.parametrize("kernel", sorted({op.kernel for op in KERNEL_OPS}))
def test_cpu_block_sizes_live_in_the_blocks_header(kernel):
    """Every block size a CPU kernel uses is a named constant of ``csrc/<op>/cpu/<op>_blocks.h``, which the
    kernel tests read to cross every block boundary."""
    header = f"{kernel}_blocks.h"
    for path in (ROOT / "csrc" / kernel / "cpu").glob("*"):
        if path.name != header:
            assert not BLOCK_CONSTANT.search(path.read_text()), f"{path.name} defines a block size outside {header}"


# ---------------------------------------------------------------------------------------------------------
# Every kernel against its twin, at a size that crosses every CPU block boundary.

def output_and_grads(op, args, kwargs, backend, weights=None):
    out = op.call(args, kwargs, backend)
    leaves = op.leaves(args)
    if not leaves:
        return out, []
    weights = rand(*out.shape, seed=5, dtype=out.dtype).to(out.device) if weights is None else weights
    return out.detach(), list(torch.autograd.grad(out, leaves, grad_outputs=weights))


def assert_close_relative(got, want, tol, what):
    """Within ``tol`` relative to the largest magnitude of ``want`` (so a zero or scaled result fails)."""
    scale = float(want.abs().max()) if want.numel() else 0.0
    torch.testing.assert_close(got.cpu().to(want.dtype), want, rtol=tol, atol=tol * max(scale, 1e-30), msg=what)


@pytest.mark.skipif(not COMPILED, reason="extension not built")
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("op", KERNEL_OPS, **IDS)
def test_kernel_matches_twin_across_block_boundaries(op, dtype, device):
    shape = op.block_shape()
    args, kwargs = op.make(*shape, dtype=dtype, grad=True)
    want, want_grads = output_and_grads(op, args, kwargs, "reference")
    args, kwargs = op.make(*shape, dtype=dtype, grad=True, device=device)
    got, grads = output_and_grads(op, args, kwargs, backend_of(device))
    tol = op.tol[dtype]
    assert_close_relative(got, want, tol, lambda m: f"{op.name} output: {m}")
    for g, w in zip(grads, want_grads):
        assert_close_relative(g, w, 10 * tol, lambda m: f"{op.name} gradient: {m}")  # divisions amplify rounding


def test_block_shapes_cross_every_block():
    for op in KERNEL_OPS:
        _, C, H, W = op.block_shape()
        for name, size in block_sizes(op.kernel).items():
            assert all(n > size and n % size for n in (H, W)), (op.name, name, size, H, W)
        assert C % 4, "6 channels: more than one block of 4"


def test_registry_calls_name_real_parameters():
    for op in OPS:
        params = inspect.signature(op.fn).parameters
        _, kwargs = op.make(2, 3, 12, 12)
        assert set(kwargs) <= set(params), op.name
        assert set(op.finite) | set(op.unchecked) <= set(params), op.name


# A loss reduces three ways, with a module beside its function. The exceptions, and why:
ONLY_MEAN = {"segmentation_distillation_loss": "the weighted sum of two means over different sets (the Dice "
                                               "loss's classes, the focal loss's pixels)"}
LOSSES = [op for op in OPS if op.fn.__name__.endswith("_loss") or op.fn is dm.edge_aware_smoothness]


@pytest.mark.parametrize("op", LOSSES, **IDS)
def test_every_loss_has_a_module_and_reduces_every_way(op):
    """``reduction`` takes "mean", "sum" and "none" on the function and the module, and "sum" is the sum of
    what "none" returns (per pixel, image or class); "mean" is a scalar (each loss says over what)."""
    module = next((o.module for o in OPS if o.fn is op.fn and o.module is not None), None)  # on any entry of it
    assert module is not None, f"{op.name} has no module"
    if op.fn.__name__ in ONLY_MEAN:
        assert "reduction" not in inspect.signature(op.fn).parameters
        return
    for callable_ in (op.fn, module):
        parameter = inspect.signature(callable_).parameters.get("reduction")
        assert parameter is not None and parameter.default in _checks.REDUCTIONS, callable_
    args, kwargs = op.make(2, 3, 9, 11)
    kwargs = {k: v for k, v in kwargs.items() if k != "reduction"}
    if op.takes_backend:
        kwargs["backend"] = "reference"
    if kwargs.get("pool") == "batch":  # one mean over the batch's pixels: nothing per image to sum or return
        for reduction in ("sum", "none"):
            with pytest.raises(ValueError, match="needs reduction='mean'"):
                op.fn(*args, **kwargs, reduction=reduction)
        return
    out = {reduction: op.fn(*args, **kwargs, reduction=reduction) for reduction in _checks.REDUCTIONS}
    assert out["mean"].dim() == 0 and out["sum"].dim() == 0 and out["none"].dim() >= 1, op.name
    torch.testing.assert_close(out["sum"], out["none"].sum(), rtol=1e-12, atol=0, msg=op.name)
    assert out["none"].abs().sum() > 0, f"{op.name}: nothing to compare"
    with pytest.raises(ValueError, match="reduction must be one of"):
        op.fn(*args, **kwargs, reduction="max")


# One argument order: a prediction and its target come first as ``pred, target, mask`` (ZoeDepth's and BTS's
# losses, Monodepth2's ``compute_reprojection_loss(pred, target)``), in every function and in its module's
# ``forward``. The ops whose inputs are not a depth prediction and its target name their own first
# parameters here, each with the reason:
FIRST_PARAMETERS = {
    "min_reprojection_loss": (("warped", "target", "sources"), "photometric: the warped source frames are the "
                              "prediction of the target frame, the unwarped sources feed the auto-mask"),
    "ssim": (("x", "y"), "image against image, symmetric in the two"),
    "ssim_loss": (("x", "y"), "image against image, symmetric in the two"),
    "photometric_error": (("x", "y"), "image against image, symmetric in the two (ssim's names)"),
    "multi_range_contrastive_loss": (("features", "depth", "mask"), "features regularised under the ground "
                                     "truth depth: there is no depth prediction"),
    "edge_aware_smoothness": (("disp", "image"), "a regulariser of the disparity; the image only weights it"),
    "dice_loss": (("logits", "labels"), "segmentation: class scores against integer labels"),
    "focal_loss": (("logits", "labels"), "segmentation: class scores against integer labels"),
    "segmentation_distillation_loss": (("logits", "labels"), "segmentation: class scores against integer "
                                       "labels"),
    "bin_expectation": (("logits", "centers"), "a bin head, not a loss: the network's outputs, no target"),
    "log_binomial_expectation": (("p", "t", "centers"), "a bin head, not a loss: ZoeDepth's LogBinomial "
                                 "inputs, no target"),
    "attractor_shift": (("centers", "attractors"), "a bin-centre update, not a loss: no target"),
    "compute": (("pred", "gt"), "evaluation metrics: ground truth named as the evaluation code (Monodepth2, "
                "BTS, ZoeDepth compute_errors) names it; mask is keyword-only, after the evaluation options"),
    "boundary_f1": (("pred", "gt"), "Depth Pro's evaluation metric: its names; mask after the thresholds"),
    "boundary_recall": (("pred", "gt_mask"), "Depth Pro's evaluation metric against a foreground mask"),
}
PRED_TARGET_MASK = ("pred", "target", "mask")


def _leading(fn, n: int) -> tuple[str, ...]:
    return tuple(p for p in inspect.signature(fn).parameters if p != "self")[:n]


def _ordered() -> list:
    """Every op with a module, and every op that takes a prediction: one entry per function, the one with a
    module when any has (a later variant without one must not hide the module's ``forward``, e.g.
    ``hdn_loss image labels`` after ``hdn_loss``/``HDNLoss``)."""
    chosen: dict = {}
    for op in OPS:
        if op.module is None and _leading(op.fn, 1) != ("pred",):
            continue
        name = op.fn.__name__
        if name not in chosen or (chosen[name].module is None and op.module is not None):
            chosen[name] = op
    return list(chosen.values())


ORDERED = _ordered()


@pytest.mark.parametrize("op", ORDERED, **IDS)
def test_inputs_come_first_in_one_order(op):
    expected, _ = FIRST_PARAMETERS.get(op.fn.__name__, (PRED_TARGET_MASK, ""))
    assert _leading(op.fn, len(expected)) == expected, f"{op.fn.__name__} should start with {expected}"
    if op.module is not None:
        forward = _leading(op.module.forward, len(expected))
        assert forward == expected[:len(forward)], f"{op.module.__name__}.forward should start with {expected}"


def test_the_order_check_reads_every_module_forward():
    """Each registered module's ``forward`` is among the checked ones (hdn_loss/HDNLoss: ``pred, target, mask``)."""
    modules = {op.module for op in OPS if op.module is not None}
    assert modules == {op.module for op in ORDERED if op.module is not None}
    assert dm.HDNLoss in modules and "hdn_loss" not in FIRST_PARAMETERS


def test_every_exception_to_the_order_is_an_op_and_says_why():
    names = {op.fn.__name__ for op in ORDERED}
    for name, (params, reason) in FIRST_PARAMETERS.items():
        assert name in names and params != PRED_TARGET_MASK and len(reason) > 20, name
