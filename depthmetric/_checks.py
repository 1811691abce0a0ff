"""Input validation shared by every public op: each check names the offending argument."""
from __future__ import annotations

import math
import warnings
from typing import Any, Iterable, TypeVar

import torch

from . import _autograd, distributed

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
# How a loss reduces: averaged (each loss says over what), summed (the unreduced values' sum), or unreduced
# (per pixel, per image or per class: each loss says which).
REDUCTIONS = ("mean", "sum", "none")

T = TypeVar("T")

_finite_checks = True
_collective_checks = True  # ops that communicate anyway share their checks with the other ranks
_warned_outside_unit = False  # the [0, 1] warning of check_values is shown once per process


def set_finite_checks(enabled: bool, *, collective: bool = True) -> None:
    """Turn the value checks on or off (on by default): NaN/Inf in network outputs and images is an error,
    images outside [0, 1] warn once.

    They cost one ``aminmax`` per checked tensor and, on CUDA, one host synchronisation per call; they are
    skipped inside ``torch.compile`` graphs. Under ``torch.distributed`` (an initialised default group) a
    check is local to its rank, so an op called on one rank alone (logging, a figure on rank 0) never waits
    for the others; a NaN raises on the rank that has it, naming it (``pred contains NaN or Inf values
    (rank 1)``), and torchrun then ends the job. Only an op that communicates anyway (``normalize="global"``,
    the contrastive loss's ``across="global"`` or its drawn shifts), which every rank must call, makes its
    checks collective: one small all-reduce tells every rank what every other found, so all of them raise the
    same error (``... (rank 1)``) instead of leaving the others waiting in the op's own collective.
    ``collective=False`` keeps those checks local too (the ranks without the NaN then wait in the op's
    collective until torchrun stops them).

    Args:
        enabled: run the value checks (True, the default state) or skip them.
        collective: let the ops that communicate anyway share their checks with the other ranks. Default True.

    Returns:
        None; the setting holds for the process.

    Raises:
        TypeError: ``enabled`` or ``collective`` is not a bool.
    """
    global _finite_checks, _collective_checks
    _finite_checks, _collective_checks = flag("enabled", enabled), flag("collective", collective)


def generator(name: str, g: object) -> torch.Generator | None:
    """``None`` or a ``torch.Generator``, outside ``torch.compile`` (Dynamo cannot trace one)."""
    if g is not None and not isinstance(g, torch.Generator):
        raise TypeError(f"{name} must be a torch.Generator or None, got {type(g).__name__}")
    if g is not None and torch.compiler.is_compiling():
        raise RuntimeError(f"{name}: a torch.Generator cannot be traced by torch.compile; draw the random inputs "
                           "outside the compiled region and pass them in: MultiRangeContrastiveLoss.draw_shifts or "
                           "sample_shifts as shifts=, draw_identity_noise as noise=")
    return g


def flag(name: str, value: object) -> bool:
    """``True`` or ``False`` (not 0/1 or a string: ``"no"`` would be truthy)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def choice(name: str, value: T, choices: Iterable[Any]) -> T:
    """``value`` if it is one of ``choices`` (a tuple, or a dict of names to codes)."""
    choices = tuple(choices)  # by equality, so an unhashable value is a ValueError too
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value


def real(name: str, value: object) -> float:
    """A real number (int or float, not bool or str) as a float."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__} {value!r}")
    return float(value)


def count(name: str, value: object) -> int:
    """An int >= 0 (bool is not a count)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def numbers(name: str, values: object, length: int | None = None) -> list[float]:
    """A sequence of real numbers (of ``length`` items when given) as floats."""
    if isinstance(values, (str, bytes, torch.Tensor)) or not hasattr(values, "__iter__"):
        raise TypeError(f"{name} must be a sequence of numbers, got {type(values).__name__} {values!r}")
    values = list(values)
    if any(isinstance(v, bool) or not isinstance(v, (int, float)) for v in values):
        raise TypeError(f"{name} must hold numbers, got {values!r}")
    if length is not None and len(values) != length:
        raise ValueError(f"{name} must have {length} numbers, got {values!r}")
    return [float(v) for v in values]


def tensor(name: str, x: object) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def floating(name: str, x: object) -> torch.Tensor:
    x = tensor(name, x)
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be float16, bfloat16, float32 or float64, got {x.dtype}")
    return x


def ndim(name: str, x: torch.Tensor, dims: int, layout: str) -> torch.Tensor:
    if x.dim() != dims:
        raise ValueError(f"{name} must be {layout}, got shape {tuple(x.shape)}")
    return x


def channels(name: str, x: torch.Tensor) -> torch.Tensor:
    """A ``B,C,H,W`` image or feature map has at least one channel (an empty batch or image is fine)."""
    if x.shape[1] == 0:
        raise ValueError(f"{name} has no channels (shape {tuple(x.shape)}): an image or feature map needs C >= 1")
    return x


def image(name: str, x: object) -> torch.Tensor:
    """A floating ``B,C,H,W`` image with at least one channel."""
    return channels(name, ndim(name, floating(name, x), 4, "B,C,H,W"))


def image_sized(name: str, x: torch.Tensor, image: torch.Tensor, hint: str = "") -> torch.Tensor:
    """``x`` (``B,1,H,W``) has the ``H,W`` of ``image``; ``hint`` says how to fix it."""
    if x.shape[2:] != image.shape[2:]:
        raise ValueError(f"{name} is {x.shape[2]}x{x.shape[3]} but image is {image.shape[2]}x{image.shape[3]}{hint}")
    return x


def mean(x: torch.Tensor) -> torch.Tensor:
    """``x.mean()``, but 0 for an empty ``x`` (a loss over no pixel, as over no valid pixel), with a zero
    gradient instead of NaN."""
    return x.mean() if x.numel() else x.sum()


def same_device(**tensors: torch.Tensor | None) -> torch.device:
    items = [(k, v) for k, v in tensors.items() if v is not None]
    first_name, first = items[0]
    for name, t in items[1:]:
        if t.device != first.device:
            raise ValueError(f"{name} is on {t.device} but {first_name} is on {first.device}")
    return first.device


def index_device(name: str, x: torch.Tensor, like_name: str, like: torch.device) -> torch.Tensor:
    """An index tensor the op copies to ``like`` itself (``shifts``, ``ids``): on that device or the CPU, where
    its values can be copied from (a meta tensor has none)."""
    if x.device not in (like, torch.device("cpu")):
        raise ValueError(f"{name} is on {x.device} but {like_name} is on {like}: {name} must be on the CPU or "
                         f"on the device of {like_name}")
    return x


def _checking_values() -> bool:
    """Whether value checks run now: switched on (:func:`set_finite_checks`), outside ``torch.compile`` and
    ``torch.vmap`` (no value can be read there)."""
    return _finite_checks and not torch.compiler.is_compiling() and not _autograd.under_vmap()


def positive_per_image(name: str, values: torch.Tensor, what: str) -> torch.Tensor:
    """``values`` (``B,...``, one per image, e.g. the mean an op divides by) are all > 0, else a ValueError
    naming ``name``, the image and ``what`` the value is. One host synchronisation; skipped as the NaN/Inf
    checks are (see :func:`set_finite_checks`)."""
    if _checking_values() and values.numel() and values.device.type != "meta":
        bad = (values.detach().reshape(values.shape[0], -1) <= 0).any(1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"{name} must have a positive {what}, got {float(values[bad[0]].flatten()[0]):.6g} "
                             f"for image {bad[0]}")
    return values


def finite(name: str, x: torch.Tensor, group: distributed.ProcessGroup | None = None) -> torch.Tensor:
    """Raise if ``x`` holds NaN or Inf (a diverged network); see :func:`set_finite_checks`."""
    check_values({name: x}, group=group)
    return x


def check_values(named: dict[str, torch.Tensor], unit_range: bool = False,
                 group: distributed.ProcessGroup | None = None) -> None:
    """NaN/Inf in any tensor is a ValueError naming it; with ``unit_range``, values outside [0, 1] warn once.

    One ``aminmax`` per tensor (it propagates NaN, so no boolean copy of the input is made) and one host
    synchronisation for all of them. ``group``: the process group the calling op communicates over (see
    ``distributed.op_group``), whose ranks then all raise the same error (one all-reduce of a flag per
    tensor); ``None`` checks this rank alone. Off with :func:`set_finite_checks`; skipped inside
    ``torch.compile`` and ``torch.vmap`` (no value can be read there).
    """
    global _warned_outside_unit
    if not _checking_values():
        return
    group = group if _collective_checks else None
    names = list(named)
    # Empty and meta tensors hold no values to check (shape inference on meta still runs).
    present = [k for k, name in enumerate(names) if named[name].numel() and named[name].device.type != "meta"]
    if not present and group is None:
        return
    extremes = [(0.0, 0.0)] * len(names)
    if present:
        found = torch.stack([torch.stack(torch.aminmax(named[names[k]].detach())).double() for k in present])
        for k, lo_hi in zip(present, found.tolist()):
            extremes[k] = tuple(lo_hi)
    bad = torch.tensor([not (math.isfinite(lo) and math.isfinite(hi)) for lo, hi in extremes])
    table = distributed.any_rank(bad, group)  # ranks x names: which rank found what
    for k, name in enumerate(names):
        ranks = table[:, k].nonzero().flatten().tolist()
        if ranks:
            raise ValueError(f"{name} contains NaN or Inf values{distributed.where(group, ranks)}")
    if unit_range and not _warned_outside_unit:
        for k in present:
            lo, hi = extremes[k]
            slack = 4 * torch.finfo(named[names[k]].dtype).eps  # rounding, e.g. a warp giving 1 + 2e-16
            if lo < -slack or hi > 1 + slack:
                _warned_outside_unit = True
                warnings.warn(f"{names[k]} has values outside [0, 1] (min {lo:.10g}, max {hi:.10g}); SSIM's "
                              "constants assume images in [0, 1]. This warning is shown once.", stacklevel=4)
                break


def depth_map(name: str, depth: object, batch: int | None = None) -> torch.Tensor:
    """Accept ``B,1,H,W`` or ``B,H,W`` depth and return ``B,1,H,W``; NaN/Inf/<=0 stay, they mean invalid."""
    depth = tensor(name, depth)
    if depth.dtype == torch.bool or not (depth.is_floating_point()):
        raise TypeError(f"{name} must be a floating-point depth map in metres, got {depth.dtype}")
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[1] != 1:
        raise ValueError(f"{name} must be B,1,H,W or B,H,W (one channel), got shape {tuple(depth.shape)}")
    if batch is not None and depth.shape[0] != batch:
        raise ValueError(f"{name} has batch size {depth.shape[0]} but the prediction/features have {batch}")
    return depth


def mask_map(name: str, mask: object, like: torch.Tensor) -> torch.Tensor | None:
    """An optional boolean mask shaped like the depth map ``like`` (``B,1,H,W``; ``B,H,W`` accepted)."""
    if mask is None:
        return None
    mask = tensor(name, mask)
    if mask.dtype != torch.bool:
        raise TypeError(f"{name} must be a bool tensor, got {mask.dtype}")
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if tuple(mask.shape) != tuple(like.shape):
        raise ValueError(f"{name} must have the depth map's shape {tuple(like.shape)}, got {tuple(mask.shape)}")
    if mask.device != like.device:
        raise ValueError(f"{name} is on {mask.device} but the depth map is on {like.device}")
    return mask


def valid_depth(depth: torch.Tensor) -> torch.Tensor:
    """The spec's validity: a depth is valid when it is finite and > 0 (two comparisons: NaN fails both,
    +Inf the second; cheaper than ``isfinite``)."""
    return (depth > 0) & (depth < math.inf)


def accumulate_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other float type accumulates (and returns losses) in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32

