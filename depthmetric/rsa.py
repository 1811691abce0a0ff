"""RSA (Zeng et al., NeurIPS 2024, "Resolving Scale Ambiguities in Monocular Depth Estimators through Language
Descriptions"): metric depth as a per-image inverse affine map of a relative inverse depth, and its training
loss.

RSA predicts one scale and one shift per image (from a text description) and turns a frozen relative-depth
model's inverse depth ``rel`` into metric depth ``1 / (scale * rel + shift)``; the scale and shift heads are
trained with a masked L1 (or Huber / L2) loss on that depth, as RSA's training code (``DPT_LanScale``:
``train*.py`` and ``loss.py``'s ``L1Loss``) computes it.

Vectorised PyTorch, no compiled kernel: one elementwise map and per-image sums. ``backend`` is accepted for a
uniform API and only checked.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from . import _checks, _ext
from ._supervised import PairLoss, prepare_pair

__all__ = ["inverse_affine_depth", "rsa_loss", "RSALoss"]

KINDS = ("l1", "huber", "l2")
COUNT_EPS = 1e-6  # RSA's L1Loss adds it to each image's pixel count


def _per_image(name: str, value: torch.Tensor, rel: torch.Tensor) -> torch.Tensor:
    """``value`` as ``B,1,1,1`` (one number per image: ``B``, ``B,1`` or ``B,1,1,1``) or ``B,1,H,W`` (a map of
    ``rel``'s shape, as RSA passes them after expanding its per-image values)."""
    _checks.floating(name, value)
    B = rel.shape[0]
    if value.shape == rel.shape:
        return value if rel.dim() == 4 else value.unsqueeze(1)
    if value.dim() < 1 or value.dim() > 4 or value.shape[0] != B or any(s != 1 for s in value.shape[1:]):
        raise ValueError(f"{name} must hold one value per image (shape ({B},), ({B}, 1) or ({B}, 1, 1, 1)) or "
                         f"be a map of rel's shape {tuple(rel.shape)}, got shape {tuple(value.shape)}")
    return value.reshape(B, 1, 1, 1)


def inverse_affine_depth(rel: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor, *,
                         eps: float = 1e-8) -> torch.Tensor:
    """RSA's metric depth ``1 / (scale * rel + shift + eps)`` from a relative inverse depth.

    ``rel``: ``B,1,H,W`` or ``B,H,W`` floating (a relative-depth model's inverse depth, e.g. MiDaS/DPT/Depth
    Anything output); ``scale``, ``shift``: floating, one value per image (``B``, ``B,1`` or ``B,1,1,1``) or a
    map of ``rel``'s shape (RSA expands its per-image values to the map before the division).
    Returns depth with ``rel``'s shape, in the promoted dtype of the three. ``eps = 1e-8`` is RSA's ``EPS``,
    which its training scripts add to the denominator (its evaluation code divides without it: pass
    ``eps=0``); it must be a finite number >= 0. Nothing is clamped: a denominator <= 0 gives a negative or
    infinite depth, as in RSA (positive scale and shift, as RSA's softplus-free heads learn them, and a
    non-negative ``rel`` keep it positive). NaN/Inf in any input raise (see ``depthmetric.set_finite_checks``);
    a tensor on another device than ``rel`` is a ValueError naming it.

    Args:
        rel: a relative inverse depth, floating ``B,1,H,W`` or ``B,H,W``.
        scale: floating, one value per image (``B``, ``B,1`` or ``B,1,1,1``) or a map of ``rel``'s shape.
        shift: as ``scale``.
        eps: added to the denominator, a finite number >= 0. Default 1e-8 (RSA's ``EPS``).

    Returns:
        The metric depth, of ``rel``'s shape, in the promoted dtype of the three.

    Raises:
        TypeError: a non-tensor or non-floating input, a non-numeric ``eps``.
        ValueError: shapes that do not fit, another device, NaN/Inf, a negative or non-finite ``eps``.
    """
    e = _checks.real("eps", eps)
    if not (math.isfinite(e) and e >= 0):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    _checks.floating("rel", rel)
    if rel.dim() not in (3, 4) or (rel.dim() == 4 and rel.shape[1] != 1):
        raise ValueError(f"rel must be B,1,H,W or B,H,W (one channel), got shape {tuple(rel.shape)}")
    s, t = _per_image("scale", scale, rel), _per_image("shift", shift, rel)
    _checks.same_device(rel=rel, scale=scale, shift=shift)
    _checks.check_values({"rel": rel, "scale": scale, "shift": shift})
    r = rel if rel.dim() == 4 else rel.unsqueeze(1)
    depth = 1 / (s * r + t + eps)
    return depth if rel.dim() == 4 else depth.squeeze(1)


def _check_config(min_depth: object, max_depth: object, kind: str, delta: object, reduction: str) -> None:
    lo = _checks.real("min_depth", min_depth)
    if not (math.isfinite(lo) and lo >= 0):
        raise ValueError(f"min_depth must be a finite number >= 0, got {min_depth!r}")
    if not (_checks.real("max_depth", max_depth) > lo):
        raise ValueError(f"max_depth must be a number > min_depth ({min_depth}), got {max_depth!r}")
    _checks.choice("kind", kind, KINDS)
    d = _checks.real("delta", delta)
    if not (math.isfinite(d) and d > 0):
        raise ValueError(f"delta must be a finite number > 0, got {delta!r}")
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)


def rsa_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None, *,
             min_depth: float = 1e-3, max_depth: float = 10.0, kind: str = "l1", delta: float = 1.0,
             reduction: str = "sum", interpolate: bool = True, backend: str = "auto") -> torch.Tensor:
    """RSA's training loss of a metric depth ``pred`` against ``target`` (``B,1,H,W`` or ``B,H,W``, metres).

    Per image ``b`` with ``n_b`` pixels whose target lies in ``(min_depth, max_depth)`` (strictly, as RSA) and
    is a valid depth (finite, > 0; ``mask`` True when given), and ``e`` the elementwise error (``kind``:
    ``"l1"`` ``|pred - target|``; ``"huber"`` ``torch.nn.HuberLoss(delta)``'s ``0.5 d^2`` below ``delta``,
    ``delta (|d| - delta / 2)`` above, RSA's ``delta = 1``; ``"l2"`` ``d^2``)::

        loss_b = sum(e over the n_b pixels) / (n_b + 1e-6) * (n_b + 1e-6) / (H * W)

    i.e. the image's mean error weighted by its valid fraction, the ``1e-6`` added to the count in both
    places as RSA's ``L1Loss`` does it (so the two cancel up to rounding: ``loss_b`` is the image's error sum
    over ``H * W``). ``reduction="sum"`` (default) returns ``sum_b loss_b``, as RSA's loss does (a sum over the
    batch, not a mean); ``"mean"`` divides it by ``B``; ``"none"`` returns the ``B`` values. An image of zero
    size gives 0.

    NaN/Inf predictions raise (see ``depthmetric.set_finite_checks``); the target is never checked (NaN means
    invalid). A prediction of another size is resized to the target's (bilinear, ``align_corners=True``) when
    ``interpolate``. Returns float32 (float64 for float64 inputs).

    Args:
        pred: predicted metric depth, ``B,1,H,W`` or ``B,H,W``, floating.
        target: ground-truth depth, same layout; NaN, Inf and values ``<= 0`` are invalid pixels.
        mask: optional bool mask of the target's shape; False pixels are left out.
        min_depth: lower bound (exclusive) of the counted targets, a finite number >= 0.
        max_depth: upper bound (exclusive), a number > ``min_depth``.
        kind: the elementwise error, ``"l1"``, ``"huber"`` or ``"l2"``.
        delta: the Huber threshold, a finite number > 0 (used with ``kind="huber"``).
        reduction: ``"sum"`` (RSA's), ``"mean"`` or ``"none"``.
        interpolate: resize a prediction of another size to the target's.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"`` (see :data:`depthmetric.BACKENDS`);
            accepted for a uniform API and checked against the inputs' device: this loss is vectorised
            PyTorch either way.

    Returns:
        A scalar tensor, or ``B`` values with ``reduction="none"``.

    Raises:
        ValueError: a bound, ``kind``, ``delta`` or ``reduction`` out of range; NaN/Inf in ``pred``.
        TypeError: a non-numeric bound or ``delta``, or a non-tensor input.
    """
    _check_config(min_depth, max_depth, kind, delta, reduction)
    pred, target, valid = prepare_pair(pred, target, mask, interpolate)
    _ext.check_backend(backend, pred.device)
    valid = valid & (target > min_depth) & (target < max_depth)
    if kind == "l1":
        err = (pred - target).abs()
    elif kind == "huber":
        err = F.huber_loss(pred, target, reduction="none", delta=delta)
    else:
        err = (pred - target).pow(2)
    err = torch.where(valid, err, 0.0)
    count = valid.sum((1, 2, 3)).to(err.dtype) + COUNT_EPS
    total = target.shape[-2] * target.shape[-1]
    per_image = err.sum((1, 2, 3)) / count * (count / max(total, 1))
    if reduction == "none":
        return per_image
    return per_image.sum() if reduction == "sum" else per_image.sum() / max(per_image.shape[0], 1)


class RSALoss(PairLoss):
    """RSA's masked depth loss (``kind="l1"``, its ``L1Loss``; ``"huber"``/``"l2"``, its ``--loss_type``);
    see :func:`rsa_loss`. With :func:`inverse_affine_depth`::

        depth = inverse_affine_depth(rel, scale, shift)
        loss = RSALoss(max_depth=10.0)(depth, gt)   # NYU; RSA uses 80 for KITTI, 5 for VOID

    Args:
        min_depth: lower bound (exclusive) of the counted targets, >= 0. Default 1e-3.
        max_depth: upper bound (exclusive), > ``min_depth``. Default 10.
        kind: ``"l1"`` (default), ``"huber"`` or ``"l2"``.
        delta: the Huber threshold, > 0. Default 1.
        reduction: ``"sum"`` (default, RSA's), ``"mean"`` or ``"none"``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(pred, target, mask=None, interpolate=True)``: what :func:`rsa_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(rsa_loss)

    def __init__(self, min_depth: float = 1e-3, max_depth: float = 10.0, kind: str = "l1", delta: float = 1.0,
                 reduction: str = "sum", backend: str = "auto") -> None:
        _check_config(min_depth, max_depth, kind, delta, reduction)
        super().__init__(min_depth=float(min_depth), max_depth=float(max_depth), kind=kind, delta=float(delta),
                         reduction=reduction, backend=backend)
