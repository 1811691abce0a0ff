"""The op registry: every public op of depthmetric described once, read by every property test.

An entry says how to make a valid call of the op on random inputs of a given size (B, C, H, W), dtype and seed
(zero sizes and meta tensors included), which compiled kernel it runs (``torch.ops.depthmetric.<kernel>``,
with its twin ``depthmetric.reference.<kernel>``), its ``nn.Module`` form, which of its inputs are
differentiable, the output shape, the argument its errors name, and its kernel-vs-twin tolerances. The
property tests (meta, zero sizes, autograd transforms, thread determinism, argument audit, non-finite input,
CUDA emulation, kernel vs twin) are parametrised over ``OPS``; ``tests/test_registry.py`` fails when a public
op or a registered kernel has no entry here.

Adding an op: one ``Op(...)`` in ``OPS`` (and, for a helper that is not an op, one line in ``HELPERS``).
The other test helpers shared between test files live here too (input makers of the ops' own tests), so no
test file imports another.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import math
import pathlib
import re
from typing import Any, Callable

import pytest
import torch

import depthmetric as dm

ROOT = pathlib.Path(__file__).resolve().parents[1]
CUDA = torch.cuda.is_available()
# CUDA variants are collected everywhere and skipped without a GPU (conftest.py), so a run says what it did not check.
DEVICES = ["cpu", "cuda"]
COMPILED = dm.build_info()["compiled"]
needs_ext = pytest.mark.skipif(not COMPILED, reason="extension not built")


def backend_of(device: str) -> str:
    """The kernel backend that runs on ``device``."""
    return "cuda" if device == "cuda" else "cpu"


# ---------------------------------------------------------------------------------------------------------
# Inputs. Every maker draws in float64 on the CPU from its own generator, so a size, dtype and seed always
# give the same values on every backend and device.

def rand(*shape, seed=0, low=0.0, high=1.0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) * (high - low) + low).to(dtype)


def randn(*shape, seed=0, dtype=torch.float64):
    return torch.randn(shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def intrinsics(H, W, dtype=torch.float64):
    """A pinhole camera for an H x W image (focal 5 pixels, centre in the middle), as K and its inverse."""
    K = torch.tensor([[5.0, 0, W / 2], [0, 5.0, H / 2], [0, 0, 1]], dtype=torch.float64)
    return K.to(dtype), torch.linalg.inv(K).to(dtype)


def pose(dtype=torch.float64):
    T = torch.eye(4, dtype=torch.float64)
    T[0, 3] = 0.05  # a small baseline, so the warp moves the image
    return T.to(dtype)


def scene(shape, n_sources, dtype, device, seed):
    """Target, warped and source frames where every kind of winner occurs: warped images close to the target
    in different places, and a static patch where the unwarped sources equal the target (identity wins)."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    target = torch.rand(shape, generator=g, dtype=torch.float64)
    sources = torch.rand((n_sources, *shape), generator=g, dtype=torch.float64)
    sources[..., : H // 2, : W // 2] = target[..., : H // 2, : W // 2]  # static region
    closeness = torch.rand((n_sources, B, 1, H, W), generator=g, dtype=torch.float64)
    warped = closeness * target + (1 - closeness) * torch.rand((n_sources, *shape), generator=g, dtype=torch.float64)
    to = dict(device=device, dtype=dtype)
    return target.to(**to), list(warped.to(**to).unbind(0)), list(sources.to(**to).unbind(0)), g


def contrastive_inputs(shape, dtype, device, seed, invalid=0.2):
    """Features and a depth map with holes of every invalid kind (0, negative, NaN, Inf), and the generator."""
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    features = torch.randn(shape, generator=g, dtype=torch.float64).to(device, dtype)
    depth = 0.5 + 3.0 * torch.rand(B, 1, H, W, generator=g, dtype=torch.float64)
    holes = torch.rand(B, 1, H, W, generator=g) < invalid
    kinds = torch.tensor([0.0, -1.0, math.nan, math.inf], dtype=torch.float64)
    depth[holes] = kinds[torch.randint(0, 4, (int(holes.sum()),), generator=g)]
    return features, depth.to(device), g


def depth_pair(B=3, H=40, W=56, device="cpu", dtype=torch.float64, seed=0, invalid=True):
    """A ground truth of 0.05..12 m and a prediction off by a log-normal factor; with ``invalid``, holes of
    every kind (0, NaN, Inf, negative) and a last image without a single valid pixel."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(B, 1, H, W, generator=g, dtype=torch.float64) * 12 + 0.05
    pred = gt * torch.exp(0.3 * torch.randn(B, 1, H, W, generator=g, dtype=torch.float64))
    if invalid:
        drop = torch.rand(B, 1, H, W, generator=g) < 0.2
        gt[drop] = 0.0
        if W >= 3:
            gt[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -1.0], dtype=torch.float64)
        gt[-1] = 0.0
    return pred.to(device, dtype), gt.to(device, dtype)


def real_nyu_depth(shared_data):
    """The NYU ground truths of the shared data (480 x 640, metres), B,1,H,W float64."""
    import numpy as np
    from PIL import Image

    files = sorted((shared_data / "metric3d_nyu_demo" / "depth").glob("*.png"))
    assert files
    return torch.stack([torch.from_numpy(np.array(Image.open(f)).astype(np.float64) / 1000.0) for f in files])[:, None]


def perturbed(gt, seed):
    """A prediction near ``gt``: its holes filled with its median, times a log-normal factor, plus 5 cm."""
    g = torch.Generator().manual_seed(seed)
    base = torch.where(gt > 0, gt, gt[gt > 0].median())
    return base * torch.exp(0.15 * torch.randn(gt.shape, generator=g, dtype=gt.dtype)) + 0.05


# ---------------------------------------------------------------------------------------------------------
# The registry.

Inputs = Callable[..., tuple[tuple, dict]]


@dataclasses.dataclass(frozen=True)
class Op:
    """One public op. ``inputs(B, C, H, W, dtype, seed, fixed)`` returns the arguments of a valid call (on
    the CPU); with ``fixed`` every draw the op would make (identity noise, shifts) is passed in, so two calls
    compute the same thing."""

    name: str  # the name users call it by: ``dm.<name>``
    fn: Callable
    inputs: Inputs
    kernel: str | None = None  # the compiled op it runs, torch.ops.depthmetric.<kernel>
    module: type | None = None  # its nn.Module form
    grad: tuple[int, ...] = ()  # positions of the differentiable arguments
    out_shape: Callable[[int, int, int, int], tuple] = lambda B, C, H, W: ()
    out: Callable[[Any], torch.Tensor] = lambda r: r  # the tensor a test compares, from what the op returns
    no_channels: str | None = None  # the argument a C=0 error names; None: the op has no channel dimension
    too_small: str | None = None  # the argument an H=0/W=0 error names; None: an empty image is computed
    smooth: bool = True  # twice differentiable (not piecewise linear)
    forward_ad: bool = True  # PyTorch's forward-mode AD covers the twin (grid_sample's has none)
    finite: tuple[str, ...] = ()  # the arguments whose NaN/Inf the op rejects by name
    unchecked: tuple[str, ...] = ()  # the floating arguments it does not check (ground truth: NaN = invalid)
    positive: tuple[str, ...] = ()  # the arguments whose mean per image must be > 0 (a disparity)
    tol: dict = dataclasses.field(default_factory=lambda: {torch.float64: 1e-10, torch.float32: 1e-5})
    min_hw: int = 1  # the smallest image the op computes

    @property
    def takes_backend(self) -> bool:
        return "backend" in inspect.signature(self.fn).parameters

    def backends(self, kernel_backend: str = "cpu") -> list[str | None]:
        """The backends a property test runs: the twin, and the kernel where it is built (None: the op takes
        no ``backend`` argument, it is plain PyTorch)."""
        if not self.takes_backend:
            return [None]
        if self.kernel is not None and not COMPILED:
            return ["reference"]
        return ["reference", kernel_backend]

    def call(self, args, kwargs, backend=None):
        """The op's result on these arguments, through ``out``."""
        if backend is not None:
            kwargs = {**kwargs, "backend": backend}
        return self.out(self.fn(*args, **kwargs))

    def make(self, B, C, H, W, dtype=torch.float64, seed=0, fixed=True, device="cpu", grad=False):
        """Arguments of a valid call on ``device``; with ``grad``, the differentiable ones are fresh leaves."""
        args, kwargs = self.inputs(B, C, H, W, dtype, seed, fixed)
        args = [_to(a, device) for a in args]
        kwargs = {k: _to(v, device) for k, v in kwargs.items()}
        if grad:
            for i in self.grad:
                args[i] = _leaf(args[i])
        return args, kwargs

    def leaves(self, args) -> list[torch.Tensor]:
        """The differentiable tensors among ``args`` (the elements of a list argument included)."""
        out = []
        for i in self.grad:
            out += args[i] if isinstance(args[i], list) else [args[i]]
        return out

    def block_shape(self) -> tuple[int, int, int, int]:
        """B, C, H, W crossing every block boundary of the op's CPU kernel: H and W more than two of its
        largest block and a multiple of none, 6 channels (across a block of 4)."""
        blocks = block_sizes(self.kernel) if self.kernel else {}
        H = crossing(blocks, 21)
        return 2, 6, H, crossing(blocks, H + 2)

    @property
    def param_names(self) -> list[str]:
        return list(inspect.signature(self.fn).parameters)


def _leaf(value):
    if isinstance(value, list):
        return [v.detach().clone().requires_grad_(True) for v in value]
    return value.detach().clone().requires_grad_(True)


def _to(value, device):
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
        return [v.to(device) for v in value]
    return value


def _images(B, C, H, W, dtype, seed, n=2):
    return [rand(B, C, H, W, seed=seed + i, low=0.05, high=0.95, dtype=dtype) for i in range(n)]


def _depth(B, H, W, dtype, seed, low=0.5, high=3.0):
    return rand(B, 1, H, W, seed=seed, low=low, high=high, dtype=dtype)


def _ssim_inputs(**kw):
    def inputs(B, C, H, W, dtype, seed, fixed):
        return tuple(_images(B, C, H, W, dtype, seed)), dict(kw)
    return inputs


def _photometric_inputs(B, C, H, W, dtype, seed, fixed):
    return tuple(_images(B, C, H, W, dtype, seed)), {}


def _reprojection_inputs(B, C, H, W, dtype, seed, fixed):
    target, warped, sources, _ = scene((B, C, H, W), 2, dtype, "cpu", seed)
    kwargs = {}
    if fixed:  # the identity noise the op would draw, passed in
        acc = torch.float64 if dtype == torch.float64 else torch.float32
        kwargs["noise"] = 1e-5 * rand(2, B, H, W, seed=seed + 7, dtype=acc)
    return (warped, target, sources), kwargs


def _contrastive_inputs(B, C, H, W, dtype, seed, fixed):
    features, depth, g = contrastive_inputs((B, C, H, W), dtype, "cpu", seed)
    kwargs = dict(ranges=[(0.3, 1.0), (1.0, 3.0)], margins=[0.5, 1.0])
    if fixed and B * H * W:  # every shift the op would draw, plus identities that it must drop
        kwargs["shifts"] = torch.stack([torch.randint(0, n, (40,), generator=g) for n in (B, H, W)], 1)
    return (features, depth), kwargs


def _pair_inputs(**kw):
    def inputs(B, C, H, W, dtype, seed, fixed):  # nowhere equal: |pred - target| has no kink
        return (_depth(B, H, W, dtype, seed + 1), _depth(B, H, W, dtype, seed + 2)), dict(kw)
    return inputs


def _smoothness_inputs(B, C, H, W, dtype, seed, fixed):
    return (_depth(B, H, W, dtype, seed + 1, low=0.1, high=1.0), _images(B, C, H, W, dtype, seed, n=1)[0]), {}


def _backproject_inputs(B, C, H, W, dtype, seed, fixed):
    return (_depth(B, H, W, dtype, seed + 1), intrinsics(H, W, dtype)[1]), {}


def _project_inputs(B, C, H, W, dtype, seed, fixed):
    K, inv_K = intrinsics(H, W, dtype)
    points = torch.cat([rand(B, 2, H * W, seed=seed, low=-1, high=1, dtype=dtype),
                        rand(B, 1, H * W, seed=seed + 1, low=1, high=3, dtype=dtype),
                        torch.ones(B, 1, H * W, dtype=dtype)], 1)
    return (points, K, pose(dtype)), dict(height=H, width=W)


def _warp_inputs(B, C, H, W, dtype, seed, fixed):
    K, _ = intrinsics(H, W, dtype)
    return (_images(B, C, H, W, dtype, seed, n=1)[0], _depth(B, H, W, dtype, seed + 1), pose(dtype), K), {}


def _metrics_inputs(B, C, H, W, dtype, seed, fixed):
    pred, gt = depth_pair(B, H, W, dtype=dtype, seed=seed, invalid=False)
    return (pred.clamp(0.5, 9.0), gt.clamp(0.5, 9.0)), dict(dataset="nyu", crop=None)


def _boundary_inputs(B, C, H, W, dtype, seed, fixed):
    return (_depth(B, H, W, dtype, seed + 1, 1.0, 2.0), _depth(B, H, W, dtype, seed + 2, 1.0, 2.0)), {}


def _recall_inputs(B, C, H, W, dtype, seed, fixed):
    return (_depth(B, H, W, dtype, seed + 1, 1.0, 2.0), _depth(B, H, W, dtype, seed + 2, 1.0, 2.0) > 1.5), {}


def _attractor_inputs(**kw):
    def inputs(B, C, H, W, dtype, seed, fixed):  # C bin centres, 3 attractors per pixel, in [0, 1]
        return (rand(B, C, H, W, seed=seed, dtype=dtype), rand(B, 3, H, W, seed=seed + 1, dtype=dtype)), dict(kw)
    return inputs


def _per_image_metrics(result):
    return torch.stack([result["per_image"][k] for k in sorted(result["per_image"])])


IMAGE_OUT = lambda B, C, H, W: (B, C, H, W)  # noqa: E731
SUPERVISED = dict(grad=(0,), no_channels=None, too_small=None, finite=("pred",), unchecked=("target",))

OPS = [
    Op("ssim", dm.ssim, _ssim_inputs(), kernel="ssim", module=dm.SSIM, grad=(0, 1), out_shape=IMAGE_OUT,
       no_channels="x", too_small="x", finite=("x", "y"), min_hw=2),
    Op("ssim gauss11", dm.ssim, _ssim_inputs(window="gauss11"), kernel="ssim", grad=(0, 1), out_shape=IMAGE_OUT,
       no_channels="x", too_small="x", finite=("x", "y"), min_hw=6),
    Op("ssim gauss11 valid", dm.ssim, _ssim_inputs(window="gauss11", padding="valid", reduction="mean"),
       kernel="ssim", grad=(0, 1), no_channels="x", too_small="x", finite=("x", "y"), min_hw=11),
    Op("ssim_loss", dm.ssim_loss, _ssim_inputs(), kernel="ssim", module=dm.SSIMLoss, grad=(0, 1), no_channels="x",
       too_small="x", finite=("x", "y"), min_hw=2),
    Op("photometric_error", dm.photometric_error, _photometric_inputs, kernel="ssim", module=dm.PhotometricError,
       grad=(0, 1), out_shape=lambda B, C, H, W: (B, 1, H, W), no_channels="x", too_small="x", finite=("x", "y"),
       min_hw=2),
    Op("min_reprojection_loss", dm.min_reprojection_loss, _reprojection_inputs, kernel="min_reprojection",
       module=dm.ReprojectionLoss, grad=(0,), no_channels="target", too_small="target",
       finite=("target", "warped", "sources", "noise"), min_hw=2, tol={torch.float64: 1e-10, torch.float32: 2e-5}),
    Op("multi_range_contrastive_loss", dm.multi_range_contrastive_loss, _contrastive_inputs,
       kernel="multi_range_contrastive", module=dm.MultiRangeContrastiveLoss, grad=(0,), no_channels="features",
       smooth=False, finite=("features",), unchecked=("depth",), tol={torch.float64: 1e-10, torch.float32: 1e-4}),
    Op("silog_loss", dm.silog_loss, _pair_inputs(), module=dm.SILogLoss, **SUPERVISED),
    Op("trimmed_mae_loss", dm.trimmed_mae_loss, _pair_inputs(), module=dm.TrimmedMAELoss, smooth=False,
       **SUPERVISED),
    Op("multi_scale_derivative_loss", dm.multi_scale_derivative_loss, _pair_inputs(p=2),  # p=1 is not smooth
       module=dm.MultiScaleDerivativeLoss, **SUPERVISED),
    Op("scale_shift_invariant_loss", dm.scale_shift_invariant_loss, _pair_inputs(),
       module=dm.ScaleShiftInvariantLoss, **SUPERVISED),
    Op("edge_aware_smoothness", dm.edge_aware_smoothness, _smoothness_inputs, module=dm.EdgeAwareSmoothnessLoss,
       grad=(0, 1), no_channels="image",
       too_small="disp", finite=("disp", "image"), positive=("disp",)),
    # Geometry alone: warp, which reads images, checks its inputs.
    Op("backproject", dm.backproject, _backproject_inputs, grad=(0,), out_shape=lambda B, C, H, W: (B, 4, H * W),
       unchecked=("depth", "inv_K")),
    Op("project", dm.project, _project_inputs, grad=(0,), out_shape=lambda B, C, H, W: (B, H, W, 2),
       too_small="height", unchecked=("points", "K", "T")),
    Op("warp", dm.warp, _warp_inputs, grad=(0, 1), out_shape=IMAGE_OUT, no_channels="image", too_small="image",
       finite=("image", "depth"), unchecked=("T", "K"), forward_ad=False),
    Op("metrics.compute", dm.metrics.compute, _metrics_inputs, kernel="depth_metric_sums",
       out=_per_image_metrics, out_shape=lambda B, C, H, W: (len(dm.metrics.METRICS), B), finite=("pred",),
       unchecked=("gt",)),
    Op("metrics.boundary_f1", dm.metrics.boundary_f1, _boundary_inputs, out_shape=lambda B, C, H, W: (B,),
       finite=("pred",), unchecked=("gt",)),
    Op("metrics.boundary_recall", dm.metrics.boundary_recall, _recall_inputs, out_shape=lambda B, C, H, W: (B,),
       finite=("pred",)),
]
OPS += [  # ZoeDepth's attractor step; alpha small enough that the shifts are not lost in the centres
    Op("attractor_shift", dm.attractor_shift, _attractor_inputs(alpha=3.0), kernel="attractor_shift",
       module=dm.AttractorShift, grad=(0, 1), out_shape=IMAGE_OUT, finite=("centers", "attractors")),
    Op("attractor_shift exp sum gamma3", dm.attractor_shift, _attractor_inputs(alpha=2.0, gamma=3, kind="exp",
                                                                              reduction="sum"),
       kernel="attractor_shift", module=dm.AttractorShift, grad=(0, 1), out_shape=IMAGE_OUT,
       finite=("centers", "attractors")),
]


def bin_centers(B, K, H, W, dtype, seed, low=0.5, high=10.0):
    """Per-pixel bin centres at about half the image size (at least 1 x 1), ``B,K,h,w``, in metres."""
    return rand(B, K, max(1, (H + 1) // 2), max(1, (W + 1) // 2), seed=seed, low=low, high=high, dtype=dtype)


def _bin_inputs(B, C, H, W, dtype, seed, fixed):  # C bins
    logits = 2 * randn(B, C, H, W, seed=seed, dtype=dtype)
    temperature = rand(B, 1, H, W, seed=seed + 2, low=0.5, high=2.0, dtype=dtype)
    return (logits, bin_centers(B, C, H, W, dtype, seed + 1)), dict(temperature=temperature)


def _log_binomial_inputs(B, C, H, W, dtype, seed, fixed):  # C bins
    p = rand(B, 1, H, W, seed=seed, low=0.02, high=0.98, dtype=dtype)
    t = rand(B, 1, H, W, seed=seed + 1, low=0.3, high=2.0, dtype=dtype)
    return (p, t, bin_centers(B, C, H, W, dtype, seed + 2)), {}


OPS += [
    Op("bin_expectation", dm.bin_expectation, _bin_inputs, kernel="bin_expectation", module=dm.BinExpectation,
       grad=(0, 1), out_shape=lambda B, C, H, W: (B, 1, H, W), no_channels="logits",
       finite=("logits", "centers", "temperature")),
    Op("log_binomial_expectation", dm.log_binomial_expectation, _log_binomial_inputs,
       kernel="log_binomial_expectation", module=dm.LogBinomialExpectation, grad=(0, 1, 2),
       out_shape=lambda B, C, H, W: (B, 1, H, W), no_channels="centers", finite=("p", "t", "centers")),
]


# Public callables that are not ops on images (constructors, samplers, settings): a valid call each, for the
# argument audit.
_IMG = rand(2, 3, 12, 12)
HELPERS = {
    "draw_identity_noise": (dm.draw_identity_noise, (2, _IMG), {}),
    "sample_shifts": (dm.sample_shifts, (2, 12, 12), {}),
    "set_finite_checks": (dm.set_finite_checks, (True,), {}),
    "build_info": (dm.build_info, (), {}),
    "metrics.DepthMetrics": (dm.metrics.DepthMetrics, (), {}),
    "metrics.crop_window": (dm.metrics.crop_window, ("eigen", 480, 640), {}),
}


def public_callables() -> dict[str, Callable]:
    """Every callable exported by ``depthmetric.__all__`` and ``depthmetric.metrics.__all__``, by name."""
    out = {}
    for prefix, module in (("", dm), ("metrics.", dm.metrics)):
        for name in module.__all__:
            obj = getattr(module, name)
            if callable(obj) and not inspect.ismodule(obj):
                out[prefix + name] = obj
    return out


def twin(kernel: str):
    """The reference twin of a compiled op: the module ``depthmetric.reference.<kernel>``."""
    return importlib.import_module(f"depthmetric.reference.{kernel}")


# Wrong values for the arguments whose default does not say their type.
WRONG = {
    "process_group": ["group"],
    "inv_K": ["K"],
    "height": ["12", 1.5], "width": ["12", 1.5],
    "min_depth": ["1", math.nan], "max_depth": ["10", -1.0],
    "variance_focus": ["0.85", 2.0],
    "mask": [[True]], "noise": [[0.0]], "shifts": [[[0, 1, 1]]], "sources": [3],
    "ids": [3.5],
}


def wrong_values(param: inspect.Parameter) -> list:
    """Values of the wrong type or out of the domain of ``param``, derived from its default."""
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


# The CPU kernels' block sizes (row blocks, tiles, chunks), read from their one header per op, so the
# kernel tests choose sizes that cross every block boundary.
BLOCK_CONSTANT = re.compile(r"(?:inline )?constexpr int64_t (k\w+) = (\d+);")


def block_sizes(kernel: str) -> dict[str, int]:
    header = ROOT / "csrc" / kernel / "cpu" / f"{kernel}_blocks.h"
    if not header.exists():
        return {}
    return {name: int(value) for name, value in BLOCK_CONSTANT.findall(header.read_text())}


def crossing(blocks: dict[str, int], floor: int = 1) -> int:
    """A size that crosses every block boundary of ``blocks``: more than one block of the largest and a
    multiple of none of them."""
    n = max([floor, *[2 * b + 1 for b in blocks.values()]])
    while any(n % b == 0 for b in blocks.values()):
        n += 1
    return n


# ---------------------------------------------------------------------------------------------------------
# Comparisons shared by several test files.

def scaled_tolerance(want: torch.Tensor, dtype: torch.dtype, n_terms: int, factor: float = 2.0) -> float:
    """The absolute tolerance of a result carried in ``dtype`` against a float64 reference ``want`` computed
    from the same rounded inputs: the reference's largest magnitude times
    ``factor * (eps(dtype) + sqrt(n_terms) * eps(accumulation dtype))``. The result is rounded once to
    ``dtype``; before that, its sums of ``n_terms`` terms ran in float32 (float64 for float64), whose rounding
    errors grow like sqrt(n). So a zero, negated or 1.5x result fails whatever the magnitudes, where a fixed
    tolerance can exceed the values compared."""
    scale = want.detach().abs().max().item()
    assert scale > 0 and math.isfinite(scale), "the reference is all zero or not finite: nothing to compare"
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    return factor * (torch.finfo(dtype).eps + math.sqrt(max(1, n_terms)) * torch.finfo(acc).eps) * scale


def assert_close_scaled(got, want, dtype: torch.dtype, n_terms: int, factor: float = 2.0):
    """``got`` (carried in ``dtype``) equals the float64 reference ``want`` within :func:`scaled_tolerance`,
    elementwise; returns the largest error in units of that tolerance."""
    tol = scaled_tolerance(want, dtype, n_terms, factor)
    got = got.detach().to(want.dtype)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=tol)
    return (got - want.detach()).abs().max().item() / tol


def assert_same_state(got, want, path="state", rtol=1e-12, atol=1e-12):
    """Two nested state dicts (model weights, optimizer or scheduler state, as saved in a checkpoint) equal:
    the same keys and types, tensors within ``rtol``/``atol``, floats likewise, everything else ``==``."""
    if isinstance(want, dict):
        assert isinstance(got, dict) and sorted(map(str, got)) == sorted(map(str, want)), f"{path}: keys differ"
        for k in want:
            assert_same_state(got[k], want[k], f"{path}[{k!r}]", rtol, atol)
    elif isinstance(want, (list, tuple)):
        assert isinstance(got, (list, tuple)) and len(got) == len(want), f"{path}: lengths differ"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same_state(g, w, f"{path}[{i}]", rtol, atol)
    elif isinstance(want, torch.Tensor):
        assert isinstance(got, torch.Tensor), f"{path}: not a tensor"
        torch.testing.assert_close(got, want, rtol=rtol, atol=atol, msg=lambda m: f"{path}: {m}")
    elif isinstance(want, float) and not isinstance(want, bool):
        assert isinstance(got, (int, float)) and math.isclose(got, want, rel_tol=rtol, abs_tol=atol), \
            f"{path}: {got!r} != {want!r}"
    else:
        assert got == want, f"{path}: {got!r} != {want!r}"


# ---------------------------------------------------------------------------------------------------------
# Issue #23 (segmentation distillation, RSA, ZoeDepth's GradL1Loss): plain-PyTorch ops, appended here.

def _inverse_affine_inputs(B, C, H, W, dtype, seed, fixed):  # RSA: relative inverse depth, scale and shift maps
    rel = rand(B, 1, H, W, seed=seed, low=0.2, high=2.0, dtype=dtype)
    return (rel, rand(B, 1, H, W, seed=seed + 1, low=0.5, high=2.0, dtype=dtype),
            rand(B, 1, H, W, seed=seed + 2, low=0.05, high=0.5, dtype=dtype)), {}


def seg_labels(B, C, H, W, seed=0, ignore=0.1, ignore_index=255):
    """``B,H,W`` int64 class labels in ``[0, C)`` with a fraction ``ignore`` set to ``ignore_index``."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, max(C, 1), (B, H, W), generator=g)
    labels[torch.rand(B, H, W, generator=g) < ignore] = ignore_index
    return labels


def _segmentation_inputs(**kw):
    def inputs(B, C, H, W, dtype, seed, fixed):  # C classes; labels by keyword (an int tensor: see WRONG)
        return (2 * randn(B, C, H, W, seed=seed, dtype=dtype),), dict(labels=seg_labels(B, C, H, W, seed + 1), **kw)
    return inputs


OPS += [
    Op("inverse_affine_depth", dm.inverse_affine_depth, _inverse_affine_inputs, grad=(0, 1, 2),
       out_shape=lambda B, C, H, W: (B, 1, H, W), finite=("rel", "scale", "shift")),
    Op("rsa_loss", dm.rsa_loss, _pair_inputs(), module=dm.RSALoss, smooth=False, **SUPERVISED),
    Op("rsa_loss huber", dm.rsa_loss, _pair_inputs(kind="huber", delta=0.5), module=dm.RSALoss, smooth=False,
       **SUPERVISED),
    Op("grad_l1_loss", dm.grad_l1_loss, _pair_inputs(), module=dm.GradL1Loss, smooth=False, **SUPERVISED),
    Op("dice_loss", dm.dice_loss, _segmentation_inputs(), module=dm.DiceLoss, grad=(0,), no_channels="logits",
       finite=("logits",)),
    Op("focal_loss", dm.focal_loss, _segmentation_inputs(), module=dm.FocalLoss, grad=(0,), no_channels="logits",
       finite=("logits",)),
    Op("segmentation_distillation_loss", dm.segmentation_distillation_loss, _segmentation_inputs(),
       module=dm.SegmentationDistillationLoss, grad=(0,), no_channels="logits", finite=("logits",)),
]
WRONG.update({"labels": [[[0]], 1.5], "ignore_index": ["255", 2.5]})


# Order statistics per region (median, MAD, trimmed sum) and the median-normalised losses built on them.
def _median_inputs(**kw):
    def inputs(B, C, H, W, dtype, seed, fixed):  # one map; a mask with holes; kw: "boxes" -> two boxes per image
        values = rand(B, 1, H, W, seed=seed, low=-1.0, high=2.0, dtype=dtype)
        mask = rand(B, 1, H, W, seed=seed + 1) > 0.2
        extra = dict(kw)
        if extra.pop("boxes", False):
            extra["boxes"] = torch.tensor([[0, max(1, H // 2), 0, W], [H // 3, H, W // 4, W]]).expand(B, 2, 4).contiguous()
        return (values, mask), extra
    return inputs


def _median_out(result):
    return torch.stack([result[0], result[1]])


OPS += [
    Op("region_median", dm.region_median, _median_inputs(), kernel="order_statistics", grad=(0,), smooth=False,
       out=_median_out, out_shape=lambda B, C, H, W: (2, B, 1), finite=("values",)),
    Op("region_median boxes", dm.region_median, _median_inputs(boxes=True), kernel="order_statistics", grad=(0,),
       smooth=False, out=_median_out, out_shape=lambda B, C, H, W: (2, B, 2), finite=("values",)),
    Op("trimmed_sum", dm.trimmed_sum, _median_inputs(), kernel="order_statistics", grad=(0,), smooth=False,
       out=lambda r: r[0], out_shape=lambda B, C, H, W: (B,), finite=("residual",)),
    Op("trimmed_sum batch keep", dm.trimmed_sum, _median_inputs(over="batch", keep="keep", trim=0.3),
       kernel="order_statistics", grad=(0,), smooth=False, out=lambda r: r[0], out_shape=lambda B, C, H, W: (1,),
       finite=("residual",)),
]
OPS += [
    Op("ssi_trimmed_loss", dm.ssi_trimmed_loss, _pair_inputs(), module=dm.SSITrimmedLoss, smooth=False, **SUPERVISED),
    Op("ssi_trimmed_loss vda", dm.ssi_trimmed_loss, _pair_inputs(median_over="all", trim_over="batch", pool="batch", halve=False),
       smooth=False, **SUPERVISED),
    Op("gradient_matching_loss", dm.gradient_matching_loss, _pair_inputs(scales=2), module=dm.GradientMatchingLoss,
       smooth=False, **SUPERVISED),
    Op("midas_loss", dm.midas_loss, _pair_inputs(), module=dm.MiDaSLoss, smooth=False, **SUPERVISED),
    Op("midas_loss vda", dm.midas_loss, _pair_inputs(median_over="all", trim_over="batch", pool="batch", halve=False),
       smooth=False, **SUPERVISED),
    Op("trimmed_mae_loss median_mad", dm.trimmed_mae_loss, _pair_inputs(align="median_mad"), smooth=False,
       **SUPERVISED),
    Op("multi_scale_derivative_loss least_squares", dm.multi_scale_derivative_loss,
       _pair_inputs(p=2, align="least_squares"), **SUPERVISED),
]



# Metric3D v2's hierarchical depth normalisation loss: two depth ranges and two boxes per image (labels too).
def _hdn_inputs(labels=False, **kw):
    def inputs(B, C, H, W, dtype, seed, fixed):
        ranges = torch.tensor([[0.5, 2.0], [1.5, 3.5]], dtype=torch.float64).expand(B, 2, 2).contiguous()
        boxes = torch.tensor([[0, max(1, H // 2), 0, W], [H // 3, H, W // 4, W]]).expand(B, 2, 4).contiguous()
        extra = dict(depth_ranges=ranges, boxes=boxes, **kw)
        if labels:
            g = torch.Generator().manual_seed(seed + 3)
            extra.update(labels=torch.randint(-1, 3, (B, H, W), generator=g), num_labels=3)
        return (_depth(B, H, W, dtype, seed + 1), _depth(B, H, W, dtype, seed + 2)), extra
    return inputs


HDN = dict(SUPERVISED, unchecked=("target", "depth_ranges"))
OPS += [
    Op("hdn_loss", dm.hdn_loss, _hdn_inputs(), module=dm.HDNLoss, smooth=False, **HDN),
    Op("hdn_loss image labels", dm.hdn_loss, _hdn_inputs(labels=True, mad_over="image"), smooth=False, **HDN),
]
HELPERS["draw_hdn_regions"] = (dm.draw_hdn_regions, (rand(2, 1, 64, 64, low=0.5, high=5.0),), {})

# Read by the property tests; after every ``OPS +=`` above.
OP_BY_NAME = {op.name: op for op in OPS}
KERNEL_OPS = [op for op in OPS if op.kernel is not None]
