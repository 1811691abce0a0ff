"""Standard depth evaluation metrics; Depth Pro's boundary F1 and recall are in ``depthmetric.boundary`` and
exported here.

``compute`` returns, for a batch, ``AbsRel, SqRel, RMSE, RMSE_log, log10, SILog, delta1, delta2, delta3``
per image and their means; ``DepthMetrics`` accumulates them over an evaluation set, averaging per image
as the papers' tables do. The formulas are those of the standard evaluation code (Monodepth2, BTS,
ZoeDepth ``compute_errors``): ``RMSE_log = sqrt(mean((log g - log p)^2))``,
``SILog = 100 * sqrt(mean(e^2) - mean(e)^2)`` with ``e = log p - log g``, ``log10 = mean|log10 g - log10 p|``,
``delta_j`` = fraction with ``max(p/g, g/p) < 1.25^j``.

The per-image sums come from one fused pass, ``depthmetric::depth_metric_sums`` (see
``depthmetric.depth_metric_sums``), which reads each prediction and ground-truth pixel once; crop, median scaling and the NaN/Inf check of
``pred`` (``depthmetric.set_finite_checks(False)`` skips it) are shared by both paths. How much faster the
whole ``compute`` call is: ``python -m benchmarks --ops metrics`` and ``benchmarks/results/``.
"""
from __future__ import annotations

import math
from typing import Any, Protocol, Sequence, Union

import torch

from . import _checks, _ext, distributed
from .boundary import boundary_f1, boundary_recall
from .depth_metric_sums import SUMS, depth_metric_sums
from .reference.depth_metric_sums import in_range
from ._supervised import checked_pair, resized_prediction

__all__ = ["METRICS", "DATASETS", "compute", "DepthMetrics", "boundary_f1", "boundary_recall", "crop_window"]

METRICS = ("AbsRel", "SqRel", "RMSE", "RMSE_log", "log10", "SILog", "delta1", "delta2", "delta3")

# Evaluation presets: depth range (metres) and default crop.
DATASETS = {
    "nyu": dict(min_depth=1e-3, max_depth=10.0, crop="eigen"),
    "kitti": dict(min_depth=1e-3, max_depth=80.0, crop="garg"),
}
CROPS = ("auto", "eigen", "garg", None)

# Image ids: a B int64 tensor or a sequence of ints.
Ids = Union[torch.Tensor, Sequence[int]]


def _check_dataset(dataset: str | None) -> None:
    _checks.choice("dataset", dataset, (*DATASETS, None))


def crop_window(crop: str | None, height: int, width: int, dataset: str | None = None) -> tuple[int, int, int, int]:
    """``(row0, row1, col0, col1)`` of an evaluation crop for an ``height x width`` ground truth.

    * ``"eigen"``, NYU (``dataset`` ``"nyu"`` or None): rows 45:471, cols 41:601 at 480x640, the window of
      Eigen et al. used by BTS/ZoeDepth; other sizes scale it proportionally (``floor(45 * H / 480)`` etc.,
      exact integers, so 480x640 gives the standard window).
    * ``"eigen"``, KITTI: ``int(0.3324324 H):int(0.91351351 H), int(0.0359477 W):int(0.96405229 W)``, as
      BTS/ZoeDepth evaluate KITTI with ``eigen_crop``.
    * ``"garg"``: ``int(0.40810811 H):int(0.99189189 H), int(0.03594771 W):int(0.96405229 W)``, the window of
      Garg et al. as Monodepth2 and ZoeDepth compute it.
    * ``None``: the whole image.

    Args:
        crop: ``"eigen"``, ``"garg"`` or ``None``.
        height: ``H`` of the ground truth.
        width: ``W`` of the ground truth.
        dataset: ``"nyu"``, ``"kitti"`` or ``None`` (default; NYU's Eigen window).

    Returns:
        ``(row0, row1, col0, col1)``, the rows ``row0:row1`` and columns ``col0:col1`` evaluated.

    Raises:
        ValueError: an unknown ``crop`` (``"auto"`` included: the caller resolves it) or ``dataset``.
    """
    _check_dataset(dataset)
    _checks.choice("crop", crop, CROPS[1:])  # "auto" is the dataset's crop, which the caller resolves
    if crop is None:
        return 0, height, 0, width
    if crop == "garg":
        return (int(0.40810811 * height), int(0.99189189 * height),
                int(0.03594771 * width), int(0.96405229 * width))
    if crop == "eigen" and dataset == "kitti":
        return (int(0.3324324 * height), int(0.91351351 * height),
                int(0.0359477 * width), int(0.96405229 * width))
    return 45 * height // 480, 471 * height // 480, 41 * width // 640, 601 * width // 640


def _settings(dataset: str | None, min_depth: float | None, max_depth: float | None,
              crop: str | None) -> tuple[float, float, str | None]:
    _check_dataset(dataset)
    _checks.choice("crop", crop, CROPS)
    preset: dict[str, Any] = DATASETS.get(dataset or "", dict(min_depth=None, max_depth=None, crop=None))
    min_depth = preset["min_depth"] if min_depth is None else min_depth
    max_depth = preset["max_depth"] if max_depth is None else max_depth
    crop = preset["crop"] if crop == "auto" else crop
    lo = 0.0 if min_depth is None else _checks.real("min_depth", min_depth)
    hi = math.inf if max_depth is None else _checks.real("max_depth", max_depth)
    if not (lo >= 0 and lo < hi):
        raise ValueError(f"min_depth must be >= 0 and below max_depth, got min_depth={min_depth}, max_depth={max_depth}")
    return lo, hi, crop


BOUNDS = ("open", "closed")


def _check_bounds(bounds: str) -> bool:
    """``True`` for the closed interval ``[min_depth, max_depth]``."""
    return _checks.choice("bounds", bounds, BOUNDS) == "closed"


def _median(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Per-image median of ``x`` (``B,...``) over ``valid``, as ``numpy.median`` (mean of the two middle
    values for an even count); 0 for an image without valid entries."""
    B = x.shape[0]
    ordered, _ = torch.where(valid, x, math.inf).reshape(B, -1).sort(dim=1)
    n = valid.reshape(B, -1).sum(1)
    lo, hi = ((n - 1).clamp(min=0) // 2), (n // 2).clamp(max=ordered.shape[1] - 1)
    mid = (ordered.gather(1, lo[:, None]) + ordered.gather(1, hi[:, None]))[:, 0] / 2
    return torch.where(n > 0, mid, 0.0)


def _median_scale(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None, lo: float, hi: float, closed: bool,
                  window: tuple[int, int, int, int]) -> torch.Tensor:
    """Monodepth2's per-image ``median(gt) / median(pred)`` over the evaluated pixels (before clamping)."""
    r0, r1, c0, c1 = window
    p, g = pred[:, 0, r0:r1, c0:c1].double(), gt[:, 0, r0:r1, c0:c1].double()
    valid = _checks.valid_depth(g) & in_range(g, lo, hi, closed) & torch.isfinite(p)
    if mask is not None:
        valid &= mask[:, 0, r0:r1, c0:c1]
    med_p = _median(p, valid)
    return torch.where(med_p > 0, _median(g, valid) / torch.where(med_p > 0, med_p, 1.0), 1.0)


def from_sums(sums: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-image metrics (``B`` float64 each) from the ``B,10`` sums; 0 for an image without valid pixels."""
    s = dict(zip(SUMS, sums.unbind(1)))
    n = s["count"].clamp(min=1)
    mean_err = s["log_err"] / n
    return {
        "AbsRel": s["abs_rel"] / n,
        "SqRel": s["sq_rel"] / n,
        "RMSE": (s["sq_err"] / n).sqrt(),
        "RMSE_log": (s["log_err_sq"] / n).sqrt(),
        "log10": s["abs_log_err"] / n / math.log(10),
        "SILog": (s["log_err_sq"] / n - mean_err * mean_err).clamp(min=0).sqrt() * 100,
        "delta1": s["delta1"] / n,
        "delta2": s["delta2"] / n,
        "delta3": s["delta3"] / n,
    }


def compute(
    pred: torch.Tensor,
    gt: torch.Tensor,
    dataset: str | None = None,
    min_depth: float | None = None,
    max_depth: float | None = None,
    crop: str | None = "auto",
    median_scaling: bool = False,
    *,
    mask: torch.Tensor | None = None,
    bounds: str = "open",
    interpolate: bool = True,
    backend: str = "auto",
) -> dict[str, Any]:
    """Evaluation metrics of ``pred`` against ``gt`` (``B,1,H,W`` or ``B,H,W``, metres).

    ``dataset`` ``"nyu"`` (depth 1e-3..10 m, Eigen crop) or ``"kitti"`` (1e-3..80 m, Garg crop) sets the
    defaults; an explicit ``min_depth``/``max_depth`` overrides them, ``crop="auto"`` takes the dataset's
    crop and ``crop=None`` none (see :func:`crop_window`). Per image, a pixel counts when it lies in the
    crop, ``gt`` is finite, ``> 0`` and ``min_depth < gt < max_depth`` (strict, as Monodepth2, BTS and
    ZoeDepth count it; ``bounds="closed"`` counts both ends) and ``mask`` (optional) is
    True. The prediction is first multiplied by ``median(gt) / median(pred)`` over those pixels when ``median_scaling`` (Monodepth2, for self-supervised models), then clamped to
    ``[min_depth, max_depth]`` as the standard evaluation code does; a pixel whose prediction is then not
    ``> 0`` (only possible without ``min_depth``) is left out, having no log. NaN/Inf predictions raise (see
    ``depthmetric.set_finite_checks``). A prediction of another size is resized to the ground truth's
    (bilinear, ``align_corners=True``, as ZoeDepth) when ``interpolate``.

    Returns a dict: one entry per name in :data:`METRICS`, a 0-d float64 tensor, the mean over the images
    with at least one counted pixel (0 when none has); ``"per_image"``: a dict of the same names to ``B``
    float64 tensors (0 for an image without counted pixels); ``"valid_pixels"``: ``B`` int64 counts;
    ``"scale"``: the ``B`` float64 factors the prediction was multiplied by (1 without median scaling).

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, metres; NaN/Inf raise.
        gt: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``, metres; a pixel counts where it is finite, > 0
            and in range.
        dataset: ``"nyu"``, ``"kitti"`` or ``None`` (default): the defaults of the range and crop.
        min_depth: the lower bound of the counted ``gt``; ``None`` (default): the dataset's (else none).
        max_depth: the upper bound; ``None`` (default): the dataset's (else none).
        crop: ``"auto"`` (default: the dataset's), ``"eigen"``, ``"garg"`` or ``None``.
        median_scaling: scale each prediction by ``median(gt) / median(pred)`` first. Default False.
        mask: optional bool map of ``gt``'s shape; ``False`` excludes a pixel. Default ``None``.
        bounds: ``"open"`` (default) or ``"closed"`` depth range.
        interpolate: resize a prediction of another size to the ground truth's. Default True.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The dict described above.

    Raises:
        TypeError: a non-tensor or non-floating input, a non-bool mask or flag.
        ValueError: shapes that do not match, NaN/Inf predictions, an unknown dataset, crop or bounds, a
            depth range with ``min_depth < 0`` or ``min_depth >= max_depth``.
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.
    """
    lo, hi, crop = _settings(dataset, min_depth, max_depth, crop)
    closed = _check_bounds(bounds)
    _checks.flag("median_scaling", median_scaling)
    pred, gt, mask = checked_pair(pred, gt, mask, target_name="gt")
    pred = resized_prediction(pred, gt, interpolate, "gt", dtype=_checks.accumulate_dtype(pred.dtype))
    if pred.dtype != gt.dtype:
        common = torch.promote_types(pred.dtype, gt.dtype)
        pred, gt = pred.to(common), gt.to(common)
    window = crop_window(crop, gt.shape[-2], gt.shape[-1], dataset)
    scale = _median_scale(pred, gt, mask, lo, hi, closed, window) if median_scaling else None
    sums = depth_metric_sums(pred, gt, mask, scale, lo, hi, window, closed, backend)
    per_image = from_sums(sums)
    has_valid = sums[:, 0] > 0
    images = has_valid.sum().clamp(min=1).to(torch.float64)
    result: dict[str, Any] = {name: torch.where(has_valid, v, 0.0).sum() / images for name, v in per_image.items()}
    result["per_image"] = per_image
    result["valid_pixels"] = sums[:, 0].to(torch.int64)
    result["scale"] = scale if scale is not None else torch.ones(sums.shape[0], dtype=torch.float64, device=sums.device)
    return result


def _ids_of(ids: Ids, batch: int, device: torch.device) -> torch.Tensor:
    """``ids`` as a ``B`` int64 tensor (a tensor or a sequence of ints, one per image of the batch)."""
    if not isinstance(ids, torch.Tensor):
        try:
            ids = torch.as_tensor(list(ids))
        except (TypeError, ValueError, RuntimeError):
            raise TypeError(f"ids must be a tensor or a sequence of ints, got {type(ids).__name__}") from None
    if ids.dtype.is_floating_point or ids.dtype.is_complex or ids.dtype == torch.bool:
        raise TypeError(f"ids must hold integers, got {ids.dtype}")
    if ids.shape != (batch,):
        raise ValueError(f"ids must have one entry per image, shape ({batch},), got {tuple(ids.shape)}")
    return _checks.index_device("ids", ids, "pred", device).to(device=device, dtype=torch.int64)


def empty_state() -> dict[str, Any]:
    """The state :class:`DepthMetrics` and ``DepthMetricsTM`` accumulate: per-metric float64 ``sums`` and the
    count of ``images`` (those that came without ids and had a counted pixel), and for the images that came
    with ids, ``ids`` and ``rows`` (lists of ``B`` and ``B,len(METRICS)+1`` tensors: the per-image metrics,
    then 1.0 when the image had a counted pixel)."""
    return {"sums": torch.zeros(len(METRICS), dtype=torch.float64), "images": torch.zeros((), dtype=torch.int64),
            "ids": [], "rows": []}


class State(Protocol):
    """What :func:`add_batch` adds to (see :func:`empty_state`)."""

    sums: torch.Tensor
    images: torch.Tensor
    ids: list[torch.Tensor]
    rows: list[torch.Tensor]


def add_batch(state: State, result: dict[str, Any], ids: Ids | None) -> None:
    """Add a :func:`compute` result to ``state`` (an object with the attributes of :func:`empty_state`), on the
    result's device (no host synchronisation)."""
    values = torch.stack([result["per_image"][name] for name in METRICS], 1)
    has_valid = result["valid_pixels"] > 0
    if ids is None:
        state.sums = state.sums.to(values.device) + torch.where(has_valid[:, None], values, 0.0).sum(0)
        state.images = state.images.to(values.device) + has_valid.sum()
    else:
        state.ids.append(_ids_of(ids, values.shape[0], values.device))
        state.rows.append(torch.cat([values, has_valid[:, None].double()], 1))


def _concatenated(sums: torch.Tensor, ids: torch.Tensor | list[torch.Tensor],
                  rows: torch.Tensor | list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``ids`` and ``rows`` of a state as two tensors on the device of its ``sums`` (lists, or tensors once
    torchmetrics' sync has concatenated them)."""
    def cat(parts: torch.Tensor | list[torch.Tensor], empty: torch.Tensor) -> torch.Tensor:
        if isinstance(parts, torch.Tensor):
            return parts.to(empty.device)
        return torch.cat([p.to(empty.device) for p in parts]) if len(parts) else empty

    device = sums.device
    return (cat(ids, torch.zeros(0, dtype=torch.int64, device=device)),
            cat(rows, torch.zeros(0, len(METRICS) + 1, dtype=torch.float64, device=device)))


def combine(sums: torch.Tensor, images: torch.Tensor, ids: torch.Tensor | list[torch.Tensor],
            rows: torch.Tensor | list[torch.Tensor]) -> dict[str, Any]:
    """The means of :class:`DepthMetrics` from its state (see :func:`empty_state`): the ``sums`` over the
    ``images`` that came without ids, plus the rows of the images that came with ``ids``, each id counted once
    (the first of its rows: the copies ``DistributedSampler`` pads the last batches with are the same image)."""
    ids, rows = _concatenated(sums, ids, rows)
    values, has_valid = rows[:, :-1], rows[:, -1].bool()
    if ids.numel():
        unique, inverse = torch.unique(ids, return_inverse=True)
        position = torch.arange(ids.numel(), device=ids.device)
        first = torch.full((unique.numel(),), ids.numel(), device=ids.device).scatter_reduce(
            0, inverse, position, reduce="amin")
        keep = has_valid[first]
        sums = sums + values[first][keep].sum(0)
        images = images + keep.sum()
    count = int(images)
    means = (sums / max(count, 1)).tolist()
    return {**dict(zip(METRICS, means)), "images": count}


class DepthMetrics:
    """Streaming evaluation over a data set: ``update`` per batch, ``compute`` for the means over every image
    seen that had at least one counted pixel (per-image averaging, the convention of the papers' tables).

    Its state is per-metric float64 sums and an image count (plus, for images given ``ids``, one row per
    image). Under ``torch.distributed`` (an initialised default group, or ``process_group``), ``compute``
    combines the state of every rank (``sync=False``: this rank's only), and an image whose id was already
    seen, on any rank, is counted once: pass the data set index as ``ids`` and the images that
    ``DistributedSampler`` repeats to even out the ranks count once, so N ranks give the metrics of one
    process over the union of their images. Every rank must call ``compute`` then.

    >>> import torch
    >>> from depthmetric.metrics import DepthMetrics
    >>> loader = [(torch.tensor([i]), 1 + 4 * torch.rand(1, 1, 48, 64)) for i in range(3)]
    >>> model = lambda depth: 1.1 * depth   # stands in for a network: 10 % too far everywhere
    >>> metrics = DepthMetrics(dataset="nyu")
    >>> for index, depth in loader:
    ...     _ = metrics.update(model(depth), depth, ids=index)
    >>> result = metrics.compute()     # {"AbsRel": ..., ..., "delta3": ..., "images": ...}
    >>> round(result["AbsRel"], 4), result["images"]
    (0.1, 3)

    Args:
        dataset: ``"nyu"``, ``"kitti"`` or ``None`` (default), as :func:`compute`.
        min_depth: the lower bound of the counted ground truth; ``None`` (default): the dataset's.
        max_depth: the upper bound; ``None`` (default): the dataset's.
        crop: ``"auto"`` (default), ``"eigen"``, ``"garg"`` or ``None``.
        median_scaling: Monodepth2's per-image median scaling. Default False.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.
        bounds: ``"open"`` (default) or ``"closed"`` depth range.
        sync: combine the ranks' state in :meth:`compute` under ``torch.distributed``. Default True.
        process_group: the group to combine over; ``None`` (default): the default group.

    Returns:
        :meth:`update` returns each batch's :func:`compute` result, :meth:`compute` the means.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    sums: torch.Tensor
    images: torch.Tensor
    ids: list[torch.Tensor]
    rows: list[torch.Tensor]

    def __init__(self, dataset: str | None = None, min_depth: float | None = None, max_depth: float | None = None,
                 crop: str | None = "auto", median_scaling: bool = False, backend: str = "auto", *,
                 bounds: str = "open", sync: bool = True,
                 process_group: distributed.ProcessGroup | None = None) -> None:
        _settings(dataset, min_depth, max_depth, crop)
        _checks.flag("median_scaling", median_scaling)
        _checks.flag("sync", sync)
        distributed.check_process_group(process_group)
        _ext.check_backend(backend)
        _check_bounds(bounds)
        self.options: dict[str, Any] = dict(dataset=dataset, min_depth=min_depth, max_depth=max_depth, crop=crop,
                            median_scaling=median_scaling, bounds=bounds, backend=backend)
        self.sync, self.process_group = sync, process_group
        self.reset()

    def reset(self) -> None:
        """Forget every image seen.

        Returns:
            None.
        """
        for name, value in empty_state().items():
            setattr(self, name, value)

    @torch.no_grad()
    def update(self, pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor | None = None, *,
               ids: Ids | None = None) -> dict[str, Any]:
        """Add a batch. No host synchronisation.

        Args:
            pred: the predicted depth, ``B,1,H,W`` or ``B,H,W``.
            gt: the ground-truth depth, ``B,1,H,W`` or ``B,H,W``.
            mask: optional bool map of ``gt``'s shape. Default ``None``.
            ids: one integer per image (a ``B`` tensor or a sequence), e.g. its index in the data set, to
                count each image once. Default ``None``: every image counts.

        Returns:
            The batch's :func:`compute` result.

        Raises:
            TypeError, ValueError: as :func:`compute`; ids that are not ``B`` integers.
        """
        result = compute(pred, gt, mask=mask, **self.options)
        add_batch(self, result, ids)
        return result

    def compute(self) -> dict[str, float]:
        """The means over the images seen, on every rank unless ``sync=False``.

        Returns:
            A dict of each name in :data:`METRICS` to its mean (0.0 each before any image with valid pixels),
            and ``"images"``, their number.
        """
        sums, images = self.sums, self.images
        ids, rows = _concatenated(sums, self.ids, self.rows)
        group = distributed.active_group(self.process_group) if self.sync else None
        if group is not None:
            sums, images = distributed.all_reduce_count(sums, group), distributed.all_reduce_count(images, group)
            ids, _ = distributed.all_gather_batch(ids, group, "ids")
            rows, _ = distributed.all_gather_batch(rows, group, "rows")
        return combine(sums, images, ids, rows)


def __getattr__(name: str) -> Any:
    if name == "DepthMetricsTM":  # needs torchmetrics, which the library does not depend on
        from ._torchmetrics import DepthMetricsTM

        return DepthMetricsTM
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
