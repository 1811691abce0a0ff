"""Depth Pro's scale-invariant boundary metrics, as its released evaluation code
defines them: :func:`boundary_f1` (``SI_boundary_F1``, depth ground truth) and :func:`boundary_recall`
(``SI_boundary_Recall``, mask ground truth such as matting alphas).

Both work on inverse depth ``1 / clip(d, 1e-6)``. Between 4-neighbours ``i``, ``j`` there is an occluding
contour for a threshold ``t`` when ``inv(i) / inv(j) > t``, once per direction (left, top, right,
bottom: the pixel ``i`` is the left/top/right/bottom one of the pair), so a contour says which side is in
front. Scores are per direction, averaged over the four, per threshold, then averaged over the thresholds
with weights ``t / sum(t)``; the default thresholds are Depth Pro's ``linspace(1.05, 1.25, 10)``.
"""
from __future__ import annotations

import math
from typing import Iterable

import torch

from . import _checks

__all__ = ["boundary_f1", "boundary_recall", "DEPTH_PRO_THRESHOLDS", "HOLES"]


def _linspace(lo: float, hi: float, n: int) -> tuple[float, ...]:
    """``numpy.linspace(lo, hi, n)`` to the last bit (``k * step + lo``, the last value exactly ``hi``)."""
    step = (hi - lo) / (n - 1)
    return tuple(k * step + lo for k in range(n - 1)) + (hi,)


DEPTH_PRO_THRESHOLDS = _linspace(1.05, 1.25, 10)
_EPS = 1e-6  # Depth Pro's invert_depth clip: a hole (0) becomes a very near point, hence a contour
HOLES = ("edges", "ignore")
# (dim, a, b): the ratio inv[a] / inv[b] of each neighbour pair along dim; a contour "left" of a pair is
# inv(left pixel) / inv(right pixel) > t, i.e. the left pixel is in front.
_DIRECTIONS = ((-1, 0, 1), (-2, 0, 1), (-1, 1, 0), (-2, 1, 0))  # left, top, right, bottom


def _check_thresholds(thresholds: Iterable[float]) -> list[float]:
    ts = _checks.numbers("thresholds", thresholds)
    if not ts or any(not (math.isfinite(t) and 1 < t <= 2) for t in ts):
        raise ValueError("thresholds must be a non-empty sequence of depth ratios in (1, 2] (Depth Pro's "
                         f"1.05..1.25; not percentages), got {thresholds!r}")
    return ts


def _weights(ts: list[float]) -> torch.Tensor:
    t = torch.tensor(ts, dtype=torch.float64)
    return t / t.sum()


def _inverse(depth: torch.Tensor) -> torch.Tensor:
    return 1.0 / depth.clamp(min=_EPS)


def _pairs(x: torch.Tensor, dim: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """The two pixels of each neighbour pair along ``dim`` (``a``, ``b``: which is first), or None without pairs."""
    if x.shape[dim] <= 1:
        return None
    return _pair_views(x, dim, a, b)


def _pair_views(x: torch.Tensor, dim: int, a: int, b: int) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`_pairs` of a tensor known to have pairs along ``dim``."""
    n = x.shape[dim] - 1
    return x.narrow(dim, a, n), x.narrow(dim, b, n)


def boundary_f1(
    pred: torch.Tensor,
    gt: torch.Tensor,
    thresholds: Iterable[float] = DEPTH_PRO_THRESHOLDS,
    mask: torch.Tensor | None = None,
    *,
    holes: str = "edges",
) -> torch.Tensor:
    """Depth Pro's scale-invariant boundary F1 of each image (``B`` float64, in [0, 1]).

    ``pred`` and ``gt`` are depth maps (``B,1,H,W`` or ``B,H,W``, any scale: the metric is scale-invariant).
    For each threshold ``t`` (a depth ratio) and direction, the contours of the prediction and of the ground
    truth give precision ``|c_pred & c_gt| / max(|c_pred|, 1)`` and recall ``|c_pred & c_gt| / max(|c_gt|, 1)``;
    P and R are their means over the four directions (so a direction without contours in either map counts
    0, as in Depth Pro) and ``F1 = 2PR / (P + R)`` (0 when ``P + R = 0``), then the ``t``-weighted mean over
    ``thresholds``.

    ``holes="edges"`` (default, Depth Pro's definition): depths are clipped to ``1e-6`` before inverting, so a
    hole of the ground truth (0) is a contour against its neighbours; a NaN ground truth makes no contour.
    ``holes="ignore"``: a pair counts only when both pixels have a valid ground truth and prediction (finite,
    ``> 0``), so holes make no contours. Either way, a pair with a pixel where ``mask`` is False counts in
    neither map. NaN/Inf predictions raise (see ``depthmetric.set_finite_checks``).

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, any scale.
        gt: the ground-truth depth, floating, of ``pred``'s shape.
        thresholds: the depth ratios ``t``, in (1, 2]. Default: Depth Pro's 10 from 1.05 to 1.25.
        mask: optional bool map of ``gt``'s shape; a pair with a False pixel counts in neither map.
            Default ``None``.
        holes: ``"edges"`` (default, Depth Pro's) or ``"ignore"``.

    Returns:
        The ``B`` per-image F1 scores, float64 in [0, 1].

    Raises:
        TypeError: a non-tensor or non-floating depth map, a non-bool mask.
        ValueError: shapes or devices that do not match, NaN/Inf predictions, bad thresholds or ``holes``.
    """
    ts = _check_thresholds(thresholds)
    _checks.choice("holes", holes, HOLES)
    _checks.floating("pred", pred)
    pred = _checks.depth_map("pred", pred)
    _checks.floating("gt", gt)
    gt = _checks.depth_map("gt", gt, batch=pred.shape[0])
    _checks.same_device(pred=pred, gt=gt)
    if pred.shape != gt.shape:
        raise ValueError(f"pred must have gt's shape {tuple(gt.shape)}, got {tuple(pred.shape)}")
    mask = _checks.mask_map("mask", mask, gt)
    _checks.finite("pred", pred)
    if pred.device.type == "meta":  # shape inference: the contour histogram needs values
        return torch.empty(pred.shape[0], dtype=torch.float64, device=pred.device)
    acc = torch.promote_types(_checks.accumulate_dtype(pred.dtype), _checks.accumulate_dtype(gt.dtype))
    pred, gt = pred[:, 0].to(acc), gt[:, 0].to(acc)
    counted = torch.ones_like(gt, dtype=torch.bool) if mask is None else mask[:, 0]
    if holes == "ignore":
        counted = counted & _checks.valid_depth(gt) & _checks.valid_depth(pred)
        pred, gt = torch.where(counted, pred, 1.0), torch.where(counted, gt, 1.0)
    inv_p, inv_g = _inverse(pred), _inverse(gt)
    order = sorted(range(len(ts)), key=ts.__getitem__)
    ratios = torch.tensor([ts[k] for k in order], dtype=acc, device=pred.device)
    B, T = pred.shape[0], len(ts)

    def counts_above(values: torch.Tensor, pair_ok: torch.Tensor) -> torch.Tensor:
        """``B,T``: per image, how many counted pairs have ``values > ratios[k]`` (one histogram, no loop over t;
        a NaN ratio is no contour)."""
        above = torch.bucketize(values, ratios, right=False)  # number of ratios strictly below each value
        above = torch.where(pair_ok & ~values.isnan(), above, 0)
        bins = (above + torch.arange(B, device=pred.device).view(-1, 1, 1) * (T + 1)).reshape(-1)
        hist = torch.bincount(bins, minlength=B * (T + 1)).view(B, T + 1)
        return hist.flip(1).cumsum(1).flip(1)[:, 1:].to(torch.float64)

    precision = torch.zeros(B, T, dtype=torch.float64, device=pred.device)
    recall = torch.zeros_like(precision)
    for dim, a, b in _DIRECTIONS:
        pairs = _pairs(counted, dim, a, b)
        if pairs is None:
            continue
        pair_ok = pairs[0] & pairs[1]
        (pa, pb), (ga, gb) = _pair_views(inv_p, dim, a, b), _pair_views(inv_g, dim, a, b)
        r_p, r_g = pa / pb, ga / gb
        both = counts_above(torch.minimum(r_p, r_g), pair_ok)  # minimum propagates NaN: no contour
        precision += both / counts_above(r_p, pair_ok).clamp(min=1)
        recall += both / counts_above(r_g, pair_ok).clamp(min=1)
    precision, recall = precision / 4, recall / 4
    total = precision + recall
    f1 = torch.where(total > 0, 2 * precision * recall / torch.where(total > 0, total, 1.0), 0.0)
    return f1 @ _weights([ts[k] for k in order]).to(f1.device)


def _thinned(ratio: torch.Tensor, t: float) -> torch.Tensor:
    """Depth Pro's non-maximum suppression of contours along the last dim: of each run of consecutive pairs
    with ``ratio > t`` in a row, only the pair of the largest ratio (the first of equal ones) stays."""
    above = ratio > t
    before = torch.zeros_like(above)  # a row's first pair has no predecessor
    before[..., 1:] = above[..., :-1]
    starts = above & ~before
    run = starts.reshape(-1).cumsum(0) - 1
    flat = above.reshape(-1)
    position = flat.nonzero().squeeze(1)
    values, ids = ratio.reshape(-1)[position], run[position]
    n_runs = int(starts.sum())
    best = values.new_full((n_runs,), -math.inf).scatter_reduce(0, ids, values, "amax")
    is_best = values == best[ids]
    first = torch.full((n_runs,), flat.numel(), device=ratio.device).scatter_reduce(
        0, ids[is_best], position[is_best], "amin")
    out = torch.zeros_like(flat)
    out[first] = True
    return out.view_as(above)


def boundary_recall(
    pred: torch.Tensor,
    gt_mask: torch.Tensor,
    thresholds: Iterable[float] = DEPTH_PRO_THRESHOLDS,
    *,
    alpha_threshold: float = 0.1,
) -> torch.Tensor:
    """Depth Pro's scale-invariant boundary recall of each image against a foreground mask (``B`` float64).

    ``gt_mask`` is ``B,1,H,W`` (or ``B,H,W``): a bool mask, or an alpha matte whose values above
    ``alpha_threshold`` are foreground (Depth Pro's matting evaluation). A mask contour runs from a foreground
    pixel to a background neighbour, per direction. The predicted contours are those of :func:`boundary_f1`,
    thinned by non-maximum suppression along the direction (of a run of consecutive contours in a row or
    column, the one of the largest ratio stays, as Depth Pro's ``fgbg_depth_thinned``). Recall per direction
    is ``|c_pred & c_mask| / max(|c_mask|, 1)``, averaged over the four directions, then ``t``-weighted over
    ``thresholds``. NaN/Inf predictions raise.

    Args:
        pred: the predicted depth, floating ``B,1,H,W`` or ``B,H,W``, any scale.
        gt_mask: the foreground, a bool mask or a floating alpha matte, of ``pred``'s shape.
        thresholds: the depth ratios ``t``, in (1, 2]. Default: Depth Pro's 10 from 1.05 to 1.25.
        alpha_threshold: the matte value above which a pixel is foreground, finite. Default 0.1.

    Returns:
        The ``B`` per-image recalls, float64 in [0, 1].

    Raises:
        TypeError: a non-tensor input, a non-floating depth or a matte neither bool nor floating.
        ValueError: shapes or devices that do not match, NaN/Inf values, bad thresholds.
    """
    ts = _check_thresholds(thresholds)
    if not math.isfinite(_checks.real("alpha_threshold", alpha_threshold)):
        raise ValueError(f"alpha_threshold must be finite, got {alpha_threshold!r}")
    _checks.floating("pred", pred)
    pred = _checks.depth_map("pred", pred)
    _checks.tensor("gt_mask", gt_mask)
    _checks.same_device(pred=pred, gt_mask=gt_mask)
    if gt_mask.dim() == 3:
        gt_mask = gt_mask.unsqueeze(1)
    if tuple(gt_mask.shape) != tuple(pred.shape):
        raise ValueError(f"gt_mask must have pred's shape {tuple(pred.shape)}, got {tuple(gt_mask.shape)}")
    named = {"pred": pred}  # one check (one host synchronisation) for both
    if gt_mask.dtype != torch.bool:
        _checks.floating("gt_mask", gt_mask)
        named["gt_mask"] = gt_mask
    _checks.check_values(named)
    if pred.device.type == "meta":
        return torch.empty(pred.shape[0], dtype=torch.float64, device=pred.device)
    fg = (gt_mask if gt_mask.dtype == torch.bool else gt_mask > alpha_threshold)[:, 0]
    inv = _inverse(pred[:, 0].to(_checks.accumulate_dtype(pred.dtype)))
    B = pred.shape[0]
    recall = torch.zeros(B, len(ts), dtype=torch.float64, device=pred.device)
    for dim, a, b in _DIRECTIONS:
        pairs = _pairs(fg, dim, a, b)
        if pairs is None:
            continue
        edge = pairs[0] & ~pairs[1]
        n_edges = edge.sum((1, 2)).clamp(min=1).to(torch.float64)
        pa, pb = _pair_views(inv, dim, a, b)
        ratio = (pa / pb).transpose(-1, -2) if dim == -2 else pa / pb  # runs along the pair's direction
        for k, t in enumerate(ts):
            thin = _thinned(ratio, t)
            thin = thin.transpose(-1, -2) if dim == -2 else thin
            recall[:, k] += (thin & edge).sum((1, 2)).to(torch.float64) / n_edges
    return (recall / 4) @ _weights(ts).to(recall.device)
