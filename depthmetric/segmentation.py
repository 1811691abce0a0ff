"""Segmentation losses for cross-task distillation: multi-class Dice, softmax focal loss, and their blend.

The segmentation distillation of "Real (True) depth estimation from indoor scenes" (a U-Net segmentation head
on a ZoeDepth model's decoder features, used while training only) trains the head with
``alpha * Dice + (1 - alpha) * Focal`` and adds it to the depth loss with weight ``lambda_dis = 0.1``.

Inputs: ``logits`` ``B,C,H,W`` (floating, ``C >= 1`` classes; a softmax over ``C`` gives the class
probabilities) and ``labels`` ``B,H,W`` (an integer dtype, not bool), the class of each pixel in ``[0, C)``
or ``ignore_index``. ``ignore_index`` defaults to 255, the "void" label of the 8-bit label PNGs that
segmentation data sets ship (VOC, Cityscapes train ids, NYU's class maps re-encoded by mmsegmentation and
torchvision's segmentation references all use 255): an 8-bit label map cannot hold -1 or PyTorch's -100;
``None`` ignores nothing. Another label outside ``[0, C)`` is a ValueError naming ``labels`` (the check reads
the values; like the NaN/Inf checks it is skipped inside ``torch.compile`` and ``torch.vmap``, where such a
pixel is ignored). NaN/Inf logits raise (see ``depthmetric.set_finite_checks``). Losses are float32 (float64
for float64 logits). An empty batch or image, or one where every pixel is ignored, gives 0 with a zero
gradient.

Vectorised PyTorch, no compiled kernel: a softmax, a gather and a few reductions over ``B,C,H,W``, which
PyTorch runs at memory speed; ``backend`` is accepted for a uniform API and only checked.
"""
from __future__ import annotations

import math

import torch

from . import _checks, _ext
from ._supervised import LossModule

__all__ = ["dice_loss", "focal_loss", "segmentation_distillation_loss", "DiceLoss", "FocalLoss",
           "SegmentationDistillationLoss"]

IGNORE_INDEX = 255
_INT_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def _check_ignore_index(ignore_index: object) -> None:
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {type(ignore_index).__name__} {ignore_index!r}")


def _check_number(name: str, value: object, low: float = 0.0, high: float = math.inf) -> float:
    number = _checks.real(name, value)
    if not (math.isfinite(number) and low <= number <= high):
        raise ValueError(f"{name} must be a finite number in [{low}, {high}], got {number!r}")
    return number


def _prepare(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int | None, reduction: str,
             backend: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Checked inputs: ``logp`` (``B,C,H,W`` log-probabilities in the accumulation dtype), ``target``
    (``B,1,H,W`` int64 class, 0 where ignored) and ``valid`` (``B,1,H,W`` bool)."""
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    _check_ignore_index(ignore_index)
    _checks.image("logits", logits)
    _checks.tensor("labels", labels)
    if labels.dtype not in _INT_DTYPES:
        raise TypeError(f"labels must be an integer tensor of class indices, got {labels.dtype}")
    B, C, H, W = logits.shape
    if tuple(labels.shape) != (B, H, W):
        raise ValueError(f"labels must be B,H,W = {(B, H, W)} (the logits' batch and size), got {tuple(labels.shape)}")
    _checks.same_device(logits=logits, labels=labels)
    _ext.check_backend(backend, logits.device)
    _checks.finite("logits", logits)
    labels = labels.long().unsqueeze(1)
    ignored = labels == ignore_index if ignore_index is not None else torch.zeros_like(labels, dtype=torch.bool)
    in_range = (labels >= 0) & (labels < C)
    if _checks._checking_values() and labels.numel() and labels.device.type != "meta":
        bad = ~(in_range | ignored)
        if bool(bad.any()):
            value = int(labels[bad][0])
            raise ValueError(f"labels must be class indices in [0, {C}) or ignore_index={ignore_index}, "
                             f"got {value}")
    valid = in_range & ~ignored
    target = torch.where(valid, labels, 0)
    logp = torch.log_softmax(logits.to(_checks.accumulate_dtype(logits.dtype)), dim=1)
    return logp, target, valid


def focal_loss(logits: torch.Tensor, labels: torch.Tensor, *, gamma: float = 2.0, ignore_index: int | None = 255,
               reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """Softmax focal loss (Lin et al., 2017) of ``logits`` (``B,C,H,W``) against ``labels`` (``B,H,W``).

    Per pixel, with ``p_t`` the softmax probability of its labelled class:
    ``FL = -(1 - p_t)^gamma * log(p_t)`` (``gamma = 0`` is the cross-entropy; ``1 - p_t`` is computed as
    ``-expm1(log p_t)``, accurate when ``p_t`` is near 1). No class-balance factor (the paper's ``alpha_t``):
    the distillation's ``alpha`` weighs Dice against Focal instead. ``gamma`` (default 2, the paper's) must be
    a finite number >= 0.

    ``reduction="mean"``: the mean over the pixels that are not ignored (as ``cross_entropy`` with
    ``ignore_index`` averages), 0 when there is none; ``"none"``: the ``B,H,W`` map, 0 at ignored pixels;
    ``"sum"``: its sum.

    Args:
        logits: ``B,C,H,W`` floating class scores.
        labels: ``B,H,W`` integer class of each pixel, in ``[0, C)`` or ``ignore_index``.
        gamma: the focusing exponent, a finite number >= 0.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"`` (see :data:`depthmetric.BACKENDS`);
            accepted for a uniform API and checked against the inputs' device: this loss is vectorised
            PyTorch either way.

    Returns:
        A scalar tensor (``"mean"``, ``"sum"``) or the ``B,H,W`` loss map (``"none"``), float32 (float64 for float64).

    Raises:
        ValueError: a label outside ``[0, C)`` that is not ``ignore_index``, a bad ``gamma`` or
            ``reduction``, labels not ``B,H,W`` of the logits' size, or
            NaN/Inf logits.
        TypeError: labels not of an integer dtype, a non-tensor input, a non-numeric parameter or
            ``ignore_index``.
    """
    gamma = _check_number("gamma", gamma)
    logp, target, valid = _prepare(logits, labels, ignore_index, reduction, backend)
    logp_t = logp.gather(1, target)
    term = -logp_t if gamma == 0 else -(-torch.expm1(logp_t)).pow(gamma) * logp_t
    term = torch.where(valid, term, 0.0)
    if reduction == "none":
        return term.squeeze(1)
    if reduction == "sum":
        return term.sum()
    return term.sum() / valid.sum().clamp(min=1).to(term.dtype)


def dice_loss(logits: torch.Tensor, labels: torch.Tensor, *, smooth: float = 0.0, eps: float = 1e-7,
              ignore_index: int | None = 255, reduction: str = "mean", backend: str = "auto") -> torch.Tensor:
    """Multi-class soft Dice loss of ``logits`` (``B,C,H,W``) against ``labels`` (``B,H,W``), as
    segmentation_models_pytorch's ``DiceLoss(mode="multiclass")`` computes it.

    With ``p = softmax(logits)`` and ``y`` the one-hot labels, both zero at ignored pixels, per class ``c``
    over the whole batch (pixels of every image pooled): ``I_c = sum p_c y_c``, ``S_c = sum (p_c + y_c)``,
    ``dice_c = (2 I_c + smooth) / max(S_c + smooth, eps)`` and ``loss_c = 1 - dice_c``; a class with no
    labelled pixel in the batch has ``loss_c = 0`` (its Dice is undefined, and smp leaves it out the same
    way). ``reduction="mean"``: the mean of ``loss_c`` over all ``C`` classes (absent ones count as 0, as in
    smp); ``"none"``: the ``C`` per-class losses; ``"sum"``: their sum. ``smooth`` (default 0) and ``eps``
    (default 1e-7) are smp's defaults, finite numbers >= 0.

    Args:
        logits: ``B,C,H,W`` floating class scores.
        labels: ``B,H,W`` integer class of each pixel, in ``[0, C)`` or ``ignore_index``.
        smooth: added to the numerator and the denominator, a finite number >= 0.
        eps: lower bound of the denominator, a finite number >= 0.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"`` (see :data:`depthmetric.BACKENDS`);
            accepted for a uniform API and checked against the inputs' device: this loss is vectorised
            PyTorch either way.

    Returns:
        A scalar tensor (``"mean"``, ``"sum"``) or the ``C`` per-class losses (``"none"``), float32 (float64 for
        float64).

    Raises:
        ValueError: a label outside ``[0, C)`` that is not ``ignore_index``, a bad ``smooth``, ``eps`` or
            ``reduction``, labels not ``B,H,W`` of the logits' size, or
            NaN/Inf logits.
        TypeError: labels not of an integer dtype, a non-tensor input, a non-numeric parameter or
            ``ignore_index``.
    """
    smooth, eps = _check_number("smooth", smooth), _check_number("eps", eps)
    logp, target, valid = _prepare(logits, labels, ignore_index, reduction, backend)
    C = logp.shape[1]
    classes = torch.arange(C, device=logp.device).view(1, C, 1, 1)
    onehot = ((target == classes) & valid).to(logp.dtype)
    prob = torch.where(valid, logp.exp(), 0.0)
    dims = (0, 2, 3)
    intersection = (prob * onehot).sum(dims)
    cardinality = (prob + onehot).sum(dims)
    present = onehot.sum(dims) > 0
    dice = (2 * intersection + smooth) / (cardinality + smooth).clamp(min=eps)
    per_class = torch.where(present, 1 - dice, 0.0)
    if reduction == "none":
        return per_class
    return per_class.sum() if reduction == "sum" else per_class.mean()


def segmentation_distillation_loss(logits: torch.Tensor, labels: torch.Tensor, *, alpha: float = 0.5,
                                   gamma: float = 2.0, ignore_index: int | None = 255,
                                   backend: str = "auto") -> torch.Tensor:
    """``alpha * dice_loss + (1 - alpha) * focal_loss`` (both ``reduction="mean"``), the segmentation loss of
    the cross-task distillation (see the module docstring). The seed gives the form but not ``alpha``:
    0.5, an equal blend (MONAI's ``DiceFocalLoss`` weighs the two equally too), must be in [0, 1]; ``gamma``
    is the focal loss's (default 2, Lin et al.).

    Args:
        logits: ``B,C,H,W`` floating class scores.
        labels: ``B,H,W`` integer class of each pixel, in ``[0, C)`` or ``ignore_index``.
        alpha: the Dice weight, in ``[0, 1]``.
        gamma: the focal loss's focusing exponent, a finite number >= 0.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        backend: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"reference"`` (see :data:`depthmetric.BACKENDS`);
            accepted for a uniform API and checked against the inputs' device: this loss is vectorised
            PyTorch either way.

    Returns:
        A scalar tensor, float32 (float64 for float64 logits).

    Raises:
        ValueError: as :func:`dice_loss` and :func:`focal_loss`, or ``alpha`` outside ``[0, 1]``.
    """
    alpha = _check_number("alpha", alpha, 0.0, 1.0)
    dice = dice_loss(logits, labels, ignore_index=ignore_index, backend=backend)
    focal = focal_loss(logits, labels, gamma=gamma, ignore_index=ignore_index, backend=backend)
    return alpha * dice + (1 - alpha) * focal


class LabelLoss(LossModule):
    """The module form of a segmentation loss ``fn(logits, labels, **options)``."""

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The loss of ``logits`` against ``labels``, with the module's options.

        Args:
            logits: ``B,C,H,W`` floating class scores.
            labels: ``B,H,W`` integer class of each pixel, in ``[0, C)`` or ``ignore_index``.

        Returns:
            What the module's function (named in the class docstring) returns with these options.
        """
        return self.loss_fn(logits, labels, **self.options)


class DiceLoss(LabelLoss):
    """Multi-class soft Dice loss on logits; see :func:`dice_loss`.

    Args:
        smooth: added to the numerator and the denominator, >= 0. Default 0.
        eps: lower bound of the denominator, >= 0. Default 1e-7.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per class).
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(logits, labels)``: what :func:`dice_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(dice_loss)

    def __init__(self, smooth: float = 0.0, eps: float = 1e-7, ignore_index: int | None = 255,
                 reduction: str = "mean", backend: str = "auto") -> None:
        smooth, eps = _check_number("smooth", smooth), _check_number("eps", eps)
        _check_ignore_index(ignore_index)
        super().__init__(smooth=smooth, eps=eps, ignore_index=ignore_index, reduction=reduction, backend=backend)



class FocalLoss(LabelLoss):
    """Softmax focal loss on logits; see :func:`focal_loss`.

    Args:
        gamma: the focusing exponent, >= 0. Default 2.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"`` (per pixel).
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(logits, labels)``: what :func:`focal_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(focal_loss)

    def __init__(self, gamma: float = 2.0, ignore_index: int | None = 255, reduction: str = "mean",
                 backend: str = "auto") -> None:
        gamma = _check_number("gamma", gamma)
        _check_ignore_index(ignore_index)
        super().__init__(gamma=gamma, ignore_index=ignore_index, reduction=reduction, backend=backend)



class SegmentationDistillationLoss(LabelLoss):
    """``alpha * Dice + (1 - alpha) * Focal`` on segmentation logits, the cross-task distillation's loss;
    see :func:`segmentation_distillation_loss`.

    >>> import torch
    >>> from depthmetric import SegmentationDistillationLoss
    >>> logits, labels = torch.randn(2, 4, 8, 8), torch.randint(0, 4, (2, 8, 8))
    >>> depth_loss = torch.tensor(1.0)
    >>> seg = SegmentationDistillationLoss(alpha=0.5, gamma=2.0)
    >>> loss = depth_loss + 0.1 * seg(logits, labels)  # lambda_dis = 0.1
    >>> loss.shape
    torch.Size([])

    Args:
        alpha: the Dice weight, in [0, 1]. Default 0.5.
        gamma: the focal loss's focusing exponent, >= 0. Default 2.
        ignore_index: the label of ignored pixels (default 255), or ``None``.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``; plain PyTorch, only checked.

    Returns:
        Called as ``loss_fn(logits, labels)``: what :func:`segmentation_distillation_loss` returns.

    Raises:
        TypeError, ValueError: a bad option, named.
    """

    loss_fn = staticmethod(segmentation_distillation_loss)

    def __init__(self, alpha: float = 0.5, gamma: float = 2.0, ignore_index: int | None = 255,
                 backend: str = "auto") -> None:
        alpha, gamma = _check_number("alpha", alpha, 0.0, 1.0), _check_number("gamma", gamma)
        _check_ignore_index(ignore_index)
        super().__init__(alpha=alpha, gamma=gamma, ignore_index=ignore_index, backend=backend)

