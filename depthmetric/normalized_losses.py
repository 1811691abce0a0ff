"""MiDaS's median-normalised losses (Ranftl et al., "Towards robust monocular depth estimation", ssitrim and
gradient matching), as Depth Anything trains with them, with options that reproduce Video Depth Anything's
``TrimmedProcrustesLoss`` (SPEC section 7).

Both maps are normalised per image: ``(x - median) / max(s, 1e-6)``, ``s = mean over the valid pixels of
|x - median|`` (``depthmetric._alignment.median_mad_normalize``; the medians carry torch.median's gradient).

- :func:`ssi_trimmed_loss`: ``1 / (2M) * sum`` of the kept smallest ``|p^ - t^|``, ``M`` the valid count;
  the kept count is MiDaS's ``int((1 - trim) * n)``. Selected by the ``order_statistics`` kernel, no sort.
- :func:`gradient_matching_loss`: ``sum over scales k < scales of (sum |grad_x R| + |grad_y R|) / M_k``,
  ``R = mask * (p^ - t^)`` subsampled with stride ``2^k``, a difference counted where both pixels are valid.
- :class:`MiDaSLoss`: ssitrim ``+ alpha *`` gradient matching, the normalisation computed once.

Options named by what they do (defaults: the MiDaS paper's; ``median_over="all", trim_over="batch",
pool="batch"`` is Video Depth Anything's): ``median_over="valid"|"all"`` (the median over every pixel, the
invalid ones as zeros), ``trim_over="image"|"batch"`` (trim the batch's pooled residuals), ``pool="image"|
"batch"`` (each image divided by its own count and the images averaged, or the batch's sums divided by the
batch's valid count; ``pool="batch"`` needs ``reduction="mean"``, and ``trim_over="batch"`` needs
``pool="batch"``). ``reduction``/``normalize``/``process_group`` as in ``depthmetric.depth_losses`` (with
``trim_over="batch"`` under ``normalize="global"`` each rank trims its own batch; the divisor is global).
"""
from __future__ import annotations

import torch
from torch import nn

from . import _alignment, _checks, _ext, distributed, order_statistics
from .depth_losses import POOLS, _check_reduction, _prepare, _reduce

__all__ = ["ssi_trimmed_loss", "gradient_matching_loss", "midas_loss", "SSITrimmedLoss", "GradientMatchingLoss",
           "MiDaSLoss"]


def _check_options(trim, scales, median_over, trim_over, pool, reduction):
    """The options' checks; ``trim`` / ``scales`` / ``trim_over`` None where a loss has no such option."""
    if trim is not None and not 0 <= _checks.real("trim", trim) < 1:
        raise ValueError(f"trim must be a number in [0, 1), got {trim!r}")
    if scales is not None and _checks.count("scales", scales) < 1:
        raise ValueError(f"scales must be an int >= 1, got {scales!r}")
    _checks.choice("median_over", median_over, _alignment.MEDIAN_OVER)
    _checks.choice("pool", pool, POOLS)
    if trim_over is not None:
        _checks.choice("trim_over", trim_over, POOLS)
    _check_reduction(reduction)
    if pool == "batch" and reduction != "mean":
        raise ValueError("pool='batch' is one mean over the batch's pixels: it needs reduction='mean'")
    if trim_over == "batch" and pool != "batch":
        raise ValueError("trim_over='batch' trims the batch's pooled residuals: it needs pool='batch'")


def _normalized(pred, target, mask, interpolate, median_over, reduction, normalize, process_group, backend):
    pred, target, valid = _prepare(pred, target, mask, interpolate, backend, reduction, normalize, process_group)
    return (_alignment.median_mad_normalize(pred, valid, backend, median_over),
            _alignment.median_mad_normalize(target, valid, backend, median_over), valid)


def _pooled(total, count, has, pool, reduction, normalize, process_group):
    """Per image ``total / count`` averaged (``pool="image"``), or ``sum total / sum count``."""
    if pool == "batch":
        return distributed.global_mean(total.sum(), count.sum(), normalize, process_group)
    return _reduce(total / count.clamp(min=1).to(total.dtype), has, reduction, normalize, process_group)


def _ssi_trimmed(p, t, valid, trim, trim_over, pool, reduction, normalize, process_group, backend):
    err = torch.where(valid, p - t, 0.0).abs()[:, 0]
    ok = valid[:, 0]
    if trim_over == "batch":
        B, H, W = err.shape
        err, ok = err.reshape(1, B * H, W), ok.reshape(1, B * H, W)
    kept_sum, n = order_statistics.image_trimmed_sum(err, ok, trim, 1, backend)
    return _pooled(kept_sum / 2, n, n > 0, pool, reduction, normalize, process_group)


def _gradient_matching(p, t, valid, scales, pool, reduction, normalize, process_group):
    m = valid.to(p.dtype)
    diff = (p - t) * m
    loss = (diff * 0).sum((1, 2, 3))  # zeros that carry a (zero) gradient
    total = loss.sum()
    has = torch.zeros(valid.shape[0], dtype=torch.bool, device=valid.device)
    for k in range(scales):
        step = 2 ** k
        d, mk = diff[..., ::step, ::step], m[..., ::step, ::step]
        gx = ((d[..., 1:] - d[..., :-1]).abs() * mk[..., 1:] * mk[..., :-1]).sum((1, 2, 3))
        gy = ((d[..., 1:, :] - d[..., :-1, :]).abs() * mk[..., 1:, :] * mk[..., :-1, :]).sum((1, 2, 3))
        count = valid[..., ::step, ::step].sum((1, 2, 3))
        if pool == "batch":  # MiDaS's reduction_batch_based per scale
            total = total + distributed.global_mean((gx + gy).sum(), count.sum(), normalize, process_group)
        else:
            loss = loss + (gx + gy) / count.clamp(min=1).to(p.dtype)
            has = has | (count > 0)
    if pool == "batch":
        return total
    return _reduce(loss, has, reduction, normalize, process_group)


def ssi_trimmed_loss(pred, target, mask=None, *, trim: float = 0.2, median_over: str = "valid",
                     trim_over: str = "image", pool: str = "image", reduction: str = "mean", interpolate: bool = True,
                     normalize: str = "local", process_group=None, backend: str = "auto") -> torch.Tensor:
    """MiDaS's ssitrim: both maps median/MAD-normalised, ``1 / (2M)`` times the sum of the ``int((1 - trim) n)``
    smallest absolute residuals (see the module docstring for the options)."""
    _check_options(trim, None, median_over, trim_over, pool, reduction)
    p, t, valid = _normalized(pred, target, mask, interpolate, median_over, reduction, normalize, process_group,
                              backend)
    return _ssi_trimmed(p, t, valid, trim, trim_over, pool, reduction, normalize, process_group, backend)


def gradient_matching_loss(pred, target, mask=None, *, scales: int = 4, median_over: str = "valid",
                           pool: str = "image", reduction: str = "mean", interpolate: bool = True,
                           normalize: str = "local", process_group=None, backend: str = "auto") -> torch.Tensor:
    """MiDaS's multi-scale gradient matching on the median/MAD-normalised maps (module docstring)."""
    _check_options(None, scales, median_over, None, pool, reduction)
    p, t, valid = _normalized(pred, target, mask, interpolate, median_over, reduction, normalize, process_group,
                              backend)
    return _gradient_matching(p, t, valid, scales, pool, reduction, normalize, process_group)


def midas_loss(pred, target, mask=None, *, alpha: float = 0.5, scales: int = 4, trim: float = 0.2,
               median_over: str = "valid", trim_over: str = "image", pool: str = "image", reduction: str = "mean",
               interpolate: bool = True, normalize: str = "local", process_group=None,
               backend: str = "auto") -> torch.Tensor:
    """MiDaS / Depth Anything: ``ssi_trimmed_loss + alpha * gradient_matching_loss`` on one normalisation of
    both maps (the module docstring's options; Video Depth Anything's ``TrimmedProcrustesLoss`` is
    ``median_over="all", trim_over="batch", pool="batch"``)."""
    _check_options(trim, scales, median_over, trim_over, pool, reduction)
    if not _checks.real("alpha", alpha) >= 0:
        raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
    common = (reduction, normalize, process_group)
    p, t, valid = _normalized(pred, target, mask, interpolate, median_over, *common, backend)
    data = _ssi_trimmed(p, t, valid, trim, trim_over, pool, *common, backend)
    if alpha == 0:
        return data
    return data + alpha * _gradient_matching(p, t, valid, scales, pool, *common)


class SSITrimmedLoss(nn.Module):
    """MiDaS's ssitrim; see :func:`ssi_trimmed_loss`."""

    def __init__(self, trim: float = 0.2, median_over: str = "valid", trim_over: str = "image", pool: str = "image",
                 reduction: str = "mean", normalize: str = "local", process_group=None, backend: str = "auto"):
        super().__init__()
        _check_options(trim, None, median_over, trim_over, pool, reduction)
        _ext.check_backend(backend)
        self.trim, self.median_over, self.trim_over, self.pool = float(trim), median_over, trim_over, pool
        self.reduction, self.backend = reduction, backend
        self.normalize, self.process_group = distributed.check_normalize(normalize, process_group), process_group

    def forward(self, pred, target, mask=None, interpolate=True):
        return ssi_trimmed_loss(pred, target, mask, trim=self.trim, median_over=self.median_over,
                                trim_over=self.trim_over, pool=self.pool, reduction=self.reduction,
                                interpolate=interpolate, normalize=self.normalize, process_group=self.process_group,
                                backend=self.backend)


class GradientMatchingLoss(nn.Module):
    """MiDaS's multi-scale gradient matching; see :func:`gradient_matching_loss`."""

    def __init__(self, scales: int = 4, median_over: str = "valid", pool: str = "image", reduction: str = "mean",
                 normalize: str = "local", process_group=None, backend: str = "auto"):
        super().__init__()
        _check_options(None, scales, median_over, None, pool, reduction)
        _ext.check_backend(backend)
        self.scales, self.median_over, self.pool, self.reduction, self.backend = scales, median_over, pool, reduction, backend
        self.normalize, self.process_group = distributed.check_normalize(normalize, process_group), process_group

    def forward(self, pred, target, mask=None, interpolate=True):
        return gradient_matching_loss(pred, target, mask, scales=self.scales, median_over=self.median_over,
                                      pool=self.pool, reduction=self.reduction, interpolate=interpolate,
                                      normalize=self.normalize, process_group=self.process_group, backend=self.backend)


class MiDaSLoss(nn.Module):
    """MiDaS / Depth Anything's loss as a module; see :func:`midas_loss`."""

    def __init__(self, alpha: float = 0.5, scales: int = 4, trim: float = 0.2, median_over: str = "valid",
                 trim_over: str = "image", pool: str = "image", reduction: str = "mean", normalize: str = "local",
                 process_group=None, backend: str = "auto"):
        super().__init__()
        _check_options(trim, scales, median_over, trim_over, pool, reduction)
        if not _checks.real("alpha", alpha) >= 0:
            raise ValueError(f"alpha must be a number >= 0, got {alpha!r}")
        _ext.check_backend(backend)
        self.alpha, self.scales, self.trim = float(alpha), scales, float(trim)
        self.median_over, self.trim_over, self.pool, self.reduction, self.backend = (median_over, trim_over, pool,
                                                                                     reduction, backend)
        self.normalize, self.process_group = distributed.check_normalize(normalize, process_group), process_group

    def forward(self, pred, target, mask=None, interpolate=True):
        return midas_loss(pred, target, mask, alpha=self.alpha, scales=self.scales, trim=self.trim,
                          median_over=self.median_over, trim_over=self.trim_over, pool=self.pool,
                          reduction=self.reduction, interpolate=interpolate, normalize=self.normalize,
                          process_group=self.process_group, backend=self.backend)

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, scales={self.scales}, trim={self.trim}, median_over={self.median_over!r}, "
                f"trim_over={self.trim_over!r}, pool={self.pool!r}, reduction={self.reduction!r}, "
                f"normalize={self.normalize!r}, backend={self.backend!r}")
