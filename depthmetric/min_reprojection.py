"""Monodepth2's minimum reprojection loss with auto-masking (SPIdepth Eq. 1), fused on CPU and CUDA.

Per pixel, ``min(min_s pe(warped_s, I_t), min_s pe(source_s, I_t) + eps_s)`` with the photometric error
``pe`` of :func:`depthmetric.photometric_error` (box3 SSIM with reflection padding, alpha = 0.85). The
compiled op reads the target and every warped/source image once per pixel, keeps the per-pixel loss and
the winner's index only, and its backward recomputes the winner's window statistics and gathers the
gradient of the winning warped image over the 3x3 neighbourhood (deterministic, no atomics).

Only the box3 (Monodepth2) window is supported here; use :func:`depthmetric.photometric_error` with
``window="gauss11"`` for the other. Gradients flow only into the warped images: the target and the
unwarped sources are camera frames, not network outputs, so they get none (the reference twin detaches
them too).
"""
from __future__ import annotations

from typing import Any, Sequence, Union

import torch
from torch import nn

from . import _autograd, _checks, _ext, distributed
from .reference import min_reprojection as _reference
from .ssim import check_alpha, check_images

__all__ = ["min_reprojection_loss", "ReprojectionLoss", "draw_identity_noise"]

# Several images of one shape: a list of B,C,H,W tensors or one S,B,C,H,W tensor.
Images = Union[Sequence[torch.Tensor], torch.Tensor]

NOISE_STD = 1e-5  # Monodepth2's tie-breaking noise on the identity errors
REDUCE_SOURCES = ("min", "mean")
MAX_SOURCES = 8  # csrc/min_reprojection/min_reprojection.h kMaxSources


def _check_order(call: str, warped: object, target: object) -> None:
    """A call in the order before 0.1.0, ``(target, warped, sources)``, is a TypeError naming the arguments:
    ``warped`` (a list or one ``S,B,C,H,W`` tensor) and ``target`` (one ``B,C,H,W`` tensor) tell apart."""
    many = isinstance(target, (list, tuple)) or (isinstance(target, torch.Tensor) and target.dim() == 5)
    if isinstance(warped, torch.Tensor) and warped.dim() == 4 and many:
        raise TypeError(f"{call}: warped is one B,C,H,W tensor and target is {_describe(target)}: the arguments "
                        "look swapped; the warped frames (a list of B,C,H,W tensors or one S,B,C,H,W tensor) "
                        "come first, the target frame (B,C,H,W) second, as in Monodepth2's "
                        "compute_reprojection_loss(pred, target)")


def _describe(x: object) -> str:
    if isinstance(x, torch.Tensor):
        return f"a tensor of shape {tuple(x.shape)}"
    return f"a {type(x).__name__} of {len(x)} images" if isinstance(x, (list, tuple)) else type(x).__name__


def _as_list(name: str, images: object) -> list[torch.Tensor]:
    """A list of ``B,C,H,W`` tensors, or one ``S,B,C,H,W`` tensor split into views (no copy)."""
    if isinstance(images, torch.Tensor):
        if images.dim() != 5:
            raise ValueError(f"{name} must be a list of B,C,H,W tensors or one S,B,C,H,W tensor, "
                             f"got shape {tuple(images.shape)}")
        images = list(images.unbind(0))
    elif isinstance(images, (list, tuple)):
        images = list(images)
    else:
        raise TypeError(f"{name} must be a list of tensors or one S,B,C,H,W tensor, got {type(images).__name__}")
    if not images:
        raise ValueError(f"{name} is empty: give at least one B,C,H,W image")
    if len(images) > MAX_SOURCES:
        raise ValueError(f"{name} has {len(images)} images; at most {MAX_SOURCES} are supported")
    for s, t in enumerate(images):
        _checks.tensor(f"{name}[{s}]", t)
    return images


def draw_identity_noise(
    n_sources: int, target: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The tie-breaking noise of the identity errors, to pass as ``noise=`` to :func:`min_reprojection_loss`.

    Pass it as ``noise=`` to keep a ``torch.compile(fullgraph=True)`` step reproducible (Dynamo cannot trace a
    ``torch.Generator``): the same seed gives the loss of an eager call with ``generator=``.

    Args:
        n_sources: ``S``, the number of source frames (an int >= 0).
        target: the target frame, floating ``B,C,H,W``; gives the shape, dtype and device.
        generator: the generator to draw from (on its own device); ``None`` (default): the global RNG of the
            target's device.

    Returns:
        ``S,B,H,W`` i.i.d. normal noise of std 1e-5 on the target's device, in float32 (float64 for a float64
        target).

    Raises:
        TypeError: ``n_sources`` is not an int, ``target`` not a floating tensor, ``generator`` not a
            ``torch.Generator``.
        ValueError: ``n_sources < 0`` or ``target`` not 4-D.
        RuntimeError: a ``generator`` inside ``torch.compile``.
    """
    _checks.count("n_sources", n_sources)
    _checks.ndim("target", _checks.floating("target", target), 4, "B,C,H,W")
    B, _, H, W = target.shape
    acc = _checks.accumulate_dtype(target.dtype)
    generator = _checks.generator("generator", generator)
    device = generator.device if generator is not None else target.device
    noise = torch.randn((n_sources, B, H, W), generator=generator, device=device, dtype=acc)
    return noise.mul_(NOISE_STD).to(target.device)  # in place: no second fresh S,B,H,W map


def _check_noise(noise: torch.Tensor, n_sources: int, target: torch.Tensor,
                 group: distributed.ProcessGroup | None) -> torch.Tensor:
    _checks.floating("noise", noise)  # integer noise would be cast silently
    B, _, H, W = target.shape
    if noise.dim() == 5 and noise.shape[2] == 1:
        noise = noise[:, :, 0]
    if tuple(noise.shape) != (n_sources, B, H, W):
        raise ValueError(f"noise must be S,B,H,W = {(n_sources, B, H, W)} (or S,B,1,H,W), got {tuple(noise.shape)}")
    _checks.same_device(target=target, noise=noise)
    _checks.finite("noise", noise, group)
    return noise.to(_checks.accumulate_dtype(target.dtype))


def min_reprojection_loss(
    warped: Images,
    target: torch.Tensor,
    sources: Images | None = None,
    *,
    alpha: float = 0.85,
    automask: bool = True,
    reduce_sources: str = "min",
    generator: torch.Generator | None = None,
    noise: torch.Tensor | None = None,
    return_mask: bool = False,
    reduction: str = "mean",
    normalize: str = "local",
    process_group: distributed.ProcessGroup | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Minimum-reprojection loss of the ``warped`` frames against the ``target`` frame, with auto-masking.

    Per pixel, ``min(min_s pe(warped_s, target), min_s pe(sources_s, target) + eps_s)`` with the photometric
    error ``pe`` of :func:`photometric_error`. ``automask=True`` adds the identity errors of the unwarped
    ``sources`` (``eps``: ``noise`` if given, else drawn by :func:`draw_identity_noise` from ``generator``); a
    pixel where an identity error wins carries no gradient. ``reduce_sources="mean"`` replaces the minimum
    over warped images by their average and, as Monodepth2's ``avg_reprojection`` does, compares it with the
    average of the identity errors (the noise averaged along). Gradients reach the warped images only. Under
    ``torch.distributed``, ``normalize="global"`` takes the mean over the pixels of the global batch (see
    :mod:`depthmetric.distributed`: the same as ``"local"`` when every rank has the same batch size, exact
    when they differ).

    Args:
        warped: the source frames warped into the target view (the prediction of the target frame): a list of
            ``B,C,H,W`` tensors or one ``S,B,C,H,W`` tensor (``1 <= S <= 8``), each with the target's shape,
            dtype and device, values in [0, 1].
        target: the target frame, floating ``B,C,H,W`` (usually ``C = 3``), values in [0, 1]; no gradient.
        sources: the unwarped source frames, as ``warped`` (one per warped frame); needed by ``automask``.
            Default ``None``.
        alpha: the SSIM weight of the photometric error, in [0, 1]. Default 0.85.
        automask: compete with the identity errors of ``sources`` (Monodepth2's auto-masking). Default True.
        reduce_sources: ``"min"`` (default) or ``"mean"`` over the warped frames.
        generator: the generator of the identity noise when ``noise`` is not given. Default ``None``.
        noise: the identity noise, floating ``S,B,H,W`` (or ``S,B,1,H,W``), e.g. from
            :func:`draw_identity_noise`. Default ``None``: drawn.
        return_mask: also return the auto-mask and the winner index. Default False.
        reduction: ``"mean"`` (default) over pixels, ``"sum"``, or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"``: the mean over this rank's pixels or the global
            batch's.
        process_group: the ``torch.distributed`` group of ``normalize="global"``; ``None``: the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        The loss, float32 (float64 for float64 images): with ``reduction="mean"`` the mean of the per-pixel
        loss (0 for an empty batch), ``"sum"`` its sum, ``"none"`` the per-pixel loss itself, ``B,1,H,W``.
        With ``return_mask=True`` the tuple ``(loss, automask, winner)``: the auto-mask (``B,1,H,W`` bool,
        True where a warped image won) and the winner index (``B,1,H,W`` int64: ``0..S-1`` warped image s,
        ``S..2S-1`` identity of source s; with ``"mean"`` 0 for the warped average, S for the identity
        average).

    Raises:
        TypeError: the arguments in the old order ``(target, warped, sources)``; a non-tensor image,
            integer images, mixed dtypes, a ``generator`` that is not a ``torch.Generator``.
        ValueError: shapes that differ or are not ``B,C,H,W``; no channel; images smaller than 2x2; more than
            8 or no warped images; ``automask`` without ``sources``; NaN/Inf pixels; a bad choice argument.
            Values outside [0, 1] are warned about once.
        RuntimeError: ``backend="auto"`` when the kernel for the device was not built.

    Example:
        >>> import torch, depthmetric
        >>> target, warped_prev, warped_next, prev, next = torch.rand(5, 2, 3, 8, 8)
        >>> loss = depthmetric.min_reprojection_loss([warped_prev, warped_next], target, [prev, next])
        >>> loss.shape
        torch.Size([])
    """
    _check_order("min_reprojection_loss(warped, target, sources)", warped, target)
    warped_list = _as_list("warped", warped)
    source_list = None if sources is None else _as_list("sources", sources)
    if source_list is not None and len(source_list) != len(warped_list):
        raise ValueError(f"sources has {len(source_list)} images but warped has {len(warped_list)}: one each")
    _checks.choice("reduce_sources", reduce_sources, REDUCE_SOURCES)
    _checks.choice("reduction", reduction, _checks.REDUCTIONS)
    _checks.flag("automask", automask)
    _checks.flag("return_mask", return_mask)
    if automask and source_list is None:
        raise ValueError("automask=True needs sources (the unwarped source frames); pass them or automask=False")
    alpha = check_alpha(alpha)
    distributed.check_normalize(normalize, process_group)
    _checks.tensor("target", target)
    used = source_list if automask and source_list is not None else []
    warped = warped_list
    names = ("target", *(f"warped[{s}]" for s in range(len(warped))), *(f"sources[{s}]" for s in range(len(used))))
    group = distributed.op_group(normalize, process_group)
    check_images(names, (target, *warped, *used), "box3", "reflect", group)
    S = len(warped)
    if used:
        noise = draw_identity_noise(S, target, generator) if noise is None else _check_noise(noise, S, target, group)
    else:
        noise = target.new_empty((0,), dtype=_checks.accumulate_dtype(target.dtype))
    mean_sources = reduce_sources == "mean"
    target = target.detach()
    used = [s.detach() for s in used]
    if _ext.use_kernel(backend, target.device):
        _autograd.check_untransformed("depthmetric.min_reprojection_loss", (target, *warped, *used, noise))
        loss, winner = torch.ops.depthmetric.min_reprojection(target, warped, used, noise, alpha, mean_sources)
    else:
        loss, winner = _reference.min_reprojection(target, warped, used, noise, alpha, mean_sources)
    if reduction == "none":
        out = loss.unsqueeze(1)
    elif reduction == "sum":
        out = loss.sum()
    elif normalize == "local":
        out = _checks.mean(loss)
    else:
        out = distributed.global_mean(loss.sum(), torch.tensor(loss.numel(), device=loss.device), normalize,
                                       process_group)
    if not return_mask:
        return out
    winner = winner.unsqueeze(1)
    return out, winner < S, winner


class ReprojectionLoss(nn.Module):
    """Monodepth2/SPIdepth's photometric loss ``L_p`` with minimum reprojection and auto-masking: the module of
    :func:`min_reprojection_loss`.

    >>> import torch
    >>> from depthmetric import ReprojectionLoss
    >>> target, warped_prev, warped_next, prev, next = torch.rand(5, 2, 3, 8, 8)
    >>> loss_fn = ReprojectionLoss()
    >>> loss = loss_fn([warped_prev, warped_next], target, [prev, next])   # each B,3,H,W in [0, 1]
    >>> loss.shape
    torch.Size([])

    Args:
        alpha: the SSIM weight of the photometric error, in [0, 1]. Default 0.85.
        automask: compete with the identity errors of the sources. Default True.
        reduce_sources: ``"min"`` (default) or ``"mean"`` over the warped frames.
        reduction: ``"mean"`` (default), ``"sum"`` or ``"none"``.
        normalize: ``"local"`` (default) or ``"global"`` (the global batch's mean under torch.distributed).
        process_group: the group of ``normalize="global"``; ``None``: the default group.
        backend: ``"auto"`` (default), ``"cpu"``, ``"cuda"`` or ``"reference"``.

    Returns:
        Called as ``loss_fn(warped, target, sources=None, *, generator=None, return_mask=False, noise=None)``:
        what :func:`min_reprojection_loss` returns.

    Raises:
        TypeError, ValueError: a bad argument, named (see :func:`min_reprojection_loss`).
    """

    def __init__(self, alpha: float = 0.85, automask: bool = True, reduce_sources: str = "min",
                 reduction: str = "mean", normalize: str = "local",
                 process_group: distributed.ProcessGroup | None = None, backend: str = "auto") -> None:
        super().__init__()
        self.alpha = check_alpha(alpha)
        self.reduction = _checks.choice("reduction", reduction, _checks.REDUCTIONS)
        _checks.choice("reduce_sources", reduce_sources, REDUCE_SOURCES)
        _ext.check_backend(backend)
        self.automask, self.reduce_sources, self.backend = _checks.flag("automask", automask), reduce_sources, backend
        self.normalize, self.process_group = distributed.check_normalize(normalize, process_group), process_group

    def forward(self, warped: Images, target: torch.Tensor, sources: Images | None = None, *,
                generator: torch.Generator | None = None, return_mask: bool = False,
                noise: torch.Tensor | None = None) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """The loss of ``warped`` against ``target``.

        Args:
            warped: the warped source frames, a list of ``B,C,H,W`` tensors or one ``S,B,C,H,W`` tensor.
            target: the target frame, ``B,C,H,W``.
            sources: the unwarped source frames, as ``warped``; needed by ``automask``. Default ``None``.
            generator: the generator of the identity noise. Default ``None``.
            return_mask: also return the auto-mask and the winner index. Default False.
            noise: the identity noise, ``S,B,H,W``. Default ``None``: drawn.

        Returns:
            What :func:`min_reprojection_loss` returns.
        """
        _check_order("ReprojectionLoss(warped, target, sources)", warped, target)
        return min_reprojection_loss(
            warped, target, sources, alpha=self.alpha, automask=self.automask,
            reduce_sources=self.reduce_sources, generator=generator, noise=noise, return_mask=return_mask,
            reduction=self.reduction, normalize=self.normalize, process_group=self.process_group, backend=self.backend,
        )

    def extra_repr(self) -> str:
        return (f"alpha={self.alpha}, automask={self.automask}, reduce_sources={self.reduce_sources!r}, "
                f"reduction={self.reduction!r}, normalize={self.normalize!r}, backend={self.backend!r}")


def _register_kernels() -> None:
    """Fake kernels (for torch.compile / meta tensors) and autograd of the compiled op."""

    @torch.library.register_fake("depthmetric::min_reprojection")
    def _(target: torch.Tensor, warped: list[torch.Tensor], sources: list[torch.Tensor], noise: torch.Tensor,
          alpha: float, mean_sources: bool) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = target.shape
        acc = _checks.accumulate_dtype(target.dtype)
        return target.new_empty((B, H, W), dtype=acc), target.new_empty((B, H, W), dtype=torch.long)

    @torch.library.register_fake("depthmetric::_min_reprojection_backward")
    def _(grad_loss: torch.Tensor, target: torch.Tensor, warped: list[torch.Tensor], winner: torch.Tensor,
          alpha: float, mean_sources: bool) -> list[torch.Tensor]:
        return [torch.empty_like(w) for w in warped]

    def setup_context(ctx: Any, inputs: tuple[Any, ...], output: tuple[torch.Tensor, torch.Tensor]) -> None:
        target, warped, sources, noise, alpha, mean_sources = inputs
        ctx.alpha, ctx.mean_sources, ctx.n_warped, ctx.n_sources = alpha, mean_sources, len(warped), len(sources)
        ctx.save_for_backward(target, output[1], noise, *warped, *sources)

    def backward(ctx: Any, grad_loss: torch.Tensor, grad_winner: torch.Tensor | None) -> tuple[Any, ...]:
        target, winner, noise, *images = ctx.saved_tensors
        warped, sources = images[:ctx.n_warped], images[ctx.n_warped:]
        if torch.is_grad_enabled():  # create_graph=True: a gradient that can be differentiated again
            grads = _autograd.reference_vjp(
                lambda *w: _reference.min_reprojection(target, list(w), sources, noise, ctx.alpha, ctx.mean_sources)[0],
                warped, grad_loss, [w.requires_grad for w in warped])  # some frames may be constants
            return None, grads, [None] * ctx.n_sources, None, None, None
        # grad_loss goes as it comes (the gradient of a mean is an expanded scalar): both kernels read it through
        # its strides.
        grads = torch.ops.depthmetric._min_reprojection_backward(
            grad_loss, target, warped, winner, ctx.alpha, ctx.mean_sources
        )
        return None, grads, [None] * ctx.n_sources, None, None, None

    torch.library.register_autograd("depthmetric::min_reprojection", backward, setup_context=setup_context)


if _ext.extension_loaded():
    _register_kernels()
